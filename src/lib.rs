//! Big Data PaaS: a native Apache Mesos framework with a REST façade.
//!
//! Module map (see `docs/ARCHITECTURE.md` for the why):
//! - [`domain`]: pure types and rules (ids, products, options, templates, lifecycle).
//! - [`registry`]: the only module that touches sled; the `Store` trait.
//! - [`api`]: the REST façade; writes desired state, never talks to Mesos.
//! - [`scheduler`]: the Mesos v1 HTTP scheduler; the single writer of observed node state.
//! - [`executor`]: the Mesos v1 executor that runs inside every node container.
//! - [`orchestrator`]: configures running clusters (templates, NodeAgent, scripts).
//! - [`metrics`]: Prometheus counters shared by the modules above.
//! - [`proto`]: every piece of generated protobuf code.
//! - [`recordio`]: the RecordIO framing of the Mesos v1 streams (scheduler and executor).
//! - [`bench`]: `paas bench` benchmarks of the hot paths.
//! - [`cli`]: the `paas products|clusters` client of the REST API.

pub mod api;
pub mod bench;
pub mod cli;
pub mod domain;
pub mod executor;
pub mod mesos_local;
pub mod metrics;
pub mod orchestrator;
pub mod proto;
pub mod recordio;
pub mod registry;
pub mod scheduler;
