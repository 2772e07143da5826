//! The reconciler loop: poll every region's history (`Reconciler::offer`), and every commit
//! interval release what all watermarks have passed (`Reconciler::release`).

use crate::config::Config;
use crate::reconciler::Reconciler;
use crate::stats::Stats;
use rf_core::{Clock, SystemClock};
use rf_runtime::{Error, Shutdown};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn run(cfg: Config, shutdown: Shutdown) -> Result<(), Error> {
    run_with(
        cfg,
        shutdown,
        Arc::new(SystemClock),
        Arc::new(Stats::default()),
    )
}

pub fn run_with(
    cfg: Config,
    shutdown: Shutdown,
    clock: Arc<dyn Clock>,
    stats: Arc<Stats>,
) -> Result<(), Error> {
    cfg.validate()?;
    let _http = if cfg.http_addr.is_empty() {
        None
    } else {
        let (s1, s2) = (stats.clone(), stats.clone());
        let base = rf_runtime::http::Base {
            registry: stats.metrics.registry.clone(),
            before_scrape: Arc::new(move || s1.before_scrape()),
            ready: Arc::new(move || s2.is_ready()),
        };
        let server = rf_runtime::http::serve(&cfg.http_addr, base, axum::Router::new(), &shutdown)?;
        *stats.http_addr.lock().expect("addr lock") = Some(server.addr);
        Some(server)
    };
    let commit_every = Duration::from_millis(cfg.commit_interval_ms);
    let (mut rec, sources) = Reconciler::start(cfg, clock, stats.clone())?;
    stats.ready.store(1, Ordering::SeqCst);
    let mut last_commit = Instant::now();
    while !shutdown.is_triggered() {
        let mut got = 0;
        for src in &sources {
            for _ in 0..500 {
                match src.consumer.poll(Duration::ZERO) {
                    None => break,
                    Some(Err(e)) => {
                        tracing::debug!(region = %src.region, error = %e, "history consumer error");
                        break;
                    }
                    Some(Ok(m)) => {
                        got += 1;
                        rec.offer(&src.region, &m);
                    }
                }
            }
        }
        if got == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        if last_commit.elapsed() >= commit_every {
            rec.release()?;
            last_commit = Instant::now();
        }
    }
    rec.release()?;
    tracing::info!("reconciler stopped");
    Ok(())
}
