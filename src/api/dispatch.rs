//! The dispatcher: parse the route, make the one access check, run the endpoint's handler.
//!
//! Who may call what is decided by [`Endpoint::access`] alone; no handler checks a role.

use std::sync::Arc;

use http::Request;
use hyper::body::Incoming;

use super::auth::{Auth, Principal};
use super::body::Resp;
use super::error::ApiError;
use super::guard::{check_anonymous_request, check_not_form};
use super::routes::{Access, Endpoint, RouteError};
use super::{AppState, bundle, clusters, console, events, exec, ops, products};

/// Routes, authenticates and runs one request. Returns the response and the operation id
/// (for metrics). The state comes shared because an update renders the template inside the
/// store's compare-and-swap, on a blocking thread.
pub(super) async fn dispatch(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<(Resp, &'static str), ApiError> {
    // Before routing: an anonymous server is everyone's admin, so it answers only what
    // cannot come from a web page elsewhere (a rebound DNS name, a foreign origin).
    if let Auth::Anonymous = state.auth {
        check_anonymous_request(req.headers(), state.limits.anonymous_hosts)?;
    }
    check_not_form(req.method(), req.headers())?;
    let ep = Endpoint::parse(req.method(), req.uri().path()).map_err(|e| match e {
        RouteError::NotFound => ApiError::NotFound(format!(
            "no route for {} {}",
            req.method(),
            req.uri().path()
        )),
        RouteError::MethodNotAllowed(m) => ApiError::MethodNotAllowed(m),
        RouteError::BadName { segment, why } => {
            ApiError::bad_request("invalid_name", format!("invalid name {segment:?}: {why}"))
        }
    })?;
    let op = ep.operation_id();
    // The one access check: every handler below runs only if it passed.
    let who = authorize(state, ep.access(), &req)?;
    let resp = match (ep, who) {
        (Endpoint::Health, _) => ops::health(state, false, sees_details(state, &req)),
        (Endpoint::HealthReady, _) => ops::health(state, true, sees_details(state, &req)),
        (Endpoint::Metrics, _) => ops::metrics(state).await,
        (Endpoint::OpenApi, _) => ops::openapi(),
        (Endpoint::Console, _) => Ok(console::page()),
        (Endpoint::ConsoleAsset { asset }, _) => Ok(console::asset(asset)),
        (Endpoint::ListProducts, _) => products::list(state).await,
        (Endpoint::CreateProduct, _) => products::create(state, req).await,
        (Endpoint::ListVersions { name }, _) => products::versions(state, name).await,
        (Endpoint::GetProduct { name, version }, _) => products::get(state, name, version).await,
        (Endpoint::DeleteProduct { name, version }, _) => {
            products::delete(state, name, version).await
        }
        (
            Endpoint::PutPart {
                name,
                version,
                part,
            },
            _,
        ) => products::put_part(state, name, version, part, req).await,
        (
            Endpoint::GetPart {
                name,
                version,
                part,
            },
            _,
        ) => products::get_part(state, name, version, part).await,
        (Endpoint::PutBundle { name, version }, _) => bundle::push(state, name, version, req).await,
        (Endpoint::GetBundle { name, version }, _) => bundle::pull(state, name, version).await,
        (Endpoint::Launch { name, version }, Some(who)) => {
            clusters::launch(state, &who, name, version, req).await
        }
        (Endpoint::ListClusters, Some(who)) => clusters::list(state, &who, req.uri().query()).await,
        (Endpoint::GetCluster { id }, Some(who)) => clusters::get(state, &who, id).await,
        (Endpoint::UpdateCluster { id }, Some(who)) => clusters::update(state, &who, id, req).await,
        (Endpoint::DeleteCluster { id }, Some(who)) => clusters::delete(state, &who, id).await,
        (Endpoint::ClusterNodes { id }, Some(who)) => clusters::nodes(state, &who, id).await,
        (Endpoint::ClusterServices { id }, Some(who)) => clusters::services(state, &who, id).await,
        (Endpoint::ClusterEvents { id }, Some(who)) => {
            clusters::events(state, &who, id, req.headers()).await
        }
        (Endpoint::Events, Some(who)) => {
            let scope = if who.is_admin() {
                events::Scope::All
            } else {
                events::Scope::Owner(who.user)
            };
            events::stream_all(&state.events, scope, req.headers())
        }
        (Endpoint::ClusterLogs { id }, Some(who)) => clusters::logs(state, &who, id).await,
        (Endpoint::ReplaceNode { id, node }, Some(who)) => {
            clusters::node_action(state, &who, id, node, clusters::NodeAction::Replace).await
        }
        (Endpoint::RestartNode { id, node }, Some(who)) => {
            clusters::node_action(state, &who, id, node, clusters::NodeAction::Restart).await
        }
        (Endpoint::ExecNode { id, node }, Some(who)) => {
            exec::exec(state, &who, id, node, req).await
        }
        // Cluster endpoints answer per owner. Were one ever declared public, it fails
        // closed: no caller, no cluster.
        (_, None) => Err(ApiError::Unauthorized(
            "missing Authorization: Bearer <token>".into(),
        )),
    }?;
    Ok((resp, op))
}

/// Checks `access` for this request. Returns the caller, or `None` for a public endpoint
/// (which never reads a token, so a bad one cannot fail a health check).
///
/// # Errors
/// 401 without a valid token, 403 for a user on an admin endpoint.
fn authorize(
    state: &AppState,
    access: Access,
    req: &Request<Incoming>,
) -> Result<Option<Principal>, ApiError> {
    let who = match access {
        Access::Public => return Ok(None),
        Access::User => state.auth.authenticate(req.headers())?,
        Access::Admin => {
            let who = state.auth.authenticate(req.headers())?;
            who.require_admin()?;
            who
        }
    };
    Ok(Some(who))
}

/// Whether this request may see the framework's details on `/health` (framework id, master,
/// last error): an admin token, or any request to an anonymous server (where everyone is
/// the admin). A missing or wrong token is not an error here: it just sees up or down.
fn sees_details(state: &AppState, req: &Request<Incoming>) -> bool {
    state
        .auth
        .authenticate(req.headers())
        .is_ok_and(|who| who.is_admin())
}
