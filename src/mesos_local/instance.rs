//! What one mesos-local instance owns on this machine, so that a restart after `kill -9`
//! cleans up after the previous run, as a Mesos agent recovers its executors, and never
//! touches what another instance owns (several run side by side on one machine, each on
//! its own work directory).
//!
//! Owns, under the work directory:
//! - `instance-id`: a random id, created once and read at every start. Every Docker
//!   container of the instance carries it as the label [`INSTANCE_LABEL`].
//! - `lock`: held (`flock`) while the instance runs, so two live processes never share a
//!   work directory, and so never clean up each other's executors.
//! - `pids/<container id>`: the pid and start time of each executor process it spawned (in
//!   Docker mode, the `docker run` client), written after the spawn, removed after the
//!   exit.
//!
//! [`Instance::recover`], at start, kills the recorded processes that are still the same
//! processes (same start time: a reused pid is left alone), with their descendants, and
//! removes the containers labelled with this instance's id, and those only.
//!
//! Does not own: the sandboxes (they stay for post-mortems, as on an agent) or any
//! container or process it did not record.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use crate::procs::{PidRecord, wait_gone};

/// The Docker label naming the instance that started a container.
pub const INSTANCE_LABEL: &str = "paas.mesos-local.instance";
const ID_FILE: &str = "instance-id";
const LOCK_FILE: &str = "lock";
const PIDS_DIR: &str = "pids";
/// How long `docker ps` / `docker rm` may take during recovery.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(30);

/// The id of one mesos-local instance (one work directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceId(String);

impl InstanceId {
    /// The id as stored and as put on labels.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        valid.then(|| Self(s.to_owned()))
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why the instance of a work directory cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is locked: another mesos-local runs on this work directory")]
    Locked { path: PathBuf },
    #[error(
        "{path} does not hold an instance id (letters, digits and '-'); remove it only if no container of this instance runs"
    )]
    BadId { path: PathBuf },
}

/// What [`Instance::recover`] cleaned up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Leftover containers removed.
    pub containers: usize,
    /// Leftover executor processes killed (descendants not counted).
    pub processes: usize,
}

/// One opened instance: its id and its lock, held until dropped.
#[derive(Debug)]
pub struct Instance {
    id: InstanceId,
    pids: PathBuf,
    /// Held for the instance's life; `flock` is released by the kernel when the process
    /// dies, `kill -9` included.
    _lock: File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstanceError + '_ {
    move |source| InstanceError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Instance {
    /// Locks `work_dir` and reads its instance id, creating both on first use.
    ///
    /// # Errors
    /// [`InstanceError::Locked`] when another live process holds the work directory,
    /// [`InstanceError::BadId`] for an unreadable id file, [`InstanceError::Io`] otherwise.
    pub fn open(work_dir: &Path) -> Result<Self, InstanceError> {
        std::fs::create_dir_all(work_dir).map_err(io(work_dir))?;
        let lock_path = work_dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(InstanceError::Locked { path: lock_path });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let id_path = work_dir.join(ID_FILE);
        let id = match std::fs::read_to_string(&id_path) {
            Ok(s) => InstanceId::parse(&s).ok_or(InstanceError::BadId {
                path: id_path.clone(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = InstanceId(uuid::Uuid::new_v4().simple().to_string());
                // Written aside then renamed: a crash never leaves a half-written id.
                let tmp = work_dir.join(format!("{ID_FILE}.tmp"));
                std::fs::write(&tmp, format!("{id}\n")).map_err(io(&tmp))?;
                std::fs::rename(&tmp, &id_path).map_err(io(&id_path))?;
                id
            }
            Err(e) => return Err(io(&id_path)(e)),
        };
        let pids = work_dir.join(PIDS_DIR);
        std::fs::create_dir_all(&pids).map_err(io(&pids))?;
        Ok(Self {
            id,
            pids,
            _lock: lock,
        })
    }

    pub fn id(&self) -> &InstanceId {
        &self.id
    }

    /// `docker run --label` value: `<INSTANCE_LABEL>=<id>`.
    pub fn label(&self) -> String {
        format!("{INSTANCE_LABEL}={}", self.id)
    }

    /// Where the pid of container `container_id`'s process is recorded.
    pub fn pid_file(&self, container_id: &str) -> PathBuf {
        self.pids.join(container_id)
    }

    /// Removes what an earlier run of this instance left: its executor processes (and
    /// their descendants) and its containers. Failures are logged and skipped: a leftover
    /// that cannot be removed must not keep mesos-local from starting.
    pub async fn recover(&self) -> Recovered {
        let mut recovered = Recovered::default();
        let mut killed = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.pids) {
            for entry in entries.flatten() {
                let path = entry.path();
                if let Some(record) = PidRecord::read(&path) {
                    let tree = record.kill_if_same();
                    if !tree.is_empty() {
                        tracing::info!(pid = record.pid, record = %path.display(), "recovery: killed a leftover executor process and its descendants");
                        killed.extend(tree);
                        recovered.processes += 1;
                    }
                }
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(error = %e, record = %path.display(), "recovery: cannot remove a pid record");
                }
            }
        }
        recovered.containers = self.remove_containers().await;
        wait_gone(&killed).await;
        recovered
    }

    async fn remove_containers(&self) -> usize {
        let filter = format!("label={}", self.label());
        let listed = docker(&["ps", "-aq", "--filter", &filter]).await;
        let Some(ids) = listed else {
            return 0;
        };
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return 0;
        }
        tracing::info!(containers = ids.len(), instance = %self.id, "recovery: removing leftover containers of this instance");
        let mut args = vec!["rm", "-f"];
        args.extend(&ids);
        if docker(&args).await.is_none() {
            tracing::warn!(instance = %self.id, "recovery: docker rm failed; leftover containers may hold ports");
        }
        ids.len()
    }
}

/// Runs `docker <args>`; its stdout when it succeeds, `None` when Docker is absent, slow
/// or fails (logged at debug: without Docker there is nothing to recover).
async fn docker(args: &[&str]) -> Option<String> {
    let run = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(DOCKER_TIMEOUT, run).await {
        Ok(Ok(out)) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into()),
        other => {
            tracing::debug!(?args, result = ?other.map(|r| r.map(|o| o.status)), "docker did not answer");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;
    use crate::procs::{ProcStat, descendants};

    #[test]
    fn the_id_is_created_once_and_the_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let first = Instance::open(dir.path()).unwrap();
        let id = first.id().clone();
        assert!(matches!(
            Instance::open(dir.path()),
            Err(InstanceError::Locked { .. })
        ));
        drop(first);
        let again = open_once_unlocked(dir.path()).unwrap();
        assert_eq!(again.id(), &id);
        assert_eq!(again.label(), format!("{INSTANCE_LABEL}={id}"));
        drop(again);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(Instance::open(other.path()).unwrap().id(), &id);
        std::fs::write(dir.path().join(ID_FILE), "not/an id").unwrap();
        assert!(matches!(
            open_once_unlocked(dir.path()),
            Err(InstanceError::BadId { .. })
        ));
    }

    /// [`Instance::open`] once no one else holds the lock: another test's child, forked but
    /// not exec'd yet, may share a just-released lock for a moment.
    fn open_once_unlocked(dir: &Path) -> Result<Instance, InstanceError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match Instance::open(dir) {
                Err(InstanceError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    #[tokio::test]
    async fn recovery_kills_a_recorded_process_tree_and_spares_a_reused_pid() {
        let dir = tempfile::tempdir().unwrap();
        let inst = Instance::open(dir.path()).unwrap();
        // A leader in its own group with a grandchild in another group, as an executor
        // with a service.
        let mut leader = std::process::Command::new("/bin/sh")
            .args(["-c", "setsid sleep 300 & sleep 300 & wait"])
            .process_group(0)
            .spawn()
            .unwrap();
        let mut bystander = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap();
        let rec = PidRecord::of(leader.id()).unwrap();
        std::fs::write(inst.pid_file("c1"), rec.to_line()).unwrap();
        // The bystander's pid with another start time: a pid reused since the record.
        let real = PidRecord::of(bystander.id()).unwrap();
        let stale = PidRecord {
            start_time: real.start_time + 1,
            ..real
        };
        std::fs::write(inst.pid_file("c2"), stale.to_line()).unwrap();
        // Let the shell start its children.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while descendants(rec.pid).len() < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let tree = descendants(rec.pid);
        assert_eq!(tree.len(), 3, "{tree:?}");

        let got = inst.recover().await;
        assert_eq!(got.processes, 1);
        // `recover` waited until the leader was a zombie: it must be reapable now.
        let status = leader.try_wait().unwrap();
        let _ = leader.kill();
        let _ = leader.wait();
        assert!(
            status.is_some_and(|s| s.code().is_none()),
            "leader not killed: {status:?}"
        );
        for p in &tree[1..] {
            assert!(ProcStat::is_gone(*p), "descendant {p} survived");
        }
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "the reused pid was killed"
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join(PIDS_DIR))
                .unwrap()
                .count(),
            0
        );
        let _ = bystander.kill();
        let _ = bystander.wait();
    }
}
