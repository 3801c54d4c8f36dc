//! The configure plan of a cluster and the reconcile decision: pure functions of the stored
//! record, table-tested. The controller executes what [`decide`] returns, records the result,
//! and asks again; so every decision is idempotent and a restart simply asks again.
//!
//! Plan, per service in template order: `files/<svc>` (render and push its files to its
//! nodes), `start/<svc>` (start its `start` command as a supervised service on its nodes),
//! `ready/<svc>` (poll its `ready` check on its nodes); then `script/start` when the product has
//! an orchestration script. Steps without content (no files, no start, no ready) are left out.
//!
//! A later configure (healing, updating) runs every step again, and `files/<svc>` pushes only
//! what changed: a file whose content differs from what was pushed to the same task before
//! (see [`ConfigureProgress::pushed`]) is pushed, and then the service is told on that node
//! ([`follow_up`]: its `reload` when it has one, else a restart of its `start` process).

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::{
    Cluster, ClusterStatus, ConfigureProgress, Desired, NodeStatus, ScriptState, Service,
};

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
            n.observed
                .task_id
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
    /// Every node runs and is configured, and an update changed some nodes' spec: replace
    /// the next of them (see [`Cluster::roll_next`]). Configuring again after it is placed
    /// checks it before the next one goes.
    Roll(String),
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
        ClusterStatus::Scheduled
            if c.nodes
                .iter()
                .all(|n| n.observed.status == NodeStatus::Running) =>
        {
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
            let converged = c.retiring.is_empty()
                && c.nodes
                    .iter()
                    .all(|n| n.observed.status == NodeStatus::Running);
            match progress {
                _ if !converged => Action::Idle,
                Some(p) if p.generation == generation(c) => match next_step(c, p, has_script) {
                    Action::Finish if !c.rolling.is_empty() => {
                        Action::Roll(c.rolling[0].name.to_string())
                    }
                    next => next,
                },
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
/// is still owed after a relaunch), and what was pushed to the tasks that still run.
pub fn fresh_progress(c: &Cluster, previous: Option<&ConfigureProgress>) -> ConfigureProgress {
    let tasks: BTreeSet<String> = c
        .nodes
        .iter()
        .filter_map(|n| n.observed.task_id.as_ref().map(ToString::to_string))
        .collect();
    ConfigureProgress {
        generation: generation(c),
        script: previous.map_or(ScriptState::NotStarted, |p| p.script),
        pushed: previous
            .map(|p| {
                p.pushed
                    .iter()
                    .filter(|(task, _)| tasks.contains(task.as_str()))
                    .map(|(task, files)| (task.clone(), files.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// The digest recorded for a pushed file's content: FNV-1a 64, in hex. It detects edits, not
/// attacks (the content comes from our own rendering), and is stable across builds.
pub fn digest(content: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in content {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// How a rendered file compares with what was last pushed to the same task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileChange {
    /// Never pushed to this task (a new node, or a file new in the template): push it; the
    /// service's `start` step starts it with the file in place.
    New,
    /// Pushed before with other content: push it, then tell the service.
    Changed,
    /// Pushed before with this content: nothing to do.
    Same,
}

/// See [`FileChange`]. `pushed` is [`ConfigureProgress::pushed`].
pub fn file_change(
    pushed: &BTreeMap<String, BTreeMap<String, String>>,
    task: &str,
    path: &str,
    digest: &str,
) -> FileChange {
    match pushed.get(task).and_then(|files| files.get(path)) {
        None => FileChange::New,
        Some(d) if d == digest => FileChange::Same,
        Some(_) => FileChange::Changed,
    }
}

/// What a node's service needs after its files were pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    /// Nothing changed under a running service (or nothing runs to tell).
    Nothing,
    /// Run the service's `reload` command on the node.
    Reload,
    /// Stop the service's `start` process and start it again, so it reads its files anew.
    Restart,
}

/// The follow-up of pushing files with these `changes` to one node of `svc`: only a file that
/// [`FileChange::Changed`] calls for one (a new file is read by the start that follows).
pub fn follow_up(svc: &Service, changes: impl IntoIterator<Item = FileChange>) -> FollowUp {
    if !changes.into_iter().any(|c| c == FileChange::Changed) {
        return FollowUp::Nothing;
    }
    match (&svc.reload, &svc.start) {
        (Some(_), _) => FollowUp::Reload,
        (None, Some(_)) => FollowUp::Restart,
        (None, None) => FollowUp::Nothing,
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
            ClusterId::generate(),
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
            n.observed.status = NodeStatus::Running;
            n.observed.task_id = Some(task(c.id, n, 1));
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
        c.nodes[1].observed.task_id = Some(task(c.id, &c.nodes[1], 2));
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
        c.nodes[1].observed.status = NodeStatus::Queued;
        c.nodes[1].observed.task_id = None;
        assert_eq!(
            decide(&c, true),
            Action::Idle,
            "the new node is not placed yet"
        );
        c.nodes[1].observed.status = NodeStatus::Running;
        c.nodes[1].observed.task_id = Some(task(c.id, &c.nodes[1], 2));
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
    fn a_rolling_update_replaces_one_node_per_configured_round() {
        let mut c = cluster();
        let done = |c: &mut Cluster| {
            let mut p = fresh_progress(c, c.configure.as_ref());
            p.done = plan(c, true).iter().map(Step::key).collect();
            c.configure = Some(p);
        };
        done(&mut c);
        for e in [
            ClusterEvent::ConfigureStarted,
            ClusterEvent::Configured,
            ClusterEvent::Ready,
        ] {
            c.apply(e, None, Timestamp("t".into())).unwrap();
        }
        c.apply(ClusterEvent::UpdateRequested, None, Timestamp("t".into()))
            .unwrap();
        c.rolling = c
            .nodes
            .iter()
            .map(|n| Node {
                mem: 99.0,
                ..n.clone()
            })
            .collect();
        c.generation += 1;
        assert_eq!(
            decide(&c, true),
            Action::Begin,
            "the new generation is configured first"
        );
        done(&mut c);
        let first = c.nodes[0].name.to_string();
        c.nodes[0].observed.attempt = 1;
        assert_eq!(decide(&c, true), Action::Roll(first.clone()));
        let (name, attempt) = c.roll_next().unwrap();
        assert_eq!((name.as_str(), attempt), (first.as_str(), 2));
        assert_eq!(
            decide(&c, true),
            Action::Idle,
            "waits for the old task to go"
        );
        c.retiring.clear();
        assert_eq!(decide(&c, true), Action::Idle, "and for the new one to run");
        c.nodes[0].observed.status = NodeStatus::Running;
        c.nodes[0].observed.task_id = Some(task(c.id, &c.nodes[0], 2));
        assert_eq!(
            decide(&c, true),
            Action::Begin,
            "the new node is configured and checked"
        );
        done(&mut c);
        assert_eq!(decide(&c, true), Action::Roll(c.nodes[1].name.to_string()));
        c.rolling.clear();
        assert_eq!(decide(&c, true), Action::Finish, "nothing left: promote");
    }

    #[test]
    fn only_changed_files_on_the_same_task_call_for_a_follow_up() {
        let pushed: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::from([(
            "task0".to_owned(),
            BTreeMap::from([("/a".to_owned(), digest(b"one"))]),
        )]);
        for (task, path, content, want) in [
            ("task0", "/a", "one", FileChange::Same),
            ("task0", "/a", "two", FileChange::Changed),
            ("task0", "/b", "one", FileChange::New),
            ("task0-attempt2", "/a", "two", FileChange::New),
        ] {
            let got = file_change(&pushed, task, path, &digest(content.as_bytes()));
            assert_eq!(got, want, "{task} {path} {content}");
        }
        assert_ne!(digest(b""), digest(b"\0"));
        assert_eq!(
            digest(b"a"),
            "af63dc4c8601ec8c",
            "FNV-1a 64, stable across builds"
        );

        let c = cluster();
        let svc = |name: &str| {
            let mut s = c
                .services
                .iter()
                .find(|s| s.name.as_str() == name)
                .unwrap()
                .clone();
            s.reload = None;
            s
        };
        let mut with_reload = svc("head");
        with_reload.reload = Some(serde_json::from_value(json!(["/reload"])).unwrap());
        use FileChange::{Changed, New, Same};
        for (s, changes, want) in [
            (&with_reload, vec![Same, Changed], FollowUp::Reload),
            (&svc("head"), vec![Changed], FollowUp::Restart),
            (&svc("empty"), vec![Changed], FollowUp::Nothing),
            (&with_reload, vec![New, Same], FollowUp::Nothing),
            (&svc("head"), vec![], FollowUp::Nothing),
        ] {
            assert_eq!(
                follow_up(s, changes.clone()),
                want,
                "{} {changes:?}",
                s.name
            );
        }
    }

    #[test]
    fn fresh_progress_keeps_what_was_pushed_to_tasks_that_still_run() {
        let mut c = cluster();
        let mut p = fresh_progress(&c, None);
        let t0 = c.nodes[0].observed.task_id.as_ref().unwrap().to_string();
        let t1 = c.nodes[1].observed.task_id.as_ref().unwrap().to_string();
        for t in [t0.as_str(), t1.as_str(), "gone"] {
            p.pushed
                .entry(t.into())
                .or_default()
                .insert("/a".into(), digest(t.as_bytes()));
        }
        c.nodes[1].observed.task_id = Some(task(c.id, &c.nodes[1], 2));
        let fresh = fresh_progress(&c, Some(&p));
        assert_eq!(fresh.pushed.keys().collect::<Vec<_>>(), [&t0]);
        // Records written before digests were kept read as "nothing pushed yet".
        let old: ConfigureProgress =
            serde_json::from_value(json!({"generation": ["g"], "done": [], "script": "started"}))
                .unwrap();
        assert!(old.pushed.is_empty());
        let back: ConfigureProgress =
            serde_json::from_value(serde_json::to_value(&fresh).unwrap()).unwrap();
        assert_eq!(back, fresh);
    }

    #[test]
    fn not_ours_or_not_yet() {
        let mut c = cluster();
        c.nodes[0].observed.status = NodeStatus::Staging;
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
