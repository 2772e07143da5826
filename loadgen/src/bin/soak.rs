//! `soak`: the reconciler over a growing history (constant keys, history grown in phases),
//! printing per phase its catch-up rate, resident memory and restart after kill -9, and the
//! last phase against the first. See `rf_loadgen::bench::soak` and docs/BENCHMARKS.md.

use clap::Parser;

#[derive(Parser)]
#[command(about = "Reconciler soak: memory, restart and catch-up as the history grows")]
struct Args {
    /// Distinct counter keys (the state size, constant over the run).
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// History size at the end of each phase, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "200000,600000,2000000")]
    events: Vec<usize>,
    /// Live input (events per second) arriving while the reconciler catches up after each
    /// cut: the catch-up is compared with it. Default: the month-long deployment's rate.
    #[arg(long, default_value_t = 10_000.0)]
    live_rate: f64,
    /// The processors' `store_memtable_mb` (default: theirs). A budget the first phase
    /// already fills shows growth with the history apart from the store's warm-up.
    #[arg(long)]
    processor_memtable_mb: Option<u64>,
    /// The processors' `store_block_cache_mb` (default: theirs).
    #[arg(long)]
    processor_block_cache_mb: Option<u64>,
}

fn main() -> std::process::ExitCode {
    rf_runtime::logging::init("warn");
    let args = Args::parse();
    println!(
        "== reconciler soak: {} keys, history {:?} events, live input {} ev/s during each catch-up, 2 regions on Tansu",
        args.keys, args.events, args.live_rate
    );
    match rf_loadgen::bench::soak::run_with(args.keys, &args.events, args.live_rate, |cfg| {
        if let Some(mb) = args.processor_memtable_mb {
            cfg.store_memtable_mb = mb;
        }
        if let Some(mb) = args.processor_block_cache_mb {
            cfg.store_block_cache_mb = mb;
        }
    }) {
        Ok(phases) => {
            println!("== {}", rf_loadgen::bench::soak::summary(&phases));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("soak failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
