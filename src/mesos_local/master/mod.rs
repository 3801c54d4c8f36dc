//! The master and its agents as one actor: frameworks, offers, tasks, executors and the
//! agents' status-update streams, all owned by one task ([`Master::run`]) that handles one
//! [`Cmd`] at a time, so no lock is needed and the order of events is the order of commands.
//!
//! It owns the *semantics* of the scheduler and executor APIs (what a call does, which event
//! follows, which status code answers); [`super::http`] owns parsing and framing, and
//! [`super::container`] owns the executor processes and containers.
//!
//! This module holds the state, the commands and the loop (and the timers of `on_tick`);
//! the handlers are split by the API they serve: `scheduler_api` (SUBSCRIBE and the
//! framework's calls), `executor_api` (the executors' calls, the agents' status-update
//! streams, container exits), `allocator` (offers and filters, its decision pure and
//! table-tested) and `faults` (fault injection and the [`Snapshot`] views).
//!
//! Simplifications against a real master (each one documented where it is made):
//! - one allocation round per `allocation_interval`, whole agents to one framework at a
//!   time, round-robin instead of DRF;
//! - the master and its agents share state, so master↔agent messages are never lost and an
//!   agent is never "disconnected", only lost (fault injection);
//! - the master reports the state of the update it last *forwarded* for a task.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::LocalConfig;
use super::codec::{self, Encoding};
use super::container::{ContainerHandle, Outcome};
use super::instance::Instance;
use super::resources::Quantities;
use crate::proto::mesos::v1 as mesos;
use crate::proto::mesos::v1::executor as exec;
use crate::proto::mesos::v1::scheduler as sched;
use crate::proto::mesos::v1::task_status::{Reason, Source};
use crate::proto::mesos::v1::{TaskState, TaskStatus};
use crate::recordio;

mod allocator;
mod executor_api;
mod faults;
mod scheduler_api;

use allocator::Filter;
pub(crate) use faults::{AcceptFault, Fault};
pub use faults::{AgentView, FrameworkView, Snapshot, TaskView};

/// Most commands handled before the allocation round they may have asked for runs.
const MAX_DRAIN: usize = 1024;
/// `Subscribed.heartbeat_interval_seconds`: a constant in Mesos.
const HEARTBEAT_SECONDS: f64 = 15.0;
/// The version we claim (`GET /version`, `MasterInfo.version`).
pub const VERSION: &str = "1.11.0";

/// Names an executor: executor ids are unique per framework and agent, not globally.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ExecKey {
    /// Index into [`Master::agents`].
    pub agent: usize,
    pub framework: String,
    pub executor: String,
}

impl ExecKey {
    fn new(agent: usize, framework: &str, executor: &str) -> Self {
        Self {
            agent,
            framework: framework.to_owned(),
            executor: executor.to_owned(),
        }
    }
}

/// Names a task: task ids are unique per framework, not globally.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TaskKey {
    framework: String,
    task: String,
}

impl TaskKey {
    fn new(framework: &str, task: &str) -> Self {
        Self {
            framework: framework.to_owned(),
            task: task.to_owned(),
        }
    }
}

/// Whether the framework hears that an offer is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OfferRemoval {
    /// The master takes the offer back: RESCIND.
    Rescind,
    /// The framework used or declined it, or is not there to hear: nothing is sent.
    Silent,
}

/// How an executor leaves the agent, which decides whether its framework hears a FAILURE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExecutorExit {
    /// Shut down as asked, or done with its last task (the simulated one): no event.
    Quiet,
    /// Its container exited or never started: FAILURE, with the exit status when known.
    Failed { status: Option<i32> },
}

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
    fn unavailable(body: impl Into<String>) -> Self {
        Reply {
            status: StatusCode::SERVICE_UNAVAILABLE,
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
    total: Quantities,
    allocated: Quantities,
    offered: Quantities,
    state: AgentState,
}

struct Offer {
    framework: String,
    agent: usize,
    role: String,
    resources: Quantities,
}

struct Task {
    agent: usize,
    executor_id: Option<String>,
    info: mesos::TaskInfo,
    resources: Quantities,
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
    /// The state of the last update the framework acknowledged (shown in the state
    /// endpoint, so a test can check that no acknowledged update was lost).
    acknowledged: Option<TaskState>,
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
    resources: Quantities,
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
    /// The work directory's instance: labels and pid records of what it starts; its lock
    /// is held as long as the master runs.
    pub instance: Arc<Instance>,
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
    /// ACCEPTs still to fail ([`Fault::FailAccepts`]).
    failing_accepts: faults::AcceptFault,
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
                allocated: Quantities::default(),
                offered: Quantities::default(),
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
            failing_accepts: faults::AcceptFault::default(),
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
                Some(cmd) = rx.recv() => {
                    self.handle(cmd);
                    // What else is queued first, so that one round answers them all.
                    for _ in 0..MAX_DRAIN {
                        match rx.try_recv() {
                            Ok(cmd) => self.handle(cmd),
                            Err(_) => break,
                        }
                    }
                    // A round a REVIVE or a SUBSCRIBE asked for runs now, as Mesos' allocator
                    // runs one soon after a revive, not at the next tick.
                    self.allocate_if_due(Instant::now());
                }
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
                    tracing::info!(agent_id = %self.agents[key.agent].id, executor_id = %key.executor, "executor disconnected");
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
            tracing::warn!(agent_id = %self.agents[key.agent].id, executor_id = %key.executor, timeout = ?self.cfg.registration_timeout, "executor did not subscribe in time; destroying it");
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
        self.allocate_if_due(now);
    }

    /// Runs an allocation round if one is due: every `allocation_interval`, or at once after
    /// a REVIVE or a SUBSCRIBE (which make it due).
    fn allocate_if_due(&mut self, now: Instant) {
        if now >= self.next_allocation {
            self.next_allocation = now + self.cfg.allocation_interval;
            self.allocate(now);
        }
    }
}

impl Master {
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
        self.remove_offers_of(fid, OfferRemoval::Silent);
    }

    fn remove_framework(&mut self, fid: &str, now: Instant) {
        self.remove_offers_of(fid, OfferRemoval::Silent);
        let keys: Vec<ExecKey> = self
            .executors
            .keys()
            .filter(|k| k.framework == fid)
            .cloned()
            .collect();
        for key in keys {
            self.shutdown_executor(&key, now);
        }
        let tasks: Vec<TaskKey> = self
            .tasks
            .keys()
            .filter(|k| k.framework == fid)
            .cloned()
            .collect();
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

    fn remove_offers_of(&mut self, fid: &str, removal: OfferRemoval) {
        let ids: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| o.framework == fid)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.remove_offer(&id, removal, Instant::now());
        }
    }

    /// Removes an offer, gives its resources back, and sends RESCIND when asked.
    fn remove_offer(&mut self, id: &str, removal: OfferRemoval, _now: Instant) -> Option<Offer> {
        let o = self.offers.remove(id)?;
        self.agents[o.agent].offered.subtract(&o.resources);
        if removal == OfferRemoval::Rescind {
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
