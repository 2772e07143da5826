//! `processor` binary: parse configuration, install the shutdown path, run the pipeline.

/// mimalloc instead of the system allocator: a profile of the processor draining a backlog
/// spent 28 % of its samples in glibc malloc/free (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use rf_processor::{Config, Shutdown};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Regional processor: events -> history, exactly once")]
struct Args {
    /// TOML config file (keys as in `Config`); flags and env vars override it.
    #[arg(long, env = "RF_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "RF_REGION")]
    region: Option<String>,
    #[arg(long, env = "RF_BOOTSTRAP_SERVERS")]
    bootstrap_servers: Option<String>,
    #[arg(long, env = "RF_STATE_DIR")]
    state_dir: Option<PathBuf>,
    #[arg(long, env = "RF_GROUP_ID")]
    group_id: Option<String>,
    /// The home cluster, to read `reconciled` back.
    #[arg(long, env = "RF_HOME_BOOTSTRAP_SERVERS")]
    home_bootstrap_servers: Option<String>,
    /// HTTP address (/health /ready /metrics /state/{key} /feed); empty disables it.
    #[arg(long, env = "RF_HTTP_ADDR")]
    http_addr: Option<String>,
    /// librdkafka setting passed through, `-X key=value` (repeatable).
    #[arg(short = 'X', value_parser = parse_kv)]
    kafka: Vec<(String, String)>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

fn main() -> std::process::ExitCode {
    rf_processor::logging::init("info");
    let args = Args::parse();
    if let Err(e) = rf_processor::failpoints::install_from_env() {
        eprintln!("{e}");
        return std::process::ExitCode::from(2);
    }
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
    if let Some(v) = args.region {
        cfg.region = v;
    }
    if let Some(v) = args.bootstrap_servers {
        cfg.bootstrap_servers = v;
    }
    if let Some(v) = args.state_dir {
        cfg.state_dir = v;
    }
    if let Some(v) = args.group_id {
        cfg.group_id = v;
    }
    if let Some(v) = args.home_bootstrap_servers {
        cfg.home_bootstrap_servers = v;
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
    let handle = std::thread::spawn(move || rf_processor::run(cfg, shutdown));
    let result = rt.block_on(async { tokio::task::spawn_blocking(move || handle.join()).await });
    match result {
        Ok(Ok(Ok(()))) => std::process::ExitCode::SUCCESS,
        Ok(Ok(Err(e))) => {
            eprintln!("processor failed: {e}");
            std::process::ExitCode::FAILURE
        }
        _ => std::process::ExitCode::FAILURE,
    }
}
