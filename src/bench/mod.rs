//! `paas bench …`: benchmarks of the hot paths that print numbers (never timed assertions).
//!
//! - `registry`: durable cluster writes (create, then one status update per node, as the
//!   scheduler does) with concurrent writers sharing fsyncs, on a real sled directory.
//! - `offers`: pure offer evaluation at scale.
//! - `provision`: whole launches on simulated agents in another process (see [`provision`]).
//! - `api`: `GET /clusters/{id}` against a bare hyper server with the same bytes ([`api`]).
//! - `restart` and `launches`: a child server on a big store ([`restart`]);
//!   `restart --master-local`: a crash and restart against a master that still runs every
//!   node, timed until every task is reconciled ([`failover`]).
//! - `mesos`: the reference product on a real Mesos master and agent against a minimal
//!   scheduler and a bare `docker run` ([`mesos`]).
//!
//! Servers under measurement run as child processes ([`child`]), stopped by their PID at
//! the end, on error and on Ctrl-C. Nothing here asserts a time.

pub mod api;
pub mod child;
pub mod failover;
pub mod load;
pub mod mesos;
pub mod provision;
pub mod restart;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde_json::{Map, json};

use crate::domain::cluster::ClusterSpec;
use crate::domain::{Cluster, ClusterId, Name, NodeStatus, Product, Timestamp};
use crate::registry::{SledStore, Store, StoreError, Update};
use crate::scheduler::offers::{self, ExecutorOverhead, NodeNeed, OfferView};

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Durable registry writes on sled: cluster creates and per-node status updates.
    Registry {
        /// Clusters to write.
        #[arg(long, default_value_t = 200)]
        clusters: usize,
        /// Nodes per cluster.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// Concurrent writers.
        #[arg(long, default_value_t = 16)]
        writers: usize,
    },
    /// Launches through the REST API of a framework in this process onto simulated agents
    /// in another one: nodes running per second, POST → all-running latency, and the
    /// framework's CPU per node.
    Provision(provision::Options),
    /// `GET /clusters/{id}` of `paas serve` against a bare hyper server answering the same
    /// bytes, with the same client in the same run: req/s of each and their ratio.
    Api {
        /// Nodes of the reference cluster served (3: about 3.4 KB, as in issue 12).
        #[arg(long, default_value_t = 3)]
        size: usize,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Seconds of each measurement.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Measurements of each server, alternating.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
    /// Writes a store of `--nodes` nodes (10 per cluster), then times `paas serve --master
    /// none` on it until it serves, and prints its idle RSS.
    Restart {
        #[arg(long, default_value_t = 100_000)]
        nodes: usize,
        /// Concurrent writers while the store is written.
        #[arg(long, default_value_t = 16)]
        writers: usize,
        /// Write the store into this directory (which must not exist yet) and leave it
        /// there, to run `paas serve --data <DIR>/data` on it later.
        #[arg(long)]
        keep: Option<std::path::PathBuf>,
        /// Instead: restart against a master that still runs every node. A child `paas
        /// serve` launches `--nodes` nodes on a child mesos-local (simulated agents) until
        /// every cluster is ready, is killed (SIGKILL) and started again on its data; timed
        /// until it serves and until every task is reconciled.
        #[arg(long, conflicts_with = "keep")]
        master_local: bool,
    },
    /// Durable launches (POST) against `paas serve --master none`: launches/s, then the
    /// server's RSS, `GET /clusters` and `/metrics` on what they made.
    Launches {
        #[arg(long, default_value_t = 35_000)]
        count: u64,
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Nodes per launched reference cluster.
        #[arg(long, default_value_t = 2)]
        size: usize,
        /// Launch as a user with a quota, roomy enough for every launch, so that each
        /// launch runs the quota check against what the user already holds.
        #[arg(long)]
        quota: bool,
    },
    /// The reference product at size 10 on a real Mesos master with Docker: POST → every
    /// node RUNNING of `paas serve`, against a minimal scheduler launching the same tasks
    /// and a bare `docker run`, alternating; medians and the ratio ours / minimal.
    Mesos(mesos::Options),
    /// The bare hyper server of `bench api` (run by it as a child).
    #[command(hide = true)]
    BareServer {
        /// The bytes to answer.
        #[arg(long)]
        body: std::path::PathBuf,
    },
    /// Offer evaluation: place pending nodes on offers.
    Offers {
        #[arg(long, default_value_t = 1000)]
        offers: usize,
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
}

/// Errors of a benchmark run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("store")]
    Store(#[from] StoreError),
    #[error("temporary directory")]
    Io(#[from] std::io::Error),
    #[error("provision")]
    Provision(#[from] provision::ProvisionError),
    #[error("a child process")]
    Child(#[from] child::ChildError),
    #[error("{0}")]
    Setup(String),
    #[error("interrupted (Ctrl-C); child processes stopped")]
    Interrupted,
}

/// Runs one benchmark and prints its numbers. Ctrl-C drops the run, which stops its child
/// processes.
///
/// # Errors
/// [`BenchError`] if something cannot be set up, or [`BenchError::Interrupted`].
pub async fn run(cmd: BenchCmd) -> Result<(), BenchError> {
    tokio::select! {
        r = run_one(cmd) => r,
        _ = tokio::signal::ctrl_c() => Err(BenchError::Interrupted),
    }
}

async fn run_one(cmd: BenchCmd) -> Result<(), BenchError> {
    match cmd {
        BenchCmd::Provision(o) => Ok(provision::run(o).await?),
        BenchCmd::Mesos(o) => mesos::run(o).await,
        BenchCmd::Api {
            size,
            connections,
            seconds,
            rounds,
        } => {
            api::run(api::Options {
                size,
                connections,
                duration: Duration::from_secs(seconds),
                rounds,
            })
            .await
        }
        BenchCmd::Restart {
            master_local: true,
            nodes,
            ..
        } => failover::run(nodes).await,
        BenchCmd::Restart {
            nodes,
            writers,
            keep,
            ..
        } => restart::restart(nodes, writers, keep).await,
        BenchCmd::Launches {
            count,
            connections,
            size,
            quota,
        } => restart::launches(count, connections, size, quota).await,
        BenchCmd::BareServer { body } => api::bare_server(&body).await,
        BenchCmd::Registry {
            clusters,
            nodes,
            writers,
        } => registry(clusters, nodes, writers),
        BenchCmd::Offers {
            offers,
            nodes,
            rounds,
        } => {
            offer_eval(offers, nodes, rounds);
            Ok(())
        }
    }
}

fn cluster(nodes: usize) -> Cluster {
    let spec: Map<String, serde_json::Value> = (0..nodes)
        .map(|i| (format!("node{i}"), json!({"docker_image": "paas-node:latest", "cpu": 0.1, "mem": 64, "ports": ["http"], "services": ["s"]})))
        .collect();
    // invariant: the spec above is valid by construction.
    let spec = ClusterSpec::parse(&json!({"nodes": spec, "services": {"s": {}}}).to_string())
        .expect("valid spec");
    Cluster::new(
        ClusterId::generate(),
        "bench".into(),
        Name::parse("bench").expect("name"),
        Name::parse("1").expect("name"),
        Map::new(),
        spec,
        "secret".into(),
        Timestamp::now(),
    )
}

/// The product the clusters of [`cluster`] belong to.
fn product() -> Product {
    Product::new(
        Name::parse("bench").expect("name"),
        Name::parse("1").expect("name"),
        Timestamp::now(),
    )
}

fn registry(clusters: usize, nodes: usize, writers: usize) -> Result<(), BenchError> {
    let dir = temp_dir("registry")?;
    let _cleanup = RemoveDir(Some(dir.clone()));
    let store = Arc::new(SledStore::open(&dir)?);
    store.create_product(&product())?;
    let records: Vec<Cluster> = (0..clusters).map(|_| cluster(nodes)).collect();
    let bytes = serde_json::to_vec(&records[0])
        .map(|v| v.len())
        .unwrap_or(0);
    println!(
        "registry: {clusters} clusters × {nodes} nodes ({bytes} bytes per record), {writers} writers, sled in {}",
        dir.display()
    );

    // One cluster alone: what a single launch costs (the original took 121 s for 200 nodes).
    let single = Instant::now();
    let one = cluster(nodes);
    store.create_cluster(one.clone())?;
    println!(
        "  one {nodes}-node cluster, durable: {:.2} ms",
        single.elapsed().as_secs_f64() * 1e3
    );

    let (creates, wall) = parallel(&records, writers, |c| store.create_cluster(c.clone()))?;
    report("cluster creates (durable)", &creates);
    println!(
        "    {:.0} creates/s ({} in {:.2} s)",
        clusters as f64 / wall.as_secs_f64(),
        clusters,
        wall.as_secs_f64()
    );
    let (updates, wall) = parallel(&records, writers, |c| {
        for i in 0..c.nodes.len() {
            store.update_cluster(c.id, &mut |rec| {
                rec.nodes[i].observed.status = NodeStatus::Running;
                Ok(Update::Write)
            })?;
        }
        Ok(())
    })?;
    let per_update: Vec<Duration> = updates.iter().map(|d| *d / nodes.max(1) as u32).collect();
    report(
        "node status updates (durable; the node record and the head each)",
        &per_update,
    );
    let total = clusters * nodes;
    println!(
        "    {:.0} updates/s ({} in {:.2} s)",
        total as f64 / wall.as_secs_f64(),
        total,
        wall.as_secs_f64()
    );
    Ok(())
}

/// Runs `f` over `items` on `writers` threads; returns each call's latency and the wall time.
fn parallel<T: Sync>(
    items: &[T],
    writers: usize,
    f: impl Fn(&T) -> Result<(), StoreError> + Sync,
) -> Result<(Vec<Duration>, Duration), BenchError> {
    let start = Instant::now();
    let chunks: Vec<&[T]> = items
        .chunks(items.len().div_ceil(writers.max(1)).max(1))
        .collect();
    let results: Vec<Result<Vec<Duration>, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                let f = &f;
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|item| {
                            let t = Instant::now();
                            f(item).map(|()| t.elapsed())
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        // invariant: the closures do not panic (errors are returned).
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect()
    });
    let mut all = Vec::with_capacity(items.len());
    for r in results {
        all.extend(r?);
    }
    Ok((all, start.elapsed()))
}

fn report(what: &str, lat: &[Duration]) {
    let mut v: Vec<f64> = lat.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    let p = |q: f64| {
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "  {what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p(0.5),
        p(0.99),
        p(1.0)
    );
}

/// A fresh directory for one run of benchmark `what`.
fn temp_dir(what: &str) -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "paas-bench-{what}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Removes a benchmark's directory when dropped: declared before what uses the directory
/// (a store, a child server), it is dropped after them.
/// Removes its directory when dropped; `None` keeps it.
struct RemoveDir(Option<std::path::PathBuf>);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn offer_eval(n_offers: usize, n_nodes: usize, rounds: usize) {
    let offers: Vec<OfferView> = (0..n_offers)
        .map(|i| OfferView {
            id: format!("o{i}"),
            agent_id: format!("a{i}"),
            hostname: format!("h{i}"),
            role: Some("*".into()),
            cpus: 4.0 + (i % 5) as f64,
            mem: 8192.0,
            disk: 10240.0,
            ports: vec![(31000, 32000)],
        })
        .collect();
    let needs: Vec<NodeNeed<usize>> = (0..n_nodes)
        .map(|i| NodeNeed {
            key: i,
            cpus: 0.5 + (i % 4) as f64 * 0.5,
            mem: 512.0,
            disk: 0.0,
            ports: 2,
        })
        .collect();
    let exec = ExecutorOverhead {
        cpus: 0.05,
        mem: 32.0,
        disk: 0.0,
        ports: 1,
    };
    let mut times = Vec::with_capacity(rounds);
    let mut placed = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let plan = offers::evaluate(&offers, &needs, &exec);
        times.push(t.elapsed());
        placed = plan.accepts.iter().map(|a| a.placements.len()).sum();
    }
    println!(
        "offers: {n_offers} offers × {n_nodes} pending nodes, {rounds} rounds; {placed} nodes placed per round"
    );
    report("evaluate()", &times);
}
