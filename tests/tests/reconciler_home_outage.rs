//! Recovery, not exit: the home cluster becomes unreachable for 60 s under load (every
//! packet to its port dropped), then comes back. The reconciler never exits: its failed
//! commits and starts take the recovery path (re-adopt its output, re-read the histories)
//! and it catches up by itself. Afterwards `reconciled` holds every event exactly once,
//! byte-identical to a fresh reconciler that never saw an outage.
//!
//! `RF_HOME_OUTAGE_SECS` sets the outage (default 60).
use rf_harness::check::{check, reconciled_count};
use rf_harness::cluster::Cluster;
use rf_harness::http_client::{get, sample};
use rf_harness::netns::PortBlock;
use rf_harness::process::env_count;
use rf_harness::workload::{generate, publish, publish_paced, Workload};
use std::time::{Duration, Instant};

#[test]
fn reconciler_rides_out_a_home_cluster_outage() {
    let outage = Duration::from_secs(env_count("RF_HOME_OUTAGE_SECS", 60) as u64);
    let regions = ["a", "b"];
    let mut c = Cluster::start(&regions, 4).unwrap();
    c.create_check_topics().unwrap();
    for r in regions {
        c.start_processor(r, 0);
    }
    c.start_reconciler();
    let (recs, ledger) = generate(
        &Workload {
            events: 6_000,
            seed: 77,
            all_aggregates: true,
            ..Default::default()
        },
        regions.len(),
    );
    let (before, during) = recs.split_at(recs.len() / 3);
    publish(&c.bootstraps(), before, |_| {}).unwrap();
    c.wait_until(
        Duration::from_secs(60),
        "reconciling before the outage",
        |c| Ok(c.reconciled_so_far() > 0),
    )
    .unwrap();

    let started = Instant::now();
    let block = PortBlock::new(c.home.port).unwrap();
    let load = {
        let (b, d) = (c.bootstraps(), during.to_vec());
        std::thread::spawn(move || publish_paced(&b, &d, outage))
    };
    let held = c.reconciled_so_far();
    while started.elapsed() < outage {
        c.check_alive()
            .expect("the reconciler must not exit during the outage");
        std::thread::sleep(Duration::from_millis(500));
    }
    load.join().unwrap().unwrap();
    let during_outage = c.reconciled_so_far() - held;
    drop(block);
    eprintln!(
        "home cluster unreachable for {:.0} s; {during_outage} records committed meanwhile",
        started.elapsed().as_secs_f64()
    );

    let want = ledger.distinct.len();
    c.wait_until(Duration::from_secs(180), "catch-up after the outage", |c| {
        Ok(reconciled_count(c)? >= want)
    })
    .unwrap();
    let caught_up = started.elapsed();
    let http = c.reconciler_http().unwrap();
    let recoveries = sample(
        &get(http, "/metrics").unwrap().1,
        "rf_reconciler_recoveries_total",
    )
    .unwrap_or(0.0);
    assert!(
        recoveries >= 1.0,
        "the outage never reached the reconciler: no recovery counted"
    );
    eprintln!(
        "caught up {:.1} s after the heal ({recoveries} recoveries)",
        (caught_up - outage).as_secs_f64()
    );

    // A fresh reconciler over the same histories, never cut off.
    let difference = c
        .compare_with_fresh_reconciler(want, Duration::from_secs(120))
        .unwrap();

    let report = check(&c, &ledger).unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.reconciled, want, "duplicates in reconciled");
    assert_eq!(
        difference, None,
        "the reconciler that rode out the outage and a fresh one disagree"
    );
}
