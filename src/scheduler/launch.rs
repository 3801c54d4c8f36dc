//! One round of offers turned into records and calls, without I/O: what the pending
//! clusters need, what each cluster records about its placed and its waiting nodes, and the
//! ACCEPT each agent gets once those records are written.
//!
//! It does not evaluate offers ([`super::offers`] does) and does no I/O: the driver reads the
//! clusters, writes the records and sends the calls, in this order:
//! 1. [`placements`] of the plan are persisted with [`record_placements`] (node `staging`
//!    with its task id), **before** any ACCEPT, so that a crash in between leaves a task we
//!    know about and reconcile;
//! 2. [`accepts`] builds the calls from the clusters **as recorded**: a node whose record
//!    was not written (its cluster destroyed meanwhile, or gone) is never launched;
//! 3. the [`waiting`] nodes are told why, with [`record_waiting`].
//!
//! A cluster's queued nodes form one [`Gang`]: they are placed all together or not at all,
//! so a cluster that does not fit waits whole and holds nothing.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};

use crate::domain::lifecycle::ClusterEvent;
use crate::domain::{
    AgentId, Cluster, ClusterId, ClusterStatus, Desired, NodeStatus, TaskId, Timestamp,
};
use crate::proto::mesos::v1 as mesos;
#[cfg(test)]
use crate::proto::mesos::v1::scheduler::call;
use crate::registry::Update;

use super::offers::{Accept, Gang, NodeNeed, Unplaced};
use super::resources::{OfferedResources, Shortage};
use super::tasks::{TaskTemplate, encode_task_info};
use super::wire;

/// Which node of which cluster a need, a placement or a refusal is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeKey {
    pub cluster: ClusterId,
    pub node: String,
}

/// Whether `c` has queued nodes the scheduler should place.
pub fn wants_placement(c: &Cluster) -> bool {
    c.desired == Desired::Running
        && matches!(
            c.status,
            ClusterStatus::Registered
                | ClusterStatus::Scheduling
                | ClusterStatus::Healing
                | ClusterStatus::Updating
        )
        && c.nodes
            .iter()
            .any(|n| n.observed.status == NodeStatus::Queued)
}

/// One gang per cluster that wants placement: its queued nodes, placed all together or not
/// at all. In the clusters' order (the driver passes the oldest first), then the nodes'.
pub fn gangs<C: std::borrow::Borrow<Cluster>>(clusters: &[C]) -> Vec<Gang<NodeKey>> {
    clusters
        .iter()
        .map(Borrow::borrow)
        .filter(|c| wants_placement(c))
        .map(|c| Gang {
            nodes: c
                .nodes
                .iter()
                .filter(|n| n.observed.status == NodeStatus::Queued)
                .map(|n| NodeNeed {
                    key: NodeKey {
                        cluster: c.id,
                        node: n.name.to_string(),
                    },
                    cpus: n.cpu,
                    mem: n.mem,
                    disk: n.disk,
                    ports: n.port_names.len(),
                })
                .collect(),
        })
        .collect()
}

/// A placement decided this round, to be recorded on its cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub node: String,
    pub agent_id: AgentId,
    pub hostname: String,
    pub address: String,
    pub ports: Vec<u16>,
    /// The executor's NodeAgent port (the first executor port; `tasks::task_info` passes the
    /// same one to the executor).
    pub agent_port: Option<u16>,
}

/// The placements of the plan, grouped by cluster: one store write per cluster.
pub fn placements(
    accepts: &[Accept<NodeKey>],
    offers: &[mesos::Offer],
) -> BTreeMap<ClusterId, Vec<Placed>> {
    let by_id = index(offers);
    let mut out: BTreeMap<ClusterId, Vec<Placed>> = BTreeMap::new();
    for acc in accepts {
        let address = acc
            .offer_ids
            .first()
            .and_then(|id| by_id.get(id.as_str()))
            .map(|o| agent_address(o))
            .unwrap_or_else(|| acc.hostname.clone());
        for p in &acc.placements {
            out.entry(p.key.cluster).or_default().push(Placed {
                node: p.key.node.clone(),
                agent_id: AgentId::new(acc.agent_id.clone()),
                hostname: acc.hostname.clone(),
                address: address.clone(),
                ports: p.allotment.ports.clone(),
                agent_port: p.allotment.executor_ports.first().copied(),
            });
        }
    }
    out
}

/// Moves placed nodes to `staging` with a fresh task id. Pure; may run more than once (a
/// store retry runs it again on the new value, which then changes nothing).
pub fn record_placements(c: &mut Cluster, placed: &[Placed], now: &Timestamp) -> Update {
    if !wants_placement(c) {
        return Update::Keep;
    }
    let id = c.id;
    let mut changed = false;
    for p in placed {
        let Some(n) = c.node_mut(&p.node) else {
            continue;
        };
        if n.observed.status != NodeStatus::Queued {
            continue;
        }
        n.observed.attempt += 1;
        n.observed.task_id = Some(TaskId {
            cluster: id,
            node: n.name.clone(),
            attempt: n.observed.attempt,
        });
        n.observed.status = NodeStatus::Staging;
        n.observed.agent_id = Some(p.agent_id.clone());
        n.observed.host = Some(p.hostname.clone());
        n.observed.address = Some(p.address.clone());
        n.observed.ports = n
            .port_names
            .iter()
            .cloned()
            .zip(p.ports.iter().copied())
            .collect();
        n.observed.agent_port = p.agent_port;
        // The new attempt's executor makes a new certificate; its TASK_RUNNING brings the pin.
        n.observed.agent_cert_sha256 = None;
        n.observed.not_before = None;
        n.observed.message = None;
        changed = true;
    }
    if !changed {
        return Update::Keep;
    }
    if c.status == ClusterStatus::Registered {
        let _ = c.apply(ClusterEvent::PlacementStarted, None, now.clone());
    }
    if !c
        .nodes
        .iter()
        .any(|n| n.observed.status == NodeStatus::Queued)
        && c.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("waiting"))
    {
        c.reason = None;
    }
    c.updated_at = now.clone();
    Update::Write
}

/// Why the queued nodes of one cluster wait, as the records keep it.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    /// Each waiting node's message.
    pub nodes: Vec<(String, String)>,
    /// The cluster's reason: how many nodes do not fit, and the first one's shortfall.
    pub reason: String,
}

/// The nodes not placed this round, grouped by cluster: one store write per cluster.
pub fn waiting(unplaced: &[Unplaced<NodeKey>]) -> BTreeMap<ClusterId, Waiting> {
    let mut grouped: BTreeMap<ClusterId, Vec<&Unplaced<NodeKey>>> = BTreeMap::new();
    for u in unplaced {
        grouped.entry(u.key.cluster).or_default().push(u);
    }
    grouped
        .into_iter()
        .map(|(id, nodes)| {
            let waiting = Waiting {
                nodes: nodes
                    .iter()
                    .map(|u| {
                        (
                            u.key.node.clone(),
                            format!("waiting for resources: {}", u.reason),
                        )
                    })
                    .collect(),
                reason: reason(&nodes),
            };
            (id, waiting)
        })
        .collect()
}

/// `waiting for resources: node n2 needs …` for one node, else how many of the cluster's
/// nodes do not fit, naming the first of them. Its shortfall counts what the cluster's
/// nodes tried before it took (first fit), which the reason says.
fn reason(nodes: &[&Unplaced<NodeKey>]) -> String {
    let short: Vec<&&Unplaced<NodeKey>> = nodes
        .iter()
        .filter(|u| u.reason.no_fit().is_some())
        .collect();
    match (nodes, short.first()) {
        ([only], _) => format!(
            "waiting for resources: node {} {}",
            only.key.node, only.reason
        ),
        (_, Some(first)) => format!(
            "waiting for resources: {} of {} nodes {} fit, and a cluster is placed whole or \
             not at all; with the nodes tried before it, node {} {}",
            short.len(),
            nodes.len(),
            if short.len() == 1 {
                "does not"
            } else {
                "do not"
            },
            first.key.node,
            first.reason
        ),
        // A gang refused without a node that does not fit cannot happen; say what is known.
        (_, None) => format!("waiting for resources: {} nodes wait", nodes.len()),
    }
}

/// Records why queued nodes wait. Writes only when something changed.
pub fn record_waiting(c: &mut Cluster, waiting: &Waiting, now: &Timestamp) -> Update {
    if !wants_placement(c) || waiting.nodes.is_empty() {
        return Update::Keep;
    }
    let mut changed = false;
    for (name, message) in &waiting.nodes {
        if let Some(n) = c.node_mut(name).filter(|n| {
            n.observed.status == NodeStatus::Queued
                && n.observed.message.as_deref() != Some(message.as_str())
        }) {
            n.observed.message = Some(message.clone());
            changed = true;
        }
    }
    if c.reason.as_deref() != Some(waiting.reason.as_str()) {
        c.reason = Some(waiting.reason.clone());
        changed = true;
    }
    if c.status == ClusterStatus::Registered {
        let _ = c.apply(ClusterEvent::PlacementStarted, None, now.clone());
        changed = true;
    }
    if changed { Update::Write } else { Update::Keep }
}

/// One ACCEPT for one agent and role: the offers of the plan's pool and the tasks launched
/// on them.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptCall {
    pub agent_id: String,
    pub offer_ids: Vec<String>,
    /// Empty when no node of the pool is launched this round (none recorded, or none could
    /// be built): the offers are then declined instead.
    pub tasks: Vec<Launch>,
    /// Recorded nodes whose TaskInfo could not be built; they stay `staging` until
    /// reconciliation answers for their task.
    pub unbuilt: Vec<Unbuilt>,
}

/// One node's task in an ACCEPT.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub key: NodeKey,
    /// The recorded task id `task` carries, typed (reconciled if the ACCEPT may be lost).
    pub task_id: TaskId,
    /// The encoded `TaskInfo` ([`encode_task_info`]): the call carries nothing else of it.
    pub task: Vec<u8>,
}

/// A recorded node whose TaskInfo could not be cut from its offers (a planning bug).
#[derive(Debug, Clone, PartialEq)]
pub struct Unbuilt {
    pub key: NodeKey,
    pub error: Shortage,
}

impl AcceptCall {
    /// The call, with `refuse_seconds` for what the launches leave of the offers, as the
    /// generated message: the reference [`encode_call`](Self::encode_call)'s bytes are held
    /// to.
    ///
    /// # Errors
    /// A [`prost::DecodeError`] if a task's bytes are not a TaskInfo, which would be a bug
    /// of [`encode_task_info`].
    #[cfg(test)]
    pub fn into_call(self, refuse_seconds: f64) -> Result<call::Accept, prost::DecodeError> {
        use prost::Message;
        let task_infos = self
            .tasks
            .iter()
            .map(|l| mesos::TaskInfo::decode(l.task.as_slice()))
            .collect::<Result<_, _>>()?;
        Ok(call::Accept {
            offer_ids: self
                .offer_ids
                .into_iter()
                .map(|value| mesos::OfferId { value })
                .collect(),
            operations: vec![mesos::offer::Operation {
                r#type: Some(mesos::offer::operation::Type::Launch as i32),
                launch: Some(mesos::offer::operation::Launch { task_infos }),
                ..Default::default()
            }],
            filters: Some(mesos::Filters {
                refuse_seconds: Some(refuse_seconds),
            }),
        })
    }

    /// The whole `scheduler::Call` of framework `framework_id`, encoded: an ACCEPT of these
    /// offers launching these tasks, with `refuse_seconds` for what the launches leave of
    /// the offers, byte for byte what prost encodes for that `Call`, without measuring
    /// each task again at every level of nesting (see [`super::wire`]).
    pub fn encode_call(self, framework_id: mesos::FrameworkId, refuse_seconds: f64) -> Vec<u8> {
        wire::accept_call(
            framework_id,
            self.offer_ids,
            self.tasks.into_iter().map(|l| l.task).collect(),
            refuse_seconds,
        )
    }
}

/// The ACCEPT of every pool of the plan, launching only the nodes that `recorded` (the
/// clusters as [`record_placements`] wrote them) shows `staging` on that pool's agent.
/// Lazy: each call is built as it is taken, so a sender can send the first before the last
/// is built.
pub fn accepts<'a>(
    plan: Vec<Accept<NodeKey>>,
    offers: &'a [mesos::Offer],
    recorded: &'a HashMap<ClusterId, Cluster>,
    tpl: &'a TaskTemplate,
) -> impl Iterator<Item = AcceptCall> + 'a {
    let by_id = index(offers);
    plan.into_iter().map(move |acc| {
        let mut offered = OfferedResources::new(
            acc.offer_ids
                .iter()
                .filter_map(|id| by_id.get(id.as_str()))
                .flat_map(|o| o.resources.iter().cloned())
                .collect(),
        );
        let mut tasks = Vec::with_capacity(acc.placements.len());
        // The tasks of a pool are alike: each starts with room for the one before.
        let mut room = 1024;
        let mut unbuilt = Vec::new();
        for p in acc.placements {
            let Some(c) = recorded.get(&p.key.cluster) else {
                continue;
            };
            let Some(node) = c.node(&p.key.node) else {
                continue;
            };
            // Only nodes this round moved to staging on this agent (not skipped because
            // the cluster was destroyed meanwhile).
            if node.observed.status != NodeStatus::Staging
                || node.observed.agent_id.as_ref().map(AgentId::as_str)
                    != Some(acc.agent_id.as_str())
            {
                continue;
            }
            // [`record_placements`] stages a node only together with its task id; one
            // without could only launch under an empty id, which Mesos refuses.
            let Some(task_id) = node.observed.task_id.clone() else {
                continue;
            };
            let mut task = Vec::with_capacity(room);
            let agent_id = acc.agent_id.as_str();
            let built = encode_task_info(
                &mut task,
                c,
                node,
                &p.allotment,
                agent_id,
                &mut offered,
                tpl,
            );
            match built {
                Ok(()) => {
                    room = task.len();
                    tasks.push(Launch {
                        key: p.key,
                        task_id,
                        task,
                    });
                }
                Err(error) => unbuilt.push(Unbuilt { key: p.key, error }),
            }
        }
        AcceptCall {
            agent_id: acc.agent_id,
            offer_ids: acc.offer_ids,
            tasks,
            unbuilt,
        }
    })
}

fn index(offers: &[mesos::Offer]) -> HashMap<&str, &mesos::Offer> {
    offers.iter().map(|o| (o.id.value.as_str(), o)).collect()
}

/// The agent's IP (node containers share the agent's network), else its hostname.
fn agent_address(o: &mesos::Offer) -> String {
    o.url
        .as_ref()
        .and_then(|u| u.address.ip.clone())
        .unwrap_or_else(|| o.hostname.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Name;
    use crate::domain::cluster::ClusterSpec;
    use crate::proto::mesos::v1::{Resource, value};
    use crate::scheduler::offers::{self, ExecutorOverhead, OfferView};
    use serde_json::{Map, json};

    fn cluster() -> Cluster {
        let mut c = Cluster::sample(
            json!({"a": {"docker_image": "i", "cpu": 1, "mem": 1, "ports": ["http", "rpc"]}, "b": {"docker_image": "i", "cpu": 1, "mem": 1}}),
            Timestamp("t0".into()),
        );
        c.owner = "u".into();
        c
    }

    fn placed(node: &str) -> Placed {
        Placed {
            node: node.into(),
            agent_id: "ag".into(),
            hostname: "localhost".into(),
            address: "127.0.0.1".into(),
            ports: vec![31000, 31001],
            agent_port: Some(31002),
        }
    }

    fn scalar(name: &str, v: f64) -> Resource {
        Resource {
            name: name.into(),
            r#type: value::Type::Scalar as i32,
            scalar: Some(value::Scalar { value: v }),
            ..Default::default()
        }
    }

    fn offer(id: &str, agent: &str, cpus: f64, ports: (u64, u64)) -> mesos::Offer {
        mesos::Offer {
            id: mesos::OfferId { value: id.into() },
            framework_id: mesos::FrameworkId { value: "f".into() },
            agent_id: mesos::AgentId {
                value: agent.into(),
            },
            hostname: format!("{agent}.example"),
            url: Some(mesos::Url {
                scheme: "http".into(),
                address: mesos::Address {
                    hostname: None,
                    ip: Some(format!("10.0.0.{}", agent.len())),
                    port: 5051,
                },
                ..Default::default()
            }),
            resources: vec![
                scalar("cpus", cpus),
                scalar("mem", 1024.0),
                scalar("disk", 0.0),
                Resource {
                    name: "ports".into(),
                    r#type: value::Type::Ranges as i32,
                    ranges: Some(value::Ranges {
                        range: vec![value::Range {
                            begin: ports.0,
                            end: ports.1,
                        }],
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    const EXEC: ExecutorOverhead = ExecutorOverhead {
        cpus: 0.1,
        mem: 8.0,
        disk: 0.0,
        ports: 1,
    };

    fn tpl() -> TaskTemplate {
        TaskTemplate {
            kill_grace: std::time::Duration::from_secs(5),
        }
    }

    /// Evaluates `clusters` on `offers` and records the placements, as the driver does.
    fn round(
        clusters: &mut [Cluster],
        offers: &[mesos::Offer],
    ) -> (Vec<Accept<NodeKey>>, HashMap<ClusterId, Cluster>) {
        let views: Vec<OfferView> = offers.iter().map(OfferView::from_offer).collect();
        let plan = offers::evaluate_gangs(&views, &gangs(clusters), &EXEC);
        let per_cluster = placements(&plan.accepts, offers);
        let mut recorded = HashMap::new();
        for c in clusters.iter_mut() {
            if let Some(p) = per_cluster.get(&c.id) {
                record_placements(c, p, &Timestamp("t1".into()));
                recorded.insert(c.id, c.clone());
            }
        }
        let waiting = waiting(&plan.unplaced);
        for c in clusters.iter_mut() {
            if let Some(w) = waiting.get(&c.id) {
                record_waiting(c, w, &Timestamp("t1".into()));
            }
        }
        (plan.accepts, recorded)
    }

    /// The TaskInfo a launch sends, decoded.
    fn decoded(l: &Launch) -> mesos::TaskInfo {
        use prost::Message;
        mesos::TaskInfo::decode(l.task.as_slice()).unwrap()
    }

    fn launched(calls: &[AcceptCall]) -> Vec<(String, Vec<String>)> {
        calls
            .iter()
            .map(|c| {
                (
                    c.agent_id.clone(),
                    c.tasks.iter().map(|l| decoded(l).task_id.value).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn placements_are_recorded_with_reversible_task_ids() {
        let mut c = cluster();
        assert!(matches!(
            record_placements(&mut c, &[placed("a")], &Timestamp("t1".into())),
            Update::Write
        ));
        let a = c.node("a").unwrap();
        assert_eq!(a.observed.status, NodeStatus::Staging);
        let tid = a.observed.task_id.clone().unwrap();
        assert_eq!(
            TaskId::parse(&tid.to_string()),
            Ok(tid.clone()),
            "reversible"
        );
        assert_eq!(
            (tid.cluster, tid.node.as_str(), tid.attempt),
            (c.id, "a", 1)
        );
        assert_eq!(
            a.observed.ports,
            BTreeMap::from([("http".to_owned(), 31000), ("rpc".to_owned(), 31001)])
        );
        assert_eq!(c.status, ClusterStatus::Scheduling);
        // A second run of the same closure (CAS retry) on the new value changes nothing.
        assert!(matches!(
            record_placements(&mut c, &[placed("a")], &Timestamp("t2".into())),
            Update::Keep
        ));
        // A destroyed cluster gets no placements.
        let mut d = cluster();
        d.desired = Desired::Destroyed;
        assert!(matches!(
            record_placements(&mut d, &[placed("a")], &Timestamp("t1".into())),
            Update::Keep
        ));
        assert_eq!(d.node("a").unwrap().observed.status, NodeStatus::Queued);
    }

    #[test]
    fn waiting_reasons_are_written_once() {
        let mut c = cluster();
        let why = Waiting {
            nodes: vec![(
                "b".to_owned(),
                "waiting for resources: needs cpus 9".to_owned(),
            )],
            reason: "waiting for resources: node b needs cpus 9".to_owned(),
        };
        assert!(matches!(
            record_waiting(&mut c, &why, &Timestamp("t1".into())),
            Update::Write
        ));
        assert_eq!(
            c.reason.as_deref(),
            Some("waiting for resources: node b needs cpus 9")
        );
        assert_eq!(
            c.node("b").unwrap().observed.message.as_deref(),
            Some("waiting for resources: needs cpus 9")
        );
        assert_eq!(c.status, ClusterStatus::Scheduling);
        assert!(matches!(
            record_waiting(&mut c, &why, &Timestamp("t2".into())),
            Update::Keep
        ));
        record_placements(&mut c, &[placed("a"), placed("b")], &Timestamp("t3".into()));
        assert_eq!(
            c.reason, None,
            "the waiting reason goes once everything is placed"
        );
    }

    /// A cluster of `n` nodes `n0…` of `cpu` cpus each, created at `created`.
    fn sized(n: usize, cpu: f64, created: &str) -> Cluster {
        let nodes: serde_json::Map<String, serde_json::Value> = (0..n)
            .map(|i| {
                (
                    format!("n{i}"),
                    json!({"docker_image": "i", "cpu": cpu, "mem": 1, "ports": ["http"]}),
                )
            })
            .collect();
        let spec = ClusterSpec::parse(&json!({ "nodes": nodes }).to_string()).unwrap();
        Cluster::new(
            ClusterId::generate(),
            "u".into(),
            Name::parse("p").unwrap(),
            Name::parse("1").unwrap(),
            Map::new(),
            spec,
            "s".into(),
            Timestamp(created.into()),
        )
    }

    fn statuses(c: &Cluster) -> Vec<NodeStatus> {
        c.nodes.iter().map(|n| n.observed.status).collect()
    }

    #[test]
    fn waiting_reasons_name_the_node_that_does_not_fit() {
        // (nodes of the cluster, cpus per node, offered cpus, the cluster's reason)
        let cases = [
            (
                1,
                1.5,
                1.0,
                "waiting for resources: node n0 needs cpus 1.6, mem 9, disk 0, 2 ports (node + \
                 executor); none of 1 offer on 1 agent/role pool fits; closest: agent a1 \
                 (a1.example) has only cpus 1 of 1.6",
            ),
            (
                3,
                0.5,
                1.2,
                "waiting for resources: 1 of 3 nodes does not fit, and a cluster is placed \
                 whole or not at all; with the nodes tried before it, node n2 needs cpus \
                 0.6, mem 9, disk 0, 2 ports (node + executor); none of 1 offer on 1 \
                 agent/role pool fits; closest: agent a1 (a1.example) has only cpus 0 of 0.6",
            ),
            (
                3,
                0.5,
                0.6,
                "waiting for resources: 2 of 3 nodes do not fit, and a cluster is placed \
                 whole or not at all; with the nodes tried before it, node n1 needs cpus \
                 0.6, mem 9, disk 0, 2 ports (node + executor); none of 1 offer on 1 \
                 agent/role pool fits; closest: agent a1 (a1.example) has only cpus 0 of 0.6",
            ),
        ];
        for (n, cpu, offered, want) in cases {
            let mut clusters = [sized(n, cpu, "t0")];
            let offers = [offer("o1", "a1", offered, (31000, 31010))];
            let (plan, recorded) = round(&mut clusters, &offers);
            assert!(plan.is_empty() && recorded.is_empty(), "{want}");
            let c = &clusters[0];
            assert_eq!(c.reason.as_deref(), Some(want));
            assert_eq!(c.status, ClusterStatus::Scheduling);
            assert!(c.nodes.iter().all(|n| {
                n.observed.status == NodeStatus::Queued
                    && n.observed.task_id.is_none()
                    && n.observed
                        .message
                        .as_deref()
                        .is_some_and(|m| m.starts_with("waiting for resources: "))
            }));
        }
    }

    #[test]
    fn of_two_clusters_that_fit_only_alone_the_oldest_is_launched_whole() {
        // 3 nodes of 0.5 cpus (0.6 with the executor) each: 1.8 cpus per cluster, on 2.
        let young = sized(3, 0.5, "2026-01-01T00:00:02Z");
        let old = sized(3, 0.5, "2026-01-01T00:00:01Z");
        let mut clusters = [old, young];
        let offers = [offer("o1", "a1", 2.0, (31000, 31010))];
        let (plan, recorded) = round(&mut clusters, &offers);
        let [old, young] = &clusters;
        assert_eq!(statuses(old), [NodeStatus::Staging; 3]);
        assert_eq!(statuses(young), [NodeStatus::Queued; 3]);
        assert!(
            young
                .nodes
                .iter()
                .all(|n| n.observed.task_id.is_none() && n.observed.ports.is_empty())
        );
        assert!(
            young
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("3 of 3 nodes do not fit")),
            "{:?}",
            young.reason
        );
        let calls: Vec<_> = accepts(plan, &offers, &recorded, &tpl()).collect();
        let launched: Vec<ClusterId> = calls
            .iter()
            .flat_map(|c| c.tasks.iter().map(|l| l.key.cluster))
            .collect();
        assert_eq!(launched, [old.id; 3]);

        // Once the old cluster is gone, the same offer takes the young one whole.
        let mut rest = [young.clone()];
        let (plan, recorded) = round(&mut rest, &offers);
        assert_eq!(statuses(&rest[0]), [NodeStatus::Staging; 3]);
        assert_eq!(rest[0].reason, None);
        assert_eq!(
            accepts(plan, &offers, &recorded, &tpl()).collect::<Vec<_>>()[0]
                .tasks
                .len(),
            3
        );
    }

    /// The executor decodes a task's `data` as the node's `NodeLaunch`: every field, as the
    /// cluster and its placement have it.
    #[test]
    fn a_tasks_data_is_the_nodes_launch() {
        use crate::domain::cluster::Command;
        use crate::domain::launch::NodeLaunch;
        let mut c = cluster();
        c.secret = "s3cret".into();
        c.nodes[0].env = [("A".to_owned(), "1 \"quoted\"".to_owned())].into();
        c.nodes[0].command = Some(Command::Argv(vec!["/bin/run".into(), "--x".into()]));
        let offers = [offer("o1", "a1", 4.0, (31000, 31010))];
        let mut clusters = [c];
        let (plan, recorded) = round(&mut clusters, &offers);
        let c = &clusters[0];
        let calls: Vec<AcceptCall> = accepts(plan, &offers, &recorded, &tpl()).collect();
        let tasks = &calls[0].tasks;
        assert_eq!(tasks.len(), 2);
        for (launch, node) in tasks.iter().zip(&c.nodes) {
            let data = decoded(launch).data.unwrap();
            let got: NodeLaunch = serde_json::from_slice(&data).unwrap();
            let want = NodeLaunch {
                cluster_id: c.id,
                node: node.name.to_string(),
                command: node.command.clone(),
                env: node.env.clone(),
                ports: node.observed.ports.clone(),
                agent_port: node.observed.agent_port,
                secret: "s3cret".into(),
            };
            assert_eq!(got, want);
            assert!(got.agent_port.is_some());
        }
        let ports = |i: usize| {
            serde_json::from_slice::<NodeLaunch>(&decoded(&tasks[i]).data.unwrap())
                .unwrap()
                .ports
                .len()
        };
        assert_eq!(
            (ports(0), ports(1)),
            (2, 0),
            "node a has two named ports, b none"
        );
    }

    /// The ACCEPT as sent is the generated `scheduler::Call` the launch describes, to the byte.
    #[test]
    fn an_encoded_accept_is_the_call_it_describes() {
        use crate::proto::mesos::v1::scheduler::Call;
        use prost::Message;
        let volume = json!([
            {"container_path": "/data", "host_path": "/srv/data"},
            {"container_path": "/conf", "host_path": "/etc/conf", "mode": "ro"}
        ]);
        let node = |ports: serde_json::Value| {
            json!({"docker_image": "reg/i:2", "cpu": 1, "mem": 16, "disk": 5,
                   "ports": ports, "volumes": volume, "env": {"E": "1"}})
        };
        let mut clusters = [Cluster::sample(
            json!({"a": node(json!(["http"])), "b": node(json!([])), "c": node(json!(["x", "y"]))}),
            Timestamp("t0".into()),
        )];
        // Three nodes of 1.1 cpus with their executors: neither offer holds them alone.
        let mut offers = [
            offer("o1", "a1", 1.5, (31000, 31010)),
            offer("o2", "a1", 2.0, (32000, 32010)),
        ];
        for o in &mut offers {
            o.resources[2].scalar = Some(value::Scalar { value: 100.0 });
        }
        let (plan, recorded) = round(&mut clusters, &offers);
        let calls: Vec<AcceptCall> = accepts(plan.clone(), &offers, &recorded, &tpl()).collect();
        assert_eq!(calls.len(), 1);
        let call = calls.into_iter().next().unwrap();
        assert_eq!(call.offer_ids.len(), 2, "several offers");
        assert_eq!(call.tasks.len(), 3, "several tasks");
        // Each task is the TaskInfo `task_info` builds for its node, cut from the same
        // offers in the same order.
        let mut offered = OfferedResources::new(
            offers
                .iter()
                .flat_map(|o| o.resources.iter().cloned())
                .collect(),
        );
        for (l, p) in call.tasks.iter().zip(&plan[0].placements) {
            let c = &recorded[&l.key.cluster];
            let node = c.node(&l.key.node).unwrap();
            let want = crate::scheduler::tasks::task_info(
                c,
                node,
                &p.allotment,
                "a1",
                &mut offered,
                &tpl(),
            )
            .unwrap();
            assert_eq!(l.task, want.encode_to_vec(), "node {}", l.key.node);
        }
        for l in &call.tasks {
            let task = decoded(l);
            let executor = task.executor.as_ref().unwrap();
            assert!(executor.resources.len() >= 3, "executor resources");
            assert_eq!(executor.container.as_ref().unwrap().volumes.len(), 2);
            assert_eq!(task.labels.as_ref().unwrap().labels.len(), 3);
        }
        let framework_id = mesos::FrameworkId {
            value: "fw-1".into(),
        };
        let want = Call {
            framework_id: Some(framework_id.clone()),
            r#type: Some(call::Type::Accept as i32),
            accept: Some(call.clone().into_call(2.5).unwrap()),
            ..Default::default()
        };
        let got = call.encode_call(framework_id, 2.5);
        assert_eq!(Call::decode(got.as_slice()).unwrap(), want);
        assert_eq!(got, want.encode_to_vec(), "byte for byte");
    }

    #[test]
    fn placements_carry_the_agent_address_and_the_executor_port() {
        let c = cluster();
        let offers = [offer("o1", "a1", 4.0, (31000, 31010))];
        let views: Vec<OfferView> = offers.iter().map(OfferView::from_offer).collect();
        let plan = offers::evaluate_gangs(&views, &gangs(std::slice::from_ref(&c)), &EXEC);
        let got = placements(&plan.accepts, &offers);
        assert_eq!(
            got[&c.id],
            vec![
                Placed {
                    node: "a".into(),
                    agent_id: "a1".into(),
                    hostname: "a1.example".into(),
                    address: "10.0.0.2".into(),
                    ports: vec![31000, 31001],
                    agent_port: Some(31002),
                },
                Placed {
                    node: "b".into(),
                    agent_id: "a1".into(),
                    hostname: "a1.example".into(),
                    address: "10.0.0.2".into(),
                    ports: vec![],
                    agent_port: Some(31003),
                },
            ]
        );
    }

    /// What a round launches, by what was recorded before the ACCEPT.
    #[test]
    fn only_recorded_staging_nodes_are_launched() {
        struct Case {
            name: &'static str,
            /// Changes the recorded clusters after the placement was written.
            tamper: fn(&mut HashMap<ClusterId, Cluster>),
            /// Tasks launched per agent, as node names.
            want: Vec<(&'static str, Vec<&'static str>)>,
            unbuilt: usize,
        }
        let cases = [
            Case {
                name: "every recorded node is launched on its agent",
                tamper: |_| {},
                want: vec![("a1", vec!["a", "b"])],
                unbuilt: 0,
            },
            Case {
                name: "a cluster whose record was not written launches nothing",
                tamper: |r| r.clear(),
                want: vec![("a1", vec![])],
                unbuilt: 0,
            },
            Case {
                name: "a node recorded on another agent is not launched here",
                tamper: |r| {
                    let c = r.values_mut().next().unwrap();
                    c.node_mut("b").unwrap().observed.agent_id = Some("elsewhere".into());
                },
                want: vec![("a1", vec!["a"])],
                unbuilt: 0,
            },
            Case {
                name: "a node that is no longer staging is not launched",
                tamper: |r| {
                    let c = r.values_mut().next().unwrap();
                    c.node_mut("a").unwrap().observed.status = NodeStatus::Queued;
                },
                want: vec![("a1", vec!["b"])],
                unbuilt: 0,
            },
        ];
        for case in cases {
            let mut clusters = [cluster()];
            let offers = [offer("o1", "a1", 4.0, (31000, 31010))];
            let (plan, mut recorded) = round(&mut clusters, &offers);
            (case.tamper)(&mut recorded);
            let calls: Vec<_> = accepts(plan, &offers, &recorded, &tpl()).collect();
            let got: Vec<(String, Vec<String>)> = launched(&calls)
                .into_iter()
                .map(|(agent, tasks)| {
                    let nodes = tasks
                        .iter()
                        .map(|t| TaskId::parse(t).unwrap().node.to_string())
                        .collect();
                    (agent, nodes)
                })
                .collect();
            let want: Vec<(String, Vec<String>)> = case
                .want
                .iter()
                .map(|(a, ns)| (a.to_string(), ns.iter().map(|n| n.to_string()).collect()))
                .collect();
            assert_eq!(got, want, "{}", case.name);
            let unbuilt: usize = calls.iter().map(|c| c.unbuilt.len()).sum();
            assert_eq!(unbuilt, case.unbuilt, "{}", case.name);
            assert!(calls.iter().all(|c| c.offer_ids == ["o1"]), "{}", case.name);
        }
    }

    #[test]
    fn tasks_take_exactly_their_allotment_from_the_offer() {
        let mut clusters = [cluster()];
        let offers = [offer("o1", "a1", 4.0, (31000, 31010))];
        let (plan, recorded) = round(&mut clusters, &offers);
        let calls: Vec<_> = accepts(plan, &offers, &recorded, &tpl()).collect();
        let a = &decoded(&calls[0].tasks[0]);
        let amount = |rs: &[Resource], name: &str| -> f64 {
            rs.iter()
                .filter(|r| r.name == name)
                .filter_map(|r| r.scalar.map(|s| s.value))
                .sum()
        };
        let ports = |rs: &[Resource]| -> Vec<u64> {
            rs.iter()
                .filter_map(|r| r.ranges.as_ref())
                .flat_map(|rs| rs.range.iter().flat_map(|x| x.begin..=x.end))
                .collect()
        };
        assert_eq!(a.agent_id.value, "a1");
        assert_eq!(amount(&a.resources, "cpus"), 1.0);
        assert_eq!(ports(&a.resources), [31000, 31001]);
        let exec = a.executor.as_ref().unwrap();
        assert_eq!(amount(&exec.resources, "cpus"), 0.1);
        assert_eq!(ports(&exec.resources), [31002]);
        // The recorded NodeAgent port is the executor's.
        let node = recorded[&clusters[0].id]
            .node("a")
            .unwrap()
            .observed
            .agent_port;
        assert_eq!(node, Some(31002));
    }

    #[test]
    fn a_plan_the_offers_cannot_cover_is_reported_not_launched() {
        let mut clusters = [cluster()];
        let offers = [offer("o1", "a1", 4.0, (31000, 31010))];
        let (plan, recorded) = round(&mut clusters, &offers);
        // The offer shrank behind the plan's back (a planning bug): nothing is invented.
        let shrunk = [offer("o1", "a1", 1.0, (31000, 31010))];
        let calls: Vec<_> = accepts(plan, &shrunk, &recorded, &tpl()).collect();
        assert_eq!(launched(&calls).len(), 1);
        assert_eq!(calls[0].tasks.len(), 0, "node a takes 1.1 cpus of 1");
        assert_eq!(
            calls[0]
                .unbuilt
                .iter()
                .map(|u| u.key.node.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }
}
