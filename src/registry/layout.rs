//! How the sled store lays a cluster out (see the keyspace table in [`super`]): the head
//! record, the node and index keys, and the plan of what one commit writes. Pure: no tree is
//! touched here, so the plans are tested without a database.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use sled::IVec;

use super::{StoreError, cursor_of, decode};
use crate::domain::{Cluster, ClusterId, Node};

/// The layout of the data; the meta key [`LAYOUT_KEY`] holds it once the first layout (the
/// whole cluster as one JSON value) is converted.
pub(super) const LAYOUT: &str = "2";
pub(super) const LAYOUT_KEY: &str = "store_layout";

/// The slot of a node that has no record: the head carries it (in `inline`). A new cluster's
/// nodes are all inline, so that a create is one write for the head, not one more per node;
/// the cluster's first change moves every inline node into a record of its own.
pub(super) const INLINE: u64 = u64::MAX;

/// A head as read: the cluster without its nodes, their names in order, and the revision.
#[derive(Deserialize)]
pub(super) struct Head {
    /// One more on every commit of the cluster: an unchanged head means an unchanged cluster.
    pub rev: u64,
    pub nodes: Vec<String>,
    /// The revision each node record was written at.
    pub versions: Vec<u64>,
    /// The last part of each node record's key (see [`node_key`]). Absent in a head written
    /// before slots: then each record's key ends with its version.
    #[serde(default)]
    pub slots: Vec<u64>,
    /// The nodes whose slot is [`INLINE`], in node order.
    #[serde(default)]
    pub inline: Vec<Node>,
    pub cluster: Cluster,
}

impl Head {
    /// Decodes a head.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`], also for a value of the first layout (a whole cluster, which
    /// has neither `rev` nor `cluster`).
    pub fn decode(key: &[u8], bytes: &[u8]) -> Result<Head, StoreError> {
        let mut head: Head = decode(key, bytes)?;
        if head.slots.is_empty() {
            head.slots.clone_from(&head.versions);
        }
        let corrupt = |what: &str| super::StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            source: serde::de::Error::custom(what),
        };
        if head.slots.len() != head.nodes.len() || head.versions.len() != head.nodes.len() {
            return Err(corrupt(
                "a head's nodes, versions and slots differ in number",
            ));
        }
        if head.slots.iter().filter(|s| **s == INLINE).count() != head.inline.len() {
            return Err(corrupt(
                "a head's inline nodes are not the ones its slots say",
            ));
        }
        Ok(head)
    }

    /// The other slot of each node this head names in a slot (its previous record, which
    /// the node's next change overwrites).
    pub fn spare_keys(&self, id: ClusterId) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.nodes
            .iter()
            .zip(&self.slots)
            .filter(|(_, slot)| **slot <= 1)
            .map(move |(n, slot)| node_key(id, n, 1 - *slot))
    }

    /// The keys of the node records this head names, in node order, each with the revision
    /// the head says it was written at (inline nodes have none).
    pub fn node_keys(&self, id: ClusterId) -> impl Iterator<Item = (Vec<u8>, u64)> + '_ {
        self.nodes
            .iter()
            .zip(&self.slots)
            .zip(&self.versions)
            .filter(|((_, slot), _)| **slot != INLINE)
            .map(move |((n, slot), version)| (node_key(id, n, *slot), *version))
    }
}

/// The key of a node record in `slot`. Each node has two slots, written alternately: a
/// commit writes a changed node into the slot its cluster's head does not name, then the
/// head, so the record the head names is never overwritten while it is named, and one
/// write per changed node suffices (no removal). Records written before slots have their
/// version as slot (never 0, and 1 only for a record of the cluster's first commit); the
/// first change of such a node removes its record unless it is slot 1.
pub(super) fn node_key(id: ClusterId, node: &str, slot: u64) -> Vec<u8> {
    format!("{id}\0{node}\0{slot:016x}").into_bytes()
}

/// The slot a changed node is written to, after `current` (none: a new node).
fn next_slot(current: Option<u64>) -> u64 {
    match current {
        Some(0) => 1,
        _ => 0,
    }
}

/// A node record as stored: the revision it was written at (8 bytes, big-endian), then the
/// node as JSON. The revision tells a reader whether the slot still holds the record its
/// head named (a commit two revisions later writes the same slot again). Records written
/// before slots are the JSON alone (they start with `{`; a stored revision's first byte is
/// 0) and are never rewritten in place.
pub(super) fn encode_node(rev: u64, node: &Node) -> Vec<u8> {
    // Room for a typical node, so that it is written without regrowing.
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&rev.to_be_bytes());
    super::json::node(&mut out, node);
    out
}

/// The revision a node record was written at (`None` for a record written before slots)
/// and its JSON.
pub(super) fn split_node(bytes: &[u8]) -> (Option<u64>, &[u8]) {
    match bytes.split_first_chunk::<8>() {
        Some((rev, json)) if bytes[0] != b'{' => (Some(u64::from_be_bytes(*rev)), json),
        _ => (None, bytes),
    }
}

/// The key of one cluster in each index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IndexKeys {
    pub created: Vec<u8>,
    pub owner: Vec<u8>,
    pub status: Vec<u8>,
}

impl IndexKeys {
    /// Whether `a` and `b` have the same keys: [`IndexKeys::of`] reads these fields alone.
    pub fn same(a: &Cluster, b: &Cluster) -> bool {
        a.created_at == b.created_at && a.id == b.id && a.owner == b.owner && a.status == b.status
    }

    pub fn of(c: &Cluster) -> Self {
        let cursor = cursor_of(c);
        Self {
            owner: format!("{}\0{cursor}", c.owner).into_bytes(),
            status: format!("{}\0{cursor}", c.status.as_str()).into_bytes(),
            created: cursor.into_bytes(),
        }
    }
}

impl IndexKeys {
    /// The keys in the order of the index trees: `by_created`, `by_owner`, `by_status`.
    pub fn parts(&self) -> [&[u8]; 3] {
        [&self.created, &self.owner, &self.status]
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
pub(super) fn encode_head(c: &mut Cluster, rev: u64, versions: &[u64], slots: &[u64]) -> Vec<u8> {
    let nodes = std::mem::take(&mut c.nodes);
    // Room for a cluster's head with its inline nodes, so that it is written without
    // regrowing (the buffer lives until the write, which copies it).
    let inline = slots.iter().filter(|s| **s == INLINE).count();
    let mut head = Vec::with_capacity(2048 + 48 * nodes.len() + 512 * inline);
    super::json::head(&mut head, rev, &nodes, versions, slots, c);
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
    pub slots: Vec<u64>,
    /// Shared with the store's cache of decoded clusters and, for a commit, with its
    /// announcement.
    pub cluster: Arc<Cluster>,
}

impl Snapshot {
    /// Assembles the cluster from its head and node records (those of [`Head::node_keys`],
    /// in order; their revisions already checked against the head's).
    pub fn assemble(
        id: ClusterId,
        head_bytes: IVec,
        head: Head,
        nodes: Vec<IVec>,
    ) -> Result<Snapshot, StoreError> {
        let mut cluster = head.cluster;
        let mut inline = head.inline.into_iter();
        let mut records = nodes.iter();
        cluster.nodes = Vec::with_capacity(head.nodes.len());
        for (name, slot) in head.nodes.iter().zip(&head.slots) {
            let key = || node_key(id, name, *slot);
            let node = if *slot == INLINE {
                inline.next()
            } else {
                records
                    .next()
                    .map(|bytes| decode::<Node>(&key(), split_node(bytes).1))
                    .transpose()?
            };
            cluster.nodes.push(node.ok_or_else(|| StoreError::Corrupt {
                key: String::from_utf8_lossy(&key()).into_owned(),
                source: serde::de::Error::custom("a node its head names is not there"),
            })?);
        }
        Ok(Snapshot {
            head: head_bytes,
            rev: head.rev,
            names: head.nodes,
            versions: head.versions,
            slots: head.slots,
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
            slots: plan.slots.clone(),
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
    /// The slot of each of them.
    pub slots: Vec<u64>,
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
    ///
    /// Inline nodes (all of a cluster's, or none) stay in the head through a commit that
    /// changes every node or none: a placement, or the status updates of a whole cluster
    /// in one batch, then write one head instead of a record per node and the head. The
    /// first commit that changes some of them but not all moves them all into records, so
    /// that from then on a node's change writes that node alone.
    pub fn write(old: Option<&Snapshot>, new: &mut Cluster, rev: u64) -> Plan {
        // The snapshot's nodes are its records decoded, in the order of its names.
        let mut before: HashMap<&str, (&Node, u64, u64)> = old
            .map(|o| {
                o.names
                    .iter()
                    .map(String::as_str)
                    .zip(
                        o.cluster
                            .nodes
                            .iter()
                            .zip(o.versions.iter().copied().zip(o.slots.iter().copied())),
                    )
                    .map(|(name, (node, (v, slot)))| (name, (node, v, slot)))
                    .collect()
            })
            .unwrap_or_default();
        let id = new.id;
        // Which nodes differ from their old selves, worked out only where the nodes are all
        // inline (a new cluster's are): only then can they stay in the head.
        let all_inline = old.is_none_or(|o| o.slots.iter().all(|s| *s == INLINE));
        let changed: Vec<bool> = if all_inline {
            new.nodes
                .iter()
                .map(|n| {
                    before
                        .get(n.name.as_str())
                        .is_none_or(|(was, _, _)| *was != n)
                })
                .collect()
        } else {
            Vec::new()
        };
        let count = changed.iter().filter(|c| **c).count();
        // A new cluster's nodes go inline (see [`INLINE`]).
        let keep_inline = all_inline && (old.is_none() || count == 0 || count == new.nodes.len());
        let mut put_nodes = Vec::new();
        let mut remove_nodes = Vec::new();
        let mut versions = Vec::with_capacity(new.nodes.len());
        let mut slots = Vec::with_capacity(new.nodes.len());
        for (i, n) in new.nodes.iter().enumerate() {
            if keep_inline {
                let was = before.remove(n.name.as_str());
                versions.push(match was {
                    Some((_, v, _)) if !changed[i] => v,
                    _ => rev,
                });
                slots.push(INLINE);
                continue;
            }
            match before.remove(n.name.as_str()) {
                Some((old, v, slot)) if old == n && slot != INLINE => {
                    versions.push(v);
                    slots.push(slot);
                }
                was => {
                    let current = was.map(|(_, _, slot)| slot);
                    if let Some(slot) = current.filter(|s| *s > 1 && *s != INLINE) {
                        // A record from before slots: its key is not a slot.
                        remove_nodes.push(node_key(id, n.name.as_str(), slot));
                    }
                    let slot = next_slot(current);
                    put_nodes.push((node_key(id, n.name.as_str(), slot), encode_node(rev, n)));
                    versions.push(rev);
                    slots.push(slot);
                }
            }
        }
        // What is left of `before` is gone from the cluster (sorted: a deterministic plan),
        // both of its slots.
        let mut gone: Vec<(&str, u64)> = before.into_iter().map(|(n, (_, _, s))| (n, s)).collect();
        gone.sort_unstable();
        for (name, slot) in gone {
            remove_nodes.extend(both_slots(id, name, slot));
        }
        let head = encode_head(new, rev, &versions, &slots);
        // Most commits keep what the keys are made of (a status update of a node, a
        // placement): then no key moves, and none is written out to find that.
        let (remove_index, insert_index) = match old.map(|o| &*o.cluster) {
            Some(o) if IndexKeys::same(o, new) => (None, None),
            o => (o.map(IndexKeys::of), Some(IndexKeys::of(new))),
        };
        Plan {
            head: Some(head),
            versions,
            slots,
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
            slots: Vec::new(),
            put_nodes: Vec::new(),
            remove_nodes: old
                .names
                .iter()
                .zip(&old.slots)
                .flat_map(|(n, slot)| both_slots(id, n, *slot))
                .collect(),
            remove_index: Some(IndexKeys::of(&old.cluster)),
            insert_index: None,
        }
    }
}

/// The keys of node `name` in `slot` and in its other slot (a record from before slots has
/// no other; an inline node has none).
fn both_slots(id: ClusterId, name: &str, slot: u64) -> Vec<Vec<u8>> {
    if slot == INLINE {
        return Vec::new();
    }
    let mut keys = vec![node_key(id, name, slot)];
    if slot <= 1 {
        keys.push(node_key(id, name, 1 - slot));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ClusterStatus, Name, NodeStatus};
    use crate::registry::encode;
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

    /// The snapshot a reader would take of `c` as written at `rev`, every node in slot 0.
    fn stored(c: &Cluster, rev: u64) -> Snapshot {
        let mut c = c.clone();
        let versions = vec![rev; c.nodes.len()];
        let slots = vec![0; c.nodes.len()];
        let head = encode_head(&mut c, rev, &versions, &slots);
        let nodes: Vec<IVec> = c
            .nodes
            .iter()
            .map(|n| IVec::from(encode_node(rev, n)))
            .collect();
        let h = Head::decode(b"k", &head).unwrap();
        Snapshot::assemble(c.id, IVec::from(head), h, nodes).unwrap()
    }

    /// The same as written before slots: no `slots` in the head, each record's key ends
    /// with its version, and the record is the node's JSON alone.
    fn stored_before_slots(c: &Cluster, versions: &[u64]) -> Snapshot {
        let mut c = c.clone();
        let mut empty = c.clone();
        empty.nodes.clear();
        let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
        let head = encode(&serde_json::json!({
            "rev": versions.iter().max(),
            "nodes": names,
            "versions": versions,
            "cluster": empty,
        }));
        let nodes: Vec<IVec> = c.nodes.iter().map(|n| IVec::from(encode(n))).collect();
        let h = Head::decode(b"k", &head).unwrap();
        assert_eq!(h.slots, versions, "the versions are the slots");
        c.nodes.clear();
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
        assert_eq!(put, [node_key(c.id, "b", 1).as_slice()], "the other slot");
        assert_eq!(
            split_node(&plan.put_nodes[0].1).0,
            Some(2),
            "tagged with its revision"
        );
        assert!(plan.remove_nodes.is_empty(), "{:?}", plan.remove_nodes);
        assert_eq!(
            (plan.versions.clone(), plan.slots.clone()),
            (vec![1, 2, 1], vec![0, 1, 0])
        );
        assert!(plan.remove_index.is_none() && plan.insert_index.is_none());
        // The next change of `b` goes back to slot 0.
        let next = Snapshot::written(&plan, 2, Arc::new(new.clone())).unwrap();
        let mut newer = new.clone();
        newer.nodes[1].observed.status = NodeStatus::Failed;
        let plan = Plan::write(Some(&next), &mut newer, 3);
        let put: Vec<&[u8]> = plan.put_nodes.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(put, [node_key(c.id, "b", 0).as_slice()]);
        assert!(plan.remove_nodes.is_empty());
    }

    #[test]
    fn a_record_from_before_slots_is_read_and_replaced_by_a_slot() {
        let c = cluster();
        let old = stored_before_slots(&c, &[1, 5, 5]);
        assert_eq!(*old.cluster, c, "read as it was written");
        let mut new = c.clone();
        new.nodes[0].observed.status = NodeStatus::Running;
        new.nodes[1].observed.status = NodeStatus::Running;
        let plan = Plan::write(Some(&old), &mut new, 6);
        let put: Vec<&[u8]> = plan.put_nodes.iter().map(|(k, _)| k.as_slice()).collect();
        assert_eq!(
            put,
            [
                node_key(c.id, "a", 0).as_slice(),
                node_key(c.id, "b", 0).as_slice()
            ]
        );
        // `a`'s old record (version 1) is its slot 1 now; `b`'s (version 5) is no slot.
        assert_eq!(plan.remove_nodes, [node_key(c.id, "b", 5)]);
        assert_eq!(plan.slots, [0, 0, 5], "`c` keeps its record");
        assert_eq!(plan.versions, [6, 6, 5]);
    }

    /// The first change of a new cluster moves every node out of the head into slot 0, the
    /// unchanged ones too, so that later heads are small.
    #[test]
    fn a_first_change_moves_every_inline_node_to_a_record() {
        let c = cluster();
        let mut first = c.clone();
        let plan = Plan::write(None, &mut first, 1);
        let created = Snapshot::written(&plan, 1, Arc::new(first)).unwrap();
        let mut new = c.clone();
        new.nodes[1].observed.status = NodeStatus::Running;
        let plan = Plan::write(Some(&created), &mut new, 2);
        let put: Vec<&[u8]> = plan.put_nodes.iter().map(|(k, _)| k.as_slice()).collect();
        let slot0: Vec<Vec<u8>> = ["a", "b", "c"]
            .iter()
            .map(|n| node_key(c.id, n, 0))
            .collect();
        assert_eq!(put, slot0.iter().map(Vec::as_slice).collect::<Vec<_>>());
        assert!(plan.remove_nodes.is_empty());
        assert_eq!(
            (plan.slots.clone(), plan.versions.clone()),
            (vec![0; 3], vec![2; 3])
        );
        let h = Head::decode(b"k", plan.head.as_deref().unwrap()).unwrap();
        assert!(h.inline.is_empty(), "the head carries no node any more");
        let records: Vec<IVec> = plan
            .put_nodes
            .iter()
            .map(|(_, v)| IVec::from(v.as_slice()))
            .collect();
        let snap = Snapshot::assemble(c.id, IVec::from(plan.head.as_deref().unwrap()), h, records)
            .unwrap();
        assert_eq!(*snap.cluster, new);
    }

    /// A commit that changes every node of an all-inline cluster (a placement), or none
    /// (a status change), writes the head alone; the nodes stay in it. The first partial
    /// change then moves them all into records.
    #[test]
    fn a_change_of_every_node_or_of_none_keeps_the_nodes_inline() {
        let c = cluster();
        let mut first = c.clone();
        let plan = Plan::write(None, &mut first, 1);
        let created = Snapshot::written(&plan, 1, Arc::new(first)).unwrap();

        let mut scheduling = c.clone();
        scheduling.status = ClusterStatus::Scheduling;
        let plan = Plan::write(Some(&created), &mut scheduling, 2);
        assert!(plan.put_nodes.is_empty() && plan.remove_nodes.is_empty());
        assert_eq!(plan.slots, [INLINE; 3]);
        assert_eq!(plan.versions, [1; 3], "unchanged nodes keep their version");
        let scheduled = Snapshot::written(&plan, 2, Arc::new(scheduling.clone())).unwrap();

        let mut placed = scheduling.clone();
        for n in &mut placed.nodes {
            n.observed.status = NodeStatus::Staging;
        }
        let plan = Plan::write(Some(&scheduled), &mut placed, 3);
        assert!(plan.put_nodes.is_empty(), "{:?}", plan.put_nodes.len());
        assert_eq!(plan.slots, [INLINE; 3]);
        assert_eq!(plan.versions, [3; 3]);
        let head = plan.head.as_deref().unwrap();
        let h = Head::decode(b"k", head).unwrap();
        assert_eq!(h.inline, placed.nodes);
        let snap = Snapshot::assemble(c.id, IVec::from(head), h, Vec::new()).unwrap();
        assert_eq!(*snap.cluster, placed, "read back from the head alone");

        let mut one = placed.clone();
        one.nodes[2].observed.status = NodeStatus::Running;
        let plan = Plan::write(Some(&snap), &mut one, 4);
        assert_eq!(plan.put_nodes.len(), 3, "all move, the unchanged ones too");
        assert_eq!(plan.slots, [0; 3]);
        let h = Head::decode(b"k", plan.head.as_deref().unwrap()).unwrap();
        assert!(h.inline.is_empty());
    }

    /// A head whose inline nodes do not match its slots is refused, not half read.
    #[test]
    fn a_head_with_missing_inline_nodes_is_corrupt() {
        let mut c = cluster();
        let plan = Plan::write(None, &mut c, 1);
        let mut head: serde_json::Value =
            serde_json::from_slice(plan.head.as_deref().unwrap()).unwrap();
        head["inline"].as_array_mut().unwrap().pop();
        match Head::decode(b"k", &encode(&head)) {
            Err(StoreError::Corrupt { key, source }) => {
                assert_eq!(key, "k");
                assert!(source.to_string().contains("inline"), "{source}");
            }
            other => panic!("decoded: {:?}", other.map(|h| h.inline.len())),
        }
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
        assert_eq!(put, [node_key(c.id, "d", 0).as_slice()]);
        assert_eq!(
            plan.remove_nodes,
            [node_key(c.id, "a", 0), node_key(c.id, "a", 1)],
            "both slots of the node gone"
        );
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
        assert!(plan.put_nodes.is_empty(), "the head carries the nodes");
        assert_eq!(plan.slots, [INLINE; 3]);
        assert_eq!(plan.insert_index, Some(IndexKeys::of(&c)));
        assert!(plan.remove_index.is_none());
        let head = plan.head.as_deref().unwrap();
        let h = Head::decode(b"k", head).unwrap();
        assert_eq!(h.inline, c.nodes);
        let snap = Snapshot::assemble(c.id, IVec::from(head), h, Vec::new()).unwrap();
        assert_eq!(*snap.cluster, c, "read back from the head alone");
        assert_eq!(
            Plan::purge(c.id, &snap).remove_nodes,
            Vec::<Vec<u8>>::new(),
            "no record to remove"
        );
        let purge = Plan::purge(c.id, &stored(&c, 1));
        assert!(purge.head.is_none());
        assert_eq!(purge.remove_nodes.len(), 6, "both slots of each node");
        assert_eq!(purge.remove_index, Some(IndexKeys::of(&c)));
    }
    #[test]
    fn index_keys_move_exactly_when_a_field_they_are_made_of_changes() {
        let c = cluster();
        let old = stored(&c, 1);
        // A change of anything else (here a node's status and a message) moves no key.
        let mut new = c.clone();
        new.nodes[0].observed.status = crate::domain::NodeStatus::Running;
        new.nodes[1].observed.message = Some("up".into());
        assert!(IndexKeys::same(&c, &new));
        assert_eq!(IndexKeys::of(&c), IndexKeys::of(&new));
        let plan = Plan::write(Some(&old), &mut new, 2);
        assert!(plan.remove_index.is_none() && plan.insert_index.is_none());
        // Each field the keys are made of moves them.
        let changes: [fn(&mut Cluster); 4] = [
            |c| c.status = crate::domain::ClusterStatus::Ready,
            |c| c.owner.push('x'),
            |c| c.created_at = crate::domain::Timestamp("2030-01-01T00:00:00.000Z".into()),
            |c| c.id = crate::domain::ClusterId::generate(),
        ];
        for change in changes {
            let mut new = c.clone();
            change(&mut new);
            assert!(!IndexKeys::same(&c, &new));
            assert_ne!(IndexKeys::of(&c), IndexKeys::of(&new));
            let plan = Plan::write(Some(&old), &mut new, 2);
            assert_eq!(plan.remove_index, Some(IndexKeys::of(&c)));
            assert_eq!(plan.insert_index, Some(IndexKeys::of(&new)));
        }
    }
}
