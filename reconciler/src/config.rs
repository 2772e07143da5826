use rf_runtime::config::{bad, identifier, non_empty, refuse_managed};
use rf_runtime::Error;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RegionSource {
    pub name: String,
    pub bootstrap_servers: String,
}

/// How an instance gets its partition indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Assignment {
    /// The ones in `partitions` (empty: all).
    Static,
    /// Shared dynamically by every instance of the same `reconciled_topic` through a
    /// consumer group on the home cluster (`membership.rs`); `partitions` must be empty.
    Group,
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
    /// Partition indexes this instance owns (empty = all), with `assignment = "static"`.
    pub partitions: Vec<i32>,
    /// `static` (default) or `group` (high availability: instances share the partition
    /// indexes and take over a dead one's within `session_timeout_ms`).
    pub assignment: Assignment,
    /// With `assignment = "group"`: how long the group waits for a silent instance before
    /// giving its partition indexes to the others.
    pub session_timeout_ms: u64,
    pub commit_interval_ms: u64,
    pub restore_timeout_secs: u64,
    /// HLCs more than this far ahead of the reconciler's clock are reported as skew.
    pub max_clock_offset_ms: i64,
    /// Cross-region duplicate window on the HLC timeline: a copy of an event whose other
    /// copy was released no more than this earlier is a duplicate; released ids are kept
    /// this long behind the last release (memory: release rate times this). Default 7 days,
    /// the processors' `dedup_retention_secs`.
    pub dedup_retention_secs: u64,
    /// Flow control: when the merge holds more than this many bytes of events waiting for a
    /// watermark, fetching stops for the (region, partition)s that are ahead (Kafka is the
    /// buffer) until it is back under half.
    pub max_buffered_bytes: usize,
    /// Where the checkpoint lives (RocksDB, in `<state_dir>/<instance>`): the merge state
    /// as of a `reconciled` offset, so a restart reads only the tail past it.
    pub state_dir: std::path::PathBuf,
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
            assignment: Assignment::Static,
            session_timeout_ms: 10_000,
            commit_interval_ms: 100,
            restore_timeout_secs: 60,
            max_clock_offset_ms: 500,
            dedup_retention_secs: 7 * 24 * 3600,
            max_buffered_bytes: 256 * 1024 * 1024,
            state_dir: std::path::PathBuf::from("./reconciler-state"),
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
        if self.max_buffered_bytes < 64 * 1024 {
            return Err(bad("max_buffered_bytes", "must be at least 65536"));
        }
        if self.assignment == Assignment::Group && !self.partitions.is_empty() {
            return Err(bad(
                "partitions",
                "must be empty with assignment = \"group\" (the group assigns them)",
            ));
        }
        if !(1_000..=300_000).contains(&self.session_timeout_ms) {
            return Err(bad("session_timeout_ms", "must be within 1000..=300000"));
        }
        if self.dedup_retention_secs == 0 {
            return Err(bad("dedup_retention_secs", "must be positive"));
        }
        refuse_managed("reconciler", &self.kafka)
    }
}

impl rf_runtime::cli::ServiceConfig for Config {
    fn validate(&self) -> Result<(), Error> {
        Config::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        Config {
            regions: vec![RegionSource {
                name: "a".into(),
                bootstrap_servers: "127.0.0.1:1".into(),
            }],
            ..Default::default()
        }
    }

    /// A group assigns the indexes itself: a static list beside it is refused, naming the
    /// field; so is a session timeout out of range.
    #[test]
    fn group_assignment_is_validated() {
        let mut c = valid();
        c.assignment = Assignment::Group;
        assert!(c.validate().is_ok());
        c.partitions = vec![0];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("partitions"), "{e}");
        let mut c = valid();
        c.session_timeout_ms = 10;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("session_timeout_ms"), "{e}");
        let parsed: Config = toml::from_str("assignment = \"group\"").unwrap();
        assert_eq!(parsed.assignment, Assignment::Group);
        assert!(toml::from_str::<Config>("assignment = \"lease\"").is_err());
    }
}
