//! The HTTP side of both binaries (axum, on its own thread and runtime so it never shares
//! a thread with the pipeline): `/health` (alive), `/ready` (503 until restored and in the
//! group), `/metrics` (Prometheus text), `/state/{key}` (JSON) and `/feed` (Server-Sent
//! Events of reconciled changes, `?prefix=` filter, resumable with `Last-Event-ID`).

use crate::error::{Error, Result};
use crate::feed::Feed;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

type StateFn = dyn Fn(&str) -> Option<serde_json::Value> + Send + Sync;

/// What the endpoints serve.
#[derive(Clone)]
pub struct Endpoints {
    pub registry: prometheus::Registry,
    /// Called before each scrape (to copy counters into the registry).
    pub before_scrape: Arc<dyn Fn() + Send + Sync>,
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// `/state/{key}`; `None` when the binary has no per-key state to show.
    pub state: Option<Arc<StateFn>>,
    pub feed: Option<Feed>,
}

/// Bind `addr` (port 0 picks one) and serve on a thread of its own. Returns the address.
pub fn spawn(addr: &str, endpoints: Endpoints) -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| Error::Config {
        field: "http_addr",
        reason: format!("cannot listen on {addr}: {e}"),
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::Store(e.to_string()))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Store(e.to_string()))?;
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("http runtime");
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "http listener");
                        return;
                    }
                };
                if let Err(e) = axum::serve(listener, router(endpoints)).await {
                    tracing::error!(error = %e, "http server stopped");
                }
            });
        })
        .map_err(|e| Error::Store(e.to_string()))?;
    tracing::info!(%bound, "http: /health /ready /metrics /state/{{key}} /feed");
    Ok(bound)
}

pub fn router(endpoints: Endpoints) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/state/{key}", get(state))
        .route("/feed", get(feed))
        .with_state(endpoints)
}

async fn ready(State(e): State<Endpoints>) -> Response {
    if (e.ready)() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics(State(e): State<Endpoints>) -> Response {
    (e.before_scrape)();
    let mut buf = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&e.registry.gather(), &mut buf) {
        Ok(()) => ([("content-type", "text/plain; version=0.0.4")], buf).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

async fn state(State(e): State<Endpoints>, Path(key): Path<String>) -> Response {
    match e.state.as_ref().and_then(|f| f(&key)) {
        Some(v) => axum::Json(v).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no state for {key:?}")).into_response(),
    }
}

async fn feed(
    State(e): State<Endpoints>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let Some(feed) = e.feed else {
        return (StatusCode::NOT_FOUND, "no feed here").into_response();
    };
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let sub = feed.subscribe(&prefix, last.as_deref());
    Sse::new(changes(sub, prefix))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response()
}

fn changes(
    sub: crate::feed::Subscription,
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
            let to_event = |c: &crate::feed::Change| {
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
