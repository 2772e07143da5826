//! Property tests of the two merge semantics of issue 16, I/O-free: regions are modelled by
//! their regional views (`rf_core::RegionalView`) deciding as the processor does, the
//! reconciler by `PartitionMerge`, and the network by which records reach whom, with cuts.
//!
//! - Escrow: random stock adds, reservations, releases and donations over 3 regions with
//!   cuts: no region's view and no record of `reconciled` ever shows a region below zero
//!   rights or the stock oversold, nothing is ever revoked, and once healed the merged
//!   rights plus what is reserved add up to the stock.
//! - Registers: random puts with known causality (each region knows which puts it has
//!   seen): a conflict is reported only for concurrent puts, every put concurrent with an
//!   earlier one is reported, and the value is the latest of the puts no other put saw,
//!   whatever the order in which the histories reach the merge.

use proptest::prelude::*;
use rf_core::aggregate::{apply, context_token, next_dot};
use rf_core::escrow::{donation, split};
use rf_core::{AggState, Applied, RegionalView};
use rf_reconciler::merge::PartitionMerge;
use rf_schemas::{ConflictKind, Event, Hlc, Op, Outcome, ReconciledEvent};
use std::collections::{BTreeMap, BTreeSet};

const REGIONS: [&str; 3] = ["a", "b", "c"];
const SKU: &str = "sku";

/// The deployment: each region's history, view and what of `reconciled` it has read; the
/// merge and its output; a global clock (every stamp is later than everything seen).
struct World {
    t: i64,
    histories: BTreeMap<String, Vec<Event>>,
    offered: BTreeMap<String, usize>,
    views: BTreeMap<String, RegionalView>,
    read: BTreeMap<String, usize>,
    merge: PartitionMerge,
    reconciled: Vec<ReconciledEvent>,
    conflicts: Vec<rf_schemas::Conflict>,
    n: usize,
}

impl World {
    fn new() -> World {
        World {
            t: 0,
            histories: REGIONS
                .iter()
                .map(|r| (r.to_string(), Vec::new()))
                .collect(),
            offered: BTreeMap::new(),
            views: REGIONS
                .iter()
                .map(|r| (r.to_string(), RegionalView::new(r)))
                .collect(),
            read: BTreeMap::new(),
            merge: PartitionMerge::new(0),
            reconciled: Vec::new(),
            conflicts: Vec::new(),
            n: 0,
        }
    }

    fn stamp(&mut self, region: &str, id: String, op: Op) -> Event {
        self.t += 1;
        let mut ev = Event::new(id, SKU, op);
        ev.region = Some(region.to_owned());
        ev.hlc = Some(Hlc::new(self.t, 0));
        ev
    }

    /// Write `ev` to `region`'s history; admitted ones are pending in its view.
    fn write(&mut self, region: &str, ev: Event) {
        if ev.refusal.is_none() {
            self.views.get_mut(region).unwrap().accepted(0, &ev);
        }
        self.histories.get_mut(region).unwrap().push(ev);
    }

    /// What the processor does with a producer's inventory op in `region`, on its view.
    fn inventory(&mut self, region: &str, op: Op, spread: bool) {
        self.n += 1;
        let id = format!("{region}-{}", self.n);
        self.inventory_id(region, id, op, spread);
    }

    /// The same with the producer's event id: a producer that fails over sends one event to
    /// two regions (the merge keeps the earliest copy).
    fn inventory_id(&mut self, region: &str, id: String, op: Op, spread: bool) {
        let op = match op {
            Op::StockAdd { qty, .. } => {
                let w: BTreeMap<String, u32> = if spread {
                    REGIONS.iter().map(|r| (r.to_string(), 1)).collect()
                } else {
                    BTreeMap::new()
                };
                Op::StockAdd {
                    qty,
                    grants: Some(split(qty, region, &w)),
                }
            }
            op => op,
        };
        let mut ev = self.stamp(region, id, op);
        let view = self.views.get_mut(region).unwrap();
        let mut probe = view.admission_view(SKU, &ev.op);
        let pending_release = matches!(ev.op, Op::Release { .. });
        match apply(&mut probe, &ev).expect("valid op") {
            Applied::Applied => {}
            Applied::Refused(_) if pending_release => {}
            Applied::Refused(r) => ev.refusal = Some(r),
        }
        // Short of rights: a request, unless this region's last one is open.
        let request = match (&ev.op, &ev.refusal, &probe) {
            (
                Op::Reserve { qty, .. },
                Some(_),
                Some(AggState::Inventory {
                    escrow: Some(e), ..
                }),
            ) if e.rights(region) < *qty && !e.request_open(region) => Some(*qty),
            (Op::Reserve { qty, .. }, Some(_), None) => Some(*qty),
            _ => None,
        };
        self.write(region, ev);
        if let Some(qty) = request {
            let n = match self.views[region].view(SKU) {
                Some(AggState::Inventory {
                    escrow: Some(e), ..
                }) => e.requested.get(region).copied().unwrap_or(0),
                _ => 0,
            };
            let req = self.stamp(
                region,
                format!("rights-request:{region}:{}", n + 1),
                Op::RightsRequest { qty },
            );
            self.write(region, req);
        }
    }

    fn donate(&mut self, region: &str) {
        let probe = Op::RightsRequest { qty: 1 };
        let gifts = match self
            .views
            .get_mut(region)
            .unwrap()
            .admission_view(SKU, &probe)
        {
            Some(AggState::Inventory {
                escrow: Some(e), ..
            }) => donation(&e, region, 0),
            _ => Vec::new(),
        };
        for (to, qty, request) in gifts {
            let ev = self.stamp(
                region,
                format!("rights-transfer:{region}:{to}:{request}"),
                Op::RightsTransfer { to, qty, request },
            );
            self.write(region, ev);
        }
    }

    /// The reconciler reads what the regions not cut from it wrote (and a heartbeat each),
    /// and releases what every watermark allows.
    fn reconcile(&mut self, cut: &BTreeSet<String>) {
        let regions: Vec<String> = REGIONS.iter().map(|r| r.to_string()).collect();
        for r in &regions {
            if cut.contains(r) {
                continue;
            }
            let hb = self.stamp(r, format!("hb-{}", self.t), Op::Heartbeat);
            self.histories.get_mut(r).unwrap().push(hb);
            let from = self.offered.get(r).copied().unwrap_or(0);
            let h = self.histories[r].clone();
            for (i, ev) in h.iter().enumerate().skip(from) {
                self.conflicts
                    .extend(self.merge.offer(r, ev.clone(), i as i64, 0));
            }
            self.offered.insert(r.clone(), h.len());
        }
        let out = self.merge.drain(&regions, 0);
        self.reconciled.extend(out.reconciled);
        self.conflicts.extend(out.conflicts);
    }

    /// `region` reads `reconciled` to its end.
    fn deliver(&mut self, region: &str) {
        let from = self.read.get(region).copied().unwrap_or(0);
        let view = self.views.get_mut(region).unwrap();
        for rec in &self.reconciled[from..] {
            view.reconciled(0, rec);
        }
        self.read.insert(region.to_owned(), self.reconciled.len());
    }
}

#[derive(Debug, Clone)]
enum Step {
    Stock(usize, i64, bool),
    /// One stock add sent to two regions (a producer's failover retry).
    StockTwice(usize, usize, i64, bool),
    Reserve(usize, i64),
    /// Release one of the orders reserved so far (by index).
    Release(usize, usize),
    Donate(usize),
    Reconcile,
    Deliver(usize),
    /// Cut a region off (from the reconciler and from reading `reconciled`), or heal it.
    Cut(usize),
    Heal(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => (0..3usize, 1..20i64, any::<bool>()).prop_map(|(r, q, s)| Step::Stock(r, q, s)),
        1 => (0..3usize, 0..3usize, 1..20i64, any::<bool>())
            .prop_map(|(a, b, q, s)| Step::StockTwice(a, b, q, s)),
        6 => (0..3usize, 1..4i64).prop_map(|(r, q)| Step::Reserve(r, q)),
        1 => (0..3usize, 0..50usize).prop_map(|(r, o)| Step::Release(r, o)),
        2 => (0..3usize).prop_map(Step::Donate),
        3 => Just(Step::Reconcile),
        3 => (0..3usize).prop_map(Step::Deliver),
        1 => (0..3usize).prop_map(Step::Cut),
        1 => (0..3usize).prop_map(Step::Heal),
    ]
}

fn escrow_of(s: &Option<AggState>) -> Option<&rf_core::escrow::Escrow> {
    match s {
        Some(AggState::Inventory {
            escrow: Some(e), ..
        }) => Some(e),
        _ => None,
    }
}

/// No region below zero rights, the rights adding up to what is available, and the stock
/// not oversold, in one state.
fn check_state(s: &Option<AggState>, stock: i64, at: &str) -> Result<(), TestCaseError> {
    if let Some(AggState::Inventory {
        available,
        reserved,
        escrow,
    }) = s
    {
        prop_assert!(*available >= 0, "{at}: available {available}");
        prop_assert!(
            reserved.total() <= stock,
            "{at}: reserved {} > stock {stock}",
            reserved.total()
        );
        if let Some(e) = escrow {
            for (r, n) in e.rights_by_region() {
                prop_assert!(n >= 0, "{at}: {r} holds {n} rights");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn escrow_never_oversells_never_revokes_and_conserves_the_stock(
        steps in proptest::collection::vec(step(), 1..120)
    ) {
        let mut w = World::new();
        let mut cut: BTreeSet<String> = BTreeSet::new();
        let mut stock = 0i64;
        let mut orders: Vec<String> = Vec::new();
        for s in steps {
            match s {
                Step::Stock(r, q, spread) => {
                    stock += q;
                    w.inventory(REGIONS[r], Op::stock_add(q), spread);
                }
                Step::StockTwice(a, b, q, spread) => {
                    stock += q;
                    w.n += 1;
                    let id = format!("twice-{}", w.n);
                    w.inventory_id(REGIONS[a], id.clone(), Op::stock_add(q), spread);
                    if b != a {
                        w.inventory_id(REGIONS[b], id, Op::stock_add(q), spread);
                    }
                }
                Step::Reserve(r, q) => {
                    let o = format!("o{}", orders.len());
                    orders.push(o.clone());
                    w.inventory(REGIONS[r], Op::Reserve { order_id: o, qty: q }, false);
                }
                Step::Release(r, i) if !orders.is_empty() => {
                    let o = orders[i % orders.len()].clone();
                    w.inventory(REGIONS[r], Op::Release { order_id: o }, false);
                }
                Step::Release(..) => {}
                Step::Donate(r) => w.donate(REGIONS[r]),
                Step::Reconcile => w.reconcile(&cut),
                Step::Deliver(r) if !cut.contains(REGIONS[r]) => w.deliver(REGIONS[r]),
                Step::Deliver(_) => {}
                Step::Cut(r) => { cut.insert(REGIONS[r].to_owned()); }
                Step::Heal(r) => { cut.remove(REGIONS[r]); }
            }
            for r in REGIONS {
                check_state(&w.views[r].view(SKU), stock, &format!("view of {r}"))?;
            }
        }
        // Heal, let the donations and the merge settle, and read everything everywhere.
        cut.clear();
        for _ in 0..6 {
            w.reconcile(&cut);
            for r in REGIONS {
                w.deliver(r);
                w.donate(r);
            }
        }
        w.reconcile(&cut);
        for r in REGIONS {
            w.deliver(r);
        }
        let mut merged: Option<AggState> = None;
        for rec in &w.reconciled {
            prop_assert_ne!(rec.outcome, Outcome::Revoked, "revoked: {:?}", rec);
            rf_core::aggregate::apply_reconciled(&mut merged, &rec.event, rec.outcome);
            check_state(&merged, stock, "reconciled")?;
        }
        prop_assert!(w
            .conflicts
            .iter()
            .all(|c| c.kind != ConflictKind::ReservationRevoked));
        if let Some(AggState::Inventory { available, reserved, escrow }) = &merged {
            let e = escrow.as_ref().expect("escrow state");
            let rights: i64 = e.rights_by_region().values().sum();
            prop_assert_eq!(rights, *available);
            prop_assert_eq!(rights + reserved.total(), stock, "rights + reserved = stock");
        }
        for r in REGIONS {
            prop_assert_eq!(&w.views[r].view(SKU), &merged, "{} converged", r);
        }
        let _ = escrow_of(&merged);
    }
}

// ---- registers -------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum RegStep {
    Put(usize),
    Reconcile,
    Deliver(usize),
    Cut(usize),
    Heal(usize),
}

fn reg_step() -> impl Strategy<Value = RegStep> {
    prop_oneof![
        4 => (0..3usize).prop_map(RegStep::Put),
        2 => Just(RegStep::Reconcile),
        3 => (0..3usize).prop_map(RegStep::Deliver),
        1 => (0..3usize).prop_map(RegStep::Cut),
        1 => (0..3usize).prop_map(RegStep::Heal),
    ]
}

/// Run the register steps: each put is stamped as the processor stamps it (dot from the
/// region's own puts, context from its view); returns the world and, per put id, the ids
/// of the puts its writer had seen (the known causality).
fn run_registers(steps: &[RegStep]) -> (World, BTreeMap<String, BTreeSet<String>>) {
    let mut w = World::new();
    let mut cut: BTreeSet<String> = BTreeSet::new();
    let mut seen_by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut own: BTreeMap<String, Option<AggState>> = BTreeMap::new();
    let mut saw: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in steps {
        match s {
            RegStep::Put(r) => {
                let r = REGIONS[*r];
                w.n += 1;
                let id = format!("{r}-{}", w.n);
                let view = w.views[r].view(SKU);
                let own_state = own.entry(r.to_owned()).or_default();
                let op = Op::RegisterPut {
                    value: id.clone(),
                    context: Some(context_token(view.as_ref())),
                    dot: Some(next_dot(own_state.as_ref(), r)),
                };
                let ev = w.stamp(r, id.clone(), op);
                apply(own_state, &ev).unwrap();
                let mine = seen_by.entry(r.to_owned()).or_default();
                saw.insert(id.clone(), mine.clone());
                mine.insert(id);
                w.write(r, ev);
            }
            RegStep::Reconcile => w.reconcile(&cut),
            RegStep::Deliver(r) if !cut.contains(REGIONS[*r]) => {
                let r = REGIONS[*r];
                let from = w.read.get(r).copied().unwrap_or(0);
                let mine = seen_by.entry(r.to_owned()).or_default();
                for rec in &w.reconciled[from..] {
                    // A reader of a put has seen what its writer had seen, and the put.
                    mine.extend(saw[&rec.event.event_id].iter().cloned());
                    mine.insert(rec.event.event_id.clone());
                }
                w.deliver(r);
            }
            RegStep::Deliver(_) => {}
            RegStep::Cut(r) => {
                cut.insert(REGIONS[*r].to_owned());
            }
            RegStep::Heal(r) => {
                cut.remove(REGIONS[*r]);
            }
        }
    }
    cut.clear();
    w.reconcile(&cut);
    (w, saw)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn register_conflicts_are_exactly_the_concurrent_puts(
        steps in proptest::collection::vec(reg_step(), 1..80)
    ) {
        let (w, saw) = run_registers(&steps);
        let concurrent = |x: &str, y: &str| !saw[x].contains(y) && !saw[y].contains(x);
        let order: Vec<String> = w.reconciled.iter().map(|r| r.event.event_id.clone()).collect();
        prop_assert_eq!(order.len(), saw.len(), "every put reconciled");
        // No false positive: every reported pair is concurrent.
        let mut reported: BTreeSet<String> = BTreeSet::new();
        for c in w.conflicts.iter().filter(|c| c.kind == ConflictKind::RegisterConcurrent) {
            let other = c.conflict_id.rsplit(':').next().unwrap().to_owned();
            prop_assert!(concurrent(&c.event_id, &other), "{} and {} are not concurrent", c.event_id, other);
            reported.insert(c.event_id.clone());
        }
        // No false negative: a put concurrent with one reconciled before it is reported.
        for (i, x) in order.iter().enumerate() {
            let has = order[..i].iter().any(|y| concurrent(x, y));
            prop_assert_eq!(has, reported.contains(x), "put {} concurrent with an earlier one: {}", x, has);
        }
        // The value: the latest (reconciled order) of the puts no other put had seen.
        let maximal: Vec<&String> = order
            .iter()
            .filter(|x| !saw.values().any(|s| s.contains(*x)))
            .collect();
        if let (Some(last), Some(rec)) = (maximal.last(), w.reconciled.last()) {
            let v: serde_json::Value = serde_json::from_str(&rec.state_json).unwrap();
            prop_assert_eq!(v["value"].as_str(), Some(last.as_str()));
            prop_assert_eq!(v["siblings"].as_u64().unwrap_or(1), maximal.len() as u64);
        }
        // Any arrival order gives the same bytes: replay the histories region by region.
        for first in REGIONS {
            let mut m = PartitionMerge::new(0);
            let mut regions: Vec<&str> = REGIONS.to_vec();
            regions.sort_by_key(|r| *r != first);
            for r in &regions {
                for (i, ev) in w.histories[*r].iter().enumerate() {
                    m.offer(r, ev.clone(), i as i64, 0);
                }
            }
            let all: Vec<String> = REGIONS.iter().map(|r| r.to_string()).collect();
            let out = m.drain(&all, 0);
            prop_assert_eq!(&out.reconciled, &w.reconciled);
        }
    }
}
