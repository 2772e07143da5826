//! Firing schedules (the schedule aggregate, `rf_core::schedule`): which keys of the owned
//! partitions wait for an occurrence, when, and the engine step that fires what is due into
//! history, in the open transaction like every other record.
//!
//! A region fires a schedule's occurrence when it is the schedule's home, at the due
//! instant by its clock; any other region fires it `schedule_grace_ms` later unless the
//! regional view (reconciled state plus own pending events) shows it fired by then. The
//! occurrence id (`rf_core::schedule::occurrence_id`) is the event id in every region, so
//! the processor's dedup makes a replay or a retry fire nothing twice in one region, and
//! the reconciler's cross-region dedup keeps one copy in `reconciled` (the earliest: the
//! home's, unless it was later than a failover's).
//!
//! Timers are memory bounded by the schedules of the owned partitions (one entry each),
//! rebuilt on assignment from the store's schedule index and the view's replicas. Which
//! occurrences are done lives in state (the last fired, folded from history), so a restart
//! or a partition move fires what is due or missed by the policy, and nothing twice.

use crate::engine::Engine;
use rf_core::schedule::{occurrence_id, Schedule};
use rf_core::AggState;
use rf_runtime::error::Result;
use rf_schemas::{Firing, Op};
use std::collections::{BTreeSet, HashMap};

/// When each schedule key of the owned partitions is next looked at.
#[derive(Debug, Default)]
pub struct Timers {
    queue: BTreeSet<(i64, i32, String)>,
    /// (partition, key) → (deadline in the queue, cursor: due occurrences at or before it
    /// were decided by an earlier evaluation, fired or dropped by the missed policy).
    at: HashMap<(i32, String), (i64, i64)>,
    /// Keys to evaluate at the next step (their state changed).
    dirty: BTreeSet<(i32, String)>,
}

impl Timers {
    pub fn touch(&mut self, partition: i32, key: &str) {
        self.dirty.insert((partition, key.to_owned()));
    }

    fn set(&mut self, p: i32, key: String, deadline: Option<i64>, cursor: i64) {
        if let Some((old, _)) = self.at.remove(&(p, key.clone())) {
            self.queue.remove(&(old, p, key.clone()));
        }
        if let Some(d) = deadline {
            self.queue.insert((d, p, key.clone()));
            self.at.insert((p, key), (d, cursor));
        }
    }

    fn cursor(&self, p: i32, key: &str) -> Option<i64> {
        self.at.get(&(p, key.to_owned())).map(|(_, c)| *c)
    }

    /// Keys whose deadline has come, and the dirty ones, taken for evaluation.
    fn take_due(&mut self, now_ms: i64) -> BTreeSet<(i32, String)> {
        let mut out = std::mem::take(&mut self.dirty);
        while let Some((d, _, _)) = self.queue.first() {
            if *d > now_ms {
                break;
            }
            let (_, p, k) = self.queue.pop_first().expect("first exists");
            out.insert((p, k));
        }
        out
    }

    /// Drop a partition's timers (revoked).
    pub fn forget(&mut self, partition: i32) {
        self.queue.retain(|(_, p, _)| *p != partition);
        self.at.retain(|(p, _), _| *p != partition);
        self.dirty.retain(|(p, _)| *p != partition);
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

impl Engine {
    /// A partition was assigned and restored: every schedule it holds, in this region's own
    /// state or in the view's reconciled replicas, is evaluated at the next step.
    pub(crate) fn schedules_assigned(&mut self, p: i32) -> Result<()> {
        let mut keys = self.store.schedule_keys(p)?;
        if self.use_view {
            keys.extend(self.stats.view.lock().keys_of(p, rf_core::Family::Schedule));
        }
        for k in keys {
            self.timers.touch(p, &k);
        }
        Ok(())
    }

    /// The schedule step of the loop: evaluate the keys whose deadline came or whose state
    /// changed, and fire what is due.
    pub fn fire_schedules(&mut self) -> Result<()> {
        let now = self.clock.now_ms();
        let keys = self.timers.take_due(now);
        for (p, key) in keys {
            if !self.folds.contains_key(&p) {
                continue;
            }
            if self.catch_up.contains_key(&p) {
                // The view may not show what was fired already: look again shortly.
                self.timers.set(p, key, Some(now + 100), i64::MIN);
                continue;
            }
            self.evaluate(p, key, now)?;
        }
        self.stats
            .metrics
            .schedule_timers
            .with_label_values(&[self.cfg.region.as_str()])
            .set(self.timers.len() as i64);
        Ok(())
    }

    /// The schedule as this region knows it: its regional view with a home cluster, else
    /// its own state.
    fn schedule_state(&mut self, p: i32, key: &str) -> Result<Option<AggState>> {
        if self.use_view {
            return Ok(self.stats.view.lock().view(key));
        }
        let fold = self.folds.get_mut(&p).expect("owned");
        fold.state_of(&self.store, key)
    }

    fn evaluate(&mut self, p: i32, key: String, now: i64) -> Result<()> {
        let state = self.schedule_state(p, &key)?;
        let (spec, home, done) = match &state {
            Some(
                s @ AggState::Schedule {
                    spec: Some(spec), ..
                },
            ) => (
                spec.clone(),
                s.schedule_home().unwrap_or_default().to_owned(),
                s.schedule_done_ms(),
            ),
            _ => {
                self.timers.set(p, key, None, i64::MIN);
                return Ok(());
            }
        };
        let failover = home != self.cfg.region;
        if failover && !self.use_view {
            // Without `reconciled`, a region cannot know whether the home fired.
            self.timers.set(p, key, None, i64::MIN);
            return Ok(());
        }
        let Ok(sched) = Schedule::parse(&spec) else {
            // Validated on input; a spec in history that no longer parses (another build's
            // calendar) fires nothing here, visibly.
            tracing::warn!(partition = p, %key, cron = %spec.cron, zone = %spec.zone, "schedule does not parse: not fired");
            self.timers.set(p, key, None, i64::MIN);
            return Ok(());
        };
        let lead = if failover {
            self.cfg.schedule_grace_ms as i64
        } else {
            0
        };
        let after = done.max(self.timers.cursor(p, &key).unwrap_or(i64::MIN));
        let due = sched.due(after, now, lead, self.cfg.schedule_tolerance_ms as i64);
        let c = &self.stats.counters;
        c.schedule_missed.inc_by(due.missed);
        c.schedule_dst_skipped.inc_by(due.dst_skipped);
        if due.missed > 0 {
            tracing::info!(partition = p, %key, missed = due.missed, policy = %spec.missed, "schedule occurrences missed");
        }
        let mut missed = due.missed as i64;
        for o in &due.fire {
            let id = occurrence_id(&key, o.at_ms, o.fold);
            let op = Op::ScheduleFired(Firing {
                occurrence_ms: o.at_ms,
                fold: i32::from(o.fold),
                wall: o.wall.clone(),
                payload: spec.payload.clone(),
                failover,
                missed: std::mem::take(&mut missed),
            });
            self.begin()?;
            let fold = self.folds.get_mut(&p).expect("owned");
            let Some(ev) = fold.originate(&self.store, &key, id, op, now)? else {
                continue; // fired before (a replay, or a restart that re-evaluates)
            };
            if self.use_view {
                self.stats.view.lock().accepted(p, &ev);
            }
            self.write_history(p, &ev, None)?;
            let lateness = ev.hlc.map_or(0, |h| h.physical_ms) - o.at_ms;
            self.stats
                .metrics
                .schedule_due_to_history_seconds
                .with_label_values(&[self.cfg.region.as_str()])
                .observe(lateness.max(0) as f64 / 1000.0);
            if failover {
                self.stats.counters.schedule_failovers.inc();
            } else {
                self.stats.counters.schedule_fired.inc();
            }
            tracing::debug!(partition = p, %key, at = %o.wall, failover, "schedule fired");
        }
        let deadline = due.next.map(|n| n.at_ms.saturating_add(lead));
        self.timers.set(p, key, deadline, due.cursor_ms);
        Ok(())
    }
}
