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
    #[error("reading {topic}[{partition}] to its end took over {secs}s: read to offset {next}, listed end {listed_end}, partition-EOF at {eof_at}")]
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
}

impl Error {
    pub fn is_retriable(&self) -> bool {
        matches!(self, Error::Aborted(_) | Error::RestoreTimeout { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
