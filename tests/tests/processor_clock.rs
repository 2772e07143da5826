//! Invariant 4 with an injected wall clock: the clock jumps +500 ms, then back 60 s, then
//! the processor restarts with its clock 120 s behind the persisted bound. HLCs in every
//! history partition stay strictly increasing throughout, and nothing is lost or repeated.
use rf_core::ManualClock;
use rf_loadgen::check::verify_region;
use rf_loadgen::cluster::Cluster;
use rf_loadgen::workload::{generate, publish, Ledger, Workload};
use std::sync::Arc;
use std::time::Duration;

fn send_batch(c: &Cluster, ledger: &mut Ledger, sent: &mut usize, seed: u64) {
    let (recs, l) = generate(
        &Workload {
            events: 800,
            malformed: 4,
            all_aggregates: true,
            seed,
            ..Default::default()
        },
        1,
    );
    ledger.extend(l);
    *sent += recs.len();
    publish(&[c.bootstrap("a")], &recs, |_| {}).unwrap();
    let want = *sent;
    c.wait_until(Duration::from_secs(120), "batch consumed", |c| {
        Ok(c.processor_sum(|s| &s.consumed) as usize >= want)
    })
    .unwrap();
}

#[test]
fn hlc_strictly_increases_across_clock_jumps_and_restarts() {
    let mut c = Cluster::start(&["a"], 4).unwrap();
    let (mut ledger, mut sent) = (Ledger::default(), 0);
    let clock = ManualClock::default();
    c.start_processor_with_clock("a", 0, Arc::new(clock.clone()));
    send_batch(&c, &mut ledger, &mut sent, 1);
    clock.set_offset(500);
    send_batch(&c, &mut ledger, &mut sent, 2);
    clock.set_offset(-60_000);
    send_batch(&c, &mut ledger, &mut sent, 3);
    assert!(c.stop_all().is_empty());

    // Restart with the wall clock two minutes behind what history already holds.
    c.start_processor_with_clock("a", 0, Arc::new(ManualClock::with_offset(-120_000)));
    send_batch(&c, &mut ledger, &mut sent, 4);
    assert!(c.stop_all().is_empty());

    let dir = c.processor_config("a", 0).state_dir;
    let report = verify_region(&c.bootstrap("a"), 4, &ledger, &[dir]).unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.history_events, ledger.distinct.len());
}
