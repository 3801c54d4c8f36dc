//! Configures running clusters: `scheduled → configuring → configured → ready` (or `failed`
//! with the failing step, node and output tail), and runs `SCRIPT stop` on destroy.
//!
//! - [`plan`]: the configure plan and the reconcile decision (pure, table-tested);
//! - [`facts`]: configure-time rendering of service files with the cluster facts (pure);
//! - [`client`]: the NodeAgent gRPC client (the only way we reach nodes);
//! - [`script`]: the product's orchestration script, run on this host;
//! - [`controller`]: the loop that ties them to the store.
//!
//! Like a kube-rs controller, the loop is woken per cluster by the store's commit notifications
//! ([`Store::subscribe`]; the committed record itself, no read) and by a periodic scan of the
//! store (a safety net, also run at once when the notifications lag), and calls an idempotent reconcile that looks at the stored
//! record and does the *next* thing. Progress lives on the record
//! ([`crate::domain::ConfigureProgress`]), so a restarted `paas serve` resumes at the first
//! unfinished step. Every step is idempotent: files are rewritten whole, services are started
//! by name (same argv → left running), ready checks are checks.
//!
//! `start` runs as a supervised service of the NodeAgent named after the service: it should
//! stay in the foreground. A `start` that exits 0 (a daemonizing script) is fine; one that
//! exits non-zero fails the `ready` step at once with its output.
//!
//! It never talks to Mesos. On destroy the api marks the cluster; the scheduler and we both see
//! the commit; the scheduler holds the kills of a cluster whose `SCRIPT stop` is owed until we
//! record it done (at most 45 s), so the script can still reach the nodes.

pub mod client;
pub mod controller;
pub mod facts;
pub mod plan;
pub mod script;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::registry::Store;

/// Timeouts and pacing of the orchestrator.
#[derive(Debug, Clone)]
pub struct OrchestratorConfig {
    /// Base URL of the REST API, passed to scripts as `PAAS_API_URL`
    /// (e.g. `http://127.0.0.1:5000/bigdata/api/v1`).
    pub api_url: String,
    /// How often the store is scanned for clusters to work on (besides commit notifications,
    /// which make it a safety net).
    pub scan_interval: Duration,
    /// How long a node agent may stay unreachable before a step fails (it starts with the
    /// node's task, a moment after TASK_RUNNING).
    pub agent_wait: Duration,
    /// How long a step that failed on an unreachable node waits for the scheduler to report
    /// the node's task lost (the cluster then heals) before the failure fails the cluster.
    pub loss_grace: Duration,
    /// How long a service's `ready` check may keep failing before the cluster fails.
    pub ready_timeout: Duration,
    /// Pause between two `ready` attempts on one node.
    pub ready_interval: Duration,
    /// Time limit of one `ready` attempt.
    pub check_timeout: Duration,
    /// Time limit of `SCRIPT start`.
    pub script_timeout: Duration,
    /// Time limit of `SCRIPT stop` (a best effort during destroy).
    pub stop_timeout: Duration,
    /// Most clusters configured at once.
    pub max_concurrent: usize,
    /// Where scripts and their `CLUSTER_JSON` are written (a private subdirectory per run).
    /// `serve` uses `<data>/scripts` and runs [`script::recover`] on it at start.
    pub work_dir: PathBuf,
}

impl OrchestratorConfig {
    pub fn new(api_url: impl Into<String>) -> Self {
        Self {
            api_url: api_url.into(),
            scan_interval: Duration::from_secs(5),
            agent_wait: Duration::from_secs(60),
            loss_grace: Duration::from_secs(15),
            ready_timeout: Duration::from_secs(120),
            ready_interval: Duration::from_secs(1),
            check_timeout: Duration::from_secs(10),
            script_timeout: Duration::from_secs(600),
            stop_timeout: Duration::from_secs(30),
            max_concurrent: 16,
            work_dir: std::env::temp_dir(),
        }
    }
}

/// A running orchestrator. It needs no handle to be reached: it follows the store's commits.
#[derive(Debug, Clone, Copy)]
pub struct Orchestrator;

impl Orchestrator {
    /// Starts the controller on `tracker`; it stops (killing running scripts) when `shutdown`
    /// is cancelled. Work in flight is resumed from the store by the next start. It subscribes
    /// to the store's commits before returning, so every commit from then on reaches it.
    pub fn spawn(
        cfg: OrchestratorConfig,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let commits = store.subscribe();
        let ctl = controller::Controller::new(cfg, store, metrics, shutdown, tracker.clone());
        tracker.spawn(ctl.run(commits));
        Self
    }
}
