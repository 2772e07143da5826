//! Admission on a caught-up view (issue 15, item 3). A partition assigned to us admits
//! nothing until its view has read `reconciled` to the end listed at assignment: its input
//! is paused (as Kafka Streams runs no task before its state is restored), and `/ready`
//! stays false. With the view checkpointed (`store.rs` `view`) that is only the tail. A home
//! cluster that does not list the end, or a catch-up longer than
//! `view_catch_up_timeout_ms`, does not stop the region: the partition then admits on the
//! view as its checkpoint left it, counted in `rf_view_degraded_total` and logged.

use crate::config::Config;
use crate::engine::Engine;
use crate::rebalance::Ctx;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;
use rf_runtime::kafka::client_config;
use std::time::{Duration, Instant};

/// A partition whose view is still reading `reconciled` up to `end`.
#[derive(Debug, Clone, Copy)]
pub struct CatchUp {
    end: i64,
    since: Instant,
}

/// How long the home cluster may take to list a partition's end.
const LIST_END_TIMEOUT: Duration = Duration::from_secs(2);

/// The end of `reconciled[partition]` on the home cluster, if it answers in time.
pub fn reconciled_end(cfg: &Config, partition: i32) -> Option<i64> {
    let c: BaseConsumer = client_config(&cfg.home_bootstrap_servers, &cfg.kafka)
        .create()
        .ok()?;
    c.fetch_watermarks(&cfg.reconciled_topic, partition, LIST_END_TIMEOUT)
        .ok()
        .map(|(_, high)| high)
}

impl Engine {
    /// A partition was assigned (or restored again) with its view at `next`: hold its
    /// admission until the view reaches `end`, if the home cluster listed one.
    pub(crate) fn begin_catch_up(&mut self, partition: i32, next: i64, end: Option<i64>) {
        match end {
            Some(end) if end > next => {
                self.catch_up.insert(
                    partition,
                    CatchUp {
                        end,
                        since: Instant::now(),
                    },
                );
            }
            Some(_) => {
                self.catch_up.remove(&partition);
            }
            None => {
                self.catch_up.remove(&partition);
                self.stats.counters.view_degraded.inc();
                tracing::warn!(partition, next, "the home cluster did not list the end of reconciled: admitting on the view's checkpoint");
            }
        }
        self.update_catch_up_gauge();
    }

    /// After an assignment (or a re-adoption's seeks) of `assigned`: pause the input of
    /// every partition still catching up, resume the others (a partition paused when it
    /// was revoked must not stay paused when it comes back).
    pub(crate) fn apply_catch_up(&self, c: &BaseConsumer<Ctx>, assigned: &TopicPartitionList) {
        let (paused, running): (Vec<i32>, Vec<i32>) = assigned
            .elements()
            .iter()
            .map(|e| e.partition())
            .partition(|p| self.catch_up.contains_key(p));
        let (paused, running) = (
            self.events_partitions(paused.into_iter()),
            self.events_partitions(running.into_iter()),
        );
        if paused.count() > 0 {
            if let Err(e) = c.pause(&paused) {
                tracing::warn!(error = %e, "could not pause partitions whose view is catching up");
            }
        }
        if running.count() > 0 {
            if let Err(e) = c.resume(&running) {
                tracing::warn!(error = %e, "could not resume partitions");
            }
        }
    }

    /// Resume each partition whose view caught up, or waited `view_catch_up_timeout_ms`.
    pub(crate) fn resume_caught_up(&mut self, c: &BaseConsumer<Ctx>) {
        if self.catch_up.is_empty() {
            return;
        }
        let timeout = Duration::from_millis(self.cfg.view_catch_up_timeout_ms);
        let mut done = Vec::new();
        for (&p, cu) in &self.catch_up {
            let read = self.follow_seen.get(&p).map_or(0, |s| s + 1);
            let fetched = self.follower.as_ref().and_then(|f| f.position(p));
            let at = read.max(fetched.unwrap_or(0));
            if at >= cu.end {
                tracing::info!(partition = p, at, elapsed = ?cu.since.elapsed(), "view caught up with reconciled; admitting");
                done.push(p);
            } else if cu.since.elapsed() >= timeout {
                self.stats.counters.view_degraded.inc();
                tracing::warn!(
                    partition = p,
                    at,
                    end = cu.end,
                    ?timeout,
                    "view did not catch up in time: admitting on what it has read"
                );
                done.push(p);
            }
        }
        if done.is_empty() {
            return;
        }
        for p in &done {
            self.catch_up.remove(p);
        }
        if let Err(e) = c.resume(&self.events_partitions(done.into_iter())) {
            tracing::warn!(error = %e, "could not resume partitions");
        }
        self.update_catch_up_gauge();
        if self.catch_up.is_empty() {
            self.set_ready(true);
        }
    }

    fn events_partitions(&self, partitions: impl Iterator<Item = i32>) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(&self.cfg.events_topic, p);
        }
        tpl
    }

    pub(crate) fn update_catch_up_gauge(&self) {
        self.stats
            .metrics
            .view_catching_up
            .with_label_values(&[self.cfg.region.as_str()])
            .set(self.catch_up.len() as i64);
    }
}
