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

use crate::merge::{Checkpoint, Loaded};
use rf_core::{AggState, OrderKey};
use rf_runtime::Error;
use rf_schemas::Hlc;
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

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
        // A checkpoint store is small (state, not history): modest memtables.
        opts.set_write_buffer_size(16 * 1024 * 1024);
        let cfs = [CF_STATE, CF_EMITTED, CF_META]
            .into_iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(err)?;
        Ok(CheckpointStore { db })
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

    /// The checkpoint of `topic[partition]`, if there is one.
    pub fn load(&self, topic: &str, partition: i32) -> Result<Option<(Meta, Loaded)>, Error> {
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
        self.scan(CF_STATE, &p, |k, v| {
            let key = String::from_utf8_lossy(k).into_owned();
            let s = AggState::from_json(&String::from_utf8_lossy(v)).map_err(err)?;
            loaded.states.push((key, s));
            Ok(())
        })?;
        self.scan(CF_EMITTED, &p, |k, v| {
            let k = String::from_utf8_lossy(k);
            let (key, id) = k.split_once('\0').ok_or_else(|| err("bad emitted key"))?;
            let v = String::from_utf8_lossy(v);
            let mut f = v.split('\0');
            let (Some(region), Some(ms), Some(l)) = (f.next(), f.next(), f.next()) else {
                return Err(err("bad emitted value"));
            };
            let hlc = Hlc::new(ms.parse().map_err(err)?, l.parse().map_err(err)?);
            loaded
                .emitted
                .push((key.to_owned(), id.to_owned(), region.to_owned(), hlc));
            Ok(())
        })?;
        Ok(Some((stored.meta, loaded)))
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
        assert_eq!(l.emitted, cp.emitted_put);
        assert_eq!(l.last_emitted, cp.last_emitted);
        assert!(s.load("reconciled-check", 0).unwrap().is_none());
        assert!(s.load("reconciled", 1).unwrap().is_none());
        // A later delta expires an id.
        let cp2 = Checkpoint {
            emitted_del: vec![("likes:1".into(), "e1".into())],
            ..Checkpoint::default()
        };
        s.write("reconciled", 0, &cp2, &meta).unwrap();
        assert!(s
            .load("reconciled", 0)
            .unwrap()
            .unwrap()
            .1
            .emitted
            .is_empty());
    }
}
