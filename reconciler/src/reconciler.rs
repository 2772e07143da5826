//! The reconciler value: per owned partition index its merge (`merge.rs`, the I/O-free
//! core), the history position read per (region, partition), conflicts found on arrival,
//! and the transactional producer on the home cluster. Its two steps are `offer` (one
//! history record in) and `release` (what every watermark has passed, out, in one
//! transaction, each reconciled record carrying the history offsets a restart resumes
//! from).

use crate::config::Config;
use crate::merge::{resume_points, PartitionMerge};
use crate::restore::restore_partition;
use crate::stats::Stats;
use crate::store::{CheckpointStore, Meta};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use rf_core::Clock;
use rf_runtime::kafka::{
    abort, client_config, commit_drained, read_committed, send, transactional_producer, TxnProducer,
};
use rf_runtime::Error;
use rf_schemas::{headers, Codec, Conflict};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub struct Reconciler {
    cfg: Config,
    regions: Vec<String>,
    merges: BTreeMap<i32, PartitionMerge>,
    /// Next history offset to read per (region, partition).
    positions: BTreeMap<(String, i32), i64>,
    /// One transactional producer per owned partition index (`transactional_id`): whoever
    /// owns an index next initialises its id and so fences this one.
    producers: BTreeMap<i32, TxnProducer>,
    clock: Arc<dyn Clock>,
    stats: Arc<Stats>,
    /// Conflicts found on arrival (cross-region duplicates, skew), per partition index:
    /// that index's next transaction's.
    early: BTreeMap<i32, Vec<Conflict>>,
    /// History partitions stopped at a record that cannot be merged: (region, partition) →
    /// its offset. Nothing of that partition is read past it; the watermark holds there.
    stalled: BTreeMap<(String, i32), i64>,
    /// History partitions flow control paused (ahead of their partition's laggard).
    held: BTreeSet<(String, i32)>,
    /// The checkpoint, written after every committed transaction.
    store: Arc<CheckpointStore>,
}

/// Fetching to stop and to start again (region, partition).
#[derive(Debug, Default)]
pub struct Flow {
    pub pause: Vec<(String, i32)>,
    pub resume: Vec<(String, i32)>,
}

/// What became of one history record offered.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered {
    /// Merged (or ignored: a partition this instance does not own).
    Taken,
    /// Its (region, partition) is stopped at this record: pause fetching it.
    Stalled,
}

/// One history consumer per region, on that region's cluster.
pub struct Source {
    pub region: String,
    pub consumer: BaseConsumer,
}

/// The transactional id of partition index `p` of `cfg.reconciled_topic`: the same for
/// every instance, so the one that takes the index over fences the one before (Kafka
/// Streams' per-task producers under exactly-once v1).
pub fn transactional_id(cfg: &Config, p: i32) -> String {
    format!("rf-reconciler-{}-{p}", cfg.reconciled_topic)
}

/// The partition indexes of a static assignment: `partitions`, or all of `reconciled`.
pub fn static_partitions(cfg: &Config) -> Result<Vec<i32>, Error> {
    if !cfg.partitions.is_empty() {
        return Ok(cfg.partitions.clone());
    }
    let n = partition_count(&cfg.home_bootstrap_servers, cfg, &cfg.reconciled_topic)?;
    Ok((0..n).collect())
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

impl Reconciler {
    /// For the partition indexes `owned`: fence, adopt our own output (invariant 3), and
    /// open one history consumer per region at the adopted positions.
    pub fn start(
        cfg: Config,
        owned: &[i32],
        clock: Arc<dyn Clock>,
        stats: Arc<Stats>,
    ) -> Result<(Reconciler, Vec<Source>), Error> {
        // A new start: no partition is stopped until a record says so.
        stats.stalled.store(0, Ordering::SeqCst);
        stats.metrics.stalled.reset();
        stats.metrics.owned.set(owned.len() as i64);
        let owned = owned.to_vec();
        let regions: Vec<String> = cfg.regions.iter().map(|r| r.name.clone()).collect();
        // Every series exists from the start, at 0, so dashboards and alerts find it.
        for r in &regions {
            stats.metrics.undecodable.with_label_values(&[r]);
            for p in &owned {
                stats
                    .metrics
                    .stalled
                    .with_label_values(&[r, &p.to_string()])
                    .set(0);
            }
        }
        // Fence first: initialising each index's transactional id aborts whatever a
        // previous owner (this instance's last life, or another instance) left open and
        // fences it, so the restore below reads the log to its real end (until then, that
        // open transaction holds back every read_committed reader, and on Tansu it would
        // never time out) and nobody else writes the index while we do.
        let mut producers = BTreeMap::new();
        for &p in &owned {
            producers.insert(
                p,
                transactional_producer(
                    &cfg.home_bootstrap_servers,
                    &cfg.kafka,
                    &transactional_id(&cfg, p),
                )?,
            );
        }
        let store = Arc::new(CheckpointStore::open(&cfg.state_dir.join(&cfg.instance))?);
        let mut merges = BTreeMap::new();
        let mut positions = BTreeMap::new();
        for &p in &owned {
            let r = restore_partition(&cfg, p, &store)?;
            stats
                .metrics
                .restore_seconds
                .observe(r.elapsed.as_secs_f64());
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
        let mut sources = Vec::new();
        for src in &cfg.regions {
            let group = format!("rf-reconciler-{}", cfg.instance);
            // librdkafka prefetches up to 64 MB per consumer by default; one consumer per
            // region makes that the largest part of the reconciler's memory during a catch-up.
            let c: BaseConsumer = read_committed(&src.bootstrap_servers, &cfg.kafka, &group)
                .set("queued.max.messages.kbytes", "16384")
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
            sources.push(Source {
                region: src.name.clone(),
                consumer: c,
            });
        }
        tracing::info!(partitions = ?owned, ?regions, "reconciler started");
        let rec = Reconciler {
            cfg,
            regions,
            merges,
            positions,
            producers,
            clock,
            stats,
            early: BTreeMap::new(),
            stalled: BTreeMap::new(),
            held: BTreeSet::new(),
            store,
        };
        Ok((rec, sources))
    }

    /// One history record of `region` read: offer it to its partition's merge.
    ///
    /// Invariant 10: a record that cannot be decoded (or carries no HLC) stops its
    /// (region, partition) right there: the position does not move past it, so resume
    /// headers keep pointing at or before it, the region's watermark holds, and nothing of
    /// that partition index is released past it. It is logged, counted and shown on
    /// `/ready` and `rf_reconciler_stalled_partitions`, and a reconciler that can decode it
    /// (a newer schema) continues from it by itself. A record stamped by another region
    /// than the one configured for that cluster is a configuration error: fatal.
    pub fn offer(&mut self, region: &str, m: &BorrowedMessage<'_>) -> Result<Offered, Error> {
        let p = m.partition();
        let at = (region.to_owned(), p);
        if self.stalled.contains_key(&at) {
            return Ok(Offered::Stalled);
        }
        if !self.merges.contains_key(&p) {
            self.positions.insert(at, m.offset() + 1);
            return Ok(Offered::Taken);
        }
        let ev = match m.payload().map(|b| Codec::event().decode(b)) {
            Some(Ok(ev)) if ev.hlc.is_some() => ev,
            other => {
                let reason = match other {
                    None => "no value".to_owned(),
                    Some(Err(e)) => format!("{} ({})", e, e.class()),
                    Some(Ok(_)) => "no hlc: not written by a processor".to_owned(),
                };
                tracing::error!(
                    %region, partition = p, offset = m.offset(), %reason,
                    "history record cannot be merged: this partition stops here until a reconciler that can read it runs"
                );
                self.stats
                    .metrics
                    .undecodable
                    .with_label_values(&[region])
                    .inc();
                self.stats
                    .metrics
                    .stalled
                    .with_label_values(&[region, &p.to_string()])
                    .set(1);
                self.stats.stalled.fetch_add(1, Ordering::SeqCst);
                self.stalled.insert(at, m.offset());
                return Ok(Offered::Stalled);
            }
        };
        if ev.region.as_deref() != Some(region) {
            let src = self.cfg.regions.iter().find(|r| r.name == region);
            return Err(Error::Config {
                field: "regions",
                reason: format!(
                    "the cluster configured as region {region:?} ({}) holds history stamped by region {:?} ({}[{p}] offset {}): each configured name must equal the `region` of that cluster's processors",
                    src.map_or("?", |r| r.bootstrap_servers.as_str()),
                    ev.region.as_deref().unwrap_or(""),
                    self.cfg.history_topic,
                    m.offset()
                ),
            });
        }
        self.positions.insert(at, m.offset() + 1);
        let merge = self.merges.get_mut(&p).expect("owned");
        self.stats.history_records.fetch_add(1, Ordering::Relaxed);
        let conflicts = merge.offer(region, ev, m.offset(), self.clock.now_ms());
        self.stats
            .conflicts
            .fetch_add(conflicts.len() as u64, Ordering::Relaxed);
        if !conflicts.is_empty() {
            self.early.entry(p).or_default().extend(conflicts);
        }
        Ok(Offered::Taken)
    }

    /// Flow control (invariant 9: Kafka is the buffer). Past `max_buffered_bytes` held in
    /// the merge, stop fetching every (region, partition) whose watermark is ahead of its
    /// partition's lowest (the laggard is never paused, so the merge can always move); start
    /// one again as soon as it is the lowest itself, and all once back under half the bound.
    pub fn flow_control(&mut self) -> Flow {
        let total: usize = self.merges.values().map(|m| m.buffered_bytes()).sum();
        let max = self.cfg.max_buffered_bytes;
        let mut flow = Flow::default();
        for (p, merge) in &self.merges {
            let min = merge.min_watermark(&self.regions);
            for r in &self.regions {
                let at = (r.clone(), *p);
                let ahead = match (merge.watermark(r), min) {
                    (Some(w), Some(m)) => w > m,
                    // Some region has no watermark yet: everyone with one is ahead.
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                let held = self.held.contains(&at);
                if held && (!ahead || total <= max / 2) {
                    flow.resume.push(at);
                } else if !held && ahead && total > max && !self.stalled.contains_key(&at) {
                    flow.pause.push(at);
                }
            }
        }
        for at in &flow.resume {
            self.held.remove(at);
        }
        self.held.extend(flow.pause.iter().cloned());
        let m = &self.stats.metrics;
        m.buffered_bytes.set(total as i64);
        m.paused.set(self.held.len() as i64);
        if !flow.pause.is_empty() {
            tracing::info!(buffered_bytes = total, paused = ?flow.pause, "flow control: pausing regions that are ahead");
        }
        flow
    }

    /// Conflicts released with a partition go to the same partition index; conflicts
    /// found on arrival are keyed and left to the partitioner.
    fn send_conflict(
        &self,
        producer: &TxnProducer,
        partition: Option<i32>,
        c: &Conflict,
    ) -> Result<(), Error> {
        let bytes = Codec::conflict()
            .encode(c)
            .map_err(|e| Error::Aborted(e.to_string()))?;
        let mut rec = BaseRecord::to(&self.cfg.conflicts_topic)
            .key(c.key.as_bytes())
            .payload(&bytes[..]);
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        send(producer, rec)
    }

    /// Release what every region's watermark has passed (invariant 6): per partition index
    /// one transaction on the home cluster, on that index's producer, with the conflicts
    /// found since the last one; all are sent first and then committed, each index's
    /// checkpoint written after its commit.
    pub fn release(&mut self) -> Result<(), Error> {
        let now = self.clock.now_ms();
        let mut lag: BTreeMap<String, i64> = BTreeMap::new();
        let mut outputs = BTreeMap::new();
        let mut buffered = 0u64;
        for (p, merge) in self.merges.iter_mut() {
            // A region with no watermark yet (nothing read from it) is left out: its lag
            // is unknown, not "since 1970".
            for r in &self.regions {
                if let Some(wm) = merge.watermark(r) {
                    let l = lag.entry(r.clone()).or_insert(0);
                    *l = (*l).max(now - wm.physical_ms);
                }
            }
            let released = merge.drain(&self.regions, now);
            if let Some(e) = merge.take_store_error() {
                // A duplicate decision could not be made: write nothing; the restart
                // re-adopts the log and the checkpoint.
                return Err(Error::Store(format!(
                    "checkpoint store read failed (partition {p}): {e}"
                )));
            }
            buffered += merge.buffered() as u64;
            if released.reconciled.is_empty() && released.conflicts.is_empty() {
                continue;
            }
            let positions = &self.positions;
            let resume: Vec<BTreeMap<String, i64>> =
                resume_points(&self.regions, &released.sources, |r| {
                    merge.resume_after_release(
                        r,
                        positions.get(&(r.to_owned(), *p)).copied().unwrap_or(0),
                    )
                });
            outputs.insert(*p, (released, resume));
        }
        for (r, l) in &lag {
            self.stats
                .metrics
                .watermark_lag_ms
                .with_label_values(&[r.as_str()])
                .set(*l);
        }
        *self.stats.watermark_lag_ms.lock().expect("lag lock") = lag;
        self.stats.buffered.store(buffered, Ordering::Relaxed);
        let early = std::mem::take(&mut self.early);
        let parts: BTreeSet<i32> = outputs.keys().chain(early.keys()).copied().collect();
        if parts.is_empty() {
            return Ok(());
        }
        let _span = tracing::info_span!(
            "release",
            partitions = ?outputs.iter().map(|(p, (r, _))| (*p, r.reconciled.len())).collect::<Vec<_>>(),
            early_conflicts = early.values().map(Vec::len).sum::<usize>()
        )
        .entered();
        let mut n_rec = 0;
        let mut n_con = 0;
        for p in &parts {
            let producer = &self.producers[p];
            producer.begin_transaction()?;
            if let Some((released, resume)) = outputs.get(p) {
                for (rec, resume) in released.reconciled.iter().zip(resume) {
                    let bytes = Codec::reconciled()
                        .encode(rec)
                        .map_err(|e| Error::Aborted(e.to_string()))?;
                    let mut hs = OwnedHeaders::new();
                    for (region, at) in resume {
                        hs = hs.insert(Header {
                            key: &headers::resume_header(region),
                            value: Some(&at.to_string()),
                        });
                    }
                    send(
                        producer,
                        BaseRecord::to(&self.cfg.reconciled_topic)
                            .partition(*p)
                            .key(rec.event.key.as_bytes())
                            .payload(&bytes[..])
                            .headers(hs),
                    )?;
                    n_rec += 1;
                }
                for c in &released.conflicts {
                    self.send_conflict(producer, Some(*p), c)?;
                    n_con += 1;
                }
            }
            for c in early.get(p).into_iter().flatten() {
                self.send_conflict(producer, None, c)?;
            }
        }
        for p in &parts {
            let delivered = match commit_drained(&self.producers[p], Duration::from_secs(30)) {
                Ok(d) => d,
                Err(e) => {
                    // The released records are gone from memory: recover by re-adopting
                    // whatever the log shows (invariant 3) rather than guess.
                    for q in &parts {
                        let _ = abort(&self.producers[q]);
                    }
                    return Err(e);
                }
            };
            // Committed: checkpoint the index, with the output offset it reflects and the
            // resume positions of its last record.
            let Some((_, resume)) = outputs.get(p) else {
                continue;
            };
            let Some(last) = delivered
                .max_offset
                .get(&(self.cfg.reconciled_topic.clone(), *p))
            else {
                continue;
            };
            let merge = self.merges.get_mut(p).expect("owned");
            let cp = merge.take_checkpoint();
            let meta = Meta {
                reconciled_next: last + 1,
                resume: resume.last().cloned().unwrap_or_default(),
            };
            self.store
                .write(&self.cfg.reconciled_topic, *p, &cp, &meta)?;
        }
        if let Some(start) = self
            .merges
            .values()
            .map(|m| m.window_start_ms())
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().min())
        {
            self.store.expire_before(start);
        }
        let mem = self.store.memory();
        for (part, v) in [
            ("memtables", mem.memtables),
            ("table_readers", mem.table_readers),
            ("block_cache", mem.block_cache),
        ] {
            self.stats
                .metrics
                .store_memory
                .with_label_values(&[part])
                .set(v as i64);
        }
        let heap = rf_runtime::memory::sampled();
        for (part, v) in heap.parts() {
            self.stats
                .metrics
                .heap
                .with_label_values(&[part])
                .set(v as i64);
        }
        self.stats
            .metrics
            .heap_trim_micros
            .set(heap.trim_micros as i64);
        let s = &self.stats;
        s.reconciled.fetch_add(n_rec, Ordering::Relaxed);
        s.conflicts.fetch_add(n_con, Ordering::Relaxed);
        for (released, _) in outputs.values() {
            for rec in &released.reconciled {
                if rec.event.op.is_reserved() {
                    s.originated.fetch_add(1, Ordering::Relaxed);
                }
                let hlc_ms = rec.event.hlc.map_or(now, |h| h.physical_ms);
                s.metrics
                    .reconcile_latency
                    .observe((now - hlc_ms).max(0) as f64 / 1000.0);
            }
        }
        for c in outputs
            .values()
            .flat_map(|(r, _)| r.conflicts.iter())
            .chain(early.values().flatten())
        {
            s.metrics
                .conflicts
                .with_label_values(&[c.kind.as_str()])
                .inc();
        }
        s.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
