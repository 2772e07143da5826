//! Python peers (the Avro interop test, the Quix Streams benchmark peer): a virtualenv
//! under `~/.cache/regionflow/<name>`, created and filled with pinned packages on first
//! use, idempotently, from the registry `pip` is set up for.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cache_dir(name: &str) -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    PathBuf::from(home).join(".cache/regionflow").join(name)
}

fn ok(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

/// `name==version` pins from a requirements file (comments and blank lines skipped).
pub fn read_requirements(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The python of the venv `name`, with every pinned package of `pins` (`name==version`)
/// installed at exactly that version; installs what is missing.
pub fn ensure_venv(name: &str, pins: &[String]) -> Result<PathBuf, String> {
    let dir = cache_dir(name);
    let python = dir.join("bin/python");
    let checks: Vec<String> = pins
        .iter()
        .filter_map(|p| p.split_once("=="))
        .map(|(n, v)| format!("m.version({n:?}) == {v:?}"))
        .collect();
    let probe = format!(
        "import importlib.metadata as m; assert {}",
        if checks.is_empty() {
            "True".to_owned()
        } else {
            checks.join(" and ")
        }
    );
    if python.is_file() && ok(Command::new(&python).args(["-c", &probe])) {
        return Ok(python);
    }
    println!("   installing {} into {}", pins.join(" "), dir.display());
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
        .args(pins)
        .status()
        .map_err(|e| format!("pip install: {e}"))?;
    if !st.success() || !ok(Command::new(&python).args(["-c", &probe])) {
        return Err(format!("installing {} failed", pins.join(" ")));
    }
    Ok(python)
}

/// A file of the source tree (the workspace root is this crate's parent).
pub fn source_file(rel: &str) -> Result<PathBuf, String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!("{} not found", p.display()))
    }
}
