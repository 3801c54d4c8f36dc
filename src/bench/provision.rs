//! `paas bench provision`: the framework's own cost at scale. mesos-local simulates the
//! agents (its `simulated` containerizer reports RUNNING at once and starts no process), so
//! what is measured is ours: the REST launch, template rendering, the durable registry,
//! offer evaluation, launches, and status-update handling through a real sled store and
//! real HTTP on loopback.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState, Auth, Backend, Readiness};
use crate::domain::template::Renderer;
use crate::domain::{ClusterId, ClusterStatus};
use crate::mesos_local::resources::Quantities;
use crate::mesos_local::{self, ContainerizerMode, LocalConfig};
use crate::metrics::Metrics;
use crate::registry::{SledStore, Store};
use crate::scheduler::{Scheduler, SchedulerConfig};

/// Errors of the provisioning benchmark.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{0}")]
    Setup(String),
    #[error("timed out after {0:?} with {1} of {2} clusters scheduled")]
    Timeout(Duration, usize, usize),
}

/// The scheduler's readiness; it learns of launches from the store's commits.
struct Subscribed(Scheduler);

impl Backend for Subscribed {
    fn readiness(&self) -> Readiness {
        Readiness {
            ready: self.0.status().subscribed,
            detail: String::new(),
            mesos: None,
        }
    }
}

// Spaces keep `{ {{` from reading as a triple-stash.
const TEMPLATE: &str = r#"{"nodes": { {{#each (range 0 opts.size)}}{{#unless @first}},{{/unless}}"n{{this}}": {"docker_image": "bench", "cpu": 0.01, "mem": 1, "ports": ["p"]}{{/each}} } }"#;

/// Runs the benchmark and prints its numbers.
///
/// # Errors
/// [`ProvisionError`] when something cannot be set up or the clusters do not all run.
pub async fn run(
    agents: usize,
    clusters: usize,
    size: usize,
    timeout: Duration,
) -> Result<(), ProvisionError> {
    let setup = |e: &dyn std::fmt::Display| ProvisionError::Setup(e.to_string());
    let dir = std::env::temp_dir().join(format!(
        "paas-bench-provision-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| setup(&e))?;
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    // Each node takes one port and its executor another; size the agents to hold them all.
    let per_agent = (clusters * size).div_ceil(agents.max(1)) + 1;
    let ports = (per_agent * 2 + 10).min(60_000);
    let mut cfg = LocalConfig::new(dir.join("mesos-local"));
    cfg.agents = agents;
    cfg.containerizer = ContainerizerMode::Simulated;
    cfg.resources = Quantities::parse(&format!(
        "cpus:{};mem:{};disk:1000;ports:[2000-{}]",
        per_agent as f64 * 0.1 + 1.0,
        per_agent * 40 + 64,
        2000 + ports
    ))
    .map_err(|e| setup(&e))?;
    let local = mesos_local::start(cfg, shutdown.clone(), &tracker)
        .await
        .map_err(|e| setup(&e))?;

    let store: Arc<dyn Store> =
        Arc::new(SledStore::open(&dir.join("data")).map_err(|e| setup(&e))?);
    let metrics = Arc::new(Metrics::new());
    let mut scfg = SchedulerConfig::new(local.master_url.clone());
    scfg.executor.cpus = 0.01;
    scfg.executor.mem = 1.0;
    let scheduler = Scheduler::spawn(
        scfg,
        store.clone(),
        metrics.clone(),
        shutdown.clone(),
        &tracker,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| setup(&e))?;
    let addr = listener.local_addr().map_err(|e| setup(&e))?;
    let state = Arc::new(AppState {
        store: store.clone(),
        backend: Arc::new(Subscribed(scheduler)),
        auth: Auth::Anonymous,
        metrics,
        max_body: api::DEFAULT_MAX_BODY,
        renderer: Renderer::spec(),
        node_image: "bench".into(),
        limits: api::Limits::default(),
        volume_roots: Vec::new(),
    });
    tracker.spawn(api::serve(listener, state, shutdown.clone()));
    let client = crate::cli::Client::new(&format!("http://{addr}"), None);

    client
        .post_json("/products", json!({"name": "bench", "version": "1"}))
        .await
        .map_err(|e| setup(&e))?;
    client
        .put_raw("/products/bench/1/template", TEMPLATE.as_bytes().to_vec())
        .await
        .map_err(|e| setup(&e))?;
    client
        .put_raw(
            "/products/bench/1/options",
            json!({"required": {"size": 1}}).to_string().into_bytes(),
        )
        .await
        .map_err(|e| setup(&e))?;
    println!(
        "provision: {agents} simulated agents, {clusters} clusters × {size} nodes = {} nodes (sled in {})",
        clusters * size,
        dir.display()
    );

    let start = Instant::now();
    let mut posted: Vec<(ClusterId, Instant)> = Vec::with_capacity(clusters);
    for _ in 0..clusters {
        let t = Instant::now();
        let v: Value = client
            .post_json("/products/bench/1", json!({"size": size}))
            .await
            .map_err(|e| setup(&e))?;
        let id = v["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ProvisionError::Setup(format!("bad launch answer {v}")))?;
        posted.push((id, t));
    }
    let post_wall = start.elapsed();
    // Poll the store: a cluster's first observation as `scheduled` ends its latency.
    let mut done: Vec<Option<Duration>> = vec![None; clusters];
    let deadline = start + timeout;
    while done.iter().any(Option::is_none) {
        for (i, (id, t)) in posted.iter().enumerate() {
            if done[i].is_none() {
                let id = *id;
                let s = store.clone();
                let c = tokio::task::spawn_blocking(move || s.cluster(id))
                    .await
                    .map_err(|e| setup(&e))?
                    .map_err(|e| setup(&e))?;
                if c.is_some_and(|c| c.status == ClusterStatus::Scheduled) {
                    done[i] = Some(t.elapsed());
                }
            }
        }
        if Instant::now() > deadline {
            let n = done.iter().filter(|d| d.is_some()).count();
            shutdown.cancel();
            return Err(ProvisionError::Timeout(timeout, n, clusters));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = start.elapsed();
    let mut lat: Vec<f64> = done
        .iter()
        .flatten()
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    let nodes = clusters * size;
    println!(
        "  all {nodes} nodes running after {:.2} s: {:.0} nodes launched/s (POSTs took {:.2} s)",
        wall.as_secs_f64(),
        nodes as f64 / wall.as_secs_f64(),
        post_wall.as_secs_f64()
    );
    println!(
        "  POST → all-running per cluster: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    shutdown.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
