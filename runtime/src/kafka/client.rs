//! Client construction: the bootstrap servers, the librdkafka passthrough settings, and the
//! read_committed consumer settings every reader of ours uses.

use rdkafka::config::ClientConfig;
use rdkafka::message::Message;
use std::collections::BTreeMap;

pub fn client_config(bootstrap: &str, extra: &BTreeMap<String, String>) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c.set("log_level", "3");
    for (k, v) in extra {
        c.set(k, v);
    }
    c
}

/// A consumer that reads what committed transactions wrote, positions itself by hand or by
/// transaction (never auto-commits), and starts at the beginning when it has no position.
/// The settings every reader of ours shares; callers add their own on top.
pub fn read_committed(
    bootstrap: &str,
    extra: &BTreeMap<String, String>,
    group_id: &str,
) -> ClientConfig {
    let mut c = client_config(bootstrap, extra);
    c.set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest");
    c
}

pub fn header_str(m: &impl Message, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}

/// The first of `names` present on `m`, as a number (names: the current spelling first,
/// then older ones still read).
pub fn header_i64(m: &impl Message, names: &[&str]) -> Option<i64> {
    names
        .iter()
        .find_map(|n| header_str(m, n))
        .and_then(|v| v.parse().ok())
}
