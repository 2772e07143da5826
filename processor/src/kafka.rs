//! Kafka plumbing shared by the processor and the reconciler: client configuration with
//! librdkafka passthrough, a transactional producer that tracks delivered offsets, a
//! commit that drains delivery reports first, and read-to-end of one partition.

use crate::error::{Error, Result};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const H_SRC_PARTITION: &str = "rf-src-partition";
/// A crashed instance's open transaction holds back read_committed readers (the next
/// owner's restore among them) until the broker times it out: keep that short, and below
/// the restore timeout (`Config::validate` checks).
pub const DEFAULT_TRANSACTION_TIMEOUT_MS: u64 = 10_000;
pub const H_SRC_OFFSET: &str = "rf-src-offset";
/// The transactional id of the producer that wrote a record: lets the next owner of a
/// partition abort the open transaction of a writer that died (see `abort_orphaned`).
pub const H_WRITER: &str = "rf-writer";

pub fn client_config(bootstrap: &str, extra: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c.set("log_level", "3");
    for (k, v) in extra {
        c.set(k, v);
    }
    c
}

/// Delivery reports: highest delivered offset per (topic, partition), and failures.
#[derive(Default)]
pub struct DeliveryCtx {
    state: Mutex<Delivered>,
}

#[derive(Default)]
pub struct Delivered {
    pub max_offset: HashMap<(String, i32), i64>,
    pub errors: Vec<String>,
}

impl ClientContext for DeliveryCtx {}
impl ProducerContext for DeliveryCtx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut st = self.state.lock().expect("delivery lock");
        match result {
            Ok(m) => {
                let e = st
                    .max_offset
                    .entry((m.topic().to_owned(), m.partition()))
                    .or_insert(-1);
                *e = (*e).max(m.offset());
            }
            Err((e, m)) => st
                .errors
                .push(format!("{}[{}]: {e}", m.topic(), m.partition())),
        }
    }
}

pub type TxnProducer = BaseProducer<DeliveryCtx>;

pub fn transactional_producer(
    bootstrap: &str,
    extra: &BTreeMap<String, String>,
    transactional_id: &str,
) -> Result<TxnProducer> {
    // Defaults a user may override with librdkafka passthrough settings.
    let mut c = ClientConfig::new();
    c.set("linger.ms", "5").set(
        "transaction.timeout.ms",
        DEFAULT_TRANSACTION_TIMEOUT_MS.to_string(),
    );
    for (k, v) in client_config(bootstrap, extra).config_map().iter() {
        c.set(k, v);
    }
    let p: TxnProducer = c
        .set("transactional.id", transactional_id)
        .set("enable.idempotence", "true")
        .create_with_context(DeliveryCtx::default())?;
    p.init_transactions(Duration::from_secs(30))?;
    Ok(p)
}

/// Drain delivery reports with short polls, then commit. (`commit_transaction` alone
/// flushes in 100 ms slices; see DESIGN.md, broker facts.) Returns the delivered offsets.
pub fn commit_drained(p: &TxnProducer, timeout: Duration) -> Result<Delivered> {
    let deadline = Instant::now() + timeout;
    while p.in_flight_count() > 0 {
        p.poll(Duration::from_millis(1));
        if Instant::now() > deadline {
            return Err(Error::Aborted(
                "delivery reports did not drain in time".into(),
            ));
        }
    }
    let delivered = std::mem::take(&mut *p.context().state.lock().expect("delivery lock"));
    if !delivered.errors.is_empty() {
        return Err(Error::Aborted(delivered.errors.join("; ")));
    }
    p.commit_transaction(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1)),
    )?;
    Ok(delivered)
}

/// Send one record, polling for delivery reports while the local queue is full.
pub fn send(p: &TxnProducer, rec: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
    let mut rec = rec;
    loop {
        match p.send(rec) {
            Ok(()) => return Ok(()),
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                p.poll(Duration::from_millis(5));
                rec = r;
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Abort the open transaction, discarding delivery bookkeeping.
pub fn abort(p: &TxnProducer) -> Result<()> {
    let r = p.abort_transaction(Duration::from_secs(30));
    std::mem::take(&mut *p.context().state.lock().expect("delivery lock"));
    r.map_err(Error::from)
}

/// Read `topic[partition]` from `from` to its end as readers see it (read_committed), calling
/// `f` for each record. The end is the partition-EOF that librdkafka derives from the high
/// watermark returned with fetched records (never ListOffsets, which Tansu gets wrong).
/// Returns the next offset after the last record read.
pub fn read_to_end(
    bootstrap: &str,
    extra: &BTreeMap<String, String>,
    topic: &str,
    partition: i32,
    from: i64,
    timeout: Duration,
    mut f: impl FnMut(&BorrowedMessage<'_>) -> Result<()>,
) -> Result<i64> {
    let consumer: BaseConsumer<EofCtx> = client_config(bootstrap, extra)
        .set("group.id", "rf-restore")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // An empty fetch at the end comes back after this, not after the default 500 ms.
        .set("fetch.wait.max.ms", "10")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create_with_context(EofCtx::default())?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from.max(0)))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
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
                f(&m)?;
            }
        }
    }
}

/// Abort the transactions that writers other than `own_id` left open in
/// `topic[partition]` past offset `from` (the read_committed end). Returns the fenced ids.
///
/// A writer that dies inside a transaction leaves it open. Kafka aborts it after
/// `transaction.timeout.ms`; Tansu never does (measured: still open 42 s later), and its
/// last stable offset, which bounds every read_committed reader, stays stuck for good.
/// Kafka Streams' per-task transactional ids fenced such a zombie as a side effect of the
/// next owner starting; with one producer per instance we do it explicitly: read the open
/// tail uncommitted, take the writers' ids from the `rf-writer` header, and initialise a
/// producer with each id, which fences it and aborts its open transaction.
pub fn abort_orphaned(
    bootstrap: &str,
    extra: &BTreeMap<String, String>,
    topic: &str,
    partition: i32,
    from: i64,
    own_id: &str,
) -> Result<Vec<String>> {
    let Some(end) = log_end(bootstrap, extra, topic, partition) else {
        return Ok(Vec::new());
    };
    if from >= end {
        return Ok(Vec::new());
    }
    // Partitions restore in parallel; two fencing the same dead writer at once would fence
    // each other. One fencing at a time.
    static FENCING: Mutex<()> = Mutex::new(());
    let _one = FENCING.lock().unwrap_or_else(|e| e.into_inner());
    let c: BaseConsumer = client_config(bootstrap, extra)
        .set("group.id", "rf-restore")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
    c.assign(&tpl)?;
    let mut writers = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if let Some(w) = header_str(&m, H_WRITER) {
                    if w != own_id {
                        writers.insert(w);
                    }
                }
                if m.offset() + 1 >= end {
                    break;
                }
            }
            Some(Err(_)) | None => {
                if position(&c, topic, partition).is_some_and(|p| p >= end) {
                    break;
                }
            }
        }
    }
    for w in &writers {
        tracing::warn!(topic, partition, writer = %w, "aborting a transaction a previous owner left open");
        // init_transactions fences the id and aborts its open transaction.
        drop(transactional_producer(bootstrap, extra, w)?);
    }
    Ok(writers.into_iter().collect())
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
fn position<C: rdkafka::consumer::ConsumerContext>(
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

pub fn header_str(m: &impl Message, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}

pub fn header_i64(m: &impl Message, name: &str) -> Option<i64> {
    header_str(m, name)?.parse().ok()
}
