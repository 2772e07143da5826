//! Partition moves, run inside the `events` consumer's rebalance callback on the polling
//! thread. A revocation first commits the open transaction, then forgets the partitions; an
//! assignment first restores each partition from history (invariant 3, `restore.rs`) and
//! then assigns at the group's committed input offset.

use crate::catch_up::reconciled_end;
use crate::engine::Engine;
use crate::restore::{restore_partition, Restored};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use rf_runtime::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The `events` consumer's context: the engine (set once it exists) and the input
/// partition ends seen in librdkafka's statistics.
pub struct Ctx {
    pub(crate) engine: OnceLock<Arc<Mutex<Engine>>>,
    /// Input partition ends (last stable offset) from librdkafka's statistics (every 5 s):
    /// its own `consumer_lag` counts from the consumer's committed offset, which it does not
    /// track for offsets committed through a transaction.
    pub(crate) ends: Mutex<HashMap<i32, i64>>,
}

impl Ctx {
    pub fn new() -> Ctx {
        Ctx {
            engine: OnceLock::new(),
            ends: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx::new()
    }
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
        // Cooperative (incremental) rebalancing hands over only the partitions that move;
        // eager rebalancing revokes everything and assigns the whole new set.
        let incremental = matches!(c.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if tpl.count() > 0 {
                    if let Err(e) = eng.on_assign(c, tpl) {
                        tracing::error!(error = %e, "restore on assignment failed");
                        eng.fatal = Some(e);
                    }
                }
                let assigned = if incremental {
                    c.incremental_assign(tpl)
                } else {
                    c.assign(tpl)
                };
                if let Err(e) = assigned {
                    eng.fatal = Some(e.into());
                }
                eng.apply_catch_up(c, tpl);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if tpl.count() > 0 {
                    eng.on_revoke(c, tpl);
                }
                let _ = if incremental {
                    c.incremental_unassign(tpl)
                } else {
                    c.unassign()
                };
            }
            other => {
                tracing::error!(?other, "rebalance error");
                let _ = c.unassign();
            }
        }
    }
}

impl Engine {
    /// Restore the assigned partitions (in parallel: most of a restore is waiting on the
    /// broker) and set each one's input position in `tpl`.
    pub(crate) fn on_assign(
        &mut self,
        c: &BaseConsumer<Ctx>,
        tpl: &mut TopicPartitionList,
    ) -> Result<()> {
        self.set_ready(false);
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let (cfg, store, txn_id, use_view) = (&self.cfg, &self.store, &self.txn_id, self.use_view);
        // Each thread also lists the end of the partition's `reconciled` (`catch_up.rs`).
        let restored: Vec<(Result<Restored>, Option<i64>)> = std::thread::scope(|s| {
            let handles: Vec<_> = partitions
                .iter()
                .map(|&p| {
                    s.spawn(move || {
                        let end = use_view.then(|| reconciled_end(cfg, p)).flatten();
                        (restore_partition(cfg, store, p, txn_id, use_view), end)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        (Err(Error::Store("restore thread panicked".into())), None)
                    })
                })
                .collect()
        });
        for (&p, (r, end)) in partitions.iter().zip(restored) {
            let r = r?;
            if self.use_view {
                self.stats.view.restored(
                    p,
                    r.view_replicas,
                    r.stored_pending,
                    r.pending_from,
                    r.adopted_own,
                );
                // The view reads `reconciled` on from its checkpoint: only the tail.
                self.follow_seen.insert(p, r.view_next - 1);
                if let Some(f) = &mut self.follower {
                    f.follow(p, r.view_next)?;
                    if self.cfg.view_catch_up_timeout_ms > 0 {
                        self.begin_catch_up(p, r.view_next, end);
                    }
                }
            }
            self.stats.counters.restored_records.inc_by(r.replayed);
            self.stats
                .metrics
                .restore_seconds
                .with_label_values(&[self.cfg.region.as_str()])
                .observe(r.elapsed.as_secs_f64());
            self.folds.insert(p, r.fold);
            self.schedules_assigned(p)?;
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
            // What heartbeat-only transactions re-commit: never ahead of the group's own.
            match from_group {
                Some(n) => self.committed.insert(p, n),
                None => self.committed.remove(&p),
            };
            tpl.set_partition_offset(&self.cfg.events_topic, p, offset)?;
        }
        tracing::info!(
            ?partitions,
            catching_up = self.catch_up.len(),
            "partitions assigned and restored"
        );
        self.set_ready(self.catch_up.is_empty());
        Ok(())
    }

    /// Commit what is open with a handoff heartbeat on each revoked partition, then forget
    /// the revoked partitions.
    fn on_revoke(&mut self, c: &BaseConsumer<Ctx>, tpl: &TopicPartitionList) {
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let r = self
            .handoff(&partitions)
            .or_else(|e| self.recover(c, e))
            .and_then(|_| self.commit(c));
        if let Err(e) = r {
            tracing::warn!(error = %e, "commit before revocation failed");
        }
        self.forget(&partitions);
        self.set_ready(false);
        tracing::info!(?partitions, "partitions revoked");
    }

    /// Drop what we hold of `partitions` (after a revocation, or when our assignment
    /// turned out stale): nothing more is processed or written for them.
    pub(crate) fn forget(&mut self, partitions: &[i32]) {
        for &p in partitions {
            self.folds.remove(&p);
            self.timers.forget(p);
            self.offsets.remove(&p);
            self.committed.remove(&p);
            // No stale lag for a partition we no longer own.
            let _ = self
                .stats
                .metrics
                .consumer_lag
                .remove_label_values(&[self.cfg.region.as_str(), &p.to_string()]);
            self.stats.view.revoked(p);
            self.follow_seen.remove(&p);
            self.catch_up.remove(&p);
            if let Some(f) = &mut self.follower {
                if let Err(e) = f.unfollow(p) {
                    tracing::warn!(partition = p, error = %e, "could not stop following reconciled");
                }
            }
        }
        self.update_catch_up_gauge();
    }
}
