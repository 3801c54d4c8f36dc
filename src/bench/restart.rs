//! `paas bench restart` and `paas bench launches`: a child `paas serve --master none` on a
//! big store. `restart` writes the store first (through [`SledStore`], as the server would:
//! each cluster launched, then placed, then running, so each node has a record in both of
//! its slots), then times the child until it serves; `launches` fills it through the API with durable
//! launches. Both print the child's resident memory.
//!
//! With `--master none` there is no scheduler, so nothing is reconciled: "serving" is the
//! whole of a restart there. What is measured: the first `/health` answer (the store is
//! open: recovered, migrated, indexed), then the first `/metrics` (counts of every cluster
//! and node) and the first `GET /clusters`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::api::{LAUNCH, addr_of, expect_ok, register_reference};
use super::child::{ChildProc, cpu_of, mb};
use super::load::{self, Load, Stop};
use super::{BenchError, RemoveDir, cluster, parallel, product, temp_dir};
use crate::api::routes::BASE;
use crate::domain::{AgentId, ClusterStatus, NodeStatus, TaskId};
use crate::registry::{SledStore, Store, Update};

/// Nodes per cluster in the store `restart` writes.
pub const NODES_PER_CLUSTER: usize = 10;

/// Runs `restart`: writes `nodes` nodes, restarts on them, prints the numbers.
///
/// # Errors
/// [`BenchError`] when the store cannot be written or the server started.
pub async fn restart(
    nodes: usize,
    writers: usize,
    keep: Option<std::path::PathBuf>,
) -> Result<(), BenchError> {
    let (dir, _cleanup) = match keep {
        Some(dir) => {
            std::fs::create_dir(&dir)?;
            (dir, RemoveDir(None))
        }
        None => {
            let dir = temp_dir("restart")?;
            (dir.clone(), RemoveDir(Some(dir)))
        }
    };
    let data = dir.join("data");
    let clusters = nodes.div_ceil(NODES_PER_CLUSTER);
    let write = Instant::now();
    {
        let store = Arc::new(SledStore::open(&data)?);
        store.create_product(&product())?;
        let records: Vec<_> = (0..clusters).map(|_| cluster(NODES_PER_CLUSTER)).collect();
        parallel(&records, writers, |c| {
            store.create_cluster(c.clone())?;
            // Placed, then running: the two commits of a provisioning.
            for status in [NodeStatus::Staging, NodeStatus::Running] {
                store.update_cluster(c.id, &mut |c| {
                    place(c, status);
                    Ok(Update::Write)
                })?;
            }
            Ok(())
        })?;
        store.flush()?;
    }
    println!(
        "restart: {clusters} clusters × {NODES_PER_CLUSTER} nodes, each launched, placed and running (3 commits), written in {:.1} s ({} writers); {:.0} MB on disk",
        write.elapsed().as_secs_f64(),
        writers,
        mb(dir_size(&data))
    );

    let start = Instant::now();
    let (server, url) = ChildProc::serve(&data, &["--master", "none"], Duration::from_secs(300))?;
    let addr = addr_of(&url)?;
    let listening = start.elapsed();
    loop {
        match load::fetch(
            addr,
            http::Method::GET,
            &format!("{BASE}/health"),
            Bytes::new(),
        )
        .await
        {
            Ok((s, _)) if s.is_success() => break,
            _ if start.elapsed() > Duration::from_secs(300) => {
                return Err(BenchError::Setup(
                    "/health did not answer 200 in 300 s".into(),
                ));
            }
            _ => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    let health = start.elapsed();
    println!(
        "  `paas serve --master none` listening {:.2} s after its start, /health 200 after {:.2} s (nothing to reconcile without a master)",
        listening.as_secs_f64(),
        health.as_secs_f64()
    );
    timed_get(addr, "/metrics").await?;
    // The first page read from disk (the cache holds what the open read last), then the
    // same page again (cached), then the next one.
    let next = timed_get(addr, "/clusters").await?;
    timed_get(addr, "/clusters").await?;
    if let Some(cursor) = next {
        timed_get(addr, &format!("/clusters?cursor={cursor}")).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "  RSS of the server, idle 2 s later: {:.0} MB",
        server.rss().map_or(0.0, mb)
    );
    Ok(())
}

/// Runs `launches`: `count` durable launches of the reference product over `connections`
/// connections, then the listing and `/metrics` on what they made. With `quota`, the server
/// has a token file, and every request is the one user's, whose quota fits every launch.
///
/// # Errors
/// [`BenchError`] when the server cannot be started or set up.
pub async fn launches(
    count: u64,
    connections: usize,
    size: usize,
    quota: bool,
) -> Result<(), BenchError> {
    let dir = temp_dir("launches")?;
    let _cleanup = RemoveDir(Some(dir.clone()));
    let mut args = vec!["--master".to_owned(), "none".to_owned()];
    let who = if quota {
        // An admin (to register the product) with limits: the check runs, and never refuses.
        let token = "bench-quota-token-0123456789";
        let tokens = dir.join("tokens");
        std::fs::write(
            &tokens,
            format!(
                "{token},bench,admin,clusters={count},nodes={}\n",
                count * size as u64
            ),
        )?;
        args.extend(["--tokens".to_owned(), tokens.display().to_string()]);
        load::use_token(token).map_err(BenchError::Setup)?;
        format!(
            "user bench, whose quota is {count} clusters and {} nodes",
            count * size as u64
        )
    } else {
        "the anonymous admin, no quota".to_owned()
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (server, url) = ChildProc::serve(&dir.join("data"), &args, Duration::from_secs(60))?;
    let addr = addr_of(&url)?;
    register_reference(addr).await?;
    println!(
        "launches: {count} launches of the reference product (size {size}) over {connections} connections, as {who}, `paas serve --master none` (pid {}); RSS before: {:.0} MB",
        server.pid(),
        server.rss().map_or(0.0, mb)
    );
    let cpu_before = server.cpu();
    let client_before = cpu_of("/proc/self/stat");
    let out = load::run(&Load {
        addr,
        method: http::Method::POST,
        path: format!("{BASE}{LAUNCH}"),
        body: Bytes::from(format!(r#"{{"size": {size}}}"#)),
        connections,
        stop: Stop::Count(count),
    })
    .await;
    println!(
        "  {} launched in {:.2} s: {:.0} launches/s ({} failed{}); RSS after: {:.0} MB",
        out.ok,
        out.wall.as_secs_f64(),
        out.per_sec(),
        out.failed,
        out.first_failure
            .map(|f| format!(": {f}"))
            .unwrap_or_default(),
        server.rss().map_or(0.0, mb)
    );
    // CPU per launch: what the load average cannot blur (it counts what ran, not the wait).
    let per_launch = |before: Option<Duration>, after: Option<Duration>| {
        before
            .zip(after)
            .map(|(a, b)| b.saturating_sub(a).as_secs_f64() * 1e6 / out.ok.max(1) as f64)
            .map_or_else(|| "?".to_owned(), |us| format!("{us:.0} µs"))
    };
    println!(
        "  CPU per launch: server {}, this client {}",
        per_launch(cpu_before, server.cpu()),
        per_launch(client_before, cpu_of("/proc/self/stat"))
    );
    timed_get(addr, "/clusters").await?;
    timed_get(addr, "/metrics").await?;
    println!(
        "  RSS after these reads: {:.0} MB",
        server.rss().map_or(0.0, mb)
    );
    // What of it is freed memory the allocator still holds: the server hands that back at
    // its next trim (every `TRIM_PERIOD`).
    let idle = crate::memory::TRIM_PERIOD + Duration::from_secs(1);
    tokio::time::sleep(idle).await;
    println!(
        "  RSS {} s later, idle (after the server's periodic trim): {:.0} MB",
        idle.as_secs(),
        server.rss().map_or(0.0, mb)
    );
    Ok(())
}

/// GETs `path` once and prints how long it took and what it returned. The page's `next`
/// cursor, if it is a page that has one.
async fn timed_get(addr: std::net::SocketAddr, path: &str) -> Result<Option<String>, BenchError> {
    let t = Instant::now();
    let body = expect_ok(addr, http::Method::GET, path, Bytes::new()).await?;
    let took = t.elapsed();
    let page = serde_json::from_slice::<serde_json::Value>(&body).ok();
    let listed = page
        .as_ref()
        .and_then(|v| v["clusters"].as_array().map(Vec::len))
        .map(|n| format!(", {n} clusters listed"))
        .unwrap_or_default();
    let next = page.and_then(|v| v["next"].as_str().map(str::to_owned));
    println!(
        "  GET {path}: {:.1} ms ({} bytes{listed})",
        took.as_secs_f64() * 1e3,
        body.len()
    );
    Ok(next)
}

/// `c` as the store holds it once its nodes are placed (`Staging`, the cluster `Scheduled`)
/// or run (`Running`, the cluster `Ready`): each with a task, an agent and ports.
fn place(c: &mut crate::domain::Cluster, status: NodeStatus) {
    c.status = if status == NodeStatus::Running {
        ClusterStatus::Ready
    } else {
        ClusterStatus::Scheduled
    };
    let id = c.id;
    for (i, n) in c.nodes.iter_mut().enumerate() {
        n.observed.status = status;
        n.observed.host = Some("localhost".into());
        n.observed.address = Some("127.0.0.1".into());
        n.observed.task_id = Some(TaskId {
            cluster: id,
            node: n.name.clone(),
            attempt: 0,
        });
        n.observed.agent_id = Some(AgentId::new(format!("agent-{}", i % 100)));
        n.observed.ports.insert("http".into(), 31_000 + i as u16);
    }
}

/// Bytes of the files under `dir`.
fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
