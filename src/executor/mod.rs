//! The Mesos v1 HTTP executor that runs inside each node container (`paas executor`).
//!
//! Owns the executor side of the Mesos executor API (SUBSCRIBE stream, UPDATE calls,
//! re-subscription when the agent checkpoints) and the supervision of the node's command:
//! it decodes the [`NodeLaunch`](crate::domain::launch::NodeLaunch) the scheduler put in
//! `TaskInfo.data`, runs the command in its own process group, reports TASK_RUNNING, and turns
//! exits and kills into TASK_FINISHED / TASK_FAILED / TASK_KILLED. It exits once every task is
//! terminal and acknowledged, on SHUTDOWN, or when the agent is gone for good.
//!
//! On LAUNCH it also starts the [`nodeagent`] gRPC server the orchestrator talks to (on the
//! launch's `agent_port`, over TLS with a certificate made at start, whose SHA-256 goes to the
//! scheduler in TASK_RUNNING's `data`; every call guarded by the cluster secret); the processes
//! it supervises are killed with the task. The executor must not depend on `api` or `scheduler`.
//!
//! [`nodetool`] (`paas node-tool`) also runs on the nodes: tiny commands for node images that
//! hold nothing but `/paas`.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = paas::executor::ExecutorConfig::from_env()?;
//! let shutdown = tokio_util::sync::CancellationToken::new(); // cancel on SIGTERM
//! paas::executor::run(cfg, shutdown).await?;
//! # Ok(()) }
//! ```

mod agent;
mod config;
pub mod exits;
pub mod nodeagent;
pub mod nodetool;
mod process;
pub use crate::recordio;
mod state;
mod supervisor;

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use agent::AgentError;
pub use config::{AgentEndpoint, ConfigError, ExecutorConfig, parse_duration};

/// How long queued calls may take to flush once the loop has ended.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the executor stopped other than by a clean SHUTDOWN or cancellation.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("executor configuration")]
    Config(#[from] ConfigError),
    #[error("cannot watch SIGCHLD")]
    Signal(#[source] std::io::Error),
    #[error("lost the agent without checkpointing: {0}")]
    Disconnected(String),
    #[error("could not (re-)subscribe to the agent within {after:?}: {last_error}")]
    RecoveryTimeout { after: Duration, last_error: String },
}

/// Runs the executor until it has nothing left to do.
///
/// Returns `Ok(())` after SHUTDOWN, after `shutdown` was cancelled (its tasks are killed and
/// reported first, within `MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD`), and once every task it ran
/// is terminal and acknowledged by the agent.
///
/// # Errors
///
/// [`ExecutorError::Disconnected`] when the agent stream broke and the framework does not
/// checkpoint, [`ExecutorError::RecoveryTimeout`] when (re-)subscribing failed for too long,
/// [`ExecutorError::Signal`] if SIGCHLD cannot be watched. Node processes are killed first.
pub async fn run(cfg: ExecutorConfig, shutdown: CancellationToken) -> Result<(), ExecutorError> {
    // Installed before any child exists, so no exit can go unnoticed.
    let mut sigchld = signal(SignalKind::child()).map_err(ExecutorError::Signal)?;
    let client = agent::MesosAgentClient::new(cfg.agent.clone(), cfg.auth_token.clone());
    info!(
        agent = %client.url(),
        framework_id = %cfg.framework_id,
        executor_id = %cfg.executor_id,
        checkpoint = cfg.checkpoint,
        "executor starting"
    );
    let tracker = TaskTracker::new();
    let stop_sending = CancellationToken::new();
    let (calls_tx, calls_rx) = mpsc::unbounded_channel();
    tracker.spawn(supervisor::send_calls(
        client.clone(),
        calls_rx,
        stop_sending.clone(),
    ));
    tracker.close();

    // The supervisor owns the queue's sender: when it returns, the queue closes and the sender
    // task drains what is left, then ends.
    let result = supervisor::Supervisor::new(cfg, client, calls_tx, exits::ExitBook::new())
        .run(shutdown, &mut sigchld)
        .await;
    if tokio::time::timeout(FLUSH_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        stop_sending.cancel();
        tracker.wait().await;
    }
    result
}
