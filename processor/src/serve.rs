//! What the processor serves on top of the runtime's HTTP base: `/state/{key}` (the
//! regional view and the reconciled state of a key, JSON) and `/feed` (Server-Sent Events
//! of reconciled changes, `?prefix=` filter, resumable with `Last-Event-ID`), and the JSON
//! both are made of.

use crate::feed::{Change, Subscription};
use crate::follow::Remote;
use crate::stats::SharedStats;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream};
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

/// The processor's own routes.
pub fn routes(stats: SharedStats) -> Router {
    Router::new()
        .route("/state/{key}", get(state))
        .route("/feed", get(feed))
        .with_state(stats)
}

/// The base's `/metrics` hook: gauges computed on demand.
pub fn before_scrape(stats: &SharedStats) {
    let (pending, held) = {
        let v = stats.view.lock();
        (v.pending_count(), v.held())
    };
    let m = &stats.metrics;
    let region = [stats.region.as_str()];
    m.view_pending_events
        .with_label_values(&region)
        .set(pending as i64);
    m.view_held_events
        .with_label_values(&region)
        .set(held as i64);
}

/// `/state/{key}`: the regional view and the reconciled state of one key.
pub fn state_json(stats: &SharedStats, key: &str) -> Option<serde_json::Value> {
    let v = stats.view.lock();
    let view = v.view(key);
    let rec = v.reconciled_state(key).cloned();
    if view.is_none() && rec.is_none() {
        return None;
    }
    // Registers: the context a writer that read this view sends with its put (an opaque
    // token), and how many concurrent versions there are. Escrow inventory: the rights
    // each region holds in this view.
    let mut extra = serde_json::Map::new();
    match &view {
        Some(s @ rf_core::AggState::Register { causal, .. }) => {
            extra.insert(
                "context".into(),
                rf_core::aggregate::context_token(Some(s)).into(),
            );
            extra.insert("siblings".into(), causal.siblings.len().into());
        }
        Some(rf_core::AggState::Inventory {
            escrow: Some(e), ..
        }) => {
            extra.insert(
                "rights".into(),
                serde_json::to_value(e.rights_by_region()).unwrap_or_default(),
            );
        }
        Some(
            s @ rf_core::AggState::Schedule {
                spec: Some(spec), ..
            },
        ) => {
            let now = stats.clock.get().map_or(0, |c| c.now_ms());
            extra.insert("schedule".into(), schedule_json(s, spec, now));
        }
        _ => {}
    }
    let json = |s: Option<rf_core::AggState>| {
        s.map(|s| serde_json::from_str::<serde_json::Value>(&s.to_json()).unwrap_or_default())
    };
    let mut out = serde_json::json!({
        "key": key,
        "view": json(view),
        "reconciled": json(rec),
    });
    if let Some(o) = out.as_object_mut() {
        o.extend(extra);
    }
    Some(out)
}

/// A schedule's home, next occurrences (in its zone and in UTC) and last firing, for
/// `/state/{key}`.
fn schedule_json(
    s: &rf_core::AggState,
    spec: &rf_schemas::ScheduleSpec,
    now_ms: i64,
) -> serde_json::Value {
    let next = match rf_core::schedule::Schedule::parse(spec) {
        Ok(sched) => sched
            .upcoming(s.schedule_done_ms().max(now_ms), 5)
            .into_iter()
            .map(|o| {
                serde_json::json!({
                    "wall": o.wall,
                    "utc": rf_core::schedule::utc(o.at_ms),
                    "fold": o.fold,
                    "after_gap": o.after_gap,
                })
            })
            .collect(),
        Err(e) => vec![serde_json::json!({ "error": e })],
    };
    let last = match s {
        rf_core::AggState::Schedule { last, .. } => last.as_ref().map(|l| {
            serde_json::json!({
                "wall": l.wall,
                "utc": rf_core::schedule::utc(l.at_ms),
                "fold": l.fold,
                "region": l.region,
                "failover": l.failover,
            })
        }),
        _ => None,
    };
    serde_json::json!({
        "home": s.schedule_home(),
        "now": rf_core::schedule::utc(now_ms),
        "next": next,
        "last_fired": last,
    })
}

/// One `/feed` change: a reconciled record as read back, with its stable id.
pub fn feed_json(r: &Remote) -> serde_json::Value {
    let rec = &r.record;
    serde_json::json!({
        "id": format!("{}-{}", r.partition, r.offset),
        "key": rec.event.key,
        "event_id": rec.event.event_id,
        "region": rec.event.region,
        "hlc": rec.event.hlc.map(|h| serde_json::json!({"physical_ms": h.physical_ms, "logical": h.logical})),
        "outcome": rf_schemas::Outcome::SYMBOLS[rec.outcome.index() as usize],
        "reason": rec.reason,
        "state": serde_json::from_str::<serde_json::Value>(&rec.state_json).unwrap_or(serde_json::Value::Null),
    })
}

async fn state(State(s): State<SharedStats>, Path(key): Path<String>) -> Response {
    match state_json(&s, &key) {
        Some(v) => axum::Json(v).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no state for {key:?}")).into_response(),
    }
}

async fn feed(
    State(s): State<SharedStats>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let sub = s.feed.subscribe(&prefix, last.as_deref());
    Sse::new(changes(sub, prefix))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response()
}

fn changes(
    sub: Subscription,
    prefix: String,
) -> impl Stream<Item = std::result::Result<Event, Infallible>> {
    let first = sub.reset.then(|| {
        Event::default()
            .event("reset")
            .data("resume point lost: re-read /state")
    });
    let replay = sub.replay.into_iter();
    stream::unfold(
        (first, replay, sub.live, sub.after_seq, prefix),
        |(mut first, mut replay, mut live, after, prefix)| async move {
            if let Some(ev) = first.take() {
                return Some((Ok(ev), (None, replay, live, after, prefix)));
            }
            let to_event = |c: &Change| {
                Event::default()
                    .id(c.id.clone())
                    .event("change")
                    .data(c.data.clone())
            };
            if let Some(c) = replay.next() {
                return Some((Ok(to_event(&c)), (None, replay, live, after, prefix)));
            }
            loop {
                match live.recv().await {
                    Ok(c) if c.seq > after && c.key.starts_with(&prefix) => {
                        return Some((Ok(to_event(&c)), (None, replay, live, after, prefix)));
                    }
                    Ok(_) => continue,
                    // Too slow (or the feed is gone): drop this client; it may resume with
                    // Last-Event-ID.
                    Err(_) => return None,
                }
            }
        },
    )
}
