//! Kafka header names: part of the wire contract (docs/contract.md, "Headers"), one
//! spelling each, in one place. Values are UTF-8 text; numbers are decimal.
//!
//! | header | topic | value |
//! |---|---|---|
//! | [`WRITER`] | `history` | transactional id of the producer that wrote the record |
//! | [`HANDOFF`] | `history` | `1` on the heartbeat a writer leaves when it gives the partition up |
//! | [`SOURCE_PARTITION`], [`SOURCE_OFFSET`] | `history`, `events.dlq` | the input record's partition and offset |
//! | [`SOURCE_TOPIC`] | `events.dlq` | the input topic |
//! | [`ERROR_CLASS`], [`ERROR_REASON`] | `events.dlq` | why the record was dead-lettered |
//! | [`ORIGINAL_BYTES`] | `events.dlq` | full size of an oversized record (the value is cut) |
//! | [`RESUME_PREFIX`]`<region>` | `reconciled` | that region's history offset a restart resumes from |

/// The transactional id of the producer that wrote a history record: lets the next owner
/// of a partition fence a writer that died inside a transaction.
pub const WRITER: &str = "rf-writer";
/// On the heartbeat a processor writes for a partition as it is revoked (value `1`): the
/// writer gave the partition up and writes nothing after it, so the next owner need not
/// fence it. A last record without it (a crash, a zombie, an owner still writing) is fenced.
pub const HANDOFF: &str = "rf-handoff";
/// Input topic of a dead letter.
pub const SOURCE_TOPIC: &str = "rf-source-topic";
/// Input partition a history record or a dead letter came from.
pub const SOURCE_PARTITION: &str = "rf-source-partition";
/// Input offset a history record or a dead letter came from.
pub const SOURCE_OFFSET: &str = "rf-source-offset";
/// Stable class of a dead letter (`oversized`, `unknown_schema`, ...).
pub const ERROR_CLASS: &str = "rf-error-class";
/// Human-readable reason of a dead letter.
pub const ERROR_REASON: &str = "rf-error-reason";
/// Full size in bytes of an oversized input record (its dead letter carries a prefix).
pub const ORIGINAL_BYTES: &str = "rf-original-bytes";
/// `rf-resume-<region>` on a reconciled record: where a restart re-reads that region.
pub const RESUME_PREFIX: &str = "rf-resume-";

/// Spellings written by earlier versions, still read so that their topics restore.
pub mod legacy {
    /// Before 0.2, history carried the input partition as `rf-src-partition`.
    pub const SRC_PARTITION: &str = "rf-src-partition";
    /// Before 0.2, history carried the input offset as `rf-src-offset`.
    pub const SRC_OFFSET: &str = "rf-src-offset";
}

/// The resume header for `region` on a reconciled record.
pub fn resume_header(region: &str) -> String {
    format!("{RESUME_PREFIX}{region}")
}

/// Every header name the product writes (for docs and contract tests).
pub const ALL: &[&str] = &[
    WRITER,
    SOURCE_TOPIC,
    SOURCE_PARTITION,
    SOURCE_OFFSET,
    ERROR_CLASS,
    ERROR_REASON,
    ORIGINAL_BYTES,
    RESUME_PREFIX,
];
