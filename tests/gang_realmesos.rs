//! Gang placement against a REAL Apache Mesos 1.11 master and agent (`../shared/realmesos`,
//! Docker containerizer): a cluster's nodes are placed all together or not at all, so two
//! clusters that each fit the agent alone, but not together, run one after the other and
//! the waiting one never holds part of the agent.
//!
//! `MESOS_MASTER` names the master and `PAAS_NODE_IMAGE` the node image (default
//! `paas-node:latest`). Without `MESOS_MASTER` the test says why it does not run; under
//! `CI=true` that is a failure, never a silent pass. It sizes the clusters from the agent's
//! free resources, so it needs the agent to itself: run it under the machine-wide lock the
//! other real-Mesos tests take.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    Server, cluster, destroy, get, launch, register_reference, running_executors, task_ids,
    wait_status,
};
use serde_json::Value;

/// The framework's executor overhead per node (`SchedulerConfig::new`).
const EXECUTOR_CPUS: f64 = 0.05;
const SIZE: usize = 2;

/// The master URL, or `None` (with the reason printed) when this test cannot run here.
fn master() -> Option<String> {
    match std::env::var("MESOS_MASTER") {
        Ok(m) if !m.is_empty() => Some(m),
        _ => {
            assert!(
                std::env::var("CI").is_err(),
                "CI must provide MESOS_MASTER (scripts/test.sh starts ../shared/realmesos)"
            );
            eprintln!(
                "SKIPPED: MESOS_MASTER is not set; run scripts/test.sh (it starts ../shared/realmesos) or export MESOS_MASTER=http://127.0.0.1:5050"
            );
            None
        }
    }
}

fn node_image() -> String {
    std::env::var("PAAS_NODE_IMAGE").unwrap_or_else(|_| "paas-node:latest".into())
}

/// The one agent's free cpus (total minus used) and its used cpus.
async fn agent_cpus(master: &str) -> (f64, f64) {
    let slaves = get(&format!("{master}/master/slaves")).await.json();
    let agents = slaves["slaves"].as_array().expect("slaves");
    assert_eq!(agents.len(), 1, "the kit runs one agent: {slaves:#}");
    let total = agents[0]["resources"]["cpus"].as_f64().expect("cpus");
    let used = agents[0]["used_resources"]["cpus"]
        .as_f64()
        .unwrap_or_default();
    (total - used, used)
}

/// Live (not terminal) states of a Mesos task.
fn live(state: &str) -> bool {
    matches!(
        state,
        "TASK_STAGING" | "TASK_STARTING" | "TASK_RUNNING" | "TASK_KILLING"
    )
}

/// What Mesos showed of the two clusters' tasks at one moment.
#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    /// `(task id, state)` of every task of either cluster the master knows (completed ones
    /// included).
    tasks: Vec<(String, String)>,
}

impl Sample {
    fn of<'a>(&'a self, cluster: &'a str) -> impl Iterator<Item = &'a (String, String)> {
        self.tasks
            .iter()
            .filter(move |(id, _)| id.starts_with(cluster))
    }

    fn live(&self, cluster: &str) -> usize {
        self.of(cluster).filter(|(_, s)| live(s)).count()
    }

    fn any(&self, cluster: &str) -> usize {
        self.of(cluster).count()
    }
}

async fn sample(master: &str, ids: &[String], started: Instant) -> Sample {
    let tasks = get(&format!("{master}/master/tasks?limit=10000"))
        .await
        .json();
    Sample {
        at: started.elapsed(),
        tasks: tasks["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let (id, state) = (t["id"].as_str()?, t["state"].as_str()?);
                ids.iter()
                    .any(|c| id.starts_with(c.as_str()))
                    .then(|| (id.to_owned(), state.to_owned()))
            })
            .collect(),
    }
}

/// Polls the master's tasks of `ids` every 250 ms until `stop`, from the moment it starts.
fn watch_tasks(
    master: String,
    ids: Vec<String>,
    stop: Arc<AtomicBool>,
) -> (Arc<Mutex<Vec<Sample>>>, tokio::task::JoinHandle<()>) {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let out = samples.clone();
    let started = Instant::now();
    let handle = tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let s = sample(&master, &ids, started).await;
            out.lock().unwrap().push(s);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    (samples, handle)
}

fn queued_without_task(c: &Value) -> bool {
    c["nodes"].as_array().is_some_and(|ns| {
        ns.iter()
            .all(|n| n["status"] == "queued" && n["task_id"].is_null() && n["agent_id"].is_null())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_that_fit_only_alone_run_in_turn_and_the_waiting_one_holds_nothing() {
    let Some(m) = master() else { return };
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--master", &m, "--node-image", &node_image()]);
    let _teardown = common::TeardownOnPanic::of(&s, &m).await;
    register_reference(&s, &[]).await;

    // One cluster takes about 65 % of the agent's free cpus: one fits, two do not, and what
    // the first leaves (35 %) still holds one node of the second (32.5 %), which is what
    // node-by-node placement would take.
    let (free, used_before) = agent_cpus(&m).await;
    let per_node = ((0.65 * free / SIZE as f64 - EXECUTOR_CPUS) * 100.0).floor() / 100.0;
    let node_total = per_node + EXECUTOR_CPUS;
    let cluster_total = node_total * SIZE as f64;
    assert!(
        per_node > 0.0 && cluster_total <= free && 2.0 * cluster_total > free,
        "one cluster of {SIZE} × {per_node} cpus must fit {free} free cpus, two must not"
    );
    assert!(
        free - cluster_total >= node_total,
        "the test must be able to see a partial hold"
    );
    eprintln!(
        "agent: {free} cpus free; clusters of {SIZE} nodes × {per_node} cpus (+{EXECUTOR_CPUS} executor)"
    );

    // Both at once.
    let body = format!(r#"{{"size": {SIZE}, "cpu": {per_node}}}"#);
    let a = launch(&s, &body).await;
    let b = launch(&s, &body).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (samples, watcher) = watch_tasks(m.clone(), vec![a.clone(), b.clone()], stop.clone());

    // One of them goes ready; the other waits.
    let deadline = Instant::now() + Duration::from_secs(180);
    let (first, second) = loop {
        let (ca, cb) = (cluster(&s, &a).await, cluster(&s, &b).await);
        for c in [&ca, &cb] {
            assert!(
                !matches!(c["status"].as_str(), Some("failed" | "destroyed")),
                "{c:#}"
            );
        }
        match (ca["status"] == "ready", cb["status"] == "ready") {
            (true, true) => {
                panic!("both clusters ready at once: they fit together\n{ca:#}\n{cb:#}")
            }
            (true, false) => break (a.clone(), b.clone()),
            (false, true) => break (b.clone(), a.clone()),
            (false, false) => {}
        }
        assert!(
            Instant::now() < deadline,
            "neither cluster ready after 180 s:\n{ca:#}\n{cb:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let first_tasks = task_ids(&cluster(&s, &first).await);
    eprintln!("{first} is ready first; {second} waits");

    // While the first holds the agent, for a while (several offer rounds: the waiting
    // cluster's offers are refused for 5 s at a time), the second waits whole: every node
    // queued, no task at Mesos, no cpus used beyond the first cluster's.
    let hold = Instant::now();
    let mut rounds = 0;
    let mut reason = String::new();
    while hold.elapsed() < Duration::from_secs(20) {
        let c = cluster(&s, &second).await;
        // `registered` until the first offer round that sees it (a master allocates once a
        // second: its launch may have come just after the round that placed the first).
        assert!(
            c["status"] == "scheduling" || (c["status"] == "registered" && reason.is_empty()),
            "{c:#}"
        );
        assert!(
            queued_without_task(&c),
            "the waiting cluster holds a node: {c:#}"
        );
        if let Some(r) = c["reason"].as_str() {
            reason = r.to_owned();
        }
        let now = sample(&m, std::slice::from_ref(&second), hold).await;
        assert_eq!(
            now.any(&second),
            0,
            "the waiting cluster has tasks at Mesos: {:?}",
            now.tasks
        );
        let (_, used) = agent_cpus(&m).await;
        assert!(
            used - used_before <= cluster_total + 0.001,
            "the agent uses {used} cpus ({used_before} before): more than the first cluster's {cluster_total}"
        );
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        reason.starts_with("waiting for resources")
            && reason.contains("placed whole or not at all")
            && reason.contains("cpus"),
        "the waiting cluster says why: {reason:?}"
    );
    eprintln!("{second} waited {rounds} polls holding nothing: {reason}");

    // The first goes; the second follows, whole.
    destroy(&s, &first).await;
    wait_status(&s, &first, "destroyed", 90).await;
    let c = wait_status(&s, &second, "ready", 180).await;
    assert!(
        c["reason"].is_null(),
        "the waiting reason is cleared: {c:#}"
    );
    let second_tasks = task_ids(&c);
    assert_eq!(second_tasks.len(), SIZE);
    destroy(&s, &second).await;
    wait_status(&s, &second, "destroyed", 90).await;

    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    let samples = samples.lock().unwrap().clone();

    // Over the whole run: never both clusters with live tasks, and no task of the second
    // before the first's last live task ended.
    for smp in &samples {
        assert!(
            smp.live(&first) == 0 || smp.any(&second) == 0,
            "at {:?} the second cluster had a task while the first held the agent: {:?}",
            smp.at,
            smp.tasks
        );
    }
    assert!(
        samples.iter().any(|x| x.live(&first) == SIZE),
        "the watcher saw the first cluster run"
    );
    assert!(
        samples.iter().any(|x| x.live(&second) == SIZE),
        "the watcher saw the second cluster run"
    );
    eprintln!(
        "{} samples of the master's tasks, no overlap",
        samples.len()
    );

    // Their containers are gone.
    let all: BTreeSet<String> = first_tasks.union(&second_tasks).cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running = running_executors();
        if running.is_disjoint(&all) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "containers still running after 60 s: {:?}",
            running.intersection(&all).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
