//! Fencing of a zombie (issue 14, item 6): two processors of one region share its 4
//! partitions while load arrives. One, whose wall clock runs 20 s ahead, is paused with
//! SIGSTOP long enough for the group to give all its partitions to the other, then resumed
//! (SIGCONT). Whatever the zombie tries to write when it wakes (its open transaction,
//! heartbeats stamped 20 s ahead) must not show in `history` as a reader sees it: every
//! partition's HLC still strictly increases, every sent event is there exactly once, and the
//! stores equal the fold of history. Every transaction carries the group metadata, so a
//! member of an older generation cannot commit (ARCHITECTURE.md, heartbeat fencing).
use rf_harness::check::verify_region;
use rf_harness::cluster::Cluster;
use rf_harness::process::{wait_drained, ChildProcessor, RESTORED};
use rf_harness::workload::{generate, publish_paced, Workload};
use std::time::{Duration, Instant};

fn signal(p: &ChildProcessor, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig} failed");
}

#[test]
fn a_paused_processor_resumed_with_its_clock_ahead_writes_nothing_readers_see() {
    let c = Cluster::start(&["a"], 4).unwrap();
    let bootstrap = c.bootstrap("a");
    let (zcfg, scfg) = (c.processor_config("a", 0), c.processor_config("a", 1));
    let (recs, ledger) = generate(
        &Workload {
            events: 12_000,
            all_aggregates: true,
            seed: 53,
            ..Default::default()
        },
        1,
    );
    let started = Instant::now();
    let t = || started.elapsed().as_secs_f64();
    let mut zombie = ChildProcessor::spawn_restored(
        &zcfg,
        &[("RF_CLOCK_AHEAD_MS", "20000")],
        Duration::from_secs(60),
    )
    .unwrap();
    let mut successor =
        ChildProcessor::spawn_restored(&scfg, &[], Duration::from_secs(90)).unwrap();
    let load = {
        let b = vec![bootstrap.clone()];
        std::thread::spawn(move || publish_paced(&b, &recs, Duration::from_secs(30)))
    };
    std::thread::sleep(Duration::from_secs(5));
    let before = successor.log_text().matches(RESTORED).count();
    signal(&zombie, "-STOP");
    eprintln!("{:.0} s: processor 0 (clock 20 s ahead) paused", t());
    // The group gives everything to the successor once the paused member's session expires.
    let deadline = Instant::now() + Duration::from_secs(90);
    while successor.log_text().matches(RESTORED).count() == before {
        assert!(
            Instant::now() < deadline,
            "the successor never took the partitions over:\n{}",
            successor.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("{:.0} s: processor 1 took the partitions over", t());
    std::thread::sleep(Duration::from_secs(3));
    signal(&zombie, "-CONT");
    eprintln!("{:.0} s: processor 0 resumed", t());
    let ends = load.join().unwrap().unwrap();
    wait_drained(
        &bootstrap,
        &zcfg.group_id(),
        &ends,
        &mut [&mut zombie, &mut successor],
        Duration::from_secs(240),
    )
    .unwrap();
    let zombie_log = zombie.log_text();
    let noticed: Vec<&str> = zombie_log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("fenc") || l.contains("generation") || l.contains("abort")
        })
        .take(5)
        .collect();
    eprintln!(
        "{:.0} s: drained; what the resumed processor logged about it: {noticed:#?}",
        t()
    );
    // Known gap (ARCHITECTURE.md): after being fenced, a processor has once not stopped
    // within 30 s of SIGTERM. That is a shutdown problem, not a write a reader sees; it is
    // reported here loudly, the process is killed, and the history checks below still run.
    for (name, p) in [("resumed", &mut zombie), ("successor", &mut successor)] {
        if let Err(e) = p.stop_gracefully() {
            eprintln!(
                "WARNING: the {name} processor did not stop gracefully ({e}); killing it:\n{}",
                p.log_tail(15)
            );
            p.kill9();
        }
    }
    let report = verify_region(
        &bootstrap,
        4,
        &ledger,
        &[zcfg.state_dir.clone(), scfg.state_dir.clone()],
    )
    .unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.history_events, ledger.distinct.len());
    eprintln!(
        "{:.0} s: history exactly once, HLC strictly increasing per partition, {} heartbeats",
        t(),
        report.heartbeats
    );
}
