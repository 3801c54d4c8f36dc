//! The cluster lifecycle state machine and node states.
//!
//! `registered → scheduling → scheduled → configuring → configured → ready`, then
//! `destroying → destroyed`; from any live state also `failed`. Day 2: a lost node takes a
//! configured cluster to `healing` until it is replaced and configured, then `ready` again. [`ClusterStatus::next`] is the
//! one function that decides every transition; each module only *proposes* events.

use serde::{Deserialize, Serialize};

/// Where a cluster is in its life. Who moves it: the registry (api) sets `Registered`, the
/// scheduler `Scheduling`/`Scheduled`/`Destroyed`, the orchestrator
/// `Configuring`/`Configured`/`Ready`; anyone may set `Failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterStatus {
    Registered,
    Scheduling,
    Scheduled,
    Configuring,
    Configured,
    Ready,
    /// A node was lost and is being replaced; the cluster is configured again once every
    /// node runs, then goes back to `ready`.
    Healing,
    /// A user changed the options: nodes are added or drained and removed, then the cluster
    /// is configured again and goes back to `ready`.
    Updating,
    Failed,
    Destroying,
    Destroyed,
}

/// Something that happened to a cluster; the input of [`ClusterStatus::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterEvent {
    /// The scheduler has picked the cluster up and is looking for offers.
    PlacementStarted,
    /// Every node's task is running.
    AllRunning,
    /// A node's task ended without being asked to; the node is queued as a new attempt.
    NodeLost,
    /// The orchestrator began configuring.
    ConfigureStarted,
    /// Every configure step succeeded.
    Configured,
    /// Every `ready` check passed.
    Ready,
    /// Something failed; the reason travels separately.
    Failed,
    /// A user changed the cluster's options (a new generation of its spec).
    UpdateRequested,
    /// A user asked for the cluster to go away.
    DestroyRequested,
    /// Every task is terminal after a destroy request.
    AllTerminal,
}

/// A transition the state machine does not allow. Callers log and ignore it: it means an
/// event arrived late (a duplicate update, a race with DELETE), never a reason to panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no transition from {from:?} on {event:?}")]
pub struct InvalidTransition {
    pub from: ClusterStatus,
    pub event: ClusterEvent,
}

impl ClusterStatus {
    /// The status after `event`.
    ///
    /// # Errors
    /// [`InvalidTransition`] when `event` makes no sense in `self` (e.g. anything after
    /// `destroyed`).
    pub fn next(self, event: ClusterEvent) -> Result<ClusterStatus, InvalidTransition> {
        use ClusterEvent as E;
        use ClusterStatus as S;
        let to = match (self, event) {
            (S::Destroyed, _) => None,
            (S::Destroying, E::AllTerminal) => Some(S::Destroyed),
            (S::Destroying, _) => None,
            (_, E::DestroyRequested) => Some(S::Destroying),
            (_, E::AllTerminal) => None,
            (S::Failed, _) => None,
            (_, E::Failed) => Some(S::Failed),
            (S::Registered, E::PlacementStarted) => Some(S::Scheduling),
            (S::Scheduling, E::AllRunning) => Some(S::Scheduled),
            (S::Scheduling, E::NodeLost) => Some(S::Scheduling),
            (
                S::Scheduled | S::Configuring | S::Configured | S::Ready | S::Healing | S::Updating,
                E::NodeLost,
            ) => Some(S::Healing),
            (S::Scheduled, E::ConfigureStarted) => Some(S::Configuring),
            (S::Configuring, E::Configured) => Some(S::Configured),
            (S::Configured, E::Ready) => Some(S::Ready),
            // Healing stays healing through its steps (each recorded), then is ready again.
            (S::Healing, E::AllRunning | E::ConfigureStarted | E::Configured) => Some(S::Healing),
            (S::Healing, E::Ready) => Some(S::Ready),
            (S::Ready, E::UpdateRequested) => Some(S::Updating),
            (S::Updating, E::AllRunning | E::ConfigureStarted | E::Configured) => Some(S::Updating),
            (S::Updating, E::Ready) => Some(S::Ready),
            _ => None,
        };
        to.ok_or(InvalidTransition { from: self, event })
    }

    /// Live clusters hold (or want) resources; a product with live clusters cannot be deleted.
    pub fn is_live(self) -> bool {
        !matches!(self, ClusterStatus::Destroyed)
    }

    /// Terminal statuses never change again except through a destroy request (`failed`) or
    /// not at all (`destroyed`).
    pub fn is_terminal(self) -> bool {
        matches!(self, ClusterStatus::Failed | ClusterStatus::Destroyed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClusterStatus::Registered => "registered",
            ClusterStatus::Scheduling => "scheduling",
            ClusterStatus::Scheduled => "scheduled",
            ClusterStatus::Configuring => "configuring",
            ClusterStatus::Configured => "configured",
            ClusterStatus::Ready => "ready",
            ClusterStatus::Healing => "healing",
            ClusterStatus::Updating => "updating",
            ClusterStatus::Failed => "failed",
            ClusterStatus::Destroying => "destroying",
            ClusterStatus::Destroyed => "destroyed",
        }
    }

    pub const ALL: [ClusterStatus; 11] = [
        ClusterStatus::Registered,
        ClusterStatus::Scheduling,
        ClusterStatus::Scheduled,
        ClusterStatus::Configuring,
        ClusterStatus::Configured,
        ClusterStatus::Ready,
        ClusterStatus::Healing,
        ClusterStatus::Updating,
        ClusterStatus::Failed,
        ClusterStatus::Destroying,
        ClusterStatus::Destroyed,
    ];
}

impl std::fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ClusterStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|c| c.as_str() == s).ok_or(())
    }
}

/// A node's state: `queued` before placement, then the Mesos task state it last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Queued,
    Staging,
    Starting,
    Running,
    Killing,
    Finished,
    Failed,
    Killed,
    Lost,
    Error,
    Dropped,
    Unreachable,
    Gone,
    GoneByOperator,
    Unknown,
}

impl NodeStatus {
    /// Terminal in the Mesos sense: the task will not run again. `Lost` counts as terminal
    /// (Mesos' `isTerminalState`) even though a partitioned agent may bring it back.
    pub fn is_terminal(self) -> bool {
        use NodeStatus as N;
        matches!(
            self,
            N::Finished
                | N::Failed
                | N::Killed
                | N::Lost
                | N::Error
                | N::Dropped
                | N::Gone
                | N::GoneByOperator
        )
    }

    /// The node holds, or may hold, a live task on an agent.
    pub fn has_task(self) -> bool {
        use NodeStatus as N;
        matches!(
            self,
            N::Staging | N::Starting | N::Running | N::Killing | N::Unreachable | N::Unknown
        )
    }

    /// Every node status, in declaration order (the OpenAPI enum).
    pub const ALL: [NodeStatus; 15] = [
        NodeStatus::Queued,
        NodeStatus::Staging,
        NodeStatus::Starting,
        NodeStatus::Running,
        NodeStatus::Killing,
        NodeStatus::Finished,
        NodeStatus::Failed,
        NodeStatus::Killed,
        NodeStatus::Lost,
        NodeStatus::Error,
        NodeStatus::Dropped,
        NodeStatus::Unreachable,
        NodeStatus::Gone,
        NodeStatus::GoneByOperator,
        NodeStatus::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        use NodeStatus as N;
        match self {
            N::Queued => "queued",
            N::Staging => "staging",
            N::Starting => "starting",
            N::Running => "running",
            N::Killing => "killing",
            N::Finished => "finished",
            N::Failed => "failed",
            N::Killed => "killed",
            N::Lost => "lost",
            N::Error => "error",
            N::Dropped => "dropped",
            N::Unreachable => "unreachable",
            N::Gone => "gone",
            N::GoneByOperator => "gone_by_operator",
            N::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ClusterEvent as E;
    use super::ClusterStatus as S;
    use super::NodeStatus;

    /// `NodeStatus::ALL` holds every status once: a new variant does not compile here until
    /// it has a place (and so reaches the OpenAPI enum).
    #[test]
    fn every_node_status_is_in_all() {
        use NodeStatus as N;
        let place = |s: NodeStatus| match s {
            N::Queued => 0,
            N::Staging => 1,
            N::Starting => 2,
            N::Running => 3,
            N::Killing => 4,
            N::Finished => 5,
            N::Failed => 6,
            N::Killed => 7,
            N::Lost => 8,
            N::Error => 9,
            N::Dropped => 10,
            N::Unreachable => 11,
            N::Gone => 12,
            N::GoneByOperator => 13,
            N::Unknown => 14,
        };
        for (i, s) in NodeStatus::ALL.into_iter().enumerate() {
            assert_eq!(place(s), i, "{s:?}");
        }
    }

    #[test]
    fn lifecycle_table() {
        let allowed = [
            (S::Registered, E::PlacementStarted, S::Scheduling),
            (S::Scheduling, E::AllRunning, S::Scheduled),
            (S::Scheduled, E::ConfigureStarted, S::Configuring),
            (S::Configuring, E::Configured, S::Configured),
            (S::Configured, E::Ready, S::Ready),
            (S::Scheduling, E::NodeLost, S::Scheduling),
            (S::Scheduled, E::NodeLost, S::Healing),
            (S::Configuring, E::NodeLost, S::Healing),
            (S::Ready, E::NodeLost, S::Healing),
            (S::Healing, E::NodeLost, S::Healing),
            (S::Healing, E::AllRunning, S::Healing),
            (S::Healing, E::ConfigureStarted, S::Healing),
            (S::Healing, E::Configured, S::Healing),
            (S::Healing, E::Ready, S::Ready),
            (S::Healing, E::Failed, S::Failed),
            (S::Healing, E::DestroyRequested, S::Destroying),
            (S::Ready, E::UpdateRequested, S::Updating),
            (S::Updating, E::AllRunning, S::Updating),
            (S::Updating, E::ConfigureStarted, S::Updating),
            (S::Updating, E::Configured, S::Updating),
            (S::Updating, E::Ready, S::Ready),
            (S::Updating, E::NodeLost, S::Healing),
            (S::Updating, E::Failed, S::Failed),
            (S::Updating, E::DestroyRequested, S::Destroying),
            (S::Registered, E::Failed, S::Failed),
            (S::Scheduling, E::Failed, S::Failed),
            (S::Configuring, E::Failed, S::Failed),
            (S::Ready, E::Failed, S::Failed),
            (S::Registered, E::DestroyRequested, S::Destroying),
            (S::Ready, E::DestroyRequested, S::Destroying),
            (S::Failed, E::DestroyRequested, S::Destroying),
            (S::Destroying, E::AllTerminal, S::Destroyed),
        ];
        for (from, ev, to) in allowed {
            assert_eq!(from.next(ev), Ok(to), "{from:?} --{ev:?}-->");
        }
        let refused = [
            (S::Registered, E::AllRunning),
            (S::Registered, E::Ready),
            (S::Scheduling, E::Ready),
            (S::Scheduled, E::Ready),
            (S::Configuring, E::Ready),
            (S::Failed, E::AllRunning),
            (S::Failed, E::Failed),
            (S::Destroying, E::Failed),
            (S::Destroying, E::DestroyRequested),
            (S::Destroyed, E::DestroyRequested),
            (S::Destroyed, E::PlacementStarted),
            (S::Ready, E::AllTerminal),
            (S::Registered, E::NodeLost),
            (S::Failed, E::NodeLost),
            (S::Destroying, E::NodeLost),
            (S::Scheduling, E::UpdateRequested),
            (S::Healing, E::UpdateRequested),
            (S::Updating, E::UpdateRequested),
            (S::Failed, E::UpdateRequested),
        ];
        for (from, ev) in refused {
            assert!(
                from.next(ev).is_err(),
                "{from:?} --{ev:?}--> should be refused"
            );
        }
    }

    #[test]
    fn statuses_parse_back() {
        for s in S::ALL {
            assert_eq!(s.as_str().parse::<S>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
