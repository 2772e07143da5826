//! The reconciler over a growing history (invariant 9): a constant key space (counters) and a
//! history grown in phases, the `reconciler` binary as a child process. Per phase it prints
//! the reconciler's catch-up rate (it is down while the phase is published, a cut; then it
//! catches up while live input keeps arriving at a fixed rate, and the rate is compared with
//! that input rate), its resident memory after the catch-up with the checkpoint store's share,
//! and its restart after kill -9 until a new event is reconciled. The last phase is compared
//! with the first: with a checkpoint and released ids in the store, memory and restart follow
//! the state and the configuration, not the history.
//!
//! `soak --events 200000,2000000` is the documented full run (docs/BENCHMARKS.md); the test
//! suite runs a small one and checks that every figure was measured.

use rf_harness::broker::free_port;
use rf_harness::check::group_committed;
use rf_harness::cluster::Cluster;
use rf_harness::http_client::{get, sample};
use rf_harness::process::ChildProcess;
use rf_harness::workload::{publish, Outgoing, Publisher};
use rf_schemas::{Codec, Event, Op};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The reconciler's flow-control bound in the soak.
pub const MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;

/// One phase's figures.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Events in the history at the end of the phase.
    pub history: usize,
    /// Events published in the phase while the reconciler was down (the backlog), and how
    /// fast the processors took them in.
    pub published: usize,
    pub build_rate: f64,
    /// The live input during the catch-up (events per second, as paced) and how many came.
    pub live_rate: f64,
    pub live: usize,
    /// Events per second the reconciler reconciled catching up (backlog plus live input).
    pub catch_up_rate: f64,
    /// Resident memory after the catch-up, kB, and the checkpoint store's share of it
    /// (RocksDB's memtables, table readers and block cache), kB.
    pub rss_kb: u64,
    pub store_kb: u64,
    /// kill -9, restart, one new event: seconds until the restarted reconciler is ready
    /// (restored) and until the event is reconciled.
    pub ready_secs: f64,
    pub restart_secs: f64,
    /// Resident memory of the restarted reconciler after `STEADY` of live input, kB: the
    /// steady state, without a catch-up's backlog in flight.
    pub steady_rss_kb: u64,
    /// The larger of the two processors' resident memory before the restarts, kB.
    pub processor_rss_kb: u64,
    /// Each processor's memory, broken down, in region order.
    pub processors: Vec<ProcessorMemory>,
    /// kill -9 of region a's processor, restart, one new event of a: seconds until it is
    /// reconciled (the broker's group rejoin is most of it on Tansu).
    pub processor_restart_secs: f64,
}

/// One processor's memory after a phase, kB: its resident memory, its store's accounted
/// parts and what the two allocators hold (`rf_heap_bytes`; glibc's in-use part includes the
/// store's memtables and table readers, and the block cache).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessorMemory {
    pub rss_kb: u64,
    pub memtables_kb: u64,
    pub table_readers_kb: u64,
    pub block_cache_kb: u64,
    pub glibc_in_use_kb: u64,
    pub glibc_free_kb: u64,
    pub rust_kb: u64,
}

impl ProcessorMemory {
    /// The store's accounted parts together, kB.
    pub fn store_kb(&self) -> u64 {
        self.memtables_kb + self.table_readers_kb + self.block_cache_kb
    }

    /// Resident memory outside the store's accounted parts, kB.
    pub fn outside_store_kb(&self) -> u64 {
        self.rss_kb.saturating_sub(self.store_kb())
    }

    fn read(pid: u32, cfg: &rf_processor::Config) -> ProcessorMemory {
        let mut m = ProcessorMemory {
            rss_kb: rss_kb(pid),
            ..Default::default()
        };
        let Ok(addr) = cfg.http_addr.parse::<std::net::SocketAddr>() else {
            return m;
        };
        let Ok((_, text)) = get(addr, "/metrics") else {
            return m;
        };
        let kb = |series: &str, part: &str| {
            sample(
                &text,
                &format!("{series}{{part=\"{part}\",region=\"{}\"}}", cfg.region),
            )
            .unwrap_or(0.0) as u64
                / 1024
        };
        m.memtables_kb = kb("rf_rocksdb_memory_bytes", "memtables");
        m.table_readers_kb = kb("rf_rocksdb_memory_bytes", "table_readers");
        m.block_cache_kb = kb("rf_rocksdb_memory_bytes", "block_cache");
        m.glibc_in_use_kb = kb("rf_heap_bytes", "glibc_in_use");
        m.glibc_free_kb = kb("rf_heap_bytes", "glibc_free");
        m.rust_kb = kb("rf_heap_bytes", "rust_committed");
        m
    }

    fn line(&self) -> String {
        format!(
            "RSS {} kB = store {} kB (memtables {}, table readers {}, block cache {}) + {} kB outside; heap: glibc in use {} kB, glibc free {} kB, Rust {} kB",
            self.rss_kb,
            self.store_kb(),
            self.memtables_kb,
            self.table_readers_kb,
            self.block_cache_kb,
            self.outside_store_kb(),
            self.glibc_in_use_kb,
            self.glibc_free_kb,
            self.rust_kb
        )
    }
}

impl Phase {
    /// The larger of the processors' resident memory outside their stores' accounted parts.
    pub fn processor_outside_store_kb(&self) -> u64 {
        self.processors
            .iter()
            .map(ProcessorMemory::outside_store_kb)
            .max()
            .unwrap_or(0)
    }
}

/// How long the restarted reconciler runs under live input before its steady RSS is read.
pub const STEADY: Duration = Duration::from_secs(5);

fn rss_kb(pid: u32) -> u64 {
    rf_harness::process::status_kb(pid, "VmRSS:").unwrap_or(0)
}

fn counter_events(from: usize, to: usize, keys: usize, regions: usize) -> Vec<Outgoing> {
    (from..to)
        .map(|i| {
            let key = format!("likes:{}", i % keys);
            let ev = Event::new(
                format!("soak-{i}"),
                key.clone(),
                Op::CounterAdd { delta: 1 },
            );
            Outgoing {
                region: i % regions,
                key,
                payload: Codec::event().encode(&ev).expect("encode"),
            }
        })
        .collect()
}

/// The checkpoint store's memory as the child reports it, kB.
fn store_kb(port: u16) -> u64 {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    memory_kb(addr, |p| {
        format!("rf_reconciler_store_memory_bytes{{part=\"{p}\"}}")
    })
}

/// A store's memory gauges at `addr`'s `/metrics`, summed over its parts, kB (0 if it
/// does not answer); `series` names the sample of one part.
fn memory_kb(addr: std::net::SocketAddr, series: impl Fn(&str) -> String) -> u64 {
    let Ok((_, m)) = get(addr, "/metrics") else {
        return 0;
    };
    ["memtables", "table_readers", "block_cache"]
        .iter()
        .filter_map(|p| sample(&m, &series(p)))
        .sum::<f64>() as u64
        / 1024
}

fn ready(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    get(addr, "/ready").is_ok_and(|(status, _)| status == 200)
}

/// Live input: `rate` events per second, in chunks every 100 ms, until `stop`.
struct LiveInput {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Result<(), String>>,
}

impl LiveInput {
    /// Start sending counter events with ids from `first_id` on.
    fn start(bootstraps: Vec<String>, keys: usize, first_id: usize, rate: f64) -> LiveInput {
        let (stop, sent) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, n) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let p = Publisher::new(&bootstraps)?;
            let started = Instant::now();
            let mut next = 0usize;
            while !s.load(Ordering::SeqCst) {
                let due = (started.elapsed().as_secs_f64() * rate) as usize;
                if due > next {
                    p.send(
                        &counter_events(first_id + next, first_id + due, keys, 2),
                        |_| {},
                    );
                    next = due;
                    n.store(next, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            p.flush().map(|_| ())
        });
        LiveInput { stop, sent, thread }
    }

    /// Stop, flush, and say how many events were sent.
    fn stop(self) -> Result<usize, String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .map_err(|_| "live input panicked".to_string())??;
        Ok(self.sent.load(Ordering::SeqCst))
    }
}

/// Reconciled so far by the running child (its own counter: it starts at 0 per process).
fn reconciled(port: u16) -> u64 {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    get(addr, "/metrics")
        .ok()
        .and_then(|(_, m)| sample(&m, "rf_reconciled_events_total"))
        .unwrap_or(0.0) as u64
}

fn wait_reconciled(
    r: &mut ChildProcess,
    port: u16,
    n: u64,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while reconciled(port) < n {
        if let Some(st) = r.exited() {
            return Err(format!("reconciler exited ({st}):\n{}", r.log_tail(20)));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} of {n} reconciled within {timeout:?}",
                reconciled(port)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Run the phases: `phases` are the history sizes (cumulative), `keys` the key space.
/// `live_rate`: events per second arriving while the reconciler catches up.
pub fn run(keys: usize, phases: &[usize], live_rate: f64) -> Result<Vec<Phase>, String> {
    run_with(keys, phases, live_rate, |_| {})
}

/// As [`run`], with the processors' configuration changed by `processor` (the store's
/// memory budget, for one): settings a child takes from a TOML file (`RF_CONFIG`).
pub fn run_with(
    keys: usize,
    phases: &[usize],
    live_rate: f64,
    processor: impl Fn(&mut rf_processor::Config),
) -> Result<Vec<Phase>, String> {
    let regions = ["a", "b"];
    let mut c = Cluster::start(&regions, 4)?;
    // The processors run as child processes too, so their memory and restart are measured.
    let mut procs = Vec::new();
    let mut tuned = rf_processor::Config::default();
    processor(&mut tuned);
    println!(
        "   processors: store_memtable_mb {}, store_block_cache_mb {}",
        tuned.store_memtable_mb, tuned.store_block_cache_mb
    );
    let file = c.dir.path().join("soak-processor.toml");
    std::fs::write(
        &file,
        format!(
            "store_memtable_mb = {}\nstore_block_cache_mb = {}\n",
            tuned.store_memtable_mb, tuned.store_block_cache_mb
        ),
    )
    .map_err(|e| e.to_string())?;
    let conf = file.display().to_string();
    let env = [("RF_CONFIG", conf.as_str())];
    for r in regions {
        let mut pcfg = c.processor_config(r, 0);
        pcfg.http_addr = format!("127.0.0.1:{}", free_port());
        procs.push((ChildProcess::spawn(&pcfg, &env)?, pcfg));
    }
    let port = free_port();
    let mut cfg = c.reconciler_config();
    cfg.http_addr = format!("127.0.0.1:{port}");
    // The catch-up after each cut buffers up to this (flow control), whatever the cut's
    // length: memory is bounded by it and by the state.
    cfg.max_buffered_bytes = MAX_BUFFERED_BYTES;
    let log = c.dir.path().join("soak-reconciler.log");
    let mut out = Vec::new();
    let mut history = 0usize;
    let mut next_id = 0usize;
    for &size in phases {
        // The reconciler is down while the phase is published (a cut), then catches up.
        let recs = counter_events(next_id, next_id + size.saturating_sub(history), keys, 2);
        next_id += recs.len();
        let t = Instant::now();
        publish(&c.bootstraps(), &recs, |_| {})?;
        wait_consumed(&c, &regions, next_id, &mut procs, Duration::from_secs(600))?;
        let build_rate = recs.len() as f64 / t.elapsed().as_secs_f64();
        let mut r = ChildProcess::spawn_reconciler(&cfg, &log, None)?;
        // The catch-up: the backlog, with live input arriving meanwhile; it ends when the
        // reconciler has the backlog and every live event (the input stops once the backlog
        // is through, so the end is known).
        let t = Instant::now();
        let input = LiveInput::start(c.bootstraps(), keys, next_id, live_rate);
        let backlog = wait_reconciled(&mut r, port, recs.len() as u64, Duration::from_secs(600));
        let live = input.stop()?;
        backlog?;
        next_id += live;
        wait_reconciled(
            &mut r,
            port,
            (recs.len() + live) as u64,
            Duration::from_secs(600),
        )?;
        let catch_up_rate = (recs.len() + live) as f64 / t.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(500));
        let rss = rss_kb(r.pid());
        let store = store_kb(port);
        // kill -9, restart, one new event reconciled.
        r.kill9();
        let one = counter_events(next_id, next_id + 1, keys, 2);
        next_id += 1;
        let t = Instant::now();
        let mut r = ChildProcess::spawn_reconciler(&cfg, &log, None)?;
        publish(&c.bootstraps(), &one, |_| {})?;
        let mut ready_secs = None;
        let deadline = Instant::now() + Duration::from_secs(300);
        while reconciled(port) < 1 {
            if ready_secs.is_none() && ready(port) {
                ready_secs = Some(t.elapsed().as_secs_f64());
            }
            if let Some(st) = r.exited() {
                return Err(format!("reconciler exited ({st}):\n{}", r.log_tail(20)));
            }
            if Instant::now() > deadline {
                return Err("the restarted reconciler reconciled nothing within 300 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let restart_secs = t.elapsed().as_secs_f64();
        // Steady state: the restarted reconciler under the live input for a few seconds
        // (no backlog), then its resident memory.
        let input = LiveInput::start(c.bootstraps(), keys, next_id, live_rate);
        std::thread::sleep(STEADY);
        let steady = input.stop()?;
        next_id += steady;
        wait_reconciled(&mut r, port, 1 + steady as u64, Duration::from_secs(120))?;
        let steady_rss = rss_kb(r.pid());
        let processors: Vec<ProcessorMemory> = procs
            .iter()
            .map(|(p, cfg)| ProcessorMemory::read(p.pid(), cfg))
            .collect();
        let processor_rss = processors.iter().map(|m| m.rss_kb).max().unwrap_or(0);
        // The processor of region a: kill -9, restart, one new event of a reconciled.
        let base = reconciled(port);
        let (pa, pcfg) = &mut procs[0];
        pa.kill9();
        let t = Instant::now();
        *pa = ChildProcess::spawn(pcfg, &env)?;
        let mut one = counter_events(next_id, next_id + 1, keys, 2);
        one[0].region = 0;
        next_id += 1;
        publish(&c.bootstraps(), &one, |_| {})?;
        let deadline = Instant::now() + Duration::from_secs(300);
        while reconciled(port) < base + 1 {
            for (p, _) in procs.iter_mut() {
                if let Some(st) = p.exited() {
                    return Err(format!("processor exited ({st}):\n{}", p.log_tail(20)));
                }
            }
            if Instant::now() > deadline {
                return Err(
                    "the restarted processor's event was not reconciled within 300 s".into(),
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let processor_restart_secs = t.elapsed().as_secs_f64();
        r.kill9();
        history = next_id;
        let p = Phase {
            history,
            published: recs.len(),
            build_rate,
            live_rate,
            live,
            catch_up_rate,
            rss_kb: rss,
            store_kb: store,
            ready_secs: ready_secs.unwrap_or(restart_secs),
            restart_secs,
            steady_rss_kb: steady_rss,
            processor_rss_kb: processor_rss,
            processors,
            processor_restart_secs,
        };
        println!(
            "   history {:>9} events: catch-up {:>7.0} ev/s with live input at {:>6.0} ev/s ({:.1}x; backlog built at {:>6.0} ev/s), RSS after it {:>6} kB (store {:>6} kB), restart: ready {:>5.2} s, new event reconciled {:>5.2} s, steady RSS {:>6} kB; processor a's restart until reconciled {:>5.2} s",
            p.history, p.catch_up_rate, p.live_rate, p.catch_up_rate / p.live_rate.max(1.0), p.build_rate, p.rss_kb, p.store_kb, p.ready_secs, p.restart_secs, p.steady_rss_kb, p.processor_restart_secs
        );
        for (r, m) in regions.iter().zip(&p.processors) {
            println!("     processor {r}: {}", m.line());
        }
        out.push(p);
    }
    for (p, _) in procs.iter_mut() {
        p.kill9();
    }
    let errs = c.stop_all();
    if !errs.is_empty() {
        return Err(errs.join("; "));
    }
    Ok(out)
}

/// Wait until the processors have consumed `n` events over all regions (their groups'
/// committed offsets: a restarted processor's counters start again at 0).
fn wait_consumed(
    c: &Cluster,
    regions: &[&str],
    n: usize,
    procs: &mut [(ChildProcess, rf_processor::Config)],
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut done = 0i64;
        for r in regions {
            let cfg = c.processor_config(r, 0);
            done += group_committed(&c.bootstrap(r), &cfg.group_id(), "events", c.partitions)?
                .values()
                .sum::<i64>();
        }
        if done as usize >= n {
            return Ok(());
        }
        for (p, _) in procs.iter_mut() {
            if let Some(st) = p.exited() {
                return Err(format!("processor exited ({st}):\n{}", p.log_tail(20)));
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{done} of {n} events consumed within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The summary line: last phase against the first.
pub fn summary(phases: &[Phase]) -> String {
    let (Some(f), Some(l)) = (phases.first(), phases.last()) else {
        return "no phase".into();
    };
    format!(
        "history {:.1}x ({} -> {} events): reconciler RSS after the catch-up {:.2}x ({} -> {} kB), steady RSS after the restart {:.2}x ({} -> {} kB), restart {:.2}x ({:.2} -> {:.2} s), catch-up {:.1}x the live input rate in the last phase; processor RSS {:.2}x ({} -> {} kB), outside its store {:.2}x ({} -> {} kB), restart until reconciled {:.2}x ({:.2} -> {:.2} s)",
        l.history as f64 / f.history as f64,
        f.history,
        l.history,
        l.rss_kb as f64 / f.rss_kb.max(1) as f64,
        f.rss_kb,
        l.rss_kb,
        l.steady_rss_kb as f64 / f.steady_rss_kb.max(1) as f64,
        f.steady_rss_kb,
        l.steady_rss_kb,
        l.restart_secs / f.restart_secs.max(1e-3),
        f.restart_secs,
        l.restart_secs,
        l.catch_up_rate / l.live_rate.max(1.0),
        l.processor_rss_kb as f64 / f.processor_rss_kb.max(1) as f64,
        f.processor_rss_kb,
        l.processor_rss_kb,
        l.processor_outside_store_kb() as f64 / f.processor_outside_store_kb().max(1) as f64,
        f.processor_outside_store_kb(),
        l.processor_outside_store_kb(),
        l.processor_restart_secs / f.processor_restart_secs.max(1e-3),
        f.processor_restart_secs,
        l.processor_restart_secs,
    )
}
