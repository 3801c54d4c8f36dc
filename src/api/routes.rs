//! Route parsing: a pure function from method and path to an [`Endpoint`], who may call
//! each endpoint ([`Endpoint::access`]), and the route table that the OpenAPI document is
//! generated from (so the three cannot disagree).

use http::Method;

use super::console::Asset;
use crate::domain::{ClusterId, Name, Part};

/// The API's base path, kept from the original system.
pub const BASE: &str = "/bigdata/api/v1";

/// One parsed request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    ListProducts,
    CreateProduct,
    ListVersions {
        name: Name,
    },
    GetProduct {
        name: Name,
        version: Name,
    },
    DeleteProduct {
        name: Name,
        version: Name,
    },
    Launch {
        name: Name,
        version: Name,
    },
    PutPart {
        name: Name,
        version: Name,
        part: Part,
    },
    GetPart {
        name: Name,
        version: Name,
        part: Part,
    },
    /// `PUT`: the whole product folder as one tar (manifest, template, options, script).
    PutBundle {
        name: Name,
        version: Name,
    },
    GetBundle {
        name: Name,
        version: Name,
    },
    ListClusters,
    GetCluster {
        id: ClusterId,
    },
    /// `PATCH`: a change of the cluster's options (scale or update).
    UpdateCluster {
        id: ClusterId,
    },
    DeleteCluster {
        id: ClusterId,
    },
    ClusterNodes {
        id: ClusterId,
    },
    ClusterServices {
        id: ClusterId,
    },
    ClusterEvents {
        id: ClusterId,
    },
    ClusterLogs {
        id: ClusterId,
    },
    /// `GET /events`: the live event stream of every cluster the caller may see.
    Events,
    ReplaceNode {
        id: ClusterId,
        node: Name,
    },
    RestartNode {
        id: ClusterId,
        node: Name,
    },
    /// `POST …/nodes/{node}/exec`: run a command on the node, output streamed.
    ExecNode {
        id: ClusterId,
        node: Name,
    },
    Health,
    HealthReady,
    Metrics,
    OpenApi,
    /// `GET /`: the web console's page (outside [`BASE`]: it is the site's root).
    Console,
    /// `GET /console/{asset}`: a script, style sheet or icon of the console.
    ConsoleAsset {
        asset: Asset,
    },
}

/// Who may call an endpoint. The one place the API decides what is public and what needs
/// an admin; the dispatcher checks it before any handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a token: liveness, readiness, metrics and the API description.
    Public,
    /// Any valid token. Clusters are further limited to their owner (admins see all).
    User,
    /// An admin token: product registration and orchestration scripts, which are code the
    /// framework runs.
    Admin,
}

impl Access {
    /// The name the OpenAPI document uses (`x-access`).
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::User => "user",
            Access::Admin => "admin",
        }
    }
}

/// Why a request target matches no endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    NotFound,
    /// The path exists but not with this method; the allowed methods.
    MethodNotAllowed(Vec<Method>),
    /// A path segment that must be a name is not one.
    BadName {
        segment: String,
        why: String,
    },
}

impl Endpoint {
    /// Parses a request. A single trailing slash is ignored (the original API used them).
    ///
    /// # Errors
    /// [`RouteError`]: unknown path, wrong method, or an invalid name segment.
    pub fn parse(method: &Method, path: &str) -> Result<Self, RouteError> {
        if let Some(console) = Self::parse_console(method, path) {
            return console;
        }
        let rest = path.strip_prefix(BASE).ok_or(RouteError::NotFound)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let segs: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.strip_prefix('/')
                .ok_or(RouteError::NotFound)?
                .split('/')
                .collect()
        };
        let name = |s: &str| {
            Name::parse(s).map_err(|e| RouteError::BadName {
                segment: s.to_owned(),
                why: e.to_string(),
            })
        };
        let cluster = |s: &str| s.parse::<ClusterId>().map_err(|_| RouteError::NotFound);
        let (allowed, ep): (&[Method], Option<Endpoint>) = match (segs.as_slice(), method) {
            (["products"], &Method::GET) => (&[], Some(Endpoint::ListProducts)),
            (["products"], &Method::POST) => (&[], Some(Endpoint::CreateProduct)),
            (["products"], _) => (&[Method::GET, Method::POST], None),
            (["products", n], &Method::GET) => {
                (&[], Some(Endpoint::ListVersions { name: name(n)? }))
            }
            (["products", _], _) => (&[Method::GET], None),
            (["products", n, v], m) => {
                let (name, version) = (name(n)?, name(v)?);
                match *m {
                    Method::GET => (&[], Some(Endpoint::GetProduct { name, version })),
                    Method::DELETE => (&[], Some(Endpoint::DeleteProduct { name, version })),
                    Method::POST => (&[], Some(Endpoint::Launch { name, version })),
                    _ => (&[Method::GET, Method::POST, Method::DELETE], None),
                }
            }
            (["products", n, v, "bundle"], m) => {
                let (name, version) = (name(n)?, name(v)?);
                match *m {
                    Method::GET => (&[], Some(Endpoint::GetBundle { name, version })),
                    Method::PUT => (&[], Some(Endpoint::PutBundle { name, version })),
                    _ => (&[Method::GET, Method::PUT], None),
                }
            }
            (["products", n, v, p], m) => {
                let part = match *p {
                    "template" => Part::Template,
                    "options" => Part::Options,
                    "orquestrator" | "orchestrator" => Part::Orchestrator,
                    _ => return Err(RouteError::NotFound),
                };
                let (name, version) = (name(n)?, name(v)?);
                match *m {
                    Method::GET => (
                        &[],
                        Some(Endpoint::GetPart {
                            name,
                            version,
                            part,
                        }),
                    ),
                    Method::PUT => (
                        &[],
                        Some(Endpoint::PutPart {
                            name,
                            version,
                            part,
                        }),
                    ),
                    _ => (&[Method::GET, Method::PUT], None),
                }
            }
            (["clusters"], &Method::GET) => (&[], Some(Endpoint::ListClusters)),
            (["clusters"], _) => (&[Method::GET], None),
            (["clusters", id], m) => {
                let id = cluster(id)?;
                match *m {
                    Method::GET => (&[], Some(Endpoint::GetCluster { id })),
                    Method::PATCH => (&[], Some(Endpoint::UpdateCluster { id })),
                    Method::DELETE => (&[], Some(Endpoint::DeleteCluster { id })),
                    _ => (&[Method::GET, Method::PATCH, Method::DELETE], None),
                }
            }
            (
                [
                    "clusters",
                    id,
                    "nodes",
                    node,
                    verb @ ("replace" | "restart" | "exec"),
                ],
                m,
            ) => {
                let (id, node) = (cluster(id)?, name(node)?);
                let ep = match *verb {
                    "replace" => Endpoint::ReplaceNode { id, node },
                    "restart" => Endpoint::RestartNode { id, node },
                    _ => Endpoint::ExecNode { id, node },
                };
                if *m == Method::POST {
                    (&[], Some(ep))
                } else {
                    (&[Method::POST], None)
                }
            }
            (["clusters", id, sub], m) => {
                let id = cluster(id)?;
                let ep = match *sub {
                    "nodes" => Endpoint::ClusterNodes { id },
                    "services" => Endpoint::ClusterServices { id },
                    "events" => Endpoint::ClusterEvents { id },
                    "logs" => Endpoint::ClusterLogs { id },
                    _ => return Err(RouteError::NotFound),
                };
                if *m == Method::GET {
                    (&[], Some(ep))
                } else {
                    (&[Method::GET], None)
                }
            }
            (["events"], &Method::GET) => (&[], Some(Endpoint::Events)),
            (["events"], _) => (&[Method::GET], None),
            (["health"], &Method::GET) => (&[], Some(Endpoint::Health)),
            (["health", "ready"], &Method::GET) => (&[], Some(Endpoint::HealthReady)),
            (["metrics"], &Method::GET) => (&[], Some(Endpoint::Metrics)),
            (["openapi.json"], &Method::GET) => (&[], Some(Endpoint::OpenApi)),
            (["health"] | ["health", "ready"] | ["metrics"] | ["openapi.json"], _) => {
                (&[Method::GET], None)
            }
            _ => return Err(RouteError::NotFound),
        };
        ep.ok_or_else(|| RouteError::MethodNotAllowed(allowed.to_vec()))
    }

    /// The console's routes, outside [`BASE`]; `None` for any other path.
    fn parse_console(method: &Method, path: &str) -> Option<Result<Self, RouteError>> {
        let ep = if path == "/" {
            Endpoint::Console
        } else {
            let file = path.strip_prefix("/console/")?;
            match Asset::from_file_name(file) {
                Some(asset) => Endpoint::ConsoleAsset { asset },
                None => return Some(Err(RouteError::NotFound)),
            }
        };
        Some(if *method == Method::GET {
            Ok(ep)
        } else {
            Err(RouteError::MethodNotAllowed(vec![Method::GET]))
        })
    }

    /// Who may call this endpoint.
    pub fn access(&self) -> Access {
        match self {
            // The console's files hold no data: every call the page makes carries its token.
            Endpoint::Health
            | Endpoint::HealthReady
            | Endpoint::Metrics
            | Endpoint::OpenApi
            | Endpoint::Console
            | Endpoint::ConsoleAsset { .. } => Access::Public,
            Endpoint::ListProducts
            | Endpoint::ListVersions { .. }
            | Endpoint::GetProduct { .. }
            | Endpoint::Launch { .. }
            | Endpoint::ListClusters
            | Endpoint::GetCluster { .. }
            | Endpoint::UpdateCluster { .. }
            | Endpoint::DeleteCluster { .. }
            | Endpoint::ClusterNodes { .. }
            | Endpoint::ClusterServices { .. }
            | Endpoint::ClusterEvents { .. }
            | Endpoint::ClusterLogs { .. }
            | Endpoint::Events
            | Endpoint::ReplaceNode { .. }
            | Endpoint::RestartNode { .. }
            | Endpoint::ExecNode { .. } => Access::User,
            // Templates and options are read by every user who launches; the orchestration
            // script is code we execute, so only admins may read it as well as write it.
            Endpoint::GetPart { part, .. } => match part {
                Part::Template | Part::Options => Access::User,
                Part::Orchestrator => Access::Admin,
            },
            // A bundle holds the orchestration script: admins only, both ways.
            Endpoint::CreateProduct
            | Endpoint::DeleteProduct { .. }
            | Endpoint::PutPart { .. }
            | Endpoint::PutBundle { .. }
            | Endpoint::GetBundle { .. } => Access::Admin,
        }
    }

    /// The OpenAPI `operationId` of this endpoint; ties parsed requests to [`ROUTES`].
    pub fn operation_id(&self) -> &'static str {
        match self {
            Endpoint::ListProducts => "listProducts",
            Endpoint::CreateProduct => "createProduct",
            Endpoint::ListVersions { .. } => "listVersions",
            Endpoint::GetProduct { .. } => "getProduct",
            Endpoint::DeleteProduct { .. } => "deleteProduct",
            Endpoint::Launch { .. } => "launchCluster",
            Endpoint::PutPart { part, .. } => match part {
                Part::Template => "putTemplate",
                Part::Options => "putOptions",
                Part::Orchestrator => "putOrchestrator",
            },
            Endpoint::GetPart { part, .. } => match part {
                Part::Template => "getTemplate",
                Part::Options => "getOptions",
                Part::Orchestrator => "getOrchestrator",
            },
            Endpoint::PutBundle { .. } => "putBundle",
            Endpoint::GetBundle { .. } => "getBundle",
            Endpoint::ListClusters => "listClusters",
            Endpoint::GetCluster { .. } => "getCluster",
            Endpoint::UpdateCluster { .. } => "updateCluster",
            Endpoint::DeleteCluster { .. } => "deleteCluster",
            Endpoint::ClusterNodes { .. } => "getClusterNodes",
            Endpoint::ClusterServices { .. } => "getClusterServices",
            Endpoint::ClusterEvents { .. } => "getClusterEvents",
            Endpoint::ClusterLogs { .. } => "getClusterLogs",
            Endpoint::Events => "streamEvents",
            Endpoint::ReplaceNode { .. } => "replaceNode",
            Endpoint::RestartNode { .. } => "restartNode",
            Endpoint::ExecNode { .. } => "execNode",
            Endpoint::Health => "health",
            Endpoint::HealthReady => "healthReady",
            Endpoint::Metrics => "metrics",
            Endpoint::OpenApi => "openapi",
            Endpoint::Console => "console",
            Endpoint::ConsoleAsset { .. } => "consoleAsset",
        }
    }
}

/// One row of the route table: what the OpenAPI document says about an operation.
pub struct Route {
    pub method: Method,
    /// What [`Self::path`] is below: [`BASE`] for the API, `""` for the console.
    pub prefix: &'static str,
    /// Path below [`Self::prefix`], with `{param}` placeholders.
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    /// Name of the request body schema in `components.schemas`, if any; `raw` = any bytes;
    /// `tar` = a bundle.
    pub request: Option<&'static str>,
    /// Success status and the response schema name (`None` = no body; `text` = plain text;
    /// `part` = an uploaded part, text or bytes; `tar` = a bundle; `stream` = server-sent
    /// events).
    pub response: (u16, Option<&'static str>),
    /// Who may call; always equal to [`Endpoint::access`] of the parsed route (tested).
    pub access: Access,
}

impl Route {
    /// The path a client requests, with `{param}` placeholders.
    pub fn full_path(&self) -> String {
        format!("{}{}", self.prefix, self.path)
    }
}

macro_rules! route {
    (ROOT $($rest:tt)*) => {
        Route { prefix: "", ..route!($($rest)*) }
    };
    ($m:ident $p:literal $op:literal $sum:literal, $req:expr, $st:literal $resp:expr, $acc:ident) => {
        Route {
            method: Method::$m,
            prefix: BASE,
            path: $p,
            operation_id: $op,
            summary: $sum,
            request: $req,
            response: ($st, $resp),
            access: Access::$acc,
        }
    };
}

/// Every route the server answers, in documentation order.
pub static ROUTES: std::sync::LazyLock<Vec<Route>> = std::sync::LazyLock::new(|| {
    vec![
        route!(GET "/products" "listProducts" "List every product version", None, 200 Some("ProductList"), User),
        route!(POST "/products" "createProduct" "Register a product version", Some("ProductCreate"), 201 Some("Product"), Admin),
        route!(GET "/products/{name}" "listVersions" "List the versions of a product", None, 200 Some("VersionList"), User),
        route!(GET "/products/{name}/{version}" "getProduct" "Get a product version, including which parts are set", None, 200 Some("Product"), User),
        route!(DELETE "/products/{name}/{version}" "deleteProduct" "Delete a product version (409 while live clusters use it)", None, 204 None, Admin),
        route!(POST "/products/{name}/{version}" "launchCluster" "Launch a cluster with these options", Some("LaunchOptions"), 202 Some("LaunchAccepted"), User),
        route!(PUT "/products/{name}/{version}/template" "putTemplate" "Upload the handlebars cluster template", Some("raw"), 200 Some("Product"), Admin),
        route!(GET "/products/{name}/{version}/template" "getTemplate" "Download the cluster template", None, 200 Some("part"), User),
        route!(PUT "/products/{name}/{version}/options" "putOptions" "Upload the options document", Some("OptionsDoc"), 200 Some("Product"), Admin),
        route!(GET "/products/{name}/{version}/options" "getOptions" "Download the options document", None, 200 Some("OptionsDoc"), User),
        route!(PUT "/products/{name}/{version}/orquestrator" "putOrchestrator" "Upload the orchestration script (raw bytes; alias /orchestrator)", Some("raw"), 200 Some("Product"), Admin),
        route!(GET "/products/{name}/{version}/orquestrator" "getOrchestrator" "Download the orchestration script (alias /orchestrator)", None, 200 Some("part"), Admin),
        route!(PUT "/products/{name}/{version}/orchestrator" "putOrchestrator" "Alias of /orquestrator", Some("raw"), 200 Some("Product"), Admin),
        route!(GET "/products/{name}/{version}/orchestrator" "getOrchestrator" "Alias of /orquestrator", None, 200 Some("part"), Admin),
        route!(PUT "/products/{name}/{version}/bundle" "putBundle" "Register or replace a product version with its whole folder (a tar of product.json, template, options and script), atomically: 201 when new, 200 when replaced; 400 invalid_bundle names every bad file", Some("tar"), 200 Some("Product"), Admin),
        route!(GET "/products/{name}/{version}/bundle" "getBundle" "Download the product version as a folder in a tar (409 until every part is set)", None, 200 Some("tar"), Admin),
        route!(GET "/clusters" "listClusters" "List clusters a page at a time (own clusters; admins see all)", None, 200 Some("ClusterList"), User),
        route!(GET "/clusters/{id}" "getCluster" "Get the full cluster record", None, 200 Some("Cluster"), User),
        route!(PATCH "/clusters/{id}" "updateCluster" "Change a ready cluster's options (scale, update): 202 with the new generation, 200 when nothing changes, 409 unless ready (not queued)", Some("ClusterUpdate"), 202 Some("UpdateAccepted"), User),
        route!(DELETE "/clusters/{id}" "deleteCluster" "Destroy a cluster", None, 202 Some("LaunchAccepted"), User),
        route!(GET "/clusters/{id}/nodes" "getClusterNodes" "The cluster's nodes", None, 200 Some("NodeList"), User),
        route!(GET "/clusters/{id}/services" "getClusterServices" "The cluster's services", None, 200 Some("ServiceList"), User),
        route!(GET "/clusters/{id}/events" "getClusterEvents" "The cluster's status history; with Accept: text/event-stream, a live stream of its record, history and changes", None, 200 Some("EventList"), User),
        route!(GET "/clusters/{id}/logs" "getClusterLogs" "Orchestrator output", None, 200 Some("text"), User),
        route!(POST "/clusters/{id}/nodes/{node}/replace" "replaceNode" "Replace a node with a new attempt (the cluster goes updating, then ready)", None, 202 Some("UpdateAccepted"), User),
        route!(POST "/clusters/{id}/nodes/{node}/restart" "restartNode" "Restart a node's services in place (the cluster goes updating, then ready)", None, 202 Some("UpdateAccepted"), User),
        route!(GET "/events" "streamEvents" "Live events (text/event-stream) of every cluster the caller may see; honours Last-Event-ID", None, 200 Some("stream"), User),
        route!(POST "/clusters/{id}/nodes/{node}/exec" "execNode" "Run a command on a running node (owner or admin; 403 exec_disabled when the product's template says \"exec\": false); its output streamed as text/event-stream: stdout/stderr events, then one exit event", Some("ExecRequest"), 200 Some("stream"), User),
        route!(GET "/health" "health" "Liveness: up or down (readiness details with an admin token)", None, 200 Some("Health"), Public),
        route!(GET "/health/ready" "healthReady" "Readiness: 200 when ready, else 503 (details with an admin token)", None, 200 Some("Health"), Public),
        route!(GET "/metrics" "metrics" "Prometheus metrics", None, 200 Some("text"), Public),
        route!(GET "/openapi.json" "openapi" "This document", None, 200 Some("OpenApi"), Public),
        route!(ROOT GET "/" "console" "The web console (its calls to the API carry the token typed into it)", None, 200 Some("html"), Public),
        route!(ROOT GET "/console/{asset}" "consoleAsset" "A file of the web console", None, 200 Some("asset"), Public),
    ]
});

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10";

    fn p(m: Method, path: &str) -> Result<Endpoint, RouteError> {
        Endpoint::parse(&m, path)
    }

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[test]
    fn table() {
        let id: ClusterId = ID.parse().unwrap();
        let cases = [
            (
                Method::GET,
                "/bigdata/api/v1/products".to_owned(),
                Endpoint::ListProducts,
            ),
            (
                Method::GET,
                "/bigdata/api/v1/products/".to_owned(),
                Endpoint::ListProducts,
            ),
            (
                Method::POST,
                "/bigdata/api/v1/products".to_owned(),
                Endpoint::CreateProduct,
            ),
            (
                Method::GET,
                "/bigdata/api/v1/products/spark".to_owned(),
                Endpoint::ListVersions { name: n("spark") },
            ),
            (
                Method::GET,
                "/bigdata/api/v1/products/spark/4.x".to_owned(),
                Endpoint::GetProduct {
                    name: n("spark"),
                    version: n("4.x"),
                },
            ),
            (
                Method::POST,
                "/bigdata/api/v1/products/reference/1.0.0".to_owned(),
                Endpoint::Launch {
                    name: n("reference"),
                    version: n("1.0.0"),
                },
            ),
            (
                Method::DELETE,
                "/bigdata/api/v1/products/a/1".to_owned(),
                Endpoint::DeleteProduct {
                    name: n("a"),
                    version: n("1"),
                },
            ),
            (
                Method::PUT,
                "/bigdata/api/v1/products/a/1/template".to_owned(),
                Endpoint::PutPart {
                    name: n("a"),
                    version: n("1"),
                    part: Part::Template,
                },
            ),
            (
                Method::GET,
                "/bigdata/api/v1/products/a/1/options/".to_owned(),
                Endpoint::GetPart {
                    name: n("a"),
                    version: n("1"),
                    part: Part::Options,
                },
            ),
            (
                Method::PUT,
                "/bigdata/api/v1/products/a/1/orquestrator".to_owned(),
                Endpoint::PutPart {
                    name: n("a"),
                    version: n("1"),
                    part: Part::Orchestrator,
                },
            ),
            (
                Method::PUT,
                "/bigdata/api/v1/products/a/1/orchestrator".to_owned(),
                Endpoint::PutPart {
                    name: n("a"),
                    version: n("1"),
                    part: Part::Orchestrator,
                },
            ),
            (
                Method::GET,
                "/bigdata/api/v1/clusters".to_owned(),
                Endpoint::ListClusters,
            ),
            (
                Method::GET,
                format!("/bigdata/api/v1/clusters/{ID}"),
                Endpoint::GetCluster { id },
            ),
            (
                Method::PATCH,
                format!("/bigdata/api/v1/clusters/{ID}"),
                Endpoint::UpdateCluster { id },
            ),
            (
                Method::PATCH,
                format!("/bigdata/api/v1/clusters/{ID}/"),
                Endpoint::UpdateCluster { id },
            ),
            (
                Method::DELETE,
                format!("/bigdata/api/v1/clusters/{ID}"),
                Endpoint::DeleteCluster { id },
            ),
            (
                Method::GET,
                format!("/bigdata/api/v1/clusters/{ID}/nodes"),
                Endpoint::ClusterNodes { id },
            ),
            (
                Method::GET,
                format!("/bigdata/api/v1/clusters/{ID}/services"),
                Endpoint::ClusterServices { id },
            ),
            (
                Method::GET,
                format!("/bigdata/api/v1/clusters/{ID}/events"),
                Endpoint::ClusterEvents { id },
            ),
            (
                Method::GET,
                format!("/bigdata/api/v1/clusters/{ID}/logs"),
                Endpoint::ClusterLogs { id },
            ),
            (
                Method::GET,
                "/bigdata/api/v1/events".to_owned(),
                Endpoint::Events,
            ),
            (
                Method::GET,
                "/bigdata/api/v1/health".to_owned(),
                Endpoint::Health,
            ),
            (
                Method::GET,
                "/bigdata/api/v1/health/ready".to_owned(),
                Endpoint::HealthReady,
            ),
            (
                Method::GET,
                "/bigdata/api/v1/metrics".to_owned(),
                Endpoint::Metrics,
            ),
            (
                Method::GET,
                "/bigdata/api/v1/openapi.json".to_owned(),
                Endpoint::OpenApi,
            ),
            (Method::GET, "/".to_owned(), Endpoint::Console),
            (
                Method::GET,
                "/console/app.js".to_owned(),
                Endpoint::ConsoleAsset {
                    asset: Asset::Script,
                },
            ),
            (
                Method::GET,
                "/console/app.css".to_owned(),
                Endpoint::ConsoleAsset {
                    asset: Asset::Style,
                },
            ),
        ];
        for (m, path, want) in cases {
            assert_eq!(p(m.clone(), &path), Ok(want), "{m} {path}");
        }
    }

    #[test]
    fn errors() {
        assert_eq!(p(Method::GET, "/index.html"), Err(RouteError::NotFound));
        assert_eq!(
            p(Method::GET, "/console/nope.js"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            p(Method::GET, "/console/../bigdata/api/v1/products"),
            Err(RouteError::NotFound)
        );
        assert_eq!(p(Method::GET, "/console/"), Err(RouteError::NotFound));
        assert_eq!(
            p(Method::POST, "/"),
            Err(RouteError::MethodNotAllowed(vec![Method::GET]))
        );
        assert_eq!(
            p(Method::DELETE, "/console/app.js"),
            Err(RouteError::MethodNotAllowed(vec![Method::GET]))
        );
        assert_eq!(p(Method::GET, "/bigdata/api/v1"), Err(RouteError::NotFound));
        assert_eq!(
            p(Method::GET, "/bigdata/api/v1x/products"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            p(Method::GET, "/bigdata/api/v1/products/a/1/readme"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            p(Method::GET, "/bigdata/api/v1/clusters/not-a-uuid"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            p(Method::GET, "/bigdata/api/v1/products//1"),
            Err(RouteError::BadName {
                segment: String::new(),
                why: "name is empty".into()
            })
        );
        assert!(matches!(
            p(Method::GET, "/bigdata/api/v1/products/../1"),
            Err(RouteError::BadName { .. })
        ));
        assert!(matches!(
            p(Method::GET, "/bigdata/api/v1/products/Spark"),
            Err(RouteError::BadName { .. })
        ));
        assert_eq!(
            p(Method::PATCH, "/bigdata/api/v1/products"),
            Err(RouteError::MethodNotAllowed(vec![
                Method::GET,
                Method::POST
            ]))
        );
        assert_eq!(
            p(Method::POST, "/bigdata/api/v1/clusters"),
            Err(RouteError::MethodNotAllowed(vec![Method::GET]))
        );
        assert_eq!(
            p(Method::PUT, &format!("/bigdata/api/v1/clusters/{ID}")),
            Err(RouteError::MethodNotAllowed(vec![
                Method::GET,
                Method::PATCH,
                Method::DELETE
            ]))
        );
        assert_eq!(
            p(Method::PATCH, "/bigdata/api/v1/clusters"),
            Err(RouteError::MethodNotAllowed(vec![Method::GET]))
        );
        assert_eq!(
            p(
                Method::PATCH,
                &format!("/bigdata/api/v1/clusters/{ID}/nodes")
            ),
            Err(RouteError::MethodNotAllowed(vec![Method::GET]))
        );
        assert_eq!(
            p(Method::PATCH, "/bigdata/api/v1/clusters/not-a-uuid"),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            p(Method::DELETE, "/bigdata/api/v1/products/a/1/template"),
            Err(RouteError::MethodNotAllowed(vec![Method::GET, Method::PUT]))
        );
    }

    /// Every row of the table parses to an endpoint with the same operation id, and every
    /// method the parser allows on a path is in the table: the OpenAPI document is exact.
    #[test]
    fn route_table_matches_the_parser() {
        let all = [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ];
        for r in ROUTES.iter() {
            let path = r
                .full_path()
                .replace("{name}", "a")
                .replace("{version}", "1")
                .replace("{id}", ID)
                .replace("{node}", "node1")
                .replace("{asset}", "app.js");
            let ep = Endpoint::parse(&r.method, &path)
                .unwrap_or_else(|e| panic!("{} {path}: {e:?}", r.method));
            assert_eq!(ep.operation_id(), r.operation_id, "{} {}", r.method, r.path);
            assert_eq!(ep.access(), r.access, "{} {}", r.method, r.path);
            for m in &all {
                let in_table = ROUTES
                    .iter()
                    .any(|x| x.full_path() == r.full_path() && x.method == m);
                assert_eq!(
                    Endpoint::parse(m, &path).is_ok(),
                    in_table,
                    "{m} {}",
                    r.path
                );
            }
        }
    }

    /// The other half of exactness: whatever the parser accepts is a row of the table (same
    /// method, same operation, a path the row's template matches). Every path of up to four
    /// segments over the table's words and sample values is tried, and every longer row
    /// with one segment changed.
    #[test]
    fn the_parser_routes_nothing_outside_the_table() {
        let methods = [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
        ];
        let templates: Vec<Vec<&str>> = ROUTES
            .iter()
            .map(|r| r.path.trim_start_matches('/').split('/').collect())
            .collect();
        // The table's words, and every word the parser's source spells (a path the parser
        // knows and the table does not would otherwise never be tried).
        let source = include_str!("routes.rs");
        let parser = &source[source.find("pub fn parse(").unwrap()
            ..source.find("/// Who may call this endpoint.").unwrap()];
        let spelled = parser.split('"').skip(1).step_by(2).filter(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
        });
        let mut words: Vec<&str> = vec!["a", "1", ID, "node1", "x"];
        for seg in templates.iter().flatten().copied().chain(spelled) {
            if !seg.is_empty() && !seg.starts_with('{') && !words.contains(&seg) {
                words.push(seg);
            }
        }
        let fits = |template: &[&str], segs: &[&str]| {
            template.len() == segs.len()
                && template
                    .iter()
                    .zip(segs)
                    .all(|(t, s)| t.starts_with('{') || t == s)
        };
        let check = |segs: &[&str]| {
            let path = format!("{BASE}/{}", segs.join("/"));
            for m in &methods {
                if let Ok(ep) = Endpoint::parse(m, &path) {
                    let row = ROUTES.iter().zip(&templates).any(|(r, t)| {
                        r.prefix == BASE
                            && r.method == m
                            && r.operation_id == ep.operation_id()
                            && fits(t, segs)
                    });
                    assert!(
                        row,
                        "{m} {path} routes to {ep:?}, which no row of the table says"
                    );
                }
            }
        };
        let mut frontier: Vec<Vec<&str>> = vec![Vec::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for prefix in &frontier {
                for w in &words {
                    let mut segs = prefix.clone();
                    segs.push(w);
                    check(&segs);
                    next.push(segs);
                }
            }
            frontier = next;
        }
        for t in templates.iter().filter(|t| t.len() > 4) {
            for i in 0..t.len() {
                for w in &words {
                    let mut segs: Vec<&str> = t
                        .iter()
                        .map(|s| match *s {
                            "{id}" => ID,
                            s if s.starts_with('{') => "a",
                            s => s,
                        })
                        .collect();
                    segs[i] = w;
                    check(&segs);
                }
            }
        }
    }

    /// Who may call what, for every endpoint (every part, too): the table covers every
    /// operation of [`ROUTES`], so a new endpoint cannot go untested.
    #[test]
    fn access_table() {
        let id: ClusterId = ID.parse().unwrap();
        let (name, version) = (n("a"), n("1"));
        let part = |part| (name.clone(), version.clone(), part);
        let mut cases = vec![
            (Endpoint::Health, Access::Public),
            (Endpoint::HealthReady, Access::Public),
            (Endpoint::Metrics, Access::Public),
            (Endpoint::OpenApi, Access::Public),
            (Endpoint::Console, Access::Public),
            (
                Endpoint::ConsoleAsset {
                    asset: Asset::Script,
                },
                Access::Public,
            ),
            (Endpoint::ListProducts, Access::User),
            (Endpoint::CreateProduct, Access::Admin),
            (Endpoint::ListVersions { name: n("a") }, Access::User),
            (
                Endpoint::GetProduct {
                    name: n("a"),
                    version: n("1"),
                },
                Access::User,
            ),
            (
                Endpoint::DeleteProduct {
                    name: n("a"),
                    version: n("1"),
                },
                Access::Admin,
            ),
            (
                Endpoint::Launch {
                    name: n("a"),
                    version: n("1"),
                },
                Access::User,
            ),
            (
                Endpoint::PutBundle {
                    name: n("a"),
                    version: n("1"),
                },
                Access::Admin,
            ),
            (
                Endpoint::GetBundle {
                    name: n("a"),
                    version: n("1"),
                },
                Access::Admin,
            ),
            (Endpoint::ListClusters, Access::User),
            (Endpoint::GetCluster { id }, Access::User),
            (Endpoint::UpdateCluster { id }, Access::User),
            (Endpoint::DeleteCluster { id }, Access::User),
            (Endpoint::ClusterNodes { id }, Access::User),
            (Endpoint::ClusterServices { id }, Access::User),
            (Endpoint::ClusterEvents { id }, Access::User),
            (Endpoint::ClusterLogs { id }, Access::User),
            (Endpoint::Events, Access::User),
            (
                Endpoint::ExecNode {
                    id,
                    node: Name::parse("node1").unwrap(),
                },
                Access::User,
            ),
            (
                Endpoint::ReplaceNode {
                    id,
                    node: Name::parse("node1").unwrap(),
                },
                Access::User,
            ),
            (
                Endpoint::RestartNode {
                    id,
                    node: Name::parse("node1").unwrap(),
                },
                Access::User,
            ),
        ];
        for (p, get) in [
            (Part::Template, Access::User),
            (Part::Options, Access::User),
            (Part::Orchestrator, Access::Admin),
        ] {
            let (name, version, part) = part(p);
            cases.push((
                Endpoint::GetPart {
                    name: name.clone(),
                    version: version.clone(),
                    part,
                },
                get,
            ));
            cases.push((
                Endpoint::PutPart {
                    name,
                    version,
                    part,
                },
                Access::Admin,
            ));
        }
        for (ep, want) in &cases {
            assert_eq!(ep.access(), *want, "{ep:?}");
        }
        let covered: std::collections::BTreeSet<_> =
            cases.iter().map(|(ep, _)| ep.operation_id()).collect();
        let routed: std::collections::BTreeSet<_> = ROUTES.iter().map(|r| r.operation_id).collect();
        assert_eq!(covered, routed, "every operation is in the access table");
    }
}
