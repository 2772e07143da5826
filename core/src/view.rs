//! A region's view of every key (regional convergence): the reconciled state, as the
//! processor reads it back from `reconciled`, plus this region's own accepted events that
//! `reconciled` does not hold yet. Inventory admission decides against this view, so a
//! region sees the stock and reservations of the others once they are reconciled, and its
//! own at once. I/O-free: the processor feeds it and persists the pending events.
//!
//! An own event stops being pending when `reconciled` shows it (by event id, whichever
//! region's copy was kept) or shows any record of the same key later in the reconciled
//! order (hlc, region, event_id): the reconciler releases in that order, and only once our
//! watermark has passed, so by then our event was released or dropped as a cross-region
//! duplicate; nothing of ours below that point can still be missing.
//!
//! Memory is bounded by the keys, not by the pending events: a long cut of the home
//! cluster makes every event the region accepts pending, so the events themselves live in
//! a `PendingLog` (the processor's store) once taken for a store batch, and memory keeps
//! only those accepted since (one commit interval) and one `PendingKey` per key. Settling
//! pops a prefix of a key's pending events in HLC order (one store seek each) and one by
//! id; inventory admission reads a cached view of the key, reduced to the orders the
//! pending events name, kept up to date as own events are accepted and rebuilt once (one
//! scan of the key's pending events) after `reconciled` changes the key.

use crate::aggregate::{apply_pending, apply_reconciled, Orders};
use crate::{AggState, Family, OrderKey};
use rf_schemas::{Event, Hlc, Op, ReconciledEvent};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The reconciled state of one key as the view holds it, and as the processor checkpoints
/// it (with the `reconciled` offset of its partition, so a restart reads only the tail).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Replica {
    pub state: Option<AggState>,
    /// The last reconciled record of this key, in the reconciled order.
    pub frontier: Option<OrderKey>,
}

/// Ids of other regions' reconciled records, older than the last `take_seen_ids`, where the
/// view does not hold them: the processor's store (point lookups behind a bloom filter,
/// expired after the duplicate window), nothing in tests (then the view keeps them all).
///
/// Only other regions' ids are needed: our copy of an event another region's copy settled
/// (a failover duplicate the reconciler dropped) can carry a later HLC than the key's
/// frontier, so only its id settles it; our own reconciled copies are at or below it.
pub trait SeenIds: Send {
    /// Whether `reconciled` showed another region's copy of (key, event_id).
    fn seen(&self, key: &str, event_id: &str) -> bool;
}

/// Pending own events taken for the store (`take_pending`), where the view does not hold
/// them: the processor's store; nothing in tests (then the view keeps them all). Written
/// before the next lookup, deleted as they settle.
pub trait PendingLog: Send {
    /// Up to `limit` persisted pending events of `key` in HLC order, after `after` (from
    /// the first when `None`).
    fn scan(&self, partition: i32, key: &str, after: Option<Hlc>, limit: usize) -> Vec<Event>;
    /// The HLC of the persisted pending event `event_id` of `key`, if there is one.
    fn find(&self, partition: i32, key: &str, event_id: &str) -> Option<Hlc>;
}

/// What memory keeps of one key's pending own events, wherever the events are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingKey {
    pub partition: i32,
    pub count: u64,
    /// The first in HLC order, with its id (for the reconciled order), and the last.
    pub first: (Hlc, String),
    pub last: Hlc,
}

/// Own accepted events of one key not yet taken for the store.
#[derive(Debug, Default)]
struct Pending {
    by_hlc: BTreeMap<Hlc, Event>,
    by_id: HashMap<String, Hlc>,
}

/// Pending own events to write to the store and to delete from it, with the next batch:
/// puts as (partition, event), deletes as (partition, key, hlc, event_id); and, per
/// partition whose value moved, the history offset below which every own event still
/// pending is in the store (`pending_from`): a restore re-reads own events from there.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TakenPending {
    pub puts: Vec<(i32, Event)>,
    pub dels: Vec<(i32, String, Hlc, String)>,
    pub pending_from: Vec<(i32, i64)>,
}

/// How long own accepted events stay in memory only, before they are written to the
/// pending log: most settle within the reconciler's latency, and an event that settles
/// in memory costs the store nothing (no put, no delete, no seek). A crash loses nothing:
/// the events held are in `history` at or after the partitions' `pending_from`, and a
/// restore re-reads them from there. `ms == 0` writes every event at the next take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hold {
    pub ms: i64,
    /// At most this many own events in memory (beyond it the oldest are written).
    pub max_events: usize,
}

/// The own events accepted between two takes, with the partitions' history ends as of
/// the second take (every own event of the partition below it was accepted by then).
#[derive(Debug)]
struct Generation {
    taken_ms: i64,
    ends: Vec<(i32, i64)>,
    events: Vec<(i32, String, Hlc)>,
}

/// The view of one inventory key for admission: `state` is the reconciled state reduced to
/// the orders in `named` (every order a pending event names, and every order probed since),
/// with the pending events applied; exact for those orders and for `available`.
#[derive(Debug)]
struct Admission {
    state: Option<AggState>,
    named: HashSet<String>,
}

fn order_of(op: &Op) -> Option<&String> {
    match op {
        Op::Reserve { order_id, .. } | Op::Release { order_id } => Some(order_id),
        _ => None,
    }
}

/// At most this many persisted events per store scan while looking for the first one not
/// settled.
const SCAN_CHUNK: usize = 64;

#[derive(Debug, Default)]
pub struct RegionalView {
    region: String,
    /// Reconciled state per key, with the partition it belongs to: only the partitions
    /// this instance owns (`load_partition`, `forget_partition`).
    replica: HashMap<String, (i32, Replica)>,
    /// Keys whose replica changed since the last `take_replicas`.
    dirty: HashSet<String>,
    /// Per key with pending own events: where, how many, first and last.
    pending: HashMap<String, PendingKey>,
    /// Own events not yet in the log (all of them without a log): accepted since the last
    /// `take_pending`, or held (`Hold`) in the generations below.
    recent: HashMap<String, Pending>,
    /// Events in `recent`, those accepted since the last take, and the held generations,
    /// oldest first; per partition, the history offset below which every pending own event
    /// is in the log.
    held: usize,
    /// Entries of `current` and the generations, settled ones too (bounded with `held`).
    entries: usize,
    current: Vec<(i32, String, Hlc)>,
    generations: std::collections::VecDeque<Generation>,
    hold: Hold,
    pending_from: HashMap<i32, i64>,
    /// `pending_from` as last taken for the store.
    saved_from: HashMap<i32, i64>,
    /// Persisted pending events settled since the last `take_pending` (hidden from the
    /// log's answers until the deletes are written), and the deletes.
    removed: HashSet<(String, Hlc)>,
    unsaved_del: Vec<(i32, String, Hlc, String)>,
    pending_log: Option<Box<dyn PendingLog>>,
    /// Inventory keys' admission views (dropped when `reconciled` changes the key).
    admission: HashMap<String, Admission>,
    /// Other regions' reconciled ids since the last `take_seen_ids` (all of them without a
    /// backing), per key, and the same as (key, id, HLC ms) for the store.
    recent_ids: HashMap<String, HashSet<String>>,
    unsaved_ids: Vec<(String, String, i64)>,
    seen_backing: Option<Box<dyn SeenIds>>,
    /// Records read from `reconciled` so far.
    pub reconciled_seen: u64,
}

impl std::fmt::Debug for dyn SeenIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeenIds(store)")
    }
}

impl std::fmt::Debug for dyn PendingLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PendingLog(store)")
    }
}

impl RegionalView {
    pub fn new(region: &str) -> Self {
        RegionalView {
            region: region.to_owned(),
            ..Default::default()
        }
    }

    /// Keep other regions' reconciled ids in `ids` once taken (`take_seen_ids`), instead of
    /// in memory: memory then holds only those since the last take.
    pub fn with_seen_ids(mut self, ids: Box<dyn SeenIds>) -> Self {
        self.seen_backing = Some(ids);
        self
    }

    /// Keep pending own events in `log` once taken (`take_pending`) and older than `hold`,
    /// instead of in memory: memory then holds only those, and one entry per key.
    pub fn with_pending_log(mut self, log: Box<dyn PendingLog>, hold: Hold) -> Self {
        self.pending_log = Some(log);
        self.hold = hold;
        self
    }

    /// Other regions' reconciled ids since the last call, as (key, event_id, HLC ms), for
    /// the store; with a backing, the view forgets them (the store answers from now on, so
    /// they must be written before the next lookup).
    pub fn take_seen_ids(&mut self) -> Vec<(String, String, i64)> {
        if self.seen_backing.is_some() {
            self.recent_ids.clear();
        }
        std::mem::take(&mut self.unsaved_ids)
    }

    /// Pending own events to put and to delete since the last call, for the store, at
    /// `now_ms`, with `ends` the owned partitions' history ends (next offset) now. With a
    /// log, the events accepted since the last call become a generation, and those of the
    /// generations older than the hold (or beyond its size) are put: the view forgets them
    /// (the log answers from now on, so they must be written before the next lookup), and
    /// their partitions' `pending_from` moves to the generation's ends. Without a log,
    /// nothing is put.
    pub fn take_pending(&mut self, now_ms: i64, ends: &[(i32, i64)]) -> TakenPending {
        let mut taken = TakenPending {
            dels: std::mem::take(&mut self.unsaved_del),
            ..TakenPending::default()
        };
        self.removed.clear();
        let events = std::mem::take(&mut self.current);
        if self.pending_log.is_none() {
            self.entries = 0;
            return taken;
        }
        self.generations.push_back(Generation {
            taken_ms: now_ms,
            ends: ends.to_vec(),
            events,
        });
        let mut moved = BTreeMap::new();
        while let Some(g) = self.generations.front() {
            // Settled events leave `held` but not their generation's list: at most twice the
            // bound of entries, so memory is bounded by the configuration, not by the rate.
            let old = now_ms.saturating_sub(g.taken_ms) >= self.hold.ms;
            let full = self.held > self.hold.max_events
                || self.entries > self.hold.max_events.saturating_mul(2);
            if !old && !full {
                break;
            }
            let g = self.generations.pop_front().expect("checked");
            self.entries -= g.events.len();
            for (partition, key, hlc) in g.events {
                let Some(p) = self.recent.get_mut(&key) else {
                    continue;
                };
                let Some(e) = p.by_hlc.remove(&hlc) else {
                    continue;
                };
                p.by_id.remove(&e.event_id);
                if p.by_hlc.is_empty() {
                    self.recent.remove(&key);
                }
                self.held -= 1;
                taken.puts.push((partition, e));
            }
            moved.extend(g.ends);
        }
        self.pending_from.extend(moved);
        for (p, from) in &self.pending_from {
            if self.saved_from.insert(*p, *from) != Some(*from) {
                taken.pending_from.push((*p, *from));
            }
        }
        taken.pending_from.sort_unstable();
        taken
            .puts
            .sort_by(|a, b| (a.0, &a.1.key, a.1.hlc).cmp(&(b.0, &b.1.key, b.1.hlc)));
        taken
    }

    /// Where a restore of `partition` re-reads own events from: the history offset below
    /// which every pending own event is in the log (as the store last had it).
    pub fn set_pending_from(&mut self, partition: i32, from: i64) {
        self.pending_from.insert(partition, from);
    }

    /// Own events held in memory only (not yet in the log).
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether some of `key`'s pending events are in the log (not only in memory).
    fn in_log(&self, key: &str, s: &PendingKey) -> bool {
        let in_memory = self.recent.get(key).map_or(0, |p| p.by_hlc.len() as u64);
        self.pending_log.is_some() && s.count > in_memory
    }

    /// Whether an own event of `key` is settled: at or below the key's reconciled frontier,
    /// or reconciled under its id as another region's copy.
    fn settles(&self, key: &str, own: &OrderKey) -> bool {
        self.replica
            .get(key)
            .and_then(|(_, r)| r.frontier.as_ref())
            .is_some_and(|f| own <= f)
            || self
                .recent_ids
                .get(key)
                .is_some_and(|ids| ids.contains(&own.event_id))
            || self
                .seen_backing
                .as_ref()
                .is_some_and(|b| b.seen(key, &own.event_id))
    }

    /// An event this region accepted (stamped, with its admission decision). Returns
    /// false when `reconciled` already holds it (nothing to keep pending).
    pub fn accepted(&mut self, partition: i32, ev: &Event) -> bool {
        let Some(hlc) = ev.hlc else { return false };
        let own = OrderKey::new(hlc, self.region.clone(), ev.event_id.clone());
        if self.settles(&ev.key, &own) {
            return false;
        }
        let p = self.recent.entry(ev.key.clone()).or_default();
        if p.by_hlc.insert(hlc, ev.clone()).is_some() {
            return true;
        }
        p.by_id.insert(ev.event_id.clone(), hlc);
        self.held += 1;
        self.entries += 1;
        self.current.push((partition, ev.key.clone(), hlc));
        let newest = match self.pending.get_mut(&ev.key) {
            Some(s) => {
                s.count += 1;
                if hlc < s.first.0 {
                    s.first = (hlc, ev.event_id.clone());
                }
                let newest = s.last < hlc;
                s.last = s.last.max(hlc);
                newest
            }
            None => {
                self.pending.insert(
                    ev.key.clone(),
                    PendingKey {
                        partition,
                        count: 1,
                        first: (hlc, ev.event_id.clone()),
                        last: hlc,
                    },
                );
                true
            }
        };
        // The admission view follows an event appended in HLC order; anything else
        // (a restore reloading events) rebuilds it.
        let replica = self.replica.get(&ev.key).map(|(_, r)| r);
        match self.admission.get_mut(&ev.key) {
            Some(a) if newest => {
                if let Some(o) = order_of(&ev.op) {
                    name_order(a, replica.and_then(|r| r.state.as_ref()), o);
                }
                let _ = apply_pending(&mut a.state, ev);
            }
            Some(_) => {
                self.admission.remove(&ev.key);
            }
            None => {}
        }
        true
    }

    /// The pending own events of `key` in HLC order, wherever they are.
    fn events_of(&self, key: &str) -> Vec<Event> {
        let Some(s) = self.pending.get(key) else {
            return Vec::new();
        };
        let mut out: Vec<Event> = match &self.pending_log {
            Some(log) if self.in_log(key, s) => log
                .scan(s.partition, key, None, usize::MAX)
                .into_iter()
                .filter(|e| {
                    !self
                        .removed
                        .contains(&(key.to_owned(), e.hlc.unwrap_or_default()))
                })
                .collect(),
            _ => Vec::new(),
        };
        out.extend(
            self.recent
                .get(key)
                .into_iter()
                .flat_map(|p| p.by_hlc.values().cloned()),
        );
        out.sort_by_key(|e| e.hlc);
        out
    }

    /// The first pending own event of `key` in HLC order after `after` (the first just
    /// settled: the settled prefix before it is not scanned again), as (hlc, event_id).
    fn first_after(&self, key: &str, partition: i32, after: Hlc) -> Option<(Hlc, String)> {
        let in_memory = self
            .recent
            .get(key)
            .and_then(|p| p.by_hlc.first_key_value())
            .map(|(h, e)| (*h, e.event_id.clone()));
        let mut persisted = None;
        let logged = self.pending.get(key).is_some_and(|s| self.in_log(key, s));
        if let (Some(log), true) = (&self.pending_log, logged) {
            let mut after = Some(after);
            // Settled events after `after` are rare (settled by id): one at first.
            let mut limit = 1;
            'scan: loop {
                let chunk = log.scan(partition, key, after, limit);
                for e in &chunk {
                    let h = e.hlc.unwrap_or_default();
                    if !self.removed.contains(&(key.to_owned(), h)) {
                        persisted = Some((h, e.event_id.clone()));
                        break 'scan;
                    }
                    after = Some(h);
                }
                if chunk.len() < limit {
                    break;
                }
                limit = (limit * 2).min(SCAN_CHUNK);
            }
        }
        match (in_memory, persisted) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// The HLC of the pending own event `event_id` of `key`, if it is pending.
    fn pending_hlc_of(&self, key: &str, partition: i32, event_id: &str) -> Option<Hlc> {
        if let Some(h) = self.recent.get(key).and_then(|p| p.by_id.get(event_id)) {
            return Some(*h);
        }
        if !self.pending.get(key).is_some_and(|s| self.in_log(key, s)) {
            return None;
        }
        let h = self.pending_log.as_ref()?.find(partition, key, event_id)?;
        (!self.removed.contains(&(key.to_owned(), h))).then_some(h)
    }

    /// Settle one pending own event: out of memory, or deleted from the store with the next
    /// batch (and hidden until then).
    fn settle(&mut self, key: &str, hlc: Hlc, event_id: &str) {
        let Some(s) = self.pending.get_mut(key) else {
            return;
        };
        let partition = s.partition;
        s.count = s.count.saturating_sub(1);
        let was_first = s.first.0 == hlc;
        let empty = s.count == 0;
        let in_memory = self
            .recent
            .get_mut(key)
            .is_some_and(|p| p.by_hlc.remove(&hlc).is_some());
        if in_memory {
            let p = self.recent.get_mut(key).expect("checked");
            p.by_id.remove(event_id);
            self.held -= 1;
            if p.by_hlc.is_empty() {
                self.recent.remove(key);
            }
        }
        if !in_memory {
            self.removed.insert((key.to_owned(), hlc));
            self.unsaved_del
                .push((partition, key.to_owned(), hlc, event_id.to_owned()));
        }
        if empty {
            self.pending.remove(key);
            if let Some(p) = self.recent.remove(key) {
                self.held -= p.by_hlc.len();
            }
        } else if was_first {
            match self.first_after(key, partition, hlc) {
                Some(f) => self.pending.get_mut(key).expect("checked").first = f,
                None => {
                    self.pending.remove(key);
                }
            }
        }
    }

    /// One record read back from `reconciled`, in the topic's order. The key's state is
    /// the fold of its records' events by outcome (`state_json` is bounded and does not
    /// carry it all); a record at or below the key's frontier was folded already (a re-read)
    /// and changes nothing. Returns the own events it settled, as (key, hlc); their
    /// persisted copies are deleted with the next `take_pending`.
    pub fn reconciled(&mut self, partition: i32, rec: &ReconciledEvent) -> Vec<(String, Hlc)> {
        self.reconciled_seen += 1;
        let ev = &rec.event;
        let (_, r) = self
            .replica
            .entry(ev.key.clone())
            .or_insert_with(|| (partition, Replica::default()));
        let order = OrderKey::new(
            ev.hlc.unwrap_or_default(),
            ev.region.clone().unwrap_or_default(),
            ev.event_id.clone(),
        );
        if r.frontier.as_ref().is_some_and(|f| order <= *f) {
            return Vec::new();
        }
        apply_reconciled(&mut r.state, ev, rec.outcome);
        r.frontier = Some(order.clone());
        self.dirty.insert(ev.key.clone());
        if order.region != self.region {
            self.recent_ids
                .entry(ev.key.clone())
                .or_default()
                .insert(ev.event_id.clone());
            self.unsaved_ids
                .push((ev.key.clone(), ev.event_id.clone(), order.hlc.physical_ms));
        }
        self.admission.remove(&ev.key);
        let mut settled = Vec::new();
        let Some(pk) = self.pending.get(&ev.key).map(|s| s.partition) else {
            return settled;
        };
        // Another region's copy of one of our events (a failover duplicate): by id. Our own
        // copy is the prefix below.
        if order.region != self.region {
            if let Some(h) = self.pending_hlc_of(&ev.key, pk, &ev.event_id) {
                self.settle(&ev.key, h, &ev.event_id);
                settled.push((ev.key.clone(), h));
            }
        }
        // Then every own event at or below the new frontier: a prefix in HLC order.
        while let Some((h, id)) = self.pending.get(&ev.key).map(|s| s.first.clone()) {
            if OrderKey::new(h, self.region.clone(), id.clone()) > order {
                break;
            }
            self.settle(&ev.key, h, &id);
            settled.push((ev.key.clone(), h));
        }
        settled
    }

    /// The view of `key`: reconciled state, then this region's pending events on top.
    /// A copy of the whole state (for queries; admission uses `admission_view`).
    pub fn view(&self, key: &str) -> Option<AggState> {
        let mut state = self.replica.get(key).and_then(|(_, r)| r.state.clone());
        for ev in self.events_of(key) {
            let _ = apply_pending(&mut state, &ev);
        }
        state
    }

    /// What admission of the inventory op `op` needs of the view of `key`: the available
    /// stock and the holding of the op's order, as a state of at most that one order
    /// (its `Orders` total is not the key's). O(log n) from the cached admission view,
    /// which is rebuilt in O(pending) after `reconciled` changed the key. Other ops get
    /// the whole view.
    pub fn admission_view(&mut self, key: &str, op: &Op) -> Option<AggState> {
        if Family::of(op) != Some(Family::Inventory) {
            return self.view(key);
        }
        if !self.admission.contains_key(key) {
            let reconciled = self.replica.get(key).and_then(|(_, r)| r.state.as_ref());
            let built = build_admission(reconciled, &self.events_of(key));
            self.admission.insert(key.to_owned(), built);
        }
        let reconciled = self.replica.get(key).and_then(|(_, r)| r.state.as_ref());
        let a = self.admission.get_mut(key).expect("inserted above");
        let order = order_of(op);
        if let Some(o) = order {
            name_order(a, reconciled, o);
        }
        match &a.state {
            Some(AggState::Inventory {
                available,
                reserved,
                escrow,
            }) => {
                let mut one = Orders::default();
                if let Some((o, q)) = order.and_then(|o| Some((o, reserved.get(o)?))) {
                    one.insert(o.clone(), q);
                }
                Some(AggState::Inventory {
                    available: *available,
                    reserved: one,
                    escrow: escrow.clone(),
                })
            }
            other => other.clone(),
        }
    }

    /// The reconciled state of `key` alone, as `reconciled` last showed it.
    pub fn reconciled_state(&self, key: &str) -> Option<&AggState> {
        self.replica.get(key).and_then(|(_, r)| r.state.as_ref())
    }

    /// The replicas changed since the last call, as (partition, key, replica), for the
    /// store (written with the partitions' `reconciled` offsets, in one batch).
    pub fn take_replicas(&mut self) -> Vec<(i32, String, Replica)> {
        let mut out: Vec<_> = self
            .dirty
            .drain()
            .filter_map(|k| {
                let (p, r) = self.replica.get(&k)?;
                Some((*p, k, r.clone()))
            })
            .collect();
        out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        out
    }

    /// Load one partition's checkpointed replicas (a partition assigned: the follower then
    /// reads `reconciled` on from the offset they reflect).
    pub fn load_partition(&mut self, partition: i32, replicas: Vec<(String, Replica)>) {
        for (k, r) in replicas {
            self.admission.remove(&k);
            self.replica.insert(k, (partition, r));
        }
    }

    /// Load one partition's persisted pending own events, as the log's summary per key
    /// (the events stay in the log; written with the replicas they match, so none is
    /// settled by them).
    pub fn load_pending(&mut self, keys: Vec<(String, PendingKey)>) {
        for (k, s) in keys {
            self.admission.remove(&k);
            self.pending.insert(k, s);
        }
    }

    /// Own events not yet reconciled, over all keys.
    pub fn pending_count(&self) -> u64 {
        self.pending.values().map(|p| p.count).sum()
    }

    /// The keys of `partition` whose reconciled state is of `family`.
    pub fn keys_of(&self, partition: i32, family: Family) -> Vec<String> {
        self.replica
            .iter()
            .filter(|(_, (p, r))| {
                *p == partition && r.state.as_ref().is_some_and(|s| s.family() == family)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every key the view knows (reconciled or pending).
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self
            .replica
            .keys()
            .chain(self.pending.keys())
            .cloned()
            .collect();
        k.sort();
        k.dedup();
        k
    }

    /// Forget one input partition: its replicas and pending own events (revoked, or
    /// about to be reloaded from the store and history). What was not taken for the store
    /// yet is dropped: the store has the partition as of its last batch, and the follower
    /// re-reads `reconciled` from that checkpoint.
    pub fn forget_partition(&mut self, partition: i32) {
        self.replica.retain(|k, (p, _)| {
            let keep = *p != partition;
            if !keep {
                self.dirty.remove(k);
            }
            keep
        });
        let keys: HashSet<String> = self
            .pending
            .iter()
            .filter(|(_, s)| s.partition == partition)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            self.pending.remove(k);
            if let Some(p) = self.recent.remove(k) {
                self.held -= p.by_hlc.len();
            }
            self.admission.remove(k);
        }
        // Its held events go with it (a restore re-reads them from `pending_from`), and so
        // do its ends: a generation of the partition's earlier life must not move the
        // `pending_from` of the next one past events re-read into memory.
        self.current.retain(|(p, _, _)| *p != partition);
        for g in &mut self.generations {
            g.events.retain(|(p, _, _)| *p != partition);
            g.ends.retain(|(p, _)| *p != partition);
        }
        self.generations
            .retain(|g| !(g.events.is_empty() && g.ends.is_empty()));
        self.entries = self.current.len()
            + self
                .generations
                .iter()
                .map(|g| g.events.len())
                .sum::<usize>();
        self.pending_from.remove(&partition);
        self.saved_from.remove(&partition);
        // Its deletes not written yet: the store still has those events, and re-reading
        // `reconciled` from the checkpoint settles them again.
        let removed = &mut self.removed;
        self.unsaved_del.retain(|(p, k, h, _)| {
            let keep = *p != partition;
            if !keep {
                removed.remove(&(k.clone(), *h));
            }
            keep
        });
    }
}

/// The admission view of a key from its reconciled state and pending events.
fn build_admission(reconciled: Option<&AggState>, pending: &[Event]) -> Admission {
    let mut a = Admission {
        state: match reconciled {
            Some(AggState::Inventory {
                available, escrow, ..
            }) => Some(AggState::Inventory {
                available: *available,
                reserved: Orders::default(),
                escrow: escrow.clone(),
            }),
            other => other.cloned(),
        },
        named: HashSet::new(),
    };
    for ev in pending {
        if let Some(o) = order_of(&ev.op) {
            name_order(&mut a, reconciled, o);
        }
    }
    for ev in pending {
        let _ = apply_pending(&mut a.state, ev);
    }
    a
}

/// Make the admission view exact for `order`: the first time it is named, its holding
/// comes from the reconciled state (no pending event has named it before).
fn name_order(a: &mut Admission, reconciled: Option<&AggState>, order: &str) {
    if !a.named.insert(order.to_owned()) {
        return;
    }
    let held = match reconciled {
        Some(AggState::Inventory { reserved, .. }) => reserved.get(order),
        _ => None,
    };
    if let (Some(q), Some(AggState::Inventory { reserved, .. })) = (held, a.state.as_mut()) {
        reserved.insert(order.to_owned(), q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::apply_admitted;
    use rf_schemas::{Op, Outcome};

    fn ev(region: &str, id: &str, hlc: i64, op: Op) -> Event {
        let mut e = Event::new(id, "item", op);
        e.region = Some(region.into());
        e.hlc = Some(Hlc::new(hlc, 0));
        e
    }
    fn rec(e: Event, state: &AggState) -> ReconciledEvent {
        ReconciledEvent {
            event: e,
            outcome: Outcome::Applied,
            reason: None,
            state_json: state.to_json(),
        }
    }
    fn available(s: Option<AggState>) -> i64 {
        match s {
            Some(AggState::Inventory { available, .. }) => available,
            other => panic!("not inventory: {other:?}"),
        }
    }

    #[test]
    fn a_checkpointed_partition_reloads_to_the_same_view_and_forgetting_drops_it() {
        let mut v = RegionalView::new("a");
        let mut st = None;
        let stock = ev("b", "s", 10, Op::stock_add(100));
        apply_admitted(&mut st, &stock).unwrap();
        v.reconciled(3, &rec(stock, st.as_ref().unwrap()));
        let saved = v.take_replicas();
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].0, 3);
        assert!(v.take_replicas().is_empty(), "taken once");
        // A later record of the key, not yet checkpointed, is forgotten with the partition:
        // the follower re-reads it from the checkpoint's offset.
        let more = ev("b", "s2", 20, Op::stock_add(5));
        apply_admitted(&mut st, &more).unwrap();
        v.reconciled(3, &rec(more.clone(), st.as_ref().unwrap()));
        v.forget_partition(3);
        assert_eq!(v.view("item"), None);
        assert!(v.take_replicas().is_empty());
        v.load_partition(3, saved.into_iter().map(|(_, k, r)| (k, r)).collect());
        assert_eq!(available(v.view("item")), 100);
        // Re-reading from the checkpoint: the known record changes nothing, the new one applies.
        v.reconciled(3, &rec(more, st.as_ref().unwrap()));
        assert_eq!(available(v.view("item")), 105);
        // Another partition's forgetting leaves it alone.
        v.forget_partition(1);
        assert_eq!(available(v.view("item")), 105);
    }

    #[test]
    fn view_is_reconciled_state_plus_own_pending() {
        let mut v = RegionalView::new("a");
        let stock = ev("b", "s", 10, Op::stock_add(100));
        let mut st = None;
        apply_admitted(&mut st, &stock).unwrap();
        v.reconciled(0, &rec(stock, st.as_ref().unwrap()));
        assert_eq!(available(v.view("item")), 100);
        let r1 = ev(
            "a",
            "r1",
            20,
            Op::Reserve {
                order_id: "o1".into(),
                qty: 30,
            },
        );
        assert!(v.accepted(0, &r1));
        assert_eq!(available(v.view("item")), 70);
        assert_eq!(v.pending_count(), 1);
        // Once reconciled, it counts once (in the reconciled state), not twice.
        apply_admitted(&mut st, &r1).unwrap();
        let settled = v.reconciled(0, &rec(r1, st.as_ref().unwrap()));
        assert_eq!(settled, vec![("item".to_owned(), Hlc::new(20, 0))]);
        assert_eq!(available(v.view("item")), 70);
        assert_eq!(v.pending_count(), 0);
    }

    #[test]
    fn a_copy_kept_from_another_region_settles_ours() {
        let mut v = RegionalView::new("a");
        let mine = ev("a", "x", 50, Op::stock_add(5));
        v.accepted(0, &mine);
        let theirs = ev("b", "x", 40, Op::stock_add(5));
        let mut st = None;
        apply_admitted(&mut st, &theirs).unwrap();
        v.reconciled(0, &rec(theirs, st.as_ref().unwrap()));
        assert_eq!(v.pending_count(), 0);
        assert_eq!(available(v.view("item")), 5);
    }

    #[test]
    fn our_copy_loaded_after_another_regions_copy_was_reconciled_is_not_pending() {
        let mut v = RegionalView::new("a");
        let theirs = ev("b", "x", 40, Op::stock_add(5));
        let mut st = None;
        apply_admitted(&mut st, &theirs).unwrap();
        v.reconciled(0, &rec(theirs, st.as_ref().unwrap()));
        // Our later copy of the same event (a failover retry), reloaded on restore.
        assert!(!v.accepted(0, &ev("a", "x", 50, Op::stock_add(5))));
        assert_eq!(available(v.view("item")), 5);
        // Any own event ordered before a reconciled record of the key is settled too.
        let later = ev("b", "y", 60, Op::stock_add(1));
        apply_admitted(&mut st, &later).unwrap();
        v.reconciled(0, &rec(later, st.as_ref().unwrap()));
        assert!(!v.accepted(0, &ev("a", "z", 55, Op::stock_add(1))));
        assert!(v.accepted(0, &ev("a", "w", 65, Op::stock_add(1))));
    }

    /// With a backing, the ids taken for the store leave memory and the backing answers
    /// for them: the same decisions as a view holding them all.
    #[test]
    fn taken_ids_are_answered_by_the_backing() {
        use std::sync::{Arc, Mutex};
        struct Store(Arc<Mutex<HashSet<(String, String)>>>);
        impl SeenIds for Store {
            fn seen(&self, key: &str, event_id: &str) -> bool {
                self.0
                    .lock()
                    .unwrap()
                    .contains(&(key.to_owned(), event_id.to_owned()))
            }
        }
        let ids = Arc::new(Mutex::new(HashSet::new()));
        let mut v = RegionalView::new("a").with_seen_ids(Box::new(Store(ids.clone())));
        let theirs = ev("b", "x", 40, Op::stock_add(5));
        let mut st = None;
        apply_admitted(&mut st, &theirs).unwrap();
        v.reconciled(0, &rec(theirs, st.as_ref().unwrap()));
        // Our own reconciled copies are never taken: the frontier settles them.
        let ours = ev("a", "o", 45, Op::stock_add(1));
        apply_admitted(&mut st, &ours).unwrap();
        v.reconciled(0, &rec(ours, st.as_ref().unwrap()));
        let taken = v.take_seen_ids();
        assert_eq!(taken, vec![("item".to_owned(), "x".to_owned(), 40)]);
        assert!(v.recent_ids.is_empty(), "taken ids leave memory");
        // Not written yet: our later copy of x is pending (the store does not know x).
        assert!(v.accepted(0, &ev("a", "x", 50, Op::stock_add(5))));
        v.forget_partition(0);
        for (k, e, _) in taken {
            ids.lock().unwrap().insert((k, e));
        }
        assert!(!v.accepted(0, &ev("a", "x", 50, Op::stock_add(5))));
        assert!(v.accepted(0, &ev("a", "new", 51, Op::stock_add(1))));
    }

    #[test]
    fn an_event_already_reconciled_is_not_pending_again() {
        let mut v = RegionalView::new("a");
        let e = ev("a", "x", 50, Op::stock_add(5));
        let mut st = None;
        apply_admitted(&mut st, &e).unwrap();
        v.reconciled(0, &rec(e.clone(), st.as_ref().unwrap()));
        assert!(!v.accepted(0, &e));
        assert_eq!(available(v.view("item")), 5);
    }

    /// A record read again (the follower re-reads after a rebalance) is not folded twice.
    #[test]
    fn a_record_read_again_is_folded_once() {
        let mut v = RegionalView::new("a");
        let e = ev("b", "s", 10, Op::stock_add(7));
        let mut st = None;
        apply_admitted(&mut st, &e).unwrap();
        let r = rec(e, st.as_ref().unwrap());
        v.reconciled(0, &r);
        v.reconciled(0, &r);
        assert_eq!(available(v.view("item")), 7);
    }

    /// An inventory op of the property tests: stock, or a reservation or release of order `o`.
    fn inventory_op(o: u8, q: i64, kind: u8) -> Op {
        match kind {
            0 => Op::stock_add(q),
            1 => Op::Reserve {
                order_id: format!("o{o}"),
                qty: q,
            },
            _ => Op::Release {
                order_id: format!("o{o}"),
            },
        }
    }

    /// The store, as a test sees it: pending events by (partition, key, hlc).
    #[derive(Clone, Default)]
    struct MemLog(std::sync::Arc<std::sync::Mutex<Stored>>);
    type Stored = BTreeMap<(i32, String, Hlc), Event>;
    impl MemLog {
        fn write(&self, t: TakenPending) {
            let mut m = self.0.lock().unwrap();
            for (p, e) in t.puts {
                assert!(
                    m.insert((p, e.key.clone(), e.hlc.unwrap()), e).is_none(),
                    "put once"
                );
            }
            for (p, k, h, _) in t.dels {
                assert!(m.remove(&(p, k, h)).is_some(), "a delete of a stored event");
            }
        }
        fn len(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }
    impl PendingLog for MemLog {
        fn scan(&self, partition: i32, key: &str, after: Option<Hlc>, limit: usize) -> Vec<Event> {
            let m = self.0.lock().unwrap();
            m.iter()
                .filter(|((p, k, h), _)| {
                    *p == partition && k == key && after.is_none_or(|a| *h > a)
                })
                .take(limit)
                .map(|(_, e)| e.clone())
                .collect()
        }
        fn find(&self, partition: i32, key: &str, event_id: &str) -> Option<Hlc> {
            let m = self.0.lock().unwrap();
            m.iter()
                .find(|((p, k, _), e)| *p == partition && k == key && e.event_id == event_id)
                .map(|((_, _, h), _)| *h)
        }
    }

    /// With a log, taken pending events leave memory; settling by prefix and by id deletes
    /// them from the log, and a reload from the log's summary gives the same view.
    #[test]
    fn taken_pending_events_live_in_the_log() {
        let log = MemLog::default();
        let mut v = RegionalView::new("a").with_pending_log(Box::new(log.clone()), Hold::default());
        for i in 0..100 {
            assert!(v.accepted(2, &ev("a", &format!("p{i}"), 100 + i, Op::stock_add(1))));
        }
        log.write(v.take_pending(0, &[]));
        assert_eq!(log.len(), 100);
        assert!(v.recent.is_empty(), "taken events leave memory");
        assert_eq!(v.pending_count(), 100);
        assert_eq!(available(v.view("item")), 100);
        // Another region's copy of p50 (a failover duplicate) settles ours by id; our own
        // reconciled p0..p9 settle the prefix.
        let mut st = None;
        let theirs = ev("b", "p50", 20, Op::stock_add(1));
        apply_admitted(&mut st, &theirs).unwrap();
        v.reconciled(2, &rec(theirs, st.as_ref().unwrap()));
        for i in 0..10 {
            let e = ev("a", &format!("p{i}"), 100 + i, Op::stock_add(1));
            apply_admitted(&mut st, &e).unwrap();
            v.reconciled(2, &rec(e, st.as_ref().unwrap()));
        }
        assert_eq!(v.pending_count(), 89);
        // Not written yet: the log's answers hide the settled ones.
        assert_eq!(available(v.view("item")), 100);
        log.write(v.take_pending(0, &[]));
        assert_eq!(log.len(), 89);
        assert_eq!(available(v.view("item")), 100);
        // A reload (a restore) from the log's summary and the checkpoint.
        let replicas: Vec<_> = v
            .take_replicas()
            .into_iter()
            .map(|(_, k, r)| (k, r))
            .collect();
        let summary = v.pending.clone();
        v.forget_partition(2);
        assert_eq!(v.pending_count(), 0);
        v.load_partition(2, replicas);
        v.load_pending(summary.into_iter().collect());
        assert_eq!(available(v.view("item")), 100);
        assert_eq!(v.pending_count(), 89);
    }

    /// Held events (`Hold`) that settle within the hold never reach the log; older ones
    /// are put, and `pending_from` moves to the ends of the generation put; forgetting the
    /// partition drops its held events and ends.
    #[test]
    fn held_events_settle_in_memory_and_only_old_ones_reach_the_log() {
        let log = MemLog::default();
        let hold = Hold {
            ms: 1_000,
            max_events: 10,
        };
        let mut v = RegionalView::new("a").with_pending_log(Box::new(log.clone()), hold);
        let own = |i: i64| ev("a", &format!("p{i}"), 100 + i, Op::stock_add(1));
        for i in 0..5 {
            v.accepted(1, &own(i));
        }
        let t = v.take_pending(0, &[(1, 5)]);
        assert!(t.puts.is_empty() && t.pending_from.is_empty(), "{t:?}");
        assert_eq!(v.held(), 5);
        // Three settle while held: nothing to delete either.
        let mut st = None;
        for i in 0..3 {
            apply_admitted(&mut st, &own(i)).unwrap();
            v.reconciled(1, &rec(own(i), st.as_ref().unwrap()));
        }
        assert_eq!((v.held(), v.pending_count()), (2, 2));
        for i in 5..8 {
            v.accepted(1, &own(i));
        }
        let t = v.take_pending(500, &[(1, 8)]);
        assert!(t.puts.is_empty() && t.dels.is_empty(), "{t:?}");
        // The first generation is older than the hold: its two unsettled events are put,
        // and every own event below offset 5 is in the log from now on.
        let t = v.take_pending(1_000, &[(1, 8)]);
        let put: Vec<_> = t.puts.iter().map(|(_, e)| e.event_id.as_str()).collect();
        assert_eq!(put, ["p3", "p4"]);
        assert_eq!(t.pending_from, [(1, 5)]);
        log.write(t);
        assert_eq!((v.held(), v.pending_count()), (3, 5));
        assert_eq!(available(v.view("item")), 8);
        // Beyond the size bound, generations go to the log whatever their age.
        for i in 8..20 {
            v.accepted(1, &own(i));
        }
        let t = v.take_pending(1_001, &[(1, 20)]);
        assert_eq!(t.puts.len(), 15);
        assert_eq!(t.pending_from, [(1, 20)]);
        log.write(t);
        assert_eq!(v.held(), 0);
        // Events that settle while held still count as entries of their generation: beyond
        // twice the bound, generations go out (with nothing to put) whatever their age.
        for i in 100..125 {
            v.accepted(1, &own(i));
            apply_admitted(&mut st, &own(i)).unwrap();
            v.reconciled(1, &rec(own(i), st.as_ref().unwrap()));
            if i % 5 == 4 {
                assert!(v.take_pending(1_001, &[(1, i + 1)]).puts.is_empty());
            }
        }
        assert_eq!(v.held(), 0);
        assert!(v.entries <= 2 * 10 + 5, "{} entries", v.entries);
        // Forgetting the partition drops what is held and its ends.
        v.accepted(1, &own(20));
        v.take_pending(1_002, &[(1, 21)]);
        v.forget_partition(1);
        assert_eq!(v.held(), 0);
        let t = v.take_pending(5_000, &[]);
        assert!(t.puts.is_empty() && t.pending_from.is_empty(), "{t:?}");
        // A restore says where it re-read from: taken for the store once.
        v.set_pending_from(1, 42);
        assert_eq!(v.take_pending(5_001, &[(1, 42)]).pending_from, [(1, 42)]);
        assert!(v.take_pending(5_002, &[(1, 42)]).pending_from.is_empty());
    }

    proptest::proptest! {
        /// A view whose pending events live in a log (taken at random points) decides and
        /// shows the same as one that holds them all in memory.
        #[test]
        fn a_view_over_a_log_equals_one_in_memory(
            steps in proptest::collection::vec((0u8..4, 0u8..8, 1i64..5, 0u8..3), 0..80),
            hold_ms in 0i64..4,
            hold_max in 0usize..6,
        ) {
            let op = inventory_op;
            let log = MemLog::default();
            let mut mem = RegionalView::new("a");
            let hold = Hold { ms: hold_ms, max_events: hold_max };
            let mut logged = RegionalView::new("a").with_pending_log(Box::new(log.clone()), hold);
            let mut st = None;
            let mut mine: Vec<Event> = Vec::new();
            let mut t = 10;
            for (i, (step, o, q, kind)) in steps.into_iter().enumerate() {
                t += 1;
                match step {
                    0 => {
                        // Another region's event, or one of ours (in HLC order) reconciled.
                        let e = if o < 3 && !mine.is_empty() {
                            mine.remove(0)
                        } else if o == 3 && !mine.is_empty() {
                            // Another region's copy of one of ours, kept instead of it.
                            let m = mine.remove(mine.len() / 2);
                            let mut e = m.clone();
                            e.region = Some("b".into());
                            e.hlc = Some(Hlc::new(t, 0));
                            e
                        } else {
                            ev("b", &format!("r{i}"), t, op(o, q, kind))
                        };
                        let outcome = match crate::aggregate::apply(&mut st, &e) {
                            Ok(crate::Applied::Applied) => Outcome::Applied,
                            _ => Outcome::Revoked,
                        };
                        let r = ReconciledEvent { event: e, outcome, reason: None, state_json: String::new() };
                        proptest::prop_assert_eq!(mem.reconciled(0, &r), logged.reconciled(0, &r));
                    }
                    1 => {
                        let e = ev("a", &format!("p{i}"), t, op(o, q, kind));
                        proptest::prop_assert_eq!(mem.accepted(0, &e), logged.accepted(0, &e));
                        mine.push(e);
                    }
                    2 => log.write(logged.take_pending(t / 3, &[(0, t)])),
                    _ => {
                        let probe = ev("a", "q", t, op(o, q, kind));
                        let a = crate::aggregate::apply(&mut mem.admission_view("item", &probe.op), &probe);
                        let b = crate::aggregate::apply(&mut logged.admission_view("item", &probe.op), &probe);
                        proptest::prop_assert_eq!(a, b);
                    }
                }
                proptest::prop_assert_eq!(mem.view("item"), logged.view("item"));
                proptest::prop_assert_eq!(mem.pending_count(), logged.pending_count());
            }
        }

        /// Inventory admission against the cached, reduced view decides as against the
        /// whole view, through any interleaving of reconciled records, accepted own events
        /// and probes.
        #[test]
        fn admission_view_decides_as_the_whole_view(
            steps in proptest::collection::vec((0u8..3, 0u8..8, 1i64..5, 0u8..3), 0..80),
        ) {
            let op = inventory_op;
            let mut v = RegionalView::new("a");
            let mut st = None;
            let mut t = 10;
            for (i, (step, o, q, kind)) in steps.into_iter().enumerate() {
                t += 1;
                let op = op(o, q, kind);
                match step {
                    0 => {
                        let e = ev("b", &format!("r{i}"), t, op);
                        let outcome = match crate::aggregate::apply(&mut st, &e) {
                            Ok(crate::Applied::Applied) => Outcome::Applied,
                            _ => Outcome::Revoked,
                        };
                        v.reconciled(0, &ReconciledEvent { event: e, outcome, reason: None, state_json: String::new() });
                    }
                    1 => {
                        // An own event: admitted as the whole view decides, then pending.
                        let mut e = ev("a", &format!("p{i}"), t + 1_000_000, op);
                        if let Ok(crate::Applied::Refused(r)) = crate::aggregate::apply(&mut v.view("item"), &e) {
                            e.refusal = Some(r);
                        }
                        if e.refusal.is_none() {
                            v.accepted(0, &e);
                        }
                    }
                    _ => {
                        let probe = ev("a", "q", t + 2_000_000, op);
                        let whole = crate::aggregate::apply(&mut v.view("item"), &probe);
                        let reduced = crate::aggregate::apply(&mut v.admission_view("item", &probe.op), &probe);
                        proptest::prop_assert_eq!(whole, reduced);
                    }
                }
            }
        }
    }
}
