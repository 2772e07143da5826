//! Invariants 1–4 and 8 through kill -9: the processor runs as its own process under
//! continuous load (counters and registers, with retries and malformed records) and is
//! killed with SIGKILL at random moments — during restore, group join, processing and
//! commits — and restarted on the same state directory each time. Afterwards history holds
//! every sent (key, event_id) exactly once, HLCs strictly increase per partition, every
//! malformed record is dead-lettered, and RocksDB equals the fold of history.
//!
//! `RF_KILLS=N` sets the number of kills (default 20); the soak run is `RF_KILLS=100`.
use rand::{Rng, SeedableRng};
use rf_harness::check::verify_region;
use rf_harness::cluster::Cluster;
use rf_harness::process::{drain_and_stop, env_count, ChildProcessor};
use rf_harness::workload::{generate, publish_paced, Workload};
use std::time::{Duration, Instant};

#[test]
fn processor_survives_repeated_kill9() {
    let kills = env_count("RF_KILLS", 20);
    let seed = 4242;
    let c = Cluster::start(&["a"], 4).unwrap();
    let w = Workload {
        events: 6_000,
        malformed: 40,
        seed,
        all_aggregates: true,
        ..Default::default()
    };
    let (recs, ledger) = generate(&w, 1);
    let cfg = c.processor_config("a", 0);
    let bootstrap = c.bootstrap("a");

    // Load keeps arriving over roughly the whole kill loop.
    let load = {
        let b = vec![bootstrap.clone()];
        let over = Duration::from_secs(kills as u64 * 4);
        std::thread::spawn(move || publish_paced(&b, &recs, over))
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    for k in 0..kills {
        let mut p = ChildProcessor::spawn(&cfg, &[]).unwrap();
        let after = Duration::from_millis(rng.random_range(300..8_000));
        std::thread::sleep(after);
        if let Some(st) = p.exited() {
            panic!(
                "processor exited on its own ({st}) before kill {k}:\n{}",
                p.log_tail(30)
            );
        }
        p.kill9();
        eprintln!(
            "kill -9 #{:>3} after {:>5} ms (t = {:.0} s)",
            k + 1,
            after.as_millis(),
            started.elapsed().as_secs_f64()
        );
    }
    let ends = load.join().unwrap().unwrap();

    // A last run drains the input: wait until the group has committed every record.
    let mut p = ChildProcessor::spawn_restored(&cfg, &[], Duration::from_secs(120)).unwrap();
    drain_and_stop(
        &mut p,
        &bootstrap,
        &cfg.group_id(),
        &ends,
        Duration::from_secs(240),
    )
    .unwrap();

    let report =
        verify_region(&bootstrap, 4, &ledger, std::slice::from_ref(&cfg.state_dir)).unwrap();
    eprintln!(
        "{kills} kills survived in {:.0} s; checked {} history events, {} heartbeats, {} dead letters ({} distinct), {} states",
        started.elapsed().as_secs_f64(),
        report.history_events,
        report.heartbeats,
        report.dlq_records,
        report.dlq_distinct,
        report.states_checked
    );
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.history_events, ledger.distinct.len());
}
