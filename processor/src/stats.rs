//! The handle onto a running processor that tests, the demo and the HTTP endpoints hold:
//! its counters and metrics, readiness, the regional view, the feed and its address.

use crate::feed::Feed;
use crate::metrics::{Counters, ProcessorMetrics};
use crate::view::View;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct Stats {
    pub region: String,
    /// The same counters as `metrics.counters` (shared atomics), for short access.
    pub counters: Counters,
    pub metrics: ProcessorMetrics,
    /// The region's view of every key (reconciled state + own events not yet reconciled),
    /// maintained when a home cluster is configured.
    pub view: View,
    /// True once partitions are assigned and restored (`/ready`).
    pub ready: AtomicBool,
    /// Reconciled changes as they are read back (`/feed`).
    pub feed: Feed,
    /// Where the HTTP endpoints listen, once started.
    pub http_addr: Mutex<Option<std::net::SocketAddr>>,
    /// The processor's wall clock (set at start), for what `/state` computes from now.
    pub clock: std::sync::OnceLock<Arc<dyn rf_core::Clock>>,
}

impl Stats {
    pub fn new(region: &str) -> Stats {
        let metrics = ProcessorMetrics::new(region);
        Stats {
            region: region.to_owned(),
            counters: metrics.counters.clone(),
            metrics,
            view: View::new(region),
            ready: AtomicBool::new(false),
            feed: Feed::default(),
            http_addr: Mutex::new(None),
            clock: Default::default(),
        }
    }
}

/// Handle onto a running processor.
pub type SharedStats = Arc<Stats>;
