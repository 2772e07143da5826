//! Invariant 2, effects before offsets: the commit protocol. Input offsets
//! (`send_offsets_to_transaction`), history records, dead letters and heartbeats commit in
//! one Kafka transaction; only after it committed is the RocksDB batch (folded state, dedup
//! ids, the history offset it reflects, pending own events) written. A failed transaction
//! is aborted and the log re-adopted (invariant 3). The crash seams of `failpoints.rs` mark
//! each step.

use crate::config::Config;
use crate::engine::Engine;
use crate::failpoints::crash;
use crate::rebalance::Ctx;
use crate::store::{StateStore, StoreBatch};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use rf_runtime::error::{Error, Result};
use rf_runtime::kafka::{abort, commit_drained, transactional_producer};
use std::time::{Duration, Instant};

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

impl Engine {
    /// Open a transaction unless one is open.
    pub(crate) fn begin(&mut self) -> Result<()> {
        if !self.in_txn {
            self.producer.begin_transaction()?;
            self.in_txn = true;
            self.txn_started = Instant::now();
        }
        Ok(())
    }

    /// Commit the open transaction; on failure abort it and re-adopt the log.
    pub fn commit(&mut self, c: &BaseConsumer<Ctx>) -> Result<()> {
        if !self.in_txn {
            // No transaction (nothing to write to Kafka): the view's checkpoint still goes
            // to the store, so its memory stays bounded and a restart reads only the tail.
            return self.write_with_view(StoreBatch::default(), false);
        }
        match self.try_commit(c) {
            Ok(()) => {
                self.stats.counters.commits.inc();
                self.failed_in_a_row = 0;
                Ok(())
            }
            Err(e) => self.recover(c, e),
        }
    }

    /// The one way out of a failed transaction (a failed send, a failed commit, a fenced
    /// or timed-out producer): abort it, or, if the producer cannot abort (fenced, fatal),
    /// re-create it, which fences any zombie in turn; then re-adopt the log (invariant 3)
    /// and move the consumer back to the adopted positions. Only a fatal error (the state
    /// store) stops the process.
    pub fn recover(&mut self, c: &BaseConsumer<Ctx>, cause: Error) -> Result<()> {
        if !cause.is_retriable() {
            return Err(cause);
        }
        self.failed_in_a_row += 1;
        if self.failed_in_a_row > MAX_RECOVERIES_IN_A_ROW {
            tracing::error!(error = %cause, "transactions keep failing without a commit in between; stopping");
            return Err(cause);
        }
        tracing::warn!(error = %cause, "transaction failed; aborting and re-adopting the log");
        self.stats.counters.aborts.inc();
        self.in_txn = false;
        self.offsets.clear();
        // The view drops what it changed since its last checkpoint, the aborted events'
        // pending copies with it, so no later batch (a final commit after a failed
        // re-adoption) can persist them; the re-adoption below (or `forget`) reloads every
        // partition's view from its checkpoint and the log.
        for p in self.folds.keys().copied().collect::<Vec<_>>() {
            self.stats.view.revoked(p);
            self.follow_seen.remove(&p);
        }
        let fenced = cause.is_fenced();
        let aborted = if fenced {
            Err(cause)
        } else {
            abort(&self.producer)
        };
        if let Err(e2) = aborted {
            // A producer that cannot abort was fenced (or failed fatally): another instance
            // restored one of our partitions and fenced our id, so the assignment we hold
            // is stale. On Kafka the group generation would have said so; Tansu does not
            // check it, and re-adopting our partitions and writing on would race the new
            // owner, which read the log before our next records. Drop every partition and
            // rejoin the group; the next assignment restores from the log (invariant 3).
            tracing::warn!(error = %e2, fenced, "producer fenced or unable to abort; re-creating the producer and rejoining the group");
            self.stats.counters.producer_resets.inc();
            self.producer = transactional_producer(
                &self.cfg.bootstrap_servers,
                &self.cfg.kafka,
                &transactional_id(&self.cfg, &self.store.instance_id()?),
            )?;
            let owned: Vec<i32> = self.folds.keys().copied().collect();
            self.forget(&owned);
            self.set_ready(false);
            self.rejoin = true;
            return Ok(());
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
        // Every transaction sends offsets with the group metadata, heartbeat-only ones too
        // (the committed offset again, which moves nothing): the broker checks the group
        // generation, so a zombie whose partitions moved cannot commit even heartbeats.
        let mut tpl = TopicPartitionList::new();
        for p in self.folds.keys() {
            let at = self.offsets.get(p).or(self.committed.get(p));
            if let Some(o) = at {
                tpl.add_partition_offset(&self.cfg.events_topic, *p, Offset::Offset(*o))?;
            }
        }
        if tpl.count() > 0 {
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
        self.committed.extend(std::mem::take(&mut self.offsets));
        let mut batch = StoreBatch::default();
        let now = self.clock.now_ms();
        for (p, fold) in self.folds.iter_mut() {
            let next = delivered
                .max_offset
                .get(&(self.cfg.history_topic.clone(), *p))
                .map(|o| o + 1);
            fold.take_batch(next, now, &mut batch);
        }
        self.write_with_view(batch, true)?;
        self.update_gauges(c);
        fail::fail_point!("rf::after_store", |_| -> Result<()> {
            crash("rf::after_store")
        });
        Ok(())
    }

    /// Write `batch` with the view's part, as of now: pending own events to keep or delete,
    /// other regions' ids, changed replicas, and each owned partition's `reconciled` offset
    /// (next to read), so a checkpoint's replicas and offset always match. Without
    /// `always`, only when the view changed.
    fn write_with_view(&mut self, mut batch: StoreBatch, always: bool) -> Result<()> {
        let view_next = self.follow_seen.iter().map(|(p, s)| (*p, s + 1)).collect();
        let ends: Vec<(i32, i64)> = self
            .folds
            .iter()
            .map(|(p, f)| (*p, f.meta.history_next))
            .collect();
        let store = &self.store;
        let now = self.clock.now_ms();
        self.stats.view.checkpoint(now, &ends, |taken| {
            let p = taken.pending;
            let changed = !(p.puts.is_empty()
                && p.dels.is_empty()
                && p.pending_from.is_empty()
                && taken.seen_ids.is_empty()
                && taken.replicas.is_empty());
            batch.pending_put = p.puts;
            batch.pending_del = p.dels;
            batch.pending_from = p.pending_from;
            batch.view_ids = taken.seen_ids;
            batch.view_replicas = taken.replicas;
            batch.view_next = view_next;
            if always || changed {
                store.write(batch)?;
            }
            Ok(())
        })
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
        let (memtables, readers, cache) = self.store.memory();
        for (part, v) in [
            ("memtables", memtables),
            ("table_readers", readers),
            ("block_cache", cache),
        ] {
            m.rocksdb_memory_bytes
                .with_label_values(&[region, part])
                .set(v as i64);
        }
        let heap = rf_runtime::memory::sampled();
        for (part, v) in heap.parts() {
            m.heap_bytes
                .with_label_values(&[region, part])
                .set(v as i64);
        }
        m.heap_trim_micros
            .with_label_values(&[region])
            .set(heap.trim_micros as i64);
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
        self.apply_catch_up(c, &tpl);
        Ok(())
    }
}
