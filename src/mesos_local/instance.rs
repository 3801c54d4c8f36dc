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

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// The Docker label naming the instance that started a container.
pub const INSTANCE_LABEL: &str = "paas.mesos-local.instance";
const ID_FILE: &str = "instance-id";
const LOCK_FILE: &str = "lock";
const PIDS_DIR: &str = "pids";
/// How long `docker ps` / `docker rm` may take during recovery.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long killed processes get to disappear (their sockets close when they do).
const EXIT_WAIT: Duration = Duration::from_secs(5);

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
                if let Some(record) = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| PidRecord::parse(&s))
                    && record.is_alive_same()
                {
                    tracing::info!(pid = record.pid, record = %path.display(), "recovery: killing a leftover executor process and its descendants");
                    killed.extend(kill_tree(record.pid));
                    recovered.processes += 1;
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

/// A recorded executor process: its pid and its start time (clock ticks after boot, field
/// 22 of `/proc/<pid>/stat`), which tells it apart from a later process with the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PidRecord {
    pub pid: i32,
    pub start_time: u64,
}

impl PidRecord {
    /// The record of the running process `pid`; `None` when it is already gone.
    pub fn of(pid: u32) -> Option<Self> {
        let pid = i32::try_from(pid).ok()?;
        let stat = ProcStat::read(pid)?;
        Some(Self {
            pid,
            start_time: stat.start_time,
        })
    }

    /// `<pid> <start time>`.
    pub fn to_line(self) -> String {
        format!("{} {}\n", self.pid, self.start_time)
    }

    fn parse(s: &str) -> Option<Self> {
        let mut it = s.split_whitespace();
        let pid = it.next()?.parse().ok()?;
        let start_time = it.next()?.parse().ok()?;
        (pid > 1).then_some(Self { pid, start_time })
    }

    /// Whether the process is still the one recorded (alive, same start time, not a zombie).
    fn is_alive_same(self) -> bool {
        ProcStat::read(self.pid).is_some_and(|s| s.start_time == self.start_time && s.state != 'Z')
    }
}

/// The fields of `/proc/<pid>/stat` recovery needs.
pub(crate) struct ProcStat {
    pub(crate) state: char,
    ppid: i32,
    start_time: u64,
}

impl ProcStat {
    pub(crate) fn read(pid: i32) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// `pid (comm) state ppid … starttime …`; `comm` may hold spaces and parentheses, so
    /// the fields are counted from the last `)`.
    fn parse(s: &str) -> Option<Self> {
        let rest = &s[s.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(Self {
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            // Field 22 overall; the first field after `)` is field 3.
            start_time: fields.get(19)?.parse().ok()?,
        })
    }
}

/// `pid` and every process below it, parents first.
fn descendants(pid: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if let Some(stat) = ProcStat::read(p) {
                children.entry(stat.ppid).or_default().push(p);
            }
        }
    }
    let mut out = vec![pid];
    let mut seen: HashSet<i32> = HashSet::from([pid]);
    let mut i = 0;
    while i < out.len() {
        for &c in children.get(&out[i]).map(Vec::as_slice).unwrap_or(&[]) {
            if seen.insert(c) {
                out.push(c);
            }
        }
        i += 1;
    }
    out
}

/// SIGKILLs `pid`'s process group (it leads one: see `container`) and every descendant,
/// which may have made groups of their own; returns the pids signalled.
fn kill_tree(pid: i32) -> Vec<i32> {
    // The tree is read before anything dies: orphans would be re-parented out of it.
    let tree = descendants(pid);
    // SAFETY: kill(2) with a pid and a process group verified (start time) to be the
    // executor we recorded, and processes found below it in /proc just now.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        for &p in &tree {
            libc::kill(p, libc::SIGKILL);
        }
    }
    tree
}

/// Waits (bounded) until the killed processes (descendants included: a node's service
/// holds ports too) are gone or zombies: their sockets are closed then.
async fn wait_gone(pids: &[i32]) {
    let deadline = tokio::time::Instant::now() + EXIT_WAIT;
    while pids
        .iter()
        .any(|&p| ProcStat::read(p).is_some_and(|s| s.state != 'Z'))
    {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(?pids, "recovery: killed processes still alive");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    #[test]
    fn proc_stat_is_read_from_the_last_parenthesis() {
        let line =
            "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let s = ProcStat::parse(line).unwrap();
        assert_eq!((s.state, s.ppid, s.start_time), ('S', 17, 987654));
        assert!(ProcStat::parse("12 (x) S").is_none());
    }

    #[test]
    fn pid_records_round_trip_and_reject_init_and_garbage() {
        let r = PidRecord {
            pid: 4242,
            start_time: 99,
        };
        assert_eq!(PidRecord::parse(&r.to_line()), Some(r));
        for bad in ["", "1 5", "0 5", "x 5", "42", "42 y"] {
            assert_eq!(PidRecord::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_record_only_matches_the_same_process() {
        let me = PidRecord::of(std::process::id()).unwrap();
        assert!(me.is_alive_same());
        let reused = PidRecord {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!reused.is_alive_same());
    }

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
        // Another test's child, forked but not exec'd yet, may share the lock for a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let again = loop {
            match Instance::open(dir.path()) {
                Err(InstanceError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => break other.unwrap(),
            }
        };
        assert_eq!(again.id(), &id);
        assert_eq!(again.label(), format!("{INSTANCE_LABEL}={id}"));
        drop(again);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(Instance::open(other.path()).unwrap().id(), &id);
        std::fs::write(dir.path().join(ID_FILE), "not/an id").unwrap();
        assert!(matches!(
            Instance::open(dir.path()),
            Err(InstanceError::BadId { .. })
        ));
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
            assert!(
                ProcStat::read(*p).is_none_or(|s| s.state == 'Z'),
                "descendant {p} survived"
            );
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
