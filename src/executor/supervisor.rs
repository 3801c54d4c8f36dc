//! The executor's event loop: subscribes to the agent, turns LAUNCH / KILL / SHUTDOWN into
//! processes and signals, turns process exits into status updates, and keeps the link alive
//! (re-subscribing with the unacknowledged tasks and updates when the agent checkpoints).
//!
//! One task owns all state; inputs (agent events, SIGCHLD, kill deadlines, reconnect timers,
//! the caller's stop signal) are multiplexed with `select!`, so no lock is needed. Updates go
//! to a single sender task through a queue: a task's updates must reach the agent in order.

use std::time::{Duration, SystemTime};

use tokio::signal::unix::Signal;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ExecutorError;
use super::agent::{AgentError, EventStream, MesosAgentClient};
use super::config::ExecutorConfig;
use super::exits::ExitBook;
use super::nodeagent::{AgentSettings, NodeAgentHandle};
use super::process::{self, Exit};
use super::state::{Kill, Reporter, Run, TaskBook, epoch_seconds};
use crate::domain::launch::{NodeLaunch, NodeRunning};
use crate::proto::mesos::v1::executor::{Call, Event, call, event};
use crate::proto::mesos::v1::framework_info::capability::Type as Capability;
use crate::proto::mesos::v1::task_status::Reason;
use crate::proto::mesos::v1::{DurationInfo, ExecutorId, FrameworkId, TaskInfo, TaskState};

/// First re-subscribe delay; doubled per failure up to `MESOS_SUBSCRIPTION_BACKOFF_MAX`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Without checkpointing there is no recovery timeout, but the very first SUBSCRIBE may race
/// an agent that is still setting up; the agent's registration timeout (1 min) bounds it.
const FIRST_SUBSCRIBE_BUDGET: Duration = Duration::from_secs(60);

/// Why the loop is winding down; decides the result of [`Supervisor::run`].
#[derive(Debug, Clone)]
enum StopCause {
    /// The agent sent SHUTDOWN.
    Shutdown,
    /// Our caller cancelled the token (e.g. the container got SIGTERM).
    Cancelled,
    /// The stream broke and the framework does not checkpoint.
    Disconnected(String),
    /// Re-subscribing did not succeed in time.
    GaveUp { after: Duration, last_error: String },
}

impl StopCause {
    fn into_result(self) -> Result<(), ExecutorError> {
        match self {
            StopCause::Shutdown | StopCause::Cancelled => Ok(()),
            StopCause::Disconnected(why) => Err(ExecutorError::Disconnected(why)),
            StopCause::GaveUp { after, last_error } => {
                Err(ExecutorError::RecoveryTimeout { after, last_error })
            }
        }
    }
}

#[derive(Debug)]
struct Stopping {
    cause: StopCause,
    /// The agent destroys the container after its shutdown grace period; waiting for the last
    /// acknowledgements beyond that is pointless.
    linger_until: Instant,
    linger_expired: bool,
}

/// The connection to the agent.
enum Link {
    Up(EventStream),
    Down {
        since: Instant,
        retry_at: Instant,
        backoff: Duration,
    },
}

/// One thing that happened.
enum Input {
    Cancelled,
    ChildExited,
    KillDeadline,
    Stream(Option<Result<Box<Event>, AgentError>>),
    Resubscribe,
    LingerOver,
}

/// The executor's state and loop.
pub(super) struct Supervisor {
    cfg: ExecutorConfig,
    client: MesosAgentClient,
    calls: mpsc::UnboundedSender<Call>,
    book: TaskBook,
    reporter: Reporter,
    link: Link,
    ever_subscribed: bool,
    /// The framework understands TASK_KILLING; without the capability the agent rejects it.
    task_killing_state: bool,
    stopping: Option<Stopping>,
    /// PID 1 of the container: reap every orphan, not only our own children.
    reap_orphans: bool,
    /// Statuses of the NodeAgent's children that our orphan reaping collects go here.
    exits: std::sync::Arc<ExitBook>,
    /// The NodeAgent server, once a LAUNCH named its port.
    node_agent: Option<NodeAgentHandle>,
}

impl Supervisor {
    pub(super) fn new(
        cfg: ExecutorConfig,
        client: MesosAgentClient,
        calls: mpsc::UnboundedSender<Call>,
        exits: std::sync::Arc<ExitBook>,
    ) -> Self {
        let now = Instant::now();
        Self {
            reporter: Reporter {
                executor_id: cfg.executor_id.clone(),
                agent_id: None,
            },
            cfg,
            client,
            calls,
            book: TaskBook::default(),
            link: Link::Down {
                since: now,
                retry_at: now,
                backoff: INITIAL_BACKOFF,
            },
            ever_subscribed: false,
            task_killing_state: false,
            stopping: None,
            reap_orphans: process::is_init(),
            exits,
            node_agent: None,
        }
    }

    /// Runs until the executor has nothing left to do, was told to shut down, or lost the agent
    /// for good.
    pub(super) async fn run(
        mut self,
        shutdown: CancellationToken,
        sigchld: &mut Signal,
    ) -> Result<(), ExecutorError> {
        loop {
            if let Some(result) = self.exit_decision() {
                if let Some(agent) = self.node_agent.take() {
                    agent.shutdown().await;
                }
                return result;
            }
            let kill_deadline = self.book.next_kill_deadline();
            let retry_at = match (&self.link, &self.stopping) {
                (Link::Down { retry_at, .. }, None) => Some(*retry_at),
                _ => None,
            };
            let linger = self
                .stopping
                .as_ref()
                .filter(|s| !s.linger_expired)
                .map(|s| s.linger_until);
            let input = tokio::select! {
                _ = shutdown.cancelled(), if self.stopping.is_none() => Input::Cancelled,
                _ = sigchld.recv() => Input::ChildExited,
                _ = sleep_until_opt(kill_deadline) => Input::KillDeadline,
                event = next_event(&mut self.link) => Input::Stream(event.map(|e| e.map(Box::new))),
                _ = sleep_until_opt(retry_at) => Input::Resubscribe,
                _ = sleep_until_opt(linger) => Input::LingerOver,
            };
            match input {
                Input::Cancelled => self.begin_stop(StopCause::Cancelled),
                Input::ChildExited => self.reap(),
                Input::KillDeadline => self.escalate(),
                Input::Stream(Some(Ok(event))) => self.on_event(*event),
                Input::Stream(Some(Err(e))) => self.link_lost(format!("event stream failed: {e}")),
                Input::Stream(None) => self.link_lost("agent closed the event stream".to_owned()),
                Input::Resubscribe => self.subscribe().await,
                Input::LingerOver => self.linger_over(),
            }
        }
    }

    fn exit_decision(&mut self) -> Option<Result<(), ExecutorError>> {
        match &self.stopping {
            Some(stop) => {
                let flushed = self.book.unacknowledged_updates().is_empty()
                    || matches!(self.link, Link::Down { .. })
                    || stop.linger_expired;
                (self.book.all_terminal() && flushed).then(|| stop.cause.clone().into_result())
            }
            None => self.book.finished().then(|| {
                info!("every task is terminal and acknowledged; executor exits");
                Ok(())
            }),
        }
    }

    // ----- the link -------------------------------------------------------------------------

    async fn subscribe(&mut self) {
        let Link::Down { since, backoff, .. } = self.link else {
            return;
        };
        let call = Call {
            executor_id: ExecutorId::from(self.cfg.executor_id.as_str()),
            framework_id: FrameworkId::from(self.cfg.framework_id.as_str()),
            r#type: Some(call::Type::Subscribe as i32),
            subscribe: Some(call::Subscribe {
                unacknowledged_tasks: self.book.unacknowledged_tasks(),
                unacknowledged_updates: self.book.unacknowledged_updates().to_vec(),
            }),
            ..Default::default()
        };
        match self.client.subscribe(&call).await {
            Ok(stream) => {
                info!(
                    agent = %self.client.url(),
                    unacknowledged_tasks = call.subscribe.as_ref().map_or(0, |s| s.unacknowledged_tasks.len()),
                    unacknowledged_updates = call.subscribe.as_ref().map_or(0, |s| s.unacknowledged_updates.len()),
                    "subscribed to the agent"
                );
                self.link = Link::Up(stream);
            }
            Err(e) => {
                let now = Instant::now();
                let budget = if self.cfg.checkpoint {
                    self.cfg.recovery_timeout
                } else if !self.ever_subscribed {
                    FIRST_SUBSCRIBE_BUDGET
                } else {
                    Duration::ZERO
                };
                let last_error = e.to_string();
                if now.duration_since(since) >= budget {
                    self.begin_stop(StopCause::GaveUp {
                        after: now.duration_since(since),
                        last_error,
                    });
                    return;
                }
                let next =
                    (backoff * 2).min(self.cfg.subscription_backoff_max.max(INITIAL_BACKOFF));
                debug!(error = %e, retry_in = ?next, "subscribe failed");
                self.link = Link::Down {
                    since,
                    retry_at: now + jitter(next),
                    backoff: next,
                };
            }
        }
    }

    fn link_lost(&mut self, why: String) {
        let now = Instant::now();
        self.link = Link::Down {
            since: now,
            retry_at: now + jitter(INITIAL_BACKOFF),
            backoff: INITIAL_BACKOFF,
        };
        if self.stopping.is_some() {
            debug!(reason = %why, "agent link gone while stopping");
        } else if self.cfg.checkpoint {
            warn!(reason = %why, recovery_timeout = ?self.cfg.recovery_timeout, "lost the agent; re-subscribing");
        } else {
            warn!(reason = %why, "lost the agent and the framework does not checkpoint; shutting down");
            self.begin_stop(StopCause::Disconnected(why));
        }
    }

    // ----- agent events ---------------------------------------------------------------------

    fn on_event(&mut self, event: Event) {
        match event.r#type() {
            event::Type::Subscribed => {
                let Some(sub) = event.subscribed else {
                    warn!("SUBSCRIBED without payload; ignored");
                    return;
                };
                self.ever_subscribed = true;
                self.reporter.agent_id = sub.agent_info.id.map(|id| id.value);
                self.task_killing_state = sub
                    .framework_info
                    .capabilities
                    .iter()
                    .any(|c| c.r#type() == Capability::TaskKillingState);
                info!(
                    agent_id = self.reporter.agent_id.as_deref().unwrap_or(""),
                    host = %sub.agent_info.hostname,
                    container_id = sub.container_id.as_ref().map_or("", |c| c.value.as_str()),
                    "SUBSCRIBED"
                );
            }
            event::Type::Launch => match event.launch {
                Some(launch) => self.launch(launch.task),
                None => warn!("LAUNCH without payload; ignored"),
            },
            event::Type::LaunchGroup => {
                // Docker executors never get task groups (the master refuses them); say so
                // clearly rather than leave the tasks hanging.
                for task in event
                    .launch_group
                    .map(|g| g.task_group.tasks)
                    .unwrap_or_default()
                {
                    let id = task.task_id.value.clone();
                    if self.book.insert(task, Run::Done(TaskState::TaskFailed)) {
                        self.report(
                            &id,
                            TaskState::TaskFailed,
                            Some("this executor does not support LAUNCH_GROUP".to_owned()),
                            Some(Reason::TaskInvalid),
                        );
                    }
                }
            }
            event::Type::Kill => match event.kill {
                Some(kill) => {
                    let policy_grace = kill
                        .kill_policy
                        .and_then(|p| p.grace_period)
                        .map(|d| d.to_std());
                    self.kill(&kill.task_id.value, policy_grace);
                }
                None => warn!("KILL without payload; ignored"),
            },
            event::Type::Acknowledged => {
                if let Some(ack) = event.acknowledged
                    && !self.book.acknowledge(&ack.task_id.value, &ack.uuid)
                {
                    debug!(task_id = %ack.task_id.value, "acknowledgement of an unknown update");
                }
            }
            event::Type::Shutdown => {
                info!("SHUTDOWN from the agent");
                self.begin_stop(StopCause::Shutdown);
            }
            event::Type::Message => {
                let len = event.message.map_or(0, |m| m.data.len());
                debug!(bytes = len, "framework message ignored");
            }
            event::Type::Error => {
                let message = event.error.map(|e| e.message).unwrap_or_default();
                warn!(%message, "ERROR event from the agent");
            }
            event::Type::Heartbeat | event::Type::Unknown => {}
        }
    }

    fn launch(&mut self, task: TaskInfo) {
        let task_id = task.task_id.value.clone();
        if self.book.get(&task_id).is_some() {
            warn!(%task_id, "duplicate LAUNCH ignored");
            return;
        }
        if self.stopping.is_some() {
            self.book.insert(task, Run::Done(TaskState::TaskKilled));
            let msg = "executor is shutting down".to_owned();
            self.report(&task_id, TaskState::TaskKilled, Some(msg), None);
            return;
        }
        let payload = task.data.clone().filter(|d| !d.is_empty());
        let launch = match payload.map(|d| serde_json::from_slice::<NodeLaunch>(&d)) {
            None => {
                info!(%task_id, "no NodeLaunch in TaskInfo.data; the task just stays up");
                self.book.insert(task, Run::Idle);
                self.report(&task_id, TaskState::TaskRunning, None, None);
                return;
            }
            Some(Err(e)) => {
                self.book.insert(task, Run::Done(TaskState::TaskFailed));
                let msg = format!("TaskInfo.data is not a valid NodeLaunch: {e}");
                self.report(
                    &task_id,
                    TaskState::TaskFailed,
                    Some(msg),
                    Some(Reason::TaskInvalid),
                );
                return;
            }
            Some(Ok(launch)) => launch,
        };
        let cluster_id = launch.cluster_id.to_string();
        let node = launch.node.clone();
        if let Err(msg) = self.start_node_agent(&launch) {
            self.book.insert(task, Run::Done(TaskState::TaskFailed));
            if let Some(entry) = self.book.get_mut(&task_id) {
                entry.node = Some((cluster_id, node));
            }
            self.report(&task_id, TaskState::TaskFailed, Some(msg), None);
            return;
        }
        let argv = launch
            .command
            .as_ref()
            .map(|c| c.argv())
            .filter(|argv| argv.first().is_some_and(|a| !a.is_empty()));
        let (run, state, message) = match argv {
            None => {
                info!(%task_id, %cluster_id, %node, "node has no command; the task just stays up");
                (Run::Idle, TaskState::TaskRunning, None)
            }
            Some(argv) => {
                let env = process::node_env(own_env(), &launch);
                match process::spawn(&argv, &env, self.cfg.sandbox.as_deref()) {
                    Ok(pid) => {
                        info!(%task_id, %cluster_id, %node, pid, argv = ?argv, "node command started");
                        (
                            Run::Process { pid, kill: None },
                            TaskState::TaskRunning,
                            None,
                        )
                    }
                    Err(e) => {
                        let msg = format!("cannot start node command {:?}: {e}", argv[0]);
                        (
                            Run::Done(TaskState::TaskFailed),
                            TaskState::TaskFailed,
                            Some(msg),
                        )
                    }
                }
            }
        };
        self.book.insert(task, run);
        if let Some(entry) = self.book.get_mut(&task_id) {
            entry.node = Some((cluster_id, node));
        }
        self.report(&task_id, state, message, None);
    }

    /// Starts the NodeAgent on the launch's `agent_port` (all interfaces: the orchestrator may
    /// run on another host, and node containers share the agent's network). One per executor:
    /// a second LAUNCH reuses it. A node without an agent port gets none.
    fn start_node_agent(&mut self, launch: &NodeLaunch) -> Result<(), String> {
        let Some(port) = launch.agent_port else {
            return Ok(());
        };
        if self.node_agent.is_some() {
            return Ok(());
        }
        let settings = AgentSettings {
            cluster_id: launch.cluster_id.to_string(),
            node: launch.node.clone(),
            secret: launch.secret.clone(),
            env: process::node_env(own_env(), launch),
            working_dir: self.cfg.sandbox.clone(),
        };
        let addr = std::net::SocketAddr::from(([0, 0, 0, 0], port));
        match NodeAgentHandle::bind(addr, settings, self.exits.clone()) {
            Ok(h) => {
                self.node_agent = Some(h);
                Ok(())
            }
            Err(e) => {
                let mut msg = format!("cannot start the NodeAgent: {e}");
                for cause in error_chain(&e) {
                    msg.push_str(": ");
                    msg.push_str(&cause);
                }
                Err(msg)
            }
        }
    }

    /// Starts killing a task: SIGTERM now, SIGKILL after the grace period. The grace period is
    /// the KILL's policy, else the task's, else the executor's shutdown grace period.
    fn kill(&mut self, task_id: &str, policy_grace: Option<Duration>) {
        let default_grace = self.cfg.shutdown_grace_period;
        let Some(entry) = self.book.get_mut(task_id) else {
            // The agent only kills tasks it gave us; answering keeps the task from hanging if
            // the LAUNCH was lost on the way.
            warn!(%task_id, "KILL for an unknown task; reporting it killed");
            let msg = "task unknown to the executor".to_owned();
            self.report(task_id, TaskState::TaskKilled, Some(msg), None);
            return;
        };
        let grace = policy_grace
            .or_else(|| {
                entry
                    .info
                    .kill_policy
                    .as_ref()
                    .and_then(|p| p.grace_period.as_ref())
                    .map(DurationInfo::to_std)
            })
            .unwrap_or(default_grace);
        let deadline = Instant::now() + grace;
        // The services the orchestrator started belong to the node: they go with its task.
        if let Some(agent) = &self.node_agent {
            agent.kill_services(grace);
        }
        match &mut entry.run {
            Run::Done(_) => debug!(%task_id, "KILL for a terminal task ignored"),
            Run::Idle => {
                entry.run = Run::Done(TaskState::TaskKilled);
                self.report(task_id, TaskState::TaskKilled, None, None);
            }
            Run::Process {
                kill: Some(kill), ..
            } => {
                // A second KILL may only shorten the grace period (the scheduler forcing it).
                kill.deadline = kill.deadline.min(deadline);
            }
            Run::Process { pid, kill } => {
                let pid = *pid;
                *kill = Some(Kill {
                    deadline,
                    escalated: false,
                });
                info!(%task_id, pid, grace = ?grace, "killing node command (SIGTERM)");
                if let Err(e) = process::signal_group(pid, libc::SIGTERM) {
                    warn!(%task_id, pid, error = %e, "SIGTERM failed");
                }
                if self.task_killing_state {
                    self.report(task_id, TaskState::TaskKilling, None, None);
                }
            }
        }
    }

    fn begin_stop(&mut self, cause: StopCause) {
        if self.stopping.is_some() {
            return;
        }
        let grace = self.cfg.shutdown_grace_period;
        self.stopping = Some(Stopping {
            cause,
            linger_until: Instant::now() + grace,
            linger_expired: false,
        });
        // Leave a fifth of the agent's grace period for the TASK_KILLED updates to get out
        // before it destroys the container.
        let kill_grace = grace.mul_f64(0.8);
        for task_id in self.book.live_tasks() {
            self.kill(&task_id, Some(kill_grace));
        }
    }

    fn linger_over(&mut self) {
        let Some(stop) = &mut self.stopping else {
            return;
        };
        stop.linger_expired = true;
        for pid in self.book.live_pids() {
            let _ = process::signal_group(pid, libc::SIGKILL);
        }
    }

    // ----- processes ------------------------------------------------------------------------

    fn reap(&mut self) {
        for (pid, status) in process::reap(self.book.live_pids(), self.reap_orphans) {
            let Some(task_id) = self.book.task_of_pid(pid).map(str::to_owned) else {
                if !self.exits.deliver(pid, status) {
                    debug!(pid, "reaped an orphan");
                }
                continue;
            };
            let Some(entry) = self.book.get_mut(&task_id) else {
                continue;
            };
            let killed = matches!(entry.run, Run::Process { kill: Some(_), .. });
            let exit = Exit::from_wait_status(status);
            let (state, message) = match (killed, exit) {
                (true, _) => (
                    TaskState::TaskKilled,
                    format!("node command {exit} after a kill"),
                ),
                (false, Exit::Code(0)) => (TaskState::TaskFinished, format!("node command {exit}")),
                (false, _) => (TaskState::TaskFailed, format!("node command {exit}")),
            };
            entry.run = Run::Done(state);
            // Whatever the command forked dies with it. The group id cannot have been reused
            // while members remain (Linux never hands out a pid in use as a group id).
            let _ = process::signal_group(pid, libc::SIGKILL);
            self.report(&task_id, state, Some(message), None);
        }
    }

    fn escalate(&mut self) {
        for (task_id, pid) in self.book.take_due_escalations(Instant::now()) {
            warn!(%task_id, pid, "grace period over; SIGKILL");
            if let Err(e) = process::signal_group(pid, libc::SIGKILL) {
                warn!(%task_id, pid, error = %e, "SIGKILL failed");
            }
        }
    }

    // ----- status updates -------------------------------------------------------------------

    fn report(
        &mut self,
        task_id: &str,
        state: TaskState,
        message: Option<String>,
        reason: Option<Reason>,
    ) {
        let mut status = self.reporter.status(
            task_id,
            state,
            message,
            reason,
            uuid::Uuid::new_v4(),
            epoch_seconds(SystemTime::now()),
        );
        // TASK_RUNNING carries the NodeAgent's certificate pin to the scheduler (a pin is
        // public; what matters is that it reaches the orchestrator through Mesos).
        if state == TaskState::TaskRunning
            && let Some(agent) = &self.node_agent
        {
            let running = NodeRunning {
                agent_cert_sha256: agent.cert_sha256().to_owned(),
            };
            status.data = serde_json::to_vec(&running).ok();
        }
        let (cluster_id, node) = self
            .book
            .get(task_id)
            .and_then(|e| e.node.clone())
            .unwrap_or_default();
        info!(
            %task_id, %cluster_id, %node,
            agent_id = self.reporter.agent_id.as_deref().unwrap_or(""),
            state = state.as_str_name(),
            message = status.message.as_deref().unwrap_or(""),
            "status update"
        );
        let update = call::Update { status };
        self.book.record(update.clone());
        // While the link is down the update waits in the book and goes out with the next
        // SUBSCRIBE instead.
        if matches!(self.link, Link::Up(_)) {
            let call = Call {
                executor_id: ExecutorId::from(self.cfg.executor_id.as_str()),
                framework_id: FrameworkId::from(self.cfg.framework_id.as_str()),
                r#type: Some(call::Type::Update as i32),
                update: Some(update),
                ..Default::default()
            };
            // A closed queue means the sender is gone, i.e. we are exiting anyway.
            let _ = self.calls.send(call);
        }
    }
}

/// Sends queued calls to the agent one by one, preserving their order.
pub(super) async fn send_calls(
    client: MesosAgentClient,
    mut calls: mpsc::UnboundedReceiver<Call>,
    stop: CancellationToken,
) {
    loop {
        let call = tokio::select! {
            call = calls.recv() => match call {
                Some(call) => call,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        if let Err(e) = client.call(&call).await {
            let task_id = call
                .update
                .as_ref()
                .map_or("", |u| u.status.task_id.value.as_str());
            // Not lost: it stays unacknowledged and goes out again with the next SUBSCRIBE.
            warn!(%task_id, error = %e, "call to the agent failed");
        }
    }
}

async fn next_event(link: &mut Link) -> Option<Result<Event, AgentError>> {
    match link {
        Link::Up(stream) => stream.next().await,
        Link::Down { .. } => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Spreads retries over `[d/2, d]` so executors of one agent do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

/// The sources under an error, for messages that must stand alone (a task's status message).
fn error_chain(e: &dyn std::error::Error) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts
}

/// This process's environment, skipping entries that are not UTF-8 (`std::env::vars` would
/// panic on them).
fn own_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}
