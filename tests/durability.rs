//! Durability: a 2xx means the write survives `kill -9` a moment later; SIGTERM shuts down
//! cleanly.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{JSON, Server, call, get, register_reference};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_write_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[]);
    register_reference(&s, &[]).await;
    let products = Arc::new(Mutex::new(Vec::<String>::new()));
    let clusters = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (url_p, url_l) = (s.api("/products"), s.api("/products/reference/1.0.0"));
        let (products, clusters) = (products.clone(), clusters.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                // Requests fail once the server is dead: that ends the writer.
                let ok = if w % 2 == 0 {
                    let name = format!("p{w}-{i}");
                    let body = format!(r#"{{"name":"{name}","version":"1"}}"#);
                    let r = tokio::time::timeout(
                        Duration::from_secs(5),
                        try_call("POST", &url_p, body),
                    )
                    .await;
                    match r {
                        Ok(Some(201)) => {
                            products.lock().unwrap().push(name);
                            true
                        }
                        _ => false,
                    }
                } else {
                    let r = tokio::time::timeout(
                        Duration::from_secs(5),
                        try_call_json("POST", &url_l, r#"{"size": 1}"#.into()),
                    )
                    .await;
                    match r {
                        Ok(Some((202, id))) => {
                            clusters.lock().unwrap().push(id);
                            true
                        }
                        _ => false,
                    }
                };
                if !ok {
                    break;
                }
            }
        }));
    }
    // Let the burst run, then kill the server mid-flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.kill9();
    for w in writers {
        w.await.unwrap();
    }
    let (products, clusters) = (
        products.lock().unwrap().clone(),
        clusters.lock().unwrap().clone(),
    );
    assert!(
        products.len() > 10 && clusters.len() > 10,
        "the burst wrote too little to prove anything: {} products, {} clusters",
        products.len(),
        clusters.len()
    );
    eprintln!(
        "acknowledged before kill -9: {} products, {} clusters",
        products.len(),
        clusters.len()
    );

    let s = Server::start(dir.path(), &[]);
    let listed = get(&s.api("/products")).await.json();
    let names: std::collections::HashSet<String> = listed["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    for p in &products {
        assert!(names.contains(p), "acknowledged product {p} lost");
    }
    for id in &clusters {
        let r = get(&s.api(&format!("/clusters/{id}"))).await;
        assert_eq!(r.status, 200, "acknowledged cluster {id} lost");
        assert_eq!(r.json()["status"], "registered");
    }
    // And the reference product's parts are intact.
    assert_eq!(
        get(&s.api("/products/reference/1.0.0")).await.json()["parts"]["orchestrator"],
        true
    );
}

async fn try_call(method: &str, url: &str, body: String) -> Option<u16> {
    try_call_json(method, url, body).await.map(|(s, _)| s)
}

/// Like `common::call` but returns None instead of panicking when the server is gone.
async fn try_call_json(method: &str, url: &str, body: String) -> Option<(u16, String)> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    let client: Client<_, Full<bytes::Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .header(JSON.0, JSON.1)
        .body(Full::new(body.into()))
        .ok()?;
    let resp = client.request(req).await.ok()?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    let id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()?
        .get("id")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    Some((status, id))
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), &[]);
    assert_eq!(
        call(
            "POST",
            &s.api("/products"),
            r#"{"name":"kept","version":"1"}"#,
            &[JSON]
        )
        .await
        .status,
        201
    );
    let status = s.sigterm();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let s = Server::start(dir.path(), &[]);
    assert_eq!(get(&s.api("/products/kept/1")).await.status, 200);
}

#[tokio::test]
async fn a_second_server_on_the_same_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _s = Server::start(dir.path(), &[]);
    let err = Server::try_start(dir.path(), &[])
        .err()
        .expect("second server must not start");
    assert!(err.contains("opening the store"), "{err}");
}
