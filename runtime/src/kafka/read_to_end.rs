//! Read one partition to its end as readers see it: the log is the truth (invariant 3), so
//! both services adopt what is there before producing.

use crate::error::{Error, Result};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{client_config, read_committed};

/// Read `topic[partition]` from `from` to its end as readers see it (read_committed), calling
/// `f` for each record. The end is the partition-EOF that librdkafka derives from the high
/// watermark returned with fetched records (never ListOffsets, which Tansu gets wrong).
/// Returns the next offset after the last record read.
///
/// `timeout` bounds the time without progress, not the read: every record read moves the
/// deadline, so a rebuild of a partition of any size finishes as long as it keeps reading,
/// and a read that is stuck (a broker that does not answer, an open transaction nobody
/// aborts) fails after `timeout` with where it stood.
pub fn read_to_end(
    bootstrap: &str,
    extra: &BTreeMap<String, String>,
    topic: &str,
    partition: i32,
    from: i64,
    timeout: Duration,
    mut f: impl FnMut(&BorrowedMessage<'_>) -> Result<()>,
) -> Result<i64> {
    let consumer: BaseConsumer<EofCtx> = read_committed(bootstrap, extra, "rf-restore")
        .set("enable.partition.eof", "true")
        // An empty fetch at the end comes back after this, not after the default 500 ms.
        .set("fetch.wait.max.ms", "10")
        .create_with_context(EofCtx::default())?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from.max(0)))?;
    consumer.assign(&tpl)?;
    let mut deadline = Instant::now() + timeout;
    let mut next = from.max(0);
    let mut drained = false;
    // A partition someone is still writing (a previous owner that has not yet seen its
    // revocation) may never report EOF: after a grace period, stop at the first record
    // written after this read began, and say so.
    let started = Instant::now();
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let grace = timeout / 4;
    // Tansu's fetch responses can carry a high watermark that is only the end of the
    // returned batch, so a partition-EOF alone may come early. The partition is ours
    // (its previous owner is gone), so its end does not move while we restore: take the
    // highest of the listed end offset and the EOF offset.
    let listed_end = (0..3)
        .filter_map(|_| {
            consumer
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .ok()
        })
        .map(|(_, high)| high)
        .max()
        .unwrap_or(0);
    // The log end as a read_uncommitted client lists it (the high watermark, past any open
    // transaction). A writer that died inside a transaction leaves it open: Kafka aborts it
    // after transaction.timeout.ms and the read_committed position then moves past it; Tansu
    // may never time it out, so its last stable offset (and with it the partition-EOF) stays
    // stuck, but it hands the records over anyway. Either way, once our position reaches this
    // end, everything written before the read began has been read.
    let log_end = log_end(bootstrap, extra, topic, partition).unwrap_or(i64::MAX);
    loop {
        // The EOF event and the records travel on different queues: finish only once the
        // records below the offset where the fetch reached the high watermark are read.
        let eof_at = consumer
            .context()
            .eof_at
            .load(std::sync::atomic::Ordering::SeqCst);
        if Instant::now() > deadline {
            return Err(Error::RestoreTimeout {
                topic: topic.to_owned(),
                partition,
                secs: timeout.as_secs(),
                next: position(&consumer, topic, partition)
                    .unwrap_or(next)
                    .max(next),
                listed_end,
                eof_at: match eof_at {
                    EOF_UNSET => "not reached".into(),
                    EOF_UNKNOWN_OFFSET => "unknown offset".into(),
                    n => n.to_string(),
                },
            });
        }
        // A transaction's commit marker takes an offset but is never delivered: when the
        // last records were followed by one, only the consumer's position passes it. Trust
        // the position only once a poll has come back empty after the EOF, so that no
        // fetched record is still queued behind it.
        let reached = if eof_at == EOF_UNSET || !drained {
            next
        } else {
            position(&consumer, topic, partition)
                .unwrap_or(next)
                .max(next)
        };
        if eof_at != EOF_UNSET && reached >= eof_at && reached >= listed_end {
            return Ok(reached);
        }
        match consumer.poll(Duration::from_millis(if eof_at != EOF_UNSET {
            10
        } else {
            100
        })) {
            None if eof_at == EOF_UNKNOWN_OFFSET && reached >= listed_end => return Ok(reached),
            None if position(&consumer, topic, partition).is_some_and(|p| p >= log_end) => {
                return Ok(position(&consumer, topic, partition)
                    .unwrap_or(next)
                    .max(next));
            }
            None => drained = eof_at != EOF_UNSET,
            Some(Err(KafkaError::PartitionEOF(_))) if reached >= listed_end => return Ok(reached),
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => {
                tracing::warn!(topic, partition, error = %e, "restore read error; retrying");
            }
            Some(Ok(m)) => {
                let written_after_start = m.timestamp().to_millis().is_some_and(|t| t > started_ms);
                if eof_at == EOF_UNSET
                    && started.elapsed() > grace
                    && written_after_start
                    && next >= listed_end
                {
                    tracing::warn!(
                        topic,
                        partition,
                        offset = m.offset(),
                        "no end of partition after {grace:?}: another writer is still active; stopping at the records written before this read began"
                    );
                    return Ok(m.offset());
                }
                drained = false;
                next = m.offset() + 1;
                deadline = Instant::now() + timeout;
                f(&m)?;
            }
        }
    }
}

/// The high watermark of `topic[partition]` as a read_uncommitted client lists it.
pub fn log_end(
    bootstrap: &str,
    extra: &BTreeMap<String, String>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let c: BaseConsumer = client_config(bootstrap, extra)
        .set("isolation.level", "read_uncommitted")
        .create()
        .ok()?;
    (0..3)
        .filter_map(|_| {
            c.fetch_watermarks(topic, partition, Duration::from_secs(10))
                .ok()
        })
        .map(|(_, high)| high)
        .max()
}

/// The fetch position of one assigned partition, if it is known.
pub(super) fn position<C: rdkafka::consumer::ConsumerContext>(
    c: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let tpl = c.position().ok()?;
    match tpl.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

const EOF_UNSET: i64 = i64::MAX;
const EOF_UNKNOWN_OFFSET: i64 = i64::MIN;

/// Records where partition-EOF was reached; librdkafka may report it as a client-level
/// error event ("... reached end of partition at offset N (HighwaterMark N)").
pub struct EofCtx {
    eof_at: std::sync::atomic::AtomicI64,
}

impl Default for EofCtx {
    fn default() -> Self {
        EofCtx {
            eof_at: std::sync::atomic::AtomicI64::new(EOF_UNSET),
        }
    }
}

impl ClientContext for EofCtx {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
            || reason.contains("end of partition")
        {
            let at = reason
                .split("at offset ")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or(EOF_UNKNOWN_OFFSET);
            self.eof_at.store(at, std::sync::atomic::Ordering::SeqCst);
        } else {
            tracing::warn!(error = %error, reason, "restore consumer error");
        }
    }
}
impl rdkafka::consumer::ConsumerContext for EofCtx {}
