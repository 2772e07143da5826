//! The processor loop: poll → decide (fold) → produce into the open transaction →
//! commit (offsets + history + DLQ + heartbeats, invariant 2) → write the store batch.
//!
//! Partition moves run inside the consumer's rebalance callback, on the polling thread:
//! a revocation first commits the open transaction; an assignment first restores each
//! partition from history (invariant 3) and then assigns at the adopted input position.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::failpoints::crash;
use crate::fold::{Decision, PartitionFold};
use crate::kafka::{
    abort, client_config, commit_drained, transactional_producer, TxnProducer, H_SRC_OFFSET,
    H_SRC_PARTITION, H_WRITER,
};
use crate::restore::restore_partition;
use crate::shutdown::Shutdown;
use crate::store::{RocksStore, StateStore, StoreBatch};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use rf_core::{Clock, RegionalView, SystemClock};
use rf_schemas::{Codec, Event};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Counters the tests and the demo read (Prometheus export comes with the metrics issue).
#[derive(Debug, Default)]
pub struct Stats {
    pub consumed: AtomicU64,
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    pub refused: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub heartbeats: AtomicU64,
    pub commits: AtomicU64,
    pub aborts: AtomicU64,
    /// Remote HLCs (from `reconciled`) rejected for being beyond the max clock offset.
    pub clock_skew_rejected: AtomicU64,
    /// Remote HLCs merged into a partition's clock.
    pub remote_observed: AtomicU64,
    /// Producers re-created after a fence or another fatal producer error.
    pub producer_resets: AtomicU64,
    pub restored_records: AtomicU64,
    /// The region's view of every key (reconciled state + own events not yet reconciled),
    /// maintained when a home cluster is configured.
    pub view: Mutex<RegionalView>,
    /// True once partitions are assigned and restored (`/ready`).
    pub ready: std::sync::atomic::AtomicBool,
    pub metrics: crate::metrics::ProcessorMetrics,
    /// Reconciled changes as they are read back (`/feed`).
    pub feed: crate::feed::Feed,
    /// Where the HTTP endpoints listen, once started.
    pub http_addr: Mutex<Option<std::net::SocketAddr>>,
}

struct Engine {
    cfg: Config,
    store: RocksStore,
    producer: TxnProducer,
    clock: Arc<dyn Clock>,
    folds: BTreeMap<i32, PartitionFold>,
    in_txn: bool,
    txn_started: Instant,
    /// Next input offset per partition to commit with the open transaction.
    offsets: BTreeMap<i32, i64>,
    last_write: HashMap<i32, Instant>,
    fatal: Option<Error>,
    /// Recoveries since the last successful commit: a record that fails every time (a
    /// poison send) must stop the process with its error, not loop forever.
    failed_in_a_row: u32,
    stats: Arc<Stats>,
    /// When the gauges were last updated.
    gauges_at: Instant,
    /// Highest `reconciled` offset applied per partition.
    follow_seen: HashMap<i32, i64>,
    /// Our producer's transactional id, written on every history record (`rf-writer`).
    txn_id: String,
    /// Whether inventory admission uses the regional view (a home cluster is configured).
    use_view: bool,
    /// Own events the view holds pending, to persist with the next commit.
    pending_put: Vec<(i32, Event)>,
    /// Pending events `reconciled` settled, to delete with the next commit.
    pending_del: Vec<(i32, String, rf_schemas::Hlc)>,
}

struct Ctx {
    engine: OnceLock<Arc<Mutex<Engine>>>,
    /// Input partition ends (last stable offset) from librdkafka's statistics (every 5 s):
    /// its own `consumer_lag` counts from the consumer's committed offset, which it does not
    /// track for offsets committed through a transaction.
    ends: Mutex<HashMap<i32, i64>>,
}

impl ClientContext for Ctx {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut ends = self.ends.lock().expect("ends lock");
        for t in statistics.topics.values() {
            for p in t.partitions.values() {
                let end = if p.ls_offset >= 0 {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                if p.partition >= 0 && end >= 0 {
                    ends.insert(p.partition, end);
                }
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(&self, c: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let Some(engine) = self.engine.get() else {
            return;
        };
        let mut eng = engine.lock().expect("engine lock");
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Err(e) = eng.on_assign(c, tpl) {
                    tracing::error!(error = %e, "restore on assignment failed");
                    eng.fatal = Some(e);
                }
                if let Err(e) = c.assign(tpl) {
                    eng.fatal = Some(e.into());
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if let Err(e) = eng.commit(c) {
                    tracing::warn!(error = %e, "commit before revocation failed");
                }
                for el in tpl.elements() {
                    eng.folds.remove(&el.partition());
                    eng.offsets.remove(&el.partition());
                    // No stale lag for a partition we no longer own.
                    let _ = eng.stats.metrics.consumer_lag.remove_label_values(&[
                        eng.cfg.region.as_str(),
                        &el.partition().to_string(),
                    ]);
                    eng.stats
                        .view
                        .lock()
                        .expect("view lock")
                        .forget_partition(el.partition());
                }
                eng.set_ready(false);
                tracing::info!(partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "partitions revoked");
                let _ = c.unassign();
            }
            other => {
                tracing::error!(?other, "rebalance error");
                let _ = c.unassign();
            }
        }
    }
}

impl Engine {
    fn set_ready(&self, ready: bool) {
        self.stats.ready.store(ready, Ordering::SeqCst);
        self.stats
            .metrics
            .ready
            .with_label_values(&[self.cfg.region.as_str()])
            .set(ready as i64);
    }

    fn on_assign(&mut self, c: &BaseConsumer<Ctx>, tpl: &mut TopicPartitionList) -> Result<()> {
        self.set_ready(false);
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        // Partitions restore in parallel: most of a restore is waiting on the broker.
        let (cfg, store, txn_id, use_view) = (&self.cfg, &self.store, &self.txn_id, self.use_view);
        let restored: Vec<Result<crate::restore::Restored>> = std::thread::scope(|s| {
            let handles: Vec<_> = partitions
                .iter()
                .map(|&p| s.spawn(move || restore_partition(cfg, store, p, txn_id, use_view)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Store("restore thread panicked".into())))
                })
                .collect()
        });
        for (&p, r) in partitions.iter().zip(restored) {
            let r = r?;
            if self.use_view {
                // Reload the partition's pending own events under a short lock: stored
                // ones the view already settled are deleted, adopted ones it has not are
                // persisted with the next commit.
                let mut view = self.stats.view.lock().expect("view lock");
                view.forget_partition(p);
                for ev in &r.stored_pending {
                    if !view.accepted(p, ev) {
                        self.pending_del
                            .push((p, ev.key.clone(), ev.hlc.unwrap_or_default()));
                    }
                }
                for ev in r.adopted_own {
                    if view.accepted(p, &ev) {
                        self.pending_put.push((p, ev));
                    }
                }
            }
            self.stats
                .restored_records
                .fetch_add(r.replayed, Ordering::Relaxed);
            self.stats
                .metrics
                .restore_seconds
                .with_label_values(&[self.cfg.region.as_str()])
                .observe(r.elapsed.as_secs_f64());
            self.folds.insert(p, r.fold);
            self.last_write
                .insert(p, Instant::now() - Duration::from_secs(3600));
        }
        let committed = c.committed_offsets(tpl.clone(), Duration::from_secs(30))?;
        for &p in &partitions {
            let from_group = committed
                .find_partition(&self.cfg.events_topic, p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(n) => Some(n),
                    _ => None,
                });
            // The group's committed offset moves only with a committed transaction, so it
            // is the resume point. The position adopted from history is only a fallback
            // when the group has none (offsets expired): on a broker that shows aborted
            // records, a partial transaction can put a later history record in the log
            // without an earlier dead letter, and resuming past it would lose that record.
            // Re-reading from the committed offset is safe: the adopted ids drop repeats.
            let from_log = Some(self.folds[&p].meta.input_next).filter(|n| *n >= 0);
            let offset = match from_group.or(from_log) {
                Some(n) => Offset::Offset(n),
                None => Offset::Beginning,
            };
            tpl.set_partition_offset(&self.cfg.events_topic, p, offset)?;
        }
        tracing::info!(?partitions, "partitions assigned and restored");
        self.set_ready(true);
        Ok(())
    }

    fn begin(&mut self) -> Result<()> {
        if !self.in_txn {
            self.producer.begin_transaction()?;
            self.in_txn = true;
            self.txn_started = Instant::now();
        }
        Ok(())
    }

    fn produce(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<()> {
        let mut rec = BaseRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(headers);
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        crate::kafka::send(&self.producer, rec)
    }

    fn process(&mut self, m: &BorrowedMessage<'_>) -> Result<()> {
        let p = m.partition();
        if !self.folds.contains_key(&p) {
            return Ok(());
        }
        self.begin()?;
        self.stats.consumed.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now_ms();
        let payload = m.payload().unwrap_or(&[]);
        let fold = self.folds.get_mut(&p).expect("fold");
        let mut view = self.stats.view.lock().expect("view lock");
        let decision = fold.decide(
            &self.store,
            self.use_view.then_some(&*view),
            m.key(),
            payload,
            now,
            self.cfg.max_record_bytes,
        )?;
        if let Decision::Accept(ev) = &decision {
            if self.use_view && ev.refusal.is_none() && view.accepted(p, ev) {
                self.pending_put.push((p, ev.clone()));
            }
        }
        drop(view);
        fold.note_input(m.offset());
        self.offsets.insert(p, m.offset() + 1);
        match decision {
            Decision::Accept(ev) => {
                if let (Some(client), Some(hlc)) = (ev.client_time_ms, ev.hlc) {
                    self.stats
                        .metrics
                        .event_to_history_seconds
                        .with_label_values(&[self.cfg.region.as_str()])
                        .observe((hlc.physical_ms - client).max(0) as f64 / 1000.0);
                }
                if ev.refusal.is_some() {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                }
                self.write_history(p, &ev, Some(m.offset()))?;
                fail::fail_point!("rf::mid_produce", |_| -> Result<()> {
                    crash("rf::mid_produce")
                });
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Decision::Duplicate => {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            Decision::Dead { class, reason } => {
                tracing::debug!(partition = p, offset = m.offset(), class, %reason, "dead-lettering");
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "rf-error-class",
                        value: Some(class),
                    })
                    .insert(Header {
                        key: "rf-error-reason",
                        value: Some(reason.as_str()),
                    })
                    .insert(Header {
                        key: "rf-source-topic",
                        value: Some(m.topic()),
                    })
                    .insert(Header {
                        key: "rf-source-partition",
                        value: Some(&p.to_string()),
                    })
                    .insert(Header {
                        key: "rf-source-offset",
                        value: Some(&m.offset().to_string()),
                    });
                let dlq = self.cfg.dlq_topic.clone();
                // An oversized record may not fit a Kafka message at all: dead-letter its
                // first max_record_bytes, with its full size in a header.
                let (payload, headers) = if class == "oversized" {
                    (
                        &payload[..payload.len().min(self.cfg.max_record_bytes)],
                        headers.insert(Header {
                            key: "rf-original-bytes",
                            value: Some(&payload.len().to_string()),
                        }),
                    )
                } else {
                    (payload, headers)
                };
                self.produce(&dlq, None, m.key().unwrap_or(&[]), payload, headers)?;
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn write_history(&mut self, p: i32, ev: &Event, src_offset: Option<i64>) -> Result<()> {
        let bytes = Codec::event()
            .encode(ev)
            .map_err(|e| Error::Aborted(e.to_string()))?;
        let mut headers = OwnedHeaders::new().insert(Header {
            key: H_WRITER,
            value: Some(self.txn_id.as_str()),
        });
        if let Some(o) = src_offset {
            headers = headers
                .insert(Header {
                    key: H_SRC_PARTITION,
                    value: Some(&p.to_string()),
                })
                .insert(Header {
                    key: H_SRC_OFFSET,
                    value: Some(&o.to_string()),
                });
        }
        let topic = self.cfg.history_topic.clone();
        self.produce(&topic, Some(p), ev.key.as_bytes(), &bytes, headers)?;
        self.last_write.insert(p, Instant::now());
        Ok(())
    }

    /// One record read back from `reconciled`: it updates the regional view (settling own
    /// pending events), and another region's HLC is observed by the partition's clock.
    fn on_reconciled(&mut self, r: &crate::follow::Remote) {
        // The follower's group may rebalance and deliver a partition again from the start:
        // each record counts once.
        let seen = self.follow_seen.entry(r.partition).or_insert(-1);
        if r.offset <= *seen {
            return;
        }
        *seen = r.offset;
        let rec = &r.record;
        let data = serde_json::json!({
            "id": format!("{}-{}", r.partition, r.offset),
            "key": rec.event.key,
            "event_id": rec.event.event_id,
            "region": rec.event.region,
            "hlc": rec.event.hlc.map(|h| serde_json::json!({"physical_ms": h.physical_ms, "logical": h.logical})),
            "outcome": rf_schemas::Outcome::SYMBOLS[rec.outcome.index() as usize],
            "reason": rec.reason,
            "state": serde_json::from_str::<serde_json::Value>(&rec.state_json).unwrap_or(serde_json::Value::Null),
        });
        self.stats
            .feed
            .publish(r.partition, r.offset, &rec.event.key, data.to_string());
        let settled = self
            .stats
            .view
            .lock()
            .expect("view lock")
            .reconciled(&r.record);
        self.pending_del
            .extend(settled.into_iter().map(|(k, h)| (r.partition, k, h)));
        if r.region != self.cfg.region {
            self.observe_remote(r);
        }
    }

    /// Invariant 4: a timestamp another region stamped advances the owning partition's
    /// clock unless it is beyond the max offset ahead; then it is counted, never adopted.
    fn observe_remote(&mut self, r: &crate::follow::Remote) {
        let now = self.clock.now_ms();
        let Some(fold) = self.folds.get_mut(&r.partition) else {
            return;
        };
        match fold.clock.observe(r.hlc, now) {
            rf_core::clock::Observed::Merged => {
                self.stats.remote_observed.fetch_add(1, Ordering::Relaxed);
            }
            rf_core::clock::Observed::RejectedSkew { ahead_ms } => {
                let n = self
                    .stats
                    .clock_skew_rejected
                    .fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!(region = %r.region, partition = r.partition, ahead_ms, rejected = n + 1, "remote HLC beyond the max clock offset: not adopted");
                }
            }
        }
    }

    /// Invariant 6 support: every idle history partition gets a heartbeat.
    fn heartbeats(&mut self) -> Result<()> {
        let interval = Duration::from_millis(self.cfg.heartbeat_interval_ms);
        let now = self.clock.now_ms();
        let idle: Vec<i32> = self
            .folds
            .keys()
            .copied()
            .filter(|p| {
                self.last_write
                    .get(p)
                    .is_none_or(|t| t.elapsed() >= interval)
            })
            .collect();
        for p in idle {
            self.begin()?;
            let hb = self.folds.get_mut(&p).expect("fold").heartbeat(now);
            self.write_history(p, &hb, None)?;
            self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Commit the open transaction; on failure abort it and re-adopt the log.
    fn commit(&mut self, c: &BaseConsumer<Ctx>) -> Result<()> {
        if !self.in_txn {
            return Ok(());
        }
        match self.try_commit(c) {
            Ok(()) => {
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                self.failed_in_a_row = 0;
                Ok(())
            }
            Err(e) => self.recover(c, e),
        }
    }

    /// The one way out of a failed transaction (a failed send, a failed commit, a fenced
    /// or timed-out producer): abort it, or, if the producer cannot abort (fenced, fatal),
    /// re-create it, which fences any zombie in turn; then re-adopt the log (invariant 3)
    /// and move the consumer back to the adopted positions. Only a state-store failure
    /// stops the process.
    fn recover(&mut self, c: &BaseConsumer<Ctx>, cause: Error) -> Result<()> {
        if matches!(cause, Error::Store(_)) {
            return Err(cause);
        }
        self.failed_in_a_row += 1;
        if self.failed_in_a_row > MAX_RECOVERIES_IN_A_ROW {
            tracing::error!(error = %cause, "transactions keep failing without a commit in between; stopping");
            return Err(cause);
        }
        tracing::warn!(error = %cause, "transaction failed; aborting and re-adopting the log");
        self.stats.aborts.fetch_add(1, Ordering::Relaxed);
        self.in_txn = false;
        self.offsets.clear();
        // The aborted events' pending copies go too; the re-adoption below reloads what
        // the log holds.
        self.pending_put.clear();
        if let Err(e2) = abort(&self.producer) {
            tracing::warn!(error = %e2, "abort failed; re-creating the producer");
            self.stats.producer_resets.fetch_add(1, Ordering::Relaxed);
            self.producer = transactional_producer(
                &self.cfg.bootstrap_servers,
                &self.cfg.kafka,
                &transactional_id(&self.cfg, &self.store.instance_id()?),
            )?;
        }
        self.readopt(c)
    }

    fn try_commit(&mut self, c: &BaseConsumer<Ctx>) -> Result<()> {
        fail::fail_point!("rf::before_commit", |_| -> Result<()> {
            crash("rf::before_commit")
        });
        let commit_started = Instant::now();
        // One span per transaction: its input offsets and, once delivered, the history
        // offsets it wrote (JSON logs carry them on every line inside).
        let span = tracing::info_span!(
            "txn",
            input = ?self.offsets,
            history = tracing::field::Empty
        );
        let _entered = span.enter();
        if !self.offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for (p, o) in &self.offsets {
                tpl.add_partition_offset(&self.cfg.events_topic, *p, Offset::Offset(*o))?;
            }
            let meta = c
                .group_metadata()
                .ok_or_else(|| Error::Aborted("no consumer group metadata".into()))?;
            self.producer
                .send_offsets_to_transaction(&tpl, &meta, Duration::from_secs(30))?;
        }
        let delivered = commit_drained(&self.producer, Duration::from_secs(30))?;
        span.record("history", tracing::field::debug(&delivered.max_offset));
        self.stats
            .metrics
            .commit_seconds
            .with_label_values(&[self.cfg.region.as_str()])
            .observe(commit_started.elapsed().as_secs_f64());
        fail::fail_point!("rf::after_commit", |_| -> Result<()> {
            crash("rf::after_commit")
        });
        self.in_txn = false;
        self.offsets.clear();
        let mut batch = StoreBatch::default();
        let now = self.clock.now_ms();
        for (p, fold) in self.folds.iter_mut() {
            let next = delivered
                .max_offset
                .get(&(self.cfg.history_topic.clone(), *p))
                .map(|o| o + 1);
            fold.take_batch(next, now, &mut batch);
        }
        batch.pending_put = std::mem::take(&mut self.pending_put);
        batch.pending_del = std::mem::take(&mut self.pending_del);
        self.store.write(batch)?;
        self.update_gauges(c);
        fail::fail_point!("rf::after_store", |_| -> Result<()> {
            crash("rf::after_store")
        });
        Ok(())
    }

    /// Consumer lag, HLC drift and RocksDB sizes, at most once a second.
    fn update_gauges(&mut self, c: &BaseConsumer<Ctx>) {
        if self.gauges_at.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.gauges_at = Instant::now();
        let m = &self.stats.metrics;
        let region = self.cfg.region.as_str();
        let ends = c.context().ends.lock().expect("ends lock").clone();
        for (p, fold) in &self.folds {
            if let (Some(end), true) = (ends.get(p), fold.meta.input_next >= 0) {
                m.consumer_lag
                    .with_label_values(&[region, &p.to_string()])
                    .set((end - fold.meta.input_next).max(0));
            }
        }
        let now = self.clock.now_ms();
        if let Some(h) = self.folds.values().map(|f| f.last_hlc().physical_ms).max() {
            m.hlc_drift_ms.with_label_values(&[region]).set(h - now);
        }
        let (live, pending) = self.store.sizes();
        m.rocksdb_live_sst_bytes
            .with_label_values(&[region])
            .set(live as i64);
        m.rocksdb_pending_compaction_bytes
            .with_label_values(&[region])
            .set(pending as i64);
    }

    /// After an abort: the log, as readers see it, is the truth. Restore every owned
    /// partition again and move the consumer to the adopted input positions.
    fn readopt(&mut self, c: &BaseConsumer<Ctx>) -> Result<()> {
        let parts: Vec<i32> = self.folds.keys().copied().collect();
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition(&self.cfg.events_topic, *p);
        }
        self.folds.clear();
        self.on_assign(c, &mut tpl)?;
        for el in tpl.elements() {
            c.seek(
                &self.cfg.events_topic,
                el.partition(),
                el.offset(),
                Duration::from_secs(10),
            )?;
        }
        Ok(())
    }
}

/// What the processor serves over HTTP: its metrics, readiness, the regional view and
/// reconciled state of a key, and the feed of reconciled changes.
fn endpoints(cfg: &Config, stats: &SharedStats) -> crate::http::Endpoints {
    let (s1, s2, s3) = (stats.clone(), stats.clone(), stats.clone());
    let region = cfg.region.clone();
    crate::http::Endpoints {
        registry: stats.metrics.registry.clone(),
        before_scrape: Arc::new(move || s1.metrics.sync(&region, &s1)),
        ready: Arc::new(move || s2.ready.load(Ordering::SeqCst)),
        state: Some(Arc::new(move |key: &str| {
            let v = s3.view.lock().ok()?;
            let view = v.view(key);
            let rec = v.reconciled_state(key).cloned();
            if view.is_none() && rec.is_none() {
                return None;
            }
            let json = |s: Option<rf_core::AggState>| {
                s.map(|s| {
                    serde_json::from_str::<serde_json::Value>(&s.to_json()).unwrap_or_default()
                })
            };
            Some(serde_json::json!({
                "key": key,
                "view": json(view),
                "reconciled": json(rec),
            }))
        })),
        feed: Some(stats.feed.clone()),
    }
}

/// `fetch.wait.max.ms` of the `events` consumer unless configured.
pub const DEFAULT_FETCH_WAIT_MS: &str = "10";

/// Recoveries allowed without a successful commit in between (a fence or a broker restart
/// needs one or two; a record that can never be sent fails every time).
const MAX_RECOVERIES_IN_A_ROW: u32 = 5;

/// One producer per instance (EOS v2 fences through the consumer-group generation). The id
/// comes from the state store, so a restart after kill -9 on the same state fences the
/// dead instance's producer and aborts its open transaction at once, instead of leaving
/// it to hold back read_committed readers until `transaction.timeout.ms`.
pub fn transactional_id(cfg: &Config, instance_id: &str) -> String {
    format!("rf-processor-{}-{instance_id}", cfg.region)
}

/// Handle onto a running processor: its counters.
pub type SharedStats = Arc<Stats>;

/// Run the processor until `shutdown` is triggered.
pub fn run(cfg: Config, shutdown: Shutdown) -> Result<()> {
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
    stats: SharedStats,
) -> Result<()> {
    cfg.validate()?;
    *stats.view.lock().expect("view lock") = RegionalView::new(&cfg.region);
    if !cfg.http_addr.is_empty() {
        let addr = crate::http::spawn(&cfg.http_addr, endpoints(&cfg, &stats))?;
        *stats.http_addr.lock().expect("addr lock") = Some(addr);
    }
    std::fs::create_dir_all(&cfg.state_dir).map_err(|e| Error::Store(e.to_string()))?;
    let store = RocksStore::open_with_retention(
        &cfg.state_dir,
        Duration::from_secs(cfg.dedup_retention_secs),
    )?;
    let store_instance_id = store.instance_id()?;
    let producer = transactional_producer(
        &cfg.bootstrap_servers,
        &cfg.kafka,
        &transactional_id(&cfg, &store_instance_id),
    )?;
    // Defaults a user may override with librdkafka passthrough settings: Tansu holds an
    // empty fetch for the whole fetch.wait.max.ms (default 500) even once records arrive,
    // which would put up to half a second on the end-to-end latency.
    let mut consumer_cfg = rdkafka::ClientConfig::new();
    consumer_cfg.set("fetch.wait.max.ms", DEFAULT_FETCH_WAIT_MS);
    // librdkafka prefetches up to 64 MB per consumer by default; 16 MB (still well over
    // 100,000 events ahead) helped bring a 1M-key processor's peak RSS to about 300 MB
    // (296–321 MB measured, docs/BENCHMARKS.md).
    consumer_cfg.set("queued.max.messages.kbytes", "16384");
    for (k, v) in client_config(&cfg.bootstrap_servers, &cfg.kafka)
        .config_map()
        .iter()
    {
        consumer_cfg.set(k, v);
    }
    if cfg.static_membership {
        // Static membership (KIP-345): the id lives with the state, like the producer's.
        consumer_cfg.set(
            "group.instance.id",
            format!("rf-{}-{store_instance_id}", cfg.region),
        );
    }
    let consumer: BaseConsumer<Ctx> = consumer_cfg
        .set("group.id", cfg.group_id())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
        .set("partition.assignment.strategy", "range")
        .set("statistics.interval.ms", "5000")
        .create_with_context(Ctx {
            engine: OnceLock::new(),
            ends: Mutex::new(HashMap::new()),
        })?;
    let engine = Arc::new(Mutex::new(Engine {
        cfg: cfg.clone(),
        store,
        producer,
        clock,
        folds: BTreeMap::new(),
        in_txn: false,
        txn_started: Instant::now(),
        offsets: BTreeMap::new(),
        last_write: HashMap::new(),
        fatal: None,
        failed_in_a_row: 0,
        stats,
        use_view: !cfg.home_bootstrap_servers.is_empty(),
        gauges_at: Instant::now(),
        follow_seen: HashMap::new(),
        txn_id: transactional_id(&cfg, &store_instance_id),
        pending_put: Vec::new(),
        pending_del: Vec::new(),
    }));
    let _ = consumer.context().engine.set(engine.clone());
    let follower = crate::follow::Follower::new(&cfg, &store_instance_id)?;
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
        if let Some(f) = &follower {
            for r in f.poll(1000) {
                eng.on_reconciled(&r);
            }
        }
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
