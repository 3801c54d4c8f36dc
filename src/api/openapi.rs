//! The OpenAPI 3 document, generated from the route table so that it lists exactly the
//! routes the parser accepts.

use serde_json::{Map, Value, json};

use super::console::Asset;
use super::paging::{DEFAULT_LIMIT, MAX_LIMIT};
use super::routes::{Access, ROUTES};

/// Builds the document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES.iter() {
        let mut op = json!({
            "operationId": if r.path.ends_with("/orchestrator") { format!("{}Alias", r.operation_id) } else { r.operation_id.to_owned() },
            "summary": r.summary,
            "x-access": r.access.as_str(),
            "parameters": parameters(r.path),
            "responses": responses(r.response),
        });
        if r.access != Access::Public {
            op["security"] = json!([{"bearer": []}]);
        }
        if let Some(req) = r.request {
            op["requestBody"] = match req {
                "raw" => {
                    json!({"required": true, "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}})
                }
                name => {
                    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}})
                }
            };
        }
        if r.operation_id == "listClusters" {
            let mut params: Vec<Value> = ["product", "version", "status", "owner"].map(|q| json!({"name": q, "in": "query", "required": false, "schema": {"type": "string"}})).into();
            params.push(json!({"name": "limit", "in": "query", "required": false, "description": format!("clusters per page, 1 to {MAX_LIMIT} (400 invalid_filter otherwise)"), "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}}));
            params.push(json!({"name": "cursor", "in": "query", "required": false, "description": "where the page starts: the `next` of the previous page (400 invalid_filter for anything else)", "schema": {"type": "string"}}));
            op["parameters"] = Value::Array(params);
            op["responses"]["200"]["headers"] = json!({"Link": {"description": "`<url>; rel=\"next\"`: the next page, only when there is one", "schema": {"type": "string"}}});
        }
        if r.operation_id == "getClusterEvents" {
            op["responses"]["200"]["content"]["text/event-stream"] =
                json!({"schema": {"type": "string"}});
        }
        if matches!(r.operation_id, "getClusterEvents" | "streamEvents") {
            let params = op["parameters"].as_array_mut();
            if let Some(params) = params {
                params.push(json!({"name": "Last-Event-ID", "in": "header", "required": false, "description": "resume a stream after this event id", "schema": {"type": "string", "pattern": "^[0-9]+$"}}));
            }
        }
        let entry = paths.entry(r.full_path()).or_insert_with(|| json!({}));
        entry[r.method.as_str().to_lowercase()] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Big Data PaaS on Apache Mesos",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Register products (template, options, orchestration script) and launch clusters of them on Mesos."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        }
    })
}

fn parameters(path: &str) -> Value {
    let params: Vec<Value> = path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|p| {
            let schema = if p == "id" {
                json!({"type": "string", "format": "uuid"})
            } else if p == "asset" {
                json!({"type": "string", "enum": Asset::ALL.map(Asset::file_name)})
            } else {
                json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]*$", "maxLength": 64})
            };
            json!({"name": p, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    Value::Array(params)
}

fn responses((status, schema): (u16, Option<&str>)) -> Value {
    let ok = match schema {
        None => json!({"description": "success"}),
        Some("sse") => {
            json!({"description": "a stream of server-sent events (`id`, `event`, one line of JSON `data`), until the client leaves", "content": {"text/event-stream": {"schema": {"type": "string"}}}})
        }
        Some("text") => {
            json!({"description": "success", "content": {"text/plain": {"schema": {"type": "string"}}}})
        }
        Some("html") => {
            json!({"description": "success", "content": {"text/html": {"schema": {"type": "string"}}}})
        }
        Some("asset") => {
            let file = json!({"schema": {"type": "string"}});
            json!({"description": "success", "content": {"text/javascript": file, "text/css": file, "image/svg+xml": file}})
        }
        Some(name) => {
            json!({"description": "success", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}}})
        }
    };
    let err = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    json!({ status.to_string(): ok, "default": err })
}

fn schemas() -> Value {
    let s = |t: &str| json!({"type": t});
    let ts = json!({"type": "string", "format": "date-time"});
    let name = json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]*$"});
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {"code": s("string"), "message": s("string"), "details": {}}}}},
        "ProductCreate": {"type": "object", "required": ["name", "version"], "additionalProperties": false, "properties": {"name": name, "version": name, "description": s("string"), "logo_url": s("string")}},
        "Product": {"type": "object", "properties": {
            "name": name, "version": name, "description": s("string"), "logo_url": s("string"),
            "created_at": ts, "updated_at": ts, "url": s("string"),
            "parts": {"type": "object", "properties": {"template": s("boolean"), "options": s("boolean"), "orchestrator": s("boolean")}}}},
        "ProductList": {"type": "object", "properties": {"products": {"type": "array", "items": {"$ref": "#/components/schemas/Product"}}}},
        "VersionList": {"type": "object", "properties": {"name": name, "versions": {"type": "array", "items": s("string")}}},
        "OptionsDoc": {"type": "object", "additionalProperties": false, "properties": {
            "required": {"type": "object", "description": "keys the user must give; each value is an example fixing the type"},
            "optional": {"type": "object", "description": "defaults"},
            "advanced": {"type": "object", "description": "defaults for expert settings; only an admin may set them (403 for users)"},
            "descriptions": {"type": "object"},
            "enum": {"type": "object", "description": "option → the values it may take (any section)"}}},
        "LaunchOptions": {"type": "object", "description": "option values; numbers may be numeric strings", "additionalProperties": true},
        "LaunchAccepted": {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}, "status": s("string"), "url": s("string")}},
        "ClusterUpdate": {"type": "object", "required": ["options"], "additionalProperties": false, "properties": {
            "options": {"type": "object", "description": "new values of some of the product's options (numbers may be numeric strings); the others keep their current values", "additionalProperties": true}}},
        "UpdateAccepted": {"type": "object", "properties": {"id": {"type": "string", "format": "uuid"}, "status": s("string"), "generation": s("integer"), "url": s("string")}},
        "Node": {"type": "object", "properties": {
            "name": s("string"), "status": {"type": "string", "enum": ["queued", "staging", "starting", "running", "killing", "finished", "failed", "killed", "lost", "error", "dropped", "unreachable", "gone", "gone_by_operator", "unknown"]},
            "docker_image": s("string"), "cpu": s("number"), "mem": s("number"), "disk": s("number"),
            "port_names": {"type": "array", "items": s("string")}, "ports": {"type": "object", "additionalProperties": s("integer")},
            "services": {"type": "array", "items": s("string")}, "host": s("string"), "address": s("string"),
            "task_id": s("string"), "agent_id": s("string"), "attempt": s("integer"), "message": s("string")}},
        "Service": {"type": "object", "properties": {"name": s("string"), "nodes": {"type": "array", "items": s("string")}, "files": {"type": "array"}, "start": {}, "ready": {}, "properties": s("object")}},
        "Event": {"type": "object", "properties": {"at": ts, "status": s("string"), "message": s("string")}},
        "Cluster": {"type": "object", "properties": {
            "id": {"type": "string", "format": "uuid"}, "owner": s("string"), "product": name, "version": name,
            "options": s("object"), "status": {"type": "string", "enum": ["registered", "scheduling", "scheduled", "configuring", "configured", "ready", "healing", "updating", "failed", "destroying", "destroyed"]},
            "generation": {"type": "integer", "description": "grows with every change of the desired spec (launch = 1)"},
            "retiring": {"type": "array", "description": "nodes an update removed whose tasks are being drained and killed", "items": {"type": "object", "properties": {"node": {"$ref": "#/components/schemas/Node"}, "drained": s("boolean")}}},
            "rolling": {"type": "array", "description": "nodes a rolling update still replaces, one at a time, in this order", "items": s("string")},
            "reason": s("string"), "desired": {"type": "string", "enum": ["running", "destroyed"]},
            "created_at": ts, "updated_at": ts, "url": s("string"),
            "nodes": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
            "services": {"type": "array", "items": {"$ref": "#/components/schemas/Service"}},
            "history": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}}},
        "ClusterList": {"type": "object", "description": "One page of clusters, oldest first (creation time, then id).", "required": ["clusters"], "properties": {
            "clusters": {"type": "array", "items": {"$ref": "#/components/schemas/Cluster"}},
            "next": {"type": "string", "description": "the cursor of the next page; absent (never null) on the last page"}}},
        "NodeList": {"type": "object", "properties": {"nodes": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}}},
        "ServiceList": {"type": "object", "properties": {"services": {"type": "array", "items": {"$ref": "#/components/schemas/Service"}}}},
        "EventList": {"type": "object", "properties": {"events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}}}},
        "Health": {"type": "object", "description": "Without an admin token only `status`; the rest is for admins.", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["up", "down"]}, "ready": s("boolean"), "detail": s("string"), "mesos": s("object"), "version": s("string")}},
    })
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
        let unique: std::collections::BTreeSet<_> = ops.iter().collect();
        assert_eq!(unique.len(), ops.len(), "operation ids are unique");
        assert_eq!(ops.len(), ROUTES.len());
    }

    /// The documented cluster statuses are exactly the domain's, so a new state (like
    /// `healing` and `updating`) cannot go undocumented.
    #[test]
    fn cluster_statuses_are_the_domain_ones() {
        let doc = document();
        let documented: Vec<&str> = doc["components"]["schemas"]["Cluster"]["properties"]["status"]
            ["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let domain: Vec<&str> = crate::domain::ClusterStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(documented, domain);
    }
}
