//! Waiting to be placed has a deadline: a launch that no offer round could place within its
//! placement timeout ends `failed`, with the planner's last refusal as the reason, instead
//! of `scheduling` forever.
//!
//! Pure. The deadline is `created_at` plus the launch's own timeout
//! (`Cluster::placement_timeout_s`) or the server's (`serve --placement-timeout`): both are
//! stored or configured, so a restarted `serve` keeps every deadline. Only a launch's first
//! placement has one (`registered` or `scheduling` with queued nodes); a `healing` or
//! `updating` cluster serves with the nodes it has while it waits. A refused gang holds
//! nothing (see [`super::offers`]), so failing it leaves no half-held agent.

use std::time::Duration;

use crate::domain::lifecycle::ClusterEvent;
use crate::domain::{Cluster, ClusterStatus, Timestamp};
use crate::registry::Update;

use super::launch::wants_placement;

/// The prefix [`super::launch`] gives every waiting reason; the failure keeps what follows.
const WAITING: &str = "waiting for resources: ";

/// How long `c` may wait for its first placement.
pub fn timeout_of(c: &Cluster, default: Duration) -> Duration {
    c.placement_timeout_s.map_or(default, Duration::from_secs)
}

/// Whether `c` waits for its first placement and its deadline has passed at `now_ms`
/// (milliseconds since the epoch). A record whose `created_at` does not parse never
/// expires: a clock quirk must not fail a cluster.
pub fn overdue(c: &Cluster, default: Duration, now_ms: u64) -> bool {
    let first_placement = matches!(
        c.status,
        ClusterStatus::Registered | ClusterStatus::Scheduling
    );
    let Some(created) = c.created_at.millis() else {
        return false;
    };
    let timeout = u64::try_from(timeout_of(c, default).as_millis()).unwrap_or(u64::MAX);
    first_placement && wants_placement(c) && now_ms >= created.saturating_add(timeout)
}

/// Fails `c` if it is still [`overdue`] (a store retry runs this on the latest record, which
/// may have been placed or destroyed meanwhile). The reason names the timeout and the last
/// reason it waited for.
pub fn record_expired(c: &mut Cluster, default: Duration, now: &Timestamp) -> Update {
    let now_ms = now.millis().unwrap_or(0);
    if !overdue(c, default, now_ms) {
        return Update::Keep;
    }
    let timeout = timeout_of(c, default);
    let why = match c.reason.as_deref() {
        Some(r) => r.strip_prefix(WAITING).unwrap_or(r).to_owned(),
        None => "no offer arrived to place it on".to_owned(),
    };
    let reason = format!(
        "not placed within the placement timeout ({}): {why}",
        humantime::format_duration(timeout)
    );
    match c.apply(ClusterEvent::Failed, Some(reason), now.clone()) {
        Ok(()) => Update::Write,
        Err(_) => Update::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NodeStatus;
    use serde_json::json;

    const TEN_MIN: Duration = Duration::from_secs(600);

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    /// A cluster of two queued nodes, launched at t = 1 000 000 ms.
    fn launched() -> Cluster {
        let node = json!({"docker_image": "i", "cpu": 1, "mem": 64});
        Cluster::sample(json!({"n0": node, "n1": node}), at(1_000_000))
    }

    #[test]
    fn the_deadline_counts_from_the_launch_with_its_own_or_the_default_timeout() {
        let mut c = launched();
        assert!(!overdue(&c, TEN_MIN, 1_000_000 + 599_999));
        assert!(overdue(&c, TEN_MIN, 1_000_000 + 600_000));
        c.placement_timeout_s = Some(5);
        assert!(!overdue(&c, TEN_MIN, 1_004_999));
        assert!(overdue(&c, TEN_MIN, 1_005_000));
        // A restart changes nothing: the deadline is in the record.
        let back: Cluster = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert!(overdue(&back, TEN_MIN, 1_005_000));
    }

    #[test]
    fn only_a_first_placement_expires() {
        let mut c = launched();
        c.apply(ClusterEvent::PlacementStarted, None, at(1_000_100))
            .unwrap();
        assert!(overdue(&c, TEN_MIN, u64::MAX));
        // Placed (no queued node): nothing waits.
        for n in &mut c.nodes {
            n.observed.status = NodeStatus::Staging;
        }
        assert!(!overdue(&c, TEN_MIN, u64::MAX));
        // Healing with a node queued again: it serves meanwhile, no deadline.
        let mut h = launched();
        h.status = ClusterStatus::Healing;
        assert!(!overdue(&h, TEN_MIN, u64::MAX));
        // Destroyed before it was placed.
        let mut d = launched();
        d.desired = crate::domain::Desired::Destroyed;
        assert!(!overdue(&d, TEN_MIN, u64::MAX));
        // An unreadable launch time never expires.
        let mut u = launched();
        u.created_at = Timestamp("yesterday".into());
        assert!(!overdue(&u, TEN_MIN, u64::MAX));
    }

    #[test]
    fn an_expired_launch_fails_with_the_last_refusal() {
        let mut c = launched();
        c.placement_timeout_s = Some(90);
        c.apply(ClusterEvent::PlacementStarted, None, at(1_000_100))
            .unwrap();
        c.reason = Some(
            "waiting for resources: node n1 needs 1.05 cpus … closest: agent a1 has only cpus 0.5 of 1.05"
                .into(),
        );
        assert!(matches!(
            record_expired(&mut c, TEN_MIN, &at(1_089_999)),
            Update::Keep
        ));
        assert_eq!(c.status, ClusterStatus::Scheduling);
        assert!(matches!(
            record_expired(&mut c, TEN_MIN, &at(1_090_000)),
            Update::Write
        ));
        assert_eq!(c.status, ClusterStatus::Failed);
        assert_eq!(
            c.reason.as_deref(),
            Some(
                "not placed within the placement timeout (1m 30s): node n1 needs 1.05 cpus … \
                 closest: agent a1 has only cpus 0.5 of 1.05"
            )
        );
        assert_eq!(
            c.history.last().map(|h| h.status),
            Some(ClusterStatus::Failed)
        );
        // Nothing was placed: every node is still queued, no task to kill.
        assert!(!c.has_tasks());
        // Again (a store retry on the failed record): nothing to do.
        assert!(matches!(
            record_expired(&mut c, TEN_MIN, &at(2_000_000)),
            Update::Keep
        ));
    }

    #[test]
    fn without_any_offer_the_reason_says_so() {
        let mut c = launched();
        assert!(matches!(
            record_expired(&mut c, TEN_MIN, &at(1_600_000)),
            Update::Write
        ));
        assert_eq!(
            c.reason.as_deref(),
            Some("not placed within the placement timeout (10m): no offer arrived to place it on")
        );
    }
}
