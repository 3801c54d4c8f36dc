//! Retention of destroyed clusters: a periodic sweep purges every cluster that has been
//! `destroyed` for longer than the retention period, with its events and logs (see
//! [`Store::purge_cluster`]: one atomic step per cluster).
//!
//! Live clusters are never touched, whatever their age. A destroyed cluster whose time of
//! destruction cannot be read is kept (and logged), never guessed at.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{Cluster, ClusterStatus};
use crate::registry::{self, ListFilter, Store, StoreError};

/// Default time a destroyed cluster is kept.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// When `c` became destroyed, in ms since the epoch: the last `destroyed` entry of its
/// history, else its last update; `None` if it is not destroyed or the time is unreadable.
pub fn destroyed_at(c: &Cluster) -> Option<u64> {
    if c.status != ClusterStatus::Destroyed {
        return None;
    }
    c.history
        .iter()
        .rev()
        .find(|h| h.status == ClusterStatus::Destroyed)
        .map_or(&c.updated_at, |h| &h.at)
        .millis()
}

/// Whether `c` is due for purging at `now_ms`.
pub fn expired(c: &Cluster, now_ms: u64, retention: Duration) -> bool {
    let keep = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    destroyed_at(c).is_some_and(|at| at.saturating_add(keep) <= now_ms)
}

/// Purges every cluster [`expired`] at `now_ms`; how many went. Each purge re-checks its
/// cluster inside the store's transaction, so one revived or rewritten meanwhile stays.
///
/// Only destroyed clusters are read, a page at a time (the store's status filter), so the
/// sweep's memory stays bounded however many clusters are stored. Purging a cluster of the
/// current page does not move the cursor, which points past the page.
///
/// # Errors
/// The first store error; clusters purged before it stay purged.
pub fn sweep(store: &dyn Store, now_ms: u64, retention: Duration) -> Result<usize, StoreError> {
    let filter = ListFilter {
        status: Some(ClusterStatus::Destroyed),
        ..ListFilter::default()
    };
    let mut purged = 0;
    let mut cursor: Option<String> = None;
    loop {
        let page = store.clusters_page(&filter, SWEEP_PAGE, cursor.as_deref())?;
        for c in &page.clusters {
            if destroyed_at(c).is_none() {
                tracing::warn!(cluster_id = %c.id, "destroyed cluster without a readable time; kept");
                continue;
            }
            if expired(c, now_ms, retention)
                && store.purge_cluster(c.id, &|now| expired(now, now_ms, retention))?
            {
                tracing::info!(cluster_id = %c.id, "destroyed cluster purged after retention");
                purged += 1;
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(purged),
        }
    }
}

/// Destroyed clusters read per page by the sweep.
const SWEEP_PAGE: usize = 200;

/// How often the sweep runs: a quarter of the retention, between 100 ms and 10 min.
pub fn sweep_interval(retention: Duration) -> Duration {
    (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(600))
}

/// Spawns the periodic sweep on `tracker`; it stops when `shutdown` is cancelled.
pub fn spawn(
    store: Arc<dyn Store>,
    retention: Duration,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    let every = sweep_interval(retention);
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            match registry::call(&store, move |s| sweep(s, now_ms, retention)).await {
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "retention sweep failed; retrying later"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::ClusterEvent;
    use crate::domain::{Name, Product, Timestamp};
    use crate::registry::SledStore;
    use serde_json::json;

    const HOUR: u64 = 3_600_000;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    fn cluster(created: u64) -> Cluster {
        Cluster::sample(
            json!({"a": {"docker_image": "i", "cpu": 1, "mem": 1}}),
            at(created),
        )
    }

    /// The product of [`cluster`].
    fn product() -> Product {
        Product::new(Name::parse("p").unwrap(), Name::parse("1").unwrap(), at(0))
    }

    fn destroy(c: &mut Cluster, when: u64) {
        c.apply(ClusterEvent::DestroyRequested, None, at(when))
            .unwrap();
        c.apply(ClusterEvent::AllTerminal, None, at(when)).unwrap();
        assert_eq!(c.status, ClusterStatus::Destroyed);
    }

    /// On a real sled store: only clusters destroyed longer ago than the retention go, with
    /// their logs; live ones (however old) and recently destroyed ones stay, logs included.
    #[test]
    fn the_sweep_purges_only_clusters_destroyed_longer_ago_than_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let now = Timestamp::now().millis().unwrap();
        store.create_product(&product()).unwrap();
        let old_live = cluster(now - 100 * HOUR);
        let mut old_dead = cluster(now - 100 * HOUR);
        destroy(&mut old_dead, now - 50 * HOUR);
        let mut new_dead = cluster(now - 100 * HOUR);
        destroy(&mut new_dead, now - HOUR);
        for c in [&old_live, &old_dead, &new_dead] {
            store.create_cluster(c.clone()).unwrap();
            store.append_log(c.id, b"log\n").unwrap();
        }
        let retention = Duration::from_millis(48 * HOUR);
        assert!(expired(&old_dead, now, retention));
        assert!(!expired(&new_dead, now, retention));
        assert!(!expired(&old_live, now, retention));

        assert_eq!(sweep(&store, now, retention).unwrap(), 1);
        assert!(store.cluster(old_dead.id).unwrap().is_none());
        assert!(store.log(old_dead.id).unwrap().is_empty());
        for kept in [&old_live, &new_dead] {
            assert!(store.cluster(kept.id).unwrap().is_some());
            assert_eq!(store.log(kept.id).unwrap(), b"log\n");
        }
        assert_eq!(sweep(&store, now, retention).unwrap(), 0, "idempotent");
        // Once its time comes, the other destroyed one goes too; the live one never does.
        assert_eq!(sweep(&store, now + 48 * HOUR, retention).unwrap(), 1);
        assert_eq!(sweep(&store, u64::MAX, retention).unwrap(), 0);
        assert!(store.cluster(old_live.id).unwrap().is_some());
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.clusters().unwrap().len(), 1, "purges are durable");
    }

    /// More destroyed clusters than one page of the sweep: it pages through them all, and
    /// purging the clusters of a page does not make it skip any of the next.
    #[test]
    fn the_sweep_pages_through_every_destroyed_cluster() {
        let store = crate::registry::MemoryStore::new();
        store.create_product(&product()).unwrap();
        let n = 2 * SWEEP_PAGE + 17;
        for i in 0..n as u64 {
            let mut dead = cluster(i);
            destroy(&mut dead, HOUR);
            store.create_cluster(dead.clone()).unwrap();
            store.create_cluster(cluster(i)).unwrap();
        }
        let retention = Duration::from_millis(HOUR);
        assert_eq!(sweep(&store, 2 * HOUR, retention).unwrap(), n);
        let left = store.clusters().unwrap();
        assert_eq!(left.len(), n);
        assert!(left.iter().all(|c| c.status != ClusterStatus::Destroyed));
    }

    #[test]
    fn an_unreadable_destruction_time_keeps_the_cluster() {
        let mut c = cluster(0);
        destroy(&mut c, 0);
        for h in &mut c.history {
            h.at = Timestamp("yesterday".into());
        }
        assert_eq!(destroyed_at(&c), None);
        assert!(!expired(&c, u64::MAX, Duration::ZERO));
    }

    #[test]
    fn the_sweep_runs_a_quarter_of_the_retention_apart_within_bounds() {
        assert_eq!(sweep_interval(DEFAULT_RETENTION), Duration::from_secs(600));
        assert_eq!(
            sweep_interval(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(sweep_interval(Duration::ZERO), Duration::from_millis(100));
    }
}
