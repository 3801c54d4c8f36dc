//! The REST façade under `/bigdata/api/v1`: route parsing, handlers (decode → store →
//! encode), the one error→status mapping, authentication and the OpenAPI document.
//!
//! The api writes *desired* state only (products, "cluster X wanted", "cluster X should go
//! away"); the core learns of it from the store's commit notifications, and [`Backend`] only
//! tells how the core is doing. It never talks to Mesos and never imports the scheduler, so stateless api replicas in front of one framework process would be a
//! wiring change.

pub mod auth;
mod body;
mod bundle;
mod clusters;
pub mod console;
mod dispatch;
mod dry_run;
pub mod error;
pub mod events;
pub mod exec;
pub mod guard;
pub mod launch_query;
pub mod openapi;
mod ops;
pub mod paging;
mod products;
pub mod quota;
pub mod retention;
pub mod routes;
pub mod views;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::domain::placement::{Demand, Placement};
use crate::domain::template::Renderer;
use crate::metrics::Metrics;
use crate::registry::{self, Store, StoreError};

pub use auth::{Auth, Principal, Role};
pub use clusters::PartsCache;
pub use error::ApiError;
pub use guard::HostPolicy;

/// Default largest request body, in bytes.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// Default time a client has to send a request's headers, and then its body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Default cap of open connections per client address.
pub const DEFAULT_MAX_CONNS_PER_CLIENT: usize = 64;

/// What keeps one client from exhausting the server, and what an anonymous server answers.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a client may take to send a request's headers, and then (separately) its
    /// body: 408 and the connection closed after it.
    pub body_timeout: Duration,
    /// Open connections per client IP address; one more is answered 429 and closed
    /// (0 = no cap).
    pub max_conns_per_client: usize,
    /// The `Host` headers an anonymous server answers (unused with tokens).
    pub anonymous_hosts: HostPolicy,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_conns_per_client: DEFAULT_MAX_CONNS_PER_CLIENT,
            anonymous_hosts: HostPolicy::Loopback,
        }
    }
}

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What the api asks of the core (scheduler and orchestrator): how it is doing, where a dry
/// run's nodes would go, and running a command on a node. What it should do, the core reads from the store's commits.
pub trait Backend: Send + Sync + 'static {
    /// Whether the framework can do its job now (e.g. subscribed to Mesos).
    fn readiness(&self) -> Readiness;

    /// Where `demands` would go on the agents as the core last saw them. Holds nothing and
    /// changes nothing. A core without a scheduler has nothing to place with.
    fn plan(&self, demands: &[Demand]) -> Placement {
        let _ = demands;
        Placement::NoScheduler
    }

    /// Runs `argv` on the node at `target` through its NodeAgent within `timeout`, sending
    /// the output to `out` as it comes; how it ended. Dropping the future abandons the
    /// command. The default reaches no node.
    fn exec(
        &self,
        target: exec::ExecTarget,
        argv: Vec<String>,
        timeout: Duration,
        out: exec::ExecOutput,
    ) -> futures_util::future::BoxFuture<'static, exec::ExecEnd> {
        let _ = (target, argv, timeout, out);
        Box::pin(async { exec::ExecEnd::Failed("this server cannot reach nodes".into()) })
    }
}

/// What `/health` reports about the core.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// A short human-readable explanation, e.g. "subscribed" or "no Mesos master configured".
    pub detail: String,
    /// Scheduler facts, when there is a scheduler.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesos: Option<serde_json::Value>,
}

/// A backend with no scheduler behind it: launches are stored and stay `registered`.
pub struct StoreOnly;

impl Backend for StoreOnly {
    fn readiness(&self) -> Readiness {
        Readiness {
            ready: true,
            detail: "no scheduler: clusters are recorded, not launched".into(),
            mesos: None,
        }
    }
}

/// Everything a handler needs.
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub backend: Arc<dyn Backend>,
    pub auth: Auth,
    pub metrics: Arc<Metrics>,
    pub max_body: usize,
    /// The spec-phase template renderer (building one registers every helper; do it once).
    pub renderer: Renderer,
    /// The default node image, offered to templates as `{{node_image}}`.
    pub node_image: String,
    /// `serve --volume-root`: the only host directories node volumes may mount (none: no
    /// host volumes at all).
    pub volume_roots: Vec<std::path::PathBuf>,
    pub limits: Limits,
    /// Encoded `GET /clusters/{id}` bodies, fed by the store's commits
    /// ([`views::Views::spawn`]).
    pub views: Arc<views::Views>,
    /// Live events for `GET /events` and per-cluster streams, fed by the store's
    /// announcements ([`events::Hub::spawn`]).
    pub events: Arc<events::Hub>,
    /// Each product's launch parts, parsed once per change of the catalog.
    pub launch_parts: PartsCache,
}

/// The answer to a connection over the per-client cap, written before it is closed.
fn too_many_connections() -> Vec<u8> {
    let body = br#"{"error": {"code": "too_many_connections", "message": "too many open connections from this address"}}"#;
    let mut out = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Serves the API on `listener` until `shutdown` is cancelled, then lets in-flight requests
/// finish (up to 30 s). Each client address may hold `state.limits.max_conns_per_client`
/// connections; headers and bodies must arrive within `state.limits.body_timeout`.
///
/// # Errors
/// None today; accept errors are logged and retried. The signature leaves room for fatal
/// listener errors.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limiter = guard::ConnLimiter::new(state.limits.max_conns_per_client);
    let read_timeout = state.limits.body_timeout;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let Some(slot) = limiter.admit(peer.ip()) else {
            // Best effort and never blocking: a fresh socket's send buffer is empty.
            let _ = stream.try_write(&too_many_connections());
            state.metrics.inc(
                "paas_http_connections_refused_total",
                "Connections closed at once: the client already had the most allowed.",
                &[],
            );
            tracing::debug!(%peer, "connection refused: per-client cap reached");
            continue;
        };
        let state = state.clone();
        let svc = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(read_timeout)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing"),
    }
    Ok(())
}

async fn handle(state: &Arc<AppState>, req: Request<Incoming>) -> Response<body::Body> {
    let method = req.method().clone();
    // Only the debug line below reads the path: no copy per request otherwise.
    let path = tracing::enabled!(tracing::Level::DEBUG).then(|| req.uri().path().to_owned());
    let (resp, op) = match dispatch::dispatch(state, req).await {
        Ok((resp, op)) => (resp, op),
        Err(e) => (e.into_response(), "error"),
    };
    let class = match resp.status().as_u16() {
        200..=299 => "2xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    };
    state.metrics.inc(
        "paas_http_requests_total",
        "HTTP requests by operation and status class.",
        &[("operation", op), ("class", class)],
    );
    if let Some(path) = path {
        tracing::debug!(%method, %path, status = resp.status().as_u16(), "request");
    }
    resp
}

/// [`registry::call`] with the API's error type: every handler's way into the store.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(registry::call(&state.store, f).await?)
}
