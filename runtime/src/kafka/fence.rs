//! Fencing of orphaned writers: a previous owner that died inside a transaction.

use crate::error::Result;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use rf_schemas::headers::WRITER;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::read_to_end::{log_end, position};
use super::{client_config, header_str, transactional_producer};

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
/// Fence `id`: initialise a producer with it, which bumps its epoch (a zombie still holding
/// it can no longer produce or commit) and aborts its open transaction, if any.
pub fn fence_writer(bootstrap: &str, extra: &BTreeMap<String, String>, id: &str) -> Result<()> {
    static FENCING: Mutex<()> = Mutex::new(());
    let _one = FENCING.lock().unwrap_or_else(|e| e.into_inner());
    drop(transactional_producer(bootstrap, extra, id)?);
    Ok(())
}

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
                if let Some(w) = header_str(&m, WRITER) {
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
