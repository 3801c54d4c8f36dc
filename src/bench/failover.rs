//! `paas bench restart --master-local`: a restart of the framework against a master that
//! still runs every node. A child mesos-local (simulated agents: no process per task) is the
//! master; a child `paas serve --master <it>` launches the clusters through its API and
//! runs them until every one is `ready`; it is then killed with SIGKILL, as a crash would,
//! and started again on the same data. Timed from the second start: listening, `/health`
//! answering, subscribed again (under the same framework id), and explicitly reconciled
//! (every task the store knows answered by the master, `/health`'s `mesos.reconciling`
//! false; launches wait for that). Then its idle RSS.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use super::api::addr_of;
use super::child::{ChildProc, mb};
use super::load::{self, Load, Stop};
use super::provision::TEMPLATE;
use super::{BenchError, RemoveDir, temp_dir};
use crate::api::routes::BASE;

/// Nodes per cluster.
const SIZE: usize = 10;
/// Agents of the master.
const AGENTS: usize = 100;

/// Runs it with `nodes` nodes, in clusters of 10.
///
/// # Errors
/// [`BenchError`] when a child cannot be started or a phase does not end in time.
pub async fn run(nodes: usize) -> Result<(), BenchError> {
    let dir = temp_dir("failover")?;
    let _cleanup = RemoveDir(Some(dir.clone()));
    let clusters = nodes.div_ceil(SIZE).max(1);
    let nodes = clusters * SIZE;
    // How long any one phase may take: a minute, and more for more nodes.
    let phase = Duration::from_secs(60 + nodes as u64 / 200);
    let master = start_master(&dir.join("master"), nodes)?;
    let master_url = master.1.clone();
    let data = dir.join("data");
    // Anonymous: the benchmark's requests carry no token (loopback only).
    let args = ["--master", master_url.as_str(), "--allow-anonymous"];

    let (mut first, url) = ChildProc::serve(&data, &args, phase)?;
    let addr = addr_of(&url)?;
    wait_health(addr, Instant::now(), phase, |h| {
        h["mesos"]["subscribed"] == true
    })
    .await?;
    register(addr).await?;
    let launch = Instant::now();
    let out = load::run(&Load {
        addr,
        method: http::Method::POST,
        path: format!("{BASE}/products/bench/1"),
        body: Bytes::from(format!(r#"{{"size": {SIZE}}}"#)),
        connections: 32,
        stop: Stop::Count(clusters as u64),
    })
    .await;
    if out.ok != clusters as u64 {
        return Err(BenchError::Setup(format!(
            "{} of {clusters} launches failed: {}",
            out.failed,
            out.first_failure.unwrap_or_default()
        )));
    }
    wait_ready(addr, clusters, phase).await?;
    println!(
        "restart against a master: {clusters} clusters × {SIZE} nodes launched and ready in {:.1} s on {AGENTS} simulated agents of a child mesos-local (pid {}), by a child `paas serve --master {master_url}` (pid {})",
        launch.elapsed().as_secs_f64(),
        master.0.pid(),
        first.pid()
    );
    first.kill_hard();
    println!("  killed it (SIGKILL); every task still runs on the master");

    let master_cpu = master.0.cpu();
    let start = Instant::now();
    let (second, url) = ChildProc::serve(&data, &args, phase)?;
    let addr = addr_of(&url)?;
    let listening = start.elapsed();
    let health = wait_health(addr, start, phase, |_| true).await?;
    let subscribed = wait_health(addr, start, phase, |h| h["mesos"]["subscribed"] == true).await?;
    let reconciled = wait_health(addr, start, phase, |h| {
        h["mesos"]["subscribed"] == true && h["mesos"]["reconciling"] == false
    })
    .await?;
    println!(
        "  started again on its data (pid {}): listening after {:.2} s, /health after {:.2} s, subscribed after {:.2} s, every one of the {nodes} tasks reconciled after {:.2} s",
        second.pid(),
        listening.as_secs_f64(),
        health.as_secs_f64(),
        subscribed.as_secs_f64(),
        reconciled.as_secs_f64()
    );
    let cpu = |before: Option<Duration>, after: Option<Duration>| {
        before.zip(after).map_or_else(
            || "?".to_owned(),
            |(a, b)| format!("{:.2} s", (b - a).as_secs_f64()),
        )
    };
    println!(
        "  CPU meanwhile: the restarted server {} (all of it since its start), the master's process {}",
        cpu(Some(Duration::ZERO), second.cpu()),
        cpu(master_cpu, master.0.cpu())
    );
    let text = metrics(addr).await?;
    println!(
        "  then: {} clusters ready, {} nodes running",
        count(&text, "paas_clusters", "ready"),
        count(&text, "paas_nodes", "running")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = second.rss().map_or(0.0, mb);
    // `serve` gives freed heap back every 5 s (`memory::TRIM_PERIOD`).
    tokio::time::sleep(crate::memory::TRIM_PERIOD).await;
    println!(
        "  RSS of the server, idle 2 s later: {idle:.0} MB; {} s later, after its periodic trim: {:.0} MB",
        2 + crate::memory::TRIM_PERIOD.as_secs(),
        second.rss().map_or(0.0, mb)
    );
    Ok(())
}

/// A child mesos-local with room for `nodes` nodes of the benchmark's product (and their
/// executors): the child and the master's URL.
fn start_master(data: &Path, nodes: usize) -> Result<(ChildProc, String), BenchError> {
    let per_agent = nodes.div_ceil(AGENTS) + 1;
    // A node takes 0.01 cpus, 1 MB and a port; its executor 0.05 cpus, 32 MB and a port.
    let resources = format!(
        "cpus:{};mem:{};disk:1000;ports:[2000-{}]",
        per_agent as f64 * 0.06 + 1.0,
        per_agent * 33 + 64,
        2000 + (per_agent * 2 + 10).min(60_000)
    );
    let (child, master, _) = ChildProc::simulated_master(data, AGENTS, &resources)?;
    Ok((child, master))
}

/// Registers the benchmark's product: [`TEMPLATE`], whose nodes have no service, so that a
/// cluster is `ready` without any step run on its (simulated) nodes.
async fn register(addr: SocketAddr) -> Result<(), BenchError> {
    let calls = [
        (
            http::Method::POST,
            "/products",
            json!({"name": "bench", "version": "1"}).to_string(),
        ),
        (
            http::Method::PUT,
            "/products/bench/1/template",
            TEMPLATE.to_owned(),
        ),
        (
            http::Method::PUT,
            "/products/bench/1/options",
            json!({"required": {"size": 1}}).to_string(),
        ),
    ];
    for (method, path, body) in calls {
        super::api::expect_ok(addr, method, path, Bytes::from(body)).await?;
    }
    Ok(())
}

/// Polls `/health` until `done` holds for its body: when, counted from `start`.
async fn wait_health(
    addr: SocketAddr,
    start: Instant,
    phase: Duration,
    done: impl Fn(&Value) -> bool,
) -> Result<Duration, BenchError> {
    loop {
        if let Ok((status, body)) = load::fetch(
            addr,
            http::Method::GET,
            &format!("{BASE}/health"),
            Bytes::new(),
        )
        .await
            && status.is_success()
            && serde_json::from_slice::<Value>(&body).is_ok_and(|h| done(&h))
        {
            return Ok(start.elapsed());
        }
        if start.elapsed() > phase {
            return Err(BenchError::Setup(format!(
                "/health did not get there in {phase:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `clusters` clusters are `ready`.
async fn wait_ready(addr: SocketAddr, clusters: usize, phase: Duration) -> Result<(), BenchError> {
    let start = Instant::now();
    loop {
        let text = metrics(addr).await?;
        if count(&text, "paas_clusters", "ready") >= clusters as u64 {
            return Ok(());
        }
        if start.elapsed() > phase {
            return Err(BenchError::Setup(format!(
                "{} of {clusters} clusters ready after {phase:?}",
                count(&text, "paas_clusters", "ready")
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metrics(addr: SocketAddr) -> Result<String, BenchError> {
    let body = super::api::expect_ok(addr, http::Method::GET, "/metrics", Bytes::new()).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The value of `name{status="<status>"}` in a `/metrics` text (0 when absent).
fn count(text: &str, name: &str, status: &str) -> u64 {
    let prefix = format!("{name}{{status=\"{status}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_by_name_and_status() {
        let text = "# TYPE paas_clusters gauge\npaas_clusters{status=\"ready\"} 42\npaas_clusters{status=\"failed\"} 1\npaas_nodes{status=\"running\"} 420\n";
        assert_eq!(count(text, "paas_clusters", "ready"), 42);
        assert_eq!(count(text, "paas_nodes", "running"), 420);
        assert_eq!(count(text, "paas_nodes", "ready"), 0);
        assert_eq!(count("", "paas_clusters", "ready"), 0);
    }
}
