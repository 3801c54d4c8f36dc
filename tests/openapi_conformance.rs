//! The OpenAPI document against the server, property-based: for every operation the served
//! `/openapi.json` lists, requests are generated from the document itself (path parameters
//! valid, random and invalid; query values; bodies from the request schemas, their examples,
//! and junk; callers with an admin token, a user token or none), sent over real HTTP to a
//! real `paas serve`, and every answer is checked against the document: its status is one
//! the operation lists, its body validates against the listed schema (a small validator of
//! the JSON Schema subset the document uses, below), and the required headers are there.
//! Server-sent event streams are checked for status and content type only.
//!
//! Nothing here names an operation except the fixtures (the good bodies of part uploads), so
//! an operation added to the route table is covered as soon as it is in the document. The
//! run is bounded: a fixed seed and [`CASES`] cases per operation.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{Server, repo_root};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use proptest::prelude::*;
use proptest::strategy::Union;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value, json};

/// Cases per operation.
const CASES: u32 = 24;

const ADMIN: &str = "admin-token-0123456789";
const ALICE: &str = "alice-token-0123456789";

/// One generated request.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    /// Path and query, below the server's URL.
    target: String,
    body: Vec<u8>,
    content_type: Option<String>,
    token: Option<&'static str>,
}

/// What the generators need to know of the server's state: names that exist.
struct Known {
    params: BTreeMap<&'static str, String>,
    /// Good bodies of operations whose body the document gives as bytes.
    fixtures: BTreeMap<&'static str, Vec<u8>>,
}

type Http = Client<HttpConnector, Full<Bytes>>;

/// A request body and its Content-Type.
type Body = (Vec<u8>, Option<String>);

#[test]
fn every_answer_is_what_the_document_says() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{ADMIN},root,admin\n{ALICE},alice,user\n")).unwrap();
    // mesos-local with simulated agents: clusters are placed, so records carry the fields
    // of placed nodes too (hosts, task ids, and whatever configuring them leads to).
    let s = Server::start(
        &dir.path().join("data"),
        &[
            "--tokens",
            tokens.to_str().unwrap(),
            "--local-containerizer",
            "simulated",
            "--local-agents",
            "2",
        ],
    );
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let known = rt.block_on(setup(&s, &http));
    let doc: Value = rt.block_on(async {
        let r = send(&http, &s.url, &get("/bigdata/api/v1/openapi.json")).await;
        serde_json::from_slice(&r.2).expect("the document is JSON")
    });

    // Deletions last, so that every other operation still finds the product and cluster.
    let mut ops: Vec<(String, String, Value)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            ops.push((method.to_uppercase(), path.clone(), op.clone()));
        }
    }
    ops.sort_by_key(|(m, _, _)| m == "DELETE");
    // Statuses seen, per operation: printed, and checked for breadth below.
    let seen = std::cell::RefCell::new(BTreeMap::<String, BTreeMap<u16, u32>>::new());
    for (method, path, op) in &ops {
        let id = op["operationId"].as_str().unwrap_or("?").to_owned();
        let strategy = request(&doc, method, path, op, &known)
            .unwrap_or_else(|e| panic!("{id}: cannot generate requests: {e}"));
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases: CASES,
                failure_persistence: None,
                max_shrink_iters: 32,
                ..Config::default()
            },
            TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
        );
        let result = runner.run(&strategy, |req| {
            let answer = rt.block_on(send(&http, &s.url, &req));
            *seen
                .borrow_mut()
                .entry(id.clone())
                .or_default()
                .entry(answer.0)
                .or_default() += 1;
            conforms(&doc, op, &answer)
                .map_err(|e| TestCaseError::fail(format!("{id}: {method} {}: {e}", req.target)))
        });
        if let Err(e) = result {
            panic!("operation {id} ({method} {path}) does not conform: {e}");
        }
    }
    let seen = seen.into_inner();
    for (op, statuses) in &seen {
        eprintln!("{op}: {statuses:?}");
    }
    assert_eq!(seen.len(), ops.len(), "every operation was exercised");
    // The generators reach both sides: successes of every kind and the usual refusals.
    let all: std::collections::BTreeSet<u16> =
        seen.values().flat_map(|s| s.keys().copied()).collect();
    for want in [200, 201, 202, 400, 401, 403, 404, 409, 415] {
        assert!(all.contains(&want), "no request got a {want}: {all:?}");
    }
}

/// Registers the reference product and launches one cluster of alice's; returns the names
/// that exist.
async fn setup(s: &Server, http: &Http) -> Known {
    let dir = repo_root().join("examples/products/reference");
    let read = |p: &str| std::fs::read(dir.join(p)).unwrap();
    let bundle = {
        let m = paas::bundle::Manifest::parse(&read("product.json")).unwrap();
        let files: Vec<(String, Vec<u8>)> = m
            .paths()
            .into_iter()
            .map(|p| (p.clone(), read(&p)))
            .collect();
        let list: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_slice()))
            .collect();
        paas::bundle::tar::write(&list).unwrap()
    };
    let mut push = get("/bigdata/api/v1/products/reference/1.0.0/bundle");
    push.method = "PUT".into();
    push.body = bundle.clone();
    push.content_type = Some("application/x-tar".into());
    push.token = Some(ADMIN);
    assert_eq!(send(http, &s.url, &push).await.0, 201);
    let mut launch = get("/bigdata/api/v1/products/reference/1.0.0");
    launch.method = "POST".into();
    launch.body = br#"{"size": 2}"#.to_vec();
    launch.content_type = Some("application/json".into());
    launch.token = Some(ALICE);
    let (status, _, body) = send(http, &s.url, &launch).await;
    assert_eq!(status, 202);
    let id = serde_json::from_slice::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Until the cluster's nodes are placed (or it settled otherwise).
    let url = format!("/bigdata/api/v1/clusters/{id}");
    let placed = common::poll(
        30,
        Duration::from_millis(100),
        "the cluster placed",
        async || {
            let c: Value = serde_json::from_slice(&send(http, &s.url, &get(&url)).await.2).ok()?;
            c["nodes"][0]["host"].is_string().then_some(c)
        },
    )
    .await;
    eprintln!("cluster {id} placed: {}", placed["status"]);
    Known {
        params: BTreeMap::from([
            ("name", "reference".to_owned()),
            ("version", "1.0.0".to_owned()),
            ("id", id),
            ("node", "node0".to_owned()),
        ]),
        fixtures: BTreeMap::from([
            ("putTemplate", read("minimal.json")),
            ("putOptions", read("options/size.json")),
            ("putOrchestrator", read("orquestrators/minimal/fabfile.py")),
            ("putBundle", bundle),
        ]),
    }
}

fn get(target: &str) -> Req {
    Req {
        method: "GET".into(),
        target: target.into(),
        body: Vec::new(),
        content_type: None,
        token: Some(ADMIN),
    }
}

/// Sends `req`; the status, the headers, and the body (not read for an event stream,
/// which does not end).
async fn send(http: &Http, base: &str, req: &Req) -> (u16, http::HeaderMap, Bytes) {
    let mut b = http::Request::builder()
        .method(req.method.as_str())
        .uri(format!("{base}{}", req.target));
    if let Some(ct) = &req.content_type {
        b = b.header("content-type", ct);
    }
    if let Some(t) = req.token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let r = b
        .body(Full::new(Bytes::from(req.body.clone())))
        .expect("request");
    let work = async {
        let resp = http.request(r).await.expect("the server answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if media_type(&headers) == "text/event-stream" {
            return (status, headers, Bytes::new());
        }
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, headers, body)
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .unwrap_or_else(|_| panic!("{} {}: no answer within 30 s", req.method, req.target))
}

fn media_type(headers: &http::HeaderMap) -> String {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

// ---------------------------------------------------------------------------------------
// Checking an answer

/// Whether an answer is one the operation documents.
fn conforms(
    doc: &Value,
    op: &Value,
    (status, headers, body): &(u16, http::HeaderMap, Bytes),
) -> Result<(), String> {
    let text = || String::from_utf8_lossy(&body[..body.len().min(600)]).into_owned();
    let responses = op["responses"].as_object().ok_or("no responses")?;
    let Some(documented) = responses.get(&status.to_string()) else {
        return Err(format!(
            "status {status} is not documented (documented: {:?}); body: {}",
            responses.keys().collect::<Vec<_>>(),
            text()
        ));
    };
    for (name, h) in documented["headers"].as_object().into_iter().flatten() {
        if h["required"] == true && !headers.contains_key(name.as_str()) {
            return Err(format!(
                "status {status} without its required header {name}"
            ));
        }
    }
    let mt = media_type(headers);
    let Some(content) = documented["content"].as_object() else {
        return if body.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "status {status} has a body ({mt}) but the document gives no content for it: {}",
                text()
            ))
        };
    };
    let Some(media) = content.get(&mt).or_else(|| content.get("*/*")) else {
        return Err(format!(
            "status {status} answers {mt:?}, not one of {:?}",
            content.keys().collect::<Vec<_>>()
        ));
    };
    if mt == "application/json" {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| format!("status {status}: the body is not JSON ({e}): {}", text()))?;
        let schema = media
            .get("schema")
            .ok_or_else(|| format!("status {status}: no schema"))?;
        validate(doc, schema, &value, "$")
            .map_err(|e| format!("status {status}: {e}; body: {}", text()))?;
    }
    Ok(())
}

/// Validates `v` against `schema` (the subset of JSON Schema the document uses). Anything
/// else in a schema is an error, so the document cannot drift outside what is checked.
fn validate(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let s = schema
        .as_object()
        .ok_or_else(|| format!("{at}: schema is not an object"))?;
    for k in s.keys() {
        let known = [
            "$ref",
            "type",
            "nullable",
            "enum",
            "required",
            "properties",
            "additionalProperties",
            "items",
            "oneOf",
            "pattern",
            "minLength",
            "maxLength",
            "minimum",
            "maximum",
            "format",
            "description",
            "default",
            "example",
        ];
        if !known.contains(&k.as_str()) {
            return Err(format!(
                "{at}: the validator does not know the keyword {k:?}"
            ));
        }
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return validate(doc, resolve(doc, r)?, v, at);
    }
    if v.is_null() && s.get("nullable") == Some(&Value::Bool(true)) {
        return Ok(());
    }
    if let Some(all) = s.get("enum").and_then(Value::as_array)
        && !all.contains(v)
    {
        return Err(format!(
            "{at}: {v} is not one of {}",
            Value::Array(all.clone())
        ));
    }
    if let Some(options) = s.get("oneOf").and_then(Value::as_array) {
        let ok = options
            .iter()
            .filter(|o| validate(doc, o, v, at).is_ok())
            .count();
        if ok != 1 {
            return Err(format!("{at}: {v} matches {ok} of oneOf's schemas, not 1"));
        }
    }
    match s.get("type").and_then(Value::as_str) {
        None => Ok(()),
        Some("string") => string(s, v, at),
        Some("integer") if v.is_i64() || v.is_u64() => number(s, v, at),
        Some("number") if v.is_number() => number(s, v, at),
        Some("boolean") if v.is_boolean() => Ok(()),
        Some("array") => {
            let items = v
                .as_array()
                .ok_or_else(|| format!("{at}: {v} is not an array"))?;
            match s.get("items") {
                Some(item) => items
                    .iter()
                    .enumerate()
                    .try_for_each(|(i, x)| validate(doc, item, x, &format!("{at}[{i}]"))),
                None => Ok(()),
            }
        }
        Some("object") => object(doc, s, v, at),
        Some(t) => Err(format!("{at}: {v} is not of type {t}")),
    }
}

fn resolve<'a>(doc: &'a Value, r: &str) -> Result<&'a Value, String> {
    let name = r
        .strip_prefix("#/components/schemas/")
        .ok_or_else(|| format!("unsupported $ref {r}"))?;
    let found = &doc["components"]["schemas"][name];
    if found.is_null() {
        return Err(format!("the schema {r} is missing from the document"));
    }
    Ok(found)
}

fn string(s: &Map<String, Value>, v: &Value, at: &str) -> Result<(), String> {
    let text = v
        .as_str()
        .ok_or_else(|| format!("{at}: {v} is not a string"))?;
    let len = text.chars().count() as u64;
    if s.get("minLength")
        .and_then(Value::as_u64)
        .is_some_and(|m| len < m)
    {
        return Err(format!("{at}: {v} is shorter than minLength"));
    }
    if s.get("maxLength")
        .and_then(Value::as_u64)
        .is_some_and(|m| len > m)
    {
        return Err(format!("{at}: {v} is longer than maxLength"));
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        let re = regex::Regex::new(p).map_err(|e| format!("{at}: bad pattern {p}: {e}"))?;
        if !re.is_match(text) {
            return Err(format!("{at}: {v} does not match {p}"));
        }
    }
    match s.get("format").and_then(Value::as_str) {
        Some("uuid") if uuid::Uuid::parse_str(text).is_err() => {
            Err(format!("{at}: {v} is not a uuid"))
        }
        Some("date-time") if !is_date_time(text) => Err(format!("{at}: {v} is not a date-time")),
        _ => Ok(()),
    }
}

/// RFC 3339 in the shape the server writes (`2026-11-25T16:09:10.099Z`), loosely.
fn is_date_time(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && t.ends_with('Z')
        && t[..4].bytes().all(|c| c.is_ascii_digit())
}

fn number(s: &Map<String, Value>, v: &Value, at: &str) -> Result<(), String> {
    let n = v.as_f64().unwrap_or(f64::NAN);
    if s.get("minimum")
        .and_then(Value::as_f64)
        .is_some_and(|m| n < m)
    {
        return Err(format!("{at}: {v} is below the minimum"));
    }
    if s.get("maximum")
        .and_then(Value::as_f64)
        .is_some_and(|m| n > m)
    {
        return Err(format!("{at}: {v} is above the maximum"));
    }
    Ok(())
}

fn object(doc: &Value, s: &Map<String, Value>, v: &Value, at: &str) -> Result<(), String> {
    let o = v
        .as_object()
        .ok_or_else(|| format!("{at}: {v} is not an object"))?;
    for r in s
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = r.as_str().unwrap_or_default();
        if !o.contains_key(key) {
            return Err(format!("{at}: the required key {key:?} is missing"));
        }
    }
    let props = s.get("properties").and_then(Value::as_object);
    for (k, x) in o {
        let here = format!("{at}.{k}");
        match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
            (Some(p), _) => validate(doc, p, x, &here)?,
            (None, Some(Value::Bool(false))) => {
                return Err(format!("{at}: the key {k:?} is not in the schema"));
            }
            (None, Some(extra @ Value::Object(_))) => validate(doc, extra, x, &here)?,
            (None, _) => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Generating requests

/// The requests of one operation.
fn request(
    doc: &Value,
    method: &str,
    path: &str,
    op: &Value,
    known: &Known,
) -> Result<BoxedStrategy<Req>, String> {
    let mut path_parts: Vec<BoxedStrategy<String>> = Vec::new();
    for seg in path.split('/').skip(1) {
        path_parts.push(
            match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                None => Just(seg.to_owned()).boxed(),
                Some(p) => path_param(doc, op, p, known)?,
            },
        );
    }
    let mut query: Vec<BoxedStrategy<Option<String>>> = Vec::new();
    for p in op["parameters"].as_array().into_iter().flatten() {
        if p["in"] == "query" {
            let name = p["name"].as_str().unwrap_or_default().to_owned();
            let valid = from_schema(doc, &p["schema"])?.prop_map(|v| match v {
                Value::String(s) => s,
                other => other.to_string(),
            });
            let junk = prop::sample::select(vec!["", "-1", "zzz", "%ZZ", "0", "1001"])
                .prop_map(str::to_owned);
            query.push(
                prop::option::weighted(0.5, prop_oneof![3 => valid, 1 => junk])
                    .prop_map(move |v| v.map(|v| format!("{name}={}", encode(&v))))
                    .boxed(),
            );
        }
    }
    let id = op["operationId"].as_str().unwrap_or_default();
    let body = body(doc, op, known.fixtures.get(id).cloned())?;
    let token = prop::sample::select(vec![
        Some(ADMIN),
        Some(ADMIN),
        Some(ALICE),
        Some(ALICE),
        None,
    ]);
    let method = method.to_owned();
    Ok((path_parts, query, body, token)
        .prop_map(move |(parts, query, (body, content_type), token)| {
            let q: Vec<String> = query.into_iter().flatten().collect();
            let mut target = format!("/{}", parts.join("/"));
            if !q.is_empty() {
                target = format!("{target}?{}", q.join("&"));
            }
            Req {
                method: method.clone(),
                target,
                body,
                content_type,
                token,
            }
        })
        .boxed())
}

/// A path parameter: mostly one that exists, else one from its schema, else junk.
fn path_param(
    doc: &Value,
    op: &Value,
    name: &str,
    known: &Known,
) -> Result<BoxedStrategy<String>, String> {
    let schema = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["in"] == "path" && p["name"] == name)
        .map(|p| p["schema"].clone())
        .ok_or_else(|| format!("path parameter {name} is not documented"))?;
    let generated = from_schema(doc, &schema)?.prop_map(|v| encode(v.as_str().unwrap_or("x")));
    let junk = prop::sample::select(vec![
        "UPPER".to_owned(),
        "a".repeat(65),
        "-dash".to_owned(),
        "%2E%2E".to_owned(),
        "x%20y".to_owned(),
        "00000000-0000-0000-0000-000000000000".to_owned(),
    ]);
    let existing = known
        .params
        .get(name)
        .cloned()
        .unwrap_or_else(|| "x".into());
    Ok(prop_oneof![6 => Just(existing), 2 => generated, 1 => junk].boxed())
}

/// A body (and its Content-Type) for the operation's request body, if it has one: values
/// from the schema, its example, a known good body, or junk.
fn body(doc: &Value, op: &Value, fixture: Option<Vec<u8>>) -> Result<BoxedStrategy<Body>, String> {
    let Some(content) = op["requestBody"]["content"].as_object() else {
        return Ok(Just((Vec::new(), None)).boxed());
    };
    let (media, spec) = content.iter().next().ok_or("requestBody without content")?;
    let junk_json = prop::sample::select(vec!["", "{", "[]", "null", "\"s\"", "{\"x\": 1}"])
        .prop_map(|s| s.as_bytes().to_vec());
    let bytes = prop::collection::vec(any::<u8>(), 0..1500);
    let mut choices: Vec<(u32, BoxedStrategy<Vec<u8>>)> =
        vec![(1, junk_json.boxed()), (1, bytes.boxed())];
    if let Some(f) = fixture {
        // A good body, and the same cut short.
        let cut = f.len() / 2;
        choices.push((4, Just(f.clone()).boxed()));
        choices.push((1, Just(f[..cut].to_vec()).boxed()));
    }
    if media == "application/json" {
        let schema = &spec["schema"];
        choices.push((
            4,
            from_schema(doc, schema)?
                .prop_map(|v| v.to_string().into_bytes())
                .boxed(),
        ));
        let target = match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => resolve(doc, r)?,
            None => schema,
        };
        if let Some(example) = target.get("example") {
            choices.push((4, Just(example.to_string().into_bytes()).boxed()));
        }
    }
    let declared = if media == "*/*" {
        "application/octet-stream".to_owned()
    } else {
        media.clone()
    };
    let content_type = prop::sample::select(vec![
        Some(declared.clone()),
        Some(declared.clone()),
        Some(declared),
        Some("text/plain".to_owned()),
        None,
    ]);
    Ok((Union::new_weighted(choices), content_type).boxed())
}

/// Values of a schema (the subset [`validate`] reads). Valid as far as the schema goes; the
/// server's own rules (a product's options, say) make many of them refused, which is fine:
/// the refusal must be documented too.
fn from_schema(doc: &Value, schema: &Value) -> Result<BoxedStrategy<Value>, String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return from_schema(doc, resolve(doc, r)?);
    }
    if let Some(all) = schema.get("enum").and_then(Value::as_array) {
        return Ok(prop::sample::select(all.clone()).boxed());
    }
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let each: Result<Vec<_>, _> = options.iter().map(|o| from_schema(doc, o)).collect();
        return Ok(Union::new(each?).boxed());
    }
    let n = |k: &str, d: i64| schema.get(k).and_then(Value::as_i64).unwrap_or(d);
    Ok(match schema.get("type").and_then(Value::as_str) {
        Some("string") => match (
            schema.get("format").and_then(Value::as_str),
            schema.get("pattern").and_then(Value::as_str),
        ) {
            (Some("uuid"), _) => any::<u128>()
                .prop_map(|u| json!(uuid::Uuid::from_u128(u).to_string()))
                .boxed(),
            (Some("date-time"), _) => Just(json!("2026-12-02T00:00:00.000Z")).boxed(),
            (_, Some(p)) => {
                let max = n("maxLength", 64) as usize;
                let inner = p.trim_start_matches('^').trim_end_matches('$');
                proptest::string::string_regex(inner)
                    .map_err(|e| format!("pattern {p}: {e}"))?
                    .prop_map(move |s| json!(s.chars().take(max).collect::<String>()))
                    .boxed()
            }
            _ => "[a-z0-9 ]{0,12}".prop_map(|s| json!(s)).boxed(),
        },
        Some("integer") => (n("minimum", -5)..=n("maximum", 2000))
            .prop_map(|i| json!(i))
            .boxed(),
        Some("number") => (0.0..10.0f64).prop_map(|x| json!(x)).boxed(),
        Some("boolean") => any::<bool>().prop_map(|b| json!(b)).boxed(),
        Some("array") => {
            let item = from_schema(
                doc,
                schema.get("items").unwrap_or(&json!({"type": "string"})),
            )?;
            prop::collection::vec(item, 0..3)
                .prop_map(Value::Array)
                .boxed()
        }
        Some("object") => object_values(doc, schema)?,
        _ => Just(Value::Null).boxed(),
    })
}

fn object_values(doc: &Value, schema: &Value) -> Result<BoxedStrategy<Value>, String> {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut fields: Vec<BoxedStrategy<Option<(String, Value)>>> = Vec::new();
    for (k, p) in schema["properties"].as_object().into_iter().flatten() {
        let key = k.clone();
        let values = from_schema(doc, p)?.prop_map(move |v| (key.clone(), v));
        fields.push(if required.contains(&k.as_str()) {
            values.prop_map(Some).boxed()
        } else {
            prop::option::of(values).boxed()
        });
    }
    if schema["properties"].is_null() && schema["additionalProperties"] != false {
        let small = prop_oneof![
            (0..5i64).prop_map(|i| json!(i)),
            "[a-z]{0,4}".prop_map(|s| json!(s))
        ];
        let free = prop::collection::btree_map("[a-z]{1,5}", small, 0..3)
            .prop_map(|m| Some(("".to_owned(), Value::Object(m.into_iter().collect()))))
            .boxed();
        fields.push(free);
    }
    Ok(fields
        .prop_map(|fs| {
            let mut o = Map::new();
            for (k, v) in fs.into_iter().flatten() {
                match (k.is_empty(), v) {
                    // The free-form part merges in.
                    (true, Value::Object(m)) => o.extend(m),
                    (_, v) => {
                        o.insert(k, v);
                    }
                }
            }
            Value::Object(o)
        })
        .boxed())
}

/// Percent-encodes everything but unreserved characters (and `%`, so that junk that is
/// already encoded stays as written).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'%' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The validator refuses what a schema does not allow, so a passing run means something.
#[test]
fn the_validator_refuses_what_a_schema_does_not_allow() {
    let doc = json!({"components": {"schemas": {"Name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 3}}}});
    let schema = json!({
        "type": "object", "required": ["name", "status"], "additionalProperties": false,
        "properties": {
            "name": {"$ref": "#/components/schemas/Name"},
            "status": {"type": "string", "enum": ["up", "down"]},
            "host": {"type": "string", "nullable": true},
            "cmd": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "n": {"type": "integer", "minimum": 1}
        }
    });
    let ok = |v: Value| validate(&doc, &schema, &v, "$");
    assert_eq!(
        ok(json!({"name": "abc", "status": "up", "host": null, "cmd": ["a"], "n": 1})),
        Ok(())
    );
    for bad in [
        json!({"name": "abc"}),
        json!({"name": "abc", "status": "sideways"}),
        json!({"name": "ABC", "status": "up"}),
        json!({"name": "abcd", "status": "up"}),
        json!({"name": "abc", "status": "up", "extra": 1}),
        json!({"name": "abc", "status": "up", "cmd": 3}),
        json!({"name": "abc", "status": "up", "n": 0}),
        json!({"name": "abc", "status": "up", "n": 1.5}),
        json!({"name": null, "status": "up"}),
    ] {
        assert!(ok(bad.clone()).is_err(), "{bad} passed");
    }
    let unknown = json!({"type": "string", "allOf": []});
    assert!(
        validate(&doc, &unknown, &json!("x"), "$")
            .unwrap_err()
            .contains("allOf")
    );
    let dangling = json!({"$ref": "#/components/schemas/Missing"});
    assert!(
        validate(&doc, &dangling, &json!(1), "$")
            .unwrap_err()
            .contains("missing")
    );
}
