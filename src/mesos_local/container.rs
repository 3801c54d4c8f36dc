//! The containerizers: how an executor runs on a simulated agent.
//!
//! - `process`: the executor is a child process of `paas` (our own binary with `executor`,
//!   unless the ExecutorInfo's command says otherwise). The ExecutorInfo's Docker image is
//!   **ignored**: the executor runs on the host, with the Mesos executor environment.
//! - `docker`: `docker run --net host` of the ExecutorInfo's image with the same
//!   environment (`-e`), the sandbox mounted at `/mnt/mesos/sandbox`, named `paaslocal-…`
//!   (never `mesos-…`: a real agent on this machine would kill those as its orphans),
//!   labelled with the instance id (see [`super::instance`]), no pull, removed on exit.
//! - `auto`: `docker` for an executor whose image is present locally when a Docker daemon
//!   answered at start, else `process`.
//!
//! Every container is watched by one task on the caller's tracker; it reports the exit
//! once, and stops the container on request or on shutdown.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ContainerizerMode;
use crate::procs::PidRecord;
use crate::proto::mesos::v1 as mesos;

/// Where the sandbox is mounted inside a Docker container (`--sandbox_directory`).
const DOCKER_SANDBOX: &str = "/mnt/mesos/sandbox";
/// Prefix of our container names; see the module doc for why not `mesos-`.
pub const CONTAINER_PREFIX: &str = "paaslocal-";
/// How long a container gets between SIGTERM and SIGKILL when everything stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It never ran (no image, no binary, no sandbox).
    LaunchFailed(String),
    /// It ran and exited with this raw `waitpid` status, when known.
    Exited(Option<i32>),
}

/// Everything needed to start one executor.
pub(crate) struct LaunchSpec {
    pub container_id: String,
    pub info: mesos::ExecutorInfo,
    /// The agent's executor environment, without `MESOS_SANDBOX` (it differs per runner).
    pub env: Vec<(String, String)>,
    pub sandbox: PathBuf,
    pub mode: ContainerizerMode,
    pub docker_available: bool,
    /// Our executor binary, for an ExecutorInfo without a command value.
    pub executor_path: Option<PathBuf>,
    pub role: String,
    /// `docker run --label`: the instance that owns the container (see [`super::instance`]).
    pub label: String,
    /// Where the pid of the process is recorded while it runs, for recovery after a crash.
    pub pid_file: PathBuf,
}

/// Asks a running container to stop.
#[derive(Debug, Clone)]
pub(crate) struct ContainerHandle {
    stop: mpsc::UnboundedSender<Duration>,
}

impl ContainerHandle {
    /// SIGTERM now, SIGKILL after `grace`. Idempotent; a no-op once it exited.
    pub fn stop(&self, grace: Duration) {
        let _ = self.stop.send(grace);
    }
}

/// Starts the container on `tracker`; `on_exit` is called exactly once, with the outcome.
pub(crate) fn spawn(
    spec: LaunchSpec,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
    on_exit: impl FnOnce(Outcome) + Send + 'static,
) -> ContainerHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    tracker.spawn(async move {
        let outcome = run(spec, rx, shutdown).await;
        on_exit(outcome);
    });
    ContainerHandle { stop: tx }
}

fn docker_image(info: &mesos::ExecutorInfo) -> Option<&str> {
    info.container
        .as_ref()
        .filter(|c| c.r#type == mesos::container_info::Type::Docker as i32)
        .and_then(|c| c.docker.as_ref())
        .map(|d| d.image.as_str())
}

/// Whether a Docker daemon answers (`docker version` within a few seconds).
pub async fn docker_answers() -> bool {
    let probe = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), probe).await,
        Ok(Ok(s)) if s.success()
    )
}

async fn image_present(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .is_ok_and(|s| s.success())
}

async fn run(
    spec: LaunchSpec,
    mut stop: mpsc::UnboundedReceiver<Duration>,
    shutdown: CancellationToken,
) -> Outcome {
    if let Err(e) = tokio::fs::create_dir_all(&spec.sandbox).await {
        return Outcome::LaunchFailed(format!(
            "cannot create the sandbox {}: {e}",
            spec.sandbox.display()
        ));
    }
    let image = docker_image(&spec.info).map(str::to_owned);
    let docker = match (spec.mode, &image) {
        (ContainerizerMode::Docker, Some(img)) => {
            if !image_present(img).await {
                return Outcome::LaunchFailed(format!(
                    "image {img} is not present locally (mesos-local never pulls)"
                ));
            }
            true
        }
        (ContainerizerMode::Auto, Some(img)) if spec.docker_available => {
            let present = image_present(img).await;
            if !present {
                tracing::warn!(image = %img, executor_id = %spec.info.executor_id.value, "image not present locally; running the executor as a process instead");
            }
            present
        }
        _ => false,
    };
    if !docker && let Some(img) = &image {
        tracing::info!(image = %img, executor_id = %spec.info.executor_id.value, "process containerizer: the executor's image is ignored; it runs on the host");
    }
    let name = format!("{CONTAINER_PREFIX}{}", spec.container_id);
    let child = if docker {
        docker_command(&spec, &name, image.as_deref().unwrap_or_default())
    } else {
        process_command(&spec)
    };
    let mut child = match child.and_then(|mut c| c.spawn()) {
        Ok(c) => c,
        Err(e) => return Outcome::LaunchFailed(format!("cannot start the executor: {e}")),
    };
    record_pid(&child, &spec.pid_file).await;
    let docker_name = docker.then_some(name);
    let status = supervise(&mut child, docker_name.as_deref(), &mut stop, &shutdown).await;
    if let Err(e) = tokio::fs::remove_file(&spec.pid_file).await {
        tracing::debug!(error = %e, record = %spec.pid_file.display(), "cannot remove a pid record");
    }
    Outcome::Exited(status)
}

/// Records the child's pid and start time, so a later start can kill it if we crash
/// (`kill -9` leaves it running: it is in its own process group). A failure only costs
/// that recovery, so it is logged and the executor runs on.
async fn record_pid(child: &Child, pid_file: &Path) {
    let Some(record) = child.id().and_then(PidRecord::of) else {
        return;
    };
    if let Err(e) = tokio::fs::write(pid_file, record.to_line()).await {
        tracing::warn!(error = %e, record = %pid_file.display(), "cannot record an executor's pid; a crash would leave it running");
    }
}

fn log_files(sandbox: &Path) -> std::io::Result<(Stdio, Stdio)> {
    let out = std::fs::File::create(sandbox.join("stdout"))?;
    let err = std::fs::File::create(sandbox.join("stderr"))?;
    Ok((Stdio::from(out), Stdio::from(err)))
}

fn user_env(info: &mesos::ExecutorInfo) -> Vec<(String, String)> {
    info.command
        .as_ref()
        .and_then(|c| c.environment.as_ref())
        .map(|e| {
            e.variables
                .iter()
                .filter_map(|v| v.value.clone().map(|val| (v.name.clone(), val)))
                .collect()
        })
        .unwrap_or_default()
}

fn process_command(spec: &LaunchSpec) -> std::io::Result<Command> {
    let cmd_info = spec.info.command.clone().unwrap_or_default();
    let mut cmd = match cmd_info.value.as_deref().filter(|v| !v.is_empty()) {
        Some(value) if cmd_info.shell.unwrap_or(true) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(value);
            c
        }
        Some(value) => {
            let mut c = Command::new(value);
            if let Some((argv0, rest)) = cmd_info.arguments.split_first() {
                c.arg0(argv0).args(rest);
            }
            c
        }
        None => {
            let exe = match &spec.executor_path {
                Some(p) => p.clone(),
                None => std::env::current_exe()?,
            };
            let mut c = Command::new(exe);
            c.arg("executor");
            c
        }
    };
    let (out, err) = log_files(&spec.sandbox)?;
    // The framework's variables first, the agent's win on clashes (as in Mesos).
    cmd.envs(user_env(&spec.info))
        .envs(spec.env.iter().cloned())
        .env("MESOS_SANDBOX", &spec.sandbox)
        .current_dir(&spec.sandbox)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own process group, so a stop reaches whatever it started.
        .process_group(0)
        // A runtime that goes away without stopping it (a test that panics) takes it
        // along; `kill -9` of the whole process is left to `instance` recovery.
        .kill_on_drop(true);
    Ok(cmd)
}

fn docker_command(spec: &LaunchSpec, name: &str, image: &str) -> std::io::Result<Command> {
    let mut cmd = Command::new("docker");
    cmd.args([
        "run", "--rm", "--name", name, "--net", "host", "--pull", "never",
    ]);
    cmd.arg("--label").arg(&spec.label);
    let mut env = user_env(&spec.info);
    env.extend(spec.env.iter().cloned());
    env.push(("MESOS_SANDBOX".into(), DOCKER_SANDBOX.into()));
    env.push(("MESOS_CONTAINER_NAME".into(), name.to_owned()));
    env.push(("MESOS_ALLOCATION_ROLE".into(), spec.role.clone()));
    for (k, v) in env {
        cmd.arg("-e").arg(format!("{k}={v}"));
    }
    cmd.arg("-v")
        .arg(format!("{}:{DOCKER_SANDBOX}", spec.sandbox.display()));
    if let Some(c) = &spec.info.container {
        for v in &c.volumes {
            if let Some(host) = &v.host_path {
                let mode = if v.mode == mesos::volume::Mode::Ro as i32 {
                    "ro"
                } else {
                    "rw"
                };
                cmd.arg("-v")
                    .arg(format!("{host}:{}:{mode}", v.container_path));
            }
        }
    }
    let cmd_info = spec.info.command.clone().unwrap_or_default();
    let shell = cmd_info.shell.unwrap_or(true);
    let value = cmd_info.value.filter(|v| !v.is_empty());
    if shell && value.is_some() {
        cmd.args(["--entrypoint", "/bin/sh"]);
    }
    cmd.arg(image);
    match (shell, value) {
        (true, Some(v)) => {
            cmd.arg("-c").arg(v);
        }
        (false, Some(v)) => {
            cmd.arg(v).args(cmd_info.arguments);
        }
        // No value: the image's own ENTRYPOINT/CMD runs.
        (_, None) => {}
    }
    let (out, err) = log_files(&spec.sandbox)?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        // As for a process; the container itself is removed by `instance` recovery.
        .kill_on_drop(true);
    Ok(cmd)
}

/// Waits for the child; on a stop request or shutdown, terminates it (and its container).
async fn supervise(
    child: &mut Child,
    docker: Option<&str>,
    stop: &mut mpsc::UnboundedReceiver<Duration>,
    shutdown: &CancellationToken,
) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    let grace = tokio::select! {
        status = child.wait() => return status.ok().map(|s| s.into_raw()),
        Some(grace) = stop.recv() => grace,
        () = shutdown.cancelled() => SHUTDOWN_GRACE,
    };
    terminate(child, docker, grace).await;
    match tokio::time::timeout(grace + Duration::from_secs(1), child.wait()).await {
        Ok(status) => status.ok().map(|s| s.into_raw()),
        Err(_) => {
            kill_group(child, libc::SIGKILL);
            if let Some(name) = docker {
                docker_rm(name).await;
            }
            child.wait().await.ok().map(|s| s.into_raw())
        }
    }
}

async fn terminate(child: &Child, docker: Option<&str>, grace: Duration) {
    match docker {
        Some(name) => {
            let secs = grace.as_secs().to_string();
            let stopped = Command::new("docker")
                .args(["stop", "-t", &secs, name])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .status();
            if !matches!(
                tokio::time::timeout(grace + Duration::from_secs(10), stopped).await,
                Ok(Ok(s)) if s.success()
            ) {
                docker_rm(name).await;
            }
        }
        None if grace.is_zero() => kill_group(child, libc::SIGKILL),
        None => {
            kill_group(child, libc::SIGTERM);
        }
    }
}

async fn docker_rm(name: &str) {
    let _ = Command::new("docker")
        .args(["rm", "-f", name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await;
}

fn kill_group(child: &Child, signal: i32) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on the process group we created for this child (pgid = its pid);
        // the child is not reaped yet, so the group id cannot have been reused.
        unsafe {
            libc::kill(-(pid as i32), signal);
        }
    }
}
