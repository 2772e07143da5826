//! The reconciled order: (hlc, region, event_id) (invariant 5).

use rf_schemas::Hlc;

#[derive(
    Debug,
    Clone,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct OrderKey {
    pub hlc: Hlc,
    pub region: String,
    pub event_id: String,
}

impl OrderKey {
    pub fn new(hlc: Hlc, region: impl Into<String>, event_id: impl Into<String>) -> Self {
        OrderKey {
            hlc,
            region: region.into(),
            event_id: event_id.into(),
        }
    }
}
