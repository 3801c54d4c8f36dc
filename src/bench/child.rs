//! A `paas` child process started by a benchmark (`paas serve …` or the bare server), so
//! that what is measured runs in a process of its own: its CPU and RSS are its own, and the
//! benchmark's client does not share its runtime.
//!
//! No orphan: the child is stopped by its PID when the [`ChildProc`] is dropped (the end of
//! a run, an error, or Ctrl-C, which drops the benchmark's future), first with SIGTERM, then
//! SIGKILL; and the kernel kills it (SIGKILL, `PR_SET_PDEATHSIG`) if this process dies
//! first. SIGKILL there, not SIGTERM: a `serve` whose reader was killed mid-burst was seen to
//! keep serving after a SIGTERM, and an orphan is worse than a leftover directory in /tmp.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Errors of starting or watching a child.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("cannot find this executable")]
    Exe(#[source] std::io::Error),
    #[error("cannot start `paas {0}`")]
    Spawn(String, #[source] std::io::Error),
    #[error("`paas {what}` did not print {wanted:?} within {after:?}; its last output:\n{output}")]
    NoLine {
        what: String,
        wanted: String,
        after: Duration,
        output: String,
    },
}

/// A running child `paas` process, stopped when dropped.
pub struct ChildProc {
    child: Child,
    /// What it runs, for messages.
    what: String,
    /// Lines of its stderr then stdout, read by threads so that it never blocks on a pipe.
    lines: mpsc::Receiver<String>,
    /// The last lines seen, for error messages.
    seen: Vec<String>,
}

impl ChildProc {
    /// Starts this binary with `args`; its output is read, not shown.
    ///
    /// # Errors
    /// [`ChildError::Exe`] or [`ChildError::Spawn`].
    pub fn spawn(args: &[&str]) -> Result<Self, ChildError> {
        let exe = std::env::current_exe().map_err(ChildError::Exe)?;
        let what = args.join(" ");
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .env("RUST_LOG", "info")
            .env_remove("MESOS_MASTER")
            .env_remove("PAAS_TOKENS")
            .env_remove("PAAS_LISTEN")
            .env_remove("PAAS_DATA")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: prctl(2) is async-signal-safe and touches nothing of the parent. The signal
        // fires when the spawning *thread* exits: benchmarks spawn from the thread that runs
        // `block_on`, which lives as long as the process.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| ChildError::Spawn(what.clone(), e))?;
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stderr.take() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    // The receiver may be gone; keep draining so the child never blocks.
                    let _ = tx.send(line);
                }
            });
        }
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Ok(Self {
            child,
            what,
            lines,
            seen: Vec::new(),
        })
    }

    /// `paas serve --listen 127.0.0.1:0 --data <data> <extra…>`, once it serves: the child
    /// and its base URL (`http://127.0.0.1:<port>`).
    ///
    /// # Errors
    /// As [`ChildProc::spawn`], or [`ChildError::NoLine`] if it does not serve in `within`.
    pub fn serve(
        data: &Path,
        extra: &[&str],
        within: Duration,
    ) -> Result<(Self, String), ChildError> {
        let data = data.display().to_string();
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data", &data];
        args.extend_from_slice(extra);
        let mut child = Self::spawn(&args)?;
        let url = child.serving_url(within)?;
        Ok((child, url))
    }

    /// `paas serve` running mesos-local alone: `agents` simulated agents (no process per
    /// task) of `resources` each, with data in `data`. The child, the master's URL and the
    /// child's own API URL, once it serves.
    ///
    /// # Errors
    /// As [`ChildProc::spawn`], or [`ChildError::NoLine`] if it does not start in a minute
    /// or names no master.
    pub fn simulated_master(
        data: &Path,
        agents: usize,
        resources: &str,
    ) -> Result<(Self, String, String), ChildError> {
        let data = data.display().to_string();
        let agents = agents.to_string();
        let mut child = Self::spawn(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            &data,
            "--local-containerizer",
            "simulated",
            "--local-agents",
            &agents,
            "--local-resources",
            resources,
        ])?;
        let within = Duration::from_secs(60);
        let wanted = "mesos-local started";
        let line = child.wait_line(wanted, within)?;
        let Some(master) = master_in(&line) else {
            return Err(ChildError::NoLine {
                what: child.what.clone(),
                wanted: format!("{wanted} … master=<URL>"),
                after: within,
                output: line,
            });
        };
        let url = child.serving_url(within)?;
        Ok((child, master, url))
    }

    /// Its CPU time to the nanosecond: the sum over its threads of what the scheduler counts
    /// them to have run (`/proc/<pid>/task/*/schedstat`; threads that ended are not counted).
    pub fn cpu_precise(&self) -> Option<Duration> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).ok()?;
        let mut ns = 0u64;
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Some(Duration::from_nanos(ns))
    }

    /// Kills it with SIGKILL, as a crash would, and reaps it.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for `serve`'s "paas serving on http://…" line; returns `http://host:port`.
    ///
    /// # Errors
    /// [`ChildError::NoLine`].
    pub fn serving_url(&mut self, within: Duration) -> Result<String, ChildError> {
        let line = self.wait_line("paas serving on http://", within)?;
        Ok(url_after(&line, "paas serving on ").unwrap_or_default())
    }

    /// Waits for a line containing `wanted`, and returns it.
    ///
    /// # Errors
    /// [`ChildError::NoLine`] after `within`, or when the child's output ends.
    pub fn wait_line(&mut self, wanted: &str, within: Duration) -> Result<String, ChildError> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(wanted) => return Ok(line),
                Ok(line) => {
                    if self.seen.len() >= 40 {
                        self.seen.remove(0);
                    }
                    self.seen.push(line);
                }
                Err(_) => {
                    return Err(ChildError::NoLine {
                        what: self.what.clone(),
                        wanted: wanted.to_owned(),
                        after: within,
                        output: self.seen.join("\n"),
                    });
                }
            }
        }
    }

    /// The lines it printed since the last call (or its start) that nobody waited for,
    /// without waiting.
    pub fn take_lines(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident set (`VmRSS`), in bytes; `None` once it has exited.
    pub fn rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    /// Its CPU time so far (user + system).
    pub fn cpu(&self) -> Option<Duration> {
        cpu_of(&format!("/proc/{}/stat", self.pid()))
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped, so the PID
        // cannot have been reused.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `http://host:port` that follows `marker` in a log line, up to the API's base path.
fn url_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let end = rest
        .find(crate::api::routes::BASE)
        .or_else(|| rest.find(char::is_whitespace))
        .unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

/// The `master=http://…` of mesos-local's start line.
pub fn master_in(line: &str) -> Option<String> {
    let rest = &line[line.find("master=")? + "master=".len()..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_owned())
}

/// User + system CPU time of a process, from its `/proc/<pid>/stat` (or `/proc/self/stat`).
pub fn cpu_of(stat_path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The command name (field 2) may hold spaces; the fields after its `)` are fixed.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) are the 12th and 13th after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    Some(Duration::from_micros(ticks * 1_000_000 / hz))
}

/// What `getrusage(2)` counts for this process or for the calling thread: CPU time in user
/// and in system mode (to the microsecond, where `/proc/<pid>/stat` counts clock ticks of
/// 10 ms), minor page faults and context switches (voluntary and involuntary).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub user: Duration,
    pub system: Duration,
    pub minor_faults: u64,
    pub switches: u64,
}

impl Usage {
    /// The whole process's, every thread included.
    pub fn of_process() -> Option<Usage> {
        Self::of(libc::RUSAGE_SELF)
    }

    /// The calling thread's.
    pub fn of_thread() -> Option<Usage> {
        Self::of(libc::RUSAGE_THREAD)
    }

    fn of(who: libc::c_int) -> Option<Usage> {
        // SAFETY: an all-zero rusage is a valid value of the C struct, and getrusage only
        // writes into the one it is given.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid, writable rusage; `who` is one of the values it takes.
        if unsafe { libc::getrusage(who, &raw mut ru) } != 0 {
            return None;
        }
        let time = |t: libc::timeval| {
            Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
                + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
        };
        let count = |n: libc::c_long| u64::try_from(n).unwrap_or(0);
        Some(Usage {
            user: time(ru.ru_utime),
            system: time(ru.ru_stime),
            minor_faults: count(ru.ru_minflt),
            switches: count(ru.ru_nvcsw) + count(ru.ru_nivcsw),
        })
    }

    /// User and system time.
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }

    /// What was counted from `earlier` to `self` (each count at least 0).
    #[must_use]
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            minor_faults: self.minor_faults.saturating_sub(earlier.minor_faults),
            switches: self.switches.saturating_sub(earlier.switches),
        }
    }
}

/// Megabytes, for printing.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_serving_url_and_the_master() {
        let line = "2026-12-02T02:00:00Z  INFO paas: paas serving on http://127.0.0.1:4242/bigdata/api/v1 listen=127.0.0.1:4242";
        assert_eq!(
            url_after(line, "paas serving on ").as_deref(),
            Some("http://127.0.0.1:4242")
        );
        let line = "INFO paas::mesos_local: mesos-local started master=http://127.0.0.1:39999 agents=100 resources=cpus:4";
        assert_eq!(master_in(line).as_deref(), Some("http://127.0.0.1:39999"));
        assert_eq!(master_in("no master here"), None);
    }

    #[test]
    fn reads_own_cpu_time() {
        assert!(cpu_of("/proc/self/stat").is_some());
        assert!(cpu_of("/proc/self/no-such-file").is_none());
    }

    #[test]
    fn usage_counts_what_this_thread_does_and_the_process_holds_it() {
        let before = Usage::of_thread().unwrap();
        let process_before = Usage::of_process().unwrap();
        // Touch fresh pages (mapped here, so that no allocator hands back pages it already
        // touched) and burn CPU until the clock moves.
        let len = 1 << 20;
        // SAFETY: an anonymous private mapping of `len` bytes, no address asked for.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED);
        for i in (0..len).step_by(4096) {
            // SAFETY: `i < len`, inside the mapping, which is writable.
            unsafe { map.cast::<u8>().add(i).write_volatile(1) };
        }
        // SAFETY: the mapping made above, of that length, no longer used.
        assert_eq!(unsafe { libc::munmap(map, len) }, 0);
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(7));
        }
        std::hint::black_box(x);
        let thread = Usage::of_thread().unwrap().since(&before);
        let process = Usage::of_process().unwrap().since(&process_before);
        assert!(thread.cpu() >= Duration::from_millis(10), "{thread:?}");
        assert!(thread.minor_faults >= 200, "{thread:?}");
        // The process's count holds the thread's (give or take the kernel's rounding of
        // the user/system split, well under a millisecond).
        assert!(
            process.cpu() + Duration::from_millis(1) >= thread.cpu(),
            "{process:?} against {thread:?}"
        );
        // Counts never go below zero, whatever the order.
        assert_eq!(
            before.since(&Usage::of_thread().unwrap()).cpu(),
            Duration::ZERO
        );
    }
}
