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
        let (key, op) = if rng.random_bool(0.7) || w.register_keys == 0 {
            (
                format!("likes:{}", rng.random_range(0..w.counter_keys)),
                Op::CounterAdd {
                    delta: rng.random_range(1..=5),
                },
            )
        } else {
            (
                format!("profile:{}:theme", rng.random_range(0..w.register_keys)),
                Op::RegisterPut {
                    value: format!("theme-{i}-r{region}"),
                },
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
    // Malformed records, spread out: garbage, truncated Avro, key mismatch, empty event_id.
    for j in 0..w.malformed {
        let region = j % regions;
        let at = rng.random_range(0..out.len());
        let key = format!("likes:{}", j % w.counter_keys.max(1));
        let payload = match j % 4 {
            0 => b"\x00not avro at all".to_vec(),
            1 => {
                let b = codec
                    .encode(&Event::new(
                        format!("bad-{j}"),
                        key.clone(),
                        Op::CounterAdd { delta: 1 },
                    ))
                    .unwrap();
                b[..b.len() - 3].to_vec()
            }
            2 => codec
                .encode(&Event::new(
                    format!("bad-{j}"),
                    "some-other-key",
                    Op::CounterAdd { delta: 1 },
                ))
                .unwrap(),
            _ => codec
                .encode(&Event::new("", key.clone(), Op::CounterAdd { delta: 1 }))
                .unwrap(),
        };
        out.insert(
            at,
            Outgoing {
                region,
                key,
                payload,
            },
        );
        ledger.malformed += 1;
    }
    ledger.records = out.len();
    (out, ledger)
}

/// Publish to each region's `events` with an idempotent producer; `progress` is called
/// with the number sent so far.
pub fn publish(
    bootstraps: &[String],
    records: &[Outgoing],
    mut progress: impl FnMut(usize),
) -> Result<(), String> {
    let producers: Vec<BaseProducer> = bootstraps
        .iter()
        .map(|b| {
            ClientConfig::new()
                .set("bootstrap.servers", b)
                .set("enable.idempotence", "true")
                .set("linger.ms", "5")
                .create()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    for (i, r) in records.iter().enumerate() {
        let p = &producers[r.region];
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
            for p in &producers {
                p.poll(Duration::ZERO);
            }
            progress(i + 1);
        }
    }
    for p in &producers {
        p.flush(Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
    }
    progress(records.len());
    Ok(())
}
