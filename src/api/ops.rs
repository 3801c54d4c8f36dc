//! Operational endpoints, all public: liveness and readiness, Prometheus metrics, and the
//! OpenAPI document. `/health` tells only up or down unless the caller is an admin: the
//! framework id and the master URL are what it takes to fail the framework over.

use http::StatusCode;
use serde_json::json;

use super::body::{Resp, json_response, raw_response};
use super::error::ApiError;
use super::{AppState, blocking};
use crate::domain::{ClusterStatus, NodeStatus};

/// `/health` (always 200 while serving) and `/health/ready` (`strict`: 503 unless ready).
/// `status` is `up` when the framework can do its job (ready), else `down`; `details` adds
/// the readiness explanation, the scheduler's facts and the version.
pub(super) fn health(state: &AppState, strict: bool, details: bool) -> Result<Resp, ApiError> {
    let r = state.backend.readiness();
    let status = if strict && !r.ready {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let up = if r.ready { "up" } else { "down" };
    let body = if details {
        json!({"status": up, "ready": r.ready, "detail": r.detail, "mesos": r.mesos, "version": env!("CARGO_PKG_VERSION")})
    } else {
        json!({"status": up})
    };
    Ok(json_response(status, &body))
}

/// `GET /metrics`: the counters kept in memory, plus clusters and nodes by status from the
/// store's live counts ([`crate::registry::Store::counts`]): no cluster is read.
pub(super) async fn metrics(state: &AppState) -> Result<Resp, ApiError> {
    let (counts, products) = blocking(state, |s| Ok((s.counts()?, s.products()?.len()))).await?;
    let m = &state.metrics;
    m.clear("paas_clusters");
    for st in ClusterStatus::ALL {
        let n = counts.clusters.get(&st).copied().unwrap_or(0);
        m.set(
            "paas_clusters",
            "Clusters by status.",
            &[("status", st.as_str())],
            n as f64,
        );
    }
    // Only the node statuses that occur: a gauge at 0 for every Mesos task state would be
    // noise, and a status that drops to none disappears with the clear.
    m.clear("paas_nodes");
    for (st, n) in &counts.nodes {
        m.set(
            "paas_nodes",
            "Nodes by status.",
            &[("status", &node_status_name(*st))],
            *n as f64,
        );
    }
    m.set(
        "paas_products",
        "Registered product versions.",
        &[],
        products as f64,
    );
    Ok(raw_response(
        m.render().into_bytes(),
        "text/plain; version=0.0.4; charset=utf-8",
    ))
}

/// A node status as the API spells it (its serde name, e.g. `gone_by_operator`).
fn node_status_name(st: NodeStatus) -> String {
    match serde_json::to_value(st) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{st:?}").to_lowercase(),
    }
}

/// `GET /openapi.json`.
pub(super) fn openapi() -> Result<Resp, ApiError> {
    Ok(json_response(StatusCode::OK, &super::openapi::document()))
}
