//! Fault injection (tests: lose an agent, rescind an offer, drop a stream, fail over) and
//! the read-only views of the master ([`Snapshot`]).

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::{
    AgentState, ExecKey, Master, OfferRemoval, TaskKey, master_info, master_status, now_secs,
    update_event,
};
use crate::mesos_local::resources::Quantities;
use crate::proto::mesos::v1 as mesos;
use crate::proto::mesos::v1::TaskState;
use crate::proto::mesos::v1::scheduler as sched;
use crate::proto::mesos::v1::task_status::Reason;

/// A fault to inject (tests): see [`crate::mesos_local::MesosLocal`].
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    LoseAgent(usize),
    RescindOffer(Option<String>),
    DropStream(Option<String>),
    FailOver,
    FailAccepts(AcceptFault),
}

/// ACCEPT calls to answer with 503 Service Unavailable (tests: a call the framework cannot
/// tell went through). See [`crate::mesos_local::MesosLocal::fail_accepts`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AcceptFault {
    /// How many of the next ACCEPTs fail.
    pub calls: usize,
    /// Whether each is carried out before the 503 (a lost answer) or not at all (a lost
    /// call).
    pub applied: bool,
}

/// A read-only view of the master, for tests and `GET /master/state`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub master_id: String,
    pub frameworks: Vec<FrameworkView>,
    pub agents: Vec<AgentView>,
    pub tasks: Vec<TaskView>,
    pub offers: usize,
    pub executors: usize,
}

/// One framework in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct FrameworkView {
    pub id: String,
    pub name: String,
    pub connected: bool,
    pub stream_id: Option<String>,
}

/// One agent in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    pub id: String,
    pub pid: String,
    pub active: bool,
    pub total: String,
    pub allocated: String,
    pub offered: String,
}

/// One task in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct TaskView {
    pub framework_id: String,
    pub task_id: String,
    pub agent_id: String,
    pub state: String,
    /// Status updates the agent holds for the task, the first one in flight.
    pub pending_updates: usize,
    /// The state of the last update the framework acknowledged, if any.
    pub acknowledged: Option<String>,
}

impl Master {
    // ---------------------------------------------------------------------------------
    // Faults and views

    pub(super) fn fault(&mut self, fault: Fault, now: Instant) -> Option<String> {
        match fault {
            Fault::LoseAgent(i) => {
                let agent = self.agents.get(i)?;
                if agent.state != AgentState::Active {
                    return None;
                }
                let agent_id = agent.id.clone();
                tracing::warn!(%agent_id, "fault: agent lost");
                self.agents[i].state = AgentState::Unreachable;
                let offers: Vec<String> = self
                    .offers
                    .iter()
                    .filter(|(_, o)| o.agent == i)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in offers {
                    self.remove_offer(&id, OfferRemoval::Rescind, now);
                }
                // Its tasks are reported by the master (no uuid, unreliable), as for an
                // agent that failed its health checks, then forgotten.
                let tasks: Vec<TaskKey> = self
                    .tasks
                    .iter()
                    .filter(|(_, t)| t.agent == i)
                    .map(|(k, _)| k.clone())
                    .collect();
                let unreachable_time = mesos::TimeInfo {
                    nanoseconds: (now_secs() * 1e9) as i64,
                };
                for tkey in tasks {
                    let Some(t) = self.tasks.remove(&tkey) else {
                        continue;
                    };
                    if t.state.is_terminal() {
                        continue;
                    }
                    let state = if self.partition_aware(&tkey.framework) {
                        TaskState::TaskUnreachable
                    } else {
                        TaskState::TaskLost
                    };
                    let mut s = master_status(&tkey.task, state, Reason::AgentRemoved);
                    s.message = Some("Agent lost (mesos-local fault injection)".into());
                    s.agent_id = Some(mesos::AgentId {
                        value: agent_id.clone(),
                    });
                    s.executor_id = t.executor_id.map(|value| mesos::ExecutorId { value });
                    s.unreachable_time = Some(unreachable_time);
                    self.emit(&tkey.framework, &update_event(s));
                }
                // Its executors die with it (no FAILURE per executor: the agent is gone).
                let keys: Vec<ExecKey> = self
                    .executors
                    .keys()
                    .filter(|k| k.agent == i)
                    .cloned()
                    .collect();
                for key in keys {
                    if let Some(e) = self.executors.remove(&key)
                        && let Some(h) = e.handle
                    {
                        h.stop(Duration::ZERO);
                    }
                }
                self.agents[i].allocated = Quantities::default();
                let failure = sched::Event {
                    r#type: Some(sched::event::Type::Failure as i32),
                    failure: Some(sched::event::Failure {
                        agent_id: Some(mesos::AgentId {
                            value: agent_id.clone(),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let fids: Vec<String> = self.frameworks.keys().cloned().collect();
                for fid in fids {
                    self.emit(&fid, &failure);
                }
                Some(agent_id)
            }
            Fault::RescindOffer(id) => {
                let id = match id {
                    Some(id) => id,
                    None => self.offers.keys().min().cloned()?,
                };
                self.remove_offer(&id, OfferRemoval::Rescind, now)?;
                tracing::warn!(offer_id = %id, "fault: offer rescinded");
                Some(id)
            }
            Fault::DropStream(fid) => {
                let fid = match fid {
                    Some(f) => f,
                    None => self
                        .frameworks
                        .values()
                        .find(|f| f.conn.is_some())
                        .map(|f| f.id.clone())?,
                };
                let sid = self.frameworks.get(&fid)?.conn.as_ref()?.stream_id.clone();
                tracing::warn!(framework_id = %fid, "fault: scheduler stream dropped");
                self.stream_closed(&fid, &sid, now);
                Some(fid)
            }
            Fault::FailAccepts(f) => {
                tracing::warn!(
                    calls = f.calls,
                    applied = f.applied,
                    "fault: the next ACCEPTs fail"
                );
                self.failing_accepts = f;
                Some(f.calls.to_string())
            }
            Fault::FailOver => {
                let master_id = uuid::Uuid::new_v4().to_string();
                tracing::warn!(%master_id, "fault: master failover");
                self.info = master_info(&master_id, &self.cfg, self.rt.addr);
                let fids: Vec<String> = self.frameworks.keys().cloned().collect();
                for fid in fids {
                    self.remove_offers_of(&fid, OfferRemoval::Silent);
                    if let Some(f) = self.frameworks.get_mut(&fid)
                        && f.conn.take().is_some()
                    {
                        f.disconnected_at = Some(now);
                    }
                }
                Some(master_id)
            }
        }
    }

    pub(super) fn snapshot(&self) -> Snapshot {
        let mut frameworks: Vec<FrameworkView> = self
            .frameworks
            .values()
            .map(|f| FrameworkView {
                id: f.id.clone(),
                name: f.info.name.clone(),
                connected: f.conn.is_some(),
                stream_id: f.conn.as_ref().map(|c| c.stream_id.clone()),
            })
            .collect();
        frameworks.sort_by(|a, b| a.id.cmp(&b.id));
        let mut tasks: Vec<TaskView> = self
            .tasks
            .iter()
            .map(|(k, t)| TaskView {
                framework_id: k.framework.clone(),
                task_id: k.task.clone(),
                agent_id: self.agents[t.agent].id.clone(),
                state: t.state.as_str_name().to_owned(),
                pending_updates: t.pending.len(),
                acknowledged: t.acknowledged.map(|s| s.as_str_name().to_owned()),
            })
            .collect();
        tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        Snapshot {
            master_id: self.info.id.clone(),
            frameworks,
            agents: self
                .agents
                .iter()
                .enumerate()
                .map(|(i, a)| AgentView {
                    id: a.id.clone(),
                    pid: format!("slave({})@{}", i + 1, self.rt.addr),
                    active: a.state == AgentState::Active,
                    total: a.total.to_string(),
                    allocated: a.allocated.to_string(),
                    offered: a.offered.to_string(),
                })
                .collect(),
            tasks,
            offers: self.offers.len(),
            executors: self.executors.len(),
        }
    }
}
