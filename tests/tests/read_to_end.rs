//! read_to_end on a real Tansu broker: empty partition, and records produced before.
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rf_loadgen::broker::Broker;
use rf_processor::kafka::read_to_end;
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
