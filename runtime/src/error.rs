//! One error type for both services, classified as in TiKV / raft-rs.

use rdkafka::error::KafkaError;

/// What the caller should do with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Abort the transaction, re-adopt the log and go on (a fence, a broker hiccup).
    Retriable,
    /// Stop the process with the message (bad configuration, a broken state store).
    Fatal,
}

/// Poison input never becomes an `Error`: the processor dead-letters it (invariant 8).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("state store: {0}")]
    Store(String),
    #[error("reading {topic}[{partition}] to its end made no progress for {secs}s: read to offset {next}, listed end {listed_end}, partition-EOF at {eof_at}")]
    RestoreTimeout {
        topic: String,
        partition: i32,
        secs: u64,
        next: i64,
        listed_end: i64,
        eof_at: String,
    },
    #[error("transaction aborted: {0}")]
    Aborted(String),
    #[error("{0}")]
    Io(String),
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Kafka(_) | Error::Aborted(_) | Error::RestoreTimeout { .. } => {
                ErrorClass::Retriable
            }
            Error::Config { .. } | Error::Store(_) | Error::Io(_) => ErrorClass::Fatal,
        }
    }

    pub fn is_retriable(&self) -> bool {
        self.class() == ErrorClass::Retriable
    }

    /// Whether a newer producer with our transactional id fenced ours: it can only be
    /// replaced (aborting waits out its timeout), and whoever fenced it took over work we
    /// thought was ours.
    pub fn is_fenced(&self) -> bool {
        use rdkafka::types::RDKafkaErrorCode as C;
        match self {
            Error::Kafka(e) => matches!(
                e.rdkafka_error_code(),
                Some(C::Fenced | C::ProducerFenced | C::InvalidProducerEpoch)
            ),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
