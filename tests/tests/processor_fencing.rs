//! A fenced producer is re-initialised, never fatal: while the processor works under load,
//! another producer initialises the same transactional id (as a zombie's successor would),
//! which fences the processor's producer. The processor re-creates its producer, drops its
//! partitions and rejoins the group (its assignment may be stale), restores from the log on
//! the new assignment and carries on: afterwards nothing is lost or repeated.
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;
use rf_harness::check::verify_region;
use rf_harness::cluster::Cluster;
use rf_harness::process::{wait_drained, ChildProcessor};
use rf_harness::workload::{generate, publish_paced, Workload};
use rf_processor::store::RocksStore;
use std::time::Duration;

#[test]
fn fenced_producer_is_reinitialised_not_fatal() {
    let c = Cluster::start(&["a"], 4).unwrap();
    let cfg = c.processor_config("a", 0);
    let bootstrap = c.bootstrap("a");
    // The instance id lives in the state store; create it first to know the id.
    let id = RocksStore::open(&cfg.state_dir)
        .unwrap()
        .instance_id()
        .unwrap();
    let txn_id = rf_processor::commit::transactional_id(&cfg, &id);

    let (recs, ledger) = generate(
        &Workload {
            events: 4_000,
            malformed: 10,
            all_aggregates: true,
            seed: 31,
            ..Default::default()
        },
        1,
    );
    let mut p = ChildProcessor::spawn_restored(&cfg, &[], Duration::from_secs(60)).unwrap();
    let load = {
        let b = vec![bootstrap.clone()];
        std::thread::spawn(move || publish_paced(&b, &recs, Duration::from_secs(12)))
    };
    // Fence it mid-load, twice.
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(4));
        let zombie_successor: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("transactional.id", &txn_id)
            .create()
            .unwrap();
        zombie_successor
            .init_transactions(Duration::from_secs(30))
            .unwrap();
    }
    let ends = load.join().unwrap().unwrap();
    wait_drained(
        &bootstrap,
        &cfg.group_id(),
        &ends,
        &mut [&mut p],
        Duration::from_secs(240),
    )
    .unwrap();
    assert!(
        p.log_contains("re-creating the producer and rejoining the group"),
        "the fence was not noticed:\n{}",
        p.log_tail(40)
    );
    p.stop_gracefully().unwrap();
    let report =
        verify_region(&bootstrap, 4, &ledger, std::slice::from_ref(&cfg.state_dir)).unwrap();
    assert!(report.problems.is_empty(), "{:#?}", report.problems);
    assert_eq!(report.history_events, ledger.distinct.len());
}
