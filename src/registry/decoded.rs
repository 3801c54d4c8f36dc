//! The clusters the sled store read or wrote last, decoded: a read whose head is the one
//! kept skips decoding the head and every node record. Decoding is most of what a task
//! update costs (a node record has flattened fields, which serde buffers), and the scheduler
//! reads the same clusters again and again while they start.
//!
//! An entry is keyed by the head's exact bytes: node records are never rewritten (see
//! [`super::sled_store`]) and a head names them by revision, so equal head bytes mean an
//! equal cluster. An entry that a newer commit made stale is never served, only replaced
//! or evicted.
//!
//! # Bounds
//! At most [`MAX_ENTRIES`] clusters, and at most [`MAX_WEIGHT`] bytes of their encoded
//! records (decoded, a cluster takes three to four times its encoded bytes): a cluster may
//! have up to ten thousand nodes, so a bound by count alone did not bound memory. The
//! oldest insert goes first; the newest is always kept. It holds decoded records only of
//! clusters recently touched, never every cluster.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sled::IVec;

use super::layout::{INLINE, Snapshot};
use crate::domain::ClusterId;

/// Most clusters kept decoded.
pub(super) const MAX_ENTRIES: usize = 4096;

/// Most bytes of encoded records (heads and node records) kept decoded; decoded, that is
/// 15–20 MB. E.g. about 2 400 clusters of the reference product at 2 nodes (2.1 KB a head
/// that carries its nodes), 1 100 at 10 nodes (4.5 KB), or 160 clusters of 100 nodes in
/// node records.
pub(super) const MAX_WEIGHT: usize = 5 << 20;

/// What a node record is counted at, for a node the head does not carry (the head's bytes
/// count those it carries): about what a node's JSON takes.
const NODE_RECORD_WEIGHT: usize = 300;

/// What `s` is counted at against [`MAX_WEIGHT`].
fn weight(s: &Snapshot) -> usize {
    let in_records = s.slots.iter().filter(|slot| **slot != INLINE).count();
    s.head.len() + NODE_RECORD_WEIGHT * in_records
}

/// Snapshots by cluster, each valid while the stored head has its bytes.
#[derive(Default)]
pub(super) struct Decoded {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<ClusterId, Arc<Snapshot>>,
    /// Insertion order of the ids in `entries` (an id replaced keeps its place).
    order: VecDeque<ClusterId>,
    /// The [`weight`] of every entry together.
    weight: usize,
}

impl Decoded {
    /// The snapshot of `id` if it is the one of `head` (the bytes just read from the store).
    pub fn get(&self, id: ClusterId, head: &IVec) -> Option<Arc<Snapshot>> {
        self.lock()
            .entries
            .get(&id)
            .filter(|s| s.head == *head)
            .cloned()
    }

    /// Keeps `snap` as the latest of its cluster. A writer that lost the race to a newer
    /// commit may put an older snapshot back: it is then never served (its head no longer
    /// matches) and is replaced by the next read.
    pub fn put(&self, snap: Arc<Snapshot>) {
        let id = snap.cluster.id;
        // Dropped after the lock: freeing a decoded cluster frees its hundreds of small allocations,
        // which other readers and writers need not wait for.
        let mut evicted = Vec::new();
        let mut g = self.lock();
        g.weight += weight(&snap);
        match g.entries.insert(id, snap) {
            Some(replaced) => {
                g.weight -= weight(&replaced);
                evicted.push(replaced);
            }
            None => g.order.push_back(id),
        }
        while g.entries.len() > MAX_ENTRIES || (g.weight > MAX_WEIGHT && g.entries.len() > 1) {
            let Some(old) = g.order.pop_front() else {
                break;
            };
            if old == id {
                // The newest stays, whatever it weighs: the next read is most likely its.
                g.order.push_back(old);
                continue;
            }
            if let Some(gone) = g.entries.remove(&old) {
                g.weight -= weight(&gone);
                evicted.push(gone);
            }
        }
        drop(g);
        drop(evicted);
    }

    /// Forgets `id` (its cluster was purged).
    pub fn forget(&self, id: ClusterId) {
        let mut g = self.lock();
        if let Some(gone) = g.entries.remove(&id) {
            g.weight -= weight(&gone);
            g.order.retain(|o| *o != id);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::NodeStatus;
    use crate::registry::layout::Plan;
    use crate::registry::suite::cluster_with;

    fn written(c: &crate::domain::Cluster, rev: u64) -> Arc<Snapshot> {
        let mut c = c.clone();
        let plan = Plan::write(None, &mut c, rev);
        Arc::new(Snapshot::written(&plan, rev, Arc::new(c)).unwrap())
    }

    #[test]
    fn only_the_head_kept_is_served_and_the_oldest_goes_first() {
        let c = cluster_with("u", "p", "1", "2026-01-01T00:00:00.000Z", &["a", "b"]);
        let cache = Decoded::default();
        let one = written(&c, 1);
        cache.put(Arc::clone(&one));
        assert_eq!(*cache.get(c.id, &one.head).unwrap().cluster, c);
        let mut changed = c.clone();
        changed.nodes[0].observed.status = NodeStatus::Running;
        let two = written(&changed, 2);
        assert!(cache.get(c.id, &two.head).is_none(), "a newer head misses");
        cache.put(Arc::clone(&two));
        assert!(
            cache.get(c.id, &one.head).is_none(),
            "the older head is gone"
        );
        assert_eq!(*cache.get(c.id, &two.head).unwrap().cluster, changed);
        cache.forget(c.id);
        assert!(cache.get(c.id, &two.head).is_none());

        let many: Vec<Arc<Snapshot>> = (0..=MAX_ENTRIES)
            .map(|i| {
                let at = format!("2026-01-01T00:00:{:02}.{:03}Z", i / 1000, i % 1000);
                written(&cluster_with("u", "p", "1", &at, &["a"]), 1)
            })
            .collect();
        for s in &many {
            cache.put(Arc::clone(s));
        }
        assert!(cache.get(many[0].cluster.id, &many[0].head).is_none());
        let last = &many[MAX_ENTRIES];
        assert!(cache.get(last.cluster.id, &last.head).is_some());
        assert_eq!(cache.lock().entries.len(), MAX_ENTRIES);
        assert_weight_adds_up(&cache);
    }

    /// The kept weight is the sum of the entries' weights.
    fn assert_weight_adds_up(cache: &Decoded) {
        let g = cache.lock();
        assert_eq!(
            g.weight,
            g.entries.values().map(|s| weight(s)).sum::<usize>()
        );
        assert_eq!(g.order.len(), g.entries.len());
    }

    /// Big clusters are bounded by their bytes, not their number; the newest is kept.
    #[test]
    fn big_clusters_are_bounded_by_their_bytes() {
        let names: Vec<String> = (0..1000).map(|i| format!("n{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let big = |i: usize| {
            let at = format!("2026-01-01T00:00:00.{i:03}Z");
            written(&cluster_with("u", "p", "1", &at, &names), 1)
        };
        let one = big(0);
        let w = weight(&one);
        assert!(w > 50_000, "a 1 000-node head weighs {w} bytes");
        let fit = MAX_WEIGHT / w;
        assert!(fit < 200, "{fit}");
        let cache = Decoded::default();
        let all: Vec<Arc<Snapshot>> = (0..fit + 5).map(big).collect();
        for s in &all {
            cache.put(Arc::clone(s));
            assert!(cache.lock().weight <= MAX_WEIGHT);
        }
        assert_eq!(cache.lock().entries.len(), fit);
        assert!(cache.get(all[0].cluster.id, &all[0].head).is_none());
        let last = all.last().unwrap();
        assert!(cache.get(last.cluster.id, &last.head).is_some());
        assert_weight_adds_up(&cache);

        // Replacing an entry moves the weight by the difference.
        let mut smaller = (*last.cluster).clone();
        smaller.nodes.truncate(10);
        let replaced = written(&smaller, 2);
        cache.put(Arc::clone(&replaced));
        assert_weight_adds_up(&cache);
        cache.forget(smaller.id);
        assert_weight_adds_up(&cache);
    }
}
