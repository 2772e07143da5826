//! `processor` binary: flags and environment over a TOML file, then the processor until
//! SIGTERM or Ctrl-C (`rf_runtime::cli`).

/// mimalloc instead of the system allocator: a profile of the processor draining a backlog
/// spent 28 % of its samples in glibc malloc/free (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use rf_processor::Config;
use rf_runtime::cli;
use std::path::PathBuf;
use std::process::ExitCode;

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
    #[arg(short = 'X', value_parser = cli::parse_kv)]
    kafka: Vec<(String, String)>,
}

impl Args {
    fn apply(self, cfg: &mut Config) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { cfg.$f = v; } )* };
        }
        set!(
            region,
            bootstrap_servers,
            state_dir,
            group_id,
            home_bootstrap_servers,
            http_addr
        );
        cfg.kafka.extend(self.kafka);
    }
}

fn main() -> ExitCode {
    rf_runtime::memory::init();
    rf_runtime::logging::init("info");
    let args = Args::parse();
    if let Err(e) = rf_processor::failpoints::install_from_env() {
        eprintln!("{e}");
        return ExitCode::from(cli::EXIT_CONFIG);
    }
    let file = args.config.clone();
    match cli::configure::<Config>(file.as_deref(), |c| args.apply(c)) {
        Ok(cfg) => cli::run_until_signal("processor", move |s| rf_processor::run(cfg, s)),
        Err(code) => code,
    }
}
