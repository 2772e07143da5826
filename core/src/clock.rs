//! Hybrid logical clock (invariant 4).
//!
//! Written here rather than taken from `uhlc`: the contract's `Hlc` is
//! `(physical_ms: long, logical: int)` while uhlc packs its counter into the low bits of an
//! NTP64 fraction; uhlc refuses to adopt a bound more than its max delta ahead, but a bound
//! read back from our *own* history (or persisted) must always be adopted to stay strictly
//! increasing after a restart with the wall clock behind; and uhlc's clock source is a plain
//! `fn` pointer, which makes per-instance injected clocks in tests awkward.

use rf_schemas::Hlc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Wall-clock source, injectable so tests can jump it.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

impl std::fmt::Debug for dyn Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock(now_ms = {})", self.now_ms())
    }
}

/// A clock `rate` times faster than the system's from a common origin: at the system
/// time `real0_ms` it reads `sim0_ms`. Every process given the same three numbers reads the
/// same time (tests of schedules run a simulated hour per real second, or faster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FastClock {
    pub sim0_ms: i64,
    pub real0_ms: i64,
    pub rate: i64,
}

impl FastClock {
    /// From `"<sim0_ms>:<real0_ms>:<rate>"` (the `RF_CLOCK_FAST` test seam).
    pub fn parse(s: &str) -> Option<FastClock> {
        let mut it = s.split(':').map(|x| x.trim().parse::<i64>().ok());
        let c = FastClock {
            sim0_ms: it.next()??,
            real0_ms: it.next()??,
            rate: it.next()??,
        };
        (it.next().is_none() && c.rate >= 1).then_some(c)
    }

    pub fn to_env(&self) -> String {
        format!("{}:{}:{}", self.sim0_ms, self.real0_ms, self.rate)
    }
}

impl Clock for FastClock {
    fn now_ms(&self) -> i64 {
        self.sim0_ms + (SystemClock.now_ms() - self.real0_ms) * self.rate
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;
impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that follows the system clock shifted by an adjustable offset.
#[derive(Debug, Default, Clone)]
pub struct ManualClock {
    offset_ms: Arc<AtomicI64>,
}
impl ManualClock {
    pub fn with_offset(offset_ms: i64) -> Self {
        let c = ManualClock::default();
        c.set_offset(offset_ms);
        c
    }
    pub fn set_offset(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::SeqCst);
    }
}
impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms() + self.offset_ms.load(Ordering::SeqCst)
    }
}

/// Result of observing a timestamp from elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    Merged,
    /// More than `max_offset_ms` ahead of the local wall clock: not adopted.
    RejectedSkew {
        ahead_ms: i64,
    },
}

/// One HLC per history partition: `tick` is strictly increasing for the life of the value,
/// and `adopt_bound` makes it strictly increasing across restarts and partition moves.
#[derive(Debug, Clone)]
pub struct HlcClock {
    last: Hlc,
    max_offset_ms: i64,
}

impl HlcClock {
    pub fn new(max_offset_ms: i64) -> Self {
        HlcClock {
            last: Hlc::ZERO,
            max_offset_ms,
        }
    }

    pub fn last(&self) -> Hlc {
        self.last
    }

    /// Adopt a bound read back from our own log or store, however far ahead it is.
    pub fn adopt_bound(&mut self, bound: Hlc) {
        if bound > self.last {
            self.last = bound;
        }
    }

    /// Next timestamp for a local event at wall time `now_ms`.
    pub fn tick(&mut self, now_ms: i64) -> Hlc {
        self.last = if now_ms > self.last.physical_ms {
            Hlc::new(now_ms, 0)
        } else if self.last.logical == i32::MAX {
            Hlc::new(self.last.physical_ms + 1, 0)
        } else {
            Hlc::new(self.last.physical_ms, self.last.logical + 1)
        };
        self.last
    }

    /// Observe a remote timestamp: merged unless it is beyond the max offset ahead.
    pub fn observe(&mut self, remote: Hlc, now_ms: i64) -> Observed {
        let ahead = remote.physical_ms - now_ms;
        if ahead > self.max_offset_ms {
            return Observed::RejectedSkew { ahead_ms: ahead };
        }
        self.adopt_bound(remote);
        Observed::Merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tick_survives_backward_jump() {
        let mut c = HlcClock::new(500);
        let a = c.tick(10_000);
        let b = c.tick(9_000);
        let d = c.tick(10_000);
        assert!(a < b && b < d);
    }

    #[test]
    fn restart_behind_persisted_bound() {
        let mut c = HlcClock::new(500);
        c.adopt_bound(Hlc::new(100_000, 3));
        assert_eq!(c.tick(40_000), Hlc::new(100_000, 4));
    }

    #[test]
    fn far_future_remote_is_rejected() {
        let mut c = HlcClock::new(500);
        assert_eq!(
            c.observe(Hlc::new(6_000, 0), 1_000),
            Observed::RejectedSkew { ahead_ms: 5_000 }
        );
        assert_eq!(c.tick(1_000), Hlc::new(1_000, 0));
        assert_eq!(c.observe(Hlc::new(1_400, 0), 1_000), Observed::Merged);
        assert_eq!(c.tick(1_000), Hlc::new(1_400, 1));
    }

    proptest! {
        #[test]
        fn strictly_increasing_under_any_wall_clock(walls in proptest::collection::vec(-100_000i64..100_000, 1..200),
                                                    bounds in proptest::collection::vec(proptest::option::of(0i64..200_000), 1..200)) {
            let mut c = HlcClock::new(500);
            let mut prev = Hlc::ZERO;
            for (i, w) in walls.iter().enumerate() {
                if let Some(Some(b)) = bounds.get(i) { c.adopt_bound(Hlc::new(*b, 0)); }
                let t = c.tick(100_000 + w);
                prop_assert!(t > prev);
                prev = t;
            }
        }
    }
}
