//! The sled implementation of [`Store`], with group commit.
//!
//! # Reading and writing a cluster
//! A cluster is a head and one record per node (see the keyspace in [`super`]). Each node
//! has two slots: a changed node is written into the slot the current head does not name,
//! tagged with the revision it is written at, so the record a head names is never
//! overwritten while that head is current, and a change costs one write, not a write and a
//! removal. A writer reads the cluster, runs the caller's function on it outside any lock,
//! then commits under the cluster's lock: if the head is still the one it read (otherwise it
//! starts over, as a lost compare-and-swap would), it writes the changed node records and
//! the new index keys, then the head (the one commit point), then removes what the new head
//! no longer names (the nodes gone, the old index keys). A reader reads the head and the
//! records it names; a record missing, or of another revision than the head says (the commit
//! after next wrote that slot again), means a newer head, which it then reads.
//!
//! sled transactions are not used for this on purpose: in sled 0.34 a transaction takes a
//! process-wide write lock whose read side `Db::flush` holds for its whole fsync, so every
//! commit would wait for the flush in progress and concurrent writers would share few
//! flushes (measured: 3.5k instead of 10k+ durable single updates/s). sled recovers its log
//! in order, so after a crash a head never outlives the records it names; what a commit
//! left half-done is harmless: a node record written into the slot its head does not name
//! is overwritten by the node's next change, and node records of nodes no head names and
//! stale index keys are removed at open (readers check every index hit against its head
//! anyway).
//!
//! # After a commit
//! - **Durable**: a write returns once a flush covered it. Flushes are shared: one flusher
//!   thread flushes for every write waiting ([`super::group_commit`]); no lock is held across
//!   one, so concurrent writers, launches included, share them. A launch waits for its flush
//!   asynchronously ([`Store::create_cluster_pending`]), parking no thread.
//! - **Announced** in commit order per cluster (see [`Commit`]): each commit takes a sequence
//!   number under its cluster's lock, and a commit overtaken by a newer one of the same
//!   cluster before its flush returned is not announced.
//! - **Counted**: the counts by status, and what each owner's clusters hold, are kept in
//!   memory, counted once at open and moved by every commit from the old cluster to the new,
//!   so neither [`Store::counts`] nor [`Store::usage`] reads the disk.
//! - **Kept decoded**: the committed record goes to a bounded cache of decoded clusters
//!   ([`Decoded`], by the head's bytes), so the next read of the cluster decodes nothing.
//!

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::de::Error as _;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{IVec, Transactional};
use tokio::sync::broadcast;

use super::decoded::Decoded;
use super::group_commit::GroupCommit;
use super::layout::{
    Head, IndexKeys, LAYOUT, LAYOUT_KEY, Plan, Snapshot, owner_prefix, split_node, status_prefix,
};
use super::{
    BatchUpdate, COMMIT_BUFFER, Commit, Counts, LOG_BUFFER, ListFilter, LogAppended, MAX_LOG, Page,
    Pending, Store, StoreError, Update, bundled, check_cursor, check_node_names, cursor_of, decode,
    encode, part_key, product_key,
};
use crate::domain::{
    Cluster, ClusterId, ClusterStatus, Name, Node, NodeStatus, Part, Product, Timestamp, Usage,
};

/// How the store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// The most memory sled's page cache may take (sled's `cache_capacity`; sled's own
    /// default is 1 GB). The store keeps no record in memory beyond it: what else it holds
    /// grows with the concurrent calls, not with the clusters stored.
    pub cache_bytes: u64,
    /// How long a flush waits, when more than one write is waiting for it, for more writes
    /// to join it (as PostgreSQL's `commit_delay`): fewer, larger flushes for up to this much
    /// more latency under load. A lone write is never delayed. Zero flushes at once.
    pub commit_delay: std::time::Duration,
}

impl StoreOptions {
    /// 32 MiB: the records a busy framework touches stay cached (thousands of live
    /// clusters); the rest is on disk. sled takes about 1.7 times this in RSS once full
    /// (measured with `bench launches`: 254 MB at 64 MiB, 174 MB at 16 MiB).
    pub const DEFAULT_CACHE_BYTES: u64 = 32 << 20;
    /// 300 µs: under a burst of launches, 12 % less CPU per launch and 4 % less per node
    /// provisioned than flushing at once (measured with `bench launches` and `bench
    /// provision`, 2026-12-03); a fraction of what an fsync takes on a real disk.
    pub const DEFAULT_COMMIT_DELAY: std::time::Duration = std::time::Duration::from_micros(300);
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: Self::DEFAULT_CACHE_BYTES,
            commit_delay: Self::DEFAULT_COMMIT_DELAY,
        }
    }
}

/// A sled database laid out as the module docs describe.
pub struct SledStore {
    db: sled::Db,
    products: sled::Tree,
    parts: sled::Tree,
    clusters: sled::Tree,
    nodes: sled::Tree,
    by_created: sled::Tree,
    by_owner: sled::Tree,
    by_status: sled::Tree,
    logs: sled::Tree,
    meta: sled::Tree,
    /// Serialises the checks that span trees: "create a cluster only if its product exists"
    /// (and "only if the owner's quota allows it") against "delete a product only if no live
    /// cluster uses it". Held for the check and the in-memory commit, never across a flush:
    /// a committed cluster is visible to the next holder before it is durable. Per-cluster
    /// updates do not take it. Creates without a quota check share it (their checks read
    /// the catalog alone, and each commits a cluster of its own); a create with a quota
    /// check and a product's removal hold it alone.
    catalog: RwLock<()>,
    /// Serialise the commits of one cluster (a cluster takes the stripe of its id), so that
    /// the steps of one commit never interleave with another's. Held for the in-memory
    /// writes only, never across a flush nor while the caller's function runs.
    stripes: Vec<Mutex<()>>,
    commit: GroupCommit,
    announcer: Arc<Announcer>,
    /// Log appends, announced once durable (see [`LogAppended`]).
    logs_announced: broadcast::Sender<LogAppended>,
    tally: Mutex<Tally>,
    /// The clusters read or written last, decoded (see [`Decoded`]).
    decoded: Decoded,
    /// See [`Store::catalog_generation`]; moved after each product write.
    catalog_generation: AtomicU64,
}

impl SledStore {
    /// Opens (or creates) the store in directory `path` with the default options.
    ///
    /// # Errors
    /// As [`SledStore::open_with`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// Opens (or creates) the store in directory `path`. Data of the first layout (each
    /// cluster one JSON value, no index) is converted first, one commit per cluster, so an
    /// open interrupted midway resumes where it stopped; then what interrupted commits left
    /// is removed and the counts are taken (every head, node record and index key is read
    /// once).
    ///
    /// # Errors
    /// sled errors, e.g. the directory is locked by another process (after
    /// [`LOCK_WAIT`]); [`StoreError::Corrupt`] if a stored cluster cannot be read.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let config = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(options.cache_bytes);
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open() {
                Err(e) if is_locked(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let commit = GroupCommit::start(
            Box::new({
                let db = db.clone();
                move || db.flush().map(drop)
            }),
            options.commit_delay,
        );
        let store = Self {
            products: db.open_tree("products")?,
            parts: db.open_tree("parts")?,
            clusters: db.open_tree("clusters")?,
            nodes: db.open_tree("nodes")?,
            by_created: db.open_tree("by_created")?,
            by_owner: db.open_tree("by_owner")?,
            by_status: db.open_tree("by_status")?,
            logs: db.open_tree("logs")?,
            meta: db.open_tree("meta")?,
            db,
            catalog: RwLock::new(()),
            stripes: (0..64).map(|_| Mutex::new(())).collect(),
            commit,
            announcer: Arc::default(),
            logs_announced: broadcast::channel(LOG_BUFFER).0,
            tally: Mutex::default(),
            decoded: Decoded::default(),
            catalog_generation: AtomicU64::new(0),
        };
        let converted = store.migrate()?;
        if converted > 0 {
            tracing::info!(converted, "clusters converted to the per-node store layout");
        }
        let mut tally = store.count_clusters()?;
        let removed = store.collect_garbage(&mut tally)?;
        if removed > 0 {
            tracing::info!(removed, "records left by an interrupted commit removed");
        }
        *store.lock_tally() = tally;
        Ok(store)
    }

    /// Converts every cluster stored by the first layout; a no-op once [`LAYOUT_KEY`] says
    /// so. Idempotent: a cluster already converted (its value is a head) is skipped.
    fn migrate(&self) -> Result<usize, StoreError> {
        if self.meta.get(LAYOUT_KEY)?.as_deref() == Some(LAYOUT.as_bytes()) {
            return Ok(0);
        }
        // The keys first: the conversion rewrites the tree it walks.
        let keys = self
            .clusters
            .iter()
            .keys()
            .collect::<Result<Vec<IVec>, _>>()?;
        let mut converted = 0;
        for key in keys {
            let Some(bytes) = self.clusters.get(&key)? else {
                continue;
            };
            if Head::decode(&key, &bytes).is_ok() {
                continue;
            }
            let mut c: Cluster = decode(&key, &bytes)?;
            if c.id.to_string().as_bytes() != key.as_ref() {
                return Err(corrupt(&key, "the cluster's id is not its key"));
            }
            check_node_names(&c)?;
            let plan = Plan::write(None, &mut c, 1);
            // Replaces exactly the first-layout value read above.
            if self.commit(c.id, Some(&bytes), &plan)?.is_some() {
                converted += 1;
            }
        }
        self.meta.insert(LAYOUT_KEY, LAYOUT)?;
        self.db.flush()?;
        Ok(converted)
    }

    /// Counts every stored cluster by status, and the nodes its head carries (at open; the
    /// node records are counted by [`SledStore::collect_garbage`], which reads them anyway).
    fn count_clusters(&self) -> Result<Tally, StoreError> {
        let mut tally = Tally::default();
        for kv in self.clusters.iter() {
            let (k, v) = kv?;
            let head = Head::decode(&k, &v)?;
            *tally.clusters.entry(head.cluster.status).or_default() += 1;
            // The nodes the head carries; those with records are counted with them.
            for n in &head.inline {
                *tally.nodes.entry(n.observed.status).or_default() += 1;
            }
            if head.cluster.status != ClusterStatus::Destroyed {
                tally.hold(&head.cluster.owner, Held::of_cluster(&head.inline), 1);
            }
        }
        Ok(tally)
    }

    fn durable(&self) -> Result<(), StoreError> {
        self.commit.sync()
    }

    /// A product write is visible: readers of the catalog must read it again.
    fn catalog_changed(&self) {
        self.catalog_generation.fetch_add(1, Ordering::Release);
    }

    fn lock_catalog(&self) -> RwLockWriteGuard<'_, ()> {
        self.catalog.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The catalog lock for a create: shared unless a guard checks the owner's clusters
    /// (two creates of one owner must not both pass a check against the same usage).
    fn lock_catalog_for(&self, guarded: bool) -> CatalogLock<'_> {
        if guarded {
            CatalogLock::Alone(self.lock_catalog())
        } else {
            CatalogLock::Shared(self.catalog.read().unwrap_or_else(PoisonError::into_inner))
        }
    }

    fn lock_tally(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads cluster `id` consistently (see the module docs). `None` if it does not exist,
    /// or if its head does not match `filter` (then its nodes are not read). A head that
    /// [`Decoded`] holds is not decoded again, nor are its nodes read.
    fn read(
        &self,
        id: ClusterId,
        filter: Option<&ListFilter>,
    ) -> Result<Option<Arc<Snapshot>>, StoreError> {
        let key = id.to_string();
        loop {
            let Some(head_bytes) = self.clusters.get(&key)? else {
                return Ok(None);
            };
            if let Some(snap) = self.decoded.get(id, &head_bytes) {
                return Ok(Some(snap).filter(|s| filter.is_none_or(|f| f.matches(&s.cluster))));
            }
            let head = Head::decode(key.as_bytes(), &head_bytes)?;
            if filter.is_some_and(|f| !f.matches(&head.cluster)) {
                return Ok(None);
            }
            let records = self.records(id, &head)?;
            if self.clusters.get(&key)?.as_ref() != Some(&head_bytes) {
                // A commit came between the reads: read the new revision.
                continue;
            }
            let nodes = match records {
                Records::All(nodes) => nodes,
                Records::Stale(k, what) => return Err(corrupt(&k, what)),
            };
            let snap = Arc::new(Snapshot::assemble(id, head_bytes, head, nodes)?);
            self.decoded.put(Arc::clone(&snap));
            return Ok(Some(snap));
        }
    }

    /// The node records `head` names, as long as each is still the one it names. A record
    /// missing or of another revision means a newer head (a commit two after this head writes
    /// the same slot again), or, if the head is still current, a corrupt store.
    fn records(&self, id: ClusterId, head: &Head) -> Result<Records, StoreError> {
        let mut nodes = Vec::with_capacity(head.nodes.len());
        for (k, version) in head.node_keys(id) {
            match self.nodes.get(&k)? {
                Some(v) if split_node(&v).0.is_some_and(|r| r != version) => {
                    return Ok(Records::Stale(
                        k,
                        "the node record its cluster names is of another revision",
                    ));
                }
                Some(v) => nodes.push(v),
                None => {
                    return Ok(Records::Stale(
                        k,
                        "the node record its cluster names is missing",
                    ));
                }
            }
        }
        Ok(Records::All(nodes))
    }

    /// Whether cluster `id` exists and its head matches `filter` (nodes are not read).
    fn head_matches(&self, id: ClusterId, filter: &ListFilter) -> Result<bool, StoreError> {
        let key = id.to_string();
        Ok(match self.clusters.get(&key)? {
            Some(v) => filter.matches(&Head::decode(key.as_bytes(), &v)?.cluster),
            None => false,
        })
    }

    /// Commits `plan` for cluster `id` if its head is still `expected` (`None`: there is
    /// none). The commit's sequence number, or `None` if the head is not the one expected
    /// (nothing is written).
    ///
    /// No sled transaction (see the module docs): under the cluster's lock, the new node
    /// records (under new keys) and the new index keys are written first, then the head,
    /// the one commit point, then what the new head no longer needs is removed. sled
    /// recovers its log in order, so a head never outlives the records it names; a crash
    /// leaves at most unneeded records and stale index keys, which [`SledStore::open_with`]
    /// removes and which no reader trusts (readers check each head).
    fn commit(
        &self,
        id: ClusterId,
        expected: Option<&IVec>,
        plan: &Plan,
    ) -> Result<Option<u64>, StoreError> {
        let key = id.to_string();
        let key = key.as_bytes();
        let _cluster = self.lock_cluster(id);
        if self.clusters.get(key)?.as_ref() != expected {
            return Ok(None);
        }
        for (k, v) in &plan.put_nodes {
            self.nodes.insert(k.as_slice(), v.as_slice())?;
        }
        // A status change moves the status key alone: the others stay as they are.
        let (old_index, new_index) = (plan.remove_index.as_ref(), plan.insert_index.as_ref());
        for (tree, k) in self.index_moves(new_index, old_index) {
            tree.insert(k, key)?;
        }
        match &plan.head {
            Some(head) => self.clusters.insert(key, head.as_slice())?,
            None => self.clusters.remove(key)?,
        };
        // Taken under the cluster's lock: one cluster's numbers follow its commit order.
        let seq = self.announcer.next_seq();
        for k in &plan.remove_nodes {
            self.nodes.remove(k.as_slice())?;
        }
        for (tree, k) in self.index_moves(old_index, new_index) {
            tree.remove(k)?;
        }
        if plan.head.is_none() {
            self.logs.remove(key)?;
        }
        Ok(Some(seq))
    }

    /// The index keys of `keys` that `other` does not hold, each with its tree.
    fn index_moves<'a>(
        &'a self,
        keys: Option<&'a IndexKeys>,
        other: Option<&'a IndexKeys>,
    ) -> impl Iterator<Item = (&'a sled::Tree, &'a [u8])> {
        let trees = [&self.by_created, &self.by_owner, &self.by_status];
        let (keys, other) = (keys.map(IndexKeys::parts), other.map(IndexKeys::parts));
        (0..3).filter_map(move |i| {
            let k = keys?[i];
            (other.map(|o| o[i]) != Some(k)).then_some((trees[i], k))
        })
    }

    fn lock_cluster(&self, id: ClusterId) -> MutexGuard<'_, ()> {
        let stripe = id.0.as_u128() as usize % self.stripes.len();
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes what a crash between the steps of a commit may leave (see
    /// [`SledStore::commit`]): node records no head names (but the other slot of a node it
    /// names) and index keys that do not match their cluster, and counts the named node
    /// records into `tally`. Walks each tree once, one cluster at a time.
    fn collect_garbage(&self, tally: &mut Tally) -> Result<usize, StoreError> {
        let mut removed = 0;
        // Per cluster: the records its head names, the other slots of its nodes (a node's
        // previous record, kept until the slot is written again), and its owner if it holds
        // what its nodes hold (it is not destroyed).
        type Keys = HashSet<Vec<u8>>;
        let mut current: Option<(Vec<u8>, Keys, Keys, Option<String>)> = None;
        for kv in self.nodes.iter() {
            let (k, v) = kv?;
            let uuid = k.split(|b| *b == 0).next().unwrap_or_default().to_vec();
            if current.as_ref().is_none_or(|(u, ..)| *u != uuid) {
                let (mut named, mut spare, mut holder) = (HashSet::new(), HashSet::new(), None);
                if let Some(head) = self.clusters.get(&uuid)? {
                    let h = Head::decode(&uuid, &head)?;
                    named.extend(h.node_keys(h.cluster.id).map(|(k, _)| k));
                    spare.extend(h.spare_keys(h.cluster.id));
                    holder =
                        (h.cluster.status != ClusterStatus::Destroyed).then_some(h.cluster.owner);
                }
                current = Some((uuid, named, spare, holder));
            }
            let Some((_, named, spare, holder)) = current.as_ref() else {
                continue;
            };
            if named.contains(k.as_ref()) {
                let node = decode::<Node>(&k, split_node(&v).1)?;
                *tally.nodes.entry(node.observed.status).or_default() += 1;
                if let Some(owner) = holder {
                    tally.hold(owner, Held::of_node(&node), 1);
                }
            } else if !spare.contains(k.as_ref()) {
                self.nodes.remove(&k)?;
                removed += 1;
            }
        }
        for (tree, which) in [
            (&self.by_created, 0),
            (&self.by_owner, 1),
            (&self.by_status, 2),
        ] {
            for kv in tree.iter() {
                let (k, v) = kv?;
                let keep = match self.clusters.get(&v)? {
                    Some(head) => {
                        let keys = IndexKeys::of(&Head::decode(&v, &head)?.cluster);
                        keys.parts()[which] == k.as_ref()
                    }
                    None => false,
                };
                if !keep {
                    tree.remove(&k)?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// One read-modify-write, committed but not yet durable nor announced.
    fn update_one(
        &self,
        id: ClusterId,
        f: &mut dyn FnMut(&mut Cluster) -> Result<Update, String>,
    ) -> Result<Outcome, StoreError> {
        loop {
            let Some(snap) = self.read(id, None)? else {
                return Err(StoreError::NotFound(format!("cluster {id}")));
            };
            // Work on a copy: the snapshot is what the commit checks and moves the counts from.
            let mut c = Cluster::clone(&snap.cluster);
            match f(&mut c).map_err(StoreError::Rejected)? {
                Update::Keep => return Ok(Outcome::Kept(Arc::new(c))),
                Update::Write => {}
            }
            if c.id != id {
                return Err(StoreError::Rejected(format!(
                    "an update of cluster {id} cannot change its id"
                )));
            }
            // The stored names were checked when written: only a change of them is checked.
            let same_names = c.nodes.len() == snap.names.len()
                && c.nodes
                    .iter()
                    .zip(&snap.names)
                    .all(|(n, s)| n.name.as_str() == s);
            if !same_names {
                check_node_names(&c)?;
            }
            let rev = snap.rev + 1;
            let plan = Plan::write(Some(&snap), &mut c, rev);
            let Some(seq) = self.commit(id, Some(&snap.head), &plan)? else {
                // A concurrent writer changed the cluster since we read it: redo `f` on the
                // new record rather than overwrite theirs.
                continue;
            };
            self.lock_tally()
                .shift(Some(&Statuses::of(&snap.cluster)), Some(&Statuses::of(&c)));
            let cluster = Arc::new(c);
            self.remember(&plan, rev, &cluster);
            return Ok(Outcome::Written { cluster, seq });
        }
    }

    /// Keeps what `plan` committed at `rev` decoded, for the next read.
    fn remember(&self, plan: &Plan, rev: u64, cluster: &Arc<Cluster>) {
        if let Some(snap) = Snapshot::written(plan, rev, Arc::clone(cluster)) {
            self.decoded.put(Arc::new(snap));
        }
    }

    /// Creates a cluster: the checks and the commit under the catalog lock, the flush after.
    /// The record given becomes the stored one (kept decoded and announced), not a copy.
    /// Commits each entry of `batch` in order (not yet durable): each entry's result and,
    /// if any entry was written, the flush ticket that makes the batch durable, with the
    /// indexes of the entries written. The flusher announces them once that flush succeeded.
    fn batch_ticket(
        &self,
        batch: &mut [BatchUpdate<'_>],
    ) -> (Vec<Written>, Option<(u64, Vec<usize>)>) {
        let mut results = Vec::with_capacity(batch.len());
        let mut written = Vec::new();
        let mut announce = Vec::new();
        for (i, (id, f)) in batch.iter_mut().enumerate() {
            let ticket = self.announcer.enter(*id);
            results.push(match self.update_one(*id, &mut **f) {
                Ok(Outcome::Kept(c)) => Ok(c),
                Ok(Outcome::Written { cluster, seq }) => {
                    written.push(i);
                    announce.push((ticket, seq, Arc::clone(&cluster)));
                    Ok(cluster)
                }
                Err(e) => Err(e),
            });
        }
        if written.is_empty() {
            return (results, None);
        }
        let durable = self.commit.request(Some(Box::new(move |ok| {
            if ok {
                for (ticket, seq, c) in announce {
                    ticket.announce(seq, Commit::Cluster(c));
                }
            }
        })));
        (results, Some((durable, written)))
    }

    /// Creates cluster `c` once durable (announced by then).
    fn create(&self, c: Cluster, guard: Option<&ClusterGuard<'_>>) -> Result<(), StoreError> {
        let durable = self.create_ticket(c, guard)?;
        self.commit.wait(durable)
    }

    /// Commits cluster `c`; the answer resolves once it is durable, and the flusher
    /// announces it then, whether or not anyone awaits the answer.
    fn create_pending(
        &self,
        c: Cluster,
        guard: Option<&ClusterGuard<'_>>,
    ) -> Result<Pending, StoreError> {
        let durable = self.create_ticket(c, guard)?;
        Ok(Pending::later(self.commit.durable_later(durable)))
    }

    /// Commits cluster `c` ([`SledStore::commit_new`]) and takes the flush ticket that makes
    /// it durable; the flusher announces it once that flush succeeded.
    fn create_ticket(
        &self,
        c: Cluster,
        guard: Option<&ClusterGuard<'_>>,
    ) -> Result<u64, StoreError> {
        let (ticket, seq, record) = self.commit_new(c, guard)?;
        Ok(self.commit.request(Some(Box::new(move |ok| {
            if ok {
                ticket.announce(seq, Commit::Cluster(record));
            }
        }))))
    }

    /// Commits the new cluster `c` (not yet durable) if its product exists, no cluster has
    /// its id and `guard` allows it: the write's announcer ticket, its sequence number and
    /// the record as stored.
    fn commit_new(
        &self,
        c: Cluster,
        guard: Option<&ClusterGuard<'_>>,
    ) -> Result<(Ticket, u64, Arc<Cluster>), StoreError> {
        check_node_names(&c)?;
        let mut record = c;
        let plan = Plan::write(None, &mut record, 1);
        let c = &record;
        let exists = || StoreError::AlreadyExists(format!("cluster {}", c.id));
        let ticket = self.announcer.enter(c.id);
        let seq = {
            let _catalog = self.lock_catalog_for(guard.is_some());
            if !self
                .products
                .contains_key(product_key(&c.product, &c.version))?
            {
                return Err(StoreError::NotFound(format!(
                    "product {}/{}",
                    c.product, c.version
                )));
            }
            if let Some(guard) = guard {
                if self.clusters.contains_key(c.id.to_string())? {
                    return Err(exists());
                }
                // Copied out: the guard runs without the tally's lock.
                let held = self.lock_tally().usage(&c.owner);
                guard(held).map_err(StoreError::Rejected)?;
            }
            let seq = self.commit(c.id, None, &plan)?.ok_or_else(exists)?;
            self.lock_tally().shift(None, Some(&Statuses::of(c)));
            seq
        };
        let record = Arc::new(record);
        self.remember(&plan, 1, &record);
        // The lock is released before the flush: the cluster is committed, so the next
        // holder (a `delete_product` of its product, another launch of its owner) sees it,
        // and sled's flush writes the log in order, so nothing committed after it can reach
        // the disk without it.
        Ok((ticket, seq, record))
    }
}

/// How long opening waits for the directory's lock. A store dropped just before, in this
/// process, lets go of it a moment after the drop (sled's last I/O job and flusher thread
/// end on their own), which a loaded machine makes visible to a reopen; another process that
/// holds the directory still fails the open, this much later.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether `e` is sled's "another handle holds the directory" (sled 0.34 says so only in
/// the message of an `io::Error`).
fn is_locked(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// The catalog lock as a create holds it (released when dropped).
enum CatalogLock<'a> {
    Shared(#[allow(dead_code)] RwLockReadGuard<'a, ()>),
    Alone(#[allow(dead_code)] RwLockWriteGuard<'a, ()>),
}

/// A check over the clusters of the new cluster's owner that may refuse a create (see
/// [`Store::create_cluster_checked`]).
type ClusterGuard<'a> = dyn Fn(Usage) -> Result<(), String> + 'a;

/// One entry's result in a batch: the cluster as committed (or kept), or why not.
type Written = Result<Arc<Cluster>, StoreError>;

/// The node records of a head, or the key of the first that is not the one it names.
enum Records {
    All(Vec<IVec>),
    Stale(Vec<u8>, &'static str),
}

/// What [`SledStore::update_one`] did.
enum Outcome {
    /// The record as the caller's function left it (not written).
    Kept(Arc<Cluster>),
    /// The cluster as committed, shared with the cache and the announcement.
    Written { cluster: Arc<Cluster>, seq: u64 },
}

/// The cluster an index entry points to.
fn index_id(key: &[u8], value: &[u8]) -> Result<ClusterId, StoreError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt(key, "an index entry does not hold a cluster id"))
}

fn corrupt(key: &[u8], what: &str) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        source: serde_json::Error::custom(what),
    }
}

fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}

/// The error of each write of a batch whose shared flush failed.
fn flush_failed(e: &StoreError) -> StoreError {
    match e {
        StoreError::Sled(e) => StoreError::Sled(e.clone()),
        other => StoreError::Sled(sled::Error::ReportableBug(other.to_string())),
    }
}

impl Store for SledStore {
    fn create_product(&self, p: &Product) -> Result<(), StoreError> {
        let key = product_key(&p.name, &p.version);
        self.products
            .compare_and_swap(&key, None::<&[u8]>, Some(encode(p)))?
            .map_err(|_| StoreError::AlreadyExists(format!("product {}/{}", p.name, p.version)))?;
        self.catalog_changed();
        self.durable()
    }

    fn product(&self, name: &Name, version: &Name) -> Result<Option<Product>, StoreError> {
        let key = product_key(name, version);
        self.products
            .get(&key)?
            .map(|v| decode(&key, &v))
            .transpose()
    }

    fn products(&self) -> Result<Vec<Product>, StoreError> {
        self.products
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    fn put_part(
        &self,
        name: &Name,
        version: &Name,
        part: Part,
        data: &[u8],
        now: &Timestamp,
    ) -> Result<Product, StoreError> {
        let pkey = product_key(name, version);
        let out = (&self.products, &self.parts)
            .transaction(|(products, parts)| {
                let Some(bytes) = products.get(&pkey)? else {
                    return Err(ConflictableTransactionError::Abort(StoreError::NotFound(
                        format!("product {name}/{version}"),
                    )));
                };
                let mut p: Product =
                    decode(&pkey, &bytes).map_err(ConflictableTransactionError::Abort)?;
                p.parts.set(part);
                p.updated_at = now.clone();
                parts.insert(part_key(name, version, part), data)?;
                products.insert(pkey.as_slice(), encode(&p))?;
                Ok(p)
            })
            .map_err(tx_error)?;
        self.catalog_changed();
        self.durable()?;
        Ok(out)
    }

    fn put_bundle(
        &self,
        p: &Product,
        parts: &[(Part, &[u8])],
    ) -> Result<(Product, bool), StoreError> {
        let pkey = product_key(&p.name, &p.version);
        let out = (&self.products, &self.parts)
            .transaction(|(products, tparts)| {
                let old: Option<Product> = products
                    .get(&pkey)?
                    .map(|b| decode(&pkey, &b))
                    .transpose()
                    .map_err(ConflictableTransactionError::Abort)?;
                let stored = bundled(p, old.as_ref(), parts);
                for (part, data) in parts {
                    tparts.insert(part_key(&p.name, &p.version, *part), *data)?;
                }
                products.insert(pkey.as_slice(), encode(&stored))?;
                Ok((stored, old.is_none()))
            })
            .map_err(tx_error)?;
        self.catalog_changed();
        self.durable()?;
        Ok(out)
    }

    fn part(&self, name: &Name, version: &Name, part: Part) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .parts
            .get(part_key(name, version, part))?
            .map(|v| v.to_vec()))
    }

    fn delete_product(
        &self,
        name: &Name,
        version: &Name,
        guard: &dyn Fn(&[Cluster]) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        let _catalog = self.lock_catalog();
        let pkey = product_key(name, version);
        if !self.products.contains_key(&pkey)? {
            return Err(StoreError::NotFound(format!("product {name}/{version}")));
        }
        // No index by product: every head is read, the nodes only of the product's clusters.
        let filter = ListFilter {
            product: Some(name.to_string()),
            version: Some(version.to_string()),
            ..ListFilter::default()
        };
        let mut users = Vec::new();
        for kv in self.by_created.iter() {
            let (k, v) = kv?;
            if let Some(s) = self.read(index_id(&k, &v)?, Some(&filter))? {
                users.push(Cluster::clone(&s.cluster));
            }
        }
        guard(&users).map_err(StoreError::Rejected)?;
        (&self.products, &self.parts)
            .transaction(|(products, parts)| {
                products.remove(pkey.as_slice())?;
                for part in Part::ALL {
                    parts.remove(part_key(name, version, part))?;
                }
                Ok(())
            })
            .map_err(tx_error)?;
        self.catalog_changed();
        self.durable()
    }

    fn create_cluster(&self, c: Cluster) -> Result<(), StoreError> {
        self.create(c, None)
    }

    fn create_cluster_checked(
        &self,
        c: Cluster,
        guard: &dyn Fn(Usage) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        self.create(c, Some(guard))
    }

    fn create_cluster_pending(
        &self,
        c: Cluster,
        guard: Option<&dyn Fn(Usage) -> Result<(), String>>,
    ) -> Result<Pending, StoreError> {
        self.create_pending(c, guard)
    }

    fn purge_cluster(
        &self,
        id: ClusterId,
        guard: &dyn Fn(&Cluster) -> bool,
    ) -> Result<bool, StoreError> {
        let ticket = self.announcer.enter(id);
        // One commit removes the head, the nodes, the index keys and the logs, only if
        // the head is still the one the guard judged.
        let (seq, old) = loop {
            let Some(snap) = self.read(id, None)? else {
                return Ok(false);
            };
            if !guard(&snap.cluster) {
                return Ok(false);
            }
            if let Some(seq) = self.commit(id, Some(&snap.head), &Plan::purge(id, &snap))? {
                break (seq, Arc::clone(&snap.cluster));
            }
        };
        self.decoded.forget(id);
        self.lock_tally().shift(Some(&Statuses::of(&old)), None);
        self.durable()?;
        ticket.announce(seq, Commit::Purged(id));
        Ok(true)
    }

    fn cluster(&self, id: ClusterId) -> Result<Option<Cluster>, StoreError> {
        Ok(self.read(id, None)?.map(|s| Cluster::clone(&s.cluster)))
    }

    fn cluster_shared(&self, id: ClusterId) -> Result<Option<Arc<Cluster>>, StoreError> {
        Ok(self.read(id, None)?.map(|s| Arc::clone(&s.cluster)))
    }

    fn clusters(&self) -> Result<Vec<Cluster>, StoreError> {
        let mut all = Vec::new();
        for kv in self.by_created.iter() {
            let (k, v) = kv?;
            // A cluster purged since the index was read is simply not listed.
            if let Some(s) = self.read(index_id(&k, &v)?, None)? {
                all.push(Cluster::clone(&s.cluster));
            }
        }
        Ok(all)
    }

    fn update_cluster(
        &self,
        id: ClusterId,
        f: &mut dyn FnMut(&mut Cluster) -> Result<Update, String>,
    ) -> Result<Cluster, StoreError> {
        let ticket = self.announcer.enter(id);
        match self.update_one(id, f)? {
            Outcome::Kept(c) => Ok(Arc::unwrap_or_clone(c)),
            Outcome::Written { cluster, seq } => {
                self.durable()?;
                ticket.announce(seq, Commit::Cluster(Arc::clone(&cluster)));
                Ok(Arc::unwrap_or_clone(cluster))
            }
        }
    }

    fn update_clusters(
        &self,
        batch: &mut [BatchUpdate<'_>],
    ) -> Vec<Result<Arc<Cluster>, StoreError>> {
        let (mut results, durable) = self.batch_ticket(batch);
        // One flush makes the whole batch durable; only then is any of it announced.
        if let Some((durable, written)) = durable
            && let Err(e) = self.commit.wait(durable)
        {
            for i in written {
                results[i] = Err(flush_failed(&e));
            }
        }
        results
    }

    fn update_clusters_pending(
        &self,
        batch: &mut [BatchUpdate<'_>],
    ) -> (Vec<Result<Arc<Cluster>, StoreError>>, Pending) {
        let (results, durable) = self.batch_ticket(batch);
        let pending = match durable {
            Some((durable, _)) => Pending::later(self.commit.durable_later(durable)),
            None => Pending::durable(),
        };
        (results, pending)
    }

    fn clusters_page(
        &self,
        filter: &ListFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page, StoreError> {
        if let Some(k) = cursor {
            check_cursor(k)?;
        }
        // The most selective index that the filter allows; the other filters are checked on
        // each head the walk yields.
        let (tree, prefix) = match (&filter.owner, filter.status) {
            (Some(owner), _) => (&self.by_owner, owner_prefix(owner)),
            (None, Some(status)) => (&self.by_status, status_prefix(status)),
            (None, None) => (&self.by_created, Vec::new()),
        };
        let start = match cursor {
            Some(k) => Bound::Excluded([prefix.as_slice(), k.as_bytes()].concat()),
            None => Bound::Included(prefix.clone()),
        };
        let mut page = Page::default();
        for kv in tree.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            let id = index_id(&k, &v)?;
            if page.clusters.len() == limit {
                // One more match is all `next` needs: its head, not its nodes.
                if self.head_matches(id, filter)? {
                    page.next = page.clusters.last().map(|c| cursor_of(c));
                    break;
                }
                continue;
            }
            if let Some(s) = self.read(id, Some(filter))? {
                page.clusters.push(Arc::clone(&s.cluster));
            }
        }
        Ok(page)
    }

    fn counts(&self) -> Result<Counts, StoreError> {
        Ok(self.lock_tally().counts())
    }

    fn usage(&self, owner: &str) -> Usage {
        self.lock_tally().usage(owner)
    }

    fn append_log(&self, id: ClusterId, data: &[u8]) -> Result<(), StoreError> {
        self.logs.update_and_fetch(id.to_string(), |old| {
            let mut v = old.map(<[u8]>::to_vec).unwrap_or_default();
            v.extend_from_slice(data);
            if v.len() > MAX_LOG {
                v.drain(..v.len() - MAX_LOG);
            }
            Some(v)
        })?;
        self.durable()?;
        // Nobody listening is fine.
        let _ = self.logs_announced.send(LogAppended {
            id,
            data: bytes::Bytes::copy_from_slice(data),
        });
        Ok(())
    }

    fn log(&self, id: ClusterId) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .logs
            .get(id.to_string())?
            .map(|v| v.to_vec())
            .unwrap_or_default())
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .meta
            .get(key)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.meta.insert(key, value.as_bytes())?;
        self.durable()
    }

    fn subscribe(&self) -> broadcast::Receiver<Commit> {
        self.announcer.sender.subscribe()
    }

    fn subscribe_logs(&self) -> broadcast::Receiver<LogAppended> {
        self.logs_announced.subscribe()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn catalog_generation(&self) -> u64 {
        self.catalog_generation.load(Ordering::Acquire)
    }
}

/// The statuses of one cluster and its nodes, its owner, and what it holds: what the tally
/// keeps of it.
struct Statuses<'a> {
    owner: &'a str,
    cluster: ClusterStatus,
    nodes: Vec<NodeStatus>,
    /// Nothing for a destroyed cluster.
    held: Held,
}

impl<'a> Statuses<'a> {
    fn of(c: &'a Cluster) -> Self {
        let held = if c.status == ClusterStatus::Destroyed {
            Held::default()
        } else {
            Held::of_cluster(&c.nodes)
        };
        Self {
            owner: &c.owner,
            cluster: c.status,
            nodes: c.nodes.iter().map(|n| n.observed.status).collect(),
            held,
        }
    }
}

/// What one owner's clusters hold, in whole clusters and nodes and in thousandths of a cpu
/// and of a MB: integers, so that taking away what was added leaves exactly what was there
/// (sums of `f64` drift). Signed, as the tally's counts are.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Held {
    clusters: i64,
    nodes: i64,
    milli_cpus: i64,
    milli_mem: i64,
}

impl Held {
    /// A cluster itself, without its nodes.
    const CLUSTER: Held = Held {
        clusters: 1,
        nodes: 0,
        milli_cpus: 0,
        milli_mem: 0,
    };

    /// A cluster with `nodes` (those of them it is counted with).
    fn of_cluster(nodes: &[Node]) -> Held {
        nodes
            .iter()
            .fold(Held::CLUSTER, |sum, n| sum.plus(Held::of_node(n), 1))
    }

    fn of_node(n: &Node) -> Held {
        // Rounded to a thousandth, node by node, the same way wherever a node is counted.
        let milli = |x: f64| (x * 1000.0).round() as i64;
        Held {
            clusters: 0,
            nodes: 1,
            milli_cpus: milli(n.cpu),
            milli_mem: milli(n.mem),
        }
    }

    /// `self` plus `sign` times `o`. Saturating, so that no sum panics: a node's amounts are
    /// bounded (1 024 cpus, 64 TB), and a sum would only saturate far past any quota.
    fn plus(self, o: Held, sign: i64) -> Held {
        let add = |a: i64, b: i64| a.saturating_add(sign.saturating_mul(b));
        Held {
            clusters: add(self.clusters, o.clusters),
            nodes: add(self.nodes, o.nodes),
            milli_cpus: add(self.milli_cpus, o.milli_cpus),
            milli_mem: add(self.milli_mem, o.milli_mem),
        }
    }

    /// As a quota reads it (a count below zero, for a moment, reads as none).
    fn usage(self) -> Usage {
        let whole = |n: i64| u64::try_from(n).unwrap_or(0);
        let thousandths = |n: i64| n.max(0) as f64 / 1000.0;
        Usage {
            clusters: whole(self.clusters),
            nodes: whole(self.nodes),
            cpus: thousandths(self.milli_cpus),
            mem: thousandths(self.milli_mem),
        }
    }
}

/// The kept counts, and what each owner's clusters hold ([`Store::usage`], which a launch's
/// quota check reads: its cost does not grow with what the owner holds). Counts are
/// signed: two commits of one cluster may move them in either order (each after its own
/// commit), and a count may dip below zero for that moment.
#[derive(Default)]
struct Tally {
    clusters: BTreeMap<ClusterStatus, i64>,
    nodes: BTreeMap<NodeStatus, i64>,
    /// Per owner holding anything; an owner whose sums are all zero is removed.
    held: HashMap<String, Held>,
}

impl Tally {
    /// Moves one cluster from `old` (none: it is new) to `new` (none: it is gone).
    fn shift(&mut self, old: Option<&Statuses>, new: Option<&Statuses>) {
        if let Some(old) = old {
            *self.clusters.entry(old.cluster).or_default() -= 1;
            for s in &old.nodes {
                *self.nodes.entry(*s).or_default() -= 1;
            }
        }
        if let Some(new) = new {
            *self.clusters.entry(new.cluster).or_default() += 1;
            for s in &new.nodes {
                *self.nodes.entry(*s).or_default() += 1;
            }
        }
        if let Some(o) = old {
            self.hold(o.owner, o.held, -1);
        }
        if let Some(n) = new {
            self.hold(n.owner, n.held, 1);
        }
    }

    /// Adds `sign` times `h` to what `owner` holds.
    fn hold(&mut self, owner: &str, h: Held, sign: i64) {
        if h == Held::default() {
            return;
        }
        let sum = self
            .held
            .get(owner)
            .copied()
            .unwrap_or_default()
            .plus(h, sign);
        if sum == Held::default() {
            self.held.remove(owner);
        } else if let Some(slot) = self.held.get_mut(owner) {
            *slot = sum;
        } else {
            self.held.insert(owner.to_owned(), sum);
        }
    }

    fn usage(&self, owner: &str) -> Usage {
        self.held.get(owner).copied().unwrap_or_default().usage()
    }

    /// As [`Counts::of`] gives them: no status of count zero.
    fn counts(&self) -> Counts {
        fn positive<K: Ord + Copy>(m: &BTreeMap<K, i64>) -> BTreeMap<K, u64> {
            m.iter()
                .filter_map(|(k, n)| u64::try_from(*n).ok().filter(|n| *n > 0).map(|n| (*k, n)))
                .collect()
        }
        Counts {
            clusters: positive(&self.clusters),
            nodes: positive(&self.nodes),
        }
    }
}

/// Announces commits, per cluster in commit order (see [`Commit`]).
struct Announcer {
    sender: broadcast::Sender<Commit>,
    /// The last sequence number taken (see [`SledStore::commit`]).
    seq: AtomicU64,
    /// The clusters with a write on its way (entered, not yet announced or abandoned): how
    /// many, and the newest commit of it announced. An entry lives only while a write is on
    /// its way, so this holds as many clusters as there are concurrent writers.
    on_the_way: Mutex<HashMap<ClusterId, OnTheWay>>,
}

#[derive(Default)]
struct OnTheWay {
    writers: usize,
    announced: u64,
}

impl Default for Announcer {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(COMMIT_BUFFER).0,
            seq: AtomicU64::new(0),
            on_the_way: Mutex::default(),
        }
    }
}

impl Announcer {
    /// A write of cluster `id` begins; entered before its commit, so that a commit
    /// announced meanwhile is remembered until this one is done.
    fn enter(self: &Arc<Self>, id: ClusterId) -> Ticket {
        self.lock().entry(id).or_default().writers += 1;
        Ticket {
            announcer: Arc::clone(self),
            id,
            commit: None,
        }
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ClusterId, OnTheWay>> {
        self.on_the_way
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn leave(&self, id: ClusterId, commit: Option<(u64, Commit)>) {
        let mut on_the_way = self.lock();
        let Some(slot) = on_the_way.get_mut(&id) else {
            return;
        };
        if let Some((seq, commit)) = commit {
            // Sent under the lock, so that two announcements of one cluster cannot cross.
            if seq > slot.announced {
                slot.announced = seq;
                // Nobody listening is fine.
                let _ = self.sender.send(commit);
            }
        }
        slot.writers -= 1;
        if slot.writers == 0 {
            on_the_way.remove(&id);
        }
    }
}

/// One write on its way; leaves the announcer when dropped, announcing its commit if given.
struct Ticket {
    announcer: Arc<Announcer>,
    id: ClusterId,
    commit: Option<(u64, Commit)>,
}

impl Ticket {
    /// Announces the durable commit `seq`, unless a newer one of the cluster was.
    fn announce(mut self, seq: u64, commit: Commit) {
        self.commit = Some((seq, commit));
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.announcer.leave(self.id, self.commit.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `open` (of a raw sled handle: [`SledStore::open`] waits by itself, see
    /// [`LOCK_WAIT`]) until sled lets go of the directory's file lock: a handle dropped just
    /// before keeps it a moment longer (its flusher thread ends after the drop), which a
    /// loaded machine makes visible.
    fn retry_locked<T, E: std::fmt::Debug>(mut open: impl FnMut() -> Result<T, E>) -> T {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match open() {
                Ok(v) => return v,
                Err(e)
                    if format!("{e:?}").contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("open failed: {e:?}"),
            }
        }
    }

    /// A reopen waits for a handle dropped meanwhile to let go of the directory; while
    /// another handle keeps it, the open fails (after [`LOCK_WAIT`]) and names the lock.
    #[test]
    fn an_open_waits_for_a_dropped_handle_and_fails_while_one_holds_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let held = SledStore::open(dir.path()).unwrap();
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let started = std::time::Instant::now();
        let store = SledStore::open(dir.path()).expect("opens once the other handle is gone");
        assert!(started.elapsed() >= std::time::Duration::from_millis(250));
        dropper.join().unwrap();
        let started = std::time::Instant::now();
        let Err(e) = SledStore::open(dir.path()) else {
            panic!("opened a directory another handle holds");
        };
        assert!(started.elapsed() >= LOCK_WAIT, "{:?}", started.elapsed());
        assert!(format!("{e:?}").contains("could not acquire lock"), "{e:?}");
        drop(store);
    }

    #[test]
    fn passes_the_store_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        super::super::suite::run(&store);
    }

    /// Creates product `p/1` and a cluster of it with `nodes` in `store`; the cluster.
    fn with_cluster(store: &SledStore, nodes: &[&str]) -> Cluster {
        store
            .create_product(&super::super::suite::product("p", "1"))
            .unwrap();
        let c = super::super::suite::cluster_with("u", "p", "1", "2026-01-01T00:00:00.000Z", nodes);
        store.create_cluster(c.clone()).unwrap();
        c
    }

    /// [`with_cluster`], then a change that moves its nodes out of the head into records
    /// (slot 0, revision 2).
    /// A cluster of `nodes` (two or more) whose nodes have records: a change of its first
    /// node alone moves them all out of the head.
    fn with_records(store: &SledStore, nodes: &[&str]) -> Cluster {
        assert!(nodes.len() > 1, "a change of a single node keeps it inline");
        let c = with_cluster(store, nodes);
        store
            .update_cluster(c.id, &mut |c| {
                c.nodes[0].observed.message = Some("moved to a record".into());
                Ok(Update::Write)
            })
            .unwrap()
    }

    /// The keys of the `nodes` tree in the store at `dir`, in order.
    fn node_record_keys(dir: &Path) -> Vec<Vec<u8>> {
        raw(dir)[b"nodes".as_slice()]
            .iter()
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// A node's two slots are written alternately, so a reader that read a head may find
    /// the slot it names written again by the commit after next. Such a read must start over,
    /// never assemble a cluster from two revisions. The decoded cache is emptied before
    /// every read, so that the readers read the records.
    #[test]
    fn uncached_reads_during_commits_are_never_torn() {
        use std::sync::atomic::AtomicBool;
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let id = with_cluster(&store, &["a", "b", "c"]).id;
        let done = AtomicBool::new(false);
        let reads = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !done.load(Ordering::SeqCst) {
                        store.decoded.forget(id);
                        let snap = store.read(id, None).unwrap().unwrap();
                        let c = &snap.cluster;
                        let attempts: Vec<u32> =
                            c.nodes.iter().map(|n| n.observed.attempt).collect();
                        assert!(
                            attempts.iter().all(|a| u64::from(*a) + 1 == c.generation),
                            "a torn read: generation {}, attempts {attempts:?}",
                            c.generation
                        );
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..300 {
                    store
                        .update_cluster(id, &mut |c| {
                            c.generation += 1;
                            for n in &mut c.nodes {
                                n.observed.attempt += 1;
                            }
                            Ok(Update::Write)
                        })
                        .unwrap();
                }
                done.store(true, Ordering::SeqCst);
            });
        });
        assert!(reads.load(Ordering::Relaxed) > 0);
        let c = store.cluster(id).unwrap().unwrap();
        assert_eq!((c.generation, c.nodes[0].observed.attempt), (301, 300));
    }

    /// The nodes of a cluster never changed since its launch are in its head, not in records;
    /// an open counts them all the same.
    #[test]
    fn an_open_counts_the_nodes_a_head_carries() {
        let dir = tempfile::tempdir().unwrap();
        let c = {
            let store = SledStore::open(dir.path()).unwrap();
            with_cluster(&store, &["a", "b", "c"])
        };
        assert!(
            node_record_keys(dir.path()).is_empty(),
            "no node record yet"
        );
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.cluster(c.id).unwrap().as_ref(), Some(&c));
        assert_eq!(
            store.counts().unwrap(),
            Counts::of(std::slice::from_ref(&c))
        );
    }

    /// A node's other slot is not garbage: an open keeps it and counts each node once.
    #[test]
    fn an_open_keeps_the_other_slot_and_counts_each_node_once() {
        use super::super::layout::node_key;
        let dir = tempfile::tempdir().unwrap();
        let (c, id);
        {
            let store = SledStore::open(dir.path()).unwrap();
            c = with_records(&store, &["a", "b"]);
            id = c.id;
            store
                .update_cluster(id, &mut |c| {
                    c.nodes[0].observed.status = NodeStatus::Running;
                    Ok(Update::Write)
                })
                .unwrap();
        }
        let both = [
            node_key(id, "a", 0),
            node_key(id, "a", 1),
            node_key(id, "b", 0),
        ];
        assert_eq!(node_record_keys(dir.path()), both);
        let store = SledStore::open(dir.path()).unwrap();
        let mut tally = Tally::default();
        assert_eq!(
            store.collect_garbage(&mut tally).unwrap(),
            0,
            "nothing is garbage"
        );
        assert_eq!(
            tally.nodes.values().sum::<i64>(),
            2,
            "two nodes, counted once each"
        );
        super::super::suite::assert_counts(&store);
        drop(store);
        assert_eq!(node_record_keys(dir.path()), both);
    }

    /// The same, step by step: a head read before two commits names a slot that the second
    /// wrote again; its records are refused, and a read takes the newest revision.
    #[test]
    fn a_head_read_two_commits_ago_names_a_rewritten_slot() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let id = with_records(&store, &["a", "b"]).id;
        let key = id.to_string();
        let old = store.clusters.get(&key).unwrap().unwrap();
        let old = Head::decode(key.as_bytes(), &old).unwrap();
        assert!(matches!(store.records(id, &old).unwrap(), Records::All(n) if n.len() == 2));
        for _ in 0..2 {
            store
                .update_cluster(id, &mut |c| {
                    c.nodes[0].observed.attempt += 1;
                    Ok(Update::Write)
                })
                .unwrap();
        }
        match store.records(id, &old).unwrap() {
            Records::Stale(k, what) => {
                assert!(k.starts_with(format!("{id}\0a\0").as_bytes()));
                assert!(what.contains("another revision"), "{what}");
            }
            Records::All(_) => panic!("the rewritten slot was taken for the old head's"),
        }
        store.decoded.forget(id);
        let now = store.read(id, None).unwrap().unwrap();
        assert_eq!(now.cluster.nodes[0].observed.attempt, 2);
        assert_eq!(now.rev, 4);
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = SledStore::open(dir.path()).unwrap();
            super::super::suite::seed(&store)
        };
        let store = SledStore::open(dir.path()).unwrap();
        assert!(store.cluster(id).unwrap().is_some());
        assert_eq!(store.products().unwrap().len(), 1);
    }

    fn flushes(store: &SledStore) -> u64 {
        store.commit.numbers().2
    }

    #[test]
    fn a_batch_costs_one_flush_and_is_announced_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let first = super::super::suite::seed(&store);
        let others: Vec<ClusterId> = (0..4)
            .map(|_| {
                let mut c = store.cluster(first).unwrap().unwrap();
                c.id = ClusterId::generate();
                store.create_cluster(c.clone()).unwrap();
                c.id
            })
            .collect();
        let mut rx = store.subscribe();
        let before = flushes(&store);
        type F = Box<dyn FnMut(&mut Cluster) -> Result<Update, String>>;
        let mut fs: Vec<F> = (0..5)
            .map(|_| {
                Box::new(|c: &mut Cluster| -> Result<Update, String> {
                    c.nodes[0].observed.status = NodeStatus::Running;
                    Ok(Update::Write)
                }) as F
            })
            .collect();
        let mut batch: Vec<BatchUpdate<'_>> = Vec::new();
        for (id, f) in std::iter::once(first)
            .chain(others.iter().copied())
            .zip(fs.iter_mut())
        {
            batch.push((id, &mut **f));
        }
        let results = store.update_clusters(&mut batch);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(flushes(&store) - before, 1, "one flush for 5 writes");
        let mut announced = 0;
        while let Ok(Commit::Cluster(c)) = rx.try_recv() {
            assert_eq!(c.nodes[0].observed.status, NodeStatus::Running);
            announced += 1;
        }
        assert_eq!(announced, 5);

        // A batch that writes nothing does not flush.
        let mut keep = |_: &mut Cluster| -> Result<Update, String> { Ok(Update::Keep) };
        let mut missing = |_: &mut Cluster| -> Result<Update, String> { Ok(Update::Write) };
        let mut batch: [BatchUpdate<'_>; 2] =
            [(first, &mut keep), (ClusterId::generate(), &mut missing)];
        let before = flushes(&store);
        let results = store.update_clusters(&mut batch);
        assert!(results[0].is_ok() && matches!(results[1], Err(StoreError::NotFound(_))));
        assert_eq!(flushes(&store), before);
    }

    #[test]
    fn counts_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            super::super::suite::mixed_sequence(&store);
            super::super::suite::assert_counts(&store);
        }
        let store = SledStore::open(dir.path()).unwrap();
        super::super::suite::assert_counts(&store);
        assert!(!store.counts().unwrap().clusters.is_empty());
        super::super::suite::mixed_sequence(&store);
        super::super::suite::assert_counts(&store);
    }

    /// What a launch's guard reads: what the owner's clusters that are not destroyed hold,
    /// also as an open adds it up again, from nodes kept in the head and in records alike.
    #[test]
    fn the_guard_reads_what_the_owners_clusters_hold_also_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let alices = |at: &str| {
            let mut c = super::super::suite::cluster_with("alice", "p", "1", at, &["n", "m"]);
            // Amounts whose float sum is not exact: 0.1 + 0.2 != 0.3.
            c.nodes[0].cpu = 0.1;
            c.nodes[1].cpu = 0.2;
            c.nodes[0].mem = 512.5;
            c
        };
        let seen = |store: &SledStore| {
            let has = std::cell::Cell::new(None);
            let next = alices("2026-09-01T00:00:00.000Z");
            let refused = store.create_cluster_checked(next, &|usage| {
                has.set(Some(usage));
                Err("just looking".into())
            });
            assert!(matches!(refused, Err(StoreError::Rejected(_))));
            assert_eq!(has.get(), Some(store.usage("alice")));
            has.get().unwrap()
        };
        let want = Usage {
            clusters: 2,
            nodes: 4,
            cpus: 0.6,
            mem: 1027.0,
        };
        let gone = {
            let store = SledStore::open(dir.path()).unwrap();
            store
                .create_product(&super::super::suite::product("p", "1"))
                .unwrap();
            let [inline, in_records, gone] =
                [1, 2, 3].map(|day| alices(&format!("2026-08-0{day}T00:00:00.000Z")));
            for c in [&inline, &in_records, &gone] {
                store.create_cluster(c.clone()).unwrap();
            }
            // One node of two changed: the nodes move from the head to their own records.
            store
                .update_cluster(in_records.id, &mut |c| {
                    c.nodes[1].observed.status = NodeStatus::Running;
                    Ok(Update::Write)
                })
                .unwrap();
            let records = store
                .nodes
                .scan_prefix(in_records.id.to_string().as_bytes());
            assert_eq!(records.count(), 2);
            store
                .update_cluster(gone.id, &mut |c| {
                    c.status = ClusterStatus::Destroyed;
                    Ok(Update::Write)
                })
                .unwrap();
            assert_eq!(seen(&store), want);
            gone
        };
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(seen(&store), want);
        assert!(store.cluster(gone.id).unwrap().is_some());
        assert_eq!(store.usage("bob"), Usage::default());
    }

    /// Every key and value of one tree.
    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    /// Every key and value of every tree, by tree name.
    fn raw(dir: &Path) -> BTreeMap<Vec<u8>, Entries> {
        let db = retry_locked(|| sled::open(dir));
        db.tree_names()
            .into_iter()
            .map(|name| {
                let tree = db.open_tree(&name).unwrap();
                let kvs = tree
                    .iter()
                    .map(|kv| {
                        let (k, v) = kv.unwrap();
                        (k.to_vec(), v.to_vec())
                    })
                    .collect();
                (name.to_vec(), kvs)
            })
            .collect()
    }

    /// Data written before slots (each node record under its version, the JSON alone, no
    /// `slots` in the head) is read as it is, and a node's first change moves it to a slot
    /// and removes its old record; the nodes not changed keep theirs.
    #[test]
    fn records_from_before_slots_are_read_and_moved_on_change() {
        use super::super::layout::node_key;
        let dir = tempfile::tempdir().unwrap();
        let (c, id);
        {
            let store = SledStore::open(dir.path()).unwrap();
            c = with_records(&store, &["a", "b"]);
            id = c.id;
        }
        // Rewrite it as the previous layout would have left it at revision 5.
        {
            let db = retry_locked(|| sled::open(dir.path()));
            let (clusters, nodes) = (
                db.open_tree("clusters").unwrap(),
                db.open_tree("nodes").unwrap(),
            );
            let key = id.to_string();
            let mut head: serde_json::Value =
                serde_json::from_slice(&clusters.get(&key).unwrap().unwrap()).unwrap();
            let obj = head.as_object_mut().unwrap();
            obj.remove("slots");
            obj.insert("rev".into(), 5.into());
            obj.insert("versions".into(), serde_json::json!([5, 5]));
            clusters
                .insert(&key, serde_json::to_vec(&head).unwrap())
                .unwrap();
            for (i, n) in ["a", "b"].into_iter().enumerate() {
                nodes.remove(node_key(id, n, 0)).unwrap();
                nodes
                    .insert(node_key(id, n, 5), encode(&c.nodes[i]))
                    .unwrap();
            }
            db.flush().unwrap();
        }
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(store.cluster(id).unwrap().unwrap(), c, "read as written");
            assert_eq!(
                store.counts().unwrap(),
                Counts::of(std::slice::from_ref(&c))
            );
            store
                .update_cluster(id, &mut |c| {
                    c.nodes[0].observed.status = NodeStatus::Running;
                    Ok(Update::Write)
                })
                .unwrap();
        }
        assert_eq!(
            node_record_keys(dir.path()),
            [node_key(id, "a", 0), node_key(id, "b", 5)]
        );
        let store = SledStore::open(dir.path()).unwrap();
        let now = store.cluster(id).unwrap().unwrap();
        assert_eq!(now.nodes[0].observed.status, NodeStatus::Running);
        assert_eq!(now.nodes[1], c.nodes[1]);
        super::super::suite::assert_counts(&store);
    }

    #[test]
    fn opening_converts_the_first_layout_once() {
        let dir = tempfile::tempdir().unwrap();
        let clusters: Vec<Cluster> = (0..5)
            .map(|i| {
                let mut c = super::super::suite::cluster_with(
                    ["alice", "bob"][i % 2],
                    "p",
                    "1",
                    &format!("2026-01-01T00:00:0{i}.000Z"),
                    &["x", "y", "z"],
                );
                if i % 2 == 1 {
                    c.status = ClusterStatus::Ready;
                    c.nodes[1].observed.status = NodeStatus::Running;
                }
                c
            })
            .collect();
        // The first layout, written raw: each cluster whole under its id, no index.
        {
            let db = retry_locked(|| sled::open(dir.path()));
            let tree = db.open_tree("clusters").unwrap();
            for c in &clusters {
                tree.insert(c.id.to_string(), encode(c)).unwrap();
            }
            db.open_tree("logs")
                .unwrap()
                .insert(clusters[0].id.to_string(), b"out".as_slice())
                .unwrap();
            db.flush().unwrap();
        }
        let check = |store: &SledStore| {
            for c in &clusters {
                assert_eq!(store.cluster(c.id).unwrap().as_ref(), Some(c));
            }
            assert_eq!(store.clusters().unwrap(), clusters, "oldest first");
            let bobs = store
                .clusters_page(
                    &ListFilter {
                        owner: Some("bob".into()),
                        ..ListFilter::default()
                    },
                    10,
                    None,
                )
                .unwrap();
            let ids: Vec<ClusterId> = bobs.clusters.iter().map(|c| c.id).collect();
            assert_eq!(ids, [clusters[1].id, clusters[3].id]);
            let ready = store
                .clusters_page(
                    &ListFilter {
                        status: Some(ClusterStatus::Ready),
                        ..ListFilter::default()
                    },
                    1,
                    None,
                )
                .unwrap();
            assert_eq!(ready.clusters[0].id, clusters[1].id);
            assert_eq!(ready.next, Some(cursor_of(&clusters[1])));
            assert_eq!(store.counts().unwrap(), Counts::of(&clusters));
            assert_eq!(store.log(clusters[0].id).unwrap(), b"out");
        };
        {
            let store = SledStore::open(dir.path()).unwrap();
            check(&store);
        }
        let converted = raw(dir.path());
        assert!(
            converted[b"nodes".as_slice()].is_empty(),
            "a converted cluster is written as a new one: its head carries its nodes"
        );
        {
            let store = SledStore::open(dir.path()).unwrap();
            check(&store);
        }
        assert_eq!(raw(dir.path()), converted, "a second open changes nothing");

        // An open that stopped before recording the layout converts nothing twice.
        {
            let db = retry_locked(|| sled::open(dir.path()));
            db.open_tree("meta").unwrap().remove(LAYOUT_KEY).unwrap();
            db.flush().unwrap();
        }
        {
            let store = SledStore::open(dir.path()).unwrap();
            check(&store);
        }
        assert_eq!(raw(dir.path()), converted);
    }

    #[test]
    fn opening_removes_what_an_interrupted_commit_left() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let store = SledStore::open(dir.path()).unwrap();
            super::super::suite::seed(&store)
        };
        let before = raw(dir.path());
        // A commit stopped before its head: a new node record and a new status index key.
        {
            let db = retry_locked(|| sled::open(dir.path()));
            db.open_tree("nodes")
                .unwrap()
                .insert(super::super::layout::node_key(id, "a", 9), b"{}".as_slice())
                .unwrap();
            db.open_tree("by_status")
                .unwrap()
                .insert(format!("ready\0x_{id}"), id.to_string().as_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert!(store.cluster(id).unwrap().is_some());
            super::super::suite::assert_counts(&store);
        }
        assert_eq!(raw(dir.path()), before);
    }

    #[test]
    fn a_corrupt_record_fails_the_open_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = retry_locked(|| sled::open(dir.path()));
            db.open_tree("clusters")
                .unwrap()
                .insert("some-id", b"{not json".as_slice())
                .unwrap();
            db.flush().unwrap();
        }
        // (The open waits for the raw handle's threads to let go of the directory's lock.)
        match SledStore::open(dir.path()) {
            Err(StoreError::Corrupt { key, .. }) => assert_eq!(key, "some-id"),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("opened"),
        }
    }
}
