//! A crash at each seam of a transaction — mid-produce, before commit, after the Kafka
//! commit but before the RocksDB write, after the RocksDB write — then a restart on the same
//! state: nothing lost, nothing duplicated, RocksDB equals the fold of history.
use rf_harness::check::verify_region;
use rf_harness::cluster::Cluster;
use rf_harness::process::{drain_and_stop, ChildProcessor};
use rf_harness::workload::{generate, publish, EndOffsets, Ledger, Workload};
use rf_processor::failpoints::SEAMS;
use std::time::Duration;

#[test]
fn crash_at_every_seam_loses_and_duplicates_nothing() {
    let c = Cluster::start(&["a"], 4).unwrap();
    let cfg = c.processor_config("a", 0);
    let bootstrap = c.bootstrap("a");
    let mut ledger = Ledger::default();
    let mut ends = EndOffsets::new();
    for (i, seam) in SEAMS.iter().enumerate() {
        // Fresh input for this seam, so the crash happens while there is work in flight.
        let (recs, l) = generate(
            &Workload {
                events: 1_500,
                malformed: 8,
                seed: 100 + i as u64,
                ..Default::default()
            },
            1,
        );
        ledger.extend(l);
        ends.extend(publish(std::slice::from_ref(&bootstrap), &recs, |_| {}).unwrap());

        let spec = format!("{seam}=1*off->return");
        let mut p = ChildProcessor::spawn(&cfg, &[("RF_FAILPOINTS", spec.as_str())]).unwrap();
        let st = p.wait(Duration::from_secs(120)).unwrap_or_else(|e| {
            panic!(
                "{seam}: the failpoint did not fire: {e}\n{}",
                p.log_tail(30)
            )
        });
        assert!(
            !st.success() && p.log_contains(&format!("failpoint {seam}: aborting")),
            "{seam}: expected a crash at the seam, got {st}:\n{}",
            p.log_tail(30)
        );

        // The restart must restore (replay the tail the store lacks) before it stops.
        let mut p = ChildProcessor::spawn_restored(&cfg, &[], Duration::from_secs(120)).unwrap();
        let group = cfg.group_id();
        drain_and_stop(&mut p, &bootstrap, &group, &ends, Duration::from_secs(180))
            .unwrap_or_else(|e| panic!("{seam}: {e}"));

        let report =
            verify_region(&bootstrap, 4, &ledger, std::slice::from_ref(&cfg.state_dir)).unwrap();
        eprintln!(
            "{seam}: {} history events, {} dead letters ({} distinct), {} states checked",
            report.history_events, report.dlq_records, report.dlq_distinct, report.states_checked
        );
        assert!(
            report.problems.is_empty(),
            "{seam}: {:#?}\nlast run's log:\n{}",
            report.problems,
            p.log_tail(60)
        );
        assert_eq!(report.history_events, ledger.distinct.len());
    }
}
