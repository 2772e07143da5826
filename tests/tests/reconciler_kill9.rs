//! Invariants 3, 5 and 7 for the reconciler through kill -9. Three regions accept events while
//! the reconciler is away (as if cut off from them); then the reconciler, as its own process,
//! catches up and is killed with SIGKILL at random moments during the catch-up, at least
//! 10 times, restarting each time. Afterwards `reconciled` holds every distinct event exactly
//! once in order (no duplicate, no gap), states equal the recomputation, and a fresh
//! reconciler reading the same histories in another arrival order, never killed, writes the
//! same bytes.
//!
//! `RF_RECONCILER_KILLS=N` sets the number of kills (default 12).
use rand::{Rng, SeedableRng};
use rf_harness::check::{check, first_difference, reconciled_count, topic_bytes};
use rf_harness::cluster::Cluster;
use rf_harness::process::ChildProcess;
use rf_harness::workload::{generate, publish, Workload};
use std::time::{Duration, Instant};

#[test]
fn reconciler_survives_kill9_during_catch_up() {
    let kills = rf_harness::process::env_count("RF_RECONCILER_KILLS", 12);
    let regions = ["a", "b", "c"];
    let mut c = Cluster::start(&regions, 4).unwrap();
    c.create_check_topics().unwrap();
    for r in regions {
        c.start_processor(r, 0);
    }
    let (recs, ledger) = generate(
        &Workload {
            events: 120_000,
            seed: 31,
            all_aggregates: true,
            ..Default::default()
        },
        regions.len(),
    );
    let bs = c.bootstraps();
    let started = Instant::now();
    publish(&bs, &recs, |_| {}).unwrap();
    let sent = ledger.records as u64;
    c.wait_until(
        Duration::from_secs(240),
        "regions to process the load",
        |c| Ok(c.processor_sum(|s| &s.consumed) >= sent),
    )
    .unwrap();
    eprintln!(
        "{} events accepted by 3 regions while no reconciler ran ({:.0} s)",
        c.processor_sum(|s| &s.accepted),
        started.elapsed().as_secs_f64()
    );

    // Catch-up, killed again and again.
    let cfg = c.reconciler_config();
    let log = c.dir.path().join("reconciler.log");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut progress = Vec::new();
    for k in 0..kills {
        let mut r = ChildProcess::spawn_reconciler(&cfg, &log, None).unwrap();
        r.wait_log("reconciler started", Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("kill {k}: {e}\n{}", r.log_tail(30)));
        // Early in each run: since the direct Avro codec, a whole catch-up of 30,000 records
        // took fewer than five runs of 20–400 ms; this backlog is four times that.
        std::thread::sleep(Duration::from_millis(rng.random_range(40..200)));
        r.kill9();
        let n = reconciled_count(&c).unwrap();
        progress.push(n);
        assert!(
            n < ledger.distinct.len(),
            "catch-up finished before kill {k} ({n} records): make the backlog larger"
        );
    }
    eprintln!(
        "{kills} kills during catch-up; reconciled after each: {progress:?} ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    let mut r = ChildProcess::spawn_reconciler(&cfg, &log, None).unwrap();
    let want = ledger.distinct.len();
    c.wait_until(Duration::from_secs(240), "reconciled to catch up", |c| {
        if let Some(st) = r.exited() {
            return Err(format!("reconciler exited ({st}):\n{}", r.log_tail(30)));
        }
        Ok(reconciled_count(c)? >= want)
    })
    .unwrap_or_else(|e| {
        let n = reconciled_count(&c).unwrap_or(0);
        panic!("{e} ({n} of {want}):\n{}", r.log_tail(40))
    });
    // One more kill -9 after the catch-up: the restart starts from its checkpoint and reads
    // only the `reconciled` tail past it, not the whole topic.
    r.kill9();
    let mut r = ChildProcess::spawn_reconciler(&cfg, &log, None).unwrap();
    r.wait_log("reconciler started", Duration::from_secs(120))
        .unwrap();
    const RESTORED: &str = "reconciler restored partition from its output";
    let tail: i64 = r.logged_numbers(RESTORED, "records").iter().sum();
    let from: Vec<i64> = r.logged_numbers(RESTORED, "from");
    eprintln!(
        "restart after the catch-up: {tail} reconciled records read past checkpoints at {from:?}"
    );
    assert_eq!(
        from.len(),
        4,
        "one restore line per partition:\n{}",
        r.log_tail(20)
    );
    assert!(
        from.iter().all(|f| *f > 0),
        "a restart without its checkpoint: {from:?}"
    );
    assert!(
        tail < (want / 10) as i64,
        "the restart read {tail} of {want} reconciled records: more than the tail"
    );
    r.stop_gracefully().unwrap();

    // A fresh reconciler over the same histories, regions listed in another order (so they
    // arrive in another order), never killed.
    c.start_reconciler_with(c.fresh_check_config());
    let home = c.home.bootstrap();
    c.wait_until(Duration::from_secs(240), "the fresh reconciler", |c| {
        Ok(c.reconciled_so_far() as usize >= want)
    })
    .unwrap();
    let errs = c.stop_all();
    assert!(errs.is_empty(), "{errs:?}");

    let report = check(&c, &ledger).unwrap();
    eprintln!("{report:#?}");
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.reconciled, want, "duplicates in reconciled");
    let killed = topic_bytes(&home, "reconciled", 4).unwrap();
    let clean = topic_bytes(&home, "reconciled-check", 4).unwrap();
    assert_eq!(
        first_difference(&killed, &clean),
        None,
        "killed and clean reconcilers disagree"
    );
    eprintln!(
        "{} reconciled records byte-identical to a clean run; {} conflicts ({} repeated after restarts); {:.0} s",
        killed.len(),
        report.conflicts.values().sum::<usize>(),
        report.conflicts_repeated,
        started.elapsed().as_secs_f64()
    );
}
