//! The reconciler's checkpoint (invariant 3 for the reconciler; invariant 9): per partition
//! index of an output topic, the merged state of every key, the released ids of the
//! duplicate window, the last released order key and the resume positions, together with
//! the `reconciled` offset they reflect, written in one RocksDB batch after each committed
//! transaction (`Reconciler::release`). A restart loads it and reads only the `reconciled`
//! tail past that offset (`restore.rs`); without it, it rebuilds from offset 0.
//!
//! Keys are prefixed with the output topic and the partition, so reconcilers writing
//! different topics never read each other's checkpoint. The merge itself (`merge.rs`) never
//! names RocksDB: it hands over a [`Checkpoint`] delta and takes back a [`Loaded`] one.

use crate::merge::{Checkpoint, Loaded, ReleasedIds, StoredStates};
use rf_core::{AggState, OrderKey};
use rf_runtime::Error;
use rf_schemas::Hlc;
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

const CF_STATE: &str = "state";
const CF_EMITTED: &str = "emitted";
const CF_META: &str = "meta";

/// What a partition's checkpoint says besides the merge state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// The `reconciled` offset the checkpoint reflects: a restart reads from here.
    pub reconciled_next: i64,
    /// Where to re-read each region's history (the last record's `rf-resume-*` headers).
    pub resume: BTreeMap<String, i64>,
}

pub struct CheckpointStore {
    db: DB,
    /// Released ids with an HLC below this (ms) are past every partition's duplicate window:
    /// compaction drops them. Only ever raised (`expire_before`).
    horizon: Arc<AtomicI64>,
    /// The block cache every column family shares (data, index and filter blocks).
    cache: rocksdb::Cache,
}

/// Memtables of all column families together (two per family at most, flushed past this).
pub const MEMTABLE_BUDGET_BYTES: usize = 32 * 1024 * 1024;
/// Write-ahead log kept before flushes are forced: what a restart replays at most.
pub const MAX_WAL_BYTES: u64 = 64 * 1024 * 1024;
/// The block cache shared by all column families, index and filter blocks included.
pub const BLOCK_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// What the store holds in memory (RocksDB's own figures), for `rf_reconciler_store_memory_bytes`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreMemory {
    pub memtables: u64,
    pub table_readers: u64,
    pub block_cache: u64,
}

fn err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

fn prefix(topic: &str, partition: i32) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.len() + 5);
    k.extend_from_slice(topic.as_bytes());
    k.push(0);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn with(prefix: &[u8], parts: &[&str]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p.as_bytes());
    }
    k
}

impl CheckpointStore {
    pub fn open(dir: &Path) -> Result<CheckpointStore, Error> {
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Memory bounded by these settings, not by the store's size (invariant 9). Without
        // them each column family takes RocksDB's defaults (64 MB memtables, two each, and
        // index and filter blocks held outside any cache, growing with the data): the soak
        // measured RSS and restart (WAL replay) growing with the history.
        opts.set_db_write_buffer_size(MEMTABLE_BUDGET_BYTES);
        // A restart replays at most this much log: flushes are forced past it.
        opts.set_max_total_wal_size(MAX_WAL_BYTES);
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let table = |bloom: bool| {
            let mut block = rocksdb::BlockBasedOptions::default();
            block.set_block_cache(&cache);
            // Index and filter blocks live in the cache (bounded), not beside it, cut into
            // 4 KB partitions behind a pinned top level: a lookup reads one partition. A whole
            // filter per file is megabytes at a million ids, larger than a cache shard, so it
            // was read and checksummed again on every lookup (the soak's profile: 76 % of
            // the catch-up in XXH3 and page-cache copies, 6.5k events/s).
            block.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
            block.set_partition_filters(true);
            block.set_metadata_block_size(4096);
            block.set_cache_index_and_filter_blocks(true);
            block.set_pin_top_level_index_and_filter(true);
            block.set_pin_l0_filter_and_index_blocks_in_cache(true);
            if bloom {
                block.set_bloom_filter(10.0, false);
            }
            block
        };
        let cf_opts = |bytes: usize, bloom: bool| {
            let mut o = Options::default();
            o.set_write_buffer_size(bytes);
            o.set_block_based_table_factory(&table(bloom));
            o
        };
        let states = cf_opts(MEMTABLE_BUDGET_BYTES / 4, true);
        let meta = cf_opts(1024 * 1024, false);
        // Released ids: point lookups that mostly miss (a bloom filter answers those), expired
        // by compaction once past the window. The merge's window rule never needs an expired
        // one, so when compaction runs changes no decision.
        let horizon = Arc::new(AtomicI64::new(i64::MIN));
        let mut ids = cf_opts(MEMTABLE_BUDGET_BYTES / 4, true);
        let h = horizon.clone();
        ids.set_compaction_filter("rf-released-id-window", move |_level, _key, value| {
            let ms = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.split('\0').nth(1))
                .and_then(|ms| ms.parse::<i64>().ok());
            match ms {
                Some(ms) if ms < h.load(Ordering::Relaxed) => rocksdb::CompactionDecision::Remove,
                _ => rocksdb::CompactionDecision::Keep,
            }
        });
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_STATE, states),
            ColumnFamilyDescriptor::new(CF_EMITTED, ids),
            ColumnFamilyDescriptor::new(CF_META, meta),
        ];
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(err)?;
        Ok(CheckpointStore { db, horizon, cache })
    }

    fn scan(
        &self,
        cf: &str,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let cf = self.db.cf_handle(cf).expect("column family");
        for item in self
            .db
            .iterator_cf(cf, IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item.map_err(err)?;
            if !k.starts_with(prefix) {
                break;
            }
            f(&k[prefix.len()..], &v)?;
        }
        Ok(())
    }

    /// The checkpoint of `topic[partition]`, if there is one, with every key's state.
    pub fn load(&self, topic: &str, partition: i32) -> Result<Option<(Meta, Loaded)>, Error> {
        self.load_with(topic, partition, true)
    }

    /// The checkpoint of `topic[partition]` without the states, for a merge that reads them
    /// per key (`state`): a restart then loads nothing that grows with the keys.
    pub fn load_meta(&self, topic: &str, partition: i32) -> Result<Option<(Meta, Loaded)>, Error> {
        self.load_with(topic, partition, false)
    }

    /// One key's state in the checkpoint of `topic[partition]`.
    pub fn state(&self, topic: &str, partition: i32, key: &str) -> Result<Option<AggState>, Error> {
        let cf = self.db.cf_handle(CF_STATE).expect("column family");
        let Some(v) = self
            .db
            .get_pinned_cf(cf, with(&prefix(topic, partition), &[key]))
            .map_err(err)?
        else {
            return Ok(None);
        };
        Ok(Some(
            AggState::from_json(&String::from_utf8_lossy(&v)).map_err(err)?,
        ))
    }

    fn load_with(
        &self,
        topic: &str,
        partition: i32,
        states: bool,
    ) -> Result<Option<(Meta, Loaded)>, Error> {
        let p = prefix(topic, partition);
        let meta_cf = self.db.cf_handle(CF_META).expect("column family");
        let Some(raw) = self.db.get_cf(meta_cf, &p).map_err(err)? else {
            return Ok(None);
        };
        #[derive(Deserialize)]
        struct Stored {
            meta: Meta,
            last_emitted: Option<(i64, i32, String, String)>,
        }
        let stored: Stored = serde_json::from_slice(&raw).map_err(err)?;
        let mut loaded = Loaded {
            last_emitted: stored
                .last_emitted
                .map(|(ms, l, r, e)| OrderKey::new(Hlc::new(ms, l), r, e)),
            ..Loaded::default()
        };
        if states {
            self.scan(CF_STATE, &p, |k, v| {
                let key = String::from_utf8_lossy(k).into_owned();
                let s = AggState::from_json(&String::from_utf8_lossy(v)).map_err(err)?;
                loaded.states.push((key, s));
                Ok(())
            })?;
        }
        Ok(Some((stored.meta, loaded)))
    }

    /// The released copy of (key, event_id) in `topic[partition]`, if still held.
    pub fn released(
        &self,
        topic: &str,
        partition: i32,
        key: &str,
        event_id: &str,
    ) -> Result<Option<(String, Hlc)>, Error> {
        let cf = self.db.cf_handle(CF_EMITTED).expect("column family");
        let k = with(&prefix(topic, partition), &[key, event_id]);
        let Some(v) = self.db.get_pinned_cf(cf, k).map_err(err)? else {
            return Ok(None);
        };
        let v = String::from_utf8_lossy(&v);
        let mut f = v.split('\0');
        let (Some(region), Some(ms), Some(l)) = (f.next(), f.next(), f.next()) else {
            return Err(err("bad released id value"));
        };
        let hlc = Hlc::new(ms.parse().map_err(err)?, l.parse().map_err(err)?);
        Ok(Some((region.to_owned(), hlc)))
    }

    /// RocksDB's figures for what the store holds in memory now.
    pub fn memory(&self) -> StoreMemory {
        match rocksdb::perf::get_memory_usage_stats(Some(&[&self.db]), Some(&[&self.cache])) {
            Ok(m) => StoreMemory {
                memtables: m.mem_table_total,
                table_readers: m.mem_table_readers_total,
                block_cache: m.cache_total,
            },
            Err(_) => StoreMemory::default(),
        }
    }

    /// Let compaction drop released ids with an HLC below `ms` (the lowest duplicate-window
    /// start over the partitions this store serves). Never lowered.
    pub fn expire_before(&self, ms: i64) {
        self.horizon.fetch_max(ms, Ordering::Relaxed);
    }

    /// Write one partition's checkpoint delta and meta in one batch.
    pub fn write(
        &self,
        topic: &str,
        partition: i32,
        cp: &Checkpoint,
        meta: &Meta,
    ) -> Result<(), Error> {
        let p = prefix(topic, partition);
        let (state, emitted, meta_cf) = (
            self.db.cf_handle(CF_STATE).expect("column family"),
            self.db.cf_handle(CF_EMITTED).expect("column family"),
            self.db.cf_handle(CF_META).expect("column family"),
        );
        let mut b = WriteBatch::default();
        for (key, s) in &cp.states {
            let k = with(&p, &[key]);
            match s {
                Some(s) => b.put_cf(state, k, s.to_json()),
                None => b.delete_cf(state, k),
            }
        }
        for (key, id) in &cp.emitted_del {
            b.delete_cf(emitted, with(&p, &[key, id]));
        }
        for (key, id, region, hlc) in &cp.emitted_put {
            let v = format!("{region}\0{}\0{}", hlc.physical_ms, hlc.logical);
            b.put_cf(emitted, with(&p, &[key, id]), v);
        }
        let last = cp.last_emitted.as_ref().map(|o| {
            (
                o.hlc.physical_ms,
                o.hlc.logical,
                o.region.clone(),
                o.event_id.clone(),
            )
        });
        let stored = serde_json::json!({ "meta": meta, "last_emitted": last });
        b.put_cf(meta_cf, &p, stored.to_string());
        self.db.write(b).map_err(err)
    }
}

/// One partition's released ids in the store, for the merge (`merge::ReleasedIds`).
pub struct StoredIds {
    pub store: Arc<CheckpointStore>,
    pub topic: String,
    pub partition: i32,
}

impl StoredStates for StoredIds {
    fn state(&self, key: &str) -> Result<Option<AggState>, String> {
        self.store
            .state(&self.topic, self.partition, key)
            .map_err(|e| format!("state of {key}: {e}"))
    }
}

impl ReleasedIds for StoredIds {
    fn get(&self, key: &str, event_id: &str) -> Result<Option<(String, Hlc)>, String> {
        self.store
            .released(&self.topic, self.partition, key, event_id)
            .map_err(|e| format!("released id {key}/{event_id}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_reads_back_as_written_and_topics_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let s = CheckpointStore::open(dir.path()).unwrap();
        assert!(s.load("reconciled", 0).unwrap().is_none());
        let cp = Checkpoint {
            states: vec![
                ("likes:1".into(), Some(AggState::Counter { total: 3 })),
                ("gone".into(), None),
            ],
            emitted_put: vec![("likes:1".into(), "e1".into(), "a".into(), Hlc::new(5, 1))],
            emitted_del: vec![],
            last_emitted: Some(OrderKey::new(Hlc::new(5, 1), "a", "e1")),
        };
        let meta = Meta {
            reconciled_next: 42,
            resume: [("a".to_owned(), 7)].into_iter().collect(),
        };
        s.write("reconciled", 0, &cp, &meta).unwrap();
        let (m, l) = s.load("reconciled", 0).unwrap().unwrap();
        assert_eq!(m, meta);
        assert_eq!(l.states.len(), 1);
        // Released ids are looked up, never loaded: a restart costs the state, not the ids.
        assert!(l.emitted.is_empty());
        assert_eq!(
            s.released("reconciled", 0, "likes:1", "e1").unwrap(),
            Some(("a".to_owned(), Hlc::new(5, 1)))
        );
        assert_eq!(s.released("reconciled", 1, "likes:1", "e1").unwrap(), None);
        assert_eq!(l.last_emitted, cp.last_emitted);
        assert!(s.load("reconciled-check", 0).unwrap().is_none());
        assert!(s.load("reconciled", 1).unwrap().is_none());
        // A later delta expires an id.
        let cp2 = Checkpoint {
            emitted_del: vec![("likes:1".into(), "e1".into())],
            ..Checkpoint::default()
        };
        s.write("reconciled", 0, &cp2, &meta).unwrap();
        assert_eq!(s.released("reconciled", 0, "likes:1", "e1").unwrap(), None);
    }
}
