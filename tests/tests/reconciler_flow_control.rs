//! Invariant 9 during a stall, on real Tansu brokers: while one region's watermark holds the
//! merge back, the reconciler stops fetching the regions that are ahead (Kafka is the buffer)
//! instead of buffering them in memory without bound, and starts again as the laggard moves.
//!
//! Region b has no processor at first, so nothing can be released and every record of a
//! waits. With `max_buffered_bytes` at 256 KiB the merge's buffer stays near that bound
//! (one poll batch over it at most) while a's history holds far more; once b's processor
//! runs, everything is reconciled, byte-identical to a reconciler without the bound.
use rf_harness::check::{check, reconciled_count};
use rf_harness::cluster::Cluster;
use rf_harness::http_client::{get, sample};
use rf_harness::workload::{generate, publish, Workload};
use std::time::{Duration, Instant};

const BOUND: usize = 256 * 1024;

#[test]
fn a_stalled_merge_pauses_the_regions_ahead_instead_of_buffering_them() {
    let regions = ["a", "b"];
    let mut c = Cluster::start(&regions, 4).unwrap();
    c.create_check_topics().unwrap();
    c.start_processor("a", 0);
    let mut cfg = c.reconciler_config();
    cfg.max_buffered_bytes = BOUND;
    c.start_reconciler_with(cfg.clone());
    let (recs, ledger) = generate(
        &Workload {
            events: 8_000,
            seed: 21,
            malformed: 0,
            ..Default::default()
        },
        regions.len(),
    );
    publish(&c.bootstraps(), &recs, |_| {}).unwrap();
    let sent_to_a = recs.iter().filter(|r| r.region == 0).count();
    c.wait_until(Duration::from_secs(60), "a's events processed", |c| {
        Ok(c.processors[0].stats.counters.consumed.get() as usize >= sent_to_a)
    })
    .unwrap();

    // b is silent: nothing can be released. Watch the buffer for a while.
    let scrape = |c: &Cluster, series: &str| {
        c.reconciler_http()
            .and_then(|a| get(a, "/metrics").ok())
            .and_then(|(_, m)| sample(&m, series))
            .unwrap_or(0.0)
    };
    let (mut max_bytes, mut max_paused) = (0.0f64, 0.0f64);
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        max_bytes = max_bytes.max(scrape(&c, "rf_reconciler_buffered_bytes"));
        max_paused = max_paused.max(scrape(&c, "rf_reconciler_paused_partitions"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let accepted_a = c.processors[0].stats.counters.accepted.get();
    eprintln!(
        "b silent: a accepted {accepted_a} events; the merge held at most {max_bytes:.0} bytes, \
         {max_paused} partitions paused"
    );
    assert_eq!(
        c.reconciled_so_far(),
        0,
        "nothing can be released while b is silent"
    );
    assert!(max_paused >= 1.0, "flow control never paused a");
    assert!(
        max_bytes <= 2.0 * BOUND as f64,
        "the buffer grew to {max_bytes:.0} bytes against a bound of {BOUND}"
    );

    // b comes up: the merge moves, a is fetched again, everything is reconciled.
    c.start_processor("b", 0);
    let want = ledger.distinct.len();
    c.wait_until(Duration::from_secs(120), "everything reconciled", |c| {
        Ok(reconciled_count(c)? >= want)
    })
    .unwrap();
    assert_eq!(scrape(&c, "rf_reconciler_paused_partitions"), 0.0);

    let difference = c
        .compare_with_fresh_reconciler(want, Duration::from_secs(120))
        .unwrap();
    let report = check(&c, &ledger).unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(difference, None, "flow control changed the output");
}
