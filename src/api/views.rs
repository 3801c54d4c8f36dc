//! Encoded `GET /clusters/{id}` bodies, kept fresh by the store's commits: a hit costs a
//! map lookup and a reference count, no store read, no decoding, no encoding.
//!
//! What it owns: a bounded map from cluster id to the served bytes and the cluster's owner.
//! What it does not own: who may see a cluster. The caller's check runs on every request,
//! hit or miss ([`Views::get`] answers [`Lookup::Hidden`] for another user's cluster).
//!
//! # Freshness
//! Every commit announced by [`crate::registry::Store::subscribe`] drops its cluster's entry;
//! a lagging subscription (commits lost) drops every entry. Commits are drained at the start
//! of every lookup and of every insert, under the one lock, so:
//! - a commit announced before a lookup has already removed its entry when the lookup runs
//!   (the store announces a write after it is durable, before the write call returns, so a
//!   client that saw its write answered never reads the body from before it);
//! - a body read from the store is inserted only if *no* commit was drained between the
//!   lookup that missed and the insert (the [`Ticket`]): a commit announced meanwhile may be
//!   of this cluster, and the body read may predate it. A commit announced after the insert
//!   is drained by the next lookup, which drops the entry.
//!
//! If the store's channel closes (no sender left), nothing is cached any more. A task
//! ([`Views::spawn`]) also applies commits as they come, so that the channel does not keep
//! commits for a cache nobody reads.
//!
//! # Bounds
//! At most `max_entries` bodies and `max_bytes` bytes; the oldest insert goes first. A body
//! larger than an eighth of `max_bytes` is never cached, so one huge cluster cannot empty it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::broadcast::{
    self,
    error::{RecvError, TryRecvError},
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::Principal;
use crate::domain::ClusterId;
use crate::registry::{Commit, Store};

/// Default most bodies kept.
pub const DEFAULT_MAX_ENTRIES: usize = 4096;

/// Default most bytes of bodies kept.
pub const DEFAULT_MAX_BYTES: usize = 16 << 20;

/// The encoded views of recently read clusters.
pub struct Views {
    inner: Mutex<Inner>,
    max_entries: usize,
    max_bytes: usize,
}

struct Inner {
    /// The store's commits; `None` once the channel closed (caching is off then).
    commits: Option<broadcast::Receiver<Commit>>,
    entries: HashMap<ClusterId, Entry>,
    /// Insertion order, for eviction: (id, stamp of the entry inserted). Entries removed by
    /// a commit leave their pair behind; a pair counts only if the stamps still match.
    order: VecDeque<(ClusterId, u64)>,
    /// Sum of the entries' body lengths.
    bytes: usize,
    /// Stamp of the next insert (unique per insert).
    next_stamp: u64,
    /// How many times commits were drained with effect (a commit, a lag, a close): what a
    /// [`Ticket`] compares against.
    epoch: u64,
}

struct Entry {
    owner: Box<str>,
    body: Bytes,
    stamp: u64,
}

/// Proof of a miss: the body read after it may be inserted if nothing committed since.
#[derive(Debug)]
pub struct Ticket(u64);

/// The answer of [`Views::get`].
#[derive(Debug)]
pub enum Lookup {
    /// The served body, shared (no copy).
    Hit(Bytes),
    /// The cluster is cached but the caller may not see it: answer as if it did not exist.
    Hidden,
    /// Read the store, then [`Views::put`] with this ticket.
    Miss(Ticket),
}

impl Views {
    /// A cache with the default bounds, fed by `commits` (subscribe before the first read).
    pub fn new(commits: broadcast::Receiver<Commit>) -> Self {
        Self::with_bounds(commits, DEFAULT_MAX_ENTRIES, DEFAULT_MAX_BYTES)
    }

    /// A cache of at most `max_entries` bodies and `max_bytes` bytes.
    pub fn with_bounds(
        commits: broadcast::Receiver<Commit>,
        max_entries: usize,
        max_bytes: usize,
    ) -> Self {
        Self {
            inner: Mutex::new(Inner {
                commits: Some(commits),
                entries: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                next_stamp: 0,
                epoch: 0,
            }),
            max_entries,
            max_bytes,
        }
    }

    /// A cache with the default bounds fed by `store`'s commits, and the task that applies
    /// them as they come (on `tracker`, until `shutdown`): lookups apply what is pending as
    /// well, but without the task a quiet cache would hold the channel's last commits (whole
    /// clusters) until its next lookup.
    pub fn spawn(
        store: &dyn Store,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Arc<Self> {
        let views = Arc::new(Self::new(store.subscribe()));
        // A second subscription, only to be woken: it is read at once, as the first is by
        // the task, so neither holds commits for long.
        let mut wake = store.subscribe();
        let v = Arc::clone(&views);
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    r = wake.recv() => if let Err(RecvError::Closed) = r { return },
                    () = shutdown.cancelled() => return,
                }
                while wake.try_recv().is_ok() {}
                v.lock().catch_up();
            }
        });
        views
    }

    /// The body of cluster `id` as `who` may see it, if cached.
    pub fn get(&self, id: ClusterId, who: &Principal) -> Lookup {
        let mut g = self.lock();
        g.catch_up();
        match g.entries.get(&id) {
            Some(e) if who.is_admin() || *e.owner == *who.user => Lookup::Hit(e.body.clone()),
            Some(_) => Lookup::Hidden,
            None => Lookup::Miss(Ticket(g.epoch)),
        }
    }

    /// Keeps `body` (of cluster `id`, owned by `owner`, read after the miss that gave
    /// `ticket`), unless a commit came in between.
    pub fn put(&self, id: ClusterId, owner: &str, body: Bytes, ticket: Ticket) {
        if self.max_entries == 0 || body.len() > self.max_bytes / 8 {
            return;
        }
        let mut g = self.lock();
        g.catch_up();
        if g.commits.is_none() || g.epoch != ticket.0 {
            return;
        }
        g.remove(id);
        while g.entries.len() >= self.max_entries || g.bytes + body.len() > self.max_bytes {
            let Some((old, stamp)) = g.order.pop_front() else {
                break;
            };
            if g.entries.get(&old).is_some_and(|e| e.stamp == stamp) {
                g.remove(old);
            }
        }
        let stamp = g.next_stamp;
        g.next_stamp += 1;
        g.bytes += body.len();
        g.order.push_back((id, stamp));
        g.entries.insert(
            id,
            Entry {
                owner: owner.into(),
                body,
                stamp,
            },
        );
        // Pairs left behind by removed entries: drop them before they outnumber the
        // entries, so the queue stays bounded too.
        if g.order.len() > 2 * self.max_entries + 16 {
            let Inner { order, entries, .. } = &mut *g;
            order.retain(|(id, s)| entries.get(id).is_some_and(|e| e.stamp == *s));
        }
    }

    /// How many bodies and bytes are kept (tests, metrics).
    pub fn size(&self) -> (usize, usize) {
        let g = self.lock();
        (g.entries.len(), g.bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// Applies every commit announced so far.
    fn catch_up(&mut self) {
        loop {
            let Some(rx) = self.commits.as_mut() else {
                return;
            };
            match rx.try_recv() {
                Ok(Commit::Cluster(c)) => {
                    let id = c.id;
                    self.epoch += 1;
                    self.remove(id);
                }
                Ok(Commit::Purged(id)) => {
                    self.epoch += 1;
                    self.remove(id);
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Lagged(_)) => {
                    self.epoch += 1;
                    self.clear();
                }
                Err(TryRecvError::Closed) => {
                    self.epoch += 1;
                    self.clear();
                    self.commits = None;
                    return;
                }
            }
        }
    }

    fn remove(&mut self, id: ClusterId) {
        if let Some(e) = self.entries.remove(&id) {
            self.bytes -= e.body.len();
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::Role;
    use crate::domain::{Cluster, Timestamp};
    use serde_json::json;

    fn user(name: &str) -> Principal {
        Principal {
            user: name.into(),
            role: Role::User,
        }
    }

    fn admin() -> Principal {
        Principal {
            user: "root".into(),
            role: Role::Admin,
        }
    }

    fn cluster(id: ClusterId) -> Arc<Cluster> {
        let mut c = Cluster::sample(
            json!({"a": {"docker_image": "i", "cpu": 1, "mem": 1}}),
            Timestamp::now(),
        );
        c.id = id;
        Arc::new(c)
    }

    fn miss(v: &Views, id: ClusterId) -> Ticket {
        match v.get(id, &admin()) {
            Lookup::Miss(t) => t,
            other => panic!("expected a miss, got {other:?}"),
        }
    }

    fn hit(v: &Views, id: ClusterId, who: &Principal) -> Bytes {
        match v.get(id, who) {
            Lookup::Hit(b) => b,
            other => panic!("expected a hit, got {other:?}"),
        }
    }

    #[test]
    fn a_hit_checks_the_owner_every_time() {
        let (tx, rx) = broadcast::channel(16);
        let v = Views::new(rx);
        let id = ClusterId::generate();
        let t = miss(&v, id);
        v.put(id, "alice", Bytes::from_static(b"{}"), t);
        assert_eq!(hit(&v, id, &user("alice")), &b"{}"[..]);
        assert_eq!(hit(&v, id, &admin()), &b"{}"[..]);
        assert!(matches!(v.get(id, &user("bob")), Lookup::Hidden));
        drop(tx);
    }

    #[test]
    fn a_commit_drops_the_entry_and_a_purge_too() {
        let (tx, rx) = broadcast::channel(16);
        let v = Views::new(rx);
        let (a, b) = (ClusterId::generate(), ClusterId::generate());
        for id in [a, b] {
            let t = miss(&v, id);
            v.put(id, "alice", Bytes::from_static(b"old"), t);
        }
        tx.send(Commit::Cluster(cluster(a))).unwrap();
        miss(&v, a);
        hit(&v, b, &admin());
        tx.send(Commit::Purged(b)).unwrap();
        miss(&v, b);
        assert_eq!(v.size(), (0, 0));
    }

    /// The race the ticket closes: a body read before a commit of its cluster, inserted
    /// after the commit was drained, is not kept.
    #[test]
    fn a_body_read_before_a_commit_is_not_kept() {
        let (tx, rx) = broadcast::channel(16);
        let v = Views::new(rx);
        let id = ClusterId::generate();
        let t = miss(&v, id);
        tx.send(Commit::Cluster(cluster(id))).unwrap();
        v.put(id, "alice", Bytes::from_static(b"stale"), t);
        miss(&v, id);
        // A commit after the insert is drained by the next lookup.
        let t = miss(&v, id);
        v.put(id, "alice", Bytes::from_static(b"fresh"), t);
        hit(&v, id, &admin());
        tx.send(Commit::Cluster(cluster(id))).unwrap();
        miss(&v, id);
    }

    #[test]
    fn a_lag_drops_everything_and_a_closed_channel_stops_caching() {
        let (tx, rx) = broadcast::channel(2);
        let v = Views::new(rx);
        let id = ClusterId::generate();
        let t = miss(&v, id);
        v.put(id, "alice", Bytes::from_static(b"x"), t);
        for _ in 0..3 {
            tx.send(Commit::Purged(ClusterId::generate())).unwrap();
        }
        miss(&v, id);
        drop(tx);
        let t = miss(&v, id);
        v.put(id, "alice", Bytes::from_static(b"x"), t);
        miss(&v, id);
        assert_eq!(v.size(), (0, 0));
    }

    #[test]
    fn entries_and_bytes_stay_within_bounds() {
        let (tx, rx) = broadcast::channel(16);
        let v = Views::with_bounds(rx, 3, 800);
        let ids: Vec<ClusterId> = (0..50).map(|_| ClusterId::generate()).collect();
        for (i, id) in ids.iter().enumerate() {
            let t = miss(&v, *id);
            v.put(*id, "alice", Bytes::from(vec![b'x'; 10 + i]), t);
            let (n, bytes) = v.size();
            assert!(n <= 3 && bytes <= 800, "{n} entries, {bytes} bytes");
            // Invalidations leave pairs in the queue; it stays bounded all the same.
            if i % 2 == 0 {
                tx.send(Commit::Purged(*id)).unwrap();
            }
        }
        assert!(v.lock().order.len() <= 2 * 3 + 16 + 1);
        // The newest stays; a body over an eighth of the byte bound is never kept.
        hit(&v, ids[49], &admin());
        let big = ClusterId::generate();
        let t = miss(&v, big);
        v.put(big, "alice", Bytes::from(vec![b'x'; 101]), t);
        miss(&v, big);
        let (_, bytes) = v.size();
        let (_open, rx) = broadcast::channel(1);
        let byte_bound = Views::with_bounds(rx, 100, 800);
        for _ in 0..20 {
            let id = ClusterId::generate();
            let t = miss(&byte_bound, id);
            byte_bound.put(id, "alice", Bytes::from(vec![b'x'; 100]), t);
            assert!(byte_bound.size().1 <= 800);
        }
        assert_eq!(byte_bound.size(), (8, 800));
        assert!(bytes <= 800);
    }
}
