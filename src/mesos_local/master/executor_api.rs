//! The agents' executor API (SUBSCRIBE, UPDATE, MESSAGE), the agents' status-update streams
//! (reliable updates, retried until acknowledged) and what happens when an executor's
//! container exits.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    Cmd, Conn, ExecKey, ExecLink, Executor, ExecutorExit, Master, Reply, SubscribeReply, TaskKey,
    exec_event, new_uuid, now_secs, update_event,
};
use crate::mesos_local::codec::{self, Encoding};
use crate::mesos_local::container::Outcome;
use crate::proto::mesos::v1 as mesos;
use crate::proto::mesos::v1::executor as exec;
use crate::proto::mesos::v1::scheduler as sched;
use crate::proto::mesos::v1::task_status::{Reason, Source};
use crate::proto::mesos::v1::{TaskState, TaskStatus};

impl Master {
    // ---------------------------------------------------------------------------------
    // Executor API

    pub(super) fn executor_subscribe(
        &mut self,
        agent: usize,
        call: exec::Call,
        encoding: Encoding,
        now: Instant,
    ) -> SubscribeReply {
        let fid = call.framework_id.value.clone();
        let key = ExecKey::new(agent, &fid, &call.executor_id.value);
        if !self
            .executors
            .keys()
            .any(|k| k.agent == agent && k.framework == fid)
        {
            return SubscribeReply::Status(Reply::bad("Framework cannot be found"));
        }
        let Some(e) = self.executors.get_mut(&key) else {
            return SubscribeReply::Status(Reply::bad("Executor cannot be found"));
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Conn { tx, encoding };
        self.next_conn += 1;
        let conn_id = self.next_conn;
        let on_close = Box::new(Cmd::ExecutorStreamClosed {
            key: key.clone(),
            conn: conn_id,
        });
        if e.shutdown_deadline.is_some() || e.failed {
            conn.send(
                codec::EXECUTOR_EVENT,
                &exec_event(exec::event::Type::Shutdown),
            );
            return SubscribeReply::Stream {
                stream_id: None,
                rx,
                on_close,
            };
        }
        let framework_info = self
            .frameworks
            .get(&fid)
            .map(|f| f.info.clone())
            .unwrap_or_default();
        let agent_info = mesos::AgentInfo {
            hostname: self.cfg.hostname.clone(),
            port: Some(i32::from(self.rt.addr.port())),
            resources: self.agents[agent].total.to_proto("*", false),
            id: Some(mesos::AgentId {
                value: self.agents[agent].id.clone(),
            }),
            ..Default::default()
        };
        conn.send(
            codec::EXECUTOR_EVENT,
            &exec::Event {
                r#type: Some(exec::event::Type::Subscribed as i32),
                subscribed: Some(exec::event::Subscribed {
                    executor_info: e.info.clone(),
                    framework_info,
                    agent_info,
                    container_id: Some(mesos::ContainerId {
                        value: e.container_id.clone(),
                        parent: None,
                    }),
                }),
                ..Default::default()
            },
        );
        let queued = std::mem::take(&mut e.queued);
        for t in &queued {
            conn.send(
                codec::EXECUTOR_EVENT,
                &exec::Event {
                    r#type: Some(exec::event::Type::Launch as i32),
                    launch: Some(exec::event::Launch { task: t.clone() }),
                    ..Default::default()
                },
            );
        }
        // Replacing the link drops an older connection of the same executor.
        e.link = ExecLink::Connected { conn, id: conn_id };
        tracing::info!(agent_id = %self.agents[agent].id, executor_id = %key.executor, launched = queued.len(), "executor subscribed");
        for t in queued {
            if let Some(task) = self.tasks.get_mut(&TaskKey::new(&fid, &t.task_id.value)) {
                task.delivered = true;
            }
        }
        if let Some(sub) = call.subscribe {
            for u in sub.unacknowledged_updates {
                self.executor_update(&key, u.status, now);
            }
        }
        SubscribeReply::Stream {
            stream_id: None,
            rx,
            on_close,
        }
    }

    pub(super) fn executor_call(&mut self, agent: usize, call: exec::Call, now: Instant) -> Reply {
        let key = ExecKey::new(agent, &call.framework_id.value, &call.executor_id.value);
        if !self
            .executors
            .keys()
            .any(|k| k.agent == agent && k.framework == key.framework)
        {
            return Reply::bad("Framework cannot be found");
        }
        let Some(e) = self.executors.get(&key) else {
            return Reply::bad("Executor cannot be found");
        };
        let ty = call
            .r#type
            .and_then(|t| exec::call::Type::try_from(t).ok())
            .unwrap_or(exec::call::Type::Unknown);
        if ty == exec::call::Type::Heartbeat {
            return Reply::accepted();
        }
        if matches!(e.link, ExecLink::Launching { .. }) {
            return Reply::forbidden("Executor is not subscribed");
        }
        match ty {
            exec::call::Type::Update => {
                // invariant: the HTTP layer validated the update (uuid, source, state).
                if let Some(u) = call.update {
                    self.executor_update(&key, u.status, now);
                }
            }
            exec::call::Type::Message => {
                if let Some(m) = call.message {
                    self.emit(
                        &key.framework,
                        &sched::Event {
                            r#type: Some(sched::event::Type::Message as i32),
                            message: Some(sched::event::Message {
                                agent_id: mesos::AgentId {
                                    value: self.agents[agent].id.clone(),
                                },
                                executor_id: call.executor_id,
                                data: m.data,
                            }),
                            ..Default::default()
                        },
                    );
                }
            }
            _ => {}
        }
        Reply::accepted()
    }

    /// An update from an executor: stored (once per uuid), acknowledged to the executor,
    /// and queued for the framework.
    fn executor_update(&mut self, key: &ExecKey, mut status: TaskStatus, now: Instant) {
        let uuid = status.uuid.clone().unwrap_or_default();
        let task_id = status.task_id.clone();
        let tkey = TaskKey::new(&key.framework, &status.task_id.value);
        let agent_id = self.agents[key.agent].id.clone();
        if let Some(task) = self.tasks.get_mut(&tkey)
            && task.agent == key.agent
            && task.seen.insert(uuid.clone())
        {
            if task.agent_state().is_terminal() {
                tracing::debug!(task_id = %tkey.task, "update after a terminal one; dropped");
            } else {
                status
                    .agent_id
                    .get_or_insert(mesos::AgentId { value: agent_id });
                status.executor_id.get_or_insert(mesos::ExecutorId {
                    value: key.executor.clone(),
                });
                status.timestamp.get_or_insert_with(now_secs);
                self.agent_update(&tkey, status, now);
            }
        }
        if let Some(Executor {
            link: ExecLink::Connected { conn, .. },
            ..
        }) = self.executors.get(key)
        {
            conn.send(
                codec::EXECUTOR_EVENT,
                &exec::Event {
                    r#type: Some(exec::event::Type::Acknowledged as i32),
                    acknowledged: Some(exec::event::Acknowledged { task_id, uuid }),
                    ..Default::default()
                },
            );
        }
    }

    // ---------------------------------------------------------------------------------
    // Status-update streams (the agent's status update manager)

    /// Queues a reliable update; it goes out now if nothing else is in flight for the task.
    pub(super) fn agent_update(&mut self, tkey: &TaskKey, status: TaskStatus, now: Instant) {
        let Some(task) = self.tasks.get_mut(tkey) else {
            return;
        };
        task.pending.push_back(status);
        if task.pending.len() == 1 {
            self.forward(tkey, now);
        }
    }

    /// Sends the in-flight update of a task to its framework (again) and arms the retry.
    pub(super) fn forward(&mut self, tkey: &TaskKey, now: Instant) {
        let Some(task) = self.tasks.get_mut(tkey) else {
            return;
        };
        let Some(status) = task.pending.front().cloned() else {
            return;
        };
        task.state = TaskState::try_from(status.state).unwrap_or(TaskState::TaskUnknown);
        task.latest = Some(status.clone());
        task.retry_at = Some(now + task.backoff);
        if task.state.is_terminal() && !task.released {
            task.released = true;
            let (agent, r) = (task.agent, task.resources.clone());
            self.agents[agent].allocated.subtract(&r);
        }
        self.emit(&tkey.framework, &update_event(status));
    }

    pub(super) fn remove_task(&mut self, tkey: &TaskKey, now: Instant) {
        let Some(task) = self.tasks.remove(tkey) else {
            return;
        };
        if !task.released {
            self.agents[task.agent].allocated.subtract(&task.resources);
        }
        // The simulated executor "exits" once it has nothing left, as ours does.
        if let Some(eid) = task.executor_id {
            let key = ExecKey::new(task.agent, &tkey.framework, &eid);
            if matches!(
                self.executors.get(&key),
                Some(Executor {
                    link: ExecLink::Simulated,
                    ..
                })
            ) && self.tasks_of(&key).is_empty()
            {
                self.remove_executor(&key, ExecutorExit::Quiet, now);
            }
        }
    }

    /// An update generated by the agent (SOURCE_AGENT, with a uuid: reliable).
    pub(super) fn agent_status(
        &self,
        tkey: &TaskKey,
        state: TaskState,
        reason: Reason,
        msg: &str,
    ) -> TaskStatus {
        let task = self.tasks.get(tkey);
        TaskStatus {
            task_id: mesos::TaskId {
                value: tkey.task.clone(),
            },
            state: state as i32,
            message: Some(msg.to_owned()),
            source: Some(Source::Agent as i32),
            reason: Some(reason as i32),
            agent_id: task.map(|t| mesos::AgentId {
                value: self.agents[t.agent].id.clone(),
            }),
            executor_id: task
                .and_then(|t| t.executor_id.clone())
                .map(|value| mesos::ExecutorId { value }),
            timestamp: Some(now_secs()),
            uuid: Some(new_uuid()),
            ..Default::default()
        }
    }

    /// An update the simulated executor sends.
    pub(super) fn executor_status(
        &self,
        tkey: &TaskKey,
        state: TaskState,
        msg: Option<&str>,
    ) -> TaskStatus {
        let mut s = self.agent_status(tkey, state, Reason::TaskInvalid, "");
        s.source = Some(Source::Executor as i32);
        s.reason = None;
        s.message = msg.map(str::to_owned);
        s
    }

    // ---------------------------------------------------------------------------------
    // Containers

    pub(super) fn container_exited(
        &mut self,
        key: &ExecKey,
        container_id: &str,
        outcome: Outcome,
        now: Instant,
    ) {
        let Some(e) = self.executors.get(key) else {
            return;
        };
        if e.container_id != container_id {
            return;
        }
        let (reason, message, status) = match &outcome {
            Outcome::LaunchFailed(why) => (
                Reason::ContainerLaunchFailed,
                format!("Failed to launch container: {why}"),
                None,
            ),
            Outcome::Exited(status) => (
                Reason::ExecutorTerminated,
                "Executor terminated".to_owned(),
                *status,
            ),
        };
        tracing::info!(agent_id = %self.agents[key.agent].id, executor_id = %key.executor, ?outcome, "executor exited");
        let tasks = self.tasks_of(key);
        for tkey in tasks {
            let s = self.agent_status(&tkey, TaskState::TaskFailed, reason, &message);
            self.agent_update(&tkey, s, now);
        }
        self.remove_executor(key, ExecutorExit::Failed { status }, now);
    }

    /// Forgets an executor, gives back its resources and reports FAILURE when asked.
    pub(super) fn remove_executor(&mut self, key: &ExecKey, exit: ExecutorExit, _now: Instant) {
        let Some(e) = self.executors.remove(key) else {
            return;
        };
        self.agents[key.agent].allocated.subtract(&e.resources);
        if let Some(h) = e.handle {
            h.stop(Duration::ZERO);
        }
        if let ExecutorExit::Failed { status } = exit
            && !matches!(e.link, ExecLink::Simulated)
        {
            self.emit(
                &key.framework,
                &sched::Event {
                    r#type: Some(sched::event::Type::Failure as i32),
                    failure: Some(sched::event::Failure {
                        agent_id: Some(mesos::AgentId {
                            value: self.agents[key.agent].id.clone(),
                        }),
                        executor_id: Some(mesos::ExecutorId {
                            value: key.executor.clone(),
                        }),
                        status,
                    }),
                    ..Default::default()
                },
            );
        }
    }

    /// The tasks of an executor that are not terminal as far as the agent knows.
    pub(super) fn tasks_of(&self, key: &ExecKey) -> Vec<TaskKey> {
        self.tasks
            .iter()
            .filter(|(k, t)| {
                k.framework == key.framework
                    && t.agent == key.agent
                    && t.executor_id.as_deref() == Some(key.executor.as_str())
                    && !t.agent_state().is_terminal()
            })
            .map(|(k, _)| k.clone())
            .collect()
    }
}
