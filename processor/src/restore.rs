//! Invariant 3: before producing for a partition, read its history from the offset the
//! local store reflects to the end, and adopt what is there (state, dedup ids, HLC, input
//! position). With no local store this rebuilds from offset 0. For the regional view it
//! reads from the store's `pending_from` when that is lower: the own events the view held
//! in memory only (`view_pending_hold_ms`), already folded, are returned to be held again.

use crate::config::Config;
use crate::fold::PartitionFold;
use crate::records::SOURCE_OFFSET_NAMES;
use crate::store::{PartitionMeta, StateStore, StoreBatch};
use rdkafka::message::Message;
use rf_core::{Clock, SystemClock};
use rf_runtime::error::Result;
use rf_runtime::kafka::{abort_orphaned, fence_writer, header_i64, header_str, read_to_end};
use rf_schemas::Codec;
use std::time::{Duration, Instant};

pub struct Restored {
    pub fold: PartitionFold,
    /// The summary of this partition's pending own events in the store (the events stay
    /// there), and the own events read from the history since `pending_from` (for the
    /// caller to reconcile with the view; empty unless asked for).
    pub stored_pending: Vec<(String, rf_core::view::PendingKey)>,
    pub pending_from: i64,
    pub adopted_own: Vec<rf_schemas::Event>,
    /// The view's checkpoint of this partition (empty unless asked for): the next
    /// `reconciled` offset and the replicas as of it.
    pub view_next: i64,
    pub view_replicas: Vec<(String, rf_core::view::Replica)>,
    pub replayed: u64,
    pub elapsed: Duration,
}

/// Restore `partition`; with `with_pending`, also return the regional view's pending own
/// events of this partition (the stored ones, and those adopted from the history tail).
/// The view itself is not touched here: its lock is never held across Kafka I/O.
pub fn restore_partition(
    cfg: &Config,
    store: &dyn StateStore,
    partition: i32,
    own_writer: &str,
    with_pending: bool,
) -> Result<Restored> {
    let started = Instant::now();
    let meta = store.meta(partition)?.unwrap_or(PartitionMeta {
        input_next: -1,
        ..PartitionMeta::default()
    });
    let _span = tracing::info_span!("restore", partition, from = meta.history_next).entered();
    let mut fold = PartitionFold::new(partition, &cfg.region, cfg.max_clock_offset_ms, meta)
        .with_rules(std::sync::Arc::new(cfg.clone()));
    let mut replayed = 0u64;
    let mut batch = StoreBatch::default();
    let (stored_pending, (view_next, view_replicas)) = if with_pending {
        (store.pending_keys(partition)?, store.view(partition)?)
    } else {
        (Vec::new(), (0, Vec::new()))
    };
    let mut adopted_own = Vec::new();
    // Own events below `history_next` are folded already; those at or after `pending_from`
    // the view held in memory only, and are read again for it alone.
    let folded_below = meta.history_next;
    let pending_from = if with_pending {
        store
            .pending_from(partition)?
            .map_or(folded_below, |f| f.min(folded_below))
    } else {
        folded_below
    };
    let mut reread = 0u64;
    let mut from = pending_from;
    // The writer of the last record read, and whether that record was its handoff.
    let last_writer: std::cell::RefCell<Option<(String, bool)>> = Default::default();
    let mut adopt = |m: &rdkafka::message::BorrowedMessage<'_>| -> Result<()> {
        if m.offset() < folded_below {
            // As `fold.adopt` says which are new below: accepted events, not heartbeats.
            let own = |ev: &rf_schemas::Event| {
                ev.region.as_deref() == Some(cfg.region.as_str())
                    && ev.refusal.is_none()
                    && !matches!(ev.op, rf_schemas::Op::Heartbeat)
            };
            match m.payload().map(|p| Codec::event().decode(p)) {
                Some(Ok(ev)) if own(&ev) => {
                    reread += 1;
                    adopted_own.push(ev);
                }
                _ => {}
            }
            return Ok(());
        }
        if let Some(w) = header_str(m, rf_schemas::headers::WRITER) {
            let handed_off = header_str(m, rf_schemas::headers::HANDOFF).is_some();
            *last_writer.borrow_mut() = Some((w, handed_off));
        }
        let Some(payload) = m.payload() else {
            return Ok(());
        };
        match Codec::event().decode(payload) {
            Ok(ev) => {
                replayed += 1;
                let new = fold.adopt(store, &ev, header_i64(m, SOURCE_OFFSET_NAMES))?;
                let own = ev.region.as_deref() == Some(cfg.region.as_str());
                if new && with_pending && own && ev.refusal.is_none() {
                    adopted_own.push(ev);
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
    // The partition's last writer, if another instance that did not hand the partition
    // over (`rf-handoff` on its last record), may still be writing: a previous owner that
    // has not yet seen its revocation (`read_to_end` then stops at the records written
    // before the read began), or a zombie (paused, cut off) whose group generation fences
    // its commits on Kafka but not on Tansu (measured: `processor_zombie`). Fence its
    // transactional id, then read on from where we stopped: what it wrote before the fence
    // (committed, or aborted by the fence and, on Tansu, still visible) is in the log, and
    // the log is the truth. Without this second read those records were never adopted and
    // their inputs, not committed, were processed again (`processor_scale_out`, CI).
    let previous = last_writer
        .borrow_mut()
        .take()
        .filter(|(w, handed_off)| w != own_writer && !handed_off)
        .map(|(w, _)| w);
    let next = match previous {
        Some(w) => {
            tracing::info!(partition, writer = %w, "fencing the partition's previous writer");
            fence_writer(bs, &cfg.kafka, &w)?;
            read_to_end(bs, &cfg.kafka, topic, partition, next, timeout, &mut adopt)?
        }
        None => next,
    };
    fold.take_batch(Some(next), SystemClock.now_ms(), &mut batch);
    if with_pending {
        // The fold now reflects the whole log, so `pending_from` must be in the same batch:
        // the events from there on are in memory only until the view writes them.
        batch.pending_from.push((partition, pending_from));
    }
    store.write(batch)?;
    let elapsed = started.elapsed();
    tracing::info!(
        partition,
        from = meta.history_next,
        to = next,
        replayed,
        pending_from,
        reread_for_view = reread,
        ?elapsed,
        "restored partition from history"
    );
    Ok(Restored {
        fold,
        stored_pending,
        pending_from,
        adopted_own,
        view_next,
        view_replicas,
        replayed,
        elapsed,
    })
}
