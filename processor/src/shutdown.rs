use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The single shutdown path: signal handlers, tests and the demo all trigger this.
#[derive(Clone, Default, Debug)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
