//! The processor against the limit and a peer, on one embedded broker, one after another
//! on the same input: (a) a raw rdkafka consume→produce passthrough with transactions,
//! (b) the regional processor (its binary, as deployed), (c) a Quix Streams app doing
//! dedup + count with RocksDB state and exactly-once. Each drains the same backlog
//! (throughput), then gets a paced load (end-to-end latency: client send to readable by a
//! read_committed consumer of its output). The processor is then killed with SIGKILL and
//! restarted on its store (seconds until /ready), and its peak RSS is read.

use super::mix;
use super::report::{thousands, Report};
use super::Sizes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rf_harness::broker::{free_port, Broker};
use rf_harness::process::ChildProcess;
use rf_harness::workload::{Outgoing, Publisher};
use rf_runtime::kafka::{commit_drained, read_committed, send, transactional_producer};
use rf_schemas::Codec;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECTION: &str = "Regional processor (exactly-once, 100 ms commit interval)";
const RESTART: &str = "Restart and memory at 1M keys";
const PARTITIONS: i32 = 4;
const COMMIT_MS: u64 = 100;
const INPUT: &str = "events";
/// The processor's default `fetch.wait.max.ms`, given to the passthrough and Quix too.
const FETCH_WAIT_MS: &str = "10";

/// What one system did.
struct Measured {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    latency_n: usize,
    latency_note: String,
}

/// A group's committed offsets, summed over the input partitions.
struct GroupWatch {
    consumer: BaseConsumer,
}

impl GroupWatch {
    fn new(bootstrap: &str, group: &str) -> Result<Self, String> {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| e.to_string())?;
        Ok(GroupWatch { consumer })
    }

    fn committed(&self) -> Result<i64, String> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(INPUT, p);
        }
        let got = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        Ok(got
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum())
    }
}

/// Records in the input: the end offsets the publisher's deliveries reached.
fn input_end(ends: &rf_harness::workload::EndOffsets) -> i64 {
    ends.values().sum()
}

/// Drain rate of the backlog: from the last moment nothing was committed to the moment
/// everything is, so group joining and start-up are not counted (they are, for the
/// processor, in the restart row).
fn drain_rate(
    watch: &GroupWatch,
    total: i64,
    what: &str,
    alive: &mut dyn FnMut() -> Result<(), String>,
) -> Result<f64, String> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    // The last moment nothing was committed yet: the clock starts there.
    let mut last_zero = Instant::now();
    let mut shown = Instant::now();
    loop {
        let done = watch.committed()?;
        let now = Instant::now();
        if done == 0 {
            last_zero = now;
        }
        if done >= total {
            let secs = now.duration_since(last_zero).as_secs_f64().max(0.001);
            return Ok(total as f64 / secs);
        }
        if shown.elapsed() >= Duration::from_secs(5) {
            println!(
                "   {what}: {}/{} committed",
                thousands(done as f64),
                thousands(total as f64)
            );
            shown = Instant::now();
        }
        alive()?;
        if now > deadline {
            return Err(format!("{what} did not drain the input within an hour"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The paced load's figures, or NaN (reported as such) if they could not be taken.
fn measure_latency(
    bootstrap: &str,
    tail: Tail,
    s: &Sizes,
    seed: u64,
    ends: &mut rf_harness::workload::EndOffsets,
    watch: &GroupWatch,
) -> (f64, f64, usize, String) {
    let before = watch.committed().unwrap_or(0);
    let result = latency(bootstrap, tail, s, seed);
    // How many of the paced records the system consumed (committed) meanwhile: tells a
    // system that did not process them from output a reader could not see.
    let consumed = watch.committed().unwrap_or(0) - before;
    let note = format!(
        "{} of {} paced input records committed by the system",
        thousands(consumed as f64),
        thousands((s.latency_rate * s.latency_secs as usize + 1) as f64)
    );
    match result {
        Ok((p50, p99, n, more)) => {
            for (k, v) in more {
                let e = ends.entry(k).or_insert(0);
                *e = (*e).max(v);
            }
            (p50, p99, n, note)
        }
        Err(e) => {
            println!("   latency not measured: {e}; {note}");
            (f64::NAN, f64::NAN, 0, format!("not measured: {e}; {note}"))
        }
    }
}

/// A read_committed reader of one system's output from its first record, running
/// alongside the system, that times the arrival of the paced load's events. It starts
/// before the system so that it is at the end when the paced load begins: Tansu answers
/// ListOffsets wrongly (DESIGN.md, broker facts), so "start at the end" is not available,
/// and reading a million records from the start afterwards took Tansu minutes.
struct Tail {
    stop: Arc<AtomicBool>,
    seen: Arc<std::sync::Mutex<(Instant, Vec<f64>)>>,
    handle: std::thread::JoinHandle<Result<(), String>>,
}

impl Tail {
    fn start(bootstrap: &str, output: &str, seed: u64) -> Result<Tail, String> {
        let group = format!("bench-latency-{seed}");
        let consumer: BaseConsumer = read_committed(bootstrap, &Default::default(), &group)
            .set("fetch.wait.max.ms", "5")
            .create()
            .map_err(|e| e.to_string())?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(output, p, Offset::Beginning)
                .map_err(|e| e.to_string())?;
        }
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(std::sync::Mutex::new((Instant::now(), Vec::new())));
        let (st, sn) = (stop.clone(), seen.clone());
        let prefix = format!("b{seed}-");
        let handle = std::thread::spawn(move || {
            let codec = Codec::event();
            while !st.load(Ordering::Relaxed) {
                let Some(m) = consumer.poll(Duration::from_millis(5)) else {
                    continue;
                };
                let m = m.map_err(|e| e.to_string())?;
                let now = rf_core::Clock::now_ms(&rf_core::SystemClock);
                let sample = m
                    .payload()
                    .and_then(|b| codec.decode(b).ok())
                    .filter(|ev| ev.event_id.starts_with(&prefix))
                    .and_then(|ev| ev.client_time_ms)
                    .map(|sent| (now - sent) as f64);
                let heartbeat = m
                    .payload()
                    .and_then(|b| codec.decode(b).ok())
                    .is_some_and(|ev| matches!(ev.op, rf_schemas::Op::Heartbeat));
                let mut g = sn.lock().expect("tail lock");
                if !heartbeat {
                    g.0 = Instant::now(); // heartbeats never stop: they do not count
                }
                g.1.extend(sample);
            }
            Ok(())
        });
        Ok(Tail { stop, seen, handle })
    }

    /// Wait until no record has arrived for `idle` (the reader is at the end).
    fn wait_idle(&self, idle: Duration, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while self.seen.lock().expect("tail lock").0.elapsed() < idle {
            if Instant::now() > deadline || self.handle.is_finished() {
                return Err("the output reader did not reach the end".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn samples(&self) -> usize {
        self.seen.lock().expect("tail lock").1.len()
    }

    fn finish(self) -> Result<Vec<f64>, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| "output reader panicked".to_string())??;
        let mut g = self.seen.lock().expect("tail lock");
        Ok(std::mem::take(&mut g.1))
    }
}

/// Paced load: `rate` new events a second for `secs`, each stamped with its send time;
/// `tail` times each one's arrival in the system's output. Returns p50, p99 (ms), the
/// sample count and the input's end offsets after the load.
fn latency(
    bootstrap: &str,
    tail: Tail,
    s: &Sizes,
    seed: u64,
) -> Result<(f64, f64, usize, rf_harness::workload::EndOffsets), String> {
    tail.wait_idle(Duration::from_millis(500), Duration::from_secs(300))?;
    let total = s.latency_rate * s.latency_secs as usize;
    let bs = bootstrap.to_owned();
    let (keys, rate) = (s.keys, s.latency_rate);
    let sender = std::thread::spawn(
        move || -> Result<rf_harness::workload::EndOffsets, String> {
            use rand::SeedableRng;
            let p = Publisher::new(&[bs])?;
            // Connected and with a producer id before the clock starts: a cold producer would
            // put its own start-up on the first samples.
            let codec = Codec::event();
            let warm = rf_schemas::Event::new(
                format!("warmup-{seed}"),
                "likes:0",
                rf_schemas::Op::CounterAdd { delta: 1 },
            );
            p.send(
                &[Outgoing {
                    region: 0,
                    key: warm.key.clone(),
                    payload: codec.encode(&warm).expect("encode"),
                }],
                |_| {},
            );
            p.flush()?;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut plain = keys;
            let per_tick = (rate / 100).max(1);
            let started = Instant::now();
            let mut i = 0;
            while i < total {
                let batch: Vec<Outgoing> = (i..(i + per_tick).min(total))
                    .map(|j| {
                        // Past the first `keys`: keys drawn at random, all already known.
                        let mut ev = mix::event(j, keys, &mut plain, &mut rng, seed);
                        ev.client_time_ms = Some(rf_core::Clock::now_ms(&rf_core::SystemClock));
                        Outgoing {
                            region: 0,
                            key: ev.key.clone(),
                            payload: codec.encode(&ev).expect("encode"),
                        }
                    })
                    .collect();
                i += batch.len();
                p.send(&batch, |_| {});
                let due = started + Duration::from_millis(10 * (i / per_tick) as u64);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            p.flush()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(s.latency_secs + 30);
    while tail.samples() < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let input_end = sender
        .join()
        .map_err(|_| "latency sender panicked".to_string())??;
    let mut lat = tail.finish()?;
    if lat.is_empty() {
        return Err("no latency sample arrived".into());
    }
    lat.sort_by(f64::total_cmp);
    let q = |f: f64| lat[((lat.len() as f64 * f) as usize).min(lat.len() - 1)];
    Ok((q(0.50), q(0.99), lat.len(), input_end))
}

/// (a) The limit: consume → produce the same bytes, in transactions with the offsets,
/// with the processor's own producer settings and commit interval.
fn passthrough(
    bootstrap: &str,
    output: &str,
    group: &str,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let consumer: BaseConsumer = read_committed(bootstrap, &Default::default(), group)
        .set("fetch.wait.max.ms", FETCH_WAIT_MS)
        .create()
        .map_err(|e| e.to_string())?;
    consumer.subscribe(&[INPUT]).map_err(|e| e.to_string())?;
    let producer = transactional_producer(bootstrap, &Default::default(), "bench-passthrough")
        .map_err(|e| e.to_string())?;
    let mut offsets = std::collections::BTreeMap::new();
    let mut in_txn = false;
    let mut started = Instant::now();
    let every = Duration::from_millis(COMMIT_MS);
    while !stop.load(Ordering::Relaxed) {
        if let Some(m) = consumer.poll(Duration::from_millis(10)) {
            let m = m.map_err(|e| e.to_string())?;
            if !in_txn {
                producer.begin_transaction().map_err(|e| e.to_string())?;
                in_txn = true;
                started = Instant::now();
            }
            let rec = BaseRecord::to(output)
                .partition(m.partition())
                .key(m.key().unwrap_or(&[]))
                .payload(m.payload().unwrap_or(&[]));
            send(&producer, rec).map_err(|e| e.to_string())?;
            offsets.insert(m.partition(), m.offset() + 1);
        }
        if in_txn && started.elapsed() >= every {
            let mut tpl = TopicPartitionList::new();
            for (p, o) in &offsets {
                tpl.add_partition_offset(INPUT, *p, Offset::Offset(*o))
                    .map_err(|e| e.to_string())?;
            }
            let meta = consumer.group_metadata().ok_or("no group metadata")?;
            producer
                .send_offsets_to_transaction(&tpl, &meta, Duration::from_secs(30))
                .map_err(|e| e.to_string())?;
            commit_drained(&producer, Duration::from_secs(30)).map_err(|e| e.to_string())?;
            in_txn = false;
        }
    }
    Ok(())
}

/// The floor under any restart: how long the broker takes to give a bare consumer, with
/// the processor's session timeout and membership, its partitions back after its previous
/// incarnation vanished without leaving (as after kill -9).
fn group_join_secs(bootstrap: &str) -> Result<f64, String> {
    let defaults = rf_processor::Config::default();
    let join = || -> Result<f64, String> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", bootstrap)
            .set("group.id", "bench-join-baseline")
            .set(
                "session.timeout.ms",
                defaults.session_timeout_ms.to_string(),
            );
        if defaults.static_membership {
            cfg.set("group.instance.id", "bench-join-baseline");
        }
        let c: BaseConsumer = cfg.create().map_err(|e| e.to_string())?;
        let t = Instant::now();
        c.subscribe(&[INPUT]).map_err(|e| e.to_string())?;
        while c.assignment().map(|a| a.count()).unwrap_or(0) == 0 {
            if t.elapsed() > Duration::from_secs(60) {
                return Err("a bare consumer got no assignment within 60 s".into());
            }
            let _ = c.poll(Duration::from_millis(10));
        }
        // Dropped: a static member closes without a LeaveGroup, so the group sees what it
        // sees after kill -9 (a dynamic one would leave; the processor's default is static).
        Ok(t.elapsed().as_secs_f64())
    };
    join()?;
    join()
}

fn ready(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    matches!(rf_harness::http_client::get(addr, "/ready"), Ok((200, _)))
}

pub fn run(s: &Sizes, r: &mut Report) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    println!("== processor vs passthrough vs Quix Streams on one Tansu");
    let python = super::quix::ensure_venv()?;
    let broker = Broker::start("bench")?;
    let bs = broker.bootstrap();
    // Quix reads retention settings back from every topic it uses: set them explicitly.
    broker.create_topics_with(
        &[
            INPUT,
            "history",
            "events.dlq",
            "passthrough.out",
            "quix.out",
        ],
        PARTITIONS,
        &[("retention.ms", "-1"), ("retention.bytes", "-1")],
    )?;
    println!(
        "   generating {} events over {} keys (+10 % duplicates)",
        thousands(s.events as f64),
        thousands(s.keys as f64)
    );
    let recs = mix::records(s.events, s.keys, 1);
    let t = Instant::now();
    let p = Publisher::new(std::slice::from_ref(&bs))?;
    p.send(&recs, |n| {
        if n % 200_000 == 0 {
            println!("   published {}", thousands(n as f64));
        }
    });
    let mut ends = p.flush()?;
    let published = input_end(&ends);
    let mut total = published;
    drop(p);
    println!(
        "   {} records published in {:.1} s",
        thousands(published as f64),
        t.elapsed().as_secs_f64()
    );
    drop(recs);

    // (a) passthrough, in this process.
    println!("-- (a) raw rdkafka transactional passthrough");
    let tail = Tail::start(&bs, "passthrough.out", 101)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (b2, st2) = (bs.clone(), stop.clone());
    let th =
        std::thread::spawn(move || passthrough(&b2, "passthrough.out", "bench-passthrough", st2));
    let watch = GroupWatch::new(&bs, "bench-passthrough")?;
    let rate = drain_rate(&watch, total, "passthrough", &mut || {
        if th.is_finished() {
            return Err("passthrough stopped".into());
        }
        Ok(())
    })?;
    let (p50, p99, n, lat_note) = measure_latency(&bs, tail, s, 101, &mut ends, &watch);
    total = input_end(&ends);
    stop.store(true, Ordering::Relaxed);
    th.join()
        .map_err(|_| "passthrough panicked".to_string())??;
    let limit = Measured {
        rate,
        p50_ms: p50,
        p99_ms: p99,
        latency_n: n,
        latency_note: lat_note,
    };

    // (b) the regional processor, as a child process.
    println!("-- (b) regionflow processor");
    let port = free_port();
    let cfg = rf_processor::Config {
        region: "bench".into(),
        bootstrap_servers: bs.clone(),
        state_dir: dir.path().join("processor"),
        http_addr: format!("127.0.0.1:{port}"),
        commit_interval_ms: COMMIT_MS,
        ..Default::default()
    };
    let tail = Tail::start(&bs, "history", 102)?;
    let mut proc_ = ChildProcess::spawn(&cfg, &[])?;
    // RF_BENCH_PERF=<file>: sample the processor's stacks with perf while it drains.
    let perf = match std::env::var("RF_BENCH_PERF") {
        Ok(out) => Some(
            std::process::Command::new("perf")
                .args(["record", "-F", "499", "-g", "-o", &out, "-p"])
                .arg(proc_.pid().to_string())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("perf: {e}"))?,
        ),
        Err(_) => None,
    };
    let watch = GroupWatch::new(&bs, &cfg.group_id())?;
    let rate = drain_rate(&watch, total, "processor", &mut || match proc_.exited() {
        Some(st) => Err(format!("processor exited ({st}):\n{}", proc_.log_tail(20))),
        None => Ok(()),
    })?;
    if let Some(mut perf) = perf {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }
    let hwm_drained = rf_harness::process::status_kb(proc_.pid(), "VmHWM:").unwrap_or(0);
    let (p50, p99, n, lat_note) = measure_latency(&bs, tail, s, 102, &mut ends, &watch);
    total = input_end(&ends);
    let ours = Measured {
        rate,
        p50_ms: p50,
        p99_ms: p99,
        latency_n: n,
        latency_note: lat_note,
    };
    let hwm = rf_harness::process::status_kb(proc_.pid(), "VmHWM:").unwrap_or(0);
    let rss = rf_harness::process::status_kb(proc_.pid(), "VmRSS:").unwrap_or(0);
    let join = group_join_secs(&bs)?;
    println!("   kill -9 and restart on the local store");
    proc_.kill9();
    let mut proc_ = ChildProcess::spawn(&cfg, &[])?;
    let t = Instant::now();
    let deadline = t + Duration::from_secs(300);
    while !ready(port) {
        if let Some(st) = proc_.exited() {
            return Err(format!(
                "restarted processor exited ({st}):\n{}",
                proc_.log_tail(20)
            ));
        }
        if Instant::now() > deadline {
            return Err("restarted processor not ready within 300 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let restart = t.elapsed().as_secs_f64();
    if std::env::var("RF_BENCH_DEBUG").is_ok() {
        println!("{}", proc_.log_tail(60));
    }
    let _ = proc_.terminate(Duration::from_secs(30));

    // (c) Quix Streams.
    println!("-- (c) Quix Streams {}", super::quix::PACKAGES[0]);
    let tail = Tail::start(&bs, "quix.out", 103)?;
    let mut quix = super::quix::spawn(
        &python,
        &bs,
        INPUT,
        "quix.out",
        "bench-quix",
        &dir.path().join("quix"),
        COMMIT_MS,
    )?;
    let watch = GroupWatch::new(&bs, "bench-quix")?;
    let rate = drain_rate(&watch, total, "quix", &mut || match quix.exited() {
        Some(st) => Err(format!("quix app exited ({st}):\n{}", quix.log_tail(20))),
        None => Ok(()),
    })?;
    let (p50, p99, n, lat_note) = measure_latency(&bs, tail, s, 103, &mut ends, &watch);
    quix.kill9();
    let peer = Measured {
        rate,
        p50_ms: p50,
        p99_ms: p99,
        latency_n: n,
        latency_note: lat_note,
    };

    report(s, r, &limit, &ours, &peer);
    let mb = |kb: u64| kb as f64 / 1024.0;
    r.add_target(
        RESTART,
        "restart after kill -9 until /ready",
        format!("{restart:.2} s"),
        format!(
            "{} keys in the local store; process start to HTTP 200. The broker's group join is most of it: a bare consumer rejoining after its predecessor vanished took {join:.2} s",
            thousands(s.keys as f64)
        ),
        "≤ 2 s",
        restart <= 2.0,
    );
    r.add_target(
        RESTART,
        "peak RSS of the processor (VmHWM)",
        format!("{:.0} MB", mb(hwm)),
        format!(
            "{:.0} MB after draining the backlog, {:.0} MB resident at the end",
            mb(hwm_drained),
            mb(rss)
        ),
        "≤ 300 MB",
        mb(hwm) <= 300.0,
    );
    r.context.push(format!(
        "processor workload: {} records ({} distinct events, 10 % duplicate re-sends) over {} keys + {} contended SKUs: 54 % counters, 36 % registers, 10 % inventory; {PARTITIONS} partitions",
        thousands(published as f64),
        thousands(s.events as f64),
        thousands(s.keys as f64),
        mix::SKUS
    ));
    Ok(())
}

fn report(s: &Sizes, r: &mut Report, limit: &Measured, ours: &Measured, peer: &Measured) {
    let ratio_limit = ours.rate / limit.rate;
    let ratio_peer = ours.rate / peer.rate;
    r.add(
        SECTION,
        "(a) passthrough throughput",
        format!("{} ev/s", thousands(limit.rate)),
        "raw rdkafka consume→produce, transactional: the limit",
    );
    r.add_target(
        SECTION,
        "(b) regionflow throughput",
        format!("{} ev/s", thousands(ours.rate)),
        format!("{ratio_limit:.2}× passthrough"),
        "≥ 0.8× passthrough",
        ratio_limit >= 0.8,
    );
    r.add(
        SECTION,
        "(c) Quix Streams throughput",
        format!("{} ev/s", thousands(peer.rate)),
        "dedup + count, RocksDB state, exactly-once",
    );
    r.add_target(
        SECTION,
        "regionflow / Quix Streams",
        format!("{ratio_peer:.1}×"),
        "same input, same broker, same run",
        "≥ 10×",
        ratio_peer >= 10.0,
    );
    let lat = |m: &Measured| {
        if m.p50_ms.is_nan() {
            "not measured".to_string()
        } else {
            format!("{:.0} / {:.0} ms", m.p50_ms, m.p99_ms)
        }
    };
    let at = format!(
        "{} ev/s paced for {} s",
        thousands(s.latency_rate as f64),
        s.latency_secs
    );
    r.add(
        SECTION,
        "(a) passthrough latency p50 / p99",
        lat(limit),
        format!("{} samples, {at}; {}", limit.latency_n, limit.latency_note),
    );
    r.add_target(
        SECTION,
        "(b) regionflow latency p50 / p99",
        lat(ours),
        format!("{} samples, {at}; {}", ours.latency_n, ours.latency_note),
        "p99 ≤ 150 ms",
        ours.p99_ms <= 150.0,
    );
    r.add(
        SECTION,
        "(c) Quix Streams latency p50 / p99",
        lat(peer),
        format!("{} samples, {at}; {}", peer.latency_n, peer.latency_note),
    );
}

/// How a processor runs in [`compare_builds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No home cluster: no view, no pending events.
    NoView,
    /// A home cluster (the same broker) and no reconciler: every own event stays pending,
    /// the view's worst case (as during a long cut of the home cluster).
    ViewNothingReconciled,
    /// A home cluster and a reconciler child process: own events settle as `reconciled`
    /// shows them, the view's steady state.
    ViewReconciled,
}

impl Mode {
    pub const ALL: [Mode; 3] = [
        Mode::NoView,
        Mode::ViewNothingReconciled,
        Mode::ViewReconciled,
    ];

    fn label(self) -> &'static str {
        match self {
            Mode::NoView => "without the view",
            Mode::ViewNothingReconciled => "with the view, nothing reconciled",
            Mode::ViewReconciled => "with the view and a reconciler",
        }
    }
}

/// One processor build's drain in [`compare_builds`].
#[derive(Debug, Clone)]
pub struct BuildRun {
    pub round: usize,
    /// The binary's path, as given.
    pub build: String,
    pub mode: Mode,
    pub rate: f64,
    /// Against the passthrough of the same round.
    pub ratio: f64,
}

/// Processor builds against each other and the passthrough on one input, in each of `rounds`
/// (passthrough, then each build in each [`Mode`]; every other round the builds in reverse
/// order), so a regression is measured in one run on one machine state. The input is
/// published once; every drain starts from its beginning with a fresh group, state and
/// output topics. `bench --only compare --builds A,B`.
pub fn compare_builds(
    s: &Sizes,
    builds: &[std::path::PathBuf],
    rounds: usize,
) -> Result<Vec<BuildRun>, String> {
    let distinct: std::collections::BTreeSet<_> = builds.iter().collect();
    if distinct.len() != builds.len() {
        return Err("--builds names one binary twice".into());
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    println!(
        "== processor builds against each other and the passthrough: {rounds} rounds, {} builds",
        builds.len()
    );
    let broker = Broker::start("compare")?;
    let bs = broker.bootstrap();
    let runs = rounds * builds.len() * Mode::ALL.len();
    let mut topics = vec![INPUT.to_string(), "passthrough.out".into()];
    for n in 0..runs {
        for t in ["history", "dlq", "reconciled", "conflicts"] {
            topics.push(format!("{t}-{n}"));
        }
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    broker.create_topics(&names, PARTITIONS)?;
    let recs = mix::records(s.events, s.keys, 1);
    let p = Publisher::new(std::slice::from_ref(&bs))?;
    p.send(&recs, |_| {});
    let total = input_end(&p.flush()?);
    drop((p, recs));
    println!("   {} records published", thousands(total as f64));
    let mut out = Vec::new();
    let mut n = 0;
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let (b2, st2) = (bs.clone(), stop.clone());
        let group = format!("compare-pass-{round}");
        let g2 = group.clone();
        let th = std::thread::spawn(move || passthrough(&b2, "passthrough.out", &g2, st2));
        let watch = GroupWatch::new(&bs, &group)?;
        let pass = drain_rate(&watch, total, "passthrough", &mut || {
            if th.is_finished() {
                return Err("passthrough stopped".into());
            }
            Ok(())
        })?;
        stop.store(true, Ordering::Relaxed);
        th.join()
            .map_err(|_| "passthrough panicked".to_string())??;
        println!("   round {round}: passthrough {pass:>9.0} ev/s");
        // Every other round in reverse order, so drift over the run (the broker's growing
        // log, the page cache) does not always count against the same build.
        let order: Vec<&std::path::PathBuf> = if round % 2 == 0 {
            builds.iter().collect()
        } else {
            builds.iter().rev().collect()
        };
        for bin in order {
            for mode in Mode::ALL {
                let rate = drain_build(bin, mode, n, &bs, dir.path(), total)?;
                let run = BuildRun {
                    round,
                    build: bin.display().to_string(),
                    mode,
                    rate,
                    ratio: rate / pass,
                };
                println!(
                    "   round {round}: {} {:<34} {:>9.0} ev/s ({:.2}x the passthrough)",
                    run.build,
                    mode.label(),
                    run.rate,
                    run.ratio
                );
                out.push(run);
                n += 1;
            }
        }
    }
    for bin in builds {
        for mode in Mode::ALL {
            let mine: Vec<&BuildRun> = out
                .iter()
                .filter(|r| r.mode == mode && r.build == bin.display().to_string())
                .collect();
            let mean = mine.iter().map(|r| r.ratio).sum::<f64>() / mine.len().max(1) as f64;
            println!(
                "   {} {}: mean {mean:.3}x the passthrough over {} rounds",
                bin.display(),
                mode.label(),
                mine.len()
            );
        }
    }
    Ok(out)
}

/// Drain run `n` of the input with the processor at `bin` in `mode` (its own topics
/// `history-n`, `reconciled-n`...), its rate.
fn drain_build(
    bin: &std::path::Path,
    mode: Mode,
    n: usize,
    bs: &str,
    dir: &std::path::Path,
    total: i64,
) -> Result<f64, String> {
    let file = dir.join(format!("p{n}.toml"));
    // Keys every build since the first has (an older binary rejects unknown ones).
    std::fs::write(
        &file,
        format!(
            "history_topic = \"history-{n}\"\ndlq_topic = \"dlq-{n}\"\nreconciled_topic = \"reconciled-{n}\"\ncommit_interval_ms = {COMMIT_MS}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let cfg = rf_processor::Config {
        region: "bench".into(),
        bootstrap_servers: bs.to_string(),
        group_id: format!("compare-{n}"),
        state_dir: dir.join(format!("p{n}")),
        http_addr: format!("127.0.0.1:{}", free_port()),
        home_bootstrap_servers: if mode == Mode::NoView {
            String::new()
        } else {
            bs.to_string()
        },
        ..Default::default()
    };
    let rport = free_port();
    let mut reconciler = match mode {
        Mode::ViewReconciled => {
            let rcfg = rf_reconciler::Config {
                instance: format!("compare-{n}"),
                home_bootstrap_servers: bs.to_string(),
                regions: vec![rf_reconciler::RegionSource {
                    name: "bench".into(),
                    bootstrap_servers: bs.to_string(),
                }],
                history_topic: format!("history-{n}"),
                reconciled_topic: format!("reconciled-{n}"),
                conflicts_topic: format!("conflicts-{n}"),
                state_dir: dir.join(format!("r{n}")),
                http_addr: format!("127.0.0.1:{rport}"),
                ..Default::default()
            };
            Some(ChildProcess::spawn_reconciler(
                &rcfg,
                &dir.join(format!("r{n}.log")),
                None,
            )?)
        }
        _ => None,
    };
    let conf = file.display().to_string();
    let mut child = ChildProcess::spawn_processor_binary(bin, &cfg, &[("RF_CONFIG", &conf)])?;
    let watch = GroupWatch::new(bs, &cfg.group_id())?;
    let rate = drain_rate(&watch, total, "processor", &mut || {
        if let Some(st) = child.exited() {
            return Err(format!("processor exited ({st}):\n{}", child.log_tail(20)));
        }
        if let Some(r) = reconciler.as_mut() {
            if let Some(st) = r.exited() {
                return Err(format!("reconciler exited ({st}):\n{}", r.log_tail(20)));
            }
        }
        Ok(())
    });
    child.kill9();
    if let Some(mut r) = reconciler {
        // What the reconciler had reconciled by the end of the drain (so the view's pending
        // events did settle in this mode).
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], rport));
        let done = rf_harness::http_client::get(addr, "/metrics")
            .ok()
            .and_then(|(_, m)| rf_harness::http_client::sample(&m, "rf_reconciled_events_total"))
            .unwrap_or(0.0);
        println!("   the reconciler had reconciled {}", thousands(done));
        r.kill9();
    }
    rate
}
