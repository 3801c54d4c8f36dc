//! Dry runs and placement deadlines, black-box: a real `paas serve` on its embedded
//! mesos-local with two agents of 1 cpu, 1024 MB and 101 ports each (simulated executors:
//! placement is what is under test). Each node of the reference product takes its `cpu` and
//! `mem` plus the executor's 0.05 cpus and 32 MB, and two ports.

mod common;

use std::time::Duration;

use common::{JSON, Server, call, cluster, get, register_reference};
use serde_json::{Value, json};

const LOCAL: [&str; 6] = [
    "--local-containerizer",
    "simulated",
    "--local-agents",
    "2",
    "--local-resources",
    // Below the 31000+ that real Mesos agents use on this machine.
    "cpus:1;mem:1024;disk:1024;ports:[30000-30100]",
];

async fn dry_run(s: &Server, body: Value) -> common::Resp {
    call(
        "POST",
        &s.api("/products/reference/1.0.0?dry_run=true"),
        body.to_string(),
        &[JSON],
    )
    .await
}

async fn launch(s: &Server, query: &str, body: Value) -> String {
    let r = call(
        "POST",
        &s.api(&format!("/products/reference/1.0.0{query}")),
        body.to_string(),
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

async fn clusters(s: &Server) -> Vec<Value> {
    get(&s.api("/clusters")).await.json()["clusters"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the scheduler has seen the agents' offers: a dry run is then evaluated.
async fn evaluated(s: &Server, body: Value) -> Value {
    common::poll(30, Duration::from_millis(200), "offers seen", async || {
        let r = dry_run(s, body.clone()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        (v["placement"] == "evaluated").then_some(v)
    })
    .await
}

/// `paas clusters launch reference 1.0.0 <args>` against `s`.
fn paas_cli(s: &Server, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_paas"))
        .args(["clusters", "launch", "reference", "1.0.0"])
        .args(args)
        .env("PAAS_URL", &s.url)
        .env_remove("PAAS_TOKEN")
        .output()
        .expect("run paas")
}

/// The `(option, to)` of each suggested change.
fn changes(v: &Value) -> Vec<(String, Value)> {
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["option"].as_str().unwrap().to_owned(), c["to"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_places_each_node_or_names_the_smallest_change_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &LOCAL);
    register_reference(&s, &[]).await;

    // Fits: three small nodes, each on an agent, and nothing to change.
    let first = evaluated(&s, json!({"size": 3})).await;
    let v = &first;
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["fits"], true, "{v:#}");
    assert_eq!(v["agents"], 2);
    assert_eq!(
        v["cluster"],
        json!({"nodes": 3, "cpus": 0.3, "mem_mb": 192.0})
    );
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        assert_eq!(n["fit"], "agent", "{n:#}");
        assert!(n["agent_id"].as_str().is_some_and(|a| !a.is_empty()));
        assert_eq!(
            n["needs"],
            json!({"cpus": 0.15, "mem_mb": 96.0, "disk_mb": 0.0, "ports": 2})
        );
    }
    assert_eq!(changes(v), vec![]);
    assert!(
        v["summary"].as_str().unwrap().starts_with(
            "fits: 3 nodes asking 0.3 cpus and 192 MB mem in all, on 1 of the 2 agents seen"
        ),
        "{v:#}"
    );

    // Too much memory: two nodes of 932 MB (with the executor) fit, one per agent; the
    // third does not. Two changes would each fit: two nodes, or 480 MB per node (two on
    // one agent: 2 × (480 + 32) = 1024).
    let v = dry_run(&s, json!({"size": 3, "mem": 900})).await;
    assert_eq!(v.status, 200, "{}", v.text());
    let v = v.json();
    assert_eq!(v["fits"], false, "{v:#}");
    let node2 = &v["nodes"][2];
    assert_eq!(node2["fit"], "none", "{v:#}");
    assert_eq!(
        node2["closest"]["short"],
        json!([{"resource": "mem", "needed": 932.0, "available": 92.0}])
    );
    assert!(
        node2["why"]
            .as_str()
            .unwrap()
            .ends_with("has 92 of 932 MB mem"),
        "{node2:#}"
    );
    assert_eq!(
        changes(&v),
        vec![("size".into(), json!(2)), ("mem".into(), json!(480))]
    );
    assert!(
        v["summary"].as_str().unwrap().contains(
            "It would fit with size 2 instead of 3 (2 nodes), or mem 480 instead of 900 \
             (480 MB mem per node at most)."
        ),
        "{v:#}"
    );

    // Too many cpus: 0.45 per node is the most that fits three nodes (2 × 0.5 = 1).
    let v = dry_run(&s, json!({"size": 3, "cpu": 0.9})).await.json();
    assert_eq!(v["fits"], false);
    assert_eq!(
        changes(&v),
        vec![("size".into(), json!(2)), ("cpu".into(), json!(0.45))]
    );

    // A whole cpu per node (written as an integer; the option is a number) fits nowhere,
    // at any size: only fewer cpus would, searched in thousandths.
    let v = dry_run(&s, json!({"size": 3, "cpu": 1})).await.json();
    assert_eq!(v["fits"], false);
    assert_eq!(changes(&v), vec![("cpu".into(), json!(0.45))]);

    // 40 nodes of 0.5 cpus: fewer nodes fit (one of 0.55 cpus per agent), but no smaller
    // cpu or mem alone would (20 nodes per agent).
    let v = dry_run(&s, json!({"size": 40, "cpu": 0.5})).await.json();
    assert_eq!(v["fits"], false);
    assert_eq!(changes(&v), vec![("size".into(), json!(2))]);

    // Bad input gets the launch's own errors.
    let r = dry_run(&s, json!({"size": "three"})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_options".to_owned()));
    let r = call(
        "POST",
        &s.api("/products/reference/1.0.0?dry_run=yes"),
        "{}",
        &[JSON],
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "invalid_query".to_owned()));
    assert!(
        r.text().contains("dry_run must be true or false"),
        "{}",
        r.text()
    );

    // The CLI prints it for people, and exits 1 when the cluster would not fit.
    let out = paas_cli(&s, &["--opt", "size=3", "--opt", "mem=900", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("dry run: does not fit: 3 nodes asking"),
        "{text}"
    );
    assert!(text.contains("node2  "), "{text}");
    assert!(text.contains("none: closest "), "{text}");
    assert!(text.contains("has 92 of 932 MB mem"), "{text}");
    assert!(
        text.contains("  --opt size=2   size 2 instead of 3 (2 nodes)\n"),
        "{text}"
    );
    assert!(
        text.contains("  --opt mem=480   mem 480 instead of 900"),
        "{text}"
    );
    let out = paas_cli(&s, &["--opt", "size=2", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("dry run: fits: 2 nodes"));

    // Nothing was stored, and nothing was held: the first dry run answers as before.
    assert_eq!(clusters(&s).await, Vec::<Value>::new());
    let again = dry_run(&s, json!({"size": 3})).await.json();
    assert_eq!(again["nodes"], first["nodes"]);
}

#[tokio::test]
async fn without_a_scheduler_a_dry_run_still_renders_and_validates() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    register_reference(&s, &[]).await;
    let r = dry_run(&s, json!({"size": 2})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["placement"], "no_scheduler");
    assert_eq!(v["fits"], Value::Null);
    assert_eq!(v["cluster"]["nodes"], 2);
    assert!(
        v["summary"].as_str().unwrap().contains("--master none"),
        "{v:#}"
    );
    let r = dry_run(&s, json!({"colour": "red"})).await;
    assert_eq!((r.status, r.code()), (400, "invalid_options".to_owned()));
    assert_eq!(clusters(&s).await, Vec::<Value>::new());
}

/// A cluster too big for the agents, with a 3 s deadline, ends `failed` with the planner's
/// refusal, holding nothing; one that fits, with the same deadline, is placed and never
/// failed by it. The deadline counts from the stored launch time, so it holds across a
/// `kill -9` and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_that_cannot_be_placed_in_time_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let s = Server::start(&data, &LOCAL);
    register_reference(&s, &[]).await;

    // The small one first, placed before the big one waits: while a cluster waits for
    // resources, the rest of each offer is declined for 5 s (`busy_refuse`); a launch made
    // just then is revived at once (tests/scheduler_revive.rs), but this order does not
    // depend on it.
    let small = launch(&s, "?placement_timeout_s=3", json!({"size": 2})).await;
    common::poll(
        30,
        Duration::from_millis(100),
        "the small one is placed",
        async || {
            let c = cluster(&s, &small).await;
            let nodes = c["nodes"].as_array().cloned().unwrap_or_default();
            nodes.iter().all(|n| n["task_id"].is_string()).then_some(())
        },
    )
    .await;
    let big = launch(&s, "?placement_timeout_s=3", json!({"size": 30})).await;
    let c = common::poll(
        30,
        Duration::from_millis(250),
        "the big one fails",
        async || {
            let c = cluster(&s, &big).await;
            (c["status"] == "failed").then_some(c)
        },
    )
    .await;
    let reason = c["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("not placed within the placement timeout (3s): "),
        "{reason}"
    );
    assert!(
        reason.contains("nodes do not fit") && reason.contains("cpus"),
        "{reason}"
    );
    assert_eq!(c["placement_timeout_s"], 3);
    for n in c["nodes"].as_array().unwrap() {
        assert_eq!(n["status"], "queued", "holds nothing: {n:#}");
        assert!(n["task_id"].is_null(), "{n:#}");
    }
    let c = cluster(&s, &small).await;
    assert_ne!(c["status"], "registered", "{c:#}");
    assert!(
        !c["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("placement timeout"),
        "{c:#}"
    );
    for n in c["nodes"].as_array().unwrap() {
        assert!(n["task_id"].is_string(), "placed: {n:#}");
    }

    // Across a restart: launched, killed at once, served again after its deadline.
    let mut s = s;
    let late = launch(&s, "?placement_timeout_s=4", json!({"size": 30})).await;
    s.kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = Server::start(&data, &LOCAL);
    let c = common::poll(
        30,
        Duration::from_millis(250),
        "fails after the restart",
        async || {
            let c = cluster(&s, &late).await;
            (c["status"] == "failed").then_some(c)
        },
    )
    .await;
    assert!(
        c["reason"]
            .as_str()
            .unwrap()
            .starts_with("not placed within the placement timeout (4s): "),
        "{c:#}"
    );
}

/// A dry run is checked against the caller's quota as the launch would be.
#[tokio::test]
async fn a_dry_run_past_the_quota_is_refused_as_the_launch_would_be() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "admin-token-0123456789,root,admin\nalice-token-0123456789,alice,user,nodes=2\n",
    )
    .unwrap();
    let s = Server::start(
        &dir.path().join("d"),
        &["--tokens", tokens.to_str().unwrap()],
    );
    register_reference(&s, &[("authorization", "Bearer admin-token-0123456789")]).await;
    let alice = [("authorization", "Bearer alice-token-0123456789"), JSON];
    let url = s.api("/products/reference/1.0.0?dry_run=true");
    let r = call("POST", &url, r#"{"size": 3}"#, &alice).await;
    assert_eq!(
        (r.status, r.code()),
        (403, "quota_exceeded".to_owned()),
        "{}",
        r.text()
    );
    assert_eq!(
        r.json()["error"]["message"],
        "quota: at most 2 nodes for user alice (has 0, asks 3)"
    );
    let r = call("POST", &url, r#"{"size": 2}"#, &alice).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The same answers from a real Mesos master's offers (skipped without `MESOS_MASTER`): a
/// small cluster fits, a huge one does not, and the size it suggests does fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_real_mesos_the_suggested_size_fits() {
    let Some(master) = common::mesos_master(
        "dry_run::on_real_mesos_the_suggested_size_fits",
        "Run scripts/test.sh, or start ../shared/realmesos and export MESOS_MASTER.",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--master", &master]);
    register_reference(&s, &[]).await;
    let v = evaluated(&s, json!({"size": 1})).await;
    assert_eq!(v["fits"], true, "{v:#}");

    // Two ports per node: no agent range holds 2000 nodes.
    let v = dry_run(&s, json!({"size": 2000})).await.json();
    assert_eq!(v["fits"], false, "{v:#}");
    let size = changes(&v)
        .into_iter()
        .find(|(option, _)| option == "size")
        .and_then(|(_, to)| to.as_u64())
        .unwrap_or_else(|| panic!("a size that fits: {v:#}"));
    assert!((1..2000).contains(&size), "{v:#}");
    let v = dry_run(&s, json!({"size": size})).await.json();
    assert_eq!(v["fits"], true, "size {size}: {v:#}");
    let v = dry_run(&s, json!({"size": size + 1})).await.json();
    assert_eq!(v["fits"], false, "size {}: {v:#}", size + 1);
    assert_eq!(clusters(&s).await, Vec::<Value>::new());
}
