//! The executor's bookkeeping, free of I/O: which tasks it holds, what runs for each, which
//! kills are pending, and which status updates the agent has not acknowledged yet.
//!
//! The agent must be able to rebuild its view from what we send on re-SUBSCRIBE, so this keeps
//! exactly what the protocol asks for: every TaskInfo until *some* update of that task is
//! acknowledged, and every update until its own uuid is acknowledged, in the order sent.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::process::Pid;
use crate::proto::mesos::v1::executor::call::Update;
use crate::proto::mesos::v1::task_status::{Reason, Source};
use crate::proto::mesos::v1::{AgentId, ExecutorId, TaskId, TaskInfo, TaskState, TaskStatus};

/// What runs for a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// Nothing: the node has no command, and the task stays up until it is killed.
    Idle,
    /// The node's command, leader of its own process group.
    Process { pid: Pid, kill: Option<Kill> },
    /// A terminal update has been issued; nothing runs any more.
    Done(TaskState),
}

/// A kill in progress: SIGTERM was sent; SIGKILL follows at `deadline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    pub deadline: Instant,
    pub escalated: bool,
}

/// One task the agent gave us.
#[derive(Debug, Clone)]
pub struct Entry {
    pub info: TaskInfo,
    pub run: Run,
    /// Some update of this task was acknowledged, so the agent surely knows the task.
    pub acknowledged: bool,
    /// `cluster_id` and `node` from the launch payload, for log fields.
    pub node: Option<(String, String)>,
}

/// Tasks and unacknowledged updates.
#[derive(Debug, Default)]
pub struct TaskBook {
    tasks: BTreeMap<String, Entry>,
    unacked: Vec<Update>,
    launched_any: bool,
}

impl TaskBook {
    /// Adds a launched task; `false` (and no change) if its id is already known.
    pub fn insert(&mut self, info: TaskInfo, run: Run) -> bool {
        let id = info.task_id.value.clone();
        if self.tasks.contains_key(&id) {
            return false;
        }
        self.launched_any = true;
        self.tasks.insert(
            id,
            Entry {
                info,
                run,
                acknowledged: false,
                node: None,
            },
        );
        true
    }

    pub fn get(&self, task_id: &str) -> Option<&Entry> {
        self.tasks.get(task_id)
    }

    pub fn get_mut(&mut self, task_id: &str) -> Option<&mut Entry> {
        self.tasks.get_mut(task_id)
    }

    /// Remembers an update until the agent acknowledges its uuid.
    pub fn record(&mut self, update: Update) {
        self.unacked.push(update);
    }

    /// Handles ACKNOWLEDGED; `false` if no such update was pending (a duplicate ack).
    pub fn acknowledge(&mut self, task_id: &str, uuid: &[u8]) -> bool {
        let before = self.unacked.len();
        self.unacked.retain(|u| {
            !(u.status.task_id.value == task_id && u.status.uuid.as_deref() == Some(uuid))
        });
        if let Some(entry) = self.tasks.get_mut(task_id) {
            entry.acknowledged = true;
        }
        self.unacked.len() != before
    }

    /// TaskInfos the agent may not have stored: no update of theirs was acknowledged yet.
    pub fn unacknowledged_tasks(&self) -> Vec<TaskInfo> {
        self.tasks
            .values()
            .filter(|e| !e.acknowledged)
            .map(|e| e.info.clone())
            .collect()
    }

    /// Updates not acknowledged yet, oldest first.
    pub fn unacknowledged_updates(&self) -> &[Update] {
        &self.unacked
    }

    /// The task whose process is `pid`.
    pub fn task_of_pid(&self, pid: Pid) -> Option<&str> {
        self.tasks.iter().find_map(|(id, e)| match e.run {
            Run::Process { pid: p, .. } if p == pid => Some(id.as_str()),
            _ => None,
        })
    }

    /// Pids of the processes still running.
    pub fn live_pids(&self) -> Vec<Pid> {
        self.tasks
            .values()
            .filter_map(|e| match e.run {
                Run::Process { pid, .. } => Some(pid),
                _ => None,
            })
            .collect()
    }

    /// Ids of the tasks not yet terminal.
    pub fn live_tasks(&self) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|(_, e)| !matches!(e.run, Run::Done(_)))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The earliest pending SIGKILL deadline.
    pub fn next_kill_deadline(&self) -> Option<Instant> {
        self.tasks
            .values()
            .filter_map(|e| match e.run {
                Run::Process {
                    kill:
                        Some(Kill {
                            deadline,
                            escalated: false,
                        }),
                    ..
                } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// Marks every kill due at `now` as escalated and returns the process groups to SIGKILL.
    pub fn take_due_escalations(&mut self, now: Instant) -> Vec<(String, Pid)> {
        let mut due = Vec::new();
        for (id, e) in &mut self.tasks {
            if let Run::Process {
                pid,
                kill: Some(kill),
            } = &mut e.run
                && !kill.escalated
                && kill.deadline <= now
            {
                kill.escalated = true;
                due.push((id.clone(), *pid));
            }
        }
        due
    }

    /// Every task is terminal.
    pub fn all_terminal(&self) -> bool {
        self.tasks.values().all(|e| matches!(e.run, Run::Done(_)))
    }

    /// The executor has done its job: it ran at least one task, every task is terminal and the
    /// agent acknowledged every update. A node container has nothing left to do then.
    pub fn finished(&self) -> bool {
        self.launched_any && self.all_terminal() && self.unacked.is_empty()
    }
}

/// Who we are when reporting.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub executor_id: String,
    /// Filled in from SUBSCRIBED; the agent fills it in anyway when missing.
    pub agent_id: Option<String>,
}

impl Reporter {
    /// A reliable executor status update: SOURCE_EXECUTOR, our executor id, the given v4 uuid
    /// (16 raw bytes) and timestamp (epoch seconds).
    pub fn status(
        &self,
        task_id: &str,
        state: TaskState,
        message: Option<String>,
        reason: Option<Reason>,
        uuid: uuid::Uuid,
        timestamp: f64,
    ) -> TaskStatus {
        debug_assert!(
            state != TaskState::TaskStaging,
            "executors never send TASK_STAGING"
        );
        TaskStatus {
            task_id: TaskId::from(task_id),
            state: state as i32,
            message,
            source: Some(Source::Executor as i32),
            reason: reason.map(|r| r as i32),
            agent_id: self.agent_id.clone().map(AgentId::from),
            executor_id: Some(ExecutorId::from(self.executor_id.as_str())),
            timestamp: Some(timestamp),
            uuid: Some(uuid.as_bytes().to_vec()),
            ..Default::default()
        }
    }
}

/// Seconds since the epoch, as `TaskStatus.timestamp` wants them.
pub fn epoch_seconds(now: SystemTime) -> f64 {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mesos::v1::AgentId as Aid;

    fn info(id: &str) -> TaskInfo {
        TaskInfo {
            name: id.to_owned(),
            task_id: TaskId::from(id),
            agent_id: Aid::from("a"),
            ..Default::default()
        }
    }

    fn reporter() -> Reporter {
        Reporter {
            executor_id: "ex".to_owned(),
            agent_id: Some("a".to_owned()),
        }
    }

    fn update(task: &str, state: TaskState) -> Update {
        Update {
            status: reporter().status(task, state, None, None, uuid::Uuid::new_v4(), 1.0),
        }
    }

    #[test]
    fn status_is_a_valid_executor_update() {
        let id = uuid::Uuid::new_v4();
        let s = reporter().status("t", TaskState::TaskFailed, Some("x".into()), None, id, 2.5);
        assert_eq!(s.source(), Source::Executor);
        assert_eq!(s.state(), TaskState::TaskFailed);
        assert_eq!(s.uuid.as_deref(), Some(&id.as_bytes()[..]));
        assert_eq!(s.uuid.as_ref().map(Vec::len), Some(16));
        assert_eq!(
            uuid::Uuid::from_slice(s.uuid.as_deref().unwrap())
                .unwrap()
                .get_version_num(),
            4
        );
        assert_eq!(s.executor_id.unwrap().value, "ex");
        assert_eq!(s.timestamp, Some(2.5));
    }

    #[test]
    fn unacknowledged_tasks_until_any_update_is_acked() {
        let mut book = TaskBook::default();
        assert!(book.insert(info("t1"), Run::Idle));
        assert!(
            !book.insert(info("t1"), Run::Idle),
            "duplicate launch ignored"
        );
        let running = update("t1", TaskState::TaskRunning);
        let uuid = running.status.uuid.clone().unwrap();
        book.record(running);
        assert_eq!(book.unacknowledged_tasks().len(), 1);
        assert_eq!(book.unacknowledged_updates().len(), 1);

        assert!(book.acknowledge("t1", &uuid));
        assert!(!book.acknowledge("t1", &uuid), "second ack is a no-op");
        assert!(book.unacknowledged_tasks().is_empty());
        assert!(book.unacknowledged_updates().is_empty());
    }

    #[test]
    fn unacked_updates_keep_their_order_and_are_removed_by_uuid() {
        let mut book = TaskBook::default();
        book.insert(info("t1"), Run::Idle);
        let a = update("t1", TaskState::TaskRunning);
        let b = update("t1", TaskState::TaskKilled);
        let b_uuid = b.status.uuid.clone().unwrap();
        book.record(a.clone());
        book.record(b);
        assert!(book.acknowledge("t1", &b_uuid));
        assert_eq!(book.unacknowledged_updates(), &[a][..]);
        assert!(!book.acknowledge("other", &b_uuid));
    }

    #[test]
    fn kill_escalation_deadlines() {
        let mut book = TaskBook::default();
        let now = Instant::now();
        book.insert(
            info("t1"),
            Run::Process {
                pid: 100,
                kill: None,
            },
        );
        book.insert(
            info("t2"),
            Run::Process {
                pid: 200,
                kill: None,
            },
        );
        assert_eq!(book.next_kill_deadline(), None);
        assert_eq!(book.task_of_pid(200), Some("t2"));

        book.get_mut("t1").unwrap().run = Run::Process {
            pid: 100,
            kill: Some(Kill {
                deadline: now + Duration::from_secs(5),
                escalated: false,
            }),
        };
        assert_eq!(
            book.next_kill_deadline(),
            Some(now + Duration::from_secs(5))
        );
        assert!(book.take_due_escalations(now).is_empty());
        assert_eq!(
            book.take_due_escalations(now + Duration::from_secs(5)),
            vec![("t1".to_owned(), 100)]
        );
        assert_eq!(book.next_kill_deadline(), None, "escalated only once");
    }

    #[test]
    fn finished_needs_a_launch_terminal_tasks_and_no_pending_updates() {
        let mut book = TaskBook::default();
        assert!(
            !book.finished(),
            "an executor with no task yet waits for one"
        );
        book.insert(info("t1"), Run::Idle);
        assert!(!book.finished());
        book.get_mut("t1").unwrap().run = Run::Done(TaskState::TaskKilled);
        let killed = update("t1", TaskState::TaskKilled);
        let uuid = killed.status.uuid.clone().unwrap();
        book.record(killed);
        assert!(book.all_terminal());
        assert!(!book.finished(), "terminal update not acknowledged yet");
        book.acknowledge("t1", &uuid);
        assert!(book.finished());
        assert!(book.live_tasks().is_empty());
    }
}
