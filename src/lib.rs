//! Big Data PaaS: a native Apache Mesos framework with a REST façade.
//!
//! Module map (`docs/ARCHITECTURE.md` has the allowed and forbidden dependency arrows, who
//! writes which part of a cluster record, and the day-2 loop):
//! - [`domain`]: pure types and rules: ids, products, options, templates, the cluster spec
//!   and record, the lifecycle state machine, self-healing decisions, day-2 updates. No I/O.
//! - [`registry`]: the only module that touches sled; the `Store` trait and its in-memory twin.
//! - [`api`]: the REST façade; writes desired state, never talks to Mesos or imports the
//!   scheduler.
//! - [`scheduler`]: the Mesos v1 HTTP scheduler: pure offer evaluation with gang placement,
//!   launches (persisted before ACCEPT), task updates, healing, reconciliation. The single
//!   writer of observed node state.
//! - [`orchestrator`]: configures clusters (templates, NodeAgent, scripts), again after a heal
//!   or an update, and drains the nodes an update removes; never talks to Mesos.
//! - [`executor`]: the Mesos v1 executor that runs inside every node container, its NodeAgent
//!   server, and `paas node-tool`; never imports the api or the scheduler.
//! - [`mesos_local`]: the embedded one-machine Mesos (master, agents, containerizers) that
//!   `paas serve` starts without `--master`; only `main` and [`bench`](mod@bench) import it.
//! - [`metrics`]: Prometheus counters shared by the modules above.
//! - [`logging`]: the server's log lines to stderr, written in batches by one thread.
//! - [`proto`]: every piece of generated protobuf code.
//! - [`recordio`]: the RecordIO framing of the Mesos v1 streams (scheduler, executor,
//!   mesos-local).
//! - [`bench`](mod@bench): `paas bench` benchmarks of the hot paths.
//! - [`cli`]: the `paas products|clusters` client of the REST API (HTTP only).

pub mod api;
pub mod bench;
pub mod bundle;
pub mod cli;
pub mod domain;
pub mod executor;
pub mod logging;
pub mod memory;
pub mod mesos_local;
pub mod metrics;
pub mod orchestrator;
pub mod procs;
pub mod proto;
pub mod recordio;
pub mod registry;
pub mod scheduler;
