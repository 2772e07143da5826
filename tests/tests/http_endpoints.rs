//! The HTTP side on a real two-region run: `/ready` is 503 until the processor has joined
//! its group and restored; `/metrics` counts what was sent (accepted = distinct ids sent to
//! the region, deduplicated = the rest) and exports the latency histograms, lag and RocksDB
//! gauges; the reconciler's `/metrics` counts every reconciled event; an SSE client on
//! `/feed?prefix=` receives every reconciled change for its prefix in order and, after a
//! disconnect, resumes with `Last-Event-ID` without a gap or a repeat; `/state/{key}` shows
//! the region's view and the reconciled state.
use rf_harness::check::read_reconciled;
use rf_harness::cluster::Cluster;
use rf_harness::http_client::sample;
use rf_harness::workload::{generate, publish, Workload};
use rf_schemas::Codec;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    rf_harness::http_client::get(addr, path).unwrap()
}

/// A minimal SSE client: sends (id, data) of each `change` event until `stop` many arrived
/// (then drops the connection). Handles chunked transfer encoding.
fn sse(
    addr: SocketAddr,
    path: &str,
    last_id: Option<&str>,
    stop: usize,
) -> mpsc::Receiver<(String, String)> {
    let (tx, rx) = mpsc::channel();
    let mut s = TcpStream::connect(addr).unwrap();
    let last = last_id
        .map(|l| format!("Last-Event-ID: {l}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{last}\r\n"
    )
    .unwrap();
    std::thread::spawn(move || {
        let mut r = BufReader::new(s);
        let mut chunked = false;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line
                .to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
            {
                chunked = true;
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = Vec::new();
        let (mut id, mut sent) = (String::new(), 0);
        loop {
            let mut chunk = vec![0u8; 4096];
            if chunked {
                let mut size = String::new();
                if r.read_line(&mut size).unwrap_or(0) == 0 {
                    return;
                }
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                chunk.resize(n + 2, 0);
                if r.read_exact(&mut chunk).is_err() {
                    return;
                }
                chunk.truncate(n);
            } else {
                let n = r.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    return;
                }
                chunk.truncate(n);
            }
            body.extend_from_slice(&chunk);
            while let Some(i) = body.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = body.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                if let Some(v) = line
                    .strip_prefix("id: ")
                    .or_else(|| line.strip_prefix("id:"))
                {
                    id = v.to_owned();
                } else if let Some(d) = line
                    .strip_prefix("data: ")
                    .or_else(|| line.strip_prefix("data:"))
                {
                    if tx.send((id.clone(), d.to_owned())).is_err() {
                        return;
                    }
                    sent += 1;
                    if sent >= stop {
                        return; // drops the connection
                    }
                }
            }
        }
    });
    rx
}

#[test]
fn ready_metrics_state_and_a_resumable_feed() {
    let regions = ["a", "b"];
    let mut c = Cluster::start(&regions, 4).unwrap();
    c.start_processor("a", 0);
    let addr_of = |c: &Cluster, i: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(a) = *c.processors[i].stats.http_addr.lock().unwrap() {
                return a;
            }
            assert!(Instant::now() < deadline, "no HTTP address");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let a = addr_of(&c, 0);
    assert_eq!(get(a, "/health").0, 200);
    // Not ready before the group is joined and the partitions restored.
    assert_eq!(get(a, "/ready").0, 503);
    c.wait_until(Duration::from_secs(60), "processor a ready", |_| {
        Ok(get(a, "/ready").0 == 200)
    })
    .unwrap();
    c.start_processor("b", 0);
    c.start_reconciler();

    let (recs, ledger) = generate(
        &Workload {
            events: 3_000,
            seed: 61,
            malformed: 0,
            ..Default::default()
        },
        regions.len(),
    );
    // What region a must count: every record sent to it, each distinct id once.
    let to_a: Vec<_> = recs.iter().filter(|o| o.region == 0).collect();
    let distinct_a: HashSet<(String, String)> = to_a
        .iter()
        .filter_map(|o| Codec::event().decode(&o.payload).ok())
        .map(|e| (e.key, e.event_id))
        .collect();

    // A feed client before the load: it sees the changes live.
    const PREFIX: &str = "likes:1";
    let first = sse(a, &format!("/feed?prefix={PREFIX}"), None, 40);

    let bs = c.bootstraps();
    publish(&bs, &recs, |_| {}).unwrap();
    let want = ledger.distinct.len() as u64;
    c.wait_until(Duration::from_secs(120), "everything reconciled", |c| {
        Ok(c.reconciled_so_far() >= want
            && c.processors[0].stats.view.lock().reconciled_seen >= want)
    })
    .unwrap();

    // /metrics of processor a.
    let (st, m) = get(a, "/metrics");
    assert_eq!(st, 200);
    let s = |name: &str| sample(&m, &format!("{name}{{region=\"a\"}}"));
    assert_eq!(
        s("rf_events_consumed_total"),
        Some(to_a.len() as f64),
        "{m}"
    );
    assert_eq!(s("rf_events_accepted_total"), Some(distinct_a.len() as f64));
    assert_eq!(
        s("rf_events_deduplicated_total"),
        Some((to_a.len() - distinct_a.len()) as f64)
    );
    assert_eq!(
        s("rf_event_to_history_seconds_count"),
        Some(distinct_a.len() as f64)
    );
    assert!(s("rf_transaction_commit_seconds_count").unwrap() > 0.0);
    assert!(s("rf_restore_seconds_count").unwrap() >= 1.0);
    assert!(s("rf_rocksdb_live_sst_bytes").is_some());
    assert_eq!(s("rf_ready"), Some(1.0));
    assert!(
        m.contains("rf_consumer_lag{partition=\"0\",region=\"a\"}"),
        "{m}"
    );
    // The reconciler's.
    let r = c.reconciler_http().unwrap();
    let (_, rm) = get(r, "/metrics");
    assert_eq!(sample(&rm, "rf_reconciled_events_total"), Some(want as f64));
    assert_eq!(
        sample(&rm, "rf_reconcile_latency_seconds_count"),
        Some(want as f64)
    );
    assert!(
        sample(&rm, "rf_watermark_lag_ms{region=\"a\"}").is_some(),
        "{rm}"
    );
    assert_eq!(get(r, "/ready").0, 200);
    // Every series the compose dashboard and alert rules query is exported by a binary.
    let exported = |name: &str| {
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        [&m, &rm]
            .iter()
            .any(|t| t.contains(&format!("# TYPE {base} ")))
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut queried = std::collections::BTreeSet::new();
    for f in [
        "compose/prometheus/alerts.yml",
        "compose/grafana/dashboards/regionflow.json",
    ] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("rf_") {
            let tail = &rest[i..];
            let end = tail
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .unwrap_or(tail.len());
            // Only metric names: not preceded by an identifier character.
            let before = rest[..i].chars().last();
            if !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == '_') {
                queried.insert(tail[..end].to_owned());
            }
            rest = &tail[end..];
        }
    }
    let missing: Vec<_> = queried.iter().filter(|n| !exported(n)).collect();
    assert!(
        queried.len() >= 10,
        "few series found in the compose files: {queried:?}"
    );
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
    eprintln!(
        "{} series queried by the dashboard and alerts, all exported",
        queried.len()
    );

    // /state/{key}: the view and the reconciled state agree once all is reconciled.
    let (st, body) = get(a, "/state/likes:1");
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["view"], v["reconciled"], "{body}");
    assert_eq!(get(a, "/state/no-such-key").0, 404);

    // The feed: every reconciled change for the prefix, in order, across a reconnect.
    let expected = read_reconciled(&c)
        .unwrap()
        .iter()
        .filter(|(_, r)| r.event.key.starts_with(PREFIX))
        .count();
    let got_first: Vec<(String, String)> = first.iter().collect();
    assert_eq!(
        got_first.len(),
        40,
        "the live client got fewer changes than it waited for"
    );
    let last = got_first.last().unwrap().0.clone();
    let rest = sse(
        a,
        &format!("/feed?prefix={PREFIX}"),
        Some(&last),
        usize::MAX,
    );
    let mut got: Vec<String> = got_first.iter().map(|(id, _)| id.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < expected && Instant::now() < deadline {
        if let Ok((id, _)) = rest.recv_timeout(Duration::from_millis(500)) {
            got.push(id);
        }
    }
    // Ids are `<partition>-<offset>`: strictly increasing per partition means in order and
    // no repeat; with the count equal, no gap.
    let key = |id: &String| {
        let (p, o) = id.split_once('-').unwrap();
        (p.parse::<i32>().unwrap(), o.parse::<i64>().unwrap())
    };
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for id in &got {
        let (p, o) = key(id);
        by_partition.entry(p).or_default().push(o);
    }
    for (p, offs) in &by_partition {
        assert!(
            offs.windows(2).all(|w| w[0] < w[1]),
            "partition {p} out of order or repeated: {offs:?}"
        );
    }
    assert_eq!(got.len(), expected, "a gap in the feed");
    eprintln!(
        "feed: {} changes for {PREFIX:?} (40 live, then {} after resuming from {last})",
        got.len(),
        got.len() - 40
    );
}
