//! The configure plan of a cluster and the reconcile decision: pure functions of the stored
//! record, table-tested. The controller executes what [`decide`] returns, records the result,
//! and asks again; so every decision is idempotent and a restart simply asks again.
//!
//! Plan, per service in template order: `files/<svc>` (render and push its files to its
//! nodes), `start/<svc>` (start its `start` command as a supervised service on its nodes),
//! `ready/<svc>` (poll its `ready` check on its nodes); then `script/start` when the product has
//! an orchestration script. Steps without content (no files, no start, no ready) are left out.

use crate::domain::{Cluster, ClusterStatus, ConfigureProgress, Desired, NodeStatus, ScriptState};

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Files,
    Start,
    Ready,
    Script,
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub kind: StepKind,
    /// The service, for every kind but [`StepKind::Script`].
    pub service: Option<String>,
}

impl Step {
    /// The key recorded in [`ConfigureProgress::done`], e.g. `files/head`, `script/start`.
    pub fn key(&self) -> String {
        let kind = match self.kind {
            StepKind::Files => "files",
            StepKind::Start => "start",
            StepKind::Ready => "ready",
            StepKind::Script => "script",
        };
        format!("{kind}/{}", self.service.as_deref().unwrap_or("start"))
    }
}

/// The steps that configure `c`, in order.
pub fn plan(c: &Cluster, has_script: bool) -> Vec<Step> {
    let mut steps = Vec::new();
    for s in &c.services {
        let step = |kind| Step {
            kind,
            service: Some(s.name.to_string()),
        };
        if !s.files.is_empty() {
            steps.push(step(StepKind::Files));
        }
        if s.start.is_some() {
            steps.push(step(StepKind::Start));
        }
        if s.ready.is_some() {
            steps.push(step(StepKind::Ready));
        }
    }
    if has_script {
        steps.push(Step {
            kind: StepKind::Script,
            service: None,
        });
    }
    steps
}

/// The spec generation and node task ids progress is tied to (see
/// [`ConfigureProgress::generation`]): an update or a replaced node starts it over.
pub fn generation(c: &Cluster) -> Vec<String> {
    std::iter::once(format!("generation {}", c.generation))
        .chain(c.nodes.iter().map(|n| {
            n.task_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        }))
        .collect()
}

/// What the controller should do next for a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing: not ours to move (yet), or already done.
    Idle,
    /// Start configuring: `scheduled → configuring` (or a stale progress in `configuring`)
    /// with fresh progress for the current generation.
    Begin,
    /// Run this step.
    Run(Step),
    /// Every step is done: `configuring → configured` (then `Promote`), or, when healing,
    /// check every service's `ready` once more and go `healing → ready`.
    Finish,
    /// `configured` after a restart: the checks passed before; move on to `ready`.
    Promote,
    /// The cluster is being destroyed and its script was started: run `SCRIPT stop` once.
    StopScript,
    /// An update removed this node: run the product's drain hook (`SCRIPT stop-node NODE`),
    /// then let the scheduler kill it.
    Drain(String),
    /// A user asked to restart this node's services: stop them; configuring again starts
    /// them.
    StopServices(String),
}

/// The next action for `c`. `has_script`: the product has an orchestration script.
pub fn decide(c: &Cluster, has_script: bool) -> Action {
    let progress = c.configure.as_ref();
    if c.desired == Desired::Destroyed {
        let owed = progress.is_some_and(ConfigureProgress::stop_owed);
        return if owed && has_script {
            Action::StopScript
        } else {
            Action::Idle
        };
    }
    match c.status {
        // The scheduler only says `scheduled` when every node runs; checking again keeps a
        // hand-edited or stale record from sending us to nodes that are not there.
        ClusterStatus::Scheduled if c.nodes.iter().all(|n| n.status == NodeStatus::Running) => {
            Action::Begin
        }
        ClusterStatus::Configuring => match progress {
            Some(p) if p.generation == generation(c) => next_step(c, p, has_script),
            _ => Action::Begin,
        },
        // Day 2: first drain what an update removes; then, once every node runs (a replaced
        // or added one too) and nothing retires, configure the whole cluster again (every
        // step is idempotent), so files naming peers follow; `Finish` then checks the
        // services and makes the cluster `ready`.
        ClusterStatus::Healing | ClusterStatus::Updating => {
            if let Some(r) = c.retiring.iter().find(|r| !r.drained) {
                return Action::Drain(r.node.name.to_string());
            }
            if let Some(n) = c.restarts.first() {
                return Action::StopServices(n.to_string());
            }
            let converged =
                c.retiring.is_empty() && c.nodes.iter().all(|n| n.status == NodeStatus::Running);
            match progress {
                _ if !converged => Action::Idle,
                Some(p) if p.generation == generation(c) => next_step(c, p, has_script),
                _ => Action::Begin,
            }
        }
        ClusterStatus::Configured => Action::Promote,
        _ => Action::Idle,
    }
}

fn next_step(c: &Cluster, p: &ConfigureProgress, has_script: bool) -> Action {
    plan(c, has_script)
        .into_iter()
        .find(|s| !p.is_done(&s.key()))
        .map_or(Action::Finish, Action::Run)
}

/// Fresh progress for `c`. `previous` keeps the fact that a script was started (its `stop`
/// is still owed after a relaunch).
pub fn fresh_progress(c: &Cluster, previous: Option<&ConfigureProgress>) -> ConfigureProgress {
    ConfigureProgress {
        generation: generation(c),
        script: previous.map_or(ScriptState::NotStarted, |p| p.script),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cluster::ClusterSpec;
    use crate::domain::lifecycle::ClusterEvent;
    use crate::domain::{ClusterId, Name, Node, TaskId, Timestamp};
    use serde_json::{Map, json};

    fn cluster() -> Cluster {
        let spec = ClusterSpec::parse(
            &json!({
                "nodes": {
                    "node0": {"docker_image": "i", "cpu": 1, "mem": 1, "services": ["head"]},
                    "node1": {"docker_image": "i", "cpu": 1, "mem": 1, "services": ["workers"]}
                },
                "services": {
                    "head": {"files": [{"path": "/a", "template": "x"}], "start": ["/paas"], "ready": ["/paas"]},
                    "workers": {"start": ["/paas"]},
                    "empty": {}
                }
            })
            .to_string(),
        )
        .unwrap();
        let t = || Timestamp("t".into());
        let mut c = Cluster::new(
            ClusterId::random(),
            "u".into(),
            Name::parse("p").unwrap(),
            Name::parse("1").unwrap(),
            Map::new(),
            spec,
            "s".into(),
            t(),
        );
        c.apply(ClusterEvent::PlacementStarted, None, t()).unwrap();
        for n in &mut c.nodes {
            n.status = NodeStatus::Running;
            n.task_id = Some(task(c.id, n, 1));
        }
        c.apply(ClusterEvent::AllRunning, None, t()).unwrap();
        c
    }

    /// The task id of `node`'s attempt `attempt`.
    fn task(cluster: ClusterId, node: &Node, attempt: u32) -> TaskId {
        TaskId {
            cluster,
            node: node.name.clone(),
            attempt,
        }
    }

    fn keys(c: &Cluster, script: bool) -> Vec<String> {
        plan(c, script).iter().map(Step::key).collect()
    }

    #[test]
    fn plan_follows_template_order_and_skips_empty_steps() {
        let c = cluster();
        assert_eq!(
            keys(&c, true),
            [
                "files/head",
                "start/head",
                "ready/head",
                "start/workers",
                "script/start"
            ]
        );
        assert_eq!(keys(&c, false).len(), 4);
    }

    #[test]
    fn decisions_walk_the_plan_and_resume_from_progress() {
        let mut c = cluster();
        assert_eq!(decide(&c, true), Action::Begin);
        c.apply(ClusterEvent::ConfigureStarted, None, Timestamp("t".into()))
            .unwrap();
        // Configuring without progress (crash right after the status write): begin again.
        assert_eq!(decide(&c, true), Action::Begin);
        c.configure = Some(fresh_progress(&c, None));
        let mut seen = Vec::new();
        while let Action::Run(step) = decide(&c, true) {
            seen.push(step.key());
            // A restart at any point resumes at the first unfinished step.
            let resumed = decide(&c.clone(), true);
            assert_eq!(resumed, Action::Run(step.clone()));
            c.configure.as_mut().unwrap().done.push(step.key());
        }
        assert_eq!(seen, keys(&c, true));
        assert_eq!(decide(&c, true), Action::Finish);
        c.apply(ClusterEvent::Configured, None, Timestamp("t".into()))
            .unwrap();
        assert_eq!(decide(&c, true), Action::Promote);
        c.apply(ClusterEvent::Ready, None, Timestamp("t".into()))
            .unwrap();
        assert_eq!(decide(&c, true), Action::Idle);
    }

    #[test]
    fn a_relaunched_node_invalidates_progress() {
        let mut c = cluster();
        c.apply(ClusterEvent::ConfigureStarted, None, Timestamp("t".into()))
            .unwrap();
        let mut p = fresh_progress(&c, None);
        p.done = vec!["files/head".into(), "start/head".into()];
        p.script = ScriptState::Started;
        c.configure = Some(p);
        assert!(matches!(decide(&c, true), Action::Run(_)));
        c.nodes[1].task_id = Some(task(c.id, &c.nodes[1], 2));
        assert_eq!(decide(&c, true), Action::Begin);
        let fresh = fresh_progress(&c, c.configure.as_ref());
        assert!(fresh.done.is_empty());
        assert!(fresh.stop_owed(), "stop stays owed");
    }

    #[test]
    fn a_healing_cluster_is_configured_again_once_every_node_runs() {
        let mut c = cluster();
        c.apply(ClusterEvent::ConfigureStarted, None, Timestamp("t".into()))
            .unwrap();
        let mut p = fresh_progress(&c, None);
        p.done = plan(&c, true).iter().map(Step::key).collect();
        c.configure = Some(p);
        c.apply(ClusterEvent::NodeLost, None, Timestamp("t".into()))
            .unwrap();
        c.nodes[1].status = NodeStatus::Queued;
        c.nodes[1].task_id = None;
        assert_eq!(
            decide(&c, true),
            Action::Idle,
            "the new node is not placed yet"
        );
        c.nodes[1].status = NodeStatus::Running;
        c.nodes[1].task_id = Some(task(c.id, &c.nodes[1], 2));
        assert_eq!(
            decide(&c, true),
            Action::Begin,
            "new generation: start over"
        );
        let mut p = fresh_progress(&c, c.configure.as_ref());
        assert!(matches!(next_step(&c, &p, true), Action::Run(_)));
        p.done = plan(&c, true).iter().map(Step::key).collect();
        c.configure = Some(p);
        assert_eq!(decide(&c, true), Action::Finish);
    }

    #[test]
    fn not_ours_or_not_yet() {
        let mut c = cluster();
        c.nodes[0].status = NodeStatus::Staging;
        assert_eq!(
            decide(&c, true),
            Action::Idle,
            "scheduled but a node is not running"
        );
        let mut c = cluster();
        c.apply(
            ClusterEvent::Failed,
            Some("x".into()),
            Timestamp("t".into()),
        )
        .unwrap();
        assert_eq!(decide(&c, true), Action::Idle);
    }

    #[test]
    fn destroy_owes_stop_only_after_a_start() {
        let mut c = cluster();
        c.desired = Desired::Destroyed;
        assert_eq!(decide(&c, true), Action::Idle);
        c.configure = Some(ConfigureProgress {
            script: ScriptState::Started,
            ..Default::default()
        });
        assert_eq!(decide(&c, true), Action::StopScript);
        assert_eq!(decide(&c, false), Action::Idle, "script removed meanwhile");
        c.configure.as_mut().unwrap().script = ScriptState::Stopped;
        assert_eq!(decide(&c, true), Action::Idle);
    }
}
