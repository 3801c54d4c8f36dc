//! The scheduler API's semantics: SUBSCRIBE and every call a framework makes (ACCEPT,
//! DECLINE, KILL, ACKNOWLEDGE, RECONCILE, …), what each does to the master's state and
//! which events follow. Parsing and status codes are `mesos_local::http`'s.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::allocator::refuse_seconds;
use super::{
    AgentState, Cmd, Conn, ExecKey, ExecLink, Executor, ExecutorExit, Framework, HEARTBEAT_SECONDS,
    Master, Offer, OfferRemoval, Reply, SchedConn, SubscribeReply, Task, TaskKey, exec_event,
    invalid_id, is_terminal, master_status, update_event,
};
use crate::mesos_local::ContainerizerMode;
use crate::mesos_local::codec::{self, Encoding};
use crate::mesos_local::container::{self, LaunchSpec};
use crate::mesos_local::resources::Quantities;
use crate::proto::mesos::v1 as mesos;
use crate::proto::mesos::v1::executor as exec;
use crate::proto::mesos::v1::scheduler as sched;
use crate::proto::mesos::v1::task_status::Reason;
use crate::proto::mesos::v1::{TaskState, TaskStatus};

impl Master {
    // ---------------------------------------------------------------------------------
    // Scheduler API

    pub(super) fn subscribe(
        &mut self,
        call: sched::Call,
        encoding: Encoding,
        now: Instant,
    ) -> SubscribeReply {
        // invariant: the HTTP layer validated that `subscribe` is present.
        let sub = call.subscribe.unwrap_or_default();
        let mut info = sub.framework_info;
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Conn { tx, encoding };
        let stream_id = uuid::Uuid::new_v4().to_string();

        let error = |conn: Conn, message: String| {
            conn.send(
                codec::SCHEDULER_EVENT,
                &sched::Event {
                    r#type: Some(sched::event::Type::Error as i32),
                    error: Some(sched::event::Error { message }),
                    ..Default::default()
                },
            );
            // Dropping `conn` ends the stream after the ERROR, as Mesos closes it.
        };
        let multi_role = info
            .capabilities
            .iter()
            .any(|c| c.r#type == Some(mesos::framework_info::capability::Type::MultiRole as i32));
        if multi_role && info.role.is_some() {
            error(
                conn,
                "'FrameworkInfo.role' must not be set when the MULTI_ROLE capability is present"
                    .into(),
            );
            return self.stream_reply(None, rx, String::new(), stream_id);
        }
        if multi_role && info.roles.is_empty() {
            // A MULTI_ROLE framework with no role subscribes to no role; Mesos gives it
            // nothing either. We keep the common intent instead: the default role.
            info.roles.push("*".into());
        }

        let fid = match info.id.as_ref().map(|i| i.value.clone()) {
            Some(id) if self.removed.contains(&id) => {
                error(conn, "Framework has been removed".into());
                return self.stream_reply(None, rx, id, stream_id);
            }
            Some(id) => id,
            None => {
                let id = format!("{}-{:04}", self.info.id, self.next_framework);
                self.next_framework += 1;
                id
            }
        };
        info.id = Some(mesos::FrameworkId { value: fid.clone() });

        let sched_conn = SchedConn {
            conn,
            stream_id: stream_id.clone(),
            next_heartbeat: now + self.cfg.heartbeat_interval,
        };
        let suppressed: HashSet<String> = sub.suppressed_roles.into_iter().collect();
        match self.frameworks.get_mut(&fid) {
            Some(f) => {
                if let Some(old) = f.conn.take() {
                    old.conn.send(
                        codec::SCHEDULER_EVENT,
                        &sched::Event {
                            r#type: Some(sched::event::Type::Error as i32),
                            error: Some(sched::event::Error {
                                message: "Framework failed over".into(),
                            }),
                            ..Default::default()
                        },
                    );
                }
                tracing::info!(framework_id = %fid, "framework resubscribed");
                f.info = info;
                f.suppressed = suppressed;
                f.filters.clear();
                f.disconnected_at = None;
                f.conn = Some(sched_conn);
            }
            None => {
                tracing::info!(framework_id = %fid, name = %info.name, "framework subscribed");
                self.frameworks.insert(
                    fid.clone(),
                    Framework {
                        id: fid.clone(),
                        info,
                        conn: Some(sched_conn),
                        disconnected_at: None,
                        suppressed,
                        filters: Vec::new(),
                    },
                );
            }
        }
        // Offers do not survive a (re)subscription.
        self.remove_offers_of(&fid, OfferRemoval::Silent);
        let subscribed = sched::Event {
            r#type: Some(sched::event::Type::Subscribed as i32),
            subscribed: Some(sched::event::Subscribed {
                framework_id: mesos::FrameworkId { value: fid.clone() },
                heartbeat_interval_seconds: Some(HEARTBEAT_SECONDS),
                master_info: Some(self.info.clone()),
            }),
            ..Default::default()
        };
        self.emit(&fid, &subscribed);
        self.emit(
            &fid,
            &sched::Event {
                r#type: Some(sched::event::Type::Heartbeat as i32),
                ..Default::default()
            },
        );
        self.next_allocation = now;
        self.stream_reply(Some(stream_id.clone()), rx, fid, stream_id)
    }

    fn stream_reply(
        &self,
        header: Option<String>,
        rx: mpsc::UnboundedReceiver<Bytes>,
        framework_id: String,
        stream_id: String,
    ) -> SubscribeReply {
        SubscribeReply::Stream {
            stream_id: header,
            rx,
            on_close: Box::new(Cmd::StreamClosed {
                framework_id,
                stream_id,
            }),
        }
    }

    pub(super) fn call(
        &mut self,
        call: sched::Call,
        stream_id: Option<String>,
        now: Instant,
    ) -> Reply {
        // invariant: the HTTP layer validated type, sub-message and framework_id.
        let fid = call
            .framework_id
            .as_ref()
            .map(|f| f.value.clone())
            .unwrap_or_default();
        let Some(f) = self.frameworks.get(&fid) else {
            return Reply::bad("Framework cannot be found");
        };
        let Some(c) = &f.conn else {
            return Reply::forbidden("Framework is not subscribed");
        };
        match stream_id {
            None => {
                return Reply::bad(
                    "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
                );
            }
            Some(s) if s != c.stream_id => {
                return Reply::bad(format!(
                    "The stream ID '{s}' included in this request didn't match the stream ID currently associated with framework ID {fid}"
                ));
            }
            Some(_) => {}
        }
        let ty = call
            .r#type
            .and_then(|t| sched::call::Type::try_from(t).ok())
            .unwrap_or(sched::call::Type::Unknown);
        use sched::call::Type as T;
        match ty {
            T::Teardown => {
                tracing::info!(framework_id = %fid, "framework teardown");
                self.remove_framework(&fid, now);
            }
            T::Accept => {
                let fault = self.failing_accepts;
                if fault.calls > 0 {
                    self.failing_accepts.calls -= 1;
                }
                if let Some(a) = call.accept
                    && (fault.calls == 0 || fault.applied)
                {
                    self.accept(&fid, a, now);
                }
                if fault.calls > 0 {
                    return Reply::unavailable("mesos-local fault injection: ACCEPT failed");
                }
            }
            T::Decline => {
                if let Some(d) = call.decline {
                    let refuse = refuse_seconds(d.filters.as_ref());
                    for id in d.offer_ids {
                        self.decline_offer(&fid, &id.value, refuse, now);
                    }
                }
            }
            T::Revive => {
                let roles = call.revive.map(|r| r.roles).unwrap_or_default();
                if let Some(f) = self.frameworks.get_mut(&fid) {
                    let roles = if roles.is_empty() { f.roles() } else { roles };
                    for r in &roles {
                        f.suppressed.remove(r);
                    }
                    f.filters.retain(|x| !roles.contains(&x.role));
                }
                self.next_allocation = now;
            }
            T::Suppress => {
                let roles = call.suppress.map(|r| r.roles).unwrap_or_default();
                if let Some(f) = self.frameworks.get_mut(&fid) {
                    let roles = if roles.is_empty() { f.roles() } else { roles };
                    f.suppressed.extend(roles);
                }
            }
            T::Kill => {
                if let Some(k) = call.kill {
                    self.kill(&fid, k, now);
                }
            }
            T::Shutdown => {
                if let Some(s) = call.shutdown
                    && let Some(agent) = self.agent_index(&s.agent_id.value)
                {
                    let key = ExecKey::new(agent, &fid, &s.executor_id.value);
                    self.shutdown_executor(&key, now);
                }
            }
            T::Acknowledge => {
                if let Some(a) = call.acknowledge {
                    self.acknowledge(&fid, &a.task_id.value, &a.uuid, now);
                }
            }
            T::Reconcile => {
                let tasks = call.reconcile.map(|r| r.tasks).unwrap_or_default();
                self.reconcile(&fid, tasks);
            }
            T::Message => {
                if let Some(m) = call.message
                    && let Some(agent) = self.agent_index(&m.agent_id.value)
                {
                    let key = ExecKey::new(agent, &fid, &m.executor_id.value);
                    if let Some(Executor {
                        link: ExecLink::Connected { conn, .. },
                        ..
                    }) = self.executors.get(&key)
                    {
                        conn.send(
                            codec::EXECUTOR_EVENT,
                            &exec::Event {
                                r#type: Some(exec::event::Type::Message as i32),
                                message: Some(exec::event::Message { data: m.data }),
                                ..Default::default()
                            },
                        );
                    }
                }
            }
            T::UpdateFramework => {
                if let (Some(u), Some(f)) = (call.update_framework, self.frameworks.get_mut(&fid)) {
                    let mut info = u.framework_info;
                    info.id = Some(mesos::FrameworkId { value: fid.clone() });
                    f.info = info;
                    f.suppressed = u.suppressed_roles.into_iter().collect();
                    return Reply::ok();
                }
            }
            // Accepted and ignored, as by the default allocator (REQUEST) or because
            // mesos-local has no operations and no maintenance (inverse offers).
            T::Request
            | T::AcceptInverseOffers
            | T::DeclineInverseOffers
            | T::AcknowledgeOperationStatus
            | T::ReconcileOperations => {}
            T::Subscribe | T::Unknown => {}
        }
        Reply::accepted()
    }

    fn accept(&mut self, fid: &str, a: sched::call::Accept, now: Instant) {
        // 1. The offers: distinct, live, ours, one agent, one role.
        let ids: Vec<String> = a.offer_ids.iter().map(|o| o.value.clone()).collect();
        let mut error: Option<String> = None;
        let mut seen = HashSet::new();
        if ids.is_empty() {
            error = Some("No offers specified".into());
        }
        for id in &ids {
            if !seen.insert(id.clone()) {
                error.get_or_insert(format!("Duplicate offer {id} in accept"));
            }
            match self.offers.get(id) {
                Some(o) if o.framework == fid => {}
                _ => {
                    error.get_or_insert(format!("Offer {id} is no longer valid"));
                }
            }
        }
        let valid: Vec<&Offer> = ids.iter().filter_map(|id| self.offers.get(id)).collect();
        if error.is_none() {
            if valid.iter().any(|o| o.agent != valid[0].agent) {
                error = Some("Aggregated offers must belong to one single agent".into());
            } else if valid.iter().any(|o| o.role != valid[0].role) {
                error = Some("Aggregated offers must be allocated to the same role".into());
            }
        }
        if let Some(error) = error {
            // The valid ones among them are consumed anyway, their resources recovered.
            for id in &ids {
                self.remove_offer(id, OfferRemoval::Silent, now);
            }
            let lost = if self.partition_aware(fid) {
                TaskState::TaskDropped
            } else {
                TaskState::TaskLost
            };
            tracing::info!(framework_id = %fid, %error, "ACCEPT with invalid offers");
            // Only an invalid ACCEPT needs its launches before their operations run: they are
            // not copied up front for every ACCEPT (thousands of TaskInfos at scale).
            let launches = a
                .operations
                .iter()
                .filter(|op| op.r#type == Some(mesos::offer::operation::Type::Launch as i32))
                .filter_map(|op| op.launch.as_ref())
                .flat_map(|l| &l.task_infos);
            for t in launches {
                let mut s = master_status(&t.task_id.value, lost, Reason::InvalidOffers);
                s.message = Some(format!("Task launched with invalid offers: {error}"));
                s.agent_id = Some(t.agent_id.clone());
                s.executor_id = t.executor.as_ref().map(|e| e.executor_id.clone());
                self.emit(fid, &update_event(s));
            }
            return;
        }
        let agent = valid[0].agent;
        let role = valid[0].role.clone();
        let mut pool = Quantities::default();
        for o in &valid {
            pool.add(&o.resources);
        }
        for id in &ids {
            if let Some(o) = self.offers.remove(id) {
                self.agents[o.agent].offered.subtract(&o.resources);
            }
        }

        // 2. The operations, in order, each drawing from what is left.
        for op in a.operations {
            match op
                .r#type
                .and_then(|t| mesos::offer::operation::Type::try_from(t).ok())
            {
                Some(mesos::offer::operation::Type::Launch) => {
                    for t in op.launch.map(|l| l.task_infos).unwrap_or_default() {
                        self.launch(fid, agent, t, &mut pool, now);
                    }
                }
                Some(mesos::offer::operation::Type::LaunchGroup) => {
                    let tasks = op
                        .launch_group
                        .map(|g| g.task_group.tasks)
                        .unwrap_or_default();
                    for t in tasks {
                        self.task_error(
                            fid,
                            &t,
                            "LAUNCH_GROUP is not supported by mesos-local (it has no default executor)",
                        );
                    }
                }
                other => {
                    tracing::info!(framework_id = %fid, operation = ?other, "offer operation not supported by mesos-local; ignored");
                }
            }
        }

        // 3. Whatever is left is declined with the call's filter.
        let refuse = refuse_seconds(a.filters.as_ref());
        self.add_filter(fid, agent, &role, pool, refuse, now);
    }

    fn launch(
        &mut self,
        fid: &str,
        agent: usize,
        mut t: mesos::TaskInfo,
        pool: &mut Quantities,
        now: Instant,
    ) {
        let task_id = t.task_id.value.clone();
        if let Some(why) = invalid_id(&task_id) {
            return self.task_error(fid, &t, &format!("Task ID is invalid: {why}"));
        }
        if self.tasks.contains_key(&TaskKey::new(fid, &task_id)) {
            return self.task_error(fid, &t, "Task has duplicate ID");
        }
        if t.agent_id.value != self.agents[agent].id {
            return self.task_error(
                fid,
                &t,
                &format!("Task uses invalid agent: {}", t.agent_id.value),
            );
        }
        if t.resources.is_empty() {
            return self.task_error(fid, &t, "Task uses no resources");
        }
        if t.executor.is_some() == t.command.is_some() {
            return self.task_error(
                fid,
                &t,
                "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present",
            );
        }
        let task_res = Quantities::from_proto(&t.resources);
        let mut needed = task_res.clone();
        let mut new_executor = None;
        if let Some(e) = t.executor.as_mut() {
            if e.r#type == Some(mesos::executor_info::Type::Default as i32) {
                return self.task_error(
                    fid,
                    &t,
                    "'ExecutorInfo.type' must not be DEFAULT for LAUNCH",
                );
            }
            if let Some(why) = invalid_id(&e.executor_id.value) {
                return self.task_error(fid, &t, &format!("Executor ID is invalid: {why}"));
            }
            e.framework_id = Some(mesos::FrameworkId {
                value: fid.to_owned(),
            });
            let key = ExecKey::new(agent, fid, &e.executor_id.value);
            match self.executors.get(&key) {
                Some(existing) if existing.info != *e => {
                    let msg = format!(
                        "ExecutorInfo is not compatible with the ExecutorInfo of the existing executor {}",
                        e.executor_id.value
                    );
                    return self.task_error(fid, &t, &msg);
                }
                Some(_) => {}
                None => {
                    let r = Quantities::from_proto(&e.resources);
                    needed.add(&r);
                    new_executor = Some((key, e.clone(), r));
                }
            }
        }
        if !pool.contains(&needed) {
            return self.task_error(
                fid,
                &t,
                &format!(
                    "Total resources {needed} required by task and its executor is more than available {pool}"
                ),
            );
        }
        pool.subtract(&needed);
        self.agents[agent].allocated.add(&needed);
        // Per task at debug: a burst of launches would otherwise cost more in log lines than
        // in launching.
        tracing::debug!(framework_id = %fid, task_id = %task_id, agent_id = %self.agents[agent].id, "launching task");
        self.tasks.insert(
            TaskKey::new(fid, &task_id),
            Task {
                agent,
                executor_id: t.executor.as_ref().map(|e| e.executor_id.value.clone()),
                info: t.clone(),
                resources: task_res,
                state: TaskState::TaskStaging,
                latest: None,
                pending: VecDeque::new(),
                retry_at: None,
                backoff: self.cfg.update_retry,
                released: false,
                seen: HashSet::new(),
                acknowledged: None,
                delivered: false,
            },
        );
        let tkey = TaskKey::new(fid, &task_id);
        let Some(einfo) = t.executor.clone() else {
            // Command tasks need `mesos-executor`, which mesos-local does not have (nor does
            // the realmesos kit).
            let s = self.agent_status(
                &tkey,
                TaskState::TaskFailed,
                Reason::ContainerLaunchFailed,
                "mesos-local runs custom executors only; command tasks (no ExecutorInfo) are not supported",
            );
            return self.agent_update(&tkey, s, now);
        };
        let key = ExecKey::new(agent, fid, &einfo.executor_id.value);
        if let Some((key, info, r)) = new_executor {
            self.start_executor(key, info, r, now);
        }
        let Some(e) = self.executors.get_mut(&key) else {
            return;
        };
        if e.failed || e.shutdown_deadline.is_some() {
            let s = self.agent_status(
                &tkey,
                TaskState::TaskFailed,
                Reason::ExecutorTerminated,
                "Executor is terminating",
            );
            return self.agent_update(&tkey, s, now);
        }
        match &e.link {
            ExecLink::Connected { conn, .. } => {
                conn.send(
                    codec::EXECUTOR_EVENT,
                    &exec::Event {
                        r#type: Some(exec::event::Type::Launch as i32),
                        launch: Some(exec::event::Launch { task: t }),
                        ..Default::default()
                    },
                );
                if let Some(task) = self.tasks.get_mut(&tkey) {
                    task.delivered = true;
                }
            }
            ExecLink::Launching { .. } | ExecLink::Disconnected => e.queued.push(t),
            ExecLink::Simulated => {
                if let Some(task) = self.tasks.get_mut(&tkey) {
                    task.delivered = true;
                }
                let s = self.executor_status(&tkey, TaskState::TaskRunning, None);
                self.agent_update(&tkey, s, now);
            }
        }
    }

    fn start_executor(
        &mut self,
        key: ExecKey,
        info: mesos::ExecutorInfo,
        resources: Quantities,
        now: Instant,
    ) {
        let container_id = uuid::Uuid::new_v4().to_string();
        let ExecKey {
            agent,
            framework: fid,
            executor: eid,
        } = key.clone();
        if self.cfg.containerizer == ContainerizerMode::Simulated {
            self.executors.insert(
                key,
                Executor {
                    info,
                    container_id,
                    resources,
                    link: ExecLink::Simulated,
                    queued: Vec::new(),
                    handle: None,
                    shutdown_deadline: None,
                    failed: false,
                },
            );
            return;
        }
        let sandbox: PathBuf = self
            .cfg
            .work_dir
            .join("slaves")
            .join(&self.agents[agent].id)
            .join("frameworks")
            .join(&fid)
            .join("executors")
            .join(&eid)
            .join("runs")
            .join(&container_id);
        let checkpoint = self
            .frameworks
            .get(&fid)
            .and_then(|f| f.info.checkpoint)
            .unwrap_or(false);
        let grace = info
            .shutdown_grace_period
            .as_ref()
            .map(mesos::DurationInfo::to_std)
            .unwrap_or(self.cfg.shutdown_grace);
        let addr = self.rt.addr;
        let mut env = vec![
            ("MESOS_FRAMEWORK_ID".to_owned(), fid.clone()),
            ("MESOS_EXECUTOR_ID".to_owned(), eid.clone()),
            (
                "MESOS_SLAVE_PID".to_owned(),
                format!("slave({})@{addr}", agent + 1),
            ),
            ("MESOS_AGENT_ENDPOINT".to_owned(), addr.to_string()),
            ("MESOS_SLAVE_ID".to_owned(), self.agents[agent].id.clone()),
            ("MESOS_DIRECTORY".to_owned(), sandbox.display().to_string()),
            (
                "MESOS_CHECKPOINT".to_owned(),
                if checkpoint { "1" } else { "0" }.to_owned(),
            ),
            (
                "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD".to_owned(),
                format!("{}secs", grace.as_secs_f64()),
            ),
            ("MESOS_HTTP_COMMAND_EXECUTOR".to_owned(), "0".to_owned()),
            ("LIBPROCESS_PORT".to_owned(), "0".to_owned()),
        ];
        if checkpoint {
            env.push(("MESOS_RECOVERY_TIMEOUT".to_owned(), "15mins".to_owned()));
            env.push((
                "MESOS_SUBSCRIPTION_BACKOFF_MAX".to_owned(),
                "2secs".to_owned(),
            ));
        }
        let spec = LaunchSpec {
            container_id: container_id.clone(),
            info: info.clone(),
            env,
            sandbox,
            mode: self.cfg.containerizer,
            docker_available: self.rt.docker_available,
            executor_path: self.cfg.executor_path.clone(),
            label: self.rt.instance.label(),
            pid_file: self.rt.instance.pid_file(&container_id),
            role: self
                .frameworks
                .get(&fid)
                .and_then(|f| f.roles().first().cloned())
                .unwrap_or_else(|| "*".into()),
        };
        let tx = self.rt.cmd_tx.clone();
        let exit_key = key.clone();
        let cid = container_id.clone();
        let handle = container::spawn(
            spec,
            &self.rt.tracker,
            self.rt.shutdown.clone(),
            move |outcome| {
                let _ = tx.send(Cmd::ContainerExited {
                    key: exit_key,
                    container_id: cid,
                    outcome,
                });
            },
        );
        tracing::debug!(agent_id = %self.agents[agent].id, framework_id = %fid, executor_id = %eid, container_id = %container_id, "executor launching");
        self.executors.insert(
            key,
            Executor {
                info,
                container_id,
                resources,
                link: ExecLink::Launching {
                    deadline: now + self.cfg.registration_timeout,
                },
                queued: Vec::new(),
                handle: Some(handle),
                shutdown_deadline: None,
                failed: false,
            },
        );
    }

    fn task_error(&mut self, fid: &str, t: &mesos::TaskInfo, message: &str) {
        tracing::info!(framework_id = %fid, task_id = %t.task_id.value, %message, "TASK_ERROR");
        let mut s = master_status(&t.task_id.value, TaskState::TaskError, Reason::TaskInvalid);
        s.message = Some(message.to_owned());
        s.agent_id = Some(t.agent_id.clone());
        s.executor_id = t.executor.as_ref().map(|e| e.executor_id.clone());
        self.emit(fid, &update_event(s));
    }

    fn decline_offer(&mut self, fid: &str, id: &str, refuse: f64, now: Instant) {
        match self.offers.get(id) {
            Some(o) if o.framework == fid => {
                let (agent, role) = (o.agent, o.role.clone());
                if let Some(o) = self.remove_offer(id, OfferRemoval::Silent, now) {
                    self.add_filter(fid, agent, &role, o.resources, refuse, now);
                }
            }
            _ => {
                tracing::debug!(framework_id = %fid, offer_id = %id, "DECLINE of an unknown offer; ignored")
            }
        }
    }

    fn kill(&mut self, fid: &str, k: sched::call::Kill, now: Instant) {
        let tkey = TaskKey::new(fid, &k.task_id.value);
        let Some(task) = self.tasks.get(&tkey) else {
            // Unknown task: the master answers with an explicit reconciliation instead.
            self.reconcile(
                fid,
                vec![sched::call::reconcile::Task {
                    task_id: k.task_id,
                    agent_id: k.agent_id,
                }],
            );
            return;
        };
        if let Some(a) = &k.agent_id
            && a.value != self.agents[task.agent].id
        {
            return;
        }
        if task.agent_state().is_terminal() {
            return;
        }
        let Some(eid) = task.executor_id.clone() else {
            return;
        };
        let key = ExecKey::new(task.agent, fid, &eid);
        let delivered = task.delivered;
        let policy = k.kill_policy.or(task.info.kill_policy);
        let Some(e) = self.executors.get_mut(&key) else {
            return;
        };
        if !delivered {
            // Killed before it reached the executor: the agent answers for it.
            e.queued.retain(|t| t.task_id.value != tkey.task);
            let idle = e.queued.is_empty()
                && !self.tasks.iter().any(|(k2, t)| {
                    k2.framework == fid
                        && t.delivered
                        && t.executor_id.as_deref() == Some(key.executor.as_str())
                        && t.agent == key.agent
                        && !t.agent_state().is_terminal()
                });
            let s = self.agent_status(
                &tkey,
                TaskState::TaskKilled,
                Reason::TaskKilledDuringLaunch,
                "Killed before delivery to the executor",
            );
            self.agent_update(&tkey, s, now);
            if idle {
                // An executor that never got a task is shut down (MESOS-8411).
                self.shutdown_executor(&key, now);
            }
            return;
        }
        match &e.link {
            ExecLink::Connected { conn, .. } => conn.send(
                codec::EXECUTOR_EVENT,
                &exec::Event {
                    r#type: Some(exec::event::Type::Kill as i32),
                    kill: Some(exec::event::Kill {
                        task_id: k.task_id,
                        kill_policy: policy,
                    }),
                    ..Default::default()
                },
            ),
            ExecLink::Simulated => {
                let s = self.executor_status(&tkey, TaskState::TaskKilled, None);
                self.agent_update(&tkey, s, now);
            }
            ExecLink::Launching { .. } | ExecLink::Disconnected => {
                tracing::info!(task_id = %tkey.task, "KILL for a task whose executor is not connected; dropped (reconcile and retry)");
            }
        }
    }

    pub(super) fn shutdown_executor(&mut self, key: &ExecKey, now: Instant) {
        let Some(e) = self.executors.get_mut(key) else {
            return;
        };
        if e.shutdown_deadline.is_some() {
            return;
        }
        let grace = e
            .info
            .shutdown_grace_period
            .as_ref()
            .map(mesos::DurationInfo::to_std)
            .unwrap_or(self.cfg.shutdown_grace);
        match &e.link {
            ExecLink::Connected { conn, .. } => {
                conn.send(
                    codec::EXECUTOR_EVENT,
                    &exec_event(exec::event::Type::Shutdown),
                );
                e.shutdown_deadline = Some(now + grace);
            }
            ExecLink::Simulated => {
                let tasks: Vec<TaskKey> = self.tasks_of(key);
                for tkey in tasks {
                    let s = self.executor_status(&tkey, TaskState::TaskKilled, None);
                    self.agent_update(&tkey, s, now);
                }
                self.remove_executor(key, ExecutorExit::Quiet, now);
            }
            ExecLink::Launching { .. } | ExecLink::Disconnected => {
                e.shutdown_deadline = Some(now);
                if let Some(h) = &e.handle {
                    h.stop(Duration::ZERO);
                }
            }
        }
    }

    fn acknowledge(&mut self, fid: &str, task_id: &str, uuid: &[u8], now: Instant) {
        let tkey = TaskKey::new(fid, task_id);
        let Some(task) = self.tasks.get_mut(&tkey) else {
            return;
        };
        if task.pending.front().and_then(|s| s.uuid.as_deref()) != Some(uuid) {
            tracing::debug!(task_id, "ACKNOWLEDGE of an update not in flight; ignored");
            return;
        }
        let acked = task.pending.pop_front();
        task.acknowledged = acked.as_ref().map(|s| s.state());
        task.retry_at = None;
        task.backoff = self.cfg.update_retry;
        if acked.is_some_and(|s| is_terminal(s.state)) {
            self.remove_task(&tkey, now);
        } else if !task.pending.is_empty() {
            self.forward(&tkey, now);
        }
    }

    fn reconcile(&mut self, fid: &str, tasks: Vec<sched::call::reconcile::Task>) {
        let pa = self.partition_aware(fid);
        let mut out = Vec::new();
        if tasks.is_empty() {
            for (k, t) in self.tasks.iter().filter(|(k, _)| k.framework == fid) {
                out.push(self.reconcile_known(&k.task, t));
            }
        }
        for rt in tasks {
            let key = TaskKey::new(fid, &rt.task_id.value);
            if let Some(t) = self.tasks.get(&key) {
                out.push(self.reconcile_known(&key.task, t));
                continue;
            }
            let agent = rt
                .agent_id
                .as_ref()
                .and_then(|a| self.agent_index(&a.value));
            let (state, message) = match agent.map(|i| self.agents[i].state) {
                Some(AgentState::Active) => (
                    if pa {
                        TaskState::TaskGone
                    } else {
                        TaskState::TaskLost
                    },
                    "Reconciliation: Task is unknown to the agent",
                ),
                Some(AgentState::Unreachable) => (
                    if pa {
                        TaskState::TaskUnreachable
                    } else {
                        TaskState::TaskLost
                    },
                    "Reconciliation: Task is unreachable",
                ),
                None => (
                    if pa {
                        TaskState::TaskUnknown
                    } else {
                        TaskState::TaskLost
                    },
                    "Reconciliation: Task is unknown",
                ),
            };
            let mut s = master_status(&rt.task_id.value, state, Reason::Reconciliation);
            s.message = Some(message.into());
            s.agent_id = rt.agent_id;
            out.push(s);
        }
        for s in out {
            self.emit(fid, &update_event(s));
        }
    }

    fn reconcile_known(&self, task_id: &str, t: &Task) -> TaskStatus {
        let mut s = master_status(task_id, t.state, Reason::Reconciliation);
        s.message = Some("Reconciliation: Latest task state".into());
        s.agent_id = Some(mesos::AgentId {
            value: self.agents[t.agent].id.clone(),
        });
        s.executor_id = t
            .executor_id
            .clone()
            .map(|value| mesos::ExecutorId { value });
        if let Some(l) = &t.latest {
            s.healthy = l.healthy;
            s.container_status = l.container_status.clone();
        }
        s
    }
}
