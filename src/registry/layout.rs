//! How the sled store lays a cluster out (see the keyspace table in [`super`]): the head
//! record, the node and index keys, and the plan of what one commit writes. Pure: no tree is
//! touched here, so the plans are tested without a database.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sled::IVec;

use super::{StoreError, cursor_of, decode, encode};
use crate::domain::{Cluster, ClusterId, Node};

/// The layout of the data; the meta key [`LAYOUT_KEY`] holds it once the first layout (the
/// whole cluster as one JSON value) is converted.
pub(super) const LAYOUT: &str = "2";
pub(super) const LAYOUT_KEY: &str = "store_layout";

/// A head as written: borrows the cluster, whose `nodes` the writer has emptied.
#[derive(Serialize)]
struct HeadOut<'a> {
    rev: u64,
    nodes: Vec<&'a str>,
    versions: &'a [u64],
    cluster: &'a Cluster,
}

/// A head as read: the cluster without its nodes, their names in order, and the revision.
#[derive(Deserialize)]
pub(super) struct Head {
    /// One more on every commit of the cluster: an unchanged head means an unchanged cluster.
    pub rev: u64,
    pub nodes: Vec<String>,
    /// The revision each node record was written at (part of its key).
    pub versions: Vec<u64>,
    pub cluster: Cluster,
}

impl Head {
    /// Decodes a head.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`], also for a value of the first layout (a whole cluster, which
    /// has neither `rev` nor `cluster`).
    pub fn decode(key: &[u8], bytes: &[u8]) -> Result<Head, StoreError> {
        decode(key, bytes)
    }
}

/// The key of a node record written at revision `version`. A record is never changed: a
/// new encoding gets a new key, so a head always names records as they were when it was
/// written.
pub(super) fn node_key(id: ClusterId, node: &str, version: u64) -> Vec<u8> {
    format!("{id}\0{node}\0{version:016x}").into_bytes()
}

/// The key of one cluster in each index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IndexKeys {
    pub created: Vec<u8>,
    pub owner: Vec<u8>,
    pub status: Vec<u8>,
}

impl IndexKeys {
    pub fn of(c: &Cluster) -> Self {
        let cursor = cursor_of(c);
        Self {
            owner: format!("{}\0{cursor}", c.owner).into_bytes(),
            status: format!("{}\0{cursor}", c.status.as_str()).into_bytes(),
            created: cursor.into_bytes(),
        }
    }
}

/// The prefix of one owner's clusters in `by_owner`.
pub(super) fn owner_prefix(owner: &str) -> Vec<u8> {
    format!("{owner}\0").into_bytes()
}

/// The prefix of one status's clusters in `by_status`.
pub(super) fn status_prefix(status: crate::domain::ClusterStatus) -> Vec<u8> {
    format!("{}\0", status.as_str()).into_bytes()
}

/// The encoded head of `c` at revision `rev`. Takes `c.nodes` out while encoding and puts
/// them back.
pub(super) fn encode_head(c: &mut Cluster, rev: u64, versions: &[u64]) -> Vec<u8> {
    let nodes = std::mem::take(&mut c.nodes);
    let head = encode(&HeadOut {
        rev,
        nodes: nodes.iter().map(|n| n.name.as_str()).collect(),
        versions,
        cluster: c,
    });
    c.nodes = nodes;
    head
}

/// A cluster as read at one revision: its head's bytes (to check that nothing changed
/// since) and the assembled record, whose nodes are its node records decoded, in the order
/// of `names`.
pub(super) struct Snapshot {
    pub head: IVec,
    pub rev: u64,
    pub names: Vec<String>,
    pub versions: Vec<u64>,
    /// Shared with the store's cache of decoded clusters and, for a commit, with its
    /// announcement.
    pub cluster: Arc<Cluster>,
}

impl Snapshot {
    /// Assembles the cluster from its head and node records (in the head's order).
    pub fn assemble(
        id: ClusterId,
        head_bytes: IVec,
        head: Head,
        nodes: Vec<IVec>,
    ) -> Result<Snapshot, StoreError> {
        let mut cluster = head.cluster;
        cluster.nodes = head
            .nodes
            .iter()
            .zip(&head.versions)
            .zip(&nodes)
            .map(|((name, v), bytes)| decode::<Node>(&node_key(id, name, *v), bytes))
            .collect::<Result<_, _>>()?;
        Ok(Snapshot {
            head: head_bytes,
            rev: head.rev,
            names: head.nodes,
            versions: head.versions,
            cluster: Arc::new(cluster),
        })
    }
}

impl Snapshot {
    /// The snapshot a reader will take of `cluster` once `plan` (which wrote it at `rev`)
    /// is committed; `None` for a purge.
    pub fn written(plan: &Plan, rev: u64, cluster: Arc<Cluster>) -> Option<Snapshot> {
        Some(Snapshot {
            head: IVec::from(plan.head.as_deref()?),
            rev,
            names: cluster.nodes.iter().map(|n| n.name.to_string()).collect(),
            versions: plan.versions.clone(),
            cluster,
        })
    }
}

/// What one commit writes: the head, the node records whose encoding changed, the node
/// records that are gone, and the index keys that moved.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// The new head; `None` removes it (a purge).
    pub head: Option<Vec<u8>>,
    /// The revision of each node record the new head names, in node order.
    pub versions: Vec<u64>,
    pub put_nodes: Vec<(Vec<u8>, Vec<u8>)>,
    pub remove_nodes: Vec<Vec<u8>>,
    /// Index keys to remove and to insert (the value is the cluster's uuid).
    pub remove_index: Option<IndexKeys>,
    pub insert_index: Option<IndexKeys>,
}

impl Plan {
    /// The writes that turn `old` (none: a new cluster) into `new` at revision `rev`.
    ///
    /// A node equal to its old record keeps that record: only changed nodes are encoded
    /// (a status update of one node encodes one node, not all of them).
    pub fn write(old: Option<&Snapshot>, new: &mut Cluster, rev: u64) -> Plan {
        // The snapshot's nodes are its records decoded, in the order of its names.
        let mut before: HashMap<&str, (&Node, u64)> = old
            .map(|o| {
                o.names
                    .iter()
                    .map(String::as_str)
                    .zip(o.cluster.nodes.iter().zip(o.versions.iter().copied()))
                    .collect()
            })
            .unwrap_or_default();
        let id = new.id;
        let mut put_nodes = Vec::new();
        let mut remove_nodes = Vec::new();
        let mut versions = Vec::with_capacity(new.nodes.len());
        for n in &new.nodes {
            match before.remove(n.name.as_str()) {
                Some((old, v)) if old == n => versions.push(v),
                was => {
                    if let Some((_, v)) = was {
                        remove_nodes.push(node_key(id, n.name.as_str(), v));
                    }
                    put_nodes.push((node_key(id, n.name.as_str(), rev), encode(n)));
                    versions.push(rev);
                }
            }
        }
        // What is left of `before` is gone from the cluster (sorted: a deterministic plan).
        let mut gone: Vec<(&str, u64)> = before.into_iter().map(|(n, (_, v))| (n, v)).collect();
        gone.sort_unstable();
        remove_nodes.extend(gone.into_iter().map(|(name, v)| node_key(id, name, v)));
        let head = encode_head(new, rev, &versions);
        let new_keys = IndexKeys::of(new);
        let old_keys = old.map(|o| IndexKeys::of(&o.cluster));
        let (remove_index, insert_index) = match old_keys {
            Some(k) if k == new_keys => (None, None),
            k => (k, Some(new_keys)),
        };
        Plan {
            head: Some(head),
            versions,
            put_nodes,
            remove_nodes,
            remove_index,
            insert_index,
        }
    }

    /// The removal of everything `old` stored (but its logs).
    pub fn purge(id: ClusterId, old: &Snapshot) -> Plan {
        Plan {
            head: None,
            versions: Vec::new(),
            put_nodes: Vec::new(),
            remove_nodes: old
                .names
                .iter()
                .zip(&old.versions)
                .map(|(n, v)| node_key(id, n, *v))
                .collect(),
            remove_index: Some(IndexKeys::of(&old.cluster)),
            insert_index: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClusterStatus, Name, NodeStatus};
    use crate::registry::suite::cluster_with;

    fn cluster() -> Cluster {
        cluster_with(
            "alice",
            "p",
            "1",
            "2026-01-01T00:00:00.000Z",
            &["a", "b", "c"],
        )
    }

    /// The snapshot a reader would take of `c` as written at `rev`.
    fn stored(c: &Cluster, rev: u64) -> Snapshot {
        let mut c = c.clone();
        let versions = vec![rev; c.nodes.len()];
        let head = encode_head(&mut c, rev, &versions);
        let nodes: Vec<IVec> = c.nodes.iter().map(|n| IVec::from(encode(n))).collect();
        let h = Head::decode(b"k", &head).unwrap();
        Snapshot::assemble(c.id, IVec::from(head), h, nodes).unwrap()
    }

    #[test]
    fn a_head_and_its_nodes_assemble_to_the_same_cluster() {
        let c = cluster();
        let snap = stored(&c, 7);
        assert_eq!(*snap.cluster, c);
        assert_eq!(snap.rev, 7);
        assert_eq!(snap.names, ["a", "b", "c"]);
        assert_eq!(
            serde_json::to_string(&*snap.cluster).unwrap(),
            serde_json::to_string(&c).unwrap(),
            "the served JSON is the same"
        );
    }

    #[test]
    fn a_first_layout_record_is_not_a_head() {
        let c = cluster();
        assert!(Head::decode(b"k", &encode(&c)).is_err());
    }

    #[test]
    fn a_status_update_of_one_node_writes_that_node_and_the_head() {
        let c = cluster();
        let old = stored(&c, 1);
        let mut new = c.clone();
        new.nodes[1].observed.status = NodeStatus::Running;
        let plan = Plan::write(Some(&old), &mut new, 2);
        assert!(plan.head.is_some());
        let put: Vec<&[u8]> = plan.put_nodes.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(put, [node_key(c.id, "b", 2).as_slice()]);
        assert_eq!(plan.remove_nodes, [node_key(c.id, "b", 1)]);
        assert!(plan.remove_index.is_none() && plan.insert_index.is_none());
    }

    #[test]
    fn a_status_change_moves_the_status_index_key() {
        let c = cluster();
        let old = stored(&c, 1);
        let mut new = c.clone();
        new.status = ClusterStatus::Scheduling;
        let plan = Plan::write(Some(&old), &mut new, 2);
        assert!(plan.put_nodes.is_empty());
        let (was, is) = (plan.remove_index.unwrap(), plan.insert_index.unwrap());
        assert_eq!(was.created, is.created);
        assert_eq!(was.owner, is.owner);
        assert!(was.status.starts_with(b"registered\0"));
        assert!(is.status.starts_with(b"scheduling\0"));
    }

    #[test]
    fn removed_and_added_nodes_are_removed_and_written() {
        let c = cluster();
        let old = stored(&c, 1);
        let mut new = c.clone();
        let mut d = new.nodes.remove(0);
        d.name = Name::parse("d").unwrap();
        new.nodes.push(d);
        let plan = Plan::write(Some(&old), &mut new, 2);
        let put: Vec<&[u8]> = plan.put_nodes.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(put, [node_key(c.id, "d", 2).as_slice()]);
        assert_eq!(plan.remove_nodes, [node_key(c.id, "a", 1)]);
        assert_eq!(new, {
            let mut n = c.clone();
            let mut d = n.nodes.remove(0);
            d.name = Name::parse("d").unwrap();
            n.nodes.push(d);
            n
        });
    }

    #[test]
    fn a_new_cluster_writes_everything_and_a_purge_removes_everything() {
        let mut c = cluster();
        let plan = Plan::write(None, &mut c, 1);
        assert_eq!(plan.put_nodes.len(), 3);
        assert_eq!(plan.insert_index, Some(IndexKeys::of(&c)));
        assert!(plan.remove_index.is_none());
        let purge = Plan::purge(c.id, &stored(&c, 1));
        assert!(purge.head.is_none());
        assert_eq!(purge.remove_nodes.len(), 3);
        assert_eq!(purge.remove_index, Some(IndexKeys::of(&c)));
    }
}
