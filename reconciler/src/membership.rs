//! Which partition indexes this instance reconciles (high availability). With
//! `assignment = "group"`, every reconciler instance joins one consumer group on the home
//! cluster, `rf-reconciler-group-<reconciled topic>`, subscribed to the `reconciled` topic itself:
//! the partitions of `reconciled` the group assigns to an instance are the partition indexes
//! it owns, as Kafka Streams derives its tasks from its input partitions. No extra topic and
//! no lease store: the broker's group coordinator decides, and an instance that dies (or
//! stops heartbeating) loses its partitions to the others after `session_timeout_ms`.
//!
//! The member never reads: each assignment is paused at once, and the consumer is polled only
//! to stay in the group and to see rebalances. The pipeline polls it in the same thread that
//! releases, so an eager rebalance's revocation (which the group waits for before handing the
//! partitions out again) is seen between two releases, never during one; a member that stalls
//! past its session instead is fenced by the per-partition transactional id its successor
//! initialises (`Reconciler::start`).

use crate::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, TopicPartitionList};
use rf_runtime::kafka::read_committed;
use rf_runtime::Error;
use std::sync::Mutex;
use std::time::Duration;

/// What the group has given this instance: `None` between a revocation and the next
/// assignment (a rebalance is under way).
#[derive(Default)]
struct Assigned {
    partitions: Mutex<Option<Vec<i32>>>,
}

impl ClientContext for Assigned {}

impl ConsumerContext for Assigned {
    fn rebalance(&self, c: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let mut slot = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let _ = c.assign(tpl);
                let _ = c.pause(tpl);
                let mut ps: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                ps.sort_unstable();
                tracing::info!(partitions = ?ps, "reconciler group assigned partition indexes");
                *slot = Some(ps);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!("reconciler group revoked partition indexes");
                let _ = c.unassign();
                *slot = None;
            }
            other => {
                tracing::error!(?other, "reconciler group rebalance error");
                let _ = c.unassign();
                *slot = None;
            }
        }
    }
}

pub struct Member {
    consumer: BaseConsumer<Assigned>,
}

impl Member {
    /// Join the group (in the background: the assignment arrives through `poll`).
    pub fn join(cfg: &Config) -> Result<Member, Error> {
        let group = format!("rf-reconciler-group-{}", cfg.reconciled_topic);
        let consumer: BaseConsumer<Assigned> =
            read_committed(&cfg.home_bootstrap_servers, &cfg.kafka, &group)
                .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
                .set(
                    "heartbeat.interval.ms",
                    (cfg.session_timeout_ms / 4).max(100).to_string(),
                )
                .set("auto.offset.reset", "latest")
                .create_with_context(Assigned::default())?;
        consumer.subscribe(&[&cfg.reconciled_topic])?;
        Ok(Member { consumer })
    }

    /// Serve the group protocol (rebalances arrive here) and return the current
    /// assignment, `None` while a rebalance is under way. Never blocks.
    pub fn poll(&self) -> Option<Vec<i32>> {
        // Paused partitions deliver nothing; anything fetched before the pause is dropped.
        for _ in 0..100 {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "reconciler group consumer error");
                    break;
                }
                Some(Ok(_)) => {}
            }
        }
        self.consumer
            .context()
            .partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
