//! The cluster spec (what a rendered template describes) and the cluster record (what we
//! store and serve).
//!
//! Rendered template shape (design §4):
//! ```text
//! { "nodes":    { "<node>": { "docker_image", "cpu", "mem", "disk"?, "ports"?, "services": [...],
//!                             "env"?, "command"?, "volumes"?, "tags"? } },
//!   "services": { "<service>": { "nodes"?: [...], "files"?: [{path, template}], "start"?,
//!                                "ready"?, "reload"?, ...properties } } }
//! ```
//! `ports` is a list of port names (`["http", "rpc"]`) or a count (`2` → `p0`, `p1`); each
//! gets a port from the offer. A service's node list is the union of its `nodes` and the
//! nodes that name it in their `services`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Timestamp;
use super::heal::{Replacement, RestartPolicy};
use super::ids::{AgentId, ClusterId, Name, TaskId};
use super::lifecycle::{ClusterEvent, ClusterStatus, InvalidTransition, NodeStatus};
use super::update::Retiring;

/// Most nodes one cluster may have.
pub const MAX_NODES: usize = 10_000;
/// Most ports one node may ask for.
pub const MAX_PORTS_PER_NODE: usize = 64;

/// A command: a shell line (run with `/bin/sh -c`) or an argv list (run as is).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Command {
    Shell(String),
    Argv(Vec<String>),
}

/// A string is a shell line, a list of strings an argv. Read by its JSON type in one pass:
/// an untagged derive would buffer the value and format an error for each variant it tries.
impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Command;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a command: a shell line (a string) or an argv (a list of strings)")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Command, E> {
                Ok(Command::Shell(s.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Command, E> {
                Ok(Command::Shell(s))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Command, A::Error> {
                strings(seq).map(Command::Argv)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A JSON list of strings, as a command's argv or a node's port names are read.
fn strings<'de, A: serde::de::SeqAccess<'de>>(mut seq: A) -> Result<Vec<String>, A::Error> {
    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
    while let Some(s) = seq.next_element::<String>()? {
        out.push(s);
    }
    Ok(out)
}

impl Command {
    /// The argv to execute.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
            Command::Argv(v) => v.clone(),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Command::Shell(s) => s.trim().is_empty(),
            Command::Argv(v) => v.first().is_none_or(|s| s.is_empty()),
        }
    }
}

/// A bind mount from the agent host into the node container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    pub container_path: String,
    pub host_path: String,
    #[serde(default)]
    pub mode: VolumeMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeMode {
    #[default]
    Rw,
    Ro,
}

/// A file a service needs, rendered at configure time with the cluster facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub path: String,
    pub template: String,
    /// Unix permission bits, e.g. `0o644` written as `420` or `"0644"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Value>,
}

/// One node as a template describes it, before it becomes a [`Node`] record.
#[derive(Debug, Clone, Default)]
struct NodeSpec {
    docker_image: String,
    cpu: f64,
    mem: f64,
    disk: f64,
    ports: Option<PortsSpec>,
    services: Vec<String>,
    env: BTreeMap<String, String>,
    command: Option<Command>,
    volumes: Vec<Volume>,
    tags: Vec<String>,
    /// Anything else the template author put on the node; kept and served, not interpreted.
    extra: Map<String, Value>,
}

/// A node's object read field by field, in the template's order (the first bad field is
/// the one reported), from a parsed value or straight from the text; the keys it does not
/// know go to `extra`, in order. Only `docker_image`, `cpu` and `mem` are required. (A derive
/// with a flattened `extra` would first buffer every field, then read each again.)
impl<'de> Deserialize<'de> for NodeSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NodeSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a node object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<NodeSpec, A::Error> {
                let (mut image, mut cpu, mut mem) = (None, None, None);
                let mut n = NodeSpec::default();
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "docker_image" => image = Some(m.next_value()?),
                        "cpu" => cpu = Some(m.next_value()?),
                        "mem" => mem = Some(m.next_value()?),
                        "disk" => n.disk = m.next_value()?,
                        "ports" => n.ports = m.next_value()?,
                        "services" => n.services = m.next_value()?,
                        "env" => n.env = m.next_value()?,
                        "command" => n.command = m.next_value()?,
                        "volumes" => n.volumes = m.next_value()?,
                        "tags" => n.tags = m.next_value()?,
                        _ => {
                            let v = m.next_value()?;
                            n.extra.insert(k, v);
                        }
                    }
                }
                let missing = <A::Error as serde::de::Error>::missing_field;
                n.docker_image = image.ok_or_else(|| missing("docker_image"))?;
                n.cpu = cpu.ok_or_else(|| missing("cpu"))?;
                n.mem = mem.ok_or_else(|| missing("mem"))?;
                Ok(n)
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// A node's `ports`: a count (`2` → `p0`, `p1`) or a list of names.
#[derive(Debug, Clone)]
enum PortsSpec {
    Count(u32),
    Names(Vec<String>),
}

/// Read by its JSON type in one pass (see [`Command`]'s).
impl<'de> Deserialize<'de> for PortsSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PortsSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of ports or a list of port names")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<PortsSpec, E> {
                u32::try_from(n)
                    .map(PortsSpec::Count)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(n), &self))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<PortsSpec, A::Error> {
                strings(seq).map(PortsSpec::Names)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One service as a template describes it.
#[derive(Debug, Clone, Default)]
struct ServiceSpec {
    nodes: Vec<String>,
    files: Vec<FileSpec>,
    start: Option<Command>,
    ready: Option<Command>,
    reload: Option<Command>,
    properties: Map<String, Value>,
}

/// A service's object read field by field, as a node's is; every field is optional, and
/// the unknown ones are its properties, in order.
impl<'de> Deserialize<'de> for ServiceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ServiceSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a service object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<ServiceSpec, A::Error> {
                let mut s = ServiceSpec::default();
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "nodes" => s.nodes = m.next_value()?,
                        "files" => s.files = m.next_value()?,
                        "start" => s.start = m.next_value()?,
                        "ready" => s.ready = m.next_value()?,
                        "reload" => s.reload = m.next_value()?,
                        _ => {
                            let v = m.next_value()?;
                            s.properties.insert(k, v);
                        }
                    }
                }
                Ok(s)
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// A node or a service of a spec: still JSON (read where the checks reach it, so that the
/// first bad one is the one reported), or already read from the text.
enum Part<T> {
    Json(Value),
    Read(T),
}

impl<T: serde::de::DeserializeOwned> Part<T> {
    fn read(self) -> Result<T, serde_json::Error> {
        match self {
            Part::Json(v) => T::deserialize(v),
            Part::Read(t) => Ok(t),
        }
    }
}

/// The named entries of a JSON object, in order; a name given twice is an error (a parsed
/// value would keep the last one, at the first one's place: [`ClusterSpec::read`] leaves
/// that to [`ClusterSpec::parse`]). Read from the text only (each entry's value is taken as
/// its raw text and read through the entries' [`Memo`]).
struct Named<T>(Vec<(String, T)>);

impl<'de, T: Memoized> Deserialize<'de> for Named<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Memoized> serde::de::Visitor<'de> for Visitor<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of name → entry")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Named<T>, A::Error> {
                let mut out: Vec<(String, T)> =
                    Vec::with_capacity(m.size_hint().unwrap_or(0).min(MAX_NODES));
                while let Some((name, text)) =
                    m.next_entry::<String, &'de serde_json::value::RawValue>()?
                {
                    let entry = T::memo()
                        .read(text.get())
                        .map_err(serde::de::Error::custom)?;
                    out.push((name, entry));
                }
                let mut names: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
                names.sort_unstable();
                if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
                    return Err(serde::de::Error::custom(format!(
                        "{:?} is given twice",
                        w[0]
                    )));
                }
                Ok(Named(out))
            }
        }
        d.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// A node's or a service's entry, read through a [`Memo`] of its kind.
trait Memoized: serde::de::DeserializeOwned + Clone + 'static {
    fn memo() -> &'static Memo<Self>;
}

impl Memoized for NodeSpec {
    fn memo() -> &'static Memo<Self> {
        static MEMO: std::sync::LazyLock<Memo<NodeSpec>> = std::sync::LazyLock::new(Memo::default);
        &MEMO
    }
}

impl Memoized for ServiceSpec {
    fn memo() -> &'static Memo<Self> {
        static MEMO: std::sync::LazyLock<Memo<ServiceSpec>> =
            std::sync::LazyLock::new(Memo::default);
        &MEMO
    }
}

/// Entries most recently read, by their text. A product's rendered specs repeat the same
/// entry texts launch after launch, and node after node within one (a node's name is its
/// key, not part of its text): an entry read before is cloned, a few allocations, instead
/// of parsed again. At most [`MEMO_ENTRIES`] texts of at most [`MEMO_TEXT`] bytes each are
/// kept; a full memo starts over.
struct Memo<T> {
    entries: Mutex<HashMap<Box<str>, T, foldhash::fast::RandomState>>,
}

/// Entry texts a [`Memo`] keeps.
const MEMO_ENTRIES: usize = 256;
/// The longest entry text a [`Memo`] keeps.
const MEMO_TEXT: usize = 16 * 1024;

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<T: Memoized> Memo<T> {
    /// The entry `text` holds (one JSON value), as `T`'s deserializer reads it.
    fn read(&self, text: &str) -> Result<T, serde_json::Error> {
        let lock = || self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = lock().get(text) {
            return Ok(entry.clone());
        }
        let entry: T = serde_json::from_str(text)?;
        if text.len() <= MEMO_TEXT {
            let mut entries = lock();
            if entries.len() >= MEMO_ENTRIES {
                entries.clear();
            }
            entries.insert(text.into(), entry.clone());
        }
        Ok(entry)
    }
}

/// A rendered spec's top-level object as [`ClusterSpec::read`] reads it from the text.
#[derive(Default)]
struct TopLevel {
    nodes: Option<Named<NodeSpec>>,
    services: Option<Named<ServiceSpec>>,
    restart: Option<Value>,
    secrets: Option<Value>,
    extra: Map<String, Value>,
}

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TopLevel;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object with \"nodes\" and \"services\"")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<TopLevel, A::Error> {
                let twice = |k: &str| serde::de::Error::custom(format!("{k:?} is given twice"));
                let mut top = TopLevel::default();
                let mut services_seen = false;
                while let Some(k) = m.next_key::<String>()? {
                    match k.as_str() {
                        "nodes" if top.nodes.is_none() => top.nodes = Some(m.next_value()?),
                        "services" if !services_seen => {
                            services_seen = true;
                            top.services = m.next_value()?;
                        }
                        "restart" if top.restart.is_none() => top.restart = Some(m.next_value()?),
                        "secrets" if top.secrets.is_none() => top.secrets = Some(m.next_value()?),
                        "nodes" | "services" | "restart" | "secrets" => return Err(twice(&k)),
                        _ if top.extra.contains_key(&k) => return Err(twice(&k)),
                        _ => {
                            let v = m.next_value()?;
                            top.extra.insert(k, v);
                        }
                    }
                }
                Ok(top)
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// A spec read by [`ClusterSpec::read`], with the top-level `"secrets"` as the text gives it.
pub struct ReadSpec {
    pub spec: ClusterSpec,
    pub secrets: Option<Value>,
}

/// The template's `"restart"` (absent or null: the defaults), checked.
fn restart_of(v: Option<Value>) -> Result<RestartPolicy, SpecError> {
    match v {
        None | Some(Value::Null) => Ok(RestartPolicy::default()),
        Some(v) => {
            let p: RestartPolicy =
                serde_json::from_value(v).map_err(|e| invalid("restart", e.to_string()))?;
            p.validate().map_err(|e| invalid("restart", e))?;
            Ok(p)
        }
    }
}

/// Why a rendered template is not a usable cluster spec. The text names the JSON path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("rendered template is not valid JSON: {0}")]
    Json(String),
    #[error("{path}: {why}")]
    Invalid { path: String, why: String },
}

fn invalid(path: impl Into<String>, why: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        path: path.into(),
        why: why.into(),
    }
}

/// A validated cluster spec: nodes and services in the order the template gives.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSpec {
    pub nodes: Vec<Node>,
    pub services: Vec<Service>,
    /// How the cluster heals (the template's `"restart"`; defaults otherwise).
    pub restart: RestartPolicy,
    /// Top-level keys other than `nodes`, `services` and `restart` (e.g. the original's
    /// `dnsname`).
    pub extra: Map<String, Value>,
}

impl ClusterSpec {
    /// Parses and validates rendered template output.
    ///
    /// # Errors
    /// [`SpecError`] naming the first offending path.
    pub fn parse(rendered: &str) -> Result<Self, SpecError> {
        let v: Value =
            serde_json::from_str(rendered).map_err(|e| SpecError::Json(e.to_string()))?;
        Self::from_value(v)
    }

    /// [`ClusterSpec::parse`] of a spec already parsed as JSON (no text in between).
    ///
    /// # Errors
    /// [`SpecError`] naming the first offending path.
    pub fn from_value(v: Value) -> Result<Self, SpecError> {
        let Value::Object(mut top) = v else {
            return Err(invalid(
                "$",
                "must be an object with \"nodes\" and \"services\"",
            ));
        };
        // (`shift_remove`: the other keys keep the template's order.)
        let nodes = match top.shift_remove("nodes") {
            Some(Value::Object(m)) => m,
            Some(_) => return Err(invalid("nodes", "must be an object of node name → node")),
            None => return Err(invalid("nodes", "is missing")),
        };
        let restart = restart_of(top.shift_remove("restart"))?;
        let services = match top.shift_remove("services") {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => Map::new(),
            Some(_) => {
                return Err(invalid(
                    "services",
                    "must be an object of service name → service",
                ));
            }
        };
        Self::assemble(
            nodes.into_iter().map(|(k, v)| (k, Part::Json(v))).collect(),
            services
                .into_iter()
                .map(|(k, v)| (k, Part::Json(v)))
                .collect(),
            restart,
            top,
        )
    }

    /// Reads rendered template output straight into a spec, without a parsed value in
    /// between: the launch path's. `None` where the text is not a valid spec, or names a
    /// top-level key, a node or a service twice (a parsed value keeps the last of them):
    /// [`ClusterSpec::parse`] then reads it, and reports what is wrong.
    pub fn read(text: &str) -> Option<ReadSpec> {
        let top: TopLevel = serde_json::from_str(text).ok()?;
        let services = top.services.map_or_else(Vec::new, |s| s.0);
        let spec = Self::assemble(
            top.nodes?
                .0
                .into_iter()
                .map(|(k, v)| (k, Part::Read(v)))
                .collect(),
            services
                .into_iter()
                .map(|(k, v)| (k, Part::Read(v)))
                .collect(),
            restart_of(top.restart).ok()?,
            top.extra,
        )
        .ok()?;
        Some(ReadSpec {
            spec,
            secrets: top.secrets,
        })
    }

    /// Checks the nodes and services of a spec, reading each where the checks reach it, and
    /// resolves each service's nodes.
    fn assemble(
        nodes: Vec<(String, Part<NodeSpec>)>,
        services: Vec<(String, Part<ServiceSpec>)>,
        restart: RestartPolicy,
        extra: Map<String, Value>,
    ) -> Result<Self, SpecError> {
        if nodes.is_empty() {
            return Err(invalid("nodes", "must have at least one node"));
        }
        if nodes.len() > MAX_NODES {
            return Err(invalid(
                "nodes",
                format!("has {} nodes; the limit is {MAX_NODES}", nodes.len()),
            ));
        }
        let mut out_services = Vec::with_capacity(services.len());
        for (name, v) in services {
            let path = format!("services.{name}");
            let name = Name::parse(&name).map_err(|e| invalid(&path, e.to_string()))?;
            let s = v.read().map_err(|e| invalid(&path, e.to_string()))?;
            for (i, f) in s.files.iter().enumerate() {
                if !f.path.starts_with('/') || f.path.split('/').any(|c| c == "..") {
                    return Err(invalid(
                        format!("{path}.files[{i}].path"),
                        "must be an absolute path without '..'",
                    ));
                }
            }
            if s.start.as_ref().is_some_and(Command::is_empty) {
                return Err(invalid(format!("{path}.start"), "is empty"));
            }
            if s.ready.as_ref().is_some_and(Command::is_empty) {
                return Err(invalid(format!("{path}.ready"), "is empty"));
            }
            if s.reload.as_ref().is_some_and(Command::is_empty) {
                return Err(invalid(format!("{path}.reload"), "is empty"));
            }
            out_services.push(Service {
                name,
                nodes: Vec::new(),
                files: s.files,
                start: s.start,
                ready: s.ready,
                reload: s.reload,
                properties: s.properties,
                declared_nodes: s.nodes,
            });
        }
        let service_names: BTreeSet<&str> = out_services.iter().map(|s| s.name.as_str()).collect();
        let mut out_nodes = Vec::with_capacity(nodes.len());
        for (name, v) in nodes {
            let path = format!("nodes.{name}");
            let name = Name::parse(&name).map_err(|e| invalid(&path, e.to_string()))?;
            let n = v.read().map_err(|e| invalid(&path, e.to_string()))?;
            out_nodes.push(Node::from_spec(name, n, &path, &service_names)?);
        }
        // A service's nodes: those it lists, then those that list it, without repeats.
        let node_names: BTreeSet<&str> = out_nodes.iter().map(|n| n.name.as_str()).collect();
        for s in &mut out_services {
            let mut seen = BTreeSet::new();
            for n in &s.declared_nodes {
                if !node_names.contains(n.as_str()) {
                    return Err(invalid(
                        format!("services.{}.nodes", s.name),
                        format!("names unknown node {n:?}"),
                    ));
                }
                if seen.insert(n.clone()) {
                    s.nodes.push(Name::parse(n).map_err(|e| {
                        invalid(format!("services.{}.nodes", s.name), e.to_string())
                    })?);
                }
            }
            for n in out_nodes
                .iter()
                .filter(|n| n.services.iter().any(|x| x == s.name.as_str()))
            {
                if seen.insert(n.name.to_string()) {
                    s.nodes.push(n.name.clone());
                }
            }
        }
        Ok(Self {
            nodes: out_nodes,
            services: out_services,
            restart,
            extra,
        })
    }
}

/// A cluster's node: its desired spec, written by the API (launch, update), and what was
/// observed of its task ([`NodeObserved`]), written by the scheduler and the orchestrator.
/// Stored and served as one flat JSON object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: Name,
    pub docker_image: String,
    pub cpu: f64,
    pub mem: f64,
    pub disk: f64,
    /// The port names the node asked for, in order.
    pub port_names: Vec<String>,
    pub services: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Command>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// What Mesos and the orchestrator observed of the node's current attempt.
    #[serde(flatten)]
    pub observed: NodeObserved,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

/// The observed state of a node: its placement, its task and what Mesos last said of it.
/// Only the scheduler (and the orchestrator, for rolling updates) writes it; an update of
/// the desired spec leaves it alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeObserved {
    pub status: NodeStatus,
    /// Allocated ports by name; empty until the node is placed.
    pub ports: BTreeMap<String, u16>,
    /// Agent host name, once placed.
    pub host: Option<String>,
    /// Agent IP address, once placed (all node containers use HOST networking).
    pub address: Option<String>,
    /// The task of the node's current attempt, once placed. Stored as its string; an
    /// unreadable stored one reads as `None` (see [`TaskId::deserialize_lenient`]).
    #[serde(default, deserialize_with = "TaskId::deserialize_lenient")]
    pub task_id: Option<TaskId>,
    /// The agent the current attempt was placed on (or last reported from).
    pub agent_id: Option<AgentId>,
    /// The port of the node's NodeAgent (its executor's gRPC server), once placed. Reached at
    /// `address:agent_port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_port: Option<u16>,
    /// The pin of the NodeAgent's TLS certificate (lowercase hex SHA-256), from the
    /// executor's TASK_RUNNING; the orchestrator calls the agent only once it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_cert_sha256: Option<String>,
    /// Launch attempts so far; part of the task id.
    #[serde(default)]
    pub attempt: u32,
    /// A replaced node waits for its backoff: it is not placed before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// The last Mesos message/reason about this node, or why it does not fit any offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl NodeObserved {
    /// A node not placed yet.
    pub fn queued() -> Self {
        Self {
            status: NodeStatus::Queued,
            ports: BTreeMap::new(),
            host: None,
            address: None,
            task_id: None,
            agent_id: None,
            agent_port: None,
            agent_cert_sha256: None,
            attempt: 0,
            not_before: None,
            message: None,
        }
    }

    /// Forgets the node's placement and task and queues it for the next placement (the one
    /// way a node goes back to `queued`: a launch not delivered, a lost task, a replacement).
    pub fn requeue(&mut self, not_before: Option<Timestamp>, message: String) {
        *self = Self {
            attempt: self.attempt,
            not_before,
            message: Some(message),
            ..Self::queued()
        };
    }
}

impl Node {
    fn from_spec(
        name: Name,
        n: NodeSpec,
        path: &str,
        services: &BTreeSet<&str>,
    ) -> Result<Self, SpecError> {
        if n.docker_image.trim().is_empty() {
            return Err(invalid(format!("{path}.docker_image"), "is empty"));
        }
        let positive = |v: f64, field: &str, max: f64| {
            if v.is_finite() && v > 0.0 && v <= max {
                Ok(())
            } else {
                Err(invalid(
                    format!("{path}.{field}"),
                    format!("must be a number above 0 and at most {max}"),
                ))
            }
        };
        positive(n.cpu, "cpu", 1024.0)?;
        positive(n.mem, "mem", 64.0 * 1024.0 * 1024.0)?;
        if !(n.disk.is_finite() && n.disk >= 0.0) {
            return Err(invalid(
                format!("{path}.disk"),
                "must be a number of MB, 0 or more",
            ));
        }
        let port_names: Vec<String> = match n.ports {
            None => Vec::new(),
            Some(PortsSpec::Count(c)) => (0..c).map(|i| format!("p{i}")).collect(),
            Some(PortsSpec::Names(v)) => v,
        };
        if port_names.len() > MAX_PORTS_PER_NODE {
            return Err(invalid(
                format!("{path}.ports"),
                format!("asks for more than {MAX_PORTS_PER_NODE} ports"),
            ));
        }
        let mut seen = BTreeSet::new();
        for p in &port_names {
            Name::parse(p).map_err(|e| invalid(format!("{path}.ports"), format!("{p:?}: {e}")))?;
            if !seen.insert(p) {
                return Err(invalid(
                    format!("{path}.ports"),
                    format!("names {p:?} twice"),
                ));
            }
        }
        for s in &n.services {
            if !services.contains(s.as_str()) {
                return Err(invalid(
                    format!("{path}.services"),
                    format!("names unknown service {s:?}"),
                ));
            }
        }
        if n.command.as_ref().is_some_and(Command::is_empty) {
            return Err(invalid(format!("{path}.command"), "is empty"));
        }
        Ok(Self {
            name,
            docker_image: n.docker_image,
            cpu: n.cpu,
            mem: n.mem,
            disk: n.disk,
            port_names,
            services: n.services,
            env: n.env,
            command: n.command,
            volumes: n.volumes,
            tags: n.tags,
            observed: NodeObserved::queued(),
            extra: n.extra,
        })
    }
}

/// A cluster's service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: Name,
    pub nodes: Vec<Name>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Command>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Command>,
    /// Run on a node, on a later configure, when the content of the service's files changed
    /// there (e.g. `scontrol reconfigure`); without it the service is restarted instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<Command>,
    /// Free-form service properties from the template (e.g. `dfs.blocksize`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub properties: Map<String, Value>,
    /// The nodes the template listed under the service itself; only used while parsing.
    #[serde(skip)]
    declared_nodes: Vec<String>,
}

/// What the user wants of a cluster. The api writes it; the scheduler reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    #[default]
    Running,
    Destroyed,
}

/// One status change, as served by `/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: Timestamp,
    pub status: ClusterStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A cluster record: everything about one cluster, stored as one value so that it is always
/// written whole (no half-written cluster can exist).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: ClusterId,
    pub owner: String,
    pub product: Name,
    pub version: Name,
    /// The resolved options (defaults merged with the user's).
    pub options: Map<String, Value>,
    pub status: ClusterStatus,
    /// Why the cluster is `failed`, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub desired: Desired,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub nodes: Vec<Node>,
    pub services: Vec<Service>,
    pub history: Vec<HistoryEntry>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
    /// Shared secret for the NodeAgent gRPC port of this cluster's executors. Never served.
    pub secret: String,
    /// The template's secrets by name (e.g. `munge_key`), made at launch from the OS random
    /// source. Only configure-time file templates see them; never served, never in
    /// `CLUSTER_JSON`, never in a node's spec.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// How far the orchestrator got configuring the cluster; only the orchestrator writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configure: Option<ConfigureProgress>,
    /// How the cluster heals (from the template).
    #[serde(default)]
    pub restart: RestartPolicy,
    /// The recent replacements of lost nodes, oldest first (see [`super::heal::prune`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replacements: Vec<Replacement>,
    /// The version of the desired spec: 1 at launch, one more on every accepted update.
    #[serde(default = "first_generation")]
    pub generation: u64,
    /// Nodes an update removed whose tasks are still to be drained and killed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring: Vec<Retiring>,
    /// Nodes whose services a user asked to restart in place; the orchestrator stops them
    /// and removes the node from here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<Name>,
    /// Nodes whose spec an update changed, in their new spec: each replaces the running node
    /// of its name, one at a time (see [`Cluster::roll_next`]), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rolling: Vec<Node>,
    /// How long the launch may wait to be placed, in seconds, when the launch chose
    /// (`?placement_timeout_s=`); otherwise the server's `--placement-timeout`. Counted
    /// from `created_at`, so a restart keeps the deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_timeout_s: Option<u64>,
}

fn first_generation() -> u64 {
    1
}

/// The orchestrator's record of configuring one cluster, kept on the cluster so that a
/// restarted `paas serve` resumes where the last one stopped instead of starting over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ConfigureProgressRecord")]
pub struct ConfigureProgress {
    /// The node task ids the progress is about, in node order. A relaunched node (new task)
    /// has new ports and an empty disk: the progress then no longer applies.
    pub generation: Vec<String>,
    /// The keys of the finished steps (e.g. `files/head`, `start/head`, `script/start`).
    pub done: Vec<String>,
    /// The step under way, if any: after a restart it is run again (steps are idempotent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Where the orchestration script stands: once started, its `stop` is owed on destroy.
    pub script: ScriptState,
    /// What was last pushed to each node: task id → file path → content digest. Carried over
    /// to the next configure (for the tasks that still run), so a later configure pushes only
    /// changed files and tells their service (`reload`, else a restart). A new task (empty
    /// disk) has no entry: everything is pushed to it, and its service starts afresh.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pushed: BTreeMap<String, BTreeMap<String, String>>,
}

/// Where a cluster's orchestration script stands. Only moves forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScriptState {
    /// `SCRIPT start` has never been run for this cluster.
    #[default]
    NotStarted,
    /// `SCRIPT start` ran at least once, so `SCRIPT stop` is owed on destroy.
    Started,
    /// `SCRIPT stop` has been run (or given up on) after a destroy request.
    Stopped,
}

/// The stored shape of [`ConfigureProgress`]: today's `script`, or the two booleans that
/// records written before it carry (`script_started`, `stop_done`).
#[derive(Deserialize)]
struct ConfigureProgressRecord {
    generation: Vec<String>,
    #[serde(default)]
    done: Vec<String>,
    #[serde(default)]
    current: Option<String>,
    #[serde(default)]
    script: Option<ScriptState>,
    #[serde(default)]
    script_started: bool,
    #[serde(default)]
    stop_done: bool,
    #[serde(default)]
    pushed: BTreeMap<String, BTreeMap<String, String>>,
}

impl From<ConfigureProgressRecord> for ConfigureProgress {
    fn from(r: ConfigureProgressRecord) -> Self {
        let legacy = match (r.script_started, r.stop_done) {
            (_, true) => ScriptState::Stopped,
            (true, false) => ScriptState::Started,
            (false, false) => ScriptState::NotStarted,
        };
        Self {
            generation: r.generation,
            done: r.done,
            current: r.current,
            script: r.script.unwrap_or(legacy),
            pushed: r.pushed,
        }
    }
}

impl ConfigureProgress {
    /// Whether the step with key `step` is finished.
    pub fn is_done(&self, step: &str) -> bool {
        self.done.iter().any(|d| d == step)
    }

    /// Whether `SCRIPT stop` is owed: the script was started and not yet stopped.
    pub fn stop_owed(&self) -> bool {
        self.script == ScriptState::Started
    }
}

impl Cluster {
    /// A test cluster of `nodes` (a template's `nodes` object), owned by `alice`, of product
    /// `p` 1, made at `at`: the one builder unit tests share.
    #[cfg(test)]
    pub fn sample(nodes: serde_json::Value, at: Timestamp) -> Cluster {
        let spec = ClusterSpec::parse(&serde_json::json!({ "nodes": nodes }).to_string())
            .expect("a test cluster's nodes parse");
        Cluster::new(
            ClusterId::generate(),
            "alice".into(),
            Name::parse("p").expect("valid name"),
            Name::parse("1").expect("valid name"),
            Map::new(),
            spec,
            "s".into(),
            at,
        )
    }

    /// A freshly launched cluster: `registered`, every node `queued`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ClusterId,
        owner: String,
        product: Name,
        version: Name,
        options: Map<String, Value>,
        spec: ClusterSpec,
        secret: String,
        now: Timestamp,
    ) -> Self {
        Self {
            id,
            owner,
            product,
            version,
            options,
            status: ClusterStatus::Registered,
            reason: None,
            desired: Desired::Running,
            created_at: now.clone(),
            updated_at: now.clone(),
            nodes: spec.nodes,
            services: spec.services,
            history: vec![HistoryEntry {
                at: now,
                status: ClusterStatus::Registered,
                message: None,
            }],
            extra: spec.extra,
            secret,
            secrets: BTreeMap::new(),
            configure: None,
            restart: spec.restart,
            replacements: Vec::new(),
            generation: 1,
            retiring: Vec::new(),
            restarts: Vec::new(),
            rolling: Vec::new(),
            placement_timeout_s: None,
        }
    }

    /// Applies `event` through the state machine, recording the change in the history.
    ///
    /// # Errors
    /// [`InvalidTransition`] leaves the cluster untouched.
    pub fn apply(
        &mut self,
        event: ClusterEvent,
        message: Option<String>,
        now: Timestamp,
    ) -> Result<(), InvalidTransition> {
        let to = self.status.next(event)?;
        self.status = to;
        if matches!(to, ClusterStatus::Failed | ClusterStatus::Ready) || message.is_some() {
            self.reason = message.clone();
        }
        self.updated_at = now.clone();
        self.history.push(HistoryEntry {
            at: now,
            status: to,
            message,
        });
        Ok(())
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name.as_str() == name)
    }

    pub fn node_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.name.as_str() == name)
    }

    /// True when some node, retiring ones included, may still have a task on an agent.
    pub fn has_tasks(&self) -> bool {
        self.nodes
            .iter()
            .chain(self.retiring.iter().map(|r| &r.node))
            .any(|n| n.observed.status.has_task())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> Result<ClusterSpec, SpecError> {
        ClusterSpec::parse(&v.to_string())
    }

    /// An entry read before is served from the memo only for the very same text: a spec
    /// that differs in one value reads that value, and reading again gives the same spec.
    #[test]
    fn memoized_entries_are_read_only_for_their_own_text() {
        let text = |cpu: f64, start: &str| {
            json!({
                "nodes": {
                    "a": {"docker_image": "memo:1", "cpu": cpu, "mem": 64, "services": ["s"]},
                    "b": {"docker_image": "memo:1", "cpu": cpu, "mem": 64, "services": ["s"]}
                },
                "services": {"s": {"start": start}}
            })
            .to_string()
        };
        let read = |t: &str| ClusterSpec::read(t).expect("a valid spec").spec;
        let one = read(&text(1.0, "run-one"));
        assert_eq!(one.nodes[0].cpu, 1.0);
        assert_eq!(one.nodes[1].cpu, 1.0);
        let two = read(&text(2.0, "run-two"));
        assert_eq!(two.nodes[1].cpu, 2.0);
        assert_eq!(
            two.services[0].start,
            Some(Command::Shell("run-two".into()))
        );
        assert_eq!(read(&text(1.0, "run-one")), one);
        assert_eq!(
            read(&text(1.0, "run-one")),
            ClusterSpec::parse(&text(1.0, "run-one")).unwrap()
        );

        // A memo keeps at most MEMO_ENTRIES texts, none longer than MEMO_TEXT.
        let memo = Memo::<NodeSpec>::default();
        for i in 0..MEMO_ENTRIES + 10 {
            let node = json!({"docker_image": format!("i:{i}"), "cpu": 1, "mem": 1}).to_string();
            assert_eq!(memo.read(&node).unwrap().docker_image, format!("i:{i}"));
            assert!(memo.entries.lock().unwrap().len() <= MEMO_ENTRIES);
        }
        let long = json!({"docker_image": "x".repeat(MEMO_TEXT), "cpu": 1, "mem": 1}).to_string();
        memo.entries.lock().unwrap().clear();
        assert_eq!(memo.read(&long).unwrap().docker_image.len(), MEMO_TEXT);
        assert!(memo.entries.lock().unwrap().is_empty());
        assert!(
            memo.read("{\"cpu\": 1}").is_err(),
            "a bad entry is an error, not kept"
        );
        assert!(memo.entries.lock().unwrap().is_empty());
    }

    #[test]
    fn a_full_spec_parses_in_template_order() {
        let s = spec(json!({
            "nodes": {
                "head": {"docker_image": "img:1", "cpu": 1, "mem": 512, "ports": ["http"], "services": ["head"]},
                "w1": {"docker_image": "img:1", "cpu": 0.5, "mem": 256, "disk": 100, "ports": 2, "services": ["workers"], "custom": {"x": 1}},
                "w0": {"docker_image": "img:1", "cpu": 0.5, "mem": 256, "services": ["workers"]}
            },
            "services": {
                "workers": {"start": "run", "ready": ["true"], "reload": ["kill", "-HUP", "1"], "dfs.blocksize": 64},
                "head": {"nodes": ["head"], "files": [{"path": "/etc/x.conf", "template": "{{x}}"}]}
            },
            "dnsname": "abc"
        }))
        .unwrap();
        let names: Vec<_> = s.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["head", "w1", "w0"]);
        assert_eq!(s.nodes[1].port_names, ["p0", "p1"]);
        assert_eq!(s.nodes[1].extra["custom"], json!({"x": 1}));
        assert_eq!(s.services[0].name.as_str(), "workers");
        assert_eq!(
            s.services[0]
                .nodes
                .iter()
                .map(Name::as_str)
                .collect::<Vec<_>>(),
            ["w1", "w0"]
        );
        assert_eq!(s.services[0].properties["dfs.blocksize"], json!(64));
        assert!(!s.services[0].properties.contains_key("reload"));
        assert_eq!(
            s.services[0].reload.as_ref().map(Command::argv),
            Some(vec!["kill".to_owned(), "-HUP".into(), "1".into()])
        );
        assert_eq!(s.services[1].nodes.len(), 1);
        assert_eq!(s.extra["dnsname"], "abc");
        assert!(
            s.nodes
                .iter()
                .all(|n| n.observed.status == NodeStatus::Queued)
        );
    }

    #[test]
    fn bad_specs_name_the_path() {
        let node = json!({"docker_image": "i", "cpu": 1, "mem": 1});
        let cases = [
            (json!([]), "$"),
            (json!({}), "nodes"),
            (json!({"nodes": {}}), "nodes"),
            (json!({"nodes": []}), "nodes"),
            (json!({"nodes": {"Bad": node}}), "nodes.Bad"),
            (json!({"nodes": {"a": {"cpu": 1, "mem": 1}}}), "nodes.a"),
            (
                json!({"nodes": {"a": {"docker_image": "", "cpu": 1, "mem": 1}}}),
                "nodes.a.docker_image",
            ),
            (
                json!({"nodes": {"a": {"docker_image": "i", "cpu": 0, "mem": 1}}}),
                "nodes.a.cpu",
            ),
            (
                json!({"nodes": {"a": {"docker_image": "i", "cpu": 1, "mem": -1}}}),
                "nodes.a.mem",
            ),
            (
                json!({"nodes": {"a": {"docker_image": "i", "cpu": "1", "mem": 1}}}),
                "nodes.a",
            ),
            (
                json!({"nodes": {"a": {"docker_image": "i", "cpu": 1, "mem": 1, "ports": ["x", "x"]}}}),
                "nodes.a.ports",
            ),
            (
                json!({"nodes": {"a": {"docker_image": "i", "cpu": 1, "mem": 1, "services": ["s"]}}}),
                "nodes.a.services",
            ),
            (
                json!({"nodes": {"a": node}, "services": {"s": {"nodes": ["b"]}}}),
                "services.s.nodes",
            ),
            (
                json!({"nodes": {"a": node}, "services": {"s": {"files": [{"path": "rel", "template": ""}]}}}),
                "services.s.files[0].path",
            ),
            (
                json!({"nodes": {"a": node}, "services": {"s": {"start": ""}}}),
                "services.s.start",
            ),
            (
                json!({"nodes": {"a": node}, "services": {"s": {"reload": []}}}),
                "services.s.reload",
            ),
            (json!({"nodes": {"a": node}, "services": []}), "services"),
            (
                json!({"nodes": {"a": node}, "restart": {"max_restarts": 1, "colour": 2}}),
                "restart",
            ),
            (
                json!({"nodes": {"a": node}, "restart": {"window_secs": 0}}),
                "restart",
            ),
            (json!({"nodes": {"a": node}, "restart": 3}), "restart"),
        ];
        for (v, path) in cases {
            match spec(v.clone()) {
                Err(SpecError::Invalid { path: p, .. }) => assert_eq!(p, path, "{v}"),
                other => panic!("{v}: {other:?}"),
            }
        }
        assert!(matches!(
            ClusterSpec::parse("{\"nodes\": {},}"),
            Err(SpecError::Json(_))
        ));
    }

    #[test]
    fn nodes_and_services_are_read_field_by_field_with_serdes_messages() {
        let why = |v: Value| match spec(v.clone()) {
            Err(SpecError::Invalid { path, why }) => format!("{path}: {why}"),
            other => panic!("{v}: {other:?}"),
        };
        let node = |extra: Value| {
            let mut n = json!({"docker_image": "i", "cpu": 1, "mem": 1});
            n.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            json!({"nodes": {"a": n}})
        };
        let cases = [
            (
                json!({"nodes": {"a": {"cpu": 1, "mem": 1}}}),
                "nodes.a: missing field `docker_image`",
            ),
            (
                json!({"nodes": {"a": {"docker_image": "i", "mem": 1}}}),
                "nodes.a: missing field `cpu`",
            ),
            (
                json!({"nodes": {"a": 5}}),
                "nodes.a: invalid type: integer `5`, expected a node object",
            ),
            (
                node(json!({"cpu": "1"})),
                "nodes.a: invalid type: string \"1\", expected f64",
            ),
            (
                node(json!({"ports": -1})),
                "nodes.a: invalid type: integer `-1`, expected a number of ports or a list of port names",
            ),
            (
                node(json!({"ports": 2.5})),
                "nodes.a: invalid type: floating point `2.5`, expected a number of ports or a list of port names",
            ),
            (
                node(json!({"ports": 8_589_934_592_u64})),
                "nodes.a: invalid value: integer `8589934592`, expected a number of ports or a list of port names",
            ),
            (
                node(json!({"ports": ["http", 1]})),
                "nodes.a: invalid type: integer `1`, expected a string",
            ),
            (
                node(json!({"command": 3})),
                "nodes.a: invalid type: integer `3`, expected a command: a shell line (a string) or an argv (a list of strings)",
            ),
            (
                json!({"nodes": {"a": {"docker_image": "i", "cpu": 1, "mem": 1}}, "services": {"s": []}}),
                "services.s: invalid type: sequence, expected a service object",
            ),
            (
                json!({"nodes": {"a": {"docker_image": "i", "cpu": 1, "mem": 1}}, "services": {"s": {"start": [["x"]]}}}),
                "services.s: invalid type: sequence, expected a string",
            ),
        ];
        for (v, expected) in cases {
            assert_eq!(why(v.clone()), expected, "{v}");
        }
        // Nulls read as absent where a field is optional; unknown keys stay, in order.
        let s = spec(json!({
            "nodes": {"a": {"z": 1, "docker_image": "i", "ports": null, "command": null, "cpu": 1, "a": 2, "mem": 1, "m": 3}},
            "services": {"s": {"start": null, "y": 1, "nodes": ["a"], "b": 2}}
        }))
        .unwrap();
        let n = &s.nodes[0];
        assert_eq!((n.port_names.len(), n.command.is_none()), (0, true));
        assert_eq!(n.extra.keys().collect::<Vec<_>>(), ["z", "a", "m"]);
        assert!(s.services[0].start.is_none());
        assert_eq!(
            s.services[0].properties.keys().collect::<Vec<_>>(),
            ["y", "b"]
        );
        // A command reads the same from text and from a value, in both forms.
        for (v, argv) in [
            (json!("run it"), vec!["/bin/sh", "-c", "run it"]),
            (json!(["kill", "-HUP", "1"]), vec!["kill", "-HUP", "1"]),
        ] {
            let from_text: Command = serde_json::from_str(&v.to_string()).unwrap();
            let from_value: Command = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(from_text, from_value);
            assert_eq!(from_text.argv(), argv);
            assert_eq!(serde_json::to_value(&from_text).unwrap(), v);
        }
    }

    #[test]
    fn records_round_trip_through_json() {
        let s = spec(json!({"nodes": {"a": {"docker_image": "i", "cpu": 1, "mem": 1, "command": ["sleep", "1"]}}})).unwrap();
        let c = Cluster::new(
            ClusterId::generate(),
            "alice".into(),
            Name::parse("p").unwrap(),
            Name::parse("1").unwrap(),
            Map::new(),
            s,
            "secret".into(),
            Timestamp("2026-01-01T00:00:00.000Z".into()),
        );
        let text = serde_json::to_string(&c).unwrap();
        let back: Cluster = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
    }

    /// A placed node as the previous `Option<String>` fields stored it, byte for byte.
    const STORED_NODE: &str = r#"{"name":"a","status":"running","docker_image":"i","cpu":1.0,"mem":1.0,"disk":0.0,"port_names":["http"],"ports":{"http":31000},"services":[],"host":"h1","address":"10.0.0.1","task_id":"0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10.a.3","agent_id":"0f8e-S12","agent_port":31001,"attempt":3}"#;

    #[test]
    fn a_node_round_trips_through_json_with_the_same_strings() {
        let n: Node = serde_json::from_str(STORED_NODE).unwrap();
        let tid = n.observed.task_id.as_ref().unwrap();
        assert_eq!(
            (
                tid.cluster.to_string().as_str(),
                tid.node.as_str(),
                tid.attempt
            ),
            ("0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10", "a", 3)
        );
        assert_eq!(n.observed.agent_id, Some(AgentId::new("0f8e-S12")));
        // The same fields and strings (the observed part is flattened; key order may differ).
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            serde_json::from_str::<Value>(STORED_NODE).unwrap()
        );
        let back: Node = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(back, n);

        // An unplaced node keeps serving explicit nulls.
        let s = spec(json!({"nodes": {"a": {"docker_image": "i", "cpu": 1, "mem": 1}}})).unwrap();
        let v = serde_json::to_value(&s.nodes[0]).unwrap();
        assert_eq!(
            (&v["task_id"], &v["agent_id"]),
            (&Value::Null, &Value::Null)
        );
        assert!(v.as_object().unwrap().contains_key("task_id"));
    }

    /// A stored task id that is not ours reads as no task id, and the rest of the record
    /// still reads (see [`TaskId::deserialize_lenient`] for why).
    #[test]
    fn an_unreadable_stored_task_id_does_not_hide_the_record() {
        let mut v: Value = serde_json::from_str(STORED_NODE).unwrap();
        v["task_id"] = json!("task-1");
        let n: Node = serde_json::from_value(v).unwrap();
        assert_eq!(n.observed.task_id, None);
        assert_eq!(
            (
                n.observed.status,
                n.observed.agent_id.as_ref().map(AgentId::as_str),
                n.observed.attempt
            ),
            (NodeStatus::Running, Some("0f8e-S12"), 3)
        );
        let mut c = Cluster::new(
            ClusterId::generate(),
            "alice".into(),
            Name::parse("p").unwrap(),
            Name::parse("1").unwrap(),
            Map::new(),
            spec(json!({"nodes": {"a": {"docker_image": "i", "cpu": 1, "mem": 1}}})).unwrap(),
            "secret".into(),
            Timestamp("2026-01-01T00:00:00.000Z".into()),
        );
        let mut record = serde_json::to_value(&c).unwrap();
        record["nodes"][0]["task_id"] = json!("0B0D2E63-7C2A-4F4B-9A55-2D0F7C3B1A10.a.1");
        let back: Cluster = serde_json::from_value(record).unwrap();
        c.nodes[0].observed.task_id = None;
        assert_eq!(back, c);
    }

    #[test]
    fn configure_progress_reads_the_legacy_booleans() {
        let read = |v: Value| {
            serde_json::from_value::<ConfigureProgress>(v)
                .unwrap()
                .script
        };
        let g = json!(["t1"]);
        assert_eq!(read(json!({"generation": g})), ScriptState::NotStarted);
        assert_eq!(
            read(json!({"generation": g, "script_started": true})),
            ScriptState::Started
        );
        assert_eq!(
            read(json!({"generation": g, "script_started": true, "stop_done": true})),
            ScriptState::Stopped
        );
        assert_eq!(
            read(json!({"generation": g, "script": "stopped"})),
            ScriptState::Stopped
        );
        let p = ConfigureProgress {
            generation: vec!["t1".into()],
            script: ScriptState::Started,
            ..Default::default()
        };
        let back: ConfigureProgress =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn apply_records_history_and_refuses_bad_events() {
        let s = spec(json!({"nodes": {"a": {"docker_image": "i", "cpu": 1, "mem": 1}}})).unwrap();
        let t = |s: &str| Timestamp(s.into());
        let mut c = Cluster::new(
            ClusterId::generate(),
            "u".into(),
            Name::parse("p").unwrap(),
            Name::parse("1").unwrap(),
            Map::new(),
            s,
            String::new(),
            t("1"),
        );
        c.apply(ClusterEvent::PlacementStarted, None, t("2"))
            .unwrap();
        assert!(c.apply(ClusterEvent::Ready, None, t("3")).is_err());
        c.apply(
            ClusterEvent::Failed,
            Some("node a: TASK_FAILED".into()),
            t("4"),
        )
        .unwrap();
        assert_eq!(c.status, ClusterStatus::Failed);
        assert_eq!(c.reason.as_deref(), Some("node a: TASK_FAILED"));
        let statuses: Vec<_> = c.history.iter().map(|h| h.status).collect();
        assert_eq!(
            statuses,
            [
                ClusterStatus::Registered,
                ClusterStatus::Scheduling,
                ClusterStatus::Failed
            ]
        );
    }
}
