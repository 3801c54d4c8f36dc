//! The allocator: which framework is offered which agent's free resources, one round per
//! `allocation_interval`, and the filters (`refuse_seconds`) that hold resources back from
//! a framework that declined them.
//!
//! The decision ([`plan`]) is pure and table-tested; [`Master::allocate`] turns it into
//! offers. Simplifications against Mesos' hierarchical DRF allocator: whole agents go to
//! one framework at a time, frameworks take turns (round-robin) instead of DRF shares, and
//! a framework is offered for its first role that is not suppressed only.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::{AgentState, Master, Offer};
use crate::mesos_local::resources::Quantities;
use crate::proto::mesos::v1 as mesos;
use crate::proto::mesos::v1::scheduler as sched;

/// `Filters.refuse_seconds` default and cap (365 days).
const DEFAULT_REFUSE: f64 = 5.0;
const MAX_REFUSE: f64 = 31_536_000.0;

/// Resources a framework declined on one agent for one role: not offered to it again
/// until `until`, as long as what is free still fits into them.
pub(super) struct Filter {
    pub agent: usize,
    pub role: String,
    pub resources: Quantities,
    pub until: Instant,
}

/// A connected framework as one allocation round sees it.
pub(super) struct Demand<'a> {
    pub framework: &'a str,
    /// The role it is offered for: its first role that is not suppressed; `None` when all
    /// are suppressed (it gets nothing).
    pub role: Option<String>,
    pub filters: &'a [Filter],
}

/// One agent's free resources, given to one framework for one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Grant {
    pub agent: usize,
    pub framework: String,
    pub role: String,
    pub resources: Quantities,
}

/// One allocation round: for each active agent with allocatable free resources (total
/// minus allocated minus offered), in agent order, the first framework in turn order that
/// wants a role and has no live filter covering them gets all of them. The turn order is
/// the frameworks sorted by id, rotated left by `turn`.
pub(super) fn plan(
    agents: &[super::Agent],
    frameworks: &[Demand<'_>],
    turn: usize,
    now: Instant,
) -> Vec<Grant> {
    let mut order: Vec<&Demand<'_>> = frameworks.iter().collect();
    if order.is_empty() {
        return Vec::new();
    }
    order.sort_by(|a, b| a.framework.cmp(b.framework));
    let n = order.len();
    order.rotate_left(turn % n);
    let mut grants = Vec::new();
    for (agent, a) in agents.iter().enumerate() {
        if a.state != AgentState::Active {
            continue;
        }
        let avail = a.total.minus(&a.allocated).minus(&a.offered);
        if !avail.allocatable() {
            continue;
        }
        let taker = order.iter().find_map(|d| {
            let role = d.role.as_ref()?;
            let filtered = d.filters.iter().any(|x| {
                x.until > now && x.agent == agent && &x.role == role && x.resources.contains(&avail)
            });
            (!filtered).then_some((d.framework, role))
        });
        if let Some((framework, role)) = taker {
            grants.push(Grant {
                agent,
                framework: framework.to_owned(),
                role: role.clone(),
                resources: avail,
            });
        }
    }
    grants
}

impl Master {
    /// Runs one allocation round and sends each framework its offers in one event.
    pub(super) fn allocate(&mut self, now: Instant) {
        for f in self.frameworks.values_mut() {
            f.filters.retain(|x| x.until > now);
        }
        let demands: Vec<Demand<'_>> = self
            .frameworks
            .values()
            .filter(|f| f.conn.is_some())
            .map(|f| Demand {
                framework: &f.id,
                role: f.roles().into_iter().find(|r| !f.suppressed.contains(r)),
                filters: &f.filters,
            })
            .collect();
        if demands.is_empty() {
            return;
        }
        let grants = plan(&self.agents, &demands, self.round_robin, now);
        self.round_robin = self.round_robin.wrapping_add(1);
        let mut batches: HashMap<String, Vec<mesos::Offer>> = HashMap::new();
        for g in grants {
            let Grant {
                agent,
                framework: fid,
                role,
                resources: avail,
            } = g;
            let refinement = self.frameworks.get(&fid).is_some_and(|f| {
                f.has_capability(mesos::framework_info::capability::Type::ReservationRefinement)
            });
            let id = format!("{}-O{}", self.info.id, self.next_offer);
            self.next_offer += 1;
            let executor_ids = self
                .executors
                .keys()
                .filter(|k| k.agent == agent && k.framework == fid)
                .map(|k| mesos::ExecutorId {
                    value: k.executor.clone(),
                })
                .collect();
            let offer = mesos::Offer {
                id: mesos::OfferId { value: id.clone() },
                framework_id: mesos::FrameworkId { value: fid.clone() },
                agent_id: mesos::AgentId {
                    value: self.agents[agent].id.clone(),
                },
                hostname: self.cfg.hostname.clone(),
                url: Some(mesos::Url {
                    scheme: "http".into(),
                    address: mesos::Address {
                        hostname: Some(self.cfg.hostname.clone()),
                        ip: Some(self.rt.addr.ip().to_string()),
                        port: i32::from(self.rt.addr.port()),
                    },
                    path: Some(format!("/slave({})", agent + 1)),
                    ..Default::default()
                }),
                resources: avail.to_proto(&role, refinement),
                executor_ids,
                allocation_info: Some(mesos::resource::AllocationInfo {
                    role: Some(role.clone()),
                }),
                ..Default::default()
            };
            self.agents[agent].offered.add(&avail);
            self.offers.insert(
                id,
                Offer {
                    framework: fid.clone(),
                    agent,
                    role,
                    resources: avail,
                },
            );
            batches.entry(fid).or_default().push(offer);
        }
        for (fid, offers) in batches {
            tracing::debug!(framework_id = %fid, offers = offers.len(), "sending offers");
            self.emit(
                &fid,
                &sched::Event {
                    r#type: Some(sched::event::Type::Offers as i32),
                    offers: Some(sched::event::Offers { offers }),
                    ..Default::default()
                },
            );
        }
    }

    /// Holds `resources` of `agent` back from the framework for `refuse` seconds.
    pub(super) fn add_filter(
        &mut self,
        fid: &str,
        agent: usize,
        role: &str,
        resources: Quantities,
        refuse: f64,
        now: Instant,
    ) {
        if resources.is_empty() || refuse <= 0.0 {
            return;
        }
        if let Some(f) = self.frameworks.get_mut(fid) {
            f.filters.push(Filter {
                agent,
                role: role.to_owned(),
                resources,
                until: now + Duration::from_secs_f64(refuse),
            });
        }
    }
}

/// `Filters.refuse_seconds` as Mesos reads it: the default when absent, negative or not
/// finite, capped at a year.
pub(super) fn refuse_seconds(f: Option<&mesos::Filters>) -> f64 {
    let r = f.and_then(|f| f.refuse_seconds).unwrap_or(DEFAULT_REFUSE);
    if r < 0.0 || !r.is_finite() {
        DEFAULT_REFUSE
    } else {
        r.min(MAX_REFUSE)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{Demand, Filter, Grant, plan, refuse_seconds};
    use crate::mesos_local::master::{Agent, AgentState};
    use crate::mesos_local::resources::Quantities;
    use crate::proto::mesos::v1 as mesos;

    fn q(spec: &str) -> Quantities {
        Quantities::parse(spec).expect("test quantities parse")
    }

    fn agent(total: &str, allocated: &str, offered: &str, state: AgentState) -> Agent {
        Agent {
            id: "A".into(),
            total: q(total),
            allocated: q(allocated),
            offered: q(offered),
            state,
        }
    }

    fn free(total: &str) -> Agent {
        agent(total, "", "", AgentState::Active)
    }

    fn grant(agent: usize, framework: &str, role: &str, resources: &str) -> Grant {
        Grant {
            agent,
            framework: framework.into(),
            role: role.into(),
            resources: q(resources),
        }
    }

    fn filter(agent: usize, role: &str, resources: &str, until: Instant) -> Filter {
        Filter {
            agent,
            role: role.into(),
            resources: q(resources),
            until,
        }
    }

    /// One framework `f` for role `*`, with the given filters.
    fn only_f(filters: &[Filter]) -> Vec<Demand<'_>> {
        vec![Demand {
            framework: "f",
            role: Some("*".into()),
            filters,
        }]
    }

    #[test]
    fn free_resources_of_active_agents_go_to_a_framework() {
        let now = Instant::now();
        let cases: Vec<(&str, Vec<Agent>, Vec<Grant>)> = vec![
            (
                "a free agent is offered whole",
                vec![free("cpus:2;mem:1024;ports:[31000-31009]")],
                vec![grant(0, "f", "*", "cpus:2;mem:1024;ports:[31000-31009]")],
            ),
            (
                "used and offered resources are not offered again",
                vec![agent(
                    "cpus:2;mem:1024;ports:[31000-31009]",
                    "cpus:1;mem:256;ports:[31000-31001]",
                    "mem:512",
                    AgentState::Active,
                )],
                vec![grant(0, "f", "*", "cpus:1;mem:256;ports:[31002-31009]")],
            ),
            (
                "a fully used agent is not offered",
                vec![agent(
                    "cpus:2;mem:1024",
                    "cpus:1;mem:1024",
                    "cpus:1",
                    AgentState::Active,
                )],
                vec![],
            ),
            (
                "leftovers below the minimum (0.01 cpus, 32 MB) are not offered",
                vec![agent(
                    "cpus:2;mem:1024",
                    "cpus:1.995;mem:1000",
                    "",
                    AgentState::Active,
                )],
                vec![],
            ),
            (
                "an unreachable agent is not offered",
                vec![
                    agent("cpus:2", "", "", AgentState::Unreachable),
                    free("cpus:1"),
                ],
                vec![grant(1, "f", "*", "cpus:1")],
            ),
            (
                "each agent is its own offer",
                vec![free("cpus:1"), free("mem:64")],
                vec![grant(0, "f", "*", "cpus:1"), grant(1, "f", "*", "mem:64")],
            ),
        ];
        for (name, agents, want) in cases {
            assert_eq!(plan(&agents, &only_f(&[]), 0, now), want, "{name}");
        }
    }

    #[test]
    fn live_filters_that_cover_what_is_free_hold_it_back() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let agents = vec![free("cpus:2;mem:1024")];
        let cases: Vec<(&str, Vec<Filter>, bool)> = vec![
            ("no filter", vec![], true),
            (
                "a live filter covering the free resources",
                vec![filter(0, "*", "cpus:2;mem:1024", later)],
                false,
            ),
            (
                "a live filter larger than what is free",
                vec![filter(0, "*", "cpus:4;mem:2048", later)],
                false,
            ),
            (
                "an expired filter (refuse_seconds elapsed)",
                vec![filter(0, "*", "cpus:2;mem:1024", now)],
                true,
            ),
            (
                "a filter smaller than what is free (more became free since)",
                vec![filter(0, "*", "cpus:1;mem:1024", later)],
                true,
            ),
            (
                "a filter on another agent",
                vec![filter(1, "*", "cpus:2;mem:1024", later)],
                true,
            ),
            (
                "a filter for another role",
                vec![filter(0, "other", "cpus:2;mem:1024", later)],
                true,
            ),
        ];
        for (name, filters, offered) in cases {
            let got = plan(&agents, &only_f(&filters), 0, now);
            assert_eq!(!got.is_empty(), offered, "{name}: {got:?}");
        }
    }

    #[test]
    fn a_filtered_or_suppressed_framework_leaves_the_agent_to_the_next() {
        let now = Instant::now();
        let agents = vec![free("cpus:2")];
        let held = [filter(0, "*", "cpus:2", now + Duration::from_secs(5))];
        let cases: Vec<(&str, Vec<Demand<'_>>, Vec<Grant>)> = vec![
            (
                "every role of the only framework is suppressed",
                vec![Demand {
                    framework: "a",
                    role: None,
                    filters: &[],
                }],
                vec![],
            ),
            (
                "a is suppressed, b is offered",
                vec![
                    Demand {
                        framework: "a",
                        role: None,
                        filters: &[],
                    },
                    Demand {
                        framework: "b",
                        role: Some("web".into()),
                        filters: &[],
                    },
                ],
                vec![grant(0, "b", "web", "cpus:2")],
            ),
            (
                "a declined the agent, b is offered",
                vec![
                    Demand {
                        framework: "a",
                        role: Some("*".into()),
                        filters: &held,
                    },
                    Demand {
                        framework: "b",
                        role: Some("*".into()),
                        filters: &[],
                    },
                ],
                vec![grant(0, "b", "*", "cpus:2")],
            ),
        ];
        for (name, demands, want) in cases {
            assert_eq!(plan(&agents, &demands, 0, now), want, "{name}");
        }
    }

    #[test]
    fn frameworks_take_turns_by_sorted_id() {
        let now = Instant::now();
        let agents = vec![free("cpus:1"), free("cpus:2")];
        // Given out of order: the turn order is by id, not by position.
        let demands = vec![
            Demand {
                framework: "b",
                role: Some("*".into()),
                filters: &[],
            },
            Demand {
                framework: "a",
                role: Some("*".into()),
                filters: &[],
            },
        ];
        let cases = [(0, "a"), (1, "b"), (2, "a"), (usize::MAX, "b")];
        for (turn, first) in cases {
            // Whole agents to one framework: the first in turn gets every agent.
            let want = vec![
                grant(0, first, "*", "cpus:1"),
                grant(1, first, "*", "cpus:2"),
            ];
            assert_eq!(plan(&agents, &demands, turn, now), want, "turn {turn}");
        }
        assert!(plan(&agents, &[], 0, now).is_empty());
    }

    #[test]
    fn refuse_seconds_defaults_and_caps() {
        let f = |r: Option<f64>| mesos::Filters { refuse_seconds: r };
        let cases = [
            (None, 5.0),
            (Some(f(None)), 5.0),
            (Some(f(Some(0.0))), 0.0),
            (Some(f(Some(30.0))), 30.0),
            (Some(f(Some(-1.0))), 5.0),
            (Some(f(Some(f64::NAN))), 5.0),
            (Some(f(Some(f64::INFINITY))), 5.0),
            (Some(f(Some(1e12))), 31_536_000.0),
        ];
        for (filters, want) in cases {
            assert_eq!(refuse_seconds(filters.as_ref()), want, "{filters:?}");
        }
    }
}
