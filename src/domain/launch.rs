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

/// What the executor reports in the `data` of its TASK_RUNNING status (JSON): the pin of the
/// NodeAgent's TLS certificate. It travels through Mesos, so the orchestrator learns it
/// without trusting the network it then talks over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRunning {
    /// Lowercase hex SHA-256 of the NodeAgent's certificate (DER).
    pub agent_cert_sha256: String,
}

impl NodeRunning {
    /// Reads a TASK_RUNNING `data`; anything else (empty, another format) is `None`.
    pub fn parse(data: &[u8]) -> Option<Self> {
        let r: Self = serde_json::from_slice(data).ok()?;
        let ok = r.agent_cert_sha256.len() == 64
            && r.agent_cert_sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then_some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_data_needs_a_sha256_in_lowercase_hex() {
        let good = format!(r#"{{"agent_cert_sha256":"{}"}}"#, "ab".repeat(32));
        assert_eq!(
            NodeRunning::parse(good.as_bytes()).map(|r| r.agent_cert_sha256),
            Some("ab".repeat(32))
        );
        for bad in [
            String::new(),
            "{}".to_owned(),
            format!(r#"{{"agent_cert_sha256":"{}"}}"#, "AB".repeat(32)),
            format!(r#"{{"agent_cert_sha256":"{}"}}"#, "ab".repeat(31)),
            format!(r#"{{"agent_cert_sha256":"{}"}}"#, "zz".repeat(32)),
        ] {
            assert_eq!(NodeRunning::parse(bad.as_bytes()), None, "{bad}");
        }
    }
}
