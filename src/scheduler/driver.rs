//! The scheduler's event loop: subscribe (and resubscribe with backoff), reconcile, place
//! pending nodes on offers, record task updates, kill what should go.
//!
//! Orderings that matter:
//! - A task is persisted (node `staging` with its task id) **before** the ACCEPT that
//!   launches it, so a crash between the two leaves a task we know about and reconcile.
//! - An update is persisted **before** it is acknowledged, so a crash loses no update:
//!   Mesos resends whatever we did not acknowledge.
//! - Events are handled in the order the master sent them. What already arrived is taken as
//!   one batch (up to [`MAX_BATCH`]; the stream reads ahead while the loop works, see
//!   [`RecordStream`]); a run of consecutive UPDATEs in it is applied with one
//!   [`Store::update_clusters`] (one flush), and only then are its ACKs handed to the
//!   session's sender ([`Acks`]), which sends them concurrently while the loop goes on. Any
//!   other event ends the run: the updates before it are applied first.
//! - After every SUBSCRIBED nothing launches until explicit reconciliation of every known
//!   task has answered (or timed out).
//!
//! What should run comes from the store's commit notifications ([`Store::subscribe`]): a
//! committed cluster that wants placement, is being destroyed or has nodes retiring is acted
//! on at once, from the committed record itself. A task of its own ([`relay_commits`]) reads
//! the notifications as they come and passes on only those, so the loop never falls behind
//! on the others (our own status writes, mostly) while it waits for the store or the master.
//!
//! Each offer round places every pending cluster's queued nodes all together or not at all
//! (oldest cluster first, [`offers::evaluate_gangs`]); a cluster that does not fit waits,
//! says why, and holds nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message;
use rand::RngExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::acks::Acks;
use super::offers::{self, OfferView};
use super::seen::SeenOffers;
use super::task_updates::{Applied, Observed, apply_update};
use super::tasks::TaskTemplate;
use super::transport::{ContentType, Endpoint, RecordStream, StreamId, Transport, TransportError};
use super::{SchedulerConfig, SchedulerStatus};
use super::{deadline, launch};
use crate::domain::launch::NodeRunning;
use crate::domain::{
    AgentId, Cluster, ClusterId, ClusterStatus, Desired, NodeStatus, TaskId, Timestamp,
};
use crate::metrics::Metrics;
use crate::proto::mesos::v1 as mesos;
use crate::proto::mesos::v1::scheduler::{Call, Event, call, event};
use crate::registry::{self, BatchUpdate, Commit, Pending, Store, StoreError, Update};

const FRAMEWORK_ID_KEY: &str = "framework_id";
const TICK: Duration = Duration::from_secs(5);
const KILL_SWEEP: Duration = Duration::from_secs(30);
/// Longest wait for the orchestrator's `SCRIPT stop` before a destroyed cluster's nodes are
/// killed anyway (its own stop timeout is shorter).
const STOP_SCRIPT_GRACE: Duration = Duration::from_secs(45);
/// Most events taken from the stream before acting on them: a burst is handled as one
/// batch (a thousand updates of a hundred clusters: a hundred writes and one flush), yet a
/// flood cannot hold the loop (commits, ticks) for long.
pub const MAX_BATCH: usize = 1024;
/// How long after SUBSCRIBED a launch may fail for want of offers when none came (a master
/// without agents): a restart after the deadline of a launch still gives it a round.
const OFFER_GRACE: Duration = Duration::from_secs(30);
/// Most calls in flight at once, each on a pooled connection to the master: a round's
/// ACCEPTs, and apart from them the session's ACKs that could not be pipelined (see
/// [`Acks`]).
const MAX_CALLS_IN_FLIGHT: usize = 32;
/// Most commits [`relay_commits`] holds for the loop (only those the loop acts on).
const RELAYED: usize = 4096;

/// The store's commits as the loop reads them: those [`relay_commits`] passes on.
pub type Commits = mpsc::Receiver<Result<Commit, broadcast::error::RecvError>>;

/// Reads the store's commits (`rx`) as they come and passes on those the loop acts on:
/// purges, and clusters of some [`interest`]; and a lag of its own, as such.
///
/// The loop waits for store writes and for the master's answers, and meanwhile the store
/// commits at the pace of the API (thousands of launches a second) and of the loop's own
/// status writes. Read by the loop itself, the store's channel overflowed when some
/// thousands of clusters were provisioned at once (`bench provision --clusters 3000`), and
/// each overflow cost the loop a read of every live cluster. The relay keeps up, as it does
/// nothing else; most commits (status writes of clusters that want nothing of the loop)
/// stop here. Ends at shutdown, or once the loop's end is dropped or the store's closed.
pub fn relay_commits(
    mut rx: broadcast::Receiver<Commit>,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> Commits {
    let (tx, out) = mpsc::channel(RELAYED);
    tracker.spawn(async move {
        loop {
            let r = tokio::select! {
                () = shutdown.cancelled() => return,
                () = tx.closed() => return,
                r = rx.recv() => r,
            };
            let closed = matches!(r, Err(broadcast::error::RecvError::Closed));
            let passed = match &r {
                Ok(Commit::Cluster(c)) => interest(c) != Interest::None,
                Ok(Commit::Purged(_)) | Err(_) => true,
            };
            if (passed && tx.send(r).await.is_err()) || closed {
                return;
            }
        }
    });
    out
}

/// Errors that end a session; the loop resubscribes after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("mesos transport")]
    Transport(#[from] TransportError),
    #[error("store")]
    Store(#[from] StoreError),
}

enum SessionEnd {
    Shutdown,
    Reconnect(String),
}

/// One subscription's state; all of it is void once the stream ends.
struct Session {
    leader: Endpoint,
    stream_id: StreamId,
    framework_id: Option<mesos::FrameworkId>,
    /// Tasks explicitly reconciled and not answered yet; launches wait while non-empty.
    reconciling: HashMap<TaskId, Option<AgentId>>,
    reconcile_started: Instant,
    reconcile_sent: Instant,
    reconcile_round: u32,
    last_implicit: Instant,
    last_kill_sweep: Instant,
    suppressed: bool,
    /// Offers were declined (or left over by an ACCEPT) with a filter since the last REVIVE:
    /// the master holds those resources back until the filter ends, so a cluster that
    /// becomes pending now needs a REVIVE to be offered them at once. At most one REVIVE per
    /// offer round: it clears this, and only the next round's filters set it again.
    filtered: bool,
    /// An offer round was evaluated this session (after reconciliation): the agents are in
    /// [`Driver::seen`], and every pending launch had a chance. Offers are suppressed only
    /// after it, so that dry runs have agents to evaluate against.
    offers_seen: bool,
    /// When SUBSCRIBED arrived: launches fail for want of offers only once the master had
    /// [`OFFER_GRACE`] to send some.
    subscribed_at: Instant,
    heartbeat_timeout: Duration,
    /// Sends this session's ACKs (from SUBSCRIBED on).
    acks: Option<Acks>,
    /// Where this session's ACCEPT rounds report how their calls went (see
    /// [`Driver::accept`]).
    accepted: mpsc::UnboundedSender<Vec<Sent>>,
    /// The ACCEPT rounds being built and sent; they end with the session.
    accepting: tokio::task::JoinSet<()>,
}

pub struct Driver {
    cfg: SchedulerConfig,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    transport: Transport,
    status: watch::Sender<SchedulerStatus>,
    /// The store's commits that concern us ([`relay_commits`]): what the api and the
    /// orchestrator want reaches us here. `None` once they ended (the store is gone: only at
    /// shutdown); the sweeps go on.
    commits: Option<Commits>,
    shutdown: CancellationToken,
    /// Clusters that may have queued nodes. Rebuilt from the store on every SUBSCRIBED and
    /// kept by commits and placements, so an offer round costs O(pending), not O(all).
    pending: BTreeSet<ClusterId>,
    /// Destroyed clusters whose kills were sent (or deferred) this session: their later
    /// commits (our own status writes among them) do not send the kills again. The periodic
    /// sweep repeats what was lost. Emptied as their tasks end.
    destroying: HashSet<ClusterId>,
    /// Destroyed clusters whose `SCRIPT stop` is still owed: their kills wait until the
    /// orchestrator has run it, or until the deadline.
    deferred_kills: HashMap<ClusterId, Instant>,
    /// Clusters with nodes an update removed: their drained nodes are killed each tick until
    /// every one of them is gone.
    retiring: BTreeSet<ClusterId>,
    tpl: TaskTemplate,
    /// The agents as each offer round left them, for dry runs.
    seen: Arc<SeenOffers>,
}

impl Driver {
    pub fn new(
        cfg: SchedulerConfig,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        status: watch::Sender<SchedulerStatus>,
        shutdown: CancellationToken,
        commits: Commits,
    ) -> Self {
        let commits = Some(commits);
        let tpl = TaskTemplate {
            kill_grace: cfg.kill_grace,
        };
        let transport = Transport::default().with_credentials(cfg.credentials.clone());
        Self {
            cfg,
            store,
            metrics,
            transport,
            status,
            commits,
            shutdown,
            pending: BTreeSet::new(),
            destroying: HashSet::new(),
            deferred_kills: HashMap::new(),
            retiring: BTreeSet::new(),
            tpl,
            seen: Arc::default(),
        }
    }

    /// Shares the driver's view of the agents (what [`super::Scheduler::plan`] reads).
    pub fn with_seen(mut self, seen: Arc<SeenOffers>) -> Self {
        self.seen = seen;
        self
    }

    /// Runs until shutdown: subscribe, serve the session, back off, resubscribe.
    pub async fn run(mut self) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let started = Instant::now();
            let end = self.session().await;
            self.status.send_modify(|s| {
                s.subscribed = false;
                s.reconciling = false;
            });
            match end {
                Ok(SessionEnd::Shutdown) => break,
                Ok(SessionEnd::Reconnect(why)) => {
                    tracing::warn!(master = %self.cfg.master, reason = %why, "mesos session ended; resubscribing");
                    self.status.send_modify(|s| s.last_error = Some(why));
                }
                Err(e) => {
                    let text = error_chain(&e);
                    tracing::warn!(master = %self.cfg.master, error = %text, "mesos session failed; resubscribing");
                    self.status.send_modify(|s| s.last_error = Some(text));
                }
            }
            // A session that lived a while was healthy: start the backoff over.
            if started.elapsed() > Duration::from_secs(60) {
                backoff = Duration::from_millis(500);
            }
            let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 4);
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(15));
        }
        tracing::info!(
            "scheduler stopped (tasks keep running; failover_timeout covers the restart)"
        );
    }

    async fn session(&mut self) -> Result<SessionEnd, DriverError> {
        let master = Endpoint::parse(&self.cfg.master)?;
        let fid = self
            .blocking(|s| s.meta(FRAMEWORK_ID_KEY))
            .await?
            .filter(|f| !f.is_empty());
        // What was committed while no session ran is read from the store at SUBSCRIBED.
        if let Some(rx) = self.commits.as_mut() {
            while let Ok(r) = rx.try_recv() {
                if matches!(r, Err(broadcast::error::RecvError::Closed)) {
                    self.commits = None;
                    break;
                }
            }
        }
        let body = self.subscribe_call(fid.as_deref()).encode_to_vec();
        let sub = tokio::select! {
            () = self.shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            r = self.transport.subscribe(&master, Bytes::from(body), ContentType::Protobuf) => r?,
        };
        let mut records = sub.records;
        let (accepted, mut accepted_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let mut s = Session {
            leader: sub.leader,
            stream_id: sub.stream_id,
            framework_id: None,
            reconciling: HashMap::new(),
            reconcile_started: now,
            reconcile_sent: now,
            reconcile_round: 0,
            last_implicit: now,
            last_kill_sweep: now,
            suppressed: false,
            filtered: false,
            offers_seen: false,
            subscribed_at: now,
            heartbeat_timeout: Duration::from_secs(75),
            acks: None,
            accepted,
            accepting: tokio::task::JoinSet::new(),
        };
        self.status
            .send_modify(|st| st.leader = Some(s.leader.to_string()));
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                Some(r) = async {
                    match self.commits.as_mut() {
                        // The relay ended without a word only at shutdown: as closed.
                        Some(rx) => Some(rx.recv().await.unwrap_or(Err(broadcast::error::RecvError::Closed))),
                        None => None,
                    }
                } => self.on_commit(&mut s, r).await?,
                Some(sent) = accepted_rx.recv() => self.on_accepted(&mut s, sent).await?,
                r = tokio::time::timeout(s.heartbeat_timeout, records.next_record()) => match r {
                    Err(_) => return Ok(SessionEnd::Reconnect(format!("no event, not even a heartbeat, for {:?}", s.heartbeat_timeout))),
                    Ok(None) => return Ok(SessionEnd::Reconnect(CLOSED.into())),
                    Ok(Some(Err(e))) => return Err(e.into()),
                    Ok(Some(Ok(bytes))) => {
                        let (events, stream_end) = take_buffered(&mut records, bytes);
                        if let Some(end) = self.on_events(&mut s, events).await? {
                            return Ok(end);
                        }
                        match stream_end {
                            Some(Ok(())) => return Ok(SessionEnd::Reconnect(CLOSED.into())),
                            Some(Err(e)) => return Err(e.into()),
                            None => {}
                        }
                    }
                },
                _ = tick.tick() => self.on_tick(&mut s).await?,
            }
        }
    }

    fn subscribe_call(&self, framework_id: Option<&str>) -> Call {
        use mesos::framework_info::{Capability, capability};
        let id = framework_id.map(|v| mesos::FrameworkId {
            value: v.to_owned(),
        });
        let info = mesos::FrameworkInfo {
            user: self.cfg.user.clone(),
            name: self.cfg.framework_name.clone(),
            id: id.clone(),
            failover_timeout: Some(self.cfg.failover_timeout.as_secs_f64()),
            checkpoint: Some(true),
            roles: vec![self.cfg.role.clone()],
            hostname: self.cfg.hostname.clone(),
            webui_url: self.cfg.webui_url.clone(),
            principal: self
                .cfg
                .credentials
                .as_ref()
                .map(|c| c.principal().to_owned()),
            capabilities: vec![Capability {
                r#type: Some(capability::Type::MultiRole as i32),
            }],
            ..Default::default()
        };
        Call {
            framework_id: id,
            r#type: Some(call::Type::Subscribe as i32),
            subscribe: Some(call::Subscribe {
                framework_info: info,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    // -----------------------------------------------------------------------------------
    // Events

    /// Handles one batch of events in order; a run of consecutive UPDATEs is applied and
    /// acknowledged together, before the event that ends it.
    async fn on_events(
        &mut self,
        s: &mut Session,
        events: Vec<Event>,
    ) -> Result<Option<SessionEnd>, DriverError> {
        let mut updates = Vec::new();
        for ev in events {
            if ev.r#type == Some(event::Type::Update as i32) {
                if let Some(u) = ev.update {
                    updates.push(u.status);
                }
                continue;
            }
            if !updates.is_empty() {
                self.on_updates(s, std::mem::take(&mut updates)).await?;
            }
            if let Some(end) = self.on_event(s, ev).await? {
                return Ok(Some(end));
            }
        }
        if !updates.is_empty() {
            self.on_updates(s, updates).await?;
        }
        Ok(None)
    }

    async fn on_event(
        &mut self,
        s: &mut Session,
        ev: Event,
    ) -> Result<Option<SessionEnd>, DriverError> {
        match ev.r#type.and_then(|t| event::Type::try_from(t).ok()) {
            Some(event::Type::Subscribed) => {
                if let Some(sub) = ev.subscribed {
                    self.on_subscribed(s, sub).await?;
                }
            }
            Some(event::Type::Offers) => {
                if let Some(o) = ev.offers {
                    self.on_offers(s, o.offers).await?;
                }
            }
            Some(event::Type::Update) => {
                if let Some(u) = ev.update {
                    self.on_updates(s, vec![u.status]).await?;
                }
            }
            Some(event::Type::Rescind) => {
                // We answer every offer as it arrives and hold none, so a rescind only
                // matters if it raced our ACCEPT: Mesos then reports TASK_LOST/DROPPED.
                if let Some(r) = ev.rescind {
                    tracing::debug!(offer_id = %r.offer_id.value, "offer rescinded");
                }
            }
            Some(event::Type::Failure) => {
                if let Some(f) = ev.failure {
                    // No executor: the agent itself is gone; dry runs no longer count it.
                    if let (Some(agent), None) = (&f.agent_id, &f.executor_id) {
                        self.seen.forget_agent(&agent.value);
                    }
                    tracing::info!(agent_id = ?f.agent_id.map(|a| a.value), executor_id = ?f.executor_id.map(|e| e.value), status = ?f.status, "failure reported by the master");
                }
            }
            Some(event::Type::Error) => {
                let msg = ev.error.map(|e| e.message).unwrap_or_default();
                if msg.contains("removed") {
                    // The framework id is dead; the next SUBSCRIBE starts a new framework.
                    tracing::error!(message = %msg, "mesos removed the framework; forgetting its id");
                    self.blocking(|st| st.set_meta(FRAMEWORK_ID_KEY, ""))
                        .await?;
                }
                return Ok(Some(SessionEnd::Reconnect(format!(
                    "ERROR event from the master: {msg}"
                ))));
            }
            Some(event::Type::Heartbeat)
            | Some(event::Type::Message)
            | Some(event::Type::InverseOffers)
            | Some(event::Type::RescindInverseOffer)
            | Some(event::Type::UpdateOperationStatus) => {}
            Some(event::Type::Unknown) | None => {
                tracing::debug!("event of an unknown type; ignored")
            }
        }
        Ok(None)
    }

    async fn on_subscribed(
        &mut self,
        s: &mut Session,
        sub: event::Subscribed,
    ) -> Result<(), DriverError> {
        let fid = sub.framework_id.value.clone();
        let stored = self.blocking(|st| st.meta(FRAMEWORK_ID_KEY)).await?;
        if stored.as_deref() != Some(fid.as_str()) {
            let v = fid.clone();
            self.blocking(move |st| st.set_meta(FRAMEWORK_ID_KEY, &v))
                .await?;
        }
        s.acks = Some(Acks::spawn(
            self.transport.clone(),
            s.leader.clone(),
            s.stream_id.clone(),
            sub.framework_id.clone(),
            MAX_CALLS_IN_FLIGHT,
        ));
        s.framework_id = Some(sub.framework_id);
        s.subscribed_at = Instant::now();
        if let Some(h) = sub
            .heartbeat_interval_seconds
            .filter(|h| h.is_finite() && *h > 0.0)
        {
            s.heartbeat_timeout = Duration::from_secs_f64(h * 5.0);
        }
        tracing::info!(framework_id = %fid, leader = %s.leader, "subscribed to mesos");
        self.metrics.inc(
            "paas_mesos_subscriptions_total",
            "SUBSCRIBED events received.",
            &[],
        );

        // Offers die with the old connection; every known task is reconciled explicitly.
        let known = self
            .blocking(|st| {
                let mut known = Known::default();
                registry::each_in_statuses(st, live(), |c| known.add(&c))?;
                Ok(known)
            })
            .await?;
        self.pending = known.pending;
        self.retiring = known.retiring;
        s.reconciling = known.tasks;
        s.reconcile_started = Instant::now();
        s.reconcile_round = 0;
        if !s.reconciling.is_empty() {
            tracing::info!(
                tasks = s.reconciling.len(),
                "explicit reconciliation started; launches wait for it"
            );
            self.reconcile(s, true).await?;
        }
        self.status.send_modify(|st| {
            st.subscribed = true;
            st.framework_id = Some(fid);
            st.reconciling = !s.reconciling.is_empty();
            st.last_error = None;
        });
        self.kill_sweep(s).await?;
        self.revive_or_suppress(s).await
    }

    /// Records a run of task updates, then acknowledges them: every update of one cluster
    /// is applied in one read-modify-write, all clusters in one [`Store::update_clusters`]
    /// (one flush), and only after that flush are the ACKs handed to [`Acks`]. An update
    /// whose write failed is not acknowledged (Mesos resends it) and ends the session.
    async fn on_updates(
        &mut self,
        s: &mut Session,
        statuses: Vec<mesos::TaskStatus>,
    ) -> Result<(), DriverError> {
        let seen: Vec<Seen> = statuses.iter().map(|st| self.observe(s, st)).collect();
        let ours: Vec<(ClusterId, String, Observed)> = seen
            .iter()
            .filter_map(|o| o.ours.as_ref())
            .map(|obs| {
                let (c, node) = (obs.task_id.cluster, obs.task_id.node.to_string());
                (c, node, obs.clone())
            })
            .collect();
        let groups = group_by_cluster(ours.iter().map(|(id, _, _)| *id));
        let now = Timestamp::now();
        let (mut results, mut decided, pending) = self
            .blocking(move |st| Ok(apply_batch(st, &ours, &groups, &now)))
            .await?;
        // Persisted before acknowledged: awaited without holding a thread.
        if let Err(e) = pending.on_disk().await {
            let why = error_chain(&e);
            for r in &mut results {
                if r.is_ok() {
                    *r = Err(StoreError::Rejected(format!(
                        "the batch's flush failed: {why}"
                    )));
                }
            }
        }

        let mut failed: Option<DriverError> = None;
        let mut acks = Vec::with_capacity(statuses.len());
        let mut ours_seen = 0;
        for (status, o) in statuses.into_iter().zip(seen) {
            let state = o.state;
            let agent_id = status
                .agent_id
                .as_ref()
                .map(|a| a.value.clone())
                .unwrap_or_default();
            if let Some(obs) = o.ours {
                let i = ours_seen;
                ours_seen += 1;
                let applied = decided[i].take().unwrap_or(Applied::Ignored("not applied"));
                let tid = &obs.task_id;
                let cluster_id = tid.cluster;
                match &results[i] {
                    Ok(c) => {
                        // A task's end at info; the rest (thousands a second at launch time)
                        // at debug.
                        if state.is_terminal() {
                            tracing::info!(cluster_id = %cluster_id, node = %tid.node, task_id = %obs.task_id, %agent_id, state = state.as_str_name(), cluster_status = %c.status, "task update");
                        } else {
                            tracing::debug!(cluster_id = %cluster_id, node = %tid.node, task_id = %obs.task_id, %agent_id, state = state.as_str_name(), cluster_status = %c.status, "task update");
                        }
                        if c.status.is_terminal() || c.desired == Desired::Destroyed {
                            self.pending.remove(&cluster_id);
                        }
                        match applied {
                            Applied::Requeued => {
                                tracing::warn!(cluster_id = %cluster_id, node = %tid.node, task_id = %obs.task_id, %agent_id, "launch not delivered; node queued again");
                                self.pending.insert(cluster_id);
                                self.offers_wanted(s, true).await?;
                            }
                            Applied::Replaced => {
                                tracing::warn!(cluster_id = %cluster_id, node = %tid.node, task_id = %obs.task_id, %agent_id, state = state.as_str_name(), "node lost; replacing it with a new attempt");
                                self.pending.insert(cluster_id);
                                self.offers_wanted(s, true).await?;
                            }
                            Applied::Stale if !state.is_terminal() => {
                                // Not in the desired state: an older attempt that came back.
                                tracing::warn!(cluster_id = %cluster_id, node = %tid.node, task_id = %obs.task_id, %agent_id, "a stale attempt runs; killing it");
                                self.kill(s, &obs.task_id, obs.agent_id.as_ref()).await;
                            }
                            _ => {}
                        }
                        // A failed cluster holds nothing: what is left of it is killed.
                        if c.status == ClusterStatus::Failed && c.has_tasks() {
                            self.kill_cluster(s, c).await;
                        }
                        // A task that runs for a cluster that should be gone (it launched
                        // while the destroy was requested) is killed now.
                        if c.desired == Desired::Destroyed && !state.is_terminal() {
                            self.kill_or_defer(s, c).await;
                        }
                    }
                    Err(StoreError::NotFound(_)) => {
                        tracing::warn!(cluster_id = %cluster_id, task_id = %obs.task_id, %agent_id, "update for a cluster we do not know; killing the task");
                        if !state.is_terminal() {
                            self.kill(s, &obs.task_id, obs.agent_id.as_ref()).await;
                        }
                    }
                    Err(e) => {
                        // Not persisted, so not acknowledged: the master resends it.
                        if failed.is_none() {
                            failed = Some(DriverError::Store(clone_store_error(e)));
                        }
                        continue;
                    }
                }
            }
            // Persisted (or deliberately ignored): now, and only now, acknowledge.
            if let (Some(uuid), Some(agent)) = (status.uuid, status.agent_id) {
                acks.push(call::Acknowledge {
                    agent_id: agent,
                    task_id: status.task_id,
                    uuid,
                });
            }
        }
        // Off the loop: the next events need not wait for a thousand calls to the master.
        if let Some(a) = &s.acks {
            a.send(acks);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// What one status says, before anything is written: counts it, turns its task id into
    /// ours (or finds it is not), and ticks off explicit reconciliation.
    fn observe(&mut self, s: &mut Session, status: &mesos::TaskStatus) -> Seen {
        let state =
            mesos::TaskState::try_from(status.state).unwrap_or(mesos::TaskState::TaskUnknown);
        self.metrics.inc(
            "paas_task_updates_total",
            "Task status updates received, by state.",
            &[("state", state.as_str_name())],
        );
        // The one place a Mesos task id becomes ours (or is found not to be).
        let Ok(tid) = TaskId::parse(&status.task_id.value) else {
            let agent_id = status
                .agent_id
                .as_ref()
                .map(|a| a.value.as_str())
                .unwrap_or_default();
            tracing::warn!(task_id = %status.task_id.value, %agent_id, "update for a task that is not ours; acknowledged and ignored");
            return Seen { state, ours: None };
        };
        let obs = Observed {
            task_id: tid,
            state,
            reason: status
                .reason
                .and_then(|r| mesos::task_status::Reason::try_from(r).ok()),
            message: status.message.clone(),
            agent_id: status
                .agent_id
                .as_ref()
                .map(|a| AgentId::new(a.value.clone())),
            agent_cert_sha256: status
                .data
                .as_deref()
                .filter(|_| state == mesos::TaskState::TaskRunning)
                .and_then(NodeRunning::parse)
                .map(|r| r.agent_cert_sha256),
        };
        if s.reconciling.remove(&obs.task_id).is_some() && s.reconciling.is_empty() {
            tracing::info!(after = ?s.reconcile_started.elapsed(), "explicit reconciliation complete; launches may proceed");
            self.status.send_modify(|st| st.reconciling = false);
        }
        Seen {
            state,
            ours: Some(obs),
        }
    }

    /// A commit of the store. Only a cluster that wants placement, is being destroyed or has
    /// nodes retiring is acted on, from the committed record (no store read); for any other
    /// (our own status writes, mostly) this is a few comparisons.
    async fn on_commit(
        &mut self,
        s: &mut Session,
        commit: Result<Commit, broadcast::error::RecvError>,
    ) -> Result<(), DriverError> {
        match commit {
            Ok(Commit::Cluster(c)) => self.on_cluster(s, &c).await,
            Ok(Commit::Purged(id)) => {
                self.pending.remove(&id);
                self.retiring.remove(&id);
                self.destroying.remove(&id);
                self.deferred_kills.remove(&id);
                Ok(())
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                // Some commits are lost to us: the store has the truth. A destroyed cluster
                // has no task left (see `Known`), so nothing in it concerns us.
                tracing::debug!(missed, "commit notifications lagged; rescanning the store");
                let clusters = self
                    .blocking(|st| {
                        let mut out = Vec::new();
                        registry::each_in_statuses(st, live(), |c| {
                            if interest(&c) != Interest::None {
                                out.push(c);
                            }
                        })?;
                        Ok(out)
                    })
                    .await?;
                for c in &clusters {
                    self.on_cluster(s, c).await?;
                }
                Ok(())
            }
            Err(broadcast::error::RecvError::Closed) => {
                tracing::warn!("the store's commit notifications ended; the sweeps go on");
                self.commits = None;
                Ok(())
            }
        }
    }

    /// What a committed (or rescanned) cluster asks of the scheduler.
    async fn on_cluster(&mut self, s: &mut Session, c: &Cluster) -> Result<(), DriverError> {
        let subscribed = s.framework_id.is_some();
        match interest(c) {
            Interest::None => {}
            Interest::Destroyed => {
                self.pending.remove(&c.id);
                if !c.has_tasks() {
                    self.destroying.remove(&c.id);
                } else if subscribed
                    && (self.destroying.insert(c.id) || self.deferred_kills.contains_key(&c.id))
                {
                    // Once per destroy, and again while the kills wait for `SCRIPT stop`
                    // (the orchestrator's commit that records it done releases them).
                    self.kill_or_defer(s, c).await;
                }
            }
            Interest::Active {
                placement,
                retiring,
            } => {
                if placement {
                    let new = self.pending.insert(c.id);
                    if subscribed {
                        self.offers_wanted(s, new).await?;
                    }
                }
                if retiring {
                    self.retiring.insert(c.id);
                    if subscribed {
                        self.kill_drained(s, c).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// Kills the drained nodes an update removed (the orchestrator ran their drain hook).
    async fn kill_drained(&mut self, s: &Session, c: &Cluster) {
        if c.retiring.is_empty() {
            self.retiring.remove(&c.id);
        }
        for r in c.retiring.iter().filter(|r| r.drained) {
            if let Some(t) = r
                .node
                .observed
                .task_id
                .as_ref()
                .filter(|_| r.node.observed.status.has_task())
            {
                tracing::info!(cluster_id = %c.id, node = %r.node.name, task_id = %t, "killing a node the update removed");
                self.kill(s, t, r.node.observed.agent_id.as_ref()).await;
            }
        }
    }

    async fn on_tick(&mut self, s: &mut Session) -> Result<(), DriverError> {
        if s.framework_id.is_none() {
            return Ok(());
        }
        for id in self.retiring.iter().copied().collect::<Vec<_>>() {
            match self.blocking(move |st| st.cluster(id)).await? {
                Some(c) => self.kill_drained(s, &c).await,
                None => {
                    self.retiring.remove(&id);
                }
            }
        }
        for id in self.deferred_kills.keys().copied().collect::<Vec<_>>() {
            match self.blocking(move |st| st.cluster(id)).await? {
                Some(c) => self.kill_or_defer(s, &c).await,
                None => {
                    self.deferred_kills.remove(&id);
                }
            }
        }
        if !s.reconciling.is_empty() {
            if s.reconcile_started.elapsed() > self.cfg.reconcile_timeout {
                tracing::warn!(
                    unanswered = s.reconciling.len(),
                    "explicit reconciliation timed out (agents not re-registered?); launches proceed"
                );
                s.reconciling.clear();
                self.status.send_modify(|st| st.reconciling = false);
                self.revive_or_suppress(s).await?;
            } else if s.reconcile_sent.elapsed()
                >= Duration::from_secs(5u64 << s.reconcile_round.min(4))
            {
                // Truncated exponential backoff between explicit rounds.
                s.reconcile_round += 1;
                self.reconcile(s, true).await?;
            }
        }
        // Deadlines count only while we could place: subscribed, reconciled, and offered
        // what the agents have (or given the time to be).
        if s.reconciling.is_empty() && (s.offers_seen || s.subscribed_at.elapsed() >= OFFER_GRACE) {
            self.expire_overdue().await?;
        }
        if s.last_implicit.elapsed() >= self.cfg.reconcile_interval {
            s.last_implicit = Instant::now();
            self.reconcile(s, false).await?;
        }
        if s.last_kill_sweep.elapsed() >= KILL_SWEEP {
            s.last_kill_sweep = Instant::now();
            self.kill_sweep(s).await?;
        }
        Ok(())
    }

    /// Fails the pending launches whose placement deadline passed ([`deadline`]), with the
    /// last reason they waited for. One read per pending cluster per tick.
    async fn expire_overdue(&mut self) -> Result<(), DriverError> {
        let default = self.cfg.placement_timeout;
        for id in self.pending.clone() {
            let Some(c) = self.blocking(move |st| st.cluster(id)).await? else {
                self.pending.remove(&id);
                continue;
            };
            if !deadline::overdue(&c, default, Timestamp::now().millis().unwrap_or(0)) {
                continue;
            }
            let now = Timestamp::now();
            let expired = self
                .blocking(move |st| {
                    st.update_cluster(id, &mut |c| Ok(deadline::record_expired(c, default, &now)))
                })
                .await;
            match expired {
                Ok(c) if c.status == ClusterStatus::Failed => {
                    tracing::info!(cluster_id = %id, reason = c.reason.as_deref().unwrap_or_default(), "launch not placed in time: failed");
                    self.pending.remove(&id);
                }
                Ok(_) => {}
                Err(DriverError::Store(StoreError::NotFound(_))) => {
                    self.pending.remove(&id);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Offers

    async fn on_offers(
        &mut self,
        s: &mut Session,
        offers: Vec<mesos::Offer>,
    ) -> Result<(), DriverError> {
        self.metrics.add(
            "paas_offers_received_total",
            "Offers received.",
            &[],
            offers.len() as f64,
        );
        let all_ids = || offers.iter().map(|o| o.id.value.clone()).collect();
        let views: Vec<OfferView> = offers.iter().map(OfferView::from_offer).collect();
        let now = Timestamp::now();
        if !s.reconciling.is_empty() {
            self.seen.record::<launch::NodeKey>(&views, &[], &now);
            return self
                .decline(s, all_ids(), self.cfg.busy_refuse.as_secs_f64())
                .await;
        }
        s.offers_seen = true;
        let (clusters, backoff) = self.pending_clusters().await?;
        // Offers must come back when a backoff ends, not after the idle filter.
        let idle_refuse = backoff.map_or(self.cfg.idle_refuse.as_secs_f64(), |b| {
            b.as_secs_f64()
                .clamp(0.5, self.cfg.idle_refuse.as_secs_f64())
        });
        let gangs = launch::gangs(&clusters);
        if gangs.is_empty() {
            self.seen.record::<launch::NodeKey>(&views, &[], &now);
            self.decline(s, all_ids(), idle_refuse).await?;
            return self.revive_or_suppress(s).await;
        }
        // Each cluster's queued nodes all together or not at all: a cluster that does not
        // fit holds nothing, so two that do not fit together cannot starve each other.
        let plan = offers::evaluate_gangs(&views, &gangs, &self.cfg.executor);
        self.seen.record(&views, &plan.accepts, &now);

        // 1. Persist every placement before any ACCEPT.
        let recorded = self
            .persist_placements(launch::placements(&plan.accepts, &offers))
            .await?;
        // Everything placed: clusters with no queued node leave the pending set.
        let placed: Vec<ClusterId> = if plan.unplaced.is_empty() {
            recorded
                .iter()
                .filter(|(_, c)| {
                    !c.nodes
                        .iter()
                        .any(|n| n.observed.status == NodeStatus::Queued)
                })
                .map(|(id, _)| *id)
                .collect()
        } else {
            Vec::new()
        };
        // 2. One ACCEPT per agent/role with the launches whose records were written, built
        //    and sent off the loop.
        self.accept(s, plan.accepts, offers, recorded);
        // 3. Tell every waiting node why it waits.
        for u in &plan.unplaced {
            tracing::debug!(cluster_id = %u.key.cluster, node = %u.key.node, reason = %u.reason, "node waits for resources");
        }
        self.persist_waiting(launch::waiting(&plan.unplaced))
            .await?;

        let refuse = if plan.unplaced.is_empty() {
            idle_refuse
        } else {
            self.cfg.busy_refuse.as_secs_f64()
        };
        self.decline(s, plan.declines, refuse).await?;
        for id in placed {
            self.pending.remove(&id);
        }
        self.revive_or_suppress(s).await
    }

    /// The pending clusters to place now, oldest first (launch order), and how long until
    /// the first backoff of the others ends; the clusters that no longer want placement
    /// leave the pending set. One store call reads them all.
    async fn pending_clusters(
        &mut self,
    ) -> Result<(Vec<Arc<Cluster>>, Option<Duration>), DriverError> {
        let mut clusters = Vec::with_capacity(self.pending.len());
        let now = Timestamp::now();
        let now_ms = now.millis().unwrap_or(0);
        let mut backoff: Option<Duration> = None;
        let ids: Vec<ClusterId> = self.pending.iter().copied().collect();
        let read = self
            .blocking(move |st| {
                ids.into_iter()
                    .map(|id| Ok((id, st.cluster_shared(id)?)))
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .await?;
        for (id, c) in read {
            match c {
                // A replaced node waiting for its backoff keeps its cluster pending (and
                // offers coming) until a later round.
                Some(c) if launch::wants_placement(&c) && c.backing_off(&now) => {
                    let ends = c
                        .nodes
                        .iter()
                        .filter_map(|n| n.observed.not_before.as_ref()?.millis());
                    if let Some(left) = ends.map(|t| t.saturating_sub(now_ms)).min() {
                        let left = Duration::from_millis(left);
                        backoff = Some(backoff.map_or(left, |b| b.min(left)));
                    }
                }
                Some(c) if launch::wants_placement(&c) => clusters.push(c),
                _ => {
                    self.pending.remove(&id);
                }
            }
        }
        // Stable: equal timestamps keep the id order of the pending set.
        clusters.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok((clusters, backoff))
    }

    /// Writes the placements of a round, every cluster in one [`Store::update_clusters`]
    /// (one flush), and returns the clusters as recorded: only what is in there may be
    /// launched. A cluster deleted meanwhile is left out.
    async fn persist_placements(
        &self,
        per_cluster: BTreeMap<ClusterId, Vec<launch::Placed>>,
    ) -> Result<HashMap<ClusterId, Cluster>, DriverError> {
        let now = Timestamp::now();
        let (written, pending) = self
            .blocking(move |st| {
                Ok(update_each(st, &per_cluster, |c, placed| {
                    launch::record_placements(c, placed, &now)
                }))
            })
            .await?;
        // Persisted before accepted.
        pending.on_disk().await?;
        let mut recorded = HashMap::with_capacity(written.len());
        for (id, r) in written {
            match r {
                // The ACCEPTs are built from the records (a copy: the commit shares it).
                Ok(c) => {
                    recorded.insert(id, Arc::unwrap_or_clone(c));
                }
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(recorded)
    }

    /// Writes why nodes wait, every cluster in one [`Store::update_clusters`].
    async fn persist_waiting(
        &self,
        per_cluster: BTreeMap<ClusterId, launch::Waiting>,
    ) -> Result<(), DriverError> {
        if per_cluster.is_empty() {
            return Ok(());
        }
        let now = Timestamp::now();
        let (written, pending) = self
            .blocking(move |st| {
                Ok(update_each(st, &per_cluster, |c, waiting| {
                    launch::record_waiting(c, waiting, &now)
                }))
            })
            .await?;
        pending.on_disk().await?;
        for (_, r) in written {
            match r {
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Builds and sends the ACCEPTs of a round off the event loop, so that the loop goes on
    /// with the updates while the master launches: a round of thousands of tasks takes
    /// hundreds of milliseconds to build and accept. The records are already written
    /// (persist-before-ACCEPT). Each call is built as it is sent, at most
    /// [`MAX_CALLS_IN_FLIGHT`] at once; how they went comes back to
    /// [`Driver::on_accepted`].
    fn accept(
        &self,
        s: &mut Session,
        plan: Vec<offers::Accept<launch::NodeKey>>,
        offers: Vec<mesos::Offer>,
        recorded: HashMap<ClusterId, Cluster>,
    ) {
        if plan.is_empty() {
            return;
        }
        // invariant: offers come only after SUBSCRIBED, which sets the framework id.
        let Some(framework_id) = s.framework_id.clone() else {
            return;
        };
        // What the launches leave of the offers is filtered.
        s.filtered = true;
        let refuse = self.cfg.busy_refuse.as_secs_f64();
        let caller = Caller {
            transport: self.transport.clone(),
            leader: s.leader.clone(),
            stream_id: s.stream_id.clone(),
            framework_id,
        };
        let tpl = self.tpl.clone();
        let report = s.accepted.clone();
        s.accepting.spawn(async move {
            let caller = &caller;
            let sent: Vec<Sent> = futures_util::stream::iter(launch::accepts(
                plan, &offers, &recorded, &tpl,
            ))
            .map(|a| async move {
                for u in &a.unbuilt {
                    tracing::error!(cluster_id = %u.key.cluster, node = %u.key.node, agent_id = %a.agent_id, error = %u.error, "cannot build the task; node stays staging until reconciled");
                }
                if a.tasks.is_empty() {
                    return Sent::Unused(a.offer_ids);
                }
                // One line per ACCEPT at info, one per task at debug: at thousands of
                // launches a second, a line per task costs more than the launch.
                tracing::info!(agent_id = %a.agent_id, tasks = a.tasks.len(), offers = a.offer_ids.len(), "launching");
                for l in &a.tasks {
                    tracing::debug!(cluster_id = %l.key.cluster, node = %l.key.node, task_id = %l.task_id, agent_id = %a.agent_id, "launching");
                }
                let launched = Launched {
                    offer_ids: a.offer_ids.clone(),
                    tasks: a
                        .tasks
                        .iter()
                        .map(|l| (l.task_id.clone(), AgentId::new(a.agent_id.clone())))
                        .collect(),
                };
                let body = a.encode_call(caller.framework_id.clone(), refuse);
                let ok = caller.send(call::Type::Accept, Bytes::from(body)).await;
                Sent::Accept(launched, ok)
            })
            .buffer_unordered(MAX_CALLS_IN_FLIGHT)
            .collect()
            .await;
            // The session (and its receiver) may be gone: then so are its offers.
            let _ = report.send(sent);
        });
    }

    /// How a round's ACCEPTs went: offers that launch nothing are declined in one call,
    /// and a call that may not have reached the master has its tasks reconciled and its
    /// offers declined. Had the master taken it, that DECLINE names offers already used,
    /// which a master ignores; had it not, the offers would otherwise stay outstanding, their
    /// agents' resources held by nobody, since the master does not time offers out.
    async fn on_accepted(&mut self, s: &mut Session, sent: Vec<Sent>) -> Result<(), DriverError> {
        // Finished rounds leave the set.
        while s.accepting.try_join_next().is_some() {}
        let mut unused = Vec::new();
        let mut lost = Vec::new();
        for outcome in sent {
            match outcome {
                Sent::Unused(offer_ids) => unused.extend(offer_ids),
                Sent::Accept(launched, true) => {
                    self.metrics.add(
                        "paas_offers_used_total",
                        "Offers accepted.",
                        &[],
                        launched.offer_ids.len() as f64,
                    );
                    self.metrics.add(
                        "paas_tasks_launched_total",
                        "Tasks launched.",
                        &[],
                        launched.tasks.len() as f64,
                    );
                }
                Sent::Accept(launched, false) => {
                    // The launch may or may not have reached the master: ask about the tasks.
                    for (t, a) in launched.tasks {
                        s.reconciling.entry(t).or_insert(Some(a));
                    }
                    lost.extend(launched.offer_ids);
                    self.metrics.add(
                        "paas_accepts_failed_total",
                        "ACCEPT calls that failed: their tasks are reconciled, their offers declined.",
                        &[],
                        1.0,
                    );
                }
            }
        }
        self.decline(s, unused, self.cfg.busy_refuse.as_secs_f64())
            .await?;
        if !lost.is_empty() {
            // No filter: the lost tasks' nodes are placed again as soon as the master answers.
            self.decline(s, lost, 0.0).await?;
            self.reconcile(s, true).await?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------
    // Calls

    async fn decline(
        &self,
        s: &mut Session,
        offer_ids: Vec<String>,
        refuse: f64,
    ) -> Result<(), DriverError> {
        if offer_ids.is_empty() {
            return Ok(());
        }
        let n = offer_ids.len();
        let decline = call::Decline {
            offer_ids: offer_ids
                .into_iter()
                .map(|value| mesos::OfferId { value })
                .collect(),
            filters: Some(mesos::Filters {
                refuse_seconds: Some(refuse),
            }),
        };
        if refuse > 0.0 {
            s.filtered = true;
        }
        if self
            .send(s, call::Type::Decline, |c| c.decline = Some(decline))
            .await
        {
            self.metrics.add(
                "paas_offers_declined_total",
                "Offers declined.",
                &[],
                n as f64,
            );
        }
        Ok(())
    }

    /// A cluster wants placement; `new` when it just joined the pending set. Offers come
    /// back at once: a REVIVE when they are suppressed, and also when a round filtered some
    /// since the last REVIVE (those resources would otherwise wait out the filter, up to
    /// [`SchedulerConfig::busy_refuse`] or [`SchedulerConfig::idle_refuse`]).
    async fn offers_wanted(&mut self, s: &mut Session, new: bool) -> Result<(), DriverError> {
        if s.suppressed {
            return self.revive_or_suppress(s).await;
        }
        if new && s.filtered && s.reconciling.is_empty() {
            self.revive(s).await;
        }
        Ok(())
    }

    /// Sends REVIVE: offers resume and every filter of ours is cleared.
    async fn revive(&mut self, s: &mut Session) {
        if self
            .send(s, call::Type::Revive, |c| {
                c.revive = Some(call::Revive::default())
            })
            .await
        {
            if s.suppressed {
                tracing::info!(pending_clusters = self.pending.len(), "revived offers");
            } else {
                tracing::debug!(
                    pending_clusters = self.pending.len(),
                    "revived offers: a launch is pending and the last round filtered offers"
                );
            }
            s.suppressed = false;
            s.filtered = false;
        }
    }

    /// SUPPRESS when nothing waits for resources, REVIVE when something does.
    async fn revive_or_suppress(&mut self, s: &mut Session) -> Result<(), DriverError> {
        let want_offers = !self.pending.is_empty() && s.reconciling.is_empty();
        if want_offers && s.suppressed {
            self.revive(s).await;
        } else if !want_offers
            && !s.suppressed
            && s.offers_seen
            && s.reconciling.is_empty()
            && self
                .send(s, call::Type::Suppress, |c| {
                    c.suppress = Some(call::Suppress::default())
                })
                .await
        {
            tracing::debug!("suppressed offers: nothing pending");
            s.suppressed = true;
        }
        let suppressed = s.suppressed;
        self.status.send_modify(|st| st.suppressed = suppressed);
        Ok(())
    }

    /// Explicit (the tasks awaiting an answer) or implicit (empty list) reconciliation.
    async fn reconcile(&self, s: &mut Session, explicit: bool) -> Result<(), DriverError> {
        // In task id order, so one cluster's tasks are next to each other: the master
        // answers in the order asked (Mesos and mesos-local alike), and the event loop then
        // applies a cluster's answers together, reading each cluster once per batch
        // instead of once per node.
        let tasks = if explicit {
            let mut tasks: Vec<(String, Option<&AgentId>)> = s
                .reconciling
                .iter()
                .map(|(t, a)| (t.to_string(), a.as_ref()))
                .collect();
            tasks.sort_unstable();
            tasks
                .into_iter()
                .map(|(t, a)| call::reconcile::Task {
                    task_id: mesos::TaskId::from(t),
                    agent_id: a.map(|a| mesos::AgentId::from(a.as_str())),
                })
                .collect()
        } else {
            Vec::new()
        };
        s.reconcile_sent = Instant::now();
        let n = s.reconciling.len();
        self.send(s, call::Type::Reconcile, |c| {
            c.reconcile = Some(call::Reconcile { tasks })
        })
        .await;
        tracing::debug!(explicit, tasks = n, "reconcile sent");
        Ok(())
    }

    /// Kills what destroyed and failed clusters still run: the repair of lost KILLs, and of
    /// what failed before a restart of ours. Reads only the [`SWEPT`] statuses.
    async fn kill_sweep(&mut self, s: &Session) -> Result<(), DriverError> {
        let targets = self
            .blocking(|st| {
                let mut out = Vec::new();
                registry::each_in_statuses(st, SWEPT, |c| {
                    if let Some(kind) = sweep(&c) {
                        out.push((kind, c));
                    }
                })?;
                Ok(out)
            })
            .await?;
        // Rebuilt from the store: a cluster gone meanwhile leaves no entry behind.
        self.destroying.clear();
        for (kind, c) in &targets {
            match kind {
                Sweep::Destroy => {
                    if c.has_tasks() {
                        self.destroying.insert(c.id);
                    }
                    self.kill_or_defer(s, c).await;
                }
                Sweep::Failed => self.kill_cluster(s, c).await,
            }
        }
        Ok(())
    }

    /// Kills a destroyed cluster's tasks, unless its `SCRIPT stop` is still owed: the script
    /// may need the nodes, so the kills wait for it (best effort, bounded by
    /// [`STOP_SCRIPT_GRACE`]).
    async fn kill_or_defer(&mut self, s: &Session, c: &Cluster) {
        let owed = c.configure.as_ref().is_some_and(|p| p.stop_owed());
        if owed && c.has_tasks() {
            let deadline = *self
                .deferred_kills
                .entry(c.id)
                .or_insert_with(|| Instant::now() + STOP_SCRIPT_GRACE);
            if Instant::now() < deadline {
                tracing::debug!(cluster_id = %c.id, "kills wait for SCRIPT stop");
                return;
            }
            tracing::warn!(cluster_id = %c.id, "SCRIPT stop did not finish in time; killing the nodes anyway");
        }
        self.deferred_kills.remove(&c.id);
        self.kill_cluster(s, c).await;
    }

    async fn kill_cluster(&self, s: &Session, c: &Cluster) {
        let nodes = c.nodes.iter().chain(c.retiring.iter().map(|r| &r.node));
        for n in nodes.filter(|n| n.observed.status.has_task()) {
            if let Some(t) = &n.observed.task_id {
                tracing::info!(cluster_id = %c.id, node = %n.name, task_id = %t, agent_id = ?n.observed.agent_id.as_ref().map(AgentId::as_str), "killing");
                self.kill(s, t, n.observed.agent_id.as_ref()).await;
            }
        }
    }

    async fn kill(&self, s: &Session, task_id: &TaskId, agent_id: Option<&AgentId>) {
        let kill = call::Kill {
            task_id: mesos::TaskId::from(task_id.to_string()),
            agent_id: agent_id
                .filter(|a| !a.as_str().is_empty())
                .map(|a| mesos::AgentId::from(a.as_str())),
            kill_policy: None,
        };
        if self
            .send(s, call::Type::Kill, |c| c.kill = Some(kill))
            .await
        {
            self.metrics
                .inc("paas_tasks_killed_total", "KILL calls sent.", &[]);
        }
    }

    /// Sends one call; failures are logged (calls are at-most-once anyway: reconciliation
    /// and the periodic sweeps repair what was lost). Returns whether Mesos accepted it.
    async fn send(&self, s: &Session, ty: call::Type, fill: impl FnOnce(&mut Call)) -> bool {
        let Some(fid) = s.framework_id.clone() else {
            return false;
        };
        post(&self.transport, &s.leader, &s.stream_id, fid, ty, fill).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, DriverError> {
        Ok(registry::call(&self.store, f).await?)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

const CLOSED: &str = "the master closed the event stream";

/// What one ACCEPT launches: how many offers it uses and its tasks, reconciled if the call
/// may not have reached the master.
struct Launched {
    offer_ids: Vec<String>,
    tasks: Vec<(TaskId, AgentId)>,
}

/// How one ACCEPT of a round went.
enum Sent {
    /// Nothing of the pool was launched: its offers are to be declined.
    Unused(Vec<String>),
    /// The call was sent; `false` if it may not have reached the master.
    Accept(Launched, bool),
}

/// Makes calls of one session from off the event loop.
struct Caller {
    transport: Transport,
    leader: Endpoint,
    stream_id: StreamId,
    /// Goes into each call the caller encodes.
    framework_id: mesos::FrameworkId,
}

impl Caller {
    /// Sends one call of type `ty`, encoded by the caller; whether the master took it.
    async fn send(&self, ty: call::Type, body: Bytes) -> bool {
        post_encoded(&self.transport, &self.leader, &self.stream_id, ty, body).await
    }
}

/// Sends one call of framework `fid` on the session of `stream_id`; whether the master took
/// it (a failure is logged).
async fn post(
    transport: &Transport,
    leader: &Endpoint,
    stream_id: &StreamId,
    fid: mesos::FrameworkId,
    ty: call::Type,
    fill: impl FnOnce(&mut Call),
) -> bool {
    let mut c = Call {
        framework_id: Some(fid),
        r#type: Some(ty as i32),
        ..Default::default()
    };
    fill(&mut c);
    post_encoded(
        transport,
        leader,
        stream_id,
        ty,
        Bytes::from(c.encode_to_vec()),
    )
    .await
}

/// [`post`] of a call encoded by the caller, of type `ty` (named in the log).
async fn post_encoded(
    transport: &Transport,
    leader: &Endpoint,
    stream_id: &StreamId,
    ty: call::Type,
    body: Bytes,
) -> bool {
    match transport
        .call(leader, stream_id, body, ContentType::Protobuf)
        .await
    {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(call = ty.as_str_name(), error = %e, "mesos call failed");
            false
        }
    }
}

/// One status as the batch sees it before the write.
struct Seen {
    state: mesos::TaskState,
    /// `None` for a task id that is not ours: acknowledged, nothing written.
    ours: Option<Observed>,
}

/// What a committed cluster is to the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interest {
    /// Nothing to do (running as it should, or our own status write).
    None,
    /// Its tasks should go.
    Destroyed,
    /// It has queued nodes to place, drained nodes to kill, or both.
    Active { placement: bool, retiring: bool },
}

/// Whether a committed cluster concerns the scheduler: pure and cheap, since every commit of
/// the store goes through it.
fn interest(c: &Cluster) -> Interest {
    if c.desired == Desired::Destroyed {
        return Interest::Destroyed;
    }
    let placement = launch::wants_placement(c);
    let retiring = !c.retiring.is_empty();
    if placement || retiring {
        Interest::Active {
            placement,
            retiring,
        }
    } else {
        Interest::None
    }
}

/// What the pass after SUBSCRIBED takes from each live cluster: whether it wants placement
/// or has nodes retiring, and its tasks to reconcile. A `destroyed` cluster has no task (it
/// gets there only once every task ended, and a terminal task stays terminal) and wants
/// nothing, so the pass reads every status but that one ([`live`]).
#[derive(Debug, Default)]
struct Known {
    pending: BTreeSet<ClusterId>,
    retiring: BTreeSet<ClusterId>,
    tasks: HashMap<TaskId, Option<AgentId>>,
}

impl Known {
    fn add(&mut self, c: &Cluster) {
        if launch::wants_placement(c) {
            self.pending.insert(c.id);
        }
        if !c.retiring.is_empty() {
            self.retiring.insert(c.id);
        }
        let nodes = c.nodes.iter().chain(c.retiring.iter().map(|r| &r.node));
        for n in nodes.filter(|n| n.observed.status.has_task()) {
            if let Some(t) = &n.observed.task_id {
                self.tasks.insert(t.clone(), n.observed.agent_id.clone());
            }
        }
    }
}

/// Every status but `destroyed`: what the pass after SUBSCRIBED and a rescan read.
fn live() -> impl Iterator<Item = ClusterStatus> {
    ClusterStatus::ALL.into_iter().filter(|s| s.is_live())
}

/// The statuses the kill sweep reads: [`sweep`] finds nothing in any other.
const SWEPT: [ClusterStatus; 2] = [ClusterStatus::Destroying, ClusterStatus::Failed];

/// Why the kill sweep kills a cluster's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sweep {
    /// Being destroyed (its kills may wait for `SCRIPT stop`).
    Destroy,
    /// Failed: a failed cluster holds nothing.
    Failed,
}

/// What the kill sweep does about `c`, if anything.
fn sweep(c: &Cluster) -> Option<Sweep> {
    if c.desired == Desired::Destroyed && c.status == ClusterStatus::Destroying {
        Some(Sweep::Destroy)
    } else if c.status == ClusterStatus::Failed && c.has_tasks() {
        Some(Sweep::Failed)
    } else {
        None
    }
}

/// `first` and every further event that already arrived (up to [`MAX_BATCH`] in all),
/// decoded, and how the stream ended if it did meanwhile (`Some(Ok)`: closed; `Some(Err)`:
/// failed). Never waits.
fn take_buffered(
    records: &mut RecordStream,
    first: Bytes,
) -> (Vec<Event>, Option<Result<(), TransportError>>) {
    let mut events = Vec::new();
    let mut next = Some(first);
    let mut end = None;
    let mut taken = 0;
    while let Some(bytes) = next.take() {
        taken += 1;
        match Event::decode(bytes) {
            Ok(ev) => events.push(ev),
            Err(e) => tracing::warn!(error = %e, "undecodable event from the master; skipped"),
        }
        if taken >= MAX_BATCH {
            break;
        }
        match records.try_next_record() {
            None => {}
            Some(Some(Ok(b))) => next = Some(b),
            Some(Some(Err(e))) => end = Some(Err(e)),
            Some(None) => end = Some(Ok(())),
        }
    }
    (events, end)
}

/// The clusters of a run of updates in order of first appearance, each with the indices of
/// its updates in arrival order: one read-modify-write per cluster applies them in order.
fn group_by_cluster(ids: impl Iterator<Item = ClusterId>) -> Vec<(ClusterId, Vec<usize>)> {
    let mut groups: Vec<(ClusterId, Vec<usize>)> = Vec::new();
    let mut at: HashMap<ClusterId, usize> = HashMap::new();
    for (i, id) in ids.enumerate() {
        let g = *at.entry(id).or_insert_with(|| {
            groups.push((id, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    groups
}

/// A cluster as one entry of a batch wrote it (or kept it), or why not.
type Written = Result<Arc<Cluster>, StoreError>;

/// Applies `f` with each cluster's entry of `per_cluster` in one
/// [`Store::update_clusters_pending`] (one flush for all): each cluster's result, in the
/// map's order, and the flush, which the caller awaits before it counts on any of them.
fn update_each<T>(
    st: &dyn Store,
    per_cluster: &BTreeMap<ClusterId, T>,
    f: impl Fn(&mut Cluster, &T) -> Update,
) -> (Vec<(ClusterId, Written)>, Pending) {
    let mut fns: Vec<_> = per_cluster
        .values()
        .map(|v| {
            let f = &f;
            move |c: &mut Cluster| -> Result<Update, String> { Ok(f(c, v)) }
        })
        .collect();
    let mut batch: Vec<BatchUpdate<'_>> = per_cluster
        .keys()
        .zip(fns.iter_mut())
        .map(|(id, f)| {
            (
                *id,
                f as &mut dyn FnMut(&mut Cluster) -> Result<Update, String>,
            )
        })
        .collect();
    let (results, pending) = st.update_clusters_pending(&mut batch);
    (per_cluster.keys().copied().zip(results).collect(), pending)
}

/// Applies `updates` (cluster, node, observation) with one
/// [`Store::update_clusters_pending`]: per update, the cluster as written (or why not) and
/// what [`apply_update`] decided (in its last run; `None` when it never ran), and the flush,
/// which the caller awaits before it counts on any of them.
fn apply_batch(
    st: &dyn Store,
    updates: &[(ClusterId, String, Observed)],
    groups: &[(ClusterId, Vec<usize>)],
    now: &Timestamp,
) -> (Vec<Written>, Vec<Option<Applied>>, Pending) {
    let mut decided: Vec<Vec<Applied>> = vec![Vec::new(); groups.len()];
    let mut fns: Vec<_> = groups
        .iter()
        .zip(decided.iter_mut())
        .map(|((_, idx), out)| {
            move |c: &mut Cluster| -> Result<Update, String> {
                // It may run again on a concurrent change: only its last run counts.
                out.clear();
                let mut write = false;
                for &i in idx {
                    let (_, node, o) = &updates[i];
                    let applied = apply_update(c, node, o, now);
                    write |= matches!(
                        applied,
                        Applied::Changed | Applied::Requeued | Applied::Replaced
                    );
                    out.push(applied);
                }
                Ok(if write { Update::Write } else { Update::Keep })
            }
        })
        .collect();
    let mut batch: Vec<BatchUpdate<'_>> = groups
        .iter()
        .zip(fns.iter_mut())
        .map(|((id, _), f)| {
            (
                *id,
                f as &mut dyn FnMut(&mut Cluster) -> Result<Update, String>,
            )
        })
        .collect();
    let (results, pending) = st.update_clusters_pending(&mut batch);
    drop(batch);
    drop(fns);
    let mut per_update: Vec<Written> = Vec::with_capacity(updates.len());
    let mut applied: Vec<Option<Applied>> = vec![None; updates.len()];
    let mut slot: Vec<Option<Written>> = (0..updates.len()).map(|_| None).collect();
    for (((_, idx), r), out) in groups.iter().zip(results).zip(decided) {
        for (k, &i) in idx.iter().enumerate() {
            applied[i] = out.get(k).cloned();
            slot[i] = Some(match &r {
                Ok(c) => Ok(Arc::clone(c)),
                Err(e) => Err(clone_store_error(e)),
            });
        }
    }
    for r in slot {
        // invariant: every update belongs to exactly one group, so every slot was filled.
        per_update.push(r.unwrap_or_else(|| Err(StoreError::Rejected("not applied".into()))));
    }
    (per_update, applied, pending)
}

/// A copy of a store error for each update of a cluster: the kind is what the driver acts
/// on; a cause that cannot be copied is kept as text.
fn clone_store_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound(what) => StoreError::NotFound(what.clone()),
        StoreError::AlreadyExists(what) => StoreError::AlreadyExists(what.clone()),
        StoreError::Rejected(why) => StoreError::Rejected(why.clone()),
        other => StoreError::Rejected(error_chain(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Name, NodeStatus};
    use crate::registry::MemoryStore;

    fn ts() -> Timestamp {
        Timestamp("2026-01-01T00:00:00.000Z".into())
    }

    /// A `scheduling` cluster of `n` nodes, each staging its attempt 1.
    fn staging(n: usize) -> Cluster {
        super::super::task_updates::staging_cluster(ClusterId::generate(), n)
    }

    fn running(c: &Cluster, node: usize) -> (ClusterId, String, Observed) {
        let n = &c.nodes[node];
        let obs = Observed {
            task_id: n.observed.task_id.clone().unwrap(),
            state: mesos::TaskState::TaskRunning,
            reason: None,
            message: None,
            agent_id: Some(AgentId::new("a1")),
            agent_cert_sha256: None,
        };
        (c.id, n.name.to_string(), obs)
    }

    /// The relay passes on only what the loop acts on, and keeps up with a flood of the
    /// rest while the loop reads nothing, where a subscriber that read nothing falls behind.
    #[tokio::test]
    async fn the_relay_passes_on_what_the_loop_acts_on_and_keeps_up_with_the_rest() {
        use broadcast::error::RecvError;
        let (tx, rx) = broadcast::channel(16);
        let mut plain = tx.subscribe();
        let tracker = tokio_util::task::TaskTracker::new();
        let mut relayed = relay_commits(rx, CancellationToken::new(), &tracker);
        let quiet = Arc::new(staging(1));
        assert_eq!(interest(&quiet), Interest::None);
        let mut wants = staging(1);
        wants.nodes[0].observed.status = NodeStatus::Queued;
        assert_ne!(interest(&wants), Interest::None);
        let wants = Arc::new(wants);
        for i in 0..1000 {
            let c = if i == 500 { &wants } else { &quiet };
            tx.send(Commit::Cluster(Arc::clone(c))).unwrap();
            // The relay runs meanwhile, as it does beside the loop.
            tokio::task::yield_now().await;
        }
        let gone = ClusterId::generate();
        tx.send(Commit::Purged(gone)).unwrap();
        drop(tx);
        match relayed.recv().await {
            Some(Ok(Commit::Cluster(c))) => assert_eq!(c.id, wants.id),
            other => panic!("expected the cluster that wants placement, got {other:?}"),
        }
        assert!(matches!(relayed.recv().await, Some(Ok(Commit::Purged(id))) if id == gone));
        assert!(matches!(relayed.recv().await, Some(Err(RecvError::Closed))));
        assert!(
            relayed.recv().await.is_none(),
            "the relay ends with the store's channel"
        );
        assert!(matches!(plain.recv().await, Err(RecvError::Lagged(_))));
    }

    #[test]
    fn updates_group_by_cluster_in_order_of_first_appearance() {
        let (a, b) = (ClusterId::generate(), ClusterId::generate());
        assert_eq!(
            group_by_cluster([a, b, a, a, b].into_iter()),
            [(a, vec![0, 2, 3]), (b, vec![1, 4])]
        );
        assert!(group_by_cluster(std::iter::empty()).is_empty());
    }

    /// A memory store with the product of [`staging`]'s clusters.
    fn product_store() -> MemoryStore {
        let store = MemoryStore::new();
        add_product(&store);
        store
    }

    fn add_product(store: &dyn Store) {
        store
            .create_product(&crate::domain::Product::new(
                Name::parse("p").unwrap(),
                Name::parse("1").unwrap(),
                ts(),
            ))
            .unwrap();
    }

    /// Runs `test` on a memory store and on a sled store (whose batches become durable, and
    /// are announced, only once their flush ends), each with product `p/1`.
    fn on_both_stores(test: impl Fn(&dyn Store)) {
        test(&product_store());
        let dir = tempfile::tempdir().unwrap();
        let sled = crate::registry::SledStore::open(dir.path()).unwrap();
        add_product(&sled);
        test(&sled);
    }

    /// Waits for a batch's flush.
    fn flushed(pending: Pending) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(pending.on_disk())
            .unwrap();
    }

    #[test]
    fn a_batch_applies_every_update_of_a_cluster_in_one_write() {
        on_both_stores(a_batch_applies_every_update_of_a_cluster_in_one_write_on);
    }

    fn a_batch_applies_every_update_of_a_cluster_in_one_write_on(store: &dyn Store) {
        let (c1, c2) = (staging(2), staging(1));
        store.create_cluster(c1.clone()).unwrap();
        store.create_cluster(c2.clone()).unwrap();
        let mut commits = store.subscribe();
        let gone = staging(1);
        let updates = vec![
            running(&c1, 0),
            running(&c2, 0),
            running(&gone, 0),
            running(&c1, 1),
            // A duplicate of the first: ignored, in the same write.
            running(&c1, 0),
        ];
        let groups = group_by_cluster(updates.iter().map(|u| u.0));
        let (results, applied, pending) = apply_batch(store, &updates, &groups, &ts());
        flushed(pending);
        assert_eq!(
            applied,
            [
                Some(Applied::Changed),
                Some(Applied::Changed),
                None,
                Some(Applied::Changed),
                Some(Applied::Ignored("duplicate")),
            ]
        );
        // Every update of c1 sees the cluster after all of them: every node runs.
        for i in [0, 3, 4] {
            let c = results[i].as_ref().unwrap();
            assert_eq!(c.status, ClusterStatus::Scheduled);
        }
        assert_eq!(
            results[1].as_ref().unwrap().status,
            ClusterStatus::Scheduled
        );
        assert!(matches!(results[2], Err(StoreError::NotFound(_))));
        // One commit per cluster written, not one per update.
        let mut written = Vec::new();
        while let Ok(Commit::Cluster(c)) = commits.try_recv() {
            written.push(c.id);
        }
        assert_eq!(written, [c1.id, c2.id]);
        assert_eq!(
            store.cluster(c1.id).unwrap().unwrap().status,
            ClusterStatus::Scheduled
        );
    }

    /// The kill sweep reads only the `SWEPT` statuses: in every other one, whatever the
    /// cluster wants and its nodes do, the sweep would do nothing.
    #[test]
    fn the_kill_sweep_skips_only_statuses_without_work() {
        for status in ClusterStatus::ALL {
            for desired in [Desired::Running, Desired::Destroyed] {
                for node in [
                    NodeStatus::Running,
                    NodeStatus::Staging,
                    NodeStatus::Killing,
                ] {
                    let mut c = staging(2);
                    (c.status, c.desired) = (status, desired);
                    for n in &mut c.nodes {
                        n.observed.status = node;
                    }
                    if !SWEPT.contains(&status) {
                        assert_eq!(sweep(&c), None, "{status} {desired:?} nodes {node:?}");
                    }
                }
            }
        }
        let mut c = staging(1);
        (c.status, c.desired) = (ClusterStatus::Destroying, Desired::Destroyed);
        assert_eq!(sweep(&c), Some(Sweep::Destroy));
        c.status = ClusterStatus::Failed;
        assert_eq!(sweep(&c), Some(Sweep::Failed));
        c.nodes[0].observed.status = NodeStatus::Killed;
        assert_eq!(sweep(&c), None, "a failed cluster with no task left");
    }

    /// The pass after SUBSCRIBED (and a rescan) skips `destroyed`: a cluster gets there only
    /// once its last task ended, and no later update gives it a task again, so it has nothing
    /// to reconcile, place, kill or retire.
    #[test]
    fn a_destroyed_cluster_has_nothing_for_the_pass_after_subscribed() {
        assert_eq!(
            live().collect::<Vec<_>>(),
            ClusterStatus::ALL
                .into_iter()
                .filter(|s| *s != ClusterStatus::Destroyed)
                .collect::<Vec<_>>()
        );
        let mut c = staging(2);
        let (n0, n1) = (running(&c, 0), running(&c, 1));
        for (_, node, o) in [&n0, &n1] {
            apply_update(&mut c, node, o, &ts());
        }
        let mut known = Known::default();
        known.add(&c);
        assert_eq!(
            known.tasks.len(),
            2,
            "a running cluster's tasks are reconciled"
        );

        c.desired = Desired::Destroyed;
        c.apply(
            crate::domain::lifecycle::ClusterEvent::DestroyRequested,
            None,
            ts(),
        )
        .unwrap();
        for (_, node, o) in [&n0, &n1] {
            let killed = Observed {
                state: mesos::TaskState::TaskKilled,
                ..o.clone()
            };
            apply_update(&mut c, node, &killed, &ts());
        }
        assert_eq!(c.status, ClusterStatus::Destroyed);
        // A RUNNING that trails the kill (a reconciliation answer) changes nothing.
        apply_update(&mut c, &n0.1, &n0.2, &ts());
        let mut known = Known::default();
        known.add(&c);
        assert!(known.tasks.is_empty() && known.pending.is_empty() && known.retiring.is_empty());
        assert_eq!(sweep(&c), None);
    }

    #[test]
    fn update_each_writes_every_cluster_of_a_round_in_one_batch() {
        on_both_stores(update_each_writes_every_cluster_of_a_round_in_one_batch_on);
    }

    fn update_each_writes_every_cluster_of_a_round_in_one_batch_on(store: &dyn Store) {
        let (a, b, gone) = (staging(1), staging(2), staging(1));
        store.create_cluster(a.clone()).unwrap();
        store.create_cluster(b.clone()).unwrap();
        let mut commits = store.subscribe();
        let per_cluster: BTreeMap<ClusterId, String> =
            [(a.id, "wait a"), (b.id, "keep"), (gone.id, "x")]
                .into_iter()
                .map(|(id, m)| (id, m.to_owned()))
                .collect();
        let (results, pending) = update_each(store, &per_cluster, |c, m| {
            if m == "keep" {
                return Update::Keep;
            }
            c.nodes[0].observed.message = Some(m.clone());
            Update::Write
        });
        flushed(pending);
        let by_id: HashMap<ClusterId, Written> = results.into_iter().collect();
        assert_eq!(
            by_id[&a.id].as_ref().unwrap().nodes[0]
                .observed
                .message
                .as_deref(),
            Some("wait a")
        );
        assert_eq!(
            **by_id[&b.id].as_ref().unwrap(),
            store.cluster(b.id).unwrap().unwrap()
        );
        assert!(matches!(by_id[&gone.id], Err(StoreError::NotFound(_))));
        let mut written = Vec::new();
        while let Ok(Commit::Cluster(c)) = commits.try_recv() {
            written.push(c.id);
        }
        assert_eq!(written, [a.id], "the kept cluster is not written");
    }

    #[test]
    fn only_clusters_with_work_for_the_scheduler_interest_it() {
        let mut c = staging(1);
        // Staging, nothing queued: the scheduler's own write, nothing to do.
        assert_eq!(interest(&c), Interest::None);
        c.nodes[0].observed.status = NodeStatus::Queued;
        assert_eq!(
            interest(&c),
            Interest::Active {
                placement: true,
                retiring: false
            }
        );
        c.desired = Desired::Destroyed;
        assert_eq!(interest(&c), Interest::Destroyed);
    }
}
