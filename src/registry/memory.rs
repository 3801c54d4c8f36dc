//! The in-memory twin of the sled store: same contract, no disk. Used by unit tests and by
//! benchmarks that measure the framework without storage costs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;

use super::{
    COMMIT_BUFFER, Commit, Counts, LOG_BUFFER, ListFilter, LogAppended, MAX_LOG, Page, Store,
    StoreError, Update, bundled, check_cursor, check_node_names, cursor_of,
};
use crate::domain::{Cluster, ClusterId, Name, Part, Product, Timestamp, Usage};

pub struct MemoryStore {
    inner: Mutex<Inner>,
    commits: broadcast::Sender<Commit>,
    logs: broadcast::Sender<LogAppended>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            commits: broadcast::channel(COMMIT_BUFFER).0,
            logs: broadcast::channel(LOG_BUFFER).0,
        }
    }
}

#[derive(Default)]
struct Inner {
    products: BTreeMap<(Name, Name), Product>,
    parts: BTreeMap<(Name, Name, &'static str), Vec<u8>>,
    clusters: BTreeMap<ClusterId, Cluster>,
    /// The clusters in list order: [`cursor_of`] → id.
    order: BTreeMap<String, ClusterId>,
    logs: BTreeMap<ClusterId, Vec<u8>>,
    meta: BTreeMap<String, String>,
    /// See [`Store::catalog_generation`].
    catalog_generation: u64,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn subscribe(&self) -> broadcast::Receiver<Commit> {
        self.commits.subscribe()
    }

    fn subscribe_logs(&self) -> broadcast::Receiver<LogAppended> {
        self.logs.subscribe()
    }

    fn create_product(&self, p: &Product) -> Result<(), StoreError> {
        let mut g = self.lock();
        let key = (p.name.clone(), p.version.clone());
        if g.products.contains_key(&key) {
            return Err(StoreError::AlreadyExists(format!(
                "product {}/{}",
                p.name, p.version
            )));
        }
        g.products.insert(key, p.clone());
        g.catalog_generation += 1;
        Ok(())
    }

    fn product(&self, name: &Name, version: &Name) -> Result<Option<Product>, StoreError> {
        Ok(self
            .lock()
            .products
            .get(&(name.clone(), version.clone()))
            .cloned())
    }

    fn products(&self) -> Result<Vec<Product>, StoreError> {
        Ok(self.lock().products.values().cloned().collect())
    }

    fn put_part(
        &self,
        name: &Name,
        version: &Name,
        part: Part,
        data: &[u8],
        now: &Timestamp,
    ) -> Result<Product, StoreError> {
        let mut g = self.lock();
        let p = g
            .products
            .get_mut(&(name.clone(), version.clone()))
            .ok_or_else(|| StoreError::NotFound(format!("product {name}/{version}")))?;
        p.parts.set(part);
        p.updated_at = now.clone();
        let p = p.clone();
        g.parts.insert(
            (name.clone(), version.clone(), part.as_str()),
            data.to_vec(),
        );
        g.catalog_generation += 1;
        Ok(p)
    }

    fn put_bundle(
        &self,
        p: &Product,
        parts: &[(Part, &[u8])],
    ) -> Result<(Product, bool), StoreError> {
        let mut g = self.lock();
        let key = (p.name.clone(), p.version.clone());
        let old = g.products.get(&key);
        let stored = bundled(p, old, parts);
        let new = old.is_none();
        for (part, data) in parts {
            g.parts
                .insert((key.0.clone(), key.1.clone(), part.as_str()), data.to_vec());
        }
        g.products.insert(key, stored.clone());
        g.catalog_generation += 1;
        Ok((stored, new))
    }

    fn part(&self, name: &Name, version: &Name, part: Part) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .lock()
            .parts
            .get(&(name.clone(), version.clone(), part.as_str()))
            .cloned())
    }

    fn delete_product(
        &self,
        name: &Name,
        version: &Name,
        guard: &dyn Fn(&[Cluster]) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        let mut g = self.lock();
        let key = (name.clone(), version.clone());
        if !g.products.contains_key(&key) {
            return Err(StoreError::NotFound(format!("product {name}/{version}")));
        }
        let users: Vec<Cluster> = g
            .clusters
            .values()
            .filter(|c| &c.product == name && &c.version == version)
            .cloned()
            .collect();
        guard(&users).map_err(StoreError::Rejected)?;
        g.products.remove(&key);
        for part in Part::ALL {
            g.parts
                .remove(&(name.clone(), version.clone(), part.as_str()));
        }
        g.catalog_generation += 1;
        Ok(())
    }

    fn create_cluster(&self, c: Cluster) -> Result<(), StoreError> {
        self.create_cluster_checked(c, &|_| Ok(()))
    }

    fn create_cluster_checked(
        &self,
        c: Cluster,
        guard: &dyn Fn(Usage) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        let c = &c;
        let mut g = self.lock();
        if !g
            .products
            .contains_key(&(c.product.clone(), c.version.clone()))
        {
            return Err(StoreError::NotFound(format!(
                "product {}/{}",
                c.product, c.version
            )));
        }
        if g.clusters.contains_key(&c.id) {
            return Err(StoreError::AlreadyExists(format!("cluster {}", c.id)));
        }
        check_node_names(c)?;
        guard(Usage::of_owner(&c.owner, g.clusters.values())).map_err(StoreError::Rejected)?;
        g.clusters.insert(c.id, c.clone());
        g.order.insert(cursor_of(c), c.id);
        // Announced under the lock, so that commits arrive in the order they were made.
        let _ = self.commits.send(Commit::Cluster(Arc::new(c.clone())));
        Ok(())
    }

    fn purge_cluster(
        &self,
        id: ClusterId,
        guard: &dyn Fn(&Cluster) -> bool,
    ) -> Result<bool, StoreError> {
        let mut g = self.lock();
        match g.clusters.get(&id) {
            Some(c) if guard(c) => {
                let cursor = cursor_of(c);
                g.order.remove(&cursor);
                g.clusters.remove(&id);
                g.logs.remove(&id);
                let _ = self.commits.send(Commit::Purged(id));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn cluster(&self, id: ClusterId) -> Result<Option<Cluster>, StoreError> {
        Ok(self.lock().clusters.get(&id).cloned())
    }

    fn clusters(&self) -> Result<Vec<Cluster>, StoreError> {
        let g = self.lock();
        Ok(g.order
            .values()
            .filter_map(|id| g.clusters.get(id))
            .cloned()
            .collect())
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
        let g = self.lock();
        let start = match cursor {
            Some(k) => std::ops::Bound::Excluded(k.to_owned()),
            None => std::ops::Bound::Unbounded,
        };
        let matching = g
            .order
            .range((start, std::ops::Bound::Unbounded))
            .filter_map(|(_, id)| g.clusters.get(id))
            .filter(|c| filter.matches(c));
        Ok(Page::of(matching, limit))
    }

    fn counts(&self) -> Result<Counts, StoreError> {
        Ok(Counts::of(self.lock().clusters.values()))
    }

    fn usage(&self, owner: &str) -> Usage {
        Usage::of_owner(owner, self.lock().clusters.values())
    }

    fn update_cluster(
        &self,
        id: ClusterId,
        f: &mut dyn FnMut(&mut Cluster) -> Result<Update, String>,
    ) -> Result<Cluster, StoreError> {
        let mut g = self.lock();
        let current = g
            .clusters
            .get(&id)
            .ok_or_else(|| StoreError::NotFound(format!("cluster {id}")))?;
        // Work on a copy so that a refusal leaves the stored record untouched.
        let mut c = current.clone();
        let was = cursor_of(current);
        match f(&mut c).map_err(StoreError::Rejected)? {
            Update::Keep => Ok(c),
            Update::Write => {
                if c.id != id {
                    return Err(StoreError::Rejected(format!(
                        "an update of cluster {id} cannot change its id"
                    )));
                }
                check_node_names(&c)?;
                g.order.remove(&was);
                g.order.insert(cursor_of(&c), id);
                g.clusters.insert(id, c.clone());
                let _ = self.commits.send(Commit::Cluster(Arc::new(c.clone())));
                Ok(c)
            }
        }
    }

    fn append_log(&self, id: ClusterId, data: &[u8]) -> Result<(), StoreError> {
        let mut g = self.lock();
        let v = g.logs.entry(id).or_default();
        v.extend_from_slice(data);
        if v.len() > MAX_LOG {
            v.drain(..v.len() - MAX_LOG);
        }
        drop(g);
        // Nobody listening is fine.
        let _ = self.logs.send(LogAppended {
            id,
            data: bytes::Bytes::copy_from_slice(data),
        });
        Ok(())
    }

    fn log(&self, id: ClusterId) -> Result<Vec<u8>, StoreError> {
        Ok(self.lock().logs.get(&id).cloned().unwrap_or_default())
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock().meta.get(key).cloned())
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.lock().meta.insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn catalog_generation(&self) -> u64 {
        self.lock().catalog_generation
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passes_the_store_suite() {
        super::super::suite::run(&super::MemoryStore::new());
    }
}
