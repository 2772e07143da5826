//! Two regions end to end on real Tansu brokers started by the harness: 10,000 distinct
//! events with same-region retries, failovers to the other region and malformed records.
//! Checked as a reader sees the topics: each region's `history` holds each (key, event_id)
//! at most once, every sent event is in some history, `reconciled` holds each exactly once
//! in (hlc, region, event_id) order per partition, and its final state equals the state
//! recomputed from what was sent.
use rf_harness::check::{check, reconciled_count};
use rf_harness::cluster::{Cluster, PARTITIONS};
use rf_harness::workload::{generate, publish, Workload};
use std::time::Duration;

#[test]
fn two_regions_reconcile_exactly_once() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let regions = ["us-east", "eu-west"];
    let mut c = Cluster::start(&regions, PARTITIONS).unwrap();
    for r in regions {
        c.start_processor(r, 0);
    }
    c.start_reconciler();
    let w = Workload {
        events: 10_000,
        seed: 11,
        ..Default::default()
    };
    let (recs, ledger) = generate(&w, regions.len());
    assert!(ledger.retries_same_region > 0 && ledger.failovers > 0 && ledger.malformed > 0);
    let bootstraps = c.bootstraps();
    publish(&bootstraps, &recs, |_| {}).unwrap();

    let want = ledger.distinct.len();
    c.wait_until(Duration::from_secs(240), "every event reconciled", |c| {
        Ok(reconciled_count(c)? >= want)
    })
    .unwrap();
    // Heartbeats keep history live; stop the writers so every topic has an end to read to.
    let errs = c.stop_all();
    assert!(errs.is_empty(), "components failed: {errs:?}");

    let consumed = c.processor_sum(|s| &s.consumed);
    let accepted = c.processor_sum(|s| &s.accepted);
    let duplicates = c.processor_sum(|s| &s.duplicates);
    let dead = c.processor_sum(|s| &s.dead_lettered);
    assert_eq!(
        consumed as usize, ledger.records,
        "every published record consumed"
    );
    assert_eq!(
        dead as usize, ledger.malformed,
        "every malformed record dead-lettered"
    );
    assert_eq!(
        duplicates as usize, ledger.retries_same_region,
        "every same-region retry deduplicated"
    );
    assert_eq!(
        accepted as usize,
        want + ledger.failovers,
        "each distinct event accepted once, failovers once more in the other region"
    );

    let report = check(&c, &ledger).unwrap();
    assert!(report.ok(), "problems: {:#?}", report.problems);
    assert_eq!(report.reconciled, want);
    let histories: usize = report.history_per_region.values().sum();
    assert_eq!(histories, want + ledger.failovers);
    assert_eq!(
        report.conflicts.get("CROSS_REGION_DUPLICATE").copied(),
        Some(ledger.failovers),
        "each failover is one cross-region duplicate"
    );
}
