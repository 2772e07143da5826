//! The single shutdown path: signal handlers (`cli::run_until_signal`), tests and the demo
//! all trigger a `Shutdown`; the service loops and the HTTP server stop on it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Default, Debug)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleep for `d`, or less if triggered meanwhile (a backoff that shutdown cuts short).
    /// Returns whether it was triggered.
    pub fn sleep(&self, d: Duration) -> bool {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until && !self.is_triggered() {
            std::thread::sleep(Duration::from_millis(50).min(d));
        }
        self.is_triggered()
    }

    /// Resolves once triggered (for async code: the HTTP server, streams).
    pub async fn wait(&self) {
        while !self.is_triggered() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
