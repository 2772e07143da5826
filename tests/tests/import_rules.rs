//! The import rules of ARCHITECTURE.md, checked over `cargo metadata` (what each crate
//! depends on) and the sources (what each layer names). A rule that breaks fails here with the
//! crate or file that broke it.
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every workspace crate's direct dependencies (normal, dev and build), by crate name.
fn dependencies() -> Vec<(String, BTreeSet<String>)> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

fn deps_of<'a>(all: &'a [(String, BTreeSet<String>)], name: &str) -> &'a BTreeSet<String> {
    &all.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no crate {name} in the workspace"))
        .1
}

/// Rust sources under `dir`, recursively.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Lines of the sources under `paths` (files or directories) that name any of `words`.
fn naming(paths: &[&str], words: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    for p in paths {
        let p = root().join(p);
        if p.is_dir() {
            sources(&p, &mut files);
        } else {
            files.push(p);
        }
    }
    let mut hits = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if words.iter().any(|w| code.contains(w)) {
                hits.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
            }
        }
    }
    hits
}

#[test]
fn services_never_depend_on_each_other() {
    let all = dependencies();
    assert!(!deps_of(&all, "rf-processor").contains("rf-reconciler"));
    assert!(!deps_of(&all, "rf-reconciler").contains("rf-processor"));
}

#[test]
fn the_floor_knows_no_service() {
    let all = dependencies();
    let runtime = deps_of(&all, "rf-runtime");
    for forbidden in ["rf-processor", "rf-reconciler", "rf-core", "rocksdb"] {
        assert!(
            !runtime.contains(forbidden),
            "rf-runtime depends on {forbidden}"
        );
    }
    assert!(deps_of(&all, "rf-reconciler").contains("rf-runtime"));
    assert!(deps_of(&all, "rf-processor").contains("rf-runtime"));
    assert!(!deps_of(&all, "rf-harness").contains("rf-loadgen"));
}

#[test]
fn the_contract_and_the_core_do_no_io() {
    let all = dependencies();
    for krate in ["rf-schemas", "rf-core"] {
        let d = deps_of(&all, krate);
        for forbidden in ["rdkafka", "rocksdb", "tokio", "rf-runtime", "axum"] {
            assert!(!d.contains(forbidden), "{krate} depends on {forbidden}");
        }
    }
    let hits = naming(
        &[
            "schemas/src",
            "core/src",
            "processor/src/fold.rs",
            "reconciler/src/merge.rs",
        ],
        &["rdkafka", "rocksdb"],
    );
    assert!(
        hits.is_empty(),
        "I/O-free code names Kafka or RocksDB:\n{}",
        hits.join("\n")
    );
}

#[test]
fn unsafe_code_only_where_audited() {
    let hits: Vec<String> = naming(
        &[
            "core/src",
            "schemas/src",
            "runtime/src",
            "processor/src",
            "reconciler/src",
            "harness/src",
            "loadgen/src",
        ],
        &["unsafe ", "unsafe_code"],
    )
    .into_iter()
    .filter(|h| !h.contains("runtime/src/memory.rs"))
    .collect();
    assert!(
        hits.is_empty(),
        "unsafe outside runtime/src/memory.rs:\n{}",
        hits.join("\n")
    );
}

#[test]
fn each_service_names_rocksdb_in_its_store_only() {
    for (dir, store) in [
        ("processor/src", "processor/src/store.rs"),
        ("reconciler/src", "reconciler/src/store.rs"),
    ] {
        let hits: Vec<String> = naming(&[dir], &["rocksdb::"])
            .into_iter()
            .filter(|h| !h.contains(store))
            .collect();
        assert!(
            hits.is_empty(),
            "RocksDB outside {store}:\n{}",
            hits.join("\n")
        );
    }
}

#[test]
fn header_names_are_spelled_once() {
    // Every `rf-…` header name lives in rf_schemas::headers; nobody else spells one.
    let hits: Vec<String> = naming(
        &[
            "runtime/src",
            "processor/src",
            "reconciler/src",
            "harness/src",
        ],
        &[
            "\"rf-src-",
            "\"rf-source-",
            "\"rf-writer\"",
            "\"rf-handoff\"",
            "\"rf-resume-",
            "\"rf-error-",
            "\"rf-original-",
        ],
    );
    assert!(
        hits.is_empty(),
        "header names outside schemas/src/headers.rs:\n{}",
        hits.join("\n")
    );
}

#[test]
fn no_absolute_machine_path_in_the_repository() {
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root())
        .output()
        .expect("git ls-files");
    assert!(out.status.success(), "git ls-files failed");
    let mut hits = Vec::new();
    for f in out.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let rel = String::from_utf8_lossy(f).into_owned();
        let Ok(text) = std::fs::read_to_string(root().join(&rel)) else {
            continue; // binary, or deleted in the work tree
        };
        for (i, line) in text.lines().enumerate() {
            if ["/work/", "/root/", "/home/"]
                .iter()
                .any(|p| line.contains(p))
            {
                hits.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    // This file names the patterns it looks for.
    hits.retain(|h| !h.starts_with("tests/tests/import_rules.rs"));
    assert!(
        hits.is_empty(),
        "absolute machine paths:\n{}",
        hits.join("\n")
    );
}
