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

/// `start`, subscribed, with the framework torn down at the master if the test panics (so a
/// failure leaves no container running).
async fn start_guarded(data: &std::path::Path, master: &str) -> (Server, common::TeardownOnPanic) {
    let s = start(data, master);
    let teardown = common::TeardownOnPanic::of(&s, master).await;
    (s, teardown)
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
async fn after_a_whole_mesos_outage_the_cluster_heals_by_itself() {
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

    // No API call: the lost nodes are replaced and the cluster is configured again.
    let c = wait_for(&s, &id, 180, "ready again with new attempts", |c| {
        c["status"] == "ready"
            && c["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["attempt"] == 2)
    })
    .await;
    let statuses = history(&c);
    let first_ready = statuses.iter().position(|s| s == "ready").unwrap();
    assert!(
        statuses[first_ready..].iter().any(|s| s == "healing"),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("ready"),
        "{statuses:?}"
    );
    let replaced: Vec<&str> = c["replacements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cause"].as_str().unwrap())
        .collect();
    assert_eq!(replaced.len(), 2, "{c:#}");
    assert!(
        replaced.iter().all(|r| r.contains("TASK_LOST")),
        "{replaced:?}"
    );
    eprintln!("after the outage: {replaced:?}");
    let h = wait_subscribed(&s, 60).await;
    assert_eq!(h["ready"], true, "{h:#}");
    let now = task_ids(&c);
    wait_containers(|r| now.is_subset(r), 30, "running").await;
    destroy(&s, &id).await;
    wait_status(&s, &id, "destroyed", 60).await;
    // The new agent killed the orphaned containers; ours went with the destroy.
    wait_containers(|r| !r.iter().any(|e| e.starts_with(&id)), 60, "gone").await;
}

/// The statuses of a cluster's history, oldest first.
fn history(c: &Value) -> Vec<String> {
    c["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap().to_owned())
        .collect()
}

/// `GET /config` of a reference node's `node-tool serve`: its peers file as it is on disk.
async fn peers_file(n: &Value) -> String {
    let url = format!(
        "http://{}:{}/config",
        n["address"].as_str().unwrap(),
        n["ports"]["http"]
    );
    let r = get(&url).await;
    assert_eq!(r.status, 200, "{url}");
    r.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_container_is_replaced_and_its_peers_follow() {
    let Some(m) = master() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (s, _teardown) = start_guarded(dir.path(), &m).await;
    register_reference(&s, &[]).await;
    let id = launch(&s, r#"{"size": 3}"#).await;
    let before = wait_status(&s, &id, "ready", 120).await;
    let victim = format!("{id}.node1.1");
    assert!(task_ids(&before).contains(&victim), "{before:#}");

    let killed = Command::new("docker")
        .args(["kill", &common::container_of(&victim)])
        .output()
        .expect("docker kill");
    assert!(killed.status.success(), "{killed:?}");

    let c = wait_for(&s, &id, 120, "ready again with node1 at attempt 2", |c| {
        c["status"] == "ready" && c["nodes"][1]["attempt"] == 2
    })
    .await;
    let statuses = history(&c);
    let healing = statuses
        .iter()
        .position(|s| s == "healing")
        .expect("went healing");
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("ready"),
        "{statuses:?}"
    );
    assert!(
        healing > statuses.iter().position(|s| s == "ready").unwrap(),
        "{statuses:?}"
    );
    assert_eq!(c["replacements"][0]["node"], "node1", "{c:#}");
    assert_eq!(c["replacements"][0]["attempt"], 1, "{c:#}");
    let nodes = c["nodes"].as_array().unwrap();
    assert_eq!(nodes[1]["task_id"], format!("{id}.node1.2"));
    for other in [0, 2] {
        assert_eq!(nodes[other]["attempt"], 1, "the others were left running");
        assert_eq!(nodes[other]["task_id"], before["nodes"][other]["task_id"]);
    }
    // The workers' peers files (every node of the cluster is a peer there), rewritten at
    // configure time, name node1's new address: the survivor's as well as the new node's.
    let new_peer = format!(
        "node1@{}:{}",
        nodes[1]["address"].as_str().unwrap(),
        nodes[1]["ports"]["http"]
    );
    for n in &nodes[1..] {
        let file = peers_file(n).await;
        assert!(file.contains(&new_peer), "{}: {file}", n["name"]);
    }
    assert!(peers_file(&nodes[0]).await.contains("name = node0"));
    let now = task_ids(&c);
    let running = wait_containers(|r| now.is_subset(r), 30, "running").await;
    assert!(!running.contains(&victim), "{running:?}");

    destroy(&s, &id).await;
    wait_status(&s, &id, "destroyed", 60).await;
    wait_containers(|r| !r.iter().any(|e| e.starts_with(&id)), 60, "gone").await;
}

/// The node names of a worker's peers line, in order.
async fn peers_named_by(n: &Value) -> Vec<String> {
    let file = peers_file(n).await;
    let line = file
        .lines()
        .find_map(|l| l.strip_prefix("peers = "))
        .unwrap_or_else(|| panic!("no peers line: {file}"));
    line.split(',')
        .map(|p| p.split('@').next().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_product_scales_3_to_5_to_2_and_its_peers_follow() {
    let Some(m) = master() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let (s, _teardown) = start_guarded(dir.path(), &m).await;
    register_reference(&s, &[]).await;
    let id = launch(&s, r#"{"size": 3}"#).await;
    let first = wait_status(&s, &id, "ready", 120).await;
    let kept = task_ids(&first);

    for (size, generation) in [(5u64, 2u64), (2, 3)] {
        let accepted = common::patch(&s, &id, serde_json::json!({ "size": size })).await;
        assert_eq!(accepted["generation"], generation, "{accepted}");
        assert_eq!(accepted["status"], "updating", "{accepted}");
        let c = wait_for(
            &s,
            &id,
            120,
            &format!("ready at generation {generation}"),
            |c| c["status"] == "ready" && c["generation"] == generation,
        )
        .await;
        let nodes = c["nodes"].as_array().unwrap();
        assert_eq!(nodes.len() as u64, size, "{c:#}");
        assert!(c["retiring"].is_null(), "nothing left retiring: {c:#}");
        let want: Vec<String> = (0..size).map(|i| format!("node{i}")).collect();
        for n in &nodes[1..] {
            assert_eq!(peers_named_by(n).await, want, "{}", n["name"]);
        }
        // Exactly the desired containers run: the added ones, none of the removed ones.
        let tasks = task_ids(&c);
        let running = wait_containers(
            |r| {
                let ours: BTreeSet<String> =
                    r.iter().filter(|e| e.starts_with(&id)).cloned().collect();
                ours == tasks
            },
            60,
            &format!("exactly the {size} nodes"),
        )
        .await;
        eprintln!("size {size}: {running:?}");
        // Nodes kept through an update keep their task.
        for t in kept.iter().filter(|t| tasks.contains(*t)) {
            assert!(t.ends_with(".1"), "{t}");
        }
        let statuses = history(&c);
        assert_eq!(
            &statuses[statuses.len() - 2..],
            ["updating", "ready"],
            "{statuses:?}"
        );
    }
    let log = get(&s.api(&format!("/clusters/{id}/logs"))).await.text();
    for node in ["node2", "node3", "node4"] {
        assert!(log.contains(&format!("node {node} drained")), "{log}");
    }

    // A node replaced on request: a new attempt, the old task gone, peers following.
    let r = common::call(
        "POST",
        &s.api(&format!("/clusters/{id}/nodes/node1/replace")),
        "",
        &[],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["generation"], 4);
    let c = wait_for(&s, &id, 120, "ready at generation 4", |c| {
        c["status"] == "ready" && c["generation"] == 4
    })
    .await;
    assert_eq!(c["nodes"][1]["attempt"], 2, "{c:#}");
    assert!(
        c["replacements"].is_null(),
        "a requested replacement is not a failure"
    );
    let tasks = task_ids(&c);
    wait_containers(
        |r| {
            r.iter()
                .filter(|e| e.starts_with(&id))
                .cloned()
                .collect::<BTreeSet<_>>()
                == tasks
        },
        60,
        "exactly the new attempt",
    )
    .await;
    assert_eq!(peers_named_by(&c["nodes"][1]).await, ["node0", "node1"]);
    let r = common::call(
        "POST",
        &s.api(&format!("/clusters/{id}/nodes/node7/replace")),
        "",
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (404, "not_found".to_owned()),
        "{}",
        r.text()
    );

    // A restart in place: same tasks, the services stopped and started again, ready.
    let before = task_ids(&c);
    let r = common::call(
        "POST",
        &s.api(&format!("/clusters/{id}/nodes/node0/restart")),
        "",
        &[],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let c = wait_for(&s, &id, 120, "ready at generation 5", |c| {
        c["status"] == "ready" && c["generation"] == 5
    })
    .await;
    assert_eq!(task_ids(&c), before, "a restart keeps the tasks");
    let log = get(&s.api(&format!("/clusters/{id}/logs"))).await.text();
    assert!(log.contains("restart: services of node0 stopped"), "{log}");

    destroy(&s, &id).await;
    wait_status(&s, &id, "destroyed", 60).await;
    wait_containers(|r| !r.iter().any(|e| e.starts_with(&id)), 60, "gone").await;
}
