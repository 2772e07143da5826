//! Invariant 8: 10,000 malformed records of ten kinds mixed into 10,000 good events (all
//! five aggregates, with retries). Every malformed record lands in `events.dlq` once with
//! the right error class; every good event lands in `history` exactly once; no crash.
use rf_harness::check::verify_region;
use rf_harness::cluster::Cluster;
use rf_harness::workload::{generate, malformed_class, publish, Workload};
use std::collections::BTreeMap;
use std::time::Duration;

#[test]
fn malformed_records_go_to_the_dlq_with_their_class() {
    let mut c = Cluster::start(&["a"], 4).unwrap();
    let w = Workload {
        events: 10_000,
        malformed: 10_000,
        all_aggregates: true,
        seed: 5,
        ..Default::default()
    };
    let (recs, ledger) = generate(&w, 1);
    c.start_processor("a", 0);
    publish(&[c.bootstrap("a")], &recs, |_| {}).unwrap();
    c.wait_consumed(ledger.records, Duration::from_secs(300))
        .unwrap();
    let errs = c.stop_all();
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        c.processor_sum(|s| &s.dead_lettered) as usize,
        ledger.malformed
    );

    let dir = c.processor_config("a", 0).state_dir;
    let report = verify_region(&c.bootstrap("a"), 4, &ledger, &[dir]).unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.history_events, ledger.distinct.len());
    assert_eq!(
        report.dlq_records, ledger.malformed,
        "each dead letter once"
    );
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    for j in 0..w.malformed {
        *want.entry(malformed_class(j).to_owned()).or_insert(0) += 1;
    }
    assert_eq!(report.dlq_reasons, want);
}
