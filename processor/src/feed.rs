//! The live feed of reconciled changes (`/feed`, Server-Sent Events). The follower publishes
//! every record it reads from `reconciled`; each has the id `<partition>-<offset>`, stable
//! across restarts. A bounded ring of recent changes lets a client resume with
//! `Last-Event-ID`; an id older than the ring gets a `reset` event (re-read `/state`).
//! Publishing never waits: a client that falls more than the channel's capacity behind is
//! dropped, so a slow client never slows the pipeline.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

#[derive(Debug, Clone)]
pub struct Change {
    /// `<partition>-<offset>` of the record in `reconciled`.
    pub id: String,
    /// Arrival order in this process (to join the replay and the live stream).
    pub seq: u64,
    pub key: String,
    /// The reconciled record as JSON (event id, region, hlc, outcome, reason, state).
    pub data: String,
}

#[derive(Debug)]
struct Ring {
    changes: VecDeque<Arc<Change>>,
    next_seq: u64,
}

#[derive(Debug, Clone)]
pub struct Feed {
    tx: broadcast::Sender<Arc<Change>>,
    ring: Arc<Mutex<Ring>>,
    ring_capacity: usize,
}

/// What a subscriber gets: the changes to replay, then the live receiver (changes with
/// `seq` above `after_seq` only), or `Reset` when `Last-Event-ID` fell out of the ring.
pub struct Subscription {
    pub replay: Vec<Arc<Change>>,
    pub live: broadcast::Receiver<Arc<Change>>,
    pub after_seq: u64,
    pub reset: bool,
}

impl Default for Feed {
    /// 10,000 changes kept for resumption; a client 1,024 behind is dropped.
    fn default() -> Self {
        Feed::new(10_000, 1_024)
    }
}

impl Feed {
    /// `ring_capacity` recent changes kept for resumption; `client_buffer` changes a client
    /// may lag behind before it is dropped.
    pub fn new(ring_capacity: usize, client_buffer: usize) -> Feed {
        let (tx, _) = broadcast::channel(client_buffer.max(1));
        Feed {
            tx,
            ring: Arc::new(Mutex::new(Ring {
                changes: VecDeque::with_capacity(ring_capacity),
                next_seq: 1,
            })),
            ring_capacity: ring_capacity.max(1),
        }
    }

    pub fn publish(&self, partition: i32, offset: i64, key: &str, data: String) {
        let mut ring = self.ring.lock().expect("feed lock");
        let change = Arc::new(Change {
            id: format!("{partition}-{offset}"),
            seq: ring.next_seq,
            key: key.to_owned(),
            data,
        });
        ring.next_seq += 1;
        if ring.changes.len() == self.ring_capacity {
            ring.changes.pop_front();
        }
        ring.changes.push_back(change.clone());
        // No receiver is fine; a full receiver lags (and is dropped by the server).
        let _ = self.tx.send(change);
    }

    /// Subscribe, resuming after `last_event_id` when given.
    pub fn subscribe(&self, prefix: &str, last_event_id: Option<&str>) -> Subscription {
        let ring = self.ring.lock().expect("feed lock");
        let live = self.tx.subscribe();
        let after_seq = ring.next_seq - 1;
        let (replay, reset) = match last_event_id {
            None => (Vec::new(), false),
            Some(id) => match ring.changes.iter().position(|c| c.id == id) {
                Some(i) => (
                    ring.changes
                        .iter()
                        .skip(i + 1)
                        .filter(|c| c.key.starts_with(prefix))
                        .cloned()
                        .collect(),
                    false,
                ),
                None => (Vec::new(), true),
            },
        };
        Subscription {
            replay,
            live,
            after_seq,
            reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_after_the_last_seen_id_and_filters_by_prefix() {
        let f = Feed::new(100, 10);
        for o in 0..5 {
            let key = if o % 2 == 0 { "likes:1" } else { "chat:1" };
            f.publish(0, o, key, format!("{o}"));
        }
        let s = f.subscribe("likes:", Some("0-0"));
        let ids: Vec<&str> = s.replay.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, vec!["0-2", "0-4"]);
        assert!(!s.reset);
        assert!(f.subscribe("likes:", Some("9-9")).reset);
    }

    #[test]
    fn a_slow_subscriber_lags_instead_of_blocking_the_publisher() {
        let f = Feed::new(4, 2);
        let mut s = f.subscribe("", None);
        for o in 0..10 {
            f.publish(0, o, "k", String::new());
        }
        assert!(matches!(
            s.live.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(_))
        ));
        // The ring keeps only the newest changes.
        assert!(f.subscribe("", Some("0-0")).reset);
        assert_eq!(f.subscribe("", Some("0-7")).replay.len(), 2);
    }
}
