//! The node's command as an operating-system process: its environment, spawning it in its own
//! process group, signalling that group, reaping, and reading a wait status.
//!
//! Owns every `unsafe` libc call of the executor. It does not decide *when* to signal or what
//! a status means for Mesos: that is `supervisor`'s job.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;

use crate::domain::launch::NodeLaunch;

/// A child's process id; also its process-group id, since every command leads its own group.
pub type Pid = i32;

/// The environment of the node's command: the executor's own environment, then the launch's
/// `env`, then `PORT_<NAME>` per allocated port, then `CLUSTER_ID` and `NODE_NAME`. Later
/// entries win, so the scheduler's facts cannot be shadowed by a template's `env`.
pub fn node_env(
    base: impl IntoIterator<Item = (String, String)>,
    launch: &NodeLaunch,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = base.into_iter().collect();
    env.extend(launch.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(
        launch
            .ports
            .iter()
            .map(|(name, port)| (port_variable(name), port.to_string())),
    );
    env.insert("CLUSTER_ID".to_owned(), launch.cluster_id.to_string());
    env.insert("NODE_NAME".to_owned(), launch.node.clone());
    env
}

/// `PORT_<NAME>` for a port name: upper-cased, anything but `[A-Z0-9_]` becomes `_`.
pub fn port_variable(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("PORT_{name}")
}

/// Starts `argv` with exactly `env`, in a new process group led by the child, stdin closed and
/// stdout/stderr inherited (they land in the sandbox's `stdout`/`stderr` files).
///
/// # Errors
///
/// The `io::Error` of the spawn (e.g. `NotFound` when the binary is missing from the image), or
/// `InvalidInput` for an empty argv.
pub fn spawn(
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: Option<&Path>,
) -> io::Result<Pid> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        // Its own group, so a kill reaches whatever the command forks too.
        .process_group(0);
    if let Some(dir) = cwd.filter(|d| d.is_dir()) {
        cmd.current_dir(dir);
    }
    let child = cmd.spawn()?;
    // The `Child` handle is dropped without waiting: `reap` collects the status by pid, because
    // the executor may be PID 1 of its container and must reap orphans as well.
    Pid::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))
}

/// Sends `signal` to every process in the group `pgid`. A group that no longer exists is not
/// an error: the goal (nothing left to signal) is reached.
///
/// # Errors
///
/// The OS error of `kill(2)` other than `ESRCH`.
pub fn signal_group(pgid: Pid, signal: i32) -> io::Result<()> {
    if pgid <= 1 {
        // invariant-guard: kill(-1) or kill(0) would hit far more than one node's processes.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal group <= 1",
        ));
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses a group.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Collects the wait statuses of those of `pids` that have exited, without blocking. When
/// `reap_orphans` (we are PID 1 of a container), also collects any other exited child so
/// re-parented grandchildren do not pile up as zombies; those are returned too.
///
/// Only our own pids are waited for otherwise: `waitpid(-1)` would steal the statuses of
/// children other code in this process is waiting for (e.g. tests).
pub fn reap(pids: impl IntoIterator<Item = Pid>, reap_orphans: bool) -> Vec<(Pid, i32)> {
    let mut out = Vec::new();
    for pid in pids {
        if let Some(status) = try_wait(pid) {
            out.push((pid, status));
        }
    }
    if reap_orphans {
        while let Some(reaped) = try_wait_any() {
            out.push(reaped);
        }
    }
    out
}

fn try_wait(pid: Pid) -> Option<i32> {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer for the duration of the call.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    (rc == pid).then_some(status)
}

fn try_wait_any() -> Option<(Pid, i32)> {
    let mut status = 0;
    // SAFETY: as above.
    let rc = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (rc > 0).then_some((rc, status))
}

/// Whether this process is PID 1 (the container's init), so it must reap orphans.
pub fn is_init() -> bool {
    std::process::id() == 1
}

/// How a process ended, decoded from a raw `waitpid` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// Decodes a raw wait status.
    pub fn from_wait_status(status: i32) -> Self {
        if libc::WIFSIGNALED(status) {
            Exit::Signal(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with status {code}"),
            Exit::Signal(sig) => write!(f, "terminated by signal {sig} ({})", signal_name(*sig)),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::cluster::Command;
    use crate::domain::ids::ClusterId;

    fn launch() -> NodeLaunch {
        NodeLaunch {
            cluster_id: ClusterId(uuid::Uuid::nil()),
            node: "master-0".to_owned(),
            command: Some(Command::Argv(vec!["/bin/true".to_owned()])),
            env: [
                ("A".to_owned(), "from-launch".to_owned()),
                ("NODE_NAME".to_owned(), "spoof".to_owned()),
            ]
            .into(),
            ports: [("web-ui".to_owned(), 31000), ("rpc".to_owned(), 31001)].into(),
            agent_port: None,
            secret: "s".to_owned(),
        }
    }

    #[test]
    fn env_layers_in_order() {
        let base = [
            ("A".to_owned(), "from-executor".to_owned()),
            ("MESOS_SANDBOX".to_owned(), "/mnt/mesos/sandbox".to_owned()),
        ];
        let env = node_env(base, &launch());
        assert_eq!(env["A"], "from-launch");
        assert_eq!(env["MESOS_SANDBOX"], "/mnt/mesos/sandbox");
        assert_eq!(env["PORT_WEB_UI"], "31000");
        assert_eq!(env["PORT_RPC"], "31001");
        assert_eq!(env["CLUSTER_ID"], "00000000-0000-0000-0000-000000000000");
        assert_eq!(env["NODE_NAME"], "master-0");
    }

    #[test]
    fn port_variable_names() {
        assert_eq!(port_variable("http"), "PORT_HTTP");
        assert_eq!(port_variable("web-ui.v2"), "PORT_WEB_UI_V2");
    }

    #[test]
    fn wait_status_decoding() {
        // Raw statuses as Linux encodes them: code << 8, or the signal number.
        assert_eq!(Exit::from_wait_status(3 << 8), Exit::Code(3));
        assert_eq!(Exit::from_wait_status(0), Exit::Code(0));
        assert_eq!(Exit::from_wait_status(libc::SIGKILL), Exit::Signal(9));
        assert_eq!(Exit::Code(3).to_string(), "exited with status 3");
        assert_eq!(
            Exit::Signal(15).to_string(),
            "terminated by signal 15 (SIGTERM)"
        );
    }

    #[test]
    fn spawn_reports_missing_binary() {
        let err = spawn(&["/nonexistent/binary".to_owned()], &BTreeMap::new(), None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            spawn(&[], &BTreeMap::new(), None).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn refuses_to_signal_everything() {
        assert!(signal_group(1, libc::SIGTERM).is_err());
        assert!(signal_group(0, libc::SIGTERM).is_err());
    }
}
