//! Command-line plumbing both binaries share: a TOML file, then environment variables and
//! flags over it (clap reads those two), validation, then the service on a thread of its
//! own until SIGTERM or Ctrl-C, with one exit-code convention:
//! 0 stopped cleanly, 1 failed while running, 2 bad configuration or usage.

use crate::error::Result;
use crate::shutdown::Shutdown;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::process::ExitCode;

/// Exit code for bad configuration or usage.
pub const EXIT_CONFIG: u8 = 2;

/// `key=value`, for `-X` flags.
pub fn parse_kv(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

/// A service configuration the command line can build.
pub trait ServiceConfig: DeserializeOwned + Default {
    fn validate(&self) -> Result<()>;
}

/// Read `file` (or start from the defaults), apply the flags and environment variables
/// with `overrides`, validate. On any error print it and return the exit code to use.
pub fn configure<C: ServiceConfig>(
    file: Option<&Path>,
    overrides: impl FnOnce(&mut C),
) -> std::result::Result<C, ExitCode> {
    let mut cfg = match file {
        Some(p) => match std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|s| toml::from_str::<C>(&s).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("invalid configuration file {}: {e}", p.display());
                return Err(ExitCode::from(EXIT_CONFIG));
            }
        },
        None => C::default(),
    };
    overrides(&mut cfg);
    if let Err(e) = cfg.validate() {
        eprintln!("{e}");
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    Ok(cfg)
}

/// Run `service` on its own thread until it returns; SIGTERM and Ctrl-C trigger its
/// `Shutdown` (the one shutdown path). Returns the process exit code.
pub fn run_until_signal(
    name: &'static str,
    service: impl FnOnce(Shutdown) -> Result<()> + Send + 'static,
) -> ExitCode {
    let shutdown = Shutdown::default();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the signal runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let on_signal = shutdown.clone();
    rt.spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "cannot install the SIGTERM handler");
                    return;
                }
            };
        tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
        tracing::info!("{name}: signal received, stopping");
        on_signal.trigger();
    });
    let handle = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || service(shutdown));
    let handle = match handle {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{name}: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(async { tokio::task::spawn_blocking(move || handle.join()).await }) {
        Ok(Ok(Ok(()))) => ExitCode::SUCCESS,
        Ok(Ok(Err(e))) => {
            eprintln!("{name} failed: {e}");
            ExitCode::FAILURE
        }
        _ => {
            eprintln!("{name} panicked");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Cfg {
        interval_ms: u64,
    }

    impl ServiceConfig for Cfg {
        fn validate(&self) -> Result<()> {
            crate::config::in_range("interval_ms", self.interval_ms, 1, 1000)
        }
    }

    #[test]
    fn file_then_flags_then_validation() {
        let path = std::env::temp_dir().join(format!("rf-cli-{}.toml", std::process::id()));
        std::fs::write(&path, "interval_ms = 5\n").unwrap();
        let c = configure::<Cfg>(Some(&path), |_| {}).unwrap();
        assert_eq!(c.interval_ms, 5);
        // Flags and env win over the file.
        let c = configure::<Cfg>(Some(&path), |c| c.interval_ms = 7).unwrap();
        assert_eq!(c.interval_ms, 7);
        // Invalid: refused (exit code 2), not run.
        assert!(configure::<Cfg>(Some(&path), |c| c.interval_ms = 0).is_err());
        std::fs::write(&path, "interval = 5\n").unwrap();
        assert!(
            configure::<Cfg>(Some(&path), |_| {}).is_err(),
            "unknown key"
        );
        let _ = std::fs::remove_file(&path);
        assert_eq!(parse_kv("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_kv("novalue").is_err());
    }
}
