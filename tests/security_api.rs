//! Black-box security tests of the REST API (issue 11, items 3, 4, 7 and the route table),
//! over real HTTP and raw sockets on loopback, on real sled stores: who may call what,
//! anonymous exposure, `/health` details, slow clients, connection caps, quotas and
//! retention. Every refusal is checked for its exact status and error code, and for
//! changing nothing.

mod common;

use std::time::{Duration, Instant};

use common::{JSON, Server, call, get, register_reference, repo_root};
use paas::api::routes::{Access, BASE, ROUTES};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN: (&str, &str) = ("authorization", "Bearer admin-token-0123456789");
const ALICE: (&str, &str) = ("authorization", "Bearer alice-token-0123456789");
const BOB: (&str, &str) = ("authorization", "Bearer bob-token-012345678901");

/// A token file: root is admin; alice and bob are users. `alice_quota` holds extra columns.
fn tokens_file(dir: &std::path::Path, alice_quota: &str) -> std::path::PathBuf {
    let p = dir.join("tokens");
    std::fs::write(
        &p,
        format!(
            "# token,user,role[,quota=value...]\n\
             admin-token-0123456789,root,admin\n\
             alice-token-0123456789,alice,user{alice_quota}\n\
             bob-token-012345678901,bob,user\n"
        ),
    )
    .unwrap();
    p
}

fn addr(s: &Server) -> String {
    s.url.trim_start_matches("http://").to_owned()
}

/// Sends `request` as is on a fresh connection and reads until the server closes it:
/// (status, body). Status 0 when the server closed without answering.
async fn raw(addr: &str, request: &[u8]) -> (u16, String) {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(request).await.unwrap();
    read_response(&mut sock).await
}

async fn read_response(sock: &mut TcpStream) -> (u16, String) {
    let mut out = Vec::new();
    // A reset after the answer (unread request bytes) still leaves the answer read.
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Everything stored that a request could change, as an admin (or anonymous) sees it.
async fn snapshot(s: &Server, auth: &[(&str, &str)]) -> String {
    let mut all = String::new();
    for path in ["/products", "/clusters"] {
        all.push_str(&call("GET", &s.api(path), "", auth).await.text());
    }
    all
}

/// Launches a reference cluster of `size` nodes as `auth`; its id.
async fn launch(s: &Server, size: u64, auth: &[(&str, &str)]) -> String {
    let r = call(
        "POST",
        &s.api("/products/reference/1.0.0"),
        format!(r#"{{"size": {size}}}"#),
        auth,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

/// Polls `url` until it answers `want`; panics with the last answer after a minute (a
/// deadline against hanging, not a timing claim).
async fn until_status(url: &str, auth: &[(&str, &str)], want: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = call("GET", url, "", auth).await;
        if r.status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} still answers {}: {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Item 3: anonymous access

#[tokio::test]
async fn serve_refuses_a_real_master_without_tokens_unless_told() {
    let dir = tempfile::tempdir().unwrap();
    // Port 9 (discard) never answers as a Mesos master: nothing registers anywhere.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paas"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--master",
            "http://127.0.0.1:9",
        ])
        .arg("--data")
        .arg(dir.path().join("d0"))
        .env_remove("PAAS_TOKENS")
        .env_remove("PAAS_ALLOW_ANONYMOUS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve without --tokens against a real Mesos master")
            && err.contains("--allow-anonymous"),
        "{err}"
    );
    assert!(
        !dir.path().join("d0").exists(),
        "refused before anything was created"
    );
    // With tokens, or told, it starts.
    let tokens = tokens_file(dir.path(), "");
    Server::start(
        &dir.path().join("d1"),
        &[
            "--master",
            "http://127.0.0.1:9",
            "--tokens",
            tokens.to_str().unwrap(),
        ],
    );
    Server::start(
        &dir.path().join("d2"),
        &["--master", "http://127.0.0.1:9", "--allow-anonymous"],
    );
}

/// The store-only and embedded modes keep anonymous admin on loopback, and say so.
#[tokio::test]
async fn anonymous_serve_warns_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_paas"))
        .args(["serve", "--listen", "127.0.0.1:0", "--master", "none"])
        .arg("--data")
        .arg(dir.path().join("d"))
        .env("RUST_LOG", "info")
        .env_remove("PAAS_TOKENS")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("paas serving on") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.contains("WARN") && seen.contains("anonymous admin"),
        "{seen}"
    );
}

#[tokio::test]
async fn anonymous_access_answers_loopback_hosts_and_origins_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let a = addr(&s);
    let port = a.rsplit_once(':').unwrap().1.to_owned();
    let before = snapshot(&s, &[]).await;
    let create = |host: &str, extra: &str| {
        let body = r#"{"name":"evil","version":"1"}"#;
        format!(
            "POST {BASE}/products HTTP/1.1\r\nhost: {host}\r\n{extra}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("10.1.2.3:{port}"),
    ] {
        let (status, body) = raw(&a, create(&host, "").as_bytes()).await;
        assert_eq!(
            (status, code(&body).as_str()),
            (403, "host_not_allowed"),
            "{host}: {body}"
        );
    }
    // Without a Host (HTTP/1.0): 400.
    let (status, body) = raw(
        &a,
        format!("GET {BASE}/products HTTP/1.0\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(
        (status, code(&body).as_str()),
        (400, "host_required"),
        "{body}"
    );
    // A web page elsewhere, through a browser on this machine: the Host is fine, the
    // Origin is not.
    for origin in [
        "https://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
    ] {
        let (status, body) = raw(
            &a,
            create(
                &format!("127.0.0.1:{port}"),
                &format!("origin: {origin}\r\n"),
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(
            (status, code(&body).as_str()),
            (403, "cross_origin"),
            "{origin}: {body}"
        );
    }
    assert_eq!(snapshot(&s, &[]).await, before, "nothing was created");
    // Loopback names and origins are served.
    for (host, extra) in [
        (format!("127.0.0.1:{port}"), String::new()),
        (format!("localhost:{port}"), String::new()),
        (
            format!("[::1]:{port}"),
            format!("origin: http://localhost:{port}\r\n"),
        ),
    ] {
        let req = format!(
            "GET {BASE}/products HTTP/1.1\r\nhost: {host}\r\n{extra}connection: close\r\n\r\n"
        );
        let (status, body) = raw(&a, req.as_bytes()).await;
        assert_eq!(status, 200, "{host}: {body}");
    }
}

#[tokio::test]
async fn with_tokens_the_host_is_not_checked() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path(), "");
    let s = Server::start(
        &dir.path().join("d"),
        &["--tokens", tokens.to_str().unwrap()],
    );
    let req = format!(
        "GET {BASE}/products HTTP/1.1\r\nhost: paas.example.org\r\nauthorization: {}\r\nconnection: close\r\n\r\n",
        ADMIN.1
    );
    let (status, body) = raw(&addr(&s), req.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn form_and_text_bodies_are_refused_but_parts_stay_raw() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    register_reference(&s, &[]).await;
    let id = launch(&s, 1, &[JSON]).await;
    let before = snapshot(&s, &[]).await;
    let forms = [
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "text/plain",
        "text/plain;charset=UTF-8",
    ];
    for ct in forms {
        for (method, path, body) in [
            (
                "POST",
                "/products".to_owned(),
                r#"{"name":"x","version":"1"}"#,
            ),
            (
                "POST",
                "/products/reference/1.0.0".to_owned(),
                r#"{"size":1}"#,
            ),
            ("POST", "/products/reference/1.0.0".to_owned(), ""),
            (
                "PATCH",
                format!("/clusters/{id}"),
                r#"{"options":{"size":2}}"#,
            ),
            ("POST", format!("/clusters/{id}/nodes/node0/replace"), ""),
            ("POST", format!("/clusters/{id}/nodes/node0/restart"), ""),
        ] {
            let r = call(method, &s.api(&path), body, &[("content-type", ct)]).await;
            assert_eq!(
                (r.status, r.code().as_str()),
                (415, "unsupported_media_type"),
                "{method} {path} as {ct}: {}",
                r.text()
            );
        }
    }
    assert_eq!(snapshot(&s, &[]).await, before, "nothing changed");
    // The parts are stored byte for byte whatever their type (the seed uploads a Python
    // script as JSON; `curl --data-binary` alone sends a form type).
    let dir = repo_root().join("examples/products/reference");
    for (part, file) in [
        ("template", "minimal.json"),
        ("options", "options/size.json"),
        ("orquestrator", "orquestrators/minimal/fabfile.py"),
    ] {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        for ct in forms {
            let url = s.api(&format!("/products/reference/1.0.0/{part}"));
            let r = call("PUT", &url, bytes.clone(), &[("content-type", ct)]).await;
            assert_eq!(r.status, 200, "{part} as {ct}: {}", r.text());
        }
        if part != "options" {
            let got = get(&s.api(&format!("/products/reference/1.0.0/{part}"))).await;
            assert_eq!(got.body.as_ref(), bytes.as_slice(), "{part}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Item 4: /health

#[tokio::test]
async fn health_details_need_an_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path(), "");
    // A master that never answers: the framework is down, with a last error to hide.
    let s = Server::start(
        &dir.path().join("d"),
        &[
            "--master",
            "http://127.0.0.1:9",
            "--tokens",
            tokens.to_str().unwrap(),
        ],
    );
    for auth in [
        vec![],
        vec![("authorization", "Bearer wrong-token-0123456789")],
        vec![("authorization", "Basic YTpi")],
        vec![ALICE],
    ] {
        let h = call("GET", &s.api("/health"), "", &auth).await;
        assert_eq!(h.status, 200, "{auth:?}");
        assert_eq!(h.json(), json!({"status": "down"}), "{auth:?}");
        let r = call("GET", &s.api("/health/ready"), "", &auth).await;
        assert_eq!(r.status, 503, "{auth:?}");
        assert_eq!(r.json(), json!({"status": "down"}), "{auth:?}");
        assert!(!r.text().contains("127.0.0.1:9"), "no master URL");
    }
    let h = call("GET", &s.api("/health"), "", &[ADMIN]).await.json();
    assert_eq!(h["status"], "down");
    assert_eq!(h["ready"], false);
    assert!(h["mesos"].is_object(), "{h}");
    assert!(
        h.to_string().contains("127.0.0.1:9"),
        "the admin sees the master: {h}"
    );

    // Up, and anonymous: everyone is the admin, so everyone sees the details.
    let anon = Server::start(&dir.path().join("a"), &[]);
    let h = get(&anon.api("/health")).await.json();
    assert_eq!(
        (h["status"].as_str(), h["ready"].as_bool()),
        (Some("up"), Some(true))
    );
    assert!(h["detail"].is_string() && h["version"].is_string(), "{h}");
    let up = Server::start(
        &dir.path().join("u"),
        &["--tokens", tokens.to_str().unwrap()],
    );
    assert_eq!(
        get(&up.api("/health")).await.json(),
        json!({"status": "up"})
    );
    assert_eq!(get(&up.api("/health/ready")).await.status, 200);
}

// ---------------------------------------------------------------------------------------
// Item 7: slow clients, connection caps

#[tokio::test]
async fn a_trickled_body_gets_408_and_the_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--body-timeout", "1s"]);
    let a = addr(&s);
    let before = snapshot(&s, &[]).await;
    let mut sock = TcpStream::connect(&a).await.unwrap();
    sock.write_all(
        format!(
            "POST {BASE}/products HTTP/1.1\r\nhost: {a}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\":"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // The rest never comes; the server answers and closes on its own.
    let (status, body) = read_response(&mut sock).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (408, "body_timeout"),
        "{body}"
    );
    // Slow headers: the connection is closed without an answer.
    let mut sock = TcpStream::connect(&a).await.unwrap();
    sock.write_all(format!("GET {BASE}/products HTTP/1.1\r\nhost: {a}\r\n").as_bytes())
        .await
        .unwrap();
    let (status, _) = read_response(&mut sock).await;
    assert_eq!(status, 0, "closed without an answer");
    // The server is still up, and nothing was created.
    assert_eq!(get(&s.api("/health")).await.status, 200);
    assert_eq!(snapshot(&s, &[]).await, before);
}

#[tokio::test]
async fn connections_per_client_are_capped_and_slots_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--max-conns-per-client", "3"]);
    let a = addr(&s);
    // Three idle connections hold the three slots (accepted in order, before the fourth).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&a).await.unwrap());
    }
    let mut extra = TcpStream::connect(&a).await.unwrap();
    let (status, body) = read_response(&mut extra).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (429, "too_many_connections"),
        "{body}"
    );
    // A held connection still works.
    let mut first = held.remove(0);
    first
        .write_all(
            format!("GET {BASE}/health HTTP/1.1\r\nhost: {a}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let (status, _) = read_response(&mut first).await;
    assert_eq!(status, 200);
    drop(first);
    // Its slot comes back once the server has seen it close.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let req = format!("GET {BASE}/health HTTP/1.1\r\nhost: {a}\r\nconnection: close\r\n\r\n");
        let (status, body) = raw(&a, req.as_bytes()).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no slot came back: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    // The two dropped connections hold their slots until the server sees them close, and
    // the last probe's may still be held: the read of the counter waits for a slot too.
    let deadline = Instant::now() + Duration::from_secs(60);
    let m = loop {
        let r = get(&s.api("/metrics")).await;
        if r.status == 200 {
            break r.text();
        }
        assert!(
            Instant::now() < deadline,
            "no slot for /metrics: {}",
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        m.lines()
            .any(|l| l.starts_with("paas_http_connections_refused_total ") && !l.ends_with(" 0")),
        "{m}"
    );
}

// ---------------------------------------------------------------------------------------
// Item 7: quotas

#[tokio::test]
async fn quotas_refuse_launches_and_scale_ups_past_the_limit_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path(), ",clusters=2,nodes=3,mem=192");
    let data = dir.path().join("d");
    let args = ["--tokens", tokens.to_str().unwrap()];
    let mut s = Server::start(&data, &args);
    register_reference(&s, &[ADMIN]).await;
    let alice = [ALICE, JSON];
    let first = launch(&s, 2, &alice).await;

    let refused = |body: &'static str| {
        let s = &s;
        async move {
            let before = snapshot(s, &[ADMIN]).await;
            let r = call("POST", &s.api("/products/reference/1.0.0"), body, &alice).await;
            assert_eq!(
                snapshot(s, &[ADMIN]).await,
                before,
                "{body}: nothing changed"
            );
            assert_eq!(r.code(), "quota_exceeded", "{body}: {}", r.text());
            assert_eq!(r.status, 403);
            r.json()["error"]["message"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(
        refused(r#"{"size": 2}"#).await,
        "quota: at most 3 nodes for user alice (has 2, asks 2)"
    );
    let second = launch(&s, 1, &alice).await;
    assert_eq!(
        refused(r#"{"size": 1}"#).await,
        "quota: at most 2 clusters for user alice (has 2, asks 1)"
    );
    // Bob has no quota; admins neither.
    for who in [BOB, ADMIN] {
        launch(&s, 3, &[who, JSON]).await;
        launch(&s, 3, &[who, JSON]).await;
    }
    // A destroyed cluster no longer counts.
    let r = call("DELETE", &s.api(&format!("/clusters/{second}")), "", &alice).await;
    assert_eq!(r.json()["status"], "destroyed");
    let third = launch(&s, 1, &alice).await;

    // Scaling up must fit too: make `first` (2 nodes) ready as the core would.
    s.sigterm();
    common::make_ready_in_store(&data, &first);
    let s = Server::start(&data, &args);
    let url = s.api(&format!("/clusters/{first}"));
    let record = || async { call("GET", &url, "", &alice).await.text() };
    let before = record().await;
    let r = call("PATCH", &url, r#"{"options": {"size": 3}}"#, &alice).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "quota_exceeded"),
        "{}",
        r.text()
    );
    assert_eq!(
        r.json()["error"]["message"],
        "quota: at most 3 nodes for user alice (has 3, asks 1)"
    );
    assert_eq!(record().await, before, "nothing changed");
    // An admin scaling alice's cluster meets alice's quota as well.
    let r = call("PATCH", &url, r#"{"options": {"size": 3}}"#, &[ADMIN, JSON]).await;
    assert_eq!((r.status, r.code().as_str()), (403, "quota_exceeded"));
    // Once the other cluster is gone, the scale-up fits.
    call("DELETE", &s.api(&format!("/clusters/{third}")), "", &alice).await;
    let r = call("PATCH", &url, r#"{"options": {"size": 3}}"#, &alice).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["generation"], 2);
    // At the node limit now: another cluster is refused.
    let r = call(
        "POST",
        &s.api("/products/reference/1.0.0"),
        r#"{"size": 1}"#,
        &alice,
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"]["message"].as_str()),
        (
            403,
            Some("quota: at most 3 nodes for user alice (has 3, asks 1)")
        )
    );
}

#[tokio::test]
async fn a_bad_quota_column_stops_serve_and_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path(), ",gpus=1");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paas"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--master",
            "none",
            "--tokens",
        ])
        .arg(&tokens)
        .arg("--data")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("token file line 3") && err.contains("unknown quota \"gpus\""),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Item 7: retention

#[tokio::test]
async fn destroyed_clusters_are_purged_after_the_retention_with_their_events_and_logs() {
    use paas::registry::{SledStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let mut s = Server::start(&data, &[]);
    register_reference(&s, &[]).await;
    let live = launch(&s, 1, &[JSON]).await;
    let dead = launch(&s, 1, &[JSON]).await;
    let r = call("DELETE", &s.api(&format!("/clusters/{dead}")), "", &[]).await;
    assert_eq!(r.json()["status"], "destroyed");
    s.sigterm();
    {
        let store = SledStore::open(&data).unwrap();
        for id in [&live, &dead] {
            store
                .append_log(id.parse().unwrap(), format!("output of {id}\n").as_bytes())
                .unwrap();
        }
    }
    let mut s = Server::start(&data, &["--retention", "1s"]);
    until_status(&s.api(&format!("/clusters/{dead}")), &[], 404).await;
    for sub in ["events", "logs", "nodes", "services"] {
        let r = get(&s.api(&format!("/clusters/{dead}/{sub}"))).await;
        assert_eq!((r.status, r.code().as_str()), (404, "not_found"), "{sub}");
    }
    // The live cluster stays, logs and all, however long it has lived.
    assert_eq!(get(&s.api(&format!("/clusters/{live}"))).await.status, 200);
    assert_eq!(
        get(&s.api(&format!("/clusters/{live}/logs"))).await.text(),
        format!("output of {live}\n")
    );
    s.sigterm();
    let store = SledStore::open(&data).unwrap();
    assert!(store.cluster(dead.parse().unwrap()).unwrap().is_none());
    assert!(
        store.log(dead.parse().unwrap()).unwrap().is_empty(),
        "logs purged"
    );
    assert!(store.cluster(live.parse().unwrap()).unwrap().is_some());
}

// ---------------------------------------------------------------------------------------
// The route table

/// The reference product's folder as a bundle tar.
fn reference_bundle() -> Vec<u8> {
    let dir = repo_root().join("examples/products/reference");
    let manifest = std::fs::read(dir.join("product.json")).unwrap();
    let m = paas::bundle::Manifest::parse(&manifest).unwrap();
    let files: Vec<(String, Vec<u8>)> = m
        .paths()
        .into_iter()
        .map(|p| {
            let data = std::fs::read(dir.join(&p)).unwrap();
            (p, data)
        })
        .collect();
    let list: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    paas::bundle::tar::write(&list).unwrap()
}

/// Who may call an operation. Cluster routes answer their owner and admins; another user
/// gets 404 (the cluster's existence is not theirs to know).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Anyone,
    AnyUser,
    OwnerOrAdmin,
    AdminOnly,
}

/// One row per operation id of `routes.rs`: the test fails if a route is added there and
/// not here (or the other way round).
const TABLE: &[(&str, Who)] = &[
    ("listProducts", Who::AnyUser),
    ("createProduct", Who::AdminOnly),
    ("listVersions", Who::AnyUser),
    ("getProduct", Who::AnyUser),
    ("deleteProduct", Who::AdminOnly),
    ("launchCluster", Who::AnyUser),
    ("putTemplate", Who::AdminOnly),
    ("getTemplate", Who::AnyUser),
    ("putOptions", Who::AdminOnly),
    ("getOptions", Who::AnyUser),
    ("putOrchestrator", Who::AdminOnly),
    ("getOrchestrator", Who::AdminOnly),
    ("putBundle", Who::AdminOnly),
    ("getBundle", Who::AdminOnly),
    ("listClusters", Who::AnyUser),
    ("getCluster", Who::OwnerOrAdmin),
    ("updateCluster", Who::OwnerOrAdmin),
    ("deleteCluster", Who::OwnerOrAdmin),
    ("getClusterNodes", Who::OwnerOrAdmin),
    ("getClusterServices", Who::OwnerOrAdmin),
    ("getClusterEvents", Who::OwnerOrAdmin),
    ("getClusterLogs", Who::OwnerOrAdmin),
    ("streamEvents", Who::AnyUser),
    ("execNode", Who::OwnerOrAdmin),
    ("replaceNode", Who::OwnerOrAdmin),
    ("restartNode", Who::OwnerOrAdmin),
    ("health", Who::Anyone),
    ("healthReady", Who::Anyone),
    ("metrics", Who::Anyone),
    ("openapi", Who::Anyone),
    ("console", Who::Anyone),
    ("consoleAsset", Who::Anyone),
];

#[tokio::test]
async fn every_route_answers_no_token_users_other_users_and_admins_as_the_table_says() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path(), "");
    let s = Server::start(
        &dir.path().join("d"),
        &["--tokens", tokens.to_str().unwrap()],
    );
    register_reference(&s, &[ADMIN]).await;
    let id = launch(&s, 2, &[ALICE, JSON]).await;

    // The table and routes.rs name the same operations, and agree on access.
    let ops: std::collections::BTreeSet<&str> = ROUTES.iter().map(|r| r.operation_id).collect();
    let rows: std::collections::BTreeSet<&str> = TABLE.iter().map(|(op, _)| *op).collect();
    assert_eq!(
        ops, rows,
        "every route of routes.rs is in TABLE, and only those"
    );
    let who = |op: &str| {
        TABLE
            .iter()
            .find(|(o, _)| *o == op)
            .map(|(_, w)| *w)
            .unwrap()
    };
    for r in ROUTES.iter() {
        let want = match who(r.operation_id) {
            Who::Anyone => Access::Public,
            Who::AnyUser | Who::OwnerOrAdmin => Access::User,
            Who::AdminOnly => Access::Admin,
        };
        assert_eq!(r.access, want, "{} {}", r.method, r.path);
        assert_eq!(
            who(r.operation_id) == Who::OwnerOrAdmin,
            r.path.contains("{id}"),
            "{}: cluster routes are exactly the owner's",
            r.path
        );
    }

    // Destroying comes last, so that every other route still finds the cluster and the
    // product (deleting the product is refused while the cluster lives).
    let mut routes: Vec<_> = ROUTES.iter().collect();
    routes.sort_by_key(|r| (r.method == http::Method::DELETE, !r.path.contains("{id}")));
    let part = |p: &str| {
        let dir = repo_root().join("examples/products/reference");
        std::fs::read(dir.join(p)).unwrap()
    };
    let mut n = 0;
    for r in routes {
        let path = r
            .full_path()
            .replace("{name}", "reference")
            .replace("{version}", "1.0.0")
            .replace("{id}", &id)
            .replace("{node}", "node0")
            .replace("{asset}", "app.js");
        let url = format!("{}{path}", s.url);
        let rule = who(r.operation_id);
        for (caller, auth) in [
            ("no token", None),
            ("a user (the owner)", Some(ALICE)),
            ("another user", Some(BOB)),
            ("an admin", Some(ADMIN)),
        ] {
            n += 1;
            let body: Vec<u8> = match r.operation_id {
                "createProduct" => format!(r#"{{"name":"rt{n}","version":"1"}}"#).into_bytes(),
                "launchCluster" => br#"{"size": 1}"#.to_vec(),
                "updateCluster" => br#"{"options": {"size": 2}}"#.to_vec(),
                // The node does not run (no Mesos here): 409 once past the access check.
                "execNode" => br#"{"argv": ["true"]}"#.to_vec(),
                "putTemplate" => part("minimal.json"),
                "putOptions" => part("options/size.json"),
                "putOrchestrator" => part("orquestrators/minimal/fabfile.py"),
                "putBundle" => reference_bundle(),
                _ => Vec::new(),
            };
            let mut headers = if r.operation_id == "putBundle" {
                vec![("content-type", "application/x-tar")]
            } else {
                vec![JSON]
            };
            headers.extend(auth);
            // A bad Last-Event-ID makes the event stream answer 400 past the access check,
            // instead of streaming forever.
            let stream = r.operation_id == "streamEvents";
            if stream {
                headers.push(("last-event-id", "not-an-id"));
            }
            let resp = call(r.method.as_str(), &url, body, &headers).await;
            let got = resp.status;
            let is_owner = auth == Some(ALICE);
            let is_admin = auth == Some(ADMIN);
            let want: &[u16] = match (rule, auth) {
                (Who::Anyone, _) => &[200],
                (_, None) => &[401],
                (Who::AdminOnly, Some(_)) if !is_admin => &[403],
                (Who::OwnerOrAdmin, Some(_)) if !is_owner && !is_admin => &[404],
                _ if stream => &[400],
                // Allowed: the call is carried out (or refused for what it asks, e.g. 409
                // for an update of a cluster that is not ready), never 401/403/404.
                _ => &[200, 201, 202, 204, 409],
            };
            assert!(
                want.contains(&got),
                "{} {path} as {caller}: {got} (want {want:?}): {}",
                r.method,
                resp.text()
            );
            let want_code = match got {
                401 => "unauthorized",
                403 => "forbidden",
                404 => "not_found",
                _ => "",
            };
            if !want_code.is_empty() {
                assert_eq!(resp.code(), want_code, "{} {path} as {caller}", r.method);
            }
        }
    }
    // Bob's attempts changed nothing of alice's: her cluster is hers, destroyed by her.
    let c = call("GET", &s.api(&format!("/clusters/{id}")), "", &[ALICE])
        .await
        .json();
    assert_eq!(c["owner"], "alice");
    assert_eq!(c["status"], "destroyed");
}
