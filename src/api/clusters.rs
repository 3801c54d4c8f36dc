//! Cluster handlers: launch, list, read, update and destroy clusters, each limited to its
//! owner (admins see every cluster; another user's cluster is a 404).
//!
//! The api only records the *desired* state; the scheduler and the orchestrator see the
//! commit and move the cluster along.

use std::sync::Arc;

use bytes::Bytes;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::auth::Principal;
use super::body::{
    Resp, check_json_content_type, json_bytes_response, json_response, json_response_sized, object,
    parse_json, pretty_json, raw_response, read_body, with_link_next, with_location,
};
use super::dry_run;
use super::error::ApiError;
use super::launch_query::LaunchQuery;
use super::paging::ListQuery;
use super::products::{
    get_product, load_options, load_template, options_of, product_of, template_of,
};
use super::quota::{QuotaExceeded, Usage};
use super::routes::BASE;
use super::views::Lookup;
use super::{AppState, blocking};
use crate::domain::cluster::{Cluster, ConfigureProgress, Desired, HistoryEntry, Node, Service};
use crate::domain::heal::{Replacement, RestartPolicy};
use crate::domain::launch_request::{
    Caller, Fresh, LaunchError, LaunchRequest, Policy, RenderError,
};
use crate::domain::lifecycle::ClusterEvent;
use crate::domain::options::OptionsError;
use crate::domain::update::{ReplaceError, Retiring, UpdateError, UpdateRequest, Updated};
use crate::domain::{ClusterId, ClusterStatus, Name, Timestamp};
use crate::registry::{Pending, Store, StoreError, Update};

fn cluster_url(id: ClusterId) -> String {
    format!("{BASE}/clusters/{id}")
}

/// The served form of a cluster: the record without its secret, plus its URL. Fields in the
/// record's order, so the JSON is the record's own less `secret`.
#[derive(Debug, Serialize)]
pub struct ClusterView<'a> {
    id: ClusterId,
    owner: &'a str,
    product: &'a Name,
    version: &'a Name,
    options: &'a Map<String, Value>,
    status: ClusterStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    desired: Desired,
    created_at: &'a Timestamp,
    updated_at: &'a Timestamp,
    nodes: &'a [Node],
    services: &'a [Service],
    history: &'a [HistoryEntry],
    #[serde(skip_serializing_if = "Map::is_empty")]
    extra: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    configure: Option<&'a ConfigureProgress>,
    restart: &'a RestartPolicy,
    #[serde(skip_serializing_if = "<[Replacement]>::is_empty")]
    replacements: &'a [Replacement],
    generation: u64,
    #[serde(skip_serializing_if = "<[Retiring]>::is_empty")]
    retiring: &'a [Retiring],
    #[serde(skip_serializing_if = "<[Name]>::is_empty")]
    restarts: &'a [Name],
    /// The nodes a rolling update still has to replace, in order.
    #[serde(skip_serializing_if = "NodeNames::is_empty")]
    rolling: NodeNames<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    placement_timeout_s: Option<u64>,
    url: ClusterUrl,
}

/// Serialises as the names of some nodes (no list of them is built).
#[derive(Debug)]
struct NodeNames<'a>(&'a [Node]);

impl NodeNames<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for NodeNames<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|n| n.name.as_str()))
    }
}

/// Serialises as a cluster's URL, written straight into the output.
#[derive(Debug)]
struct ClusterUrl(ClusterId);

impl Serialize for ClusterUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{BASE}/clusters/{}", self.0))
    }
}

impl<'a> From<&'a Cluster> for ClusterView<'a> {
    fn from(c: &'a Cluster) -> Self {
        // Every field is named, so a field added to `Cluster` does not compile here until
        // someone decides whether it may be served.
        let Cluster {
            id,
            owner,
            product,
            version,
            options,
            status,
            reason,
            desired,
            created_at,
            updated_at,
            nodes,
            services,
            history,
            extra,
            secret: _,
            secrets: _,
            configure,
            restart,
            replacements,
            generation,
            retiring,
            restarts,
            rolling,
            placement_timeout_s,
        } = c;
        Self {
            id: *id,
            owner,
            product,
            version,
            options,
            status: *status,
            reason: reason.as_deref(),
            desired: *desired,
            created_at,
            updated_at,
            nodes,
            services,
            history,
            extra,
            configure: configure.as_ref(),
            restart,
            replacements,
            generation: *generation,
            retiring,
            restarts,
            rolling: NodeNames(rolling),
            placement_timeout_s: *placement_timeout_s,
            url: ClusterUrl(*id),
        }
    }
}

/// `POST /products/{name}/{version}`: records a cluster of the product;
/// 202 with its URL. With `?dry_run=true`, 200 with where it would go, recording nothing
/// ([`dry_run`]); `?placement_timeout_s=` gives it its own placement deadline.
///
/// After the body is read, [`record_launch`] reads the product's parts (cached), renders the
/// template (compiled once per template text, see [`crate::domain::template`]) and commits
/// the cluster; then the handler awaits the flush that makes it durable, shared with the
/// concurrent launches, and answers. No blocking thread takes part.
pub(super) async fn launch(
    state: &Arc<AppState>,
    who: &Principal,
    name: Name,
    version: Name,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    check_json_content_type(&req)?;
    let query = LaunchQuery::parse(req.uri().query())
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    let body = read_body(state, req).await?;
    // An empty body means "all defaults".
    let user_opts = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        object(parse_json(&body)?, "the launch options")?
    };
    if query.dry_run {
        let (n, v) = (name.clone(), version.clone());
        let cached = Arc::clone(state);
        let parts = blocking(state, move |s| Ok(cached.launch_parts.get(s, &n, &v))).await??;
        let request = parts.request(state, who, &user_opts);
        return dry_run::answer(state, who, &request).await;
    }
    // On this thread: the work is CPU (the parts are cached, sled's writes go to memory),
    // and only the flush waits, asynchronously, so no thread is parked per launch.
    let (id, nodes, pending) = record_launch(
        state.store.as_ref(),
        state,
        who,
        &name,
        &version,
        &user_opts,
        query.placement_timeout_s,
    )?;
    pending.on_disk().await?;
    tracing::info!(cluster_id = %id, owner = %who.user, nodes, "cluster registered");
    let url = cluster_url(id);
    Ok(with_location(
        json_response(
            StatusCode::ACCEPTED,
            &json!({"id": id, "status": ClusterStatus::Registered, "url": url}),
        ),
        &url,
    ))
}

/// Products kept parsed at most (an operator registers a handful; past this, launches of
/// the others read their parts each time until the catalog changes).
const MAX_CACHED_PARTS: usize = 256;

/// The launch parts of the products launched lately, parsed once per catalog generation
/// ([`Store::catalog_generation`]): a launch reads and parses a product's record, template
/// and options document again only after a product changed.
#[derive(Default)]
pub struct PartsCache {
    inner: std::sync::Mutex<CachedParts>,
}

#[derive(Default)]
struct CachedParts {
    /// The catalog generation every entry was read at (or after).
    generation: u64,
    parts: std::collections::HashMap<(Name, Name), Arc<LaunchParts>>,
}

impl PartsCache {
    /// The parts of `name`/`version` as [`LaunchParts::read`] reads them, from the cache if
    /// no product changed since they were read. Errors are not kept.
    fn get(
        &self,
        s: &dyn Store,
        name: &Name,
        version: &Name,
    ) -> Result<Arc<LaunchParts>, ApiError> {
        let lock = || {
            self.inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        // Read before the parts: a change after this makes the entry stale, never wrong.
        let generation = s.catalog_generation();
        let key = (name.clone(), version.clone());
        {
            let g = lock();
            if g.generation == generation
                && let Some(p) = g.parts.get(&key)
            {
                return Ok(Arc::clone(p));
            }
        }
        let parts = Arc::new(LaunchParts::read(s, name, version)?);
        let mut g = lock();
        if generation > g.generation {
            g.parts.clear();
            g.generation = generation;
        }
        // Read at an older generation than the cache's: used once, not kept.
        if generation == g.generation && g.parts.len() < MAX_CACHED_PARTS {
            g.parts.insert(key, Arc::clone(&parts));
        }
        Ok(parts)
    }
}

/// What a launch of a product is made from, read from the store.
struct LaunchParts {
    product: crate::domain::Product,
    template: String,
    options: crate::domain::options::OptionsDoc,
}

impl LaunchParts {
    /// The product (404 without it), its template (409 without one) and its options
    /// document (the default one without one).
    fn read(s: &dyn Store, name: &Name, version: &Name) -> Result<Self, ApiError> {
        Ok(Self {
            product: product_of(s, name, version)?,
            template: template_of(s, name, version)?,
            options: options_of(s, name, version)?,
        })
    }

    /// The launch of these parts that `who` asks for with `user_options`.
    fn request<'a>(
        &'a self,
        state: &'a AppState,
        who: &'a Principal,
        user_options: &'a Map<String, Value>,
    ) -> LaunchRequest<'a> {
        LaunchRequest {
            product: &self.product,
            template: &self.template,
            options: &self.options,
            user_options,
            owner: &who.user,
            node_image: &state.node_image,
            policy: policy(state, who),
        }
    }
}

/// A launch: reads the product's parts, makes the cluster and commits it (within the
/// owner's quota, checked in the store's critical section of creates). The new cluster's
/// id, its node count, and its write on the way to disk.
fn record_launch(
    s: &dyn Store,
    state: &AppState,
    who: &Principal,
    name: &Name,
    version: &Name,
    user_opts: &Map<String, Value>,
    placement_timeout_s: Option<u64>,
) -> Result<(ClusterId, usize, Pending), ApiError> {
    let parts = state.launch_parts.get(s, name, version)?;
    let fresh = Fresh {
        id: ClusterId::generate(),
        secret: new_secret(),
        make_secret: new_secret,
        now: Timestamp::now(),
    };
    let mut cluster = parts
        .request(state, who, user_opts)
        .cluster(&state.renderer, fresh)
        .map_err(launch_error)?;
    cluster.placement_timeout_s = placement_timeout_s;
    let (id, nodes) = (cluster.id, cluster.nodes.len());
    let Some(quota) = state.auth.quota(&who.user).copied() else {
        return Ok((id, nodes, s.create_cluster_pending(cluster, None)?));
    };
    // Checked in the store's critical section of creates, against every cluster as it is
    // then: concurrent launches cannot both fit into one free slot.
    let asks = Usage::of(&cluster);
    let over = std::cell::RefCell::new(None);
    let guard = |has| {
        quota.check(&who.user, has, asks).map_err(|e| {
            let message = e.to_string();
            *over.borrow_mut() = Some(e);
            message
        })
    };
    let stored = s.create_cluster_pending(cluster, Some(&guard));
    match (stored, over.into_inner()) {
        (Err(StoreError::Rejected(_)), Some(e)) => Err(quota_exceeded(e.to_string())),
        (stored, _) => Ok((id, nodes, stored?)),
    }
}

/// 403 `quota_exceeded`, naming the limit.
pub(super) fn quota_exceeded(message: String) -> ApiError {
    ApiError::Refused {
        code: "quota_exceeded",
        message,
    }
}

/// A secret: 32 bytes of the OS random source (one `getrandom`) as 64 lowercase hex digits,
/// for a NodeAgent and for a template's declared secrets (a MUNGE key wants at least 32
/// bytes). Should the OS source fail, the thread's generator (a CSPRNG the OS seeded) fills
/// them instead.
fn new_secret() -> String {
    use rand::{Rng, TryRng};
    let mut bytes = [0u8; 32];
    if rand::rngs::SysRng.try_fill_bytes(&mut bytes).is_err() {
        rand::rng().fill_bytes(&mut bytes);
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// What `who` may ask of a launch or an update on this server.
fn policy<'a>(state: &'a AppState, who: &Principal) -> Policy<'a> {
    Policy {
        caller: if who.is_admin() {
            Caller::Admin
        } else {
            Caller::User
        },
        volume_roots: &state.volume_roots,
    }
}

/// Bad options are the request's fault (400, every bad key listed); a template that fails
/// with valid options cannot be acted on (422).
pub(super) fn launch_error(e: LaunchError) -> ApiError {
    match e {
        LaunchError::Options(e) => options_error(&e),
        LaunchError::Render(e) => render_error(e),
        LaunchError::AdminOnly(keys) => admin_only_error(&keys),
        LaunchError::Volume(e) => ApiError::Forbidden(e.to_string()),
    }
}

/// 403 naming the `advanced` options a user tried to set.
fn admin_only_error(keys: &[String]) -> ApiError {
    ApiError::Forbidden(format!(
        "only an admin may set the advanced options: {}",
        keys.join(", ")
    ))
}

/// 400 `invalid_options`, the same for a launch and an update.
fn options_error(e: &OptionsError) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_options",
        message: e.to_string(),
        details: Some(serde_json::to_value(e).unwrap_or_default()),
    }
}

/// 422 `template_failed`, the same for a launch and an update.
fn render_error(e: RenderError) -> ApiError {
    let message = match e {
        RenderError::Template(e) => {
            format!("the template cannot be rendered with these options: {e}")
        }
        RenderError::Spec(e) => format!("the template rendered an invalid cluster: {e}"),
    };
    ApiError::Unprocessable {
        code: "template_failed",
        message,
        details: None,
    }
}

/// The cluster if `who` may see it. Another user's cluster is a 404, not a 403: its
/// existence is not theirs to know.
pub(super) async fn own_cluster(
    state: &AppState,
    who: &Principal,
    id: ClusterId,
) -> Result<Cluster, ApiError> {
    let c = blocking(state, move |s| s.cluster(id)).await?;
    match c {
        Some(c) if who.is_admin() || c.owner == who.user => Ok(c),
        _ => Err(cluster_not_found(id)),
    }
}

/// The answer for a cluster that does not exist or is not the caller's (the same, so a
/// user cannot probe for others' ids).
fn cluster_not_found(id: ClusterId) -> ApiError {
    ApiError::NotFound(format!("cluster {id} not found"))
}

/// One page of `GET /clusters`, as served.
#[derive(Serialize)]
struct ClusterPage<'a> {
    clusters: Vec<ClusterView<'a>>,
    /// The cursor of the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<&'a str>,
}

/// `GET /clusters`: one page of the caller's clusters (every owner's for an admin), oldest
/// first, filtered by the query; `next` and a `Link: <…>; rel="next"` header when there is
/// more.
pub(super) async fn list(
    state: &AppState,
    who: &Principal,
    query: Option<&str>,
) -> Result<Resp, ApiError> {
    let mut q = ListQuery::parse(query)
        .map_err(|e| ApiError::bad_request("invalid_filter", e.to_string()))?;
    if !who.is_admin() {
        // A user sees only their own clusters, whatever the query asks.
        match q.filter.owner.as_deref() {
            Some(o) if o != who.user => {
                let empty = ClusterPage {
                    clusters: Vec::new(),
                    next: None,
                };
                return Ok(json_response(StatusCode::OK, &empty));
            }
            _ => q.filter.owner = Some(who.user.clone()),
        }
    }
    let (filter, limit, cursor) = (q.filter.clone(), q.limit, q.cursor.clone());
    let page = blocking(state, move |s| {
        s.clusters_page(&filter, limit, cursor.as_deref())
    })
    .await?;
    let body = ClusterPage {
        clusters: page
            .clusters
            .iter()
            .map(|c| ClusterView::from(&**c))
            .collect(),
        next: page.next.as_deref(),
    };
    let capacity = page.clusters.iter().map(|c| view_capacity(c)).sum();
    let resp = json_response_sized(StatusCode::OK, &body, capacity);
    Ok(match &page.next {
        None => resp,
        Some(next) => with_link_next(resp, &format!("{BASE}/clusters?{}", q.next_query(next))),
    })
}

/// `DELETE /clusters/{id}`: records the wish to destroy; 202.
pub(super) async fn delete(
    state: &AppState,
    who: &Principal,
    id: ClusterId,
) -> Result<Resp, ApiError> {
    own_cluster(state, who, id).await?;
    let c = blocking(state, move |s| {
        s.update_cluster(id, &mut |c| {
            if c.desired == Desired::Destroyed {
                return Ok(Update::Keep);
            }
            let now = Timestamp::now();
            c.desired = Desired::Destroyed;
            // invariant: every status but `destroyed` accepts a destroy request, and a
            // `destroyed` cluster already has desired = Destroyed (handled above).
            let _ = c.apply(
                ClusterEvent::DestroyRequested,
                Some("destroy requested".into()),
                now.clone(),
            );
            if !c.has_tasks() {
                // Nothing runs on Mesos: nothing to wait for.
                let _ = c.apply(ClusterEvent::AllTerminal, None, now);
            }
            Ok(Update::Write)
        })
    })
    .await?;
    tracing::info!(cluster_id = %id, status = %c.status, "cluster destroy requested");
    let url = cluster_url(id);
    Ok(with_location(
        json_response(
            StatusCode::ACCEPTED,
            &json!({"id": id, "status": c.status, "url": url}),
        ),
        &url,
    ))
}

/// What a user asks of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NodeAction {
    /// `POST …/nodes/{node}/replace`: the node's task is killed and the node runs again as
    /// a new attempt, possibly on another agent.
    Replace,
    /// `POST …/nodes/{node}/restart`: the node's services are restarted in place.
    Restart,
}

/// `POST /clusters/{id}/nodes/{node}/replace|restart`: 202 with the new generation.
pub(super) async fn node_action(
    state: &AppState,
    who: &Principal,
    id: ClusterId,
    node: Name,
    action: NodeAction,
) -> Result<Resp, ApiError> {
    own_cluster(state, who, id).await?;
    let now = Timestamp::now();
    let name = node.to_string();
    let refused: Arc<std::sync::Mutex<Option<ReplaceError>>> = Arc::default();
    let seen = Arc::clone(&refused);
    let c = blocking(state, move |s| {
        s.update_cluster(id, &mut |c| {
            let done = match action {
                NodeAction::Replace => c.replace_node(&name, &now).map(drop),
                NodeAction::Restart => c.restart_node(&name, &now),
            };
            done.map(|()| Update::Write).map_err(|e| {
                let message = e.to_string();
                *seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                message
            })
        })
    })
    .await;
    let refusal = refused
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let c = match (c, refusal) {
        (Ok(c), _) => c,
        (Err(_), Some(ReplaceError::UnknownNode(n))) => {
            return Err(ApiError::NotFound(format!("cluster {id} has no node {n}")));
        }
        (Err(_), Some(ReplaceError::NotReady(status))) => {
            return Err(ApiError::Conflict {
                message: format!(
                    "cluster {id} is {status}; only a ready cluster can have a node replaced \
                     or restarted (refused, not queued: retry once it is ready)"
                ),
                details: Some(json!({"status": status})),
            });
        }
        (Err(e), None) => return Err(e),
    };
    tracing::info!(cluster_id = %id, node = %node, ?action, generation = c.generation, "node action requested");
    let url = cluster_url(id);
    let body =
        json!({"id": id, "status": c.status, "generation": c.generation, "node": node, "url": url});
    Ok(with_location(
        json_response(StatusCode::ACCEPTED, &body),
        &url,
    ))
}

/// The body of `PATCH /clusters/{id}`: exactly `{"options": {...}}`, the new values of some
/// options.
///
/// # Errors
/// 400 `invalid_body` for any other shape, naming what is wrong.
fn update_changes(body: Value) -> Result<Map<String, Value>, ApiError> {
    let shape = r#"an update is {"options": {...}}"#;
    let mut body = object(body, "an update")?;
    if let Some(extra) = body.keys().find(|k| *k != "options") {
        return Err(ApiError::bad_request(
            "invalid_body",
            format!("unknown key {extra:?}: {shape}"),
        ));
    }
    match body.remove("options") {
        None => Err(ApiError::bad_request(
            "invalid_body",
            format!("\"options\" is missing: {shape}"),
        )),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(ApiError::bad_request(
            "invalid_body",
            format!("\"options\" must be a JSON object: {shape}"),
        )),
    }
}

/// `PATCH /clusters/{id}`: a new generation of a ready cluster's spec from changed options
/// (scale, update); 202 with the generation, or 200 when the options are what they are.
///
/// The update is decided inside the store's compare-and-swap, against the record it
/// replaces, so a concurrent write (the scheduler's, another PATCH) cannot be lost or
/// raced. Only a `ready` cluster takes one: a PATCH while the cluster is `updating` (or
/// anything but `ready`) is refused with 409, never queued. A refused request writes nothing.
pub(super) async fn update(
    state: &Arc<AppState>,
    who: &Principal,
    id: ClusterId,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    check_json_content_type(&req)?;
    let body = read_body(state, req).await?;
    let changes = update_changes(parse_json(&body)?)?;
    let current = own_cluster(state, who, id).await?;
    let (name, version) = (&current.product, &current.version);
    let product = get_product(state, name, version).await?;
    let template = load_template(state, name, version).await?;
    let doc = load_options(state, name, version).await?;
    let shared = Arc::clone(state);
    let caller = who.clone();
    let now = Timestamp::now();
    let quota = state.auth.quota(&current.owner).copied();
    let owner = current.owner.clone();
    let over: Arc<std::sync::Mutex<Option<QuotaExceeded>>> = Arc::default();
    let seen_over = Arc::clone(&over);
    let outcome = blocking(state, move |s| {
        let request = UpdateRequest {
            product: &product,
            template: &template,
            options: &doc,
            changes: &changes,
            node_image: &shared.node_image,
            policy: policy(&shared, &caller),
            make_secret: new_secret,
        };
        // The closure may run more than once (on a lost compare-and-swap); each run decides
        // afresh from the record it is given, and only the last run's outcome counts.
        let mut result: Option<Result<Updated, UpdateError>> = None;
        let stored = s.update_cluster(id, &mut |c| {
            let before = Usage::of(c);
            let r = request.apply(&shared.renderer, c, &now);
            *seen_over
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
            let outcome = match &r {
                Ok(u) if u.changed => {
                    // Scaling up must fit the owner's quota; nothing is written otherwise.
                    let asks = Usage::of(c).beyond(before);
                    // What the owner holds as of the last commit, this cluster as it was
                    // before this change included. (A launch of the same owner racing this
                    // update may slip in before it commits.)
                    match quota.map(|q| q.check(&owner, s.usage(&owner), asks)) {
                        Some(Err(e)) => {
                            let message = e.to_string();
                            *seen_over
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e);
                            Err(message)
                        }
                        _ => Ok(Update::Write),
                    }
                }
                Ok(_) => Ok(Update::Keep),
                Err(e) => Err(e.to_string()),
            };
            result = Some(r);
            outcome
        });
        match stored {
            Ok(c) => Ok((result, Some(c))),
            Err(StoreError::Rejected(_)) if matches!(result, Some(Err(_))) => Ok((result, None)),
            Err(e) => Err(e),
        }
    })
    .await;
    if let Some(e) = over
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    {
        return Err(quota_exceeded(e.to_string()));
    }
    let (result, c) = outcome?;
    let (updated, c) = match (result, c) {
        (Some(Ok(u)), Some(c)) => (u, c),
        (Some(Err(e)), _) => return Err(update_error(id, e)),
        // invariant: the store answers a record only after the closure accepted it.
        _ => {
            return Err(ApiError::Internal(
                "the store answered an update it did not run".into(),
            ));
        }
    };
    let url = cluster_url(id);
    let body = json!({"id": id, "status": c.status, "generation": c.generation, "url": url});
    if !updated.changed {
        return Ok(json_response(StatusCode::OK, &body));
    }
    tracing::info!(
        cluster_id = %id,
        generation = updated.generation,
        added = updated.added.len(),
        removed = updated.removed.len(),
        "cluster update requested"
    );
    Ok(with_location(
        json_response(StatusCode::ACCEPTED, &body),
        &url,
    ))
}

/// An update the cluster refused: 409 unless ready, 400 for bad options or a template that
/// fails with them.
fn update_error(id: ClusterId, e: UpdateError) -> ApiError {
    match e {
        UpdateError::NotReady(status) => ApiError::Conflict {
            message: format!(
                "cluster {id} is {status}; only a ready cluster can be updated \
                 (a change while it is not ready is refused, not queued: retry once it is ready)"
            ),
            details: Some(json!({"status": status})),
        },
        UpdateError::Options(e) => options_error(&e),
        UpdateError::Render(e) => render_error(e),
        UpdateError::AdminOnly(keys) => admin_only_error(&keys),
        UpdateError::Volume(e) => ApiError::Forbidden(e.to_string()),
    }
}

/// `GET /clusters/{id}`: the full record, without its secret. Served from the encoded
/// views ([`Views`](super::views::Views)) when they hold it; the caller's right to see the
/// cluster is checked either way.
pub(super) async fn get(
    state: &AppState,
    who: &Principal,
    id: ClusterId,
) -> Result<Resp, ApiError> {
    let ticket = match state.views.get(id, who) {
        Lookup::Hit(body) => return Ok(json_bytes_response(StatusCode::OK, body)),
        Lookup::Hidden => return Err(cluster_not_found(id)),
        Lookup::Miss(ticket) => ticket,
    };
    let c = own_cluster(state, who, id).await?;
    let body = Bytes::from(encode_view(&c));
    state.views.put(id, &c.owner, body.clone(), ticket);
    Ok(json_bytes_response(StatusCode::OK, body))
}

/// The served JSON of `c` (pretty, as every response), written into one buffer sized for
/// it up front.
fn encode_view(c: &Cluster) -> Vec<u8> {
    pretty_json(&ClusterView::from(c), view_capacity(c))
}

/// The buffer to write the view of `c` into: about 1 KiB of record and 1 KiB a node,
/// history and services included; a rare larger one grows the buffer once or twice.
fn view_capacity(c: &Cluster) -> usize {
    1024 + 1024 * c.nodes.len()
}

/// `GET /clusters/{id}/nodes`.
pub(super) async fn nodes(
    state: &AppState,
    who: &Principal,
    id: ClusterId,
) -> Result<Resp, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        &json!({"nodes": own_cluster(state, who, id).await?.nodes}),
    ))
}

/// `GET /clusters/{id}/services`.
pub(super) async fn services(
    state: &AppState,
    who: &Principal,
    id: ClusterId,
) -> Result<Resp, ApiError> {
    Ok(json_response(
        StatusCode::OK,
        &json!({"services": own_cluster(state, who, id).await?.services}),
    ))
}

/// `GET /clusters/{id}/events`: the status history; with `Accept: text/event-stream`, the
/// record and history as a live stream that follows the cluster (see [`super::events`]).
pub(super) async fn events(
    state: &AppState,
    who: &Principal,
    id: ClusterId,
    headers: &http::HeaderMap,
) -> Result<Resp, ApiError> {
    if !super::events::wants_stream(headers) {
        return Ok(json_response(
            StatusCode::OK,
            &json!({"events": own_cluster(state, who, id).await?.history}),
        ));
    }
    let resume = super::events::last_event_id(headers)?;
    // The mark before the read: whatever the record lacks has a later id.
    let mark = state.events.mark();
    let c = own_cluster(state, who, id).await?;
    Ok(super::events::stream_cluster(
        &state.events,
        &c,
        mark,
        resume,
    ))
}

/// `GET /clusters/{id}/logs`: the orchestrator's output, as text.
pub(super) async fn logs(
    state: &AppState,
    who: &Principal,
    id: ClusterId,
) -> Result<Resp, ApiError> {
    own_cluster(state, who, id).await?;
    let log = blocking(state, move |s| s.log(id)).await?;
    Ok(raw_response(log, "text/plain; charset=utf-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cluster::ClusterSpec;
    use crate::domain::{AgentId, TaskId};

    /// A cluster with every optional field set, as far as the scheduler and the
    /// orchestrator would have taken it.
    fn cluster() -> Cluster {
        let spec = ClusterSpec::parse(
            &json!({
                "nodes": {"head": {"docker_image": "img:1", "cpu": 1, "mem": 64, "ports": ["http"], "services": ["s"], "env": {"A": "1"}, "tags": ["t"], "custom": 1}},
                "services": {"s": {"start": "run", "x.y": 2}},
                "dnsname": "abc"
            })
            .to_string(),
        )
        .unwrap();
        let now = Timestamp("2026-12-01T12:00:00.000Z".into());
        let mut c = Cluster::new(
            ClusterId(uuid::Uuid::from_u128(7)),
            "alice".into(),
            Name::parse("reference").unwrap(),
            Name::parse("1.0.0").unwrap(),
            json!({"size": 1}).as_object().unwrap().clone(),
            spec,
            "the-secret-3f9a".into(),
            now.clone(),
        );
        c.apply(ClusterEvent::DestroyRequested, Some("bye".into()), now)
            .unwrap();
        c.configure = Some(ConfigureProgress {
            generation: vec!["t1".into()],
            done: vec!["files/head".into()],
            ..Default::default()
        });
        let n = &mut c.nodes[0];
        n.observed.host = Some("h1".into());
        n.observed.task_id = Some(TaskId {
            cluster: ClusterId(uuid::Uuid::from_u128(7)),
            node: n.name.clone(),
            attempt: 1,
        });
        n.observed.agent_id = Some(AgentId::new("a1"));
        n.observed.ports.insert("http".into(), 31000);
        c
    }

    /// The view serves exactly the stored record less its secret, plus the URL, in the same
    /// order (what the API served when it deleted `"secret"` from the record's JSON).
    #[test]
    fn the_view_is_the_record_without_its_secret() {
        let c = cluster();
        let mut want = serde_json::to_value(&c).unwrap();
        let m = want.as_object_mut().unwrap();
        assert!(m.shift_remove("secret").is_some());
        m.insert("url".into(), json!(cluster_url(c.id)));
        for key in ["reason", "extra", "configure"] {
            assert!(m.contains_key(key), "the fixture sets {key}");
        }
        let got = serde_json::to_string_pretty(&ClusterView::from(&c)).unwrap();
        assert_eq!(got, serde_json::to_string_pretty(&want).unwrap());
        assert!(
            !got.contains("the-secret-3f9a"),
            "the secret is never served"
        );
    }

    #[test]
    fn an_update_body_is_exactly_an_options_object() {
        let ok = update_changes(json!({"options": {"size": 5}})).unwrap();
        assert_eq!(Value::Object(ok), json!({"size": 5}));
        assert!(update_changes(json!({"options": {}})).unwrap().is_empty());
        for (body, says) in [
            (json!({"size": 5}), "unknown key \"size\""),
            (json!({"options": {"size": 5}, "x": 1}), "unknown key \"x\""),
            (json!({}), "\"options\" is missing"),
            (json!({"options": [1]}), "\"options\" must be a JSON object"),
            (
                json!({"options": null}),
                "\"options\" must be a JSON object",
            ),
            (json!([1]), "must be a JSON object, not an array"),
            (json!("options"), "must be a JSON object, not a string"),
        ] {
            let e = update_changes(body.clone()).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{body}");
            assert!(e.to_string().contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn refused_updates_map_to_one_status_each() {
        let id = ClusterId(uuid::Uuid::from_u128(7));
        let e = update_error(id, UpdateError::NotReady(ClusterStatus::Updating));
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert!(
            e.to_string()
                .contains("is updating; only a ready cluster can be updated"),
            "{e}"
        );
    }

    #[test]
    fn empty_optional_fields_are_left_out_as_in_the_record() {
        let mut c = cluster();
        (c.reason, c.configure) = (None, None);
        c.extra.clear();
        let v = serde_json::to_value(ClusterView::from(&c)).unwrap();
        for key in ["reason", "extra", "configure", "secret"] {
            assert!(v.get(key).is_none(), "{key}");
        }
    }
}
