//! The cluster facts a service's files are rendered with at configure time, and that
//! rendering (pure: no I/O).
//!
//! Context of a file template (strict mode: an undefined variable is an error):
//!
//! | name | value |
//! |---|---|
//! | `cluster_id`, `product`, `version`, `user` | the cluster's identity (`user` is the owner) |
//! | `opts` | the resolved options |
//! | `nodes` | every node, in template order: `{name, host, address, ports: {name: port}, services, agent_port}` |
//! | `nodes_by_name` | the same nodes keyed by name |
//! | `services` | by name: `{name, nodes: [node…], node_names: [..], properties}` |
//! | `service` | the service whose file this is (same shape) |
//! | `node` | the node the file is being written to (same shape as in `nodes`) |
//! | `secrets` | the cluster's template secrets by name (file *contents* only; not paths or commands) |
//!
//! So `{{hostports services.workers.nodes "http"}}` gives `10.0.0.1:31000,10.0.0.2:31001`,
//! and `{{#each nodes}}{{name}}={{address}}:{{ports.http}}{{#unless @last}},{{/unless}}{{/each}}`
//! lists every peer. A file's `path` is rendered too (e.g. `/etc/{{node.name}}.conf`), and so
//! is every argument of the service's `start` and `ready` commands (e.g.
//! `["/paas", "node-tool", "serve", "--config", "/etc/{{node.name}}.conf"]`).
//!
//! Inside a product template these expressions are written `\{{node.name}}`: the launch-time
//! phase turns `\{{` into a literal `{{` for this phase to fill in. Values the launch-time
//! phase wrote into these templates were shielded there (see [`crate::domain::template`]), so
//! they are never evaluated here; every output is unshielded after rendering.
//!
//! Where an option reaches a config file, use the escaping helpers: `\{{word opts.x}}` for a
//! `key=value` file, `\{{quote opts.x}}` for a shell script. Secrets only reach file contents:
//! a path or a command line is visible in process lists, logs and error messages.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::domain::cluster::FileSpec;
use crate::domain::template::{Renderer, TemplateError, unshield};
use crate::domain::{Cluster, Node, Service};

/// A file ready to be pushed to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: String,
    pub mode: u32,
    pub content: Vec<u8>,
}

/// Why a service's files could not be rendered; the text names the file and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    #[error("file {path}: {source}")]
    Template {
        path: String,
        #[source]
        source: TemplateError,
    },
    #[error("file {path}: rendered path {rendered:?} must be absolute, without '..'")]
    Path { path: String, rendered: String },
    #[error("file {path}: mode {mode} is not a permission like 420 or \"0644\"")]
    Mode { path: String, mode: String },
    #[error("command argument {arg:?}: {source}")]
    Command {
        arg: String,
        #[source]
        source: TemplateError,
    },
}

/// The facts of one node.
pub fn node_facts(n: &Node) -> Value {
    json!({
        "name": n.name,
        "host": n.observed.host,
        "address": n.observed.address.as_deref().or(n.observed.host.as_deref()),
        "ports": n.observed.ports,
        "services": n.services,
        "agent_port": n.observed.agent_port,
        "status": n.observed.status,
    })
}

fn service_facts(c: &Cluster, s: &Service) -> Value {
    let nodes: Vec<Value> = s
        .nodes
        .iter()
        .filter_map(|name| c.node(name.as_str()))
        .map(node_facts)
        .collect();
    json!({
        "name": s.name,
        "nodes": nodes,
        "node_names": s.nodes,
        "properties": s.properties,
    })
}

/// Everything about the cluster a file template may use, except `service` and `node`, which
/// [`render_files`] adds per file.
pub fn cluster_facts(c: &Cluster) -> Value {
    let nodes: Vec<Value> = c.nodes.iter().map(node_facts).collect();
    let by_name: Map<String, Value> = c
        .nodes
        .iter()
        .zip(&nodes)
        .map(|(n, v)| (n.name.to_string(), v.clone()))
        .collect();
    let services: Map<String, Value> = c
        .services
        .iter()
        .map(|s| (s.name.to_string(), service_facts(c, s)))
        .collect();
    json!({
        "cluster_id": c.id.to_string(),
        "product": c.product,
        "version": c.version,
        "user": c.owner,
        "opts": c.options,
        "nodes": nodes,
        "nodes_by_name": by_name,
        "services": services,
    })
}

/// Renders `service`'s files for `node` with `facts` (from [`cluster_facts`]); the contents
/// also see the cluster's `secrets`.
///
/// # Errors
/// [`FactsError`] naming the file: an undefined variable, a syntax error, a bad path or mode.
pub fn render_files(
    renderer: &Renderer,
    facts: &Value,
    secrets: &BTreeMap<String, String>,
    service: &Service,
    node: &Node,
) -> Result<Vec<RenderedFile>, FactsError> {
    let ctx = context(facts, service, node);
    let mut with_secrets = ctx.clone();
    if let Value::Object(m) = &mut with_secrets {
        m.insert("secrets".into(), json!(secrets));
    }
    service
        .files
        .iter()
        .map(|f| render_one(renderer, &ctx, &with_secrets, f))
        .collect()
}

/// Renders each argument of one of `service`'s commands for `node`. Arguments without `{{`
/// are taken as they are.
///
/// # Errors
/// [`FactsError::Command`] naming the argument (an undefined variable, a syntax error).
pub fn render_argv(
    renderer: &Renderer,
    facts: &Value,
    service: &Service,
    node: &Node,
    argv: &[String],
) -> Result<Vec<String>, FactsError> {
    if !argv.iter().any(|a| a.contains("{{")) {
        return Ok(argv.iter().map(|a| unshield(a)).collect());
    }
    let ctx = context(facts, service, node);
    argv.iter()
        .map(|a| {
            renderer
                .render(a, &ctx)
                .map(|out| unshield(&out))
                .map_err(|source| FactsError::Command {
                    arg: unshield(a),
                    source,
                })
        })
        .collect()
}

/// `facts` plus `service` and `node`.
fn context(facts: &Value, service: &Service, node: &Node) -> Value {
    let mut ctx = facts.clone();
    if let Value::Object(m) = &mut ctx {
        let svc = facts
            .get("services")
            .and_then(|s| s.get(service.name.as_str()))
            .cloned()
            .unwrap_or(Value::Null);
        m.insert("service".into(), svc);
        m.insert("node".into(), node_facts(node));
    }
    ctx
}

/// Renders one file: its path with `ctx`, its content with `with_secrets`.
fn render_one(
    renderer: &Renderer,
    ctx: &Value,
    with_secrets: &Value,
    f: &FileSpec,
) -> Result<RenderedFile, FactsError> {
    let template = |source| FactsError::Template {
        path: unshield(&f.path),
        source,
    };
    let path = unshield(&renderer.render(&f.path, ctx).map_err(template)?);
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(FactsError::Path {
            path: unshield(&f.path),
            rendered: path,
        });
    }
    let content = unshield(
        &renderer
            .render(&f.template, with_secrets)
            .map_err(template)?,
    );
    let mode = parse_mode(f.mode.as_ref()).ok_or_else(|| FactsError::Mode {
        path: f.path.clone(),
        mode: f.mode.as_ref().map(Value::to_string).unwrap_or_default(),
    })?;
    Ok(RenderedFile {
        path,
        mode,
        content: content.into_bytes(),
    })
}

/// `None`/absent → 0644; a number is taken as is (`420`); a string is octal (`"0644"`,
/// `"755"`, `"0o600"`).
fn parse_mode(v: Option<&Value>) -> Option<u32> {
    let m = match v {
        None | Some(Value::Null) => 0o644,
        Some(Value::Number(n)) => u32::try_from(n.as_u64()?).ok()?,
        Some(Value::String(s)) => {
            let s = s.trim();
            let digits = s.strip_prefix("0o").unwrap_or(s);
            u32::from_str_radix(digits, 8).ok()?
        }
        Some(_) => return None,
    };
    (m <= 0o7777).then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cluster::ClusterSpec;
    use crate::domain::{ClusterId, Name, Timestamp};

    fn cluster(files: Value) -> Cluster {
        let spec = ClusterSpec::parse(
            &json!({
                "nodes": {
                    "node0": {"docker_image": "i", "cpu": 1, "mem": 1, "ports": ["http"], "services": ["head"]},
                    "node1": {"docker_image": "i", "cpu": 1, "mem": 1, "ports": ["http"], "services": ["workers"]},
                    "node2": {"docker_image": "i", "cpu": 1, "mem": 1, "ports": ["http"], "services": ["workers"]}
                },
                "services": {"head": {"files": files, "heap": "1g"}, "workers": {}}
            })
            .to_string(),
        )
        .unwrap();
        let mut opts = Map::new();
        opts.insert("size".into(), json!(3));
        opts.insert("up".into(), json!(".."));
        let mut c = Cluster::new(
            ClusterId::generate(),
            "alice".into(),
            Name::parse("reference").unwrap(),
            Name::parse("1.0.0").unwrap(),
            opts,
            spec,
            "s".into(),
            Timestamp("t".into()),
        );
        for (i, n) in c.nodes.iter_mut().enumerate() {
            n.observed.host = Some("localhost".into());
            n.observed.address = Some("127.0.0.1".into());
            n.observed.ports = [("http".to_owned(), 31000 + i as u16)].into();
            n.observed.agent_port = Some(32000 + i as u16);
        }
        c
    }

    fn render(c: &Cluster, node: usize) -> Result<Vec<RenderedFile>, FactsError> {
        render_files(
            &Renderer::files(),
            &cluster_facts(c),
            &c.secrets,
            &c.services[0],
            &c.nodes[node],
        )
    }

    #[test]
    fn files_name_their_peers() {
        let c = cluster(json!([{
            "path": "/etc/ref/{{node.name}}.conf",
            "template": "id={{cluster_id}} me={{node.name}} listen={{node.address}}:{{node.ports.http}} heap={{service.properties.heap}}\nworkers={{hostports services.workers.nodes \"http\"}}\nall={{#each nodes}}{{name}}@{{address}}:{{ports.http}}{{#unless @last}},{{/unless}}{{/each}}\nsize={{opts.size}} head={{join services.head.node_names \",\"}}\n",
            "mode": "0600"
        }]));
        let files = render(&c, 0).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "/etc/ref/node0.conf");
        assert_eq!(files[0].mode, 0o600);
        let text = String::from_utf8(files[0].content.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                "id={} me=node0 listen=127.0.0.1:31000 heap=1g\nworkers=127.0.0.1:31001,127.0.0.1:31002\nall=node0@127.0.0.1:31000,node1@127.0.0.1:31001,node2@127.0.0.1:31002\nsize=3 head=node0\n",
                c.id
            )
        );
        // Per node: the same template gives each node its own view.
        let f1 = render(&c, 1).unwrap();
        assert_eq!(f1[0].path, "/etc/ref/node1.conf");
    }

    #[test]
    fn undefined_variables_are_errors_naming_file_and_variable() {
        let c = cluster(json!([{"path": "/etc/x.conf", "template": "a={{opts.nope}}"}]));
        let err = render(&c, 0).unwrap_err().to_string();
        assert!(err.contains("/etc/x.conf"), "{err}");
        assert!(err.contains("opts.nope"), "{err}");
    }

    #[test]
    fn command_arguments_are_rendered_per_node() {
        let c = cluster(json!([]));
        let argv: Vec<String> = ["/paas", "--port", "{{node.ports.http}}", "{{opts.nope}}"]
            .map(String::from)
            .to_vec();
        let facts = cluster_facts(&c);
        let r = Renderer::files();
        let out = render_argv(&r, &facts, &c.services[0], &c.nodes[2], &argv[..3]).unwrap();
        assert_eq!(out, ["/paas", "--port", "31002"]);
        let err = render_argv(&r, &facts, &c.services[0], &c.nodes[0], &argv)
            .unwrap_err()
            .to_string();
        assert!(err.contains("opts.nope"), "{err}");
    }

    #[test]
    fn rendered_paths_and_modes_are_checked() {
        let c = cluster(json!([{"path": "/etc/{{opts.up}}/x", "template": ""}]));
        assert!(matches!(render(&c, 0), Err(FactsError::Path { .. })));
        let c = cluster(json!([{"path": "/x", "template": "", "mode": "999"}]));
        assert!(matches!(render(&c, 0), Err(FactsError::Mode { .. })));
        assert_eq!(parse_mode(Some(&json!(420))), Some(0o644));
        assert_eq!(parse_mode(Some(&json!("755"))), Some(0o755));
        assert_eq!(parse_mode(None), Some(0o644));
        assert_eq!(parse_mode(Some(&json!(true))), None);
    }
}

#[cfg(test)]
mod reference_product {
    //! The reference product's template, through both phases.
    use super::*;
    use crate::domain::cluster::ClusterSpec;
    use crate::domain::{ClusterId, Name, Timestamp};

    const TEMPLATE: &str = include_str!("../../examples/products/reference/minimal.json");

    #[test]
    fn renders_at_launch_then_names_peers_at_configure_time() {
        let id = ClusterId::generate();
        let ctx = json!({"opts": {"size": 3, "cpu": 0.1, "mem": 64}, "cluster_id": id.to_string(),
                         "user": "u", "product": "reference", "version": "1.0.0", "node_image": "img"});
        let spec_text = Renderer::spec().render(TEMPLATE, &ctx).unwrap();
        let spec = ClusterSpec::parse(&spec_text).unwrap();
        let mut c = Cluster::new(
            id,
            "u".into(),
            Name::parse("reference").unwrap(),
            Name::parse("1.0.0").unwrap(),
            Map::new(),
            spec,
            "s".into(),
            Timestamp("t".into()),
        );
        for (i, n) in c.nodes.iter_mut().enumerate() {
            n.observed.address = Some("127.0.0.1".into());
            n.observed.ports = [("http".to_owned(), 31000 + i as u16)].into();
        }
        let facts = cluster_facts(&c);
        let head = &c.services[0];
        let workers = &c.services[1];
        assert_eq!(head.name.as_str(), "head");
        let f = render_files(&Renderer::files(), &facts, &c.secrets, head, &c.nodes[0]).unwrap();
        let text = String::from_utf8(f[0].content.clone()).unwrap();
        assert!(
            text.contains(
                "name = node0\nlisten = 127.0.0.1:31000\npeers = node0@127.0.0.1:31000\n"
            ),
            "{text}"
        );
        let f = render_files(&Renderer::files(), &facts, &c.secrets, workers, &c.nodes[2]).unwrap();
        let text = String::from_utf8(f[0].content.clone()).unwrap();
        assert!(
            text.contains("name = node2\nlisten = 127.0.0.1:31002\npeers = node0@127.0.0.1:31000,node1@127.0.0.1:31001,node2@127.0.0.1:31002\n"),
            "{text}"
        );
        let parsed = crate::executor::nodetool::PeersFile::parse(&text).unwrap();
        assert_eq!(parsed.peers.len(), 3);
    }
}
