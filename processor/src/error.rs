use rdkafka::error::KafkaError;

/// Errors classified as in TiKV/raft-rs: retriable errors re-initialise the affected part,
/// fatal errors stop the process with a message. (Poison input never becomes an `Error`:
/// it goes to the dead-letter topic.)
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {field}: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("state store: {0}")]
    Store(String),
    #[error("restore of {topic}[{partition}] did not reach the end within {secs}s")]
    RestoreTimeout {
        topic: String,
        partition: i32,
        secs: u64,
    },
    #[error("transaction aborted: {0}")]
    Aborted(String),
}

impl Error {
    pub fn is_retriable(&self) -> bool {
        matches!(self, Error::Aborted(_) | Error::RestoreTimeout { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
