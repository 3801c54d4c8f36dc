//! Building the `TaskInfo` of a node: our executor in the node's Docker image, resources cut
//! from the offers, the launch payload in `data`.
//!
//! `task_info` builds it as the generated struct; [`encode_task_info`] writes the very
//! bytes prost encodes for that struct, straight from the cluster, the node and the offers,
//! which is what an ACCEPT sends: building, encoding and dropping the struct cost about a
//! fifth of the framework's work per launched node (some forty allocations, resources
//! cloned from the offers). The struct stays the reference: a test holds the two equal.

use std::collections::BTreeMap;

#[cfg(test)]
use serde::Serialize;

use crate::domain::cluster::{Command, VolumeMode};
#[cfg(doc)]
use crate::domain::launch::NodeLaunch;
use crate::domain::{Cluster, ClusterId, Node};
use crate::proto::mesos::v1 as mesos;
use crate::registry::json;

use super::offers::Allotment;
use super::resources::{OfferedResources, Shortage};
use super::wire::{delimited, fmt_field, str_field};

/// What is fixed for every task this framework launches.
#[derive(Debug, Clone)]
pub struct TaskTemplate {
    /// Grace period between SIGTERM and SIGKILL when a node is killed.
    pub kill_grace: std::time::Duration,
}

/// A [`NodeLaunch`] as the task's `data` carries it (the executor decodes it as one): the
/// same fields in the same order, borrowed from the cluster and the node, not copied.
/// Written by [`LaunchData::write_json`]; the derive is the reference it is tested against.
#[cfg_attr(test, derive(Serialize))]
struct LaunchData<'a> {
    cluster_id: ClusterId,
    node: &'a str,
    command: &'a Option<Command>,
    env: &'a BTreeMap<String, String>,
    ports: &'a BTreeMap<String, u16>,
    agent_port: Option<u16>,
    secret: &'a str,
}

impl LaunchData<'_> {
    /// Writes the JSON the derive writes, byte for byte, with each key as one literal and
    /// each string that needs no escape copied as it is (see [`crate::registry::json`]).
    fn write_json(&self, out: &mut Vec<u8>) {
        let LaunchData {
            cluster_id,
            node,
            command,
            env,
            ports,
            agent_port,
            secret,
        } = self;
        let mut uuid = uuid::Uuid::encode_buffer();
        out.extend_from_slice(b"{\"cluster_id\":\"");
        out.extend_from_slice(cluster_id.0.hyphenated().encode_lower(&mut uuid).as_bytes());
        out.extend_from_slice(b"\",\"node\":");
        json::string(out, node);
        out.extend_from_slice(b",\"command\":");
        match command {
            Some(c) => json::command(out, c),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"env\":");
        json::object(out, *env, |out, v| json::string(out, v));
        out.extend_from_slice(b",\"ports\":");
        json::object(out, *ports, json::serde);
        out.extend_from_slice(b",\"agent_port\":");
        json::serde(out, agent_port);
        out.extend_from_slice(b",\"secret\":");
        json::string(out, secret);
        out.push(b'}');
    }
}

/// Builds the TaskInfo of `node`, placed on `agent_id` with `allotment`, cutting its resources
/// out of `offered` (the offers of that agent).
///
/// The executor id is the task id: one executor per node, so there is never an
/// ExecutorInfo to keep byte-identical across launches.
///
/// The reference for [`encode_task_info`], which writes the same bytes without building it;
/// only tests build the struct.
///
/// # Errors
/// [`Shortage`] if the offers cannot cover the placement (a planning bug).
#[cfg(test)]
pub fn task_info(
    cluster: &Cluster,
    node: &Node,
    allotment: &Allotment,
    agent_id: &str,
    offered: &mut OfferedResources,
    tpl: &TaskTemplate,
) -> Result<mesos::TaskInfo, Shortage> {
    // invariant: the driver persisted the task id before building the TaskInfo.
    let task_id = node
        .observed
        .task_id
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    // Usually one entry each of cpus, mem, disk and ports (more where an agent offers a
    // resource in pieces, as with several roles).
    let mut task_res = Vec::with_capacity(4);
    offered.scalar_into(&mut task_res, "cpus", allotment.task.cpus)?;
    offered.scalar_into(&mut task_res, "mem", allotment.task.mem)?;
    offered.scalar_into(&mut task_res, "disk", allotment.task.disk)?;
    offered.ports_into(&mut task_res, &allotment.ports)?;
    let mut exec_res = Vec::with_capacity(4);
    offered.scalar_into(&mut exec_res, "cpus", allotment.executor.cpus)?;
    offered.scalar_into(&mut exec_res, "mem", allotment.executor.mem)?;
    offered.scalar_into(&mut exec_res, "disk", allotment.executor.disk)?;
    offered.ports_into(&mut exec_res, &allotment.executor_ports)?;

    let launch = LaunchData {
        cluster_id: cluster.id,
        node: node.name.as_str(),
        command: &node.command,
        env: &node.env,
        ports: &node.observed.ports,
        agent_port: allotment.executor_ports.first().copied(),
        secret: &cluster.secret,
    };
    let label = |k: &str, v: &str| mesos::Label {
        key: k.into(),
        value: Some(v.into()),
    };
    let labels = mesos::Labels {
        labels: vec![
            label("paas.cluster_id", &cluster.id.to_string()),
            label("paas.node", node.name.as_str()),
            label(
                "paas.product",
                &format!("{}/{}", cluster.product, cluster.version),
            ),
        ],
    };
    let volumes = node
        .volumes
        .iter()
        .map(|v| mesos::Volume {
            container_path: v.container_path.clone(),
            host_path: Some(v.host_path.clone()),
            mode: match v.mode {
                VolumeMode::Rw => mesos::volume::Mode::Rw as i32,
                VolumeMode::Ro => mesos::volume::Mode::Ro as i32,
            },
            ..Default::default()
        })
        .collect();
    let executor = mesos::ExecutorInfo {
        r#type: Some(mesos::executor_info::Type::Custom as i32),
        executor_id: mesos::ExecutorId {
            value: task_id.clone(),
        },
        name: Some(format!("paas executor for {}/{}", cluster.id, node.name)),
        command: Some(mesos::CommandInfo {
            // Keep the image ENTRYPOINT (`/paas executor`): no shell, no value.
            shell: Some(false),
            ..Default::default()
        }),
        container: Some(mesos::ContainerInfo {
            r#type: mesos::container_info::Type::Docker as i32,
            docker: Some(mesos::container_info::DockerInfo {
                image: node.docker_image.clone(),
                network: Some(mesos::container_info::docker_info::Network::Host as i32),
                force_pull_image: Some(false),
                ..Default::default()
            }),
            volumes,
            ..Default::default()
        }),
        resources: exec_res,
        shutdown_grace_period: Some(mesos::DurationInfo::from_std(tpl.kill_grace)),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    Ok(mesos::TaskInfo {
        name: format!("{}-{}", cluster.product, node.name),
        task_id: mesos::TaskId { value: task_id },
        agent_id: mesos::AgentId {
            value: agent_id.to_owned(),
        },
        resources: task_res,
        executor: Some(executor),
        // invariant: LaunchData is plain data with string keys.
        data: Some(serde_json::to_vec(&launch).expect("launch payload serialises")),
        kill_policy: Some(mesos::KillPolicy {
            grace_period: Some(mesos::DurationInfo::from_std(tpl.kill_grace)),
        }),
        labels: Some(labels),
        ..Default::default()
    })
}

/// Field numbers, in mesos.proto, of the messages [`encode_task_info`] writes.
mod tag {
    /// `value` of `TaskID`, `AgentID`, `ExecutorID`.
    pub const ID_VALUE: u32 = 1;

    pub mod task_info {
        pub const NAME: u32 = 1;
        pub const TASK_ID: u32 = 2;
        pub const AGENT_ID: u32 = 3;
        pub const RESOURCES: u32 = 4;
        pub const EXECUTOR: u32 = 5;
        pub const DATA: u32 = 6;
        pub const LABELS: u32 = 10;
        pub const KILL_POLICY: u32 = 12;
    }

    pub mod executor_info {
        pub const EXECUTOR_ID: u32 = 1;
        pub const RESOURCES: u32 = 5;
        pub const COMMAND: u32 = 7;
        pub const NAME: u32 = 9;
        pub const CONTAINER: u32 = 11;
        pub const SHUTDOWN_GRACE_PERIOD: u32 = 13;
        pub const LABELS: u32 = 14;
        pub const TYPE: u32 = 15;
    }

    pub const COMMAND_INFO_SHELL: u32 = 6;

    pub mod container_info {
        pub const TYPE: u32 = 1;
        pub const VOLUMES: u32 = 2;
        pub const DOCKER: u32 = 3;
    }

    pub mod docker_info {
        pub const IMAGE: u32 = 1;
        pub const NETWORK: u32 = 2;
        pub const FORCE_PULL_IMAGE: u32 = 6;
    }

    pub mod volume {
        pub const CONTAINER_PATH: u32 = 1;
        pub const HOST_PATH: u32 = 2;
        pub const MODE: u32 = 3;
    }

    pub const DURATION_INFO_NANOSECONDS: u32 = 1;
    pub const KILL_POLICY_GRACE_PERIOD: u32 = 1;
    pub const LABELS_LABELS: u32 = 1;
    pub const LABEL_KEY: u32 = 1;
    pub const LABEL_VALUE: u32 = 2;
}

/// Appends to `buf` the encoded TaskInfo that `task_info` builds for the same arguments,
/// byte for byte, drawing the same pieces from `offered`.
///
/// Fields are written in ascending number, as prost writes them, each embedded message in
/// place (see [`delimited`]).
///
/// # Errors
/// [`Shortage`] if the offers cannot cover the placement (a planning bug); `buf` is then as
/// it was, and `offered` as `task_info` would leave it.
pub fn encode_task_info(
    buf: &mut Vec<u8>,
    cluster: &Cluster,
    node: &Node,
    allotment: &Allotment,
    agent_id: &str,
    offered: &mut OfferedResources,
    tpl: &TaskTemplate,
) -> Result<(), Shortage> {
    let start = buf.len();
    let written = write_task_info(buf, cluster, node, allotment, agent_id, offered, tpl);
    if written.is_err() {
        buf.truncate(start);
    }
    written
}

fn write_task_info(
    buf: &mut Vec<u8>,
    cluster: &Cluster,
    node: &Node,
    allotment: &Allotment,
    agent_id: &str,
    offered: &mut OfferedResources,
    tpl: &TaskTemplate,
) -> Result<(), Shortage> {
    use prost::encoding::{bool, int32, int64};
    use tag::{ID_VALUE, executor_info, task_info};

    // invariant: the driver persisted the task id before building the TaskInfo.
    let task_id = node
        .observed
        .task_id
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    // The same labels on the executor and on the task: written once, copied twice.
    let mut labels = Vec::with_capacity(128);
    let mut label = |key: &str, value: std::fmt::Arguments<'_>| {
        delimited(&mut labels, tag::LABELS_LABELS, |buf| {
            str_field(buf, tag::LABEL_KEY, key);
            fmt_field(buf, tag::LABEL_VALUE, value);
        });
    };
    label("paas.cluster_id", format_args!("{}", cluster.id));
    label("paas.node", format_args!("{}", node.name));
    label(
        "paas.product",
        format_args!("{}/{}", cluster.product, cluster.version),
    );
    let grace = mesos::DurationInfo::from_std(tpl.kill_grace).nanoseconds;
    let duration = |buf: &mut Vec<u8>, field: u32| {
        delimited(buf, field, |buf| {
            int64::encode(tag::DURATION_INFO_NANOSECONDS, &grace, buf);
        });
    };

    fmt_field(
        buf,
        task_info::NAME,
        format_args!("{}-{}", cluster.product, node.name),
    );
    delimited(buf, task_info::TASK_ID, |buf| {
        str_field(buf, ID_VALUE, &task_id);
    });
    delimited(buf, task_info::AGENT_ID, |buf| {
        str_field(buf, ID_VALUE, agent_id);
    });
    let field = task_info::RESOURCES;
    offered.encode_scalar(buf, field, "cpus", allotment.task.cpus)?;
    offered.encode_scalar(buf, field, "mem", allotment.task.mem)?;
    offered.encode_scalar(buf, field, "disk", allotment.task.disk)?;
    offered.encode_ports(buf, field, &allotment.ports)?;
    delimited(buf, task_info::EXECUTOR, |buf| -> Result<(), Shortage> {
        delimited(buf, executor_info::EXECUTOR_ID, |buf| {
            str_field(buf, ID_VALUE, &task_id);
        });
        let field = executor_info::RESOURCES;
        offered.encode_scalar(buf, field, "cpus", allotment.executor.cpus)?;
        offered.encode_scalar(buf, field, "mem", allotment.executor.mem)?;
        offered.encode_scalar(buf, field, "disk", allotment.executor.disk)?;
        offered.encode_ports(buf, field, &allotment.executor_ports)?;
        // Keep the image ENTRYPOINT (`/paas executor`): no shell, no value.
        delimited(buf, executor_info::COMMAND, |buf| {
            bool::encode(tag::COMMAND_INFO_SHELL, &false, buf);
        });
        fmt_field(
            buf,
            executor_info::NAME,
            format_args!("paas executor for {}/{}", cluster.id, node.name),
        );
        delimited(buf, executor_info::CONTAINER, |buf| {
            write_container(buf, node)
        });
        duration(buf, executor_info::SHUTDOWN_GRACE_PERIOD);
        delimited(buf, executor_info::LABELS, |buf| {
            buf.extend_from_slice(&labels);
        });
        let custom = mesos::executor_info::Type::Custom as i32;
        int32::encode(executor_info::TYPE, &custom, buf);
        Ok(())
    })?;
    let launch = LaunchData {
        cluster_id: cluster.id,
        node: node.name.as_str(),
        command: &node.command,
        env: &node.env,
        ports: &node.observed.ports,
        agent_port: allotment.executor_ports.first().copied(),
        secret: &cluster.secret,
    };
    delimited(buf, task_info::DATA, |buf| launch.write_json(buf));
    delimited(buf, task_info::LABELS, |buf| {
        buf.extend_from_slice(&labels);
    });
    delimited(buf, task_info::KILL_POLICY, |buf| {
        duration(buf, tag::KILL_POLICY_GRACE_PERIOD);
    });
    Ok(())
}

/// The executor's `ContainerInfo`: the node's Docker image on the host network, its volumes.
fn write_container(buf: &mut Vec<u8>, node: &Node) {
    use mesos::container_info::{Type, docker_info::Network};
    use prost::encoding::{bool, int32};
    use tag::{container_info, docker_info, volume};

    int32::encode(container_info::TYPE, &(Type::Docker as i32), buf);
    for v in &node.volumes {
        delimited(buf, container_info::VOLUMES, |buf| {
            str_field(buf, volume::CONTAINER_PATH, &v.container_path);
            str_field(buf, volume::HOST_PATH, &v.host_path);
            let mode = match v.mode {
                VolumeMode::Rw => mesos::volume::Mode::Rw,
                VolumeMode::Ro => mesos::volume::Mode::Ro,
            };
            int32::encode(volume::MODE, &(mode as i32), buf);
        });
    }
    delimited(buf, container_info::DOCKER, |buf| {
        str_field(buf, docker_info::IMAGE, &node.docker_image);
        int32::encode(docker_info::NETWORK, &(Network::Host as i32), buf);
        bool::encode(docker_info::FORCE_PULL_IMAGE, &false, buf);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::launch::NodeLaunch;
    use crate::domain::{Name, TaskId, Timestamp};
    use crate::proto::mesos::v1::resource::{AllocationInfo, ReservationInfo};
    use crate::proto::mesos::v1::{Resource, value};
    use crate::scheduler::offers::Scalars;
    use proptest::prelude::*;
    use prost::Message;
    use serde_json::json;

    /// An offered entry with the metadata a launch must carry over unchanged; also what a
    /// task takes of it (the same entry, with the amount taken).
    fn offered(name: &str, scalar: Option<f64>, ranges: &[(u64, u64)]) -> Resource {
        Resource {
            name: name.into(),
            r#type: if scalar.is_some() {
                value::Type::Scalar as i32
            } else {
                value::Type::Ranges as i32
            },
            scalar: scalar.map(|value| value::Scalar { value }),
            ranges: (!ranges.is_empty()).then(|| value::Ranges {
                range: ranges
                    .iter()
                    .map(|&(begin, end)| value::Range { begin, end })
                    .collect(),
            }),
            allocation_info: Some(AllocationInfo {
                role: Some("paas".into()),
            }),
            reservations: vec![ReservationInfo {
                r#type: Some(1),
                role: Some("paas".into()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// The whole TaskInfo of a node, field by field: what Mesos and the executor receive.
    #[test]
    fn a_nodes_task_info_is_pinned_field_by_field() {
        let mut c = Cluster::sample(
            json!({"n1": {
                "docker_image": "reg/img:1",
                "cpu": 0.5, "mem": 64, "disk": 10,
                "ports": ["http"],
                "env": {"K": "v"},
                "command": ["/bin/run", "-x"],
                "volumes": [
                    {"container_path": "/data", "host_path": "/srv/d"},
                    {"container_path": "/etc/x", "host_path": "/x", "mode": "ro"}
                ]
            }}),
            Timestamp("t0".into()),
        );
        c.secret = "s3".into();
        let id = c.id;
        let node = &mut c.nodes[0];
        node.observed.task_id = Some(TaskId {
            cluster: id,
            node: Name::parse("n1").unwrap(),
            attempt: 2,
        });
        node.observed.ports = [("http".to_owned(), 31000)].into();
        let node = c.nodes[0].clone();
        let allotment = Allotment {
            task: Scalars {
                cpus: 0.5,
                mem: 64.0,
                disk: 10.0,
            },
            executor: Scalars {
                cpus: 0.1,
                mem: 32.0,
                disk: 0.0,
            },
            ports: vec![31000],
            executor_ports: vec![31001],
        };
        let resources_offered = || {
            vec![
                offered("cpus", Some(4.0), &[]),
                offered("mem", Some(1024.0), &[]),
                offered("disk", Some(100.0), &[]),
                offered("ports", None, &[(31000, 31005)]),
            ]
        };
        let mut resources = OfferedResources::new(resources_offered());
        let tpl = TaskTemplate {
            kill_grace: std::time::Duration::from_millis(2500),
        };
        let mut twin = OfferedResources::new(resources_offered());
        let got = task_info(&c, &node, &allotment, "agent-7", &mut resources, &tpl).unwrap();
        let mut bytes = Vec::new();
        encode_task_info(
            &mut bytes, &c, &node, &allotment, "agent-7", &mut twin, &tpl,
        )
        .unwrap();
        assert_eq!(
            bytes,
            got.encode_to_vec(),
            "the writer sends what the struct encodes"
        );

        let task_id = format!("{id}.n1.2");
        let labels = mesos::Labels {
            labels: [
                ("paas.cluster_id", id.to_string()),
                ("paas.node", "n1".to_owned()),
                ("paas.product", "p/1".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| mesos::Label {
                key: k.into(),
                value: Some(v),
            })
            .collect(),
        };
        let grace = mesos::DurationInfo {
            nanoseconds: 2_500_000_000,
        };
        let data = serde_json::to_vec(&NodeLaunch {
            cluster_id: id,
            node: "n1".into(),
            command: node.command.clone(),
            env: [("K".to_owned(), "v".to_owned())].into(),
            ports: [("http".to_owned(), 31000)].into(),
            agent_port: Some(31001),
            secret: "s3".into(),
        })
        .unwrap();
        let want = mesos::TaskInfo {
            name: "p-n1".into(),
            task_id: mesos::TaskId {
                value: task_id.clone(),
            },
            agent_id: mesos::AgentId {
                value: "agent-7".into(),
            },
            resources: vec![
                offered("cpus", Some(0.5), &[]),
                offered("mem", Some(64.0), &[]),
                offered("disk", Some(10.0), &[]),
                offered("ports", None, &[(31000, 31000)]),
            ],
            executor: Some(mesos::ExecutorInfo {
                r#type: Some(mesos::executor_info::Type::Custom as i32),
                executor_id: mesos::ExecutorId { value: task_id },
                name: Some(format!("paas executor for {id}/n1")),
                command: Some(mesos::CommandInfo {
                    shell: Some(false),
                    ..Default::default()
                }),
                container: Some(mesos::ContainerInfo {
                    r#type: mesos::container_info::Type::Docker as i32,
                    docker: Some(mesos::container_info::DockerInfo {
                        image: "reg/img:1".into(),
                        network: Some(mesos::container_info::docker_info::Network::Host as i32),
                        force_pull_image: Some(false),
                        ..Default::default()
                    }),
                    volumes: vec![
                        mesos::Volume {
                            container_path: "/data".into(),
                            host_path: Some("/srv/d".into()),
                            mode: mesos::volume::Mode::Rw as i32,
                            ..Default::default()
                        },
                        mesos::Volume {
                            container_path: "/etc/x".into(),
                            host_path: Some("/x".into()),
                            mode: mesos::volume::Mode::Ro as i32,
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }),
                // No executor disk: a zero draw takes no piece.
                resources: vec![
                    offered("cpus", Some(0.1), &[]),
                    offered("mem", Some(32.0), &[]),
                    offered("ports", None, &[(31001, 31001)]),
                ],
                shutdown_grace_period: Some(grace),
                labels: Some(labels.clone()),
                ..Default::default()
            }),
            data: Some(data),
            kill_policy: Some(mesos::KillPolicy {
                grace_period: Some(grace),
            }),
            labels: Some(labels),
            ..Default::default()
        };
        assert_eq!(got, want);
        // What the task took is gone from the offers.
        assert!(resources.scalar("cpus", 3.401).is_err());
        assert!(resources.scalar("cpus", 3.4).is_ok());
    }

    /// One offered entry of `name` with `amount` thousandths (or `ranges` for ports) and
    /// metadata as offers carry it: a role, allocation info, reservations, revocability.
    fn entry(
        name: &'static str,
        amount: u64,
        ranges: Vec<(u64, u64)>,
        role: Option<&'static str>,
        allocated: Option<&'static str>,
        reservations: Vec<(Option<i32>, Option<&'static str>, Option<&'static str>)>,
        revocable: bool,
    ) -> Resource {
        let mut r = offered(
            name,
            ranges.is_empty().then_some(amount as f64 / 1000.0),
            &ranges,
        );
        r.role = role.map(Into::into);
        r.allocation_info = allocated.map(|role| AllocationInfo {
            role: Some(role.into()),
        });
        r.reservations = reservations
            .into_iter()
            .map(|(r#type, role, principal)| ReservationInfo {
                r#type,
                role: role.map(Into::into),
                principal: principal.map(Into::into),
                labels: principal.map(|p| mesos::Labels {
                    labels: vec![mesos::Label {
                        key: "by".into(),
                        value: Some(p.into()),
                    }],
                }),
            })
            .collect();
        r.revocable = revocable.then(Default::default);
        r
    }

    /// Entries of `name`: one to three pieces, as an agent offering several roles has them.
    fn entries(name: &'static str) -> impl Strategy<Value = Vec<Resource>> {
        let role = prop::option::of(prop::sample::select(vec!["*", "paas", "web"]));
        let reservation = (
            prop::option::of(0i32..3),
            prop::option::of(prop::sample::select(vec!["paas", "web/x"])),
            prop::option::of(prop::sample::select(vec!["ops", "me"])),
        );
        let one = (
            0u64..3000,
            prop::collection::vec((0u64..3, 0u64..8), 1..4),
            role.clone(),
            role,
            prop::collection::vec(reservation, 0..3),
            any::<bool>(),
        )
            .prop_map(move |(amount, spans, role, alloc, res, revocable)| {
                // Ports as ranges from 31000 up, disjoint within the entry.
                let ranges = if name == "ports" {
                    let mut begin = 31000;
                    spans
                        .into_iter()
                        .map(|(gap, len)| {
                            let r = (begin + gap, begin + gap + len);
                            begin = r.1 + 2;
                            r
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                entry(name, amount, ranges, role, alloc, res, revocable)
            });
        prop::collection::vec(one, 1..4)
    }

    fn offers() -> impl Strategy<Value = Vec<Resource>> {
        (
            entries("cpus"),
            entries("mem"),
            entries("disk"),
            entries("ports"),
        )
            .prop_map(|(cpus, mem, disk, ports)| {
                // Interleaved as several offers list them.
                let mut all = Vec::new();
                for i in 0..3 {
                    for group in [&cpus, &ports, &mem, &disk] {
                        all.extend(group.get(i).cloned());
                    }
                }
                all
            })
    }

    /// A node's spec as a template has it: ports, env, a shell or argv command, volumes.
    fn node_spec() -> impl Strategy<Value = serde_json::Value> {
        let command = prop_oneof![
            Just(serde_json::Value::Null),
            Just(json!("echo \"$HOME\" && run")),
            Just(json!(["/bin/run", "--x", "ü"])),
        ];
        let volume = (
            prop::sample::select(vec!["/data", "/etc/conf"]),
            prop::sample::select(vec!["/srv/a", "/x"]),
            any::<bool>(),
        )
            .prop_map(|(c, h, ro)| {
                json!({"container_path": c, "host_path": h, "mode": if ro { "ro" } else { "rw" }})
            });
        (
            prop::sample::subsequence(vec!["http", "rpc", "admin"], 0..3),
            prop::collection::btree_map(
                prop::sample::select(vec!["A", "PATH", "K"]),
                prop::sample::select(vec!["1", "x y", "\"q\""]),
                0..3,
            ),
            command,
            prop::collection::vec(volume, 0..3),
            prop::sample::select(vec![
                "reg/img:1",
                "a-much-longer-registry.example.com/team/image:2026",
            ]),
        )
            .prop_map(|(ports, env, command, volumes, image)| {
                let mut n = json!({
                    "docker_image": image, "cpu": 1, "mem": 8,
                    "ports": ports, "env": env, "volumes": volumes
                });
                if !command.is_null() {
                    n["command"] = command;
                }
                n
            })
    }

    /// What a node draws: amounts (thousandths) that the offers mostly cover, executor
    /// disk often zero, ports that are mostly offered.
    fn allotment() -> impl Strategy<Value = Allotment> {
        let milli = |m: u64| m as f64 / 1000.0;
        let ports = |from: u16, to: u16, most: usize| {
            prop::sample::subsequence((from..to).collect::<Vec<_>>(), 0..most)
        };
        (
            (0u64..1500, 0u64..1500, 0u64..1500),
            (0u64..300, 0u64..300, prop_oneof![Just(0u64), 1u64..300]),
            ports(31000, 31010, 4),
            ports(31010, 31024, 3),
        )
            .prop_map(move |(task, exec, ports, executor_ports)| Allotment {
                task: Scalars {
                    cpus: milli(task.0),
                    mem: milli(task.1),
                    disk: milli(task.2),
                },
                executor: Scalars {
                    cpus: milli(exec.0),
                    mem: milli(exec.1),
                    disk: milli(exec.2),
                },
                ports,
                executor_ports,
            })
    }

    proptest! {
        /// The launch payload is written byte for byte as its derive writes it, whatever
        /// the strings hold (quotes, backslashes, control characters, non-ASCII).
        #[test]
        fn the_launch_payload_is_written_as_the_derive_writes_it(
            node in ".*",
            argv in prop::option::of(prop_oneof![
                ".*".prop_map(Command::Shell),
                prop::collection::vec(".*", 0..3).prop_map(Command::Argv),
            ]),
            env in prop::collection::btree_map(".*", ".*", 0..3),
            ports in prop::collection::btree_map(".*", any::<u16>(), 0..3),
            agent_port in prop::option::of(any::<u16>()),
            secret in ".*",
        ) {
            let launch = LaunchData {
                cluster_id: ClusterId::generate(),
                node: &node,
                command: &argv,
                env: &env,
                ports: &ports,
                agent_port,
                secret: &secret,
            };
            let mut out = Vec::new();
            launch.write_json(&mut out);
            prop_assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&launch).unwrap()
            );
        }
    }

    proptest! {
        // Most draws succeed; a thousand cases try each kind of shortage many times too.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Node after node from the same offers, the writer sends exactly what the struct
        /// encodes, fails exactly where it fails, and leaves the offers as it leaves them.
        #[test]
        fn the_writer_sends_what_the_struct_encodes(
            offered in offers(),
            nodes in prop::collection::vec((node_spec(), allotment(), any::<bool>()), 1..4),
            grace_ms in prop_oneof![Just(0u64), 1u64..100_000],
        ) {
            let specs: serde_json::Map<String, serde_json::Value> = nodes
                .iter()
                .enumerate()
                .map(|(i, (spec, _, _))| (format!("n{i}"), spec.clone()))
                .collect();
            let mut c = Cluster::sample(specs.into(), Timestamp("t0".into()));
            c.secret = "s3".into();
            let id = c.id;
            let tpl = TaskTemplate {
                kill_grace: std::time::Duration::from_millis(grace_ms),
            };
            let mut reference = OfferedResources::new(offered.clone());
            let mut direct = OfferedResources::new(offered);
            for (i, (_, allotment, recorded)) in nodes.iter().enumerate() {
                let node = &mut c.nodes[i];
                // A node without a task id launches under an empty one in both.
                if *recorded {
                    node.observed.task_id = Some(TaskId {
                        cluster: id,
                        node: node.name.clone(),
                        attempt: i as u32 + 1,
                    });
                }
                node.observed.ports = node
                    .port_names
                    .iter()
                    .cloned()
                    .zip(allotment.ports.iter().copied())
                    .collect();
                let node = &c.nodes[i];
                let want = task_info(&c, node, allotment, "agent-1", &mut reference, &tpl);
                let mut got = vec![7];
                let wrote =
                    encode_task_info(&mut got, &c, node, allotment, "agent-1", &mut direct, &tpl);
                match want {
                    Ok(task) => {
                        prop_assert_eq!(wrote, Ok(()));
                        let want = task.encode_to_vec();
                        prop_assert_eq!(&got[1..], want.as_slice());
                    }
                    Err(shortage) => {
                        prop_assert_eq!(wrote, Err(shortage));
                        prop_assert_eq!(got, vec![7], "a refused node writes nothing");
                    }
                }
            }
            prop_assert_eq!(reference.left(), direct.left(), "what is left of the offers");
        }
    }
}
