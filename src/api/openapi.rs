//! The OpenAPI 3 document, generated from the route table so that it lists exactly the
//! routes the parser accepts, and exact about what the server enforces: every status an
//! operation can answer (no `default`), the headers that come with them, the enums of the
//! domain (cluster and node statuses, the list filters), which fields may be `null`, and the
//! name rules. `tests/openapi_conformance.rs` sends generated requests to a real server and
//! checks every answer against this document.
//!
//! Schemas use a small subset of JSON Schema (`type`, `nullable`, `enum`, `required`,
//! `properties`, `additionalProperties`, `items`, `oneOf`, `pattern`, `minLength`,
//! `maxLength`, `minimum`, `maximum`, `format`, `$ref`), the subset the conformance test's
//! validator understands.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::console::Asset;
use super::launch_query::MAX_PLACEMENT_TIMEOUT_S;
use super::paging::{DEFAULT_LIMIT, MAX_LIMIT};
use super::products::MAX_DESCRIPTION;
use super::routes::{Access, ROUTES, Route};
use crate::domain::ids::MAX_NAME_LEN;
use crate::domain::{ClusterStatus, NodeStatus};

/// The rule of every name (product, version, node): what `Name::parse` accepts.
pub const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9._-]*$";

/// Builds the document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES.iter() {
        let entry = paths.entry(r.full_path()).or_insert_with(|| json!({}));
        entry[r.method.as_str().to_lowercase()] = operation(r);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Big Data PaaS on Apache Mesos",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Register products (template, options, orchestration script) and launch clusters of them on Mesos. Every error answer is an `Error`; every status an operation can answer is listed."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        }
    })
}

fn operation(r: &Route) -> Value {
    // The `/orchestrator` alias rows share their operation with `/orquestrator`; ids must be
    // unique in a document.
    let id = if r.path.ends_with("/orchestrator") {
        format!("{}Alias", r.operation_id)
    } else {
        r.operation_id.to_owned()
    };
    let mut op = json!({
        "operationId": id,
        "summary": r.summary,
        "x-access": r.access.as_str(),
        "parameters": parameters(r),
        "responses": responses(r),
    });
    if r.access != Access::Public {
        op["security"] = json!([{"bearer": []}]);
    }
    if let Some(req) = r.request {
        op["requestBody"] = request_body(req);
    }
    op
}

fn name_schema() -> Value {
    json!({"type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": MAX_NAME_LEN})
}

fn uuid_schema() -> Value {
    json!({"type": "string", "format": "uuid"})
}

fn cluster_status_schema() -> Value {
    json!({"type": "string", "enum": ClusterStatus::ALL.map(ClusterStatus::as_str)})
}

fn parameters(r: &Route) -> Value {
    let mut params: Vec<Value> = r
        .path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|p| {
            let schema = if p == "id" {
                uuid_schema()
            } else if p == "asset" {
                json!({"type": "string", "enum": Asset::ALL.map(Asset::file_name)})
            } else {
                name_schema()
            };
            json!({"name": p, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    if r.operation_id == "listClusters" {
        let q = |name: &str, schema: Value, description: &str| json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema});
        params.extend([
            q("product", name_schema(), "only clusters of this product"),
            q("version", name_schema(), "only clusters of this product version"),
            q("status", cluster_status_schema(), "only clusters in this status (400 invalid_filter for another value)"),
            q("owner", json!({"type": "string"}), "only this owner's clusters (a user sees only their own whatever it says)"),
            q("limit", json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}), &format!("clusters per page, 1 to {MAX_LIMIT} (400 invalid_filter otherwise)")),
            q("cursor", json!({"type": "string"}), "where the page starts: the `next` of the previous page (400 invalid_filter for anything else)"),
        ]);
    }
    if r.operation_id == "launchCluster" {
        params.push(json!({"name": "dry_run", "in": "query", "required": false, "description": "true: render, validate and evaluate placement on the agents last seen; answer 200 with each node's fit and the smallest changes that would fit; create nothing (400 invalid_query unless true or false)", "schema": {"type": "boolean", "default": false}}));
        params.push(json!({"name": "placement_timeout_s", "in": "query", "required": false, "description": format!("seconds the cluster may wait to be placed before it fails (default: serve --placement-timeout); 1 to {MAX_PLACEMENT_TIMEOUT_S} (400 invalid_query otherwise)"), "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PLACEMENT_TIMEOUT_S}}));
    }
    if matches!(r.operation_id, "getClusterEvents" | "streamEvents") {
        params.push(json!({"name": "Last-Event-ID", "in": "header", "required": false, "description": "resume a stream after this event id (400 for anything but digits)", "schema": {"type": "string", "pattern": "^[0-9]+$"}}));
    }
    Value::Array(params)
}

fn request_body(kind: &str) -> Value {
    let binary = json!({"type": "string", "format": "binary"});
    let content = match kind {
        // Parts are stored as sent, whatever the Content-Type says.
        "raw" => json!({"*/*": {"schema": binary}}),
        "tar" => json!({"application/x-tar": {"schema": binary}}),
        name => {
            json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}})
        }
    };
    json!({"required": true, "content": content})
}

/// The media types a success answer of this kind comes as.
fn content(kind: Option<&str>) -> Option<Value> {
    let text = json!({"type": "string"});
    Some(match kind? {
        "text" => json!({"text/plain": {"schema": text}}),
        // A part that is not UTF-8 comes back as bytes.
        "part" => {
            json!({"text/plain": {"schema": text}, "application/octet-stream": {"schema": text}})
        }
        "tar" => json!({"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}),
        "stream" => json!({"text/event-stream": {"schema": text}}),
        "html" => json!({"text/html": {"schema": text}}),
        "asset" => {
            json!({"text/javascript": {"schema": text}, "text/css": {"schema": text}, "image/svg+xml": {"schema": text}})
        }
        name => {
            json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}})
        }
    })
}

/// Success answers beyond the route table's one, by operation.
fn more_successes(op: &str) -> &'static [(u16, Option<&'static str>)] {
    match op {
        // Nothing changed: the current generation.
        "updateCluster" => &[(200, Some("UpdateAccepted"))],
        // `?dry_run=true`: the evaluation; nothing is created.
        "launchCluster" => &[(200, Some("DryRun"))],
        // A bundle for a version that did not exist.
        "putBundle" => &[(201, Some("Product"))],
        _ => &[],
    }
}

/// Error statuses beyond the ones every operation of its shape has, by operation.
fn more_errors(op: &str) -> &'static [u16] {
    match op {
        // The version exists; live clusters use it.
        "createProduct" | "deleteProduct" => &[409],
        // No template yet (409); the options make the template fail (422).
        "launchCluster" => &[409, 422],
        "updateCluster" => &[409, 422],
        "replaceNode" | "restartNode" => &[409],
        // Not every part set yet.
        "getBundle" => &[409],
        // The node is not running (409).
        "execNode" => &[409],
        // A Last-Event-ID that is not a number.
        "streamEvents" | "getClusterEvents" => &[400],
        "listClusters" => &[400],
        "healthReady" => &[503],
        _ => &[],
    }
}

/// Every error status of an operation: from its shape (auth, path parameters, body), then
/// its own.
fn errors(r: &Route) -> BTreeSet<u16> {
    // 403 `refused`: an anonymous server answers only loopback hosts and no foreign origin,
    // before routing, whatever the operation.
    let mut e = BTreeSet::from([403]);
    if r.access != Access::Public {
        e.insert(401);
    }
    if r.path.contains("{name}") || r.path.contains("{version}") || r.path.contains("{node}") {
        // `invalid_name`; and the product, cluster or node may not exist.
        e.extend([400, 404]);
    }
    if r.path.contains("{id}") || r.path.contains("{asset}") {
        // A malformed id is no route; another user's cluster is not theirs to know of.
        e.insert(404);
    }
    match r.request {
        None => {}
        Some(kind) => {
            // Unreadable or invalid, too large, too slow.
            e.extend([400, 408, 413]);
            if kind != "raw" {
                e.insert(415);
            }
        }
    }
    e.extend(more_errors(r.operation_id));
    e
}

fn responses(r: &Route) -> Value {
    let mut out = Map::new();
    let successes =
        std::iter::once(r.response).chain(more_successes(r.operation_id).iter().copied());
    for (status, kind) in successes {
        let mut resp = json!({"description": "success"});
        if let Some(c) = content(kind) {
            resp["content"] = c;
        }
        if matches!(status, 201 | 202) {
            resp["headers"] = json!({"Location": {"description": "the created or changed resource", "required": true, "schema": {"type": "string"}}});
        }
        if let Some(links) = links(r.operation_id) {
            resp["links"] = links;
        }
        out.insert(status.to_string(), resp);
    }
    if r.operation_id == "listClusters" {
        out["200"]["headers"] = json!({"Link": {"description": "`<url>; rel=\"next\"`: the next page, only when there is one", "required": false, "schema": {"type": "string"}}});
    }
    if r.operation_id == "getClusterEvents" {
        // With `Accept: text/event-stream`: the history, then the changes as they come.
        out["200"]["content"]["text/event-stream"] = json!({"schema": {"type": "string"}});
    }
    if r.operation_id == "getBundle" {
        out["200"]["headers"] = json!({"Content-Disposition": {"description": "`attachment; filename=\"NAME-VERSION.tar\"`", "required": true, "schema": {"type": "string"}}});
    }
    let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
    for status in errors(r) {
        let mut resp = json!({"description": error_meaning(status), "content": error});
        if status == 401 {
            resp["headers"] = json!({"WWW-Authenticate": {"description": "`Bearer`", "required": true, "schema": {"type": "string", "enum": ["Bearer"]}}});
        }
        // healthReady's 503 is the health body, not an error.
        if r.operation_id == "healthReady" && status == 503 {
            resp = json!({"description": "not ready", "content": content(Some("Health"))});
        }
        out.insert(status.to_string(), resp);
    }
    Value::Object(out)
}

fn error_meaning(status: u16) -> &'static str {
    match status {
        400 => "invalid request (see error.code)",
        401 => "no valid token",
        403 => {
            "forbidden: an admin operation, an advanced option, a quota, or a refused Host/Origin"
        }
        404 => "no such product, version, cluster or node (or another user's cluster)",
        408 => "the body did not arrive in time",
        409 => "conflicts with the current state",
        413 => "the body is larger than --max-body",
        415 => "unsupported Content-Type",
        422 => "well-formed, but the template fails with these options",
        _ => "error",
    }
}

/// The links from a success answer to the operations that follow it (create → get).
fn links(op: &str) -> Option<Value> {
    let cluster =
        |target: &str| json!({"operationId": target, "parameters": {"id": "$response.body#/id"}});
    let product = |target: &str| json!({"operationId": target, "parameters": {"name": "$response.body#/name", "version": "$response.body#/version"}});
    Some(match op {
        "launchCluster" => json!({
            "getCluster": cluster("getCluster"),
            "getClusterEvents": cluster("getClusterEvents"),
            "deleteCluster": cluster("deleteCluster"),
        }),
        "updateCluster" | "replaceNode" | "restartNode" | "deleteCluster" => {
            json!({"getCluster": cluster("getCluster")})
        }
        "createProduct" | "putBundle" => json!({
            "getProduct": product("getProduct"),
            "putTemplate": product("putTemplate"),
            "getBundle": product("getBundle"),
        }),
        _ => return None,
    })
}

fn schemas() -> Value {
    let s = |t: &str| json!({"type": t});
    let nullable = |t: &str| json!({"type": t, "nullable": true});
    let ts = json!({"type": "string", "format": "date-time"});
    let name = name_schema();
    let names = json!({"type": "array", "items": name});
    let uuid = uuid_schema();
    let status = cluster_status_schema();
    let node_status = json!({"type": "string", "enum": NodeStatus::ALL.map(NodeStatus::as_str)});
    let command = json!({"oneOf": [s("string"), {"type": "array", "items": s("string")}]});
    let strict = |required: &[&str], properties: Value| json!({"type": "object", "required": required, "additionalProperties": false, "properties": properties});
    let mut all = json!({
        "Error": strict(&["error"], json!({"error": strict(&["code", "message"], json!({
            "code": {"type": "string", "pattern": "^[a-z_]+$"}, "message": s("string"), "details": {}}))})),
        "ProductCreate": strict(&["name", "version"], json!({
            "name": name, "version": name,
            "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
            "logo_url": s("string")})),
        "Product": strict(&["name", "version", "description", "created_at", "updated_at", "parts", "url"], json!({
            "name": name, "version": name, "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
            "logo_url": s("string"), "created_at": ts, "updated_at": ts, "url": s("string"),
            "parts": strict(&["template", "options", "orchestrator"], json!({"template": s("boolean"), "options": s("boolean"), "orchestrator": s("boolean")})),
            "files": {"description": "where the last bundle push kept each part (absent for a product uploaded part by part)",
                      "type": "object", "required": ["template", "options", "orchestrator"], "additionalProperties": false,
                      "properties": {"template": s("string"), "options": s("string"), "orchestrator": s("string")}}})),
        "ProductList": strict(&["products"], json!({"products": {"type": "array", "items": {"$ref": "#/components/schemas/Product"}}})),
        "VersionList": strict(&["name", "versions"], json!({"name": name, "versions": names})),
        "OptionsDoc": {"type": "object", "additionalProperties": false, "properties": {
            "required": {"type": "object", "description": "keys the user must give; each value is an example fixing the type"},
            "optional": {"type": "object", "description": "defaults"},
            "advanced": {"type": "object", "description": "defaults for expert settings; only an admin may set them (403 for users)"},
            "descriptions": {"type": "object"},
            "enum": {"type": "object", "description": "option → the values it may take (any section)", "additionalProperties": {"type": "array"}}}},
        "LaunchOptions": {"type": "object", "description": "option values; numbers may be numeric strings", "additionalProperties": true, "example": {"size": 2}},
        "LaunchAccepted": strict(&["id", "status", "url"], json!({"id": uuid, "status": status, "url": s("string")})),
        "ClusterUpdate": strict(&["options"], json!({
            "options": {"type": "object", "description": "new values of some of the product's options (numbers may be numeric strings); the others keep their current values", "additionalProperties": true, "example": {"size": 2}}})),
        "UpdateAccepted": strict(&["id", "status", "generation", "url"], json!({"id": uuid, "status": status, "generation": {"type": "integer", "minimum": 1}, "node": name, "url": s("string")})),
        "Node": {"type": "object", "description": "A node's spec (from the template) and what Mesos last said of it. Keys the template author added are kept and served.",
            "required": ["name", "docker_image", "cpu", "mem", "disk", "port_names", "services", "status", "ports", "host", "address", "task_id", "agent_id", "attempt"],
            "additionalProperties": true, "properties": {
            "name": name, "status": node_status,
            "docker_image": s("string"), "cpu": s("number"), "mem": s("number"), "disk": s("number"),
            "port_names": {"type": "array", "items": s("string")}, "ports": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 65535}},
            "services": names, "env": {"type": "object", "additionalProperties": s("string")}, "command": command,
            "volumes": {"type": "array"}, "tags": {"type": "array", "items": s("string")},
            "host": nullable("string"), "address": nullable("string"),
            "task_id": nullable("string"), "agent_id": nullable("string"), "agent_port": {"type": "integer", "minimum": 0, "maximum": 65535},
            "agent_cert_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "attempt": {"type": "integer", "minimum": 0}, "not_before": ts, "message": s("string")}},
        "Service": {"type": "object", "required": ["name", "nodes"], "additionalProperties": false, "properties": {
            "name": name, "nodes": names, "files": {"type": "array", "items": {"type": "object", "required": ["path", "template"], "properties": {"path": s("string"), "template": s("string")}}},
            "start": command, "ready": command, "reload": command, "properties": s("object")}},
        "Event": strict(&["at", "status"], json!({"at": ts, "status": status, "message": s("string")})),
        "Cluster": strict(&["id", "owner", "product", "version", "options", "status", "desired", "created_at", "updated_at", "nodes", "services", "history", "restart", "generation", "url"], json!({
            "id": uuid, "owner": s("string"), "product": name, "version": name,
            "options": s("object"), "status": status,
            "reason": {"type": "string", "description": "why the cluster failed, or what it waits for"},
            "desired": {"type": "string", "enum": ["running", "destroyed"]},
            "created_at": ts, "updated_at": ts,
            "nodes": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
            "services": {"type": "array", "items": {"$ref": "#/components/schemas/Service"}},
            "history": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
            "extra": s("object"), "configure": s("object"),
            "restart": strict(&["max_restarts", "window_secs", "backoff_secs", "max_backoff_secs"], json!({
                "max_restarts": {"type": "integer", "minimum": 0}, "window_secs": {"type": "integer", "minimum": 0},
                "backoff_secs": s("number"), "max_backoff_secs": s("number")})),
            "replacements": {"type": "array", "items": strict(&["node", "attempt", "at", "cause"], json!({"node": name, "attempt": {"type": "integer", "minimum": 0}, "at": ts, "cause": s("string")}))},
            "generation": {"type": "integer", "minimum": 1, "description": "grows with every change of the desired spec (launch = 1)"},
            "retiring": {"type": "array", "description": "nodes an update removed whose tasks are being drained and killed", "items": strict(&["node"], json!({"node": {"$ref": "#/components/schemas/Node"}, "drained": s("boolean")}))},
            "restarts": {"type": "array", "description": "nodes whose services are being restarted in place", "items": name},
            "rolling": {"type": "array", "description": "nodes a rolling update still replaces, one at a time, in this order", "items": name},
            "placement_timeout_s": {"type": "integer", "minimum": 1, "maximum": MAX_PLACEMENT_TIMEOUT_S, "description": "this launch's own placement deadline (`?placement_timeout_s=`)"},
            "url": s("string")})),
        "DryRun": strict(&["dry_run", "fits", "summary", "cluster", "placement", "changes"], json!({
            "dry_run": {"type": "boolean", "enum": [true]},
            "fits": {"type": "boolean", "nullable": true, "description": "null when placement was not evaluated (see `placement`)"},
            "summary": s("string"),
            "cluster": strict(&["nodes", "cpus", "mem_mb"], json!({"nodes": {"type": "integer", "minimum": 0}, "cpus": s("number"), "mem_mb": s("number")})),
            "placement": {"type": "string", "enum": ["no_scheduler", "no_offers", "evaluated"]},
            "agents": {"type": "integer", "minimum": 0}, "seen_at": ts,
            "nodes": {"type": "array", "items": {"$ref": "#/components/schemas/NodeFit"}},
            "changes": {"type": "array", "items": strict(&["option", "from", "to", "effect", "text"], json!({
                "option": s("string"), "from": {}, "to": {}, "effect": {"type": "string", "enum": ["nodes", "mem", "cpus"]}, "text": s("string")}))}})),
        "NodeFit": strict(&["node", "needs", "fit"], json!({
            "node": s("string"),
            "needs": strict(&["cpus", "mem_mb", "disk_mb", "ports"], json!({"cpus": s("number"), "mem_mb": s("number"), "disk_mb": s("number"), "ports": {"type": "integer", "minimum": 0}})),
            "fit": {"type": "string", "enum": ["agent", "none"]},
            "agent_id": s("string"), "hostname": s("string"), "role": s("string"), "why": s("string"),
            "closest": strict(&["agent_id", "hostname", "short"], json!({"agent_id": s("string"), "hostname": s("string"), "role": s("string"),
                "short": {"type": "array", "items": strict(&["resource", "needed", "available"], json!({"resource": {"type": "string", "enum": ["cpus", "mem", "disk", "ports"]}, "needed": s("number"), "available": s("number")}))}}))})),
        "ClusterList": {"type": "object", "description": "One page of clusters, oldest first (creation time, then id).", "required": ["clusters"], "additionalProperties": false, "properties": {
            "clusters": {"type": "array", "items": {"$ref": "#/components/schemas/Cluster"}},
            "next": {"type": "string", "description": "the cursor of the next page; absent (never null) on the last page"}}},
        "NodeList": strict(&["nodes"], json!({"nodes": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}})),
        "ServiceList": strict(&["services"], json!({"services": {"type": "array", "items": {"$ref": "#/components/schemas/Service"}}})),
        "EventList": strict(&["events"], json!({"events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}})),
        "Health": {"type": "object", "description": "Without an admin token only `status`; the rest is for admins.", "required": ["status"], "additionalProperties": false, "properties": {
            "status": {"type": "string", "enum": ["up", "down"]}, "ready": s("boolean"), "detail": s("string"), "mesos": nullable("object"), "version": s("string")}},
        "OpenApi": {"type": "object", "required": ["openapi", "info", "paths", "components"], "properties": {"openapi": {"type": "string", "enum": ["3.0.3"]}}},
    });
    // Apart: one more entry above exceeds the json! macro's recursion limit.
    all["ExecRequest"] = strict(
        &["argv"],
        json!({
        "argv": {"type": "array", "minItems": 1, "maxItems": super::exec::MAX_ARGS, "items": {"type": "string"}, "description": "the command and its arguments (no shell), 64 KiB at most"},
        "timeout_s": {"type": "integer", "minimum": 1, "maximum": super::exec::MAX_TIMEOUT_S, "default": super::exec::DEFAULT_TIMEOUT_S}}),
    );
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
        let ops: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|p| p.as_object().unwrap().values())
            .map(|o| o["operationId"].as_str().unwrap())
            .collect();
        let unique: BTreeSet<_> = ops.iter().collect();
        assert_eq!(unique.len(), ops.len(), "operation ids are unique");
        assert_eq!(ops.len(), ROUTES.len());
        // Links name operations that exist.
        for link in text.split("\"operationId\":\"").skip(1) {
            let target: String = link.chars().take_while(|c| *c != '"').collect();
            assert!(unique.contains(&target.as_str()), "link to {target}");
        }
    }

    /// Every operation lists its statuses: no `default` that would let anything through.
    #[test]
    fn no_operation_has_a_default_response() {
        let doc = document();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                assert!(!responses.contains_key("default"), "{method} {path}");
                assert!(
                    responses.keys().any(|k| k.starts_with('2')),
                    "{method} {path}"
                );
            }
        }
    }

    /// The documented statuses are exactly the domain's, so a new state cannot go
    /// undocumented.
    #[test]
    fn statuses_are_the_domain_ones() {
        let doc = document();
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        // What serde writes, not `as_str`: the document must match the wire.
        fn wire<T: serde::Serialize>(v: &T) -> String {
            serde_json::to_value(v)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        }
        let schemas = &doc["components"]["schemas"];
        let cluster = strings(&schemas["Cluster"]["properties"]["status"]["enum"]);
        let domain: Vec<String> = ClusterStatus::ALL.iter().map(wire).collect();
        assert_eq!(cluster, domain);
        let node = strings(&schemas["Node"]["properties"]["status"]["enum"]);
        let domain: Vec<String> = NodeStatus::ALL.iter().map(wire).collect();
        assert_eq!(node, domain);
    }
}
