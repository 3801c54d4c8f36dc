//! What a dry run asks of the core and what the core answers: the resources each node of a
//! would-be cluster needs ([`Demand`]), and where each would go on the agents last seen, or
//! why it would go nowhere ([`Placement`]).
//!
//! These are the types the api and the scheduler share without importing each other: the
//! api renders a launch into [`Demand`]s, the scheduler evaluates them against its snapshot
//! of the offers and answers a [`Placement`]. [`largest_fitting`] is the search behind the
//! "smallest change that would fit" (fewer nodes, less memory or cpu per node).

use serde::Serialize;

use super::{Cluster, Timestamp};

/// What one node needs, without its executor (the scheduler adds that).
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    pub node: String,
    pub cpus: f64,
    /// MB.
    pub mem: f64,
    /// MB.
    pub disk: f64,
    /// How many host ports the node asks for.
    pub ports: usize,
}

impl Demand {
    /// The demands of a cluster's nodes, in the cluster's order (the order the scheduler
    /// tries them in).
    pub fn of(c: &Cluster) -> Vec<Demand> {
        c.nodes
            .iter()
            .map(|n| Demand {
                node: n.name.to_string(),
                cpus: n.cpu,
                mem: n.mem,
                disk: n.disk,
                ports: n.port_names.len(),
            })
            .collect()
    }
}

/// The core's answer to "where would these nodes go?".
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "placement", rename_all = "snake_case")]
pub enum Placement {
    /// `serve --master none`: nothing places clusters here.
    NoScheduler,
    /// A scheduler runs but has not seen an offer yet (not subscribed, or no agent).
    NoOffers,
    Evaluated(Evaluation),
}

/// The nodes' fit against the agents last seen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// The agent/role pools evaluated.
    pub agents: usize,
    /// When the stalest of those agents' offers arrived: what the answer is as fresh as.
    pub seen_at: Timestamp,
    /// One per demand, in the demands' order.
    pub nodes: Vec<NodeFit>,
}

impl Evaluation {
    /// Every node has an agent: the cluster would be placed whole.
    pub fn fits(&self) -> bool {
        self.nodes
            .iter()
            .all(|n| matches!(n.fit, Fit::Agent { .. }))
    }

    /// The nodes with no agent.
    pub fn short(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| matches!(n.fit, Fit::None { .. }))
            .count()
    }

    /// The distinct agents the nodes would go to.
    pub fn agents_used(&self) -> usize {
        let mut ids: Vec<&str> = self
            .nodes
            .iter()
            .filter_map(|n| match &n.fit {
                Fit::Agent { agent_id, .. } => Some(agent_id.as_str()),
                Fit::None { .. } => None,
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }
}

/// Where one node would go, or why nowhere.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeFit {
    pub node: String,
    /// Node plus executor: what it takes from an agent.
    pub needs: Needs,
    #[serde(flatten)]
    pub fit: Fit,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "fit", rename_all = "snake_case")]
pub enum Fit {
    /// The first agent (in agent order) with room after the nodes before this one.
    Agent {
        agent_id: String,
        hostname: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        role: Option<String>,
    },
    /// No agent has room for it after the nodes before it.
    None {
        /// The agent short of the fewest resources; `None` when no agent was seen.
        #[serde(skip_serializing_if = "Option::is_none")]
        closest: Option<Closest>,
        /// The same, in a sentence with units.
        why: String,
    },
}

impl Fit {
    /// A node that fits nowhere: `closest` and the sentence that says it.
    pub fn none(needs: &Needs, closest: Option<Closest>) -> Self {
        let why = match &closest {
            Some(c) => {
                format!("no agent has room for {needs} after the nodes before it; closest: {c}")
            }
            None => format!("no agent seen to hold {needs}"),
        };
        Fit::None { closest, why }
    }
}

/// Resources, node plus executor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Needs {
    pub cpus: f64,
    pub mem_mb: f64,
    pub disk_mb: f64,
    pub ports: usize,
}

/// The agent that came closest to holding a node, and only what it was short of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Closest {
    pub agent_id: String,
    pub hostname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub short: Vec<Short>,
}

/// One resource an agent had too little of.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Short {
    pub resource: Resource,
    pub needed: f64,
    pub available: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Cpus,
    Mem,
    Disk,
    Ports,
}

impl Resource {
    /// The amount with its unit, for people: `1.5 cpus`, `960 MB mem`, `3 ports`.
    pub fn amount(self, v: f64) -> String {
        match self {
            Self::Cpus => format!("{v} cpus"),
            Self::Mem => format!("{v} MB mem"),
            Self::Disk => format!("{v} MB disk"),
            Self::Ports => format!("{v} ports"),
        }
    }
}

impl std::fmt::Display for Closest {
    /// `a2 (host-2) has 1.5 of 2.1 cpus, 960 of 1056 MB mem`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}", self.agent_id, self.hostname)?;
        if let Some(role) = &self.role {
            write!(f, ", role {role}")?;
        }
        f.write_str(") has ")?;
        for (i, s) in self.short.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} of {}", s.available, s.resource.amount(s.needed))?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Needs {
    /// `0.45 cpus, 96 MB mem, 2 ports` (disk only when asked for).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {}",
            Resource::Cpus.amount(self.cpus),
            Resource::Mem.amount(self.mem_mb)
        )?;
        if self.disk_mb > 0.0 {
            write!(f, ", {}", Resource::Disk.amount(self.disk_mb))?;
        }
        write!(
            f,
            ", {} port{}",
            self.ports,
            if self.ports == 1 { "" } else { "s" }
        )
    }
}

/// The largest `v` in `lo..=hi` for which `fits(v)` holds, assuming that fitting is monotone
/// (whatever fits at `v` fits at anything smaller): `None` when even `lo` does not fit.
/// Binary search: about log2(hi - lo) calls of `fits`, each a render and an evaluation.
///
/// First fit makes fitting monotone in the number of nodes when smaller clusters' nodes
/// are a prefix of bigger ones', and in a per-node amount; where a template breaks that,
/// the value returned still fits (it was evaluated), it may just not be the largest.
pub fn largest_fitting(lo: u64, hi: u64, mut fits: impl FnMut(u64) -> bool) -> Option<u64> {
    if lo > hi || !fits(lo) {
        return None;
    }
    // Invariant: `fits(good)`; everything above `bad` is unknown or does not fit.
    let (mut good, mut bad) = (lo, hi.saturating_add(1));
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if fits(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Some(good)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_fitting_finds_the_boundary_with_few_calls() {
        for limit in [1u64, 2, 3, 7, 8, 9, 100, 4095] {
            let mut calls = 0;
            let got = largest_fitting(1, 4096, |v| {
                calls += 1;
                v <= limit
            });
            assert_eq!(got, Some(limit));
            assert!(calls <= 14, "{calls} calls for limit {limit}");
        }
        // Everything fits: the top of the range.
        assert_eq!(largest_fitting(1, 9, |_| true), Some(9));
    }

    #[test]
    fn largest_fitting_says_none_when_nothing_fits() {
        assert_eq!(largest_fitting(1, 10, |_| false), None);
        // An empty range asks nothing.
        assert_eq!(
            largest_fitting(5, 4, |_| panic!("no call for an empty range")),
            None
        );
        // A range of one value.
        assert_eq!(largest_fitting(3, 3, |v| v == 3), Some(3));
    }

    #[test]
    fn people_read_amounts_with_units() {
        let c = Closest {
            agent_id: "a2".into(),
            hostname: "host-2".into(),
            role: None,
            short: vec![
                Short {
                    resource: Resource::Cpus,
                    needed: 2.1,
                    available: 1.5,
                },
                Short {
                    resource: Resource::Mem,
                    needed: 1056.0,
                    available: 960.0,
                },
            ],
        };
        assert_eq!(
            c.to_string(),
            "a2 (host-2) has 1.5 of 2.1 cpus, 960 of 1056 MB mem"
        );
        let n = Needs {
            cpus: 0.45,
            mem_mb: 96.0,
            disk_mb: 0.0,
            ports: 1,
        };
        assert_eq!(n.to_string(), "0.45 cpus, 96 MB mem, 1 port");
    }
}
