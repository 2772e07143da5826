//! The processor loop: poll → decide (`Engine::process`) → produce into the open
//! transaction → commit every interval (`commit.rs`, invariant 2) → write the store batch.
//! Partition moves happen inside `poll`, in the rebalance callback (`rebalance.rs`).

use crate::commit::transactional_id;
use crate::config::Config;
use crate::engine::Engine;
use crate::rebalance::Ctx;
use crate::stats::{SharedStats, Stats};
use crate::store::{RocksStore, StoreOptions};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rf_core::Clock;
use rf_runtime::error::{Error, Result};
use rf_runtime::kafka::{read_committed, transactional_producer};
use rf_runtime::Shutdown;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `fetch.wait.max.ms` of the `events` consumer unless configured.
pub const DEFAULT_FETCH_WAIT_MS: &str = "10";

/// Run the processor until `shutdown` is triggered.
pub fn run(cfg: Config, shutdown: Shutdown) -> Result<()> {
    let stats = Arc::new(Stats::new(&cfg.region));
    run_with(cfg, shutdown, crate::failpoints::clock_from_env(), stats)
}

/// The `events` consumer: the group's member, read_committed, offsets moved only by
/// transactions.
fn events_consumer(cfg: &Config, store_instance_id: &str) -> Result<BaseConsumer<Ctx>> {
    // Defaults a user may override with librdkafka passthrough settings: Tansu holds an
    // empty fetch for the whole fetch.wait.max.ms (default 500) even once records arrive,
    // which would put up to half a second on the end-to-end latency.
    let mut c = rdkafka::ClientConfig::new();
    c.set("fetch.wait.max.ms", DEFAULT_FETCH_WAIT_MS);
    // librdkafka prefetches up to 64 MB per consumer by default; 16 MB (still well over
    // 100,000 events ahead) helped bring a 1M-key processor's peak RSS to about 300 MB
    // (296–321 MB measured, docs/BENCHMARKS.md).
    c.set("queued.max.messages.kbytes", "16384");
    for (k, v) in read_committed(&cfg.bootstrap_servers, &cfg.kafka, &cfg.group_id())
        .config_map()
        .iter()
    {
        c.set(k, v);
    }
    if cfg.static_membership {
        // Static membership (KIP-345): the id lives with the state, like the producer's.
        c.set(
            "group.instance.id",
            format!("rf-{}-{store_instance_id}", cfg.region),
        );
    }
    Ok(c.set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        .set("partition.assignment.strategy", &cfg.assignment_strategy)
        .set("statistics.interval.ms", "5000")
        .create_with_context(Ctx::new())?)
}

pub fn run_with(
    cfg: Config,
    shutdown: Shutdown,
    clock: Arc<dyn Clock>,
    stats: SharedStats,
) -> Result<()> {
    cfg.validate()?;
    let _ = stats.clock.set(clock.clone());
    let (s1, s2) = (stats.clone(), stats.clone());
    let base = rf_runtime::http::Base {
        registry: stats.metrics.registry.clone(),
        before_scrape: Arc::new(move || crate::serve::before_scrape(&s1)),
        ready: Arc::new(move || s2.ready.load(std::sync::atomic::Ordering::SeqCst)),
    };
    let routes = crate::serve::routes(stats.clone());
    let http = rf_runtime::http::serve_unless_empty(&cfg.http_addr, base, routes, &shutdown)?;
    *stats.http_addr.lock().expect("addr lock") = http.as_ref().map(|h| h.addr);
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| Error::Store(e.to_string()))?;
    let store = RocksStore::open_with(
        &cfg.state_dir,
        &StoreOptions {
            retention: Duration::from_secs(cfg.dedup_retention_secs),
            memtable_bytes: cfg.store_memtable_mb as usize * (1 << 20),
            block_cache_bytes: cfg.store_block_cache_mb as usize * (1 << 20),
        },
    )?;
    stats.view.reset(
        &cfg.region,
        Box::new(store.view_ids()),
        Box::new(store.pending_events()),
        rf_core::view::Hold {
            ms: cfg.view_pending_hold_ms as i64,
            max_events: cfg.view_pending_hold_max_events,
        },
    );
    let store_instance_id = store.instance_id()?;
    // A cluster that does not answer yet is waited for, not fatal (item 7 of issue 15):
    // `/ready` stays false and the log says every few seconds which servers and why.
    let what = format!("events cluster of region {}", cfg.region);
    if !rf_runtime::kafka::wait_for_cluster(&cfg.bootstrap_servers, &cfg.kafka, &what, &shutdown) {
        tracing::info!(region = %cfg.region, "processor stopped before its cluster answered");
        return Ok(());
    }
    let txn_id = transactional_id(&cfg, &store_instance_id);
    let producer = transactional_producer(&cfg.bootstrap_servers, &cfg.kafka, &txn_id)?;
    let consumer = events_consumer(&cfg, &store_instance_id)?;
    let follower = crate::follow::Follower::new(&cfg, &store_instance_id)?;
    let engine = Arc::new(Mutex::new(Engine::new(
        cfg.clone(),
        store,
        producer,
        txn_id,
        clock,
        stats,
        follower,
    )));
    let _ = consumer.context().engine.set(engine.clone());
    consumer.subscribe(&[&cfg.events_topic])?;
    tracing::info!(region = %cfg.region, topic = %cfg.events_topic, "processor started");
    let commit_every = Duration::from_millis(cfg.commit_interval_ms);
    let mut last_commit = Instant::now();
    let result = loop {
        if shutdown.is_triggered() {
            break Ok(());
        }
        let msg = consumer.poll(Duration::from_millis(10));
        let mut eng = engine.lock().expect("engine lock");
        if let Some(e) = eng.fatal.take() {
            break Err(e);
        }
        match msg {
            Some(Ok(m)) => {
                if let Err(e) = eng.process(&m).or_else(|e| eng.recover(&consumer, e)) {
                    break Err(e);
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => {}
        }
        let remote = eng.follower.as_ref().map(|f| f.poll(1000));
        for r in remote.iter().flatten() {
            eng.on_reconciled(r);
        }
        if let Err(e) = eng.donate().or_else(|e| eng.recover(&consumer, e)) {
            break Err(e);
        }
        if let Err(e) = eng.fire_schedules().or_else(|e| eng.recover(&consumer, e)) {
            break Err(e);
        }
        eng.resume_caught_up(&consumer);
        if (eng.in_txn && eng.txn_started.elapsed() >= commit_every)
            || last_commit.elapsed() >= commit_every
        {
            let r = eng
                .heartbeats()
                .or_else(|e| eng.recover(&consumer, e))
                .and_then(|_| eng.commit(&consumer));
            if let Err(e) = r {
                break Err(e);
            }
            last_commit = Instant::now();
        }
        if std::mem::take(&mut eng.rejoin) {
            drop(eng);
            if let Err(e) = rejoin(&consumer, &cfg.events_topic) {
                break Err(e);
            }
        }
    };
    {
        let mut eng = engine.lock().expect("engine lock");
        if let Err(e) = eng.commit(&consumer) {
            tracing::warn!(error = %e, "final commit failed");
        }
    }
    consumer.unsubscribe();
    // Let the consumer leave the group (revocation runs with nothing left to commit).
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline
        && !consumer
            .assignment()
            .map(|a| a.count() == 0)
            .unwrap_or(true)
    {
        let _ = consumer.poll(Duration::from_millis(50));
    }
    tracing::info!(region = %cfg.region, "processor stopped");
    result
}

/// Leave the group and join it again (the revocation runs on the next poll, then a fresh
/// assignment restores from the log): the way out of a stale assignment.
fn rejoin(consumer: &BaseConsumer<Ctx>, topic: &str) -> Result<()> {
    tracing::warn!(
        topic,
        "our assignment is stale (producer fenced); rejoining the group"
    );
    consumer.unsubscribe();
    consumer.subscribe(&[topic])?;
    Ok(())
}
