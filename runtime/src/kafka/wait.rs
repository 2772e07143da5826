//! Waiting for a cluster that is not there yet (a compose stack starting in any order, a
//! broker restarting): a service retries with backoff until the cluster answers, logging every
//! few seconds which bootstrap servers it waits for and why, and starts by itself when it
//! does, as Kafka Streams waits for its brokers. `/ready` stays false meanwhile (the services
//! set it only once started).

use super::client::client_config;
use crate::Shutdown;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often the wait says it is still waiting.
pub const WAIT_LOG_EVERY: Duration = Duration::from_secs(5);
/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Block until the cluster at `bootstrap` answers a metadata request (true), or `shutdown`
/// is triggered first (false). `what` names the cluster's role in the log ("events cluster
/// of region eu", "home cluster").
pub fn wait_for_cluster(
    bootstrap: &str,
    extra: &BTreeMap<String, String>,
    what: &str,
    shutdown: &Shutdown,
) -> bool {
    let started = Instant::now();
    let mut last_log: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        if shutdown.is_triggered() {
            return false;
        }
        let cause = match client_config(bootstrap, extra).create::<BaseConsumer>() {
            Ok(c) => match c.fetch_metadata(None, Duration::from_secs(2)) {
                Ok(_) => {
                    if last_log.is_some() {
                        tracing::info!(%bootstrap, what, waited_s = started.elapsed().as_secs(), "cluster reachable; starting");
                    }
                    return true;
                }
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if last_log.is_none_or(|t| t.elapsed() >= WAIT_LOG_EVERY) {
            tracing::warn!(
                %bootstrap,
                what,
                %cause,
                waited_s = started.elapsed().as_secs(),
                "waiting for the cluster: it does not answer (retrying with backoff)"
            );
            last_log = Some(Instant::now());
        }
        shutdown.sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
