//! `reconciler` binary: parse configuration, install the shutdown path, run the merge.

/// mimalloc instead of the system allocator: a profile of the processor draining a backlog
/// spent 28 % of its samples in glibc malloc/free (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use rf_reconciler::{Config, RegionSource, Shutdown};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Reconciler: merge regional histories into one deterministic topic")]
struct Args {
    /// TOML config file; flags and env vars override it.
    #[arg(long, env = "RF_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "RF_HOME_BOOTSTRAP_SERVERS")]
    home_bootstrap_servers: Option<String>,
    /// `name=host:port` per region (repeatable).
    #[arg(long = "region", value_parser = parse_region)]
    regions: Vec<RegionSource>,
    #[arg(long, env = "RF_INSTANCE")]
    instance: Option<String>,
    /// HTTP address (/health /ready /metrics); empty disables it.
    #[arg(long, env = "RF_HTTP_ADDR")]
    http_addr: Option<String>,
    /// librdkafka setting passed through, `-X key=value` (repeatable).
    #[arg(short = 'X', value_parser = parse_kv)]
    kafka: Vec<(String, String)>,
}

fn parse_region(s: &str) -> Result<RegionSource, String> {
    s.split_once('=')
        .map(|(n, b)| RegionSource {
            name: n.to_owned(),
            bootstrap_servers: b.to_owned(),
        })
        .ok_or_else(|| format!("expected name=bootstrap, got {s:?}"))
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

fn main() -> std::process::ExitCode {
    rf_processor::logging::init("info");
    let args = Args::parse();
    let mut cfg = match &args.config {
        Some(p) => match std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|s| toml::from_str::<Config>(&s).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("invalid configuration file {}: {e}", p.display());
                return std::process::ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    if let Some(v) = args.home_bootstrap_servers {
        cfg.home_bootstrap_servers = v;
    }
    if let Some(v) = args.instance {
        cfg.instance = v;
    }
    if !args.regions.is_empty() {
        cfg.regions = args.regions;
    }
    if let Some(v) = args.http_addr {
        cfg.http_addr = v;
    }
    cfg.kafka.extend(args.kafka);
    if let Err(e) = cfg.validate() {
        eprintln!("{e}");
        return std::process::ExitCode::from(2);
    }
    let shutdown = Shutdown::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s2 = shutdown.clone();
    rt.spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
        s2.trigger();
    });
    let handle = std::thread::spawn(move || rf_reconciler::run(cfg, shutdown));
    match rt.block_on(async { tokio::task::spawn_blocking(move || handle.join()).await }) {
        Ok(Ok(Ok(()))) => std::process::ExitCode::SUCCESS,
        Ok(Ok(Err(e))) => {
            eprintln!("reconciler failed: {e}");
            std::process::ExitCode::FAILURE
        }
        _ => std::process::ExitCode::FAILURE,
    }
}
