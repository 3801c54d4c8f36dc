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
//! - Nodes whose own spec changed (image, cpu, mem, env, …) keep running as they are; their
//!   new spec waits in [`Cluster::rolling`]. Once the cluster has converged and is configured,
//!   the orchestrator replaces them one at a time ([`Cluster::roll_next`]): the old task goes,
//!   a new attempt with the new spec is placed and configured (its `ready` checks pass) before
//!   the next one goes. So at most one node is down at any moment, like Marathon's rolling
//!   restart with `minimumHealthCapacity` 1 minus one node.
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
}

/// What an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated {
    pub generation: u64,
    pub added: Vec<Name>,
    pub removed: Vec<Name>,
    /// Kept nodes whose spec changed: replaced one at a time.
    pub rolled: Vec<Name>,
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
                rolled: Vec::new(),
                changed: false,
            });
        }
        let ctx = spec_context(&options, c.id, &c.owner, self.product, self.node_image);
        let rendered = render_spec(renderer, self.template, ctx).map_err(UpdateError::Render)?;
        check_volumes(&rendered.host_paths, self.policy.volume_roots)
            .map_err(UpdateError::Volume)?;
        let spec = rendered.spec;
        let added: Vec<Name> = spec
            .nodes
            .iter()
            .filter(|n| c.node(n.name.as_str()).is_none())
            .map(|n| n.name.clone())
            .collect();
        let mut kept = Vec::with_capacity(spec.nodes.len());
        let mut rolling = Vec::new();
        for new in spec.nodes {
            match c.nodes.iter().position(|n| n.name == new.name) {
                Some(i) => {
                    let old = c.nodes.swap_remove(i);
                    if !same_spec(&old, &new) {
                        rolling.push(new);
                    }
                    kept.push(old);
                }
                None => kept.push(new),
            }
        }
        let rolled: Vec<Name> = rolling.iter().map(|n| n.name.clone()).collect();
        let removed: Vec<Name> = c.nodes.iter().map(|n| n.name.clone()).collect();
        // A retiring node without a task has nothing to drain or kill.
        c.retiring.extend(
            std::mem::take(&mut c.nodes)
                .into_iter()
                .filter(|n| n.observed.status.has_task())
                .map(|node| Retiring {
                    node,
                    drained: false,
                }),
        );
        c.nodes = kept;
        c.rolling = rolling;
        c.secrets = keep_secrets(&c.secrets, &rendered.secrets, self.make_secret);
        c.services = spec.services;
        c.restart = spec.restart;
        c.extra = spec.extra;
        c.options = options;
        c.generation += 1;
        let what = describe(&added, &removed, &rolled);
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
            rolled,
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
        let attempt = self.new_attempt(name, None, "replaced on request");
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
    /// Replaces the next node of [`Cluster::rolling`] by a new attempt with its new spec:
    /// the running task retires (nothing to drain: the node comes back), the node is queued
    /// for placement. The orchestrator calls it only when the cluster has converged and the
    /// previous replacement passed its checks. Returns the node and its new attempt, or
    /// `None` when nothing is left to roll.
    pub fn roll_next(&mut self) -> Option<(Name, u32)> {
        let next = (!self.rolling.is_empty()).then(|| self.rolling.remove(0))?;
        let name = next.name.clone();
        if self.node(name.as_str()).is_none() {
            return self.roll_next();
        }
        let attempt = self.new_attempt(name.as_str(), Some(next), "replaced with its new spec");
        Some((name, attempt))
    }

    /// Queues a new attempt of the node `name` (which exists), optionally with a new spec;
    /// its current task, if any, retires without a drain. Returns the new attempt number.
    fn new_attempt(&mut self, name: &str, spec: Option<Node>, why: &str) -> u32 {
        let Some(n) = self.nodes.iter_mut().find(|n| n.name.as_str() == name) else {
            return 0;
        };
        let old = n.clone();
        if let Some(mut spec) = spec {
            spec.observed.attempt = old.observed.attempt;
            *n = spec;
        }
        let attempt = old.observed.attempt + 1;
        n.observed.requeue(
            None,
            format!(
                "attempt {} {why}; attempt {attempt} queued",
                old.observed.attempt
            ),
        );
        if old.observed.status.has_task() {
            self.retiring.push(Retiring {
                node: old,
                drained: true,
            });
        }
        attempt
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

/// Whether two nodes ask for the same thing: equal but for what was observed of them.
fn same_spec(old: &Node, new: &Node) -> bool {
    let mut old = old.clone();
    old.observed = new.observed.clone();
    old == *new
}

fn describe(added: &[Name], removed: &[Name], rolled: &[Name]) -> String {
    let list = |v: &[Name]| v.iter().map(Name::as_str).collect::<Vec<_>>().join(", ");
    let mut parts = Vec::new();
    if !added.is_empty() {
        parts.push(format!("adding {}", list(added)));
    }
    if !removed.is_empty() {
        parts.push(format!("removing {}", list(removed)));
    }
    if !rolled.is_empty() {
        parts.push(format!("replacing {} one at a time", list(rolled)));
    }
    if parts.is_empty() {
        return "options changed; configuring again".to_owned();
    }
    parts.join("; ")
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
            id: ClusterId::generate(),
            secret: "s".into(),
            make_secret: || "x".repeat(64),
            now: Timestamp("t0".into()),
        };
        let mut c = req.cluster(&r, fresh).unwrap();
        let id = c.id;
        for n in &mut c.nodes {
            n.observed.status = NodeStatus::Running;
            n.observed.task_id = Some(task_id(id, &n.name));
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
            c.nodes[0].observed.task_id,
            Some(task_id(c.id, &c.nodes[0].name)),
            "kept as it was"
        );
        assert_eq!(c.nodes[3].observed.status, NodeStatus::Queued);
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
        c.nodes[2].observed.status = NodeStatus::Queued; // never placed: nothing to drain
        c.nodes[2].observed.task_id = None;
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
        c.nodes[1].observed.attempt = 1;
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
            (
                n1.observed.status,
                n1.observed.task_id.as_ref(),
                n1.observed.attempt
            ),
            (NodeStatus::Queued, None, 1)
        );
        assert_eq!(c.retiring.len(), 1);
        assert!(
            c.retiring[0].drained,
            "no drain hook for a requested replacement"
        );
        let old = c.retiring[0]
            .node
            .observed
            .task_id
            .as_ref()
            .map(ToString::to_string);
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

    /// The two writers stay apart: an update writes the desired spec, never what was
    /// observed of a node that stays (its task, agent, ports, attempt).
    #[test]
    fn an_update_leaves_the_observed_state_of_kept_nodes_alone() {
        for changes in [
            json!({"size": 4}),
            json!({"size": 1}),
            json!({"cpu": 0.5}),
            json!({"flag": "b", "size": 3}),
        ] {
            let mut c = running(2);
            for (i, n) in c.nodes.iter_mut().enumerate() {
                n.observed.attempt = 3;
                n.observed.ports.insert("http".into(), 31000 + i as u16);
                n.observed.agent_id = Some("agent-1".into());
            }
            let before: Vec<_> = c.nodes.iter().map(|n| n.observed.clone()).collect();
            update(&mut c, changes.clone()).unwrap();
            for (n, old) in c.nodes.iter().zip(&before) {
                assert_eq!(&n.observed, old, "{changes}: node {}", n.name);
            }
        }
    }

    #[test]
    fn a_changed_node_spec_rolls_one_node_at_a_time() {
        let mut c = running(2);
        let before = c.nodes.clone();
        let u = update(&mut c, json!({"cpu": 0.5, "size": 3})).unwrap();
        assert_eq!((u.added.len(), u.rolled.len()), (1, 2));
        assert_eq!(
            c.nodes[..2],
            before[..],
            "the running nodes keep running as they are"
        );
        assert_eq!(
            c.nodes[2].cpu, 0.5,
            "an added node gets the new spec at once"
        );
        let rolling: Vec<_> = c.rolling.iter().map(|n| (n.name.as_str(), n.cpu)).collect();
        assert_eq!(rolling, [("node0", 0.5), ("node1", 0.5)]);
        assert_eq!(
            c.history.last().unwrap().message.as_deref(),
            Some("generation 2: adding node2; replacing node0, node1 one at a time")
        );
        c.nodes[0].observed.attempt = 1;
        assert_eq!(c.roll_next(), Some((Name::parse("node0").unwrap(), 2)));
        let n0 = c.node("node0").unwrap();
        assert_eq!(
            (n0.observed.status, n0.cpu, n0.observed.attempt),
            (NodeStatus::Queued, 0.5, 1)
        );
        assert_eq!(
            c.node("node1").unwrap().observed.status,
            NodeStatus::Running,
            "one at a time"
        );
        assert_eq!(c.retiring.len(), 1);
        assert!(c.retiring[0].drained, "the node comes back: no drain hook");
        assert_eq!(c.retiring[0].node.cpu, 0.1, "the old task retires");
        assert_eq!(c.rolling.len(), 1);
        assert_eq!(
            c.roll_next().map(|(n, _)| n.to_string()),
            Some("node1".into())
        );
        assert_eq!(c.roll_next(), None);
    }

    #[test]
    fn refused_updates_change_nothing() {
        let c0 = running(2);
        let cases = [
            (json!({"size": "x"}), "Options"),
            (json!({"colour": 1}), "Options"),
            (json!({"cpu": -1}), "Render"),
        ];
        for (changes, want) in cases {
            let mut c = c0.clone();
            let err = update(&mut c, changes.clone()).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{changes}: {err:?}");
            assert_eq!(c, c0, "{changes}: untouched");
        }
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
