//! Crash seams for tests, with the `fail` crate (TiKV's). They are compiled in and inert
//! unless `RF_FAILPOINTS` names them when the process starts, e.g.
//! `RF_FAILPOINTS='rf::after_commit=3*off->return'` crashes the process on the fourth
//! commit. "return" aborts the process on the spot (no destructors, no flush, like
//! kill -9). The seams, in the order one transaction passes them:
//!
//! - `rf::mid_produce`: after a history record was handed to the producer, before the
//!   transaction has all its records;
//! - `rf::before_commit`: every record produced, offsets not yet sent, nothing committed;
//! - `rf::after_commit`: the Kafka transaction committed, the RocksDB batch not written;
//! - `rf::after_store`: the RocksDB batch written, before the next input record.

pub const SEAMS: [&str; 4] = [
    "rf::mid_produce",
    "rf::before_commit",
    "rf::after_commit",
    "rf::after_store",
];

/// Configure failpoints from `RF_FAILPOINTS` (`name=actions;name=actions`).
pub fn install_from_env() -> Result<(), String> {
    let Ok(spec) = std::env::var("RF_FAILPOINTS") else {
        return Ok(());
    };
    for item in spec.split(';').filter(|s| !s.trim().is_empty()) {
        let (name, actions) = item
            .split_once('=')
            .ok_or_else(|| format!("RF_FAILPOINTS: expected name=actions, got {item:?}"))?;
        if !SEAMS.contains(&name.trim()) {
            return Err(format!(
                "RF_FAILPOINTS: unknown failpoint {name:?} (known: {SEAMS:?})"
            ));
        }
        fail::cfg(name.trim(), actions.trim())
            .map_err(|e| format!("RF_FAILPOINTS: {name}: {e}"))?;
        tracing::warn!(failpoint = name, actions, "failpoint armed");
    }
    Ok(())
}

/// What a failpoint's "return" does: stop the process the hard way.
pub fn crash(seam: &str) -> ! {
    eprintln!("failpoint {seam}: aborting the process");
    std::process::abort()
}

/// The wall clock of the `processor` binary: the system's, or `RF_CLOCK_AHEAD_MS` ahead of
/// it (a test seam like the failpoints: a zombie that resumes with its clock ahead), or
/// `RF_CLOCK_FAST=<sim0_ms>:<real0_ms>:<rate>` (`rf_core::FastClock`: schedules tested at
/// a simulated hour per second).
pub fn clock_from_env() -> std::sync::Arc<dyn rf_core::Clock> {
    if let Some(fast) = std::env::var("RF_CLOCK_FAST")
        .ok()
        .and_then(|v| rf_core::FastClock::parse(&v))
    {
        tracing::warn!(?fast, "wall clock runs fast (RF_CLOCK_FAST)");
        return std::sync::Arc::new(fast);
    }
    match std::env::var("RF_CLOCK_AHEAD_MS")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
    {
        Some(ahead) => {
            tracing::warn!(ahead_ms = ahead, "wall clock set ahead (RF_CLOCK_AHEAD_MS)");
            std::sync::Arc::new(Ahead(ahead))
        }
        None => std::sync::Arc::new(rf_core::SystemClock),
    }
}

struct Ahead(i64);
impl rf_core::Clock for Ahead {
    fn now_ms(&self) -> i64 {
        rf_core::Clock::now_ms(&rf_core::SystemClock) + self.0
    }
}
