//! The regional view (invariant 7) behind one entry point. `rf_core::RegionalView` is the
//! I/O-free logic; this wraps it for the processor: every change the pipeline makes to
//! the view goes through one of the methods below, each returning (in `Unsaved`) the
//! pending own events to persist or delete with the next commit's store batch. Readers
//! (`/state`, `/metrics`, tests) take `lock()`; the lock is never held across Kafka I/O.

use crate::fold::Decision;
use rf_core::RegionalView;
use rf_schemas::{Event, Hlc, ReconciledEvent};
use std::sync::{Mutex, MutexGuard};

/// Pending own events to write to (`put`) or delete from (`del`) the store's `pending`
/// column family with the next commit.
#[derive(Debug, Default)]
pub struct Unsaved {
    pub put: Vec<(i32, Event)>,
    pub del: Vec<(i32, String, Hlc)>,
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

    /// Start afresh (a new run of the processor), other regions' reconciled ids kept in
    /// `ids` once written (`take_seen_ids`).
    pub fn reset(&self, region: &str, ids: Box<dyn rf_core::view::SeenIds>) {
        *self.lock() = RegionalView::new(region).with_seen_ids(ids);
    }

    /// Other regions' reconciled ids read since the last call, for the next store batch
    /// (the view forgets them: the store answers for them once written).
    pub fn take_seen_ids(&self) -> Vec<(String, String, i64)> {
        self.lock().take_seen_ids()
    }

    /// Decide one input record against the view (`decide` gets the view when `use_view`)
    /// and, under the same lock, hold an admitted own event pending.
    pub fn admit<E>(
        &self,
        partition: i32,
        use_view: bool,
        unsaved: &mut Unsaved,
        decide: impl FnOnce(Option<&mut RegionalView>) -> Result<Decision, E>,
    ) -> Result<Decision, E> {
        let mut view = self.lock();
        let decision = decide(use_view.then_some(&mut *view))?;
        if let Decision::Accept(ev) = &decision {
            if use_view && ev.refusal.is_none() && view.accepted(partition, ev) {
                unsaved.put.push((partition, ev.clone()));
            }
        }
        Ok(decision)
    }

    /// A partition was restored: reload its checkpointed replicas, then its pending own
    /// events. Stored ones the view has already settled are deleted; ones adopted from the
    /// history tail that it has not are persisted.
    pub fn restored(
        &self,
        partition: i32,
        replicas: Vec<(String, rf_core::view::Replica)>,
        stored: &[Event],
        adopted: Vec<Event>,
        unsaved: &mut Unsaved,
    ) {
        let mut view = self.lock();
        view.forget_partition(partition);
        view.load_partition(partition, replicas);
        for ev in stored {
            if !view.accepted(partition, ev) {
                unsaved
                    .del
                    .push((partition, ev.key.clone(), ev.hlc.unwrap_or_default()));
            }
        }
        for ev in adopted {
            if view.accepted(partition, &ev) {
                unsaved.put.push((partition, ev));
            }
        }
    }

    /// A partition moved away.
    pub fn revoked(&self, partition: i32) {
        self.lock().forget_partition(partition);
    }

    /// A record read back from `reconciled` (of `partition`): settle own pending events.
    pub fn reconciled(&self, partition: i32, rec: &ReconciledEvent, unsaved: &mut Unsaved) {
        let settled = self.lock().reconciled(partition, rec);
        unsaved
            .del
            .extend(settled.into_iter().map(|(k, h)| (partition, k, h)));
    }

    /// The replicas changed since the last call, for the next store batch.
    pub fn take_replicas(&self) -> Vec<(i32, String, rf_core::view::Replica)> {
        self.lock().take_replicas()
    }

    pub fn pending_count(&self) -> usize {
        self.lock().pending_count()
    }
}
