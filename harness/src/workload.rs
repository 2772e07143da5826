//! A realistic multi-region workload: counters and registers, ~10% duplicate retries (a
//! third of them failed over to another region), concurrent register writes in several
//! regions, and a few malformed records. Deterministic for a seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rf_schemas::{Codec, Event, Op};
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Workload {
    pub events: usize,
    pub counter_keys: usize,
    pub register_keys: usize,
    pub duplicate_rate: f64,
    pub failover_share: f64,
    pub malformed: usize,
    pub seed: u64,
    /// All five aggregates (leaderboards, inventory reservations, chat too), not only
    /// counters and registers.
    pub all_aggregates: bool,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            events: 10_000,
            counter_keys: 200,
            register_keys: 50,
            duplicate_rate: 0.10,
            failover_share: 0.33,
            malformed: 20,
            seed: 7,
            all_aggregates: false,
        }
    }
}

/// One record to publish to a region's `events`.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub region: usize,
    pub key: String,
    pub payload: Vec<u8>,
}

/// What was sent, for the checker.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Distinct (key, event_id) → op.
    pub distinct: HashMap<(String, String), Op>,
    pub records: usize,
    pub retries_same_region: usize,
    pub failovers: usize,
    pub malformed: usize,
}

impl Ledger {
    /// Add another workload's ledger (its event ids must differ: use another seed).
    pub fn extend(&mut self, other: Ledger) {
        self.distinct.extend(other.distinct);
        self.records += other.records;
        self.retries_same_region += other.retries_same_region;
        self.failovers += other.failovers;
        self.malformed += other.malformed;
    }

    /// Expected counter totals: sum over distinct events.
    pub fn counter_totals(&self) -> HashMap<String, i64> {
        let mut t = HashMap::new();
        for ((k, _), op) in &self.distinct {
            if let Op::CounterAdd { delta } = op {
                *t.entry(k.clone()).or_insert(0) += delta;
            }
        }
        t
    }
}

pub fn generate(w: &Workload, regions: usize) -> (Vec<Outgoing>, Ledger) {
    let mut rng = StdRng::seed_from_u64(w.seed);
    let mut out = Vec::with_capacity(w.events * 12 / 10);
    let mut ledger = Ledger::default();
    let mut retries: Vec<(usize, Outgoing)> = Vec::new();
    let codec = Codec::event();
    for i in 0..w.events {
        let region = rng.random_range(0..regions);
        let (key, op) = if w.all_aggregates {
            // Counters 50 %, registers 15 %, leaderboards 15 %, inventory 10 %, chat 10 %.
            let n = rng.random_range(0..w.register_keys.max(1));
            match rng.random_range(0..100) {
                0..50 => (
                    format!("likes:{}", rng.random_range(0..w.counter_keys.max(1))),
                    Op::CounterAdd {
                        delta: rng.random_range(1..=5),
                    },
                ),
                50..65 => (
                    format!("profile:{n}:theme"),
                    Op::put(format!("theme-{i}-r{region}")),
                ),
                65..80 => (
                    format!("board:{}", n % 5),
                    Op::ScoreSubmit {
                        player: format!("p{}", rng.random_range(0..40)),
                        score: rng.random_range(0..10_000),
                    },
                ),
                80..90 => (
                    format!("stock:{}", n % 5),
                    if rng.random_bool(0.3) {
                        Op::stock_add(rng.random_range(1..=20))
                    } else {
                        Op::Reserve {
                            order_id: format!("o-{}-{i}", w.seed),
                            qty: rng.random_range(1..=5),
                        }
                    },
                ),
                _ => (
                    format!("chat:{}", n % 5),
                    Op::MessagePost {
                        author: format!("u{}", rng.random_range(0..20)),
                        text: format!("hello {i}"),
                    },
                ),
            }
        } else if rng.random_bool(0.7) || w.register_keys == 0 {
            (
                format!("likes:{}", rng.random_range(0..w.counter_keys)),
                Op::CounterAdd {
                    delta: rng.random_range(1..=5),
                },
            )
        } else {
            (
                format!("profile:{}:theme", rng.random_range(0..w.register_keys)),
                Op::put(format!("theme-{i}-r{region}")),
            )
        };
        let id = format!("ev-{}-{i}", w.seed);
        let mut ev = Event::new(id.clone(), key.clone(), op.clone());
        ev.client_time_ms = Some(rf_core::Clock::now_ms(&rf_core::SystemClock));
        let payload = codec.encode(&ev).expect("encode");
        ledger.distinct.insert((key.clone(), id), op);
        let o = Outgoing {
            region,
            key,
            payload,
        };
        if rng.random_bool(w.duplicate_rate) {
            let mut dup = o.clone();
            if regions > 1 && rng.random_bool(w.failover_share) {
                dup.region = (region + 1 + rng.random_range(0..regions - 1)) % regions;
                ledger.failovers += 1;
            } else {
                ledger.retries_same_region += 1;
            }
            retries.push((i + rng.random_range(1..50), dup));
        }
        out.push(o);
        // Release retries that are due (a retry arrives a little after the original).
        let (due, later): (Vec<_>, Vec<_>) = retries.into_iter().partition(|(at, _)| *at <= i);
        retries = later;
        out.extend(due.into_iter().map(|(_, o)| o));
    }
    out.extend(retries.into_iter().map(|(_, o)| o));
    // Malformed records, spread out, one kind after another (see `malformed_payload`).
    let mut tail = Vec::new();
    for j in 0..w.malformed {
        let region = j % regions;
        let key = format!("likes:{}", j % w.counter_keys.max(1));
        if j % MALFORMED_KINDS == MALFORMED_KINDS - 1 {
            // Wrong op family: a register put on a key that holds a counter. Sent at the
            // end, after a genuine counter event on that key in that region.
            let id = format!("ev-{}-wf-{j}", w.seed);
            let good = Event::new(id.clone(), key.clone(), Op::CounterAdd { delta: 1 });
            ledger
                .distinct
                .insert((key.clone(), id), Op::CounterAdd { delta: 1 });
            tail.push(Outgoing {
                region,
                key: key.clone(),
                payload: codec.encode(&good).expect("encode"),
            });
        }
        let (key, payload) = malformed_payload(j, key, &mut rng);
        let o = Outgoing {
            region,
            key,
            payload,
        };
        if j % MALFORMED_KINDS == MALFORMED_KINDS - 1 {
            tail.push(o);
        } else {
            let at = rng.random_range(0..out.len());
            out.insert(at, o);
        }
        ledger.malformed += 1;
    }
    out.extend(tail);
    ledger.records = out.len();
    (out, ledger)
}

const MALFORMED_KINDS: usize = 10;

/// The dead-letter class (`rf-error-class`) the processor must give the `j`-th malformed
/// record of `malformed_payload`.
pub fn malformed_class(j: usize) -> &'static str {
    [
        "undecodable",
        "truncated_or_malformed",
        "key_mismatch",
        "invalid_envelope",
        "unknown_schema",
        "oversized",
        "invalid_value",
        "invalid_value",
        "reserved_op",
        "wrong_family",
    ][j % MALFORMED_KINDS]
}

/// The `j`-th malformed record (key, payload), cycling through the kinds of bad input:
/// garbage bytes, truncated Avro, Kafka key ≠ envelope key, empty event_id, unknown schema
/// fingerprint, oversized, negative quantity, release without an order id, an escrow rights
/// transfer (written by processors only), wrong op family (the last kind: `generate` sends a
/// genuine counter event on its key first).
pub fn malformed_payload(j: usize, key: String, rng: &mut StdRng) -> (String, Vec<u8>) {
    let codec = Codec::event();
    let enc = |ev: &Event| codec.encode(ev).expect("encode");
    match j % MALFORMED_KINDS {
        0 => (key, b"\x00not avro at all".to_vec()),
        1 => {
            let b = enc(&Event::new(
                format!("bad-{j}"),
                key.clone(),
                Op::CounterAdd { delta: 1 },
            ));
            (key, b[..b.len() - 3].to_vec())
        }
        2 => {
            let b = enc(&Event::new(
                format!("bad-{j}"),
                "some-other-key",
                Op::CounterAdd { delta: 1 },
            ));
            (key, b)
        }
        3 => {
            let b = enc(&Event::new("", key.clone(), Op::CounterAdd { delta: 1 }));
            (key, b)
        }
        4 => {
            let mut b = vec![0xC3, 0x01];
            b.extend(rng.random::<u64>().to_le_bytes());
            b.extend_from_slice(b"\x02\x04payload");
            (key, b)
        }
        5 => {
            let k = format!("profile:big-{j}");
            let b = enc(&Event::new(
                format!("bad-{j}"),
                k.clone(),
                Op::put("x".repeat(70 * 1024)),
            ));
            (k, b)
        }
        6 => {
            let k = format!("stock:bad-{j}");
            let b = enc(&Event::new(
                format!("bad-{j}"),
                k.clone(),
                Op::Reserve {
                    order_id: format!("o-bad-{j}"),
                    qty: -3,
                },
            ));
            (k, b)
        }
        7 => {
            let k = format!("stock:bad-{j}");
            let b = enc(&Event::new(
                format!("bad-{j}"),
                k.clone(),
                Op::Release {
                    order_id: String::new(),
                },
            ));
            (k, b)
        }
        9 => {
            let b = enc(&Event::new(
                format!("bad-{j}"),
                key.clone(),
                Op::put("not a counter"),
            ));
            (key, b)
        }
        _ => {
            // A producer claiming rights for a region: only processors write transfers.
            let k = format!("stock:bad-{j}");
            let b = enc(&Event::new(
                format!("bad-{j}"),
                k.clone(),
                Op::RightsTransfer {
                    to: "anywhere".into(),
                    qty: 1_000,
                    request: 1,
                },
            ));
            (k, b)
        }
    }
}

/// Where publishing left each (region index, partition) of `events`: the next offset.
pub type EndOffsets = std::collections::BTreeMap<(usize, i32), i64>;

#[derive(Default)]
struct Delivered(std::sync::Mutex<(EndOffsets, Vec<String>)>, usize);

impl rdkafka::ClientContext for Delivered {}
impl rdkafka::producer::ProducerContext for Delivered {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        use rdkafka::message::Message;
        let mut st = self.0.lock().expect("delivered lock");
        match r {
            Ok(m) => {
                let e = st.0.entry((self.1, m.partition())).or_insert(0);
                *e = (*e).max(m.offset() + 1);
            }
            Err((e, _)) => st.1.push(e.to_string()),
        }
    }
}

/// Idempotent producers, one per region, publishing to `events` and tracking where the
/// records landed.
pub struct Publisher {
    producers: Vec<BaseProducer<Delivered>>,
}

impl Publisher {
    pub fn new(bootstraps: &[String]) -> Result<Publisher, String> {
        Self::new_in(bootstraps, &[])
    }

    /// Producers created inside each region's network namespace, where given (so that a
    /// region cut off from the rest still gets its load).
    pub fn new_in(
        bootstraps: &[String],
        namespaces: &[Option<String>],
    ) -> Result<Publisher, String> {
        let producers = bootstraps
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let ns = namespaces.get(i).cloned().flatten();
                let b = b.clone();
                std::thread::spawn(move || {
                    if let Some(ns) = ns {
                        crate::netns::enter(&ns)?;
                    }
                    ClientConfig::new()
                        .set("bootstrap.servers", b)
                        .set("enable.idempotence", "true")
                        .set("linger.ms", "5")
                        .create_with_context(Delivered(Default::default(), i))
                        .map_err(|e| e.to_string())
                })
                .join()
                .map_err(|_| "publisher thread panicked".to_string())?
            })
            .collect::<Result<_, _>>()?;
        Ok(Publisher { producers })
    }

    /// Hand records to the producers (waiting while their queues are full).
    pub fn send(&self, records: &[Outgoing], mut progress: impl FnMut(usize)) {
        for (i, r) in records.iter().enumerate() {
            let p = &self.producers[r.region];
            let mut rec = BaseRecord::<[u8], [u8]>::to("events")
                .key(r.key.as_bytes())
                .payload(&r.payload[..]);
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        p.poll(Duration::from_millis(10));
                        rec = back;
                    }
                }
            }
            if i % 1000 == 999 {
                for p in &self.producers {
                    p.poll(Duration::ZERO);
                }
                progress(i + 1);
            }
        }
    }

    /// Wait until everything sent is acknowledged; the end offsets reached so far.
    pub fn flush(&self) -> Result<EndOffsets, String> {
        let mut ends = EndOffsets::new();
        for p in &self.producers {
            p.flush(Duration::from_secs(60))
                .map_err(|e| e.to_string())?;
            let st = p.context().0.lock().expect("delivered lock");
            if let Some(e) = st.1.first() {
                return Err(format!("{} records not delivered: {e}", st.1.len()));
            }
            for (k, v) in &st.0 {
                let slot = ends.entry(*k).or_insert(0);
                *slot = (*slot).max(*v);
            }
        }
        Ok(ends)
    }
}

/// Publish to each region's `events` with an idempotent producer; `progress` is called
/// with the number sent so far. Returns the end offsets the records reached.
pub fn publish(
    bootstraps: &[String],
    records: &[Outgoing],
    mut progress: impl FnMut(usize),
) -> Result<EndOffsets, String> {
    let p = Publisher::new(bootstraps)?;
    p.send(records, &mut progress);
    let ends = p.flush()?;
    progress(records.len());
    Ok(ends)
}

/// Publish `records` evenly over about `over`, in small chunks, so that load keeps
/// arriving while a test kills and restarts processors. Returns the end offsets.
pub fn publish_paced(
    bootstraps: &[String],
    records: &[Outgoing],
    over: Duration,
) -> Result<EndOffsets, String> {
    let chunks = (over.as_millis() / 250).max(1) as usize;
    let size = records.len().div_ceil(chunks).max(1);
    let started = std::time::Instant::now();
    let p = Publisher::new(bootstraps)?;
    for (i, chunk) in records.chunks(size).enumerate() {
        p.send(chunk, |_| {});
        for q in &p.producers {
            q.poll(Duration::ZERO);
        }
        let due = started + Duration::from_millis(250 * (i as u64 + 1));
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
    }
    p.flush()
}

/// One hand-made event for region index `region` (tests that need a specific scenario).
pub fn outgoing(region: usize, id: &str, key: &str, op: Op) -> Outgoing {
    let mut ev = Event::new(id, key, op);
    ev.client_time_ms = Some(rf_core::Clock::now_ms(&rf_core::SystemClock));
    Outgoing {
        region,
        key: key.to_owned(),
        payload: Codec::event().encode(&ev).expect("encode"),
    }
}
