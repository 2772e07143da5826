//! The five built-in aggregates of DESIGN.md. One key holds one family; `apply` is the
//! fold step used both by the processor (regional view) and by the reconciler (merge in
//! reconciled order), so both sides compute the same state from the same sequence.

use crate::causal::{parse_token, Causal};
use crate::escrow::Escrow;
pub use crate::indexed::{Board, Orders};
use rf_schemas::{Dot, Event, Hlc, Op, ScheduleSpec};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

pub const LEADERBOARD_TOP_K: usize = 10;
pub const CHANNEL_LAST_N: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Family {
    Counter,
    Register,
    Leaderboard,
    Inventory,
    Channel,
    /// Scheduled actions (`crate::schedule`).
    Schedule,
    /// A user-defined aggregate (`crate::custom::Aggregate`); the name tells them apart.
    Custom,
}

impl Family {
    pub fn of(op: &Op) -> Option<Family> {
        Some(match op {
            Op::CounterAdd { .. } => Family::Counter,
            Op::RegisterPut { .. } => Family::Register,
            Op::ScoreSubmit { .. } => Family::Leaderboard,
            Op::StockAdd { .. }
            | Op::Reserve { .. }
            | Op::Release { .. }
            | Op::RightsRequest { .. }
            | Op::RightsTransfer { .. } => Family::Inventory,
            Op::MessagePost { .. } => Family::Channel,
            Op::ScheduleSet(_) | Op::ScheduleCancel { .. } | Op::ScheduleFired(_) => {
                Family::Schedule
            }
            Op::Custom { .. } => Family::Custom,
            Op::Heartbeat => return None,
        })
    }
}

/// Why an op is bad input (it goes to the dead-letter topic, never into history).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOp {
    #[error("op {op} does not belong to the {family:?} aggregate this key holds")]
    WrongFamily { op: &'static str, family: Family },
    #[error("{0} is written into history by processors only")]
    ReservedOp(&'static str),
    #[error("invalid value: {0}")]
    InvalidValue(String),
}

impl InvalidOp {
    pub fn class(&self) -> &'static str {
        match self {
            InvalidOp::WrongFamily { .. } => "wrong_family",
            InvalidOp::ReservedOp(_) => "reserved_op",
            InvalidOp::InvalidValue(_) => "invalid_value",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// The op was valid but its effect could not be granted (e.g. a reservation the
    /// available stock cannot cover). Recorded, not dropped.
    Refused(String),
}

/// The latest occurrence a schedule fired (by instant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastFired {
    pub at_ms: i64,
    pub fold: i32,
    pub wall: String,
    pub region: String,
    pub failover: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub author: String,
    pub text: String,
}

/// Folded state of one aggregate key. Serialises to canonical JSON (ordered maps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "aggregate", rename_all = "snake_case")]
pub enum AggState {
    Counter {
        total: i64,
    },
    Register {
        value: String,
        region: Option<String>,
        hlc: Option<Hlc>,
        /// Dotted version vectors (`crate::causal`); empty for puts written before them.
        #[serde(default, skip_serializing_if = "Causal::is_empty")]
        causal: Causal,
    },
    Leaderboard {
        /// Best score per player.
        best: Board,
    },
    Inventory {
        available: i64,
        reserved: Orders,
        /// The rights per region under the escrow policy (`crate::escrow`); `None`: the
        /// repair policy (admit optimistically, revoke in the merge).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        escrow: Option<Escrow>,
    },
    Channel {
        count: u64,
        last: VecDeque<Message>,
    },
    /// A schedule (`crate::schedule`): what fires, and what fired last.
    Schedule {
        /// `None`: cancelled.
        spec: Option<ScheduleSpec>,
        /// The instant (HLC ms) of the set that made the current spec: it fires after it.
        since_ms: i64,
        /// The region that accepted that set (the home unless the spec names one).
        set_by: Option<String>,
        last: Option<LastFired>,
        fired: u64,
        /// Of `fired`, by a region other than the home.
        failovers: u64,
    },
    /// State of a user-defined aggregate, as its own JSON.
    Custom {
        name: String,
        state: serde_json::Value,
    },
}

impl AggState {
    pub fn family(&self) -> Family {
        match self {
            AggState::Counter { .. } => Family::Counter,
            AggState::Register { .. } => Family::Register,
            AggState::Leaderboard { .. } => Family::Leaderboard,
            AggState::Inventory { .. } => Family::Inventory,
            AggState::Channel { .. } => Family::Channel,
            AggState::Schedule { .. } => Family::Schedule,
            AggState::Custom { .. } => Family::Custom,
        }
    }

    fn empty(family: Family) -> AggState {
        match family {
            Family::Counter => AggState::Counter { total: 0 },
            Family::Register => AggState::Register {
                value: String::new(),
                region: None,
                hlc: None,
                causal: Causal::default(),
            },
            Family::Leaderboard => AggState::Leaderboard {
                best: Board::default(),
            },
            Family::Inventory => AggState::Inventory {
                available: 0,
                reserved: Orders::default(),
                escrow: None,
            },
            Family::Channel => AggState::Channel {
                count: 0,
                last: VecDeque::new(),
            },
            Family::Schedule => AggState::Schedule {
                spec: None,
                since_ms: 0,
                set_by: None,
                last: None,
                fired: 0,
                failovers: 0,
            },
            Family::Custom => AggState::Custom {
                name: String::new(),
                state: serde_json::Value::Null,
            },
        }
    }

    /// Top K players by best score (ties by player name), for leaderboards. O(K).
    pub fn top_k(&self) -> Vec<(String, i64)> {
        match self {
            AggState::Leaderboard { best } => best
                .top(LEADERBOARD_TOP_K)
                .map(|(p, s)| (p.to_owned(), s))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("state serialises")
    }

    pub fn from_json(s: &str) -> Result<AggState, serde_json::Error> {
        serde_json::from_str(s)
    }
}

/// `a + b`, or an `invalid_value` naming what would overflow: an op whose effect does not fit
/// is refused whole (a dead letter in the processor, revoked in the reconciler), never wrapped
/// or clamped.
fn checked_add(a: i64, b: i64, what: &str) -> Result<i64, InvalidOp> {
    a.checked_add(b).ok_or_else(|| {
        InvalidOp::InvalidValue(format!("{what} would overflow: {a} + {b} is out of range"))
    })
}

fn checked_sub(a: i64, b: i64, what: &str) -> Result<i64, InvalidOp> {
    a.checked_sub(b).ok_or_else(|| {
        InvalidOp::InvalidValue(format!("{what} would overflow: {a} - {b} is out of range"))
    })
}

/// Validate an op against the key's current state without changing it.
pub fn validate(state: Option<&AggState>, op: &Op) -> Result<Family, InvalidOp> {
    let family = Family::of(op).ok_or(InvalidOp::ReservedOp(op.name()))?;
    if let Some(s) = state {
        if s.family() != family {
            return Err(InvalidOp::WrongFamily {
                op: op.name(),
                family: s.family(),
            });
        }
    }
    if let Op::Custom { aggregate, .. } = op {
        if crate::custom::lookup(aggregate).is_none() {
            return Err(InvalidOp::InvalidValue(format!(
                "no aggregate named {aggregate:?} is registered"
            )));
        }
        if let Some(AggState::Custom { name, .. }) = state {
            if name != aggregate {
                return Err(InvalidOp::InvalidValue(format!(
                    "key holds aggregate {name:?}, op is for {aggregate:?}"
                )));
            }
        }
    }
    match op {
        Op::StockAdd { qty, .. }
        | Op::Reserve { qty, .. }
        | Op::RightsRequest { qty }
        | Op::RightsTransfer { qty, .. }
            if *qty <= 0 =>
        {
            Err(InvalidOp::InvalidValue(format!(
                "quantity must be positive, got {qty}"
            )))
        }
        Op::StockAdd {
            grants: Some(g), ..
        } if g.iter().any(|s| s.qty < 0) => Err(InvalidOp::InvalidValue(
            "a stock add's grants must not be negative".into(),
        )),
        Op::RegisterPut {
            context: Some(t), ..
        } => parse_token(t)
            .map(|_| family)
            .map_err(InvalidOp::InvalidValue),
        Op::Reserve { order_id, .. } | Op::Release { order_id } if order_id.is_empty() => {
            Err(InvalidOp::InvalidValue("empty order_id".into()))
        }
        Op::ScheduleSet(spec) => crate::schedule::Schedule::parse(spec)
            .map(|_| family)
            .map_err(InvalidOp::InvalidValue),
        _ => Ok(family),
    }
}

/// The merge step of the reconciler: `apply` for the built-in aggregates (whose refusals
/// the reconciler turns into revocations), `Aggregate::merge` for user-defined ones.
pub fn merge_step(state: &mut Option<AggState>, ev: &Event) -> Result<Applied, InvalidOp> {
    if matches!(ev.op, Op::Custom { .. }) {
        return custom_step(state, ev, true);
    }
    apply(state, ev)
}

fn custom_step(
    state: &mut Option<AggState>,
    ev: &Event,
    merge: bool,
) -> Result<Applied, InvalidOp> {
    validate(state.as_ref(), &ev.op)?;
    let Op::Custom { aggregate, payload } = &ev.op else {
        unreachable!("custom_step is only called for custom ops")
    };
    let agg = crate::custom::lookup(aggregate).expect("validate() found it");
    let mut json = match state {
        Some(AggState::Custom { state, .. }) => Some(state.clone()),
        _ => None,
    };
    let r = if merge {
        agg.merge(&mut json, payload)
    } else {
        agg.apply(&mut json, payload)
    }
    .map_err(InvalidOp::InvalidValue)?;
    if matches!(r, Applied::Applied) {
        if let Some(v) = json {
            *state = Some(AggState::Custom {
                name: aggregate.clone(),
                state: v,
            });
        }
    }
    Ok(r)
}

/// Fold one record of `reconciled` (its event and the outcome the merge gave it), as a
/// reader of the topic rebuilds the full state the bounded `state_json` does not carry:
/// an applied event is applied as the merge applied it (user aggregates by their `merge`
/// step), a refused or revoked one changes nothing.
pub fn apply_reconciled(state: &mut Option<AggState>, ev: &Event, outcome: rf_schemas::Outcome) {
    if outcome != rf_schemas::Outcome::Applied {
        return;
    }
    let _ = if matches!(ev.op, Op::Custom { .. }) {
        custom_step(state, ev, true)
    } else {
        apply_admitted(state, ev)
    };
}

/// Fold one event whose admission is already decided (a history record, or an own event
/// in the regional view): a refused event changes nothing; an admitted reservation (or an
/// escrow transfer) is applied even where this state alone could not cover it (it was
/// admitted against the regional view, which also holds the other regions' stock and the
/// rights they gave).
pub fn apply_admitted(state: &mut Option<AggState>, ev: &Event) -> Result<Applied, InvalidOp> {
    if let Some(r) = &ev.refusal {
        return Ok(Applied::Refused(r.clone()));
    }
    let region = ev.region.as_deref().unwrap_or("");
    match &ev.op {
        Op::Reserve { order_id, qty } => {
            let family = validate(state.as_ref(), &ev.op)?;
            if let AggState::Inventory {
                available,
                reserved,
                escrow,
            } = state.get_or_insert_with(|| AggState::empty(family))
            {
                if reserved.contains_key(order_id) {
                    return Ok(Applied::Refused(format!(
                        "order {order_id} already holds a reservation"
                    )));
                }
                let left = checked_sub(*available, *qty, "available stock")?;
                checked_add(reserved.total(), *qty, "reserved stock")?;
                if let Some(e) = escrow {
                    let c = e.consumed.entry(region.to_owned()).or_insert(0);
                    *c = checked_add(*c, *qty, "consumed units")?;
                }
                *available = left;
                reserved.insert(order_id.clone(), *qty);
                return Ok(Applied::Applied);
            }
        }
        Op::RightsTransfer { to, qty, request } => {
            validate(state.as_ref(), &ev.op)?;
            if let Some(AggState::Inventory {
                escrow: Some(e), ..
            }) = state
            {
                if to == region {
                    return Ok(Applied::Refused(format!(
                        "{region} cannot transfer rights to itself"
                    )));
                }
                let row = e.transferred.entry(region.to_owned()).or_default();
                let t = row.entry(to.clone()).or_insert(0);
                *t = checked_add(*t, *qty, "transferred rights")?;
                let a = e.answered.entry(region.to_owned()).or_default();
                let n = a.entry(to.clone()).or_insert(0);
                *n = (*n).max(*request);
                return Ok(Applied::Applied);
            }
        }
        _ => {}
    }
    apply(state, ev)
}

/// Fold one of this region's own events not yet reconciled into its view: as
/// `apply_admitted`, except that under escrow a release, and a stock add whose rights all go to
/// this region, grant no rights yet (a release frees the order; the units become rights when
/// reconciled). Another region may release the same order first (a user who failed over),
/// and then the merge refuses ours: the units become this region's rights only when
/// `reconciled` shows the release applied, so a view never spends rights the merge may not
/// give it.
pub fn apply_pending(state: &mut Option<AggState>, ev: &Event) -> Result<Applied, InvalidOp> {
    // A stock add whose rights all went to this region, likewise, only once reconciled: the
    // producer may have sent the same add to another region first (a failover), and the
    // merge keeps that copy, which grants them to that region. A split by weights grants the
    // same whichever region's copy is kept (`escrow_split` is the same everywhere), so its
    // rights count at once. The stock shows in `available` at once either way.
    let to_me_only = |g: &Option<Vec<rf_schemas::Share>>| {
        g.as_ref().is_none_or(|g| {
            g.iter()
                .all(|s| Some(s.region.as_str()) == ev.region.as_deref())
        })
    };
    if let (None, Op::StockAdd { qty, grants }) = (&ev.refusal, &ev.op) {
        let escrow_key = to_me_only(grants)
            && match state.as_ref() {
                None => grants.is_some(),
                Some(AggState::Inventory { escrow, .. }) => escrow.is_some(),
                Some(_) => false,
            };
        if escrow_key {
            validate(state.as_ref(), &ev.op)?;
            let s = state.get_or_insert_with(|| AggState::Inventory {
                available: 0,
                reserved: Orders::default(),
                escrow: Some(Escrow::default()),
            });
            if let AggState::Inventory { available, .. } = s {
                *available = checked_add(*available, *qty, "available stock")?;
            }
            return Ok(Applied::Applied);
        }
    }
    if let (
        None,
        Op::Release { order_id },
        Some(AggState::Inventory {
            reserved,
            escrow: Some(_),
            ..
        }),
    ) = (&ev.refusal, &ev.op, state.as_mut())
    {
        return Ok(match reserved.get(order_id) {
            Some(_) => {
                reserved.remove(order_id);
                Applied::Applied
            }
            None => Applied::Refused(format!("order {order_id} holds no reservation")),
        });
    }
    apply_admitted(state, ev)
}

/// The causal context of a put: its token parsed (validated on input; an unparsable one
/// in history counts as having seen nothing).
fn put_context(context: &Option<String>) -> crate::causal::Vv {
    context
        .as_deref()
        .and_then(|t| parse_token(t).ok())
        .unwrap_or_default()
}

/// Apply one event (already stamped) to the key's state. `Refused` or an error leaves the
/// state unchanged (a key with no state keeps none: a refused release or transfer does not
/// fix an inventory key's policy before its first stock add).
pub fn apply(state: &mut Option<AggState>, ev: &Event) -> Result<Applied, InvalidOp> {
    if matches!(ev.op, Op::Custom { .. }) {
        return custom_step(state, ev, false);
    }
    let created = state.is_none();
    let r = apply_step(state, ev);
    if created && !matches!(r, Ok(Applied::Applied)) {
        *state = None;
    }
    r
}

fn apply_step(state: &mut Option<AggState>, ev: &Event) -> Result<Applied, InvalidOp> {
    let family = validate(state.as_ref(), &ev.op)?;
    let created = state.is_none();
    let s = state.get_or_insert_with(|| AggState::empty(family));
    let region = ev.region.as_deref().unwrap_or("");
    Ok(match (s, &ev.op) {
        (AggState::Counter { total }, Op::CounterAdd { delta }) => {
            *total = checked_add(*total, *delta, "counter total")?;
            Applied::Applied
        }
        (
            AggState::Register {
                value,
                region: at,
                hlc,
                causal,
            },
            Op::RegisterPut {
                value: v,
                context,
                dot,
            },
        ) => {
            // A put written before dotted version vectors has no dot: last writer wins.
            let current = match dot {
                Some(d) => causal.put(d.clone(), put_context(context), ev.hlc, &ev.event_id),
                None => true,
            };
            if current {
                *value = v.clone();
                *at = ev.region.clone();
                *hlc = ev.hlc;
            }
            Applied::Applied
        }
        (AggState::Leaderboard { best }, Op::ScoreSubmit { player, score }) => {
            best.submit(player, *score);
            Applied::Applied
        }
        (
            AggState::Inventory {
                available, escrow, ..
            },
            Op::StockAdd { qty, grants },
        ) => {
            let left = checked_add(*available, *qty, "available stock")?;
            // The first stock add of a key decides its policy: with grants, escrow.
            if created && grants.is_some() {
                *escrow = Some(Escrow::default());
            }
            if let Some(e) = escrow {
                let mut next = e.clone();
                match grants {
                    Some(g) => {
                        for share in g {
                            next.grant(&share.region, share.qty)
                                .ok_or_else(|| overflow("granted rights"))?;
                        }
                        let given: i64 = g.iter().map(|s| s.qty).sum();
                        if given != *qty {
                            return Err(InvalidOp::InvalidValue(format!(
                                "grants of {given} do not add up to the stock add of {qty}"
                            )));
                        }
                    }
                    None => next
                        .grant(region, *qty)
                        .ok_or_else(|| overflow("granted rights"))?,
                }
                *e = next;
            }
            *available = left;
            Applied::Applied
        }
        (
            AggState::Inventory {
                available,
                reserved,
                escrow,
            },
            Op::Reserve { order_id, qty },
        ) => {
            if reserved.contains_key(order_id) {
                Applied::Refused(format!("order {order_id} already holds a reservation"))
            } else if escrow.is_none() && *qty > *available {
                Applied::Refused(format!(
                    "reservation of {qty} exceeds available {available}"
                ))
            } else {
                checked_add(reserved.total(), *qty, "reserved stock")?;
                if let Some(e) = escrow {
                    if let Err(why) = e.consume(region, *qty) {
                        return Ok(Applied::Refused(why));
                    }
                }
                *available -= qty;
                reserved.insert(order_id.clone(), *qty);
                Applied::Applied
            }
        }
        (
            AggState::Inventory {
                available,
                reserved,
                escrow,
            },
            Op::Release { order_id },
        ) => match reserved.get(order_id) {
            Some(q) => {
                let left = checked_add(*available, q, "available stock")?;
                // The units come back as rights of the region that accepted the release.
                if let Some(e) = escrow {
                    e.grant(region, q)
                        .ok_or_else(|| overflow("granted rights"))?;
                }
                *available = left;
                reserved.remove(order_id);
                Applied::Applied
            }
            None => Applied::Refused(format!("order {order_id} holds no reservation")),
        },
        (AggState::Inventory { escrow, .. }, Op::RightsRequest { .. }) => {
            if created {
                *escrow = Some(Escrow::default());
            }
            match escrow {
                Some(e) => {
                    e.request(region);
                    Applied::Applied
                }
                None => Applied::Refused("this SKU uses the repair policy: no rights".into()),
            }
        }
        (AggState::Inventory { escrow, .. }, Op::RightsTransfer { to, qty, request }) => {
            match escrow {
                Some(e) => match e.transfer(region, to, *qty, *request) {
                    Ok(()) => Applied::Applied,
                    Err(why) => Applied::Refused(why),
                },
                None => Applied::Refused("this SKU uses the repair policy: no rights".into()),
            }
        }
        (
            AggState::Schedule {
                spec,
                since_ms,
                set_by,
                ..
            },
            Op::ScheduleSet(new),
        ) => {
            *spec = Some((**new).clone());
            *since_ms = ev.hlc.map_or(0, |h| h.physical_ms);
            *set_by = ev.region.clone();
            Applied::Applied
        }
        (AggState::Schedule { spec, .. }, Op::ScheduleCancel { .. }) => match spec {
            Some(_) => {
                *spec = None;
                Applied::Applied
            }
            None => Applied::Refused("no schedule to cancel".into()),
        },
        (
            AggState::Schedule {
                spec,
                last,
                fired,
                failovers,
                ..
            },
            Op::ScheduleFired(f),
        ) => {
            // A firing the merge orders after a cancel is refused: a consumer acting on
            // `reconciled` never acts on an occurrence of a cancelled schedule.
            if spec.is_none() {
                return Ok(Applied::Refused(
                    "the schedule was cancelled before this occurrence fired".into(),
                ));
            }
            if last.as_ref().is_none_or(|l| f.occurrence_ms > l.at_ms) {
                *last = Some(LastFired {
                    at_ms: f.occurrence_ms,
                    fold: f.fold,
                    wall: f.wall.clone(),
                    region: region.to_owned(),
                    failover: f.failover,
                });
            }
            *fired = fired.saturating_add(1);
            if f.failover {
                *failovers = failovers.saturating_add(1);
            }
            Applied::Applied
        }
        (AggState::Channel { count, last }, Op::MessagePost { author, text }) => {
            *count = count.saturating_add(1);
            last.push_back(Message {
                author: author.clone(),
                text: text.clone(),
            });
            while last.len() > CHANNEL_LAST_N {
                last.pop_front();
            }
            Applied::Applied
        }
        _ => unreachable!("validate() checked the family"),
    })
}

fn overflow(what: &str) -> InvalidOp {
    InvalidOp::InvalidValue(format!("{what} would overflow"))
}

/// Check an op as a producer sent it, before anything else: ops and fields only processors
/// write are `reserved_op` (heartbeats, rights requests and transfers, a stock add's
/// grants, a put's dot).
pub fn validate_input(op: &Op) -> Result<(), InvalidOp> {
    if op.is_reserved() {
        return Err(InvalidOp::ReservedOp(op.name()));
    }
    match op {
        Op::StockAdd {
            grants: Some(_), ..
        } => Err(InvalidOp::ReservedOp("StockAdd.grants")),
        Op::RegisterPut { dot: Some(_), .. } => Err(InvalidOp::ReservedOp("RegisterPut.dot")),
        _ => Ok(()),
    }
}

impl AggState {
    /// A schedule's firing region: the spec's home, else the region that accepted the set.
    pub fn schedule_home(&self) -> Option<&str> {
        match self {
            AggState::Schedule {
                spec: Some(s),
                set_by,
                ..
            } => s.home.as_deref().or(set_by.as_deref()),
            _ => None,
        }
    }

    /// A schedule's occurrences at or before this instant are done: the set's instant, or
    /// the last fired occurrence.
    pub fn schedule_done_ms(&self) -> i64 {
        match self {
            AggState::Schedule { since_ms, last, .. } => {
                (*since_ms).max(last.as_ref().map_or(i64::MIN, |l| l.at_ms))
            }
            _ => i64::MIN,
        }
    }
}

/// The dot a put `region` accepts now gets, from the key's state: one past the last put of
/// that region the state has seen.
pub fn next_dot(state: Option<&AggState>, region: &str) -> Dot {
    match state {
        Some(AggState::Register { causal, .. }) => causal.next_dot(region),
        _ => Dot {
            region: region.to_owned(),
            seq: 1,
        },
    }
}

/// What a writer that read `state` has seen, as a context token (`/state/{key}` returns it).
pub fn context_token(state: Option<&AggState>) -> String {
    match state {
        Some(AggState::Register { causal, .. }) => crate::causal::token(&causal.seen),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(op: Op) -> Event {
        Event::new("e", "k", op)
    }

    #[test]
    fn counter_sums() {
        let mut s = None;
        for d in [1, 2, -1] {
            apply(&mut s, &ev(Op::CounterAdd { delta: d })).unwrap();
        }
        assert_eq!(s, Some(AggState::Counter { total: 2 }));
    }

    /// Every built-in aggregate's arithmetic is checked: an op whose effect does not fit in
    /// a `long` is `invalid_value` and leaves the state as it was.
    #[test]
    fn overflow_is_invalid_and_changes_nothing() {
        let mut s = None;
        apply(&mut s, &ev(Op::CounterAdd { delta: i64::MAX })).unwrap();
        for delta in [1, i64::MAX] {
            let before = s.clone();
            let err = apply(&mut s, &ev(Op::CounterAdd { delta })).unwrap_err();
            assert_eq!(err.class(), "invalid_value");
            assert_eq!(s, before);
        }
        let mut neg = None;
        apply(&mut neg, &ev(Op::CounterAdd { delta: i64::MIN })).unwrap();
        assert!(apply(&mut neg, &ev(Op::CounterAdd { delta: -1 })).is_err());

        // Stock: an add past the range; a release that would carry `available` past it.
        let mut inv = None;
        apply(&mut inv, &ev(Op::stock_add(i64::MAX))).unwrap();
        let before = inv.clone();
        assert_eq!(
            apply(&mut inv, &ev(Op::stock_add(1))).unwrap_err().class(),
            "invalid_value"
        );
        assert_eq!(inv, before);
        let reserve = |o: &str, qty| Op::Reserve {
            order_id: o.into(),
            qty,
        };
        apply(&mut inv, &ev(reserve("o1", 10))).unwrap();
        apply(&mut inv, &ev(Op::stock_add(10))).unwrap();
        let before = inv.clone();
        let release = ev(Op::Release {
            order_id: "o1".into(),
        });
        assert_eq!(
            apply(&mut inv, &release).unwrap_err().class(),
            "invalid_value"
        );
        assert_eq!(inv, before, "the order still holds its reservation");
    }

    #[test]
    fn wrong_family_is_invalid() {
        let mut s = None;
        apply(&mut s, &ev(Op::CounterAdd { delta: 1 })).unwrap();
        let err = apply(&mut s, &ev(Op::put("x"))).unwrap_err();
        assert_eq!(err.class(), "wrong_family");
    }

    #[test]
    fn inventory_never_oversells() {
        let mut s = None;
        apply(&mut s, &ev(Op::stock_add(3))).unwrap();
        let r = |id: &str, q| Op::Reserve {
            order_id: id.into(),
            qty: q,
        };
        assert_eq!(apply(&mut s, &ev(r("a", 2))).unwrap(), Applied::Applied);
        assert!(matches!(
            apply(&mut s, &ev(r("b", 2))).unwrap(),
            Applied::Refused(_)
        ));
        apply(
            &mut s,
            &ev(Op::Release {
                order_id: "a".into(),
            }),
        )
        .unwrap();
        assert_eq!(apply(&mut s, &ev(r("b", 2))).unwrap(), Applied::Applied);
        assert!(apply(&mut s, &ev(Op::stock_add(-1))).is_err());
    }

    #[test]
    fn leaderboard_keeps_best_and_top_k() {
        let mut s = None;
        for i in 0..15 {
            apply(
                &mut s,
                &ev(Op::ScoreSubmit {
                    player: format!("p{i:02}"),
                    score: i,
                }),
            )
            .unwrap();
        }
        apply(
            &mut s,
            &ev(Op::ScoreSubmit {
                player: "p00".into(),
                score: 100,
            }),
        )
        .unwrap();
        apply(
            &mut s,
            &ev(Op::ScoreSubmit {
                player: "p00".into(),
                score: 1,
            }),
        )
        .unwrap();
        let top = s.unwrap().top_k();
        assert_eq!(top.len(), LEADERBOARD_TOP_K);
        assert_eq!(top[0], ("p00".into(), 100));
    }

    #[test]
    fn state_json_round_trips() {
        let mut s = None;
        apply(
            &mut s,
            &ev(Op::MessagePost {
                author: "a".into(),
                text: "t".into(),
            }),
        )
        .unwrap();
        let s = s.unwrap();
        assert_eq!(AggState::from_json(&s.to_json()).unwrap(), s);
    }
}
