//! Self-healing: what to do when a node's task ends without anyone asking it to.
//!
//! The answer is a pure function of the product's [`RestartPolicy`], the cluster's record of
//! earlier [`Replacement`]s and the clock: replace the node (a new attempt, after a backoff),
//! or give up and fail the cluster, naming the node and the cause. The scheduler applies the
//! decision to the record; the orchestrator then configures the cluster again, so files that
//! name peers (a `peers.conf`, a `slurm.conf`) follow the new node.

use serde::{Deserialize, Serialize};

use super::lifecycle::ClusterEvent;
use super::{Cluster, ClusterStatus, Desired, Name, NodeStatus, Timestamp};

/// How a product's clusters heal, from the template's top-level `"restart"` object. Every
/// field is optional; the defaults suit long-running services: a node may be replaced up to
/// 5 times within 10 minutes, waiting 1 s, 2 s, 4 s, … (at most 60 s) between replacements
/// of the same node.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartPolicy {
    /// Most replacements in any `window_secs`, counted over the whole cluster. `0` turns
    /// self-healing off: the first lost node fails the cluster.
    pub max_restarts: u32,
    /// The sliding window in which `max_restarts` are counted, in seconds.
    pub window_secs: u64,
    /// The wait before the first replacement of a node, in seconds; each further replacement
    /// of the same node within the window waits twice as long.
    pub backoff_secs: f64,
    /// The longest wait between replacements, in seconds.
    pub max_backoff_secs: f64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window_secs: 600,
            backoff_secs: 1.0,
            max_backoff_secs: 60.0,
        }
    }
}

impl RestartPolicy {
    /// Checks the numbers a template gave.
    ///
    /// # Errors
    /// The name of the offending field and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.window_secs == 0 || self.window_secs > 7 * 24 * 3600 {
            return Err("window_secs must be between 1 and 604800".into());
        }
        let sane = |v: f64| v.is_finite() && (0.0..=3600.0).contains(&v);
        if !sane(self.backoff_secs) {
            return Err("backoff_secs must be between 0 and 3600".into());
        }
        if !sane(self.max_backoff_secs) || self.max_backoff_secs < self.backoff_secs {
            return Err("max_backoff_secs must be between backoff_secs and 3600".into());
        }
        Ok(())
    }
}

/// One replacement of a node, kept on the cluster record: it is both the event users read
/// and the memory the policy counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replacement {
    pub node: Name,
    /// The attempt that was lost; the replacement is `attempt + 1`.
    pub attempt: u32,
    pub at: Timestamp,
    /// What ended the lost task, e.g. `TASK_FAILED (REASON_EXECUTOR_TERMINATED): …`.
    pub cause: String,
}

/// What to do about a lost node.
#[derive(Debug, Clone, PartialEq)]
pub enum HealDecision {
    /// Place the node again, not before this time (the backoff).
    Replace { not_before: Timestamp },
    /// Too many replacements: the cluster fails with this reason.
    GiveUp { reason: String },
}

/// Decides about `node`, lost at `now` because of `cause`, given the cluster's earlier
/// replacements (oldest first).
pub fn decide(
    policy: &RestartPolicy,
    history: &[Replacement],
    node: &Name,
    cause: &str,
    now: &Timestamp,
) -> HealDecision {
    let now_ms = now.millis().unwrap_or(0);
    let window_ms = policy.window_secs.saturating_mul(1000);
    let recent = |r: &&Replacement| {
        r.at.millis()
            .is_some_and(|t| now_ms.saturating_sub(t) < window_ms)
    };
    let in_window = history.iter().filter(recent).count();
    if in_window >= policy.max_restarts as usize {
        return HealDecision::GiveUp {
            reason: format!(
                "node {node} lost ({cause}); {in_window} replacements in the last {}s already, the product allows {}",
                policy.window_secs, policy.max_restarts
            ),
        };
    }
    let same_node = history
        .iter()
        .filter(recent)
        .filter(|r| &r.node == node)
        .count();
    let factor = 2f64.powi(i32::try_from(same_node).unwrap_or(i32::MAX).min(30));
    let wait = (policy.backoff_secs * factor).min(policy.max_backoff_secs);
    // `wait` is finite and at most an hour (validated), so the cast cannot overflow.
    let not_before = Timestamp::from_millis(now_ms + (wait * 1000.0) as u64);
    HealDecision::Replace { not_before }
}

/// Keeps the replacement record bounded: entries older than the window no longer count, but
/// the last few stay for the record users read.
pub fn prune(history: &mut Vec<Replacement>, policy: &RestartPolicy, now: &Timestamp) {
    const KEEP: usize = 20;
    let now_ms = now.millis().unwrap_or(0);
    let window_ms = policy.window_secs.saturating_mul(1000);
    let old = history
        .iter()
        .take_while(|r| {
            r.at.millis()
                .is_none_or(|t| now_ms.saturating_sub(t) >= window_ms)
        })
        .count();
    let drop = old.min(history.len().saturating_sub(KEEP));
    history.drain(..drop);
}

/// What losing a node did to its cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Loss {
    /// The node is queued again as a new attempt (placed after `not_before`).
    Replacing { not_before: Timestamp },
    /// The policy gave up: the cluster is `failed` and its remaining tasks must be killed.
    ClusterFailed,
    /// Nothing to heal: the cluster is not meant to run (destroyed, failed, unknown node).
    NotHealed,
}

impl Cluster {
    /// Records that node `name` lost its task (it ended without being asked to) and decides,
    /// by the restart policy, whether it is replaced or the cluster fails. The caller has
    /// already checked that the update is about the node's current task.
    pub fn node_lost(&mut self, name: &str, cause: &str, now: &Timestamp) -> Loss {
        if self.desired != Desired::Running || self.status.is_terminal() {
            return Loss::NotHealed;
        }
        let Some(node) = self.node(name) else {
            return Loss::NotHealed;
        };
        let (node_name, attempt) = (node.name.clone(), node.observed.attempt);
        prune(&mut self.replacements, &self.restart, now);
        match decide(&self.restart, &self.replacements, &node_name, cause, now) {
            HealDecision::GiveUp { reason } => {
                if let Some(n) = self.node_mut(name) {
                    n.observed.message = Some(cause.to_owned());
                }
                let _ = self.apply(ClusterEvent::Failed, Some(reason), now.clone());
                Loss::ClusterFailed
            }
            HealDecision::Replace { not_before } => {
                self.replacements.push(Replacement {
                    node: node_name.clone(),
                    attempt,
                    at: now.clone(),
                    cause: cause.to_owned(),
                });
                if let Some(n) = self.node_mut(name) {
                    let why = format!(
                        "attempt {attempt} lost ({cause}); attempt {} queued",
                        attempt + 1
                    );
                    n.observed.requeue(Some(not_before.clone()), why);
                }
                let why = format!(
                    "node {node_name} lost ({cause}); replacing it with attempt {}",
                    attempt + 1
                );
                // From `scheduling` the node simply waits again; a cluster that was (being)
                // configured goes `healing`.
                let _ = self.apply(ClusterEvent::NodeLost, Some(why), now.clone());
                Loss::Replacing { not_before }
            }
        }
    }

    /// True while some node of the cluster waits for its backoff at `now`.
    pub fn backing_off(&self, now: &Timestamp) -> bool {
        self.nodes.iter().any(|n| {
            n.observed.status == NodeStatus::Queued
                && n.observed.not_before.as_ref().is_some_and(|t| t > now)
        })
    }

    /// True when a healing or updating cluster has every node running (again).
    pub fn healed_nodes_run(&self) -> bool {
        matches!(
            self.status,
            ClusterStatus::Healing | ClusterStatus::Updating
        ) && self
            .nodes
            .iter()
            .all(|n| n.observed.status == NodeStatus::Running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_millis(1_800_000_000_000 + secs * 1000)
    }

    fn rep(node: &str, secs: u64) -> Replacement {
        Replacement {
            node: Name::parse(node).unwrap(),
            attempt: 1,
            at: at(secs),
            cause: "TASK_FAILED".into(),
        }
    }

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[test]
    fn replacements_back_off_per_node_and_give_up_past_the_limit() {
        let p = RestartPolicy {
            max_restarts: 3,
            window_secs: 100,
            backoff_secs: 2.0,
            max_backoff_secs: 5.0,
        };
        let cases: Vec<(Vec<Replacement>, &str, Option<u64>)> = vec![
            // (history, lost node, expected not_before in seconds after `at(1000)`, or give up)
            (vec![], "a", Some(2)),
            (vec![rep("b", 990)], "a", Some(2)),
            (vec![rep("a", 990)], "a", Some(4)),
            (vec![rep("a", 980), rep("a", 990)], "a", Some(5)),
            (
                vec![rep("a", 800), rep("a", 850), rep("a", 990)],
                "a",
                Some(4),
            ),
            (vec![rep("a", 950), rep("b", 960), rep("c", 990)], "d", None),
            (
                vec![rep("a", 899), rep("b", 960), rep("c", 990)],
                "d",
                Some(2),
            ),
        ];
        for (history, node, want) in cases {
            let got = decide(&p, &history, &n(node), "TASK_LOST", &at(1000));
            match (want, got) {
                (Some(s), HealDecision::Replace { not_before }) => {
                    assert_eq!(not_before, at(1000 + s), "{history:?} {node}");
                }
                (None, HealDecision::GiveUp { reason }) => {
                    assert!(reason.contains("node d lost (TASK_LOST)"), "{reason}");
                    assert!(
                        reason.contains("3 replacements in the last 100s"),
                        "{reason}"
                    );
                }
                (want, got) => panic!("{history:?} {node}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn zero_restarts_fails_at_once() {
        let p = RestartPolicy {
            max_restarts: 0,
            ..RestartPolicy::default()
        };
        assert!(matches!(
            decide(&p, &[], &n("a"), "TASK_FAILED", &at(0)),
            HealDecision::GiveUp { .. }
        ));
    }

    #[test]
    fn policies_are_validated() {
        assert!(RestartPolicy::default().validate().is_ok());
        let bad = [
            RestartPolicy {
                window_secs: 0,
                ..RestartPolicy::default()
            },
            RestartPolicy {
                backoff_secs: f64::NAN,
                ..RestartPolicy::default()
            },
            RestartPolicy {
                backoff_secs: 10.0,
                max_backoff_secs: 5.0,
                ..RestartPolicy::default()
            },
        ];
        for p in bad {
            assert!(p.validate().is_err(), "{p:?}");
        }
        let parsed: Result<RestartPolicy, _> =
            serde_json::from_value(serde_json::json!({"max_restarts": 2, "colour": 1}));
        assert!(parsed.is_err(), "unknown keys are refused");
        let parsed: RestartPolicy =
            serde_json::from_value(serde_json::json!({"max_restarts": 2})).unwrap();
        assert_eq!(parsed.max_restarts, 2);
        assert_eq!(parsed.window_secs, 600);
    }

    #[test]
    fn pruning_keeps_the_window_and_a_short_record() {
        let p = RestartPolicy::default();
        let mut h: Vec<_> = (0..30).map(|i| rep("a", i)).collect();
        h.push(rep("a", 5000));
        prune(&mut h, &p, &at(5001));
        assert_eq!(h.len(), 20, "old entries beyond the last 20 go");
        assert_eq!(h.last().unwrap().at, at(5000));
        let mut h: Vec<_> = (0..30).map(|i| rep("a", 5000 + i)).collect();
        prune(&mut h, &p, &at(5030));
        assert_eq!(h.len(), 30, "entries inside the window all stay");
    }
}
