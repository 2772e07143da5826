//! A release is never lost, and arithmetic never wraps (issue 15, items 4 and 6). The user
//! reserves in region a, fails over and releases in region b before a's reservation is
//! reconciled: b's view cannot see the order, and the release goes to history as a pending
//! release (nothing in b's dead letters); the reconciler releases it, and the stock is back.
//! In region a, a CounterAdd and a StockAdd that would overflow are dead letters with
//! `invalid_value`, and the states they would have broken stay as they were.
use rf_core::aggregate::apply_reconciled;
use rf_core::AggState;
use rf_harness::check::{read_dead_letters, read_reconciled, reconciled_count};
use rf_harness::cluster::Cluster;
use rf_harness::workload::{outgoing, publish};
use rf_schemas::{Op, Outcome};
use std::collections::HashMap;
use std::time::Duration;

#[test]
fn a_release_elsewhere_is_reconciled_and_overflows_are_dead_letters() {
    let mut c = Cluster::start(&["a", "b"], 2).unwrap();
    c.start_processor("a", 0);
    c.start_processor("b", 0);
    let reserve = Op::Reserve {
        order_id: "o1".into(),
        qty: 3,
    };
    let in_a = vec![
        outgoing(0, "s1", "stock:x", Op::stock_add(10)),
        outgoing(0, "r1", "stock:x", reserve),
        outgoing(0, "c1", "likes:big", Op::CounterAdd { delta: i64::MAX }),
        outgoing(0, "c2", "likes:big", Op::CounterAdd { delta: 1 }),
        outgoing(0, "s2", "stock:y", Op::stock_add(i64::MAX)),
        outgoing(0, "s3", "stock:y", Op::stock_add(1)),
    ];
    publish(&c.bootstraps(), &in_a, |_| {}).unwrap();
    c.wait_consumed(in_a.len(), Duration::from_secs(60))
        .unwrap();
    // No reconciler yet: b's view has never seen o1.
    let in_b = vec![outgoing(
        1,
        "rel1",
        "stock:x",
        Op::Release {
            order_id: "o1".into(),
        },
    )];
    publish(&c.bootstraps(), &in_b, |_| {}).unwrap();
    c.wait_consumed(in_a.len() + 1, Duration::from_secs(60))
        .unwrap();

    assert_eq!(
        read_dead_letters(&c.bootstrap("b"), 2).unwrap(),
        vec![],
        "the release is not a dead letter"
    );
    let dead = read_dead_letters(&c.bootstrap("a"), 2).unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for (class, reason) in &dead {
        assert_eq!(class, "invalid_value");
        assert!(reason.contains("overflow"), "{reason}");
    }

    c.start_reconciler();
    c.wait_until(Duration::from_secs(120), "5 events reconciled", |c| {
        Ok(reconciled_count(c)? >= 5)
    })
    .unwrap();
    let recs = read_reconciled(&c).unwrap();
    assert_eq!(recs.len(), 5, "{recs:#?}");
    let mut states: HashMap<String, Option<AggState>> = HashMap::new();
    for (_, r) in &recs {
        apply_reconciled(
            states.entry(r.event.key.clone()).or_default(),
            &r.event,
            r.outcome,
        );
    }
    let release = recs
        .iter()
        .find(|(_, r)| r.event.event_id == "rel1")
        .map(|(_, r)| r)
        .expect("the release is reconciled");
    assert_eq!(release.outcome, Outcome::Applied, "{release:?}");
    match &states["stock:x"] {
        Some(AggState::Inventory {
            available,
            reserved,
            ..
        }) => {
            assert_eq!(*available, 10, "the stock is back");
            assert_eq!(reserved.total(), 0);
        }
        other => panic!("stock:x is {other:?}"),
    }
    assert_eq!(
        states["likes:big"],
        Some(AggState::Counter { total: i64::MAX })
    );
    let errs = c.stop_all();
    assert!(errs.is_empty(), "{errs:?}");
}
