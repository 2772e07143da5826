//! State store: per input partition, the folded state, the dedup ids and the history
//! offset the fold reflects (invariant 3), written in one atomic batch per commit; and, for
//! the regional view, its pending own events, other regions' reconciled ids (`view_ids`,
//! expired after the duplicate window like the dedup ids) and its checkpoint: the reconciled
//! state of each key of the partition (`view`) with the `reconciled` offset it reflects.

use rf_core::view::{PendingKey, Replica};
use rf_core::AggState;
use rf_runtime::error::{Error, Result};
use rf_schemas::{Codec, Event, Hlc};
use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, WriteBatch, DB,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// What the stored fold of one partition reflects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PartitionMeta {
    /// Next history offset to read: the fold reflects history[..history_next].
    pub history_next: i64,
    /// Highest HLC written to this history partition (persisted bound).
    pub hlc: Hlc,
    /// Next input offset the fold reflects (-1 if unknown).
    pub input_next: i64,
}

/// Everything one committed transaction changes, written atomically.
#[derive(Debug, Default)]
pub struct StoreBatch {
    pub states: Vec<(i32, String, AggState)>,
    pub dedup: Vec<(i32, String, String, i64)>,
    pub metas: Vec<(i32, PartitionMeta)>,
    /// Own accepted events the regional view still holds pending (not yet reconciled).
    pub pending_put: Vec<(i32, Event)>,
    /// Pending events `reconciled` has settled: (partition, key, hlc).
    pub pending_del: Vec<(i32, String, Hlc, String)>,
    /// Per partition, the history offset below which every own event the view holds
    /// pending is in `pending_put` (this batch or an earlier one).
    pub pending_from: Vec<(i32, i64)>,
    /// Other regions' reconciled ids the view read since the last batch: (key, id, HLC ms).
    pub view_ids: Vec<(String, String, i64)>,
    /// The view's changed replicas, and per partition the `reconciled` offset they reflect
    /// (the next one to read).
    pub view_replicas: Vec<(i32, String, Replica)>,
    pub view_next: Vec<(i32, i64)>,
}

pub trait StateStore: Send + Sync {
    fn meta(&self, partition: i32) -> Result<Option<PartitionMeta>>;
    fn state(&self, partition: i32, key: &str) -> Result<Option<AggState>>;
    fn seen(&self, partition: i32, key: &str, event_id: &str) -> Result<bool>;
    fn write(&self, batch: StoreBatch) -> Result<()>;
    /// What the regional view keeps in memory of one partition's persisted pending own
    /// events: one summary per key (the events stay in the store, `PendingEvents`).
    fn pending_keys(&self, partition: i32) -> Result<Vec<(String, PendingKey)>>;
    /// The view's checkpoint of one partition: the next `reconciled` offset to read (0 if
    /// none) and the replicas as of it.
    fn view(&self, partition: i32) -> Result<(i64, Vec<(String, Replica)>)>;
    /// The history offset from which own events the view held in memory only are re-read
    /// (`StoreBatch::pending_from`), if one was written.
    fn pending_from(&self, partition: i32) -> Result<Option<i64>>;
}

const CF_STATE: &str = "state";
const CF_DEDUP: &str = "dedup";
const CF_META: &str = "meta";
const CF_PENDING: &str = "pending";
const CF_VIEW_IDS: &str = "view_ids";
const CF_VIEW: &str = "view";
/// The pending own events' ids: (partition, key, event_id) -> hlc, for settling by id.
const CF_PENDING_IDS: &str = "pending_ids";

pub struct RocksStore {
    db: std::sync::Arc<DB>,
    cache: rocksdb::Cache,
}

/// The view's reconciled ids in the store (`rf_core::view::SeenIds`). A weak handle: the
/// view lives in the shared stats, which outlive the processor's run, and must not keep the
/// database open (and locked) after it stops.
pub struct ViewIds {
    db: std::sync::Weak<DB>,
}

fn view_id_key(key: &str, id: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + id.len() + 1);
    v.extend_from_slice(key.as_bytes());
    v.push(0);
    v.extend_from_slice(id.as_bytes());
    v
}

impl rf_core::view::SeenIds for ViewIds {
    fn seen(&self, key: &str, event_id: &str) -> bool {
        // Closed: the processor stopped, and nothing is admitted any more.
        let Some(db) = self.db.upgrade() else {
            return false;
        };
        let cf = db.cf_handle(CF_VIEW_IDS).expect("column family exists");
        let found = db
            .get_pinned_cf(cf, view_id_key(key, event_id))
            .map(|v| v.is_some());
        match found {
            Ok(seen) => seen,
            Err(e) => {
                // The view then keeps our copy pending (shown on top of the reconciled
                // state) until a later record of the key settles it: said, never silent.
                tracing::error!(key, event_id, error = %e, "view id lookup failed");
                false
            }
        }
    }
}

/// The regional view's pending own events in the store (`rf_core::view::PendingLog`): the
/// view keeps only those accepted since the last batch. A weak handle, like `ViewIds`.
pub struct PendingEvents {
    db: std::sync::Weak<DB>,
}

impl rf_core::view::PendingLog for PendingEvents {
    fn scan(&self, partition: i32, key: &str, after: Option<Hlc>, limit: usize) -> Vec<Event> {
        let Some(db) = self.db.upgrade() else {
            return Vec::new();
        };
        let cf = db.cf_handle(CF_PENDING).expect("column family exists");
        let mut prefix = pkey(partition, key);
        prefix.push(0);
        let start = match after {
            Some(h) => pending_key(partition, key, h),
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        // Bounded to the key's entries: settled events leave tombstones until compaction,
        // and an unbounded iterator skips every one of them on its way to the next live
        // entry of any key (52 ms a scan over 400,000 of them, against microseconds).
        let mut upper = pkey(partition, key);
        upper.push(1);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(upper);
        let iter = db.iterator_cf_opt(cf, ro, IteratorMode::From(&start, Direction::Forward));
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    // The view then misses these pending events until they settle: said.
                    tracing::error!(key, error = %e, "pending event scan failed");
                    break;
                }
            };
            if !k.starts_with(&prefix) {
                break;
            }
            // Exactly an HLC after the prefix: another key that starts with this one and a
            // NUL is not ours; the entry at `after` itself is skipped.
            if k.len() != prefix.len() + HLC_BYTES || k[..] == start[..] && after.is_some() {
                continue;
            }
            match Codec::event().decode(&v) {
                Ok(e) => out.push(e),
                Err(e) => tracing::error!(key, error = %e, "stored pending event does not decode"),
            }
        }
        out
    }

    fn find(&self, partition: i32, key: &str, event_id: &str) -> Option<Hlc> {
        let db = self.db.upgrade()?;
        let cf = db.cf_handle(CF_PENDING_IDS).expect("column family exists");
        let found = db.get_pinned_cf(cf, pending_id_key(partition, key, event_id));
        match found {
            Ok(v) => v.and_then(|v| hlc_from(&v)),
            Err(e) => {
                tracing::error!(key, event_id, error = %e, "pending id lookup failed");
                None
            }
        }
    }
}

/// An HLC as the store's keys and values hold it: physical ms, then logical, big-endian
/// (so keys sort in HLC order).
const HLC_BYTES: usize = 12;

fn hlc_bytes(hlc: Hlc) -> [u8; HLC_BYTES] {
    let mut b = [0u8; HLC_BYTES];
    b[..8].copy_from_slice(&hlc.physical_ms.to_be_bytes());
    b[8..].copy_from_slice(&hlc.logical.to_be_bytes());
    b
}

fn hlc_from(b: &[u8]) -> Option<Hlc> {
    if b.len() != HLC_BYTES {
        return None;
    }
    Some(Hlc::new(
        i64::from_be_bytes(b[..8].try_into().ok()?),
        i32::from_be_bytes(b[8..].try_into().ok()?),
    ))
}

/// (partition, key length, key, event_id): unambiguous whatever the key holds.
fn pending_id_key(p: i32, key: &str, event_id: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + key.len() + event_id.len());
    v.extend_from_slice(&p.to_be_bytes());
    v.extend_from_slice(&(key.len() as u32).to_be_bytes());
    v.extend_from_slice(key.as_bytes());
    v.extend_from_slice(event_id.as_bytes());
    v
}

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

fn pkey(p: i32, key: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + key.len());
    v.extend_from_slice(&p.to_be_bytes());
    v.extend_from_slice(key.as_bytes());
    v
}

fn dkey(p: i32, key: &str, id: &str) -> Vec<u8> {
    let mut v = pkey(p, key);
    v.push(0);
    v.extend_from_slice(id.as_bytes());
    v
}

fn pending_key(p: i32, key: &str, hlc: Hlc) -> Vec<u8> {
    let mut v = pkey(p, key);
    v.push(0);
    v.extend_from_slice(&hlc_bytes(hlc));
    v
}

const META_INSTANCE_ID: &[u8] = b"instance-id";

/// A compaction filter that drops an entry whose value (a time in ms, big-endian: an id's
/// accept time, or its reconciled HLC) is more than `retention_ms` before the wall clock.
/// An unreadable value is kept.
fn expire_after(
    retention_ms: i64,
) -> impl FnMut(u32, &[u8], &[u8]) -> rocksdb::CompactionDecision + Send + 'static {
    move |_level, _key, value| {
        let at_ms = value.try_into().map(i64::from_be_bytes).unwrap_or(i64::MAX);
        let now = rf_core::Clock::now_ms(&rf_core::SystemClock);
        if now.saturating_sub(at_ms) > retention_ms {
            rocksdb::CompactionDecision::Remove
        } else {
            rocksdb::CompactionDecision::Keep
        }
    }
}

/// The meta key of a partition's view offset.
fn view_next_key(p: i32) -> [u8; 5] {
    let b = p.to_be_bytes();
    [b'v', b[0], b[1], b[2], b[3]]
}

/// In `meta`: one entry per schedule key of a partition (the index the engine's timers
/// are rebuilt from on assignment, without a scan of every state).
fn schedule_key(p: i32, key: &str) -> Vec<u8> {
    let mut v = vec![b's'];
    v.extend_from_slice(&pkey(p, key));
    v
}

fn pending_from_key(p: i32) -> [u8; 5] {
    let b = p.to_be_bytes();
    [b'p', b[0], b[1], b[2], b[3]]
}
/// How the store is opened: what bounds its memory, and how long dedup ids live.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Dedup ids older than this (by accept time) are dropped by a compaction filter as
    /// RocksDB compacts, never by scanning: memory and disk stay bounded by the ids
    /// accepted within the window. An id is remembered for at least this long.
    pub retention: Duration,
    /// The memtables of all column families together (`Config::store_memtable_mb`).
    pub memtable_bytes: usize,
    /// One block cache for all column families (`Config::store_block_cache_mb`); RocksDB's
    /// default is a cache per column family.
    pub block_cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retention: Duration::from_secs(7 * 24 * 3600),
            memtable_bytes: 128 << 20,
            block_cache_bytes: 32 << 20,
        }
    }
}

impl RocksStore {
    /// Open with the default options.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &StoreOptions::default())
    }

    pub fn open_with(path: &Path, o: &StoreOptions) -> Result<Self> {
        let (retention, memtable_bytes) = (o.retention, o.memtable_bytes);
        let cache = rocksdb::Cache::new_lru_cache(o.block_cache_bytes);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Memtables of all column families together stay under this (the default is
        // 64 MB per column family, up to two each): memory that does not grow with keys.
        // 64 MB in all cost a sixth of the throughput on a 1M-key backlog (flushes and
        // compactions on two cores); 128 MB fits the RSS target (docs/BENCHMARKS.md).
        opts.set_db_write_buffer_size(memtable_bytes);
        // Most lookups miss the memtable (a new id, a key not written lately): a memtable
        // bloom filter answers those without walking the skip list (a profile put 6 % of
        // the processor's time in that walk).
        let memtable_bloom = |o: &mut Options| {
            o.set_memtable_whole_key_filtering(true);
            o.set_memtable_prefix_bloom_ratio(0.1);
        };
        let mut state_opts = Options::default();
        memtable_bloom(&mut state_opts);
        state_opts.set_write_buffer_size(memtable_bytes / 4);
        let mut dedup_opts = Options::default();
        memtable_bloom(&mut dedup_opts);
        dedup_opts.set_write_buffer_size(memtable_bytes / 4);
        // Dedup lookups are mostly misses: a bloom filter answers them without disk reads.
        // (The reconciler's store keeps its filters in a shared cache in 4 KB partitions;
        // here that cost a quarter of the throughput in one A/B run, docs/BENCHMARKS.md, so
        // the filters stay beside the cache, growing with the ids of the window.)
        let mut plain = rocksdb::BlockBasedOptions::default();
        plain.set_block_cache(&cache);
        let mut bbo = rocksdb::BlockBasedOptions::default();
        bbo.set_block_cache(&cache);
        bbo.set_bloom_filter(10.0, false);
        dedup_opts.set_block_based_table_factory(&bbo);
        // So do state lookups of keys first seen (1M keys: most of a backlog).
        state_opts.set_block_based_table_factory(&bbo);
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        dedup_opts.set_compaction_filter("rf-dedup-retention", expire_after(retention_ms));
        // The view's ids: lookups that mostly miss (bloom filters), expired by the HLC of
        // the reconciled record once past the duplicate window (the reconciler's window:
        // a later copy is no duplicate there either).
        let mut view_ids_opts = Options::default();
        memtable_bloom(&mut view_ids_opts);
        view_ids_opts.set_write_buffer_size(memtable_bytes / 8);
        view_ids_opts.set_block_based_table_factory(&bbo);
        view_ids_opts.set_compaction_filter("rf-view-id-retention", expire_after(retention_ms));
        let plain_opts = || {
            let mut o = Options::default();
            o.set_block_based_table_factory(&plain);
            o
        };
        // Pending own events are a queue per key: written, then deleted as they settle. A
        // file whose entries are mostly tombstones is compacted soon, so scans do not wade
        // through them (any 128 consecutive entries with 64 deletes, or half of the file).
        let mut pending_opts = plain_opts();
        pending_opts.add_compact_on_deletion_collector_factory(128, 64, 0.5);
        // Pending ids are looked up by id, mostly for ids that are not pending.
        let mut pending_ids_opts = Options::default();
        pending_ids_opts.set_block_based_table_factory(&bbo);
        pending_ids_opts.add_compact_on_deletion_collector_factory(128, 64, 0.5);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_STATE, state_opts),
            ColumnFamilyDescriptor::new(CF_DEDUP, dedup_opts),
            ColumnFamilyDescriptor::new(CF_META, plain_opts()),
            ColumnFamilyDescriptor::new(CF_PENDING, pending_opts),
            ColumnFamilyDescriptor::new(CF_VIEW_IDS, view_ids_opts),
            ColumnFamilyDescriptor::new(CF_VIEW, plain_opts()),
            ColumnFamilyDescriptor::new(CF_PENDING_IDS, pending_ids_opts),
        ];
        // A store written before the id index existed gets it built once, at open.
        let index_missing =
            DB::list_cf(&opts, path).is_ok_and(|cfs| !cfs.iter().any(|c| c == CF_PENDING_IDS));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(store_err)?;
        let store = RocksStore {
            db: std::sync::Arc::new(db),
            cache,
        };
        if index_missing {
            store.index_pending_ids()?;
        }
        Ok(store)
    }

    /// Write the id index of every stored pending event.
    fn index_pending_ids(&self) -> Result<()> {
        let mut wb = WriteBatch::default();
        for item in self
            .db
            .iterator_cf(self.cf(CF_PENDING), IteratorMode::Start)
        {
            let (k, v) = item.map_err(store_err)?;
            let ev = Codec::event().decode(&v).map_err(store_err)?;
            let (Some(p), Some(hlc)) = (k.get(..4), ev.hlc) else {
                continue;
            };
            let p = i32::from_be_bytes(p.try_into().expect("four bytes"));
            wb.put_cf(
                self.cf(CF_PENDING_IDS),
                pending_id_key(p, &ev.key, &ev.event_id),
                hlc_bytes(hlc),
            );
        }
        self.db.write(wb).map_err(store_err)
    }

    /// The regional view's pending own events, for `RegionalView::with_pending_log`.
    pub fn pending_events(&self) -> PendingEvents {
        PendingEvents {
            db: std::sync::Arc::downgrade(&self.db),
        }
    }

    /// The view's reconciled ids, for `RegionalView::with_seen_ids`.
    pub fn view_ids(&self) -> ViewIds {
        ViewIds {
            db: std::sync::Arc::downgrade(&self.db),
        }
    }

    /// This store's instance id, created on first open and kept with the state: it names
    /// the transactional producer, so a restart on the same state fences its own zombie
    /// (as Kafka Streams keeps its process id in the state directory).
    pub fn instance_id(&self) -> Result<String> {
        let cf = self.cf(CF_META);
        if let Some(v) = self.db.get_cf(cf, META_INSTANCE_ID).map_err(store_err)? {
            return String::from_utf8(v).map_err(store_err);
        }
        let id = format!("{:016x}", rand::random::<u64>());
        self.db
            .put_cf(cf, META_INSTANCE_ID, id.as_bytes())
            .map_err(store_err)?;
        self.db.flush_cf(cf).map_err(store_err)?;
        Ok(id)
    }

    /// Every (key, state) of one partition, for checks and queries.
    pub fn states(&self, partition: i32) -> Result<Vec<(String, AggState)>> {
        self.partition_json(CF_STATE, partition)
    }

    /// Every (key, JSON value) of one partition in a column family keyed by `pkey`.
    /// The schedule keys of `partition` this region's own state holds.
    pub fn schedule_keys(&self, partition: i32) -> Result<Vec<String>> {
        let prefix = schedule_key(partition, "");
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_META),
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (k, _) = item.map_err(store_err)?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(String::from_utf8(k[prefix.len()..].to_vec()).map_err(store_err)?);
        }
        Ok(out)
    }

    fn partition_json<T: serde::de::DeserializeOwned>(
        &self,
        cf: &str,
        partition: i32,
    ) -> Result<Vec<(String, T)>> {
        let prefix = partition.to_be_bytes();
        let mut out = Vec::new();
        for item in self.db.prefix_iterator_cf(self.cf(cf), prefix) {
            let (k, v) = item.map_err(store_err)?;
            if !k.starts_with(&prefix) {
                break;
            }
            let key = String::from_utf8(k[4..].to_vec()).map_err(store_err)?;
            out.push((key, serde_json::from_slice(&v).map_err(store_err)?));
        }
        Ok(out)
    }

    /// RocksDB's figures for what the store holds in memory: (memtables, table readers:
    /// index and filter blocks, block cache).
    pub fn memory(&self) -> (u64, u64, u64) {
        rocksdb::perf::get_memory_usage_stats(Some(&[&self.db]), Some(&[&self.cache]))
            .map(|m| (m.mem_table_total, m.mem_table_readers_total, m.cache_total))
            .unwrap_or_default()
    }

    /// (live SST bytes, estimated pending compaction bytes) over all column families.
    pub fn sizes(&self) -> (u64, u64) {
        let mut live = 0;
        let mut pending = 0;
        for name in [
            CF_STATE,
            CF_DEDUP,
            CF_META,
            CF_PENDING,
            CF_VIEW_IDS,
            CF_VIEW,
        ] {
            let cf = self.cf(name);
            live += self
                .db
                .property_int_value_cf(cf, "rocksdb.live-sst-files-size")
                .ok()
                .flatten()
                .unwrap_or(0);
            pending += self
                .db
                .property_int_value_cf(cf, "rocksdb.estimate-pending-compaction-bytes")
                .ok()
                .flatten()
                .unwrap_or(0);
        }
        (live, pending)
    }

    /// Compact the dedup ids now (tests; RocksDB compacts on its own in production).
    pub fn compact_dedup(&self) {
        self.db
            .compact_range_cf(self.cf(CF_DEDUP), None::<&[u8]>, None::<&[u8]>);
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family exists")
    }
}

impl StateStore for RocksStore {
    fn meta(&self, partition: i32) -> Result<Option<PartitionMeta>> {
        self.db
            .get_cf(self.cf(CF_META), partition.to_be_bytes())
            .map_err(store_err)?
            .map(|b| serde_json::from_slice(&b).map_err(store_err))
            .transpose()
    }

    fn state(&self, partition: i32, key: &str) -> Result<Option<AggState>> {
        self.db
            .get_cf(self.cf(CF_STATE), pkey(partition, key))
            .map_err(store_err)?
            .map(|b| serde_json::from_slice(&b).map_err(store_err))
            .transpose()
    }

    fn seen(&self, partition: i32, key: &str, event_id: &str) -> Result<bool> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_DEDUP), dkey(partition, key, event_id))
            .map_err(store_err)?
            .is_some())
    }

    fn write(&self, batch: StoreBatch) -> Result<()> {
        let mut wb = WriteBatch::default();
        for (p, k, s) in &batch.states {
            wb.put_cf(
                self.cf(CF_STATE),
                pkey(*p, k),
                serde_json::to_vec(s).map_err(store_err)?,
            );
            if matches!(s, AggState::Schedule { .. }) {
                wb.put_cf(self.cf(CF_META), schedule_key(*p, k), []);
            }
        }
        for (p, k, id, ts) in &batch.dedup {
            wb.put_cf(self.cf(CF_DEDUP), dkey(*p, k, id), ts.to_be_bytes());
        }
        for (p, m) in &batch.metas {
            wb.put_cf(
                self.cf(CF_META),
                p.to_be_bytes(),
                serde_json::to_vec(m).map_err(store_err)?,
            );
        }
        for (p, ev) in &batch.pending_put {
            let (Some(hlc), Ok(bytes)) = (ev.hlc, Codec::event().encode(ev)) else {
                continue;
            };
            wb.put_cf(self.cf(CF_PENDING), pending_key(*p, &ev.key, hlc), bytes);
            wb.put_cf(
                self.cf(CF_PENDING_IDS),
                pending_id_key(*p, &ev.key, &ev.event_id),
                hlc_bytes(hlc),
            );
        }
        for (p, k, hlc, id) in &batch.pending_del {
            wb.delete_cf(self.cf(CF_PENDING), pending_key(*p, k, *hlc));
            wb.delete_cf(self.cf(CF_PENDING_IDS), pending_id_key(*p, k, id));
        }
        for (k, id, hlc_ms) in &batch.view_ids {
            wb.put_cf(
                self.cf(CF_VIEW_IDS),
                view_id_key(k, id),
                hlc_ms.to_be_bytes(),
            );
        }
        for (p, k, r) in &batch.view_replicas {
            wb.put_cf(
                self.cf(CF_VIEW),
                pkey(*p, k),
                serde_json::to_vec(r).map_err(store_err)?,
            );
        }
        for (p, next) in &batch.view_next {
            wb.put_cf(self.cf(CF_META), view_next_key(*p), next.to_be_bytes());
        }
        for (p, from) in &batch.pending_from {
            wb.put_cf(self.cf(CF_META), pending_from_key(*p), from.to_be_bytes());
        }
        self.db.write(wb).map_err(store_err)
    }

    fn view(&self, partition: i32) -> Result<(i64, Vec<(String, Replica)>)> {
        let next = self
            .db
            .get_cf(self.cf(CF_META), view_next_key(partition))
            .map_err(store_err)?
            .and_then(|v| v.as_slice().try_into().ok().map(i64::from_be_bytes))
            .unwrap_or(0);
        Ok((next, self.partition_json(CF_VIEW, partition)?))
    }

    fn pending_from(&self, partition: i32) -> Result<Option<i64>> {
        Ok(self
            .db
            .get_cf(self.cf(CF_META), pending_from_key(partition))
            .map_err(store_err)?
            .and_then(|v| v.as_slice().try_into().ok().map(i64::from_be_bytes)))
    }

    fn pending_keys(&self, partition: i32) -> Result<Vec<(String, PendingKey)>> {
        let prefix = partition.to_be_bytes();
        let mut out: Vec<(String, PendingKey)> = Vec::new();
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(partition.saturating_add(1).to_be_bytes());
        let iter = self.db.iterator_cf_opt(
            self.cf(CF_PENDING),
            ro,
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item.map_err(store_err)?;
            if !k.starts_with(&prefix) {
                break;
            }
            // partition, key, NUL, hlc: the key is what lies between.
            let Some(key_end) = k.len().checked_sub(HLC_BYTES + 1).filter(|e| *e >= 4) else {
                return Err(store_err("malformed pending event key"));
            };
            let hlc = hlc_from(&k[key_end + 1..]).ok_or_else(|| store_err("malformed hlc"))?;
            let key = std::str::from_utf8(&k[4..key_end]).map_err(store_err)?;
            match out.last_mut() {
                Some((last, s)) if last == key => {
                    s.count += 1;
                    s.last = s.last.max(hlc);
                }
                _ => {
                    // The first of a key in HLC order: its id comes from the event.
                    let ev = Codec::event().decode(&v).map_err(store_err)?;
                    out.push((
                        key.to_owned(),
                        PendingKey {
                            partition,
                            count: 1,
                            first: (hlc, ev.event_id),
                            last: hlc,
                        },
                    ));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_is_visible_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = RocksStore::open(dir.path()).unwrap();
            s.write(StoreBatch {
                states: vec![(1, "k".into(), AggState::Counter { total: 5 })],
                dedup: vec![(1, "k".into(), "e1".into(), 0)],
                metas: vec![(
                    1,
                    PartitionMeta {
                        history_next: 7,
                        hlc: Hlc::new(3, 1),
                        input_next: 9,
                    },
                )],
                ..Default::default()
            })
            .unwrap();
        }
        let s = RocksStore::open(dir.path()).unwrap();
        assert!(s.seen(1, "k", "e1").unwrap());
        assert!(!s.seen(2, "k", "e1").unwrap());
        assert_eq!(
            s.state(1, "k").unwrap(),
            Some(AggState::Counter { total: 5 })
        );
        assert_eq!(s.meta(1).unwrap().unwrap().history_next, 7);
        assert_eq!(
            s.states(1).unwrap(),
            vec![("k".to_owned(), AggState::Counter { total: 5 })]
        );
        assert!(s.states(2).unwrap().is_empty());
        let id = s.instance_id().unwrap();
        drop(s);
        assert_eq!(
            RocksStore::open(dir.path()).unwrap().instance_id().unwrap(),
            id
        );
    }

    /// Pending own events: scanned per key in HLC order (a key that extends another one
    /// with a NUL is not mixed in), found by id, summarised per key for a restore, and
    /// deleted with their ids.
    #[test]
    fn pending_events_scan_find_and_summarise() {
        use rf_core::view::PendingLog;
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open(dir.path()).unwrap();
        let ev = |key: &str, id: &str, ms: i64| {
            let mut e = Event::new(id, key, rf_schemas::Op::CounterAdd { delta: 1 });
            e.hlc = Some(Hlc::new(ms, 0));
            e
        };
        let puts = vec![
            (3, ev("k", "b", 20)),
            (3, ev("k", "a", 10)),
            (3, ev("k", "c", 30)),
            (3, ev("k\0x", "z", 15)),
            (4, ev("k", "other", 5)),
        ];
        s.write(StoreBatch {
            pending_put: puts,
            ..Default::default()
        })
        .unwrap();
        let log = s.pending_events();
        let ids = |v: Vec<Event>| v.into_iter().map(|e| e.event_id).collect::<Vec<_>>();
        assert_eq!(ids(log.scan(3, "k", None, usize::MAX)), ["a", "b", "c"]);
        assert_eq!(ids(log.scan(3, "k", Some(Hlc::new(10, 0)), 1)), ["b"]);
        assert_eq!(ids(log.scan(3, "k\0x", None, 9)), ["z"]);
        assert_eq!(log.find(3, "k", "b"), Some(Hlc::new(20, 0)));
        assert_eq!(log.find(4, "k", "b"), None);
        let keys = s.pending_keys(3).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].0, "k");
        assert_eq!(keys[0].1.count, 3);
        assert_eq!(keys[0].1.first, (Hlc::new(10, 0), "a".to_owned()));
        assert_eq!(keys[0].1.last, Hlc::new(30, 0));
        s.write(StoreBatch {
            pending_del: vec![(3, "k".into(), Hlc::new(10, 0), "a".into())],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(ids(log.scan(3, "k", None, usize::MAX)), ["b", "c"]);
        assert_eq!(log.find(3, "k", "a"), None);
        // A store written before the id index existed gets it at open.
        drop(log);
        let mut s = s;
        std::sync::Arc::get_mut(&mut s.db)
            .expect("no other handle")
            .drop_cf(CF_PENDING_IDS)
            .unwrap();
        drop(s);
        let s = RocksStore::open(dir.path()).unwrap();
        assert_eq!(s.pending_events().find(3, "k", "c"), Some(Hlc::new(30, 0)));
    }

    #[test]
    fn dedup_ids_expire_by_compaction_after_retention() {
        let dir = tempfile::tempdir().unwrap();
        let s = RocksStore::open_with(
            dir.path(),
            &StoreOptions {
                retention: Duration::from_secs(3600),
                ..Default::default()
            },
        )
        .unwrap();
        let now = rf_core::Clock::now_ms(&rf_core::SystemClock);
        let old = now - 2 * 3600 * 1000;
        s.write(StoreBatch {
            dedup: (0..1000)
                .map(|i| (0, "k".to_owned(), format!("old-{i}"), old))
                .chain((0..1000).map(|i| (0, "k".to_owned(), format!("new-{i}"), now)))
                .collect(),
            ..Default::default()
        })
        .unwrap();
        // Before compaction both are remembered: expiry never comes early.
        assert!(s.seen(0, "k", "old-1").unwrap());
        s.db.flush_cf(s.cf(CF_DEDUP)).unwrap();
        s.compact_dedup();
        assert!((0..1000).all(|i| !s.seen(0, "k", &format!("old-{i}")).unwrap()));
        assert!((0..1000).all(|i| s.seen(0, "k", &format!("new-{i}")).unwrap()));
    }
}
