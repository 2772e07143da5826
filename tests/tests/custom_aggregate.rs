//! A user-defined aggregate added through `rf_core::Aggregate` alone: registered in the
//! process, its ops flow through an unchanged processor and reconciler on real brokers.
//! Duplicates are dropped, RocksDB holds the fold, and `reconciled` carries the merged state.
use rf_core::custom::{register, Aggregate};
use rf_core::{AggState, Applied};
use rf_harness::cluster::Cluster;
use rf_harness::workload::{publish, Outgoing};
use rf_schemas::{Codec, Event, Op};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Highest reading per key; the payload is an i64, big-endian.
struct PeakGauge;
impl Aggregate for PeakGauge {
    fn name(&self) -> &'static str {
        "peak_gauge"
    }
    fn apply(&self, state: &mut Option<Value>, payload: &[u8]) -> Result<Applied, String> {
        let v = i64::from_be_bytes(
            payload
                .try_into()
                .map_err(|_| format!("need 8 bytes, got {}", payload.len()))?,
        );
        let cur = state
            .as_ref()
            .and_then(|s| s["peak"].as_i64())
            .unwrap_or(i64::MIN);
        *state = Some(json!({ "peak": cur.max(v) }));
        Ok(Applied::Applied)
    }
}

#[test]
fn user_aggregate_flows_through_processor_and_reconciler() {
    register(Arc::new(PeakGauge));
    let mut c = Cluster::start(&["a"], 4).unwrap();
    c.start_processor("a", 0);
    c.start_reconciler();
    let mut recs = Vec::new();
    let mut peak: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..400i64 {
        let key = format!("sensor:{}", i % 8);
        let reading = (i * 7919) % 1000 - 200;
        let p = peak.entry(key.clone()).or_insert(i64::MIN);
        *p = (*p).max(reading);
        let ev = Event::new(
            format!("r-{i}"),
            key.clone(),
            Op::Custom {
                aggregate: "peak_gauge".into(),
                payload: reading.to_be_bytes().to_vec(),
            },
        );
        let payload = Codec::event().encode(&ev).unwrap();
        for _ in 0..(1 + (i % 10 == 0) as usize) {
            recs.push(Outgoing {
                region: 0,
                key: key.clone(),
                payload: payload.clone(),
            });
        }
    }
    // Bad input for this aggregate: a 3-byte payload is dead-lettered, not folded.
    let bad = Event::new(
        "r-bad",
        "sensor:0",
        Op::Custom {
            aggregate: "peak_gauge".into(),
            payload: vec![1, 2, 3],
        },
    );
    recs.push(Outgoing {
        region: 0,
        key: "sensor:0".into(),
        payload: Codec::event().encode(&bad).unwrap(),
    });
    publish(&[c.bootstrap("a")], &recs, |_| {}).unwrap();
    c.wait_until(Duration::from_secs(120), "400 events reconciled", |c| {
        Ok(rf_harness::check::reconciled_count(c)? >= 400)
    })
    .unwrap();
    assert!(c.stop_all().is_empty());
    assert_eq!(c.processor_sum(|s| &s.duplicates), 40);
    assert_eq!(c.processor_sum(|s| &s.dead_lettered), 1);

    // The last reconciled record of each key carries the merged state.
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    for (_, r) in rf_harness::check::read_reconciled(&c).unwrap() {
        last.insert(r.event.key.clone(), r.state_json.clone());
    }
    for (k, want) in &peak {
        let got = AggState::from_json(&last[k]).unwrap();
        assert_eq!(
            got,
            AggState::Custom {
                name: "peak_gauge".into(),
                state: json!({ "peak": want }),
            },
            "{k}"
        );
    }
    // RocksDB holds the same fold.
    let store =
        rf_processor::store::RocksStore::open(&c.processor_config("a", 0).state_dir).unwrap();
    let mut stored = 0;
    for p in 0..4 {
        for (k, s) in store.states(p).unwrap() {
            assert_eq!(
                s,
                AggState::Custom {
                    name: "peak_gauge".into(),
                    state: json!({ "peak": peak[&k] }),
                }
            );
            stored += 1;
        }
    }
    assert_eq!(stored, peak.len());
}
