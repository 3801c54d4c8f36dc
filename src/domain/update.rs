//! Day-2 changes of a cluster's desired spec (`PATCH /clusters/{id}`): new option values are
//! resolved over the cluster's current ones, the product's template is rendered again, and
//! the new spec is diffed against the current one.
//!
//! - Nodes only in the new spec are added (`queued`; the scheduler places them all together).
//! - Nodes only in the current spec *retire*: the orchestrator drains them (`SCRIPT stop-node
//!   NODE`), then the scheduler kills them and drops them once their task ended.
//! - Services, options and the restart policy become the new ones, and the generation grows;
//!   once every node runs and no node retires, the orchestrator configures the cluster again
//!   (files that name peers follow) and it goes `updating → ready`.
//!
//! A node whose own spec changed (image, cpu, mem, …) would need a rolling replacement; that
//! is refused for now with the nodes and fields named, and nothing changes.
//!
//! Pure, like [`super::launch_request`]: the caller loads the parts and stores the result.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::cluster::{Cluster, Node};
use super::ids::Name;
use super::launch_request::{
    Caller, Policy, RenderError, VolumeError, check_volumes, keep_secrets, render_spec,
    spec_context,
};
use super::lifecycle::{ClusterEvent, ClusterStatus};
use super::options::{OptionsDoc, OptionsError};
use super::product::Product;
use super::template::Renderer;
use super::{Desired, Timestamp};

/// A node that left the desired spec and whose task must go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retiring {
    pub node: Node,
    /// The orchestrator ran the product's drain hook (or there was none): the scheduler may
    /// kill the task now.
    #[serde(default)]
    pub drained: bool,
}

/// A change of a cluster's options.
#[derive(Debug, Clone, Copy)]
pub struct UpdateRequest<'a> {
    pub product: &'a Product,
    pub template: &'a str,
    pub options: &'a OptionsDoc,
    /// The new values of some options; the others keep their current values.
    pub changes: &'a Map<String, Value>,
    /// The default node image, as at launch.
    pub node_image: &'a str,
    /// What the caller may change (advanced options, volume roots), as at launch.
    pub policy: Policy<'a>,
    /// Makes a secret that the new spec declares and the cluster does not have yet.
    pub make_secret: fn() -> String,
}

/// Why an update cannot be applied; the cluster is left as it was.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpdateError {
    /// Only a `ready` cluster takes an update (one at a time: a PATCH during another is
    /// refused, not queued).
    #[error("the cluster is {0}; only a ready cluster can be updated")]
    NotReady(ClusterStatus),
    #[error("invalid options")]
    Options(#[source] OptionsError),
    #[error("the template failed with these options")]
    Render(#[source] RenderError),
    /// A user changed `advanced` options (named), which only an admin may set.
    #[error("only an admin may set the advanced options {}", .0.join(", "))]
    AdminOnly(Vec<String>),
    /// The new spec mounts a host path outside the allowed roots.
    #[error(transparent)]
    Volume(VolumeError),
    /// Nodes kept by the update whose own spec would change: `(node, fields)`.
    #[error("changing a running node's spec (rolling replacement) is not supported yet")]
    NodeSpecChanged(Vec<(String, Vec<&'static str>)>),
}

/// What an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated {
    pub generation: u64,
    pub added: Vec<Name>,
    pub removed: Vec<Name>,
    /// `false` when the new options equal the current ones: nothing was written.
    pub changed: bool,
}

impl UpdateRequest<'_> {
    /// Applies the update to `c` (which the caller then stores).
    ///
    /// # Errors
    /// [`UpdateError`]; `c` is then untouched.
    pub fn apply(
        &self,
        renderer: &Renderer,
        c: &mut Cluster,
        now: &Timestamp,
    ) -> Result<Updated, UpdateError> {
        if c.desired != Desired::Running || c.status != ClusterStatus::Ready {
            return Err(UpdateError::NotReady(c.status));
        }
        if self.policy.caller != Caller::Admin {
            let advanced = self.options.admin_only(self.changes);
            if !advanced.is_empty() {
                return Err(UpdateError::AdminOnly(advanced));
            }
        }
        let mut wanted = c.options.clone();
        wanted.extend(self.changes.iter().map(|(k, v)| (k.clone(), v.clone())));
        let options = self
            .options
            .resolve(&wanted)
            .map_err(UpdateError::Options)?;
        if options == c.options {
            return Ok(Updated {
                generation: c.generation,
                added: Vec::new(),
                removed: Vec::new(),
                changed: false,
            });
        }
        let ctx = spec_context(&options, c.id, &c.owner, self.product, self.node_image);
        let rendered = render_spec(renderer, self.template, &ctx).map_err(UpdateError::Render)?;
        check_volumes(&rendered.host_paths, self.policy.volume_roots)
            .map_err(UpdateError::Volume)?;
        let spec = rendered.spec;
        let changed_nodes: Vec<(String, Vec<&'static str>)> = spec
            .nodes
            .iter()
            .filter_map(|new| {
                let old = c.node(new.name.as_str())?;
                let fields = spec_differences(old, new);
                (!fields.is_empty()).then(|| (new.name.to_string(), fields))
            })
            .collect();
        if !changed_nodes.is_empty() {
            return Err(UpdateError::NodeSpecChanged(changed_nodes));
        }
        let added: Vec<Name> = spec
            .nodes
            .iter()
            .filter(|n| c.node(n.name.as_str()).is_none())
            .map(|n| n.name.clone())
            .collect();
        let mut kept = Vec::with_capacity(spec.nodes.len());
        for new in spec.nodes {
            match c.nodes.iter().position(|n| n.name == new.name) {
                Some(i) => kept.push(c.nodes.swap_remove(i)),
                None => kept.push(new),
            }
        }
        let removed: Vec<Name> = c.nodes.iter().map(|n| n.name.clone()).collect();
        // A retiring node without a task has nothing to drain or kill.
        c.retiring.extend(
            std::mem::take(&mut c.nodes)
                .into_iter()
                .filter(|n| n.status.has_task())
                .map(|node| Retiring {
                    node,
                    drained: false,
                }),
        );
        c.nodes = kept;
        c.secrets = keep_secrets(&c.secrets, &rendered.secrets, self.make_secret);
        c.services = spec.services;
        c.restart = spec.restart;
        c.extra = spec.extra;
        c.options = options;
        c.generation += 1;
        let what = describe(&added, &removed);
        // invariant: `ready --UpdateRequested--> updating` is in the table (checked above).
        let _ = c.apply(
            ClusterEvent::UpdateRequested,
            Some(format!("generation {}: {what}", c.generation)),
            now.clone(),
        );
        Ok(Updated {
            generation: c.generation,
            added,
            removed,
            changed: true,
        })
    }
}

/// Why a node cannot be replaced on request; the cluster is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplaceError {
    #[error("the cluster is {0}; only a ready cluster can have a node replaced")]
    NotReady(ClusterStatus),
    #[error("the cluster has no node {0:?}")]
    UnknownNode(String),
}

impl Cluster {
    /// `POST …/nodes/{node}/replace`: the node's current task retires (already drained: the
    /// user asked for it) and the node is queued as a new attempt, possibly on another
    /// agent. The cluster goes `updating` (a new generation) and is configured again once
    /// the new attempt runs and the old one is gone. A requested replacement does not count
    /// against the restart policy.
    ///
    /// # Errors
    /// [`ReplaceError`]; the cluster is then untouched.
    pub fn replace_node(&mut self, name: &str, now: &Timestamp) -> Result<u32, ReplaceError> {
        if self.node(name).is_none() {
            return Err(ReplaceError::UnknownNode(name.to_owned()));
        }
        if self.desired != Desired::Running || self.status != ClusterStatus::Ready {
            return Err(ReplaceError::NotReady(self.status));
        }
        let Some(n) = self.nodes.iter_mut().find(|n| n.name.as_str() == name) else {
            return Err(ReplaceError::UnknownNode(name.to_owned()));
        };
        let old = n.clone();
        n.requeue(
            None,
            format!(
                "attempt {} replaced on request; attempt {} queued",
                old.attempt,
                old.attempt + 1
            ),
        );
        let attempt = old.attempt + 1;
        if old.status.has_task() {
            self.retiring.push(Retiring {
                node: old,
                drained: true,
            });
        }
        self.generation += 1;
        let why = format!(
            "generation {}: replacing node {name} with attempt {attempt}",
            self.generation
        );
        // invariant: `ready --UpdateRequested--> updating` is in the table (checked above).
        let _ = self.apply(ClusterEvent::UpdateRequested, Some(why), now.clone());
        Ok(attempt)
    }
}

impl Cluster {
    /// `POST …/nodes/{node}/restart`: the node's services are restarted in place (same task,
    /// same ports): the orchestrator stops them, then configures the cluster again, which
    /// starts them and checks them. The cluster goes `updating` (a new generation).
    ///
    /// # Errors
    /// [`ReplaceError`]; the cluster is then untouched.
    pub fn restart_node(&mut self, name: &str, now: &Timestamp) -> Result<(), ReplaceError> {
        let Some(node) = self.node(name) else {
            return Err(ReplaceError::UnknownNode(name.to_owned()));
        };
        if self.desired != Desired::Running || self.status != ClusterStatus::Ready {
            return Err(ReplaceError::NotReady(self.status));
        }
        let node = node.name.clone();
        self.restarts.push(node);
        self.generation += 1;
        let why = format!(
            "generation {}: restarting the services of node {name}",
            self.generation
        );
        // invariant: `ready --UpdateRequested--> updating` is in the table (checked above).
        let _ = self.apply(ClusterEvent::UpdateRequested, Some(why), now.clone());
        Ok(())
    }
}

/// The fields of a node's spec that differ (what a rolling replacement would change).
fn spec_differences(old: &Node, new: &Node) -> Vec<&'static str> {
    let mut d = Vec::new();
    let mut check = |same: bool, field: &'static str| {
        if !same {
            d.push(field);
        }
    };
    check(old.docker_image == new.docker_image, "docker_image");
    check(old.cpu == new.cpu, "cpu");
    check(old.mem == new.mem, "mem");
    check(old.disk == new.disk, "disk");
    check(old.port_names == new.port_names, "ports");
    check(old.services == new.services, "services");
    check(old.env == new.env, "env");
    check(old.command == new.command, "command");
    check(old.volumes == new.volumes, "volumes");
    check(old.tags == new.tags, "tags");
    check(old.extra == new.extra, "extra");
    d
}

fn describe(added: &[Name], removed: &[Name]) -> String {
    let list = |v: &[Name]| v.iter().map(Name::as_str).collect::<Vec<_>>().join(", ");
    match (added.is_empty(), removed.is_empty()) {
        (true, true) => "options changed; configuring again".to_owned(),
        (false, true) => format!("adding {}", list(added)),
        (true, false) => format!("removing {}", list(removed)),
        (false, false) => format!("adding {}; removing {}", list(added), list(removed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::launch_request::{Fresh, LaunchRequest};
    use crate::domain::{ClusterId, NodeStatus, TaskId};
    use serde_json::json;

    const TEMPLATE: &str = r#"{"nodes": {
        {{#each (range 0 opts.size)}}{{#unless @first}},{{/unless}}
        "node{{this}}": {"docker_image": "img", "cpu": {{../opts.cpu}}, "mem": 64, "services": ["s"]}
        {{/each}}
      }, "services": {"s": {"start": "run {{opts.flag}}"}}}"#;

    const USER: Policy<'static> = Policy {
        caller: Caller::User,
        volume_roots: &[],
    };

    fn product() -> Product {
        serde_json::from_value(json!({
            "name": "p", "version": "1", "description": "",
            "created_at": "t", "updated_at": "t",
            "parts": {"template": true, "options": true, "orchestrator": false}
        }))
        .unwrap()
    }

    fn doc() -> OptionsDoc {
        serde_json::from_value(json!({
            "required": {"size": 2}, "optional": {"cpu": 0.1, "flag": "a"}
        }))
        .unwrap()
    }

    fn running(size: u64) -> Cluster {
        let (p, d, r) = (product(), doc(), Renderer::spec());
        let user = json!({"size": size}).as_object().unwrap().clone();
        let req = LaunchRequest {
            product: &p,
            template: TEMPLATE,
            options: &d,
            user_options: &user,
            owner: "alice",
            node_image: "img",
            policy: USER,
        };
        let fresh = Fresh {
            id: ClusterId::random(),
            secret: "s".into(),
            make_secret: || "x".repeat(64),
            now: Timestamp("t0".into()),
        };
        let mut c = req.cluster(&r, fresh).unwrap();
        let id = c.id;
        for n in &mut c.nodes {
            n.status = NodeStatus::Running;
            n.task_id = Some(task_id(id, &n.name));
        }
        c.status = ClusterStatus::Ready;
        c
    }

    /// Attempt 1 of node `node`.
    fn task_id(cluster: ClusterId, node: &Name) -> TaskId {
        TaskId {
            cluster,
            node: node.clone(),
            attempt: 1,
        }
    }

    fn update(c: &mut Cluster, changes: Value) -> Result<Updated, UpdateError> {
        let (p, d) = (product(), doc());
        let changes = changes.as_object().unwrap().clone();
        let req = UpdateRequest {
            product: &p,
            template: TEMPLATE,
            options: &d,
            changes: &changes,
            node_image: "img",
            policy: USER,
            make_secret: || "x".repeat(64),
        };
        req.apply(&Renderer::spec(), c, &Timestamp("t1".into()))
    }

    fn names(c: &Cluster) -> Vec<&str> {
        c.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn scaling_up_adds_queued_nodes_and_keeps_the_running_ones() {
        let mut c = running(2);
        let u = update(&mut c, json!({"size": "4"})).unwrap();
        assert_eq!(u.generation, 2);
        assert_eq!(u.added.len(), 2);
        assert!(u.removed.is_empty() && u.changed);
        assert_eq!(names(&c), ["node0", "node1", "node2", "node3"]);
        assert_eq!(
            c.nodes[0].task_id,
            Some(task_id(c.id, &c.nodes[0].name)),
            "kept as it was"
        );
        assert_eq!(c.nodes[3].status, NodeStatus::Queued);
        assert_eq!(c.status, ClusterStatus::Updating);
        assert_eq!(c.options["size"], json!(4));
        let last = c.history.last().unwrap();
        assert_eq!(
            last.message.as_deref(),
            Some("generation 2: adding node2, node3")
        );
    }

    #[test]
    fn scaling_down_retires_the_removed_nodes() {
        let mut c = running(3);
        c.nodes[2].status = NodeStatus::Queued; // never placed: nothing to drain
        c.nodes[2].task_id = None;
        let mut c2 = c.clone();
        let u = update(&mut c, json!({"size": 1})).unwrap();
        assert_eq!(u.removed.len(), 2);
        assert_eq!(names(&c), ["node0"]);
        assert_eq!(c.retiring.len(), 1, "only the node with a task retires");
        assert_eq!(c.retiring[0].node.name.as_str(), "node1");
        assert!(!c.retiring[0].drained);
        // A second update waits for this one.
        assert_eq!(
            update(&mut c, json!({"size": 2})),
            Err(UpdateError::NotReady(ClusterStatus::Updating))
        );
        // Service changes (no node spec change) reconfigure without adding or removing.
        let u = update(&mut c2, json!({"flag": "b"})).unwrap();
        assert!(u.added.is_empty() && u.removed.is_empty() && u.changed);
        assert_eq!(
            c2.services[0].start.as_ref().unwrap().argv(),
            ["/bin/sh", "-c", "run b"]
        );
    }

    #[test]
    fn a_node_replaced_on_request_retires_its_task_and_is_queued_again() {
        let mut c = running(2);
        c.nodes[1].attempt = 1;
        let before = c.clone();
        assert_eq!(
            c.replace_node("node9", &Timestamp("t1".into())),
            Err(ReplaceError::UnknownNode("node9".into()))
        );
        assert_eq!(c, before);
        assert_eq!(c.replace_node("node1", &Timestamp("t1".into())), Ok(2));
        assert_eq!(c.status, ClusterStatus::Updating);
        assert_eq!(c.generation, 2);
        let n1 = c.node("node1").unwrap();
        assert_eq!(
            (n1.status, n1.task_id.as_ref(), n1.attempt),
            (NodeStatus::Queued, None, 1)
        );
        assert_eq!(c.retiring.len(), 1);
        assert!(
            c.retiring[0].drained,
            "no drain hook for a requested replacement"
        );
        let old = c.retiring[0].node.task_id.as_ref().map(ToString::to_string);
        assert_eq!(old, Some(format!("{}.node1.1", c.id)));
        assert!(
            c.replacements.is_empty(),
            "not counted against the restart policy"
        );
        assert_eq!(
            c.replace_node("node0", &Timestamp("t2".into())),
            Err(ReplaceError::NotReady(ClusterStatus::Updating))
        );
    }

    #[test]
    fn a_node_restart_is_recorded_for_the_orchestrator() {
        let mut c = running(2);
        let before = c.clone();
        assert_eq!(
            c.restart_node("node9", &Timestamp("t1".into())),
            Err(ReplaceError::UnknownNode("node9".into()))
        );
        assert_eq!(c, before);
        c.restart_node("node1", &Timestamp("t1".into())).unwrap();
        assert_eq!(c.status, ClusterStatus::Updating);
        assert_eq!(c.generation, 2);
        assert_eq!(c.restarts, [Name::parse("node1").unwrap()]);
        assert_eq!(c.nodes, before.nodes, "same tasks, same ports");
    }

    #[test]
    fn refused_updates_change_nothing() {
        let c0 = running(2);
        let cases = [
            (json!({"size": "x"}), "Options"),
            (json!({"colour": 1}), "Options"),
            (json!({"cpu": 0.5}), "NodeSpecChanged"),
        ];
        for (changes, want) in cases {
            let mut c = c0.clone();
            let err = update(&mut c, changes.clone()).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{changes}: {err:?}");
            assert_eq!(c, c0, "{changes}: untouched");
        }
        let mut c = c0.clone();
        let err = update(&mut c, json!({"cpu": 0.5})).unwrap_err();
        assert_eq!(
            err,
            UpdateError::NodeSpecChanged(vec![
                ("node0".into(), vec!["cpu"]),
                ("node1".into(), vec!["cpu"])
            ])
        );
        let mut c = c0.clone();
        let same = update(&mut c, json!({"size": 2})).unwrap();
        assert!(!same.changed);
        assert_eq!(c, c0, "no change, no new generation");
        let mut c = c0.clone();
        c.status = ClusterStatus::Healing;
        assert!(matches!(
            update(&mut c, json!({"size": 3})),
            Err(UpdateError::NotReady(ClusterStatus::Healing))
        ));
    }
}
