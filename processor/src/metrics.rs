//! The processor's Prometheus series, named as in docs/metrics.md. Every series carries the
//! `region` label; per-partition series add `partition` (bounded by the partition count).
//! Event counters live in `pipeline::Stats` as atomics (the hot path stays lock-free) and
//! are copied into the registry at scrape time (`sync`); histograms and gauges are
//! observed where they happen. Each processor has its own registry.

use crate::pipeline::Stats;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use std::sync::atomic::Ordering;

#[derive(Debug, Clone)]
pub struct ProcessorMetrics {
    pub registry: Registry,
    counters: Vec<(&'static str, IntCounterVec)>,
    pub commit_seconds: HistogramVec,
    pub event_to_history_seconds: HistogramVec,
    pub restore_seconds: HistogramVec,
    pub consumer_lag: IntGaugeVec,
    pub hlc_drift_ms: IntGaugeVec,
    pub rocksdb_live_sst_bytes: IntGaugeVec,
    pub rocksdb_pending_compaction_bytes: IntGaugeVec,
    pub ready: IntGaugeVec,
    pub view_pending_events: IntGaugeVec,
}

/// (name, help) of the counters copied from `Stats`, in `Stats` field order.
const COUNTERS: &[(&str, &str)] = &[
    ("rf_events_consumed_total", "Input records read from events"),
    (
        "rf_events_accepted_total",
        "Events written to history (first time seen)",
    ),
    (
        "rf_events_deduplicated_total",
        "Input records dropped as already in history",
    ),
    (
        "rf_events_refused_total",
        "Accepted events whose effect the regional view refused",
    ),
    (
        "rf_events_dead_lettered_total",
        "Input records written to events.dlq",
    ),
    ("rf_heartbeats_total", "Heartbeats written to history"),
    (
        "rf_transactions_committed_total",
        "Kafka transactions committed",
    ),
    (
        "rf_transactions_aborted_total",
        "Kafka transactions aborted and recovered from",
    ),
    (
        "rf_clock_skew_rejected_total",
        "Remote HLCs beyond the max clock offset, not adopted",
    ),
    (
        "rf_remote_hlc_observed_total",
        "Remote HLCs merged into a partition clock",
    ),
    (
        "rf_producer_resets_total",
        "Producers re-created after a fence or fatal error",
    ),
    (
        "rf_restore_replayed_records_total",
        "History records replayed by restores",
    ),
];

fn stat_values(s: &Stats) -> [u64; 12] {
    let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    [
        l(&s.consumed),
        l(&s.accepted),
        l(&s.duplicates),
        l(&s.refused),
        l(&s.dead_lettered),
        l(&s.heartbeats),
        l(&s.commits),
        l(&s.aborts),
        l(&s.clock_skew_rejected),
        l(&s.remote_observed),
        l(&s.producer_resets),
        l(&s.restored_records),
    ]
}

fn hist(name: &str, help: &str, buckets: Vec<f64>, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("valid histogram")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge")
}

impl Default for ProcessorMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        let latency = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let m = ProcessorMetrics {
            counters: COUNTERS
                .iter()
                .map(|(n, h)| {
                    (
                        *n,
                        IntCounterVec::new(Opts::new(*n, *h), &["region"]).expect("counter"),
                    )
                })
                .collect(),
            commit_seconds: hist(
                "rf_transaction_commit_seconds",
                "Kafka transaction commit (send offsets + commit) duration",
                latency.clone(),
                &["region"],
            ),
            event_to_history_seconds: hist(
                "rf_event_to_history_seconds",
                "Client time of an event to its stamping into history",
                latency,
                &["region"],
            ),
            restore_seconds: hist(
                "rf_restore_seconds",
                "Restore of one partition (local store plus history tail) on assignment",
                vec![0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0],
                &["region"],
            ),
            consumer_lag: gauge(
                "rf_consumer_lag",
                "Records in events not yet consumed, per owned input partition",
                &["region", "partition"],
            ),
            hlc_drift_ms: gauge(
                "rf_hlc_drift_ms",
                "Highest HLC physical time minus the wall clock over owned partitions",
                &["region"],
            ),
            rocksdb_live_sst_bytes: gauge(
                "rf_rocksdb_live_sst_bytes",
                "Size of the state store's live SST files",
                &["region"],
            ),
            rocksdb_pending_compaction_bytes: gauge(
                "rf_rocksdb_pending_compaction_bytes",
                "RocksDB's estimate of bytes compaction still has to rewrite",
                &["region"],
            ),
            ready: gauge(
                "rf_ready",
                "1 once partitions are assigned and restored, else 0",
                &["region"],
            ),
            view_pending_events: gauge(
                "rf_view_pending_events",
                "Own events the regional view holds that reconciled does not show yet",
                &["region"],
            ),
            registry,
        };
        for (_, c) in &m.counters {
            m.registry.register(Box::new(c.clone())).expect("unique");
        }
        for h in [
            &m.commit_seconds,
            &m.event_to_history_seconds,
            &m.restore_seconds,
        ] {
            m.registry.register(Box::new(h.clone())).expect("unique");
        }
        for g in [
            &m.consumer_lag,
            &m.hlc_drift_ms,
            &m.rocksdb_live_sst_bytes,
            &m.rocksdb_pending_compaction_bytes,
            &m.ready,
            &m.view_pending_events,
        ] {
            m.registry.register(Box::new(g.clone())).expect("unique");
        }
        m
    }
}

impl ProcessorMetrics {
    /// Copy the event counters from `stats` (called before each scrape).
    pub fn sync(&self, region: &str, stats: &Stats) {
        for ((_, c), v) in self.counters.iter().zip(stat_values(stats)) {
            let c = c.with_label_values(&[region]);
            let have = c.get();
            if v > have {
                c.inc_by(v - have);
            }
        }
        let pending = stats.view.lock().map(|v| v.pending_count()).unwrap_or(0);
        self.view_pending_events
            .with_label_values(&[region])
            .set(pending as i64);
    }
}
