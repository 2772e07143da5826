//! Interoperability, tested with other libraries than ours: Python producers and consumers
//! using only the `.avsc` files in `schemas/avro/`, with fastavro and with the official
//! Apache Avro package (each computing its own fingerprint, as a naive user's code would),
//! through confluent-kafka, against processors and a reconciler on real Tansu brokers.
//!
//! - Each library's fingerprints are among those `docs/contract.md` publishes
//!   (`schemas/avro/fingerprints.tsv`), and the two disagree on `Event` as documented.
//! - Events of every upstream op, encoded by either library, are all accepted into
//!   `history` (none dead-lettered).
//! - A consumer of each kind decodes `history` and `reconciled`, heartbeats included,
//!   finding the writer schema by the header's fingerprint in the published list.
use rf_harness::check::reconciled_count;
use rf_harness::cluster::Cluster;
use rf_harness::python::{ensure_venv, read_requirements, source_file};
use rf_schemas::Codec;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const LIBRARIES: [&str; 2] = ["fastavro", "avro"];

struct Interop {
    python: PathBuf,
    script: PathBuf,
    fingerprints: PathBuf,
}

impl Interop {
    fn new() -> Interop {
        let script = source_file("tests/interop/interop.py").unwrap();
        let reqs = read_requirements(&script.with_file_name("requirements.txt")).unwrap();
        Interop {
            python: ensure_venv("interop-venv", &reqs).unwrap(),
            script,
            fingerprints: source_file("schemas/avro/fingerprints.tsv").unwrap(),
        }
    }

    /// Run one sub-command; its stdout is one JSON document.
    fn run(&self, args: &[&str]) -> Value {
        let out = Command::new(&self.python)
            .arg(&self.script)
            .args(args)
            .output()
            .expect("run interop.py");
        assert!(
            out.status.success(),
            "interop.py {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("interop.py prints JSON")
    }

    fn consume(
        &self,
        bootstrap: &str,
        topic: &str,
        library: &str,
        prefix: &str,
        n: usize,
    ) -> Vec<Value> {
        let fps = self.fingerprints.to_str().unwrap();
        let v = self.run(&[
            "consume",
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--library",
            library,
            "--fingerprints",
            fps,
            "--prefix",
            prefix,
            "--expect",
            &n.to_string(),
            "--timeout",
            "60",
        ]);
        v["records"].as_array().unwrap().clone()
    }
}

fn hex(fp: u64) -> String {
    fp.to_le_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn published(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('\t').next().unwrap().to_owned())
        .collect()
}

fn ids(records: &[Value], at: &str) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| {
            r.pointer(at)
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("no {at} in {r}"))
                .to_owned()
        })
        .collect()
}

#[test]
fn python_avro_libraries_produce_and_consume_our_topics() {
    let py = Interop::new();

    // The fingerprints each library computes are the ones we publish, and ours is written.
    let fps = py.run(&["fingerprints"]);
    let list = published(&py.fingerprints);
    for lib in LIBRARIES {
        for file in ["event.avsc", "reconciled_event.avsc", "conflict.avsc"] {
            let fp = fps[lib][file].as_str().unwrap();
            assert!(
                list.contains(fp),
                "{lib}'s {file} fingerprint {fp} is not published"
            );
        }
    }
    assert_eq!(
        fps["fastavro"]["event.avsc"].as_str().unwrap(),
        hex(Codec::event().fingerprint()),
        "we write the Java reference (fastavro) fingerprint"
    );
    assert_ne!(fps["fastavro"]["event.avsc"], fps["avro"]["event.avsc"]);

    let regions = ["a", "b"];
    let mut c = Cluster::start(&regions, 4).unwrap();
    for r in regions {
        c.start_processor(r, 0);
    }
    c.start_reconciler();

    // Every upstream op, encoded by each library, into each region.
    let mut sent = Vec::new();
    for (region, lib) in [
        ("a", "fastavro"),
        ("b", "avro"),
        ("a", "avro"),
        ("b", "fastavro"),
    ] {
        let prefix = format!("{region}{lib}");
        let v = py.run(&[
            "produce",
            "--bootstrap",
            &c.bootstrap(region),
            "--topic",
            "events",
            "--library",
            lib,
            "--prefix",
            &prefix,
        ]);
        let produced = v["produced"].as_array().unwrap().clone();
        let ops: BTreeSet<&str> = produced.iter().filter_map(|p| p["op"].as_str()).collect();
        assert!(ops.len() >= 7, "{lib}: every upstream op, got {ops:?}");
        sent.push((region, lib, prefix, produced));
    }
    let total: usize = sent.iter().map(|s| s.3.len()).sum();
    c.wait_until(Duration::from_secs(60), "every event consumed", |c| {
        Ok(c.processor_sum(|s| &s.consumed) as usize >= total)
    })
    .unwrap();
    c.wait_until(Duration::from_secs(60), "every event reconciled", |c| {
        Ok(reconciled_count(c)? >= total)
    })
    .unwrap();
    let errs = c.stop_all();
    assert!(errs.is_empty(), "components failed: {errs:?}");
    assert_eq!(
        c.processor_sum(|s| &s.dead_lettered),
        0,
        "no event of either library dead-lettered"
    );
    assert_eq!(c.processor_sum(|s| &s.accepted) as usize, total);

    // Consumers of each kind decode history and reconciled.
    for (region, lib, prefix, produced) in &sent {
        let want = ids(produced, "/event_id");
        for reader in LIBRARIES {
            let h = py.consume(&c.bootstrap(region), "history", reader, prefix, want.len());
            assert_eq!(
                ids(&h, "/value/event_id"),
                want,
                "{reader} reads {lib}'s history"
            );
            for r in &h {
                assert_eq!(r["fingerprint"], hex(Codec::event().fingerprint()), "{r}");
                assert_eq!(r["value"]["region"], *region, "{r}");
                assert!(r["value"]["hlc"]["physical_ms"].as_i64().is_some(), "{r}");
            }
            let rec = py.consume(
                &c.home.bootstrap(),
                "reconciled",
                reader,
                prefix,
                want.len(),
            );
            assert_eq!(
                ids(&rec, "/value/event/event_id"),
                want,
                "{reader} reads {lib}'s reconciled records"
            );
            for r in &rec {
                assert_eq!(r["fingerprint"], hex(Codec::reconciled().fingerprint()));
                assert!(r["value"]["outcome"].is_string(), "{r}");
                assert!(r["value"]["state_json"].is_string(), "{r}");
            }
        }
    }
}
