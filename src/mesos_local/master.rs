//! The master and its agents as one actor: frameworks, offers, tasks, executors and the
//! agents' status-update streams, all owned by one task ([`Master::run`]) that handles one
//! [`Cmd`] at a time, so no lock is needed and the order of events is the order of commands.
//!
//! It owns the *semantics* of the scheduler and executor APIs (what a call does, which event
//! follows, which status code answers); [`super::http`] owns parsing and framing, and
//! [`super::container`] owns the executor processes and containers.
//!
//! Simplifications against a real master (each one documented where it is made):
//! - one allocation round per `allocation_interval`, whole agents to one framework at a
//!   time, round-robin instead of DRF;
//! - the master and its agents share state, so master↔agent messages are never lost and an
//!   agent is never "disconnected", only lost (fault injection);
//! - the master reports the state of the update it last *forwarded* for a task.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use prost::Message;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::codec::{self, Encoding};
use super::container::{self, ContainerHandle, LaunchSpec, Outcome};
use super::resources::Resources;
use super::{ContainerizerMode, LocalConfig};
use crate::proto::mesos::v1 as mesos;
use crate::proto::mesos::v1::executor as exec;
use crate::proto::mesos::v1::scheduler as sched;
use crate::proto::mesos::v1::task_status::{Reason, Source};
use crate::proto::mesos::v1::{TaskState, TaskStatus};
use crate::recordio;

/// `Subscribed.heartbeat_interval_seconds`: a constant in Mesos.
const HEARTBEAT_SECONDS: f64 = 15.0;
/// `Filters.refuse_seconds` default and cap (365 days).
const DEFAULT_REFUSE: f64 = 5.0;
const MAX_REFUSE: f64 = 31_536_000.0;
/// The version we claim (`GET /version`, `MasterInfo.version`).
pub const VERSION: &str = "1.11.0";

/// (agent index, framework id, executor id).
pub(crate) type ExecKey = (usize, String, String);
/// (framework id, task id).
type TaskKey = (String, String);

/// An HTTP answer without a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: String,
}

impl Reply {
    fn accepted() -> Self {
        Reply {
            status: StatusCode::ACCEPTED,
            body: String::new(),
        }
    }
    fn ok() -> Self {
        Reply {
            status: StatusCode::OK,
            body: String::new(),
        }
    }
    fn bad(body: impl Into<String>) -> Self {
        Reply {
            status: StatusCode::BAD_REQUEST,
            body: body.into(),
        }
    }
    fn forbidden(body: impl Into<String>) -> Self {
        Reply {
            status: StatusCode::FORBIDDEN,
            body: body.into(),
        }
    }
}

/// The answer to a SUBSCRIBE: a stream, or an error status.
pub(crate) enum SubscribeReply {
    Stream {
        /// `Mesos-Stream-Id` (scheduler streams only).
        stream_id: Option<String>,
        rx: mpsc::UnboundedReceiver<Bytes>,
        /// Sent back to the master when the HTTP layer drops the stream (client gone).
        on_close: Box<Cmd>,
    },
    Status(Reply),
}

/// A fault to inject (tests): see [`super::MesosLocal`].
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    LoseAgent(usize),
    RescindOffer(Option<String>),
    DropStream(Option<String>),
    FailOver,
}

/// What the master is asked to do.
pub(crate) enum Cmd {
    Subscribe {
        call: sched::Call,
        encoding: Encoding,
        reply: oneshot::Sender<SubscribeReply>,
    },
    Call {
        call: sched::Call,
        stream_id: Option<String>,
        reply: oneshot::Sender<Reply>,
    },
    ExecutorSubscribe {
        agent: usize,
        call: exec::Call,
        encoding: Encoding,
        reply: oneshot::Sender<SubscribeReply>,
    },
    ExecutorCall {
        agent: usize,
        call: exec::Call,
        reply: oneshot::Sender<Reply>,
    },
    StreamClosed {
        framework_id: String,
        stream_id: String,
    },
    ExecutorStreamClosed {
        key: ExecKey,
        conn: u64,
    },
    ContainerExited {
        key: ExecKey,
        container_id: String,
        outcome: Outcome,
    },
    Fault {
        fault: Fault,
        reply: oneshot::Sender<Option<String>>,
    },
    Snapshot {
        reply: oneshot::Sender<Snapshot>,
    },
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
}

/// An open event stream to a scheduler or an executor.
struct Conn {
    tx: mpsc::UnboundedSender<Bytes>,
    encoding: Encoding,
}

impl Conn {
    fn send<T: Message>(&self, name: &'static str, msg: &T) {
        match codec::encode(self.encoding, name, msg) {
            // A closed receiver means the client is gone; its StreamClosed is on its way.
            Ok(b) => {
                let _ = self.tx.send(recordio::encode(&b));
            }
            Err(e) => tracing::error!(error = %e, "cannot encode an event; dropped"),
        }
    }
}

struct SchedConn {
    conn: Conn,
    stream_id: String,
    next_heartbeat: Instant,
}

struct Filter {
    agent: usize,
    role: String,
    resources: Resources,
    until: Instant,
}

struct Framework {
    id: String,
    info: mesos::FrameworkInfo,
    conn: Option<SchedConn>,
    disconnected_at: Option<Instant>,
    suppressed: HashSet<String>,
    filters: Vec<Filter>,
}

impl Framework {
    fn has_capability(&self, cap: mesos::framework_info::capability::Type) -> bool {
        self.info
            .capabilities
            .iter()
            .any(|c| c.r#type == Some(cap as i32))
    }

    fn partition_aware(&self) -> bool {
        self.has_capability(mesos::framework_info::capability::Type::PartitionAware)
    }

    fn roles(&self) -> Vec<String> {
        if self.has_capability(mesos::framework_info::capability::Type::MultiRole) {
            self.info.roles.clone()
        } else {
            vec![self.info.role.clone().unwrap_or_else(|| "*".to_owned())]
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentState {
    Active,
    /// Lost (fault injection): a non-partition-aware framework was told TASK_LOST.
    Unreachable,
}

struct Agent {
    id: String,
    total: Resources,
    allocated: Resources,
    offered: Resources,
    state: AgentState,
}

struct Offer {
    framework: String,
    agent: usize,
    role: String,
    resources: Resources,
}

struct Task {
    agent: usize,
    executor_id: Option<String>,
    info: mesos::TaskInfo,
    resources: Resources,
    /// What the master reports: the latest forwarded update, STAGING before any.
    state: TaskState,
    latest: Option<TaskStatus>,
    /// The agent's status-update stream: the front is in flight until acknowledged.
    pending: VecDeque<TaskStatus>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Resources go back to the agent when the terminal update reaches the master.
    released: bool,
    /// Update uuids already taken, so executor replays are idempotent.
    seen: HashSet<Vec<u8>>,
    /// Handed to the executor (LAUNCH sent).
    delivered: bool,
}

impl Task {
    /// The state as the agent knows it: the last update it took.
    fn agent_state(&self) -> TaskState {
        self.pending
            .back()
            .and_then(|s| TaskState::try_from(s.state).ok())
            .unwrap_or(self.state)
    }
}

enum ExecLink {
    /// Started, not subscribed yet; fails at `deadline`.
    Launching {
        deadline: Instant,
    },
    Connected {
        conn: Conn,
        id: u64,
    },
    Disconnected,
    /// The bench "executor": no process; the agent answers for it.
    Simulated,
}

struct Executor {
    info: mesos::ExecutorInfo,
    container_id: String,
    resources: Resources,
    link: ExecLink,
    queued: Vec<mesos::TaskInfo>,
    handle: Option<ContainerHandle>,
    /// SHUTDOWN sent; the container is destroyed at this instant.
    shutdown_deadline: Option<Instant>,
    /// Failed already (registration timeout, launch failure): the exit adds nothing.
    failed: bool,
}

/// What the master needs from the outside world.
pub(crate) struct Runtime {
    pub cmd_tx: mpsc::UnboundedSender<Cmd>,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    /// The shared listener: every agent's libprocess socket.
    pub addr: std::net::SocketAddr,
    /// Docker answered at start (for `auto`).
    pub docker_available: bool,
}

/// The state of the master and its agents.
pub(crate) struct Master {
    cfg: Arc<LocalConfig>,
    rt: Runtime,
    info: mesos::MasterInfo,
    next_framework: u32,
    next_offer: u64,
    next_conn: u64,
    frameworks: HashMap<String, Framework>,
    removed: HashSet<String>,
    agents: Vec<Agent>,
    offers: HashMap<String, Offer>,
    tasks: HashMap<TaskKey, Task>,
    executors: HashMap<ExecKey, Executor>,
    next_allocation: Instant,
    round_robin: usize,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn new_uuid() -> Vec<u8> {
    uuid::Uuid::new_v4().as_bytes().to_vec()
}

/// A 16-byte RFC 4122 UUID with a known version, as Mesos requires of update uuids.
pub(crate) fn valid_uuid(bytes: &[u8]) -> bool {
    uuid::Uuid::from_slice(bytes).is_ok_and(|u| (1..=5).contains(&u.get_version_num()))
}

fn is_terminal(state: i32) -> bool {
    TaskState::try_from(state).is_ok_and(TaskState::is_terminal)
}

fn update_event(status: TaskStatus) -> sched::Event {
    sched::Event {
        r#type: Some(sched::event::Type::Update as i32),
        update: Some(sched::event::Update { status }),
        ..Default::default()
    }
}

fn exec_event(ty: exec::event::Type) -> exec::Event {
    exec::Event {
        r#type: Some(ty as i32),
        ..Default::default()
    }
}

/// `validateID` of `src/common/validation.cpp`.
fn invalid_id(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("ID must not be empty")
    } else if id.len() > 255 {
        Some("ID must not be greater than 255 characters")
    } else if id == "." || id == ".." {
        Some("'.' and '..' are reserved")
    } else if id.chars().any(|c| c.is_control() || c == '/' || c == '\\') {
        Some("ID must not contain control characters, '/' or '\\'")
    } else {
        None
    }
}

impl Master {
    pub(crate) fn new(cfg: Arc<LocalConfig>, rt: Runtime) -> Self {
        let master_id = uuid::Uuid::new_v4().to_string();
        let agents = (0..cfg.agents)
            .map(|i| Agent {
                id: format!("{master_id}-S{i}"),
                total: cfg.resources.clone(),
                allocated: Resources::default(),
                offered: Resources::default(),
                state: AgentState::Active,
            })
            .collect();
        let info = master_info(&master_id, &cfg, rt.addr);
        Self {
            cfg,
            rt,
            info,
            next_framework: 0,
            next_offer: 0,
            next_conn: 0,
            frameworks: HashMap::new(),
            removed: HashSet::new(),
            agents,
            offers: HashMap::new(),
            tasks: HashMap::new(),
            executors: HashMap::new(),
            next_allocation: Instant::now(),
            round_robin: 0,
        }
    }

    /// Serves commands until `shutdown`, then stops every container.
    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Cmd>) {
        let shutdown = self.rt.shutdown.clone();
        let mut tick = tokio::time::interval(self.cfg.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(cmd) = rx.recv() => self.handle(cmd),
                _ = tick.tick() => self.on_tick(Instant::now()),
            }
        }
        // The containers watch the same token; streams close as the state drops.
        tracing::info!(
            executors = self.executors.len(),
            "mesos-local stopping; executors are stopped with it"
        );
    }

    pub(crate) fn handle(&mut self, cmd: Cmd) {
        let now = Instant::now();
        match cmd {
            Cmd::Subscribe {
                call,
                encoding,
                reply,
            } => {
                let _ = reply.send(self.subscribe(call, encoding, now));
            }
            Cmd::Call {
                call,
                stream_id,
                reply,
            } => {
                let _ = reply.send(self.call(call, stream_id, now));
            }
            Cmd::ExecutorSubscribe {
                agent,
                call,
                encoding,
                reply,
            } => {
                let _ = reply.send(self.executor_subscribe(agent, call, encoding, now));
            }
            Cmd::ExecutorCall { agent, call, reply } => {
                let _ = reply.send(self.executor_call(agent, call, now));
            }
            Cmd::StreamClosed {
                framework_id,
                stream_id,
            } => self.stream_closed(&framework_id, &stream_id, now),
            Cmd::ExecutorStreamClosed { key, conn } => {
                if let Some(e) = self.executors.get_mut(&key)
                    && matches!(e.link, ExecLink::Connected { id, .. } if id == conn)
                {
                    tracing::info!(agent_id = %self.agents[key.0].id, executor_id = %key.2, "executor disconnected");
                    e.link = ExecLink::Disconnected;
                }
            }
            Cmd::ContainerExited {
                key,
                container_id,
                outcome,
            } => self.container_exited(&key, &container_id, outcome, now),
            Cmd::Fault { fault, reply } => {
                let _ = reply.send(self.fault(fault, now));
            }
            Cmd::Snapshot { reply } => {
                let _ = reply.send(self.snapshot());
            }
        }
    }

    // ---------------------------------------------------------------------------------
    // Scheduler API

    fn subscribe(&mut self, call: sched::Call, encoding: Encoding, now: Instant) -> SubscribeReply {
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
        self.remove_offers_of(&fid, false);
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

    fn call(&mut self, call: sched::Call, stream_id: Option<String>, now: Instant) -> Reply {
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
                if let Some(a) = call.accept {
                    self.accept(&fid, a, now);
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
                    let key = (agent, fid.clone(), s.executor_id.value);
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
                    let key = (agent, fid.clone(), m.executor_id.value);
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
        let launches: Vec<mesos::TaskInfo> = a
            .operations
            .iter()
            .filter(|op| op.r#type == Some(mesos::offer::operation::Type::Launch as i32))
            .filter_map(|op| op.launch.as_ref())
            .flat_map(|l| l.task_infos.clone())
            .collect();
        if let Some(error) = error {
            // The valid ones among them are consumed anyway, their resources recovered.
            for id in &ids {
                self.remove_offer(id, None, now);
            }
            let lost = if self.partition_aware(fid) {
                TaskState::TaskDropped
            } else {
                TaskState::TaskLost
            };
            tracing::info!(framework_id = %fid, %error, "ACCEPT with invalid offers");
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
        let mut pool = Resources::default();
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
        pool: &mut Resources,
        now: Instant,
    ) {
        let task_id = t.task_id.value.clone();
        if let Some(why) = invalid_id(&task_id) {
            return self.task_error(fid, &t, &format!("Task ID is invalid: {why}"));
        }
        if self.tasks.contains_key(&(fid.to_owned(), task_id.clone())) {
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
        let task_res = Resources::from_proto(&t.resources);
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
            let key = (agent, fid.to_owned(), e.executor_id.value.clone());
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
                    let r = Resources::from_proto(&e.resources);
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
        tracing::info!(framework_id = %fid, task_id = %task_id, agent_id = %self.agents[agent].id, "launching task");
        self.tasks.insert(
            (fid.to_owned(), task_id.clone()),
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
                delivered: false,
            },
        );
        let tkey = (fid.to_owned(), task_id.clone());
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
        let key = (agent, fid.to_owned(), einfo.executor_id.value.clone());
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
        resources: Resources,
        now: Instant,
    ) {
        let container_id = uuid::Uuid::new_v4().to_string();
        let (agent, fid, eid) = key.clone();
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
        tracing::info!(agent_id = %self.agents[agent].id, framework_id = %fid, executor_id = %eid, container_id = %container_id, "executor launching");
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
                if let Some(o) = self.remove_offer(id, None, now) {
                    self.add_filter(fid, agent, &role, o.resources, refuse, now);
                }
            }
            _ => {
                tracing::debug!(framework_id = %fid, offer_id = %id, "DECLINE of an unknown offer; ignored")
            }
        }
    }

    fn add_filter(
        &mut self,
        fid: &str,
        agent: usize,
        role: &str,
        resources: Resources,
        refuse: f64,
        now: Instant,
    ) {
        if resources.is_empty() || refuse <= 0.0 {
            return;
        }
        if let Some(f) = self.frameworks.get_mut(fid) {
            f.filters.push(Filter {
                agent,
                role: role.to_owned(),
                resources,
                until: now + Duration::from_secs_f64(refuse),
            });
        }
    }

    fn kill(&mut self, fid: &str, k: sched::call::Kill, now: Instant) {
        let tkey = (fid.to_owned(), k.task_id.value.clone());
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
        let key = (task.agent, fid.to_owned(), eid);
        let delivered = task.delivered;
        let policy = k.kill_policy.or(task.info.kill_policy);
        let Some(e) = self.executors.get_mut(&key) else {
            return;
        };
        if !delivered {
            // Killed before it reached the executor: the agent answers for it.
            e.queued.retain(|t| t.task_id.value != tkey.1);
            let idle = e.queued.is_empty()
                && !self.tasks.iter().any(|(k2, t)| {
                    k2.0 == fid
                        && t.delivered
                        && t.executor_id.as_deref() == Some(key.2.as_str())
                        && t.agent == key.0
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
                tracing::info!(task_id = %tkey.1, "KILL for a task whose executor is not connected; dropped (reconcile and retry)");
            }
        }
    }

    fn shutdown_executor(&mut self, key: &ExecKey, now: Instant) {
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
                self.remove_executor(key, None, now);
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
        let tkey = (fid.to_owned(), task_id.to_owned());
        let Some(task) = self.tasks.get_mut(&tkey) else {
            return;
        };
        if task.pending.front().and_then(|s| s.uuid.as_deref()) != Some(uuid) {
            tracing::debug!(task_id, "ACKNOWLEDGE of an update not in flight; ignored");
            return;
        }
        let acked = task.pending.pop_front();
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
            for (k, t) in self.tasks.iter().filter(|(k, _)| k.0 == fid) {
                out.push(self.reconcile_known(&k.1, t));
            }
        }
        for rt in tasks {
            let key = (fid.to_owned(), rt.task_id.value.clone());
            if let Some(t) = self.tasks.get(&key) {
                out.push(self.reconcile_known(&key.1, t));
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

    // ---------------------------------------------------------------------------------
    // Executor API

    fn executor_subscribe(
        &mut self,
        agent: usize,
        call: exec::Call,
        encoding: Encoding,
        now: Instant,
    ) -> SubscribeReply {
        let fid = call.framework_id.value.clone();
        let key = (agent, fid.clone(), call.executor_id.value.clone());
        if !self.executors.keys().any(|k| k.0 == agent && k.1 == fid) {
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
        tracing::info!(agent_id = %self.agents[agent].id, executor_id = %key.2, launched = queued.len(), "executor subscribed");
        for t in queued {
            if let Some(task) = self.tasks.get_mut(&(fid.clone(), t.task_id.value)) {
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

    fn executor_call(&mut self, agent: usize, call: exec::Call, now: Instant) -> Reply {
        let key = (
            agent,
            call.framework_id.value.clone(),
            call.executor_id.value.clone(),
        );
        if !self.executors.keys().any(|k| k.0 == agent && k.1 == key.1) {
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
                        &key.1,
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
        let tkey = (key.1.clone(), status.task_id.value.clone());
        let agent_id = self.agents[key.0].id.clone();
        if let Some(task) = self.tasks.get_mut(&tkey)
            && task.agent == key.0
            && task.seen.insert(uuid.clone())
        {
            if task.agent_state().is_terminal() {
                tracing::debug!(task_id = %tkey.1, "update after a terminal one; dropped");
            } else {
                status
                    .agent_id
                    .get_or_insert(mesos::AgentId { value: agent_id });
                status.executor_id.get_or_insert(mesos::ExecutorId {
                    value: key.2.clone(),
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
    fn agent_update(&mut self, tkey: &TaskKey, status: TaskStatus, now: Instant) {
        let Some(task) = self.tasks.get_mut(tkey) else {
            return;
        };
        task.pending.push_back(status);
        if task.pending.len() == 1 {
            self.forward(tkey, now);
        }
    }

    /// Sends the in-flight update of a task to its framework (again) and arms the retry.
    fn forward(&mut self, tkey: &TaskKey, now: Instant) {
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
        self.emit(&tkey.0, &update_event(status));
    }

    fn remove_task(&mut self, tkey: &TaskKey, now: Instant) {
        let Some(task) = self.tasks.remove(tkey) else {
            return;
        };
        if !task.released {
            self.agents[task.agent].allocated.subtract(&task.resources);
        }
        // The simulated executor "exits" once it has nothing left, as ours does.
        if let Some(eid) = task.executor_id {
            let key = (task.agent, tkey.0.clone(), eid);
            if matches!(
                self.executors.get(&key),
                Some(Executor {
                    link: ExecLink::Simulated,
                    ..
                })
            ) && self.tasks_of(&key).is_empty()
            {
                self.remove_executor(&key, None, now);
            }
        }
    }

    /// An update generated by the agent (SOURCE_AGENT, with a uuid: reliable).
    fn agent_status(
        &self,
        tkey: &TaskKey,
        state: TaskState,
        reason: Reason,
        msg: &str,
    ) -> TaskStatus {
        let task = self.tasks.get(tkey);
        TaskStatus {
            task_id: mesos::TaskId {
                value: tkey.1.clone(),
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
    fn executor_status(&self, tkey: &TaskKey, state: TaskState, msg: Option<&str>) -> TaskStatus {
        let mut s = self.agent_status(tkey, state, Reason::TaskInvalid, "");
        s.source = Some(Source::Executor as i32);
        s.reason = None;
        s.message = msg.map(str::to_owned);
        s
    }

    // ---------------------------------------------------------------------------------
    // Containers

    fn container_exited(
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
        tracing::info!(agent_id = %self.agents[key.0].id, executor_id = %key.2, ?outcome, "executor exited");
        let tasks = self.tasks_of(key);
        for tkey in tasks {
            let s = self.agent_status(&tkey, TaskState::TaskFailed, reason, &message);
            self.agent_update(&tkey, s, now);
        }
        self.remove_executor(key, Some(status), now);
    }

    /// Forgets an executor, gives back its resources and reports FAILURE when asked.
    fn remove_executor(&mut self, key: &ExecKey, failure: Option<Option<i32>>, _now: Instant) {
        let Some(e) = self.executors.remove(key) else {
            return;
        };
        self.agents[key.0].allocated.subtract(&e.resources);
        if let Some(h) = e.handle {
            h.stop(Duration::ZERO);
        }
        if let Some(status) = failure
            && !matches!(e.link, ExecLink::Simulated)
        {
            self.emit(
                &key.1,
                &sched::Event {
                    r#type: Some(sched::event::Type::Failure as i32),
                    failure: Some(sched::event::Failure {
                        agent_id: Some(mesos::AgentId {
                            value: self.agents[key.0].id.clone(),
                        }),
                        executor_id: Some(mesos::ExecutorId {
                            value: key.2.clone(),
                        }),
                        status,
                    }),
                    ..Default::default()
                },
            );
        }
    }

    /// The tasks of an executor that are not terminal as far as the agent knows.
    fn tasks_of(&self, key: &ExecKey) -> Vec<TaskKey> {
        self.tasks
            .iter()
            .filter(|(k, t)| {
                k.0 == key.1
                    && t.agent == key.0
                    && t.executor_id.as_deref() == Some(key.2.as_str())
                    && !t.agent_state().is_terminal()
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    // ---------------------------------------------------------------------------------
    // Time

    fn on_tick(&mut self, now: Instant) {
        // Heartbeats.
        for f in self.frameworks.values_mut() {
            if let Some(c) = &mut f.conn
                && now >= c.next_heartbeat
            {
                c.next_heartbeat = now + self.cfg.heartbeat_interval;
                c.conn.send(
                    codec::SCHEDULER_EVENT,
                    &sched::Event {
                        r#type: Some(sched::event::Type::Heartbeat as i32),
                        ..Default::default()
                    },
                );
            }
        }
        // Status update retries, doubling up to the cap.
        let due: Vec<TaskKey> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.retry_at.is_some_and(|r| now >= r))
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some(t) = self.tasks.get_mut(&k) {
                t.backoff = (t.backoff * 2).min(self.cfg.update_retry_max);
            }
            self.forward(&k, now);
        }
        // Executors that never subscribed; executors past their shutdown grace.
        let expired: Vec<ExecKey> = self
            .executors
            .iter()
            .filter(|(_, e)| {
                matches!(e.link, ExecLink::Launching { deadline } if now >= deadline) && !e.failed
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            tracing::warn!(agent_id = %self.agents[key.0].id, executor_id = %key.2, timeout = ?self.cfg.registration_timeout, "executor did not subscribe in time; destroying it");
            for tkey in self.tasks_of(&key) {
                let s = self.agent_status(
                    &tkey,
                    TaskState::TaskFailed,
                    Reason::ExecutorRegistrationTimeout,
                    "Executor did not register within the registration timeout",
                );
                self.agent_update(&tkey, s, now);
            }
            if let Some(e) = self.executors.get_mut(&key) {
                e.failed = true;
                e.shutdown_deadline = Some(now);
                if let Some(h) = &e.handle {
                    h.stop(Duration::ZERO);
                }
            }
        }
        for e in self.executors.values_mut() {
            if e.shutdown_deadline.is_some_and(|d| now >= d)
                && let Some(h) = &e.handle
            {
                h.stop(Duration::ZERO);
            }
        }
        // Frameworks away for longer than their failover timeout are removed.
        let gone: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| {
                f.disconnected_at.is_some_and(|d| {
                    let timeout = f.info.failover_timeout.unwrap_or(0.0).clamp(0.0, 1e9);
                    now.duration_since(d) >= Duration::from_secs_f64(timeout)
                })
            })
            .map(|f| f.id.clone())
            .collect();
        for fid in gone {
            tracing::info!(framework_id = %fid, "framework failover timeout; removing it");
            self.remove_framework(&fid, now);
        }
        if now >= self.next_allocation {
            self.next_allocation = now + self.cfg.allocation_interval;
            self.allocate(now);
        }
    }

    fn allocate(&mut self, now: Instant) {
        let mut fids: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| f.conn.is_some())
            .map(|f| f.id.clone())
            .collect();
        if fids.is_empty() {
            return;
        }
        fids.sort();
        let n = fids.len();
        fids.rotate_left(self.round_robin % n);
        self.round_robin = self.round_robin.wrapping_add(1);
        let mut batches: HashMap<String, Vec<mesos::Offer>> = HashMap::new();
        for agent in 0..self.agents.len() {
            let a = &self.agents[agent];
            if a.state != AgentState::Active {
                continue;
            }
            let avail = a.total.minus(&a.allocated).minus(&a.offered);
            if !avail.allocatable() {
                continue;
            }
            for fid in &fids {
                let Some(f) = self.frameworks.get_mut(fid) else {
                    continue;
                };
                f.filters.retain(|x| x.until > now);
                let Some(role) = f.roles().into_iter().find(|r| !f.suppressed.contains(r)) else {
                    continue;
                };
                if f.filters
                    .iter()
                    .any(|x| x.agent == agent && x.role == role && x.resources.contains(&avail))
                {
                    continue;
                }
                let refinement = f
                    .has_capability(mesos::framework_info::capability::Type::ReservationRefinement);
                let id = format!("{}-O{}", self.info.id, self.next_offer);
                self.next_offer += 1;
                let executor_ids = self
                    .executors
                    .keys()
                    .filter(|k| k.0 == agent && &k.1 == fid)
                    .map(|k| mesos::ExecutorId { value: k.2.clone() })
                    .collect();
                let offer = mesos::Offer {
                    id: mesos::OfferId { value: id.clone() },
                    framework_id: mesos::FrameworkId { value: fid.clone() },
                    agent_id: mesos::AgentId {
                        value: self.agents[agent].id.clone(),
                    },
                    hostname: self.cfg.hostname.clone(),
                    url: Some(mesos::Url {
                        scheme: "http".into(),
                        address: mesos::Address {
                            hostname: Some(self.cfg.hostname.clone()),
                            ip: Some(self.rt.addr.ip().to_string()),
                            port: i32::from(self.rt.addr.port()),
                        },
                        path: Some(format!("/slave({})", agent + 1)),
                        ..Default::default()
                    }),
                    resources: avail.to_proto(&role, refinement),
                    executor_ids,
                    allocation_info: Some(mesos::resource::AllocationInfo {
                        role: Some(role.clone()),
                    }),
                    ..Default::default()
                };
                self.agents[agent].offered.add(&avail);
                self.offers.insert(
                    id,
                    Offer {
                        framework: fid.clone(),
                        agent,
                        role,
                        resources: avail,
                    },
                );
                batches.entry(fid.clone()).or_default().push(offer);
                break;
            }
        }
        for (fid, offers) in batches {
            tracing::debug!(framework_id = %fid, offers = offers.len(), "sending offers");
            self.emit(
                &fid,
                &sched::Event {
                    r#type: Some(sched::event::Type::Offers as i32),
                    offers: Some(sched::event::Offers { offers }),
                    ..Default::default()
                },
            );
        }
    }

    // ---------------------------------------------------------------------------------
    // Frameworks and offers

    fn stream_closed(&mut self, fid: &str, stream_id: &str, now: Instant) {
        let Some(f) = self.frameworks.get_mut(fid) else {
            return;
        };
        if f.conn.as_ref().map(|c| c.stream_id.as_str()) != Some(stream_id) {
            return;
        }
        tracing::info!(framework_id = %fid, "framework disconnected; its failover timeout starts");
        f.conn = None;
        f.disconnected_at = Some(now);
        self.remove_offers_of(fid, false);
    }

    fn remove_framework(&mut self, fid: &str, now: Instant) {
        self.remove_offers_of(fid, false);
        let keys: Vec<ExecKey> = self
            .executors
            .keys()
            .filter(|k| k.1 == fid)
            .cloned()
            .collect();
        for key in keys {
            self.shutdown_executor(&key, now);
        }
        let tasks: Vec<TaskKey> = self.tasks.keys().filter(|k| k.0 == fid).cloned().collect();
        for t in tasks {
            if let Some(task) = self.tasks.remove(&t)
                && !task.released
            {
                self.agents[task.agent].allocated.subtract(&task.resources);
            }
        }
        // Dropping the connection closes the stream.
        self.frameworks.remove(fid);
        self.removed.insert(fid.to_owned());
    }

    fn remove_offers_of(&mut self, fid: &str, rescind: bool) {
        let ids: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.framework == fid)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.remove_offer(&id, rescind.then_some(()), Instant::now());
        }
    }

    /// Removes an offer, gives its resources back, and sends RESCIND when asked.
    fn remove_offer(&mut self, id: &str, rescind: Option<()>, _now: Instant) -> Option<Offer> {
        let o = self.offers.remove(id)?;
        self.agents[o.agent].offered.subtract(&o.resources);
        if rescind.is_some() {
            self.emit(
                &o.framework,
                &sched::Event {
                    r#type: Some(sched::event::Type::Rescind as i32),
                    rescind: Some(sched::event::Rescind {
                        offer_id: mesos::OfferId {
                            value: id.to_owned(),
                        },
                    }),
                    ..Default::default()
                },
            );
        }
        Some(o)
    }

    fn emit(&self, fid: &str, ev: &sched::Event) {
        if let Some(c) = self.frameworks.get(fid).and_then(|f| f.conn.as_ref()) {
            c.conn.send(codec::SCHEDULER_EVENT, ev);
        }
    }

    fn partition_aware(&self, fid: &str) -> bool {
        self.frameworks
            .get(fid)
            .is_some_and(Framework::partition_aware)
    }

    fn agent_index(&self, id: &str) -> Option<usize> {
        self.agents.iter().position(|a| a.id == id)
    }

    // ---------------------------------------------------------------------------------
    // Faults and views

    fn fault(&mut self, fault: Fault, now: Instant) -> Option<String> {
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
                    self.remove_offer(&id, Some(()), now);
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
                    let state = if self.partition_aware(&tkey.0) {
                        TaskState::TaskUnreachable
                    } else {
                        TaskState::TaskLost
                    };
                    let mut s = master_status(&tkey.1, state, Reason::AgentRemoved);
                    s.message = Some("Agent lost (mesos-local fault injection)".into());
                    s.agent_id = Some(mesos::AgentId {
                        value: agent_id.clone(),
                    });
                    s.executor_id = t.executor_id.map(|value| mesos::ExecutorId { value });
                    s.unreachable_time = Some(unreachable_time);
                    self.emit(&tkey.0, &update_event(s));
                }
                // Its executors die with it (no FAILURE per executor: the agent is gone).
                let keys: Vec<ExecKey> = self
                    .executors
                    .keys()
                    .filter(|k| k.0 == i)
                    .cloned()
                    .collect();
                for key in keys {
                    if let Some(e) = self.executors.remove(&key)
                        && let Some(h) = e.handle
                    {
                        h.stop(Duration::ZERO);
                    }
                }
                self.agents[i].allocated = Resources::default();
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
                self.remove_offer(&id, Some(()), now)?;
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
            Fault::FailOver => {
                let master_id = uuid::Uuid::new_v4().to_string();
                tracing::warn!(%master_id, "fault: master failover");
                self.info = master_info(&master_id, &self.cfg, self.rt.addr);
                let fids: Vec<String> = self.frameworks.keys().cloned().collect();
                for fid in fids {
                    self.remove_offers_of(&fid, false);
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

    fn snapshot(&self) -> Snapshot {
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
                framework_id: k.0.clone(),
                task_id: k.1.clone(),
                agent_id: self.agents[t.agent].id.clone(),
                state: t.state.as_str_name().to_owned(),
                pending_updates: t.pending.len(),
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

fn master_info(id: &str, cfg: &LocalConfig, addr: std::net::SocketAddr) -> mesos::MasterInfo {
    let ip = match addr.ip() {
        // Packed IPv4 in network byte order, read as a little-endian host integer, as
        // Mesos fills it.
        std::net::IpAddr::V4(v4) => u32::from_le_bytes(v4.octets()),
        std::net::IpAddr::V6(_) => 0,
    };
    mesos::MasterInfo {
        id: id.to_owned(),
        ip,
        port: u32::from(addr.port()),
        pid: Some(format!("master@{addr}")),
        hostname: Some(cfg.hostname.clone()),
        version: Some(VERSION.to_owned()),
        address: Some(mesos::Address {
            hostname: Some(cfg.hostname.clone()),
            ip: Some(addr.ip().to_string()),
            port: i32::from(addr.port()),
        }),
        ..Default::default()
    }
}

/// A master-generated update: no uuid (unreliable, never acknowledged).
fn master_status(task_id: &str, state: TaskState, reason: Reason) -> TaskStatus {
    TaskStatus {
        task_id: mesos::TaskId {
            value: task_id.to_owned(),
        },
        state: state as i32,
        source: Some(Source::Master as i32),
        reason: Some(reason as i32),
        timestamp: Some(now_secs()),
        ..Default::default()
    }
}

fn refuse_seconds(f: Option<&mesos::Filters>) -> f64 {
    let r = f.and_then(|f| f.refuse_seconds).unwrap_or(DEFAULT_REFUSE);
    if r < 0.0 || !r.is_finite() {
        DEFAULT_REFUSE
    } else {
        r.min(MAX_REFUSE)
    }
}
