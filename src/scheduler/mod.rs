//! The Mesos v1 HTTP scheduler: subscription, offer evaluation, launches, status updates and
//! reconciliation. The single writer of the observed state of nodes.
//!
//! - [`transport`] and [`recordio`]: HTTP to the master (SUBSCRIBE stream, calls).
//! - [`offers`]: pure offer evaluation (its one protobuf edge turns an `Offer` into the view
//!   it matches on); [`resources`] cuts launch resources out of the offered `Resource`s.
//! - [`launch`]: what one round of offers records on the clusters and the ACCEPTs it sends
//!   (pure); [`tasks`]: the TaskInfo of a node; [`wire`]: the ACCEPT as bytes.
//! - [`task_updates`]: how Mesos task updates change a cluster (pure).
//! - [`seen`]: the agents as the last offers showed them, for dry runs; [`deadline`]: when a
//!   launch that cannot be placed fails (pure).
//! - [`driver`]: the event loop that ties them to the store and the master; [`acks`] sends
//!   its acknowledgements off the loop.
//!
//! It never serves HTTP and never imports the api: it learns what the api (or the
//! orchestrator) wants from the store's commit notifications ([`Store::subscribe`]).

/// RecordIO lives at the crate root (the executor uses it too); re-exported for callers
/// that look for it here.
pub use crate::recordio;

pub mod acks;
pub mod deadline;
pub mod driver;
pub mod launch;
pub mod offers;
pub mod resources;
pub mod seen;
pub mod task_updates;
pub mod tasks;
pub mod transport;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::placement::{Demand, Placement};
use crate::metrics::Metrics;
use crate::registry::Store;

/// How long a launch waits to be placed by default: long enough for a busy cluster to free
/// room, short enough that a launch that can never fit says so the same day.
pub const DEFAULT_PLACEMENT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// How the framework presents itself to Mesos and paces its work.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Master URL, e.g. `http://127.0.0.1:5050` (a non-leader answers 307; we follow it).
    pub master: String,
    pub framework_name: String,
    /// Unix user the executors run as (`FrameworkInfo.user`, required over HTTP).
    pub user: String,
    pub role: String,
    /// How long Mesos keeps our tasks running while we are away (restart, failover).
    pub failover_timeout: Duration,
    /// What each node's executor needs on top of the node; its one port is the NodeAgent.
    pub executor: offers::ExecutorOverhead,
    /// Grace between SIGTERM and SIGKILL when a node is killed.
    pub kill_grace: Duration,
    /// Period of implicit reconciliation once subscribed.
    pub reconcile_interval: Duration,
    /// How long launches wait for explicit reconciliation after a (re)subscribe before
    /// proceeding anyway (agents that never re-register never answer).
    pub reconcile_timeout: Duration,
    /// Filter for offers declined while nothing is pending.
    pub idle_refuse: Duration,
    /// Filter for the unused part of offers while nodes still wait: short, so that freed
    /// resources come back soon. A launch made meanwhile does not wait for it: the driver
    /// sends a REVIVE (which clears every filter) when a cluster becomes pending after a
    /// round that filtered offers.
    pub busy_refuse: Duration,
    /// Scheduler hostname shown in the Mesos UI.
    pub hostname: Option<String>,
    pub webui_url: Option<String>,
    /// The framework's principal (`FrameworkInfo.principal`) and, with a secret, the basic
    /// auth every call carries; `None` for a master that does not authenticate frameworks.
    pub credentials: Option<transport::Credentials>,
    /// How long a launch may wait to be placed before it fails, unless the launch chose
    /// its own ([`deadline`]).
    pub placement_timeout: Duration,
}

impl SchedulerConfig {
    pub fn new(master: impl Into<String>) -> Self {
        Self {
            master: master.into(),
            framework_name: "paas".into(),
            user: "root".into(),
            role: "*".into(),
            failover_timeout: Duration::from_secs(7 * 24 * 3600),
            executor: offers::ExecutorOverhead {
                cpus: 0.05,
                mem: 32.0,
                disk: 0.0,
                ports: 1,
            },
            kill_grace: Duration::from_secs(5),
            reconcile_interval: Duration::from_secs(15 * 60),
            reconcile_timeout: Duration::from_secs(120),
            idle_refuse: Duration::from_secs(120),
            busy_refuse: Duration::from_secs(5),
            hostname: None,
            webui_url: None,
            credentials: None,
            placement_timeout: DEFAULT_PLACEMENT_TIMEOUT,
        }
    }
}

/// What the scheduler reports about itself (for `/health`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SchedulerStatus {
    pub master: String,
    pub subscribed: bool,
    pub framework_id: Option<String>,
    /// The leading master we are subscribed to, after redirects.
    pub leader: Option<String>,
    /// Explicit reconciliation after the last SUBSCRIBED is still running; no launches.
    pub reconciling: bool,
    pub suppressed: bool,
    pub last_error: Option<String>,
}

/// A running scheduler.
pub struct Scheduler {
    status: watch::Receiver<SchedulerStatus>,
    /// The agents as the driver last saw them; dry runs read it.
    seen: Arc<seen::SeenOffers>,
    /// What each node's executor adds to a node, as the driver counts it.
    executor: offers::ExecutorOverhead,
}

impl Scheduler {
    /// Starts the scheduler's event loop on `tracker`; it stops when `shutdown` is cancelled.
    /// It subscribes to the store's commits before returning, so every commit from then on
    /// reaches it.
    pub fn spawn(
        cfg: SchedulerConfig,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Self {
        let (status_tx, status) = watch::channel(SchedulerStatus {
            master: cfg.master.clone(),
            ..Default::default()
        });
        let seen = Arc::new(seen::SeenOffers::default());
        let executor = cfg.executor;
        // Subscribed before the driver's task starts: no commit from now on is missed.
        let commits = driver::relay_commits(store.subscribe(), shutdown.clone(), tracker);
        let driver = driver::Driver::new(cfg, store, metrics, status_tx, shutdown, commits)
            .with_seen(seen.clone());
        tracker.spawn(driver.run());
        Self {
            status,
            seen,
            executor,
        }
    }

    /// Where `demands` would go on the agents as last seen; holds nothing.
    pub fn plan(&self, demands: &[Demand]) -> Placement {
        self.seen.plan(demands, &self.executor)
    }

    pub fn status(&self) -> SchedulerStatus {
        self.status.borrow().clone()
    }
}
