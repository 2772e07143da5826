//! The handle onto a running reconciler that tests, the demo and the HTTP endpoints hold.

use crate::metrics::Metrics;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Stats {
    pub history_records: AtomicU64,
    pub reconciled: AtomicU64,
    /// Of those, records of ops processors write themselves (escrow rights requests and
    /// transfers): `reconciled - originated` counts the producers' events.
    pub originated: AtomicU64,
    pub conflicts: AtomicU64,
    pub commits: AtomicU64,
    pub buffered: AtomicU64,
    /// Watermark lag per region (ms behind wall clock, worst partition).
    pub watermark_lag_ms: Mutex<BTreeMap<String, i64>>,
    pub restored_records: AtomicU64,
    pub ready: AtomicI64,
    /// History partitions stopped at a record that cannot be decoded (`/ready` is false
    /// while any is).
    pub stalled: AtomicU64,
    pub metrics: Metrics,
    /// Where the HTTP endpoints listen, once started.
    pub http_addr: Mutex<Option<std::net::SocketAddr>>,
}

impl Stats {
    /// The base's `/metrics` hook: bring the exported series up to the counters.
    pub fn before_scrape(&self) {
        let m = &self.metrics;
        let n = self.reconciled.load(Ordering::Relaxed);
        if n > m.reconciled.get() {
            m.reconciled.inc_by(n - m.reconciled.get());
        }
        m.buffered.set(self.buffered.load(Ordering::Relaxed) as i64);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) == 1 && self.stalled.load(Ordering::SeqCst) == 0
    }
}
