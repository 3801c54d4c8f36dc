//! `paas bench provision`: the framework's own cost at scale. The framework (REST API,
//! durable registry, scheduler) runs in this process; the master runs in another one: a
//! child `paas serve --local-containerizer simulated --local-agents N` (whose mesos-local
//! reports RUNNING at once and starts no process), or `--master URL`. So the CPU time of
//! this process, read with `getrusage`, is the framework's (plus the benchmark's own
//! HTTP client), and the master's is reported apart. `--in-process` runs mesos-local in this
//! process instead, as the first version of this benchmark did.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState, Auth, Backend, Readiness};
use crate::domain::template::Renderer;
use crate::domain::{ClusterId, ClusterStatus};
use crate::mesos_local::resources::Quantities;
use crate::mesos_local::{self, ContainerizerMode, LocalConfig};
use crate::metrics::Metrics;
use crate::orchestrator::{Orchestrator, OrchestratorConfig};
use crate::registry::{self, Commit, SledStore, Store};

use super::child::{ChildError, ChildProc, Usage};
use crate::scheduler::{Scheduler, SchedulerConfig};

/// Errors of the provisioning benchmark.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{0}")]
    Setup(String),
    #[error("timed out after {0:?} with {1} of {2} clusters scheduled")]
    Timeout(Duration, usize, usize),
    #[error("the master's process")]
    Child(#[from] ChildError),
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
pub(super) const TEMPLATE: &str = r#"{"nodes": { {{#each (range 0 opts.size)}}{{#unless @first}},{{/unless}}"n{{this}}": {"docker_image": "bench", "cpu": 0.01, "mem": 1, "ports": ["p"]}{{/each}} } }"#;

/// What to run (the flags of `paas bench provision`).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The master to use. Without it, a child `paas serve --local-containerizer simulated
    /// --local-agents <agents>` runs one (stopped at the end).
    #[arg(long, conflicts_with = "in_process")]
    pub master: Option<String>,
    /// Run mesos-local in this process instead (the CPU measured is then both's).
    #[arg(long)]
    pub in_process: bool,
    #[arg(long, default_value_t = 100)]
    pub agents: usize,
    #[arg(long, default_value_t = 1000)]
    pub clusters: usize,
    #[arg(long, default_value_t = 10)]
    pub size: usize,
    /// Launch POSTs in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Run the orchestrator too (as `paas serve` does) and print how long after a cluster's
    /// last node runs it goes `configuring`. Its CPU is then in the framework's.
    #[arg(long)]
    pub configure: bool,
}

/// Runs the benchmark and prints its numbers.
///
/// # Errors
/// [`ProvisionError`] when something cannot be set up or the clusters do not all run.
pub async fn run(o: Options) -> Result<(), ProvisionError> {
    let setup = |e: &dyn std::fmt::Display| ProvisionError::Setup(e.to_string());
    let dir = super::temp_dir("provision").map_err(|e| setup(&e))?;
    let _cleanup = super::RemoveDir(Some(dir.clone()));
    let shutdown = CancellationToken::new();
    // An early return (an error, Ctrl-C) stops every task started below.
    let _stop = shutdown.clone().drop_guard();
    let tracker = TaskTracker::new();
    // Each node takes one port and its executor another; size the agents to hold them all.
    let agents = o.agents.max(1);
    let per_agent = (o.clusters * o.size).div_ceil(agents) + 1;
    let ports = (per_agent * 2 + 10).min(60_000);
    let resources = format!(
        "cpus:{};mem:{};disk:1000;ports:[2000-{}]",
        per_agent as f64 * 0.1 + 1.0,
        per_agent * 40 + 64,
        2000 + ports
    );
    let mut master_proc = None;
    let (master, where_) = match (&o.master, o.in_process) {
        (Some(m), _) => (m.clone(), format!("the master at {m}")),
        (None, true) => {
            let mut cfg = LocalConfig::new(dir.join("mesos-local"));
            cfg.agents = agents;
            cfg.containerizer = ContainerizerMode::Simulated;
            cfg.resources = Quantities::parse(&resources).map_err(|e| setup(&e))?;
            let local = mesos_local::start(cfg, shutdown.clone(), &tracker)
                .await
                .map_err(|e| setup(&e))?;
            (
                local.master_url,
                format!("{agents} simulated agents in this process"),
            )
        }
        (None, false) => {
            let (child, url, child_url) =
                ChildProc::simulated_master(&dir.join("master"), agents, &resources)?;
            settled(&child_url, Duration::from_secs(30)).await;
            let where_ = format!(
                "{agents} simulated agents in a child `paas serve` (pid {})",
                child.pid()
            );
            master_proc = Some(child);
            (url, where_)
        }
    };

    let store: Arc<dyn Store> =
        Arc::new(SledStore::open(&dir.join("data")).map_err(|e| setup(&e))?);
    let metrics = Arc::new(Metrics::new());
    let mut scfg = SchedulerConfig::new(master);
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
        metrics: metrics.clone(),
        max_body: api::DEFAULT_MAX_BODY,
        renderer: Renderer::spec(),
        node_image: "bench".into(),
        limits: api::Limits::default(),
        volume_roots: Vec::new(),
        views: api::views::Views::spawn(store.as_ref(), shutdown.clone(), &tracker),
        events: api::events::Hub::spawn(store.as_ref(), shutdown.clone(), &tracker),
        launch_parts: api::PartsCache::default(),
    });
    tracker.spawn(api::serve(listener, state, shutdown.clone()));
    if o.configure {
        // The bench's product has no services and no script: configuring needs no node.
        let mut cfg = OrchestratorConfig::new(format!("http://{addr}{}", api::routes::BASE));
        cfg.work_dir = dir.clone();
        Orchestrator::spawn(
            cfg,
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
            &tracker,
        );
    }
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
    let (clusters, size) = (o.clusters, o.size);
    let timeout = Duration::from_secs(o.timeout);
    let nodes = clusters * size;
    println!(
        "provision: {where_}; {clusters} clusters × {size} nodes = {nodes} nodes, {} launch POSTs in flight",
        o.concurrency
    );

    let start = Instant::now();
    let deadline = start + timeout;
    let observer = Box::pin(collect(
        store.clone(),
        store.subscribe(),
        clusters,
        o.configure,
        deadline,
    ));
    let usage_start = Usage::of_process();
    let master_cpu_start = master_proc.as_ref().and_then(ChildProc::cpu);
    // The launch POSTs, and the observer of the store's commits that tells when each
    // cluster runs, work on a thread of their own with a runtime of its own, so that this
    // benchmark's CPU (its HTTP, its side of the sockets, its bookkeeping) is read apart from
    // the framework's and taken out of it.
    let url = format!("http://{addr}");
    let concurrency = o.concurrency.max(1);
    let poster = std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || post_launches(&url, clusters, size, concurrency, observer))
        .map_err(|e| setup(&e))?;
    let ClientRun {
        posted,
        posts_done,
        seen:
            Seen {
                running: done,
                configuring,
                lagged,
            },
        usage: client_usage,
    } = tokio::task::spawn_blocking(move || poster.join())
        .await
        .map_err(|e| setup(&e))?
        .map_err(|_| ProvisionError::Setup("the client thread panicked".into()))??;
    let post_wall = posts_done.saturating_duration_since(start);
    let usage = usage_start
        .zip(Usage::of_process())
        .map(|(a, b)| b.since(&a));
    let master_cpu = master_cpu_start
        .zip(master_proc.as_ref().and_then(ChildProc::cpu))
        .map(|(a, b)| b.saturating_sub(a));
    let mut lat: Vec<f64> = posted
        .iter()
        .filter_map(|(id, t)| done.get(id).map(|d| d.saturating_duration_since(*t)))
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    if lat.len() < clusters {
        return Err(ProvisionError::Timeout(timeout, lat.len(), clusters));
    }
    let wall = done.values().max().map_or(start.elapsed(), |last| {
        last.saturating_duration_since(start)
    });
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| percentile(&lat, q);
    println!(
        "  all {nodes} nodes running {:.2} s after the first POST: {:.0} nodes/s (the POSTs took {:.2} s)",
        wall.as_secs_f64(),
        nodes as f64 / wall.as_secs_f64(),
        post_wall.as_secs_f64()
    );
    println!(
        "  POST → all running, per cluster: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    let per_node = |d: Duration| d.as_secs_f64() * 1e3 / nodes.max(1) as f64;
    if let Some(usage) = usage {
        let what = if o.in_process {
            "framework + mesos-local (both in this process)"
        } else {
            "framework (this process: API, store, scheduler"
        };
        let framework = match client_usage {
            Some(client) => {
                println!(
                    "  CPU of the {what}, less the client thread): {:.2} s, {:.3} ms per node; the benchmark's client thread (its POSTs and its observer of the commits): {:.2} s, {:.3} ms per node",
                    usage.since(&client).cpu().as_secs_f64(),
                    per_node(usage.since(&client).cpu()),
                    client.cpu().as_secs_f64(),
                    per_node(client.cpu())
                );
                usage.since(&client)
            }
            None => {
                println!(
                    "  CPU of the {what}, and this benchmark's client): {:.2} s, {:.3} ms per node",
                    usage.cpu().as_secs_f64(),
                    per_node(usage.cpu())
                );
                usage
            }
        };
        let per = |n: u64| n as f64 / nodes.max(1) as f64;
        println!(
            "  of it in the kernel: {:.0} %; per node {:.2} minor page faults and {:.2} context switches",
            100.0 * framework.system.as_secs_f64() / framework.cpu().as_secs_f64().max(1e-9),
            per(framework.minor_faults),
            per(framework.switches)
        );
    }
    if let Some(cpu) = master_cpu {
        println!(
            "  CPU of the master's process (mesos-local and its idle framework): {:.2} s, {:.3} ms per node",
            cpu.as_secs_f64(),
            per_node(cpu)
        );
    }
    if o.configure {
        let mut to_configuring: Vec<f64> = configuring
            .iter()
            .filter_map(|(id, c)| done.get(id).map(|r| c.saturating_duration_since(*r)))
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        to_configuring.sort_by(f64::total_cmp);
        println!(
            "  every node running → configuring, per cluster ({} of {clusters}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            to_configuring.len(),
            percentile(&to_configuring, 0.5),
            percentile(&to_configuring, 0.99),
            percentile(&to_configuring, 1.0)
        );
    }
    if lagged > 0 {
        println!(
            "  (the commit subscription lagged {lagged} times; those clusters' ends were taken at the rescan, a little late)"
        );
    }
    shutdown.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
    drop(master_proc);
    Ok(())
}

/// Waits (at most `within`) until the child's own framework has declined its first offers.
/// mesos-local offers every agent to it when it subscribes; while those offers are out, a
/// framework that subscribes (this benchmark's) is offered nothing until the master's next
/// allocation round, a second later, and that second would be counted as ours.
async fn settled(child_url: &str, within: Duration) {
    let client = crate::cli::Client::new(child_url, None);
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(text) = client.get_text("/metrics").await
            && declined(&text) > 0.0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("  (the master's own framework had declined no offer after {within:?}; going on)");
}

/// `paas_offers_declined_total` in a `/metrics` text (0 when absent).
fn declined(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("paas_offers_declined_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `q` quantile of sorted `v` (0 for none).
pub(super) fn percentile(v: &[f64], q: f64) -> f64 {
    match v.len() {
        0 => 0.0,
        n => v[((n as f64 * q) as usize).min(n - 1)],
    }
}

/// When the commits showed each cluster first.
struct Seen {
    /// With every node running (`scheduled` or later).
    running: HashMap<ClusterId, Instant>,
    /// `configuring` or later (kept only with the orchestrator).
    configuring: HashMap<ClusterId, Instant>,
    /// How often the subscription lagged (then a scan catches up, a little late).
    lagged: u64,
}

/// Follows the commits until `want` clusters run (and, with `configure`, are configuring),
/// or `deadline`.
async fn collect(
    store: Arc<dyn Store>,
    mut commits: tokio::sync::broadcast::Receiver<Commit>,
    want: usize,
    configure: bool,
    deadline: Instant,
) -> Seen {
    use ClusterStatus as S;
    let mut seen = Seen {
        running: HashMap::with_capacity(want),
        configuring: HashMap::new(),
        lagged: 0,
    };
    let note = |seen: &mut Seen, id: ClusterId, status: S, at: Instant| {
        if matches!(
            status,
            S::Scheduled | S::Configuring | S::Configured | S::Ready
        ) {
            seen.running.entry(id).or_insert(at);
        }
        if configure && matches!(status, S::Configuring | S::Configured | S::Ready) {
            seen.configuring.entry(id).or_insert(at);
        }
    };
    let finished =
        |seen: &Seen| seen.running.len() >= want && (!configure || seen.configuring.len() >= want);
    while !finished(&seen) {
        match tokio::time::timeout_at(deadline.into(), commits.recv()).await {
            Err(_) | Ok(Err(RecvError::Closed)) => break,
            Ok(Ok(Commit::Cluster(c))) => note(&mut seen, c.id, c.status, Instant::now()),
            Ok(Ok(_)) => {}
            Ok(Err(RecvError::Lagged(_))) => {
                seen.lagged += 1;
                let Ok(all) = registry::call(&store, |s| s.clusters()).await else {
                    continue;
                };
                let now = Instant::now();
                for c in &all {
                    note(&mut seen, c.id, c.status, now);
                }
            }
        }
    }
    seen
}

/// What the benchmark's client thread did: each cluster launched with the time its POST
/// started, when the last POST was answered, what the observer saw, and what the thread
/// used (`None` where `getrusage` fails).
struct ClientRun {
    posted: Vec<(ClusterId, Instant)>,
    posts_done: Instant,
    seen: Seen,
    usage: Option<Usage>,
}

/// The launch POSTs of a run, `concurrency` at a time, on a current-thread runtime of the
/// calling thread, with `observer` running beside them until it is done.
fn post_launches(
    url: &str,
    clusters: usize,
    size: usize,
    concurrency: usize,
    observer: std::pin::Pin<Box<dyn std::future::Future<Output = Seen> + Send>>,
) -> Result<ClientRun, ProvisionError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ProvisionError::Setup(format!("client runtime: {e}")))?;
    let usage_start = Usage::of_thread();
    let (posted, posts_done, seen) = rt.block_on(async {
        let observer = tokio::spawn(observer);
        let client = Arc::new(crate::cli::Client::new(url, None));
        let next = Arc::new(AtomicUsize::new(0));
        let mut posters = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (client, next) = (client.clone(), next.clone());
            posters.spawn(async move {
                let mut posted = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < clusters {
                    let t = Instant::now();
                    let v: Value = client
                        .post_json("/products/bench/1", json!({"size": size}))
                        .await
                        .map_err(|e| ProvisionError::Setup(format!("launch: {e}")))?;
                    let id: ClusterId = v["id"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| ProvisionError::Setup(format!("bad launch answer {v}")))?;
                    posted.push((id, t));
                }
                Ok::<_, ProvisionError>(posted)
            });
        }
        let mut posted = Vec::with_capacity(clusters);
        while let Some(r) = posters.join_next().await {
            posted.extend(r.map_err(|e| ProvisionError::Setup(e.to_string()))??);
        }
        let posts_done = Instant::now();
        let seen = observer
            .await
            .map_err(|e| ProvisionError::Setup(format!("observer: {e}")))?;
        Ok::<_, ProvisionError>((posted, posts_done, seen))
    })?;
    let usage = usage_start
        .zip(Usage::of_thread())
        .map(|(a, b)| b.since(&a));
    Ok(ClientRun {
        posted,
        posts_done,
        seen,
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declined_offers_are_read_from_the_metrics_text() {
        let text = "# HELP paas_offers_declined_total Offers declined.\n\
                    # TYPE paas_offers_declined_total counter\n\
                    paas_offers_declined_total 100\n\
                    paas_offers_received_total 300\n";
        assert_eq!(declined(text), 100.0);
        assert_eq!(declined("paas_offers_received_total 3\n"), 0.0);
    }
}
