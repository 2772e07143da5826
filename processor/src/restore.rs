//! Invariant 3: before producing for a partition, read its history from the offset the
//! local store reflects to the end, and adopt what is there (state, dedup ids, HLC, input
//! position). With no local store this rebuilds from offset 0.

use crate::config::Config;
use crate::error::Result;
use crate::fold::PartitionFold;
use crate::kafka::{header_i64, read_to_end, H_SRC_OFFSET};
use crate::store::{PartitionMeta, StateStore, StoreBatch};
use rdkafka::message::Message;
use rf_core::{Clock, SystemClock};
use rf_schemas::Codec;
use std::time::{Duration, Instant};

pub struct Restored {
    pub fold: PartitionFold,
    pub replayed: u64,
    pub elapsed: Duration,
}

pub fn restore_partition(cfg: &Config, store: &dyn StateStore, partition: i32) -> Result<Restored> {
    let started = Instant::now();
    let meta = store.meta(partition)?.unwrap_or(PartitionMeta {
        input_next: -1,
        ..PartitionMeta::default()
    });
    let mut fold = PartitionFold::new(partition, &cfg.region, cfg.max_clock_offset_ms, meta);
    let mut replayed = 0u64;
    let next = read_to_end(
        &cfg.bootstrap_servers,
        &cfg.kafka,
        &cfg.history_topic,
        partition,
        meta.history_next,
        Duration::from_secs(cfg.restore_timeout_secs),
        |m| {
            let Some(payload) = m.payload() else {
                return Ok(());
            };
            match Codec::event().decode(payload) {
                Ok(ev) => {
                    replayed += 1;
                    fold.adopt(store, &ev, header_i64(m, H_SRC_OFFSET))
                }
                Err(e) => {
                    tracing::warn!(partition, offset = m.offset(), error = %e, "skipping undecodable history record");
                    Ok(())
                }
            }
        },
    )?;
    let mut batch = StoreBatch::default();
    fold.take_batch(Some(next), SystemClock.now_ms(), &mut batch);
    store.write(batch)?;
    let elapsed = started.elapsed();
    tracing::info!(
        partition,
        from = meta.history_next,
        to = next,
        replayed,
        ?elapsed,
        "restored partition from history"
    );
    Ok(Restored {
        fold,
        replayed,
        elapsed,
    })
}
