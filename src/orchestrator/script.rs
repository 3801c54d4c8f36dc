//! Runs a product's orchestration script on the framework host: `SCRIPT start` after the
//! services are up, `SCRIPT stop` when the cluster is destroyed.
//!
//! The script is written to a private temporary directory with the cluster description next to
//! it (`CLUSTER_JSON`, secret removed). Its interpreter comes from its shebang line (as the
//! kernel reads it: the interpreter path and at most one argument), `python3` without one. It
//! runs in its own process group, so a timeout or a shutdown kills whatever it started. Its
//! pid is recorded in the directory, and [`recover`], at the next start, kills a script (and
//! removes a directory) that an earlier process left when it died without cleaning up.
//! Output (stdout and stderr, interleaved as they arrive) goes to a caller-supplied sink.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::client::{Ended, tail_lines};
use crate::procs::{PidRecord, wait_gone};

/// Why a script could not be run at all (its own failure is an [`ScriptOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("cannot prepare the script directory {dir}")]
    Prepare {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start interpreter {interpreter:?}")]
    Spawn {
        interpreter: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cancelled")]
    Cancelled,
}

/// What one run of the script looks like from the outside.
#[derive(Debug, Clone)]
pub struct ScriptRun<'a> {
    /// The script's bytes, as uploaded.
    pub script: &'a [u8],
    /// `start`, `stop` or `stop-node NODE`: split on whitespace into the script's arguments
    /// (node names have no spaces).
    pub action: &'a str,
    /// The cluster description written to `CLUSTER_JSON`.
    pub cluster_json: &'a [u8],
    /// Extra environment (`CLUSTER_ID`, `PAAS_API_URL`).
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// Where the temporary directory goes.
    pub work_dir: &'a Path,
}

/// How a script run ended, with the tail of its output for messages.
#[derive(Debug, Clone)]
pub struct ScriptOutcome {
    pub ended: Ended,
    pub tail: String,
}

/// The interpreter argv for `script`: its shebang (`#!/usr/bin/env python3` → `["/usr/bin/env",
/// "python3"]`), else `["python3"]`.
pub fn interpreter(script: &[u8]) -> Vec<String> {
    let first = script.split(|b| *b == b'\n').next().unwrap_or_default();
    let Some(rest) = first.strip_prefix(b"#!") else {
        return vec!["python3".to_owned()];
    };
    let line = String::from_utf8_lossy(rest);
    let line = line.trim();
    // Like the kernel: the interpreter, then everything else as one optional argument.
    match line.split_once(char::is_whitespace) {
        None if line.is_empty() => vec!["python3".to_owned()],
        None => vec![line.to_owned()],
        Some((prog, arg)) => vec![prog.to_owned(), arg.trim().to_owned()],
    }
}

/// Runs the script to its end (or its timeout), passing output chunks to `sink` in order.
///
/// # Errors
/// [`ScriptError::Prepare`] / [`ScriptError::Spawn`] when it cannot be run at all,
/// [`ScriptError::Cancelled`] when `cancel` fired (the script is killed).
pub async fn run<F, Fut>(
    run: ScriptRun<'_>,
    cancel: &CancellationToken,
    mut sink: F,
) -> Result<ScriptOutcome, ScriptError>
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // Absolute: the script runs in its directory, so a relative path would not reach it.
    let dir = std::path::absolute(run.work_dir)
        .map_err(|source| ScriptError::Prepare {
            dir: run.work_dir.to_owned(),
            source,
        })?
        .join(format!("{RUN_PREFIX}{}", uuid::Uuid::new_v4().simple()));
    let prepare = |source| ScriptError::Prepare {
        dir: dir.clone(),
        source,
    };
    let script_path = dir.join("script");
    let json_path = dir.join("cluster.json");
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        std::fs::write(&script_path, run.script)?;
        std::fs::set_permissions(&script_path, std::fs::Permissions::from_mode(0o700))?;
        std::fs::write(&json_path, run.cluster_json)?;
        std::fs::set_permissions(&json_path, std::fs::Permissions::from_mode(0o600))?;
        Ok(())
    };
    // The cluster description is sensitive enough (addresses, ports): it goes whatever way
    // the run ends, also when this future is dropped mid-run (a shutdown, a caller's timeout).
    let _remove = RemoveDir(dir.clone());
    write().map_err(prepare)?;
    execute(&run, &dir, &script_path, &json_path, cancel, &mut sink).await
}

/// Every run's private directory is `<work_dir>/<RUN_PREFIX><uuid>`.
const RUN_PREFIX: &str = "paas-script-";
/// In a run's directory: the script's [`PidRecord`], written once it is spawned.
const PID_FILE: &str = "pid";

/// What [`recover`] cleaned up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Run directories removed.
    pub dirs: usize,
    /// Scripts still running, killed with their process groups and descendants.
    pub scripts: usize,
}

/// Removes what runs of an earlier process left in `work_dir`, whose end skipped the drop
/// guards (`kill -9`, a power cut): each run's directory, and its script with everything it
/// started when still running (by the start time of the recorded pid: a reused pid is left
/// alone). Waits, bounded, until the killed processes are gone.
///
/// Call it only on a directory no live process runs scripts in: `serve` does, at start, on
/// `<data>/scripts`, while it holds the store's lock on `<data>`.
pub async fn recover(work_dir: &Path) -> Recovered {
    let mut recovered = Recovered::default();
    let mut killed = Vec::new();
    let Ok(entries) = std::fs::read_dir(work_dir) else {
        return recovered;
    };
    for entry in entries.flatten() {
        let named_as_run = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(RUN_PREFIX));
        if !named_as_run || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = entry.path();
        if let Some(record) = PidRecord::read(&dir.join(PID_FILE)) {
            let tree = record.kill_if_same();
            if !tree.is_empty() {
                tracing::info!(pid = record.pid, dir = %dir.display(), "recovery: killed a script left running by an earlier process, with its descendants");
                killed.extend(tree);
                recovered.scripts += 1;
            }
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => recovered.dirs += 1,
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "recovery: cannot remove a script's directory");
            }
        }
    }
    wait_gone(&killed).await;
    recovered
}

/// Removes its directory when dropped.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the process group of a script not reaped yet when dropped: a run dropped mid-way
/// leaves none of the script's processes behind (its direct child alone would die by
/// `kill_on_drop`). Disarmed once the script is reaped, after which its group id may be reused.
struct KillGroup(Option<i32>);

impl KillGroup {
    fn now(&self) {
        if let Some(pgid) = self.0.filter(|p| *p > 1) {
            // SAFETY: kill(2) has no memory-safety preconditions; -pgid addresses the group
            // the script leads (never 0 or 1, filtered above).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

impl Drop for KillGroup {
    fn drop(&mut self) {
        self.now();
    }
}

async fn execute<F, Fut>(
    run: &ScriptRun<'_>,
    dir: &Path,
    script_path: &Path,
    json_path: &Path,
    cancel: &CancellationToken,
    sink: &mut F,
) -> Result<ScriptOutcome, ScriptError>
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let argv = interpreter(run.script);
    let (program, args) = argv.split_first().ok_or_else(|| ScriptError::Spawn {
        interpreter: String::new(),
        source: std::io::Error::other("empty interpreter"),
    })?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .arg(script_path)
        .args(run.action.split_whitespace())
        .envs(run.env.iter().map(|(k, v)| (k, v)))
        .env("CLUSTER_JSON", json_path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ScriptError::Spawn {
            interpreter: program.clone(),
            source,
        })?;
    let mut group = KillGroup(child.id().and_then(|p| i32::try_from(p).ok()));
    // For the next start's [`recover`], should this process die without its drop guards
    // (`kill -9`): the script leads its own group, which recovery kills.
    if let Some(record) = child.id().and_then(PidRecord::of) {
        let path = dir.join(PID_FILE);
        if let Err(e) = std::fs::write(&path, record.to_line()) {
            tracing::warn!(error = %e, path = %path.display(), "cannot record the script's pid; a crash now would leave it running");
        }
    }
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut all = Vec::new();
    let (mut b1, mut b2) = (vec![0u8; 8192], vec![0u8; 8192]);
    let deadline = tokio::time::sleep(run.timeout);
    tokio::pin!(deadline);
    let mut timed_out = false;
    let mut status = None;
    while status.is_none() || stdout.is_some() || stderr.is_some() {
        tokio::select! {
            r = read_opt(&mut stdout, &mut b1) => match r {
                Some(n) => { all.extend_from_slice(&b1[..n]); sink(b1[..n].to_vec()).await; }
                None => stdout = None,
            },
            r = read_opt(&mut stderr, &mut b2) => match r {
                Some(n) => { all.extend_from_slice(&b2[..n]); sink(b2[..n].to_vec()).await; }
                None => stderr = None,
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s);
                // Whatever it left behind in its group holds our pipes open; it goes too.
                group.now();
                group.0 = None;
            }
            () = &mut deadline, if !timed_out && status.is_none() => {
                timed_out = true;
                group.now();
            }
            () = cancel.cancelled(), if status.is_none() => {
                group.now();
                let _ = child.wait().await;
                group.0 = None;
                return Err(ScriptError::Cancelled);
            }
        }
    }
    let ended = match status {
        _ if timed_out => Ended::TimedOut,
        Some(Ok(s)) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
            (Some(c), _) => Ended::Code(c),
            (None, Some(sig)) => Ended::Signal(sig),
            (None, None) => Ended::NotStarted("unknown exit status".into()),
        },
        Some(Err(e)) => Ended::NotStarted(format!("cannot wait for the script: {e}")),
        None => Ended::NotStarted("no exit status".into()),
    };
    Ok(ScriptOutcome {
        ended,
        tail: tail_lines(&String::from_utf8_lossy(&all), 5),
    })
}

async fn read_opt<R: tokio::io::AsyncRead + Unpin>(
    p: &mut Option<R>,
    buf: &mut [u8],
) -> Option<usize> {
    match p {
        Some(p) => match p.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebangs() {
        assert_eq!(
            interpreter(b"#!/usr/bin/env python3\nprint(1)"),
            ["/usr/bin/env", "python3"]
        );
        assert_eq!(interpreter(b"#!/bin/sh\n"), ["/bin/sh"]);
        assert_eq!(interpreter(b"#! /bin/bash -eu \n"), ["/bin/bash", "-eu"]);
        assert_eq!(interpreter(b"print(1)\n"), ["python3"]);
        assert_eq!(interpreter(b""), ["python3"]);
        assert_eq!(interpreter(b"#!\n"), ["python3"]);
    }

    /// `SCRIPT start` of cluster `c1` (`CLUSTER_JSON` holds `{"id":"c1"}`) in `work_dir`.
    fn start<'a>(script: &'a [u8], work_dir: &'a Path, timeout: Duration) -> ScriptRun<'a> {
        ScriptRun {
            script,
            action: "start",
            cluster_json: br#"{"id":"c1"}"#,
            env: Vec::new(),
            timeout,
            work_dir,
        }
    }

    /// A script that starts a background `sleep`, writes its own pid and the sleep's to
    /// `pids`, then sleeps in the foreground.
    fn two_sleepers(pids: &Path, secs: u32) -> String {
        format!(
            "#!/bin/sh\nsleep {secs} &\necho $$ $! > {}\nsleep {secs}\n",
            pids.display()
        )
    }

    /// The pids [`two_sleepers`] wrote (none yet: empty).
    fn pids_in(pids: &Path) -> Vec<i32> {
        std::fs::read_to_string(pids)
            .unwrap_or_default()
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect()
    }

    async fn go(script: &str, timeout: Duration) -> (ScriptOutcome, String) {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let r = run(
            ScriptRun {
                env: vec![("CLUSTER_ID".into(), "c1".into())],
                ..start(script.as_bytes(), dir.path(), timeout)
            },
            &CancellationToken::new(),
            |chunk| {
                out.extend(chunk);
                async {}
            },
        )
        .await
        .unwrap();
        // The private directory is gone afterwards.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        (r, String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn runs_with_env_args_and_output() {
        let (r, out) = go(
            "#!/bin/sh\necho \"$1 $CLUSTER_ID $(cat $CLUSTER_JSON)\"\necho oops >&2\nexit 3\n",
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(r.ended, Ended::Code(3));
        assert!(out.contains(r#"start c1 {"id":"c1"}"#), "{out}");
        assert!(out.contains("oops"), "{out}");
        assert!(r.tail.contains("oops"), "{}", r.tail);
    }

    /// A relative work directory (`serve --data ./d`) still finds the script and its files.
    #[tokio::test]
    async fn a_relative_work_dir_is_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        // The same directory, from the current one: up to `/`, then down.
        let mut relative = PathBuf::new();
        for _ in std::env::current_dir().unwrap().components().skip(1) {
            relative.push("..");
        }
        relative.push(dir.path().strip_prefix("/").unwrap());
        let r = run(
            start(
                b"#!/bin/sh\ncat \"$CLUSTER_JSON\"\n",
                &relative,
                Duration::from_secs(10),
            ),
            &CancellationToken::new(),
            |_| async {},
        )
        .await
        .unwrap();
        assert_eq!(r.ended, Ended::Code(0), "{}", r.tail);
        assert!(r.tail.contains(r#"{"id":"c1"}"#), "{}", r.tail);
    }

    /// A run dropped while its script runs (a shutdown, a caller's timeout) leaves neither
    /// its private directory (the cluster's description) nor any process of the script.
    #[tokio::test]
    async fn a_run_dropped_midway_leaves_no_directory_and_no_process() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let script = two_sleepers(&pids, 30);
        let started = tokio::time::timeout(Duration::from_secs(2), async {
            run(
                start(script.as_bytes(), dir.path(), Duration::from_secs(60)),
                &CancellationToken::new(),
                |_| async {},
            )
            .await
        })
        .await;
        assert!(
            started.is_err(),
            "the script was still running: {started:?}"
        );
        let listed: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(listed, ["pids"], "the private directory is gone");
        let pids = pids_in(&pids);
        // Killed: gone, or a zombie until its parent (or init) reaps it.
        assert!(
            crate::procs::wait_gone(&pids).await,
            "a process of the script still runs: {pids:?}"
        );
    }

    /// A run whose process died without its drop guards (`kill -9` of serve; here the run's
    /// future is leaked mid-run, which skips them just as well) leaves its directory and its
    /// script; [`recover`] removes both, and spares a reused pid and what is not a run's.
    #[tokio::test]
    async fn recovery_kills_a_script_left_running_and_removes_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let script = two_sleepers(&pids, 300);
        let cancel = CancellationToken::new();
        let mut running = Box::pin(run(
            start(script.as_bytes(), dir.path(), Duration::from_secs(600)),
            &cancel,
            |_| async {},
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pids_in(&pids).len() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the script did not start"
            );
            tokio::select! {
                r = &mut running => panic!("the script ended: {r:?}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        std::mem::forget(running);
        let script_pids = pids_in(&pids);
        // A leftover run whose recorded pid now names another process (reused), and a
        // directory that is no run's.
        let mut bystander = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        let real = PidRecord::of(bystander.id()).unwrap();
        let reused = PidRecord {
            start_time: real.start_time + 1,
            ..real
        };
        let stale = dir.path().join(format!("{RUN_PREFIX}stale"));
        std::fs::create_dir(&stale).unwrap();
        std::fs::write(stale.join(PID_FILE), reused.to_line()).unwrap();
        std::fs::create_dir(dir.path().join("not-a-run")).unwrap();

        let got = recover(dir.path()).await;
        assert_eq!(
            got,
            Recovered {
                dirs: 2,
                scripts: 1
            }
        );
        for pid in script_pids {
            assert!(
                crate::procs::ProcStat::is_gone(pid),
                "process {pid} of the script survived"
            );
        }
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "a reused pid was killed"
        );
        let _ = bystander.kill();
        let _ = bystander.wait();
        let mut listed: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        listed.sort();
        assert_eq!(listed, ["not-a-run", "pids"]);
    }

    #[tokio::test]
    async fn times_out_and_kills_the_group() {
        let t0 = std::time::Instant::now();
        let (r, _) = go(
            "#!/bin/sh\nsleep 30 &\nsleep 30\n",
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(r.ended, Ended::TimedOut);
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
}
