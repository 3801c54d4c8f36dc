//! Pure offer evaluation: which pending nodes go on which offers, with which concrete amounts
//! and port numbers, which offers to decline, and why each remaining node waits.
//!
//! No I/O, no clock, and protobuf only at the edge: [`OfferView::from_offer`] turns a
//! `mesos.v1.Offer` into the view matching works on (summing the scalar resources of one
//! offer and collecting its `ports` ranges); `launch` turns the returned [`Plan`] back into
//! ACCEPT and DECLINE calls. Keeping the matching pure is what lets it be table-tested and
//! explain every refusal (the dcos-commons `offer/evaluate` habit).
//!
//! # Rules it follows (mesos-v1.md §2.4, §6.2)
//! - Offers are grouped into **pools** by `(agent_id, role)`: Mesos lets one ACCEPT combine
//!   several offers only when they share the agent *and* the allocation role. One [`Accept`]
//!   per used pool lists every offer of that pool; Mesos declines what the operations leave
//!   over, with the ACCEPT's filters.
//! - A pool none of whose resources are used is declined as a whole ([`Plan::declines`]).
//! - Each node runs in its own executor (the node's container), so every placement draws the
//!   node's resources **plus** one [`ExecutorOverhead`]. Several nodes may share a pool; each
//!   placement draws the pool down.
//! - Scalars are compared in Mesos' own fixed point: each value is rounded to 3 decimals
//!   (thousandths, as `Value::Scalar` arithmetic does in Mesos since 1.0) and compared as an
//!   integer. That is a 0.001 tolerance without float drift: `0.1 + 0.2` fits in `0.3`.
//!
//! # Fit strategy: first fit, in a canonical order
//! Nodes are taken in the caller's order (the caller decides priority). Each node goes to the
//! first pool, in `(agent_id, role)` order, that still holds its node + executor resources
//! and enough ports. Ports are the lowest free numbers of the pool's merged ranges. Pools and
//! the offer ids inside them are sorted, so the plan does not depend on the order in which
//! offers arrived: the same offers and needs always give the same plan.
//!
//! First fit packs nodes onto few agents, leaving whole agents to decline (and so to other
//! frameworks). Spreading a cluster over agents, or anti-affinity, would be a different
//! choice of pool in the inner loop; neither is implemented.
//!
//! # Gangs: all or nothing
//! [`evaluate_gangs`] places the nodes of a [`Gang`] (the pending nodes of one cluster) all
//! together or not at all, across as many pools (agents, offers) of the round as it takes.
//! Its nodes are tried first fit, like single nodes; if one does not fit, every pool the gang
//! drew from is rolled back to its state before the gang, so a waiting gang holds nothing
//! and the next gangs (and the declines) see the offers as if it had never been tried. Each
//! node of a refused gang says why: its own shortfall ([`Refusal::NoFit`]), or that others
//! of its gang do not fit ([`Refusal::GangShort`]). Gangs go in the caller's order (oldest
//! cluster first); a later, smaller gang may use what an earlier one could not.
//!
//! First fit can refuse a gang that another assignment would fit (bin packing is NP-hard);
//! the refusal then names the node that found no room after the ones before it.
//!
//! Cost: sorting the offers, then one pass over the pools per pending node, and undoing a
//! refused gang costs one step per pool it touched:
//! O(offers·log offers + nodes × pools + ports taken); no offers² loop.

use std::collections::HashSet;
use std::fmt;

use crate::domain::placement::{Closest, Demand, Fit, Needs, NodeFit, Resource, Short};
use crate::proto::mesos::v1 as mesos;

/// Lowest port number we hand out; 0 is never a real port.
const MIN_PORT: u64 = 1;
/// Highest port number; node ports are `u16` in the domain.
const MAX_PORT: u64 = u16::MAX as u64;

/// The part of one `mesos.v1.Offer` that matching needs.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferView {
    /// `Offer.id.value`.
    pub id: String,
    /// `Offer.agent_id.value`.
    pub agent_id: String,
    /// `Offer.hostname`: where the node will be reachable.
    pub hostname: String,
    /// `Offer.allocation_info.role`; offers of different roles are never combined.
    pub role: Option<String>,
    /// Sum of the offer's `cpus` scalars.
    pub cpus: f64,
    /// Sum of the offer's `mem` scalars, in MB.
    pub mem: f64,
    /// Sum of the offer's `disk` scalars, in MB.
    pub disk: f64,
    /// The offer's `ports` ranges, inclusive at both ends, in any order. Numbers outside
    /// `1..=65535` are ignored.
    pub ports: Vec<(u64, u64)>,
}

/// What one pending node needs, without its executor.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeNeed<K> {
    /// The caller's identifier for the node (e.g. cluster id + node name); echoed back.
    pub key: K,
    pub cpus: f64,
    /// MB.
    pub mem: f64,
    /// MB.
    pub disk: f64,
    /// How many host ports the node needs.
    pub ports: usize,
}

/// What the executor of one node needs on top of the node itself.
///
/// `ports` is for the executor's own listeners (e.g. its NodeAgent server).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ExecutorOverhead {
    pub cpus: f64,
    /// MB.
    pub mem: f64,
    /// MB.
    pub disk: f64,
    pub ports: usize,
}

/// Concrete scalar amounts, already rounded to Mesos' 3 decimals.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Scalars {
    pub cpus: f64,
    /// MB.
    pub mem: f64,
    /// MB.
    pub disk: f64,
}

/// The outcome of one evaluation round.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<K> {
    /// One ACCEPT per `(agent, role)` pool that received at least one node, in pool order.
    pub accepts: Vec<Accept<K>>,
    /// Offers of pools that received nothing: decline them, with a long filter.
    pub declines: Vec<String>,
    /// Nodes not placed, in the caller's order, each with why: every node of a gang that
    /// does not fit whole.
    pub unplaced: Vec<Unplaced<K>>,
}

/// One ACCEPT call: the offers of one agent and role, and the nodes launched on them.
#[derive(Debug, Clone, PartialEq)]
pub struct Accept<K> {
    pub agent_id: String,
    pub hostname: String,
    pub role: Option<String>,
    /// Every offer of the pool, sorted; distinct by construction.
    pub offer_ids: Vec<String>,
    /// The placed nodes, in the caller's order. Their sum fits the sum of the offers.
    pub placements: Vec<Placement<K>>,
}

/// One node placed on a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement<K> {
    pub key: K,
    pub allotment: Allotment,
}

/// What one placed node and its executor take from their pool: the amounts a `TaskInfo` and
/// its `ExecutorInfo` are built with.
#[derive(Debug, Clone, PartialEq)]
pub struct Allotment {
    /// For the `TaskInfo.resources`.
    pub task: Scalars,
    /// For the `ExecutorInfo.resources`.
    pub executor: Scalars,
    /// Exactly [`NodeNeed::ports`] distinct port numbers from the pool's ranges, ascending.
    pub ports: Vec<u16>,
    /// Exactly [`ExecutorOverhead::ports`] more, distinct from `ports`, ascending.
    pub executor_ports: Vec<u16>,
}

/// Nodes placed all together or not at all: the pending nodes of one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Gang<K> {
    /// In the caller's order, which is the order they are tried in.
    pub nodes: Vec<NodeNeed<K>>,
}

/// A node not placed this round.
#[derive(Debug, Clone, PartialEq)]
pub struct Unplaced<K> {
    pub key: K,
    pub reason: Refusal,
}

/// Why a node was not placed. `Display` gives the human-readable form stored as the node's
/// message.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No pool holds the node, after what the nodes tried before it took (its own gang's
    /// included).
    NoFit(NoFit),
    /// The node fits, but `short` of the `gang` nodes of its gang do not: the whole gang
    /// waits, holding nothing.
    GangShort { short: usize, gang: usize },
}

impl Refusal {
    /// The node's own shortfall, when it has one.
    pub fn no_fit(&self) -> Option<&NoFit> {
        match self {
            Self::NoFit(n) => Some(n),
            Self::GangShort { .. } => None,
        }
    }
}

/// Why a node did not fit: what it needed in total and how close the best pool came.
/// `Display` gives the human-readable form stored as the node's message.
#[derive(Debug, Clone, PartialEq)]
pub struct NoFit {
    /// Node plus executor.
    pub need: Scalars,
    /// Node plus executor ports.
    pub ports: usize,
    /// Distinct offers considered.
    pub offers: usize,
    /// `(agent, role)` pools those offers formed.
    pub pools: usize,
    /// The pool short of the fewest resources (earliest in pool order on ties), with what
    /// it still had left after the nodes placed before this one. `None` without offers.
    pub closest: Option<NearMiss>,
}

/// The pool that came closest to holding a node.
#[derive(Debug, Clone, PartialEq)]
pub struct NearMiss {
    pub agent_id: String,
    pub hostname: String,
    pub role: Option<String>,
    /// Only the resources that were short; never empty.
    pub short: Vec<Shortfall>,
}

/// One resource a pool had too little of.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shortfall {
    Cpus { needed: f64, available: f64 },
    Mem { needed: f64, available: f64 },
    Disk { needed: f64, available: f64 },
    Ports { needed: usize, available: u64 },
}

/// Places `needs` on `offers`, each node on its own: a node that fits is placed whatever
/// happens to the others. See the module docs for the rules and the fit strategy.
///
/// Offers repeated with the same id are considered once (the first occurrence wins): an
/// OfferID may appear in only one ACCEPT or DECLINE.
pub fn evaluate<K: Clone>(
    offers: &[OfferView],
    needs: &[NodeNeed<K>],
    executor: &ExecutorOverhead,
) -> Plan<K> {
    place(offers, needs.chunks(1), executor)
}

/// Places `gangs` on `offers`, each gang whole or not at all, in the caller's order: the
/// nodes of a gang that does not fit are all [`Unplaced`] and take nothing from the offers,
/// so the gangs after it (and other frameworks, through the declines) get what it left.
/// The rules, the fit strategy and the handling of repeated offers are [`evaluate`]'s.
pub fn evaluate_gangs<K: Clone>(
    offers: &[OfferView],
    gangs: &[Gang<K>],
    executor: &ExecutorOverhead,
) -> Plan<K> {
    place(offers, gangs.iter().map(|g| g.nodes.as_slice()), executor)
}

fn place<'n, K: Clone + 'n>(
    offers: &[OfferView],
    gangs: impl Iterator<Item = &'n [NodeNeed<K>]>,
    executor: &ExecutorOverhead,
) -> Plan<K> {
    let (mut pools, distinct_offers) = pools(offers);
    let exec = Milli::of(executor.cpus, executor.mem, executor.disk);
    let mut unplaced = Vec::new();
    // The pools the current gang drew from, each with its state before the gang's first
    // draw, to give everything back if the gang does not fit whole.
    let mut touched: Vec<(usize, Mark)> = Vec::new();
    let mut refused: Vec<Option<NoFit>> = Vec::new();

    for (g, gang) in gangs.enumerate() {
        touched.clear();
        refused.clear();
        for need in gang {
            let task = Milli::of(need.cpus, need.mem, need.disk);
            let total = task.plus(exec);
            let total_ports = need.ports.saturating_add(executor.ports);
            // (number of short resources, pool index) of the best miss so far.
            let mut closest: Option<(usize, usize)> = None;
            let mut placed = false;
            for (i, pool) in pools.iter_mut().enumerate() {
                let short = pool.short_count(total, total_ports);
                if short == 0 {
                    if pool.gang != Some(g) {
                        pool.gang = Some(g);
                        touched.push((i, pool.mark()));
                    }
                    pool.place(need, task, exec, executor.ports);
                    placed = true;
                    break;
                }
                if closest.is_none_or(|(fewest, _)| short < fewest) {
                    closest = Some((short, i));
                }
            }
            refused.push((!placed).then(|| NoFit {
                need: total.resources(),
                ports: total_ports,
                offers: distinct_offers,
                pools: pools.len(),
                closest: closest.map(|(_, i)| pools[i].near_miss(total, total_ports)),
            }));
        }
        let short = refused.iter().filter(|r| r.is_some()).count();
        if short == 0 {
            continue;
        }
        for &(i, mark) in &touched {
            pools[i].roll_back(mark);
        }
        for (need, no_fit) in gang.iter().zip(refused.drain(..)) {
            unplaced.push(Unplaced {
                key: need.key.clone(),
                reason: match no_fit {
                    Some(n) => Refusal::NoFit(n),
                    None => Refusal::GangShort {
                        short,
                        gang: gang.len(),
                    },
                },
            });
        }
    }

    let mut accepts = Vec::new();
    let mut declines = Vec::new();
    for pool in pools {
        if pool.placements.is_empty() {
            declines.extend(pool.offer_ids.into_iter().map(str::to_owned));
        } else {
            accepts.push(Accept {
                agent_id: pool.agent_id.to_owned(),
                hostname: pool.hostname.to_owned(),
                role: pool.role.map(str::to_owned),
                offer_ids: pool.offer_ids.into_iter().map(str::to_owned).collect(),
                placements: pool.placements,
            });
        }
    }
    Plan {
        accepts,
        declines,
        unplaced,
    }
}

/// Scalars in thousandths, Mesos' fixed-point representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Milli {
    cpus: u64,
    mem: u64,
    disk: u64,
}

impl Milli {
    fn of(cpus: f64, mem: f64, disk: f64) -> Self {
        Self {
            cpus: to_milli(cpus),
            mem: to_milli(mem),
            disk: to_milli(disk),
        }
    }

    fn plus(self, o: Self) -> Self {
        Self {
            cpus: self.cpus.saturating_add(o.cpus),
            mem: self.mem.saturating_add(o.mem),
            disk: self.disk.saturating_add(o.disk),
        }
    }

    fn resources(self) -> Scalars {
        Scalars {
            cpus: from_milli(self.cpus),
            mem: from_milli(self.mem),
            disk: from_milli(self.disk),
        }
    }
}

/// Rounds to thousandths. Negative and NaN (malformed input) count as 0, so a broken offer
/// never holds anything; values beyond `u64::MAX` thousandths saturate.
fn to_milli(v: f64) -> u64 {
    // `as` saturates and maps NaN to 0; `max` also turns -0.0 and negatives into 0.
    (v * 1000.0).round().max(0.0) as u64
}

fn from_milli(v: u64) -> f64 {
    v as f64 / 1000.0
}

/// The offers of one `(agent, role)`, summed, and what this round has taken from them.
struct AgentPool<'a, K> {
    agent_id: &'a str,
    hostname: &'a str,
    role: Option<&'a str>,
    offer_ids: Vec<&'a str>,
    /// What is left after the placements so far.
    free: Milli,
    /// The offered port ranges: sorted, disjoint, non-adjacent. Never changed: ports are
    /// taken from the front, up to `next`, so that a [`Mark`] can give them back.
    ports: Vec<(u16, u16)>,
    /// The lowest port not taken yet.
    next: PortCursor,
    /// Count of free ports, kept so the fit check is O(1).
    free_ports: u64,
    placements: Vec<Placement<K>>,
    /// The last gang (by index) that drew from the pool, so that a gang marks each pool
    /// once, before its first draw.
    gang: Option<usize>,
}

/// A position in a pool's port ranges: `ports[range]`, from `port` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PortCursor {
    range: usize,
    port: u16,
}

/// A pool's draw-down state at one moment; rolling back to it undoes every later placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    free: Milli,
    next: PortCursor,
    free_ports: u64,
    placements: usize,
}

impl<K> AgentPool<'_, K> {
    fn mark(&self) -> Mark {
        Mark {
            free: self.free,
            next: self.next,
            free_ports: self.free_ports,
            placements: self.placements.len(),
        }
    }

    /// Undoes every placement made since `mark`.
    fn roll_back(&mut self, mark: Mark) {
        self.free = mark.free;
        self.next = mark.next;
        self.free_ports = mark.free_ports;
        self.placements.truncate(mark.placements);
    }

    /// How many of cpus, mem, disk and ports are short for a need; 0 means it fits.
    fn short_count(&self, need: Milli, ports: usize) -> usize {
        usize::from(need.cpus > self.free.cpus)
            + usize::from(need.mem > self.free.mem)
            + usize::from(need.disk > self.free.disk)
            + usize::from(ports as u64 > self.free_ports)
    }

    fn near_miss(&self, need: Milli, ports: usize) -> NearMiss {
        let mut short = Vec::new();
        let scalar = |n: u64, f: u64| (n > f).then(|| (from_milli(n), from_milli(f)));
        if let Some((needed, available)) = scalar(need.cpus, self.free.cpus) {
            short.push(Shortfall::Cpus { needed, available });
        }
        if let Some((needed, available)) = scalar(need.mem, self.free.mem) {
            short.push(Shortfall::Mem { needed, available });
        }
        if let Some((needed, available)) = scalar(need.disk, self.free.disk) {
            short.push(Shortfall::Disk { needed, available });
        }
        if ports as u64 > self.free_ports {
            short.push(Shortfall::Ports {
                needed: ports,
                available: self.free_ports,
            });
        }
        NearMiss {
            agent_id: self.agent_id.to_owned(),
            hostname: self.hostname.to_owned(),
            role: self.role.map(str::to_owned),
            short,
        }
    }

    /// Draws one node and its executor from the pool. The caller checked the fit.
    fn place(&mut self, need: &NodeNeed<K>, task: Milli, exec: Milli, exec_ports: usize)
    where
        K: Clone,
    {
        let total = task.plus(exec);
        self.free = Milli {
            cpus: self.free.cpus - total.cpus,
            mem: self.free.mem - total.mem,
            disk: self.free.disk - total.disk,
        };
        let ports = self.take_ports(need.ports);
        let executor_ports = self.take_ports(exec_ports);
        self.placements.push(Placement {
            key: need.key.clone(),
            allotment: Allotment {
                task: task.resources(),
                executor: exec.resources(),
                ports,
                executor_ports,
            },
        });
    }

    /// Takes the `n` lowest free ports. The caller checked `n <= free_ports`.
    fn take_ports(&mut self, n: usize) -> Vec<u16> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some(&(_, end)) = self.ports.get(self.next.range) else {
                // invariant: unreachable while `free_ports` is accurate; stop rather than spin.
                break;
            };
            let begin = self.next.port;
            let want = n - out.len();
            let available = usize::from(end - begin) + 1;
            let take = want.min(available);
            // `take >= 1` and `take <= available`, so this stays within the range.
            let last = begin + (take - 1) as u16;
            out.extend(begin..=last);
            if last == end {
                self.next = PortCursor::at(&self.ports, self.next.range + 1);
            } else {
                self.next.port = last + 1;
            }
        }
        self.free_ports -= out.len() as u64;
        out
    }
}

impl PortCursor {
    /// The first port of `ports[range]` (past the end when there is no such range).
    fn at(ports: &[(u16, u16)], range: usize) -> Self {
        Self {
            range,
            port: ports.get(range).map_or(0, |r| r.0),
        }
    }
}

/// Groups deduplicated offers into pools sorted by `(agent_id, role)`, offer ids sorted
/// inside each pool. Returns the pools and the number of distinct offers.
fn pools<K>(offers: &[OfferView]) -> (Vec<AgentPool<'_, K>>, usize) {
    let mut seen = HashSet::with_capacity(offers.len());
    let mut sorted: Vec<&OfferView> = offers
        .iter()
        .filter(|o| seen.insert(o.id.as_str()))
        .collect();
    sorted.sort_by(|a, b| {
        (a.agent_id.as_str(), a.role.as_deref(), a.id.as_str()).cmp(&(
            b.agent_id.as_str(),
            b.role.as_deref(),
            b.id.as_str(),
        ))
    });
    let distinct = sorted.len();

    let mut pools: Vec<AgentPool<'_, K>> = Vec::new();
    let mut ranges: Vec<Vec<(u64, u64)>> = Vec::new();
    for offer in sorted {
        let same_pool = pools.last().is_some_and(|p: &AgentPool<'_, K>| {
            p.agent_id == offer.agent_id && p.role == offer.role.as_deref()
        });
        if !same_pool {
            pools.push(AgentPool {
                agent_id: &offer.agent_id,
                hostname: &offer.hostname,
                role: offer.role.as_deref(),
                offer_ids: Vec::new(),
                free: Milli::default(),
                ports: Vec::new(),
                next: PortCursor::at(&[], 0),
                free_ports: 0,
                placements: Vec::new(),
                gang: None,
            });
            ranges.push(Vec::new());
        }
        // invariant: a pool was pushed above if none matched, so both vectors are non-empty.
        let (Some(pool), Some(pool_ranges)) = (pools.last_mut(), ranges.last_mut()) else {
            continue;
        };
        pool.offer_ids.push(&offer.id);
        pool.free = pool.free.plus(Milli::of(offer.cpus, offer.mem, offer.disk));
        pool_ranges.extend(offer.ports.iter().copied());
    }
    for (pool, raw) in pools.iter_mut().zip(ranges) {
        pool.ports = merge_ranges(raw);
        pool.next = PortCursor::at(&pool.ports, 0);
        pool.free_ports = pool.ports.iter().map(|&(b, e)| u64::from(e - b) + 1).sum();
    }
    (pools, distinct)
}

/// Clamps ranges to valid port numbers, drops empty ones, sorts and merges overlapping or
/// adjacent ones, so no port is counted or handed out twice.
fn merge_ranges(mut raw: Vec<(u64, u64)>) -> Vec<(u16, u16)> {
    raw.retain_mut(|r| {
        r.0 = r.0.max(MIN_PORT);
        r.1 = r.1.min(MAX_PORT);
        r.0 <= r.1
    });
    raw.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(raw.len());
    for (b, e) in raw {
        // Both ends are within 1..=65535 after the clamp above.
        let (b, e) = (b as u16, e as u16);
        match out.last_mut() {
            Some(last) if u32::from(b) <= u32::from(last.1) + 1 => last.1 = last.1.max(e),
            _ => out.push((b, e)),
        }
    }
    out
}

impl fmt::Display for NoFit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "needs cpus {}, mem {}, disk {}, {} port{} (node + executor); ",
            self.need.cpus,
            self.need.mem,
            self.need.disk,
            self.ports,
            plural(self.ports as u64),
        )?;
        match &self.closest {
            None => f.write_str("no offers"),
            Some(miss) => write!(
                f,
                "none of {} offer{} on {} agent/role pool{} fits; closest: {miss}",
                self.offers,
                plural(self.offers as u64),
                self.pools,
                plural(self.pools as u64),
            ),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoFit(n) => n.fmt(f),
            Self::GangShort { short, gang } => write!(
                f,
                "fits, but {short} of the {gang} nodes placed with it {}; they wait together \
                 (placed all or none), holding nothing",
                if *short == 1 { "does not" } else { "do not" },
            ),
        }
    }
}

impl fmt::Display for NearMiss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "agent {} ({}", self.agent_id, self.hostname)?;
        if let Some(role) = &self.role {
            write!(f, ", role {role}")?;
        }
        f.write_str(") has only ")?;
        for (i, s) in self.short.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpus { needed, available } => write!(f, "cpus {available} of {needed}"),
            Self::Mem { needed, available } => write!(f, "mem {available} of {needed}"),
            Self::Disk { needed, available } => write!(f, "disk {available} of {needed}"),
            Self::Ports { needed, available } => write!(f, "{available} of {needed} ports"),
        }
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

// ---------------------------------------------------------------------------------------
// Dry runs

/// Where each of `demands` would go on `offers`, tried as a real round tries one cluster's
/// nodes (first fit, in order): a node that fits names its agent, one that does not names
/// what it needs and the agent that came closest. Unlike a round, the nodes that fit are
/// reported even when others do not, so that a person sees the whole picture; the cluster
/// would be placed when every node fits. One [`NodeFit`] per demand, in their order.
pub fn dry_run(
    offers: &[OfferView],
    demands: &[Demand],
    executor: &ExecutorOverhead,
) -> Vec<NodeFit> {
    let needs: Vec<NodeNeed<usize>> = demands
        .iter()
        .enumerate()
        .map(|(i, d)| NodeNeed {
            key: i,
            cpus: d.cpus,
            mem: d.mem,
            disk: d.disk,
            ports: d.ports,
        })
        .collect();
    let plan = evaluate(offers, &needs, executor);
    let exec = Milli::of(executor.cpus, executor.mem, executor.disk);
    let with_executor = |d: &Demand| {
        let total = Milli::of(d.cpus, d.mem, d.disk).plus(exec).resources();
        Needs {
            cpus: total.cpus,
            mem_mb: total.mem,
            disk_mb: total.disk,
            ports: d.ports.saturating_add(executor.ports),
        }
    };
    // Every need is either placed or unplaced, exactly once.
    let mut fits: Vec<(usize, Fit)> = Vec::with_capacity(demands.len());
    for a in &plan.accepts {
        fits.extend(a.placements.iter().map(|p| {
            (
                p.key,
                Fit::Agent {
                    agent_id: a.agent_id.clone(),
                    hostname: a.hostname.clone(),
                    role: a.role.clone(),
                },
            )
        }));
    }
    for u in plan.unplaced {
        if let (Refusal::NoFit(n), Some(d)) = (u.reason, demands.get(u.key)) {
            let closest = n.closest.map(|m| Closest {
                agent_id: m.agent_id,
                hostname: m.hostname,
                role: m.role,
                short: m.short.iter().map(Short::from).collect(),
            });
            fits.push((u.key, Fit::none(&with_executor(d), closest)));
        }
    }
    fits.sort_by_key(|(i, _)| *i);
    fits.into_iter()
        .filter_map(|(i, fit)| {
            demands.get(i).map(|d| NodeFit {
                node: d.node.clone(),
                needs: with_executor(d),
                fit,
            })
        })
        .collect()
}

impl From<&Shortfall> for Short {
    fn from(s: &Shortfall) -> Self {
        let (resource, needed, available) = match *s {
            Shortfall::Cpus { needed, available } => (Resource::Cpus, needed, available),
            Shortfall::Mem { needed, available } => (Resource::Mem, needed, available),
            Shortfall::Disk { needed, available } => (Resource::Disk, needed, available),
            Shortfall::Ports { needed, available } => {
                (Resource::Ports, needed as f64, available as f64)
            }
        };
        Short {
            resource,
            needed,
            available,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The edge: protobuf in

impl OfferView {
    /// The view of one offer: its scalars summed by name, its `ports` ranges collected.
    /// Scalars of other names (gpus, custom ones) are not matched on and are left out.
    pub fn from_offer(o: &mesos::Offer) -> Self {
        let sum = |name: &str| {
            o.resources
                .iter()
                .filter(|r| r.name == name)
                .filter_map(|r| r.scalar.map(|s| s.value))
                .sum::<f64>()
        };
        Self {
            id: o.id.value.clone(),
            agent_id: o.agent_id.value.clone(),
            hostname: o.hostname.clone(),
            role: o.allocation_info.as_ref().and_then(|a| a.role.clone()),
            cpus: sum("cpus"),
            mem: sum("mem"),
            disk: sum("disk"),
            ports: o
                .resources
                .iter()
                .filter(|r| r.name == "ports")
                .filter_map(|r| r.ranges.as_ref())
                .flat_map(|rs| rs.range.iter().map(|x| (x.begin, x.end)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(id: &str, agent: &str, role: Option<&str>, cpus: f64, mem: f64) -> OfferView {
        OfferView {
            id: id.to_owned(),
            agent_id: agent.to_owned(),
            hostname: format!("{agent}.example"),
            role: role.map(str::to_owned),
            cpus,
            mem,
            disk: 1000.0,
            ports: vec![(31000, 31009)],
        }
    }

    fn need(key: &str, cpus: f64, mem: f64) -> NodeNeed<String> {
        NodeNeed {
            key: key.to_owned(),
            cpus,
            mem,
            disk: 0.0,
            ports: 0,
        }
    }

    const NO_EXEC: ExecutorOverhead = ExecutorOverhead {
        cpus: 0.0,
        mem: 0.0,
        disk: 0.0,
        ports: 0,
    };

    const EXEC: ExecutorOverhead = ExecutorOverhead {
        cpus: 0.1,
        mem: 64.0,
        disk: 0.0,
        ports: 1,
    };

    /// `(node key, agent)` of every placement, in plan order.
    fn placed(plan: &Plan<String>) -> Vec<(String, String)> {
        plan.accepts
            .iter()
            .flat_map(|a| {
                a.placements
                    .iter()
                    .map(|p| (p.key.clone(), a.agent_id.clone()))
            })
            .collect()
    }

    fn no_fit<K>(u: &Unplaced<K>) -> &NoFit {
        u.reason.no_fit().expect("a node that does not fit")
    }

    fn unplaced_keys(plan: &Plan<String>) -> Vec<&str> {
        plan.unplaced.iter().map(|u| u.key.as_str()).collect()
    }

    #[test]
    fn the_view_of_an_offer_sums_its_scalars_and_collects_its_ranges() {
        use crate::proto::mesos::v1::{Resource, resource::AllocationInfo, value};
        let scalar = |name: &str, v: f64| Resource {
            name: name.into(),
            r#type: value::Type::Scalar as i32,
            scalar: Some(value::Scalar { value: v }),
            ..Default::default()
        };
        let ranges = |rs: &[(u64, u64)]| Resource {
            name: "ports".into(),
            r#type: value::Type::Ranges as i32,
            ranges: Some(value::Ranges {
                range: rs
                    .iter()
                    .map(|&(begin, end)| value::Range { begin, end })
                    .collect(),
            }),
            ..Default::default()
        };
        let o = mesos::Offer {
            id: mesos::OfferId { value: "o1".into() },
            agent_id: mesos::AgentId { value: "a1".into() },
            hostname: "h1".into(),
            allocation_info: Some(AllocationInfo {
                role: Some("r".into()),
            }),
            resources: vec![
                scalar("cpus", 0.5),
                scalar("mem", 100.0),
                scalar("cpus", 1.0),
                scalar("gpus", 1.0),
                ranges(&[(31000, 31001), (32000, 32000)]),
                ranges(&[(33000, 33005)]),
            ],
            ..Default::default()
        };
        assert_eq!(
            OfferView::from_offer(&o),
            OfferView {
                id: "o1".into(),
                agent_id: "a1".into(),
                hostname: "h1".into(),
                role: Some("r".into()),
                cpus: 1.5,
                mem: 100.0,
                disk: 0.0,
                ports: vec![(31000, 31001), (32000, 32000), (33000, 33005)],
            }
        );
    }

    fn gang(nodes: &[(&str, f64)]) -> Gang<String> {
        Gang {
            nodes: nodes
                .iter()
                .map(|&(k, cpus)| need(k, cpus, 100.0))
                .collect(),
        }
    }

    /// How each unplaced node was refused: `"no fit"` or `"gang"`.
    fn refusals(plan: &Plan<String>) -> Vec<(&str, &'static str)> {
        plan.unplaced
            .iter()
            .map(|u| {
                let kind = match u.reason {
                    Refusal::NoFit(_) => "no fit",
                    Refusal::GangShort { .. } => "gang",
                };
                (u.key.as_str(), kind)
            })
            .collect()
    }

    #[test]
    fn gangs_are_placed_whole_or_not_at_all() {
        struct Case {
            name: &'static str,
            offers: Vec<OfferView>,
            gangs: Vec<Gang<String>>,
            placed: Vec<(&'static str, &'static str)>,
            refused: Vec<(&'static str, &'static str)>,
            declines: Vec<&'static str>,
        }
        // With EXEC, a node of 1 cpu takes 1.1, one of 0.5 takes 0.6.
        let cases = [
            Case {
                name: "three nodes on two offers that hold two: nothing is placed",
                offers: vec![
                    offer("o1", "a1", None, 1.1, 1024.0),
                    offer("o2", "a2", None, 1.1, 1024.0),
                ],
                gangs: vec![gang(&[("n0", 1.0), ("n1", 1.0), ("n2", 1.0)])],
                placed: vec![],
                refused: vec![("n0", "gang"), ("n1", "gang"), ("n2", "no fit")],
                declines: vec!["o1", "o2"],
            },
            Case {
                name: "three nodes that fit across two offers on two agents are all placed",
                offers: vec![
                    offer("o2", "a2", None, 1.1, 1024.0),
                    offer("o1", "a1", None, 2.2, 1024.0),
                ],
                gangs: vec![gang(&[("n0", 1.0), ("n1", 1.0), ("n2", 1.0)])],
                placed: vec![("n0", "a1"), ("n1", "a1"), ("n2", "a2")],
                refused: vec![],
                declines: vec![],
            },
            Case {
                name: "two offers of one agent hold a gang together",
                offers: vec![
                    offer("o1", "a1", None, 1.0, 1024.0),
                    offer("o2", "a1", None, 1.2, 1024.0),
                ],
                gangs: vec![gang(&[("n0", 1.0), ("n1", 1.0)])],
                placed: vec![("n0", "a1"), ("n1", "a1")],
                refused: vec![],
                declines: vec![],
            },
            Case {
                name: "two gangs where only one fits: the first goes whole, the second holds nothing",
                offers: vec![offer("o1", "a1", None, 2.0, 1024.0)],
                gangs: vec![
                    gang(&[("a0", 0.5), ("a1", 0.5)]),
                    gang(&[("b0", 0.5), ("b1", 0.5)]),
                ],
                placed: vec![("a0", "a1"), ("a1", "a1")],
                refused: vec![("b0", "gang"), ("b1", "no fit")],
                declines: vec![],
            },
            Case {
                name: "an older gang that does not fit leaves the offers to a younger one",
                offers: vec![offer("o1", "a1", None, 2.0, 1024.0)],
                gangs: vec![
                    gang(&[("a0", 0.5), ("a1", 0.5), ("a2", 0.5), ("a3", 0.5)]),
                    gang(&[("b0", 0.5), ("b1", 0.5), ("b2", 0.5)]),
                ],
                placed: vec![("b0", "a1"), ("b1", "a1"), ("b2", "a1")],
                refused: vec![
                    ("a0", "gang"),
                    ("a1", "gang"),
                    ("a2", "gang"),
                    ("a3", "no fit"),
                ],
                declines: vec![],
            },
            Case {
                name: "a refused gang on one agent does not keep another gang off it",
                offers: vec![
                    offer("o1", "a1", None, 1.2, 1024.0),
                    offer("o2", "a2", None, 0.6, 1024.0),
                ],
                gangs: vec![
                    gang(&[("a0", 1.0), ("a1", 1.0)]),
                    gang(&[("b0", 0.5), ("b1", 0.5)]),
                ],
                placed: vec![("b0", "a1"), ("b1", "a1")],
                refused: vec![("a0", "gang"), ("a1", "no fit")],
                declines: vec!["o2"],
            },
            Case {
                name: "an empty gang places nothing and refuses nothing",
                offers: vec![offer("o1", "a1", None, 1.0, 1024.0)],
                gangs: vec![Gang { nodes: vec![] }],
                placed: vec![],
                refused: vec![],
                declines: vec!["o1"],
            },
        ];
        for case in cases {
            let plan = evaluate_gangs(&case.offers, &case.gangs, &EXEC);
            let placed: Vec<(String, String)> = case
                .placed
                .iter()
                .map(|&(k, a)| (k.to_owned(), a.to_owned()))
                .collect();
            let mut got = self::placed(&plan);
            got.sort();
            assert_eq!(got, placed, "{}", case.name);
            assert_eq!(refusals(&plan), case.refused, "{}", case.name);
            assert_eq!(plan.declines, case.declines, "{}", case.name);
        }
    }

    #[test]
    fn a_refused_gang_gives_back_its_ports_and_says_why() {
        let mut a0 = need("a0", 0.5, 100.0);
        a0.ports = 3;
        let gangs = [
            Gang {
                nodes: vec![a0, need("a1", 5.0, 100.0)],
            },
            Gang {
                nodes: vec![NodeNeed {
                    ports: 1,
                    ..need("b0", 0.5, 100.0)
                }],
            },
        ];
        let plan = evaluate_gangs(&[offer("o1", "a1", None, 2.0, 1024.0)], &gangs, &EXEC);
        // b0 gets the lowest ports, as if the refused gang had never been tried.
        let b0 = &plan.accepts[0].placements[0];
        assert_eq!(b0.key, "b0");
        assert_eq!(
            (
                b0.allotment.ports.clone(),
                b0.allotment.executor_ports.clone()
            ),
            (vec![31000], vec![31001])
        );
        assert_eq!(
            plan.unplaced[0].reason.to_string(),
            "fits, but 1 of the 2 nodes placed with it does not; they wait together (placed \
             all or none), holding nothing"
        );
        // a1's shortfall counts what a0 of its own gang drew first (0.6 of 2 cpus).
        assert_eq!(
            plan.unplaced[1].reason.to_string(),
            "needs cpus 5.1, mem 164, disk 0, 1 port (node + executor); none of 1 offer on 1 \
             agent/role pool fits; closest: agent a1 (a1.example) has only cpus 1.4 of 5.1"
        );
    }

    #[test]
    fn gangs_of_one_place_like_single_nodes() {
        let offers: Vec<OfferView> = (0..6)
            .map(|i| offer(&format!("o{i}"), &format!("a{}", i % 3), None, 1.0, 512.0))
            .collect();
        let needs: Vec<NodeNeed<String>> = (0..12)
            .map(|i| NodeNeed {
                ports: i % 4,
                ..need(&format!("n{i}"), 0.2 + f64::from(i as u8) * 0.1, 100.0)
            })
            .collect();
        let gangs: Vec<Gang<String>> = needs
            .iter()
            .map(|n| Gang {
                nodes: vec![n.clone()],
            })
            .collect();
        let plan = evaluate(&offers, &needs, &EXEC);
        assert!(!plan.accepts.is_empty() && !plan.unplaced.is_empty());
        assert_eq!(evaluate_gangs(&offers, &gangs, &EXEC), plan);
    }

    #[test]
    fn a_node_that_fits_gets_exact_amounts_and_ports() {
        let mut n = need("n1", 1.0, 1024.0);
        n.disk = 100.0;
        n.ports = 2;
        let plan = evaluate(&[offer("o1", "a1", Some("r"), 2.0, 4096.0)], &[n], &EXEC);
        assert_eq!(plan.declines, Vec::<String>::new());
        assert!(plan.unplaced.is_empty());
        assert_eq!(
            plan.accepts,
            vec![Accept {
                agent_id: "a1".into(),
                hostname: "a1.example".into(),
                role: Some("r".into()),
                offer_ids: vec!["o1".into()],
                placements: vec![Placement {
                    key: "n1".into(),
                    allotment: Allotment {
                        task: Scalars {
                            cpus: 1.0,
                            mem: 1024.0,
                            disk: 100.0
                        },
                        executor: Scalars {
                            cpus: 0.1,
                            mem: 64.0,
                            disk: 0.0
                        },
                        ports: vec![31000, 31001],
                        executor_ports: vec![31002],
                    },
                }],
            }]
        );
    }

    #[test]
    fn each_resource_can_be_the_one_that_does_not_fit() {
        // (need cpus, mem, disk, ports) against one offer of cpus 1, mem 1024, disk 1000, 10
        // ports, with the executor overhead; and the single shortfall expected.
        let cases: [((f64, f64, f64, usize), Shortfall); 4] = [
            (
                (1.0, 10.0, 0.0, 0),
                Shortfall::Cpus {
                    needed: 1.1,
                    available: 1.0,
                },
            ),
            (
                (0.5, 961.0, 0.0, 0),
                Shortfall::Mem {
                    needed: 1025.0,
                    available: 1024.0,
                },
            ),
            (
                (0.5, 10.0, 1000.5, 0),
                Shortfall::Disk {
                    needed: 1000.5,
                    available: 1000.0,
                },
            ),
            (
                (0.5, 10.0, 0.0, 10),
                Shortfall::Ports {
                    needed: 11,
                    available: 10,
                },
            ),
        ];
        for ((cpus, mem, disk, ports), want) in cases {
            let n = NodeNeed {
                key: "n".to_owned(),
                cpus,
                mem,
                disk,
                ports,
            };
            let plan = evaluate(&[offer("o1", "a1", None, 1.0, 1024.0)], &[n], &EXEC);
            assert!(plan.accepts.is_empty(), "{want:?}");
            assert_eq!(plan.declines, vec!["o1".to_owned()], "{want:?}");
            let miss = no_fit(&plan.unplaced[0])
                .closest
                .as_ref()
                .expect("one pool");
            assert_eq!(miss.short, vec![want], "{want:?}");
        }
        // The same node with one unit less of the short resource fits exactly.
        let n = NodeNeed {
            key: "n".to_owned(),
            cpus: 0.9,
            mem: 960.0,
            disk: 1000.0,
            ports: 9,
        };
        let plan = evaluate(&[offer("o1", "a1", None, 1.0, 1024.0)], &[n], &EXEC);
        assert!(plan.unplaced.is_empty(), "{:?}", plan.unplaced);
    }

    #[test]
    fn reasons_read_well() {
        let mut n = need("n", 2.0, 4096.0);
        n.ports = 3;
        let plan = evaluate(&[], std::slice::from_ref(&n), &EXEC);
        assert_eq!(
            plan.unplaced[0].reason.to_string(),
            "needs cpus 2.1, mem 4160, disk 0, 4 ports (node + executor); no offers"
        );

        let mut tight = offer("o2", "a2", None, 1.5, 8192.0);
        tight.ports = vec![(5000, 5000)];
        let mut small = offer("o1", "a1", Some("r"), 0.5, 100.0);
        small.ports.clear();
        // a1 is short of three resources, a2 of two: a2 is the closest.
        let offers = [small, tight];
        let plan = evaluate(&offers, &[n], &EXEC);
        assert_eq!(
            plan.unplaced[0].reason.to_string(),
            "needs cpus 2.1, mem 4160, disk 0, 4 ports (node + executor); none of 2 offers on \
             2 agent/role pools fits; closest: agent a2 (a2.example) has only cpus 1.5 of 2.1, \
             1 of 4 ports"
        );
        let plan = evaluate(
            &[offer("o1", "a1", Some("r"), 0.5, 100.0)],
            &[need("m", 1.0, 50.0)],
            &NO_EXEC,
        );
        assert_eq!(
            plan.unplaced[0].reason.to_string(),
            "needs cpus 1, mem 50, disk 0, 0 ports (node + executor); none of 1 offer on 1 \
             agent/role pool fits; closest: agent a1 (a1.example, role r) has only cpus 0.5 of 1"
        );
    }

    #[test]
    fn a_dry_run_names_each_nodes_agent_or_its_shortfall_with_the_executor() {
        let offers = [
            offer("o1", "a1", None, 1.0, 512.0),
            offer("o2", "a2", None, 0.5, 256.0),
        ];
        let demand = |node: &str, cpus: f64, mem: f64| Demand {
            node: node.into(),
            cpus,
            mem,
            disk: 0.0,
            ports: 1,
        };
        let fits = dry_run(
            &offers,
            &[
                demand("big", 0.8, 400.0),
                demand("small", 0.3, 100.0),
                demand("huge", 0.9, 1000.0),
            ],
            &EXEC,
        );
        let names: Vec<&str> = fits.iter().map(|f| f.node.as_str()).collect();
        assert_eq!(names, vec!["big", "small", "huge"], "the demands' order");
        assert_eq!(
            fits[0].needs,
            Needs {
                cpus: 0.9,
                mem_mb: 464.0,
                disk_mb: 0.0,
                ports: 2
            },
            "node plus executor"
        );
        assert!(matches!(&fits[0].fit, Fit::Agent { agent_id, .. } if agent_id == "a1"));
        // a1 has 0.1 cpus left after big: small goes to a2, whatever its order.
        assert!(matches!(&fits[1].fit, Fit::Agent { agent_id, .. } if agent_id == "a2"));
        let Fit::None { closest, why } = &fits[2].fit else {
            panic!("huge fits nowhere: {:?}", fits[2]);
        };
        let closest = closest.as_ref().expect("agents were seen");
        assert_eq!(closest.agent_id, "a1");
        assert_eq!(
            why,
            "no agent has room for 1 cpus, 1064 MB mem, 2 ports after the nodes before it; \
             closest: a1 (a1.example) has 0.1 of 1 cpus, 48 of 1064 MB mem"
        );
        // Without any offer, nothing is closest.
        let fits = dry_run(&[], &[demand("n", 0.1, 1.0)], &EXEC);
        assert!(
            matches!(&fits[0].fit, Fit::None { closest: None, why } if why.starts_with("no agent seen"))
        );
    }

    #[test]
    fn ports_are_the_lowest_free_numbers_across_ranges() {
        let mut o = offer("o1", "a1", None, 8.0, 8192.0);
        // Unsorted, overlapping, adjacent, out-of-range and empty ranges.
        o.ports = vec![
            (31010, 31012),
            (0, 0),
            (31000, 31001),
            (31001, 31002),
            (31003, 31003),
            (31020, 31020),
            (65535, 70000),
            (9, 8),
        ];
        let mut a = need("a", 1.0, 10.0);
        a.ports = 5;
        let mut b = need("b", 1.0, 10.0);
        b.ports = 2;
        let mut c = need("c", 1.0, 10.0);
        c.ports = 1;
        let mut d = need("d", 1.0, 10.0);
        d.ports = 1;
        let plan = evaluate(&[o], &[a, b, c, d], &EXEC);
        let got: Vec<(Vec<u16>, Vec<u16>)> = plan.accepts[0]
            .placements
            .iter()
            .map(|p| {
                (
                    p.allotment.ports.clone(),
                    p.allotment.executor_ports.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (vec![31000, 31001, 31002, 31003, 31010], vec![31011]),
                (vec![31012, 31020], vec![65535]),
            ]
        );
        // The ranges are exhausted: the last two nodes need 2 ports each (with the executor).
        assert_eq!(unplaced_keys(&plan), vec!["c", "d"]);
        assert_eq!(
            no_fit(&plan.unplaced[0])
                .closest
                .as_ref()
                .map(|m| m.short.clone()),
            Some(vec![Shortfall::Ports {
                needed: 2,
                available: 0
            }])
        );
    }

    #[test]
    fn nodes_without_ports_fit_an_offer_without_ports() {
        let mut o = offer("o1", "a1", None, 1.0, 100.0);
        o.ports.clear();
        let plan = evaluate(&[o], &[need("n", 1.0, 100.0)], &NO_EXEC);
        assert_eq!(placed(&plan), vec![("n".into(), "a1".into())]);
        assert!(plan.accepts[0].placements[0].allotment.ports.is_empty());
    }

    #[test]
    fn offers_of_one_agent_and_role_are_combined() {
        let mut o2 = offer("o2", "a1", Some("r"), 1.0, 512.0);
        o2.ports = vec![(31010, 31010)];
        let offers = [offer("o1", "a1", Some("r"), 1.0, 512.0), o2];
        let mut n = need("n", 1.9, 960.0);
        n.ports = 10;
        let plan = evaluate(&offers, &[n], &EXEC);
        assert!(plan.unplaced.is_empty(), "{:?}", plan.unplaced);
        assert_eq!(plan.accepts.len(), 1);
        assert_eq!(plan.accepts[0].offer_ids, vec!["o1", "o2"]);
        let p = &plan.accepts[0].placements[0].allotment;
        assert_eq!(p.ports, (31000..=31009).collect::<Vec<u16>>());
        assert_eq!(p.executor_ports, vec![31010]);
    }

    #[test]
    fn offers_of_different_roles_are_not_combined() {
        let offers = [
            offer("o1", "a1", Some("r1"), 1.0, 512.0),
            offer("o2", "a1", Some("r2"), 1.0, 512.0),
            offer("o3", "a1", None, 1.0, 512.0),
        ];
        let plan = evaluate(&offers, &[need("n", 1.5, 100.0)], &NO_EXEC);
        assert!(plan.accepts.is_empty());
        assert_eq!(plan.declines, vec!["o3", "o1", "o2"]); // None sorts before Some
        assert_eq!(no_fit(&plan.unplaced[0]).pools, 3);

        // A node that fits one role's offer takes only that pool.
        let plan = evaluate(&offers, &[need("n", 1.0, 512.0)], &NO_EXEC);
        assert_eq!(plan.accepts.len(), 1);
        assert_eq!(plan.accepts[0].role, None);
        assert_eq!(plan.accepts[0].offer_ids, vec!["o3"]);
        assert_eq!(plan.declines, vec!["o1", "o2"]);
    }

    #[test]
    fn two_agents_first_fit_in_agent_order() {
        let offers = [
            offer("ob", "b", None, 4.0, 4096.0),
            offer("oa", "a", None, 1.0, 1024.0),
            offer("oc", "c", None, 1.0, 1024.0),
        ];
        let needs = [
            need("big", 3.0, 2048.0),
            need("small1", 1.0, 1024.0),
            need("small2", 1.0, 1024.0),
        ];
        let plan = evaluate(&offers, &needs, &NO_EXEC);
        // small1 takes all of a; small2 goes to what big left on b; c is untouched.
        assert_eq!(
            placed(&plan),
            vec![
                ("small1".into(), "a".into()),
                ("big".into(), "b".into()),
                ("small2".into(), "b".into()),
            ]
        );
        assert_eq!(plan.declines, vec!["oc"]);
        assert!(plan.unplaced.is_empty());
    }

    #[test]
    fn many_nodes_draw_one_agent_down() {
        let offers = [offer("o1", "a1", None, 2.0, 10_000.0)];
        let needs: Vec<NodeNeed<String>> = (0..10)
            .map(|i| need(&format!("n{i}"), 0.2, 100.0))
            .collect();
        let exec = ExecutorOverhead {
            cpus: 0.1,
            mem: 32.0,
            disk: 0.0,
            ports: 1,
        };
        let plan = evaluate(&offers, &needs, &exec);
        // 0.3 per node: six nodes use 1.8; the seventh would need 2.1. 10 ports: no limit.
        assert_eq!(plan.accepts[0].placements.len(), 6);
        assert_eq!(unplaced_keys(&plan), vec!["n6", "n7", "n8", "n9"]);
        let ports: Vec<u16> = plan.accepts[0]
            .placements
            .iter()
            .flat_map(|p| p.allotment.executor_ports.clone())
            .collect();
        assert_eq!(ports, (31000..31006).collect::<Vec<u16>>());
        assert_eq!(
            no_fit(&plan.unplaced[0])
                .closest
                .as_ref()
                .map(|m| m.short.clone()),
            Some(vec![Shortfall::Cpus {
                needed: 0.3,
                available: 0.2
            }])
        );
    }

    #[test]
    fn scalars_compare_in_thousandths() {
        // 0.1 + 0.2 != 0.3 in f64; Mesos' fixed point says it fits, and so do we.
        let offers = [offer("o1", "a1", None, 0.3, 0.3)];
        let plan = evaluate(
            &offers,
            &[need("x", 0.1, 0.1), need("y", 0.2, 0.2)],
            &NO_EXEC,
        );
        assert_eq!(plan.accepts[0].placements.len(), 2, "{:?}", plan.unplaced);
        // Below a thousandth is noise; a whole thousandth is not.
        let plan = evaluate(&offers, &[need("x", 0.3004, 0.3)], &NO_EXEC);
        assert!(plan.unplaced.is_empty());
        assert_eq!(plan.accepts[0].placements[0].allotment.task.cpus, 0.3);
        let plan = evaluate(&offers, &[need("x", 0.301, 0.3)], &NO_EXEC);
        assert_eq!(unplaced_keys(&plan), vec!["x"]);
    }

    #[test]
    fn malformed_numbers_do_not_panic_or_invent_resources() {
        let mut o = offer("o1", "a1", None, f64::NAN, -5.0);
        o.disk = f64::INFINITY;
        let plan = evaluate(&[o], &[need("n", 0.1, 0.0)], &NO_EXEC);
        assert_eq!(unplaced_keys(&plan), vec!["n"]);
        assert_eq!(plan.declines, vec!["o1"]);
    }

    #[test]
    fn repeated_offer_ids_count_once() {
        let o = offer("o1", "a1", None, 1.0, 100.0);
        let plan = evaluate(
            &[o.clone(), o],
            &[need("n", 1.0, 100.0), need("m", 1.0, 100.0)],
            &NO_EXEC,
        );
        assert_eq!(plan.accepts[0].offer_ids, vec!["o1"]);
        assert_eq!(unplaced_keys(&plan), vec!["m"]);
        assert_eq!(no_fit(&plan.unplaced[0]).offers, 1);
    }

    #[test]
    fn the_plan_does_not_depend_on_offer_order() {
        let mut offers: Vec<OfferView> = (0..12)
            .map(|i| {
                let mut o = offer(
                    &format!("o{i:02}"),
                    &format!("a{}", i % 4),
                    [None, Some("r")][i % 2],
                    0.5 + f64::from(i as u8) * 0.25,
                    512.0,
                );
                o.ports = vec![(31000 + 10 * i as u64, 31004 + 10 * i as u64)];
                o
            })
            .collect();
        let mut needs: Vec<NodeNeed<String>> = (0..8)
            .map(|i| NodeNeed {
                ports: i % 3,
                ..need(&format!("n{i}"), 0.4 + f64::from(i as u8) * 0.3, 200.0)
            })
            .collect();
        needs.insert(3, need("huge", 100.0, 1.0));
        let first = evaluate(&offers, &needs, &EXEC);
        assert!(!first.accepts.is_empty() && !first.unplaced.is_empty());
        for _ in 0..offers.len() {
            offers.rotate_left(5);
            assert_eq!(evaluate(&offers, &needs, &EXEC), first);
            offers.reverse();
            assert_eq!(evaluate(&offers, &needs, &EXEC), first);
        }
        // Every offer appears exactly once across accepts and declines.
        let mut ids: Vec<&str> = first
            .accepts
            .iter()
            .flat_map(|a| a.offer_ids.iter().map(String::as_str))
            .chain(first.declines.iter().map(String::as_str))
            .collect();
        ids.sort_unstable();
        let mut want: Vec<&str> = offers.iter().map(|o| o.id.as_str()).collect();
        want.sort_unstable();
        assert_eq!(ids, want);
    }

    /// Not a benchmark (`paas bench` will time it): only checks that a large round stays
    /// linear enough to finish promptly in a debug build and keeps its invariants.
    #[test]
    fn a_thousand_offers_by_a_thousand_nodes() {
        let offers: Vec<OfferView> = (0..1000)
            .map(|i| {
                let mut o = offer(
                    &format!("o{i}"),
                    &format!("agent-{}", i % 500),
                    Some("r"),
                    4.0,
                    16_384.0,
                );
                o.ports = vec![(31000, 31099)];
                o
            })
            .collect();
        let needs: Vec<NodeNeed<usize>> = (0..1000)
            .map(|i| NodeNeed {
                key: i,
                cpus: [0.5, 2.0, 9.0][i % 3],
                mem: 2048.0,
                disk: 0.0,
                ports: 3,
            })
            .collect();
        let plan = evaluate(&offers, &needs, &EXEC);
        let placed: usize = plan.accepts.iter().map(|a| a.placements.len()).sum();
        // 9-cpu nodes fit nowhere (8 per agent at most); all others fit.
        assert_eq!(plan.unplaced.len(), 333);
        assert_eq!(placed, 667);
        for a in &plan.accepts {
            let cpus: f64 = a
                .placements
                .iter()
                .map(|p| p.allotment.task.cpus + p.allotment.executor.cpus)
                .sum();
            assert!(cpus <= 8.0 + 1e-9, "{} over-committed: {cpus}", a.agent_id);
            let mut ports: Vec<u16> = a
                .placements
                .iter()
                .flat_map(|p| {
                    p.allotment
                        .ports
                        .iter()
                        .chain(&p.allotment.executor_ports)
                        .copied()
                })
                .collect();
            let n = ports.len();
            ports.sort_unstable();
            ports.dedup();
            assert_eq!(ports.len(), n, "port handed out twice on {}", a.agent_id);
        }
    }

    /// The gang counterpart of the test above: a thousand offers, a thousand nodes in gangs
    /// of one to five, every fifth gang with a node that fits nowhere. Checks that each gang
    /// is placed whole or not at all, that refused gangs take nothing, and no over-commit.
    #[test]
    fn a_thousand_offers_by_three_hundred_gangs() {
        let offers: Vec<OfferView> = (0..1000)
            .map(|i| {
                let mut o = offer(
                    &format!("o{i}"),
                    &format!("agent-{}", i % 500),
                    Some("r"),
                    4.0,
                    16_384.0,
                );
                o.ports = vec![(31000, 31099)];
                o
            })
            .collect();
        let mut gangs: Vec<Gang<(usize, usize)>> = Vec::new();
        let mut n = 0;
        while n < 1000 {
            let g = gangs.len();
            let size = 1 + g % 5;
            gangs.push(Gang {
                nodes: (0..size)
                    .map(|j| NodeNeed {
                        key: (g, j),
                        cpus: if g % 5 == 4 && j == size - 1 {
                            9.0
                        } else {
                            [0.5, 2.0][j % 2]
                        },
                        mem: 2048.0,
                        disk: 0.0,
                        ports: 3,
                    })
                    .collect(),
            });
            n += size;
        }
        let plan = evaluate_gangs(&offers, &gangs, &EXEC);
        let mut placed_per_gang = vec![0usize; gangs.len()];
        for a in &plan.accepts {
            for p in &a.placements {
                placed_per_gang[p.key.0] += 1;
            }
            let cpus: f64 = a
                .placements
                .iter()
                .map(|p| p.allotment.task.cpus + p.allotment.executor.cpus)
                .sum();
            assert!(cpus <= 8.0 + 1e-9, "{} over-committed: {cpus}", a.agent_id);
            let mut ports: Vec<u16> = a
                .placements
                .iter()
                .flat_map(|p| {
                    p.allotment
                        .ports
                        .iter()
                        .chain(&p.allotment.executor_ports)
                        .copied()
                })
                .collect();
            let taken = ports.len();
            ports.sort_unstable();
            ports.dedup();
            assert_eq!(
                ports.len(),
                taken,
                "port handed out twice on {}",
                a.agent_id
            );
        }
        let mut refused_per_gang = vec![0usize; gangs.len()];
        for u in &plan.unplaced {
            refused_per_gang[u.key.0] += 1;
        }
        for (g, gang) in gangs.iter().enumerate() {
            let size = gang.nodes.len();
            if g % 5 == 4 {
                assert_eq!(
                    (placed_per_gang[g], refused_per_gang[g]),
                    (0, size),
                    "gang {g}"
                );
            } else {
                assert_eq!(
                    (placed_per_gang[g], refused_per_gang[g]),
                    (size, 0),
                    "gang {g}"
                );
            }
        }
    }
}
