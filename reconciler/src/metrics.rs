//! The reconciler's Prometheus series (names per docs/metrics.md): reconciliation latency
//! (event HLC → released into `reconciled`) and per-region watermark lag. Each instance has
//! its own registry, so in-process tests see only their own figures.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Seconds from an event's HLC (its physical time) to its release into `reconciled`.
    pub reconcile_latency: Histogram,
    /// Per region: how far its watermark (worst partition) is behind the wall clock, ms.
    pub watermark_lag_ms: IntGaugeVec,
    /// Conflicts written, by kind.
    pub conflicts: IntCounterVec,
    pub reconciled: prometheus::IntCounter,
    pub buffered: prometheus::IntGauge,
    /// Per (region, partition): 1 while that history partition is stopped at a record the
    /// reconciler cannot decode (invariant 10), else 0.
    pub stalled: IntGaugeVec,
    /// History records that could not be decoded (each stops its partition), by region.
    pub undecodable: IntCounterVec,
    /// Times the reconciler recovered from a failed send, commit or start by re-adopting
    /// its output instead of exiting.
    pub recoveries: prometheus::IntCounter,
    /// Restore of one partition index at start (checkpoint plus `reconciled` tail).
    pub restore_seconds: Histogram,
    /// Approximate bytes of events held back behind a watermark.
    pub buffered_bytes: prometheus::IntGauge,
    /// (region, partition)s whose fetching flow control has paused.
    pub paused: prometheus::IntGauge,
    /// Partition indexes this instance reconciles now.
    pub owned: prometheus::IntGauge,
    /// What the checkpoint store holds in memory, by part (RocksDB's figures).
    pub store_memory: IntGaugeVec,
    pub heap: IntGaugeVec,
    pub heap_trim_micros: prometheus::IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let reconcile_latency = Histogram::with_opts(
            HistogramOpts::new(
                "rf_reconcile_latency_seconds",
                "Event HLC to its release into reconciled",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
        )
        .expect("valid histogram");
        let watermark_lag_ms = IntGaugeVec::new(
            Opts::new(
                "rf_watermark_lag_ms",
                "How far a region's watermark is behind the wall clock (worst partition)",
            ),
            &["region"],
        )
        .expect("valid gauge");
        let conflicts = IntCounterVec::new(
            Opts::new(
                "rf_conflicts_total",
                "Conflicts written to the conflicts topic",
            ),
            &["kind"],
        )
        .expect("valid counter");
        let reconciled = prometheus::IntCounter::new(
            "rf_reconciled_events_total",
            "Events written to reconciled",
        )
        .expect("valid counter");
        let buffered = prometheus::IntGauge::new(
            "rf_reconciler_buffered_events",
            "Events read but held back until every region's watermark passes them",
        )
        .expect("valid gauge");
        let stalled = IntGaugeVec::new(
            Opts::new(
                "rf_reconciler_stalled_partitions",
                "1 while a region's history partition is stopped at a record that cannot be decoded",
            ),
            &["region", "partition"],
        )
        .expect("valid gauge");
        let undecodable = IntCounterVec::new(
            Opts::new(
                "rf_history_undecodable_total",
                "History records the reconciler could not decode (each stops its partition)",
            ),
            &["region"],
        )
        .expect("valid counter");
        let recoveries = prometheus::IntCounter::new(
            "rf_reconciler_recoveries_total",
            "Failed sends, commits or starts recovered from by re-adopting the output",
        )
        .expect("valid counter");
        let restore_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "rf_reconciler_restore_seconds",
                "Restore of one partition index at start: its checkpoint plus the reconciled tail past it",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
        )
        .expect("valid histogram");
        let buffered_bytes = prometheus::IntGauge::new(
            "rf_reconciler_buffered_bytes",
            "Approximate bytes of events held back until every region's watermark passes them",
        )
        .expect("valid gauge");
        let paused = prometheus::IntGauge::new(
            "rf_reconciler_paused_partitions",
            "History partitions whose fetching flow control paused (they are ahead; Kafka buffers)",
        )
        .expect("valid gauge");
        let owned = prometheus::IntGauge::new(
            "rf_reconciler_owned_partitions",
            "Partition indexes this reconciler instance reconciles now (static or assigned by its group)",
        )
        .expect("valid gauge");
        let store_memory = IntGaugeVec::new(
            Opts::new(
                "rf_reconciler_store_memory_bytes",
                "Memory the checkpoint store holds: memtables, table_readers (outside the cache), block_cache (data, index and filter blocks)",
            ),
            &["part"],
        )
        .expect("valid gauge");
        let heap = IntGaugeVec::new(
            Opts::new(
                "rf_reconciler_heap_bytes",
                "What the allocators hold, by part: glibc_in_use (RocksDB and librdkafka, the store's parts included), glibc_free (kept by glibc, fragmentation), rust_committed (mimalloc: every Rust allocation, in use or cached)",
            ),
            &["part"],
        )
        .expect("valid gauge");
        let heap_trim_micros = prometheus::IntGauge::new(
            "rf_reconciler_heap_trim_microseconds",
            "Time spent giving glibc's free memory back (malloc_trim, every 10 s; it holds the arena locks), in all since start",
        )
        .expect("valid gauge");
        // Every kind exists from the start (at 0), so dashboards and alerts find the series.
        for kind in rf_schemas::ConflictKind::SYMBOLS {
            conflicts.with_label_values(&[kind]);
        }
        for c in [
            Box::new(reconcile_latency.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(watermark_lag_ms.clone()),
            Box::new(conflicts.clone()),
            Box::new(reconciled.clone()),
            Box::new(buffered.clone()),
            Box::new(stalled.clone()),
            Box::new(undecodable.clone()),
            Box::new(recoveries.clone()),
            Box::new(restore_seconds.clone()),
            Box::new(buffered_bytes.clone()),
            Box::new(paused.clone()),
            Box::new(owned.clone()),
            Box::new(store_memory.clone()),
            Box::new(heap.clone()),
            Box::new(heap_trim_micros.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Metrics {
            registry,
            reconcile_latency,
            watermark_lag_ms,
            conflicts,
            reconciled,
            buffered,
            stalled,
            undecodable,
            recoveries,
            restore_seconds,
            buffered_bytes,
            paused,
            owned,
            store_memory,
            heap,
            heap_trim_micros,
        }
    }
}
