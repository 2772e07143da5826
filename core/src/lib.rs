//! I/O-free logic shared by the processor and the reconciler: the hybrid logical clock,
//! the aggregates (apply + merge), and the reconciled order. No Kafka, no RocksDB.

pub mod aggregate;
pub mod causal;
pub mod clock;
pub mod custom;
pub mod escrow;
pub mod indexed;
pub mod order;
pub mod published;
pub mod schedule;
pub mod view;

pub use aggregate::{AggState, Applied, Family, InvalidOp};
pub use clock::{Clock, FastClock, HlcClock, ManualClock, SystemClock};
pub use custom::Aggregate;
pub use order::OrderKey;
pub use published::{published_json, Published};
pub use view::RegionalView;
