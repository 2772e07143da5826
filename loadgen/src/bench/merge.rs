//! Reconciler merge throughput on one core: three regions' histories (Avro records, as
//! read from Kafka) decoded, offered to the I/O-free merge of one partition index,
//! released behind the watermarks, the reconciled records and conflicts encoded and the
//! checkpoint delta taken after each release, as the reconciler does after each commit.

use super::mix;
use super::report::{thousands, Report};
use super::Sizes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rf_reconciler::merge::PartitionMerge;
use rf_schemas::{Codec, Event, Hlc};
use std::time::Instant;

const SECTION: &str = "Reconciler merge (one core)";
pub const TARGET_EVENTS_PER_SEC: f64 = 200_000.0;

/// Each region's history of one partition: its events stamped with strictly increasing
/// HLCs, about 3 % of them also accepted by another region (failover duplicates).
fn histories(s: &Sizes) -> Vec<(String, Vec<Event>)> {
    let regions = ["us-east", "eu-west", "ap-south"];
    let keys = (s.merge_events / 4).max(100);
    let mut rng = StdRng::seed_from_u64(11);
    let t0 = 1_760_000_000_000i64;
    let mut out: Vec<(String, Vec<Event>)> = regions
        .iter()
        .map(|r| (r.to_string(), Vec::with_capacity(s.merge_events)))
        .collect();
    let mut plain = 0;
    for n in 0..s.merge_events {
        for (ri, region) in regions.iter().enumerate() {
            let i = n * regions.len() + ri;
            let mut ev = mix::event(i, keys, &mut plain, &mut rng, 7);
            // A failover: the previous region's event also lands here.
            if rng.random_bool(0.03) {
                if let Some(prev) = out[(ri + 2) % 3].1.last() {
                    ev = Event::new(prev.event_id.clone(), prev.key.clone(), prev.op.clone());
                }
            }
            ev.region = Some(region.to_string());
            ev.client_time_ms = Some(t0 + n as i64 / 10);
            // ~10 events per ms per region; clocks a few ms apart.
            ev.hlc = Some(Hlc::new(t0 + n as i64 / 10 + ri as i64, (n % 10) as i32));
            out[ri].1.push(ev);
        }
    }
    out
}

/// Feed the histories in chunks, region after region, draining after each round.
/// `decode` turns a record into an event (Avro or a clone); the released records are
/// encoded when `encode`. Returns (events offered, reconciled, conflicts).
fn feed<T>(
    hist: &[(String, Vec<T>)],
    decode: impl Fn(&T) -> Event,
    encode: bool,
) -> (usize, usize, usize) {
    let names: Vec<String> = hist.iter().map(|(r, _)| r.clone()).collect();
    let mut m = PartitionMerge::new(0);
    let (mut offered, mut reconciled, mut conflicts) = (0, 0, 0);
    let len = hist[0].1.len();
    let chunk = 500;
    let now = 1_760_000_000_000i64;
    for start in (0..len).step_by(chunk) {
        for (region, recs) in hist {
            for (off, rec) in recs.iter().enumerate().skip(start).take(chunk) {
                let found = m.offer(region, decode(rec), off as i64, now);
                offered += 1;
                conflicts += found.len();
                if encode {
                    for c in &found {
                        std::hint::black_box(Codec::conflict().encode(c).expect("encode"));
                    }
                }
            }
        }
        let rel = m.drain(&names, now);
        // As the reconciler does after each commit: hand the delta over to the checkpoint
        // (without it, the delta grows with the run and the figure measures that growth).
        std::hint::black_box(m.take_checkpoint());
        reconciled += rel.reconciled.len();
        conflicts += rel.conflicts.len();
        if encode {
            for r in &rel.reconciled {
                std::hint::black_box(Codec::reconciled().encode(r).expect("encode"));
            }
            for c in &rel.conflicts {
                std::hint::black_box(Codec::conflict().encode(c).expect("encode"));
            }
        }
    }
    (offered, reconciled, conflicts)
}

/// Pin this thread to one CPU, so "one core" is what is measured.
fn pin_to_one_core() -> String {
    let mut set = nix::sched::CpuSet::new();
    if set.set(0).is_err() {
        return "not pinned".into();
    }
    match nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
        Ok(()) => "pinned to CPU 0".into(),
        Err(e) => format!("not pinned: {e}"),
    }
}

pub fn run(s: &Sizes, r: &mut Report) -> Result<(), String> {
    println!("== reconciler merge, 3 regions x {} events", s.merge_events);
    let hist = histories(s);
    let codec = Codec::event();
    let encoded: Vec<(String, Vec<Vec<u8>>)> = hist
        .iter()
        .map(|(r, evs)| {
            (
                r.clone(),
                evs.iter()
                    .map(|e| codec.encode(e).expect("encode"))
                    .collect(),
            )
        })
        .collect();
    let pinned = std::thread::spawn(move || {
        let pin = pin_to_one_core();
        let t = Instant::now();
        let (n, rec, conf) = feed(&encoded, |b| codec.decode(b).expect("decode"), true);
        let full = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (n2, _, _) = feed(&hist, |e| e.clone(), false);
        let core = t.elapsed().as_secs_f64();
        (pin, n, rec, conf, full, n2, core)
    })
    .join()
    .map_err(|_| "merge benchmark panicked".to_string())?;
    let (pin, n, rec, conf, full, n2, core) = pinned;
    let rate = n as f64 / full;
    r.add_target(
        SECTION,
        "merge with Avro decode + encode",
        format!("{} ev/s", thousands(rate)),
        format!(
            "{} history events -> {} reconciled, {} conflicts, {pin}",
            thousands(n as f64),
            thousands(rec as f64),
            thousands(conf as f64)
        ),
        "≥ 200,000 ev/s",
        rate >= TARGET_EVENTS_PER_SEC,
    );
    r.add(
        SECTION,
        "merge alone (decoded events)",
        format!("{} ev/s", thousands(n2 as f64 / core)),
        "the same histories without Avro: the merge's own share",
    );
    Ok(())
}
