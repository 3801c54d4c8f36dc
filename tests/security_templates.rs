//! Black-box tests of issue 11's template items over real HTTP (a real `serve` on loopback,
//! `--master none`, a real sled store): per-cluster secrets, admin-only `advanced` options,
//! `enum`s, the `--volume-root` allow-list, configure-time injection and the bounded render.
//! Every refusal is checked for its exact status and code, and for changing nothing.

mod common;

use std::path::Path;

use common::{JSON, Server, call, get, make_ready_in_store, repo_root};
use paas::domain::Cluster;
use paas::domain::template::Renderer;
use paas::orchestrator::controller::cluster_json;
use paas::orchestrator::facts::{cluster_facts, render_files};
use paas::registry::{SledStore, Store};
use serde_json::{Value, json};

const ADMIN: [(&str, &str); 2] = [("authorization", "Bearer admin-token-0123456789"), JSON];
const ALICE: [(&str, &str); 2] = [("authorization", "Bearer alice-token-0123456789"), JSON];

fn tokens_file(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("tokens");
    std::fs::write(
        &p,
        "admin-token-0123456789,root,admin\nalice-token-0123456789,alice,user\n",
    )
    .unwrap();
    p
}

/// A test product: its options put a user string into a file twice, once written by the
/// spec phase (`{{opts.motd}}`, the pattern that used to be evaluated again) and once as
/// data at configure time (`\{{word opts.name}}`), and a volume whose host path is an option.
const TEMPLATE: &str = r#"{
  "nodes": {
    {{#each (range 0 opts.size)}}{{#unless @first}},{{/unless}}
    "node{{this}}": {"docker_image": "{{../opts.image}}", "cpu": 0.1, "mem": 32,
      "services": ["s"]{{#if ../opts.data_dir}},
      "volumes": [{"container_path": "/data", "host_path": "{{../opts.data_dir}}"}]{{/if}}}
    {{/each}}
  },
  "services": {"s": {"files": [{"path": "/etc/t.conf",
    "template": "motd={{opts.motd}}\nname=\{{word opts.name}}\nid=\{{cluster_id}}\n"}]}}
}"#;

const OPTIONS: &str = r#"{
  "required": {"size": 1},
  "optional": {"motd": "hi", "name": "n", "mode": "fast", "data_dir": ""},
  "advanced": {"image": "img:1"},
  "enum": {"mode": ["fast", "safe"]}
}"#;

async fn register(s: &Server, name: &str, template: &str, options: &str, h: &[(&str, &str)]) {
    let r = call(
        "POST",
        &s.api("/products"),
        json!({"name": name, "version": "1"}).to_string(),
        h,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    for (part, body) in [("options", options), ("template", template)] {
        let r = call(
            "PUT",
            &s.api(&format!("/products/{name}/1/{part}")),
            body.to_owned(),
            h,
        )
        .await;
        assert_eq!(r.status, 200, "{part}: {}", r.text());
    }
}

async fn launch(s: &Server, product: &str, opts: Value, h: &[(&str, &str)]) -> common::Resp {
    call(
        "POST",
        &s.api(&format!("/products/{product}/1")),
        opts.to_string(),
        h,
    )
    .await
}

async fn cluster_count(s: &Server, h: &[(&str, &str)]) -> usize {
    let r = call("GET", &s.api("/clusters"), "", h).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["clusters"].as_array().unwrap().len()
}

fn stored(data: &Path, id: &str) -> Cluster {
    let store = SledStore::open(data).expect("open the store");
    store
        .cluster(id.parse().unwrap())
        .expect("read the store")
        .expect("the cluster is stored")
}

#[tokio::test]
async fn advanced_options_are_the_admins_and_enums_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let data = dir.path().join("data");
    let tok = ["--tokens", tokens.to_str().unwrap()];
    let mut s = Server::start(&data, &tok);
    register(&s, "t", TEMPLATE, OPTIONS, &ADMIN).await;

    // A user setting an advanced option: 403 naming it, nothing recorded.
    let r = launch(&s, "t", json!({"size": 1, "image": "evil:latest"}), &ALICE).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "forbidden"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("image"), "{}", r.text());
    // Even at its default value: setting it is the admin's.
    let r = launch(&s, "t", json!({"size": 1, "image": "img:1"}), &ALICE).await;
    assert_eq!(r.status, 403, "{}", r.text());
    // A value outside the enum: 400 naming the option and the allowed values.
    let r = launch(&s, "t", json!({"size": 1, "mode": "evil"}), &ALICE).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "invalid_options"),
        "{}",
        r.text()
    );
    let text = r.text();
    assert!(
        text.contains(r#"mode (allowed: \"fast\", \"safe\")"#),
        "{text}"
    );
    assert_eq!(
        r.json()["error"]["details"]["not_allowed"],
        json!({"mode": ["fast", "safe"]})
    );
    assert_eq!(cluster_count(&s, &ADMIN).await, 0, "nothing was recorded");

    // The admin may; the user may launch with the defaults and allowed values.
    let r = launch(&s, "t", json!({"size": 1, "image": "img:2"}), &ADMIN).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let r = launch(&s, "t", json!({"size": 1, "mode": "safe"}), &ALICE).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();

    // PATCH: the same rules, and a refused PATCH changes nothing.
    s.kill9();
    make_ready_in_store(&data, &id);
    let s = Server::start(&data, &tok);
    let url = s.api(&format!("/clusters/{id}"));
    let before = call("GET", &url, "", &ALICE).await.json();
    for (opts, status, code) in [
        (json!({"image": "evil:latest"}), 403, "forbidden"),
        (json!({"mode": "evil"}), 400, "invalid_options"),
        (json!({"name": "a\nb"}), 400, "invalid_options"),
    ] {
        let body = json!({ "options": opts }).to_string();
        let r = call("PATCH", &url, body, &ALICE).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{opts}: {}",
            r.text()
        );
        assert_eq!(call("GET", &url, "", &ALICE).await.json(), before, "{opts}");
    }
    let body = json!({"options": {"image": "img:3"}}).to_string();
    let r = call("PATCH", &url, body, &ALICE).await;
    assert!(r.text().contains("image"), "{}", r.text());
    let r = call(
        "PATCH",
        &url,
        json!({"options": {"mode": "fast"}}).to_string(),
        &ALICE,
    )
    .await;
    assert_eq!(
        r.status,
        202,
        "an allowed change goes through: {}",
        r.text()
    );
}

#[tokio::test]
async fn volumes_must_lie_inside_a_volume_root() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let tok = tokens.to_str().unwrap();

    // Without --volume-root no host volume is allowed, for admins too.
    let s = Server::start(&dir.path().join("d0"), &["--tokens", tok]);
    register(&s, "t", TEMPLATE, OPTIONS, &ADMIN).await;
    let r = launch(&s, "t", json!({"size": 1, "data_dir": "/data/x"}), &ADMIN).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (403, "forbidden"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("/data/x"), "{}", r.text());
    assert!(r.text().contains("--volume-root"), "{}", r.text());
    assert_eq!(cluster_count(&s, &ADMIN).await, 0);
    // No volume, no question.
    let r = launch(&s, "t", json!({"size": 1}), &ALICE).await;
    assert_eq!(r.status, 202, "{}", r.text());
    drop(s);

    let s = Server::start(
        &dir.path().join("d1"),
        &[
            "--tokens",
            tok,
            "--volume-root",
            "/data",
            "--volume-root",
            "/srv/paas/",
        ],
    );
    register(&s, "t", TEMPLATE, OPTIONS, &ADMIN).await;
    for (path, ok) in [
        ("/data", true),
        ("/data/x/y", true),
        ("/srv/paas/a", true),
        ("/data/./x/../y", true),
        ("/data2/x", false),
        ("/dat", false),
        ("/data/../etc", false),
        ("/data/x/../../etc/shadow", false),
        ("/srv", false),
        ("data/x", false),
        ("/", false),
    ] {
        let r = launch(&s, "t", json!({"size": 1, "data_dir": path}), &ALICE).await;
        let want = if ok { 202 } else { 403 };
        assert_eq!(r.status, want, "{path}: {}", r.text());
    }
    assert_eq!(cluster_count(&s, &ALICE).await, 4);
    drop(s);

    // A relative root is refused at start.
    let err = Server::try_start(&dir.path().join("d2"), &["--volume-root", "data"])
        .err()
        .expect("a relative --volume-root is refused");
    assert!(err.contains("not an absolute path"), "{err}");
}

/// The shipped products launch for a plain user with no --volume-root (none mounts a host
/// path, none needs an advanced option).
#[tokio::test]
async fn the_shipped_products_launch_for_users_without_volume_roots() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path());
    let s = Server::start(
        &dir.path().join("data"),
        &["--tokens", tokens.to_str().unwrap()],
    );
    common::register_reference(&s, &[ADMIN[0]]).await;
    let r = call(
        "POST",
        &s.api("/products/reference/1.0.0"),
        r#"{"size": 2}"#,
        &ALICE,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    for (name, dir_) in [("slurm", "slurm/22.05"), ("spark", "spark/4.x")] {
        let d = repo_root().join("examples/products").join(dir_);
        let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
        register(
            &s,
            name,
            &read("template.json"),
            &read("options.json"),
            &ADMIN,
        )
        .await;
        let r = launch(&s, name, json!({"size": 2}), &ALICE).await;
        assert_eq!(r.status, 202, "{name}: {}", r.text());
        let r = launch(&s, name, json!({"size": 2, "image": "x"}), &ALICE).await;
        assert_eq!(r.status, 403, "{name}: {}", r.text());
    }
}

#[tokio::test]
async fn template_secrets_are_per_cluster_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Server::start(&data, &[]);
    let d = repo_root().join("examples/products/slurm/22.05");
    let read = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    register(
        &s,
        "slurm",
        &read("template.json"),
        &read("options.json"),
        &[JSON],
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = launch(&s, "slurm", json!({"size": 1}), &[JSON]).await;
        assert_eq!(r.status, 202, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    // Everything the API serves about the clusters.
    let mut served = get(&s.api("/clusters")).await.text();
    for id in &ids {
        for what in ["", "/nodes", "/services", "/events", "/logs"] {
            let r = get(&s.api(&format!("/clusters/{id}{what}"))).await;
            assert_eq!(r.status, 200, "{what}: {}", r.text());
            served.push_str(&r.text());
        }
    }
    s.kill9();
    let clusters: Vec<Cluster> = ids.iter().map(|id| stored(&data, id)).collect();
    let keys: Vec<&String> = clusters
        .iter()
        .map(|c| c.secrets.get("munge_key").expect("a munge_key secret"))
        .collect();
    for k in &keys {
        assert_eq!(k.len(), 64, "32 random bytes as hex");
        assert!(k.chars().all(|c| c.is_ascii_hexdigit()), "{k}");
        assert!(!served.contains(k.as_str()), "a secret was served");
    }
    assert_ne!(keys[0], keys[1], "each cluster has its own key");
    for c in &clusters {
        let key = &c.secrets["munge_key"];
        let script_view = String::from_utf8(cluster_json(c)).unwrap();
        assert!(
            !script_view.contains(key.as_str()),
            "CLUSTER_JSON has the secret"
        );
        assert!(
            !script_view.contains(&c.secret),
            "CLUSTER_JSON has the NodeAgent secret"
        );
        // The spec the nodes are launched with (env, command, labels) does not have it.
        let nodes = serde_json::to_string(&c.nodes).unwrap();
        assert!(!nodes.contains(key.as_str()));
        // The configure-time file does: the key file is the secret.
        let facts = cluster_facts(c);
        let slurm = c
            .services
            .iter()
            .find(|s| s.name.as_str() == "slurm")
            .unwrap();
        let files =
            render_files(&Renderer::files(), &facts, &c.secrets, slurm, &c.nodes[0]).unwrap();
        let key_file = files
            .iter()
            .find(|f| f.path == "/etc/paas/munge.key")
            .unwrap();
        assert_eq!(key_file.content, format!("{key}\n").into_bytes());
    }
}

#[tokio::test]
async fn option_values_are_never_evaluated_again_nor_add_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Server::start(&data, &[]);
    register(&s, "t", TEMPLATE, OPTIONS, &[JSON]).await;

    // A newline in a value is refused at launch, naming the option; nothing is recorded.
    let evil = "{{cluster_id}}\nSlurmUser=evil";
    let r = launch(&s, "t", json!({"size": 1, "motd": evil}), &[JSON]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "invalid_options"),
        "{}",
        r.text()
    );
    assert_eq!(
        r.json()["error"]["details"]["control_characters"],
        json!(["motd"])
    );
    assert_eq!(cluster_count(&s, &[JSON]).await, 0);

    // Braces and backslashes are kept literally: never rendered at configure time.
    let motd = r"{{cluster_id}} {{secrets}} \{{x}} {{#each nodes}}N{{/each}} {{> p}}";
    let r = launch(&s, "t", json!({"size": 1, "motd": motd}), &[JSON]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    // `word` refuses what is not one token, at configure time (the file step fails).
    let r = launch(&s, "t", json!({"size": 1, "name": "a b"}), &[JSON]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let spaced = r.json()["id"].as_str().unwrap().to_owned();
    s.kill9();

    let c = stored(&data, &id);
    let files = render_files(
        &Renderer::files(),
        &cluster_facts(&c),
        &c.secrets,
        &c.services[0],
        &c.nodes[0],
    )
    .unwrap();
    let text = String::from_utf8(files[0].content.clone()).unwrap();
    assert_eq!(text, format!("motd={motd}\nname=n\nid={id}\n"));

    let c = stored(&data, &spaced);
    let err = render_files(
        &Renderer::files(),
        &cluster_facts(&c),
        &c.secrets,
        &c.services[0],
        &c.nodes[0],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("word: opts.name"), "{err}");
}

/// Peak resident memory of a process, in kB (`VmHWM`).
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

#[tokio::test]
async fn a_template_blow_up_stops_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("data"), &[]);
    // 10 000 × n × 100 bytes: 1 MB with the default n = 1, 1 GB with n = 1000.
    let blow_up = r#"{"nodes": {"n": {"docker_image": "i", "cpu": 1, "mem": 1, "x": "{{#each (range 0 opts.n)}}{{#each (range 0 10000)}}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{{/each}}{{/each}}"}}}"#;
    register(&s, "b", blow_up, r#"{"optional": {"n": 1}}"#, &[JSON]).await;
    let r = launch(&s, "b", json!({"n": 1000}), &[JSON]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (422, "template_failed"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("larger than"), "{}", r.text());
    let peak = peak_rss_kb(s.child.id());
    assert!(
        peak < 256 * 1024,
        "serve peaked at {peak} kB rendering a 1 GB template: the limit is not enforced while rendering"
    );
    assert_eq!(cluster_count(&s, &[JSON]).await, 0);
    // The upload check renders with the defaults, and is bounded the same way.
    let r = call(
        "PUT",
        &s.api("/products/b/1/options"),
        r#"{"optional": {"n": 500}}"#,
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("larger than"), "{}", r.text());
}
