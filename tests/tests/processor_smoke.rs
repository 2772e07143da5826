//! One region, one processor on a real Tansu broker: every distinct event accepted once,
//! every retry deduplicated, every malformed record dead-lettered.
use rf_harness::cluster::Cluster;
use rf_harness::workload::{generate, publish, Workload};
use std::time::Duration;

#[test]
fn processor_accepts_dedups_and_dead_letters() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let mut c = Cluster::start(&["a"], 4).unwrap();
    let w = Workload {
        events: 2_000,
        malformed: 20,
        ..Default::default()
    };
    let (recs, ledger) = generate(&w, 1);
    assert!(ledger.retries_same_region > 0);
    c.start_processor("a", 0);
    publish(&[c.bootstrap("a")], &recs, |_| {}).unwrap();
    c.wait_consumed(ledger.records, Duration::from_secs(120))
        .unwrap();
    let errs = c.stop_all();
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        c.processor_sum(|s| &s.accepted) as usize,
        ledger.distinct.len()
    );
    assert_eq!(
        c.processor_sum(|s| &s.duplicates) as usize,
        ledger.retries_same_region + ledger.failovers
    );
    assert_eq!(
        c.processor_sum(|s| &s.dead_lettered) as usize,
        ledger.malformed
    );
}
