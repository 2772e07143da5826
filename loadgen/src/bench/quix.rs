//! The peer: a Quix Streams application (`loadgen/bench/quix_app.py`) in a Python venv the
//! benchmark creates (idempotently) under ~/.cache/regionflow/quix-venv.

use rf_harness::process::ChildProcess;
use rf_harness::python::source_file;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Pinned so that runs compare like with like.
pub const PACKAGES: &[&str] = &["quixstreams==3.28.1", "fastavro==1.13.1"];

/// The venv's python, with Quix Streams and fastavro installed.
pub fn ensure_venv() -> Result<PathBuf, String> {
    let pins: Vec<String> = PACKAGES.iter().map(|p| p.to_string()).collect();
    rf_harness::python::ensure_venv("quix-venv", &pins)
}

/// Start the app on `input` → `output` as consumer group `group`.
pub fn spawn(
    python: &Path,
    bootstrap: &str,
    input: &str,
    output: &str,
    group: &str,
    state_dir: &Path,
    commit_ms: u64,
) -> Result<ChildProcess, String> {
    let mut cmd = Command::new(python);
    cmd.arg(source_file("loadgen/bench/quix_app.py")?)
        .arg(bootstrap)
        .arg(input)
        .arg(output)
        .arg(group)
        .arg(state_dir)
        .arg(source_file("schemas/avro/event.avsc")?)
        .arg(commit_ms.to_string())
        .env("PYTHONWARNINGS", "ignore");
    ChildProcess::spawn_command(cmd, &state_dir.with_extension("log"))
}
