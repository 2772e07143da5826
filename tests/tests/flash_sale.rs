//! The flash sale (DESIGN.md use case): 3 regions, one item with stock 1,000, 5,000
//! reservation attempts spread over the regions, with a real network partition in the
//! middle. Each region admits against its view (reconciled state + its own reservations
//! not yet reconciled), so during the cut the regions together admit more than there is.
//! After the heal the reconciler replays in (hlc, region, event_id) order and revokes what
//! cannot be covered: available never below zero, reserved ≤ 1,000, and every revocation
//! in `reconciled` (order, quantity, reason) and in `conflicts`.
use rf_core::{AggState, Published};
use rf_harness::check::read_all_conflicts;
use rf_harness::check::read_reconciled;
use rf_harness::cluster::Cluster;
use rf_harness::workload::{outgoing, Publisher};
use rf_schemas::{ConflictKind, Op, Outcome};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

const ITEM: &str = "stock:flash";

fn available_in_view(c: &Cluster, i: usize) -> Option<i64> {
    match c.processors[i].stats.view.lock().view(ITEM) {
        Some(AggState::Inventory { available, .. }) => Some(available),
        _ => None,
    }
}

#[test]
fn flash_sale_never_oversells_after_a_partition() {
    let regions = ["a", "b", "c"];
    let mut c = Cluster::start_partitionable(&regions, 4).unwrap_or_else(|e| {
        panic!("this test needs Linux network namespaces (root and iproute2): {e}")
    });
    for r in regions {
        c.start_processor(r, 0);
    }
    c.start_reconciler();
    let bs = c.bootstraps();
    let publisher = Publisher::new_in(&bs, &c.namespace_names()).unwrap();
    let started = Instant::now();
    let t = || started.elapsed().as_secs_f64();

    // Stock arrives in region a; every region sees it once reconciled.
    publisher.send(
        &[outgoing(0, "stock-1", ITEM, Op::StockAdd { qty: 1_000 })],
        |_| {},
    );
    publisher.flush().unwrap();
    c.wait_until(
        Duration::from_secs(60),
        "every region to see the stock",
        |c| Ok((0..3).all(|i| available_in_view(c, i) == Some(1_000))),
    )
    .unwrap();

    let attempts: Vec<_> = (0..5_000)
        .map(|i| {
            outgoing(
                i % 3,
                &format!("res-{i}"),
                ITEM,
                Op::Reserve {
                    order_id: format!("order-{i}"),
                    qty: 1,
                },
            )
        })
        .collect();
    // 300 before the cut, 2,700 during it, 2,000 after the heal.
    publisher.send(&attempts[..300], |_| {});
    publisher.flush().unwrap();
    c.wait_until(
        Duration::from_secs(60),
        "the first 300 to be reconciled",
        |c| Ok(c.reconciled_so_far() >= 301),
    )
    .unwrap();
    c.cut("c").unwrap();
    let consumed = |c: &Cluster| c.processor_sum(|s| &s.consumed);
    let before = consumed(&c);
    publisher.send(&attempts[300..3_000], |_| {});
    publisher.flush().unwrap();
    c.wait_until(
        Duration::from_secs(120),
        "all regions to decide during the cut",
        |c| Ok(consumed(c) >= before + 2_700),
    )
    .unwrap();
    let admitted = c.processor_sum(|s| &s.accepted) - c.processor_sum(|s| &s.refused);
    eprintln!(
        "{:.0} s: during the cut the regions admitted {} reservations in all (stock 1,000)",
        t(),
        admitted - 1
    );
    c.heal("c").unwrap();
    publisher.send(&attempts[3_000..], |_| {});
    publisher.flush().unwrap();
    c.wait_until(Duration::from_secs(120), "everything reconciled", |c| {
        Ok(c.reconciled_so_far() >= 5_001)
    })
    .unwrap();
    let errs = c.stop_all();
    assert!(errs.is_empty(), "{errs:?}");

    let rec = read_reconciled(&c).unwrap();
    assert_eq!(rec.len(), 5_001, "each attempt exactly once");
    let mut revoked = BTreeSet::new();
    let mut refused = 0;
    let mut final_state = None;
    for (_, r) in &rec {
        let Ok(Published::Inventory {
            available,
            reserved,
            ..
        }) = Published::from_json(&r.state_json)
        else {
            panic!("no inventory state after {}", r.event.event_id);
        };
        assert!(
            available >= 0,
            "available {available} after {}",
            r.event.event_id
        );
        assert!(reserved <= 1_000);
        match r.outcome {
            Outcome::Revoked => {
                let Op::Reserve { order_id, qty } = &r.event.op else {
                    panic!("revoked a non-reservation: {:?}", r.event.op);
                };
                assert!(!order_id.is_empty() && *qty == 1);
                assert!(r.reason.as_deref().is_some_and(|s| !s.is_empty()));
                revoked.insert(r.event.event_id.clone());
            }
            Outcome::Refused => refused += 1,
            Outcome::Applied => {}
        }
        final_state = Some((available, reserved));
    }
    let (available, reserved) = final_state.unwrap();
    let conflicts: HashMap<String, _> = read_all_conflicts(&c)
        .unwrap()
        .into_iter()
        .filter(|cf| cf.kind == ConflictKind::ReservationRevoked)
        .map(|cf| (cf.event_id.clone(), cf))
        .collect();
    let missing: Vec<_> = revoked
        .iter()
        .filter(|id| !conflicts.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "revocations without a conflict: {missing:?}"
    );
    assert!(
        !revoked.is_empty(),
        "the partition caused no over-admission: nothing was revoked"
    );
    assert!(reserved <= 1_000);
    eprintln!(
        "{:.0} s: final available {available}, reserved {reserved}; {} revoked (each in reconciled and conflicts), {refused} refused by a region's view",
        t(),
        revoked.len()
    );
}
