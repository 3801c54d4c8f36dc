//! Our real framework (`paas serve --master <mesos-local>`) against an in-process
//! mesos-local, with the faults real Mesos cannot produce on demand on one machine:
//! a dropped scheduler stream, a master failover, a lost agent. The executors are real
//! `paas executor` processes (process containerizer).

mod common;

use std::time::Duration;

use common::{JSON, Server, call, get, register_reference};
use paas::mesos_local::{self, ContainerizerMode, LocalConfig, MesosLocal, Quantities, Snapshot};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Local {
    handle: MesosLocal,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Local {
    /// Stops mesos-local and waits until every executor process is gone.
    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(20), self.tracker.wait())
            .await
            .expect("mesos-local stops within 20 s");
    }
}

async fn local(work: &std::path::Path) -> Local {
    local_with(work, ContainerizerMode::Process).await
}

async fn local_with(work: &std::path::Path, containerizer: ContainerizerMode) -> Local {
    let mut cfg = LocalConfig::new(work);
    cfg.containerizer = containerizer;
    cfg.executor_path = Some(env!("CARGO_BIN_EXE_paas").into());
    cfg.agents = 2;
    // Ports below the 31000+ that real Mesos agents (and other checkouts' tests) use on
    // this machine: the NodeAgents bind them on the host.
    cfg.resources = Quantities::parse("cpus:1;mem:1024;disk:1024;ports:[30000-30100]").unwrap();
    cfg.allocation_interval = Duration::from_millis(200);
    cfg.update_retry = Duration::from_secs(1);
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let handle = mesos_local::start(cfg, shutdown.clone(), &tracker)
        .await
        .unwrap();
    Local {
        handle,
        shutdown,
        tracker,
    }
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `secs`.
async fn wait_for<T>(secs: u64, what: &str, f: impl AsyncFnMut() -> Option<T>) -> T {
    common::poll(secs, Duration::from_millis(200), what, f).await
}

async fn cluster(s: &Server, id: &str) -> Value {
    get(&s.api(&format!("/clusters/{id}"))).await.json()
}

async fn nodes(s: &Server, id: &str) -> Vec<Value> {
    get(&s.api(&format!("/clusters/{id}/nodes"))).await.json()["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

fn connected(snap: &Snapshot) -> Option<(String, String)> {
    snap.frameworks
        .iter()
        .find(|f| f.connected)
        .map(|f| (f.id.clone(), f.stream_id.clone().unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread")]
async fn framework_survives_stream_drop_and_failover_and_heals_a_lost_agent() {
    let dir = tempfile::tempdir().unwrap();
    let l = local(&dir.path().join("mesos")).await;
    let s = Server::start(
        &dir.path().join("data"),
        &["--master", &l.handle.master_url],
    );
    register_reference(&s, &[]).await;
    common::nodes_only(&s).await;
    let r = call(
        "POST",
        &s.api("/products/reference/1.0.0"),
        r#"{"size": 2}"#,
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();

    wait_for(
        60,
        "the cluster to be ready with 2 running nodes",
        async || {
            let c = cluster(&s, &id).await;
            let ns = nodes(&s, &id).await;
            (c["status"] == "ready" && ns.iter().all(|n| n["status"] == "running")).then_some(())
        },
    )
    .await;
    // mesos-local carries the executor's TASK_RUNNING `data` through: the NodeAgent's
    // certificate pin is on every node.
    for n in nodes(&s, &id).await {
        assert_eq!(
            n["agent_cert_sha256"].as_str().map(str::len),
            Some(64),
            "{n:#}"
        );
    }
    let snap = l.handle.snapshot().await.unwrap();
    assert_eq!(snap.tasks.len(), 2);
    assert!(
        snap.tasks.iter().all(|t| t.state == "TASK_RUNNING"),
        "{snap:?}"
    );
    assert_eq!(snap.executors, 2);
    let (fid, sid) = connected(&snap).expect("the framework is connected");

    // 1. The stream breaks: the framework resubscribes with its id; nothing else changes.
    l.handle.drop_stream(None).await.unwrap().unwrap();
    let (fid2, sid2) = wait_for(30, "the framework to resubscribe", async || {
        connected(&l.handle.snapshot().await.unwrap()).filter(|(_, s2)| *s2 != sid)
    })
    .await;
    assert_eq!(fid2, fid, "resubscribed with the same framework id");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cluster(&s, &id).await["status"], "ready");
    assert!(
        nodes(&s, &id)
            .await
            .iter()
            .all(|n| n["status"] == "running")
    );

    // 2. The master fails over: new master id, same framework id accepted.
    let master = l.handle.fail_over().await.unwrap().unwrap();
    let (fid3, _) = wait_for(
        30,
        "the framework to resubscribe after failover",
        async || connected(&l.handle.snapshot().await.unwrap()).filter(|(_, s3)| *s3 != sid2),
    )
    .await;
    assert_eq!(fid3, fid);
    assert_eq!(l.handle.snapshot().await.unwrap().master_id, master);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cluster(&s, &id).await["status"], "ready");

    // 3. An agent is lost: its nodes are lost (TASK_LOST) and replaced on the other agent
    //    by new attempts; the cluster heals instead of failing.
    let ns = nodes(&s, &id).await;
    let victim = ns[0]["agent_id"].as_str().unwrap().to_owned();
    let lost: Vec<String> = ns
        .iter()
        .filter(|n| n["agent_id"] == victim.as_str())
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect();
    let index = l
        .handle
        .snapshot()
        .await
        .unwrap()
        .agents
        .iter()
        .position(|a| a.id == victim)
        .unwrap();
    assert_eq!(
        l.handle.lose_agent(index).await.unwrap(),
        Some(victim.clone())
    );
    let c = wait_for(
        60,
        "the lost nodes to run again on the other agent",
        async || {
            let c = cluster(&s, &id).await;
            let replaced = c["nodes"].as_array().unwrap().iter().all(|n| {
                let was_lost = lost.iter().any(|l| n["name"] == l.as_str());
                n["status"] == "running"
                    && n["agent_id"] != victim.as_str()
                    && (!was_lost || n["attempt"] == 2)
            });
            replaced.then_some(c)
        },
    )
    .await;
    assert_ne!(c["status"], "failed", "{c:#}");
    let causes: Vec<&str> = c["replacements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cause"].as_str().unwrap())
        .collect();
    assert_eq!(causes.len(), lost.len(), "{c:#}");
    assert!(causes.iter().all(|r| r.contains("TASK_LOST")), "{causes:?}");

    // 4. Destroy: every task and executor goes.
    let r = call("DELETE", &s.api(&format!("/clusters/{id}")), "", &[]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    wait_for(60, "the cluster to be destroyed", async || {
        (cluster(&s, &id).await["status"] == "destroyed").then_some(())
    })
    .await;
    wait_for(30, "every executor to exit", async || {
        let snap = l.handle.snapshot().await.unwrap();
        (snap.executors == 0 && snap.tasks.is_empty()).then_some(())
    })
    .await;
    drop(s);
    l.stop().await;
}

/// Gang placement over several agents (one real agent is all `../shared/realmesos` runs with
/// the Docker containerizer, so this runs on mesos-local with two agents of 1 cpu, and
/// simulated executors: placement is what is under test, and two agents on one host would
/// hand out the same host ports). A cluster of 3 nodes of 0.4 cpu (+0.05 for each executor)
/// fits no single agent: it is placed across both, all together. A second cluster of 2 such
/// nodes then fits only in part (one node's worth is left on one agent): it waits, holding
/// no task at all, and is placed whole once the first is destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_spans_agents_and_a_cluster_that_fits_in_part_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let l = local_with(&dir.path().join("mesos"), ContainerizerMode::Simulated).await;
    let s = Server::start(
        &dir.path().join("data"),
        &["--master", &l.handle.master_url],
    );
    register_reference(&s, &[]).await;
    let launch = async |size: u32| {
        let body = format!(r#"{{"size": {size}, "cpu": 0.4}}"#);
        let r = call("POST", &s.api("/products/reference/1.0.0"), body, &[JSON]).await;
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_owned()
    };
    let placed = async |id: &str| {
        let ns = nodes(&s, id).await;
        ns.iter().all(|n| n["status"] == "running").then(|| {
            ns.iter()
                .map(|n| n["agent_id"].to_string())
                .collect::<Vec<_>>()
        })
    };

    let a = launch(3).await;
    let agents = wait_for(30, "cluster A placed", async || placed(&a).await).await;
    let distinct: std::collections::BTreeSet<_> = agents.iter().collect();
    assert_eq!(distinct.len(), 2, "3 nodes over both agents: {agents:?}");

    let b = launch(2).await;
    let c = wait_for(30, "cluster B to wait with its reason", async || {
        let c = cluster(&s, &b).await;
        c["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cpus"))
            .then_some(c)
    })
    .await;
    assert_eq!(c["status"], "scheduling", "{c:#}");
    // Several allocation rounds later, B still holds nothing, not even the node that fits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snap = l.handle.snapshot().await.unwrap();
    let of_b = snap
        .tasks
        .iter()
        .filter(|t| t.task_id.starts_with(&b))
        .count();
    assert_eq!(of_b, 0, "B holds part of an agent: {snap:?}");
    assert_eq!(snap.tasks.len(), 3, "{snap:?}");

    let r = call("DELETE", &s.api(&format!("/clusters/{a}")), "", &[]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let agents = wait_for(30, "cluster B placed once A is gone", async || {
        placed(&b).await
    })
    .await;
    assert_eq!(agents.len(), 2);
    let snap = l.handle.snapshot().await.unwrap();
    assert!(
        snap.tasks.iter().all(|t| t.task_id.starts_with(&b)),
        "only B's tasks are left: {snap:?}"
    );
    drop(s);
    l.stop().await;
}

/// An ACCEPT whose answer is an error may or may not have been carried out by the master.
/// Lost call: the master never saw it, so its offers stay outstanding until the framework
/// declines them (a master does not time offers out), and its tasks are unknown to the
/// master. A gang of 3 nodes of 0.4 cpu spans both agents of 1 cpu, so the lost nodes can
/// run again only on the resources of the lost call's offer: they do only if it was
/// declined. Lost answer: the tasks run; reconciliation finds them, and nothing is launched
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_accept_holds_no_offer_and_its_tasks_are_reconciled() {
    let dir = tempfile::tempdir().unwrap();
    let l = local_with(&dir.path().join("mesos"), ContainerizerMode::Simulated).await;
    let s = Server::start(
        &dir.path().join("data"),
        &["--master", &l.handle.master_url],
    );
    register_reference(&s, &[]).await;
    common::nodes_only(&s).await;
    let launch = async |size: u32| {
        let body = format!(r#"{{"size": {size}, "cpu": 0.4}}"#);
        let r = call("POST", &s.api("/products/reference/1.0.0"), body, &[JSON]).await;
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_owned()
    };
    let running = async |id: &str| {
        let ns = nodes(&s, id).await;
        ns.iter().all(|n| n["status"] == "running").then_some(ns)
    };

    // 1. Lost call.
    assert_eq!(
        l.handle.fail_accepts(1, false).await.unwrap().as_deref(),
        Some("1")
    );
    let a = launch(3).await;
    let ns = wait_for(60, "cluster A to run on the declined offer", async || {
        running(&a).await
    })
    .await;
    assert_eq!(accepts_failed(&s).await, 1.0);
    let attempts: Vec<u64> = ns.iter().map(|n| n["attempt"].as_u64().unwrap()).collect();
    assert!(
        attempts.iter().any(|&n| n > 1),
        "the lost call's nodes were launched again: {ns:#?}"
    );
    let snap = l.handle.snapshot().await.unwrap();
    assert_eq!(snap.tasks.len(), 3, "{snap:?}");
    assert!(
        snap.tasks.iter().all(|t| t.state == "TASK_RUNNING"),
        "{snap:?}"
    );
    let r = call("DELETE", &s.api(&format!("/clusters/{a}")), "", &[]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    wait_for(30, "cluster A's tasks to go", async || {
        l.handle
            .snapshot()
            .await
            .unwrap()
            .tasks
            .is_empty()
            .then_some(())
    })
    .await;

    // 2. Lost answer.
    assert_eq!(
        l.handle.fail_accepts(1, true).await.unwrap().as_deref(),
        Some("1")
    );
    let b = launch(1).await;
    let ns = wait_for(60, "cluster B to run", async || running(&b).await).await;
    assert_eq!(accepts_failed(&s).await, 2.0);
    // Reconciled, not replaced: the task the master launched is the node's.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ns_after = nodes(&s, &b).await;
    assert_eq!(ns_after[0]["attempt"], 1, "{ns_after:#?}");
    assert_eq!(ns_after[0]["task_id"], ns[0]["task_id"]);
    let snap = l.handle.snapshot().await.unwrap();
    assert_eq!(snap.tasks.len(), 1, "{snap:?}");
    assert_eq!(
        Some(&snap.tasks[0].task_id),
        ns_after[0]["task_id"].as_str().map(str::to_owned).as_ref()
    );
    drop(s);
    l.stop().await;
}

/// `paas_accepts_failed_total` from `/metrics` (0 before the first).
async fn accepts_failed(s: &Server) -> f64 {
    let text = get(&s.api("/metrics")).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("paas_accepts_failed_total "))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}
