//! `loadgen`: publish the demo workload (all five aggregates, retries, failovers, malformed
//! records) to running regional clusters, spread over a period — the load generator of the
//! compose deployment.

use clap::Parser;
use rf_harness::workload::{generate, publish_paced, Workload};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "Publish a multi-region workload to the regions' `events` topics")]
struct Args {
    /// `name=host:port` per region (repeatable, at least one).
    #[arg(long = "region", required = true)]
    regions: Vec<String>,
    /// Distinct events to send.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Spread the load over this many seconds.
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

fn main() -> std::process::ExitCode {
    rf_runtime::logging::init("warn");
    let args = Args::parse();
    let mut bootstraps = Vec::new();
    for r in &args.regions {
        match r.split_once('=') {
            Some((_, b)) if !b.is_empty() => bootstraps.push(b.to_owned()),
            _ => {
                eprintln!("invalid --region {r:?}: expected name=host:port");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let w = Workload {
        events: args.events,
        seed: args.seed,
        all_aggregates: true,
        ..Workload::default()
    };
    let (records, ledger) = generate(&w, bootstraps.len());
    println!(
        "loadgen: {} records ({} distinct events) to {} regions over {} s",
        records.len(),
        ledger.distinct.len(),
        bootstraps.len(),
        args.seconds
    );
    match publish_paced(&bootstraps, &records, Duration::from_secs(args.seconds)) {
        Ok(ends) => {
            println!("loadgen: done; end offsets {ends:?}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
