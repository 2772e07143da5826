//! Invariant 3: before producing for a partition, read its history from the offset the
//! local store reflects to the end, and adopt what is there (state, dedup ids, HLC, input
//! position). With no local store this rebuilds from offset 0.

use crate::config::Config;
use crate::error::Result;
use crate::fold::PartitionFold;
use crate::kafka::{abort_orphaned, header_i64, read_to_end, H_SRC_OFFSET};
use crate::store::{PartitionMeta, StateStore, StoreBatch};
use rdkafka::message::Message;
use rf_core::{Clock, RegionalView, SystemClock};
use rf_schemas::Codec;
use std::time::{Duration, Instant};

pub struct Restored {
    pub fold: PartitionFold,
    pub replayed: u64,
    pub elapsed: Duration,
}

/// Restore `partition`; when `view` is given, also reload the regional view's pending own
/// events of this partition (the stored ones, plus those adopted from the history tail).
pub fn restore_partition(
    cfg: &Config,
    store: &dyn StateStore,
    partition: i32,
    own_writer: &str,
    mut view: Option<&mut RegionalView>,
) -> Result<Restored> {
    let started = Instant::now();
    let meta = store.meta(partition)?.unwrap_or(PartitionMeta {
        input_next: -1,
        ..PartitionMeta::default()
    });
    let _span = tracing::info_span!("restore", partition, from = meta.history_next).entered();
    let mut fold = PartitionFold::new(partition, &cfg.region, cfg.max_clock_offset_ms, meta);
    let mut replayed = 0u64;
    let mut batch = StoreBatch::default();
    if let Some(v) = view.as_deref_mut() {
        v.forget_partition(partition);
        for ev in store.pending(partition)? {
            if !v.accepted(partition, &ev) {
                batch
                    .pending_del
                    .push((partition, ev.key.clone(), ev.hlc.unwrap_or_default()));
            }
        }
    }
    let mut from = meta.history_next;
    let mut adopt = |m: &rdkafka::message::BorrowedMessage<'_>| -> Result<()> {
        let Some(payload) = m.payload() else {
            return Ok(());
        };
        match Codec::event().decode(payload) {
            Ok(ev) => {
                replayed += 1;
                let new = fold.adopt(store, &ev, header_i64(m, H_SRC_OFFSET))?;
                if let (true, None, Some(v)) = (new, &ev.refusal, view.as_deref_mut()) {
                    if v.accepted(partition, &ev) {
                        batch.pending_put.push((partition, ev));
                    }
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(partition, offset = m.offset(), error = %e, "skipping undecodable history record");
                Ok(())
            }
        }
    };
    let timeout = Duration::from_secs(cfg.restore_timeout_secs);
    let (bs, topic) = (&cfg.bootstrap_servers, &cfg.history_topic);
    let mut rounds = 0;
    let next = loop {
        let next = read_to_end(bs, &cfg.kafka, topic, partition, from, timeout, &mut adopt)?;
        // A previous owner that died inside a transaction holds the readable end here:
        // abort its transaction, then read on (the log, as readers now see it, is the truth).
        rounds += 1;
        if rounds > 3
            || abort_orphaned(bs, &cfg.kafka, topic, partition, next, own_writer)?.is_empty()
        {
            break next;
        }
        from = next;
    };
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
