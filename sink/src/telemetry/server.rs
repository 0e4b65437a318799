//! The HTTP endpoint of `sink run --metrics-addr`: `GET /metrics` (Prometheus text format),
//! `GET /health` (200 while the process works) and `GET /ready` (200 only when
//! [`Readiness::check`] says so; otherwise 503 with the reasons).
//!
//! The port is bound at start-up, before any service is contacted, so that a taken or
//! invalid address stops the sink at once ([`MetricsServer::bind`]). Serving starts before
//! the pipeline connects, so `/health` answers during the start-up checks (also while they
//! wait for a service that does not answer) and while an exclusive sink stands by; `/ready`
//! says "starting" until `sink run` hands over its readiness ([`Serving::watch`]), at once,
//! before the checks: from then on it says what keeps the sink from being ready (Redis
//! unreachable, not caught up yet). The server stops with the sink.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{watermark_age, READY};
use crate::readiness::Readiness;

/// How often the recorder drops old histogram samples between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The Prometheus text exposition format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the endpoint cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding the address failed (taken, not local, not resolvable).
    #[error("cannot listen for metrics on {addr}")]
    Bind {
        /// The address as given.
        addr: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The bound socket could not be handed to the async runtime.
    #[error("cannot serve metrics on {addr}")]
    Register {
        /// The bound address.
        addr: SocketAddr,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// A bound, not yet serving endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    handle: PrometheusHandle,
}

impl MetricsServer {
    /// Binds `addr` (`HOST:PORT`; port 0 picks a free one) to serve what `handle` renders.
    /// Blocking and synchronous, so that it runs before the runtime starts.
    pub fn bind(addr: &str, handle: PrometheusHandle) -> Result<MetricsServer, ServeError> {
        let bind_error = |source| ServeError::Bind {
            addr: addr.to_owned(),
            source,
        };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(MetricsServer {
            listener,
            addr,
            handle,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving on the current runtime until `shutdown` is cancelled (or
    /// [`Serving::stop`]).
    pub fn spawn(self, shutdown: CancellationToken) -> Result<Serving, ServeError> {
        let MetricsServer {
            listener,
            addr,
            handle,
        } = self;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|source| ServeError::Register { addr, source })?;
        let readiness = Arc::new(OnceLock::new());
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/health", get(health))
            .route("/ready", get(ready))
            .with_state(Endpoint {
                handle: handle.clone(),
                readiness: Arc::clone(&readiness),
            });
        let stop = shutdown.child_token();
        let serving = stop.clone();
        let task = tokio::spawn(async move {
            info!(%addr, "Serving /metrics, /health and /ready.");
            let upkeep = tokio::spawn(upkeep(handle, serving.clone()));
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(serving.cancelled_owned())
                .await;
            if let Err(e) = served {
                warn!(%addr, error = %e, "The metrics endpoint stopped.");
            }
            upkeep.abort();
        });
        Ok(Serving {
            readiness,
            stop,
            task,
        })
    }
}

/// A serving endpoint.
#[derive(Debug)]
pub struct Serving {
    readiness: Arc<OnceLock<Readiness>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Serving {
    /// Has `/ready` report `readiness` from now on (the first call wins: one pipeline per
    /// process).
    pub fn watch(&self, readiness: &Readiness) {
        let _ = self.readiness.set(readiness.clone());
    }

    /// Stops serving and waits for the open responses to finish.
    pub async fn stop(self) {
        self.stop.cancel();
        if self.task.await.is_err() {
            warn!("The metrics endpoint panicked.");
        }
    }
}

/// What the handlers share.
#[derive(Debug, Clone)]
struct Endpoint {
    handle: PrometheusHandle,
    readiness: Arc<OnceLock<Readiness>>,
}

async fn metrics(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    watermark_age::refresh();
    let ready = endpoint.readiness.get().is_some_and(|r| r.check().is_ok());
    metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        endpoint.handle.render(),
    )
}

async fn health() -> &'static str {
    "ok\n"
}

async fn ready(State(endpoint): State<Endpoint>) -> (StatusCode, String) {
    match endpoint.readiness.get().map(Readiness::check) {
        Some(Ok(())) => (StatusCode::OK, "ready\n".to_owned()),
        Some(Err(not_ready)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{not_ready}\n")),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: starting\n".to_owned(),
        ),
    }
}

/// Runs the recorder's upkeep until `stop`: drains the histograms' recorded samples into
/// their buckets every few seconds, so that they do not pile up between scrapes.
pub async fn upkeep(handle: PrometheusHandle, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => handle.run_upkeep(),
        }
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;
    use crate::readiness::PauseReason;

    /// `GET path` on `addr`: status and body.
    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{addr}{path}"))
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    #[tokio::test]
    async fn endpoints_answer_and_ready_follows_the_readiness() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("sink_test_total").increment(2);
        });
        let server = MetricsServer::bind("127.0.0.1:0", handle).expect("bind");
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let serving = server.spawn(shutdown.clone()).expect("serve");

        assert_eq!(get(addr, "/health").await, (200, "ok\n".to_owned()));
        assert_eq!(
            get(addr, "/ready").await,
            (503, "not ready: starting\n".to_owned())
        );
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("sink_test_total 2"), "{body}");

        let readiness = Readiness::new();
        serving.watch(&readiness);
        assert_eq!(
            get(addr, "/ready").await,
            (503, "not ready: not caught up yet\n".to_owned())
        );
        readiness.mark_caught_up();
        assert_eq!(get(addr, "/ready").await, (200, "ready\n".to_owned()));
        readiness.pause(PauseReason::RedisMemory);
        assert_eq!(
            get(addr, "/ready").await,
            (503, "not ready: paused (redis_memory)\n".to_owned())
        );
        assert_eq!(get(addr, "/nothing").await.0, 404);

        shutdown.cancel();
        serving.stop().await;
        assert!(
            reqwest::get(format!("http://{addr}/health")).await.is_err(),
            "stopped with the sink"
        );
    }

    #[test]
    fn a_taken_address_is_refused() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr").to_string();
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let err = MetricsServer::bind(&addr, handle).expect_err("port taken");
        assert_eq!(
            err.to_string(),
            format!("cannot listen for metrics on {addr}")
        );
    }
}
