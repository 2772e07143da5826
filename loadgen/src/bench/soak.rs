//! The reconciler over a growing history (invariant 9): a constant key space (counters) and a
//! history grown in phases, the `reconciler` binary as a child process. Per phase it prints
//! the reconciler's catch-up rate (it is down while the phase is published, then catches up:
//! a cut), its resident memory after the catch-up, and its restart after kill -9 until a new
//! event is reconciled. The last phase is compared with the first: with a checkpoint and
//! released ids in the store, memory and restart follow the state, not the history.
//!
//! `soak --events 200000,2000000` is the documented full run (docs/BENCHMARKS.md); the test
//! suite runs a small one and checks that every figure was measured.

use rf_harness::broker::free_port;
use rf_harness::cluster::Cluster;
use rf_harness::http_client::{get, sample};
use rf_harness::process::ChildProcess;
use rf_harness::workload::{publish, Outgoing};
use rf_schemas::{Codec, Event, Op};
use std::time::{Duration, Instant};

/// The reconciler's flow-control bound in the soak.
pub const MAX_BUFFERED_BYTES: usize = 16 * 1024 * 1024;

/// One phase's figures.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Events in the history at the end of the phase.
    pub history: usize,
    /// Events published in the phase, and how fast.
    pub published: usize,
    pub input_rate: f64,
    /// Events per second the reconciler reconciled catching up on the phase.
    pub catch_up_rate: f64,
    /// Resident memory after the catch-up, kB.
    pub rss_kb: u64,
    /// kill -9, restart, one new event: seconds until it is reconciled.
    pub restart_secs: f64,
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
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
pub fn run(keys: usize, phases: &[usize]) -> Result<Vec<Phase>, String> {
    let regions = ["a", "b"];
    let mut c = Cluster::start(&regions, 4)?;
    for r in regions {
        c.start_processor(r, 0);
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
        c.wait_consumed(next_id, Duration::from_secs(600))?;
        let input_rate = recs.len() as f64 / t.elapsed().as_secs_f64();
        let mut r = ChildProcess::spawn_reconciler(&cfg, &log, None)?;
        let t = Instant::now();
        wait_reconciled(&mut r, port, recs.len() as u64, Duration::from_secs(600))?;
        let catch_up_rate = recs.len() as f64 / t.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(500));
        let rss = rss_kb(r.pid());
        // kill -9, restart, one new event reconciled.
        r.kill9();
        let one = counter_events(next_id, next_id + 1, keys, 2);
        next_id += 1;
        let t = Instant::now();
        let mut r = ChildProcess::spawn_reconciler(&cfg, &log, None)?;
        publish(&c.bootstraps(), &one, |_| {})?;
        wait_reconciled(&mut r, port, 1, Duration::from_secs(300))?;
        let restart_secs = t.elapsed().as_secs_f64();
        r.kill9();
        history = next_id;
        let p = Phase {
            history,
            published: recs.len(),
            input_rate,
            catch_up_rate,
            rss_kb: rss,
            restart_secs,
        };
        println!(
            "   history {:>9} events: catch-up {:>8.0} ev/s (input {:>7.0} ev/s), RSS {:>6} kB, restart {:>5.2} s",
            p.history, p.catch_up_rate, p.input_rate, p.rss_kb, p.restart_secs
        );
        out.push(p);
    }
    let errs = c.stop_all();
    if !errs.is_empty() {
        return Err(errs.join("; "));
    }
    Ok(out)
}

/// The summary line: last phase against the first.
pub fn summary(phases: &[Phase]) -> String {
    let (Some(f), Some(l)) = (phases.first(), phases.last()) else {
        return "no phase".into();
    };
    format!(
        "history {:.1}x ({} -> {} events): RSS {:.2}x ({} -> {} kB), restart {:.2}x ({:.2} -> {:.2} s), catch-up {:.1}x the input rate in the last phase",
        l.history as f64 / f.history as f64,
        f.history,
        l.history,
        l.rss_kb as f64 / f.rss_kb.max(1) as f64,
        f.rss_kb,
        l.rss_kb,
        l.restart_secs / f.restart_secs.max(1e-3),
        f.restart_secs,
        l.restart_secs,
        l.catch_up_rate / l.input_rate.max(1.0),
    )
}
