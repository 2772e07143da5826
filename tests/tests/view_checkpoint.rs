//! Issue 15, item 1: the regional view is checkpointed per owned partition, in the
//! processor's store, with the `reconciled` offset it reflects. A processor restarted on
//! its state reads only the tail of `reconciled` (counted: records its follower read), and
//! its view then equals, key by key, the view of a processor that read all of it; with
//! 500,000 records in `reconciled` by default (`RF_VIEW_EVENTS`), the bar. Its
//! partitions admit only once their views caught up (item 3): no fallback was needed.
use rf_harness::cluster::Cluster;
use rf_harness::workload::{generate, publish, Workload};
use std::time::{Duration, Instant};

fn seen(c: &Cluster, i: usize) -> u64 {
    c.processors[i].stats.view.lock().reconciled_seen
}

#[test]
fn a_restarted_processor_reads_only_the_tail_of_reconciled() {
    let mut c = Cluster::start(&["a", "b"], 4).unwrap();
    c.start_processor("a", 0);
    c.start_processor("b", 0);
    c.start_reconciler();
    let workload = |events, seed| Workload {
        events,
        seed,
        malformed: 0,
        all_aggregates: true,
        ..Default::default()
    };
    // A large `reconciled` (the bar: at least 500,000 records), `RF_VIEW_EVENTS`.
    let events = rf_harness::process::env_count("RF_VIEW_EVENTS", 500_000);
    let (first, ledger) = generate(&workload(events, 83), 2);
    let bs = c.bootstraps();
    publish(&bs, &first, |_| {}).unwrap();
    let before = ledger.distinct.len() as u64;
    c.wait_until(Duration::from_secs(600), "both views read it all", |c| {
        Ok(c.reconciled_so_far() >= before && seen(c, 0) >= before && seen(c, 1) >= before)
    })
    .unwrap();

    // A graceful stop writes the view's checkpoint with the last commit; start again on it.
    c.processors[0].stop().unwrap();
    let started = Instant::now();
    c.start_processor("a", 0);
    let restarted = c.processors.len() - 1;
    let (tail, ledger2) = generate(&workload(300, 84), 2);
    publish(&bs, &tail, |_| {}).unwrap();
    let total = before + ledger2.distinct.len() as u64;
    c.wait_until(Duration::from_secs(120), "the tail reconciled", |c| {
        Ok(c.reconciled_so_far() >= total && seen(c, 1) >= total)
    })
    .unwrap();
    // The restarted view converges on the one that read everything, key by key.
    let mismatch = |c: &Cluster| -> Option<String> {
        let full = c.processors[1].stats.view.lock();
        let view = c.processors[restarted].stats.view.lock();
        let keys = full.keys();
        keys.iter()
            .find(|k| view.reconciled_state(k) != full.reconciled_state(k))
            .map(|k| {
                format!(
                    "{k}: restarted {:?}, full {:?}",
                    view.reconciled_state(k),
                    full.reconciled_state(k)
                )
            })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(m) = mismatch(&c) {
        assert!(Instant::now() < deadline, "views differ: {m}");
        c.check_alive().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let read = seen(&c, restarted);
    // It admitted on a caught-up view: it waited for the tail, never fell back.
    let st = &c.processors[restarted].stats;
    assert_eq!(
        st.counters.view_degraded.get(),
        0,
        "fell back to the checkpoint"
    );
    assert_eq!(
        st.metrics.view_catching_up.with_label_values(&["a"]).get(),
        0
    );
    eprintln!(
        "reconciled: {before} records before the restart, {total} after; the restarted \
         processor read {read} of them and matched the full view {:.1} s after its start",
        started.elapsed().as_secs_f64()
    );
    // Replaying from offset 0 would read all `total`; the tail is the 300-event batch plus
    // what the last checkpoint had not covered.
    assert!(
        read < before / 4,
        "the restarted processor read {read} reconciled records of {total}: not only the tail"
    );
    let errors = c.stop_all();
    assert!(errors.is_empty(), "{errors:?}");
}
