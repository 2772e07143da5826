//! Restore after kill -9, measured: a processor folds N distinct keys (default 1,000,000)
//! into RocksDB on a real broker, is killed with SIGKILL, and restarts (a) on its local
//! store, replaying only the history tail, and (b) with the store deleted, rebuilding every
//! key from history. Prints the time from process start to "partitions assigned and
//! restored" for each, and their ratio.
use clap::Parser;
use rf_harness::check::group_committed;
use rf_harness::cluster::Cluster;
use rf_harness::process::ChildProcessor;
use rf_harness::workload::{publish, Outgoing};
use rf_schemas::{Codec, Event, Op};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    keys: usize,
}

const RESTORED: &str = "partitions assigned and restored";

fn replayed(p: &ChildProcessor) -> u64 {
    std::fs::read_to_string(&p.log)
        .unwrap_or_default()
        .lines()
        .rev()
        .take_while(|l| !l.contains("processor started"))
        .filter_map(|l| {
            let l = l
                .replace("\u{1b}[3m", "")
                .replace("\u{1b}[0m", "")
                .replace("\u{1b}[2m", "");
            l.split("replayed=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let c = Cluster::start(&["a"], 4)?;
    let bootstrap = c.bootstrap("a");
    let codec = Codec::event();
    println!("== publishing {} events, one per key", args.keys);
    let t = Instant::now();
    let recs: Vec<Outgoing> = (0..args.keys)
        .map(|i| {
            let key = format!("k:{i}");
            let ev = Event::new(format!("e-{i}"), key.clone(), Op::CounterAdd { delta: 1 });
            Outgoing {
                region: 0,
                key,
                payload: codec.encode(&ev).expect("encode"),
            }
        })
        .collect();
    let ends = publish(std::slice::from_ref(&bootstrap), &recs, |n| {
        if n % 200_000 == 0 {
            println!("   sent {n}");
        }
    })?;
    drop(recs);
    println!("   published in {:.1} s", t.elapsed().as_secs_f64());

    let cfg = c.processor_config("a", 0);
    let mut p = ChildProcessor::spawn(&cfg, &[])?;
    let t = Instant::now();
    p.wait_log(RESTORED, Duration::from_secs(120))?;
    let mut last = Instant::now();
    loop {
        let committed = group_committed(&bootstrap, &cfg.group_id(), "events", 4)?;
        let done: i64 = committed.values().sum();
        let total: i64 = ends.values().sum();
        if done >= total {
            break;
        }
        if last.elapsed() > Duration::from_secs(5) {
            println!("   processed {done}/{total}");
            last = Instant::now();
        }
        if p.exited().is_some() {
            return Err(format!("processor died:\n{}", p.log_tail(20)));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let fold_secs = t.elapsed().as_secs_f64();
    println!(
        "== folded {} keys in {fold_secs:.1} s ({:.0} events/s); kill -9",
        args.keys,
        args.keys as f64 / fold_secs
    );
    p.kill9();

    let mut p = ChildProcessor::spawn(&cfg, &[])?;
    let t = Instant::now();
    p.wait_log(RESTORED, Duration::from_secs(600))?;
    let local = t.elapsed().as_secs_f64();
    let local_replayed = replayed(&p);
    p.kill9();

    std::fs::remove_dir_all(&cfg.state_dir).map_err(|e| e.to_string())?;
    let mut p = ChildProcessor::spawn(&cfg, &[])?;
    let t = Instant::now();
    p.wait_log(RESTORED, Duration::from_secs(1800))?;
    let rebuild = t.elapsed().as_secs_f64();
    let rebuild_replayed = replayed(&p);
    let _ = p.terminate(Duration::from_secs(30));

    println!(
        "\n== restore after kill -9 with {} keys (4 partitions)",
        args.keys
    );
    println!("   local store, history tail   {local:>7.1} s  ({local_replayed} records replayed)");
    println!(
        "   no store, rebuild from log  {rebuild:>7.1} s  ({rebuild_replayed} records replayed)"
    );
    println!(
        "   ratio rebuild / local       {:>7.1}x",
        rebuild / local.max(0.001)
    );
    Ok(())
}
