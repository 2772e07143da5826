//! Issue 15, item 1: with two processor instances in a region, each one's regional view
//! covers only the partitions it owns (the two views are disjoint and together hold every
//! key the other region's single instance holds); when one instance stops, its partitions
//! move and the remaining instance's view takes them over, equal key by key.
use rf_harness::cluster::Cluster;
use rf_harness::workload::{generate, publish, Workload};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn keys(c: &Cluster, i: usize) -> BTreeSet<String> {
    c.processors[i]
        .stats
        .view
        .lock()
        .keys()
        .into_iter()
        .collect()
}

/// Keys whose reconciled state differs between processor `i` and the full view (`full`).
fn differing(c: &Cluster, i: usize, full: usize) -> Vec<String> {
    let f = c.processors[full].stats.view.lock();
    let v = c.processors[i].stats.view.lock();
    f.keys()
        .into_iter()
        .filter(|k| v.reconciled_state(k) != f.reconciled_state(k))
        .collect()
}

#[test]
fn each_instance_views_its_partitions_and_a_move_takes_the_view_along() {
    let mut c = Cluster::start(&["a", "b"], 4).unwrap();
    c.start_processor("a", 0);
    c.start_processor("a", 1);
    c.start_processor("b", 0);
    c.start_reconciler();
    let (recs, ledger) = generate(
        &Workload {
            events: 4_000,
            seed: 91,
            malformed: 0,
            all_aggregates: true,
            ..Default::default()
        },
        2,
    );
    publish(&c.bootstraps(), &recs, |_| {}).unwrap();
    let want = ledger.distinct.len() as u64;
    // Region b's one instance owns every partition: its view is the full one.
    let (a0, a1, b) = (0, 1, 2);
    c.wait_until(
        Duration::from_secs(180),
        "a's two views split b's between them",
        |c| {
            let (k0, k1, kb) = (keys(c, a0), keys(c, a1), keys(c, b));
            let union: BTreeSet<String> = k0.union(&k1).cloned().collect();
            Ok(c.reconciled_so_far() >= want
                && !k0.is_empty()
                && !k1.is_empty()
                && k0.is_disjoint(&k1)
                && union == kb
                && differing(c, a0, b).iter().all(|k| !k0.contains(k))
                && differing(c, a1, b).iter().all(|k| !k1.contains(k)))
        },
    )
    .unwrap();
    let (n0, n1) = (keys(&c, a0).len(), keys(&c, a1).len());
    eprintln!(
        "a#0 views {n0} keys, a#1 {n1}, b {} (all)",
        keys(&c, b).len()
    );

    // a#1 stops: its partitions move to a#0, whose view then covers every key.
    let started = Instant::now();
    c.processors[a1].stop().unwrap();
    c.wait_until(
        Duration::from_secs(120),
        "a#0's view took a#1's partitions over",
        |c| Ok(keys(c, a0) == keys(c, b) && differing(c, a0, b).is_empty()),
    )
    .unwrap();
    eprintln!(
        "after a#1 stopped, a#0's view equals the full one on all {} keys in {:.1} s",
        keys(&c, b).len(),
        started.elapsed().as_secs_f64()
    );
    let errors = c.stop_all();
    assert!(errors.is_empty(), "{errors:?}");
}
