//! Invariant 3 for the reconciler: before producing for a partition index, read our own
//! `reconciled` partition to its end and adopt it: released ids, merged states, the last
//! released order key, and where to resume reading each region's history.

use crate::config::Config;
use crate::merge::PartitionMerge;
use rdkafka::message::{Headers, Message};
use rf_runtime::kafka::read_to_end;
use rf_runtime::Error;
use rf_schemas::{headers, Codec};
use std::collections::BTreeMap;
use std::time::Duration;

pub struct Restored {
    pub merge: PartitionMerge,
    /// Per region: history offset to resume from.
    pub resume: BTreeMap<String, i64>,
    pub records: u64,
}

pub fn restore_partition(cfg: &Config, partition: i32) -> Result<Restored, Error> {
    let mut merge = PartitionMerge::new(partition, cfg.register_concurrency_window_ms)
        .with_max_clock_offset(cfg.max_clock_offset_ms);
    let mut resume = BTreeMap::new();
    let mut records = 0;
    read_to_end(
        &cfg.home_bootstrap_servers,
        &cfg.kafka,
        &cfg.reconciled_topic,
        partition,
        0,
        Duration::from_secs(cfg.restore_timeout_secs),
        |m| {
            if let Some(Ok(rec)) = m.payload().map(|p| Codec::reconciled().decode(p)) {
                merge.adopt(&rec);
                records += 1;
            }
            if let Some(hs) = m.headers() {
                for h in hs.iter() {
                    if let Some(region) = h.key.strip_prefix(headers::RESUME_PREFIX) {
                        if let Some(o) = h
                            .value
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .and_then(|s| s.parse().ok())
                        {
                            resume.insert(region.to_owned(), o);
                        }
                    }
                }
            }
            Ok(())
        },
    )?;
    tracing::info!(
        partition,
        records,
        ?resume,
        "reconciler restored partition from its output"
    );
    Ok(Restored {
        merge,
        resume,
        records,
    })
}
