use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Hybrid logical clock timestamp. Ordered by (physical_ms, logical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Hlc {
    pub physical_ms: i64,
    pub logical: i32,
}

impl Hlc {
    pub const ZERO: Hlc = Hlc {
        physical_ms: 0,
        logical: 0,
    };
    pub fn new(physical_ms: i64, logical: i32) -> Self {
        Hlc {
            physical_ms,
            logical,
        }
    }
}

impl Ord for Hlc {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.physical_ms, self.logical).cmp(&(other.physical_ms, other.logical))
    }
}
impl PartialOrd for Hlc {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The change an event carries: one branch of the `op` union.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Op {
    CounterAdd {
        delta: i64,
    },
    /// `context`: the version the writer had read (the token `/state/{key}` returns; the
    /// processor stamps its view's when absent); `dot`: assigned by the processor.
    RegisterPut {
        value: String,
        context: Option<String>,
        dot: Option<Dot>,
    },
    ScoreSubmit {
        player: String,
        score: i64,
    },
    /// `grants`: under the escrow policy, how the accepting processor split the stock's
    /// rights across regions (`None`: the repair policy).
    StockAdd {
        qty: i64,
        grants: Option<Vec<Share>>,
    },
    Reserve {
        order_id: String,
        qty: i64,
    },
    Release {
        order_id: String,
    },
    MessagePost {
        author: String,
        text: String,
    },
    /// In-band watermark in `history`; never valid on `events`.
    Heartbeat,
    /// An op of a user-defined aggregate (`rf_core::Aggregate`), named by `aggregate`.
    Custom {
        aggregate: String,
        payload: Vec<u8>,
    },
    /// Escrow: the accepting region, out of rights for this SKU, asks the others for some.
    /// Written by processors only.
    RightsRequest {
        qty: i64,
    },
    /// Escrow: the accepting region gives `qty` of its rights to `to`, answering that
    /// region's request number `request`. Written by processors only.
    RightsTransfer {
        to: String,
        qty: i64,
        request: i64,
    },
    /// Set or replace the schedule of this key (the schedule aggregate).
    ScheduleSet(Box<ScheduleSpec>),
    /// Stop the schedule of this key (`reason` is for the record).
    ScheduleCancel {
        reason: Option<String>,
    },
    /// One occurrence fired, by the schedule's home region (or another after the grace).
    /// Written by processors only; its event id is the occurrence's id.
    ScheduleFired(Firing),
}

/// A schedule as `ScheduleSet` carries it. Policies are strings (validated by
/// `rf_core::schedule`, an unknown one is an `invalid_value` dead letter).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub cron: String,
    pub zone: String,
    pub payload: String,
    pub home: Option<String>,
    pub on_gap: String,
    pub on_fold: String,
    pub missed: String,
    pub catch_up_max: i32,
    pub catch_up_window_ms: i64,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

impl ScheduleSpec {
    /// A schedule with the schema's default policies.
    pub fn new(
        cron: impl Into<String>,
        zone: impl Into<String>,
        payload: impl Into<String>,
    ) -> Self {
        ScheduleSpec {
            cron: cron.into(),
            zone: zone.into(),
            payload: payload.into(),
            home: None,
            on_gap: "after_gap".into(),
            on_fold: "first".into(),
            missed: "coalesce".into(),
            catch_up_max: 10,
            catch_up_window_ms: 86_400_000,
            start_ms: None,
            end_ms: None,
        }
    }
}

/// One fired occurrence (`ScheduleFired`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Firing {
    pub occurrence_ms: i64,
    pub fold: i32,
    pub wall: String,
    pub payload: String,
    pub failover: bool,
    pub missed: i64,
}

/// A put's identity in the version vectors: the accepting region and its sequence number
/// of puts to the key (1, 2, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dot {
    pub region: String,
    pub seq: i64,
}

/// A region's share of a stock's rights (`StockAdd.grants`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Share {
    pub region: String,
    pub qty: i64,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::CounterAdd { .. } => "CounterAdd",
            Op::RegisterPut { .. } => "RegisterPut",
            Op::ScoreSubmit { .. } => "ScoreSubmit",
            Op::StockAdd { .. } => "StockAdd",
            Op::Reserve { .. } => "Reserve",
            Op::Release { .. } => "Release",
            Op::MessagePost { .. } => "MessagePost",
            Op::Heartbeat => "Heartbeat",
            Op::Custom { .. } => "CustomOp",
            Op::RightsRequest { .. } => "RightsRequest",
            Op::RightsTransfer { .. } => "RightsTransfer",
            Op::ScheduleSet(_) => "ScheduleSet",
            Op::ScheduleCancel { .. } => "ScheduleCancel",
            Op::ScheduleFired(_) => "ScheduleFired",
        }
    }

    /// A counter add, a put, a stock add as producers send them (no processor fields).
    pub fn put(value: impl Into<String>) -> Op {
        Op::RegisterPut {
            value: value.into(),
            context: None,
            dot: None,
        }
    }

    pub fn stock_add(qty: i64) -> Op {
        Op::StockAdd { qty, grants: None }
    }

    /// Written into history by processors only (a producer that sends one gets a
    /// `reserved_op` dead letter).
    pub fn is_reserved(&self) -> bool {
        matches!(
            self,
            Op::Heartbeat
                | Op::RightsRequest { .. }
                | Op::RightsTransfer { .. }
                | Op::ScheduleFired(_)
        )
    }
}

/// The event envelope (`Event` in `avro/event.avsc`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: String,
    pub key: String,
    pub op: Op,
    pub region: Option<String>,
    pub client_time_ms: Option<i64>,
    pub hlc: Option<Hlc>,
    /// Set by a processor that refused the op from its regional view, with the reason.
    pub refusal: Option<String>,
}

impl Event {
    pub fn new(event_id: impl Into<String>, key: impl Into<String>, op: Op) -> Self {
        Event {
            event_id: event_id.into(),
            key: key.into(),
            op,
            region: None,
            client_time_ms: None,
            hlc: None,
            refusal: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    Applied,
    Refused,
    Revoked,
}

impl Outcome {
    pub const SYMBOLS: [&'static str; 3] = ["APPLIED", "REFUSED", "REVOKED"];
    pub fn index(self) -> u32 {
        self as u32
    }
}

/// One record of `reconciled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconciledEvent {
    pub event: Event,
    pub outcome: Outcome,
    pub reason: Option<String>,
    /// Merged state of the aggregate after this event, canonical JSON.
    pub state_json: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConflictKind {
    RegisterConcurrent,
    ReservationRevoked,
    CrossRegionDuplicate,
    ClockSkew,
    /// A history record that sorts at or below what `reconciled` already passed and was
    /// never released: reported, never merged (invariant 10).
    LateRecord,
}

impl ConflictKind {
    pub const SYMBOLS: [&'static str; 5] = [
        "REGISTER_CONCURRENT",
        "RESERVATION_REVOKED",
        "CROSS_REGION_DUPLICATE",
        "CLOCK_SKEW",
        "LATE_RECORD",
    ];
    pub fn as_str(self) -> &'static str {
        Self::SYMBOLS[self as usize]
    }
}

/// One record of `conflicts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub conflict_id: String,
    pub key: String,
    pub kind: ConflictKind,
    pub event_id: String,
    pub regions: Vec<String>,
    pub winner: Option<String>,
    pub loser: Option<String>,
    pub detail: String,
    pub hlc: Hlc,
    pub reconcile_latency_ms: i64,
}
