//! The HTTP base of both binaries (axum, on a thread and runtime of its own so it never
//! shares a thread with the pipeline): `/health` (alive), `/ready` (503 until the service
//! says so), `/metrics` (Prometheus text), plus each service's own routes. It stops when
//! the returned [`HttpServer`] is stopped or dropped, or when the service's `Shutdown`
//! triggers; streams still open then get a second to finish.

use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What every service serves.
#[derive(Clone)]
pub struct Base {
    pub registry: prometheus::Registry,
    /// Called before each scrape (to refresh gauges computed on demand).
    pub before_scrape: Arc<dyn Fn() + Send + Sync>,
    pub ready: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// A running server. Dropping it stops it.
pub struct HttpServer {
    pub addr: SocketAddr,
    stop: Shutdown,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Stop accepting, give open streams a second, and join the server thread.
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.trigger();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Bind `addr` (port 0 picks one) and serve `base` plus `routes` until stopped or until
/// `shutdown` triggers. `routes` is the service's own router (its state already applied).
pub fn serve(addr: &str, base: Base, routes: Router, shutdown: &Shutdown) -> Result<HttpServer> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| Error::Config {
        field: "http_addr",
        reason: format!("cannot listen on {addr}: {e}"),
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::Io(e.to_string()))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Io(e.to_string()))?;
    let stop = Shutdown::default();
    let (s1, s2) = (stop.clone(), shutdown.clone());
    let app = router(base).merge(routes);
    let thread = std::thread::Builder::new()
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
                let (s1b, s2b) = (s1.clone(), s2.clone());
                let stopped = async move {
                    tokio::select! { _ = s1.wait() => {}, _ = s2.wait() => {} }
                };
                // Graceful shutdown waits for open responses; an SSE stream never ends by
                // itself, so past the grace the runtime is dropped with it.
                let grace = async move {
                    tokio::select! { _ = s1b.wait() => {}, _ = s2b.wait() => {} }
                    tokio::time::sleep(STREAM_GRACE).await;
                };
                let server = axum::serve(listener, app).with_graceful_shutdown(stopped);
                tokio::select! {
                    r = server => if let Err(e) = r {
                        tracing::error!(error = %e, "http server stopped");
                    },
                    _ = grace => tracing::debug!("http: streams still open after the grace closed"),
                }
            });
        })
        .map_err(|e| Error::Io(e.to_string()))?;
    tracing::info!(%bound, "http listening");
    Ok(HttpServer {
        addr: bound,
        stop,
        thread: Some(thread),
    })
}

/// `serve`, unless `addr` is empty (HTTP turned off in the configuration).
pub fn serve_unless_empty(
    addr: &str,
    base: Base,
    routes: Router,
    shutdown: &Shutdown,
) -> Result<Option<HttpServer>> {
    if addr.is_empty() {
        return Ok(None);
    }
    serve(addr, base, routes, shutdown).map(Some)
}

fn router(base: Base) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(base)
}

async fn ready(State(b): State<Base>) -> Response {
    if (b.ready)() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics(State(b): State<Base>) -> Response {
    (b.before_scrape)();
    let mut buf = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&b.registry.gather(), &mut buf) {
        Ok(()) => ([("content-type", "text/plain; version=0.0.4")], buf).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// How long open streams (SSE, WebSocket) may run on after a stop.
pub const STREAM_GRACE: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    #[test]
    fn serves_base_and_service_routes_and_stops_with_its_service() {
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r2 = ready.clone();
        let base = Base {
            registry: prometheus::Registry::new(),
            before_scrape: Arc::new(|| {}),
            ready: Arc::new(move || r2.load(std::sync::atomic::Ordering::SeqCst)),
        };
        let shutdown = Shutdown::default();
        let routes = Router::new().route("/extra", get_route());
        let server = serve("127.0.0.1:0", base, routes, &shutdown).unwrap();
        let addr = server.addr;
        assert!(http_get(addr, "/health").unwrap().contains("200 OK"));
        assert!(http_get(addr, "/ready").unwrap().contains("503"));
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(http_get(addr, "/ready").unwrap().contains("200 OK"));
        assert!(http_get(addr, "/extra").unwrap().contains("extra"));
        shutdown.trigger();
        let deadline = Instant::now() + Duration::from_secs(5);
        while http_get(addr, "/health").is_ok() {
            assert!(
                Instant::now() < deadline,
                "still serving after its shutdown"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server.stop();
    }

    fn get_route() -> axum::routing::MethodRouter {
        axum::routing::get(|| async { "extra" })
    }
}
