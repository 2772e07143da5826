//! A cluster that is not there at start is waited for, not fatal (as a compose stack starts
//! in any order): the processor and the reconciler are started before their brokers exist;
//! they stay up, not ready, saying every few seconds which bootstrap servers they wait for;
//! once the brokers start, they process by themselves.
use rf_harness::broker::{free_port, Broker};
use rf_harness::cluster::kafka_extras;
use rf_harness::http_client::{get, sample};
use rf_harness::process::ChildProcess;
use rf_harness::workload::{outgoing, publish};
use rf_schemas::Op;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const WAITING: &str = "waiting for the cluster";

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<bool, String>) {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => panic!("{what}: {e}"),
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ready(addr: SocketAddr) -> bool {
    get(addr, "/ready").is_ok_and(|(s, _)| s == 200)
}

fn metric(addr: SocketAddr, series: &str) -> f64 {
    get(addr, "/metrics")
        .ok()
        .and_then(|(_, m)| sample(&m, series))
        .unwrap_or(0.0)
}

#[test]
fn services_wait_for_clusters_that_start_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let (region_port, home_port) = (free_port(), free_port());
    let region_bootstrap = format!("127.0.0.1:{region_port}");
    let home_bootstrap = format!("127.0.0.1:{home_port}");
    let p_http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let r_http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();

    let mut pcfg = rf_processor::Config {
        region: "a".into(),
        bootstrap_servers: region_bootstrap.clone(),
        home_bootstrap_servers: home_bootstrap.clone(),
        state_dir: dir.path().join("a-0"),
        http_addr: p_http.to_string(),
        ..Default::default()
    };
    pcfg.kafka.extend(kafka_extras());
    let mut rcfg = rf_reconciler::Config {
        instance: "r0".into(),
        home_bootstrap_servers: home_bootstrap.clone(),
        regions: vec![rf_reconciler::RegionSource {
            name: "a".into(),
            bootstrap_servers: region_bootstrap.clone(),
        }],
        state_dir: dir.path().join("reconciler"),
        http_addr: r_http.to_string(),
        ..Default::default()
    };
    rcfg.kafka.extend(kafka_extras());
    let mut processor = ChildProcess::spawn(&pcfg, &[]).unwrap();
    let mut reconciler =
        ChildProcess::spawn_reconciler(&rcfg, &dir.path().join("reconciler.log"), None).unwrap();

    // Both wait, say so twice (every few seconds) naming their servers, and stay up.
    for (name, child, servers) in [
        ("processor", &mut processor, &region_bootstrap),
        ("reconciler", &mut reconciler, &home_bootstrap),
    ] {
        wait_for(
            &format!("{name} says it waits twice"),
            Duration::from_secs(60),
            || {
                if let Some(st) = child.exited() {
                    return Err(format!("exited ({st}):\n{}", child.log_tail(20)));
                }
                Ok(child.log_text().matches(WAITING).count() >= 2)
            },
        );
        let log = child.log_text();
        let line = log.lines().find(|l| l.contains(WAITING)).unwrap();
        assert!(
            line.contains(servers.as_str()),
            "{name}'s log does not name {servers}: {line}"
        );
    }
    assert!(!ready(p_http), "the processor is ready without its cluster");
    assert!(
        !ready(r_http),
        "the reconciler is ready without its home cluster"
    );

    // The brokers appear; everything starts by itself.
    let region = Broker::start_on_port("a", region_port).unwrap();
    region
        .create_topics(&["events", "events.dlq", "history"], 4)
        .unwrap();
    let home = Broker::start_on_port("home", home_port).unwrap();
    home.create_topics(&["reconciled", "conflicts"], 4).unwrap();
    let recs: Vec<_> = (0..50)
        .map(|i| {
            outgoing(
                0,
                &format!("e{i}"),
                &format!("likes:{}", i % 5),
                Op::CounterAdd { delta: 1 },
            )
        })
        .collect();
    publish(&[region.bootstrap()], &recs, |_| {}).unwrap();
    wait_for(
        "the processor accepts the events",
        Duration::from_secs(120),
        || {
            if let Some(st) = processor.exited() {
                return Err(format!(
                    "processor exited ({st}):\n{}",
                    processor.log_tail(20)
                ));
            }
            Ok(metric(p_http, "rf_events_accepted_total{region=\"a\"}") >= 50.0)
        },
    );
    wait_for(
        "the reconciler reconciles them",
        Duration::from_secs(120),
        || {
            if let Some(st) = reconciler.exited() {
                return Err(format!(
                    "reconciler exited ({st}):\n{}",
                    reconciler.log_tail(20)
                ));
            }
            Ok(metric(r_http, "rf_reconciled_events_total") >= 50.0)
        },
    );
    assert!(ready(p_http) && ready(r_http));
    processor.stop_gracefully().unwrap();
    reconciler.stop_gracefully().unwrap();
    drop((region, home));
}
