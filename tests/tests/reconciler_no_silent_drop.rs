//! Invariant 10 in the reconciler, on real Tansu brokers: nothing is dropped in silence.
//!
//! - A history record it cannot decode (a newer schema's fingerprint) stops that
//!   (region, partition) at that offset: `/ready` 503, `rf_reconciler_stalled_partitions` 1,
//!   `rf_history_undecodable_total` counted, nothing of that partition released past it while
//!   the other partitions go on; a restarted reconciler stops at the same record again.
//! - A record that sorts below what was already reconciled (a late record) is reported on
//!   `conflicts` as `LATE_RECORD` and counted, never merged.
//! - A reconciler whose region names do not match the `region` stamped in their clusters'
//!   history refuses to run, naming both.
use rf_harness::check::{read_all_conflicts, read_reconciled};
use rf_harness::cluster::Cluster;
use rf_harness::http_client::get;
use rf_harness::workload::{generate, publish, Workload};
use rf_schemas::{Codec, ConflictKind, Event, Hlc, Op};
use std::collections::BTreeMap;
use std::time::Duration;

const STALLED_PARTITION: i32 = 0;

fn per_partition(c: &Cluster) -> BTreeMap<i32, usize> {
    let mut n = BTreeMap::new();
    for (p, _) in read_reconciled(c).unwrap() {
        *n.entry(p).or_insert(0) += 1;
    }
    n
}

/// The reconciler's `/metrics` ("" until its endpoint is up).
fn metrics(c: &Cluster) -> String {
    c.reconciler_http()
        .and_then(|a| get(a, "/metrics").ok())
        .map(|(_, body)| body)
        .unwrap_or_default()
}

fn has_line(text: &str, name: &str, labels: &[&str], value: &str) -> bool {
    text.lines().any(|l| {
        l.starts_with(name)
            && labels.iter().all(|x| l.contains(x))
            && l.ends_with(&format!(" {value}"))
    })
}

#[test]
fn undecodable_late_and_misnamed_history_are_never_skipped_in_silence() {
    let regions = ["a", "b"];
    let mut c = Cluster::start(&regions, 4).unwrap();
    c.create_check_topics().unwrap();
    for r in regions {
        c.start_processor(r, 0);
    }
    c.start_reconciler();
    let w = |seed| Workload {
        events: 1_000,
        seed,
        malformed: 0,
        ..Default::default()
    };
    let (recs, ledger) = generate(&w(5), regions.len());
    publish(&c.bootstraps(), &recs, |_| {}).unwrap();
    let first = ledger.distinct.len() as u64;
    c.wait_until(
        Duration::from_secs(60),
        "the first events reconciled",
        |c| Ok(c.reconciled_so_far() >= first),
    )
    .unwrap();
    assert_eq!(get(c.reconciler_http().unwrap(), "/ready").unwrap().0, 200);

    // An Event of a newer schema (unknown fingerprint) in a's history partition 0.
    let mut newer = Codec::event()
        .encode(&Event::new(
            "from-the-future",
            "likes:1",
            Op::CounterAdd { delta: 1 },
        ))
        .unwrap();
    newer[2..10].copy_from_slice(&0x0123_4567_89ab_cdefu64.to_le_bytes());
    c.regions[0]
        .1
        .produce_raw("history", STALLED_PARTITION, b"likes:1", &newer)
        .unwrap();
    // A late record in a's history partition 1: stamped far below what was reconciled.
    let mut late = Event::new("late-1", "likes:late", Op::CounterAdd { delta: 1 });
    late.region = Some("a".into());
    late.hlc = Some(Hlc::new(1_000, 0));
    c.regions[0]
        .1
        .produce_raw(
            "history",
            1,
            b"likes:late",
            &Codec::event().encode(&late).unwrap(),
        )
        .unwrap();

    c.wait_until(Duration::from_secs(30), "the stall to show", |c| {
        let m = metrics(c);
        Ok(has_line(
            &m,
            "rf_reconciler_stalled_partitions",
            &["region=\"a\"", "partition=\"0\""],
            "1",
        ) && has_line(&m, "rf_history_undecodable_total", &["region=\"a\""], "1"))
    })
    .unwrap();
    assert_eq!(
        get(c.reconciler_http().unwrap(), "/ready").unwrap().0,
        503,
        "/ready is false while a partition is stopped"
    );
    c.wait_until(Duration::from_secs(30), "the late record reported", |c| {
        Ok(has_line(
            &metrics(c),
            "rf_conflicts_total",
            &["kind=\"LATE_RECORD\""],
            "1",
        ))
    })
    .unwrap();

    // More input: every partition but the stopped one moves on. (What the other region had
    // below the stopped watermark is released first: wait for that.)
    std::thread::sleep(Duration::from_secs(2));
    let before = per_partition(&c);
    let (recs2, ledger2) = generate(&w(6), regions.len());
    publish(&c.bootstraps(), &recs2, |_| {}).unwrap();
    let more = first + ledger2.distinct.len() as u64;
    c.wait_until(Duration::from_secs(60), "the other partitions", |c| {
        let now = per_partition(c);
        Ok((0..4)
            .filter(|p| *p != STALLED_PARTITION)
            .all(|p| now.get(&p) > before.get(&p)))
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let after = per_partition(&c);
    assert_eq!(
        after.get(&STALLED_PARTITION),
        before.get(&STALLED_PARTITION),
        "nothing of the stopped partition was released past the undecodable record"
    );
    assert!(
        c.reconciled_so_far() < more,
        "the stopped partition holds events back"
    );

    // A restart stops at the same record: it was never skipped.
    let mut rec = c.reconciler.take().unwrap();
    rec.stop().unwrap();
    c.start_reconciler();
    c.wait_until(Duration::from_secs(60), "the restart to stop again", |c| {
        Ok(has_line(
            &metrics(c),
            "rf_reconciler_stalled_partitions",
            &["region=\"a\"", "partition=\"0\""],
            "1",
        ))
    })
    .unwrap();
    assert_eq!(
        per_partition(&c).get(&STALLED_PARTITION),
        before.get(&STALLED_PARTITION)
    );

    // The late record is a conflict, never a reconciled event.
    let conflicts = read_all_conflicts(&c).unwrap();
    let late_reports: Vec<_> = conflicts
        .iter()
        .filter(|x| x.kind == ConflictKind::LateRecord)
        .collect();
    assert!(!late_reports.is_empty());
    assert!(late_reports.iter().all(|x| x.event_id == "late-1"));
    assert!(read_reconciled(&c)
        .unwrap()
        .iter()
        .all(|(_, r)| r.event.event_id != "late-1"));

    // Region names swapped: refused, naming both.
    let mut wrong = c.reconciler_config();
    wrong.instance = "misnamed".into();
    wrong.reconciled_topic = rf_harness::cluster::CHECK_TOPICS[0].into();
    wrong.conflicts_topic = rf_harness::cluster::CHECK_TOPICS[1].into();
    wrong.http_addr = String::new();
    let (a, b) = (wrong.regions[0].name.clone(), wrong.regions[1].name.clone());
    wrong.regions[0].name = b;
    wrong.regions[1].name = a;
    let err = rf_reconciler::run_with(
        wrong,
        rf_runtime::Shutdown::default(),
        std::sync::Arc::new(rf_core::SystemClock),
        Default::default(),
    )
    .expect_err("a reconciler with swapped region names must refuse");
    let msg = err.to_string();
    assert!(
        msg.contains("\"a\"") && msg.contains("\"b\"") && msg.contains("regions"),
        "{msg}"
    );
    let errs = c.stop_all();
    assert!(errs.is_empty(), "{errs:?}");
}
