//! The processor's Prometheus series, named as in docs/metrics.md, each declared once here
//! next to the field the code increments. Every series carries the `region` label;
//! per-partition series add `partition` (bounded by the partition count). Counters are
//! prometheus counters themselves (a relaxed atomic add on the hot path), labelled once at
//! start; histograms and gauges are observed where they happen. Each processor has its own
//! registry, so in-process tests see only their own figures.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Declares the counters: one line each, field = (series name, help).
macro_rules! counters {
    ($( $(#[$doc:meta])* $field:ident => ($name:literal, $help:literal), )*) => {
        /// Event counters, incremented where the event happens (`.inc()`), read with `.get()`.
        #[derive(Debug, Clone)]
        pub struct Counters {
            $( $(#[$doc])* pub $field: IntCounter, )*
        }

        impl Counters {
            fn new(registry: &Registry, region: &str) -> Counters {
                Counters {
                    $( $field: {
                        let v = IntCounterVec::new(Opts::new($name, $help), &["region"])
                            .expect("valid counter");
                        registry.register(Box::new(v.clone())).expect("unique metric names");
                        v.with_label_values(&[region])
                    }, )*
                }
            }
        }
    };
}

counters! {
    consumed => ("rf_events_consumed_total", "Input records read from events"),
    accepted => ("rf_events_accepted_total", "Events written to history (first time seen)"),
    duplicates => ("rf_events_deduplicated_total", "Input records dropped as already in history"),
    refused => ("rf_events_refused_total", "Accepted events whose effect the regional view refused"),
    dead_lettered => ("rf_events_dead_lettered_total", "Input records written to events.dlq"),
    heartbeats => ("rf_heartbeats_total", "Heartbeats written to history"),
    commits => ("rf_transactions_committed_total", "Kafka transactions committed"),
    aborts => ("rf_transactions_aborted_total", "Kafka transactions aborted and recovered from"),
    /// Remote HLCs (from `reconciled`) rejected for being beyond the max clock offset.
    clock_skew_rejected => ("rf_clock_skew_rejected_total", "Remote HLCs beyond the max clock offset, not adopted"),
    /// Remote HLCs merged into a partition's clock.
    remote_observed => ("rf_remote_hlc_observed_total", "Remote HLCs merged into a partition clock"),
    /// Producers re-created after a fence or another fatal producer error.
    producer_resets => ("rf_producer_resets_total", "Producers re-created after a fence or fatal error"),
    restored_records => ("rf_restore_replayed_records_total", "History records replayed by restores"),
    /// Partitions that began admitting before their view caught up with `reconciled`.
    view_degraded => ("rf_view_degraded_total", "Partitions admitting on their view's checkpoint: the home cluster did not list reconciled's end, or the catch-up timed out"),
    /// Escrow: reservations refused for want of local rights.
    rights_short => ("rf_escrow_refused_no_rights_total", "Escrow reservations refused because this region held too few rights"),
    /// Escrow: requests for rights this region recorded.
    rights_requests => ("rf_escrow_rights_requests_total", "Escrow requests for rights written to history"),
    /// Escrow: transfers of rights this region gave to regions that asked.
    rights_transfers => ("rf_escrow_rights_transfers_total", "Escrow transfers of rights written to history"),
    rights_given => ("rf_escrow_rights_given_total", "Escrow units of rights given to other regions"),
    /// Schedules: occurrences this region fired as the schedule's home.
    schedule_fired => ("rf_schedule_fired_total", "Schedule occurrences fired into history by this region as their home"),
    /// Schedules: occurrences fired after the grace because `reconciled` did not show the home's.
    schedule_failovers => ("rf_schedule_failover_fired_total", "Schedule occurrences fired by this region as failover (the home's firing was not reconciled within the grace)"),
    /// Schedules: due occurrences the missed policy dropped (noticed later than the tolerance).
    schedule_missed => ("rf_schedule_missed_total", "Schedule occurrences not fired because they were noticed later than the tolerance and the missed policy dropped them"),
    /// Schedules: wall times in a DST gap dropped by `on_gap = skip`.
    schedule_dst_skipped => ("rf_schedule_dst_skipped_total", "Schedule wall times that did not exist (DST gap) and were skipped by on_gap = skip"),
}

/// Every series of one processor, in its own registry.
#[derive(Debug, Clone)]
pub struct ProcessorMetrics {
    pub registry: Registry,
    pub counters: Counters,
    pub commit_seconds: HistogramVec,
    pub event_to_history_seconds: HistogramVec,
    pub restore_seconds: HistogramVec,
    pub consumer_lag: IntGaugeVec,
    pub hlc_drift_ms: IntGaugeVec,
    pub rocksdb_live_sst_bytes: IntGaugeVec,
    pub rocksdb_pending_compaction_bytes: IntGaugeVec,
    pub rocksdb_memory_bytes: IntGaugeVec,
    pub heap_bytes: IntGaugeVec,
    pub heap_trim_micros: IntGaugeVec,
    pub ready: IntGaugeVec,
    pub view_pending_events: IntGaugeVec,
    pub view_held_events: IntGaugeVec,
    pub view_catching_up: IntGaugeVec,
    pub schedule_due_to_history_seconds: HistogramVec,
    pub schedule_due_to_reconciled_seconds: HistogramVec,
    pub schedule_timers: IntGaugeVec,
}

fn hist(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["region"])
        .expect("valid histogram");
    r.register(Box::new(h.clone()))
        .expect("unique metric names");
    h
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
    r.register(Box::new(g.clone()))
        .expect("unique metric names");
    g
}

impl ProcessorMetrics {
    pub fn new(region: &str) -> ProcessorMetrics {
        let r = Registry::new();
        let latency = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        ProcessorMetrics {
            counters: Counters::new(&r, region),
            commit_seconds: hist(
                &r,
                "rf_transaction_commit_seconds",
                "Kafka transaction commit (send offsets + commit) duration",
                latency.clone(),
            ),
            event_to_history_seconds: hist(
                &r,
                "rf_event_to_history_seconds",
                "Client time of an event to its stamping into history",
                latency,
            ),
            restore_seconds: hist(
                &r,
                "rf_restore_seconds",
                "Restore of one partition (local store plus history tail) on assignment",
                vec![0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0],
            ),
            consumer_lag: gauge(
                &r,
                "rf_consumer_lag",
                "Records in events not yet consumed, per owned input partition",
                &["region", "partition"],
            ),
            hlc_drift_ms: gauge(
                &r,
                "rf_hlc_drift_ms",
                "Highest HLC physical time minus the wall clock over owned partitions",
                &["region"],
            ),
            rocksdb_live_sst_bytes: gauge(
                &r,
                "rf_rocksdb_live_sst_bytes",
                "Size of the state store's live SST files",
                &["region"],
            ),
            rocksdb_pending_compaction_bytes: gauge(
                &r,
                "rf_rocksdb_pending_compaction_bytes",
                "RocksDB's estimate of bytes compaction still has to rewrite",
                &["region"],
            ),
            rocksdb_memory_bytes: gauge(
                &r,
                "rf_rocksdb_memory_bytes",
                "Memory the state store holds, by part: memtables, table_readers (index and filter blocks, which grow with the ids of the dedup window), block_cache (data blocks, bounded by store_block_cache_mb)",
                &["region", "part"],
            ),
            heap_bytes: gauge(
                &r,
                "rf_heap_bytes",
                "What the allocators hold, by part: glibc_in_use (RocksDB and librdkafka, the store's parts above included), glibc_free (kept by glibc, fragmentation), rust_committed (mimalloc: every Rust allocation, in use or cached)",
                &["region", "part"],
            ),
            heap_trim_micros: gauge(
                &r,
                "rf_heap_trim_microseconds",
                "Time spent giving glibc's free memory back (malloc_trim, every 10 s; it holds the arena locks), in all since start",
                &["region"],
            ),
            ready: gauge(
                &r,
                "rf_ready",
                "1 once partitions are assigned and restored and their views caught up, else 0",
                &["region"],
            ),
            view_pending_events: gauge(
                &r,
                "rf_view_pending_events",
                "Own events the regional view holds that reconciled does not show yet",
                &["region"],
            ),
            view_held_events: gauge(
                &r,
                "rf_view_held_events",
                "Of those, own events held in memory only (view_pending_hold_ms), not yet in the store",
                &["region"],
            ),
            view_catching_up: gauge(
                &r,
                "rf_view_catching_up_partitions",
                "Owned partitions whose input is paused until their view reads reconciled to the end listed at assignment",
                &["region"],
            ),
            schedule_due_to_history_seconds: hist(
                &r,
                "rf_schedule_due_to_history_seconds",
                "Schedule occurrence's due instant to its fired record's HLC, by this processor's clock (failover firings: the grace included)",
                vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0],
            ),
            schedule_due_to_reconciled_seconds: hist(
                &r,
                "rf_schedule_due_to_reconciled_seconds",
                "Schedule occurrence's due instant to this processor reading its fired record back from reconciled",
                vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0],
            ),
            schedule_timers: gauge(
                &r,
                "rf_schedule_timers",
                "Schedules of the owned partitions with a next occurrence this region waits for (as home or as failover)",
                &["region"],
            ),
            registry: r,
        }
    }
}
