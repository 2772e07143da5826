//! The way back from the home cluster (DESIGN.md picture): the processor reads
//! `reconciled`. Today it observes the HLCs other regions stamped (invariant 4): a timestamp
//! within the max offset of the local wall clock advances the owning history partition's
//! clock, so what this region stamps next is ordered after what it has seen; one further
//! ahead is rejected, counted (`Stats::clock_skew_rejected`) and logged, and never drags
//! the clock forward. Regional convergence (view = reconciled state + own events not yet
//! reconciled) builds on this reader.

use crate::config::Config;
use crate::error::Result;
use crate::kafka::client_config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rf_schemas::{Codec, Hlc};
use std::time::Duration;

pub struct Follower {
    consumer: BaseConsumer,
    region: String,
}

/// A timestamp another region stamped, seen on `reconciled` partition `partition`.
pub struct Remote {
    pub partition: i32,
    pub region: String,
    pub hlc: Hlc,
}

impl Follower {
    /// `None` when no home cluster is configured. Never waits for the home cluster: the
    /// consumer subscribes in the background (its own group per instance, so it sees every
    /// partition, from the end), and a home cluster that is down or cut off only delays
    /// what it reads; the region keeps working.
    pub fn new(cfg: &Config, instance_id: &str) -> Result<Option<Follower>> {
        if cfg.home_bootstrap_servers.is_empty() {
            return Ok(None);
        }
        let consumer: BaseConsumer = client_config(&cfg.home_bootstrap_servers, &cfg.kafka)
            .set(
                "group.id",
                format!("rf-follow-{}-{instance_id}", cfg.region),
            )
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "latest")
            .set("session.timeout.ms", cfg.session_timeout_ms.to_string())
            .create()?;
        consumer.subscribe(&[&cfg.reconciled_topic])?;
        Ok(Some(Follower {
            consumer,
            region: cfg.region.clone(),
        }))
    }

    /// Up to `max` timestamps other regions stamped, without blocking.
    pub fn poll(&self, max: usize) -> Vec<Remote> {
        let mut out = Vec::new();
        for _ in 0..max {
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => {
                    let Some(rec) = m.payload().and_then(|b| Codec::reconciled().decode(b).ok())
                    else {
                        continue;
                    };
                    let ev = rec.event;
                    match (ev.region, ev.hlc) {
                        (Some(r), Some(hlc)) if r != self.region => out.push(Remote {
                            partition: m.partition(),
                            region: r,
                            hlc,
                        }),
                        _ => {}
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
