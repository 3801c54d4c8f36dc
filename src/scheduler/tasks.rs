//! Building the `TaskInfo` of a node: our executor in the node's Docker image, resources cut
//! from the offers, the launch payload in `data`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::domain::cluster::{Command, VolumeMode};
#[cfg(doc)]
use crate::domain::launch::NodeLaunch;
use crate::domain::{Cluster, ClusterId, Node};
use crate::proto::mesos::v1 as mesos;

use super::offers::Allotment;
use super::resources::{OfferedResources, Shortage};

/// What is fixed for every task this framework launches.
#[derive(Debug, Clone)]
pub struct TaskTemplate {
    /// Grace period between SIGTERM and SIGKILL when a node is killed.
    pub kill_grace: std::time::Duration,
}

/// A [`NodeLaunch`] as the task's `data` carries it (the executor decodes it as one): the
/// same fields in the same order, borrowed from the cluster and the node, not copied.
#[derive(Serialize)]
struct LaunchData<'a> {
    cluster_id: ClusterId,
    node: &'a str,
    command: &'a Option<Command>,
    env: &'a BTreeMap<String, String>,
    ports: &'a BTreeMap<String, u16>,
    agent_port: Option<u16>,
    secret: &'a str,
}

/// Builds the TaskInfo of `node`, placed on `agent_id` with `allotment`, cutting its resources
/// out of `offered` (the offers of that agent).
///
/// The executor id is the task id: one executor per node, so there is never an
/// ExecutorInfo to keep byte-identical across launches.
///
/// # Errors
/// [`Shortage`] if the offers cannot cover the placement (a planning bug).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::launch::NodeLaunch;
    use crate::domain::{Name, TaskId, Timestamp};
    use crate::proto::mesos::v1::resource::{AllocationInfo, ReservationInfo};
    use crate::proto::mesos::v1::{Resource, value};
    use crate::scheduler::offers::Scalars;
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
        let mut resources = OfferedResources::new(vec![
            offered("cpus", Some(4.0), &[]),
            offered("mem", Some(1024.0), &[]),
            offered("disk", Some(100.0), &[]),
            offered("ports", None, &[(31000, 31005)]),
        ]);
        let tpl = TaskTemplate {
            kill_grace: std::time::Duration::from_millis(2500),
        };
        let got = task_info(&c, &node, &allotment, "agent-7", &mut resources, &tpl).unwrap();

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
}
