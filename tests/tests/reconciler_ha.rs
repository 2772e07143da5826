//! Reconciler high availability (issue 14): two reconciler processes with
//! `assignment = "group"` share the 4 partition indexes of 3 regions while load arrives. One
//! of them, chosen at random, is killed with SIGKILL at random moments, 5 times. Once, the
//! survivor must take every index over within about the session timeout while the victim
//! stays dead; otherwise the victim restarts at once (and a rebalance moves indexes back).
//! Afterwards `reconciled` holds every distinct event exactly once, in order (no gap, no
//! duplicate), and a fresh single reconciler reading the same histories writes the same bytes.
//!
//! `RF_RECONCILER_HA_KILLS=N` sets the number of kills (default 5).
use rand::{Rng, SeedableRng};
use rf_harness::check::{check, reconciled_count};
use rf_harness::cluster::Cluster;
use rf_harness::process::ChildProcess;
use rf_harness::workload::{generate, publish_paced, Workload};
use rf_reconciler::config::Assignment;
use std::time::{Duration, Instant};

const SESSION_MS: u64 = 6_000;
const ALL: &str = "reconciler started partitions=[0, 1, 2, 3]";

#[test]
fn two_reconcilers_share_partitions_and_take_over_after_kill9() {
    let kills = rf_harness::process::env_count("RF_RECONCILER_HA_KILLS", 5);
    let regions = ["a", "b", "c"];
    let mut c = Cluster::start(&regions, 4).unwrap();
    c.create_check_topics().unwrap();
    for r in regions {
        c.start_processor(r, 0);
    }
    let (recs, ledger) = generate(
        &Workload {
            events: 40_000,
            seed: 41,
            all_aggregates: true,
            ..Default::default()
        },
        regions.len(),
    );
    let configs: Vec<_> = ["r1", "r2"]
        .iter()
        .map(|name| {
            let mut cfg = c.reconciler_config();
            cfg.instance = (*name).into();
            cfg.assignment = Assignment::Group;
            cfg.session_timeout_ms = SESSION_MS;
            cfg
        })
        .collect();
    let logs: Vec<_> = ["r1", "r2"]
        .iter()
        .map(|n| c.dir.path().join(format!("reconciler-{n}.log")))
        .collect();
    let spawn = |i: usize| ChildProcess::spawn_reconciler(&configs[i], &logs[i], None).unwrap();
    let mut procs = vec![spawn(0), spawn(1)];
    let started = Instant::now();
    let t = || started.elapsed().as_secs_f64();

    // Both share the indexes: each starts on a part of them (not none, not all).
    let shares = |p: &ChildProcess| {
        p.log_text().lines().any(|l| {
            l.split_once("reconciler started partitions=[")
                .and_then(|(_, rest)| rest.split_once(']'))
                .is_some_and(|(list, _)| !list.is_empty() && list.split(',').count() < 4)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !procs.iter().all(shares) {
        assert!(
            Instant::now() < deadline,
            "the two instances never shared the indexes:\nr1:\n{}\nr2:\n{}",
            procs[0].log_tail(20),
            procs[1].log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{:.0} s: both instances own part of the indexes", t());

    let bs = c.bootstraps();
    let load = std::thread::spawn(move || publish_paced(&bs, &recs, Duration::from_secs(50)));
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut takeover = None;
    for k in 0..kills {
        std::thread::sleep(Duration::from_millis(rng.random_range(2_000..6_000)));
        let victim = rng.random_range(0..2);
        let survivor = 1 - victim;
        let before = procs[survivor].log_text().matches(ALL).count();
        procs[victim].kill9();
        let n = reconciled_count(&c).unwrap();
        eprintln!(
            "{:.0} s: kill {k} of reconciler r{} ({n} reconciled so far)",
            t(),
            victim + 1
        );
        if k == kills / 2 {
            // The victim stays dead: the survivor takes every index over.
            let killed_at = Instant::now();
            let deadline = killed_at + Duration::from_millis(SESSION_MS * 4);
            while procs[survivor].log_text().matches(ALL).count() == before {
                assert!(
                    Instant::now() < deadline,
                    "r{} did not take over every partition index:\n{}",
                    survivor + 1,
                    procs[survivor].log_tail(30)
                );
                assert!(procs[survivor].exited().is_none(), "the survivor exited");
                std::thread::sleep(Duration::from_millis(100));
            }
            takeover = Some(killed_at.elapsed());
            eprintln!(
                "{:.0} s: r{} took over all 4 indexes {:.1} s after the kill (session timeout {} s)",
                t(),
                survivor + 1,
                killed_at.elapsed().as_secs_f64(),
                SESSION_MS / 1000
            );
        }
        procs[victim] = spawn(victim);
    }
    load.join().unwrap().unwrap();
    let want = ledger.distinct.len();
    c.wait_until(Duration::from_secs(240), "reconciled to catch up", |c| {
        for (i, p) in procs.iter_mut().enumerate() {
            if let Some(st) = p.exited() {
                return Err(format!("r{} exited ({st}):\n{}", i + 1, p.log_tail(30)));
            }
        }
        Ok(reconciled_count(c)? >= want)
    })
    .unwrap_or_else(|e| {
        let n = reconciled_count(&c).unwrap_or(0);
        panic!(
            "{e} ({n} of {want}):\nr1:\n{}\nr2:\n{}",
            procs[0].log_tail(30),
            procs[1].log_tail(30)
        )
    });
    for p in &mut procs {
        p.stop_gracefully().unwrap();
    }
    eprintln!("{:.0} s: {want} events reconciled by the pair", t());

    let diff = c
        .compare_with_fresh_reconciler(want, Duration::from_secs(240))
        .unwrap();
    let report = check(&c, &ledger).unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.reconciled, want, "duplicates in reconciled");
    assert_eq!(
        diff, None,
        "the pair and a fresh single reconciler disagree"
    );
    eprintln!(
        "{:.0} s: {kills} kills; {want} records byte-identical to a fresh single reconciler; takeover {:.1} s",
        t(),
        takeover.map_or(0.0, |d| d.as_secs_f64())
    );
}
