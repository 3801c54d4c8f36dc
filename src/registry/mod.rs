//! The registry: the only module that touches sled. It stores products and their parts,
//! clusters (with their nodes, services and history), orchestrator logs and framework
//! metadata, behind the [`Store`] trait. It holds no business rules: callers decide *what*
//! to write; the store makes each write atomic and durable.
//!
//! # Keyspace (sled trees)
//!
//! | tree         | key                          | value                                        |
//! |--------------|------------------------------|----------------------------------------------|
//! | `products`   | `<name>\0<version>`          | [`Product`] as JSON                          |
//! | `parts`      | `<name>\0<version>\0<part>`  | raw bytes of the template/options/script     |
//! | `clusters`   | `<cluster uuid>`             | the cluster's *head* as JSON (below)         |
//! | `nodes`      | `<uuid>\0<node>\0<slot, hex>`| its revision (8 bytes, big-endian), then one [`crate::domain::Node`] as JSON |
//! | `by_created` | `<created_at>_<uuid>`        | `<uuid>` (the [`cursor_of`] order)           |
//! | `by_owner`   | `<owner>\0<created_at>_<uuid>`| `<uuid>`                                     |
//! | `by_status`  | `<status>\0<created_at>_<uuid>`| `<uuid>`                                    |
//! | `logs`       | `<cluster uuid>`             | orchestrator output, raw bytes               |
//! | `meta`       | e.g. `framework_id`          | UTF-8 text                                   |
//!
//! Names cannot contain `\0` (see [`crate::domain::Name`]), so the separator is unambiguous
//! and a prefix scan on `<name>\0` finds exactly one product's versions.
//!
//! A cluster is stored as its head and one record per node, so that a node's status update
//! writes that node and the head, not every node. The head is
//! `{"rev": n, "nodes": [<names in order>], "versions": [<rev of each node record>],
//! "slots": [<slot of each>], "cluster": <the Cluster with "nodes": []>}`: the names and
//! slots give the order and the keys of the node records, and `rev` grows by one on every
//! commit of the cluster. A new cluster's nodes have no records yet: the head carries them
//! (`"inline": [<Node>…]`, their slot `u64::MAX`), so a launch writes the head and its
//! index keys, not one record more per node. A commit that changes every node or none
//! (a placement, the status updates of the whole cluster in one batch, a status change)
//! keeps them there; the first commit that changes some nodes but not all moves them all
//! into records, and from then on a node's change writes that node alone. Each node has two slots (0 and 1): a changed node is written into
//! the one the head does not name, and the head, written last, is the commit point, so there
//! is never a half-written cluster (see [`sled_store`] for how readers and writers use it).
//! Data written before slots (a node record under its revision, the JSON alone, no
//! `"slots"` in the head) is read as it is; a node's first change moves it to a slot.
//!
//! The three index trees hold one key per cluster each, written by the same commits (the
//! new key before the head, the old one removed after it); [`Store::clusters_page`] walks the most selective one. The meta key
//! `store_layout` = `2` records that the data written by the first layout (the whole cluster
//! as one JSON value in `clusters`, no index) was converted on open (see
//! [`sled_store::SledStore::open_with`]).
//!
//! Everything stored per cluster lives under its uuid in `clusters`, `nodes`, the indexes
//! (record, nodes, status history = `/events`, secret) and `logs`;
//! [`Store::purge_cluster`] removes them all in one commit (the head first). A new
//! per-cluster key must be added there too.
//!
//! # Durability
//! Every write returns only after it is on disk (`fsync`). Concurrent writers share flushes
//! (group commit: one flusher thread, see [`group_commit`]), so a burst of writes costs far fewer fsyncs than
//! writes, yet a 2xx never precedes its flush.

mod decoded;
mod group_commit;
pub(crate) mod json;
mod layout;
pub mod memory;
pub mod sled_store;
#[cfg(test)]
mod suite;

use std::sync::Arc;

use crate::domain::{Cluster, ClusterId, Name, Part, Product, Usage};

pub use memory::MemoryStore;

/// Most orchestrator output kept per cluster; older output is cut from the front.
pub const MAX_LOG: usize = 1 << 20;
pub use sled_store::{SledStore, StoreOptions};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    /// The caller's update function refused the change; the store is untouched.
    #[error("{0}")]
    Rejected(String),
    #[error("storage error")]
    Sled(#[from] sled::Error),
    /// The blocking store call panicked or its runtime shut down (see [`call`]).
    #[error("store task did not finish")]
    Task(#[source] tokio::task::JoinError),
    /// A page cursor that [`cursor_of`] cannot have made (a client's bad input: a 400).
    #[error("bad page cursor {0:?}: expected <created_at>_<cluster uuid>, as a page's next")]
    BadCursor(String),
    #[error("stored record {key} is corrupt")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A committed change, announced on [`Store::subscribe`] once it is durable. Subscribers
/// (the scheduler, the orchestrator) act on it at once instead of waiting for a scan; a
/// subscriber that lags behind (`RecvError::Lagged`) rescans everything instead.
///
/// The announcements of one cluster arrive in commit order. A commit that a newer commit of
/// the same cluster overtook on its way to disk is not announced at all (the newer record
/// is, and it is what the cluster is): a subscriber never sees a cluster go back to an older
/// record, but it may not see every intermediate one.
#[derive(Debug, Clone)]
pub enum Commit {
    /// A cluster was created or changed: its record as committed.
    Cluster(Arc<Cluster>),
    /// A cluster and everything under it was removed.
    Purged(ClusterId),
}

/// How many commits a subscriber may fall behind before it lags.
pub const COMMIT_BUFFER: usize = 4096;

/// Orchestrator output appended to a cluster's log, announced on [`Store::subscribe_logs`]
/// once durable. A channel of its own, apart from [`Commit`]: log output is frequent and
/// carries no state, and the subscribers of commits (scheduler, orchestrator, views) have
/// no use for it.
#[derive(Debug, Clone)]
pub struct LogAppended {
    pub id: ClusterId,
    /// The bytes appended, as written (not necessarily whole lines, nor UTF-8).
    pub data: bytes::Bytes,
}

/// How many log appends a subscriber may fall behind before it lags (and misses some).
pub const LOG_BUFFER: usize = 1024;

/// Which clusters a page lists (every filter optional; all given ones must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub owner: Option<String>,
    pub status: Option<crate::domain::ClusterStatus>,
    pub product: Option<String>,
    pub version: Option<String>,
}

impl ListFilter {
    pub fn matches(&self, c: &Cluster) -> bool {
        self.owner.as_deref().is_none_or(|o| c.owner == o)
            && self.status.is_none_or(|s| c.status == s)
            && self
                .product
                .as_deref()
                .is_none_or(|p| c.product.as_str() == p)
            && self
                .version
                .as_deref()
                .is_none_or(|v| c.version.as_str() == v)
    }
}

/// One page of clusters, oldest first, and the cursor of the next page (none at the end).
/// The records are shared with the store's cache of decoded clusters, not copied.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub clusters: Vec<Arc<Cluster>>,
    pub next: Option<String>,
}

impl Page {
    /// The page of the first `limit` clusters of `matching` (in list order), with `next` if
    /// more follow.
    pub(crate) fn of<'a>(mut matching: impl Iterator<Item = &'a Cluster>, limit: usize) -> Page {
        let clusters: Vec<Arc<Cluster>> = matching
            .by_ref()
            .take(limit)
            .map(|c| Arc::new(c.clone()))
            .collect();
        let next = match (clusters.last(), matching.next()) {
            (Some(last), Some(_)) => Some(cursor_of(last)),
            _ => None,
        };
        Page { clusters, next }
    }
}

/// Live counts kept by the store, for `/metrics` (no scan).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub clusters: std::collections::BTreeMap<crate::domain::ClusterStatus, u64>,
    pub nodes: std::collections::BTreeMap<crate::domain::NodeStatus, u64>,
}

impl Counts {
    /// Counts of `clusters` by scanning them (the reference the kept counts must equal).
    pub fn of<'a>(clusters: impl IntoIterator<Item = &'a Cluster>) -> Self {
        let mut out = Self::default();
        for c in clusters {
            *out.clusters.entry(c.status).or_default() += 1;
            for n in &c.nodes {
                *out.nodes.entry(n.observed.status).or_default() += 1;
            }
        }
        out
    }
}

/// The cursor after `c` in the list order: `<created_at>_<uuid>`, compared as bytes. For the
/// fixed-width RFC 3339 timestamps the api writes, that is created_at, then id.
pub fn cursor_of(c: &Cluster) -> String {
    format!("{}_{}", c.created_at, c.id)
}

/// Checks that `cursor` has the shape [`cursor_of`] gives: a non-empty timestamp, `_`, and a
/// cluster uuid in its canonical (lowercase, hyphenated) form. A well-formed cursor of a
/// cluster that no longer exists is fine: the page starts after where it would be.
///
/// # Errors
/// [`StoreError::BadCursor`].
pub fn check_cursor(cursor: &str) -> Result<(), StoreError> {
    let bad = || StoreError::BadCursor(cursor.to_owned());
    let (at, id) = cursor.rsplit_once('_').ok_or_else(bad)?;
    let parsed: ClusterId = id.parse().map_err(|_| bad())?;
    if at.is_empty() || at.contains('\0') || parsed.to_string() != id {
        return Err(bad());
    }
    Ok(())
}

/// Clusters read per store call by [`each_in_statuses`].
pub const SCAN_PAGE: usize = 256;

/// Calls `f` on every cluster whose status is one of `statuses`, status by status and page
/// by page through [`Store::clusters_page`] (the status index in the sled store). The
/// periodic passes of the scheduler and the orchestrator use it, so that they cost what
/// those statuses hold, not what the store holds (clusters at rest pile up), and hold one
/// page at a time. A cluster that changes status meanwhile may be seen twice or not at all:
/// every caller is a pass that runs again. The records are shared with the store's cache:
/// a pass that only looks copies nothing.
///
/// # Errors
/// Storage or decoding errors (the pass stops there).
pub fn each_in_statuses(
    store: &dyn Store,
    statuses: impl IntoIterator<Item = crate::domain::ClusterStatus>,
    mut f: impl FnMut(Arc<Cluster>),
) -> Result<(), StoreError> {
    for status in statuses {
        let filter = ListFilter {
            status: Some(status),
            ..ListFilter::default()
        };
        let mut cursor: Option<String> = None;
        loop {
            let page = store.clusters_page(&filter, SCAN_PAGE, cursor.as_deref())?;
            page.clusters.into_iter().for_each(&mut f);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    Ok(())
}

/// Refuses a cluster whose nodes share a name: a node is stored under its name.
pub(crate) fn check_node_names(c: &Cluster) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::with_capacity(c.nodes.len());
    match c.nodes.iter().find(|n| !seen.insert(n.name.as_str())) {
        Some(n) => Err(StoreError::Rejected(format!(
            "cluster {} has two nodes named {}",
            c.id, n.name
        ))),
        None => Ok(()),
    }
}

/// What an update function decides about a record.
pub enum Update {
    /// Write the (modified) record.
    Write,
    /// Leave the record as it was; nothing is written.
    Keep,
}

/// Runs one store call on tokio's blocking pool and awaits it: every [`Store`] method may
/// block on fsync, which must never stall an async worker. This is the one async wrapper of
/// the store; the api, the scheduler and the orchestrator all go through it.
///
/// # Errors
/// Whatever `f` returns, or [`StoreError::Task`] if the blocking task did not finish.
pub async fn call<T: Send + 'static>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(StoreError::Task)?
}

/// A write that is committed (every reader sees it) and on its way to disk: see
/// [`Store::create_cluster_pending`].
#[must_use = "a write is acknowledged only once durable"]
pub struct Pending(Option<Flushed>);

/// The flush a [`Pending`] write waits for.
type Flushed = std::pin::Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

impl Pending {
    /// A write that is durable already.
    pub fn durable() -> Self {
        Self(None)
    }

    /// A write that is durable once `flushed` resolves.
    pub(crate) fn later(
        flushed: impl Future<Output = Result<(), StoreError>> + Send + 'static,
    ) -> Self {
        Self(Some(Box::pin(flushed)))
    }

    /// Resolves once the write is on disk.
    ///
    /// # Errors
    /// The error of the flush that should have covered it.
    pub async fn on_disk(self) -> Result<(), StoreError> {
        match self.0 {
            None => Ok(()),
            Some(flushed) => flushed.await,
        }
    }
}

/// One entry of [`Store::update_clusters`].
pub type BatchUpdate<'a> = (
    ClusterId,
    &'a mut dyn FnMut(&mut Cluster) -> Result<Update, String>,
);

/// Typed, durable storage for the whole system. Every method is synchronous and may block
/// on disk; async callers use [`call`].
pub trait Store: Send + Sync + 'static {
    /// Creates a product.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] if the name and version are taken.
    fn create_product(&self, p: &Product) -> Result<(), StoreError>;
    /// # Errors
    /// Storage or decoding errors.
    fn product(&self, name: &Name, version: &Name) -> Result<Option<Product>, StoreError>;
    /// Every product version, sorted by name then version.
    ///
    /// # Errors
    /// Storage or decoding errors.
    fn products(&self) -> Result<Vec<Product>, StoreError>;
    /// Stores one part and marks it set on the product, atomically.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the product does not exist.
    fn put_part(
        &self,
        name: &Name,
        version: &Name,
        part: Part,
        data: &[u8],
        now: &crate::domain::Timestamp,
    ) -> Result<Product, StoreError>;
    /// # Errors
    /// Storage errors.
    fn part(&self, name: &Name, version: &Name, part: Part) -> Result<Option<Vec<u8>>, StoreError>;
    /// Registers product `p` with every one of its parts (a bundle), or replaces an existing
    /// version's record and parts, in one atomic commit: a reader sees the old product or the
    /// new one, never a mix. An existing version keeps its `created_at`; every part in
    /// `parts` is marked set. Returns the stored product and whether it is new.
    ///
    /// # Errors
    /// Storage errors.
    fn put_bundle(
        &self,
        p: &Product,
        parts: &[(Part, &[u8])],
    ) -> Result<(Product, bool), StoreError>;
    /// Deletes a product and its parts, atomically. `guard` first sees every cluster of that
    /// product and version and may refuse (e.g. live clusters still use it); the check and
    /// the delete are one critical section with every create, so a concurrent launch cannot
    /// slip in between. There is no index by product: this reads every cluster head.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or [`StoreError::Rejected`] from `guard`.
    fn delete_product(
        &self,
        name: &Name,
        version: &Name,
        guard: &dyn Fn(&[Cluster]) -> Result<(), String>,
    ) -> Result<(), StoreError>;
    /// Creates a cluster if its product still exists (checked in the same critical section as
    /// product deletion).
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] on an id clash, [`StoreError::NotFound`] if the product
    /// is gone.
    fn create_cluster(&self, c: Cluster) -> Result<(), StoreError>;
    /// [`Store::create_cluster`] after `guard` has seen what the stored clusters of the new
    /// cluster's owner hold ([`Store::usage`] of `c.owner`) and agreed, in the same
    /// critical section as every other create: two concurrent launches cannot both pass a
    /// check (a per-owner quota) that only one of them fits.
    ///
    /// # Errors
    /// As [`Store::create_cluster`], or [`StoreError::Rejected`] from `guard` (nothing is
    /// written).
    fn create_cluster_checked(
        &self,
        c: Cluster,
        guard: &dyn Fn(Usage) -> Result<(), String>,
    ) -> Result<(), StoreError>;
    /// [`Store::create_cluster_checked`] (or, with no `guard`, [`Store::create_cluster`])
    /// that does not wait for the disk: the cluster is committed (every reader sees it) when
    /// this returns, and the [`Pending`] resolves once it is durable. It is announced on
    /// [`Store::subscribe`] once durable, whether or not anyone awaits the [`Pending`]. For
    /// async callers, who thus park no thread while the flush runs. By default, the
    /// durable create itself.
    ///
    /// # Errors
    /// As [`Store::create_cluster_checked`]; the [`Pending`], the flush's error.
    fn create_cluster_pending(
        &self,
        c: Cluster,
        guard: Option<&dyn Fn(Usage) -> Result<(), String>>,
    ) -> Result<Pending, StoreError> {
        match guard {
            Some(guard) => self.create_cluster_checked(c, guard)?,
            None => self.create_cluster(c)?,
        }
        Ok(Pending::durable())
    }
    /// What `owner`'s stored clusters hold together: [`Usage::of_owner`] over every stored
    /// cluster, as of the last commit. The sled store keeps a running sum per owner (moved
    /// on every commit, like [`Store::counts`]), so this reads nothing and costs the same
    /// whatever the owner holds.
    fn usage(&self, owner: &str) -> Usage;
    /// # Errors
    /// Storage or decoding errors.
    fn cluster(&self, id: ClusterId) -> Result<Option<Cluster>, StoreError>;
    /// [`Store::cluster`] without a copy, for a reader that only reads: the sled store
    /// shares the record it keeps decoded.
    ///
    /// # Errors
    /// Storage or decoding errors.
    fn cluster_shared(&self, id: ClusterId) -> Result<Option<Arc<Cluster>>, StoreError> {
        Ok(self.cluster(id)?.map(Arc::new))
    }
    /// Every cluster, oldest first (in [`cursor_of`] order). Loads every record: paths that
    /// run often use [`Store::clusters_page`] or [`Store::counts`] instead.
    ///
    /// # Errors
    /// Storage or decoding errors.
    fn clusters(&self) -> Result<Vec<Cluster>, StoreError>;
    /// Atomically reads, modifies and writes one cluster. `f` may run more than once (on a
    /// concurrent change), so it must be a pure function of its input.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or [`StoreError::Rejected`] when `f` returns `Err`.
    fn update_cluster(
        &self,
        id: ClusterId,
        f: &mut dyn FnMut(&mut Cluster) -> Result<Update, String>,
    ) -> Result<Cluster, StoreError>;
    /// Removes a cluster and everything stored under its id (its record with the status
    /// history, its nodes, its index entries, its logs) in one atomic step, if `guard` accepts the record as it is at
    /// that moment (so a concurrent write cannot be purged unseen). Whether it was purged;
    /// an unknown id is `false`.
    ///
    /// # Errors
    /// Storage or decoding errors; nothing is removed then.
    fn purge_cluster(
        &self,
        id: ClusterId,
        guard: &dyn Fn(&Cluster) -> bool,
    ) -> Result<bool, StoreError>;
    /// Appends orchestrator output for a cluster.
    ///
    /// # Errors
    /// Storage errors.
    fn append_log(&self, id: ClusterId, data: &[u8]) -> Result<(), StoreError>;
    /// # Errors
    /// Storage errors.
    fn log(&self, id: ClusterId) -> Result<Vec<u8>, StoreError>;
    /// # Errors
    /// Storage errors.
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// # Errors
    /// Storage errors.
    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Commits announced from now on (see [`Commit`]).
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Commit>;
    /// Log appends announced from now on (see [`LogAppended`]).
    fn subscribe_logs(&self) -> tokio::sync::broadcast::Receiver<LogAppended>;
    /// [`Store::update_cluster`] for several clusters, made durable together (one flush for
    /// the batch): each result is what `update_cluster` would return for that entry. The
    /// scheduler applies a batch of task updates with it before acknowledging any of them.
    /// Entries apply in order (two entries of one cluster see each other's writes); the
    /// commits are announced after the one flush. A cluster written is shared with its
    /// announcement ([`Commit::Cluster`]), not copied.
    fn update_clusters(
        &self,
        batch: &mut [BatchUpdate<'_>],
    ) -> Vec<Result<Arc<Cluster>, StoreError>> {
        batch
            .iter_mut()
            .map(|(id, f)| self.update_cluster(*id, &mut **f).map(Arc::new))
            .collect()
    }
    /// [`Store::update_clusters`] that does not wait for the disk: each entry is committed
    /// when this returns, and the [`Pending`] resolves once the batch is durable (the commits
    /// are announced then). A written entry counts only once the [`Pending`] resolved
    /// without error. By default, the durable batch itself.
    fn update_clusters_pending(
        &self,
        batch: &mut [BatchUpdate<'_>],
    ) -> (Vec<Result<Arc<Cluster>, StoreError>>, Pending) {
        (self.update_clusters(batch), Pending::durable())
    }
    /// One page of the clusters that `filter` matches, oldest first, starting after
    /// `cursor` (from [`cursor_of`] / [`Page::next`]); at most `limit`. `next` is set when
    /// more clusters match after the page. A cursor past the end gives an empty page; a
    /// `limit` of 0 an empty page without `next`.
    ///
    /// The sled store walks the owner index if `owner` is given, else the status index if
    /// `status` is, else the creation order, and checks the other filters on each cluster's
    /// head: the work is bounded by the page size, except that clusters the index yields but
    /// the other filters refuse are read too (a filter by product or version alone walks
    /// every cluster from the cursor on).
    ///
    /// # Errors
    /// [`StoreError::BadCursor`] if `cursor` is not one [`cursor_of`] makes (nothing is
    /// read), or storage or decoding errors.
    fn clusters_page(
        &self,
        filter: &ListFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page, StoreError> {
        if let Some(k) = cursor {
            check_cursor(k)?;
        }
        let all = self.clusters()?;
        Ok(Page::of(
            all.iter()
                .filter(|c| cursor.is_none_or(|k| cursor_of(c).as_str() > k))
                .filter(|c| filter.matches(c)),
            limit,
        ))
    }
    /// Clusters and nodes by status: equal to [`Counts::of`] every stored cluster. The sled
    /// store keeps them in memory (counted once at open, then moved on every commit), so
    /// this never reads the disk.
    ///
    /// # Errors
    /// Storage or decoding errors.
    fn counts(&self) -> Result<Counts, StoreError> {
        Ok(Counts::of(&self.clusters()?))
    }
    /// Flushes everything to disk (used at shutdown; writes are already durable).
    ///
    /// # Errors
    /// Storage errors.
    fn flush(&self) -> Result<(), StoreError>;
    /// A number that grows with every change of a product or of its parts (create, part,
    /// bundle, delete), once the change is visible to reads: what was read of the catalog
    /// after seeing generation `g` is current for as long as the generation is still `g`.
    /// Not kept across restarts.
    fn catalog_generation(&self) -> u64;
}

pub(crate) fn product_key(name: &Name, version: &Name) -> Vec<u8> {
    format!("{name}\0{version}").into_bytes()
}

pub(crate) fn part_key(name: &Name, version: &Name, part: Part) -> Vec<u8> {
    format!("{name}\0{version}\0{}", part.as_str()).into_bytes()
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        source,
    })
}

/// The record [`Store::put_bundle`] stores: `p` with `parts` set, keeping the creation time
/// and the set parts of the version it replaces (if any). One rule for every engine.
pub(crate) fn bundled(p: &Product, old: Option<&Product>, parts: &[(Part, &[u8])]) -> Product {
    let mut stored = p.clone();
    if let Some(old) = old {
        stored.created_at = old.created_at.clone();
        stored.parts = old.parts;
    }
    for (part, _) in parts {
        stored.parts.set(*part);
    }
    stored
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Room for a cluster's head, the largest common record, so that it is written without
    // regrowing (the buffer lives until the write, which copies it).
    let mut out = Vec::with_capacity(2048);
    // invariant: our records are plain structs with string keys; serialisation cannot fail.
    serde_json::to_writer(&mut out, v).expect("record serialises");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ClusterStatus;
    use suite::{cluster_with, product};

    /// A pass over some statuses sees every cluster in them, across pages, and none other.
    #[test]
    fn each_in_statuses_walks_every_page_of_the_statuses_asked_only() {
        let store = MemoryStore::new();
        store.create_product(&product("p", "1")).unwrap();
        let statuses = [
            ClusterStatus::Destroying,
            ClusterStatus::Ready,
            ClusterStatus::Failed,
        ];
        let mut want = std::collections::BTreeSet::new();
        for i in 0..(2 * SCAN_PAGE + 3) {
            let at = format!("2026-01-01T00:{:02}:{:02}.000Z", i / 60, i % 60);
            let mut c = cluster_with("u", "p", "1", &at, &["a"]);
            c.status = statuses[i % 3];
            if c.status != ClusterStatus::Ready {
                want.insert(c.id);
            }
            store.create_cluster(c.clone()).unwrap();
        }
        let mut seen = Vec::new();
        each_in_statuses(
            &store,
            [ClusterStatus::Destroying, ClusterStatus::Failed],
            |c| seen.push(c.id),
        )
        .unwrap();
        assert_eq!(seen.len(), want.len(), "each once");
        assert_eq!(
            seen.into_iter().collect::<std::collections::BTreeSet<_>>(),
            want
        );
    }
}
