//! Schema evolution on real topics: history written by the previous version (Event schema
//! v1: no `context`/`dot` on puts, no `grants` on stock adds, no rights ops) still decodes and
//! merges. Region a's `history` is written with v1 records, as the previous processor wrote
//! it (region and HLC set, heartbeats); then today's processor adopts it and takes new events
//! on the same keys, and the reconciler merges both versions into one `reconciled`: a v1 put
//! is last-writer-wins and a dotted put after it supersedes it; a v1 stock add keeps its key
//! on the repair policy it was written under.
use rf_core::{AggState, Published};
use rf_harness::check::{read_all_conflicts, read_reconciled, reconciled_states};
use rf_harness::cluster::Cluster;
use rf_harness::workload::{outgoing, Publisher};
use rf_schemas::{avsc, codec::encode_v1, Codec, Event, Hlc, Op};
use std::time::Duration;

fn v1(region: &str, id: &str, key: &str, ms: i64, op: Op) -> Vec<u8> {
    let mut e = Event::new(id, key, op);
    e.region = Some(region.into());
    e.hlc = Some(Hlc::new(ms, 0));
    encode_v1(avsc::EVENT_V1, &e).unwrap()
}

#[test]
fn history_written_with_the_v1_schema_is_adopted_and_merged() {
    let mut c = Cluster::start(&["a", "b"], 1).unwrap();
    // Every op v1 has, as the previous version wrote them into history.
    let now = rf_core::Clock::now_ms(&rf_core::SystemClock);
    let t0 = now - 60_000;
    let old: Vec<(&str, Vec<u8>)> = vec![
        (
            "likes:1",
            v1("a", "old-1", "likes:1", t0, Op::CounterAdd { delta: 5 }),
        ),
        (
            "profile:1",
            v1("a", "old-2", "profile:1", t0 + 1, Op::put("old-theme")),
        ),
        (
            "stock:1",
            v1("a", "old-3", "stock:1", t0 + 2, Op::stock_add(10)),
        ),
        (
            "stock:1",
            v1(
                "a",
                "old-4",
                "stock:1",
                t0 + 3,
                Op::Reserve {
                    order_id: "o-old".into(),
                    qty: 4,
                },
            ),
        ),
        ("", v1("a", "hb-old", "", t0 + 4, Op::Heartbeat)),
    ];
    let a = &c.regions[0].1;
    for (key, bytes) in &old {
        assert_ne!(
            bytes[2..10],
            Codec::event().fingerprint().to_le_bytes(),
            "written with v1"
        );
        a.produce_raw("history", 0, key.as_bytes(), bytes).unwrap();
    }
    // Region b wrote nothing yet in v1 but a heartbeat, so the merge can release a's.
    c.regions[1]
        .1
        .produce_raw(
            "history",
            0,
            b"",
            &v1("b", "hb-b", "", t0 + 5, Op::Heartbeat),
        )
        .unwrap();

    c.start_processor("a", 0);
    c.start_processor("b", 0);
    c.start_reconciler();
    let publisher = Publisher::new(&c.bootstraps()).unwrap();
    publisher.send(
        &[
            outgoing(0, "new-1", "likes:1", Op::CounterAdd { delta: 2 }),
            outgoing(1, "new-2", "profile:1", Op::put("new-theme")),
            outgoing(
                0,
                "new-3",
                "stock:1",
                Op::Reserve {
                    order_id: "o-new".into(),
                    qty: 5,
                },
            ),
        ],
        |_| {},
    );
    publisher.flush().unwrap();
    c.wait_until(Duration::from_secs(60), "old and new reconciled", |c| {
        Ok(c.reconciled_so_far() >= 7)
    })
    .unwrap();
    let errs = c.stop_all();
    assert!(errs.is_empty(), "{errs:?}");

    let rec = read_reconciled(&c).unwrap();
    let ids: Vec<&str> = rec.iter().map(|(_, r)| r.event.event_id.as_str()).collect();
    assert_eq!(ids.len(), 7, "every record once: {ids:?}");
    assert_eq!(
        ids[..4],
        ["old-1", "old-2", "old-3", "old-4"],
        "the v1 records first, in reconciled order"
    );
    let mut new = ids[4..].to_vec();
    new.sort();
    assert_eq!(new, ["new-1", "new-2", "new-3"]);
    let states = reconciled_states(&c).unwrap();
    assert_eq!(states["likes:1"], AggState::Counter { total: 7 });
    match &states["profile:1"] {
        AggState::Register { value, causal, .. } => {
            assert_eq!(value, "new-theme");
            assert_eq!(causal.siblings.len(), 1);
        }
        s => panic!("{s:?}"),
    }
    // The v1 stock add made the key a repair key: the new reservation is admitted on the
    // view (10 - 4 = 6 available), no rights involved.
    match &states["stock:1"] {
        AggState::Inventory {
            available,
            reserved,
            escrow,
        } => {
            assert_eq!((*available, reserved.total()), (1, 9));
            assert!(escrow.is_none(), "{escrow:?}");
        }
        s => panic!("{s:?}"),
    }
    let last = &rec
        .iter()
        .rev()
        .find(|(_, r)| r.event.key == "stock:1")
        .unwrap()
        .1;
    assert!(matches!(
        Published::from_json(&last.state_json),
        Ok(Published::Inventory { available: 1, .. })
    ));
    // A dotted put after a v1 put is not a conflict: the v1 put has no dot to be concurrent with.
    let conflicts = read_all_conflicts(&c).unwrap();
    assert!(conflicts.is_empty(), "{conflicts:?}");
}
