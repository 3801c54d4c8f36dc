//! Black-box tests of the REST API over real HTTP: the seed walkthrough verbatim, every
//! validation error, ownership rules, and the operational endpoints.

mod common;

use common::{JSON, Server, call, cluster, get, register_reference, repo_root};
use serde_json::{Value, json};

/// The seed's lines, exactly as users type them (only host:port is the test server's).
const SEED: &[&str] = &[
    "http POST http://127.0.0.1:5000/bigdata/api/v1/products name=reference version=1.0.0 description='Reference product: minimal'",
    r#"curl -X POST http://127.0.0.1:5000/bigdata/api/v1/products -d '{"name":"gluster", "version":"3.7.11", "description": "GlusterFS parallel filesystem cluster"}' -H "Content-type: application/json""#,
    r#"curl -X PUT http://127.0.0.1:5000/bigdata/api/v1/products/reference/1.0.0/template --data-binary @minimal.json -H "Content-type: application/json""#,
    r#"curl -X PUT http://127.0.0.1:5000/bigdata/api/v1/products/reference/1.0.0/options --data-binary @options/size.json -H "Content-type: application/json""#,
    r#"curl -X PUT http://127.0.0.1:5000/bigdata/api/v1/products/reference/1.0.0/orquestrator --data-binary @orquestrators/minimal/fabfile.py -H "Content-type: application/json""#,
    "curl http://127.0.0.1:5000/bigdata/api/v1/products/reference/1.0.0/options",
    r#"curl -H "Content-type: application/json" -X POST -d '{"size": 2}' http://127.0.0.1:5000/bigdata/api/v1/products/reference/1.0.0"#,
    r#"curl -H "Content-type: application/json" -X POST -d '{"size": "2"}' http://127.0.0.1:5000/bigdata/api/v1/products/reference/1.0.0"#,
    "http POST http://127.0.0.1:5000/bigdata/api/v1/products/reference/1.0.0 size:=2",
];

fn run_seed_line(line: &str, url: &str) -> Value {
    let cmd = line.replace("http://127.0.0.1:5000", url);
    // httpie reads stdin when it is not a terminal; the seed is typed at a terminal.
    let cmd = cmd.replacen("http POST", "http --ignore-stdin POST", 1);
    let out = std::process::Command::new("bash")
        .args(["-c", &cmd])
        .current_dir(repo_root().join("examples/products/reference"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash: {e}"));
    assert!(
        out.status.success(),
        "{line}\nexit {}: {}\n(httpie is installed by .ci/run: `pip install httpie`)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{line}: output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert!(v.get("error").is_none(), "{line}: {v}");
    v
}

#[tokio::test]
async fn seed_walkthrough_works_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    let out: Vec<Value> = SEED.iter().map(|l| run_seed_line(l, &s.url)).collect();
    assert_eq!(out[0]["name"], "reference");
    assert_eq!(out[1]["version"], "3.7.11");
    assert_eq!(out[2]["parts"]["template"], true);
    assert_eq!(out[3]["parts"]["options"], true);
    assert_eq!(out[4]["parts"]["orchestrator"], true);
    assert_eq!(out[5]["required"], json!({"size": 2}));
    for launched in &out[6..] {
        assert_eq!(launched["status"], "registered");
        let id = launched["id"].as_str().unwrap();
        let c = get(&s.api(&format!("/clusters/{id}"))).await.json();
        assert_eq!(
            c["options"]["size"], 2,
            "string and number sizes both become 2"
        );
        assert_eq!(c["nodes"].as_array().unwrap().len(), 2);
        assert!(
            c["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["status"] == "queued")
        );
        assert_eq!(c["history"][0]["status"], "registered");
        assert!(
            c.get("secret").is_none(),
            "the NodeAgent secret is never served"
        );
    }
    // The script was stored raw, byte for byte.
    let script = std::fs::read(
        repo_root().join("examples/products/reference/orquestrators/minimal/fabfile.py"),
    )
    .unwrap();
    let got = get(&s.api("/products/reference/1.0.0/orquestrator")).await;
    assert_eq!(got.body.as_ref(), script.as_slice());
    let alias = get(&s.api("/products/reference/1.0.0/orchestrator")).await;
    assert_eq!(alias.body, got.body);
    let products = get(&s.api("/products")).await.json();
    assert_eq!(products["products"].as_array().unwrap().len(), 2);
    assert_eq!(
        get(&s.api("/clusters")).await.json()["clusters"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn launch_answers_202_with_location_and_delete_destroys() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    register_reference(&s, &[]).await;
    let r = call(
        "POST",
        &s.api("/products/reference/1.0.0"),
        r#"{"size": 3}"#,
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 202);
    let body = r.json();
    let id = body["id"].as_str().unwrap().to_owned();
    let loc = r.headers["location"].to_str().unwrap();
    assert_eq!(loc, format!("/bigdata/api/v1/clusters/{id}"));
    assert_eq!(body["url"], loc);
    assert!(uuid::Uuid::parse_str(&id).is_ok());

    let nodes = get(&s.api(&format!("/clusters/{id}/nodes"))).await.json();
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 3);
    for key in [
        "name", "status", "host", "cpu", "mem", "disk", "ports", "task_id", "agent_id",
    ] {
        assert!(nodes["nodes"][0].get(key).is_some(), "node field {key}");
    }
    let services = get(&s.api(&format!("/clusters/{id}/services")))
        .await
        .json();
    let names: Vec<&str> = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["head", "workers"]);
    assert_eq!(services["services"][1]["nodes"], json!(["node1", "node2"]));
    assert_eq!(
        get(&s.api(&format!("/clusters/{id}/logs"))).await.status,
        200
    );

    // The product cannot go while the cluster lives.
    let r = call("DELETE", &s.api("/products/reference/1.0.0"), "", &[]).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"]["details"]["clusters"], json!([id]));

    let r = call("DELETE", &s.api(&format!("/clusters/{id}")), "", &[]).await;
    assert_eq!(r.status, 202);
    assert_eq!(
        r.json()["status"],
        "destroyed",
        "no task ran, so nothing to wait for"
    );
    let events = get(&s.api(&format!("/clusters/{id}/events"))).await.json();
    let statuses: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["registered", "destroying", "destroyed"]);
    // Deleting again is harmless.
    assert_eq!(
        call("DELETE", &s.api(&format!("/clusters/{id}")), "", &[])
            .await
            .status,
        202
    );
    assert_eq!(
        get(&s.api("/clusters?status=destroyed")).await.json()["clusters"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        get(&s.api("/clusters?status=ready")).await.json()["clusters"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let r = call("DELETE", &s.api("/products/reference/1.0.0"), "", &[]).await;
    assert_eq!(r.status, 204);
    assert_eq!(get(&s.api("/products/reference/1.0.0")).await.status, 404);
    assert_eq!(get(&s.api("/products/reference")).await.status, 404);
}

/// A snapshot of everything stored, to prove that a refused request changed nothing.
async fn snapshot(s: &Server) -> String {
    let mut all = String::new();
    for path in [
        "/products",
        "/clusters",
        "/products/reference/1.0.0/template",
        "/products/reference/1.0.0/options",
        "/products/reference/1.0.0/orquestrator",
    ] {
        all.push_str(&get(&s.api(path)).await.text());
    }
    all
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &["--max-body", "65536"]);
    register_reference(&s, &[]).await;
    let before = snapshot(&s).await;
    let launch = s.api("/products/reference/1.0.0");
    let big = "x".repeat(70_000);
    type Case<'a> = (
        &'a str,
        String,
        String,
        Vec<(&'a str, &'a str)>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        // (method, url, body, headers, status, error code)
        (
            "POST",
            s.api("/products"),
            "{\"name\": \"x\",}".into(),
            vec![JSON],
            400,
            "invalid_json",
        ),
        (
            "POST",
            s.api("/products"),
            "[1]".into(),
            vec![JSON],
            400,
            "invalid_body",
        ),
        (
            "POST",
            s.api("/products"),
            r#"{"name": "Bad Name", "version": "1"}"#.into(),
            vec![JSON],
            400,
            "invalid_name",
        ),
        (
            "POST",
            s.api("/products"),
            r#"{"name": "../etc", "version": "1"}"#.into(),
            vec![JSON],
            400,
            "invalid_name",
        ),
        (
            "POST",
            s.api("/products"),
            r#"{"name": "ok", "version": 1}"#.into(),
            vec![JSON],
            400,
            "invalid_product",
        ),
        (
            "POST",
            s.api("/products"),
            r#"{"name": "ok", "version": "1", "colour": "red"}"#.into(),
            vec![JSON],
            400,
            "invalid_product",
        ),
        (
            "POST",
            s.api("/products"),
            r#"{"version": "1"}"#.into(),
            vec![JSON],
            400,
            "invalid_product",
        ),
        (
            "POST",
            s.api("/products"),
            r#"{"name":"reference","version":"1.0.0"}"#.into(),
            vec![JSON],
            409,
            "conflict",
        ),
        (
            "POST",
            s.api("/products"),
            r#"{"name":"x","version":"1"}"#.into(),
            vec![("content-type", "application/xml")],
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            s.api("/products"),
            format!("{{\"name\":\"x\",\"version\":\"1\",\"description\":\"{big}\"}}"),
            vec![JSON],
            413,
            "payload_too_large",
        ),
        (
            "PATCH",
            s.api("/products"),
            "{}".into(),
            vec![JSON],
            405,
            "method_not_allowed",
        ),
        (
            "GET",
            s.api("/nothing"),
            String::new(),
            vec![],
            404,
            "not_found",
        ),
        (
            "GET",
            s.api("/products/nope/1.0"),
            String::new(),
            vec![],
            404,
            "not_found",
        ),
        (
            "GET",
            s.api("/products/NOPE/1.0"),
            String::new(),
            vec![],
            400,
            "invalid_name",
        ),
        (
            "GET",
            s.api("/clusters/0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10"),
            String::new(),
            vec![],
            404,
            "not_found",
        ),
        (
            "DELETE",
            s.api("/clusters/0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10"),
            String::new(),
            vec![],
            404,
            "not_found",
        ),
        (
            "PUT",
            s.api("/products/nope/1/template"),
            "{}".into(),
            vec![JSON],
            404,
            "not_found",
        ),
        (
            "PUT",
            s.api("/products/reference/1.0.0/template"),
            "{{#each}".into(),
            vec![JSON],
            400,
            "invalid_template",
        ),
        (
            "PUT",
            s.api("/products/reference/1.0.0/template"),
            r#"{"nodes": {{opts.nope}}}"#.into(),
            vec![JSON],
            400,
            "invalid_template",
        ),
        (
            "PUT",
            s.api("/products/reference/1.0.0/template"),
            r#"{"nodes": {"a": {"cpu": 1}}}"#.into(),
            vec![JSON],
            400,
            "invalid_template",
        ),
        (
            "PUT",
            s.api("/products/reference/1.0.0/template"),
            r#"{"nodes": {{opts.size}},}"#.into(),
            vec![JSON],
            400,
            "invalid_template",
        ),
        (
            "PUT",
            s.api("/products/reference/1.0.0/template"),
            String::new(),
            vec![JSON],
            400,
            "empty_body",
        ),
        (
            "PUT",
            s.api("/products/reference/1.0.0/options"),
            "{\"required\": {\"size\": 1},}".into(),
            vec![JSON],
            400,
            "invalid_json",
        ),
        (
            "PUT",
            s.api("/products/reference/1.0.0/options"),
            r#"{"required": [], "optional": {}}"#.into(),
            vec![JSON],
            400,
            "invalid_options",
        ),
        (
            "PUT",
            s.api("/products/reference/1.0.0/options"),
            r#"{"required": {"size": 1}, "bogus": {}}"#.into(),
            vec![JSON],
            400,
            "invalid_options",
        ),
        // The stored template needs opts.cpu: options without it would break it.
        (
            "PUT",
            s.api("/products/reference/1.0.0/options"),
            r#"{"required": {"size": 1}}"#.into(),
            vec![JSON],
            400,
            "invalid_template",
        ),
        (
            "PUT",
            s.api("/products/reference/1.0.0/orquestrator"),
            String::new(),
            vec![JSON],
            400,
            "empty_body",
        ),
        (
            "POST",
            launch.clone(),
            "{\"size\": 2,}".into(),
            vec![JSON],
            400,
            "invalid_json",
        ),
        (
            "POST",
            launch.clone(),
            "[2]".into(),
            vec![JSON],
            400,
            "invalid_body",
        ),
        (
            "POST",
            launch.clone(),
            "{}".into(),
            vec![JSON],
            400,
            "invalid_options",
        ),
        (
            "POST",
            launch.clone(),
            r#"{"size": "two"}"#.into(),
            vec![JSON],
            400,
            "invalid_options",
        ),
        (
            "POST",
            launch.clone(),
            r#"{"size": 2.5}"#.into(),
            vec![JSON],
            400,
            "invalid_options",
        ),
        (
            "POST",
            launch.clone(),
            r#"{"size": 2, "colour": "red"}"#.into(),
            vec![JSON],
            400,
            "invalid_options",
        ),
        (
            "POST",
            launch.clone(),
            r#"{"size": 1000000}"#.into(),
            vec![JSON],
            422,
            "template_failed",
        ),
        (
            "POST",
            launch.clone(),
            r#"{"size": 0}"#.into(),
            vec![JSON],
            422,
            "template_failed",
        ),
        (
            "POST",
            launch.clone(),
            r#"{"size": 2, "mem": -5}"#.into(),
            vec![JSON],
            422,
            "template_failed",
        ),
        (
            "POST",
            s.api("/products/gluster/1/template"),
            "{}".into(),
            vec![JSON],
            405,
            "method_not_allowed",
        ),
        (
            "GET",
            s.api("/clusters?colour=red"),
            String::new(),
            vec![],
            400,
            "invalid_filter",
        ),
        (
            "GET",
            s.api("/clusters?status=sleepy"),
            String::new(),
            vec![],
            400,
            "invalid_filter",
        ),
    ];
    for (method, url, body, headers, status, code) in cases {
        let r = call(method, &url, body.clone(), &headers).await;
        assert_eq!(
            r.status,
            status,
            "{method} {url} {}: {}",
            &body[..body.len().min(80)],
            r.text()
        );
        assert_eq!(r.code(), code, "{method} {url}: {}", r.text());
        assert!(!r.json()["error"]["message"].as_str().unwrap().is_empty());
    }
    // Messages name what is wrong.
    let r = call("POST", &launch, r#"{"colour": 1, "size": "x"}"#, &[JSON]).await;
    let msg = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("colour") && msg.contains("size"), "{msg}");
    let r = call(
        "POST",
        &s.api("/products"),
        "{\n  \"name\": \"x\",\n}",
        &[JSON],
    )
    .await;
    assert_eq!(
        r.json()["error"]["details"],
        json!({"line": 3, "column": 1})
    );
    let r = call(
        "PUT",
        &s.api("/products/reference/1.0.0/template"),
        r#"{"nodes": {{opts.nope}}}"#,
        &[JSON],
    )
    .await;
    assert!(r.text().contains("opts.nope"), "{}", r.text());

    // Nothing changed, except the clusters list gained one destroyed cluster above.
    let after = snapshot(&s).await;
    let clean = |s: &str| {
        s.split("\"clusters\"")
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(clean(&before), clean(&after));
    assert_eq!(
        get(&s.api("/products")).await.json()["products"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        get(&s.api("/clusters")).await.json()["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] != "destroyed")
            .count(),
        0
    );
}

#[tokio::test]
async fn template_before_options_is_checked_when_options_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    call(
        "POST",
        &s.api("/products"),
        r#"{"name":"p","version":"1"}"#,
        &[JSON],
    )
    .await;
    // Launch without a template: a clear conflict.
    let r = call("POST", &s.api("/products/p/1"), "{}", &[JSON]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (409, "conflict"),
        "{}",
        r.text()
    );
    // Syntax is checked at once; variables only once the options are known.
    let t = r#"{"nodes": {"a": {"docker_image": "i", "cpu": {{opts.cpu}}, "mem": 1}}}"#;
    assert_eq!(
        call("PUT", &s.api("/products/p/1/template"), t, &[JSON])
            .await
            .status,
        200
    );
    let r = call(
        "PUT",
        &s.api("/products/p/1/options"),
        r#"{"optional": {"mem": 1}}"#,
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("opts.cpu"), "{}", r.text());
    assert_eq!(
        get(&s.api("/products/p/1")).await.json()["parts"]["options"],
        false
    );
    let r = call(
        "PUT",
        &s.api("/products/p/1/options"),
        r#"{"optional": {"cpu": 0.5}}"#,
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Now a bad template is refused at upload.
    let r = call(
        "PUT",
        &s.api("/products/p/1/template"),
        r#"{"nodes": {"a": {"docker_image": "i", "cpu": {{opts.gpu}}, "mem": 1}}}"#,
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        get(&s.api("/products/p/1/template")).await.text(),
        t,
        "the good template is kept"
    );
    let r = call("POST", &s.api("/products/p/1"), "", &[]).await;
    assert_eq!(
        r.status,
        202,
        "an empty body launches with defaults: {}",
        r.text()
    );
}

fn tokens_file(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("tokens");
    std::fs::write(&p, "# token,user,role\nadmin-token-0123456789,root,admin\nalice-token-0123456789,alice,user\nbob-token-012345678901,bob,user\n").unwrap();
    p
}

/// A server with the users of [`tokens_file`] and the reference product; the headers of
/// the admin, Alice and Bob.
async fn token_server(dir: &std::path::Path) -> (Server, [[(&'static str, &'static str); 2]; 3]) {
    let tokens = tokens_file(dir);
    let s = Server::start(&dir.join("data"), &["--tokens", tokens.to_str().unwrap()]);
    let admin = [("authorization", "Bearer admin-token-0123456789"), JSON];
    let alice = [("authorization", "Bearer alice-token-0123456789"), JSON];
    let bob = [("authorization", "Bearer bob-token-012345678901"), JSON];
    register_reference(&s, &admin).await;
    (s, [admin, alice, bob])
}

#[tokio::test]
async fn users_see_only_their_own_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let data = dir.path().join("data");
    let s = Server::start(&data, &["--tokens", tokens.to_str().unwrap()]);
    let admin = [("authorization", "Bearer admin-token-0123456789"), JSON];
    let alice = [("authorization", "Bearer alice-token-0123456789"), JSON];
    let bob = [("authorization", "Bearer bob-token-012345678901"), JSON];

    // No or bad token: 401. Users cannot write products or read scripts: 403.
    assert_eq!(get(&s.api("/products")).await.status, 401);
    assert_eq!(
        call(
            "GET",
            &s.api("/products"),
            "",
            &[("authorization", "Bearer wrong")]
        )
        .await
        .status,
        401
    );
    let r = call(
        "POST",
        &s.api("/products"),
        r#"{"name":"x","version":"1"}"#,
        &alice,
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden"));
    register_reference(&s, &admin).await;
    let r = call(
        "PUT",
        &s.api("/products/reference/1.0.0/orquestrator"),
        "#!/bin/sh\nrm -rf /\n",
        &alice,
    )
    .await;
    assert_eq!(r.status, 403, "only admins upload code we execute");
    assert_eq!(
        call(
            "GET",
            &s.api("/products/reference/1.0.0/orquestrator"),
            "",
            &alice
        )
        .await
        .status,
        403
    );
    assert_eq!(
        call("DELETE", &s.api("/products/reference/1.0.0"), "", &alice)
            .await
            .status,
        403
    );
    assert_eq!(
        call(
            "GET",
            &s.api("/products/reference/1.0.0/options"),
            "",
            &alice
        )
        .await
        .status,
        200
    );
    // Public endpoints need no token.
    assert_eq!(get(&s.api("/health")).await.status, 200);
    assert_eq!(get(&s.api("/metrics")).await.status, 200);

    let r = call(
        "POST",
        &s.api("/products/reference/1.0.0"),
        r#"{"size": 1}"#,
        &alice,
    )
    .await;
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let c = call("GET", &s.api(&format!("/clusters/{id}")), "", &alice)
        .await
        .json();
    assert_eq!(c["owner"], "alice");

    // Every cluster route, every method: another user's cluster is a 404, and stays as it
    // was (tests/security_api.rs walks the whole route table the same way).
    let before = call("GET", &s.api(&format!("/clusters/{id}")), "", &alice)
        .await
        .text();
    for (method, path, body) in [
        ("GET", format!("/clusters/{id}"), ""),
        (
            "PATCH",
            format!("/clusters/{id}"),
            r#"{"options": {"size": 2}}"#,
        ),
        ("DELETE", format!("/clusters/{id}"), ""),
        ("GET", format!("/clusters/{id}/nodes"), ""),
        ("GET", format!("/clusters/{id}/services"), ""),
        ("GET", format!("/clusters/{id}/events"), ""),
        ("GET", format!("/clusters/{id}/logs"), ""),
        ("POST", format!("/clusters/{id}/nodes/node0/replace"), ""),
        ("POST", format!("/clusters/{id}/nodes/node0/restart"), ""),
    ] {
        let r = call(method, &s.api(&path), body, &bob).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (404, "not_found"),
            "{method} {path}"
        );
    }
    assert_eq!(
        call("GET", &s.api(&format!("/clusters/{id}")), "", &alice)
            .await
            .text(),
        before,
        "bob changed nothing"
    );
    assert_eq!(
        call("GET", &s.api("/clusters"), "", &bob).await.json()["clusters"],
        json!([])
    );
    assert_eq!(
        call("GET", &s.api("/clusters"), "", &alice).await.json()["clusters"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        call("GET", &s.api("/clusters?owner=alice"), "", &admin)
            .await
            .json()["clusters"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        call("GET", &s.api(&format!("/clusters/{id}")), "", &admin)
            .await
            .status,
        200
    );
    // Bob's failed delete changed nothing; Alice's works.
    assert_eq!(
        call("GET", &s.api(&format!("/clusters/{id}")), "", &alice)
            .await
            .json()["status"],
        "registered"
    );
    assert_eq!(
        call("DELETE", &s.api(&format!("/clusters/{id}")), "", &alice)
            .await
            .status,
        202
    );
}

/// The access each operation declares in the OpenAPI document is what the server enforces:
/// public operations need no token, the others answer 401 without one, and admin
/// operations answer 403 to a user.
#[tokio::test]
async fn documented_access_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let s = Server::start(
        &dir.path().join("data"),
        &["--tokens", tokens.to_str().unwrap()],
    );
    let alice = [("authorization", "Bearer alice-token-0123456789"), JSON];
    let doc = get(&s.api("/openapi.json")).await.json();
    let mut seen = std::collections::BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let url = format!(
            "{}{}",
            s.url,
            path.replace("{name}", "reference")
                .replace("{version}", "1.0.0")
                .replace("{id}", "0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10")
                .replace("{node}", "node0")
                .replace("{asset}", "app.js")
        );
        for (method, op) in ops.as_object().unwrap() {
            let method = method.to_uppercase();
            let access = op["x-access"].as_str().unwrap();
            seen.insert(access.to_owned());
            // A bad Last-Event-ID makes the event stream answer (400) instead of streaming
            // forever; no other route reads it.
            let bad_id = ("last-event-id", "not-an-id");
            let anonymous = call(&method, &url, "{}", &[JSON, bad_id]).await.status;
            let user = call(&method, &url, "{}", &[alice[0], alice[1], bad_id])
                .await
                .status;
            let what = format!("{method} {path} ({access}): {anonymous} / {user}");
            match access {
                "public" => assert!(anonymous != 401 && user != 401 && user != 403, "{what}"),
                "user" => assert!(anonymous == 401 && user != 401 && user != 403, "{what}"),
                "admin" => assert!(anonymous == 401 && user == 403, "{what}"),
                other => panic!("unknown x-access {other:?} on {method} {path}"),
            }
        }
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[tokio::test]
async fn anonymous_admin_only_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paas"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("d"))
        .env_remove("PAAS_TOKENS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--allow-anonymous"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tokens = tokens_file(dir.path());
    // With a token file, or with the override, it starts.
    let mut s = Server::start(
        &dir.path().join("d1"),
        &["--tokens", tokens.to_str().unwrap()],
    );
    s.kill9();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paas"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("d2"))
        .args(["--tokens", "/nonexistent/tokens"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a missing token file is an error, not anonymous access"
    );
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    register_reference(&s, &[]).await;
    call(
        "POST",
        &s.api("/products/reference/1.0.0"),
        r#"{"size": 1}"#,
        &[JSON],
    )
    .await;
    let h = get(&s.api("/health")).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["ready"], true);
    assert_eq!(get(&s.api("/health/ready")).await.status, 200);
    let m = get(&s.api("/metrics")).await;
    assert!(
        m.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = m.text();
    assert!(
        text.contains("paas_clusters{status=\"registered\"} 1"),
        "{text}"
    );
    assert!(text.contains("paas_products 1"), "{text}");
    assert!(text.contains("paas_nodes{status=\"queued\"} 1\n"), "{text}");
    assert!(
        text.contains("paas_http_requests_total{operation=\"launchCluster\",class=\"2xx\"} 1"),
        "{text}"
    );

    let doc = get(&s.api("/openapi.json")).await.json();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    // Every documented operation answers something other than 404/405 from the router.
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let url = format!(
                "{}{}",
                s.url,
                path.replace("{name}", "reference")
                    .replace("{version}", "1.0.0")
                    .replace("{id}", "0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10")
                    .replace("{asset}", "app.js")
            );
            // A bad Last-Event-ID makes the event stream answer 400 instead of streaming
            // forever; no other route reads it.
            let headers = [JSON, ("last-event-id", "not-an-id")];
            let r = call(&method.to_uppercase(), &url, "{}", &headers).await;
            assert_ne!(r.status, 405, "{method} {path}");
            if r.status == 404 {
                let msg = r.json()["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                assert!(
                    !msg.starts_with("no route"),
                    "{method} {path} routes nowhere"
                );
            }
        }
    }
}

#[tokio::test]
async fn option_values_cannot_inject_json_into_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    call(
        "POST",
        &s.api("/products"),
        r#"{"name":"inj","version":"1"}"#,
        &[JSON],
    )
    .await;
    let t = r#"{"nodes": {"a": {"docker_image": "{{opts.image}}", "cpu": 0.1, "mem": 1}}}"#;
    assert_eq!(
        call("PUT", &s.api("/products/inj/1/template"), t, &[JSON])
            .await
            .status,
        200
    );
    assert_eq!(
        call(
            "PUT",
            &s.api("/products/inj/1/options"),
            r#"{"optional": {"image": "x"}}"#,
            &[JSON]
        )
        .await
        .status,
        200
    );
    let r = call(
        "POST",
        &s.api("/products/inj/1"),
        r#"{"image": "x\", \"cpu\": 999, \"y\": \""}"#,
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let c = get(&s.api(&format!("/clusters/{id}"))).await.json();
    assert_eq!(
        c["nodes"][0]["docker_image"],
        "x\", \"cpu\": 999, \"y\": \""
    );
    assert_eq!(c["nodes"][0]["cpu"], 0.1);
}

/// The stored record as served, to prove that a refused update changed nothing (every field
/// but the secret, `updated_at` and `history` included).
async fn record(s: &Server, id: &str, auth: &[(&str, &str)]) -> String {
    let r = call("GET", &s.api(&format!("/clusters/{id}")), "", auth).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// Launches a reference cluster of `size` nodes; its id.
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

/// Requests an update that must be refused with `want` (status, code), and checks that the
/// record (as `reader` sees it) is the same before and after; the error body.
async fn refused(
    s: &Server,
    id: &str,
    body: &str,
    headers: &[(&str, &str)],
    reader: &[(&str, &str)],
    want: (u16, &str),
) -> Value {
    let before = record(s, id, reader).await;
    let r = call(
        "PATCH",
        &s.api(&format!("/clusters/{id}")),
        body.to_owned(),
        headers,
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), want, "{body}: {}", r.text());
    assert!(r.headers.get("location").is_none(), "{body}");
    assert_eq!(
        record(s, id, reader).await,
        before,
        "{body}: nothing changed"
    );
    r.json()
}

/// Without Mesos a cluster never gets past `registered`: an update is refused (409, not
/// queued), and every malformed request is refused before the cluster is looked at.
#[tokio::test]
async fn update_refuses_bad_requests_and_clusters_that_are_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let (s, [admin, alice, bob]) = token_server(dir.path()).await;
    let id = launch(&s, 2, &alice).await;
    let size5 = r#"{"options": {"size": 5}}"#;

    let e = refused(&s, &id, size5, &alice, &alice, (409, "conflict")).await;
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("is registered; only a ready cluster can be updated")
            && msg.contains("not queued"),
        "{msg}"
    );
    assert_eq!(e["error"]["details"]["status"], "registered");
    // Another user's cluster and an unknown one are both 404.
    refused(&s, &id, size5, &bob, &alice, (404, "not_found")).await;
    let r = call(
        "PATCH",
        &s.api("/clusters/0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10"),
        size5,
        &alice,
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    // No token: 401.
    refused(&s, &id, size5, &[JSON], &alice, (401, "unauthorized")).await;
    for (body, code, says) in [
        (
            r#"{"options": {"size": 5},}"#,
            "invalid_json",
            "line 1, column 25",
        ),
        ("", "invalid_json", "malformed JSON"),
        (r#"{"size": 5}"#, "invalid_body", "unknown key \"size\""),
        (
            r#"{"options": {"size": 5}, "force": true}"#,
            "invalid_body",
            "unknown key \"force\"",
        ),
        ("{}", "invalid_body", "\"options\" is missing"),
        (
            r#"{"options": 5}"#,
            "invalid_body",
            "\"options\" must be a JSON object",
        ),
        (
            r#"[{"options": {}}]"#,
            "invalid_body",
            "must be a JSON object, not an array",
        ),
    ] {
        let e = refused(&s, &id, body, &alice, &alice, (400, code)).await;
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{body}: {msg}");
    }
    let xml = [alice[0], ("content-type", "application/xml")];
    refused(
        &s,
        &id,
        size5,
        &xml,
        &alice,
        (415, "unsupported_media_type"),
    )
    .await;

    // 405s name PATCH where it is allowed, and only there.
    let r = call("PUT", &s.api(&format!("/clusters/{id}")), size5, &alice).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "GET, PATCH, DELETE");
    for path in ["/clusters".to_owned(), format!("/clusters/{id}/nodes")] {
        let r = call("PATCH", &s.api(&path), size5, &alice).await;
        assert_eq!(r.status, 405, "{path}");
        assert_eq!(r.headers["allow"], "GET", "{path}");
    }
    // Node actions: 404 for an unknown node or another user's cluster, 409 unless ready,
    // 405 for another method; nothing changes.
    let before = record(&s, &id, &alice).await;
    for verb in ["replace", "restart"] {
        let path = s.api(&format!("/clusters/{id}/nodes/node1/{verb}"));
        let r = call("POST", &path, "", &alice).await;
        assert_eq!((r.status, r.code().as_str()), (409, "conflict"), "{verb}");
        assert!(r.text().contains("only a ready cluster"), "{}", r.text());
        let r = call("POST", &path, "", &bob).await;
        assert_eq!((r.status, r.code().as_str()), (404, "not_found"), "{verb}");
        let unknown = s.api(&format!("/clusters/{id}/nodes/node9/{verb}"));
        let r = call("POST", &unknown, "", &alice).await;
        assert_eq!((r.status, r.code().as_str()), (404, "not_found"), "{verb}");
        let r = call("GET", &path, "", &alice).await;
        assert_eq!(r.status, 405, "{verb}");
        assert_eq!(r.headers["allow"], "POST", "{verb}");
        let r = call(
            "POST",
            &s.api(&format!("/clusters/{id}/nodes/Bad!/{verb}")),
            "",
            &alice,
        )
        .await;
        assert_eq!(r.status, 400, "{verb}: {}", r.text());
    }
    assert_eq!(record(&s, &id, &alice).await, before);

    assert_eq!(record(&s, &id, &alice).await, record(&s, &id, &admin).await);
    let c: Value = serde_json::from_str(&record(&s, &id, &alice).await).unwrap();
    assert_eq!(
        (c["status"].as_str(), c["generation"].as_u64()),
        (Some("registered"), Some(1))
    );
}

/// A ready cluster (made so through the store of a stopped server, as the scheduler and
/// orchestrator would) takes an update: 202, generation 2, `updating`, the added nodes
/// queued and the running ones kept. Bad options are refused first and change nothing.
#[tokio::test]
async fn update_of_a_ready_cluster_answers_202_with_the_new_generation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Server::start(&data, &[]);
    register_reference(&s, &[]).await;
    let id = launch(&s, 2, &[JSON]).await;
    s.sigterm();
    common::make_ready_in_store(&data, &id);
    let s = Server::start(&data, &[]);
    let url = s.api(&format!("/clusters/{id}"));
    assert_eq!(cluster(&s, &id).await["status"], "ready");

    for (body, want, says) in [
        (
            r#"{"options": {"colour": "red"}}"#,
            (400, "invalid_options"),
            "colour",
        ),
        (
            r#"{"options": {"size": "many"}}"#,
            (400, "invalid_options"),
            "size (expected integer)",
        ),
        (
            r#"{"options": {"size": true}}"#,
            (400, "invalid_options"),
            "size",
        ),
        (
            r#"{"options": {"cpu": -1}}"#,
            (422, "template_failed"),
            "node0.cpu",
        ),
    ] {
        let e = refused(&s, &id, body, &[JSON], &[], want).await;
        let msg = e["error"]["message"].as_str().unwrap();
        assert!(msg.contains(says), "{body}: {msg}");
    }
    // The same options: nothing to do, 200 with the current generation, nothing written.
    let before = record(&s, &id, &[]).await;
    for body in [r#"{"options": {"size": "2"}}"#, r#"{"options": {}}"#] {
        let r = call("PATCH", &url, body, &[JSON]).await;
        assert_eq!(r.status, 200, "{body}: {}", r.text());
        let b = r.json();
        assert_eq!(
            (b["status"].as_str(), b["generation"].as_u64()),
            (Some("ready"), Some(1))
        );
        assert_eq!(record(&s, &id, &[]).await, before, "{body}");
    }

    // Scale 2 → 4 (a numeric string, as at launch).
    let r = call("PATCH", &url, r#"{"options": {"size": "4"}}"#, &[JSON]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let b = r.json();
    assert_eq!(b["id"], id.as_str());
    assert_eq!(b["status"], "updating");
    assert_eq!(b["generation"], 2);
    assert_eq!(b["url"], format!("/bigdata/api/v1/clusters/{id}"));
    assert_eq!(r.headers["location"].to_str().unwrap(), b["url"]);
    let c = cluster(&s, &id).await;
    assert_eq!(
        (c["status"].as_str(), c["generation"].as_u64()),
        (Some("updating"), Some(2))
    );
    assert_eq!(c["options"]["size"], 4);
    let nodes: Vec<(&str, &str)> = c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        nodes,
        [
            ("node0", "running"),
            ("node1", "running"),
            ("node2", "queued"),
            ("node3", "queued")
        ]
    );
    assert_eq!(
        c["nodes"][0]["task_id"],
        format!("{id}.node0.1"),
        "kept as it was"
    );
    let last = c["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["status"], "updating");
    assert_eq!(last["message"], "generation 2: adding node2, node3");

    // A change while the update runs is refused, not queued.
    let e = refused(
        &s,
        &id,
        r#"{"options": {"size": 5}}"#,
        &[JSON],
        &[],
        (409, "conflict"),
    )
    .await;
    assert_eq!(e["error"]["details"]["status"], "updating");
    let m = get(&s.api("/metrics")).await.text();
    assert!(
        m.contains("paas_http_requests_total{operation=\"updateCluster\",class=\"2xx\"} 3"),
        "{m}"
    );
}

/// Every page of `GET /clusters` from `query` on, following `next` and checking that the
/// `Link` header says the same; the clusters in the order served.
async fn all_pages(s: &Server, query: &str, auth: &[(&str, &str)]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut url = s.api(&format!("/clusters?{query}"));
    loop {
        let r = call("GET", &url, "", auth).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        let page = r.json();
        out.extend(page["clusters"].as_array().unwrap().iter().cloned());
        let link = r
            .headers
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned());
        let Some(next) = page["next"].as_str() else {
            assert!(page.get("next").is_none(), "no null next: {page}");
            assert_eq!(link, None, "no Link on the last page");
            return out;
        };
        let link = link.expect("a Link header when there is a next page");
        let target = link
            .strip_prefix('<')
            .and_then(|l| l.strip_suffix(">; rel=\"next\""))
            .unwrap_or_else(|| panic!("Link {link}"));
        assert!(
            target.ends_with(&format!("cursor={next}")),
            "{link} vs {next}"
        );
        url = format!("{}{target}", s.url);
    }
}

/// The ids of `clusters`, checking that they are served oldest first (creation time, then
/// id) and each once.
fn in_order(clusters: &[Value]) -> Vec<String> {
    let keys: Vec<(String, String)> = clusters
        .iter()
        .map(|c| {
            (
                c["created_at"].as_str().unwrap().to_owned(),
                c["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for w in keys.windows(2) {
        assert!(w[0] < w[1], "out of order or repeated: {w:?}");
    }
    keys.into_iter().map(|(_, id)| id).collect()
}

/// Launches `n` one-node reference clusters, several at a time; their ids.
async fn launch_many(s: &Server, n: usize, auth: &[(&str, &str)]) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(25) {
        let launches = chunk.iter().map(|_| launch(s, 1, auth));
        ids.extend(futures_util::future::join_all(launches).await);
    }
    ids
}

#[tokio::test]
async fn paging_through_250_clusters_yields_each_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    register_reference(&s, &[]).await;
    let launched = launch_many(&s, 250, &[JSON]).await;

    let first = get(&s.api("/clusters")).await.json();
    assert_eq!(
        first["clusters"].as_array().unwrap().len(),
        100,
        "default limit"
    );
    let pages = all_pages(&s, "limit=100", &[]).await;
    let ids = in_order(&pages);
    assert_eq!(ids.len(), 250);
    let mut want = launched.clone();
    want.sort();
    let mut got = ids.clone();
    got.sort();
    assert_eq!(got, want, "every launched cluster, once");
    // Other page sizes list the same clusters in the same order.
    for limit in [7, 249, 250, 1000] {
        let other = all_pages(&s, &format!("limit={limit}"), &[]).await;
        assert_eq!(in_order(&other), ids, "limit={limit}");
    }
    let r = get(&s.api("/clusters?limit=1000")).await;
    assert!(r.headers.get("link").is_none());
    assert!(r.json().get("next").is_none());
}

#[tokio::test]
async fn pages_keep_filters_and_owners() {
    let dir = tempfile::tempdir().unwrap();
    let (s, [admin, alice, bob]) = token_server(dir.path()).await;
    let alices = launch_many(&s, 23, &alice).await;
    let bobs = launch_many(&s, 17, &bob).await;
    // Every third of Alice's clusters destroyed (no Mesos: at once).
    let destroyed: Vec<&String> = alices.iter().step_by(3).collect();
    for id in &destroyed {
        let r = call("DELETE", &s.api(&format!("/clusters/{id}")), "", &alice).await;
        assert_eq!(r.status, 202);
    }
    let sorted = |v: Vec<String>| {
        let mut v = v;
        v.sort();
        v
    };

    // A user pages through exactly their own clusters, whatever the page size.
    for limit in [1, 4, 100] {
        let mine = in_order(&all_pages(&s, &format!("limit={limit}"), &alice).await);
        assert_eq!(sorted(mine), sorted(alices.clone()), "limit={limit}");
        let theirs = in_order(&all_pages(&s, &format!("limit={limit}"), &bob).await);
        assert_eq!(sorted(theirs), sorted(bobs.clone()), "limit={limit}");
    }
    // Asking for another owner's clusters shows nothing; one's own owner name is fine.
    assert!(all_pages(&s, "owner=alice&limit=2", &bob).await.is_empty());
    assert_eq!(all_pages(&s, "owner=bob&limit=2", &bob).await.len(), 17);
    // A cursor from Alice's listing does not show Bob Alice's clusters.
    let r = call("GET", &s.api("/clusters?limit=2"), "", &alice)
        .await
        .json();
    let cursor = r["next"].as_str().unwrap().to_owned();
    for c in all_pages(&s, &format!("limit=2&cursor={cursor}"), &bob).await {
        assert_eq!(c["owner"], "bob");
    }

    // Filters hold on every page; an admin sees every owner and may pick one.
    let dead = all_pages(&s, "status=destroyed&limit=2", &alice).await;
    assert!(dead.iter().all(|c| c["status"] == "destroyed"));
    assert_eq!(
        sorted(in_order(&dead)),
        sorted(destroyed.iter().map(|s| s.to_string()).collect())
    );
    let live = all_pages(
        &s,
        "status=registered&product=reference&version=1.0.0&limit=3",
        &alice,
    )
    .await;
    assert_eq!(live.len(), alices.len() - destroyed.len());
    assert!(
        all_pages(&s, "product=other&limit=3", &alice)
            .await
            .is_empty()
    );
    assert_eq!(in_order(&all_pages(&s, "limit=6", &admin).await).len(), 40);
    let only_bob = all_pages(&s, "owner=bob&limit=5", &admin).await;
    assert_eq!(sorted(in_order(&only_bob)), sorted(bobs.clone()));
    let bobs_dead = all_pages(&s, "owner=bob&status=destroyed", &admin).await;
    assert!(bobs_dead.is_empty());
}

#[tokio::test]
async fn a_bad_limit_or_cursor_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    register_reference(&s, &[]).await;
    launch(&s, 1, &[JSON]).await;
    for (query, says) in [
        ("limit=0", "limit must be a whole number from 1 to 1000"),
        ("limit=1001", "not \"1001\""),
        ("limit=ten", "not \"ten\""),
        ("limit=-3", "not \"-3\""),
        ("limit=1&limit=2", "given twice"),
        ("cursor=", "invalid cursor"),
        ("cursor=abc", "pass back the \"next\" value"),
        (
            "cursor=2026-01-01T00:00:00.000Z_not-a-uuid",
            "invalid cursor",
        ),
        ("cursor=%zz", "not valid percent-encoding"),
    ] {
        let r = get(&s.api(&format!("/clusters?{query}"))).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid_filter"),
            "{query}"
        );
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains(says), "{query}: {message}");
    }
    // A well-formed cursor past the end is an empty last page.
    let r =
        get(&s
            .api("/clusters?cursor=9999-01-01T00:00:00.000Z_0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"clusters": []}));
}

/// A cluster read once (and so served from the encoded views afterwards) is served as it is
/// after every change: each write is seen by the next read.
#[tokio::test]
async fn a_read_after_a_write_sees_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    register_reference(&s, &[]).await;
    let id = launch(&s, 2, &[JSON]).await;
    let url = s.api(&format!("/clusters/{id}"));
    let first = get(&url).await;
    assert_eq!(get(&url).await.body, first.body, "the same bytes twice");
    assert_eq!(first.headers["content-type"], "application/json");
    assert_eq!(first.json()["status"], "registered");
    let r = call("DELETE", &url, "", &[]).await;
    assert_eq!(r.status, 202);
    let after = get(&url).await.json();
    assert_eq!(after["status"], "destroyed");
    assert_eq!(after["desired"], "destroyed");
    assert_eq!(get(&url).await.json(), after);
}

/// The tags of the first node of cluster `id`.
async fn first_node_tags(s: &Server, id: &str) -> Value {
    get(&s.api(&format!("/clusters/{id}/nodes"))).await.json()["nodes"][0]["tags"].clone()
}

/// A template of `opts.size` nodes tagged `tag`.
fn tagged_template(tag: &str) -> String {
    format!(
        r#"{{"nodes": {{ {{{{#each (range 0 opts.size)}}}}{{{{#unless @first}}}},{{{{/unless}}}}"n{{{{this}}}}": {{"docker_image": "i", "cpu": 0.1, "mem": 1, "tags": ["{tag}"]}}{{{{/each}}}} }}}}"#
    )
}

/// Registers product `p/{version}` with a required size and `template`.
async fn register_tagged(s: &Server, version: &str, template: String) {
    let r = call(
        "POST",
        &s.api("/products"),
        format!(r#"{{"name":"p","version":"{version}"}}"#),
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    for (part, body) in [
        ("options", r#"{"required": {"size": 1}}"#.to_owned()),
        ("template", template),
    ] {
        let url = s.api(&format!("/products/p/{version}/{part}"));
        let r = call("PUT", &url, body, &[JSON]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

/// Launches `p/{version}` with `size`; the answer.
async fn launch_tagged(s: &Server, version: &str, size: u64) -> common::Resp {
    let url = s.api(&format!("/products/p/{version}"));
    call("POST", &url, format!(r#"{{"size": {size}}}"#), &[JSON]).await
}

/// Templates are compiled once and kept, and a product's parts are kept parsed: a launch
/// must still render the product's template with its options document as they are now,
/// after a new upload and after the product is deleted and registered again,
/// and a template that fails with the given options is a clear error that records nothing.
#[tokio::test]
async fn a_launch_renders_the_template_as_it_is_now() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    register_tagged(&s, "1", tagged_template("v1")).await;
    let r = launch_tagged(&s, "1", 2).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(first_node_tags(&s, &id).await, json!(["v1"]));

    // A new upload: the next launch renders it.
    let url = s.api("/products/p/1/template");
    let r = call("PUT", &url, tagged_template("v2"), &[JSON]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = launch_tagged(&s, "1", 1).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(first_node_tags(&s, &id).await, json!(["v2"]));

    // New options (the size now defaults to 3): the next launch reads them, not the ones
    // of the launches before (each product's parts are kept parsed between changes).
    let url = s.api("/products/p/1/options");
    let r = call("PUT", &url, r#"{"optional": {"size": 3}}"#, &[JSON]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call("POST", &s.api("/products/p/1"), "{}", &[JSON]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        common::cluster(&s, &id).await["nodes"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    // Fails with these options only (a range over its bound): 422, and nothing recorded.
    let before = get(&s.api("/clusters")).await.text();
    let r = launch_tagged(&s, "1", 20_000).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "template_failed"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("range"), "{}", r.text());
    assert_eq!(get(&s.api("/clusters")).await.text(), before);

    // Registered (its template compiled by the upload's check), deleted, and registered
    // again with another template: a launch renders the new one.
    register_tagged(&s, "2", tagged_template("v3")).await;
    let r = call("DELETE", &s.api("/products/p/2"), "", &[]).await;
    assert_eq!(r.status, 204, "{}", r.text());
    register_tagged(&s, "2", tagged_template("v4")).await;
    let r = launch_tagged(&s, "2", 1).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(first_node_tags(&s, &id).await, json!(["v4"]));
}
