//! The I/O-free merge of one partition index across regions (invariants 5 and 6).
//!
//! Records are buffered in (hlc, region, event_id) order and released only once every
//! region's watermark (the highest HLC seen in its history partition, events and
//! heartbeats alike) has reached them. HLCs are strictly increasing per history
//! partition, so nothing at or below a region's watermark can still arrive from it:
//! the released sequence, and therefore every output byte, depends only on the set of
//! regional histories, not on arrival order.

use rf_core::aggregate::{apply_reconciled, merge_step};
use rf_core::{published_json, AggState, Applied, OrderKey};
use rf_schemas::{Conflict, ConflictKind, Event, Hlc, Op, Outcome, ReconciledEvent};
use rustc_hash::FxHashMap as HashMap;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Heap bytes one buffered event holds, roughly: its strings, twice (the event and its order
/// key), and the fixed parts of the entry.
fn approx_bytes(ev: &Event) -> usize {
    let op = match &ev.op {
        Op::RegisterPut { value, context, .. } => {
            value.len() + context.as_deref().map_or(0, str::len) + 32
        }
        Op::ScoreSubmit { player, .. } => player.len(),
        Op::Reserve { order_id, .. } | Op::Release { order_id } => order_id.len(),
        Op::MessagePost { author, text } => author.len() + text.len(),
        Op::Custom { aggregate, payload } => aggregate.len() + payload.len(),
        _ => 0,
    };
    2 * (ev.event_id.len() + ev.region.as_deref().map_or(0, str::len))
        + ev.key.len()
        + op
        + ev.refusal.as_deref().map_or(0, str::len)
        + 160
}

/// Default cross-region duplicate window: 7 days, the processors' default dedup retention.
pub const DEFAULT_RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, Default)]
pub struct PartitionMerge {
    pub partition: i32,
    watermarks: BTreeMap<String, Hlc>,
    /// The history offset of the record that set each region's watermark: a restart
    /// re-reads from no later than this, so it knows the watermark again at once.
    watermark_offsets: BTreeMap<String, i64>,
    /// Buffered events with the history offset they came from.
    buffer: BTreeMap<OrderKey, (Event, i64)>,
    /// History offsets buffered per region (`resume_after_release` without a scan).
    buffered_offsets: BTreeMap<String, BTreeSet<i64>>,
    /// Approximate heap bytes the buffer holds (flow control bounds it).
    buffered_bytes: usize,
    /// Released ids → the region whose copy was released and its HLC, kept for
    /// `retention_ms` on the HLC timeline behind the last released record.
    emitted: HashMap<(String, String), (String, Hlc)>,
    /// The same ids in release order (HLC order), to expire them from the front.
    emitted_order: VecDeque<(Hlc, String, String)>,
    /// How far behind a copy's HLC an earlier released copy still makes it a cross-region
    /// duplicate (and how long released ids are kept): deterministic, on the HLC timeline.
    retention_ms: i64,
    last_emitted: Option<OrderKey>,
    /// Merged states: every key's without a states backing, else a cache of at most
    /// `state_cache_keys` after each checkpoint (dirty ones always).
    states: HashMap<String, AggState>,
    stored_states: Backed<dyn StoredStates>,
    state_cache_keys: usize,
    /// Changes since the last checkpoint: keys whose state changed, ids released and ids
    /// expired.
    dirty: rustc_hash::FxHashSet<String>,
    emitted_new: Vec<(String, String, String, Hlc)>,
    emitted_gone: Vec<(String, String)>,
    /// With a backing, `emitted` holds only the ids released since the last checkpoint.
    backing: Backed<dyn ReleasedIds>,
    /// A backing lookup failed: this drain's decisions cannot be trusted
    /// (`take_store_error`; the reconciler then writes nothing and stops).
    store_error: std::cell::RefCell<Option<String>>,
    /// A region whose HLCs run more than this far ahead of our wall clock is reported
    /// (invariant 4). 0 = the default, 500 ms.
    max_clock_offset_ms: i64,
    /// Regions currently reported as skewed: one report per episode, not per event.
    skewed: std::collections::BTreeSet<String>,
}

/// Released ids older than the last checkpoint, where the merge does not hold them: the
/// reconciler's checkpoint store (point lookups behind a bloom filter), a map in tests. It must
/// answer for every id released before the last `take_checkpoint`; ids past the duplicate
/// window may be gone or not, the merge's window rule ignores them either way.
pub trait ReleasedIds: Send {
    /// The region whose copy of (key, event_id) was released, and its HLC; `Err` when the
    /// store cannot answer.
    fn get(&self, key: &str, event_id: &str) -> Result<Option<(String, Hlc)>, String>;
}

/// Merged states as of the last checkpoint, where the merge keeps only a bounded cache of
/// them: the reconciler's checkpoint store, a map in tests. It must answer for every key
/// whose state changed before the last `take_checkpoint`.
pub trait StoredStates: Send {
    /// The key's state as of the last checkpoint; `Err` when the store cannot answer.
    fn state(&self, key: &str) -> Result<Option<AggState>, String>;
}

/// A store behind part of the merge's memory (none: that part is all in memory): the
/// released ids (`ReleasedIds`) and the states beyond the cache (`StoredStates`).
struct Backed<T: ?Sized>(Option<Box<T>>);

impl<T: ?Sized> Default for Backed<T> {
    fn default() -> Self {
        Backed(None)
    }
}

impl<T: ?Sized> std::fmt::Debug for Backed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Backed(store)"
        } else {
            "Backed(memory)"
        })
    }
}

/// States a store-backed merge keeps in memory per partition index between checkpoints
/// (beyond it, the cache is dropped after a checkpoint; the store has every state).
pub const STATE_CACHE_MAX_KEYS: usize = 50_000;

/// What changed in a partition's merge state since the last checkpoint (`take_checkpoint`):
/// for the store to write after a commit. `None` state: the key has none any more.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Checkpoint {
    pub states: Vec<(String, Option<AggState>)>,
    pub emitted_put: Vec<(String, String, String, Hlc)>,
    pub emitted_del: Vec<(String, String)>,
    pub last_emitted: Option<OrderKey>,
}

/// A checkpoint as the store gives it back (`load`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Loaded {
    pub states: Vec<(String, AggState)>,
    /// (key, event_id, region, hlc) of the released ids in the window.
    pub emitted: Vec<(String, String, String, Hlc)>,
    pub last_emitted: Option<OrderKey>,
}

/// What one drain released.
#[derive(Debug, Default)]
pub struct Released {
    pub reconciled: Vec<ReconciledEvent>,
    /// Per reconciled record: the region and history offset it came from.
    pub sources: Vec<(String, i64)>,
    pub conflicts: Vec<Conflict>,
}

fn conflict(
    kind: ConflictKind,
    ev: &Event,
    regions: Vec<String>,
    winner: Option<String>,
    loser: Option<String>,
    detail: String,
    now_ms: i64,
) -> Conflict {
    let hlc = ev.hlc.unwrap_or_default();
    Conflict {
        conflict_id: format!(
            "{}:{}:{}:{}",
            kind.as_str(),
            ev.key,
            ev.event_id,
            loser.as_deref().unwrap_or("")
        ),
        key: ev.key.clone(),
        kind,
        event_id: ev.event_id.clone(),
        regions,
        winner,
        loser,
        detail,
        hlc,
        reconcile_latency_ms: (now_ms - hlc.physical_ms).max(0),
    }
}

impl PartitionMerge {
    pub fn new(partition: i32) -> Self {
        PartitionMerge {
            partition,
            retention_ms: DEFAULT_RETENTION_MS,
            ..Default::default()
        }
    }

    /// Keep released ids for `ms` of HLC time (the cross-region duplicate window).
    pub fn with_retention_ms(mut self, ms: i64) -> Self {
        self.retention_ms = ms.max(1);
        self
    }

    /// Keep released ids older than the last checkpoint in `ids` instead of memory: memory
    /// then holds only those since the last checkpoint, and a restart loads none.
    pub fn with_released_ids(mut self, ids: Box<dyn ReleasedIds>) -> Self {
        self.backing = Backed(Some(ids));
        self
    }

    /// Keep merged states in `states` instead of memory: memory holds the ones changed since
    /// the last checkpoint plus a cache of at most `cache_keys`, and a restart loads none.
    pub fn with_stored_states(mut self, states: Box<dyn StoredStates>, cache_keys: usize) -> Self {
        self.stored_states = Backed(Some(states));
        self.state_cache_keys = cache_keys;
        self
    }

    /// The key's state, taken out of the cache (the caller puts it back) or read from the
    /// backing. A key changed since the last checkpoint is always in the cache.
    fn take_state(&mut self, key: &str) -> Option<AggState> {
        if let Some(s) = self.states.remove(key) {
            return Some(s);
        }
        if self.dirty.contains(key) {
            return None;
        }
        match self.stored_states.0.as_ref()?.state(key) {
            Ok(s) => s,
            Err(e) => {
                self.store_error.borrow_mut().get_or_insert(e);
                None
            }
        }
    }

    /// The released copy of `id`, if any: since the last checkpoint, else in the backing.
    fn lookup(&self, id: &(String, String)) -> Option<(String, Hlc)> {
        if let Some(v) = self.emitted.get(id) {
            return Some(v.clone());
        }
        match self.backing.0.as_ref()?.get(&id.0, &id.1) {
            Ok(v) => v,
            Err(e) => {
                self.store_error.borrow_mut().get_or_insert(e);
                None
            }
        }
    }

    /// The first failed backing lookup since the last call: the decisions made since then
    /// may be wrong, so nothing drained meanwhile may be written.
    pub fn take_store_error(&self) -> Option<String> {
        self.store_error.borrow_mut().take()
    }

    /// The released copy of `id` that makes a copy stamped `hlc` a duplicate: one released
    /// no more than the retention before it. The rule depends on the two HLCs only, so the
    /// answer is the same whatever has been expired meanwhile.
    fn released_copy(&self, id: &(String, String), hlc: Hlc) -> Option<String> {
        self.lookup(id)
            .filter(|(_, first)| first.physical_ms >= hlc.physical_ms - self.retention_ms)
            .map(|(region, _)| region)
    }

    /// Remember a released id and expire those more than the retention behind it.
    fn remember(&mut self, key: &str, event_id: &str, region: &str, hlc: Hlc) {
        self.emitted.insert(
            (key.to_owned(), event_id.to_owned()),
            (region.to_owned(), hlc),
        );
        self.emitted_new
            .push((key.to_owned(), event_id.to_owned(), region.to_owned(), hlc));
        self.emitted_order
            .push_back((hlc, key.to_owned(), event_id.to_owned()));
        let horizon = hlc.physical_ms - self.retention_ms;
        while let Some((h, _, _)) = self.emitted_order.front() {
            if h.physical_ms >= horizon {
                break;
            }
            let (h, k, e) = self.emitted_order.pop_front().expect("front");
            let id = (k, e);
            if self.emitted.get(&id).is_some_and(|(_, at)| *at == h) {
                self.emitted.remove(&id);
                self.emitted_gone.push(id);
            }
        }
    }

    /// Where the duplicate window starts (ms of HLC): no decision from now on needs a
    /// released id older than this.
    pub fn window_start_ms(&self) -> Option<i64> {
        self.last_emitted
            .as_ref()
            .map(|l| l.hlc.physical_ms.saturating_sub(self.retention_ms))
    }

    /// Released ids held in memory (with a backing: those since the last checkpoint).
    pub fn remembered(&self) -> usize {
        self.emitted.len()
    }

    pub fn with_max_clock_offset(mut self, ms: i64) -> Self {
        self.max_clock_offset_ms = ms;
        self
    }

    /// A clock-skew report when `region` stamps HLCs beyond the max offset ahead of our
    /// wall clock: once when the episode starts, again after it has ended.
    fn skew(&mut self, region: &str, ev: &Event, hlc: Hlc, now_ms: i64) -> Option<Conflict> {
        let max = if self.max_clock_offset_ms > 0 {
            self.max_clock_offset_ms
        } else {
            500
        };
        let ahead = hlc.physical_ms - now_ms;
        if ahead <= max {
            self.skewed.remove(region);
            return None;
        }
        if !self.skewed.insert(region.to_owned()) {
            return None;
        }
        let mut c = conflict(
            ConflictKind::ClockSkew,
            ev,
            vec![region.to_owned()],
            None,
            Some(region.to_owned()),
            format!("{region} stamps HLCs {ahead} ms ahead of the reconciler's clock (max offset {max} ms)"),
            now_ms,
        );
        c.conflict_id = format!("CLOCK_SKEW:{region}:{}:{}", hlc.physical_ms, hlc.logical);
        Some(c)
    }

    pub fn watermark(&self, region: &str) -> Option<Hlc> {
        self.watermarks.get(region).copied()
    }

    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Approximate bytes held by the buffer.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// The lowest watermark over `regions` (what holds the merge back), if all have one.
    pub fn min_watermark(&self, regions: &[String]) -> Option<Hlc> {
        regions
            .iter()
            .map(|r| self.watermarks.get(r).copied())
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().min())
    }

    /// Where a restart must re-read `region` from once everything released so far is
    /// written: the lowest offset still buffered, else `read_to` (the position), and never
    /// past the record that set the region's watermark.
    pub fn resume_after_release(&self, region: &str, read_to: i64) -> i64 {
        let at = self.min_buffered_offset(region).unwrap_or(read_to);
        self.watermark_offsets
            .get(region)
            .map_or(at, |w| at.min(*w))
    }

    /// Lowest history offset still buffered from `region`.
    pub fn min_buffered_offset(&self, region: &str) -> Option<i64> {
        self.buffered_offsets
            .get(region)
            .and_then(|o| o.first().copied())
    }

    /// Adopt one record of our own output (restore).
    pub fn adopt(&mut self, rec: &ReconciledEvent) {
        let ev = &rec.event;
        let region = ev.region.clone().unwrap_or_default();
        let order = OrderKey::new(
            ev.hlc.unwrap_or_default(),
            region.clone(),
            ev.event_id.clone(),
        );
        self.remember(&ev.key, &ev.event_id, &region, order.hlc);
        // `state_json` is bounded (rf_core::published); the state is the fold of the
        // records' events by outcome, as the merge made it. A record at or below the last
        // one adopted is in the state already.
        if self.last_emitted.as_ref().is_none_or(|l| order > *l) {
            let mut state = self.take_state(&ev.key);
            apply_reconciled(&mut state, ev, rec.outcome);
            if let Some(s) = state {
                self.states.insert(ev.key.clone(), s);
            }
            self.dirty.insert(ev.key.clone());
            self.last_emitted = Some(order);
        }
    }

    /// Offer one history record from `region`. Returns conflicts found on arrival.
    pub fn offer(&mut self, region: &str, ev: Event, offset: i64, now_ms: i64) -> Vec<Conflict> {
        let Some(hlc) = ev.hlc else { return Vec::new() };
        let wm = self.watermarks.entry(region.to_owned()).or_insert(hlc);
        if hlc >= *wm {
            *wm = hlc;
            self.watermark_offsets.insert(region.to_owned(), offset);
        }
        let skew = self.skew(region, &ev, hlc, now_ms);
        if matches!(ev.op, Op::Heartbeat) {
            return skew.into_iter().collect();
        }
        let mut out: Vec<Conflict> = skew.into_iter().collect();
        out.extend(self.offer_event(region, ev, hlc, offset, now_ms));
        out
    }

    fn offer_event(
        &mut self,
        region: &str,
        ev: Event,
        hlc: Hlc,
        offset: i64,
        now_ms: i64,
    ) -> Vec<Conflict> {
        let order = OrderKey::new(hlc, region, ev.event_id.clone());
        if self.last_emitted.as_ref().is_some_and(|l| order <= *l) {
            let id = (ev.key.clone(), ev.event_id.clone());
            return match self.lookup(&id).map(|(r, _)| r) {
                // Released before: a replay after a restart re-reads it.
                Some(first) if first == region => Vec::new(),
                // Another region's copy was released: a cross-region duplicate (reported
                // again on a replay: conflicts are at-least-once per conflict_id).
                Some(first) => vec![conflict(
                    ConflictKind::CrossRegionDuplicate,
                    &ev,
                    vec![first.clone(), region.to_owned()],
                    Some(first.clone()),
                    Some(region.to_owned()),
                    format!("event accepted by {first} and {region}; the earliest was kept"),
                    now_ms,
                )],
                // Never released, yet it sorts at or below what was: impossible while
                // every region's HLCs increase per partition. Never dropped in silence.
                None => {
                    let last = self.last_emitted.clone().unwrap_or_default();
                    tracing::error!(
                        region, partition = self.partition, offset, key = %ev.key, event_id = %ev.event_id,
                        hlc = ?hlc, last_emitted = ?last.hlc,
                        "history record sorts at or below what was already reconciled: not merged, reported as LATE_RECORD"
                    );
                    vec![conflict(
                        ConflictKind::LateRecord,
                        &ev,
                        vec![region.to_owned()],
                        None,
                        Some(region.to_owned()),
                        format!(
                            "{region} wrote it at offset {offset} with HLC {}.{} after reconciled had passed {}.{} ({}): a writer that escaped fencing, or a region name that does not match",
                            hlc.physical_ms, hlc.logical, last.hlc.physical_ms, last.hlc.logical, last.region
                        ),
                        now_ms,
                    )]
                }
            };
        }
        // Cross-region duplicates are decided at release, in release order (`drain`): the
        // same histories give the same decisions whatever the arrival order.
        self.buffered_offsets
            .entry(region.to_owned())
            .or_default()
            .insert(offset);
        self.buffered_bytes += approx_bytes(&ev);
        self.buffer.insert(order, (ev, offset));
        Vec::new()
    }

    /// Release everything at or below the minimum watermark over `regions`.
    pub fn drain(&mut self, regions: &[String], now_ms: i64) -> Released {
        let mut out = Released::default();
        let Some(min_wm) = self.min_watermark(regions) else {
            return out;
        };
        while let Some(entry) = self.buffer.first_entry() {
            if entry.key().hlc > min_wm {
                break;
            }
            let (order, (ev, offset)) = entry.remove_entry();
            if let Some(o) = self.buffered_offsets.get_mut(&order.region) {
                o.remove(&offset);
            }
            self.buffered_bytes = self.buffered_bytes.saturating_sub(approx_bytes(&ev));
            // A copy of an event another region's copy was released for, no more than the
            // retention earlier: the earliest is kept, this one goes to `conflicts`.
            let id = (ev.key.clone(), ev.event_id.clone());
            if let Some(first) = self.released_copy(&id, order.hlc) {
                out.conflicts.push(conflict(
                    ConflictKind::CrossRegionDuplicate,
                    &ev,
                    vec![first.clone(), order.region.clone()],
                    Some(first.clone()),
                    Some(order.region.clone()),
                    format!(
                        "event accepted by {first} and {}; the earliest was kept",
                        order.region
                    ),
                    now_ms,
                ));
                continue;
            }
            out.sources.push((order.region.clone(), offset));
            self.release(order, ev, now_ms, &mut out);
        }
        out
    }

    fn release(&mut self, order: OrderKey, ev: Event, now_ms: i64, out: &mut Released) {
        // Taken out and put back below: no clone of the state per event.
        let mut state = self.take_state(&ev.key);
        let (outcome, reason) = if let Some(r) = &ev.refusal {
            (Outcome::Refused, Some(r.clone()))
        } else {
            // Dotted version vectors: the put conflicts with each current version it is
            // concurrent with (neither's context covers the other's dot). No time window.
            if let (
                Op::RegisterPut {
                    dot: Some(dot),
                    context,
                    ..
                },
                Some(AggState::Register { causal, .. }),
            ) = (&ev.op, &state)
            {
                let ctx = context
                    .as_deref()
                    .and_then(|t| rf_core::causal::parse_token(t).ok())
                    .unwrap_or_default();
                for s in causal.concurrent(dot, &ctx) {
                    let mut c = conflict(
                        ConflictKind::RegisterConcurrent,
                        &ev,
                        vec![s.dot.region.clone(), dot.region.clone()],
                        Some(dot.region.clone()),
                        Some(s.dot.region.clone()),
                        format!(
                            "puts {}:{} ({}) and {}:{} ({}) are concurrent: neither writer had seen the other; last writer by (hlc, region, event_id) wins",
                            s.dot.region, s.dot.seq, s.event_id, dot.region, dot.seq, ev.event_id
                        ),
                        now_ms,
                    );
                    c.conflict_id = format!(
                        "REGISTER_CONCURRENT:{}:{}:{}",
                        ev.key, ev.event_id, s.event_id
                    );
                    out.conflicts.push(c);
                }
            }
            match merge_step(&mut state, &ev) {
                Ok(Applied::Applied) => (Outcome::Applied, None),
                Ok(Applied::Refused(r)) => match ev.op {
                    Op::Reserve { .. } => {
                        out.conflicts.push(conflict(
                            ConflictKind::ReservationRevoked,
                            &ev,
                            vec![order.region.clone()],
                            None,
                            Some(order.region.clone()),
                            r.clone(),
                            now_ms,
                        ));
                        (Outcome::Revoked, Some(r))
                    }
                    // A release no merged reservation matches (one a region accepted as
                    // pending because its view could not see the order, or one whose
                    // reservation was revoked): nothing was held, nothing is taken back.
                    Op::Release { .. } => (Outcome::Refused, Some(r)),
                    _ => (Outcome::Revoked, Some(r)),
                },
                Err(e) => (Outcome::Revoked, Some(e.to_string())),
            }
        };
        let state_json = published_json(state.as_ref(), &ev);
        if let Some(s) = state {
            self.states.insert(ev.key.clone(), s);
        }
        self.dirty.insert(ev.key.clone());
        self.remember(&ev.key, &ev.event_id, &order.region, order.hlc);
        self.last_emitted = Some(order);
        out.reconciled.push(ReconciledEvent {
            event: ev,
            outcome,
            reason,
            state_json,
        });
    }

    /// The key's state if it is in memory (every key's without a states backing).
    pub fn state(&self, key: &str) -> Option<&AggState> {
        self.states.get(key)
    }

    /// States held in memory.
    pub fn cached_states(&self) -> usize {
        self.states.len()
    }

    /// What changed since the last call (after a commit, for the checkpoint store).
    pub fn take_checkpoint(&mut self) -> Checkpoint {
        let states = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|k| {
                let s = self.states.get(&k).cloned();
                (k, s)
            })
            .collect();
        let del = std::mem::take(&mut self.emitted_gone);
        // An id released and expired within one delta needs no put (unless released again).
        let gone: rustc_hash::FxHashSet<(String, String)> = del.iter().cloned().collect();
        let put: Vec<_> = std::mem::take(&mut self.emitted_new)
            .into_iter()
            .filter(|(k, e, _, h)| {
                let id = (k.clone(), e.clone());
                !gone.contains(&id) || self.emitted.get(&id).is_some_and(|(_, at)| at == h)
            })
            .collect();
        if self.backing.0.is_some() {
            // They are the store's now (once this checkpoint is written).
            self.emitted.clear();
            self.emitted_order.clear();
        }
        if self.stored_states.0.is_some() && self.states.len() > self.state_cache_keys {
            // Every state is the store's once this checkpoint is written.
            self.states.clear();
        }
        Checkpoint {
            states,
            emitted_put: put,
            emitted_del: del,
            last_emitted: self.last_emitted.clone(),
        }
    }

    /// Start from a checkpoint (restore): the merge state as it was when it was taken.
    pub fn load(&mut self, mut l: Loaded) {
        for (k, s) in l.states {
            self.states.insert(k, s);
        }
        l.emitted.sort_by_key(|e| e.3);
        for (k, e, r, h) in l.emitted {
            self.emitted.insert((k.clone(), e.clone()), (r, h));
            self.emitted_order.push_back((h, k, e));
        }
        self.last_emitted = l.last_emitted;
    }
}

/// Where a restart must resume each region's history after each released record
/// (`sources`: the region and history offset of each, in release order): the lowest offset
/// of anything not yet emitted once that record is (the records after it in this release,
/// then `after_release`: what stays buffered, else where reading has got to). Per record,
/// not per transaction: on Tansu a partial transaction stays visible and is adopted, and
/// resuming past records it did not reach would leave a gap.
pub fn resume_points(
    regions: &[String],
    sources: &[(String, i64)],
    after_release: impl Fn(&str) -> i64,
) -> Vec<BTreeMap<String, i64>> {
    let mut next: BTreeMap<String, i64> = regions
        .iter()
        .map(|r| (r.clone(), after_release(r)))
        .collect();
    let mut out = vec![BTreeMap::new(); sources.len()];
    for (i, (region, offset)) in sources.iter().enumerate().rev() {
        out[i] = next.clone();
        if let Some(at) = next.get_mut(region) {
            *at = (*at).min(*offset);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rf_schemas::Codec;

    fn ev(region: &str, id: &str, key: &str, hlc: i64, op: Op) -> Event {
        let mut e = Event::new(id, key, op);
        e.region = Some(region.into());
        e.hlc = Some(Hlc::new(hlc, 0));
        e
    }
    fn hb(region: &str, hlc: i64) -> Event {
        ev(region, &format!("hb{hlc}"), "", hlc, Op::Heartbeat)
    }

    #[test]
    fn clock_skew_is_reported_once_per_episode() {
        let mut m = PartitionMerge::new(0);
        let kinds = |c: Vec<Conflict>| c.into_iter().map(|c| c.kind).collect::<Vec<_>>();
        let now = 10_000;
        // 600 ms ahead of our clock: reported once, not for every record of the episode.
        assert_eq!(
            kinds(m.offer("a", hb("a", now + 600), 0, now)),
            vec![ConflictKind::ClockSkew]
        );
        let c = ev("a", "e1", "k", now + 700, Op::CounterAdd { delta: 1 });
        assert!(m.offer("a", c, 1, now).is_empty());
        // Within the offset the episode ends; a later one is reported again.
        assert!(m.offer("a", hb("a", now + 800), 2, now + 400).is_empty());
        assert_eq!(
            kinds(m.offer("a", hb("a", now + 2000), 3, now + 500)),
            vec![ConflictKind::ClockSkew]
        );
        // Another region is judged on its own.
        assert!(m.offer("b", hb("b", now + 100), 0, now).is_empty());
    }

    #[test]
    fn a_late_record_is_reported_never_dropped_in_silence() {
        let regions = vec!["a".to_string(), "b".to_string()];
        let mut m = PartitionMerge::new(0);
        m.offer(
            "a",
            ev("a", "1", "k", 10, Op::CounterAdd { delta: 1 }),
            0,
            0,
        );
        m.offer("b", hb("b", 20), 0, 0);
        assert_eq!(m.drain(&regions, 0).reconciled.len(), 1);
        // A replay of what was released is not late.
        let again = m.offer(
            "a",
            ev("a", "1", "k", 10, Op::CounterAdd { delta: 1 }),
            0,
            0,
        );
        assert!(again.is_empty());
        // A new event below the released order is.
        let late = m.offer("b", ev("b", "2", "k", 5, Op::CounterAdd { delta: 1 }), 1, 0);
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].kind, ConflictKind::LateRecord);
        assert!(late[0].detail.contains("offset 1"), "{}", late[0].detail);
        // Another region's copy of a released event is a duplicate, not late.
        let dup = m.offer("b", ev("b", "1", "k", 6, Op::CounterAdd { delta: 1 }), 2, 0);
        assert_eq!(dup[0].kind, ConflictKind::CrossRegionDuplicate);
        assert!(m.drain(&regions, 0).reconciled.is_empty());
    }

    #[test]
    fn a_store_that_cannot_answer_is_reported_not_taken_for_a_miss() {
        struct Failing;
        impl ReleasedIds for Failing {
            fn get(&self, _: &str, _: &str) -> Result<Option<(String, Hlc)>, String> {
                Err("disk on fire".into())
            }
        }
        let regions = vec!["a".to_string(), "b".to_string()];
        let mut m = PartitionMerge::new(0).with_released_ids(Box::new(Failing));
        m.offer(
            "a",
            ev("a", "1", "k", 10, Op::CounterAdd { delta: 1 }),
            0,
            0,
        );
        m.offer("b", hb("b", 20), 0, 0);
        m.drain(&regions, 0);
        assert_eq!(m.take_store_error().as_deref(), Some("disk on fire"));
        assert_eq!(m.take_store_error(), None);
    }

    #[test]
    fn waits_for_every_watermark() {
        let regions = vec!["a".to_string(), "b".to_string()];
        let mut m = PartitionMerge::new(0);
        m.offer(
            "a",
            ev("a", "1", "k", 10, Op::CounterAdd { delta: 1 }),
            0,
            0,
        );
        assert!(m.drain(&regions, 0).reconciled.is_empty());
        m.offer("b", hb("b", 9), 0, 0);
        assert!(m.drain(&regions, 0).reconciled.is_empty());
        m.offer("b", hb("b", 10), 1, 0);
        assert_eq!(m.drain(&regions, 0).reconciled.len(), 1);
    }

    #[test]
    fn cross_region_duplicate_keeps_earliest() {
        let regions = vec!["a".to_string(), "b".to_string()];
        let mut m = PartitionMerge::new(0);
        let c1 = m.offer(
            "b",
            ev("b", "x", "k", 20, Op::CounterAdd { delta: 1 }),
            0,
            0,
        );
        let c2 = m.offer(
            "a",
            ev("a", "x", "k", 15, Op::CounterAdd { delta: 1 }),
            0,
            0,
        );
        // Decided at release, in order: the same whatever arrives first.
        assert!(c1.is_empty() && c2.is_empty());
        m.offer("a", hb("a", 30), 1, 0);
        m.offer("b", hb("b", 30), 1, 0);
        let r = m.drain(&regions, 0);
        assert_eq!(r.reconciled.len(), 1);
        assert_eq!(r.reconciled[0].event.region.as_deref(), Some("a"));
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!(r.conflicts[0].kind, ConflictKind::CrossRegionDuplicate);
        assert_eq!(r.conflicts[0].loser.as_deref(), Some("b"));
    }

    #[test]
    fn released_ids_expire_on_the_hlc_timeline() {
        let regions = vec!["a".to_string(), "b".to_string()];
        let mut m = PartitionMerge::new(0).with_retention_ms(100);
        m.offer(
            "a",
            ev("a", "x", "k", 10, Op::CounterAdd { delta: 1 }),
            0,
            0,
        );
        // b's copy 90 ms later: within the window, a duplicate.
        m.offer(
            "b",
            ev("b", "x", "k", 100, Op::CounterAdd { delta: 1 }),
            0,
            0,
        );
        // y: b's copy 200 ms after a's, beyond the window: a new event.
        m.offer(
            "a",
            ev("a", "y", "k", 20, Op::CounterAdd { delta: 1 }),
            1,
            0,
        );
        m.offer(
            "b",
            ev("b", "y", "k", 220, Op::CounterAdd { delta: 1 }),
            1,
            0,
        );
        m.offer("a", hb("a", 1_000), 2, 0);
        m.offer("b", hb("b", 1_000), 2, 0);
        let r = m.drain(&regions, 0);
        let ids: Vec<(&str, &str)> = r
            .reconciled
            .iter()
            .map(|x| {
                (
                    x.event.event_id.as_str(),
                    x.event.region.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(ids, vec![("x", "a"), ("y", "a"), ("y", "b")]);
        assert_eq!(r.conflicts.len(), 1);
        // Only what is within the window of the last release is kept.
        for i in 0..1_000 {
            let t = 2_000 + i * 10;
            m.offer(
                "a",
                ev("a", &format!("e{i}"), "k", t, Op::CounterAdd { delta: 1 }),
                3 + i,
                0,
            );
            m.offer("b", hb("b", t), 3 + i, 0);
        }
        m.drain(&regions, 0);
        assert!(m.remembered() <= 11, "{} ids kept", m.remembered());
    }

    /// A pending release (accepted by a region whose view could not see the order) is
    /// released when the merged state holds the reservation (another region's), refused
    /// with the reason when no region does; and a merged overflow is revoked.
    #[test]
    fn pending_releases_resolve_in_reconciled_order() {
        let regions = vec!["a".to_string(), "b".to_string()];
        let mut m = PartitionMerge::new(0);
        let reserve = Op::Reserve {
            order_id: "o1".into(),
            qty: 2,
        };
        let release = |o: &str| Op::Release { order_id: o.into() };
        m.offer("a", ev("a", "s", "item", 1, Op::stock_add(5)), 0, 0);
        m.offer("a", ev("a", "r", "item", 2, reserve), 1, 0);
        m.offer("b", ev("b", "x", "item", 3, release("o1")), 0, 0);
        m.offer("b", ev("b", "y", "item", 4, release("never")), 1, 0);
        m.offer(
            "a",
            ev("a", "c1", "likes", 5, Op::CounterAdd { delta: i64::MAX }),
            2,
            0,
        );
        m.offer(
            "b",
            ev("b", "c2", "likes", 6, Op::CounterAdd { delta: 1 }),
            2,
            0,
        );
        m.offer("a", hb("a", 9), 3, 0);
        m.offer("b", hb("b", 9), 3, 0);
        let r = m.drain(&regions, 0);
        let outcome = |id: &str| {
            let rec = r
                .reconciled
                .iter()
                .find(|x| x.event.event_id == id)
                .unwrap();
            (rec.outcome, rec.reason.clone())
        };
        assert_eq!(outcome("x"), (Outcome::Applied, None));
        let (o, reason) = outcome("y");
        assert_eq!(o, Outcome::Refused);
        assert!(reason.unwrap().contains("no reservation"));
        let (o, reason) = outcome("c2");
        assert_eq!(o, Outcome::Revoked);
        assert!(reason.unwrap().contains("overflow"));
        assert_eq!(
            m.state("item"),
            Some(&AggState::Inventory {
                available: 5,
                reserved: Default::default(),
                escrow: None,
            })
        );
        assert_eq!(
            m.state("likes"),
            Some(&AggState::Counter { total: i64::MAX })
        );
    }

    #[test]
    fn oversold_reservation_is_revoked() {
        let regions = vec!["a".to_string(), "b".to_string()];
        let mut m = PartitionMerge::new(0);
        m.offer("a", ev("a", "s", "item", 1, Op::stock_add(1)), 0, 0);
        m.offer(
            "a",
            ev(
                "a",
                "r1",
                "item",
                2,
                Op::Reserve {
                    order_id: "o1".into(),
                    qty: 1,
                },
            ),
            1,
            0,
        );
        m.offer(
            "b",
            ev(
                "b",
                "r2",
                "item",
                3,
                Op::Reserve {
                    order_id: "o2".into(),
                    qty: 1,
                },
            ),
            0,
            0,
        );
        m.offer("a", hb("a", 9), 2, 0);
        m.offer("b", hb("b", 9), 1, 0);
        let r = m.drain(&regions, 0);
        assert_eq!(r.reconciled[2].outcome, Outcome::Revoked);
        assert_eq!(r.conflicts[0].kind, ConflictKind::ReservationRevoked);
    }

    #[test]
    fn each_record_resumes_before_everything_released_after_it() {
        let regions = vec!["a".to_owned(), "b".to_owned()];
        let sources = vec![("a".into(), 5), ("b".into(), 9), ("a".into(), 7)];
        let at = |r: &str| if r == "a" { 8 } else { 12 };
        let got: Vec<Vec<i64>> = resume_points(&regions, &sources, at)
            .into_iter()
            .map(|m| m.into_values().collect())
            .collect();
        assert_eq!(got, vec![vec![7, 9], vec![7, 12], vec![8, 12]]);
    }

    /// Random histories for regions a, b, c over counters, registers and one inventory
    /// item (stock and contended reservations), with ids shared across regions; random
    /// interleavings and drain points.
    fn histories() -> impl Strategy<Value = Vec<(String, Vec<Event>)>> {
        let region = |name: &'static str| {
            proptest::collection::vec((0i64..5, 0usize..8, 0i64..3, any::<bool>()), 0..30).prop_map(
                move |steps| {
                    let mut t = 0;
                    let mut evs = Vec::new();
                    for (i, (dt, key, n, dup)) in steps.into_iter().enumerate() {
                        t += dt + 1;
                        let id = if dup {
                            format!("shared-{i}")
                        } else {
                            format!("{name}-{i}")
                        };
                        let (k, op) = match key {
                            0..3 => (format!("c{key}"), Op::CounterAdd { delta: n }),
                            3..5 => (format!("r{key}"), Op::put(format!("{name}{i}"))),
                            5 => ("item".to_owned(), Op::stock_add(n + 1)),
                            _ => (
                                "item".to_owned(),
                                Op::Reserve {
                                    order_id: id.clone(),
                                    qty: n + 1,
                                },
                            ),
                        };
                        // A shared id names the same event wherever it is accepted.
                        let (k, op) = if dup {
                            ("c0".to_owned(), Op::CounterAdd { delta: 1 })
                        } else {
                            (k, op)
                        };
                        evs.push(ev(name, &id, &k, t, op));
                    }
                    t += 1;
                    evs.push(hb(name, t + 1000));
                    (name.to_string(), evs)
                },
            )
        };
        (region("a"), region("b"), region("c")).prop_map(|(a, b, c)| vec![a, b, c])
    }

    /// Feed the merge in the interleaving `order`, draining every `drain_every` steps. With
    /// `crash = Some((at, keep))`, the reconciler dies at step `at` having written only the
    /// first `keep` records of its output so far (a partial transaction, visible on Tansu):
    /// a fresh merge adopts that prefix and re-reads every region from the resume point of
    /// the last record kept, as the pipeline does.
    /// The checkpoint store as the tests model it: deltas applied in order.
    #[derive(Clone, Default)]
    struct ModelStore {
        states: BTreeMap<String, AggState>,
        emitted: BTreeMap<(String, String), (String, Hlc)>,
        last: Option<OrderKey>,
    }

    impl ModelStore {
        fn apply(&mut self, cp: Checkpoint) {
            for (k, st) in cp.states {
                match st {
                    Some(st) => self.states.insert(k, st),
                    None => self.states.remove(&k),
                };
            }
            for id in cp.emitted_del {
                self.emitted.remove(&id);
            }
            for (k, e, r, h) in cp.emitted_put {
                self.emitted.insert((k, e), (r, h));
            }
            self.last = cp.last_emitted;
        }

        /// As the store gives it back; a backed merge looks ids and states up instead of
        /// loading them.
        fn loaded(&self, backed: bool) -> Loaded {
            Loaded {
                states: if backed {
                    Vec::new()
                } else {
                    self.states.clone().into_iter().collect()
                },
                emitted: if backed {
                    Vec::new()
                } else {
                    self.emitted
                        .iter()
                        .map(|((k, e), (r, h))| (k.clone(), e.clone(), r.clone(), *h))
                        .collect()
                },
                last_emitted: self.last.clone(),
            }
        }
    }

    struct ModelIds(std::sync::Arc<std::sync::Mutex<ModelStore>>);

    impl StoredStates for ModelIds {
        fn state(&self, key: &str) -> Result<Option<AggState>, String> {
            Ok(self.0.lock().unwrap().states.get(key).cloned())
        }
    }

    impl ReleasedIds for ModelIds {
        fn get(&self, key: &str, event_id: &str) -> Result<Option<(String, Hlc)>, String> {
            let s = self.0.lock().unwrap();
            Ok(s.emitted
                .get(&(key.to_owned(), event_id.to_owned()))
                .cloned())
        }
    }

    fn run(
        h: &[(String, Vec<Event>)],
        order: &[usize],
        drain_every: usize,
        crash: Option<(usize, usize)>,
        retention_ms: i64,
        backed: bool,
    ) -> Vec<Vec<u8>> {
        let regions: Vec<String> = h.iter().map(|(r, _)| r.clone()).collect();
        let mut idx = vec![0usize; h.len()];
        let shared = std::sync::Arc::new(std::sync::Mutex::new(ModelStore::default()));
        let fresh = || {
            let m = PartitionMerge::new(0).with_retention_ms(retention_ms);
            if backed {
                // A cache of one key: nearly every state comes from the store.
                m.with_released_ids(Box::new(ModelIds(shared.clone())))
                    .with_stored_states(Box::new(ModelIds(shared.clone())), 1)
            } else {
                m
            }
        };
        let mut m = fresh();
        let mut out: Vec<(ReconciledEvent, BTreeMap<String, i64>)> = Vec::new();
        // Checkpoints taken after each drain: (output length, store as of then).
        let store = shared.clone();
        let mut checkpoints: Vec<(usize, ModelStore)> = vec![(0, ModelStore::default())];
        let drain = |m: &mut PartitionMerge,
                     idx: &[usize],
                     out: &mut Vec<_>,
                     store: &std::sync::Mutex<ModelStore>,
                     checkpoints: &mut Vec<(usize, ModelStore)>| {
            let rel = m.drain(&regions, 0);
            let resume = resume_points(&regions, &rel.sources, |r| {
                let i = regions.iter().position(|x| x == r).unwrap();
                m.resume_after_release(r, idx[i] as i64)
            });
            out.extend(rel.reconciled.into_iter().zip(resume));
            let cp = m.take_checkpoint();
            let mut st = store.lock().unwrap();
            st.apply(cp);
            checkpoints.push((out.len(), st.clone()));
        };
        for (step, &r) in order.iter().enumerate() {
            if let Some((at, keep)) = crash {
                if step == at {
                    // Only a prefix of the output survived; restore from the latest
                    // checkpoint within it, then adopt the output's tail past it.
                    out.truncate(keep % (out.len() + 1));
                    let (from, snap) = checkpoints
                        .iter()
                        .rev()
                        .find(|(n, _)| *n <= out.len())
                        .cloned()
                        .unwrap_or_default();
                    *store.lock().unwrap() = snap.clone();
                    m = fresh();
                    m.load(snap.loaded(backed));
                    for (rec, _) in &out[from..] {
                        m.adopt(rec);
                    }
                    let cp = m.take_checkpoint();
                    let mut st = store.lock().unwrap();
                    st.apply(cp);
                    checkpoints.retain(|(n, _)| *n <= out.len());
                    checkpoints.push((out.len(), st.clone()));
                    let resume = out.last().map(|(_, r)| r.clone()).unwrap_or_default();
                    for (i, name) in regions.iter().enumerate() {
                        idx[i] = resume.get(name).copied().unwrap_or(0) as usize;
                    }
                }
            }
            let r = r % h.len();
            if idx[r] < h[r].1.len() {
                let e = h[r].1[idx[r]].clone();
                let c = m.offer(&h[r].0, e, idx[r] as i64, 0);
                assert!(
                    c.iter().all(|c| c.kind != ConflictKind::LateRecord),
                    "a replay is never late: {c:?}"
                );
                idx[r] += 1;
            }
            if (step + 1) % drain_every == 0 {
                drain(&mut m, &idx, &mut out, &store, &mut checkpoints);
            }
        }
        for (r, (name, evs)) in h.iter().enumerate() {
            for (o, e) in evs.iter().enumerate().skip(idx[r]) {
                let c = m.offer(name, e.clone(), o as i64, 0);
                assert!(c.iter().all(|c| c.kind != ConflictKind::LateRecord));
            }
            idx[r] = evs.len();
        }
        drain(&mut m, &idx, &mut out, &store, &mut checkpoints);
        out.iter()
            .map(|(r, _)| Codec::reconciled().encode(r).unwrap())
            .collect()
    }

    proptest! {
        #[test]
        fn output_is_a_function_of_the_histories(h in histories(),
                                                 o1 in proptest::collection::vec(0usize..3, 0..120),
                                                 o2 in proptest::collection::vec(0usize..3, 0..120),
                                                 d1 in 1usize..10, d2 in 1usize..10) {
            let a = run(&h, &o1, d1, None, DEFAULT_RETENTION_MS, false);
            let b = run(&h, &o2, d2, None, DEFAULT_RETENTION_MS, true);
            prop_assert_eq!(&a, &b);
            // each distinct (key, event_id) exactly once
            let mut ids = std::collections::HashSet::new();
            for bytes in &a {
                let r = Codec::reconciled().decode(bytes).unwrap();
                prop_assert!(ids.insert((r.event.key.clone(), r.event.event_id.clone())));
            }
        }

        #[test]
        fn a_crash_at_any_point_changes_no_byte(h in histories(),
                                                o in proptest::collection::vec(0usize..3, 1..120),
                                                d in 1usize..10,
                                                at in 0usize..120, keep in 0usize..1000) {
            let clean = run(&h, &o, d, None, DEFAULT_RETENTION_MS, false);
            let crashed = run(&h, &o, d, Some((at % o.len(), keep)), DEFAULT_RETENTION_MS, false);
            prop_assert_eq!(&clean, &crashed);
            // The same with released ids in the store (the reconciler's set-up).
            let backed = run(&h, &o, d, Some((at % o.len(), keep)), DEFAULT_RETENTION_MS, true);
            prop_assert_eq!(&clean, &backed);
        }

        /// With a retention short enough that some copies of a shared id fall outside it, the
        /// output is still a function of the histories: the same under any arrival order,
        /// drain points and a crash at any point.
        #[test]
        fn a_short_retention_is_still_a_function_of_the_histories(h in histories(),
                                                o1 in proptest::collection::vec(0usize..3, 1..120),
                                                o2 in proptest::collection::vec(0usize..3, 0..120),
                                                d1 in 1usize..10, d2 in 1usize..10,
                                                at in 0usize..120, keep in 0usize..1000,
                                                ret in 1i64..60) {
            let a = run(&h, &o1, d1, None, ret, false);
            let b = run(&h, &o2, d2, None, ret, true);
            prop_assert_eq!(&a, &b);
            let crashed = run(&h, &o1, d1, Some((at % o1.len(), keep)), ret, false);
            prop_assert_eq!(&a, &crashed);
            let backed = run(&h, &o1, d1, Some((at % o1.len(), keep)), ret, true);
            prop_assert_eq!(&a, &backed);
        }
    }
}
