//! The state a `reconciled` record carries (`state_json`): bounded whatever the key's size,
//! so no record can outgrow the producer's limit. The full state stays with whoever folds
//! the log: the reconciler's checkpoint store and each processor's regional view, which fold
//! the records' events by their outcomes (`RegionalView::reconciled`, `PartitionMerge::adopt`).
//!
//! | aggregate | published |
//! |---|---|
//! | counter, register, schedule, custom | the whole state (small by nature) |
//! | leaderboard | the number of players, the top [`LEADERBOARD_TOP_K`], and this event's player's best |
//! | inventory | available, units reserved, open orders, and what this event's order holds after it |
//! | channel | the message count and the newest messages within [`CHANNEL_LAST_BYTES`] |
//!
//! Anything whose published JSON would still exceed [`PUBLISHED_MAX_BYTES`] (a register value
//! or a user aggregate's state that large) is published as `oversized` with its size: the
//! event itself is in the record, the state is in the folded views.

use crate::aggregate::{AggState, Message, LEADERBOARD_TOP_K};
use rf_schemas::{Event, Hlc, Op};
use serde::{Deserialize, Serialize};

/// Bytes of author and text the channel's published `last` holds at most.
pub const CHANNEL_LAST_BYTES: usize = 16 * 1024;
/// Bytes of published state JSON at most.
pub const PUBLISHED_MAX_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranked {
    pub player: String,
    pub score: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    pub order_id: String,
    /// Units the order holds after this event (0: none).
    pub held: i64,
}

/// The published form of an aggregate's state (canonical JSON, fields in this order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "aggregate", rename_all = "snake_case")]
pub enum Published {
    Counter {
        total: i64,
    },
    Register {
        value: String,
        region: Option<String>,
        hlc: Option<Hlc>,
        /// Current versions (concurrent puts not superseded yet): 1 when there is no conflict.
        #[serde(default, skip_serializing_if = "is_zero")]
        siblings: u64,
        /// The context token a writer that read this state sends with its put.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        context: String,
    },
    Leaderboard {
        players: u64,
        top: Vec<Ranked>,
        /// This event's player, for a score submission.
        player: Option<Ranked>,
    },
    Inventory {
        available: i64,
        /// Units held by all open orders.
        reserved: i64,
        open_orders: u64,
        /// This event's order, for a reservation or a release.
        order: Option<Holding>,
        /// Escrow policy: the rights each region holds (they add up to `available`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rights: Option<std::collections::BTreeMap<String, i64>>,
    },
    Channel {
        count: u64,
        /// Oldest first.
        last: Vec<Message>,
    },
    /// The whole schedule state (small: the spec and the last firing).
    Schedule {
        spec: Option<Box<rf_schemas::ScheduleSpec>>,
        since_ms: i64,
        set_by: Option<String>,
        last: Option<crate::aggregate::LastFired>,
        fired: u64,
        failovers: u64,
    },
    Custom {
        name: String,
        state: serde_json::Value,
    },
    /// The published form would exceed [`PUBLISHED_MAX_BYTES`].
    Oversized {
        family: String,
        bytes: u64,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Published {
    pub fn from_json(s: &str) -> Result<Published, serde_json::Error> {
        serde_json::from_str(s)
    }
}

/// The published form of `state` after `ev`.
pub fn publish(state: &AggState, ev: &Event) -> Published {
    match state {
        AggState::Counter { total } => Published::Counter { total: *total },
        AggState::Register {
            value,
            region,
            hlc,
            causal,
        } => Published::Register {
            value: value.clone(),
            region: region.clone(),
            hlc: *hlc,
            siblings: causal.siblings.len() as u64,
            context: crate::causal::token(&causal.seen),
        },
        AggState::Leaderboard { best } => Published::Leaderboard {
            players: best.len() as u64,
            top: best
                .top(LEADERBOARD_TOP_K)
                .map(|(p, s)| Ranked {
                    player: p.to_owned(),
                    score: s,
                })
                .collect(),
            player: match &ev.op {
                Op::ScoreSubmit { player, .. } => best.best(player).map(|score| Ranked {
                    player: player.clone(),
                    score,
                }),
                _ => None,
            },
        },
        AggState::Inventory {
            available,
            reserved,
            escrow,
        } => Published::Inventory {
            rights: escrow.as_ref().map(|e| e.rights_by_region()),
            available: *available,
            reserved: reserved.total(),
            open_orders: reserved.len() as u64,
            order: match &ev.op {
                Op::Reserve { order_id, .. } | Op::Release { order_id } => Some(Holding {
                    order_id: order_id.clone(),
                    held: reserved.get(order_id).unwrap_or(0),
                }),
                _ => None,
            },
        },
        AggState::Channel { count, last } => {
            let mut bytes = 0;
            let mut kept: Vec<Message> = last
                .iter()
                .rev()
                .take_while(|m| {
                    bytes += m.author.len() + m.text.len();
                    bytes <= CHANNEL_LAST_BYTES
                })
                .cloned()
                .collect();
            kept.reverse();
            Published::Channel {
                count: *count,
                last: kept,
            }
        }
        AggState::Schedule {
            spec,
            since_ms,
            set_by,
            last,
            fired,
            failovers,
        } => Published::Schedule {
            spec: spec.clone().map(Box::new),
            since_ms: *since_ms,
            set_by: set_by.clone(),
            last: last.clone(),
            fired: *fired,
            failovers: *failovers,
        },
        AggState::Custom { name, state } => Published::Custom {
            name: name.clone(),
            state: state.clone(),
        },
    }
}

/// `state_json` for a record of `ev` leaving the key at `state` ("null": no state yet).
pub fn published_json(state: Option<&AggState>, ev: &Event) -> String {
    let Some(state) = state else {
        return "null".into();
    };
    let json = serde_json::to_string(&publish(state, ev)).expect("published state serialises");
    if json.len() <= PUBLISHED_MAX_BYTES {
        return json;
    }
    serde_json::to_string(&Published::Oversized {
        family: family_name(state).into(),
        bytes: json.len() as u64,
    })
    .expect("published state serialises")
}

fn family_name(state: &AggState) -> &'static str {
    match state {
        AggState::Counter { .. } => "counter",
        AggState::Register { .. } => "register",
        AggState::Leaderboard { .. } => "leaderboard",
        AggState::Inventory { .. } => "inventory",
        AggState::Channel { .. } => "channel",
        AggState::Schedule { .. } => "schedule",
        AggState::Custom { .. } => "custom",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::apply;

    fn ev(op: Op) -> Event {
        Event::new("e", "k", op)
    }

    /// Small states publish as the stored state does, so readers of counters, registers
    /// and user aggregates see the same JSON as before.
    #[test]
    fn small_states_publish_as_stored() {
        let mut s = None;
        let e = ev(Op::CounterAdd { delta: 3 });
        apply(&mut s, &e).unwrap();
        assert_eq!(published_json(s.as_ref(), &e), s.unwrap().to_json());
        let mut s = None;
        let e = ev(Op::put("v"));
        apply(&mut s, &e).unwrap();
        assert_eq!(published_json(s.as_ref(), &e), s.unwrap().to_json());
        assert_eq!(published_json(None, &e), "null");
    }

    /// The leaderboard and the inventory publish a bounded summary however large the key.
    #[test]
    fn big_keys_publish_bounded_summaries() {
        let mut board = None;
        let mut last = ev(Op::CounterAdd { delta: 0 });
        for i in 0..50_000 {
            last = ev(Op::ScoreSubmit {
                player: format!("player-{i:06}"),
                score: i % 1000,
            });
            apply(&mut board, &last).unwrap();
        }
        let json = published_json(board.as_ref(), &last);
        assert!(json.len() < 2_000, "{} bytes", json.len());
        let Published::Leaderboard {
            players,
            top,
            player,
        } = Published::from_json(&json).unwrap()
        else {
            panic!("{json}")
        };
        assert_eq!(players, 50_000);
        assert_eq!(top.len(), LEADERBOARD_TOP_K);
        assert_eq!(top[0].score, 999);
        assert_eq!(player.unwrap().player, "player-049999");

        let mut inv = None;
        apply(&mut inv, &ev(Op::stock_add(1_000_000))).unwrap();
        for i in 0..50_000 {
            last = ev(Op::Reserve {
                order_id: format!("order-{i:06}"),
                qty: 2,
            });
            apply(&mut inv, &last).unwrap();
        }
        let json = published_json(inv.as_ref(), &last);
        assert_eq!(
            Published::from_json(&json).unwrap(),
            Published::Inventory {
                available: 900_000,
                reserved: 100_000,
                open_orders: 50_000,
                order: Some(Holding {
                    order_id: "order-049999".into(),
                    held: 2
                }),
                rights: None,
            }
        );
    }

    #[test]
    fn channel_keeps_the_newest_messages_within_its_bytes_and_huge_states_are_oversized() {
        let mut ch = None;
        let mut e = ev(Op::CounterAdd { delta: 0 });
        for i in 0..20 {
            e = ev(Op::MessagePost {
                author: "a".into(),
                text: format!("{i:02}{}", "x".repeat(3_000)),
            });
            apply(&mut ch, &e).unwrap();
        }
        let Published::Channel { count, last } =
            Published::from_json(&published_json(ch.as_ref(), &e)).unwrap()
        else {
            panic!()
        };
        assert_eq!(count, 20);
        assert_eq!(last.len(), 5, "5 × 3 kB fit in 16 KiB");
        assert!(last[4].text.starts_with("19") && last[0].text.starts_with("15"));

        let mut reg = None;
        let e = ev(Op::put("v".repeat(PUBLISHED_MAX_BYTES)));
        apply(&mut reg, &e).unwrap();
        let Published::Oversized { family, bytes } =
            Published::from_json(&published_json(reg.as_ref(), &e)).unwrap()
        else {
            panic!()
        };
        assert_eq!(family, "register");
        assert!(bytes > PUBLISHED_MAX_BYTES as u64);
    }
}
