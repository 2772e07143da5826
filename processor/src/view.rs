//! The regional view (invariant 7) behind one entry point. `rf_core::RegionalView` is the
//! I/O-free logic; this wraps it for the processor: every change the pipeline makes to
//! the view goes through one of the methods below, and `checkpoint` hands what the view
//! changed (pending own events to put or delete, other regions' ids, replicas) to the next
//! store batch under the same lock as the write, so a reader never sees the view between
//! the two. Readers (`/state`, `/metrics`, tests) take `lock()`; the lock is never held
//! across Kafka I/O.

use crate::fold::Decision;
use rf_core::view::{Hold, PendingKey, PendingLog, Replica, SeenIds, TakenPending};
use rf_core::RegionalView;
use rf_schemas::{Event, ReconciledEvent};
use std::sync::{Mutex, MutexGuard};

/// What the view changed since the last checkpoint, for one store batch.
#[derive(Debug, Default)]
pub struct Checkpoint {
    pub pending: TakenPending,
    pub seen_ids: Vec<(String, String, i64)>,
    pub replicas: Vec<(i32, String, Replica)>,
}

#[derive(Debug)]
pub struct View {
    inner: Mutex<RegionalView>,
}

impl View {
    pub fn new(region: &str) -> View {
        View {
            inner: Mutex::new(RegionalView::new(region)),
        }
    }

    /// Read access.
    pub fn lock(&self) -> MutexGuard<'_, RegionalView> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start afresh (a new run of the processor), other regions' reconciled ids and the
    /// pending own events kept in the store once written (`checkpoint`) and older than
    /// `hold`.
    pub fn reset(
        &self,
        region: &str,
        ids: Box<dyn SeenIds>,
        pending: Box<dyn PendingLog>,
        hold: Hold,
    ) {
        *self.lock() = RegionalView::new(region)
            .with_seen_ids(ids)
            .with_pending_log(pending, hold);
    }

    /// Decide one input record against the view (`decide` gets the view when `use_view`)
    /// and, under the same lock, hold an admitted own event pending.
    pub fn admit<E>(
        &self,
        partition: i32,
        use_view: bool,
        decide: impl FnOnce(Option<&mut RegionalView>) -> Result<Decision, E>,
    ) -> Result<Decision, E> {
        let mut view = self.lock();
        let decision = decide(use_view.then_some(&mut *view))?;
        if let Decision::Accept(ev) = &decision {
            if use_view && ev.refusal.is_none() {
                view.accepted(partition, ev);
            }
        }
        Ok(decision)
    }

    /// A partition was restored: reload its checkpointed replicas and the summary of its
    /// stored pending own events, then hold pending those adopted from the history since
    /// `pending_from` (held in memory only when the store's last batch was written, or
    /// committed to Kafka after it) that it has not settled.
    pub fn restored(
        &self,
        partition: i32,
        replicas: Vec<(String, Replica)>,
        stored: Vec<(String, PendingKey)>,
        pending_from: i64,
        adopted: Vec<Event>,
    ) {
        let mut view = self.lock();
        view.forget_partition(partition);
        view.load_partition(partition, replicas);
        view.load_pending(stored);
        view.set_pending_from(partition, pending_from);
        for ev in adopted {
            view.accepted(partition, &ev);
        }
    }

    /// A partition moved away (or is about to be re-adopted): what the view changed since
    /// the last checkpoint is dropped with it.
    pub fn revoked(&self, partition: i32) {
        self.lock().forget_partition(partition);
    }

    /// A record read back from `reconciled` (of `partition`): settle own pending events.
    pub fn reconciled(&self, partition: i32, rec: &ReconciledEvent) {
        self.lock().reconciled(partition, rec);
    }

    /// Hand what the view changed to `write` (the store batch), holding the lock until it
    /// is written: the view forgets what it took, and the store answers for it from then on.
    /// `ends`: the owned partitions' history ends the batch reflects, at `now_ms`.
    pub fn checkpoint<R>(
        &self,
        now_ms: i64,
        ends: &[(i32, i64)],
        write: impl FnOnce(Checkpoint) -> R,
    ) -> R {
        let mut view = self.lock();
        let taken = Checkpoint {
            pending: view.take_pending(now_ms, ends),
            seen_ids: view.take_seen_ids(),
            replicas: view.take_replicas(),
        };
        write(taken)
    }
}
