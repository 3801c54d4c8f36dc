//! The scheduler against an in-process mesos-local (simulated agents, so no executor runs):
//! a launch made while another cluster waits for resources is offered them at once, not
//! after the filter its round declined them with.

use std::sync::Arc;
use std::time::Duration;

use paas::domain::cluster::ClusterSpec;
use paas::domain::{Cluster, ClusterId, ClusterStatus, Name, Product, Timestamp};
use paas::mesos_local::{self, ContainerizerMode, LocalConfig, Quantities};
use paas::metrics::Metrics;
use paas::registry::{MemoryStore, Store};
use paas::scheduler::{Scheduler, SchedulerConfig};
use serde_json::{Map, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn product() -> Product {
    Product::new(
        Name::parse("p").unwrap(),
        Name::parse("1").unwrap(),
        Timestamp::now(),
    )
}

/// A freshly launched cluster of product `p` 1 with one node asking for `cpu`.
fn launch(cpu: f64) -> Cluster {
    let spec = json!({"nodes": {"n0": {"docker_image": "i", "cpu": cpu, "mem": 16}}});
    Cluster::new(
        ClusterId::generate(),
        "alice".into(),
        Name::parse("p").unwrap(),
        Name::parse("1").unwrap(),
        Map::new(),
        ClusterSpec::parse(&spec.to_string()).unwrap(),
        "s".into(),
        Timestamp::now(),
    )
}

/// Polls `f` every 20 ms until it holds, for at most `secs`.
async fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {secs} s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The declined offers' filter is an hour here, so without the REVIVE the second launch
/// would wait that hour and the test would fail at its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_while_another_waits_is_placed_without_waiting_out_the_filter() {
    let work = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut local = LocalConfig::new(work.path().join("mesos-local"));
    local.containerizer = ContainerizerMode::Simulated;
    local.resources = Quantities::parse("cpus:1;mem:1024;disk:1024;ports:[30000-30100]").unwrap();
    let master = mesos_local::start(local, shutdown.clone(), &tracker)
        .await
        .unwrap();

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    store.create_product(&product()).unwrap();
    let mut cfg = SchedulerConfig::new(master.master_url.clone());
    cfg.busy_refuse = Duration::from_secs(3600);
    cfg.executor.cpus = 0.1;
    let scheduler = Scheduler::spawn(
        cfg,
        store.clone(),
        Arc::new(Metrics::new()),
        shutdown.clone(),
        &tracker,
    );
    until(20, "subscribed", || scheduler.status().subscribed).await;

    // Too big for the agent: it waits, and its round declines the offer for an hour.
    let big = launch(4.0);
    store.create_cluster(big.clone()).unwrap();
    let waits = |id| {
        let c = store.cluster(id).unwrap().unwrap();
        c.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("waiting for resources"))
    };
    until(20, "the big launch waits for resources", || waits(big.id)).await;

    let small = launch(0.2);
    store.create_cluster(small.clone()).unwrap();
    until(20, "the small launch runs", || {
        store.cluster(small.id).unwrap().unwrap().status == ClusterStatus::Scheduled
    })
    .await;
    assert!(waits(big.id), "the big launch still waits, holding nothing");

    shutdown.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(20), tracker.wait())
        .await
        .expect("everything stops");
}
