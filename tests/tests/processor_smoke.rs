//! One region, one processor on a real Tansu broker: every distinct event accepted once,
//! every retry deduplicated, every malformed record dead-lettered.
use rf_loadgen::cluster::Cluster;
use rf_loadgen::workload::{generate, publish, Workload};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[test]
fn processor_accepts_events() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let c = Cluster::start(&["a"], 4).unwrap();
    let w = Workload {
        events: 200,
        malformed: 4,
        ..Default::default()
    };
    let (recs, ledger) = generate(&w, 1);
    let cfg = c.processor_config("a", 0);
    let shutdown = rf_processor::Shutdown::default();
    let stats = std::sync::Arc::new(rf_processor::pipeline::Stats::default());
    let (s, st) = (shutdown.clone(), stats.clone());
    let h = std::thread::spawn(move || {
        rf_processor::pipeline::run_with(cfg, s, std::sync::Arc::new(rf_core::SystemClock), st)
    });
    std::thread::sleep(Duration::from_secs(4));
    publish(&[c.bootstrap("a")], &recs, |_| {}).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.accepted.load(Ordering::Relaxed) < ledger.distinct.len() as u64
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    shutdown.trigger();
    h.join().unwrap().unwrap();
    assert_eq!(
        stats.accepted.load(Ordering::Relaxed),
        ledger.distinct.len() as u64
    );
    drop(c);
}
