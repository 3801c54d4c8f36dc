//! Request handlers: decode the request, call the store, encode the answer. Business rules
//! live in `domain`; the store makes writes atomic and durable.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::Principal;
use super::error::ApiError;
use super::routes::{Access, BASE, Endpoint, RouteError};
use super::{AppState, json_response};
use crate::domain::cluster::{Cluster, ClusterSpec, Desired};
use crate::domain::lifecycle::ClusterEvent;
use crate::domain::options::OptionsDoc;
use crate::domain::{ClusterId, ClusterStatus, Name, Part, Product, Timestamp};
use crate::registry::{self, Store, StoreError, Update};

type Resp = Response<Full<Bytes>>;

/// Routes, authenticates and runs one request. Returns the response and the operation id
/// (for metrics).
pub(super) async fn dispatch(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<(Resp, &'static str), ApiError> {
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
        (Endpoint::Health, _) => health(state, false),
        (Endpoint::HealthReady, _) => health(state, true),
        (Endpoint::Metrics, _) => metrics(state).await,
        (Endpoint::OpenApi, _) => Ok(json_response(StatusCode::OK, &super::openapi::document())),
        (Endpoint::ListProducts, _) => list_products(state).await,
        (Endpoint::CreateProduct, _) => create_product(state, req).await,
        (Endpoint::ListVersions { name }, _) => list_versions(state, name).await,
        (Endpoint::GetProduct { name, version }, _) => Ok(json_response(
            StatusCode::OK,
            &product_view(&get_product(state, &name, &version).await?),
        )),
        (Endpoint::DeleteProduct { name, version }, _) => {
            delete_product(state, name, version).await
        }
        (
            Endpoint::PutPart {
                name,
                version,
                part,
            },
            _,
        ) => put_part(state, name, version, part, req).await,
        (
            Endpoint::GetPart {
                name,
                version,
                part,
            },
            _,
        ) => get_part(state, name, version, part).await,
        (Endpoint::Launch { name, version }, Some(who)) => {
            launch(state, &who, name, version, req).await
        }
        (Endpoint::ListClusters, Some(who)) => list_clusters(state, &who, req.uri().query()).await,
        (Endpoint::GetCluster { id }, Some(who)) => Ok(json_response(
            StatusCode::OK,
            &cluster_view(&own_cluster(state, &who, id).await?),
        )),
        (Endpoint::DeleteCluster { id }, Some(who)) => delete_cluster(state, &who, id).await,
        (Endpoint::ClusterNodes { id }, Some(who)) => Ok(json_response(
            StatusCode::OK,
            &json!({"nodes": cluster_view(&own_cluster(state, &who, id).await?)["nodes"]}),
        )),
        (Endpoint::ClusterServices { id }, Some(who)) => Ok(json_response(
            StatusCode::OK,
            &json!({"services": own_cluster(state, &who, id).await?.services}),
        )),
        (Endpoint::ClusterEvents { id }, Some(who)) => Ok(json_response(
            StatusCode::OK,
            &json!({"events": own_cluster(state, &who, id).await?.history}),
        )),
        (Endpoint::ClusterLogs { id }, Some(who)) => {
            own_cluster(state, &who, id).await?;
            let log = blocking(state, move |s| s.log(id)).await?;
            Ok(raw_response(log, "text/plain; charset=utf-8"))
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

/// [`registry::call`] with the API's error type.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(registry::call(&state.store, f).await?)
}

// ---------------------------------------------------------------------------------------
// Bodies

/// Reads the whole body, refusing more than the limit with 413.
async fn read_body(state: &AppState, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = state.max_body;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge(limit));
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::TooLarge(limit))
        }
        Err(e) => Err(ApiError::bad_request(
            "body_read_failed",
            format!("could not read the request body: {e}"),
        )),
    }
}

/// Accepts JSON bodies sent as JSON, as form-less text, or with no type at all (`curl -d`
/// without `-H`); refuses types that are clearly something else.
fn check_json_content_type(req: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let ct = ct
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let ok = ct.is_empty()
        || ct == "application/json"
        || ct.ends_with("+json")
        || ct == "text/plain"
        || ct == "application/x-www-form-urlencoded"
        || ct == "application/octet-stream";
    if ok {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "expected application/json, got {ct}"
        )))
    }
}

/// Parses JSON, naming the line and column of a syntax error.
fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest {
        code: "invalid_json",
        message: {
            let text = e.to_string();
            let why = text
                .rsplit_once(" at line ")
                .map_or(text.as_str(), |(why, _)| why);
            format!(
                "malformed JSON at line {}, column {}: {why}",
                e.line(),
                e.column()
            )
        },
        details: Some(json!({"line": e.line(), "column": e.column()})),
    })
}

async fn json_body(state: &AppState, req: Request<Incoming>) -> Result<Value, ApiError> {
    check_json_content_type(&req)?;
    let bytes = read_body(state, req).await?;
    parse_json(&bytes)
}

fn object(v: Value, what: &str) -> Result<Map<String, Value>, ApiError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::bad_request(
            "invalid_body",
            format!("{what} must be a JSON object, not {}", kind(&other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn raw_response(body: Vec<u8>, content_type: &'static str) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn with_location(mut resp: Resp, location: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

// ---------------------------------------------------------------------------------------
// Products

fn product_url(p: &Product) -> String {
    format!("{BASE}/products/{}/{}", p.name, p.version)
}

fn product_view(p: &Product) -> Value {
    let mut v = serde_json::to_value(p).unwrap_or_default();
    v["url"] = json!(product_url(p));
    v
}

async fn get_product(state: &AppState, name: &Name, version: &Name) -> Result<Product, ApiError> {
    let (n, v) = (name.clone(), version.clone());
    blocking(state, move |s| s.product(&n, &v))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("product {name}/{version} not found")))
}

async fn list_products(state: &AppState) -> Result<Resp, ApiError> {
    let all = blocking(state, |s| s.products()).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"products": all.iter().map(product_view).collect::<Vec<_>>()}),
    ))
}

async fn list_versions(state: &AppState, name: Name) -> Result<Resp, ApiError> {
    let all = blocking(state, |s| s.products()).await?;
    let versions: Vec<&str> = all
        .iter()
        .filter(|p| p.name == name)
        .map(|p| p.version.as_str())
        .collect();
    if versions.is_empty() {
        return Err(ApiError::NotFound(format!("product {name} not found")));
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"name": name, "versions": versions}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductCreate {
    name: String,
    version: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    logo_url: Option<String>,
}

async fn create_product(state: &AppState, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body = json_body(state, req).await?;
    let body = object(body, "a product")?;
    let p: ProductCreate = serde_json::from_value(Value::Object(body))
        .map_err(|e| ApiError::bad_request("invalid_product", format!("invalid product: {e}")))?;
    let bad_name = |field: &str, e: crate::domain::NameError| ApiError::BadRequest {
        code: "invalid_name",
        message: format!("invalid {field}: {e}"),
        details: Some(json!({"field": field, "pattern": "^[a-z0-9][a-z0-9._-]*$"})),
    };
    let name = Name::parse(&p.name).map_err(|e| bad_name("name", e))?;
    let version = Name::parse(&p.version).map_err(|e| bad_name("version", e))?;
    if p.description.len() > 4096 {
        return Err(ApiError::bad_request(
            "invalid_product",
            "description is longer than 4096 bytes",
        ));
    }
    let now = Timestamp::now();
    let product = Product {
        name,
        version,
        description: p.description,
        logo_url: p.logo_url,
        created_at: now.clone(),
        updated_at: now,
        parts: Default::default(),
    };
    let stored = product.clone();
    blocking(state, move |s| s.create_product(&stored)).await?;
    let view = product_view(&product);
    Ok(with_location(
        json_response(StatusCode::CREATED, &view),
        &product_url(&product),
    ))
}

async fn delete_product(state: &AppState, name: Name, version: Name) -> Result<Resp, ApiError> {
    let result = blocking(state, move |s| {
        s.delete_product(&name, &version, &|users| {
            let live: Vec<String> = users
                .iter()
                .filter(|c| c.status.is_live())
                .map(|c| c.id.to_string())
                .collect();
            if live.is_empty() {
                Ok(())
            } else {
                Err(live.join(","))
            }
        })
    })
    .await;
    match result {
        Ok(()) => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NO_CONTENT;
            Ok(resp)
        }
        // The guard's refusal carries the live cluster ids.
        Err(ApiError::Conflict { message, .. }) => Err(ApiError::Conflict {
            message: "live clusters still use this product; destroy them first".into(),
            details: Some(json!({"clusters": message.split(',').collect::<Vec<_>>()})),
        }),
        Err(e) => Err(e),
    }
}

async fn put_part(
    state: &AppState,
    name: Name,
    version: Name,
    part: Part,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    if part == Part::Options {
        check_json_content_type(&req)?;
    }
    let body = read_body(state, req).await?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            format!("the {} is empty", part.as_str()),
        ));
    }
    let product = get_product(state, &name, &version).await?;
    let stored: Vec<u8> = match part {
        Part::Orchestrator => body.to_vec(),
        Part::Template => {
            let text = std::str::from_utf8(&body).map_err(|e| {
                ApiError::bad_request("invalid_template", format!("template is not UTF-8: {e}"))
            })?;
            handlebars::Template::compile(text).map_err(|e| {
                ApiError::bad_request(
                    "invalid_template",
                    crate::domain::template::TemplateError::from(e).to_string(),
                )
            })?;
            // With options known, the template must render with their defaults into a valid
            // spec now. Without them (the seed uploads the template first) the check runs
            // when the options arrive.
            if product.parts.options {
                let doc = load_options(state, &name, &version).await?;
                check_template(state, &product, text, &doc)
                    .map_err(|(code, m)| ApiError::bad_request(code, m))?;
            }
            body.to_vec()
        }
        Part::Options => {
            let doc = OptionsDoc::from_value(parse_json(&body)?)
                .map_err(|e| ApiError::bad_request("invalid_options", e.to_string()))?;
            if product.parts.template {
                let template = load_template(state, &name, &version).await?;
                check_template(state, &product, &template, &doc).map_err(|(code, m)| {
                    ApiError::bad_request(
                        code,
                        format!("the stored template does not render with these options: {m}"),
                    )
                })?;
            }
            serde_json::to_vec_pretty(&doc).map_err(|e| ApiError::Internal(Box::new(e)))?
        }
    };
    let now = Timestamp::now();
    let updated = blocking(state, move |s| {
        s.put_part(&name, &version, part, &stored, &now)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &product_view(&updated)))
}

/// Renders `template` with the defaults (and required examples) of `doc` and validates the
/// spec, as a launch would.
fn check_template(
    state: &AppState,
    p: &Product,
    template: &str,
    doc: &OptionsDoc,
) -> Result<ClusterSpec, (&'static str, String)> {
    let ctx = render_context(
        state,
        &doc.defaults_with_examples(),
        ClusterId(uuid::Uuid::nil()),
        "validation",
        p,
    );
    let rendered = state
        .renderer
        .render(template, &ctx)
        .map_err(|e| ("invalid_template", e.to_string()))?;
    ClusterSpec::parse(&rendered).map_err(|e| ("invalid_template", e.to_string()))
}

fn render_context(
    state: &AppState,
    opts: &Map<String, Value>,
    id: ClusterId,
    user: &str,
    p: &Product,
) -> Value {
    json!({"opts": opts, "cluster_id": id.to_string(), "user": user, "product": p.name, "version": p.version, "node_image": state.node_image})
}

async fn load_options(
    state: &AppState,
    name: &Name,
    version: &Name,
) -> Result<OptionsDoc, ApiError> {
    let (n, v) = (name.clone(), version.clone());
    match blocking(state, move |s| s.part(&n, &v, Part::Options)).await? {
        None => Ok(OptionsDoc::default()),
        Some(bytes) => {
            let v: Value =
                serde_json::from_slice(&bytes).map_err(|e| ApiError::Internal(Box::new(e)))?;
            OptionsDoc::from_value(v).map_err(|e| ApiError::Internal(Box::new(e)))
        }
    }
}

async fn load_template(state: &AppState, name: &Name, version: &Name) -> Result<String, ApiError> {
    let (n, v) = (name.clone(), version.clone());
    let bytes = blocking(state, move |s| s.part(&n, &v, Part::Template))
        .await?
        .ok_or_else(|| ApiError::Conflict {
            message: format!("product {name}/{version} has no template; PUT one first"),
            details: None,
        })?;
    String::from_utf8(bytes).map_err(|e| ApiError::Internal(Box::new(e)))
}

async fn get_part(
    state: &AppState,
    name: Name,
    version: Name,
    part: Part,
) -> Result<Resp, ApiError> {
    get_product(state, &name, &version).await?;
    let (n, v) = (name.clone(), version.clone());
    let bytes = blocking(state, move |s| s.part(&n, &v, part))
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("product {name}/{version} has no {}", part.as_str()))
        })?;
    let ct = match part {
        Part::Options => "application/json",
        Part::Template | Part::Orchestrator if std::str::from_utf8(&bytes).is_ok() => {
            "text/plain; charset=utf-8"
        }
        _ => "application/octet-stream",
    };
    Ok(raw_response(bytes, ct))
}

// ---------------------------------------------------------------------------------------
// Clusters

fn cluster_url(id: ClusterId) -> String {
    format!("{BASE}/clusters/{id}")
}

/// The served form of a cluster: the record without its secret, plus its URL.
fn cluster_view(c: &Cluster) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    if let Value::Object(m) = &mut v {
        m.remove("secret");
        m.insert("url".into(), json!(cluster_url(c.id)));
    }
    v
}

async fn launch(
    state: &AppState,
    who: &Principal,
    name: Name,
    version: Name,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    check_json_content_type(&req)?;
    let body = read_body(state, req).await?;
    // An empty body means "all defaults".
    let user_opts = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        object(parse_json(&body)?, "the launch options")?
    };
    let product = get_product(state, &name, &version).await?;
    let template = load_template(state, &name, &version).await?;
    let doc = load_options(state, &name, &version).await?;
    let opts = doc.resolve(&user_opts).map_err(|e| ApiError::BadRequest {
        code: "invalid_options",
        message: e.to_string(),
        details: Some(serde_json::to_value(&e).unwrap_or_default()),
    })?;
    let id = ClusterId::random();
    let ctx = render_context(state, &opts, id, &who.user, &product);
    let unprocessable = |m: String| ApiError::Unprocessable {
        code: "template_failed",
        message: m,
        details: None,
    };
    let rendered = state.renderer.render(&template, &ctx).map_err(|e| {
        unprocessable(format!(
            "the template cannot be rendered with these options: {e}"
        ))
    })?;
    let spec = ClusterSpec::parse(&rendered)
        .map_err(|e| unprocessable(format!("the template rendered an invalid cluster: {e}")))?;
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let cluster = Cluster::new(
        id,
        who.user.clone(),
        name,
        version,
        opts,
        spec,
        secret,
        Timestamp::now(),
    );
    let nodes = cluster.nodes.len();
    blocking(state, move |s| s.create_cluster(&cluster)).await?;
    tracing::info!(cluster_id = %id, owner = %who.user, nodes, "cluster registered");
    state.backend.wake(id);
    let url = cluster_url(id);
    Ok(with_location(
        json_response(
            StatusCode::ACCEPTED,
            &json!({"id": id, "status": ClusterStatus::Registered, "url": url}),
        ),
        &url,
    ))
}

/// The cluster if `who` may see it. Another user's cluster is a 404, not a 403: its
/// existence is not theirs to know.
async fn own_cluster(
    state: &AppState,
    who: &Principal,
    id: ClusterId,
) -> Result<Cluster, ApiError> {
    let c = blocking(state, move |s| s.cluster(id)).await?;
    match c {
        Some(c) if who.is_admin() || c.owner == who.user => Ok(c),
        _ => Err(ApiError::NotFound(format!("cluster {id} not found"))),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClusterFilter {
    product: Option<String>,
    version: Option<String>,
    status: Option<String>,
    owner: Option<String>,
}

async fn list_clusters(
    state: &AppState,
    who: &Principal,
    query: Option<&str>,
) -> Result<Resp, ApiError> {
    let f: ClusterFilter = match query {
        None | Some("") => ClusterFilter::default(),
        Some(q) => parse_query(q)?,
    };
    let status = f
        .status
        .as_deref()
        .map(|s| {
            s.parse::<ClusterStatus>().map_err(|()| {
                ApiError::bad_request("invalid_filter", format!("unknown status {s:?}"))
            })
        })
        .transpose()?;
    let all = blocking(state, |s| s.clusters()).await?;
    let views: Vec<Value> = all
        .iter()
        .filter(|c| who.is_admin() || c.owner == who.user)
        .filter(|c| f.product.as_deref().is_none_or(|p| c.product.as_str() == p))
        .filter(|c| f.version.as_deref().is_none_or(|v| c.version.as_str() == v))
        .filter(|c| f.owner.as_deref().is_none_or(|o| c.owner == o))
        .filter(|c| status.is_none_or(|s| c.status == s))
        .map(cluster_view)
        .collect();
    Ok(json_response(StatusCode::OK, &json!({"clusters": views})))
}

fn parse_query(q: &str) -> Result<ClusterFilter, ApiError> {
    let mut m = Map::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    serde_json::from_value(Value::Object(m))
        .map_err(|e| ApiError::bad_request("invalid_filter", format!("invalid query: {e}")))
}

async fn delete_cluster(
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
    state.backend.wake(id);
    let url = cluster_url(id);
    Ok(with_location(
        json_response(
            StatusCode::ACCEPTED,
            &json!({"id": id, "status": c.status, "url": url}),
        ),
        &url,
    ))
}

// ---------------------------------------------------------------------------------------
// Operations

fn health(state: &AppState, strict: bool) -> Result<Resp, ApiError> {
    let r = state.backend.readiness();
    let status = if strict && !r.ready {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    Ok(json_response(
        status,
        &json!({"status": "ok", "ready": r.ready, "detail": r.detail, "mesos": r.mesos, "version": env!("CARGO_PKG_VERSION")}),
    ))
}

async fn metrics(state: &AppState) -> Result<Resp, ApiError> {
    let (clusters, products) =
        blocking(state, |s| Ok((s.clusters()?, s.products()?.len()))).await?;
    let m = &state.metrics;
    m.clear("paas_clusters");
    for st in ClusterStatus::ALL {
        let n = clusters.iter().filter(|c| c.status == st).count();
        m.set(
            "paas_clusters",
            "Clusters by status.",
            &[("status", st.as_str())],
            n as f64,
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
