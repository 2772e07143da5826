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
//! Every step is O(log n) in the key's size and in its pending events (a hot SKU during a
//! long cut holds tens of thousands): settling pops a prefix of the pending events and one
//! by id; inventory admission reads a cached view of the key, reduced to the orders the
//! pending events name, kept up to date as own events are accepted and rebuilt once after
//! `reconciled` changes the key.

use crate::aggregate::{apply_admitted, apply_reconciled, Orders};
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

/// Own accepted events of one key not yet reconciled.
#[derive(Debug, Default)]
struct Pending {
    by_hlc: BTreeMap<Hlc, Event>,
    by_id: HashMap<String, Hlc>,
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

#[derive(Debug, Default)]
pub struct RegionalView {
    region: String,
    /// Reconciled state per key, with the partition it belongs to: only the partitions
    /// this instance owns (`load_partition`, `forget_partition`).
    replica: HashMap<String, (i32, Replica)>,
    /// Keys whose replica changed since the last `take_replicas`.
    dirty: HashSet<String>,
    /// Own accepted events not yet reconciled, per key, in HLC order.
    pending: HashMap<String, Pending>,
    /// The input partition each pending key belongs to.
    partition_of: HashMap<String, i32>,
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

    /// Other regions' reconciled ids since the last call, as (key, event_id, HLC ms), for
    /// the store; with a backing, the view forgets them (the store answers from now on, so
    /// they must be written before the next lookup).
    pub fn take_seen_ids(&mut self) -> Vec<(String, String, i64)> {
        if self.seen_backing.is_some() {
            self.recent_ids.clear();
        }
        std::mem::take(&mut self.unsaved_ids)
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
        let replica = self.replica.get(&ev.key).map(|(_, r)| r);
        let p = self.pending.entry(ev.key.clone()).or_default();
        let newest = p.by_hlc.last_key_value().is_none_or(|(h, _)| *h < hlc);
        p.by_hlc.insert(hlc, ev.clone());
        p.by_id.insert(ev.event_id.clone(), hlc);
        self.partition_of.insert(ev.key.clone(), partition);
        // The admission view follows an event appended in HLC order; anything else
        // (a restore reloading events) rebuilds it.
        match self.admission.get_mut(&ev.key) {
            Some(a) if newest => {
                if let Some(o) = order_of(&ev.op) {
                    name_order(a, replica.and_then(|r| r.state.as_ref()), o);
                }
                let _ = apply_admitted(&mut a.state, ev);
            }
            Some(_) => {
                self.admission.remove(&ev.key);
            }
            None => {}
        }
        true
    }

    /// One record read back from `reconciled`, in the topic's order. The key's state is
    /// the fold of its records' events by outcome (`state_json` is bounded and does not
    /// carry it all); a record at or below the key's frontier was folded already (a re-read)
    /// and changes nothing. Returns the own events it settled, as (key, hlc), so their
    /// persisted copies can be deleted.
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
        let Some(p) = self.pending.get_mut(&ev.key) else {
            return settled;
        };
        // Our copy of this very event (whatever region's copy was kept), then every own
        // event at or below the new frontier: a prefix in HLC order.
        if let Some(h) = p.by_id.remove(&ev.event_id) {
            p.by_hlc.remove(&h);
            settled.push((ev.key.clone(), h));
        }
        while let Some(entry) = p.by_hlc.first_entry() {
            let own = OrderKey::new(
                *entry.key(),
                self.region.clone(),
                entry.get().event_id.clone(),
            );
            if own > order {
                break;
            }
            let (h, e) = entry.remove_entry();
            p.by_id.remove(&e.event_id);
            settled.push((ev.key.clone(), h));
        }
        if p.by_hlc.is_empty() {
            self.pending.remove(&ev.key);
            self.partition_of.remove(&ev.key);
        }
        settled
    }

    /// The view of `key`: reconciled state, then this region's pending events on top.
    /// A copy of the whole state (for queries; admission uses `admission_view`).
    pub fn view(&self, key: &str) -> Option<AggState> {
        let mut state = self.replica.get(key).and_then(|(_, r)| r.state.clone());
        for ev in self
            .pending
            .get(key)
            .into_iter()
            .flat_map(|p| p.by_hlc.values())
        {
            let _ = apply_admitted(&mut state, ev);
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
        let reconciled = self.replica.get(key).and_then(|(_, r)| r.state.as_ref());
        let pending = self.pending.get(key);
        let a = self
            .admission
            .entry(key.to_owned())
            .or_insert_with(|| build_admission(reconciled, pending));
        let order = order_of(op);
        if let Some(o) = order {
            name_order(a, reconciled, o);
        }
        match &a.state {
            Some(AggState::Inventory {
                available,
                reserved,
            }) => {
                let mut one = Orders::default();
                if let Some((o, q)) = order.and_then(|o| Some((o, reserved.get(o)?))) {
                    one.insert(o.clone(), q);
                }
                Some(AggState::Inventory {
                    available: *available,
                    reserved: one,
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

    /// Own events not yet reconciled, over all keys.
    pub fn pending_count(&self) -> usize {
        self.pending.values().map(|p| p.by_hlc.len()).sum()
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

    /// Forget the pending events of one input partition (revoked, or about to be
    /// reloaded from the store and history).
    pub fn forget_partition(&mut self, partition: i32) {
        // Its replicas too: the store has them as of its checkpoint, and whatever changed
        // since is re-read from there (`load_partition`).
        self.replica.retain(|k, (p, _)| {
            let keep = *p != partition;
            if !keep {
                self.dirty.remove(k);
            }
            keep
        });
        let keys: Vec<String> = self
            .partition_of
            .iter()
            .filter(|(_, p)| **p == partition)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.pending.remove(&k);
            self.partition_of.remove(&k);
            self.admission.remove(&k);
        }
    }
}

/// The admission view of a key from its reconciled state and pending events.
fn build_admission(reconciled: Option<&AggState>, pending: Option<&Pending>) -> Admission {
    let events = || pending.into_iter().flat_map(|p| p.by_hlc.values());
    let mut a = Admission {
        state: match reconciled {
            Some(AggState::Inventory { available, .. }) => Some(AggState::Inventory {
                available: *available,
                reserved: Orders::default(),
            }),
            other => other.cloned(),
        },
        named: HashSet::new(),
    };
    for ev in events() {
        if let Some(o) = order_of(&ev.op) {
            name_order(&mut a, reconciled, o);
        }
    }
    for ev in events() {
        let _ = apply_admitted(&mut a.state, ev);
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
        let stock = ev("b", "s", 10, Op::StockAdd { qty: 100 });
        apply_admitted(&mut st, &stock).unwrap();
        v.reconciled(3, &rec(stock, st.as_ref().unwrap()));
        let saved = v.take_replicas();
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].0, 3);
        assert!(v.take_replicas().is_empty(), "taken once");
        // A later record of the key, not yet checkpointed, is forgotten with the partition:
        // the follower re-reads it from the checkpoint's offset.
        let more = ev("b", "s2", 20, Op::StockAdd { qty: 5 });
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
        let stock = ev("b", "s", 10, Op::StockAdd { qty: 100 });
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
        let mine = ev("a", "x", 50, Op::StockAdd { qty: 5 });
        v.accepted(0, &mine);
        let theirs = ev("b", "x", 40, Op::StockAdd { qty: 5 });
        let mut st = None;
        apply_admitted(&mut st, &theirs).unwrap();
        v.reconciled(0, &rec(theirs, st.as_ref().unwrap()));
        assert_eq!(v.pending_count(), 0);
        assert_eq!(available(v.view("item")), 5);
    }

    #[test]
    fn our_copy_loaded_after_another_regions_copy_was_reconciled_is_not_pending() {
        let mut v = RegionalView::new("a");
        let theirs = ev("b", "x", 40, Op::StockAdd { qty: 5 });
        let mut st = None;
        apply_admitted(&mut st, &theirs).unwrap();
        v.reconciled(0, &rec(theirs, st.as_ref().unwrap()));
        // Our later copy of the same event (a failover retry), reloaded on restore.
        assert!(!v.accepted(0, &ev("a", "x", 50, Op::StockAdd { qty: 5 })));
        assert_eq!(available(v.view("item")), 5);
        // Any own event ordered before a reconciled record of the key is settled too.
        let later = ev("b", "y", 60, Op::StockAdd { qty: 1 });
        apply_admitted(&mut st, &later).unwrap();
        v.reconciled(0, &rec(later, st.as_ref().unwrap()));
        assert!(!v.accepted(0, &ev("a", "z", 55, Op::StockAdd { qty: 1 })));
        assert!(v.accepted(0, &ev("a", "w", 65, Op::StockAdd { qty: 1 })));
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
        let theirs = ev("b", "x", 40, Op::StockAdd { qty: 5 });
        let mut st = None;
        apply_admitted(&mut st, &theirs).unwrap();
        v.reconciled(0, &rec(theirs, st.as_ref().unwrap()));
        // Our own reconciled copies are never taken: the frontier settles them.
        let ours = ev("a", "o", 45, Op::StockAdd { qty: 1 });
        apply_admitted(&mut st, &ours).unwrap();
        v.reconciled(0, &rec(ours, st.as_ref().unwrap()));
        let taken = v.take_seen_ids();
        assert_eq!(taken, vec![("item".to_owned(), "x".to_owned(), 40)]);
        assert!(v.recent_ids.is_empty(), "taken ids leave memory");
        // Not written yet: our later copy of x is pending (the store does not know x).
        assert!(v.accepted(0, &ev("a", "x", 50, Op::StockAdd { qty: 5 })));
        v.forget_partition(0);
        for (k, e, _) in taken {
            ids.lock().unwrap().insert((k, e));
        }
        assert!(!v.accepted(0, &ev("a", "x", 50, Op::StockAdd { qty: 5 })));
        assert!(v.accepted(0, &ev("a", "new", 51, Op::StockAdd { qty: 1 })));
    }

    #[test]
    fn an_event_already_reconciled_is_not_pending_again() {
        let mut v = RegionalView::new("a");
        let e = ev("a", "x", 50, Op::StockAdd { qty: 5 });
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
        let e = ev("b", "s", 10, Op::StockAdd { qty: 7 });
        let mut st = None;
        apply_admitted(&mut st, &e).unwrap();
        let r = rec(e, st.as_ref().unwrap());
        v.reconciled(0, &r);
        v.reconciled(0, &r);
        assert_eq!(available(v.view("item")), 7);
    }

    proptest::proptest! {
        /// Inventory admission against the cached, reduced view decides as against the
        /// whole view, through any interleaving of reconciled records, accepted own events
        /// and probes.
        #[test]
        fn admission_view_decides_as_the_whole_view(
            steps in proptest::collection::vec((0u8..3, 0u8..8, 1i64..5, 0u8..3), 0..80),
        ) {
            let op = |o: u8, q: i64, kind: u8| match kind {
                0 => Op::StockAdd { qty: q },
                1 => Op::Reserve { order_id: format!("o{o}"), qty: q },
                _ => Op::Release { order_id: format!("o{o}") },
            };
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
