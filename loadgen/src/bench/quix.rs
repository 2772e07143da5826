//! The peer: a Quix Streams application (`loadgen/bench/quix_app.py`) in a Python venv the
//! benchmark creates (idempotently) under ~/.cache/regionflow/quix-venv.

use rf_harness::process::ChildProcess;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Pinned so that runs compare like with like.
pub const PACKAGES: &[&str] = &["quixstreams==3.28.1", "fastavro==1.13.1"];

fn venv_dir() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/regionflow/quix-venv")
}

fn ok(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

/// The venv's python, with Quix Streams and fastavro installed.
pub fn ensure_venv() -> Result<PathBuf, String> {
    let dir = venv_dir();
    let python = dir.join("bin/python");
    let probe = "import quixstreams, fastavro, importlib.metadata as m; \
                 assert m.version('quixstreams') == '3.28.1' and m.version('fastavro') == '1.13.1'";
    if python.is_file() && ok(Command::new(&python).args(["-c", probe])) {
        return Ok(python);
    }
    println!(
        "   installing {} into {}",
        PACKAGES.join(" "),
        dir.display()
    );
    if !python.is_file() {
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .map_err(|e| format!("python3 -m venv: {e}"))?;
        if !st.success() {
            return Err("python3 -m venv failed (apt package python3-venv)".into());
        }
    }
    let st = Command::new(dir.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .args(PACKAGES)
        .status()
        .map_err(|e| format!("pip install: {e}"))?;
    if !st.success() || !ok(Command::new(&python).args(["-c", probe])) {
        return Err(format!("installing {} failed", PACKAGES.join(" ")));
    }
    Ok(python)
}

/// The app script and the event schema, from the source tree this binary was built from.
fn source_file(rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{} not found", p.display()))
    }
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
    cmd.arg(source_file("bench/quix_app.py")?)
        .arg(bootstrap)
        .arg(input)
        .arg(output)
        .arg(group)
        .arg(state_dir)
        .arg(source_file("../schemas/avro/event.avsc")?)
        .arg(commit_ms.to_string())
        .env("PYTHONWARNINGS", "ignore");
    ChildProcess::spawn_command(cmd, &state_dir.with_extension("log"))
}
