//! One scenario suite, run against mesos-local and against real Mesos (`../shared/realmesos`,
//! via `MESOS_MASTER`), asserting the same observable outcomes on both. When they differ,
//! mesos-local is wrong.
//!
//! Scenarios: launch to `ready`; five clusters at once; destroy; resources exhausted, the
//! cluster waits and says why, then proceeds once another is destroyed. Day 2: a node's
//! container is killed and the cluster heals by itself; the cluster is scaled 2 → 3, its
//! nodes' spec is changed (a rolling update, one node down at a time), and it is scaled to 1;
//! an update with an option of the wrong type is refused and changes nothing. (A framework
//! restart is in `tests/realmesos.rs`: mesos-local lives inside `paas serve`, so restarting
//! the framework restarts it too and there is nothing to compare.)
//!
//! Both backends get the same agent: 2 cpus, 4096 MB, ports 31000-32000 (the kit's default),
//! and run the node containers with Docker.

mod common;

use std::time::Instant;

use common::{Server, destroy, get, launch, register_reference, wait_for, wait_status};
use serde_json::Value;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const AGENT: &str = "cpus:2;mem:4096;disk:10240;ports:[31000-32000]";

fn node_image() -> String {
    std::env::var("PAAS_NODE_IMAGE").unwrap_or_else(|_| "paas-node:latest".into())
}

fn docker_ready() -> Result<(), String> {
    let info = std::process::Command::new("docker")
        .args(["image", "inspect", &node_image()])
        .output()
        .map_err(|e| e.to_string())?;
    if info.status.success() {
        Ok(())
    } else {
        Err(format!(
            "node image {} is missing (deploy/images/build-node-image.sh)",
            node_image()
        ))
    }
}

/// What a backend showed in the suite; compared across backends.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// The status history of the launched cluster.
    launch_history: Vec<String>,
    /// Statuses of the five clusters launched at once.
    five_at_once: Vec<String>,
    destroyed: bool,
    /// The waiting cluster: its status while waiting, whether its reason names cpus, and its
    /// status once the other cluster is gone.
    exhausted: (String, bool, String),
    day2: Day2,
}

/// What the day-2 scenarios showed.
#[derive(Debug, PartialEq)]
struct Day2 {
    /// After `docker kill` of node1: its attempt once the cluster is ready again, and whether
    /// the history went `healing` after the first `ready`.
    healed: (u64, bool),
    /// `(generation, node count, running containers)` once ready after each scale.
    scaled: Vec<(u64, usize, usize)>,
    /// A refused update (an option of the wrong type): its status, error code, and whether
    /// the record is unchanged.
    refused: (u16, String, bool),
    /// The rolling update of every node's spec (`cpu`) on 3 nodes: whether every node's
    /// attempt grew by exactly one, whether every node has the new spec, and the most nodes
    /// seen down at once.
    rolled: (bool, bool, usize),
}

async fn suite(s: &Server) -> Outcome {
    register_reference(s, &[]).await;
    let t = Instant::now();
    let id = launch(s, r#"{"size": 2}"#).await;
    let c = wait_status(s, &id, "ready", 120).await;
    eprintln!("  size 2 ready after {:.1} s", t.elapsed().as_secs_f64());
    let launch_history = statuses(&c);
    destroy(s, &id).await;
    let destroyed = wait_status(s, &id, "destroyed", 90).await["status"] == "destroyed";

    let t = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(launch(s, r#"{"size": 2}"#).await);
    }
    let mut five_at_once = Vec::new();
    for id in &ids {
        five_at_once.push(
            wait_status(s, id, "ready", 180).await["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    eprintln!(
        "  5 clusters of 2 ready after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    for id in &ids {
        destroy(s, id).await;
    }
    for id in &ids {
        wait_status(s, id, "destroyed", 90).await;
    }

    let a = launch(s, r#"{"size": 1, "cpu": 1.5}"#).await;
    wait_status(s, &a, "ready", 120).await;
    let b = launch(s, r#"{"size": 1, "cpu": 1.5}"#).await;
    let waiting = wait_for(s, &b, 60, "waiting with a reason", |c| {
        c["status"] == "scheduling" && c["reason"].is_string()
    })
    .await;
    let names_cpus = waiting["reason"]
        .as_str()
        .is_some_and(|r| r.contains("cpus"));
    destroy(s, &a).await;
    wait_status(s, &a, "destroyed", 90).await;
    let after = wait_status(s, &b, "ready", 120).await;
    destroy(s, &b).await;
    wait_status(s, &b, "destroyed", 90).await;
    let day2 = day2(s).await;
    Outcome {
        launch_history,
        five_at_once,
        destroyed,
        exhausted: (
            waiting["status"].as_str().unwrap_or_default().to_owned(),
            names_cpus,
            after["status"].as_str().unwrap_or_default().to_owned(),
        ),
        day2,
    }
}

async fn day2(s: &Server) -> Day2 {
    let t = Instant::now();
    let id = launch(s, r#"{"size": 2}"#).await;
    wait_status(s, &id, "ready", 120).await;
    common::docker_kill(&format!("{id}.node1.1"));
    let c = wait_for(s, &id, 120, "ready again with node1 at attempt 2", |c| {
        c["status"] == "ready" && c["nodes"][1]["attempt"] == 2
    })
    .await;
    let h = statuses(&c);
    let first_ready = h.iter().position(|x| x == "ready").unwrap_or(h.len());
    let healed = (
        c["nodes"][1]["attempt"].as_u64().unwrap_or_default(),
        h[first_ready..].iter().any(|x| x == "healing"),
    );
    eprintln!("  healed after {:.1} s", t.elapsed().as_secs_f64());

    let mut scaled = vec![scale(s, &id, 3).await];

    let before = get(&s.api(&format!("/clusters/{id}"))).await.json();
    let r = common::call(
        "PATCH",
        &s.api(&format!("/clusters/{id}")),
        r#"{"options": {"cpu": "lots"}}"#,
        &[common::JSON],
    )
    .await;
    let after = get(&s.api(&format!("/clusters/{id}"))).await.json();
    let refused = (r.status, r.code(), before == after);

    let t = Instant::now();
    let attempts = |c: &Value| -> Vec<u64> {
        c["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| n["attempt"].as_u64().unwrap_or_default())
            .collect()
    };
    let (c, most_down) =
        common::update_watching_down(s, &id, serde_json::json!({"cpu": 0.2}), 240).await;
    let grew = attempts(&c)
        .iter()
        .zip(attempts(&before))
        .all(|(now, was)| *now == was + 1);
    let all_new = c["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|n| n["cpu"] == 0.2);
    let rolled = (grew, all_new, most_down);
    eprintln!(
        "  rolled 3 nodes one at a time in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    scaled.push(scale(s, &id, 1).await);
    destroy(s, &id).await;
    wait_status(s, &id, "destroyed", 90).await;
    Day2 {
        healed,
        scaled,
        refused,
        rolled,
    }
}

/// Scales the cluster to `size` and waits for it: `(generation, nodes, running containers)`.
async fn scale(s: &Server, id: &str, size: u64) -> (u64, usize, usize) {
    let t = Instant::now();
    let g = common::patch(s, id, serde_json::json!({ "size": size })).await["generation"]
        .as_u64()
        .unwrap_or_default();
    let c = wait_for(s, id, 120, "ready at the new generation", |c| {
        c["status"] == "ready" && c["generation"] == g
    })
    .await;
    let tasks = common::task_ids(&c);
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    let running = loop {
        let running: Vec<String> = common::running_executors()
            .into_iter()
            .chain(common::executors_named("paaslocal-"))
            .filter(|e| e.starts_with(id))
            .collect();
        if running.len() == tasks.len() || Instant::now() > deadline {
            break running;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    eprintln!("  scaled to {size} in {:.1} s", t.elapsed().as_secs_f64());
    (g, c["nodes"].as_array().map_or(0, Vec::len), running.len())
}

fn statuses(c: &Value) -> Vec<String> {
    c["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["status"].as_str().map(str::to_owned))
        .collect()
}

fn expected() -> Outcome {
    Outcome {
        launch_history: [
            "registered",
            "scheduling",
            "scheduled",
            "configuring",
            "configured",
            "ready",
        ]
        .map(String::from)
        .to_vec(),
        five_at_once: vec!["ready".to_owned(); 5],
        destroyed: true,
        exhausted: ("scheduling".into(), true, "ready".into()),
        day2: Day2 {
            healed: (2, true),
            scaled: vec![(2, 3, 3), (4, 1, 1)],
            refused: (400, "invalid_options".into(), true),
            rolled: (true, true, 1),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_on_mesos_local() {
    if let Err(why) = docker_ready() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must build the node image: {why}"
        );
        eprintln!("SKIPPED: {why}");
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &[
            "--local-containerizer",
            "docker",
            "--local-resources",
            AGENT,
            "--node-image",
            &node_image(),
        ],
    );
    eprintln!("mesos-local:");
    let got = suite(&s).await;
    assert_eq!(got, expected());
    assert_eq!(
        get(&s.api("/health")).await.json()["mesos"]["subscribed"],
        true
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_on_real_mesos() {
    let Some(master) = common::mesos_master(
        "differential",
        "Run scripts/test.sh (it starts ../shared/realmesos) or export MESOS_MASTER=http://127.0.0.1:5050",
    ) else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        &["--master", &master, "--node-image", &node_image()],
    );
    let _teardown = common::TeardownOnPanic::of(&s, &master).await;
    eprintln!("real Mesos:");
    let got = suite(&s).await;
    assert_eq!(got, expected());
}
