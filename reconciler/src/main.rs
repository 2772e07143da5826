//! `reconciler` binary: flags and environment over a TOML file, then the reconciler until
//! SIGTERM or Ctrl-C (`rf_runtime::cli`).

/// mimalloc instead of the system allocator: a profile of the processor draining a backlog
/// spent 28 % of its samples in glibc malloc/free (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use rf_reconciler::{Config, RegionSource};
use rf_runtime::cli;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(about = "Reconciler: merge regional histories into one deterministic topic")]
struct Args {
    /// TOML config file; flags and env vars override it.
    #[arg(long, env = "RF_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "RF_HOME_BOOTSTRAP_SERVERS")]
    home_bootstrap_servers: Option<String>,
    /// `name=host:port` per region (repeatable); replaces the file's region list.
    #[arg(long = "region", value_parser = parse_region)]
    regions: Vec<RegionSource>,
    #[arg(long, env = "RF_INSTANCE")]
    instance: Option<String>,
    /// HTTP address (/health /ready /metrics); empty disables it.
    #[arg(long, env = "RF_HTTP_ADDR")]
    http_addr: Option<String>,
    /// librdkafka setting passed through, `-X key=value` (repeatable).
    #[arg(short = 'X', value_parser = cli::parse_kv)]
    kafka: Vec<(String, String)>,
}

fn parse_region(s: &str) -> Result<RegionSource, String> {
    cli::parse_kv(s)
        .map(|(name, bootstrap_servers)| RegionSource {
            name,
            bootstrap_servers,
        })
        .map_err(|_| format!("expected name=bootstrap, got {s:?}"))
}

impl Args {
    fn apply(self, cfg: &mut Config) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { cfg.$f = v; } )* };
        }
        set!(home_bootstrap_servers, instance, http_addr);
        if !self.regions.is_empty() {
            cfg.regions = self.regions;
        }
        cfg.kafka.extend(self.kafka);
    }
}

fn main() -> ExitCode {
    rf_runtime::memory::init();
    rf_runtime::logging::init("info");
    let args = Args::parse();
    let file = args.config.clone();
    match cli::configure::<Config>(file.as_deref(), |c| args.apply(c)) {
        Ok(cfg) => cli::run_until_signal("reconciler", move |s| rf_reconciler::run(cfg, s)),
        Err(code) => code,
    }
}
