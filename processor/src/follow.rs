//! The way back from the home cluster (DESIGN.md picture): the processor reads
//! `reconciled` partition p for each input partition p it owns (partition p of `reconciled`
//! depends only on partition p of each region's history), from the offset its view's
//! checkpoint reflects (`store.rs`, `view`), in the background: like a Kafka Streams global
//! table with a checkpoint, but partitioned with the task, so a restart or a partition move
//! reads only the tail. Each record
//! - updates the regional view (`rf_core::RegionalView`: reconciled state + own events not
//!   yet reconciled), against which inventory is admitted;
//! - if another region stamped it, is observed by the owning history partition's clock
//!   (invariant 4): within the max offset of the local wall clock it advances the clock,
//!   so what this region stamps next is ordered after what it has seen; further ahead it is
//!   rejected, counted (`Stats::clock_skew_rejected`) and logged, never adopted.

use crate::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use rf_runtime::error::Result;
use rf_runtime::kafka::read_committed;
use rf_schemas::{Codec, Hlc, ReconciledEvent};
use std::time::Duration;

pub struct Follower {
    consumer: BaseConsumer,
    topic: String,
    /// The partitions followed now.
    followed: std::collections::BTreeSet<i32>,
}

/// One record of `reconciled` partition `partition`, stamped by `region` at `hlc`.
pub struct Remote {
    pub partition: i32,
    pub offset: i64,
    pub region: String,
    pub hlc: Hlc,
    pub record: ReconciledEvent,
}

impl Follower {
    /// `None` when no home cluster is configured. Never waits for the home cluster: the
    /// consumer fetches in the background (assigned partitions, no group membership, so a
    /// cut never makes it rejoin anything), and a home cluster that is down or cut off only
    /// delays what it reads; the region keeps working.
    pub fn new(cfg: &Config, instance_id: &str) -> Result<Option<Follower>> {
        if cfg.home_bootstrap_servers.is_empty() {
            return Ok(None);
        }
        // A group id librdkafka requires; nothing is committed under it.
        let group = format!("rf-follow-{}-{instance_id}", cfg.region);
        let consumer: BaseConsumer =
            read_committed(&cfg.home_bootstrap_servers, &cfg.kafka, &group)
                .set("enable.auto.commit", "false")
                // librdkafka's default prefetch is 64 MB per consumer; 16 MB, as the
                // processor's other consumers.
                .set("queued.max.messages.kbytes", "16384")
                .create()?;
        Ok(Some(Follower {
            consumer,
            topic: cfg.reconciled_topic.clone(),
            followed: Default::default(),
        }))
    }

    /// Follow `partition` from offset `next` (a partition assigned or restored again: the
    /// offset its view's checkpoint reflects).
    pub fn follow(&mut self, partition: i32, next: i64) -> Result<()> {
        self.unfollow(partition)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(next))?;
        self.consumer.incremental_assign(&tpl)?;
        self.followed.insert(partition);
        Ok(())
    }

    /// Stop following `partition` (it moved away).
    pub fn unfollow(&mut self, partition: i32) -> Result<()> {
        if self.followed.remove(&partition) {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.topic, partition);
            self.consumer.incremental_unassign(&tpl)?;
        }
        Ok(())
    }

    /// The next offset of `partition` to read: past the last record read and past any
    /// transaction marker after it (markers take offsets but are never delivered, so the
    /// last record's offset alone may never reach the end a reader lists).
    pub fn position(&self, partition: i32) -> Option<i64> {
        let tpl = self.consumer.position().ok()?;
        match tpl.find_partition(&self.topic, partition)?.offset() {
            Offset::Offset(n) => Some(n),
            _ => None,
        }
    }

    /// Up to `max` reconciled records, without blocking.
    pub fn poll(&self, max: usize) -> Vec<Remote> {
        let mut out = Vec::new();
        for _ in 0..max {
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    let Some(rec) = m.payload().and_then(|b| Codec::reconciled().decode(b).ok())
                    else {
                        continue;
                    };
                    if let (Some(r), Some(hlc)) = (rec.event.region.clone(), rec.event.hlc) {
                        out.push(Remote {
                            partition: m.partition(),
                            offset: m.offset(),
                            region: r,
                            hlc,
                            record: rec,
                        });
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "reconciled follower error");
                    break;
                }
                None => break,
            }
        }
        out
    }
}
