//! Micro-benchmarks of the per-record work: Avro encode and decode, an HLC tick, a dedup
//! check against RocksDB, and a RocksDB batch commit of one transaction's changes.

use super::report::{thousands, Report};
use super::Sizes;
use rf_core::HlcClock;
use rf_processor::store::{PartitionMeta, RocksStore, StateStore, StoreBatch};
use rf_schemas::{Codec, Event, Hlc, Op};
use std::hint::black_box;
use std::time::Instant;

const SECTION: &str = "Micro-benchmarks (one thread, in memory or on local RocksDB)";

fn per_op(n: usize, f: impl FnMut(usize)) -> f64 {
    let mut f = f;
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn ns(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} µs", v / 1000.0)
    } else {
        format!("{v:.0} ns")
    }
}

pub fn run(s: &Sizes, r: &mut Report) -> Result<(), String> {
    println!("== micro-benchmarks");
    let codec = Codec::event();
    let mut ev = Event::new("b7-123456", "likes:123456", Op::CounterAdd { delta: 3 });
    ev.client_time_ms = Some(1_760_000_000_000);
    ev.region = Some("us-east".into());
    ev.hlc = Some(Hlc::new(1_760_000_000_123, 4));
    let bytes = codec.encode(&ev).map_err(|e| e.to_string())?;
    let n = s.micro_iters;
    let enc = per_op(n, |_| {
        black_box(codec.encode(black_box(&ev)).expect("encode"));
    });
    let enc_generic = per_op(n, |_| {
        black_box(codec.encode_generic(black_box(&ev)).expect("encode"));
    });
    r.add(
        SECTION,
        "Avro encode (event, single-object)",
        ns(enc),
        format!(
            "per record, {} bytes; apache-avro's Value path: {} ({:.0}× slower)",
            bytes.len(),
            ns(enc_generic),
            enc_generic / enc
        ),
    );
    let dec = per_op(n, |_| {
        black_box(codec.decode(black_box(&bytes)).expect("decode"));
    });
    let dec_generic = per_op(n, |_| {
        black_box(codec.decode_generic(black_box(&bytes)).expect("decode"));
    });
    r.add(
        SECTION,
        "Avro decode (event, checked)",
        ns(dec),
        format!(
            "per record; apache-avro's Value path: {} ({:.0}× slower)",
            ns(dec_generic),
            dec_generic / dec
        ),
    );

    let mut clock = HlcClock::new(500);
    let t0 = 1_760_000_000_000i64;
    let tick = per_op(n * 50, |i| {
        black_box(clock.tick(black_box(t0 + (i / 64) as i64)));
    });
    r.add(SECTION, "HLC tick", ns(tick), "per tick");
    let sys = rf_core::SystemClock;
    let tick_now = per_op(n * 10, |_| {
        black_box(clock.tick(rf_core::Clock::now_ms(&sys)));
    });
    r.add(
        SECTION,
        "HLC tick with wall-clock read",
        ns(tick_now),
        "per tick",
    );

    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store = RocksStore::open(dir.path()).map_err(|e| e.to_string())?;
    let ids = s.dedup_ids;
    let accepted = rf_core::Clock::now_ms(&sys);
    let batch_size = 1_000;
    let mut commit_ns = Vec::new();
    for start in (0..ids).step_by(batch_size) {
        let end = (start + batch_size).min(ids);
        let mut b = StoreBatch::default();
        for i in start..end {
            let key = format!("likes:{i}");
            // Accepted now: older ids would be expired by the retention compaction filter.
            b.dedup
                .push((i as i32 % 4, key.clone(), format!("b7-{i}"), accepted));
            b.states
                .push((i as i32 % 4, key, rf_core::AggState::Counter { total: 3 }));
        }
        for p in 0..4 {
            b.metas.push((p, PartitionMeta::default()));
        }
        let t = Instant::now();
        store.write(b).map_err(|e| e.to_string())?;
        commit_ns.push(t.elapsed().as_nanos() as f64);
    }
    commit_ns.sort_by(f64::total_cmp);
    let median = commit_ns[commit_ns.len() / 2];
    r.add(
        SECTION,
        "RocksDB batch commit (1,000 events)",
        ns(median),
        format!(
            "median of {} batches: states + dedup ids + metas; {:.2} µs per event",
            commit_ns.len(),
            median / 1000.0 / batch_size as f64
        ),
    );
    let probes = (n * 5).min(200_000);
    let hit = per_op(probes, |i| {
        let k = (i * 7919) % ids;
        let seen = store
            .seen(k as i32 % 4, &format!("likes:{k}"), &format!("b7-{k}"))
            .expect("seen");
        assert!(seen);
    });
    let miss = per_op(probes, |i| {
        let k = (i * 7919) % ids;
        let seen = store
            .seen(k as i32 % 4, &format!("likes:{k}"), &format!("b8-{k}"))
            .expect("seen");
        assert!(!seen);
    });
    r.add(
        SECTION,
        "dedup check, new id (bloom filter)",
        ns(miss),
        format!("RocksDB holding {} ids", thousands(ids as f64)),
    );
    r.add(
        SECTION,
        "dedup check, seen id",
        ns(hit),
        format!("RocksDB holding {} ids", thousands(ids as f64)),
    );
    Ok(())
}
