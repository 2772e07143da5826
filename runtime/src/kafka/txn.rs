//! The transactional producer: delivery reports tracked per (topic, partition), a commit
//! that drains them first, and sends that wait out a full local queue.

use crate::error::{Error, Result};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::client_config;

/// A crashed instance's open transaction holds back read_committed readers (the next
/// owner's restore among them) until the broker times it out: keep that short, and below
/// the restore timeout (`Config::validate` checks).
pub const DEFAULT_TRANSACTION_TIMEOUT_MS: u64 = 10_000;

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
    if !drain(p, deadline) {
        return Err(Error::Aborted(
            "delivery reports did not drain in time".into(),
        ));
    }
    let delivered = std::mem::take(&mut *p.context().state.lock().expect("delivery lock"));
    if !delivered.errors.is_empty() {
        return Err(Error::Aborted(delivered.errors.join("; ")));
    }
    p.commit_transaction(remaining(deadline))?;
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

/// Abort the open transaction, discarding delivery bookkeeping. The records not yet sent
/// are purged first, and the delivery reports of those in flight served here until none is
/// left: the event-API producer does not serve them inside `abort_transaction`, which then
/// waits its whole timeout (measured: 30 s after a fence, 5 records queued). In-flight
/// records are waited for, never purged: on a broker that shows aborted records, one
/// appended after the re-adoption read would be processed twice.
pub fn abort(p: &TxnProducer) -> Result<()> {
    // A fenced producer is in a fatal state: it can never abort, only be replaced.
    if let Some((code, reason)) = p.client().fatal_error() {
        return Err(Error::Aborted(format!(
            "producer in a fatal state ({code:?}): {reason}"
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    p.purge(PurgeConfig::default().queue());
    drain(p, deadline);
    let r = p.abort_transaction(remaining(deadline));
    std::mem::take(&mut *p.context().state.lock().expect("delivery lock"));
    r.map_err(Error::from)
}

/// Serve delivery reports with short polls until none is in flight or `deadline`; whether
/// they drained.
fn drain(p: &TxnProducer, deadline: Instant) -> bool {
    while p.in_flight_count() > 0 {
        if Instant::now() > deadline {
            return false;
        }
        p.poll(Duration::from_millis(1));
    }
    true
}

/// What is left until `deadline` for a transaction call, at least a second.
fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1))
}
