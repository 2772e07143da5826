//! Invariant 3 for the reconciler: before producing for a partition index, adopt our own
//! output. Start from the local checkpoint (`store.rs`) when there is one, then read the
//! `reconciled` partition from the offset it reflects to the end and adopt that tail:
//! released ids, merged states, the last released order key, and where to resume reading
//! each region's history. Without a checkpoint this is a rebuild from offset 0. Either way
//! the time is logged and observed (`rf_reconciler_restore_seconds`).

use crate::config::Config;
use crate::merge::{PartitionMerge, STATE_CACHE_MAX_KEYS};
use crate::store::{CheckpointStore, Meta, StoredIds};
use rdkafka::message::{Headers, Message};
use rf_runtime::kafka::read_to_end;
use rf_runtime::Error;
use rf_schemas::{headers, Codec};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Restored {
    pub merge: PartitionMerge,
    /// Per region: history offset to resume from.
    pub resume: BTreeMap<String, i64>,
    /// `reconciled` records read (the tail past the checkpoint).
    pub records: u64,
    /// Where the tail began (the checkpoint's offset, 0 without one) and ended.
    pub from: i64,
    pub next: i64,
    pub elapsed: Duration,
}

pub fn restore_partition(
    cfg: &Config,
    partition: i32,
    store: &Arc<CheckpointStore>,
) -> Result<Restored, Error> {
    let started = Instant::now();
    let mut merge = PartitionMerge::new(partition)
        .with_max_clock_offset(cfg.max_clock_offset_ms)
        .with_retention_ms(cfg.dedup_retention_secs as i64 * 1000)
        .with_released_ids(Box::new(StoredIds {
            store: store.clone(),
            topic: cfg.reconciled_topic.clone(),
            partition,
        }))
        .with_stored_states(
            Box::new(StoredIds {
                store: store.clone(),
                topic: cfg.reconciled_topic.clone(),
                partition,
            }),
            STATE_CACHE_MAX_KEYS,
        );
    // States stay in the store (read per key as events need them): a restart loads none.
    let (meta, checkpoint) = match store.load_meta(&cfg.reconciled_topic, partition)? {
        Some((meta, loaded)) => {
            merge.load(loaded);
            (meta, true)
        }
        None => (Meta::default(), false),
    };
    let mut resume = meta.resume.clone();
    let mut records = 0;
    let next = read_to_end(
        &cfg.home_bootstrap_servers,
        &cfg.kafka,
        &cfg.reconciled_topic,
        partition,
        meta.reconciled_next,
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
    if let Some(e) = merge.take_store_error() {
        return Err(Error::Store(format!(
            "checkpoint store read failed while adopting partition {partition}: {e}"
        )));
    }
    // The tail is adopted: checkpoint it, so the next restart does not read it again.
    let cp = merge.take_checkpoint();
    store.write(
        &cfg.reconciled_topic,
        partition,
        &cp,
        &Meta {
            reconciled_next: next.max(meta.reconciled_next),
            resume: resume.clone(),
        },
    )?;
    let elapsed = started.elapsed();
    tracing::info!(
        partition,
        checkpoint,
        from = meta.reconciled_next,
        to = next,
        records,
        ?elapsed,
        ?resume,
        "reconciler restored partition from its output"
    );
    Ok(Restored {
        merge,
        resume,
        records,
        from: meta.reconciled_next,
        next,
        elapsed,
    })
}
