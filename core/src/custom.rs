//! User-defined aggregates: implement [`Aggregate`], [`register`] it at start-up in the
//! processor and the reconciler, and send `Op::Custom { aggregate: name, payload }` events.
//! Neither the processor nor the reconciler changes: they fold every op through
//! `aggregate::apply` (regional view) and `aggregate::merge_step` (reconciled order), which
//! dispatch custom ops here. The state is kept as canonical JSON in `AggState::Custom`.
//!
//! ```
//! use rf_core::custom::{register, Aggregate};
//! use rf_core::Applied;
//! use serde_json::{json, Value};
//! use std::sync::Arc;
//!
//! /// Highest reading per key (e.g. a peak-temperature gauge); payload = i64 big-endian.
//! struct PeakGauge;
//! impl Aggregate for PeakGauge {
//!     fn name(&self) -> &'static str {
//!         "peak_gauge"
//!     }
//!     fn apply(&self, state: &mut Option<Value>, payload: &[u8]) -> Result<Applied, String> {
//!         let v = i64::from_be_bytes(payload.try_into().map_err(|_| "need 8 bytes")?);
//!         let cur = state.as_ref().and_then(|s| s["peak"].as_i64()).unwrap_or(i64::MIN);
//!         *state = Some(json!({ "peak": cur.max(v) }));
//!         Ok(Applied::Applied)
//!     }
//! }
//! register(Arc::new(PeakGauge));
//! ```

use crate::aggregate::Applied;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

/// One aggregate family. Both steps must be deterministic functions of (state, payload):
/// the reconciled topic is a pure function of the histories (invariant 5).
pub trait Aggregate: Send + Sync + 'static {
    /// The name `Op::Custom::aggregate` uses. One key holds one aggregate.
    fn name(&self) -> &'static str;

    /// The regional step, in a processor: validate `payload` and fold it into `state`
    /// (`None`: the key has no state yet). `Err(reason)` is bad input: the record goes
    /// to the dead-letter topic. `Ok(Applied::Refused(reason))` records a refusal in
    /// history and must leave `state` unchanged.
    fn apply(&self, state: &mut Option<Value>, payload: &[u8]) -> Result<Applied, String>;

    /// The merge step, in the reconciler: the same op replayed in reconciled order over
    /// every region's history. `Refused(reason)` here, or an `Err`, is published in
    /// `reconciled` with outcome REVOKED and that reason, the state unchanged (only the
    /// built-in inventory also writes a `conflicts` record for it). Defaults to `apply`;
    /// override it when the merged outcome differs, as the inventory revokes what would
    /// oversell. Setting the state to `None` leaves the stored state unchanged.
    fn merge(&self, state: &mut Option<Value>, payload: &[u8]) -> Result<Applied, String> {
        self.apply(state, payload)
    }
}

type Registry = RwLock<HashMap<&'static str, Arc<dyn Aggregate>>>;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Make an aggregate available to this process's processor and reconciler. Registering a
/// name again replaces the earlier one.
pub fn register(agg: Arc<dyn Aggregate>) {
    registry()
        .write()
        .expect("aggregate registry")
        .insert(agg.name(), agg);
}

pub fn lookup(name: &str) -> Option<Arc<dyn Aggregate>> {
    registry()
        .read()
        .expect("aggregate registry")
        .get(name)
        .cloned()
}
