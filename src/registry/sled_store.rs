//! The sled implementation of [`Store`], with group commit.

use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use std::sync::Arc;

use tokio::sync::broadcast;

use super::{
    COMMIT_BUFFER, Commit, MAX_LOG, Store, StoreError, Update, decode, encode, part_key,
    product_key,
};
use crate::domain::{Cluster, ClusterId, Name, Part, Product, Timestamp};

/// A sled database laid out as the module docs describe.
pub struct SledStore {
    db: sled::Db,
    products: sled::Tree,
    parts: sled::Tree,
    clusters: sled::Tree,
    logs: sled::Tree,
    meta: sled::Tree,
    /// Serialises the checks that span trees: "create a cluster only if its product exists"
    /// against "delete a product only if no live cluster uses it". Per-cluster updates do
    /// not take it; they use compare-and-swap.
    catalog: Mutex<()>,
    commit: GroupCommit,
    commits: broadcast::Sender<Commit>,
}

impl SledStore {
    /// Opens (or creates) the store in directory `path`.
    ///
    /// # Errors
    /// sled errors, e.g. the directory is locked by another process.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()?;
        Ok(Self {
            products: db.open_tree("products")?,
            parts: db.open_tree("parts")?,
            clusters: db.open_tree("clusters")?,
            logs: db.open_tree("logs")?,
            meta: db.open_tree("meta")?,
            db,
            catalog: Mutex::new(()),
            commit: GroupCommit::default(),
            commits: broadcast::channel(COMMIT_BUFFER).0,
        })
    }

    fn durable(&self) -> Result<(), StoreError> {
        self.commit.sync(|| self.db.flush().map(drop))
    }

    /// Announces a durable commit (nobody listening is fine).
    fn announce(&self, c: Commit) {
        let _ = self.commits.send(c);
    }

    fn lock_catalog(&self) -> MutexGuard<'_, ()> {
        self.catalog.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e),
    }
}

/// A check over every stored cluster that may refuse a write (see
/// [`Store::create_cluster_checked`]).
type ClusterGuard<'a> = dyn Fn(&[Cluster]) -> Result<(), String> + 'a;

impl SledStore {
    /// Creates a cluster under the catalog lock, after `guard` (if any) saw every cluster.
    fn create(&self, c: &Cluster, guard: Option<&ClusterGuard<'_>>) -> Result<(), StoreError> {
        let _catalog = self.lock_catalog();
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
                return Err(StoreError::AlreadyExists(format!("cluster {}", c.id)));
            }
            guard(&self.clusters()?).map_err(StoreError::Rejected)?;
        }
        self.clusters
            .compare_and_swap(c.id.to_string(), None::<&[u8]>, Some(encode(c)))?
            .map_err(|_| StoreError::AlreadyExists(format!("cluster {}", c.id)))?;
        self.durable()?;
        self.announce(Commit::Cluster(Arc::new(c.clone())));
        Ok(())
    }
}

impl Store for SledStore {
    fn create_product(&self, p: &Product) -> Result<(), StoreError> {
        let key = product_key(&p.name, &p.version);
        self.products
            .compare_and_swap(&key, None::<&[u8]>, Some(encode(p)))?
            .map_err(|_| StoreError::AlreadyExists(format!("product {}/{}", p.name, p.version)))?;
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
        let users: Vec<Cluster> = self
            .clusters()?
            .into_iter()
            .filter(|c| &c.product == name && &c.version == version)
            .collect();
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
        self.durable()
    }

    fn create_cluster(&self, c: &Cluster) -> Result<(), StoreError> {
        self.create(c, None)
    }

    fn create_cluster_checked(
        &self,
        c: &Cluster,
        guard: &dyn Fn(&[Cluster]) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        self.create(c, Some(guard))
    }

    fn purge_cluster(
        &self,
        id: ClusterId,
        guard: &dyn Fn(&Cluster) -> bool,
    ) -> Result<bool, StoreError> {
        let key = id.to_string();
        // One transaction over both trees: the record and its logs go together or not at
        // all, and the record the guard judged is the one removed (sled serialises
        // transactions against the compare-and-swap writers of `update_cluster`).
        let purged = (&self.clusters, &self.logs)
            .transaction(|(clusters, logs)| {
                let Some(bytes) = clusters.get(key.as_bytes())? else {
                    return Ok(false);
                };
                let c: Cluster =
                    decode(key.as_bytes(), &bytes).map_err(ConflictableTransactionError::Abort)?;
                if !guard(&c) {
                    return Ok(false);
                }
                clusters.remove(key.as_bytes())?;
                logs.remove(key.as_bytes())?;
                Ok(true)
            })
            .map_err(tx_error)?;
        if purged {
            self.durable()?;
            self.announce(Commit::Purged(id));
        }
        Ok(purged)
    }

    fn cluster(&self, id: ClusterId) -> Result<Option<Cluster>, StoreError> {
        let key = id.to_string();
        self.clusters
            .get(&key)?
            .map(|v| decode(key.as_bytes(), &v))
            .transpose()
    }

    fn clusters(&self) -> Result<Vec<Cluster>, StoreError> {
        let mut all = self
            .clusters
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode::<Cluster>(&k, &v)
            })
            .collect::<Result<Vec<_>, _>>()?;
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    fn update_cluster(
        &self,
        id: ClusterId,
        f: &mut dyn FnMut(&mut Cluster) -> Result<Update, String>,
    ) -> Result<Cluster, StoreError> {
        let key = id.to_string();
        loop {
            let Some(old) = self.clusters.get(&key)? else {
                return Err(StoreError::NotFound(format!("cluster {id}")));
            };
            let mut c: Cluster = decode(key.as_bytes(), &old)?;
            match f(&mut c).map_err(StoreError::Rejected)? {
                Update::Keep => return Ok(c),
                Update::Write => {}
            }
            // A concurrent writer changed the record since we read it: redo `f` on the new
            // value rather than overwrite theirs.
            if self
                .clusters
                .compare_and_swap(&key, Some(&old), Some(encode(&c)))?
                .is_ok()
            {
                self.durable()?;
                self.announce(Commit::Cluster(Arc::new(c.clone())));
                return Ok(c);
            }
        }
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
        self.durable()
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
        self.commits.subscribe()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

/// Group commit: the first writer to arrive flushes on behalf of everyone waiting; writers
/// that arrive during a flush wait for the *next* one (their data may have missed the
/// current one). One fsync thus covers a whole burst of concurrent writes.
#[derive(Default)]
struct GroupCommit {
    state: Mutex<CommitState>,
    done: Condvar,
}

#[derive(Default)]
struct CommitState {
    /// Tickets handed out; a write's ticket is taken after its data reached sled.
    requested: u64,
    /// Every ticket up to this one is on disk.
    durable: u64,
    flushing: bool,
    /// The last flush failed: every ticket it covered gets the error.
    failed_upto: u64,
}

impl GroupCommit {
    fn sync(&self, flush: impl Fn() -> sled::Result<()>) -> Result<(), StoreError> {
        let lock = || self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut s = lock();
        s.requested += 1;
        let ticket = s.requested;
        loop {
            if s.durable >= ticket {
                return Ok(());
            }
            if s.failed_upto >= ticket {
                return Err(StoreError::Sled(sled::Error::ReportableBug(
                    "group flush failed".into(),
                )));
            }
            if s.flushing {
                s = self.done.wait(s).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Become the leader: flush for every ticket issued so far.
            s.flushing = true;
            let upto = s.requested;
            drop(s);
            let result = flush();
            s = lock();
            s.flushing = false;
            match result {
                Ok(()) => s.durable = s.durable.max(upto),
                Err(e) => {
                    s.failed_upto = s.failed_upto.max(upto);
                    self.done.notify_all();
                    return Err(StoreError::Sled(e));
                }
            }
            self.done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_store_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        super::super::suite::run(&store);
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

    #[test]
    fn group_commit_makes_every_concurrent_write_durable() {
        let gc = GroupCommit::default();
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    for _ in 0..50 {
                        gc.sync(|| {
                            std::thread::yield_now();
                            Ok(())
                        })
                        .unwrap();
                    }
                });
            }
        });
        let state = gc.state.lock().unwrap();
        assert_eq!(state.requested, 800);
        assert_eq!(state.durable, 800);
    }

    #[test]
    fn group_commit_shares_one_flush_among_the_writers_waiting_for_it() {
        use std::sync::Barrier;
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::time::{Duration, Instant};
        const WRITERS: u64 = 16;
        let gc = GroupCommit::default();
        let flushes = AtomicU64::new(0);
        let start = Barrier::new(WRITERS as usize);
        // Each flush is held open until every writer holds a ticket, so whoever flushes first
        // does so while all the others queue behind it, however the threads are scheduled.
        let flush = || {
            flushes.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(30);
            while gc.state.lock().unwrap().requested < WRITERS {
                assert!(Instant::now() < deadline, "the writers never all arrived");
                std::thread::yield_now();
            }
            Ok(())
        };
        std::thread::scope(|s| {
            for _ in 0..WRITERS {
                s.spawn(|| {
                    start.wait();
                    gc.sync(flush).unwrap();
                });
            }
        });
        let state = gc.state.lock().unwrap();
        assert_eq!(state.durable, WRITERS);
        // The first flush covers the tickets issued before it began (at least its own); the
        // writers that queued during it are all covered by the one flush after it. Without
        // sharing, every write would flush: WRITERS flushes.
        let flushes = flushes.load(Ordering::SeqCst);
        assert!(
            flushes <= 2,
            "{flushes} flushes for {WRITERS} concurrent writes"
        );
    }
}
