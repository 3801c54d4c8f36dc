//! mesos-local: an embedded, in-process, Mesos-compatible master with N agents, so that
//! `paas serve` without `--master` runs whole clusters on one machine with no Mesos
//! installed. It is to this project what `mesos-local` is to Mesos: a one-machine
//! stand-in. Real clusters run on real Mesos.
//!
//! The framework talks to it over real HTTP on loopback, with the same wire contract as
//! Mesos 1.11 for what a v1 framework and a custom executor use: the scheduler API
//! (`/api/v1/scheduler`, protobuf and JSON, stream ids, heartbeats, offers, filters,
//! rescinds, reliable updates, reconciliation) and the executor API of every agent
//! (`/slave(N)/api/v1/executor`, so `MESOS_SLAVE_PID=slave(N)@ip:port` works as on
//! `mesos-local`). Executors run as processes or Docker containers ([`container`]).
//!
//! Owns: [`codec`] (wire encodings), [`http`] (listener, routing, status codes),
//! [`master`] (the semantics: one actor owning frameworks, offers, tasks, executors),
//! [`container`] (executor processes), [`instance`] (what this instance owns on the machine,
//! and its recovery at start), [`resources`] (quantities).
//! Does not own: anything of the framework. Only `main` and tests import this module.
//!
//! Not implemented (a real master has them): authentication, reservations and volumes,
//! operations other than LAUNCH, LAUNCH_GROUP, command tasks, inverse offers, quotas and
//! weights, agent recovery, persistence (a restart forgets everything; its executors are
//! stopped with it, and those a `kill -9` left behind are removed at the next start: see
//! [`instance`]).

pub mod codec;
pub mod container;
mod http;
pub mod instance;
pub mod master;
pub mod resources;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use instance::{Instance, InstanceError};
pub use master::Snapshot;
use master::{Cmd, Fault, Master, Runtime};
pub use resources::{Quantities, ResourceSpecError};

/// The default resources of one agent.
pub const DEFAULT_RESOURCES: &str = "cpus:4;mem:8192;disk:20480;ports:[31000-32000]";

/// How executors run; see [`container`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerizerMode {
    /// Docker when the daemon answers and the executor's image is present, else process.
    Auto,
    /// Child processes on the host; Docker images are ignored.
    Process,
    /// `docker run` of the executor's image; a missing image fails the launch.
    Docker,
    /// No process at all: the agent reports TASK_RUNNING at once and TASK_KILLED on kill
    /// (benchmarks of the framework's own cost).
    Simulated,
}

impl FromStr for ContainerizerMode {
    type Err = LocalError;

    fn from_str(s: &str) -> Result<Self, LocalError> {
        match s {
            "auto" => Ok(Self::Auto),
            "process" => Ok(Self::Process),
            "docker" => Ok(Self::Docker),
            "simulated" | "none" => Ok(Self::Simulated),
            other => Err(LocalError::Containerizer(other.to_owned())),
        }
    }
}

/// How mesos-local is set up.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Where the master (and every agent) listens; port 0 picks one.
    pub listen: SocketAddr,
    /// Number of agents (`slave(1)` … `slave(N)`).
    pub agents: usize,
    /// What each agent offers.
    pub resources: Quantities,
    pub containerizer: ContainerizerMode,
    /// The executor binary for executors without a command (default: this binary, run as
    /// `<it> executor`).
    pub executor_path: Option<PathBuf>,
    /// Sandboxes go under `<work_dir>/slaves/…`.
    pub work_dir: PathBuf,
    /// The agents' hostname in offers.
    pub hostname: String,
    /// Period of HEARTBEAT events (Mesos: 15 s; `heartbeat_interval_seconds` always says 15).
    pub heartbeat_interval: Duration,
    /// Period of allocation rounds (Mesos `--allocation_interval`: 1 s).
    pub allocation_interval: Duration,
    /// First resend of an unacknowledged update; doubles up to `update_retry_max`
    /// (Mesos: 10 s, 10 min).
    pub update_retry: Duration,
    pub update_retry_max: Duration,
    /// `--executor_registration_timeout` (Mesos: 1 min).
    pub registration_timeout: Duration,
    /// `--executor_shutdown_grace_period` (Mesos: 5 s).
    pub shutdown_grace: Duration,
    /// Granularity of every timer above.
    pub tick: Duration,
}

impl LocalConfig {
    /// Mesos' defaults: one agent with [`DEFAULT_RESOURCES`], `auto` containerizer.
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            agents: 1,
            // invariant: the default is a valid literal, checked by a test.
            resources: Quantities::parse(DEFAULT_RESOURCES).unwrap_or_default(),
            containerizer: ContainerizerMode::Auto,
            executor_path: None,
            work_dir: work_dir.into(),
            hostname: "localhost".into(),
            heartbeat_interval: Duration::from_secs(15),
            allocation_interval: Duration::from_secs(1),
            update_retry: Duration::from_secs(10),
            update_retry_max: Duration::from_secs(600),
            registration_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
            tick: Duration::from_millis(100),
        }
    }
}

/// Why mesos-local cannot start or answer.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the work directory {path}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--local-resources")]
    Resources(#[from] ResourceSpecError),
    #[error("the instance of the work directory")]
    Instance(#[from] InstanceError),
    #[error("unknown containerizer {0:?} (expected auto, process, docker or simulated)")]
    Containerizer(String),
    #[error("the containerizer is docker but no Docker daemon answers")]
    NoDocker,
    #[error("mesos-local has stopped")]
    Stopped,
}

/// A running mesos-local: its URL, and the fault-injection handle tests use.
#[derive(Debug, Clone)]
pub struct MesosLocal {
    /// `http://127.0.0.1:<port>`: give it to the scheduler as the master.
    pub master_url: String,
    pub addr: SocketAddr,
    cmd: mpsc::UnboundedSender<Cmd>,
}

/// Starts the master, its agents and the listener on `tracker`; everything stops when
/// `shutdown` is cancelled (executors included).
///
/// First it takes the work directory (made absolute: sandboxes are mounted into containers
/// by path) and removes what an earlier run on it left behind ([`Instance::recover`]).
///
/// # Errors
/// [`LocalError::Bind`], [`LocalError::WorkDir`], [`LocalError::Instance`] (another live
/// mesos-local holds the work directory), or [`LocalError::NoDocker`] when the `docker`
/// containerizer is asked for and no daemon answers.
pub async fn start(
    mut cfg: LocalConfig,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<MesosLocal, LocalError> {
    let work_dir_error = |path: &std::path::Path| {
        let path = path.to_owned();
        move |source| LocalError::WorkDir { path, source }
    };
    cfg.work_dir = std::path::absolute(&cfg.work_dir).map_err(work_dir_error(&cfg.work_dir))?;
    std::fs::create_dir_all(&cfg.work_dir).map_err(work_dir_error(&cfg.work_dir))?;
    let instance = Instance::open(&cfg.work_dir)?;
    let recovered = instance.recover().await;
    tracing::info!(
        instance = %instance.id(),
        containers = recovered.containers,
        processes = recovered.processes,
        "mesos-local recovered its work directory (leftovers of an earlier run removed)"
    );
    let docker_available = match cfg.containerizer {
        ContainerizerMode::Auto | ContainerizerMode::Docker => container::docker_answers().await,
        _ => false,
    };
    if cfg.containerizer == ContainerizerMode::Docker && !docker_available {
        return Err(LocalError::NoDocker);
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| LocalError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| LocalError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let cfg = Arc::new(cfg);
    let master = Master::new(
        cfg.clone(),
        Runtime {
            cmd_tx: cmd_tx.clone(),
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
            addr,
            docker_available,
            instance: Arc::new(instance),
        },
    );
    tracker.spawn(master.run(cmd_rx));
    tracker.spawn(http::serve(
        listener,
        cmd_tx.clone(),
        cfg.agents,
        tracker.clone(),
        shutdown,
    ));
    let master_url = format!("http://{addr}");
    tracing::info!(
        master = %master_url,
        agents = cfg.agents,
        resources = %cfg.resources,
        containerizer = ?cfg.containerizer,
        docker = docker_available,
        work_dir = %cfg.work_dir.display(),
        "mesos-local started (an in-process stand-in for a Mesos master and agents; not for production)"
    );
    Ok(MesosLocal {
        master_url,
        addr,
        cmd: cmd_tx,
    })
}

impl MesosLocal {
    async fn fault(&self, fault: Fault) -> Result<Option<String>, LocalError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Fault { fault, reply: tx })
            .map_err(|_| LocalError::Stopped)?;
        rx.await.map_err(|_| LocalError::Stopped)
    }

    /// Loses agent `index` (0-based): its offers are rescinded, its tasks reported
    /// TASK_LOST (TASK_UNREACHABLE to partition-aware frameworks) by the master, its
    /// executors killed, and a FAILURE event names it. Returns its agent id, or `None` if
    /// there is no such active agent.
    ///
    /// # Errors
    /// [`LocalError::Stopped`] once mesos-local has stopped.
    pub async fn lose_agent(&self, index: usize) -> Result<Option<String>, LocalError> {
        self.fault(Fault::LoseAgent(index)).await
    }

    /// Rescinds offer `id` (any outstanding offer when `None`); returns the offer id.
    ///
    /// # Errors
    /// [`LocalError::Stopped`] once mesos-local has stopped.
    pub async fn rescind_offer(&self, id: Option<&str>) -> Result<Option<String>, LocalError> {
        self.fault(Fault::RescindOffer(id.map(str::to_owned))).await
    }

    /// Closes the event stream of framework `id` (any connected one when `None`), as a
    /// broken connection would; returns the framework id.
    ///
    /// # Errors
    /// [`LocalError::Stopped`] once mesos-local has stopped.
    pub async fn drop_stream(&self, id: Option<&str>) -> Result<Option<String>, LocalError> {
        self.fault(Fault::DropStream(id.map(str::to_owned))).await
    }

    /// Fails the master over: a new master id, every stream closed, every offer gone.
    /// Frameworks must resubscribe (with their ids, which are accepted); tasks and
    /// executors carry on, as agents re-register with the new leader at once. Returns
    /// the new master id.
    ///
    /// # Errors
    /// [`LocalError::Stopped`] once mesos-local has stopped.
    pub async fn fail_over(&self) -> Result<Option<String>, LocalError> {
        self.fault(Fault::FailOver).await
    }

    /// Answers the next `calls` ACCEPTs with 503 Service Unavailable, as a master that
    /// fails (or a proxy that loses the answer) would. With `applied`, each is carried out
    /// first, so its tasks launch though the framework saw an error; without, it is
    /// dropped, and its offers stay outstanding until declined. Returns `calls`.
    ///
    /// # Errors
    /// [`LocalError::Stopped`] once mesos-local has stopped.
    pub async fn fail_accepts(
        &self,
        calls: usize,
        applied: bool,
    ) -> Result<Option<String>, LocalError> {
        self.fault(Fault::FailAccepts(master::AcceptFault { calls, applied }))
            .await
    }

    /// A view of the master's state.
    ///
    /// # Errors
    /// [`LocalError::Stopped`] once mesos-local has stopped.
    pub async fn snapshot(&self) -> Result<Snapshot, LocalError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Snapshot { reply: tx })
            .map_err(|_| LocalError::Stopped)?;
        rx.await.map_err(|_| LocalError::Stopped)
    }
}

/// The `paas serve` flags of mesos-local (flattened into `serve`'s arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// mesos-local (when no --master is given): number of agents.
    #[arg(long, env = "PAAS_LOCAL_AGENTS", default_value_t = 1)]
    pub local_agents: usize,
    /// mesos-local: resources of each agent, in the Mesos agent `--resources` syntax.
    #[arg(long, env = "PAAS_LOCAL_RESOURCES", default_value = DEFAULT_RESOURCES)]
    pub local_resources: String,
    /// mesos-local: how executors run: `process` (on the host; the node image is ignored),
    /// `docker` (in the node image, host network), `auto` (docker when the daemon answers
    /// and the image is present locally, else process), `simulated` (no process at all).
    #[arg(long, env = "PAAS_LOCAL_CONTAINERIZER", default_value = "auto")]
    pub local_containerizer: String,
    /// mesos-local: address of its master and agents (port 0 picks one; it is logged).
    #[arg(long, env = "PAAS_LOCAL_LISTEN", default_value = "127.0.0.1:0")]
    pub local_listen: SocketAddr,
}

impl LocalArgs {
    /// The configuration these flags describe, with sandboxes under `<data>/mesos-local`.
    ///
    /// # Errors
    /// [`LocalError::Resources`] or [`LocalError::Containerizer`] for a flag that does not
    /// parse.
    pub fn config(&self, data: &std::path::Path) -> Result<LocalConfig, LocalError> {
        let mut cfg = LocalConfig::new(data.join("mesos-local"));
        cfg.listen = self.local_listen;
        cfg.agents = self.local_agents.max(1);
        cfg.resources = Quantities::parse(&self.local_resources)?;
        cfg.containerizer = self.local_containerizer.parse()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        assert!(Quantities::parse(DEFAULT_RESOURCES).is_ok());
        assert_eq!(
            "process".parse::<ContainerizerMode>().unwrap(),
            ContainerizerMode::Process
        );
        assert!("podman".parse::<ContainerizerMode>().is_err());
    }
}
