//! The reconciler soak at a small size (the full run is `soak`, docs/BENCHMARKS.md): every
//! figure of every phase is measured and every event reconciled. No speed or memory is
//! asserted here; the figures are printed.
use rf_loadgen::bench::soak;

#[test]
fn the_soak_measures_every_phase() {
    let phases = soak::run(1_000, &[5_000, 15_000, 50_000], 1_000.0).unwrap();
    assert_eq!(phases.len(), 3);
    for p in &phases {
        assert!(p.catch_up_rate > 0.0 && p.build_rate > 0.0, "{p:?}");
        assert!(p.live > 0, "no live input during the catch-up: {p:?}");
        assert!(p.store_kb > 0, "no store memory reported: {p:?}");
        assert!(
            p.ready_secs > 0.0 && p.ready_secs <= p.restart_secs,
            "{p:?}"
        );
        assert!(
            p.rss_kb > 0 && p.steady_rss_kb > 0 && p.processor_rss_kb > 0,
            "no RSS read: {p:?}"
        );
        assert!(p.processor_restart_secs > 0.0, "{p:?}");
        assert_eq!(p.processors.len(), 2, "{p:?}");
        for m in &p.processors {
            assert!(
                m.store_kb() > 0 && m.glibc_in_use_kb > 0 && m.rust_kb > 0,
                "a processor's memory not broken down: {m:?}"
            );
        }
        assert!(p.restart_secs > 0.0, "{p:?}");
    }
    eprintln!("{}", soak::summary(&phases));
}
