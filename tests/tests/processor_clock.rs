//! Invariant 4 with an injected wall clock: the clock jumps +500 ms, then back 60 s, then
//! the processor restarts with its clock 120 s behind the persisted bound. HLCs in every
//! history partition stay strictly increasing throughout, and nothing is lost or repeated.
//! Timestamps read back from `reconciled` advance the clock when within the max offset, and
//! are counted and refused when beyond it.
use rf_core::{Clock, ManualClock};
use rf_harness::check::verify_region;
use rf_harness::cluster::Cluster;
use rf_harness::workload::{generate, publish, Ledger, Workload};
use rf_schemas::{Codec, Event, Hlc, Op, Outcome, ReconciledEvent};
use std::sync::Arc;
use std::time::Duration;

/// A `reconciled` record as another region's event would appear there, stamped `at_ms`.
fn remote_record(c: &Cluster, partition: i32, at_ms: i64) {
    use rdkafka::producer::{BaseRecord, Producer};
    let mut ev = Event::new(
        format!("remote-{partition}-{at_ms}"),
        "likes:remote",
        Op::CounterAdd { delta: 1 },
    );
    ev.region = Some("elsewhere".into());
    ev.hlc = Some(Hlc::new(at_ms, 0));
    let rec = ReconciledEvent {
        event: ev,
        outcome: Outcome::Applied,
        reason: None,
        state_json: "null".into(),
    };
    let bytes = Codec::reconciled().encode(&rec).unwrap();
    let p: rdkafka::producer::BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", c.home.bootstrap())
        .create()
        .unwrap();
    p.send(
        BaseRecord::<[u8], [u8]>::to("reconciled")
            .partition(partition)
            .key(&b"likes:remote"[..])
            .payload(&bytes[..]),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
}

fn send_batch(c: &Cluster, ledger: &mut Ledger, sent: &mut usize, seed: u64) {
    let (recs, l) = generate(
        &Workload {
            events: 800,
            malformed: 4,
            all_aggregates: true,
            seed,
            ..Default::default()
        },
        1,
    );
    ledger.extend(l);
    *sent += recs.len();
    publish(&[c.bootstrap("a")], &recs, |_| {}).unwrap();
    let want = *sent;
    c.wait_until(Duration::from_secs(120), "batch consumed", |c| {
        Ok(c.processor_sum(|s| &s.consumed) as usize >= want)
    })
    .unwrap();
}

#[test]
fn hlc_strictly_increases_across_clock_jumps_and_restarts() {
    let mut c = Cluster::start(&["a"], 4).unwrap();
    let (mut ledger, mut sent) = (Ledger::default(), 0);
    let clock = ManualClock::default();
    c.start_processor_with_clock("a", 0, Arc::new(clock.clone()));
    send_batch(&c, &mut ledger, &mut sent, 1);
    clock.set_offset(500);
    send_batch(&c, &mut ledger, &mut sent, 2);
    clock.set_offset(-60_000);
    send_batch(&c, &mut ledger, &mut sent, 3);

    // Timestamps from elsewhere, read back from `reconciled`: one 120 s ahead of the
    // processor's (shifted) wall clock, so a minute past everything it stamped, is counted
    // and not adopted; one 100 ms ahead is accepted (merging it changes nothing here:
    // the clock's bound is already past it).
    let now = clock.now_ms();
    for ahead in [120_000, 100] {
        for p in 0..4 {
            remote_record(&c, p, now + ahead);
        }
    }
    c.wait_until(Duration::from_secs(30), "remote HLCs observed", |c| {
        let s = &c.processors[0].stats;
        Ok(s.counters.clock_skew_rejected.get() >= 4 && s.counters.remote_observed.get() >= 4)
    })
    .unwrap();
    send_batch(&c, &mut ledger, &mut sent, 5);
    assert!(c.stop_all().is_empty());
    let max_hlc = rf_harness::check::max_history_physical_ms(&c.bootstrap("a"), 4).unwrap();
    assert!(
        max_hlc < now + 120_000,
        "a remote timestamp beyond the max offset dragged the clock to {max_hlc}"
    );

    // Restart with the wall clock two minutes behind what history already holds.
    c.start_processor_with_clock("a", 0, Arc::new(ManualClock::with_offset(-120_000)));
    send_batch(&c, &mut ledger, &mut sent, 4);
    assert!(c.stop_all().is_empty());

    let dir = c.processor_config("a", 0).state_dir;
    let report = verify_region(&c.bootstrap("a"), 4, &ledger, &[dir]).unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.history_events, ledger.distinct.len());
}
