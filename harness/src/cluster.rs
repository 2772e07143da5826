//! A multi-region set-up on embedded brokers: one Tansu per region plus the home cluster,
//! topics created, processors and the reconciler run in-process on their own threads.

use crate::broker::Broker;
use rf_processor::metrics::Counters;
use rf_processor::Stats as ProcStats;
use rf_reconciler::{RegionSource, Stats as RecStats};
use rf_runtime::Shutdown;
use std::sync::Arc;
use std::thread::JoinHandle;

pub const PARTITIONS: i32 = 4;

/// Output topics of the check reconciler (`Cluster::fresh_check_config`).
pub const CHECK_TOPICS: [&str; 2] = ["reconciled-check", "conflicts-check"];

pub struct Running<S> {
    pub name: String,
    pub shutdown: Shutdown,
    pub stats: Arc<S>,
    handle: Option<JoinHandle<Result<(), rf_runtime::Error>>>,
    /// The error the component stopped with, as soon as it stopped.
    error: Arc<std::sync::Mutex<Option<String>>>,
}

/// Run a component on its own thread, keeping its error for `check_alive`.
fn spawn_component<S>(
    name: String,
    thread: String,
    shutdown: Shutdown,
    stats: Arc<S>,
    run: impl FnOnce() -> Result<(), rf_runtime::Error> + Send + 'static,
) -> Running<S> {
    let error = Arc::new(std::sync::Mutex::new(None));
    let e2 = error.clone();
    let handle = std::thread::Builder::new()
        .name(thread)
        .spawn(move || {
            let r = run();
            if let Err(e) = &r {
                *e2.lock().expect("error slot") = Some(e.to_string());
            }
            r
        })
        .expect("spawn");
    Running {
        name,
        shutdown,
        stats,
        handle: Some(handle),
        error,
    }
}

impl<S> Running<S> {
    pub fn stop(&mut self) -> Result<(), String> {
        self.shutdown.trigger();
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(Ok(()))) | None => Ok(()),
            Some(Ok(Err(e))) => Err(format!("{}: {e}", self.name)),
            Some(Err(_)) => Err(format!("{}: panicked", self.name)),
        }
    }
    fn error_text(&self) -> String {
        self.error
            .lock()
            .expect("error slot")
            .clone()
            .unwrap_or_else(|| "no error (or a panic)".into())
    }
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }
}

pub struct Cluster {
    pub regions: Vec<(String, Broker)>,
    pub home: Broker,
    pub partitions: i32,
    pub dir: tempfile::TempDir,
    pub processors: Vec<Running<ProcStats>>,
    pub reconciler: Option<Running<RecStats>>,
    /// With real partitions: each region's network namespace (dropped after the brokers).
    pub namespaces: Vec<(String, crate::netns::Netns)>,
    pub home_addr: Option<crate::netns::HomeAddr>,
}

impl Cluster {
    pub fn start(regions: &[&str], partitions: i32) -> Result<Cluster, String> {
        Self::start_with(regions, partitions, false)
    }

    /// As `start`, but each region (its broker and, once started, its processors) runs in
    /// its own network namespace, so that `cut` and `heal` partition it for real.
    pub fn start_partitionable(regions: &[&str], partitions: i32) -> Result<Cluster, String> {
        Self::start_with(regions, partitions, true)
    }

    fn start_with(regions: &[&str], partitions: i32, netns: bool) -> Result<Cluster, String> {
        let mut namespaces = Vec::new();
        let home_addr = if netns {
            Some(crate::netns::HomeAddr::create()?)
        } else {
            None
        };
        let mut rs = Vec::new();
        for (i, r) in regions.iter().enumerate() {
            let b = if netns {
                let ns = crate::netns::Netns::create(i as u8 + 1, r)?;
                let b = Broker::start_at(r, &ns.ip, Some(&ns.name))?;
                namespaces.push((r.to_string(), ns));
                b
            } else {
                Broker::start(r)?
            };
            b.create_topics(&["events", "events.dlq", "history"], partitions)?;
            rs.push((r.to_string(), b));
        }
        let home = match &home_addr {
            Some(h) => Broker::start_at("home", &h.ip, None)?,
            None => Broker::start("home")?,
        };
        home.create_topics(&["reconciled", "conflicts"], partitions)?;
        Ok(Cluster {
            regions: rs,
            home,
            partitions,
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
            processors: Vec::new(),
            reconciler: None,
            namespaces,
            home_addr,
        })
    }

    /// The network namespace `region` runs in, if any.
    pub fn netns(&self, region: &str) -> Option<&crate::netns::Netns> {
        self.namespaces
            .iter()
            .find(|(n, _)| n == region)
            .map(|(_, ns)| ns)
    }

    /// Cut `region` off from the home cluster and the reconciler (and everything else
    /// outside its namespace).
    pub fn cut(&self, region: &str) -> Result<(), String> {
        self.netns(region)
            .ok_or_else(|| format!("{region} has no network namespace"))?
            .cut()
    }

    pub fn heal(&self, region: &str) -> Result<(), String> {
        self.netns(region)
            .ok_or_else(|| format!("{region} has no network namespace"))?
            .heal()
    }

    /// Network namespace names per region, in region order (for publishers).
    pub fn namespace_names(&self) -> Vec<Option<String>> {
        self.regions
            .iter()
            .map(|(r, _)| self.netns(r).map(|n| n.name.clone()))
            .collect()
    }

    pub fn bootstrap(&self, region: &str) -> String {
        self.regions
            .iter()
            .find(|(n, _)| n == region)
            .map(|(_, b)| b.bootstrap())
            .expect("known region")
    }

    pub fn processor_config(&self, region: &str, instance: usize) -> rf_processor::Config {
        let mut cfg = rf_processor::Config {
            region: region.to_owned(),
            bootstrap_servers: self.bootstrap(region),
            state_dir: self.dir.path().join(format!("{region}-{instance}")),
            home_bootstrap_servers: self.home.bootstrap(),
            // Inside a region's namespace, on its address (reachable unless cut).
            http_addr: match self.netns(region) {
                Some(ns) => format!("{}:0", ns.ip),
                None => "127.0.0.1:0".into(),
            },
            // Escrow rights split evenly across the cluster's regions, as docs/configuration.md
            // recommends: a stock add's share counts at once where it was taken.
            escrow_split: self.regions.iter().map(|(r, _)| (r.clone(), 1)).collect(),
            ..Default::default()
        };
        cfg.kafka.extend(kafka_extras());
        cfg
    }

    pub fn start_processor(&mut self, region: &str, instance: usize) {
        self.start_processor_with_clock(region, instance, Arc::new(rf_core::SystemClock));
    }

    /// Start a processor whose wall clock the caller controls (e.g. a `ManualClock`).
    pub fn start_processor_with_clock(
        &mut self,
        region: &str,
        instance: usize,
        clock: Arc<dyn rf_core::Clock>,
    ) {
        let cfg = self.processor_config(region, instance);
        self.start_processor_with(cfg, instance, clock);
    }

    /// Start a processor with `cfg` (from `processor_config`, then changed).
    pub fn start_processor_with(
        &mut self,
        cfg: rf_processor::Config,
        instance: usize,
        clock: Arc<dyn rf_core::Clock>,
    ) {
        let region = cfg.region.clone();
        let region = region.as_str();
        let shutdown = Shutdown::default();
        let stats = Arc::new(ProcStats::new(region));
        let (s, st) = (shutdown.clone(), stats.clone());
        let ns = self.netns(region).map(|n| n.name.clone());
        self.processors.push(spawn_component(
            format!("processor {region}#{instance}"),
            format!("processor-{region}-{instance}"),
            shutdown,
            stats,
            move || {
                if let Some(ns) = ns {
                    crate::netns::enter(&ns).map_err(|reason| rf_runtime::Error::Config {
                        field: "netns",
                        reason,
                    })?;
                }
                rf_processor::run_with(cfg, s, clock, st)
            },
        ));
    }

    pub fn reconciler_config(&self) -> rf_reconciler::Config {
        rf_reconciler::Config {
            home_bootstrap_servers: self.home.bootstrap(),
            regions: self
                .regions
                .iter()
                .map(|(n, b)| RegionSource {
                    name: n.clone(),
                    bootstrap_servers: b.bootstrap(),
                })
                .collect(),
            http_addr: "127.0.0.1:0".into(),
            // Checkpoints in `<state_dir>/<instance>`: instances never share one.
            state_dir: self.dir.path().join("reconciler"),
            ..Default::default()
        }
    }

    /// Creates the output topics of the check reconciler (`fresh_check_config`).
    pub fn create_check_topics(&self) -> Result<(), String> {
        self.home.create_topics(&CHECK_TOPICS, self.partitions)
    }

    /// A fresh reconciler over the same histories, to compare outputs byte for byte: its own
    /// instance (so its own checkpoint) and output topics, the regions listed in reverse (so
    /// they arrive in another order) and another commit interval.
    pub fn fresh_check_config(&self) -> rf_reconciler::Config {
        let mut fresh = self.reconciler_config();
        fresh.instance = "fresh".into();
        fresh.reconciled_topic = CHECK_TOPICS[0].into();
        fresh.conflicts_topic = CHECK_TOPICS[1].into();
        fresh.regions.reverse();
        fresh.commit_interval_ms = 37;
        fresh
    }

    /// Replace the in-process reconciler by a fresh check reconciler, wait until it has
    /// written `want` records, stop everything, and return the first difference between
    /// `reconciled` and its output (`None`: byte-identical).
    pub fn compare_with_fresh_reconciler(
        &mut self,
        want: usize,
        timeout: std::time::Duration,
    ) -> Result<Option<String>, String> {
        if let Some(mut r) = self.reconciler.take() {
            r.stop()?;
        }
        self.start_reconciler_with(self.fresh_check_config());
        self.wait_until(timeout, "the fresh reconciler", |c| {
            Ok(c.reconciled_so_far() as usize >= want)
        })?;
        let errs = self.stop_all();
        if !errs.is_empty() {
            return Err(errs.join("; "));
        }
        let home = self.home.bootstrap();
        let (a, b) = (
            crate::check::topic_bytes(&home, "reconciled", self.partitions)?,
            crate::check::topic_bytes(&home, CHECK_TOPICS[0], self.partitions)?,
        );
        Ok(crate::check::first_difference(&a, &b))
    }

    pub fn start_reconciler(&mut self) {
        let cfg = self.reconciler_config();
        self.start_reconciler_with(cfg);
    }

    /// Start an in-process reconciler with a caller-shaped configuration.
    pub fn start_reconciler_with(&mut self, cfg: rf_reconciler::Config) {
        self.start_reconciler_clocked(cfg, Arc::new(rf_core::SystemClock));
    }

    /// As `start_reconciler_with`, on the caller's clock (e.g. a `FastClock` the
    /// processors share).
    pub fn start_reconciler_clocked(
        &mut self,
        cfg: rf_reconciler::Config,
        clock: Arc<dyn rf_core::Clock>,
    ) {
        let shutdown = Shutdown::default();
        let stats = Arc::new(RecStats::default());
        let (s, st) = (shutdown.clone(), stats.clone());
        self.reconciler = Some(spawn_component(
            "reconciler".into(),
            "reconciler".into(),
            shutdown,
            stats,
            move || rf_reconciler::run_with(cfg, s, clock, st),
        ));
    }

    /// Wait, with a deadline, until `done` holds; fail early if a component died.
    pub fn wait_until(
        &self,
        timeout: std::time::Duration,
        what: &str,
        mut done: impl FnMut(&Cluster) -> Result<bool, String>,
    ) -> Result<(), String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if done(self)? {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("timed out after {timeout:?} waiting for {what}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Every region's bootstrap servers, in region order (for publishers).
    pub fn bootstraps(&self) -> Vec<String> {
        self.regions.iter().map(|(_, b)| b.bootstrap()).collect()
    }

    /// Records the in-process reconciler has written to `reconciled` (0 before it runs).
    /// Producers' events the in-process reconciler released so far (records of ops the
    /// processors write themselves, escrow rights requests and transfers, not counted).
    pub fn reconciled_so_far(&self) -> u64 {
        self.reconciler.as_ref().map_or(0, |r| {
            let s = &r.stats;
            s.reconciled.load(std::sync::atomic::Ordering::Relaxed)
                - s.originated.load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// Events the in-process reconciler holds back behind a watermark.
    pub fn reconciler_buffered(&self) -> u64 {
        self.reconciler.as_ref().map_or(0, |r| {
            r.stats.buffered.load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// Where the in-process reconciler's HTTP endpoints listen.
    pub fn reconciler_http(&self) -> Option<std::net::SocketAddr> {
        *self.reconciler.as_ref()?.stats.http_addr.lock().ok()?
    }

    /// Wait, with a deadline, until the processors have consumed `n` input records.
    pub fn wait_consumed(&self, n: usize, timeout: std::time::Duration) -> Result<(), String> {
        self.wait_until(timeout, "every record consumed", |c| {
            Ok(c.processor_sum(|s| &s.consumed) as usize >= n)
        })
    }

    /// Sum of one processor counter over all processors.
    pub fn processor_sum(&self, f: impl Fn(&Counters) -> &prometheus::IntCounter) -> u64 {
        self.processors
            .iter()
            .map(|p| f(&p.stats.counters).get())
            .sum()
    }

    /// Fail fast if a component died.
    pub fn check_alive(&self) -> Result<(), String> {
        for p in &self.processors {
            if p.is_finished() && !p.shutdown.is_triggered() {
                return Err(format!(
                    "{} stopped unexpectedly: {}",
                    p.name,
                    p.error_text()
                ));
            }
        }
        if let Some(r) = &self.reconciler {
            if r.is_finished() && !r.shutdown.is_triggered() {
                return Err(format!(
                    "reconciler stopped unexpectedly: {}",
                    r.error_text()
                ));
            }
        }
        Ok(())
    }

    pub fn stop_all(&mut self) -> Vec<String> {
        let mut errs = Vec::new();
        for p in &self.processors {
            p.shutdown.trigger();
        }
        if let Some(r) = &self.reconciler {
            r.shutdown.trigger();
        }
        for p in &mut self.processors {
            if let Err(e) = p.stop() {
                errs.push(e);
            }
        }
        if let Some(r) = &mut self.reconciler {
            if let Err(e) = r.stop() {
                errs.push(e);
            }
        }
        errs
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop_all();
    }
}

/// librdkafka settings every client of the harness gets: `RF_KAFKA_DEBUG` becomes `debug`.
pub fn kafka_extras() -> std::collections::BTreeMap<String, String> {
    std::env::var("RF_KAFKA_DEBUG")
        .map(|d| {
            [
                ("debug".to_owned(), d),
                ("log_level".to_owned(), "7".to_owned()),
            ]
            .into_iter()
            .collect()
        })
        .unwrap_or_default()
}
