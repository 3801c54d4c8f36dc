//! The agents as the scheduler last saw them: per `(agent, role)`, what the last offer
//! round showed free, less what that round launched. A dry run is evaluated against it.
//!
//! The scheduler answers every offer at once and holds none, so the snapshot is a memory of
//! offers, not a reservation: a dry run never holds anything. It is only as fresh as the
//! last round of each agent (the answer says when that was): while nothing is pending the
//! scheduler suppresses offers, so resources freed since (a destroyed cluster's, another
//! framework's) show at the next round, when a launch revives offers.

use std::collections::BTreeMap;
use std::sync::RwLock;

use crate::domain::Timestamp;
use crate::domain::placement::{Demand, Evaluation, Placement};

use super::offers::{self, Accept, ExecutorOverhead, OfferView};

/// `(agent_id, role)`: offers of one pool are combined; others never are.
type PoolKey = (String, Option<String>);

/// What one pool last showed free, and when.
#[derive(Debug, Clone)]
struct Seen {
    /// The pool's offers of that round summed into one view, less what the round took.
    free: OfferView,
    at: Timestamp,
}

/// The scheduler writes it on every offer round; dry runs read it. Its lock is held for a
/// copy or an update of the map only, never across an await.
#[derive(Debug, Default)]
pub struct SeenOffers {
    pools: RwLock<BTreeMap<PoolKey, Seen>>,
}

impl SeenOffers {
    /// Records one round: each pool in `offers` now shows what they hold, less what the
    /// `accepts` of the round placed on it. Pools not in the round keep their last view.
    pub fn record<K>(&self, offers: &[OfferView], accepts: &[Accept<K>], at: &Timestamp) {
        let mut round: BTreeMap<PoolKey, OfferView> = BTreeMap::new();
        for o in offers {
            let key = (o.agent_id.clone(), o.role.clone());
            let pool = round.entry(key).or_insert_with(|| OfferView {
                id: format!("seen:{}", o.agent_id),
                agent_id: o.agent_id.clone(),
                hostname: o.hostname.clone(),
                role: o.role.clone(),
                cpus: 0.0,
                mem: 0.0,
                disk: 0.0,
                ports: Vec::new(),
            });
            pool.cpus += o.cpus;
            pool.mem += o.mem;
            pool.disk += o.disk;
            pool.ports.extend(o.ports.iter().copied());
        }
        for a in accepts {
            let Some(pool) = round.get_mut(&(a.agent_id.clone(), a.role.clone())) else {
                continue;
            };
            let mut taken: Vec<u16> = Vec::new();
            for p in &a.placements {
                let t = &p.allotment;
                pool.cpus -= t.task.cpus + t.executor.cpus;
                pool.mem -= t.task.mem + t.executor.mem;
                pool.disk -= t.task.disk + t.executor.disk;
                taken.extend(t.ports.iter().chain(&t.executor_ports).copied());
            }
            pool.ports = without_ports(&pool.ports, taken);
        }
        let Ok(mut pools) = self.pools.write() else {
            return;
        };
        for (key, free) in round {
            pools.insert(
                key,
                Seen {
                    free,
                    at: at.clone(),
                },
            );
        }
    }

    /// Forgets an agent the master reported gone.
    pub fn forget_agent(&self, agent_id: &str) {
        if let Ok(mut pools) = self.pools.write() {
            pools.retain(|(agent, _), _| agent != agent_id);
        }
    }

    /// Where `demands` would go on the agents as last seen (see [`offers::dry_run`]).
    pub fn plan(&self, demands: &[Demand], executor: &ExecutorOverhead) -> Placement {
        let (views, oldest) = {
            let Ok(pools) = self.pools.read() else {
                return Placement::NoOffers;
            };
            let oldest = pools.values().map(|s| s.at.clone()).min();
            let views: Vec<OfferView> = pools.values().map(|s| s.free.clone()).collect();
            (views, oldest)
        };
        let Some(seen_at) = oldest else {
            return Placement::NoOffers;
        };
        let nodes = offers::dry_run(&views, demands, executor);
        Placement::Evaluated(Evaluation {
            agents: views.len(),
            seen_at,
            nodes,
        })
    }
}

/// `ranges` without the `taken` ports (each range split around them).
fn without_ports(ranges: &[(u64, u64)], mut taken: Vec<u16>) -> Vec<(u64, u64)> {
    taken.sort_unstable();
    let mut out = Vec::with_capacity(ranges.len() + taken.len());
    for &(begin, end) in ranges {
        let mut from = begin;
        for p in taken.iter().map(|&p| u64::from(p)) {
            if p < from || p > end {
                continue;
            }
            if p > from {
                out.push((from, p - 1));
            }
            from = p + 1;
        }
        if from <= end {
            out.push((from, end));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::placement::Fit;
    use crate::scheduler::offers::{Allotment, Placement as Placed, Scalars};

    fn offer(id: &str, agent: &str, cpus: f64, mem: f64, ports: (u64, u64)) -> OfferView {
        OfferView {
            id: id.into(),
            agent_id: agent.into(),
            hostname: format!("{agent}.example"),
            role: None,
            cpus,
            mem,
            disk: 0.0,
            ports: vec![ports],
        }
    }

    fn demand(node: &str, cpus: f64, mem: f64) -> Demand {
        Demand {
            node: node.into(),
            cpus,
            mem,
            disk: 0.0,
            ports: 1,
        }
    }

    const EXEC: ExecutorOverhead = ExecutorOverhead {
        cpus: 0.05,
        mem: 32.0,
        disk: 0.0,
        ports: 1,
    };

    fn agents(p: &Placement) -> Vec<Option<String>> {
        let Placement::Evaluated(e) = p else {
            panic!("not evaluated: {p:?}");
        };
        e.nodes
            .iter()
            .map(|n| match &n.fit {
                Fit::Agent { agent_id, .. } => Some(agent_id.clone()),
                Fit::None { .. } => None,
            })
            .collect()
    }

    #[test]
    fn nothing_seen_says_so() {
        let seen = SeenOffers::default();
        assert_eq!(
            seen.plan(&[demand("n0", 0.1, 10.0)], &EXEC),
            Placement::NoOffers
        );
    }

    #[test]
    fn a_round_shows_what_it_left_and_later_rounds_replace_only_their_agents() {
        let seen = SeenOffers::default();
        let t1 = Timestamp("2026-12-02T06:00:00.000Z".into());
        let t2 = Timestamp("2026-12-02T06:01:00.000Z".into());
        // Two offers of agent a (combined), one of b; the round launches one node on a.
        let offers = [
            offer("o1", "a", 0.5, 512.0, (30000, 30001)),
            offer("o2", "a", 0.5, 512.0, (30002, 30003)),
            offer("o3", "b", 0.3, 256.0, (30000, 30000)),
        ];
        let accepts = [Accept {
            agent_id: "a".to_owned(),
            hostname: "a.example".to_owned(),
            role: None,
            offer_ids: vec!["o1".into(), "o2".into()],
            placements: vec![Placed {
                key: "x".to_owned(),
                allotment: Allotment {
                    task: Scalars {
                        cpus: 0.6,
                        mem: 600.0,
                        disk: 0.0,
                    },
                    executor: Scalars {
                        cpus: 0.05,
                        mem: 32.0,
                        disk: 0.0,
                    },
                    ports: vec![30000],
                    executor_ports: vec![30002],
                },
            }],
        }];
        seen.record(&offers, &accepts, &t1);
        // a has 0.35 cpus, 392 MB and ports 30001 and 30003 left; b 0.3 cpus, 1 port.
        let p = seen.plan(&[demand("n0", 0.3, 300.0)], &EXEC);
        assert_eq!(agents(&p), vec![Some("a".to_owned())]);
        let p = seen.plan(&[demand("n0", 0.3, 300.0), demand("n1", 0.2, 100.0)], &EXEC);
        // n1 needs a port and an executor port: b has one port only.
        assert_eq!(agents(&p), vec![Some("a".to_owned()), None]);
        let Placement::Evaluated(e) = &p else {
            unreachable!()
        };
        assert!(!e.fits());
        assert_eq!(e.short(), 1);
        assert_eq!(e.agents, 2);
        assert_eq!(e.seen_at, t1);

        // A later round of b alone replaces b's view and keeps a's.
        seen.record::<String>(&[offer("o4", "b", 4.0, 4096.0, (30000, 30010))], &[], &t2);
        let p = seen.plan(
            &[demand("n0", 0.3, 300.0), demand("n1", 2.0, 2000.0)],
            &EXEC,
        );
        assert_eq!(agents(&p), vec![Some("a".to_owned()), Some("b".to_owned())]);
        let Placement::Evaluated(e) = &p else {
            unreachable!()
        };
        assert_eq!(e.seen_at, t1, "as fresh as the stalest agent");

        seen.forget_agent("b");
        let p = seen.plan(&[demand("n1", 2.0, 2000.0)], &EXEC);
        assert_eq!(agents(&p), vec![None]);
    }

    #[test]
    fn taken_ports_split_their_ranges() {
        assert_eq!(
            without_ports(&[(10, 20), (30, 30)], vec![30, 10, 15, 20, 99]),
            vec![(11, 14), (16, 19)]
        );
        assert_eq!(without_ports(&[(10, 12)], vec![]), vec![(10, 12)]);
    }
}
