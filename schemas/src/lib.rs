//! The product's outside contract: the Avro schemas in `avro/`, their Rust types,
//! and the Avro single-object codec (0xC3 0x01, CRC-64-AVRO fingerprint, binary datum).
//!
//! Every schema is parsed once per process (see [`codec`]); values are converted to and
//! from `apache_avro::types::Value` by hand so that unions map onto Rust enums exactly.

mod binary;
pub mod codec;
mod convert;
pub mod headers;
mod types;

pub use codec::{Codec, DecodeError, EncodeError};
pub use types::*;

/// Schema texts, as shipped in `schemas/avro/`.
pub mod avsc {
    pub const EVENT: &str = include_str!("../avro/event.avsc");
    pub const RECONCILED_EVENT: &str = include_str!("../avro/reconciled_event.avsc");
    pub const CONFLICT: &str = include_str!("../avro/conflict.avsc");
    /// Earlier writer schemas, still read (`avro/previous/`).
    pub const CONFLICT_V1: &str = include_str!("../avro/previous/conflict.v1.avsc");
    /// Before escrow rights and dotted version vectors (`context`, `dot`, `grants`,
    /// `RightsRequest`, `RightsTransfer`).
    pub const EVENT_V1: &str = include_str!("../avro/previous/event.v1.avsc");
    pub const RECONCILED_EVENT_V1: &str = include_str!("../avro/previous/reconciled_event.v1.avsc");
    /// Before the schedule aggregate (`ScheduleSet`, `ScheduleCancel`, `ScheduleFired`).
    pub const EVENT_V2: &str = include_str!("../avro/previous/event.v2.avsc");
    pub const RECONCILED_EVENT_V2: &str = include_str!("../avro/previous/reconciled_event.v2.avsc");
}
