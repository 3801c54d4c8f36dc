//! The exit statuses of the NodeAgent's children, whoever reaps them.
//!
//! The executor's supervisor reaps every child of the process (it is PID 1 in the node
//! container), including those the NodeAgent spawned for steps and services. So the agent
//! registers each child here *under the same lock as its spawn*, and the supervisor hands
//! every status it reaps for a pid it does not know to [`ExitBook::deliver`]. Sits beside
//! `process.rs`, which owns the libc calls that reap.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::process::{self, Pid};

/// The exit statuses of the agent's children, whoever reaps them (see the module docs).
#[derive(Default)]
pub struct ExitBook {
    waiting: Mutex<HashMap<Pid, oneshot::Sender<i32>>>,
}

impl ExitBook {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Hands over the wait status of `pid`, reaped by someone else. `false` if the pid is not
    /// one of the agent's children.
    pub fn deliver(&self, pid: Pid, status: i32) -> bool {
        let tx = self.lock().remove(&pid);
        match tx {
            Some(tx) => {
                // The waiter may have gone (request cancelled); the status is then moot.
                let _ = tx.send(status);
                true
            }
            None => false,
        }
    }

    /// Reaps those of the agent's children that have exited, without blocking.
    pub(super) fn reap_own(&self) {
        let mut waiting = self.lock();
        let pids: Vec<Pid> = waiting.keys().copied().collect();
        for (pid, status) in process::reap(pids, false) {
            if let Some(tx) = waiting.remove(&pid) {
                let _ = tx.send(status);
            }
        }
    }

    /// Spawns `cmd` and registers its pid in one critical section: a status reaped by the
    /// supervisor between the spawn and the registration would otherwise be lost.
    pub(super) fn spawn(
        &self,
        cmd: &mut std::process::Command,
    ) -> io::Result<(std::process::Child, oneshot::Receiver<i32>)> {
        let mut waiting = self.lock();
        let child = cmd.spawn()?;
        let pid = Pid::try_from(child.id()).map_err(|_| io::Error::other("pid out of range"))?;
        let (tx, rx) = oneshot::channel();
        waiting.insert(pid, tx);
        Ok((child, rx))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Pid, oneshot::Sender<i32>>> {
        // A panic while holding this lock cannot leave the map inconsistent (single
        // inserts/removes), so a poisoned lock is still usable.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
