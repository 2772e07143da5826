use rf_runtime::config::{
    bad, identifier, in_range, non_empty, refuse_managed, transaction_timeout_ms,
};
use rf_runtime::error::Result;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Processor settings. Built from flags / env / a TOML file by `main`, then `validate`d.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub region: String,
    pub bootstrap_servers: String,
    pub group_id: String,
    pub events_topic: String,
    pub history_topic: String,
    pub dlq_topic: String,
    pub state_dir: PathBuf,
    pub commit_interval_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub max_record_bytes: usize,
    pub max_clock_offset_ms: i64,
    pub dedup_retention_secs: u64,
    /// RocksDB memtables of all the store's column families together, in MB: most of the
    /// processor's memory besides its state and the Kafka clients' buffers.
    pub store_memtable_mb: u64,
    /// One RocksDB block cache for all column families, in MB.
    pub store_block_cache_mb: u64,
    pub session_timeout_ms: u64,
    /// Join the group as a static member (`group.instance.id` = region + the state
    /// store's instance id), as Kafka Streams advises for stateful applications: a restart
    /// on the same store after kill -9 takes its partitions back without waiting for the
    /// dead member's session to expire first (on Tansu measured 6.2 s against 11.4 s). Off
    /// by default: on Tansu, with static members, a third instance joining after a kill got
    /// no partitions within 60 s (`processor_scale_out`, 1 of 2 CI runs). Also, a static
    /// member that stops does not leave the group; its partitions move when its session
    /// expires.
    pub static_membership: bool,
    /// The `events` group's `partition.assignment.strategy`: `cooperative-sticky`
    /// (incremental: a partition that stays with its owner is neither revoked nor restored
    /// when another instance joins or leaves), or the eager `range` or `roundrobin`.
    pub assignment_strategy: String,
    pub restore_timeout_secs: u64,
    /// The home cluster, to read `reconciled` back (empty: do not follow it).
    pub home_bootstrap_servers: String,
    pub reconciled_topic: String,
    /// How long an assigned partition waits for its view to read `reconciled` to the end
    /// listed at assignment before it admits anyway, on the view as its checkpoint left it
    /// (`rf_view_degraded_total`); 0: do not wait.
    pub view_catch_up_timeout_ms: u64,
    /// How long an own accepted event stays in memory only before it is written to the
    /// store's pending events, and at most how many stay there: most settle within the
    /// reconciler's latency and then cost the store nothing. A restore re-reads the ones
    /// held from `history` (at most about twice `view_pending_hold_max_events` records
    /// more to read). 0 ms: written with the next batch.
    pub view_pending_hold_ms: u64,
    pub view_pending_hold_max_events: usize,
    /// Inventory policy for SKU keys no prefix below names: `escrow` (a region admits only
    /// within the stock rights it holds: never oversold, even during a partition) or `repair`
    /// (admit on the regional view, revoke in the merge).
    pub inventory_policy: String,
    /// Policy per key prefix (the longest matching prefix wins), e.g. `"preorder:" = "repair"`.
    pub inventory_policy_prefixes: BTreeMap<String, String>,
    /// Escrow: how a stock add's rights are split, as weights per region (`{eu = 1, us = 1}`
    /// splits evenly); empty: all to the region that accepted it.
    pub escrow_split: BTreeMap<String, u32>,
    /// Escrow: rights a region keeps for itself when it donates to a region that asked.
    pub escrow_local_reserve: i64,
    /// Schedules: how long after an occurrence's due instant the other regions wait for the
    /// home region's firing to show in `reconciled` before they fire it too (failover).
    pub schedule_grace_ms: u64,
    /// Schedules: an occurrence noticed more than this after its deadline (the due instant,
    /// plus the grace for a failover) is late, and the schedule's missed policy decides.
    pub schedule_tolerance_ms: u64,
    /// HTTP address for /health, /ready, /metrics, /state/{key} and /feed (empty: none).
    pub http_addr: String,
    /// Passed through to librdkafka verbatim (e.g. `security.protocol`, `sasl.*`).
    pub kafka: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            region: String::new(),
            bootstrap_servers: "127.0.0.1:9092".into(),
            group_id: String::new(),
            events_topic: "events".into(),
            history_topic: "history".into(),
            dlq_topic: "events.dlq".into(),
            state_dir: PathBuf::from("./state"),
            commit_interval_ms: 100,
            heartbeat_interval_ms: 200,
            max_record_bytes: 64 * 1024,
            max_clock_offset_ms: 500,
            dedup_retention_secs: 7 * 24 * 3600,
            store_memtable_mb: 128,
            store_block_cache_mb: 32,
            session_timeout_ms: 6000,
            static_membership: false,
            assignment_strategy: "cooperative-sticky".into(),
            restore_timeout_secs: 60,
            home_bootstrap_servers: String::new(),
            reconciled_topic: "reconciled".into(),
            view_catch_up_timeout_ms: 10_000,
            view_pending_hold_ms: 5_000,
            view_pending_hold_max_events: 30_000,
            inventory_policy: "escrow".into(),
            inventory_policy_prefixes: BTreeMap::new(),
            escrow_split: BTreeMap::new(),
            escrow_local_reserve: 0,
            schedule_grace_ms: 30_000,
            schedule_tolerance_ms: 60_000,
            http_addr: "0.0.0.0:8080".into(),
            kafka: BTreeMap::new(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<()> {
        identifier("region", &self.region)?;
        non_empty("bootstrap_servers", &self.bootstrap_servers)?;
        non_empty("events_topic", &self.events_topic)?;
        non_empty("history_topic", &self.history_topic)?;
        non_empty("dlq_topic", &self.dlq_topic)?;
        in_range("commit_interval_ms", self.commit_interval_ms, 1, 60_000)?;
        if self.heartbeat_interval_ms == 0 {
            return Err(bad("heartbeat_interval_ms", "must be positive"));
        }
        if self.max_record_bytes < 64 || self.max_record_bytes > 900 * 1024 {
            return Err(bad(
                "max_record_bytes",
                "must be in 64..=921600 (below the producer's 1 MB message.max.bytes, with room for headers)",
            ));
        }
        if self.max_clock_offset_ms < 0 {
            return Err(bad("max_clock_offset_ms", "must not be negative"));
        }
        let txn_timeout_ms = transaction_timeout_ms(&self.kafka)?;
        if self.restore_timeout_secs * 1000 < 2 * txn_timeout_ms {
            return Err(bad(
                "restore_timeout_secs",
                format!("must be at least twice transaction.timeout.ms ({txn_timeout_ms} ms): a dead owner's open transaction holds restores back until the broker times it out"),
            ));
        }
        in_range(
            "view_catch_up_timeout_ms",
            self.view_catch_up_timeout_ms,
            0,
            600_000,
        )?;
        in_range(
            "view_pending_hold_ms",
            self.view_pending_hold_ms,
            0,
            600_000,
        )?;
        in_range(
            "view_pending_hold_max_events",
            self.view_pending_hold_max_events as u64,
            0,
            10_000_000,
        )?;
        if !["cooperative-sticky", "range", "roundrobin"]
            .contains(&self.assignment_strategy.as_str())
        {
            return Err(bad(
                "assignment_strategy",
                "must be cooperative-sticky, range or roundrobin",
            ));
        }
        policy("inventory_policy", "", &self.inventory_policy)?;
        for (prefix, p) in &self.inventory_policy_prefixes {
            policy("inventory_policy_prefixes", prefix, p)?;
        }
        for (region, w) in &self.escrow_split {
            identifier("escrow_split", region)?;
            if *w == 0 {
                return Err(bad(
                    "escrow_split",
                    format!("{region}: weights must be positive (leave a region out to give it nothing)"),
                ));
            }
        }
        if self.schedule_grace_ms == 0 {
            return Err(bad(
                "schedule_grace_ms",
                "must be positive (the home region fires first; others wait this long)",
            ));
        }
        if self.schedule_tolerance_ms == 0 {
            return Err(bad("schedule_tolerance_ms", "must be positive"));
        }
        if self.escrow_local_reserve < 0 {
            return Err(bad("escrow_local_reserve", "must not be negative"));
        }
        in_range("store_memtable_mb", self.store_memtable_mb, 8, 65_536)?;
        in_range("store_block_cache_mb", self.store_block_cache_mb, 1, 65_536)?;
        if self.dedup_retention_secs == 0 {
            return Err(bad("dedup_retention_secs", "must be positive"));
        }
        refuse_managed("processor", &self.kafka)
    }

    /// The inventory policy of `key`: the longest matching prefix's, else the default.
    pub fn policy_of(&self, key: &str) -> Policy {
        let p = self
            .inventory_policy_prefixes
            .iter()
            .filter(|(prefix, _)| key.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(self.inventory_policy.as_str(), |(_, p)| p.as_str());
        if p == "repair" {
            Policy::Repair
        } else {
            Policy::Escrow
        }
    }

    pub fn group_id(&self) -> String {
        if self.group_id.is_empty() {
            format!("rf-processor-{}", self.region)
        } else {
            self.group_id.clone()
        }
    }
}

/// How a SKU's reservations are admitted (`Config::policy_of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Escrow,
    Repair,
}

fn policy(field: &'static str, prefix: &str, value: &str) -> Result<()> {
    if value == "escrow" || value == "repair" {
        Ok(())
    } else {
        let at = if prefix.is_empty() {
            String::new()
        } else {
            format!("prefix {prefix:?}: ")
        };
        Err(bad(
            field,
            format!("{at}must be escrow or repair, got {value:?}"),
        ))
    }
}

impl rf_runtime::cli::ServiceConfig for Config {
    fn validate(&self) -> Result<()> {
        Config::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_fields_are_named() {
        let c = Config {
            region: "eu".into(),
            commit_interval_ms: 0,
            ..Config::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("commit_interval_ms"), "{e}");
        let c = Config::default();
        assert!(c.validate().unwrap_err().to_string().contains("region"));
        let mut c = Config {
            region: "eu".into(),
            ..Config::default()
        };
        c.kafka
            .insert("isolation.level".into(), "read_uncommitted".into());
        assert!(c.validate().unwrap_err().to_string().contains("kafka"));
        let mut c = Config {
            region: "eu".into(),
            ..Config::default()
        };
        c.inventory_policy_prefixes
            .insert("pre:".into(), "optimistic".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("inventory_policy_prefixes") && e.contains("pre:"),
            "{e}"
        );
    }

    #[test]
    fn the_longest_prefix_picks_the_policy() {
        let mut c = Config {
            region: "eu".into(),
            ..Config::default()
        };
        c.inventory_policy_prefixes
            .insert("stock:".into(), "repair".into());
        c.inventory_policy_prefixes
            .insert("stock:sale:".into(), "escrow".into());
        assert_eq!(c.policy_of("stock:1"), Policy::Repair);
        assert_eq!(c.policy_of("stock:sale:1"), Policy::Escrow);
        assert_eq!(c.policy_of("other"), Policy::Escrow);
    }
}
