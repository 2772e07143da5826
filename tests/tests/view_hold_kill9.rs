//! Issue 15, items 2 and 3, through kill -9: own accepted events the regional view holds in
//! memory only (`view_pending_hold_ms`, so that events which settle soon never cost the
//! store a put, a delete and a seek) are not lost when the processor dies. Region `a`'s
//! processor runs as its own process with a hold longer than the test, and no reconciler
//! runs at first: every event it accepts stays pending, held in memory. After kill -9 and a
//! restart on the same store, the restore re-reads them from `history` (from the store's
//! `pending_from`), so the view holds every one pending again; once a reconciler runs, all
//! of them settle and the view equals the reconciled state, key by key.
use rf_harness::broker::free_port;
use rf_harness::check::reconciled_states;
use rf_harness::cluster::Cluster;
use rf_harness::http_client::{get, sample};
use rf_harness::process::ChildProcessor;
use rf_harness::workload::{generate, publish, Workload};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    get(addr, "/metrics")
        .ok()
        .and_then(|(_, body)| sample(&body, series))
}

/// Wait until `f` holds, or fail after `secs` with `what` and the last value seen.
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> (bool, String)) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (ok, seen) = f();
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {seen}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn events_held_in_memory_are_pending_again_after_kill9() {
    let mut c = Cluster::start(&["a", "b"], 4).unwrap();
    let mut cfg = c.processor_config("a", 0);
    cfg.http_addr = format!("127.0.0.1:{}", free_port());
    let http: SocketAddr = cfg.http_addr.parse().unwrap();
    let toml = cfg.state_dir.with_extension("toml");
    std::fs::write(
        &toml,
        "view_pending_hold_ms = 600000\nview_pending_hold_max_events = 100000\n",
    )
    .unwrap();
    let env = [("RF_CONFIG", toml.to_str().unwrap())];
    let mut a = ChildProcessor::spawn_restored(&cfg, &env, Duration::from_secs(120)).unwrap();
    c.start_processor("b", 0);
    let bs = c.bootstraps();
    let workload = Workload {
        events: 5_000,
        seed: 97,
        malformed: 0,
        all_aggregates: true,
        ..Default::default()
    };
    let (events, ledger) = generate(&workload, 1);
    publish(&bs[..1], &events, |_| {}).unwrap();
    // Every accepted event is pending (nothing is reconciled) and held in memory; refused
    // inventory ops are not pending, so the count is read back, not predicted.
    let pending = || metric(http, "rf_view_pending_events{region=\"a\"}").unwrap_or(-1.0) as i64;
    let held = || metric(http, "rf_view_held_events{region=\"a\"}").unwrap_or(-1.0) as i64;
    let mut last = (-1, Instant::now());
    wait_for(
        120,
        "region a's pending events did not settle at a count",
        || {
            let p = pending();
            if p != last.0 {
                last = (p, Instant::now());
            }
            let steady = p > 0 && last.1.elapsed() > Duration::from_secs(3);
            (steady, format!("{p} pending"))
        },
    );
    let before = pending();
    assert!(
        before >= ledger.distinct.len() as i64 * 8 / 10,
        "{before} pending of {} distinct events",
        ledger.distinct.len()
    );
    assert_eq!(held(), before, "every pending event is held in memory only");
    eprintln!("{before} own events pending, all held in memory; kill -9");

    a.kill9();
    let restarted = Instant::now();
    let mut a = ChildProcessor::spawn_restored(&cfg, &env, Duration::from_secs(120)).unwrap();
    wait_for(60, "the restarted view lost held events", || {
        let p = pending();
        (
            p == before,
            format!("{p} pending, {before} before the kill"),
        )
    });
    let reread: i64 = a
        .logged_numbers("restored partition from history", "reread_for_view")
        .iter()
        .sum();
    assert!(
        reread >= before,
        "the restore re-read {reread} own events for the view, {before} were held"
    );
    eprintln!(
        "{:.1} s after the restart: {before} pending again, {reread} own events re-read from history",
        restarted.elapsed().as_secs_f64()
    );

    // Now reconcile: every pending event settles, and the view is the reconciled state.
    c.start_reconciler();
    let want = ledger.distinct.len() as u64;
    c.wait_until(Duration::from_secs(120), "reconciled", |c| {
        Ok(c.reconciled_so_far() >= want)
    })
    .unwrap();
    let want_state: HashMap<String, serde_json::Value> = reconciled_states(&c)
        .unwrap()
        .into_iter()
        .map(|(k, s)| (k, serde_json::from_str(&s.to_json()).unwrap()))
        .collect();
    wait_for(
        120,
        "region a's view differs from the reconciled state",
        || {
            let p = pending();
            if p != 0 {
                return (false, format!("{p} pending"));
            }
            let differ: Vec<&String> = want_state
                .iter()
                .filter(|(k, s)| {
                    let got = get(http, &format!("/state/{k}"))
                        .ok()
                        .and_then(|(_, body)| {
                            serde_json::from_str::<serde_json::Value>(&body).ok()
                        });
                    got.as_ref().and_then(|g| g.get("view")) != Some(*s)
                })
                .map(|(k, _)| k)
                .take(5)
                .collect();
            (differ.is_empty(), format!("keys {differ:?} differ"))
        },
    );
    eprintln!(
        "nothing pending; the view equals the reconciled state of {} keys",
        want_state.len()
    );
    a.stop_gracefully().unwrap();
    assert!(c.stop_all().is_empty());
}
