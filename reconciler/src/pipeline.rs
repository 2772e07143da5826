//! The reconciler loop: poll every region's history (`Reconciler::offer`), and every commit
//! interval release what all watermarks have passed (`Reconciler::release`).
//!
//! Recovery, not exit: a failed send, commit or start (a home cluster down or cut off, a
//! fenced producer) drops the `Reconciler` and starts it again from the log after a backoff,
//! the way the processor re-adopts after an abort: fence, adopt our own output, re-read the
//! histories from the adopted positions. Only fatal errors (configuration, a region name that
//! does not match its cluster's history) stop the process.

use crate::config::{Assignment, Config};
use crate::membership::Member;
use crate::reconciler::{static_partitions, Offered, Reconciler};
use crate::stats::Stats;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;
use rf_core::{Clock, SystemClock};
use rf_runtime::{Error, Shutdown};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest wait between two recovery attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

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
    let (s1, s2) = (stats.clone(), stats.clone());
    let base = rf_runtime::http::Base {
        registry: stats.metrics.registry.clone(),
        before_scrape: Arc::new(move || s1.before_scrape()),
        ready: Arc::new(move || s2.is_ready()),
    };
    let http =
        rf_runtime::http::serve_unless_empty(&cfg.http_addr, base, axum::Router::new(), &shutdown)?;
    *stats.http_addr.lock().expect("addr lock") = http.as_ref().map(|h| h.addr);
    // The group membership outlives each life of the `Reconciler`: a recovery does not
    // leave the group (which would move partitions for nothing).
    let member = match cfg.assignment {
        Assignment::Group => Some(Member::join(&cfg)?),
        Assignment::Static => None,
    };
    let mut backoff = Duration::from_millis(500);
    loop {
        let started = Instant::now();
        match run_once(&cfg, &shutdown, clock.clone(), &stats, member.as_ref()) {
            Ok(Life::Stopped) => break,
            Ok(Life::Reassigned) => {
                stats.ready.store(0, Ordering::SeqCst);
                continue;
            }
            Err(e) if e.is_retriable() && !shutdown.is_triggered() => {
                stats.ready.store(0, Ordering::SeqCst);
                stats.metrics.recoveries.inc();
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(500);
                }
                tracing::warn!(error = %e, ?backoff, "reconciler failed; re-adopting its output and continuing");
                shutdown.sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => return Err(e),
        }
        if shutdown.is_triggered() {
            break;
        }
    }
    tracing::info!("reconciler stopped");
    Ok(())
}

/// How one life of the reconciler ended.
enum Life {
    Stopped,
    /// The group moved partition indexes: start again with the new assignment.
    Reassigned,
}

/// One life of the reconciler: take the partition indexes (static, or the group's current
/// assignment), start from the log, then merge until shutdown, an error, or a rebalance.
fn run_once(
    cfg: &Config,
    shutdown: &Shutdown,
    clock: Arc<dyn Clock>,
    stats: &Arc<Stats>,
    member: Option<&Member>,
) -> Result<Life, Error> {
    let commit_every = Duration::from_millis(cfg.commit_interval_ms);
    // A home cluster that does not answer yet is waited for (the log names it every few
    // seconds), not a start that fails and retries with a less telling error.
    if !rf_runtime::kafka::wait_for_cluster(
        &cfg.home_bootstrap_servers,
        &cfg.kafka,
        "home cluster",
        shutdown,
    ) {
        return Ok(Life::Stopped);
    }
    let owned = match member {
        None => static_partitions(cfg)?,
        Some(m) => loop {
            if shutdown.is_triggered() {
                return Ok(Life::Stopped);
            }
            if let Some(ps) = m.poll() {
                break ps;
            }
            std::thread::sleep(Duration::from_millis(20));
        },
    };
    let (mut rec, sources) = Reconciler::start(cfg.clone(), &owned, clock, stats.clone())?;
    stats.ready.store(1, Ordering::SeqCst);
    let mut last_commit = Instant::now();
    while !shutdown.is_triggered() {
        // A rebalance is seen here, between two releases. Nothing more is written: the
        // group hands the revoked indexes out once every member has rejoined, which this
        // poll just did, and their next owner adopts what is committed. What was read and
        // not yet released is read again by whoever owns each index next.
        if let Some(m) = member {
            let now = m.poll();
            if now.as_deref() != Some(&owned[..]) {
                tracing::info!(was = ?owned, now = ?now, "partition indexes reassigned; restarting on the new assignment");
                return Ok(Life::Reassigned);
            }
        }
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
                        if rec.offer(&src.region, &m)? == Offered::Stalled {
                            // Kafka keeps what follows; nothing past it is fetched.
                            let mut tpl = TopicPartitionList::new();
                            tpl.add_partition(m.topic(), m.partition());
                            src.consumer.pause(&tpl)?;
                        }
                    }
                }
            }
        }
        if got == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        {
            let flow = rec.flow_control();
            for (region, p, pause) in flow
                .pause
                .iter()
                .map(|(r, p)| (r, p, true))
                .chain(flow.resume.iter().map(|(r, p)| (r, p, false)))
            {
                let Some(src) = sources.iter().find(|s| &s.region == region) else {
                    continue;
                };
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&cfg.history_topic, *p);
                if pause {
                    src.consumer.pause(&tpl)?;
                } else {
                    src.consumer.resume(&tpl)?;
                }
            }
        }
        if last_commit.elapsed() >= commit_every {
            rec.release()?;
            last_commit = Instant::now();
        }
    }
    rec.release()?;
    Ok(Life::Stopped)
}
