//! Two processor instances share a region's partitions in one consumer group under load;
//! one is killed with SIGKILL, later a third joins. Partitions move each time: the new
//! owner restores (its local store if current, else history) before stamping. Afterwards
//! history holds every sent event exactly once, HLCs strictly increase per history
//! partition across the moves, and the owning store of each partition equals its fold.
//!
//! With `cooperative-sticky` assignment (the default), the third instance's join moves only
//! the partitions it takes: the instance that owned all four keeps the rest without a
//! revocation or a restore. `RF_ASSIGNMENT_STRATEGY=range` runs the same with eager
//! rebalancing, for comparison (every partition revoked and restored at each move).
use rf_harness::check::verify_region;
use rf_harness::cluster::Cluster;
use rf_harness::process::{wait_drained, ChildProcessor};
use rf_harness::workload::{generate, publish_paced, Workload};
use std::time::{Duration, Instant};

const ASSIGNED: &str = "partitions assigned and restored";
const REVOKED: &str = "partitions revoked";

/// How many partitions the instance's log lists on its lines with `message`
/// (`partitions=[0, 1]`).
fn moved(p: &ChildProcessor, message: &str) -> usize {
    p.log_tail(usize::MAX)
        .lines()
        .filter(|l| l.contains(message))
        .filter_map(|l| {
            let list = l.split("partitions=[").nth(1)?.split(']').next()?;
            Some(list.split(',').filter(|x| !x.trim().is_empty()).count())
        })
        .sum()
}

#[test]
fn partitions_move_between_instances_exactly_once() {
    let c = Cluster::start(&["a"], 4).unwrap();
    let (recs, ledger) = generate(
        &Workload {
            events: 6_000,
            malformed: 20,
            seed: 77,
            all_aggregates: true,
            ..Default::default()
        },
        1,
    );
    let bootstrap = c.bootstrap("a");
    let cfgs: Vec<_> = (0..3).map(|i| c.processor_config("a", i)).collect();
    let strategy =
        std::env::var("RF_ASSIGNMENT_STRATEGY").unwrap_or_else(|_| "cooperative-sticky".into());
    let toml = cfgs[0].state_dir.with_extension("toml");
    std::fs::write(&toml, format!("assignment_strategy = {strategy:?}\n")).unwrap();
    let env = [("RF_CONFIG", toml.to_str().unwrap())];
    let load = {
        let b = vec![bootstrap.clone()];
        std::thread::spawn(move || publish_paced(&b, &recs, Duration::from_secs(45)))
    };
    let started = Instant::now();
    let mut a = ChildProcessor::spawn(&cfgs[0], &env).unwrap();
    let mut b = ChildProcessor::spawn(&cfgs[1], &env).unwrap();
    // Kill instance 0 while it owns partitions and load is flowing.
    a.wait_log(ASSIGNED, Duration::from_secs(60)).unwrap();
    b.wait_log(ASSIGNED, Duration::from_secs(60)).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    a.kill9();
    eprintln!(
        "instance 0 killed at {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // Its partitions move to instance 1 (after the session timeout); then a third joins.
    std::thread::sleep(Duration::from_secs(10));
    let before_join = (moved(&b, REVOKED), moved(&b, ASSIGNED));
    let mut d = ChildProcessor::spawn(&cfgs[2], &env).unwrap();
    d.wait_log(ASSIGNED, Duration::from_secs(60)).unwrap();
    eprintln!(
        "instance 2 joined and owns partitions at {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let ends = load.join().unwrap().unwrap();
    for (name, p) in [("instance 1", &b), ("instance 2", &d)] {
        for l in p.log_tail(usize::MAX).lines() {
            if l.contains(ASSIGNED) || l.contains(REVOKED) {
                eprintln!("{name}: {}", l.trim());
            }
        }
    }
    // What the join cost the instance that owned every partition then.
    let revoked = moved(&b, REVOKED) - before_join.0;
    let restored = moved(&b, ASSIGNED) - before_join.1;
    let taken = moved(&d, ASSIGNED);
    eprintln!(
        "{strategy}: the join moved {taken} partitions to instance 2; instance 1 had {revoked} revoked and {restored} restored"
    );
    if strategy == "cooperative-sticky" {
        assert!(
            revoked < 4 && restored == 0,
            "cooperative rebalancing revoked {revoked} and restored {restored} partitions of the instance that stays"
        );
    }

    let group = cfgs[0].group_id();
    wait_drained(
        &bootstrap,
        &group,
        &ends,
        &mut [&mut b, &mut d],
        Duration::from_secs(240),
    )
    .unwrap();
    // Plain rebalances hand partitions over (`rf-handoff`): only the killed instance's
    // writer needs fencing. A live one fenced rejoins the group; say how often it happened.
    let rejoins: usize = [&b, &d]
        .iter()
        .map(|p| {
            p.log_tail(usize::MAX)
                .matches("re-creating the producer and rejoining the group")
                .count()
        })
        .sum();
    eprintln!("live instances fenced and rejoined: {rejoins}");
    for p in [&mut b, &mut d] {
        let st = p.terminate(Duration::from_secs(30)).unwrap();
        assert!(st.success(), "graceful stop failed:\n{}", p.log_tail(30));
    }
    let dirs: Vec<_> = cfgs.iter().map(|c| c.state_dir.clone()).collect();
    let report = verify_region(&bootstrap, 4, &ledger, &dirs).unwrap();
    eprintln!(
        "{} history events, {} heartbeats, {} states checked in {:.0} s",
        report.history_events,
        report.heartbeats,
        report.states_checked,
        started.elapsed().as_secs_f64()
    );
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.history_events, ledger.distinct.len());
}
