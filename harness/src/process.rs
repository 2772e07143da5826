//! A processor or reconciler in its own OS process (optionally inside a network namespace),
//! so tests can kill -9 it at any moment or cut its network.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where the workspace's binaries are: `RF_BIN_DIR`, else next to (or one level above)
/// the running executable, which is where cargo puts them for tests and for the demo.
pub fn bin_path(name: &str) -> Result<PathBuf, String> {
    let mut dirs = Vec::new();
    if let Ok(d) = std::env::var("RF_BIN_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(d) = exe.parent() {
            dirs.push(d.to_path_buf());
            if let Some(up) = d.parent() {
                dirs.push(up.to_path_buf());
            }
        }
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!("binary {name:?} not found in {dirs:?}: build it first (cargo build --release --workspace --bins) or set RF_BIN_DIR")
        })
}

/// The processor's command line for `cfg`: the flags, and `-X` for each librdkafka setting.
fn processor_args(cfg: &rf_processor::Config) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--region".into(),
        cfg.region.clone(),
        "--bootstrap-servers".into(),
        cfg.bootstrap_servers.clone(),
        "--state-dir".into(),
        cfg.state_dir.display().to_string(),
        "--group-id".into(),
        cfg.group_id(),
        "--http-addr".into(),
        cfg.http_addr.clone(),
    ];
    if !cfg.home_bootstrap_servers.is_empty() {
        args.push("--home-bootstrap-servers".into());
        args.push(cfg.home_bootstrap_servers.clone());
    }
    for (k, v) in &cfg.kafka {
        args.push("-X".into());
        args.push(format!("{k}={v}"));
    }
    args
}

pub struct ChildProcess {
    child: Child,
    pub log: PathBuf,
    /// Where this run's output starts in the (appended) log.
    log_start: usize,
}

/// The processor binary as a child process.
pub type ChildProcessor = ChildProcess;

/// What a processor logs once its assigned partitions are restored and it processes.
pub const RESTORED: &str = "partitions assigned and restored";

impl ChildProcess {
    /// Start `processor` for `cfg`, appending its output to `<state_dir>.log`; `env` adds
    /// environment variables (e.g. `RF_FAILPOINTS`).
    pub fn spawn(cfg: &rf_processor::Config, env: &[(&str, &str)]) -> Result<Self, String> {
        Self::spawn_processor_in(cfg, env, None)
    }

    /// As [`ChildProcess::spawn`], inside network namespace `netns` when given.
    pub fn spawn_processor_in(
        cfg: &rf_processor::Config,
        env: &[(&str, &str)],
        netns: Option<&str>,
    ) -> Result<Self, String> {
        Self::spawn_path(
            bin_path("processor")?,
            &processor_args(cfg),
            env,
            &cfg.state_dir.with_extension("log"),
            netns,
        )
    }

    /// As [`ChildProcess::spawn`] with the processor binary at `bin` (another build, for a
    /// benchmark against it). Only the command-line flags are passed, which every build has.
    pub fn spawn_processor_binary(
        bin: &Path,
        cfg: &rf_processor::Config,
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        Self::spawn_path(
            bin.to_path_buf(),
            &processor_args(cfg),
            env,
            &cfg.state_dir.with_extension("log"),
            None,
        )
    }

    /// Start `reconciler` with `cfg` (written next to `log` as TOML), appending its output
    /// to `log`.
    pub fn spawn_reconciler(
        cfg: &rf_reconciler::Config,
        log: &Path,
        netns: Option<&str>,
    ) -> Result<Self, String> {
        let file = log.with_extension("toml");
        let text = toml::to_string(cfg).map_err(|e| e.to_string())?;
        std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
        Self::spawn_bin(
            "reconciler",
            &["--config".into(), file.display().to_string()],
            &[],
            log,
            netns,
        )
    }

    /// Start workspace binary `name` with `args`, output appended to `log`, inside network
    /// namespace `netns` (via `ip netns exec`, which execs: the pid is the binary's).
    pub fn spawn_bin(
        name: &str,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
        netns: Option<&str>,
    ) -> Result<Self, String> {
        Self::spawn_path(bin_path(name)?, args, env, log, netns)
    }

    fn spawn_path(
        bin: PathBuf,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
        netns: Option<&str>,
    ) -> Result<Self, String> {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(args).envs(env.iter().copied()).env(
            "RUST_LOG",
            std::env::var("RF_CHILD_LOG").unwrap_or_else(|_| "info".into()),
        );
        Self::spawn_command(cmd, log)
    }

    /// Start any command, output appended to `log`.
    pub fn spawn_command(mut cmd: Command, log: &Path) -> Result<Self, String> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let log_start = out.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {:?}: {e}", cmd.get_program()))?;
        Ok(ChildProcess {
            child,
            log: log.to_path_buf(),
            log_start,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no destructor, no flush, no commit.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the graceful exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.wait(timeout)
    }

    /// Wait for the process to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                self.kill9();
                return Err(format!(
                    "child {} did not exit within {timeout:?}",
                    self.pid()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Has it exited already?
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Wait until its log contains `pattern` (fails if the process exits first).
    pub fn wait_log(&mut self, pattern: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_contains(pattern) {
                return Ok(());
            }
            if let Some(st) = self.exited() {
                return Err(format!("exited ({st}) before logging {pattern:?}"));
            }
            if Instant::now() > deadline {
                return Err(format!("no {pattern:?} in the log within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A processor started on `cfg`, once it has restored its partitions and is
    /// processing (the log line `rebalance.rs` writes).
    pub fn spawn_restored(
        cfg: &rf_processor::Config,
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut p = Self::spawn(cfg, env)?;
        p.wait_log(RESTORED, timeout)?;
        Ok(p)
    }

    /// SIGTERM, and fail unless it stops cleanly (exit 0) within 30 s.
    pub fn stop_gracefully(&mut self) -> Result<(), String> {
        let st = self.terminate(Duration::from_secs(30))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!(
                "graceful stop failed ({st}):\n{}",
                self.log_tail(30)
            ))
        }
    }

    /// Whether this run (not an earlier one on the same state) logged `pattern`.
    pub fn log_contains(&self, pattern: &str) -> bool {
        std::fs::read(&self.log)
            .map(|b| {
                String::from_utf8_lossy(b.get(self.log_start..).unwrap_or(&[])).contains(pattern)
            })
            .unwrap_or(false)
    }

    /// What this run logged, with terminal colour codes taken out.
    pub fn log_text(&self) -> String {
        let raw = std::fs::read(&self.log).unwrap_or_default();
        let text = String::from_utf8_lossy(raw.get(self.log_start..).unwrap_or(&[])).into_owned();
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The numbers logged as `field=N` on the lines of this run that contain `message`.
    pub fn logged_numbers(&self, message: &str, field: &str) -> Vec<i64> {
        let pat = format!("{field}=");
        self.log_text()
            .lines()
            .filter(|l| l.contains(message))
            .filter_map(|l| {
                let at = l.find(&pat)? + pat.len();
                l[at..]
                    .split(|c: char| !c.is_ascii_digit() && c != '-')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill9();
        }
    }
}

/// Wait until the consumer group `group` has committed every record published up to
/// `ends`, failing early (with the log) if a process in `running` exits.
pub fn wait_drained(
    bootstrap: &str,
    group: &str,
    ends: &crate::workload::EndOffsets,
    running: &mut [&mut ChildProcessor],
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let committed = crate::check::group_committed(bootstrap, group, "events", 4)?;
        if ends
            .iter()
            .all(|((_, part), end)| committed.get(part).is_some_and(|c| c >= end))
        {
            return Ok(());
        }
        for p in running.iter_mut() {
            if let Some(st) = p.exited() {
                return Err(format!("processor exited ({st}):\n{}", p.log_tail(30)));
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "input not drained within {timeout:?}: committed {committed:?}, end {ends:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Wait until `p` has drained the input up to `ends` (the group committed them), then stop
/// it gracefully.
pub fn drain_and_stop(
    p: &mut ChildProcessor,
    bootstrap: &str,
    group: &str,
    ends: &crate::workload::EndOffsets,
    timeout: Duration,
) -> Result<(), String> {
    wait_drained(bootstrap, group, ends, &mut [&mut *p], timeout)?;
    p.stop_gracefully()
}

/// A count from the environment (soak knobs such as `RF_KILLS`), or `default`.
/// A figure of `/proc/<pid>/status` in kB (e.g. `VmRSS:`, `VmHWM:`), if the process lives.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
