//! `POST /clusters/{id}/nodes/{node}/exec` over real HTTP against a real `paas serve`, and
//! `paas clusters exec`, with a real NodeAgent (the executor's gRPC server, in this test's
//! process) standing in for the node: the store is given the node's address, port and
//! certificate pin while `serve` is stopped, as the scheduler would have recorded them.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::sse::{Event, Sse};
use common::tokens::{self, ADMIN, ALICE, BOB};
use common::{JSON, Server, call};
use paas::domain::NodeStatus;
use paas::executor::exits::ExitBook;
use paas::executor::nodeagent::{AgentSettings, NodeAgentHandle};
use paas::registry::{SledStore, Store, Update};
use serde_json::{Value, json};

fn start(dir: &std::path::Path) -> Server {
    let tokens = tokens::file(dir);
    Server::start(&dir.join("data"), &["--tokens", tokens.to_str().unwrap()])
}

/// Registers product `name` whose one node is `node0`; `extra` goes to the template's top
/// level.
async fn register(s: &Server, name: &str, extra: &str) {
    let r = call(
        "POST",
        &s.api("/products"),
        json!({"name": name, "version": "1"}).to_string(),
        &[ADMIN, JSON],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let template = format!(
        r#"{{"nodes": {{"node0": {{"docker_image": "img", "cpu": 0.1, "mem": 16}}}}, "services": {{}}{extra}}}"#
    );
    for (part, body) in [
        ("template", template),
        ("options", r#"{"required": {}}"#.into()),
    ] {
        let r = call(
            "PUT",
            &s.api(&format!("/products/{name}/1/{part}")),
            body,
            &[ADMIN, JSON],
        )
        .await;
        assert_eq!(r.status, 200, "{part}: {}", r.text());
    }
}

async fn launch(s: &Server, product: &str) -> String {
    let r = call(
        "POST",
        &s.api(&format!("/products/{product}/1")),
        "{}",
        &[ALICE, JSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

async fn exec(s: &Server, id: &str, who: (&str, &str), body: Value) -> Sse {
    let url = s.api(&format!("/clusters/{id}/nodes/node0/exec"));
    Sse::request("POST", &url, &[who, JSON], body.to_string()).await
}

/// Every event of an exec stream, to its end.
async fn all(mut out: Sse) -> Vec<Event> {
    let got = out.drain(Duration::from_secs(20)).await;
    assert!(out.ended, "the stream ends after the exit: {got:#?}");
    got
}

fn text(events: &[Event], stream: &str) -> String {
    events
        .iter()
        .filter(|e| e.event == stream)
        .map(|e| e.data["text"].as_str().unwrap())
        .collect()
}

/// Stops `serve`, makes node0 of `id` a running node served by a NodeAgent in this process
/// (with the cluster's secret), and starts `serve` again.
async fn run_node(s: &mut Server, dir: &std::path::Path, id: &str) -> NodeAgentHandle {
    s.sigterm();
    let store = SledStore::open(&dir.join("data")).unwrap();
    let cid = id.parse().unwrap();
    let secret = store.cluster(cid).unwrap().unwrap().secret;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = AgentSettings {
        cluster_id: id.into(),
        node: "node0".into(),
        secret,
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        working_dir: Some(dir.to_owned()),
    };
    let agent = NodeAgentHandle::start(listener, settings, ExitBook::new()).unwrap();
    let (port, pin) = (agent.local_addr().port(), agent.cert_sha256().to_owned());
    store
        .update_cluster(cid, &mut |c| {
            let o = &mut c.nodes[0].observed;
            o.status = NodeStatus::Running;
            o.address = Some("127.0.0.1".into());
            o.host = Some("localhost".into());
            o.agent_port = Some(port);
            o.agent_cert_sha256 = Some(pin.clone());
            Ok(Update::Write)
        })
        .unwrap();
    drop(store);
    *s = start(dir);
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_the_output_and_the_exit_status_to_the_owner_or_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path());
    register(&s, "plain", "").await;
    let id = launch(&s, "plain").await;

    // Before the node runs: 409, saying its status.
    let r = exec(&s, &id, ALICE, json!({"argv": ["true"]})).await;
    assert_eq!(r.status, 409);
    assert!(r.text().await.contains("node0 of cluster"));
    // Bad input: 400 before anything else.
    let r = exec(&s, &id, ALICE, json!({"argv": [], "timeout_s": 5})).await;
    assert_eq!(r.status, 400);
    assert!(r.text().await.contains("invalid_exec"));

    let _agent = run_node(&mut s, dir.path(), &id).await;

    let got = all(exec(
        &s,
        &id,
        ALICE,
        json!({"argv": ["sh", "-c", "echo out; echo err >&2; exit 3"]}),
    )
    .await)
    .await;
    assert_eq!(text(&got, "stdout"), "out\n", "{got:#?}");
    assert_eq!(text(&got, "stderr"), "err\n", "{got:#?}");
    let exit = got.last().unwrap();
    assert_eq!(
        (exit.event.as_str(), &exit.data),
        ("exit", &json!({"code": 3}))
    );

    // Output arrives while the command still runs.
    let mut live = exec(
        &s,
        &id,
        ADMIN,
        json!({"argv": ["sh", "-c", "echo first; sleep 3; echo second"]}),
    )
    .await;
    assert_eq!(live.status, 200);
    let first = live
        .next(Duration::from_secs(2))
        .await
        .expect("output before the end");
    assert_eq!(first.data["text"], "first\n");
    let rest = all(live).await;
    assert_eq!(text(&rest, "stdout"), "second\n");
    assert_eq!(rest.last().unwrap().data, json!({"code": 0}));

    // A command that outlives its timeout is killed.
    let got = all(exec(
        &s,
        &id,
        ALICE,
        json!({"argv": ["sleep", "30"], "timeout_s": 1}),
    )
    .await)
    .await;
    assert_eq!(
        got.last().unwrap().data,
        json!({"timed_out": true}),
        "{got:#?}"
    );

    // Another user: 404, as for GET. An unknown node: 404.
    let r = exec(&s, &id, BOB, json!({"argv": ["true"]})).await;
    assert_eq!(r.status, 404);
    let r = call(
        "POST",
        &s.api(&format!("/clusters/{id}/nodes/nope/exec")),
        r#"{"argv": ["true"]}"#,
        &[ALICE, JSON],
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("has no node nope"), "{}", r.text());

    // The CLI streams the output and exits with the command's status.
    let out = Command::new(env!("CARGO_BIN_EXE_paas"))
        .args([
            "clusters",
            "exec",
            &id,
            "node0",
            "--",
            "sh",
            "-c",
            "echo hi; exit 5",
        ])
        .env("PAAS_URL", &s.url)
        .env("PAAS_TOKEN", ALICE.1.trim_start_matches("Bearer "))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_product_can_switch_exec_off() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path());
    register(&s, "closed", r#", "exec": false"#).await;
    let id = launch(&s, "closed").await;
    for who in [ALICE, ADMIN] {
        let r = exec(&s, &id, who, json!({"argv": ["true"]})).await;
        assert_eq!(r.status, 403);
        let body: Value = serde_json::from_str(&r.text().await).unwrap();
        assert_eq!(body["error"]["code"], "exec_disabled", "{body}");
    }
}
