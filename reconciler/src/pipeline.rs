//! The reconciler loop: poll every region's history → offer to the per-partition merge →
//! every commit interval, drain what all watermarks have passed → produce `reconciled` and
//! `conflicts` in one transaction on the home cluster, each reconciled record carrying the
//! per-region history offsets a restart resumes from.

use crate::config::Config;
use crate::merge::{resume_points, PartitionMerge};
use crate::restore::{restore_partition, H_RESUME_PREFIX};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use rf_core::{Clock, SystemClock};
use rf_processor::kafka::{
    abort, client_config, commit_drained, send, transactional_producer, TxnProducer,
};
use rf_processor::{Error, Shutdown};
use rf_schemas::Codec;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Stats {
    pub history_records: AtomicU64,
    pub reconciled: AtomicU64,
    pub conflicts: AtomicU64,
    pub commits: AtomicU64,
    pub buffered: AtomicU64,
    /// Watermark lag per region (ms behind wall clock, worst partition).
    pub watermark_lag_ms: Mutex<BTreeMap<String, i64>>,
    pub restored_records: AtomicU64,
    pub ready: AtomicI64,
    pub metrics: crate::metrics::Metrics,
    /// Where the HTTP endpoints listen, once started.
    pub http_addr: Mutex<Option<std::net::SocketAddr>>,
}

fn partition_count(bootstrap: &str, cfg: &Config, topic: &str) -> Result<i32, Error> {
    let c: BaseConsumer = client_config(bootstrap, &cfg.kafka).create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let n = md
        .topics()
        .first()
        .map(|t| t.partitions().len())
        .unwrap_or(0) as i32;
    if n == 0 {
        return Err(Error::Config {
            field: "reconciled_topic",
            reason: format!("topic {topic} has no partitions on {bootstrap}"),
        });
    }
    Ok(n)
}

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
    if !cfg.http_addr.is_empty() {
        let (s1, s2) = (stats.clone(), stats.clone());
        let addr = rf_processor::http::spawn(
            &cfg.http_addr,
            rf_processor::http::Endpoints {
                registry: stats.metrics.registry.clone(),
                before_scrape: Arc::new(move || {
                    let m = &s1.metrics;
                    let n = s1.reconciled.load(Ordering::Relaxed);
                    if n > m.reconciled.get() {
                        m.reconciled.inc_by(n - m.reconciled.get());
                    }
                    m.buffered.set(s1.buffered.load(Ordering::Relaxed) as i64);
                }),
                ready: Arc::new(move || s2.ready.load(Ordering::SeqCst) == 1),
                state: None,
                feed: None,
            },
        )?;
        *stats.http_addr.lock().expect("addr lock") = Some(addr);
    }
    let n = partition_count(&cfg.home_bootstrap_servers, &cfg, &cfg.reconciled_topic)?;
    let owned: Vec<i32> = if cfg.partitions.is_empty() {
        (0..n).collect()
    } else {
        cfg.partitions.clone()
    };
    let regions: Vec<String> = cfg.regions.iter().map(|r| r.name.clone()).collect();

    // Fence first: initialising the transactional id aborts whatever a previous
    // incarnation left open, so the restore below reads the log to its real end (until
    // then, that open transaction holds back every read_committed reader, and on Tansu it
    // would never time out).
    let producer: TxnProducer = transactional_producer(
        &cfg.home_bootstrap_servers,
        &cfg.kafka,
        &format!("rf-reconciler-{}", cfg.instance),
    )?;
    // Then adopt our own output (invariant 3).
    let mut merges: BTreeMap<i32, PartitionMerge> = BTreeMap::new();
    let mut positions: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for &p in &owned {
        let r = restore_partition(&cfg, p)?;
        stats
            .restored_records
            .fetch_add(r.records, Ordering::Relaxed);
        for region in &regions {
            positions.insert(
                (region.clone(), p),
                r.resume.get(region).copied().unwrap_or(0),
            );
        }
        merges.insert(p, r.merge);
    }

    // One consumer per region, on that region's cluster, manually assigned.
    let mut consumers = Vec::new();
    for src in &cfg.regions {
        let c: BaseConsumer = client_config(&src.bootstrap_servers, &cfg.kafka)
            .set("group.id", format!("rf-reconciler-{}", cfg.instance))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for &p in &owned {
            tpl.add_partition_offset(
                &cfg.history_topic,
                p,
                Offset::Offset(positions[&(src.name.clone(), p)]),
            )?;
        }
        c.assign(&tpl)?;
        consumers.push((src.name.clone(), c));
    }
    stats.ready.store(1, Ordering::SeqCst);
    tracing::info!(partitions = ?owned, ?regions, "reconciler started");

    let commit_every = Duration::from_millis(cfg.commit_interval_ms);
    let mut last_commit = Instant::now();
    // Conflicts found on arrival (cross-region duplicates) join the next transaction.
    let mut pending = Vec::new();
    while !shutdown.is_triggered() {
        let mut got = 0;
        for (region, c) in &consumers {
            for _ in 0..500 {
                match c.poll(Duration::ZERO) {
                    None => break,
                    Some(Err(e)) => {
                        tracing::debug!(%region, error = %e, "history consumer error");
                        break;
                    }
                    Some(Ok(m)) => {
                        got += 1;
                        let p = m.partition();
                        positions.insert((region.clone(), p), m.offset() + 1);
                        let Some(merge) = merges.get_mut(&p) else {
                            continue;
                        };
                        match m.payload().map(|b| Codec::event().decode(b)) {
                            Some(Ok(ev)) => {
                                stats.history_records.fetch_add(1, Ordering::Relaxed);
                                let conflicts = merge.offer(region, ev, m.offset(), clock.now_ms());
                                stats
                                    .conflicts
                                    .fetch_add(conflicts.len() as u64, Ordering::Relaxed);
                                pending.extend(conflicts);
                            }
                            _ => {
                                tracing::warn!(%region, partition = p, offset = m.offset(), "undecodable history record skipped")
                            }
                        }
                    }
                }
            }
        }
        if got == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        if last_commit.elapsed() >= commit_every {
            release(
                &cfg,
                &regions,
                &mut merges,
                &positions,
                &producer,
                &*clock,
                &stats,
                &mut pending,
            )?;
            last_commit = Instant::now();
        }
    }
    release(
        &cfg,
        &regions,
        &mut merges,
        &positions,
        &producer,
        &*clock,
        &stats,
        &mut pending,
    )?;
    tracing::info!("reconciler stopped");
    Ok(())
}

/// Conflicts released with a partition go to the same partition index; conflicts found
/// on arrival are keyed and left to the partitioner.
fn send_conflict(
    producer: &TxnProducer,
    topic: &str,
    partition: Option<i32>,
    c: &rf_schemas::Conflict,
) -> Result<(), Error> {
    let bytes = Codec::conflict()
        .encode(c)
        .map_err(|e| Error::Aborted(e.to_string()))?;
    let mut rec = BaseRecord::to(topic)
        .key(c.key.as_bytes())
        .payload(&bytes[..]);
    if let Some(p) = partition {
        rec = rec.partition(p);
    }
    send(producer, rec)
}

#[allow(clippy::too_many_arguments)]
fn release(
    cfg: &Config,
    regions: &[String],
    merges: &mut BTreeMap<i32, PartitionMerge>,
    positions: &BTreeMap<(String, i32), i64>,
    producer: &TxnProducer,
    clock: &dyn Clock,
    stats: &Stats,
    pending: &mut Vec<rf_schemas::Conflict>,
) -> Result<(), Error> {
    let now = clock.now_ms();
    let mut lag: BTreeMap<String, i64> = BTreeMap::new();
    let mut outputs = Vec::new();
    let mut buffered = 0u64;
    for (p, merge) in merges.iter_mut() {
        // A region with no watermark yet (nothing read from it) is left out: its lag is
        // unknown, not "since 1970".
        for r in regions {
            if let Some(wm) = merge.watermark(r) {
                let l = lag.entry(r.clone()).or_insert(0);
                *l = (*l).max(now - wm.physical_ms);
            }
        }
        let released = merge.drain(regions, now);
        buffered += merge.buffered() as u64;
        if released.reconciled.is_empty() && released.conflicts.is_empty() {
            continue;
        }
        let resume: Vec<Vec<(String, String)>> = resume_points(regions, &released.sources, |r| {
            merge.resume_after_release(r, positions.get(&(r.to_owned(), *p)).copied().unwrap_or(0))
        })
        .into_iter()
        .map(|m| {
            m.into_iter()
                .map(|(r, at)| (format!("{H_RESUME_PREFIX}{r}"), at.to_string()))
                .collect()
        })
        .collect();
        outputs.push((*p, released, resume));
    }
    for (r, l) in &lag {
        stats
            .metrics
            .watermark_lag_ms
            .with_label_values(&[r.as_str()])
            .set(*l);
    }
    *stats.watermark_lag_ms.lock().expect("lag lock") = lag;
    stats.buffered.store(buffered, Ordering::Relaxed);
    let early = std::mem::take(pending);
    if outputs.is_empty() && early.is_empty() {
        return Ok(());
    }
    let _span = tracing::info_span!(
        "release",
        partitions = ?outputs.iter().map(|(p, r, _)| (*p, r.reconciled.len())).collect::<Vec<_>>(),
        early_conflicts = early.len()
    )
    .entered();
    producer.begin_transaction()?;
    let mut n_rec = 0;
    let mut n_con = 0;
    for (p, released, resume) in &outputs {
        for (rec, resume) in released.reconciled.iter().zip(resume) {
            let bytes = Codec::reconciled()
                .encode(rec)
                .map_err(|e| Error::Aborted(e.to_string()))?;
            let mut headers = OwnedHeaders::new();
            for (k, v) in resume {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            send(
                producer,
                BaseRecord::to(&cfg.reconciled_topic)
                    .partition(*p)
                    .key(rec.event.key.as_bytes())
                    .payload(&bytes[..])
                    .headers(headers),
            )?;
            n_rec += 1;
        }
        for c in &released.conflicts {
            send_conflict(producer, &cfg.conflicts_topic, Some(*p), c)?;
            n_con += 1;
        }
    }
    for c in &early {
        send_conflict(producer, &cfg.conflicts_topic, None, c)?;
    }
    match commit_drained(producer, Duration::from_secs(30)) {
        Ok(_) => {
            stats.reconciled.fetch_add(n_rec, Ordering::Relaxed);
            stats.conflicts.fetch_add(n_con, Ordering::Relaxed);
            for (_, released, _) in &outputs {
                for rec in &released.reconciled {
                    let hlc_ms = rec.event.hlc.map_or(now, |h| h.physical_ms);
                    stats
                        .metrics
                        .reconcile_latency
                        .observe((now - hlc_ms).max(0) as f64 / 1000.0);
                }
                for c in &released.conflicts {
                    stats
                        .metrics
                        .conflicts
                        .with_label_values(&[c.kind.as_str()])
                        .inc();
                }
            }
            for c in &early {
                stats
                    .metrics
                    .conflicts
                    .with_label_values(&[c.kind.as_str()])
                    .inc();
            }
            stats.commits.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            // The released records are gone from memory: stop, and let the restart adopt
            // whatever the log shows (invariant 3) rather than guess.
            let _ = abort(producer);
            Err(e)
        }
    }
}
