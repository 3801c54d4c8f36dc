//! Persist before ACK, under a crash: the framework (`paas serve --master URL`) runs against
//! a mesos-local master in another `paas serve` process (simulated agents: every launch is
//! RUNNING at once, so updates arrive in bursts the event loop takes as batches). The
//! framework is killed with SIGKILL while a burst of launches is under way; then every
//! update the master saw acknowledged must be in the framework's store, and still after a
//! restart, which then brings every node to RUNNING.
//!
//! mesos-local shows per task the state of the last update the framework acknowledged
//! (`acknowledged` in `/master/state`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{JSON, Server, call, get};
use paas::domain::{NodeStatus, TaskId};
use paas::registry::{SledStore, Store};
use serde_json::json;

const CLUSTERS: usize = 40;
const SIZE: usize = 5;

// Spaces keep `{ {{` from reading as a triple-stash. No services: nothing to configure.
const TEMPLATE: &str = r#"{"nodes": { {{#each (range 0 opts.size)}}{{#unless @first}},{{/unless}}"n{{this}}": {"docker_image": "crash", "cpu": 0.01, "mem": 1}{{/each}} } }"#;

/// The master's process: `paas serve` with mesos-local on simulated agents (killed when
/// dropped, as every [`Server`]), and its URL.
fn start_master(data: &Path) -> (Server, String) {
    let master = Server::start(
        data,
        &[
            "--local-containerizer",
            "simulated",
            "--local-agents",
            "4",
            "--local-resources",
            "cpus:8;mem:4096;disk:1024;ports:[20000-20999]",
        ],
    );
    let url = master
        .local_master()
        .unwrap_or_else(|| panic!("no master URL logged:\n{}", master.log));
    (master, url)
}

/// Our framework's tasks on the master at `url`, by task id: (state, state of the last
/// acknowledged update).
async fn tasks(url: &str, framework_id: &str) -> BTreeMap<String, (String, Option<String>)> {
    let state = get(&format!("{url}/master/state")).await.json();
    state["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter(|t| t["framework_id"] == framework_id)
        .map(|t| {
            (
                t["task_id"].as_str().unwrap().to_owned(),
                (
                    t["state"].as_str().unwrap().to_owned(),
                    t["acknowledged"].as_str().map(str::to_owned),
                ),
            )
        })
        .collect()
}

/// How far along the launch a node status is; a later update never goes back.
fn rank(s: NodeStatus) -> u8 {
    match s {
        NodeStatus::Queued => 0,
        NodeStatus::Staging => 1,
        NodeStatus::Starting => 2,
        NodeStatus::Running => 3,
        _ => 4,
    }
}

fn rank_of_state(state: &str) -> u8 {
    match state {
        "TASK_STAGING" => 1,
        "TASK_STARTING" => 2,
        "TASK_RUNNING" => 3,
        _ => 4,
    }
}

/// The framework id and, per task id, the node status the framework's store holds. Opens
/// the store of a framework that is not running.
fn stored(data: &Path) -> (String, BTreeMap<String, NodeStatus>) {
    let store = SledStore::open(data).expect("the killed framework's store opens");
    let fid = store.meta("framework_id").unwrap().unwrap_or_default();
    let mut nodes = BTreeMap::new();
    for c in store.clusters().unwrap() {
        for n in &c.nodes {
            if let Some(t) = &n.observed.task_id {
                nodes.insert(t.to_string(), n.observed.status);
            }
        }
    }
    (fid, nodes)
}

/// Every acknowledged update of `tasks` is reflected in `nodes`: the task is on record and
/// its node is at least as far along as the acknowledged state. Returns how many tasks had
/// an acknowledged update.
fn check_acknowledged(
    tasks: &BTreeMap<String, (String, Option<String>)>,
    nodes: &BTreeMap<String, NodeStatus>,
) -> usize {
    let mut acked = 0;
    for (task, (_, ack)) in tasks {
        let Some(ack) = ack else { continue };
        acked += 1;
        assert!(TaskId::parse(task).is_ok(), "a task of ours: {task}");
        let status = nodes
            .get(task)
            .unwrap_or_else(|| panic!("task {task} acknowledged {ack} but not in the store"));
        assert!(
            rank(*status) >= rank_of_state(ack),
            "task {task}: acknowledged {ack}, stored {status:?}"
        );
    }
    acked
}

async fn register_product(f: &Server) {
    let r = call(
        "POST",
        &f.api("/products"),
        r#"{"name":"crash","version":"1"}"#,
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = call("PUT", &f.api("/products/crash/1/template"), TEMPLATE, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let options = json!({"required": {"size": 1}}).to_string();
    let r = call("PUT", &f.api("/products/crash/1/options"), options, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Polls every 20 ms (see [`common::poll`]).
async fn poll<T>(secs: u64, what: &str, f: impl AsyncFnMut() -> Option<T>) -> T {
    common::poll(secs, Duration::from_millis(20), what, f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_update_is_lost_when_serve_is_killed_mid_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (master, master_url) = start_master(&dir.path().join("master"));
    let data = dir.path().join("framework");
    let mut f = Server::start(&data, &["--master", &master_url]);
    register_product(&f).await;
    let health = poll(30, "the framework to subscribe", async || {
        let h = get(&f.api("/health")).await.json();
        (h["mesos"]["subscribed"] == true).then_some(h)
    })
    .await;
    let fid = health["mesos"]["framework_id"].as_str().unwrap().to_owned();

    // A burst of launches; the framework dies as soon as the master has seen some of it
    // acknowledged, while the rest is still being placed, updated and acknowledged.
    let body = json!({ "size": SIZE }).to_string();
    for _ in 0..CLUSTERS {
        let r = call("POST", &f.api("/products/crash/1"), body.clone(), &[JSON]).await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    poll(60, "a first acknowledged update", async || {
        let t = tasks(&master_url, &fid).await;
        t.values().any(|(_, a)| a.is_some()).then_some(())
    })
    .await;
    f.kill9();

    let before = tasks(&master_url, &fid).await;
    let (stored_fid, nodes) = stored(&data);
    assert_eq!(stored_fid, fid);
    let acked = check_acknowledged(&before, &nodes);
    let unacked = before.values().filter(|(_, a)| a.is_none()).count();
    eprintln!(
        "killed with {} tasks on the master: {acked} acknowledged, {unacked} not yet; {} nodes on record",
        before.len(),
        nodes.len()
    );
    assert!(acked > 0);

    // Restarted on the same data, the framework gets the unacknowledged updates again and
    // every node it knows runs.
    let f = Server::start(&data, &["--master", &master_url]);
    let clusters = poll(120, "every node to run after the restart", async || {
        let page = get(&f.api("/clusters")).await.json();
        let list = page["clusters"].as_array().cloned().unwrap_or_default();
        if list.len() < CLUSTERS {
            return None;
        }
        let mut all = Vec::new();
        for c in &list {
            let id = c["id"].as_str().unwrap();
            let full = get(&f.api(&format!("/clusters/{id}"))).await.json();
            let running = full["nodes"]
                .as_array()
                .is_some_and(|ns| ns.iter().all(|n| n["status"] == "running"));
            if !running {
                return None;
            }
            all.push(full);
        }
        Some(all)
    })
    .await;
    assert_eq!(clusters.len(), CLUSTERS);
    let tasks_after = tasks(&master_url, &fid).await;
    drop(f);
    let (_, nodes_after) = stored(&data);
    // What was acknowledged before the kill is still on record, and so is everything
    // acknowledged since.
    check_acknowledged(&before, &nodes_after);
    check_acknowledged(&tasks_after, &nodes_after);
    for (task, (state, _)) in &tasks_after {
        if state == "TASK_RUNNING" {
            assert_eq!(
                nodes_after.get(task),
                Some(&NodeStatus::Running),
                "task {task} runs on the master"
            );
        }
    }
    drop(master);
}
