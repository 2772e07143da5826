//! What the processor writes: history records (the event, encoded, with the writer and
//! source headers) and dead letters (the original bytes with the reason). Header names come
//! from `rf_schemas::headers`, the one place they are spelled.

use rdkafka::message::{Header, OwnedHeaders};
use rf_schemas::headers;

/// Headers of a history record: the writing producer's transactional id and, for an
/// input event (not a heartbeat), where it came from.
pub fn history_headers(writer: &str, source: Option<(i32, i64)>) -> OwnedHeaders {
    let h = OwnedHeaders::new().insert(Header {
        key: headers::WRITER,
        value: Some(writer),
    });
    match source {
        None => h,
        Some((p, o)) => h
            .insert(Header {
                key: headers::SOURCE_PARTITION,
                value: Some(&p.to_string()),
            })
            .insert(Header {
                key: headers::SOURCE_OFFSET,
                value: Some(&o.to_string()),
            }),
    }
}

/// Headers of the heartbeat a writer leaves on a partition it gives up (`rf-handoff`).
pub fn handoff_headers(writer: &str) -> OwnedHeaders {
    history_headers(writer, None).insert(Header {
        key: headers::HANDOFF,
        value: Some("1"),
    })
}

/// The input offset of a history record, in either spelling.
pub const SOURCE_OFFSET_NAMES: &[&str] = &[headers::SOURCE_OFFSET, headers::legacy::SRC_OFFSET];

/// Where a dead letter came from.
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// A dead letter: the payload to write (an oversized record cut to `max_bytes`, with its
/// full size in a header, so that it fits a Kafka message at all) and its headers.
pub fn dead_letter<'a>(
    payload: &'a [u8],
    class: &str,
    reason: &str,
    src: &Source<'_>,
    max_bytes: usize,
) -> (&'a [u8], OwnedHeaders) {
    let h = OwnedHeaders::new()
        .insert(Header {
            key: headers::ERROR_CLASS,
            value: Some(class),
        })
        .insert(Header {
            key: headers::ERROR_REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: headers::SOURCE_TOPIC,
            value: Some(src.topic),
        })
        .insert(Header {
            key: headers::SOURCE_PARTITION,
            value: Some(&src.partition.to_string()),
        })
        .insert(Header {
            key: headers::SOURCE_OFFSET,
            value: Some(&src.offset.to_string()),
        });
    if class == "oversized" {
        (
            &payload[..payload.len().min(max_bytes)],
            h.insert(Header {
                key: headers::ORIGINAL_BYTES,
                value: Some(&payload.len().to_string()),
            }),
        )
    } else {
        (payload, h)
    }
}
