//! How Mesos task updates change a cluster: pure functions over the domain records,
//! table-tested. The driver persists their result and acknowledges afterwards.

use crate::domain::heal::Loss;
use crate::domain::lifecycle::ClusterEvent;
use crate::domain::{AgentId, Cluster, ClusterStatus, Desired, NodeStatus, TaskId, Timestamp};
use crate::proto::mesos::v1::TaskState;
use crate::proto::mesos::v1::task_status::Reason;

/// A node state for a Mesos task state.
pub fn node_status(state: TaskState) -> NodeStatus {
    match state {
        TaskState::TaskStaging => NodeStatus::Staging,
        TaskState::TaskStarting => NodeStatus::Starting,
        TaskState::TaskRunning => NodeStatus::Running,
        TaskState::TaskKilling => NodeStatus::Killing,
        TaskState::TaskFinished => NodeStatus::Finished,
        TaskState::TaskFailed => NodeStatus::Failed,
        TaskState::TaskKilled => NodeStatus::Killed,
        TaskState::TaskLost => NodeStatus::Lost,
        TaskState::TaskError => NodeStatus::Error,
        TaskState::TaskDropped => NodeStatus::Dropped,
        TaskState::TaskUnreachable => NodeStatus::Unreachable,
        TaskState::TaskGone => NodeStatus::Gone,
        TaskState::TaskGoneByOperator => NodeStatus::GoneByOperator,
        TaskState::TaskUnknown => NodeStatus::Unknown,
    }
}

/// One task status about one of our tasks, reduced to what the records keep. The driver
/// parses the task id once, on arrival; a status whose id is not ours never becomes one.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub task_id: TaskId,
    pub state: TaskState,
    pub reason: Option<Reason>,
    pub message: Option<String>,
    pub agent_id: Option<AgentId>,
    /// The NodeAgent's certificate pin from a TASK_RUNNING's `data` (see
    /// [`NodeRunning`](crate::domain::launch::NodeRunning)); `None` for other updates and for
    /// the master's reconciliation answers, which carry no data.
    pub agent_cert_sha256: Option<String>,
}

impl Observed {
    /// `TASK_FAILED (REASON_EXECUTOR_TERMINATED): message`, for node messages and reasons.
    pub fn describe(&self) -> String {
        let mut s = self.state.as_str_name().to_owned();
        if let Some(r) = self.reason {
            s.push_str(&format!(" ({})", r.as_str_name()));
        }
        if let Some(m) = self.message.as_deref().filter(|m| !m.is_empty()) {
            s.push_str(": ");
            s.push_str(m);
        }
        s
    }
}

/// What an update did to a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Recorded; the cluster may have changed status.
    Changed,
    /// The launch never reached the agent (stale offer, agent gone at launch): the node is
    /// queued again for the next offers rather than failing the cluster.
    Requeued,
    /// The task ended without being asked to; the node is queued as a new attempt (see
    /// [`Cluster::node_lost`]).
    Replaced,
    /// About a task that is not the node's current attempt (an older attempt back from a
    /// partition, say): nothing to write; a live one must be killed.
    Stale,
    /// Harmless and ignored (duplicate, out of order); nothing to write.
    Ignored(&'static str),
}

/// Applies `obs` about node `node` to `c`.
pub fn apply_update(c: &mut Cluster, node: &str, obs: &Observed, now: &Timestamp) -> Applied {
    let new = node_status(obs.state);
    let requeue_allowed = c.desired == Desired::Running && c.status == ClusterStatus::Scheduling;
    if let Some(i) = c
        .retiring
        .iter()
        .position(|r| r.node.observed.task_id.as_ref() == Some(&obs.task_id))
    {
        return retiring_update(c, i, new, obs, now);
    }
    let Some(n) = c.node_mut(node) else {
        return Applied::Ignored("no such node");
    };
    if n.observed.task_id.as_ref() != Some(&obs.task_id) {
        return Applied::Stale;
    }
    if n.observed.status.is_terminal() && !new.is_terminal() {
        // Updates of one task arrive in order, but reconciliation answers and retried
        // updates can trail a terminal one. A terminal task stays terminal for us.
        return Applied::Ignored("non-terminal update after a terminal one");
    }
    if n.observed.status == NodeStatus::Staging && requeue_allowed && never_launched(obs) {
        n.observed.requeue(
            None,
            format!("launch not delivered, queued again: {}", obs.describe()),
        );
        return Applied::Requeued;
    }
    let message = Some(obs.describe());
    // A RUNNING without a pin (a reconciliation answer) keeps the one on record.
    let new_pin = obs.agent_cert_sha256.as_ref().filter(|p| {
        new == NodeStatus::Running && n.observed.agent_cert_sha256.as_ref() != Some(*p)
    });
    if n.observed.status == new && n.observed.message == message && new_pin.is_none() {
        return Applied::Ignored("duplicate");
    }
    // The master's answer to a reconciliation that finds the task as we hold it (same
    // state, same agent) says nothing new: only its message would change, and a restart
    // with many tasks would rewrite every cluster once per node for it.
    let same_agent = obs
        .agent_id
        .as_ref()
        .is_none_or(|a| n.observed.agent_id.as_ref() == Some(a));
    if obs.reason == Some(Reason::Reconciliation)
        && n.observed.status == new
        && new_pin.is_none()
        && same_agent
    {
        return Applied::Ignored("a reconciliation answer that confirms the record");
    }
    if let Some(pin) = new_pin {
        n.observed.agent_cert_sha256 = Some(pin.clone());
    }
    n.observed.status = new;
    n.observed.message = message;
    if let Some(a) = &obs.agent_id {
        n.observed.agent_id = Some(a.clone());
    }
    let name = n.name.clone();
    let t = now.clone();
    if c.desired == Desired::Destroyed {
        if !c.has_tasks() {
            let _ = c.apply(ClusterEvent::AllTerminal, None, t);
        }
        return Applied::Changed;
    }
    if new.is_terminal() {
        // Nobody asked this task to end (kills are only sent for destroyed or failed
        // clusters, whose updates do not get here): heal by the product's restart policy.
        let cause = format!("task {}: {}", obs.task_id, obs.describe());
        return match c.node_lost(name.as_str(), &cause, &t) {
            Loss::Replacing { .. } => Applied::Replaced,
            Loss::ClusterFailed | Loss::NotHealed => Applied::Changed,
        };
    } else if new == NodeStatus::Running
        && c.status == ClusterStatus::Scheduling
        && c.nodes
            .iter()
            .all(|n| n.observed.status == NodeStatus::Running)
    {
        let _ = c.apply(ClusterEvent::AllRunning, None, t);
    } else if new == NodeStatus::Running && c.healed_nodes_run() {
        let _ = c.apply(
            ClusterEvent::AllRunning,
            Some(format!("node {name} runs again; every node runs")),
            t,
        );
    }
    Applied::Changed
}

/// An update about a node an update removed: recorded until its task ends, then the node is
/// gone for good.
fn retiring_update(
    c: &mut Cluster,
    i: usize,
    new: NodeStatus,
    obs: &Observed,
    now: &Timestamp,
) -> Applied {
    let n = &mut c.retiring[i].node;
    if n.observed.status == new {
        return Applied::Ignored("duplicate");
    }
    if !new.is_terminal() {
        n.observed.status = new;
        n.observed.message = Some(obs.describe());
        return Applied::Changed;
    }
    c.retiring.remove(i);
    c.updated_at = now.clone();
    if c.desired == Desired::Destroyed && !c.has_tasks() {
        let _ = c.apply(ClusterEvent::AllTerminal, None, now.clone());
    }
    Applied::Changed
}

/// The master's answers that mean "this launch never reached an executor": the task can be
/// launched again elsewhere without any risk of running twice.
fn never_launched(obs: &Observed) -> bool {
    let transient = matches!(
        obs.reason,
        Some(
            Reason::InvalidOffers
                | Reason::AgentRemoved
                | Reason::AgentDisconnected
                | Reason::ResourcesUnknown
                | Reason::AgentRestarted
        )
    );
    obs.state == TaskState::TaskDropped || (obs.state == TaskState::TaskLost && transient)
}

/// For tests: a `scheduling` cluster `id` of `n` nodes `n0`, `n1`, …, each staging its
/// attempt 1.
#[cfg(test)]
pub(crate) fn staging_cluster(id: crate::domain::ClusterId, n: usize) -> Cluster {
    use crate::domain::cluster::ClusterSpec;
    use crate::domain::{Name, TaskId};
    use serde_json::{Map, json};
    let nodes: Map<String, serde_json::Value> = (0..n)
        .map(|i| {
            (
                format!("n{i}"),
                json!({"docker_image": "i", "cpu": 1, "mem": 1}),
            )
        })
        .collect();
    let spec = ClusterSpec::parse(&json!({ "nodes": nodes }).to_string()).unwrap();
    let now = Timestamp("2026-01-01T00:00:00.000Z".into());
    let mut c = Cluster::new(
        id,
        "u".into(),
        Name::parse("p").unwrap(),
        Name::parse("1").unwrap(),
        Map::new(),
        spec,
        "s".into(),
        now.clone(),
    );
    c.apply(ClusterEvent::PlacementStarted, None, now).unwrap();
    for node in &mut c.nodes {
        node.observed.status = NodeStatus::Staging;
        node.observed.task_id = Some(TaskId {
            cluster: id,
            node: node.name.clone(),
            attempt: 1,
        });
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClusterId, Name};

    const CLUSTER: ClusterId = ClusterId(uuid::Uuid::from_u128(0x0b0d));

    /// The task id a test's short label stands for: `t<i>` is attempt 1 of node `n<i>`,
    /// `t1b` attempt 2 of `n1`, `old` attempt 0 of `n0`.
    fn tid(label: &str) -> TaskId {
        let (node, attempt) = match label {
            "old" => ("n0".to_owned(), 0),
            "t1b" => ("n1".to_owned(), 2),
            l => (format!("n{}", &l[1..]), 1),
        };
        TaskId {
            cluster: CLUSTER,
            node: Name::parse(&node).unwrap(),
            attempt,
        }
    }

    fn cluster(n: usize) -> Cluster {
        staging_cluster(CLUSTER, n)
    }

    fn ts() -> Timestamp {
        Timestamp("2026-01-01T00:00:00.000Z".into())
    }

    #[test]
    fn running_records_the_agent_pin_and_a_pinless_running_keeps_it() {
        let mut c = cluster(1);
        let mut o = obs("t0", TaskState::TaskRunning);
        o.agent_cert_sha256 = Some("ab".repeat(32));
        assert_eq!(apply_update(&mut c, "n0", &o, &ts()), Applied::Changed);
        assert_eq!(c.nodes[0].observed.agent_cert_sha256, Some("ab".repeat(32)));
        // The master's reconciliation answer has no data.
        let bare = obs("t0", TaskState::TaskRunning);
        apply_update(&mut c, "n0", &bare, &ts());
        assert_eq!(c.nodes[0].observed.agent_cert_sha256, Some("ab".repeat(32)));
    }

    fn obs(task: &str, state: TaskState) -> Observed {
        Observed {
            task_id: tid(task),
            state,
            reason: None,
            message: None,
            agent_id: Some("a1".into()),
            agent_cert_sha256: None,
        }
    }

    /// The two writers stay apart: a task update writes what was observed of a node, never
    /// its desired spec, whatever the state it reports.
    #[test]
    fn a_task_update_never_changes_a_node_spec() {
        let spec_of = |c: &Cluster| -> Vec<crate::domain::Node> {
            c.nodes
                .iter()
                .map(|n| crate::domain::Node {
                    observed: crate::domain::NodeObserved::queued(),
                    ..n.clone()
                })
                .collect()
        };
        for state in [
            TaskState::TaskStarting,
            TaskState::TaskRunning,
            TaskState::TaskFailed,
            TaskState::TaskLost,
            TaskState::TaskKilled,
            TaskState::TaskDropped,
            TaskState::TaskUnreachable,
            TaskState::TaskFinished,
        ] {
            let mut c = cluster(2);
            let before = spec_of(&c);
            apply_update(&mut c, "n0", &obs("t0", state), &ts());
            assert_eq!(spec_of(&c), before, "{state:?}");
        }
    }

    #[test]
    fn all_running_makes_the_cluster_scheduled() {
        let mut c = cluster(2);
        assert_eq!(
            apply_update(&mut c, "n0", &obs("t0", TaskState::TaskRunning), &ts()),
            Applied::Changed
        );
        assert_eq!(c.status, ClusterStatus::Scheduling);
        assert_eq!(
            apply_update(&mut c, "n1", &obs("t1", TaskState::TaskStarting), &ts()),
            Applied::Changed
        );
        assert_eq!(c.status, ClusterStatus::Scheduling);
        apply_update(&mut c, "n1", &obs("t1", TaskState::TaskRunning), &ts());
        assert_eq!(c.status, ClusterStatus::Scheduled);
        assert_eq!(
            c.nodes[1].observed.agent_id.as_ref().map(AgentId::as_str),
            Some("a1")
        );
    }

    #[test]
    fn duplicates_stale_and_out_of_order_updates_are_harmless() {
        let mut c = cluster(1);
        apply_update(&mut c, "n0", &obs("t0", TaskState::TaskRunning), &ts());
        let before = c.clone();
        assert!(matches!(
            apply_update(&mut c, "n0", &obs("t0", TaskState::TaskRunning), &ts()),
            Applied::Ignored(_)
        ));
        assert_eq!(
            apply_update(&mut c, "n0", &obs("old", TaskState::TaskFailed), &ts()),
            Applied::Stale
        );
        assert!(matches!(
            apply_update(&mut c, "nx", &obs("t0", TaskState::TaskFailed), &ts()),
            Applied::Ignored(_)
        ));
        assert_eq!(c, before);
        c.restart.max_restarts = 0;
        apply_update(&mut c, "n0", &obs("t0", TaskState::TaskKilled), &ts());
        assert!(matches!(
            apply_update(&mut c, "n0", &obs("t0", TaskState::TaskRunning), &ts()),
            Applied::Ignored(_)
        ));
        assert_eq!(c.nodes[0].observed.status, NodeStatus::Killed);
    }

    #[test]
    fn a_failed_node_fails_the_cluster_when_its_policy_allows_no_restarts() {
        for state in [
            TaskState::TaskFailed,
            TaskState::TaskLost,
            TaskState::TaskError,
            TaskState::TaskFinished,
        ] {
            let mut c = cluster(2);
            c.restart.max_restarts = 0;
            let mut o = obs("t1", state);
            o.reason = Some(Reason::ExecutorTerminated);
            o.message = Some("exit 3".into());
            apply_update(&mut c, "n1", &o, &ts());
            assert_eq!(c.status, ClusterStatus::Failed, "{state:?}");
            let reason = c.reason.clone().unwrap();
            assert!(
                reason.contains("node n1")
                    && reason.contains(state.as_str_name())
                    && reason.contains("REASON_EXECUTOR_TERMINATED")
                    && reason.contains("exit 3"),
                "{reason}"
            );
            // A second failure keeps the first reason.
            apply_update(&mut c, "n0", &obs("t0", TaskState::TaskFailed), &ts());
            assert_eq!(c.reason.as_deref(), Some(reason.as_str()));
        }
    }

    #[test]
    fn launches_that_never_arrived_are_queued_again() {
        let mut c = cluster(2);
        let mut o = obs("t1", TaskState::TaskLost);
        o.reason = Some(Reason::InvalidOffers);
        assert_eq!(apply_update(&mut c, "n1", &o, &ts()), Applied::Requeued);
        assert_eq!(c.status, ClusterStatus::Scheduling);
        let n1 = c.node("n1").unwrap();
        assert_eq!(
            (n1.observed.status, n1.observed.task_id.as_ref()),
            (NodeStatus::Queued, None)
        );
        assert!(
            n1.observed
                .message
                .as_deref()
                .unwrap()
                .contains("REASON_INVALID_OFFERS")
        );
        // A dropped launch too; but a task that ran and was lost fails the cluster.
        assert_eq!(
            apply_update(&mut c, "n0", &obs("t0", TaskState::TaskDropped), &ts()),
            Applied::Requeued
        );
        let mut c = cluster(1);
        c.restart.max_restarts = 0;
        apply_update(&mut c, "n0", &obs("t0", TaskState::TaskRunning), &ts());
        let mut o = obs("t0", TaskState::TaskLost);
        o.reason = Some(Reason::AgentRemoved);
        assert_eq!(apply_update(&mut c, "n0", &o, &ts()), Applied::Changed);
        assert_eq!(c.status, ClusterStatus::Failed);
    }

    #[test]
    fn a_lost_node_of_a_ready_cluster_is_replaced_and_the_cluster_heals() {
        let mut c = cluster(2);
        for (n, t) in [("n0", "t0"), ("n1", "t1")] {
            apply_update(&mut c, n, &obs(t, TaskState::TaskRunning), &ts());
        }
        c.status = ClusterStatus::Ready;
        c.nodes[1].observed.attempt = 1;
        let mut o = obs("t1", TaskState::TaskFailed);
        o.message = Some("container killed".into());
        assert_eq!(apply_update(&mut c, "n1", &o, &ts()), Applied::Replaced);
        assert_eq!(c.status, ClusterStatus::Healing);
        let n1 = c.node("n1").unwrap();
        assert_eq!(
            (
                n1.observed.status,
                n1.observed.task_id.as_ref(),
                n1.observed.attempt
            ),
            (NodeStatus::Queued, None, 1),
            "queued; the placement makes attempt 2"
        );
        assert!(n1.observed.not_before.is_some(), "a backoff is set");
        assert_eq!(c.replacements.len(), 1);
        assert!(c.replacements[0].cause.contains("container killed"));
        // The old task's later updates are ignored; the new attempt's RUNNING is recorded.
        assert_eq!(
            apply_update(&mut c, "n1", &obs("t1", TaskState::TaskRunning), &ts()),
            Applied::Stale
        );
        let n1 = c.node_mut("n1").unwrap();
        n1.observed.status = NodeStatus::Staging;
        n1.observed.task_id = Some(tid("t1b"));
        apply_update(&mut c, "n1", &obs("t1b", TaskState::TaskRunning), &ts());
        assert_eq!(c.status, ClusterStatus::Healing, "configured again first");
        let last = c.history.last().unwrap();
        assert!(last.message.as_deref().unwrap().contains("every node runs"));
    }

    #[test]
    fn a_launch_lost_to_reconciliation_is_placed_again_without_failing() {
        // Persisted, then `serve` died before the ACCEPT: the master never heard of the task.
        let mut c = cluster(2);
        let mut o = obs("t1", TaskState::TaskLost);
        o.reason = Some(Reason::Reconciliation);
        assert_eq!(apply_update(&mut c, "n1", &o, &ts()), Applied::Replaced);
        assert_eq!(c.status, ClusterStatus::Scheduling);
        assert_eq!(c.node("n1").unwrap().observed.status, NodeStatus::Queued);
    }

    #[test]
    fn a_reconciliation_answer_writes_only_what_it_changes() {
        let mut c = cluster(2);
        let mut running = obs("t1", TaskState::TaskRunning);
        running.agent_id = Some(AgentId::new("agent-1"));
        assert_eq!(
            apply_update(&mut c, "n1", &running, &ts()),
            Applied::Changed
        );
        let before = c.clone();
        // The master confirms: same state, same agent, its own message.
        let mut answer = running.clone();
        answer.reason = Some(Reason::Reconciliation);
        answer.message = Some("Reconciliation: Latest task state".into());
        assert!(matches!(
            apply_update(&mut c, "n1", &answer, &ts()),
            Applied::Ignored(_)
        ));
        assert_eq!(c, before, "nothing written");
        // Another agent than the one on record is news.
        let mut moved = answer.clone();
        moved.agent_id = Some(AgentId::new("agent-2"));
        assert_eq!(apply_update(&mut c, "n1", &moved, &ts()), Applied::Changed);
        assert_eq!(
            c.node("n1").unwrap().observed.agent_id,
            Some(AgentId::new("agent-2"))
        );
        // So is another state.
        let mut lost = answer;
        lost.state = TaskState::TaskLost;
        assert_eq!(apply_update(&mut c, "n1", &lost, &ts()), Applied::Replaced);
    }

    #[test]
    fn a_retiring_node_is_dropped_once_its_task_ends() {
        use crate::domain::update::Retiring;
        let mut c = cluster(2);
        for (n, t) in [("n0", "t0"), ("n1", "t1")] {
            apply_update(&mut c, n, &obs(t, TaskState::TaskRunning), &ts());
        }
        c.status = ClusterStatus::Updating;
        let node = c.nodes.remove(1);
        c.retiring.push(Retiring {
            node,
            drained: true,
        });
        assert_eq!(
            apply_update(&mut c, "n1", &obs("t1", TaskState::TaskKilling), &ts()),
            Applied::Changed
        );
        assert_eq!(c.retiring[0].node.observed.status, NodeStatus::Killing);
        assert_eq!(
            apply_update(&mut c, "n1", &obs("t1", TaskState::TaskKilled), &ts()),
            Applied::Changed
        );
        assert!(c.retiring.is_empty());
        assert_eq!(c.status, ClusterStatus::Updating, "no failure, no healing");
        assert!(c.replacements.is_empty());
    }

    #[test]
    fn destroy_completes_when_every_task_is_terminal() {
        let mut c = cluster(2);
        apply_update(&mut c, "n0", &obs("t0", TaskState::TaskRunning), &ts());
        apply_update(&mut c, "n1", &obs("t1", TaskState::TaskRunning), &ts());
        c.desired = Desired::Destroyed;
        c.apply(ClusterEvent::DestroyRequested, None, ts()).unwrap();
        apply_update(&mut c, "n0", &obs("t0", TaskState::TaskKilled), &ts());
        assert_eq!(c.status, ClusterStatus::Destroying);
        apply_update(&mut c, "n1", &obs("t1", TaskState::TaskKilled), &ts());
        assert_eq!(c.status, ClusterStatus::Destroyed);
    }

    #[test]
    fn every_task_state_maps() {
        for v in 0..=13 {
            let s = TaskState::try_from(v).unwrap();
            assert_eq!(node_status(s).is_terminal(), s.is_terminal(), "{s:?}");
        }
    }
}
