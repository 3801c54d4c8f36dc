//! Live events over real HTTP against a real `paas serve`: `GET /events` and the
//! per-cluster stream (`Accept: text/event-stream`), ownership, `Last-Event-ID`, and a
//! stalled client that is dropped while others keep up.

mod common;

use std::time::Duration;

use common::sse::{Event, Sse};
use common::tokens::{self, ADMIN, ALICE, BOB};
use common::{JSON, Server, call};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STREAM: (&str, &str) = ("accept", "text/event-stream");
const QUIET: Duration = Duration::from_millis(700);

/// A store-only server with tokens and the reference product registered.
async fn server(dir: &std::path::Path) -> Server {
    let tokens = tokens::file(dir);
    let s = Server::start(&dir.join("data"), &["--tokens", tokens.to_str().unwrap()]);
    common::register_reference(&s, &[ADMIN]).await;
    s
}

async fn launch_as(s: &Server, who: (&str, &str), size: u32) -> String {
    let r = call(
        "POST",
        &s.api("/products/reference/1.0.0"),
        json!({"size": size}).to_string(),
        &[who, JSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

async fn destroy_as(s: &Server, who: (&str, &str), id: &str) {
    let r = call("DELETE", &s.api(&format!("/clusters/{id}")), "", &[who]).await;
    assert_eq!(r.status, 202, "{}", r.text());
}

fn of_cluster<'a>(events: &'a [Event], id: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.data["cluster"] == id || e.data["id"] == id)
        .collect()
}

fn is(e: &Event, kind: &str, id: &str, status: &str) -> bool {
    e.event == kind && (e.data["cluster"] == id || e.data["id"] == id) && e.data["status"] == status
}

#[tokio::test]
async fn events_follow_a_launch_and_a_destroy_and_each_user_sees_only_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let mut alice = Sse::open(&s.api("/events"), &[ALICE]).await;
    assert_eq!(alice.status, 200);
    assert_eq!(
        alice.headers["content-type"], "text/event-stream",
        "{:?}",
        alice.headers
    );
    let mut bob = Sse::open(&s.api("/events"), &[BOB]).await;
    let mut admin = Sse::open(&s.api("/events"), &[ADMIN]).await;

    let id = launch_as(&s, ALICE, 2).await;
    let got = alice
        .until(10, "a registered step", |e| {
            is(e, "step", &id, "registered")
        })
        .await;
    let cluster = got
        .iter()
        .find(|e| e.event == "cluster")
        .expect("a cluster event");
    for key in ["id", "status", "product", "version", "owner", "size"] {
        assert!(
            cluster.data.get(key).is_some(),
            "{key} in {:#}",
            cluster.data
        );
    }
    assert_eq!(cluster.data["owner"], "alice");
    assert_eq!(cluster.data["size"], 2);
    let nodes: Vec<_> = got.iter().filter(|e| e.event == "node").collect();
    assert_eq!(nodes.len(), 2, "{got:#?}");
    assert_eq!(nodes[0].data["status"], "queued");
    let ids: Vec<u64> = got
        .iter()
        .map(|e| e.id.expect("every event has an id"))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "ids grow by one: {ids:?}"
    );

    destroy_as(&s, ALICE, &id).await;
    alice
        .until(10, "destroyed", |e| is(e, "cluster", &id, "destroyed"))
        .await;

    // Bob launches too: he sees his cluster and nothing of Alice's.
    let his = launch_as(&s, BOB, 1).await;
    let bobs = bob
        .until(10, "bob's registered step", |e| {
            is(e, "step", &his, "registered")
        })
        .await;
    assert!(
        of_cluster(&bobs, &id).is_empty(),
        "bob saw alice's cluster: {bobs:#?}"
    );
    assert!(!of_cluster(&bobs, &his).is_empty());
    let more = alice.drain(QUIET).await;
    assert!(
        of_cluster(&more, &his).is_empty(),
        "alice saw bob's cluster: {more:#?}"
    );

    // The admin sees both.
    let all = admin
        .until(10, "bob's step", |e| is(e, "step", &his, "registered"))
        .await;
    assert!(all.iter().any(|e| is(e, "cluster", &id, "destroyed")));

    // Bob cannot open Alice's cluster stream either: 404, as for GET.
    let r = Sse::open(&s.api(&format!("/clusters/{id}/events")), &[BOB, STREAM]).await;
    assert_eq!(r.status, 404);
    // Without a token: 401.
    assert_eq!(Sse::open(&s.api("/events"), &[]).await.status, 401);
}

#[tokio::test]
async fn last_event_id_resumes_after_it_and_an_unknown_id_says_reset() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let mut first = Sse::open(&s.api("/events"), &[ALICE]).await;
    let id = launch_as(&s, ALICE, 1).await;
    destroy_as(&s, ALICE, &id).await;
    let seen = first
        .until(10, "destroyed", |e| is(e, "step", &id, "destroyed"))
        .await;
    drop(first);
    assert!(seen.len() >= 4, "{seen:#?}");

    // Resume after the second event: exactly the rest, with the same ids.
    let after = seen[1].id.unwrap().to_string();
    let mut again = Sse::open(&s.api("/events"), &[ALICE, ("last-event-id", &after)]).await;
    let replayed = again.drain(QUIET).await;
    let want: Vec<_> = seen[2..].iter().map(|e| (e.id, e.event.clone())).collect();
    let got: Vec<_> = replayed.iter().map(|e| (e.id, e.event.clone())).collect();
    assert_eq!(got, want);

    // An id the server never gave (from before a restart): reset.
    let mut old = Sse::open(&s.api("/events"), &[ALICE, ("last-event-id", "1")]).await;
    let e = old.next(Duration::from_secs(5)).await.expect("an event");
    assert_eq!(e.event, "reset", "{e:?}");

    // Not an id: 400 in the API's error shape.
    let bad = Sse::open(&s.api("/events"), &[ALICE, ("last-event-id", "x")]).await;
    assert_eq!(bad.status, 400);
    let body: Value = serde_json::from_str(&bad.text().await).unwrap();
    assert_eq!(body["error"]["code"], "invalid_last_event_id");
}

#[tokio::test]
async fn a_cluster_stream_sends_its_record_and_history_then_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let id = launch_as(&s, ALICE, 2).await;
    let url = s.api(&format!("/clusters/{id}/events"));

    // Without the Accept header: today's JSON.
    let plain = call("GET", &url, "", &[ALICE]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.json()["events"][0]["status"], "registered");

    let mut stream = Sse::open(&url, &[ALICE, STREAM]).await;
    assert_eq!(stream.status, 200);
    let head = stream
        .next(Duration::from_secs(5))
        .await
        .expect("the record");
    assert_eq!(head.event, "cluster");
    assert_eq!(head.data["status"], "registered");
    let step = stream
        .next(Duration::from_secs(5))
        .await
        .expect("the history");
    assert_eq!(
        (step.event.as_str(), &step.data["index"]),
        ("step", &json!(0))
    );

    destroy_as(&s, ALICE, &id).await;
    let live = stream
        .until(10, "destroyed", |e| is(e, "step", &id, "destroyed"))
        .await;
    let steps: Vec<_> = live
        .iter()
        .filter(|e| e.event == "step")
        .map(|e| (e.data["index"].clone(), e.data["status"].clone()))
        .collect();
    assert_eq!(
        steps,
        [
            (json!(1), json!("destroying")),
            (json!(2), json!("destroyed"))
        ],
        "{live:#?}"
    );
    // Only this cluster's events: another launch does not show up.
    let other = launch_as(&s, ALICE, 1).await;
    let more = stream.drain(QUIET).await;
    assert!(of_cluster(&more, &other).is_empty(), "{more:#?}");

    // Resumed with an id from before a restart: reset, the record, the whole history.
    let mut again = Sse::open(&url, &[ALICE, STREAM, ("last-event-id", "3")]).await;
    let got = again.drain(QUIET).await;
    let kinds: Vec<_> = got.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        ["reset", "cluster", "step", "step", "step"],
        "{got:#?}"
    );

    // Resumed after the last event seen: the record, then nothing already seen.
    let last = live.last().unwrap().id.unwrap().to_string();
    let mut resumed = Sse::open(&url, &[ALICE, STREAM, ("last-event-id", &last)]).await;
    let got = resumed.drain(QUIET).await;
    let kinds: Vec<_> = got.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["cluster"], "{got:#?}");
}

/// A client that stops reading is dropped once its buffer is full; a reading client gets
/// every event all the same, and the stalled one's stream ends (it does not hold the hub).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_dropped_and_the_others_keep_up() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path()).await;
    let addr: std::net::SocketAddr = s.url.trim_start_matches("http://").parse().unwrap();
    // A small receive window, so that the kernel does not buffer much for it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(addr).await.unwrap();
    stalled
        .write_all(
            format!(
                "GET /bigdata/api/v1/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: {}\r\n\r\n",
                ALICE.1
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut reader = Sse::open(&s.api("/events"), &[ALICE]).await;
    // Each launch of size 100 is a cluster, 100 nodes and a step: some 14 KB. The kernel
    // buffers a few MB for a stalled loopback client, so this sends 5.6 MB.
    const LAUNCHES: usize = 400;
    let reading = tokio::spawn(async move {
        let (mut registered, mut received) = (0, 0);
        while registered < LAUNCHES {
            let Some(e) = reader.next(Duration::from_secs(30)).await else {
                panic!("the reading client stopped after {registered} launches");
            };
            received += 1;
            if e.event == "step" {
                registered += 1;
            }
        }
        received
    });

    // Enough events to overflow the stalled client's buffers many times over.
    let mut tasks = tokio::task::JoinSet::new();
    let url = s.api("/products/reference/1.0.0");
    for _ in 0..LAUNCHES {
        let url = url.clone();
        tasks.spawn(async move {
            let r = call("POST", &url, r#"{"size": 100}"#, &[ALICE, JSON]).await;
            assert_eq!(r.status, 202, "{}", r.text());
        });
        if tasks.len() >= 8 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(reading.await.unwrap(), LAUNCHES * 102);

    // The stalled client now reads what was kept for it: the stream has ended (the final
    // chunk) well before all those events.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = stalled.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            got.extend_from_slice(&buf[..n]);
            if got.ends_with(b"\r\n0\r\n\r\n") {
                return;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        ended.is_ok(),
        "the stalled client's stream did not end; it got {} events",
        text.matches("\nevent: ").count()
    );
    let events = text.matches("\nevent: ").count();
    assert!(
        events < LAUNCHES * 102,
        "the stalled client was sent {events} events, all of them"
    );
    eprintln!(
        "the stalled client was sent {events} of {} events before it was dropped",
        LAUNCHES * 102
    );
}

/// On the embedded mesos-local (simulated agents: a launched task runs at once), a launch
/// streams its nodes' placement and the cluster's way to `ready`.
#[tokio::test]
async fn a_launch_on_mesos_local_streams_its_nodes_and_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &["--local-containerizer", "simulated", "--local-agents", "2"],
    );
    for (method, path, body) in [
        ("POST", "/products", r#"{"name": "plain", "version": "1"}"#),
        (
            "PUT",
            "/products/plain/1/template",
            // Spaces keep `{ {{` from reading as a triple-stash. No services: nothing to
            // configure.
            r#"{"nodes": { {{#each (range 0 opts.size)}}{{#unless @first}},{{/unless}}"n{{this}}": {"docker_image": "sim", "cpu": 0.1, "mem": 16}{{/each}} } }"#,
        ),
        (
            "PUT",
            "/products/plain/1/options",
            r#"{"required": {"size": 2}}"#,
        ),
    ] {
        let r = call(method, &s.api(path), body, &[JSON]).await;
        assert!(r.status < 300, "{method} {path}: {}", r.text());
    }
    let mut events = Sse::open(&s.api("/events"), &[]).await;
    let r = call(
        "POST",
        &s.api("/products/plain/1"),
        r#"{"size": 2}"#,
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let got = events
        .until(60, "ready", |e| is(e, "cluster", &id, "ready"))
        .await;
    let running: Vec<_> = got
        .iter()
        .filter(|e| e.event == "node" && e.data["status"] == "running")
        .map(|e| e.data["node"].as_str().unwrap())
        .collect();
    assert_eq!(running.len(), 2, "{got:#?}");
    assert!(
        got.iter().any(|e| e.event == "node"
            && e.data["status"] == "running"
            && e.data["host"].is_string()),
        "a running node says where: {got:#?}"
    );
    let statuses: Vec<_> = got
        .iter()
        .filter(|e| e.event == "step")
        .map(|e| e.data["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.first(), Some(&"registered"), "{statuses:?}");
    assert!(statuses.contains(&"scheduled"), "{statuses:?}");
}
