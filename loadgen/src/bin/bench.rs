//! `bench`: the benchmarks of docs/BENCHMARKS.md. Prints a table and writes the generated
//! part of the report. `--small` is the quick run CI makes to keep it working (figures,
//! no speed assertions).
use clap::Parser;

/// The allocator the processor and reconciler binaries use, so that the in-process parts
/// (micro-benchmarks, the merge) measure what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rf_loadgen::bench::{self, report::Report, Sizes};
use std::path::PathBuf;

#[derive(Parser)]
struct Args {
    /// The quick run (thousands of keys instead of a million).
    #[arg(long)]
    small: bool,
    /// Where to write the report (between its markers, if it has them).
    #[arg(long, default_value = "docs/BENCHMARKS.md")]
    out: PathBuf,
    /// Only these parts: micro, merge, pipeline (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// With `--only compare`: processor binaries drained in turn against the passthrough,
    /// `--rounds` times (every other round in reverse order). Prints only.
    #[arg(long, value_delimiter = ',')]
    builds: Vec<std::path::PathBuf>,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let sizes = if args.small {
        Sizes::small()
    } else {
        Sizes::full()
    };
    if args.only.iter().any(|o| o == "compare") {
        if args.builds.is_empty() || args.only.len() > 1 {
            return Err("--only compare runs alone and needs --builds".into());
        }
        bench::pipeline::compare_builds(&sizes, &args.builds, args.rounds)?;
        return Ok(());
    }
    let wanted = |part: &str| args.only.is_empty() || args.only.iter().any(|o| o == part);
    let mut report = Report::default();
    report.context.push(format!(
        "run: `{}` on {} CPUs, {} size, {}",
        // The program's file name, not its path: no machine path goes into the report.
        std::env::args()
            .enumerate()
            .map(|(i, a)| if i == 0 {
                std::path::Path::new(&a)
                    .file_name()
                    .map_or(a.clone(), |f| f.to_string_lossy().into_owned())
            } else {
                a
            })
            .collect::<Vec<_>>()
            .join(" "),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sizes.name,
        rf_loadgen::bench::utc_now()
    ));
    if wanted("micro") {
        bench::micro::run(&sizes, &mut report)?;
    }
    if wanted("merge") {
        bench::merge::run(&sizes, &mut report)?;
    }
    if wanted("pipeline") {
        bench::pipeline::run(&sizes, &mut report)?;
    }
    println!("\n== results{}", report.table());
    report.write(&args.out)?;
    println!("\nwritten to {}", args.out.display());
    Ok(())
}
