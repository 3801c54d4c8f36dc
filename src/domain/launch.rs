//! What the scheduler hands the executor for one node, inside `TaskInfo.data` (JSON).
//!
//! Shared here because both sides must agree on it and neither may import the other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::cluster::Command;
use super::ids::ClusterId;

/// The launch payload of one node's task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeLaunch {
    pub cluster_id: ClusterId,
    pub node: String,
    /// The node's own command from the rendered spec; the executor just stays up without one.
    #[serde(default)]
    pub command: Option<Command>,
    /// Extra environment for the command, on top of the executor's own.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Allocated ports by name, also exported as `PORT_<NAME>` to the command.
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    /// The port the executor's NodeAgent gRPC server listens on (taken from the offer).
    #[serde(default)]
    pub agent_port: Option<u16>,
    /// The cluster secret every NodeAgent call must carry.
    pub secret: String,
}
