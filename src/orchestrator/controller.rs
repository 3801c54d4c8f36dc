//! The orchestrator's loop: which clusters to work on (the store's commit notifications, a
//! periodic scan as a safety net), one worker per cluster, and the execution of each
//! [`Action`] against the store and the nodes.
//!
//! Ordering rules:
//! - a step is marked `current` before it runs and `done` after it succeeded, each a
//!   compare-and-swap that first checks the cluster is still ours (still `configuring`, same
//!   node tasks, not being destroyed); a cluster that moved on is left alone, never failed;
//! - a cluster is failed by the worker that saw the step fail, with the step, node and output
//!   tail in the reason, and never for a store error (those are retried by the next scan).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::OrchestratorConfig;
use super::client::{AgentCallError, NodeClient, ServiceState};
use super::facts::{cluster_facts, render_argv, render_files};
use super::plan::{
    Action, FileChange, FollowUp, Step, StepKind, decide, digest, file_change, follow_up,
    fresh_progress, generation,
};
use super::script::{self, ScriptError, ScriptRun};
use crate::domain::lifecycle::ClusterEvent;
use crate::domain::template::Renderer;
use crate::domain::{
    Cluster, ClusterId, ClusterStatus, Desired, Node, Part, ScriptState, Service, Timestamp,
};
use crate::metrics::Metrics;
use crate::registry::{self, Commit, Store, StoreError, Update};

/// Why a worker stopped early. Step failures are not errors: they fail the cluster.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    #[error("store")]
    Store(#[from] StoreError),
    #[error("cancelled")]
    Cancelled,
}

/// How long a restarted service gets to stop before it is killed.
const RESTART_GRACE: Duration = Duration::from_secs(10);

/// Files a step pushed, to record: `(task id, path, content digest)`.
type Pushed = Vec<(String, String, String)>;

/// A step that failed: the cluster's reason is built from it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StepFailure {
    node: Option<String>,
    cause: String,
}

impl StepFailure {
    fn on(node: &Node, cause: impl Into<String>) -> Self {
        Self {
            node: Some(node.name.to_string()),
            cause: cause.into(),
        }
    }

    fn reason(&self, step: &str) -> String {
        match &self.node {
            Some(n) => format!("configure step {step} failed on node {n}: {}", self.cause),
            None => format!("configure step {step} failed: {}", self.cause),
        }
    }
}

/// What kind of worker runs for a cluster: configure workers are cancelled when the cluster
/// leaves the configure states; stop workers run to their end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerKind {
    Configure,
    Stop,
}

struct InFlight {
    kind: WorkerKind,
    cancel: CancellationToken,
}

/// The statuses in which [`decide`] may have work: the only ones the periodic scan reads.
const ACTIVE: [ClusterStatus; 6] = [
    ClusterStatus::Scheduled,
    ClusterStatus::Configuring,
    ClusterStatus::Configured,
    ClusterStatus::Healing,
    ClusterStatus::Updating,
    ClusterStatus::Destroying,
];

/// The controller; see the module docs.
pub struct Controller {
    cfg: OrchestratorConfig,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    renderer: Renderer,
    permits: Arc<Semaphore>,
}

impl Controller {
    pub(super) fn new(
        cfg: OrchestratorConfig,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(cfg.max_concurrent.max(1)));
        Self {
            cfg,
            store,
            metrics,
            shutdown,
            tracker,
            renderer: Renderer::files(),
            permits,
        }
    }

    /// Runs until shutdown. `commits` is subscribed before the first scan, so no commit
    /// falls between the scan and the notifications.
    pub(super) async fn run(self, commits: broadcast::Receiver<Commit>) {
        let this = Arc::new(self);
        let mut commits = Some(commits);
        let mut in_flight: HashMap<ClusterId, InFlight> = HashMap::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<ClusterId>();
        let mut tick = tokio::time::interval(this.cfg.scan_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        info!(api_url = %this.cfg.api_url, "orchestrator running");
        loop {
            let clusters: Vec<Cluster> = tokio::select! {
                () = this.shutdown.cancelled() => break,
                _ = tick.tick() => this.scan().await,
                r = next_commit(&mut commits) => match r {
                    // The committed record is the one to look at: no store read.
                    Ok(Commit::Cluster(c)) => {
                        this.consider(&c, &mut in_flight, &done_tx);
                        continue;
                    }
                    // A worker of a purged cluster finds it gone and stops by itself.
                    Ok(Commit::Purged(_)) => continue,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        debug!(missed, "commit notifications lagged; scanning now");
                        this.scan().await
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        warn!("the store's commit notifications ended; the periodic scan goes on");
                        commits = None;
                        continue;
                    }
                },
                Some(id) = done_rx.recv() => {
                    in_flight.remove(&id);
                    this.load(id).await
                }
            };
            for c in clusters {
                this.consider(&c, &mut in_flight, &done_tx);
            }
        }
        for w in in_flight.values() {
            w.cancel.cancel();
        }
        debug!("orchestrator stopped");
    }

    /// Every cluster, or none when the store cannot be read (the next scan retries).
    /// The safety net behind the commit notifications: every cluster in a status that
    /// [`decide`] may act on, read page by page through the store's status index, so that the
    /// clusters at rest (`ready`, `destroyed`, `failed`, …) cost nothing however many.
    async fn scan(&self) -> Vec<Cluster> {
        let found = self
            .blocking(|s| {
                let mut out = Vec::new();
                registry::each_in_statuses(s, ACTIVE, |c| out.push(Arc::unwrap_or_clone(c)))?;
                Ok(out)
            })
            .await;
        found.unwrap_or_else(|e| {
            warn!(error = %e, "orchestrator scan failed; retrying at the next one");
            Vec::new()
        })
    }

    async fn load(&self, id: ClusterId) -> Vec<Cluster> {
        match self.blocking(move |s| s.cluster(id)).await {
            Ok(c) => c.into_iter().collect(),
            Err(e) => {
                warn!(cluster_id = %id, error = %e, "cannot read the cluster; the next scan retries");
                Vec::new()
            }
        }
    }

    /// Starts a worker for `c` if it needs one, or cancels a configure worker whose cluster
    /// moved on (destroyed, a node lost, failed by the scheduler).
    fn consider(
        self: &Arc<Self>,
        c: &Cluster,
        in_flight: &mut HashMap<ClusterId, InFlight>,
        done: &mpsc::UnboundedSender<ClusterId>,
    ) {
        if let Some(w) = in_flight.get(&c.id) {
            let configuring = c.desired == Desired::Running
                && matches!(
                    c.status,
                    ClusterStatus::Scheduled
                        | ClusterStatus::Configuring
                        | ClusterStatus::Configured
                        | ClusterStatus::Healing
                        | ClusterStatus::Updating
                );
            if w.kind == WorkerKind::Configure && !configuring && !w.cancel.is_cancelled() {
                info!(cluster_id = %c.id, status = %c.status, "cluster left configuration; stopping its worker");
                w.cancel.cancel();
            }
            return;
        }
        // `true`: a cluster idle with a script is idle without one too (see `decide`).
        let kind = match decide(c, true) {
            Action::Idle => return,
            Action::StopScript => WorkerKind::Stop,
            _ => WorkerKind::Configure,
        };
        let cancel = self.shutdown.child_token();
        in_flight.insert(
            c.id,
            InFlight {
                kind,
                cancel: cancel.clone(),
            },
        );
        let this = self.clone();
        let done = done.clone();
        let id = c.id;
        self.tracker.spawn(async move {
            let permit = this.permits.clone().acquire_owned().await;
            if permit.is_ok() {
                match this.work(id, &cancel).await {
                    Ok(()) | Err(WorkError::Cancelled) => {}
                    Err(e) => {
                        warn!(cluster_id = %id, error = %e, "orchestrator worker stopped; the next scan retries");
                    }
                }
            }
            // The loop may be gone at shutdown; nothing to tell then.
            let _ = done.send(id);
        });
    }

    /// Reconciles one cluster until there is nothing more to do now.
    async fn work(&self, id: ClusterId, cancel: &CancellationToken) -> Result<(), WorkError> {
        let mut script: Option<Option<Vec<u8>>> = None;
        loop {
            if cancel.is_cancelled() {
                return Err(WorkError::Cancelled);
            }
            let Some(c) = self.blocking(move |s| s.cluster(id)).await? else {
                return Ok(());
            };
            if script.is_none() {
                let (p, v) = (c.product.clone(), c.version.clone());
                script = Some(
                    self.blocking(move |s| s.part(&p, &v, Part::Orchestrator))
                        .await?,
                );
            }
            let script_bytes = script.as_ref().and_then(Option::as_deref);
            let action = decide(&c, script_bytes.is_some());
            debug!(cluster_id = %id, ?action, "reconcile");
            match action {
                Action::Idle => return Ok(()),
                Action::Begin => self.begin(&c).await?,
                Action::Run(step) => self.run_step(&c, &step, script_bytes, cancel).await?,
                Action::Finish
                    if matches!(c.status, ClusterStatus::Healing | ClusterStatus::Updating) =>
                {
                    self.promote(&c, c.status, cancel).await?;
                }
                Action::Drain(node) => self.drain(&c, &node, script_bytes).await?,
                Action::StopServices(node) => self.stop_services(&c, &node).await?,
                Action::Roll(node) => self.roll(&c, &node).await?,
                Action::Finish => self.finish(&c).await?,
                Action::Promote => {
                    self.promote(&c, ClusterStatus::Configured, cancel).await?;
                }
                Action::StopScript => self.stop_script(&c, script_bytes).await?,
            }
        }
    }

    // ----- actions --------------------------------------------------------------------------

    async fn begin(&self, c: &Cluster) -> Result<(), WorkError> {
        let id = c.id;
        let c = self
            .update(id, |c| {
                let fresh = decide(c, true) == Action::Begin;
                if !fresh {
                    return Update::Keep;
                }
                match c.status {
                    ClusterStatus::Scheduled => {
                        let _ = c.apply(ClusterEvent::ConfigureStarted, None, Timestamp::now());
                    }
                    ClusterStatus::Healing | ClusterStatus::Updating => {
                        let why = "configuring again: every node runs".to_owned();
                        let _ =
                            c.apply(ClusterEvent::ConfigureStarted, Some(why), Timestamp::now());
                    }
                    _ => {}
                }
                c.configure = Some(fresh_progress(c, c.configure.as_ref()));
                Update::Write
            })
            .await?;
        info!(cluster_id = %id, status = %c.status, "configuring");
        self.log(id, "configuring: every node runs").await;
        Ok(())
    }

    async fn run_step(
        &self,
        c: &Cluster,
        step: &Step,
        script: Option<&[u8]>,
        cancel: &CancellationToken,
    ) -> Result<(), WorkError> {
        let key = step.key();
        let generation = generation(c);
        let is_script = step.kind == StepKind::Script;
        let (k, g) = (key.clone(), generation.clone());
        let marked = self
            .update(c.id, move |c| {
                if !still_configuring(c, &g) {
                    return Update::Keep;
                }
                let Some(p) = c.configure.as_mut() else {
                    return Update::Keep;
                };
                if p.current.as_deref() == Some(k.as_str())
                    && (!is_script || p.script != ScriptState::NotStarted)
                {
                    return Update::Keep;
                }
                p.current = Some(k.clone());
                if is_script {
                    p.script = p.script.max(ScriptState::Started);
                }
                Update::Write
            })
            .await?;
        if !still_configuring(&marked, &generation) {
            return Ok(());
        }
        info!(cluster_id = %c.id, step = %key, "configure step");
        let started = Instant::now();
        let result = if is_script {
            self.script_start(&marked, script.unwrap_or_default(), cancel)
                .await?
                .map(|()| Vec::new())
        } else {
            tokio::select! {
                r = self.node_step(&marked, step) => r,
                () = cancel.cancelled() => return Err(WorkError::Cancelled),
            }
        };
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        self.metrics.inc(
            "paas_orchestrator_steps_total",
            "Configure steps run, by kind and outcome.",
            &[
                ("kind", key.split('/').next().unwrap_or("")),
                ("outcome", outcome),
            ],
        );
        match result {
            Ok(pushed) => {
                let took = started.elapsed();
                let (k, g) = (key.clone(), generation.clone());
                self.update(c.id, move |c| {
                    if !still_configuring(c, &g) {
                        return Update::Keep;
                    }
                    let Some(p) = c.configure.as_mut() else {
                        return Update::Keep;
                    };
                    // With the step: a crash before this write pushes (and tells) again.
                    for (task, path, d) in &pushed {
                        p.pushed
                            .entry(task.clone())
                            .or_default()
                            .insert(path.clone(), d.clone());
                    }
                    if !p.is_done(&k) {
                        p.done.push(k.clone());
                    }
                    p.current = None;
                    Update::Write
                })
                .await?;
                self.log(c.id, &format!("step {key} done in {took:.1?}"))
                    .await;
            }
            Err(failure) => {
                let reason = failure.reason(&key);
                if self.lost_meanwhile(&marked, &failure, &generation).await? {
                    self.log(
                        c.id,
                        &format!("{reason}; its node was lost meanwhile: healing instead"),
                    )
                    .await;
                } else {
                    self.fail(c.id, &generation, reason).await?;
                }
            }
        }
        Ok(())
    }

    /// Whether a step failed because its node's task ended under it (a container killed
    /// mid-step): its NodeAgent does not answer, and within `loss_grace` the scheduler
    /// reports the loss, which queues a new attempt and changes the generation. The cluster
    /// then heals instead of failing. A NodeAgent that answers means the failure is the
    /// step's own.
    async fn lost_meanwhile(
        &self,
        c: &Cluster,
        failure: &StepFailure,
        generation: &[String],
    ) -> Result<bool, WorkError> {
        let Some(node) = failure.node.as_deref().and_then(|n| c.node(n)) else {
            return Ok(false);
        };
        if let Ok(agent) = self.agent(c, node) {
            let health = tokio::time::timeout(self.cfg.check_timeout, agent.health()).await;
            if matches!(health, Ok(Ok(_))) {
                return Ok(false);
            }
        }
        let deadline = Instant::now() + self.cfg.loss_grace;
        loop {
            let id = c.id;
            let Some(now) = self.blocking(move |s| s.cluster(id)).await? else {
                return Ok(true);
            };
            if now.desired != Desired::Running || super::plan::generation(&now) != generation {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `configuring → configured`: every step is done.
    async fn finish(&self, c: &Cluster) -> Result<(), WorkError> {
        let generation = generation(c);
        self.update(c.id, move |c| {
            if !still_configuring(c, &generation) {
                return Update::Keep;
            }
            let _ = c.apply(ClusterEvent::Configured, None, Timestamp::now());
            if let Some(p) = c.configure.as_mut() {
                p.current = None;
            }
            Update::Write
        })
        .await?;
        self.log(c.id, "configured: every step done").await;
        Ok(())
    }

    /// `configured → ready` once every service's `ready` check passes again (services may
    /// have died since their step, e.g. across a restart of ours).
    /// `healing → ready` likewise, once every step ran again.
    async fn promote(
        &self,
        c: &Cluster,
        from: ClusterStatus,
        cancel: &CancellationToken,
    ) -> Result<(), WorkError> {
        let generation = generation(c);
        let checks = async {
            for s in &c.services {
                if s.ready.is_some() {
                    self.ready(c, s, self.cfg.ready_interval * 3)
                        .await
                        .map_err(|f| f.reason(&format!("ready/{}", s.name)))?;
                }
            }
            Ok::<(), String>(())
        };
        let result = tokio::select! {
            r = checks => r,
            () = cancel.cancelled() => return Err(WorkError::Cancelled),
        };
        match result {
            Ok(()) => {
                let g = generation.clone();
                let c = self
                    .update(c.id, move |c| {
                        if !still_at(c, from, &g) {
                            return Update::Keep;
                        }
                        let _ = c.apply(ClusterEvent::Ready, None, Timestamp::now());
                        Update::Write
                    })
                    .await?;
                if c.status == ClusterStatus::Ready {
                    info!(cluster_id = %c.id, "cluster ready");
                    self.log(c.id, "ready").await;
                }
            }
            Err(reason) => {
                let r = reason.clone();
                self.update(c.id, move |c| {
                    if !still_at(c, from, &generation) {
                        return Update::Keep;
                    }
                    let _ = c.apply(ClusterEvent::Failed, Some(r.clone()), Timestamp::now());
                    Update::Write
                })
                .await?;
                warn!(cluster_id = %c.id, %reason, "cluster failed its final checks");
                self.log(c.id, &format!("failed: {reason}")).await;
            }
        }
        Ok(())
    }

    /// Drains a node an update removed: `SCRIPT stop-node NODE`, best effort (a script that
    /// does not know the action exits non-zero; that is logged, not fatal), then records it
    /// drained so the scheduler kills it.
    async fn drain(&self, c: &Cluster, node: &str, script: Option<&[u8]>) -> Result<(), WorkError> {
        if let Some(script) = script {
            self.log(
                c.id,
                &format!("update: draining {node} (`stop-node {node}`)"),
            )
            .await;
            let action = format!("stop-node {node}");
            match self
                .script(c, script, &action, self.cfg.stop_timeout, &self.shutdown)
                .await
            {
                Ok(o) if o.ended.success() => {}
                Ok(o) => {
                    self.log(
                        c.id,
                        &format!("`stop-node {node}` ended {}; removing it anyway", o.ended),
                    )
                    .await;
                }
                Err(e) => {
                    self.log(
                        c.id,
                        &format!(
                            "`stop-node {node}` not run: {}; removing it anyway",
                            chain(&e)
                        ),
                    )
                    .await;
                }
            }
        }
        let name = node.to_owned();
        self.update(c.id, move |c| {
            match c
                .retiring
                .iter_mut()
                .find(|r| r.node.name.as_str() == name && !r.drained)
            {
                Some(r) => {
                    r.drained = true;
                    Update::Write
                }
                None => Update::Keep,
            }
        })
        .await?;
        info!(cluster_id = %c.id, node, "drained; the scheduler removes it");
        Ok(())
    }

    /// Stops the services of `node` (a restart asked for by a user; configuring again, which
    /// follows, starts them), best effort, then records the request done.
    async fn stop_services(&self, c: &Cluster, node: &str) -> Result<(), WorkError> {
        if let Some(n) = c.node(node) {
            match self.agent(c, n) {
                Ok(agent) => {
                    for s in c
                        .services
                        .iter()
                        .filter(|s| s.nodes.iter().any(|x| x.as_str() == node))
                    {
                        if let Err(e) = agent.stop_service(s.name.as_str(), RESTART_GRACE).await {
                            self.log(
                                c.id,
                                &format!("restart: cannot stop {} on {node}: {e}", s.name),
                            )
                            .await;
                        }
                    }
                }
                Err(f) => {
                    self.log(c.id, &format!("restart: {node} unreachable: {}", f.cause))
                        .await;
                }
            }
        }
        let name = node.to_owned();
        self.update(c.id, move |c| {
            let before = c.restarts.len();
            c.restarts.retain(|n| n.as_str() != name);
            if c.restarts.len() == before {
                Update::Keep
            } else {
                Update::Write
            }
        })
        .await?;
        self.log(
            c.id,
            &format!("restart: services of {node} stopped; configuring again"),
        )
        .await;
        Ok(())
    }

    /// Replaces the next node of a rolling update (see [`Cluster::roll_next`]): its task
    /// goes and a new attempt with the new spec is queued; the next decision waits until it
    /// runs and is configured.
    async fn roll(&self, c: &Cluster, node: &str) -> Result<(), WorkError> {
        let seen = generation(c);
        let expected = node.to_owned();
        let left = c.rolling.len();
        let c = self
            .update(c.id, move |c| {
                let next = c.rolling.first().map(|n| n.name.as_str());
                if generation(c) != seen || next != Some(expected.as_str()) {
                    return Update::Keep;
                }
                let _ = c.roll_next();
                Update::Write
            })
            .await?;
        if c.rolling.len() < left {
            let attempt = c.node(node).map_or(0, |n| n.observed.attempt + 1);
            info!(cluster_id = %c.id, node, attempt, "rolling update: replacing a node");
            self.log(
                c.id,
                &format!(
                    "update: replacing {node} with its new spec (attempt {attempt}); {} more to go",
                    c.rolling.len()
                ),
            )
            .await;
        }
        Ok(())
    }

    /// `SCRIPT stop`, once, best effort: whatever happens, it is not run again.
    async fn stop_script(&self, c: &Cluster, script: Option<&[u8]>) -> Result<(), WorkError> {
        if let Some(script) = script {
            self.log(c.id, "destroy: running the orchestration script `stop`")
                .await;
            // Only shutdown interrupts it: a destroyed cluster has nothing left to cancel for.
            match self
                .script(c, script, "stop", self.cfg.stop_timeout, &self.shutdown)
                .await
            {
                Ok(o) => {
                    self.log(c.id, &format!("orchestration script `stop` {}", o.ended))
                        .await;
                }
                Err(ScriptError::Cancelled) => return Err(WorkError::Cancelled),
                Err(e) => {
                    self.log(
                        c.id,
                        &format!("orchestration script `stop` not run: {}", chain(&e)),
                    )
                    .await;
                }
            }
        }
        self.update(c.id, |c| match c.configure.as_mut() {
            Some(p) if p.script != ScriptState::Stopped => {
                p.script = ScriptState::Stopped;
                Update::Write
            }
            _ => Update::Keep,
        })
        .await?;
        Ok(())
    }

    // ----- steps on nodes -------------------------------------------------------------------

    async fn node_step(&self, c: &Cluster, step: &Step) -> Result<Pushed, StepFailure> {
        let Some(svc) = step
            .service
            .as_deref()
            .and_then(|n| c.services.iter().find(|s| s.name.as_str() == n))
        else {
            return Err(StepFailure {
                node: None,
                cause: "the service is gone from the cluster record".into(),
            });
        };
        match step.kind {
            StepKind::Files => self.push_files(c, svc).await,
            StepKind::Start => self.start(c, svc).await.map(|()| Vec::new()),
            StepKind::Ready => self
                .ready(c, svc, self.cfg.ready_timeout)
                .await
                .map(|()| Vec::new()),
            StepKind::Script => Ok(Vec::new()),
        }
    }

    /// Renders every file for every node first (a template error pushes nothing), then pushes
    /// what differs from what the node's task last got, and tells the service where a file
    /// changed ([`follow_up`]). Returns what was pushed, to be recorded with the step.
    async fn push_files(&self, c: &Cluster, svc: &Service) -> Result<Pushed, StepFailure> {
        let facts = cluster_facts(c);
        let empty = Default::default();
        let pushed = c.configure.as_ref().map_or(&empty, |p| &p.pushed);
        let mut work = Vec::new();
        for node in nodes_of(c, svc) {
            let files = render_files(&self.renderer, &facts, &c.secrets, svc, node)
                .map_err(|e| StepFailure::on(node, e.to_string()))?;
            let task = node
                .observed
                .task_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            let files: Vec<_> = files
                .into_iter()
                .map(|f| {
                    let d = digest(&f.content);
                    let change = file_change(pushed, &task, &f.path, &d);
                    (f, d, change)
                })
                .collect();
            let follow = follow_up(svc, files.iter().map(|(_, _, ch)| *ch));
            work.push((node, task, files, follow));
        }
        let results = join_all(
            work.into_iter()
                .map(|(node, task, files, follow)| async move {
                    let agent = self.agent(c, node)?;
                    let mut done = Vec::new();
                    for (f, d, change) in files {
                        if change != FileChange::Same {
                            self.retry(|| agent.put_file(&f.path, f.mode, f.content.clone()))
                                .await
                                .map_err(|e| {
                                    StepFailure::on(node, format!("cannot write {}: {e}", f.path))
                                })?;
                        }
                        done.push((task.clone(), f.path, d));
                    }
                    self.tell(c, svc, node, &agent, follow).await?;
                    Ok(done)
                }),
        )
        .await;
        let mut all = Vec::new();
        for r in results {
            all.extend(r?);
        }
        Ok(all)
    }

    /// After a changed file was pushed to `node`: runs the service's `reload` there, or
    /// restarts its `start` process (stop, then start with the same argv).
    async fn tell(
        &self,
        c: &Cluster,
        svc: &Service,
        node: &Node,
        agent: &NodeClient,
        follow: FollowUp,
    ) -> Result<(), StepFailure> {
        let (what, cmd) = match (follow, &svc.reload, &svc.start) {
            (FollowUp::Reload, Some(cmd), _) => ("reload", cmd),
            (FollowUp::Restart, _, Some(cmd)) => ("restart", cmd),
            _ => return Ok(()),
        };
        let argv = render_argv(&self.renderer, &cluster_facts(c), svc, node, &cmd.argv())
            .map_err(|e| StepFailure::on(node, format!("{what}: {e}")))?;
        info!(cluster_id = %c.id, node = %node.name, service = %svc.name, what, "files changed; telling the service");
        if follow == FollowUp::Reload {
            let out = self
                .retry(|| agent.run(&argv, self.cfg.ready_timeout))
                .await
                .map_err(|e| StepFailure::on(node, format!("cannot run reload {argv:?}: {e}")))?;
            if !out.ended.success() {
                return Err(StepFailure::on(
                    node,
                    format!("reload {argv:?} {}: {}", out.ended, out.tail(5)),
                ));
            }
        } else {
            let name = svc.name.as_str();
            self.retry(|| agent.stop_service(name, RESTART_GRACE))
                .await
                .map_err(|e| StepFailure::on(node, format!("cannot stop {name}: {e}")))?;
            self.retry(|| agent.start_service(name, &argv))
                .await
                .map_err(|e| StepFailure::on(node, format!("cannot restart {argv:?}: {e}")))?;
        }
        self.log(
            c.id,
            &format!(
                "service {} on {}: files changed, {what} done",
                svc.name, node.name
            ),
        )
        .await;
        Ok(())
    }

    async fn start(&self, c: &Cluster, svc: &Service) -> Result<(), StepFailure> {
        let Some(cmd) = &svc.start else {
            return Ok(());
        };
        let facts = cluster_facts(c);
        let mut work = Vec::new();
        for node in nodes_of(c, svc) {
            let argv = render_argv(&self.renderer, &facts, svc, node, &cmd.argv())
                .map_err(|e| StepFailure::on(node, format!("start: {e}")))?;
            work.push((node, argv));
        }
        let results = join_all(work.into_iter().map(|(node, argv)| async move {
            let argv = &argv;
            let agent = self.agent(c, node)?;
            self.retry(|| agent.start_service(svc.name.as_str(), argv))
                .await
                .map_err(|e| StepFailure::on(node, format!("cannot start {argv:?}: {e}")))?;
            Ok(())
        }))
        .await;
        results.into_iter().collect()
    }

    /// Polls the service's `ready` check on each of its nodes until it passes everywhere or
    /// `within` runs out; fails at once when the service's `start` process died.
    async fn ready(&self, c: &Cluster, svc: &Service, within: Duration) -> Result<(), StepFailure> {
        let Some(cmd) = &svc.ready else {
            return Ok(());
        };
        let facts = cluster_facts(c);
        let mut work = Vec::new();
        for node in nodes_of(c, svc) {
            let argv = render_argv(&self.renderer, &facts, svc, node, &cmd.argv())
                .map_err(|e| StepFailure::on(node, format!("ready: {e}")))?;
            work.push((node, argv));
        }
        let deadline = Instant::now() + within;
        let results = join_all(work.into_iter().map(|(node, argv)| async move {
            let argv = &argv;
            let agent = self.agent(c, node)?;
            let mut last: String;
            loop {
                if svc.start.is_some()
                    && let Ok(ServiceState::Exited { ended, output_tail }) =
                        agent.inspect_service(svc.name.as_str()).await
                    && !ended.success()
                {
                    return Err(StepFailure::on(
                        node,
                        format!(
                            "service {} {ended} before it was ready; output: {output_tail}",
                            svc.name
                        ),
                    ));
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let attempt = agent
                    .run(
                        argv,
                        self.cfg
                            .check_timeout
                            .min(left)
                            .max(Duration::from_millis(100)),
                    )
                    .await;
                match attempt {
                    Ok(out) if out.ended.success() => return Ok(()),
                    Ok(out) => last = format!("{}: {}", out.ended, out.tail(3)),
                    Err(e) => last = e.to_string(),
                }
                if Instant::now() + self.cfg.ready_interval >= deadline {
                    return Err(StepFailure::on(
                        node,
                        format!(
                            "ready check {argv:?} did not pass within {}; last attempt: {last}",
                            humantime::format_duration(within)
                        ),
                    ));
                }
                tokio::time::sleep(self.cfg.ready_interval).await;
            }
        }))
        .await;
        results.into_iter().collect()
    }

    fn agent(&self, c: &Cluster, node: &Node) -> Result<NodeClient, StepFailure> {
        let host = node
            .observed
            .address
            .as_deref()
            .or(node.observed.host.as_deref());
        let (Some(host), Some(port)) = (host, node.observed.agent_port) else {
            return Err(StepFailure::on(
                node,
                "no NodeAgent address on record (address and agent port are set when the node is placed)",
            ));
        };
        NodeClient::new(
            host,
            port,
            &c.secret,
            node.observed.agent_cert_sha256.as_deref(),
        )
        .map_err(|e| StepFailure::on(node, e.to_string()))
    }

    /// Retries transient agent failures (not listening yet, network blips) for up to
    /// `agent_wait`, backing off.
    async fn retry<T, F, Fut>(&self, mut f: F) -> Result<T, AgentCallError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, AgentCallError>>,
    {
        let deadline = Instant::now() + self.cfg.agent_wait;
        let mut backoff = Duration::from_millis(200);
        loop {
            match f().await {
                Err(e) if e.is_transient() && Instant::now() + backoff < deadline => {
                    debug!(error = %e, "node agent not reachable yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    // ----- the script -----------------------------------------------------------------------

    async fn script_start(
        &self,
        c: &Cluster,
        script: &[u8],
        cancel: &CancellationToken,
    ) -> Result<Result<(), StepFailure>, WorkError> {
        self.log(c.id, "running the orchestration script `start`")
            .await;
        match self
            .script(c, script, "start", self.cfg.script_timeout, cancel)
            .await
        {
            Ok(o) if o.ended.success() => Ok(Ok(())),
            Ok(o) => {
                let ended = match o.ended {
                    super::client::Ended::TimedOut => format!(
                        "timed out after {}",
                        humantime::format_duration(self.cfg.script_timeout)
                    ),
                    other => other.to_string(),
                };
                Ok(Err(StepFailure {
                    node: None,
                    cause: format!("orchestration script `start` {ended}; output: {}", o.tail),
                }))
            }
            Err(ScriptError::Cancelled) => Err(WorkError::Cancelled),
            Err(e) => Ok(Err(StepFailure {
                node: None,
                cause: format!("orchestration script `start` could not run: {}", chain(&e)),
            })),
        }
    }

    async fn script(
        &self,
        c: &Cluster,
        script: &[u8],
        action: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<script::ScriptOutcome, ScriptError> {
        let json = cluster_json(c);
        let id = c.id;
        let header = format!("==> {action} ({})\n", Timestamp::now());
        self.append(id, header.into_bytes()).await;
        let run = ScriptRun {
            script,
            action,
            cluster_json: &json,
            env: vec![
                ("CLUSTER_ID".into(), id.to_string()),
                ("PAAS_API_URL".into(), self.cfg.api_url.clone()),
            ],
            timeout,
            work_dir: &self.cfg.work_dir,
        };
        let outcome = script::run(run, cancel, |chunk| self.append(id, chunk)).await;
        if let Ok(o) = &outcome {
            info!(cluster_id = %id, action, ended = %o.ended, "orchestration script ended");
            self.append(id, format!("<== {action}: {}\n", o.ended).into_bytes())
                .await;
        }
        outcome
    }

    // ----- store ----------------------------------------------------------------------------

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, WorkError> {
        Ok(registry::call(&self.store, f).await?)
    }

    /// A compare-and-swap on the cluster; `f` must be pure (it may run more than once).
    async fn update(
        &self,
        id: ClusterId,
        mut f: impl FnMut(&mut Cluster) -> Update + Send + 'static,
    ) -> Result<Cluster, WorkError> {
        self.blocking(move |s| s.update_cluster(id, &mut |c| Ok(f(c))))
            .await
    }

    async fn fail(
        &self,
        id: ClusterId,
        generation: &[String],
        reason: String,
    ) -> Result<(), WorkError> {
        let generation = generation.to_vec();
        let r = reason.clone();
        let c = self
            .update(id, move |c| {
                if !still_configuring(c, &generation) {
                    return Update::Keep;
                }
                let _ = c.apply(ClusterEvent::Failed, Some(r.clone()), Timestamp::now());
                Update::Write
            })
            .await?;
        if c.status == ClusterStatus::Failed {
            warn!(cluster_id = %id, %reason, "cluster failed");
            self.log(id, &format!("failed: {reason}")).await;
        }
        Ok(())
    }

    /// One orchestrator line in the cluster's log (served at `/clusters/{id}/logs`).
    async fn log(&self, id: ClusterId, line: &str) {
        self.append(
            id,
            format!("[{}] orchestrator: {line}\n", Timestamp::now()).into_bytes(),
        )
        .await;
    }

    async fn append(&self, id: ClusterId, data: Vec<u8>) {
        if let Err(e) = self.blocking(move |s| s.append_log(id, &data)).await {
            // Losing log output must not stop configuration; say so once here.
            warn!(cluster_id = %id, error = %e, "cannot store orchestrator output");
        }
    }
}

/// The record is still the configuration we are working on.
fn still_configuring(c: &Cluster, generation: &[String]) -> bool {
    c.desired == Desired::Running
        && matches!(
            c.status,
            ClusterStatus::Configuring | ClusterStatus::Healing | ClusterStatus::Updating
        )
        && c.configure
            .as_ref()
            .is_some_and(|p| p.generation == generation)
        && super::plan::generation(c) == generation
}

/// The cluster is still in `status` with the same node tasks, so a check's verdict applies
/// (a node lost meanwhile makes the cluster `healing` with a new generation).
fn still_at(c: &Cluster, status: ClusterStatus, generation: &[String]) -> bool {
    c.desired == Desired::Running && c.status == status && super::plan::generation(c) == generation
}

fn nodes_of<'a>(c: &'a Cluster, svc: &'a Service) -> impl Iterator<Item = &'a Node> + 'a {
    svc.nodes.iter().filter_map(|n| c.node(n.as_str()))
}

/// The full cluster description for `CLUSTER_JSON`: the record as served, without its
/// NodeAgent secret and its template secrets (the script is the product's, but its output
/// is served at `/logs`).
pub fn cluster_json(c: &Cluster) -> Vec<u8> {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("secret");
        m.remove("secrets");
    }
    // invariant: a serde_json::Value always serialises.
    serde_json::to_vec_pretty(&v).unwrap_or_default()
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
/// The next commit, or never once the notifications have ended (`None`).
async fn next_commit(
    commits: &mut Option<broadcast::Receiver<Commit>>,
) -> Result<Commit, broadcast::error::RecvError> {
    match commits {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NodeStatus;
    use crate::scheduler::task_updates::staging_cluster;

    /// The periodic scan reads only the `ACTIVE` statuses: in every other one, `decide` has
    /// nothing to do for a cluster that should run, whatever its nodes do.
    #[test]
    fn the_scan_skips_only_statuses_without_work() {
        for status in ClusterStatus::ALL {
            if ACTIVE.contains(&status) {
                continue;
            }
            for node in [NodeStatus::Running, NodeStatus::Queued, NodeStatus::Lost] {
                let mut c = staging_cluster(ClusterId::generate(), 2);
                c.status = status;
                for n in &mut c.nodes {
                    n.observed.status = node;
                }
                assert_eq!(
                    decide(&c, true),
                    Action::Idle,
                    "{status} with nodes {node:?}"
                );
            }
        }
    }
}
