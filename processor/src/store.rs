//! State store: per input partition, the folded state, the dedup ids and the history
//! offset the fold reflects (invariant 3), written in one atomic batch per commit.

use crate::error::{Error, Result};
use rf_core::AggState;
use rf_schemas::Hlc;
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
}

pub trait StateStore: Send {
    fn meta(&self, partition: i32) -> Result<Option<PartitionMeta>>;
    fn state(&self, partition: i32, key: &str) -> Result<Option<AggState>>;
    fn seen(&self, partition: i32, key: &str, event_id: &str) -> Result<bool>;
    fn write(&self, batch: StoreBatch) -> Result<()>;
}

const CF_STATE: &str = "state";
const CF_DEDUP: &str = "dedup";
const CF_META: &str = "meta";

pub struct RocksStore {
    db: DB,
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

impl RocksStore {
    pub fn open(path: &Path) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let mut dedup_opts = Options::default();
        // Dedup lookups are mostly misses: a bloom filter answers them without disk reads.
        let mut bbo = rocksdb::BlockBasedOptions::default();
        bbo.set_bloom_filter(10.0, false);
        dedup_opts.set_block_based_table_factory(&bbo);
        let cfs = vec![
            ColumnFamilyDescriptor::new(CF_STATE, Options::default()),
            ColumnFamilyDescriptor::new(CF_DEDUP, dedup_opts),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(store_err)?;
        Ok(RocksStore { db })
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
        self.db.write(wb).map_err(store_err)
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
    }
}
