//! The framework against a REAL Apache Mesos 1.11 master and agent (`../shared/realmesos`,
//! Docker containerizer), as CI runs it: `MESOS_MASTER` names the master and
//! `PAAS_NODE_IMAGE` the node image (default `paas-node:latest`).
//!
//! Without `MESOS_MASTER` every test here says why it does not run; under `CI=true` that is a
//! failure, never a silent pass. The tests share one Mesos agent, so they take a lock and run
//! one at a time.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    Server, cluster, destroy, get, launch, register_reference, running_executors, task_ids,
    wait_for, wait_status,
};
use serde_json::Value;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The master URL, or `None` (with the reason printed) when these tests cannot run here.
fn master() -> Option<String> {
    common::mesos_master(
        "realmesos",
        "Run scripts/test.sh (it starts ../shared/realmesos) or export MESOS_MASTER=http://127.0.0.1:5050",
    )
}

fn node_image() -> String {
    std::env::var("PAAS_NODE_IMAGE").unwrap_or_else(|_| "paas-node:latest".into())
}

fn start(data: &std::path::Path, master: &str) -> Server {
    Server::start(data, &["--master", master, "--node-image", &node_image()])
}

async fn wait_subscribed(s: &Server, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let h = get(&s.api("/health")).await.json();
        if h["mesos"]["subscribed"] == true && h["mesos"]["reconciling"] == false {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "not subscribed after {secs} s: {h:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The value of one series in Prometheus text, 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

async fn wait_containers(
    expect: impl Fn(&BTreeSet<String>) -> bool,
    secs: u64,
    what: &str,
) -> BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let running = running_executors();
        if expect(&running) {
            return running;
        }
        assert!(
            Instant::now() < deadline,
            "containers not {what} after {secs} s: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_of_three_runs_in_three_containers_and_is_destroyed() {
    let Some(m) = master() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &m);
    wait_subscribed(&s, 30).await;
    register_reference(&s, &[]).await;
    let id = launch(&s, r#"{"size": 3}"#).await;
    let c = wait_status(&s, &id, "ready", 120).await;
    let tasks = task_ids(&c);
    assert_eq!(tasks.len(), 3);
    for n in c["nodes"].as_array().unwrap() {
        assert_eq!(n["status"], "running", "{n}");
        assert!(n["agent_id"].is_string() && n["host"].is_string(), "{n}");
        assert!(
            n["ports"]["http"].as_u64().is_some_and(|p| p >= 31000),
            "{n}"
        );
    }
    let statuses: Vec<&str> = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "registered",
            "scheduling",
            "scheduled",
            "configuring",
            "configured",
            "ready"
        ]
    );
    let running = wait_containers(|r| tasks.is_subset(r), 30, "running").await;
    eprintln!("3 containers of {} run: {running:?}", node_image());

    let m = get(&s.api("/metrics")).await.text();
    assert!(m.contains("paas_tasks_launched_total 3"), "{m}");
    assert!(
        m.contains("paas_task_updates_total{state=\"TASK_RUNNING\"} 3"),
        "{m}"
    );

    destroy(&s, &id).await;
    let c = wait_status(&s, &id, "destroyed", 60).await;
    assert!(
        c["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] == "killed"),
        "{c:#}"
    );
    wait_containers(|r| r.is_disjoint(&tasks), 60, "gone").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_keeps_the_framework_and_every_node() {
    let Some(m) = master() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &m);
    let fid = wait_subscribed(&s, 30).await["mesos"]["framework_id"]
        .as_str()
        .unwrap()
        .to_owned();
    register_reference(&s, &[]).await;
    let id = launch(&s, r#"{"size": 2}"#).await;
    let before = task_ids(&wait_status(&s, &id, "ready", 120).await);
    wait_containers(|r| before.is_subset(r), 30, "running").await;

    s.kill9();
    let s = start(dir.path(), &m);
    let h = wait_subscribed(&s, 60).await;
    assert_eq!(
        h["mesos"]["framework_id"],
        fid.as_str(),
        "the framework id survives the restart"
    );
    let c = cluster(&s, &id).await;
    assert_eq!(c["status"], "ready", "{c:#}");
    assert_eq!(
        task_ids(&c),
        before,
        "the same tasks: none lost, none relaunched"
    );
    assert!(
        c["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] == "running" && n["attempt"] == 1),
        "{c:#}"
    );
    // Reconciliation answered for both tasks, and no extra container appeared.
    let m = get(&s.api("/metrics")).await.text();
    let running_updates = metric(&m, "paas_task_updates_total{state=\"TASK_RUNNING\"}");
    assert!(
        running_updates >= 2.0,
        "reconciliation answered for both tasks: {m}"
    );
    assert!(
        !m.contains("paas_tasks_launched_total"),
        "nothing was launched after the restart: {m}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ours: BTreeSet<String> = running_executors()
        .into_iter()
        .filter(|e| e.starts_with(&id))
        .collect();
    assert_eq!(ours, before);

    destroy(&s, &id).await;
    wait_status(&s, &id, "destroyed", 60).await;
    wait_containers(|r| r.is_disjoint(&before), 60, "gone").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_does_not_fit_waits_says_why_and_proceeds_when_freed() {
    let Some(m) = master() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &m);
    wait_subscribed(&s, 30).await;
    register_reference(&s, &[]).await;
    // The kit's agent has 2 cpus: one big node fits, a second does not.
    let a = launch(&s, r#"{"size": 1, "cpu": 1.5}"#).await;
    wait_status(&s, &a, "ready", 120).await;
    let b = launch(&s, r#"{"size": 1, "cpu": 1.5}"#).await;
    let c = wait_for(&s, &b, 30, "waiting with a reason", |c| {
        c["status"] == "scheduling" && c["reason"].is_string()
    })
    .await;
    let reason = c["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("waiting for resources") && reason.contains("cpus"),
        "{reason}"
    );
    let node_msg = c["nodes"][0]["message"].as_str().unwrap_or_default();
    assert!(
        node_msg.contains("needs cpus 1.55"),
        "per-node reason: {node_msg}"
    );
    assert_eq!(c["nodes"][0]["status"], "queued");

    destroy(&s, &a).await;
    wait_status(&s, &a, "destroyed", 60).await;
    let c = wait_status(&s, &b, "ready", 120).await;
    assert!(
        c["reason"].is_null(),
        "the waiting reason is cleared: {c:#}"
    );
    destroy(&s, &b).await;
    wait_status(&s, &b, "destroyed", 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_mesos_outage_fails_the_cluster_and_the_framework_resubscribes() {
    let Some(m) = master() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let kit = common::realmesos_kit();
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &m);
    wait_subscribed(&s, 30).await;
    register_reference(&s, &[]).await;
    let id = launch(&s, r#"{"size": 2}"#).await;
    wait_status(&s, &id, "ready", 120).await;

    // Master and agent go down together, as in a datacentre outage, and come back empty.
    let stop = Command::new(kit.join("stop.sh")).output().expect("stop.sh");
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let started = Command::new(kit.join("start.sh"))
        .output()
        .expect("start.sh");
    assert!(
        started.status.success(),
        "start.sh: {}",
        String::from_utf8_lossy(&started.stderr)
    );

    let c = wait_status(&s, &id, "failed", 120).await;
    let reason = c["reason"].as_str().unwrap();
    assert!(reason.contains("TASK_LOST"), "{reason}");
    assert!(
        c["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["status"] == "lost"),
        "{c:#}"
    );
    eprintln!("after the outage: {reason}");
    let h = wait_subscribed(&s, 60).await;
    assert_eq!(h["ready"], true, "{h:#}");
    // A failed cluster is destroyed at once: nothing runs any more.
    destroy(&s, &id).await;
    wait_status(&s, &id, "destroyed", 30).await;
    // The new agent killed the orphaned containers.
    wait_containers(|r| !r.iter().any(|e| e.starts_with(&id)), 60, "gone").await;
}
