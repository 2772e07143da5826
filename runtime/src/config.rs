//! Validation helpers both services' `Config::validate` use: every error names its field.

use crate::error::Error;
use std::collections::BTreeMap;

/// A configuration error naming `field`.
pub fn bad(field: &'static str, reason: impl Into<String>) -> Error {
    Error::Config {
        field,
        reason: reason.into(),
    }
}

pub fn non_empty(field: &'static str, value: &str) -> Result<(), Error> {
    if value.trim().is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    Ok(())
}

pub fn in_range<T: PartialOrd + std::fmt::Display>(
    field: &'static str,
    value: T,
    lo: T,
    hi: T,
) -> Result<(), Error> {
    if value < lo || value > hi {
        return Err(bad(field, format!("must be in {lo}..={hi}, got {value}")));
    }
    Ok(())
}

/// A name made of `[A-Za-z0-9_-]` (regions, instances: they end up in transactional ids).
pub fn identifier(field: &'static str, value: &str) -> Result<(), Error> {
    if value.is_empty()
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad(field, "must be non-empty [A-Za-z0-9_-]"));
    }
    Ok(())
}

/// librdkafka settings the services manage themselves (exactly-once depends on them).
pub const MANAGED_KAFKA_KEYS: &[&str] = &[
    "transactional.id",
    "enable.auto.commit",
    "isolation.level",
    "group.id",
];

/// Refuse passthrough settings that would override a managed one.
pub fn refuse_managed(service: &str, kafka: &BTreeMap<String, String>) -> Result<(), Error> {
    for k in kafka.keys() {
        if MANAGED_KAFKA_KEYS.contains(&k.as_str()) {
            return Err(bad(
                "kafka",
                format!("`{k}` is managed by the {service} and cannot be overridden"),
            ));
        }
    }
    Ok(())
}

/// `transaction.timeout.ms` as configured, or the producer's default.
pub fn transaction_timeout_ms(kafka: &BTreeMap<String, String>) -> Result<u64, Error> {
    match kafka.get("transaction.timeout.ms") {
        None => Ok(crate::kafka::DEFAULT_TRANSACTION_TIMEOUT_MS),
        Some(v) => v
            .parse()
            .map_err(|_| bad("kafka.transaction.timeout.ms", "must be a number")),
    }
}
