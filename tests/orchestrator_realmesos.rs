//! End to end against a REAL Apache Mesos master and agent with the Docker containerizer:
//! `paas serve --master …` launches reference clusters whose nodes are containers of the node
//! image, and the orchestrator configures them through each node's NodeAgent.
//!
//! Scenarios (one server, run in sequence):
//! - the reference product, size 3, reaches `ready`; `/logs` holds the script's summary; a
//!   NodeAgent call without the secret is refused; DELETE runs `SCRIPT stop`;
//! - a script exiting 1, a `ready` check that never passes, and a file template naming an
//!   unknown variable each end `failed` with a reason naming the cause;
//! - `paas serve` killed with SIGKILL during `configuring` (a slow script), then restarted: the
//!   cluster still reaches `ready`, and the old script is killed and its directory removed
//!   before the new `serve` serves.
//!
//! Environment: `MESOS_MASTER` (`http://127.0.0.1:5050`; unset = skipped with the reason, or a
//! failure when `CI` is set) and `PAAS_NODE_IMAGE` (default `paas-node-orch:latest`, built with
//! `PAAS_NODE_IMAGE_NAME=paas-node-orch deploy/images/build-node-image.sh`).

mod common;

use std::time::Duration;

use common::{JSON, Server, call, get, register_reference};
use paas::procs::PidRecord;
use paas::proto::paas::nodeagent::v1 as pb;
use serde_json::Value;

fn master() -> Option<String> {
    common::mesos_master(
        "orchestrator_realmesos",
        "It needs a real Mesos master + agent with the Docker containerizer and the node image, e.g.\n  \
         ../shared/realmesos/start.sh && \
         PAAS_NODE_IMAGE=$(PAAS_NODE_IMAGE_NAME=paas-node-orch deploy/images/build-node-image.sh) \
         MESOS_MASTER=http://127.0.0.1:5050 cargo test --test orchestrator_realmesos -- --nocapture",
    )
}

fn image() -> String {
    std::env::var("PAAS_NODE_IMAGE").unwrap_or_else(|_| "paas-node-orch:latest".into())
}

fn serve(data: &std::path::Path, master: &str) -> Server {
    Server::start(
        data,
        &[
            "--master",
            master,
            "--node-image",
            &image(),
            "--ready-timeout",
            "15s",
        ],
    )
}

async fn register(s: &Server, name: &str, template: &str, script: &[u8]) {
    let dir = common::repo_root().join("examples/products/reference");
    let r = call(
        "POST",
        &s.api("/products"),
        format!(r#"{{"name":"{name}","version":"1.0.0","description":"variant"}}"#),
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let options = std::fs::read(dir.join("options/size.json")).unwrap();
    for (part, body) in [
        ("template", template.as_bytes().to_vec()),
        ("options", options),
        ("orquestrator", script.to_vec()),
    ] {
        let r = call(
            "PUT",
            &s.api(&format!("/products/{name}/1.0.0/{part}")),
            body,
            &[JSON],
        )
        .await;
        assert_eq!(r.status, 200, "{part}: {}", r.text());
    }
}

async fn launch(s: &Server, product: &str, size: u32) -> String {
    let r = call(
        "POST",
        &s.api(&format!("/products/{product}/1.0.0")),
        format!(r#"{{"size": {size}}}"#),
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

/// Polls the cluster until `done` holds, printing status changes; panics after `secs`.
async fn wait(s: &Server, id: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    loop {
        let c = get(&s.api(&format!("/clusters/{id}"))).await.json();
        let st = c["status"].as_str().unwrap_or_default().to_owned();
        if st != last {
            eprintln!("cluster {id}: {st} {}", c["reason"].as_str().unwrap_or(""));
            last = st;
        }
        if done(&c) {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cluster {id} stuck: {c:#}\nlogs:\n{}",
            get(&s.api(&format!("/clusters/{id}/logs"))).await.text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The run directories of scripts under `serve`'s data directory.
fn script_runs(data: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(data.join("scripts"))
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

fn settled(c: &Value) -> bool {
    matches!(c["status"].as_str(), Some("ready" | "failed"))
}

async fn destroy(s: &Server, id: &str) {
    let r = call("DELETE", &s.api(&format!("/clusters/{id}")), "", &[]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    wait(s, id, 90, |c| c["status"] == "destroyed").await;
}

fn reference_template() -> String {
    std::fs::read_to_string(common::repo_root().join("examples/products/reference/minimal.json"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reference_clusters_on_real_mesos() {
    let Some(master) = master() else { return };
    let data = tempfile::tempdir().unwrap();
    let mut s = serve(data.path(), &master);
    let mut failures = Vec::new();

    // 1. The reference product reaches ready.
    register_reference(&s, &[]).await;
    let id = launch(&s, "reference", 3).await;
    let c = wait(&s, &id, 240, settled).await;
    assert_eq!(c["status"], "ready", "{c:#}");
    let logs = get(&s.api(&format!("/clusters/{id}/logs"))).await.text();
    eprintln!("--- /logs of {id}:\n{logs}---");
    assert!(logs.contains("reference cluster configured"), "{logs}");
    assert!(logs.contains("service workers: node1, node2"), "{logs}");
    // A NodeAgent call without the secret is refused.
    let node = &c["nodes"][0];
    // Over TLS pinned to the certificate the executor reported in TASK_RUNNING.
    let (_, endpoint) = paas::orchestrator::client::pinned_endpoint(
        node["address"].as_str().unwrap(),
        u16::try_from(
            node["agent_port"]
                .as_u64()
                .expect("agent_port on the node record"),
        )
        .unwrap(),
        Some(
            node["agent_cert_sha256"]
                .as_str()
                .expect("the NodeAgent's certificate pin on the node record"),
        ),
    )
    .unwrap();
    let mut raw = pb::node_agent_client::NodeAgentClient::new(endpoint.connect().await.unwrap());
    let err = raw
        .health(tonic::Request::new(pb::HealthRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(pb::HealthRequest {});
    req.metadata_mut()
        .insert("authorization", "Bearer not-the-secret".parse().unwrap());
    assert_eq!(
        raw.health(req).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    destroy(&s, &id).await;
    // `SCRIPT stop` runs alongside the kills (a best effort): it may finish after `destroyed`.
    let mut logs = String::new();
    for _ in 0..60 {
        logs = get(&s.api(&format!("/clusters/{id}/logs"))).await.text();
        if logs.contains("<== stop") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(logs.contains(&format!("cluster {id} stopping")), "{logs}");

    // 2. Failures, each naming its cause.
    let template = reference_template();
    let fabfile = std::fs::read(
        common::repo_root().join("examples/products/reference/orquestrators/minimal/fabfile.py"),
    )
    .unwrap();
    register(
        &s,
        "badscript",
        &template,
        b"#!/bin/sh\necho \"boom on $1\"\nexit 1\n",
    )
    .await;
    let never_ready = template.replace(
        r#""probe", "--config", "/etc/reference/peers.conf""#,
        r#""probe", "--config", "/etc/reference/missing.conf""#,
    );
    assert_ne!(never_ready, template);
    register(&s, "neverready", &never_ready, &fabfile).await;
    let unknown = template.replacen(r"name = \{{node.name}}", r"name = \{{opts.nope}}", 1);
    assert_ne!(unknown, template);
    register(&s, "unknownvar", &unknown, &fabfile).await;
    for (product, expect) in [
        (
            "badscript",
            vec!["script/start", "exited with status 1", "boom on start"],
        ),
        (
            "neverready",
            vec![
                "ready/head",
                "node0",
                "did not pass within 15s",
                "missing.conf",
            ],
        ),
        ("unknownvar", vec!["files/head", "opts.nope", "peers.conf"]),
    ] {
        let id = launch(&s, product, 2).await;
        let c = wait(&s, &id, 240, settled).await;
        let reason = c["reason"].as_str().unwrap_or_default().to_owned();
        eprintln!("{product}: {} — {reason}", c["status"]);
        if c["status"] != "failed" || expect.iter().any(|e| !reason.contains(e)) {
            failures.push(format!(
                "{product}: {} — {reason} (wanted {expect:?})",
                c["status"]
            ));
        }
        destroy(&s, &id).await;
    }

    // 3. SIGKILL of `paas serve` during configuring; the restarted one finishes the job.
    register(
        &s,
        "slow",
        &template,
        b"#!/bin/sh\necho slow script starting\nsleep 6\necho slow script done\n",
    )
    .await;
    let id = launch(&s, "slow", 2).await;
    wait(&s, &id, 240, |c| {
        c["status"] == "configuring" && c["configure"]["current"] == "script/start" || settled(c)
    })
    .await;
    s.kill9();
    eprintln!("killed paas serve during configuring; restarting");
    // The script outlives a kill -9 (it leads its own process group); the restart kills it
    // and removes its directory (the cluster's description) before it serves.
    let runs = script_runs(data.path());
    assert_eq!(runs.len(), 1, "one script was running: {runs:?}");
    let script = PidRecord::read(&runs[0].join("pid")).expect("the script's pid is recorded");
    assert!(script.is_alive_same(), "the script outlived the kill -9");
    let s = serve(data.path(), &master);
    assert!(!script.is_alive_same(), "the restart killed the old script");
    assert!(
        !runs[0].exists(),
        "the restart removed {}",
        runs[0].display()
    );
    let c = wait(&s, &id, 240, settled).await;
    if c["status"] != "ready" {
        failures.push(format!("after kill -9: {c:#}"));
    }
    let logs = get(&s.api(&format!("/clusters/{id}/logs"))).await.text();
    assert!(logs.contains("slow script done"), "{logs}");
    destroy(&s, &id).await;

    assert!(failures.is_empty(), "{failures:#?}");
}
