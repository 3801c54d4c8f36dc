//! Processes that must not outlive a crash of `paas serve`: a record of each one on disk, and
//! the recovery that kills, at the next start, those still running.
//!
//! A process is recorded by its pid and its start time (clock ticks after boot, field 22 of
//! `/proc/<pid>/stat`); the start time tells it apart from a later process that got the same
//! pid, which recovery leaves alone. A recorded process leads its own process group; recovery
//! kills the group and every descendant found in `/proc` (they may have made groups of their
//! own), then waits, bounded, until they are gone (their sockets and ports with them).
//!
//! Two owners use it: mesos-local for its executor processes (`mesos_local::instance`) and the
//! orchestrator for the scripts it runs (`orchestrator::script`).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// How long killed processes get to disappear.
pub const EXIT_WAIT: Duration = Duration::from_secs(5);

/// A recorded process: its pid and its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidRecord {
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

    /// Parses [`Self::to_line`]; `None` for garbage and for pids 0 and 1.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split_whitespace();
        let pid = it.next()?.parse().ok()?;
        let start_time = it.next()?.parse().ok()?;
        (pid > 1).then_some(Self { pid, start_time })
    }

    /// The record in file `path`; `None` when it is missing or unreadable.
    pub fn read(path: &Path) -> Option<Self> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// Whether the process is still the one recorded (alive, same start time, not a zombie).
    pub fn is_alive_same(self) -> bool {
        ProcStat::read(self.pid).is_some_and(|s| s.start_time == self.start_time && s.state != 'Z')
    }

    /// Kills the recorded process, its group and its descendants when it is still the same
    /// process; the pids signalled (empty when it was gone or its pid reused).
    pub fn kill_if_same(self) -> Vec<i32> {
        if self.is_alive_same() {
            kill_tree(self.pid)
        } else {
            Vec::new()
        }
    }
}

/// The fields of `/proc/<pid>/stat` recovery needs.
pub struct ProcStat {
    pub state: char,
    pub ppid: i32,
    pub start_time: u64,
}

impl ProcStat {
    pub fn read(pid: i32) -> Option<Self> {
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

    /// Whether `pid` is gone or a zombie (its sockets are closed then).
    pub fn is_gone(pid: i32) -> bool {
        Self::read(pid).is_none_or(|s| s.state == 'Z')
    }
}

/// `pid` and every process below it, parents first.
pub fn descendants(pid: i32) -> Vec<i32> {
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

/// SIGKILLs `pid`'s process group (a recorded process leads one) and every descendant;
/// returns the pids signalled.
fn kill_tree(pid: i32) -> Vec<i32> {
    // The tree is read before anything dies: orphans would be re-parented out of it.
    let tree = descendants(pid);
    // SAFETY: kill(2) with a pid and a process group verified (start time) to be the
    // process we recorded, and processes found below it in /proc just now.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        for &p in &tree {
            libc::kill(p, libc::SIGKILL);
        }
    }
    tree
}

/// Waits, at most [`EXIT_WAIT`], until every process of `pids` is gone or a zombie;
/// whether they all are.
pub async fn wait_gone(pids: &[i32]) -> bool {
    let deadline = tokio::time::Instant::now() + EXIT_WAIT;
    while !pids.iter().all(|&p| ProcStat::is_gone(p)) {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(?pids, "recovery: killed processes still alive");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

#[cfg(test)]
mod tests {
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
        assert!(reused.kill_if_same().is_empty());
    }
}
