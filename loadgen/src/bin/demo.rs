//! The multi-region demo on embedded Tansu brokers: processors, reconciler, load, checker.
//! Exit status 0 only if the reconciled state equals the one recomputed from what was sent.

use clap::Parser;
use rf_loadgen::check::{check, reconciled_count};
use rf_loadgen::cluster::{Cluster, PARTITIONS};
use rf_loadgen::workload::{generate, publish, Workload};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Multi-region demo on embedded brokers")]
struct Args {
    /// Number of regions (2 or 3).
    #[arg(long, default_value_t = 3)]
    regions: usize,
    /// Distinct events to send.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// After the summary, keep the brokers up (to inspect the topics) until Ctrl-C.
    #[arg(long)]
    keep_brokers: bool,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let i = interrupted.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM");
                tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
            });
            i.store(true, Ordering::SeqCst);
        });
    }
    match run(&args, &interrupted) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, interrupted: &AtomicBool) -> Result<bool, String> {
    let names: Vec<&str> = ["us-east", "eu-west", "ap-south"]
        .into_iter()
        .take(args.regions.clamp(2, 3))
        .collect();
    let started = Instant::now();
    println!(
        "== regionflow demo: {} regions ({}), {} partitions",
        names.len(),
        names.join(", "),
        PARTITIONS
    );
    let mut cluster = Cluster::start(&names, PARTITIONS)?;
    for (n, b) in &cluster.regions {
        println!("   broker {n:<9} tansu at {}", b.bootstrap());
    }
    println!("   broker home      tansu at {}", cluster.home.bootstrap());
    for n in &names {
        cluster.start_processor(n, 0);
    }
    cluster.start_reconciler();
    let w = Workload {
        events: args.events,
        seed: args.seed,
        ..Workload::default()
    };
    let (records, ledger) = generate(&w, names.len());
    println!(
        "== sending {} records: {} distinct events, {} retries, {} failovers to another region, {} malformed",
        records.len(), ledger.distinct.len(), ledger.retries_same_region, ledger.failovers, ledger.malformed
    );
    let bootstraps: Vec<String> = cluster.regions.iter().map(|(_, b)| b.bootstrap()).collect();
    let total = records.len();
    publish(&bootstraps, &records, |n| {
        if n % 5000 == 0 || n == total {
            println!("   sent {n}/{total}");
        }
    })?;
    println!("== waiting for the reconciler (deadline 180 s)");
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last_print = Instant::now();
    loop {
        if interrupted.load(Ordering::SeqCst) {
            println!("interrupted: stopping everything");
            cluster.stop_all();
            return Ok(false);
        }
        cluster.check_alive()?;
        let rec = cluster
            .reconciler
            .as_ref()
            .map(|r| r.stats.reconciled.load(Ordering::Relaxed))
            .unwrap_or(0) as usize;
        let done =
            rec >= ledger.distinct.len() && reconciled_count(&cluster)? >= ledger.distinct.len();
        if done || last_print.elapsed() > Duration::from_secs(1) {
            let accepted: u64 = cluster
                .processors
                .iter()
                .map(|p| p.stats.accepted.load(Ordering::Relaxed))
                .sum();
            println!(
                "   accepted {accepted}, reconciled {rec}/{}",
                ledger.distinct.len()
            );
            last_print = Instant::now();
        }
        if done {
            break;
        }
        if Instant::now() > deadline {
            println!("   deadline passed with {rec} reconciled");
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let proc_stats: Vec<(String, u64, u64, u64, u64)> = cluster
        .processors
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.stats.consumed.load(Ordering::Relaxed),
                p.stats.accepted.load(Ordering::Relaxed),
                p.stats.duplicates.load(Ordering::Relaxed),
                p.stats.dead_lettered.load(Ordering::Relaxed),
            )
        })
        .collect();
    // Stop the writers first: processors heartbeat into history every few hundred ms, so
    // a live partition has no end to read to. The brokers live on until `cluster` drops.
    let errs = cluster.stop_all();
    let report = check(&cluster, &ledger)?;
    println!("\n== summary ({:.1} s)", started.elapsed().as_secs_f64());
    println!("   sent                {} records ({} distinct events, {} same-region retries, {} failovers, {} malformed)",
        report.sent_records, report.sent_distinct, report.retries, report.failovers, report.malformed_sent);
    for (name, consumed, accepted, dups, dead) in proc_stats {
        println!("   {name:<22} consumed {consumed:>6}  accepted {accepted:>6}  deduplicated {dups:>5}  dead-lettered {dead:>3}");
    }
    for (region, n) in &report.history_per_region {
        println!(
            "   history {region:<9}   {n} events + {} heartbeats, dlq {}",
            report.heartbeats_per_region[region], report.dlq_per_region[region]
        );
    }
    println!(
        "   reconciled          {} events (distinct across regions: {})",
        report.reconciled, report.accepted_distinct_across_regions
    );
    println!("   conflicts           {:?}", report.conflicts);
    println!("   merged state of a few keys:");
    for (k, s) in &report.sample_states {
        println!("     {k:<22} {s}");
    }
    println!("   where to look: topics events/history/events.dlq on each region broker, reconciled/conflicts on home (addresses above; they stop with the demo unless --keep-brokers)");
    for e in &errs {
        println!("   component error: {e}");
    }
    if args.keep_brokers {
        println!("   brokers kept up (--keep-brokers); press Ctrl-C to stop them");
        while !interrupted.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    if report.ok() && errs.is_empty() {
        println!("\nRESULT: reconciled state EQUALS the state recomputed from what was sent");
        Ok(true)
    } else {
        println!("\nRESULT: MISMATCH ({} problems)", report.problems.len());
        for p in report.problems.iter().take(20) {
            println!("   - {p}");
        }
        Ok(false)
    }
}
