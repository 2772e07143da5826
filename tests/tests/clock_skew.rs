//! Invariant 4 across regions: one region's processor runs with its wall clock 5 s ahead
//! (injected). The reconciled order stays deterministic and its state equals the
//! recomputation; the reconciler reports the skew on `conflicts` (it sees the HLCs on
//! arrival); the other region reads the HLCs back from `reconciled` and its own clock is not
//! dragged forward.
use rf_core::{Clock, ManualClock, SystemClock};
use rf_harness::check::{check, max_history_physical_ms, reconciled_count};
use rf_harness::cluster::Cluster;
use rf_harness::workload::{generate, publish, Workload};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn a_clock_running_ahead_is_reported_and_drags_no_one() {
    let regions = ["ahead", "steady"];
    let mut c = Cluster::start(&regions, 4).unwrap();
    c.start_processor_with_clock("ahead", 0, Arc::new(ManualClock::with_offset(5_000)));
    c.start_processor("steady", 0);
    c.start_reconciler();
    let (recs, ledger) = generate(
        &Workload {
            events: 3_000,
            seed: 9,
            ..Default::default()
        },
        2,
    );
    let bs = c.bootstraps();
    publish(&bs, &recs, |_| {}).unwrap();
    let want = ledger.distinct.len();
    c.wait_until(Duration::from_secs(180), "all reconciled", |c| {
        Ok(reconciled_count(c)? >= want)
    })
    .unwrap();
    // Steady reads `reconciled` back and observes the other region's HLCs. They reach
    // `reconciled` only once steady's own watermark has passed them, so they are never
    // far ahead of its clock: merged, not rejected, and steady is not dragged.
    c.wait_until(
        Duration::from_secs(60),
        "steady observes remote HLCs",
        |c| Ok(c.processors[1].stats.counters.remote_observed.get() > 0),
    )
    .unwrap();
    let end_wall = SystemClock.now_ms();
    assert!(c.stop_all().is_empty());

    let report = check(&c, &ledger).unwrap();
    assert!(report.ok(), "{:#?}", report.problems);
    assert!(
        report.conflicts.get("CLOCK_SKEW").copied().unwrap_or(0) >= 1,
        "skew not reported: {:?}",
        report.conflicts
    );
    // Steady's own stamps stay near its wall clock: never 5 s ahead.
    let steady_max = max_history_physical_ms(&c.bootstrap("steady"), 4).unwrap();
    assert!(
        steady_max <= end_wall + 500,
        "steady's HLC was dragged forward: {steady_max} vs wall {end_wall}"
    );
    let ahead_max = max_history_physical_ms(&c.bootstrap("ahead"), 4).unwrap();
    assert!(
        ahead_max > end_wall + 3_000,
        "the skewed region was not skewed"
    );
}
