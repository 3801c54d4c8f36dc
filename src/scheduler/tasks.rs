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
