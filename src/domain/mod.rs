//! Pure domain types and rules: ids, products, the option schema and its validation, the
//! cluster spec rendered from a template, cluster and node records, and the lifecycle state
//! machine.
//!
//! Nothing here does I/O or knows sled, hyper, protobuf or tokio. Callers pass the clock in
//! ([`Timestamp`]) so every function stays deterministic and table-testable.

pub mod cluster;
pub mod heal;
pub mod ids;
pub mod launch;
pub mod launch_request;
pub mod lifecycle;
pub mod options;
pub mod placement;
pub mod product;
pub mod template;
pub mod update;
pub mod usage;

pub use cluster::{
    Cluster, ConfigureProgress, Desired, HistoryEntry, Node, NodeObserved, ScriptState, Service,
};
pub use ids::{AgentId, ClusterId, Name, NameError, TaskId};
pub use lifecycle::{ClusterStatus, NodeStatus};
pub use product::{BundleFiles, Part, Product};
pub use usage::Usage;

use serde::{Deserialize, Serialize};

/// An RFC 3339 UTC timestamp with millisecond precision, e.g. `2026-11-25T16:00:00.123Z`.
///
/// Kept as text because that is what every reader (API users, logs, `/events`) wants, and
/// RFC 3339 strings of one precision sort chronologically.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub String);

impl Timestamp {
    /// The current wall-clock time. The only clock read in the domain; callers use it at the
    /// edge and pass the value in.
    pub fn now() -> Self {
        Self(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string())
    }

    /// The timestamp `ms` milliseconds after the Unix epoch.
    pub fn from_millis(ms: u64) -> Self {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        Self(humantime::format_rfc3339_millis(t).to_string())
    }

    /// Milliseconds since the Unix epoch; `None` if the text is not an RFC 3339 time.
    pub fn millis(&self) -> Option<u64> {
        let t = humantime::parse_rfc3339(&self.0).ok()?;
        let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
        u64::try_from(d.as_millis()).ok()
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
