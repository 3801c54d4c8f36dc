//! A launch request turned into a cluster record: resolve the user's options against the
//! product's options document, render the product's template with them, parse the rendered
//! spec, and record the new cluster with its NodeAgent secret.
//!
//! What the caller may ask for is checked here too ([`Policy`]): only an admin sets
//! `advanced` options, and node volumes must lie inside the server's `--volume-root`s.
//!
//! Templates may declare per-cluster secrets (`"secrets": ["munge_key"]` at the top of the
//! rendered spec). Each is made at launch by the caller's random source and kept in
//! [`Cluster::secrets`]; only configure-time *file* templates see them (`{{secrets.munge_key}}`),
//! never the spec phase, commands, the API or `CLUSTER_JSON`.
//!
//! Pure: the caller loads the product's parts, and passes in the new cluster's id, its
//! secret, its secret source and the clock, so every step is table-testable. Storing the record and waking the
//! scheduler are the caller's. (Not to be confused with [`super::launch`], the payload that
//! one node's task carries to its executor.)

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value, json};

use super::Timestamp;
use super::cluster::{Cluster, ClusterSpec, SpecError};
use super::ids::ClusterId;
use super::options::{OptionsDoc, OptionsError};
use super::product::Product;
use super::template::{Renderer, TemplateError, is_shielded, shield, unshield_value};

/// The most secrets one template may declare.
pub const MAX_SECRETS: usize = 16;

/// Whether the caller may set `advanced` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Admin,
    User,
}

/// What the server allows a launch or an update, decided at the edge.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub caller: Caller,
    /// The directories (absolute) inside which a node volume's `host_path` may lie. Empty:
    /// no volume with a host path is allowed.
    pub volume_roots: &'a [PathBuf],
}

/// A node volume outside every allowed root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "node {node}: volume host_path {host_path:?} is not inside an allowed volume root ({roots}); \
     the server allows host volumes only under its --volume-root directories"
)]
pub struct VolumeError {
    pub node: String,
    pub host_path: String,
    /// The allowed roots, comma-separated, or `none`.
    pub roots: String,
}

/// What a launch asks for, and the product parts it is launched from.
#[derive(Debug, Clone, Copy)]
pub struct LaunchRequest<'a> {
    pub product: &'a Product,
    /// The product's handlebars template (spec phase).
    pub template: &'a str,
    /// The product's options document; the default document when none was uploaded.
    pub options: &'a OptionsDoc,
    /// The user's option values; every key not given takes its default.
    pub user_options: &'a Map<String, Value>,
    /// Who launches: the new cluster's owner, offered to templates as `{{user}}`.
    pub owner: &'a str,
    /// The default node image, offered to templates as `{{node_image}}`.
    pub node_image: &'a str,
    pub policy: Policy<'a>,
}

/// The parts of a new cluster that the caller chooses: they are random or read a clock.
#[derive(Debug, Clone)]
pub struct Fresh {
    pub id: ClusterId,
    /// The shared secret of the cluster's NodeAgent ports. Must be unguessable.
    pub secret: String,
    /// Makes one template secret; must draw from the OS random source.
    pub make_secret: fn() -> String,
    pub now: Timestamp,
}

/// Why a template did not render to a valid cluster spec.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    #[error("the template cannot be rendered")]
    Template(#[source] TemplateError),
    #[error("the template rendered an invalid cluster")]
    Spec(#[source] SpecError),
}

/// A rendered spec and the secrets it declares.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub spec: ClusterSpec,
    /// The names in the template's `"secrets"`, in order, without repeats.
    pub secrets: Vec<String>,
    /// Every `(node, host_path)` of the spec's volumes.
    pub host_paths: Vec<(String, String)>,
}

/// Why a launch request cannot become a cluster.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LaunchError {
    /// The user's options do not fit the options document (every bad key is listed).
    #[error("invalid options")]
    Options(#[source] OptionsError),
    /// The options fit, but the template fails with them.
    #[error("the template failed with these options")]
    Render(#[source] RenderError),
    /// A user set `advanced` options (named), which only an admin may set.
    #[error("only an admin may set the advanced options {}", .0.join(", "))]
    AdminOnly(Vec<String>),
    /// The rendered spec mounts a host path outside the allowed roots.
    #[error(transparent)]
    Volume(VolumeError),
}

impl LaunchRequest<'_> {
    /// The new cluster: `registered`, every node `queued`, with the resolved options.
    ///
    /// # Errors
    /// [`LaunchError::Options`] when the options do not fit the document,
    /// [`LaunchError::Render`] when the template fails with them or renders no valid spec.
    pub fn cluster(&self, renderer: &Renderer, fresh: Fresh) -> Result<Cluster, LaunchError> {
        if self.policy.caller != Caller::Admin {
            let advanced = self.options.admin_only(self.user_options);
            if !advanced.is_empty() {
                return Err(LaunchError::AdminOnly(advanced));
            }
        }
        let options = self
            .options
            .resolve(self.user_options)
            .map_err(LaunchError::Options)?;
        let ctx = spec_context(
            &options,
            fresh.id,
            self.owner,
            self.product,
            self.node_image,
        );
        let rendered = render_spec(renderer, self.template, ctx).map_err(LaunchError::Render)?;
        check_volumes(&rendered.host_paths, self.policy.volume_roots)
            .map_err(LaunchError::Volume)?;
        let mut c = Cluster::new(
            fresh.id,
            self.owner.to_owned(),
            self.product.name.clone(),
            self.product.version.clone(),
            options,
            rendered.spec,
            fresh.secret,
            fresh.now,
        );
        c.secrets = rendered
            .secrets
            .into_iter()
            .map(|name| (name, (fresh.make_secret)()))
            .collect();
        Ok(c)
    }
}

/// Checks that every `(node, host_path)` lies inside one of `roots`, after resolving `.` and
/// `..` lexically (so `/data/../etc` is `/etc`, and `/data2` is not inside `/data`).
///
/// # Errors
/// [`VolumeError`] naming the first node and path outside.
pub fn check_volumes(
    host_paths: &[(String, String)],
    roots: &[PathBuf],
) -> Result<(), VolumeError> {
    for (node, host_path) in host_paths {
        let inside = normalize(Path::new(host_path)).is_some_and(|p| {
            roots
                .iter()
                .filter_map(|r| normalize(r))
                .any(|r| p.starts_with(r))
        });
        if !inside {
            let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
            return Err(VolumeError {
                node: node.clone(),
                host_path: host_path.clone(),
                roots: if roots.is_empty() {
                    "none".into()
                } else {
                    roots.join(", ")
                },
            });
        }
    }
    Ok(())
}

/// `p` absolute with `.` and `..` resolved lexically; `None` for a relative path.
fn normalize(p: &Path) -> Option<PathBuf> {
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// Renders `template` with the defaults (and required examples) of `options`, as a launch
/// with no user options would, and validates the spec: the check run when a template or an
/// options document is uploaded.
///
/// # Errors
/// [`RenderError`] when the pair does not render to a valid spec.
pub fn check_template(
    renderer: &Renderer,
    product: &Product,
    template: &str,
    options: &OptionsDoc,
    node_image: &str,
) -> Result<ClusterSpec, RenderError> {
    let ctx = spec_context(
        &options.defaults_with_examples(),
        ClusterId(uuid::Uuid::nil()),
        "validation",
        product,
        node_image,
    );
    render_spec(renderer, template, ctx).map(|r| r.spec)
}

/// What a spec-phase template sees: `opts`, `cluster_id`, `user`, `product`, `version` and
/// `node_image`.
pub(crate) fn spec_context(
    opts: &Map<String, Value>,
    id: ClusterId,
    user: &str,
    product: &Product,
    node_image: &str,
) -> Value {
    json!({"opts": opts, "cluster_id": id.to_string(), "user": user, "product": product.name, "version": product.version, "node_image": node_image})
}

/// Renders the spec phase with a [`shield`]ed context, takes out the declared secrets, and
/// unshields every string but the file-phase templates (file paths and texts, `start`,
/// `ready`, `reload`), which keep their values shielded until the file phase has run.
pub(crate) fn render_spec(
    renderer: &Renderer,
    template: &str,
    ctx: Value,
) -> Result<Rendered, RenderError> {
    let text = renderer
        .render_with_id(template, shield(ctx))
        .map_err(RenderError::Template)?;
    read_plain(&text).map_or_else(|| read_shielded(&text), Ok)
}

/// Reads rendered output through a parsed value: takes out the declared secrets, unshields
/// every string but the file-phase templates, and reads the spec, or says what is wrong.
fn read_shielded(text: &str) -> Result<Rendered, RenderError> {
    let mut v: Value = serde_json::from_str(text)
        .map_err(|e| RenderError::Spec(SpecError::Json(e.to_string())))?;
    let secrets = match &mut v {
        Value::Object(top) => take_secrets(top).map_err(RenderError::Spec)?,
        _ => Vec::new(),
    };
    unshield_plain(&mut v);
    let spec = ClusterSpec::from_value(v).map_err(RenderError::Spec)?;
    Ok(rendered(spec, secrets))
}

/// The usual case, read straight from the text: no string of it is shielded (no value of
/// the context held a `{` or a `\`), so nothing is to unshield. `None` where the text holds a
/// shielding character or is not read by [`ClusterSpec::read`] (which then leaves it to
/// [`ClusterSpec::parse`]), or where its secrets are not valid: [`render_spec`] then takes
/// the way through a parsed value, which gives the same spec or says what is wrong.
fn read_plain(text: &str) -> Option<Rendered> {
    if is_shielded(text) {
        return None;
    }
    let read = ClusterSpec::read(text)?;
    let secrets = match read.secrets {
        None => Vec::new(),
        Some(v) => take_secrets(&mut Map::from_iter([("secrets".to_owned(), v)])).ok()?,
    };
    Some(rendered(read.spec, secrets))
}

/// A spec read either way, with its secrets and every `(node, host_path)` of its volumes.
fn rendered(spec: ClusterSpec, secrets: Vec<String>) -> Rendered {
    let host_paths = spec
        .nodes
        .iter()
        .flat_map(|n| {
            n.volumes
                .iter()
                .map(|v| (n.name.to_string(), v.host_path.clone()))
        })
        .collect();
    Rendered {
        spec,
        secrets,
        host_paths,
    }
}

/// Removes and checks the top-level `"secrets"`: a list of at most [`MAX_SECRETS`] names of
/// `[a-z0-9_]`, up to 64 characters.
fn take_secrets(top: &mut Map<String, Value>) -> Result<Vec<String>, SpecError> {
    let bad = |why: String| SpecError::Invalid {
        path: "secrets".into(),
        why,
    };
    let list = match top.shift_remove("secrets") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(bad("must be a list of secret names".into())),
    };
    let mut names: Vec<String> = Vec::with_capacity(list.len());
    for v in list {
        let Some(name) = v.as_str().map(super::template::unshield) else {
            return Err(bad("must be a list of secret names".into()));
        };
        let ok = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            return Err(bad(format!(
                "{name:?} is not a name of [a-z0-9_], 1 to 64 long"
            )));
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.len() > MAX_SECRETS {
        return Err(bad(format!(
            "declares {} secrets; the limit is {MAX_SECRETS}",
            names.len()
        )));
    }
    Ok(names)
}

/// The keys of a service whose strings the file phase renders.
const FILE_PHASE_KEYS: [&str; 4] = ["files", "start", "ready", "reload"];

/// [`unshield_value`] on everything but the file-phase templates of each service.
fn unshield_plain(v: &mut Value) {
    let Value::Object(top) = v else {
        return unshield_value(v);
    };
    for (k, part) in top.iter_mut() {
        match (k.as_str(), part) {
            ("services", Value::Object(services)) => {
                for service in services.values_mut() {
                    let Value::Object(props) = service else {
                        unshield_value(service);
                        continue;
                    };
                    for (key, prop) in props.iter_mut() {
                        match (key.as_str(), prop) {
                            ("files", Value::Array(files)) => files
                                .iter_mut()
                                .filter_map(Value::as_object_mut)
                                .flat_map(|f| f.iter_mut())
                                .filter(|(k, _)| !matches!(k.as_str(), "path" | "template"))
                                .for_each(|(_, v)| unshield_value(v)),
                            (key, _) if FILE_PHASE_KEYS.contains(&key) => {}
                            (_, prop) => unshield_value(prop),
                        }
                    }
                }
            }
            (_, part) => unshield_value(part),
        }
    }
}

/// The secrets a cluster keeps after an update that declares `wanted`: the ones it has, and a
/// new one (from `make`) for each newly declared name. A secret is never rotated by an update.
pub(crate) fn keep_secrets(
    current: &BTreeMap<String, String>,
    wanted: &[String],
    make: fn() -> String,
) -> BTreeMap<String, String> {
    wanted
        .iter()
        .map(|name| {
            let value = current.get(name).cloned().unwrap_or_else(make);
            (name.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClusterStatus, Desired, Name, NodeStatus};

    const TEMPLATE: &str = r#"{"nodes": {
        {{#each (range 0 opts.size)}}"n{{this}}": {"docker_image": "{{../node_image}}", "cpu": {{../opts.cpu}}, "mem": 64, "services": ["s"], "tags": ["{{../user}}", "{{../product}}-{{../version}}", "{{../cluster_id}}"]}{{#unless @last}},{{/unless}}{{/each}}
    }, "services": {"s": {}}}"#;

    fn product() -> Product {
        Product::new(
            Name::parse("reference").unwrap(),
            Name::parse("1.0.0").unwrap(),
            Timestamp("2026-12-01T00:00:00.000Z".into()),
        )
    }

    fn doc() -> OptionsDoc {
        OptionsDoc::from_value(json!({"required": {"size": 1}, "optional": {"cpu": 0.5}})).unwrap()
    }

    fn fresh() -> Fresh {
        Fresh {
            id: ClusterId(uuid::Uuid::from_u128(7)),
            secret: "s3cret".into(),
            make_secret: || "k".repeat(64),
            now: Timestamp("2026-12-01T12:00:00.000Z".into()),
        }
    }

    fn launch(template: &str, user: Value) -> Result<Cluster, LaunchError> {
        let (product, doc) = (product(), doc());
        let Value::Object(user_options) = user else {
            panic!("options are an object")
        };
        LaunchRequest {
            product: &product,
            template,
            options: &doc,
            user_options: &user_options,
            owner: "alice",
            node_image: "img:1",
            policy: Policy {
                caller: Caller::User,
                volume_roots: &[],
            },
        }
        .cluster(&Renderer::spec(), fresh())
    }

    /// The launch path reads a rendered spec straight from its text when nothing in it is
    /// shielded; that way and the one through a parsed value give the same spec, secrets and
    /// host paths, for the example products at several sizes and for specs with every kind
    /// of field. Where the text has a shielded string, a name given twice or anything wrong,
    /// the direct read steps aside, so errors and the last-one-wins of a repeated key come
    /// from the parsed value as before.
    #[test]
    fn a_spec_read_from_its_text_is_the_one_read_through_a_value() {
        let renderer = Renderer::spec();
        let examples: [(&str, &str); 3] = [
            (
                include_str!("../../examples/products/reference/minimal.json"),
                include_str!("../../examples/products/reference/options/size.json"),
            ),
            (
                include_str!("../../examples/products/slurm/22.05/template.json"),
                include_str!("../../examples/products/slurm/22.05/options.json"),
            ),
            (
                include_str!("../../examples/products/spark/4.x/template.json"),
                include_str!("../../examples/products/spark/4.x/options.json"),
            ),
        ];
        let mut texts = Vec::new();
        for (template, options) in examples {
            let doc = OptionsDoc::from_value(serde_json::from_str(options).unwrap()).unwrap();
            for size in [1, 3, 10] {
                let mut opts = doc.defaults_with_examples();
                opts.insert("size".into(), json!(size));
                let ctx = spec_context(&opts, fresh().id, "alice", &product(), "img:1");
                texts.push(renderer.render_value(template, shield(ctx)).unwrap());
            }
        }
        texts.push(
            json!({
                "dnsname": "x", "nodes": {
                    "a": {"z": [1, {"k": null}], "docker_image": "i", "ports": 2, "cpu": 1, "mem": 2.5,
                          "disk": 3, "env": {"A": "1"}, "command": "run it", "services": ["s", "t"],
                          "volumes": [{"container_path": "/d", "host_path": "/srv/d", "mode": "ro"}],
                          "tags": ["t1"], "m": "x"},
                    "b": {"docker_image": "i", "cpu": 1, "mem": 1, "ports": ["http", "rpc"],
                          "command": ["sleep", "1"], "ports2": null}
                },
                "secrets": ["munge_key", "other", "munge_key"],
                "restart": {"max_restarts": 2},
                "services": {
                    "s": {"nodes": ["b"], "files": [{"path": "/etc/x", "template": "{{node.name}}", "mode": "0644"}],
                          "start": ["a", "b"], "ready": "true", "reload": null, "y": {"deep": [1, 2]}},
                    "t": {}
                },
                "zz": 1
            })
            .to_string(),
        );
        for text in &texts {
            let direct = read_plain(text)
                .unwrap_or_else(|| panic!("not read directly: {text}: {:?}", read_shielded(text)));
            assert_eq!(Ok(&direct), read_shielded(text).as_ref(), "{text}");
        }
        assert!(texts[0].len() > 100 && texts.len() == 10);
        // The top-level keys left over keep the template's order either way.
        let last = read_plain(texts.last().unwrap()).unwrap();
        assert_eq!(
            last.spec.extra.keys().collect::<Vec<_>>(),
            ["dnsname", "zz"]
        );
        assert_eq!(last.secrets, ["munge_key", "other"]);
        assert_eq!(last.host_paths, [("a".to_owned(), "/srv/d".to_owned())]);
        // Where the direct read steps aside, the parsed value has its say.
        let node = r#"{"docker_image": "i", "cpu": 1, "mem": 1}"#;
        for text in [
            format!(r#"{{"nodes": {{"a": {node}, "a": {node}}}}}"#),
            format!(r#"{{"nodes": {{"a": {node}}}, "nodes": {{"b": {node}}}}}"#),
            format!(r#"{{"nodes": {{"a": {node}}}, "x": 1, "x": 2}}"#),
            format!(
                r#"{{"nodes": {{"a": {node}}}, "x": "{}"}}"#,
                super::super::template::SHIELDED_BRACE
            ),
            format!(r#"{{"nodes": {{"a": {node}}}, "secrets": ["Bad"]}}"#),
            format!(r#"{{"nodes": {{"a": {node}}}, "services": {{"s": {{"start": ""}}}}}}"#),
            format!(r#"{{"nodes": {{"a": {node}}}}} trailing"#),
            r#"{"nodes": {}}"#.to_owned(),
        ] {
            assert_eq!(read_plain(&text), None, "{text}");
        }
        let twice = format!(
            r#"{{"nodes": {{"a": {node}, "b": {node}, "a": {{"docker_image": "j", "cpu": 1, "mem": 1}}}}}}"#
        );
        let spec = read_shielded(&twice).unwrap().spec;
        let names: Vec<_> = spec
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.docker_image.as_str()))
            .collect();
        assert_eq!(names, [("a", "j"), ("b", "i")]);
    }

    #[test]
    fn a_launch_resolves_renders_and_records_the_cluster() {
        let c = launch(TEMPLATE, json!({"size": "2"})).unwrap();
        let f = fresh();
        assert_eq!((c.id, c.secret.as_str()), (f.id, "s3cret"));
        assert_eq!(c.owner, "alice");
        assert_eq!(
            (c.product.as_str(), c.version.as_str()),
            ("reference", "1.0.0")
        );
        assert_eq!(
            c.options,
            *json!({"size": 2, "cpu": 0.5}).as_object().unwrap()
        );
        assert_eq!(c.status, ClusterStatus::Registered);
        assert_eq!(c.desired, Desired::Running);
        assert_eq!((&c.created_at, c.history.len()), (&f.now, 1));
        let names: Vec<_> = c.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["n0", "n1"]);
        let n = &c.nodes[0];
        assert_eq!((n.docker_image.as_str(), n.cpu), ("img:1", 0.5));
        assert_eq!(n.observed.status, NodeStatus::Queued);
        assert_eq!(
            n.tags,
            ["alice", "reference-1.0.0", &f.id.to_string()],
            "the template sees user, product, version and cluster id"
        );
    }

    #[test]
    fn what_goes_wrong_is_told_apart() {
        let kind = |e: &LaunchError| match e {
            LaunchError::Options(o) => format!("options {:?} {:?}", o.missing, o.unknown),
            LaunchError::Render(RenderError::Template(_)) => "template".into(),
            LaunchError::Render(RenderError::Spec(_)) => "spec".into(),
            LaunchError::AdminOnly(_) | LaunchError::Volume(_) => "policy".into(),
        };
        let cases = [
            (TEMPLATE, json!({}), r#"options ["size"] []"#),
            (
                TEMPLATE,
                json!({"size": 1, "colour": "red"}),
                r#"options [] ["colour"]"#,
            ),
            (
                r#"{"nodes": {{opts.nope}}}"#,
                json!({"size": 1}),
                "template",
            ),
            (
                r#"{"nodes": {}, "services": {}}"#,
                json!({"size": 1}),
                "spec",
            ),
        ];
        for (template, user, want) in cases {
            let e = launch(template, user.clone()).unwrap_err();
            assert_eq!(kind(&e), want, "{template} {user}");
        }
    }

    #[test]
    fn an_upload_is_checked_with_defaults_and_examples() {
        let (p, r) = (product(), Renderer::spec());
        let spec = check_template(&r, &p, TEMPLATE, &doc(), "img:1").unwrap();
        assert_eq!(spec.nodes.len(), 1, "the example of the required size");
        assert!(matches!(
            check_template(&r, &p, "{{opts.nope}}", &doc(), "img:1"),
            Err(RenderError::Template(_))
        ));
        assert!(matches!(
            check_template(&r, &p, "[]", &doc(), "img:1"),
            Err(RenderError::Spec(_))
        ));
    }
}
