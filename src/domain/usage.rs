//! What clusters hold, as a per-user quota counts it: the clusters themselves, their nodes,
//! and those nodes' cpus and MB of memory. The store keeps this per owner (see
//! [`crate::registry::Store::usage`]); the API compares it with a quota.

use super::{Cluster, ClusterStatus};

/// What some clusters hold (or ask for).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub clusters: u64,
    pub nodes: u64,
    pub cpus: f64,
    pub mem: f64,
}

impl Usage {
    /// What one cluster holds: itself, its nodes (the desired ones; retiring nodes are on
    /// their way out) and their cpus and mem. A destroyed cluster holds nothing.
    pub fn of(c: &Cluster) -> Usage {
        if c.status == ClusterStatus::Destroyed {
            return Usage::default();
        }
        Usage {
            clusters: 1,
            nodes: c.nodes.len() as u64,
            cpus: c.nodes.iter().map(|n| n.cpu).sum(),
            mem: c.nodes.iter().map(|n| n.mem).sum(),
        }
    }

    /// What `owner`'s clusters among `clusters` hold together.
    pub fn of_owner<'a>(owner: &str, clusters: impl IntoIterator<Item = &'a Cluster>) -> Usage {
        clusters
            .into_iter()
            .filter(|c| c.owner == owner)
            .map(Usage::of)
            .fold(Usage::default(), Usage::plus)
    }

    /// Both together.
    pub fn plus(self, o: Usage) -> Usage {
        Usage {
            clusters: self.clusters + o.clusters,
            nodes: self.nodes + o.nodes,
            cpus: self.cpus + o.cpus,
            mem: self.mem + o.mem,
        }
    }

    /// What `self` holds beyond `before` (never negative: giving back asks nothing).
    pub fn beyond(self, before: Usage) -> Usage {
        Usage {
            clusters: self.clusters.saturating_sub(before.clusters),
            nodes: self.nodes.saturating_sub(before.nodes),
            cpus: (self.cpus - before.cpus).max(0.0),
            mem: (self.mem - before.mem).max(0.0),
        }
    }
}
