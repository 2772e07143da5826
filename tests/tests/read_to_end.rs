//! read_to_end on a real Tansu broker: empty partition, and records produced before.
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rf_harness::broker::Broker;
use rf_runtime::kafka::{
    abort_orphaned, commit_drained, read_to_end, send, transactional_producer,
};
use rf_schemas::headers::WRITER as H_WRITER;
use std::time::Duration;

#[test]
fn reads_empty_and_filled_partitions_to_the_end() {
    let b = Broker::start("t").unwrap();
    b.create_topics(&["history"], 2).unwrap();
    let n = read_to_end(
        &b.bootstrap(),
        &Default::default(),
        "history",
        0,
        0,
        Duration::from_secs(20),
        |_| Ok(()),
    )
    .unwrap();
    assert_eq!(n, 0);
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .unwrap();
    for i in 0..500 {
        p.send(
            BaseRecord::<str, str>::to("history")
                .partition(1)
                .key("k")
                .payload(&format!("v{i}")),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
    let mut seen = 0;
    let n = read_to_end(
        &b.bootstrap(),
        &Default::default(),
        "history",
        1,
        0,
        Duration::from_secs(20),
        |_| {
            seen += 1;
            Ok(())
        },
    )
    .unwrap();
    assert_eq!((n, seen), (500, 500));
    let mut seen = 0;
    let n = read_to_end(
        &b.bootstrap(),
        &Default::default(),
        "history",
        1,
        450,
        Duration::from_secs(20),
        |_| {
            seen += 1;
            Ok(())
        },
    )
    .unwrap();
    assert_eq!((n, seen), (500, 50));
}

/// A writer that dies inside a transaction (never commits, never aborts) leaves it open,
/// and Tansu never times it out: read_committed readers stop at its first record for good.
/// The next owner finds the writer's id in the uncommitted tail (`rf-writer` header) and
/// fences it, which aborts the transaction; then the whole log is readable again.
#[test]
fn a_dead_writers_open_transaction_is_aborted_by_the_next_owner() {
    let b = Broker::start("t").unwrap();
    b.create_topics(&["history"], 1).unwrap();
    let p = transactional_producer(&b.bootstrap(), &Default::default(), "dead-writer").unwrap();
    let send = |i: usize| {
        send(
            &p,
            BaseRecord::<[u8], [u8]>::to("history")
                .partition(0)
                .key(b"k".as_slice())
                .payload(format!("v{i}").as_bytes())
                .headers(OwnedHeaders::new().insert(Header {
                    key: H_WRITER,
                    value: Some("dead-writer"),
                })),
        )
        .unwrap()
    };
    p.begin_transaction().unwrap();
    (0..10).for_each(send);
    commit_drained(&p, Duration::from_secs(30)).unwrap();
    p.begin_transaction().unwrap();
    (10..15).for_each(send);
    p.flush(Duration::from_secs(10)).unwrap();
    // The writer "dies": its transaction stays open and it never writes again.
    std::mem::forget(p);
    let read = |from| {
        let mut seen = 0;
        let n = read_to_end(
            &b.bootstrap(),
            &Default::default(),
            "history",
            0,
            from,
            Duration::from_secs(40),
            |_| {
                seen += 1;
                Ok(())
            },
        )
        .unwrap();
        (n, seen)
    };
    let (stuck, seen) = read(0);
    assert_eq!(seen, 10, "read_committed shows the committed records only");
    // Our own id is never fenced.
    let none = abort_orphaned(
        &b.bootstrap(),
        &Default::default(),
        "history",
        0,
        stuck,
        "dead-writer",
    );
    assert_eq!(none.unwrap(), Vec::<String>::new());
    let fenced = abort_orphaned(
        &b.bootstrap(),
        &Default::default(),
        "history",
        0,
        stuck,
        "next-owner",
    )
    .unwrap();
    assert_eq!(fenced, vec!["dead-writer".to_owned()]);
    let (end, more) = read(stuck);
    eprintln!("stuck at {stuck}; after fencing read on to {end} ({more} more records)");
    assert!(
        end > stuck + 5,
        "the end moved past the aborted transaction: {end}"
    );
    // Tansu shows aborted records to read_committed readers (DESIGN.md, broker facts).
    assert_eq!(more, 5);
}
