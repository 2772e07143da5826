//! The engine: what the processor holds between polls (folds per owned partition, the open
//! transaction, the store, the producer) and the steps of the loop that are not the commit
//! protocol (`commit.rs`) or partition moves (`rebalance.rs`): deciding one input record,
//! heartbeats, and what is read back from `reconciled`.

use crate::config::Config;
use crate::failpoints::crash;
use crate::fold::{Decision, PartitionFold};
use crate::follow::Follower;
use crate::records::{dead_letter, handoff_headers, history_headers, Source};
use crate::stats::SharedStats;
use crate::store::RocksStore;
use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rf_core::Clock;
use rf_runtime::error::{Error, Result};
use rf_runtime::kafka::{send, TxnProducer};
use rf_schemas::{Codec, Event};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Engine {
    pub(crate) cfg: Config,
    pub(crate) store: RocksStore,
    pub(crate) producer: TxnProducer,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) folds: BTreeMap<i32, PartitionFold>,
    pub(crate) in_txn: bool,
    pub(crate) txn_started: Instant,
    /// Next input offset per partition to commit with the open transaction.
    pub(crate) offsets: BTreeMap<i32, i64>,
    /// The group's committed input offset per owned partition (as assigned, then as
    /// committed): sent again with transactions that consumed nothing of that partition, so
    /// that every transaction, heartbeat-only ones too, carries the group generation and a
    /// zombie whose partitions moved is fenced at its commit.
    pub(crate) committed: BTreeMap<i32, i64>,
    pub(crate) last_write: HashMap<i32, Instant>,
    /// An error raised inside a rebalance callback, for the loop to stop with.
    pub(crate) fatal: Option<Error>,
    /// Our producer was fenced: another instance took a partition of ours, so the group
    /// assignment we hold is stale. Every partition is dropped and the loop rejoins the
    /// group (Kafka Streams' `TaskMigratedException`: close all tasks, rejoin).
    pub(crate) rejoin: bool,
    /// Recoveries since the last successful commit: a record that fails every time (a
    /// poison send) must stop the process with its error, not loop forever.
    pub(crate) failed_in_a_row: u32,
    pub(crate) stats: SharedStats,
    /// When the gauges were last updated.
    pub(crate) gauges_at: Instant,
    /// Highest `reconciled` offset applied per partition.
    pub(crate) follow_seen: HashMap<i32, i64>,
    /// Our producer's transactional id, written on every history record (`rf-writer`).
    pub(crate) txn_id: String,
    /// Whether inventory admission uses the regional view (a home cluster is configured).
    pub(crate) use_view: bool,
    /// Pending own events to persist or delete with the next commit.
    /// Reads `reconciled` for the owned partitions (`None` without a home cluster).
    pub(crate) follower: Option<Follower>,
    /// Owned partitions whose view is still catching up (input paused, `catch_up.rs`).
    pub(crate) catch_up: BTreeMap<i32, crate::catch_up::CatchUp>,
    /// Escrow keys `reconciled` changed since the last `donate`: they may hold requests
    /// for rights this region can answer.
    pub(crate) donate_due: std::collections::BTreeSet<(i32, String)>,
    /// When each schedule of the owned partitions is next evaluated (`schedules.rs`).
    pub(crate) timers: crate::schedules::Timers,
}

impl Engine {
    pub fn new(
        cfg: Config,
        store: RocksStore,
        producer: TxnProducer,
        txn_id: String,
        clock: Arc<dyn Clock>,
        stats: SharedStats,
        follower: Option<Follower>,
    ) -> Engine {
        Engine {
            use_view: !cfg.home_bootstrap_servers.is_empty(),
            cfg,
            store,
            producer,
            clock,
            folds: BTreeMap::new(),
            in_txn: false,
            txn_started: Instant::now(),
            offsets: BTreeMap::new(),
            committed: BTreeMap::new(),
            last_write: HashMap::new(),
            fatal: None,
            rejoin: false,
            failed_in_a_row: 0,
            stats,
            gauges_at: Instant::now(),
            follow_seen: HashMap::new(),
            txn_id,
            follower,
            catch_up: BTreeMap::new(),
            donate_due: Default::default(),
            timers: Default::default(),
        }
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
        send(&self.producer, rec)
    }

    /// One input record: decide (dedup, classify, admit against the view), then write its
    /// history record or dead letter into the open transaction.
    pub fn process(&mut self, m: &BorrowedMessage<'_>) -> Result<()> {
        let p = m.partition();
        if !self.folds.contains_key(&p) {
            return Ok(());
        }
        self.begin()?;
        self.stats.counters.consumed.inc();
        let now = self.clock.now_ms();
        let payload = m.payload().unwrap_or(&[]);
        let fold = self.folds.get_mut(&p).expect("fold");
        let (store, max) = (&self.store, self.cfg.max_record_bytes);
        let decision = self.stats.view.admit(p, self.use_view, |view| {
            fold.decide(store, view, m.key(), payload, now, max)
        })?;
        fold.note_input(m.offset());
        self.offsets.insert(p, m.offset() + 1);
        let region = self.cfg.region.as_str();
        match decision {
            Decision::Accept(ev) => {
                if let (Some(client), Some(hlc)) = (ev.client_time_ms, ev.hlc) {
                    self.stats
                        .metrics
                        .event_to_history_seconds
                        .with_label_values(&[region])
                        .observe((hlc.physical_ms - client).max(0) as f64 / 1000.0);
                }
                if ev.refusal.is_some() {
                    self.stats.counters.refused.inc();
                }
                if ev
                    .refusal
                    .as_deref()
                    .is_some_and(|r| r.starts_with("no local rights"))
                {
                    self.stats.counters.rights_short.inc();
                }
                if rf_core::Family::of(&ev.op) == Some(rf_core::Family::Schedule) {
                    self.timers.touch(p, &ev.key);
                }
                self.write_history(p, &ev, Some(m.offset()))?;
                fail::fail_point!("rf::mid_produce", |_| -> Result<()> {
                    crash("rf::mid_produce")
                });
                self.stats.counters.accepted.inc();
                let originated = self.folds.get_mut(&p).expect("fold").take_originated();
                for req in originated {
                    self.write_history(p, &req, None)?;
                    self.stats.counters.rights_requests.inc();
                }
            }
            Decision::Duplicate => self.stats.counters.duplicates.inc(),
            Decision::Dead { class, reason } => {
                tracing::debug!(partition = p, offset = m.offset(), class, %reason, "dead-lettering");
                let src = Source {
                    topic: m.topic(),
                    partition: p,
                    offset: m.offset(),
                };
                let (payload, headers) =
                    dead_letter(payload, class, &reason, &src, self.cfg.max_record_bytes);
                let dlq = self.cfg.dlq_topic.clone();
                self.produce(&dlq, None, m.key().unwrap_or(&[]), payload, headers)?;
                self.stats.counters.dead_lettered.inc();
            }
        }
        Ok(())
    }

    pub(crate) fn write_history(
        &mut self,
        p: i32,
        ev: &Event,
        src_offset: Option<i64>,
    ) -> Result<()> {
        let headers = history_headers(&self.txn_id, src_offset.map(|o| (p, o)));
        self.write_history_with(p, ev, headers)
    }

    fn write_history_with(&mut self, p: i32, ev: &Event, headers: OwnedHeaders) -> Result<()> {
        let bytes = Codec::event()
            .encode(ev)
            .map_err(|e| Error::Aborted(e.to_string()))?;
        let topic = self.cfg.history_topic.clone();
        self.produce(&topic, Some(p), ev.key.as_bytes(), &bytes, headers)?;
        self.last_write.insert(p, Instant::now());
        Ok(())
    }

    /// Invariant 6 support: every idle history partition gets a heartbeat.
    pub fn heartbeats(&mut self) -> Result<()> {
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
            self.stats.counters.heartbeats.inc();
        }
        Ok(())
    }

    /// The heartbeat that hands each of `partitions` over (`rf-handoff`), in the open
    /// transaction: the revocation's commit makes it the partition's last record from us,
    /// so its next owner knows we let go and need not fence us.
    pub(crate) fn handoff(&mut self, partitions: &[i32]) -> Result<()> {
        let now = self.clock.now_ms();
        for &p in partitions {
            let Some(fold) = self.folds.get_mut(&p) else {
                continue;
            };
            let hb = fold.heartbeat(now);
            self.begin()?;
            let headers = handoff_headers(&self.txn_id);
            self.write_history_with(p, &hb, headers)?;
            self.stats.counters.heartbeats.inc();
        }
        Ok(())
    }

    /// One record read back from `reconciled`: it goes to the feed, updates the regional
    /// view (settling own pending events), and another region's HLC is observed by the
    /// partition's clock.
    pub fn on_reconciled(&mut self, r: &crate::follow::Remote) {
        // Only owned partitions are followed (a record of one that just moved away may
        // still be queued), each record once.
        let Some(seen) = self.follow_seen.get_mut(&r.partition) else {
            return;
        };
        if r.offset <= *seen {
            return;
        }
        *seen = r.offset;
        self.stats.feed.publish(
            r.partition,
            r.offset,
            &r.record.event.key,
            crate::serve::feed_json(r).to_string(),
        );
        self.stats.view.reconciled(r.partition, &r.record);
        if self.use_view
            && rf_core::Family::of(&r.record.event.op) == Some(rf_core::Family::Inventory)
        {
            self.donate_due
                .insert((r.partition, r.record.event.key.clone()));
        }
        match &r.record.event.op {
            rf_schemas::Op::ScheduleFired(f) => {
                let late = self.clock.now_ms() - f.occurrence_ms;
                self.stats
                    .metrics
                    .schedule_due_to_reconciled_seconds
                    .with_label_values(&[self.cfg.region.as_str()])
                    .observe(late.max(0) as f64 / 1000.0);
                self.timers.touch(r.partition, &r.record.event.key);
            }
            rf_schemas::Op::ScheduleSet(_) | rf_schemas::Op::ScheduleCancel { .. } => {
                self.timers.touch(r.partition, &r.record.event.key);
            }
            _ => {}
        }
        if r.region != self.cfg.region {
            self.observe_remote(r);
        }
    }

    /// Escrow donation (`rf_core::escrow::donation`): for each key `reconciled` changed, give
    /// part of this region's spare rights to the regions whose requests are open, each
    /// transfer a history record in the open transaction and pending in the view at once
    /// (so it is never given twice). Partitions still catching up give nothing: their view
    /// may not show what was given already.
    pub fn donate(&mut self) -> Result<()> {
        if self.donate_due.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let region = self.cfg.region.clone();
        let probe = rf_schemas::Op::RightsRequest { qty: 1 };
        for (p, key) in std::mem::take(&mut self.donate_due) {
            if !self.folds.contains_key(&p) || self.catch_up.contains_key(&p) {
                continue;
            }
            let gifts = match self.stats.view.lock().admission_view(&key, &probe) {
                Some(rf_core::AggState::Inventory {
                    escrow: Some(e), ..
                }) => rf_core::escrow::donation(&e, &region, self.cfg.escrow_local_reserve),
                _ => Vec::new(),
            };
            for (to, qty, request) in gifts {
                self.begin()?;
                let op = rf_schemas::Op::RightsTransfer {
                    to: to.clone(),
                    qty,
                    request,
                };
                let id = format!("rights-transfer:{region}:{to}:{request}");
                let fold = self.folds.get_mut(&p).expect("fold");
                let Some(ev) = fold.originate(&self.store, &key, id, op, now)? else {
                    continue;
                };
                self.stats.view.lock().accepted(p, &ev);
                self.write_history(p, &ev, None)?;
                self.stats.counters.rights_transfers.inc();
                self.stats.counters.rights_given.inc_by(qty as u64);
                tracing::debug!(partition = p, %key, %to, qty, request, "rights given");
            }
        }
        Ok(())
    }

    /// Invariant 4: a timestamp another region stamped advances the owning partition's
    /// clock unless it is beyond the max offset ahead; then it is counted, never adopted.
    fn observe_remote(&mut self, r: &crate::follow::Remote) {
        let now = self.clock.now_ms();
        let Some(fold) = self.folds.get_mut(&r.partition) else {
            return;
        };
        match fold.clock.observe(r.hlc, now) {
            rf_core::clock::Observed::Merged => self.stats.counters.remote_observed.inc(),
            rf_core::clock::Observed::RejectedSkew { ahead_ms } => {
                let n = self.stats.counters.clock_skew_rejected.get();
                self.stats.counters.clock_skew_rejected.inc();
                if n.is_power_of_two() {
                    tracing::warn!(region = %r.region, partition = r.partition, ahead_ms, rejected = n + 1, "remote HLC beyond the max clock offset: not adopted");
                }
            }
        }
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.stats
            .ready
            .store(ready, std::sync::atomic::Ordering::SeqCst);
        self.stats
            .metrics
            .ready
            .with_label_values(&[self.cfg.region.as_str()])
            .set(ready as i64);
    }
}
