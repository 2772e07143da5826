use rf_runtime::config::{bad, identifier, non_empty, refuse_managed};
use rf_runtime::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RegionSource {
    pub name: String,
    pub bootstrap_servers: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub instance: String,
    pub home_bootstrap_servers: String,
    pub regions: Vec<RegionSource>,
    pub history_topic: String,
    pub reconciled_topic: String,
    pub conflicts_topic: String,
    /// Partition indexes this instance owns (empty = all).
    pub partitions: Vec<i32>,
    pub commit_interval_ms: u64,
    pub restore_timeout_secs: u64,
    /// Two puts on one key from different regions closer than this are reported concurrent.
    pub register_concurrency_window_ms: i64,
    /// HLCs more than this far ahead of the reconciler's clock are reported as skew.
    pub max_clock_offset_ms: i64,
    /// HTTP address for /health, /ready and /metrics (empty: none).
    pub http_addr: String,
    pub kafka: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            instance: "0".into(),
            home_bootstrap_servers: "127.0.0.1:9092".into(),
            regions: Vec::new(),
            history_topic: "history".into(),
            reconciled_topic: "reconciled".into(),
            conflicts_topic: "conflicts".into(),
            partitions: Vec::new(),
            commit_interval_ms: 100,
            restore_timeout_secs: 60,
            register_concurrency_window_ms: 2000,
            max_clock_offset_ms: 500,
            http_addr: "0.0.0.0:8081".into(),
            kafka: BTreeMap::new(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), Error> {
        if self.regions.is_empty() {
            return Err(bad("regions", "at least one region is required"));
        }
        let mut names: Vec<_> = self.regions.iter().map(|r| r.name.as_str()).collect();
        names.sort();
        names.dedup();
        if names.len() != self.regions.len() {
            return Err(bad("regions", "region names must be unique"));
        }
        if self.regions.iter().any(|r| r.bootstrap_servers.is_empty()) {
            return Err(bad("regions", "every region needs bootstrap_servers"));
        }
        non_empty("home_bootstrap_servers", &self.home_bootstrap_servers)?;
        identifier("instance", &self.instance)?;
        if self.commit_interval_ms == 0 {
            return Err(bad("commit_interval_ms", "must be positive"));
        }
        if self.max_clock_offset_ms <= 0 {
            return Err(bad("max_clock_offset_ms", "must be positive"));
        }
        refuse_managed("reconciler", &self.kafka)
    }
}

impl rf_runtime::cli::ServiceConfig for Config {
    fn validate(&self) -> Result<(), Error> {
        Config::validate(self)
    }
}
