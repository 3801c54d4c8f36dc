//! The Spark 4 standalone product (`examples/products/spark/4.x`), end to end.
//!
//! - `template_renders_spark_config_pointing_at_the_master` (always runs): the product's
//!   template and options go through both rendering phases as the API and the orchestrator run
//!   them; every node's `spark-defaults.conf` and every worker's command name the master.
//! - `spark_cluster_on_real_mesos`: against a REAL Mesos master + agent with the Docker
//!   containerizer, `paas serve` registers the product through REST, launches size 2, waits for
//!   `ready` (printing the time from POST to ready), checks the master's JSON status lists 2
//!   ALIVE workers, runs SparkPi (`spark-submit pi.py`, client mode) on the master through its
//!   NodeAgent, checks the printed estimate of pi, destroys the cluster and checks no container
//!   of it is left.
//!
//! Environment: `MESOS_MASTER` (unset: the real-Mesos test prints why and passes, or fails when
//! `CI` is set); `PAAS_NODE_IMAGE` (node image for `--node-image`, also where the product image
//! takes its `/paas` from) or `PAAS_BINARY`; `PAAS_SPARK_IMAGE` to use a ready product image
//! instead of building it (`deploy/images/build-product-images.sh spark`, cached).
//!
//! Reading the NodeAgent secret: no API serves a cluster's NodeAgent secret, and there is no
//! API to run a command on a node, so the test stops `paas serve` (SIGTERM), reads the secret
//! from its store, and starts it again on the same data before it calls the NodeAgent.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{JSON, Server, call, get};
use paas::domain::cluster::ClusterSpec;
use paas::domain::options::OptionsDoc;
use paas::domain::template::Renderer;
use paas::domain::{Cluster, ClusterId, Name, Timestamp};
use paas::orchestrator::client::AgentClient;
use paas::orchestrator::facts::{cluster_facts, render_argv, render_files};
use paas::registry::{SledStore, Store};
use serde_json::{Map, Value, json};

const PRODUCT: &str = "spark";
const VERSION: &str = "4.x";

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn product_dir() -> PathBuf {
    common::repo_root().join("examples/products/spark/4.x")
}

fn read(file: &str) -> String {
    std::fs::read_to_string(product_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

// ----- both rendering phases, no Mesos ------------------------------------------------------

#[test]
fn template_renders_spark_config_pointing_at_the_master() {
    let doc = OptionsDoc::from_value(serde_json::from_str(&read("options.json")).unwrap()).unwrap();
    let opts = doc
        .resolve(&obj(
            json!({"size": 3, "worker_cores": 2, "worker_memory": 1024}),
        ))
        .unwrap();
    let id = ClusterId::random();
    let ctx = json!({"opts": opts, "cluster_id": id.to_string(), "user": "alice",
                     "product": PRODUCT, "version": VERSION, "node_image": "paas-node:x"});
    let rendered = Renderer::spec()
        .render(&read("template.json"), &ctx)
        .unwrap();
    let spec = ClusterSpec::parse(&rendered).unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    let mut c = Cluster::new(
        id,
        "alice".into(),
        Name::parse(PRODUCT).unwrap(),
        Name::parse(VERSION).unwrap(),
        opts,
        spec,
        "secret".into(),
        Timestamp("t".into()),
    );
    let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["master", "worker1", "worker2", "worker3"]);
    assert!(c.nodes.iter().all(|n| n.docker_image == "paas-spark:4.x"));
    assert_eq!(c.nodes[0].port_names, ["master", "webui", "appui"]);
    assert_eq!(c.nodes[1].port_names, ["worker", "webui"]);
    assert_eq!(
        c.nodes[1].mem,
        1024.0 + 512.0,
        "worker memory plus the daemon's"
    );
    // What the scheduler fills in at placement: every node on 127.0.0.1, its own ports.
    for (i, n) in c.nodes.iter_mut().enumerate() {
        n.address = Some("127.0.0.1".into());
        n.ports = n
            .port_names
            .iter()
            .enumerate()
            .map(|(j, p)| (p.clone(), 31000 + 10 * i as u16 + j as u16))
            .collect();
    }
    let facts = cluster_facts(&c);
    let r = Renderer::files();
    let svc = |name: &str| c.services.iter().find(|s| s.name.as_str() == name).unwrap();
    let file = |node: usize, path: &str| {
        let f = render_files(&r, &facts, svc("spark"), &c.nodes[node]).unwrap();
        let f = f.into_iter().find(|f| f.path == path).unwrap();
        String::from_utf8(f.content).unwrap()
    };
    for node in 0..4 {
        let defaults = file(node, "/etc/spark/spark-defaults.conf");
        assert!(
            defaults
                .lines()
                .any(|l| l == "spark.master spark://127.0.0.1:31000"),
            "{defaults}"
        );
        assert!(defaults.lines().any(|l| l == "spark.executor.memory 512m"));
    }
    let env = file(2, "/etc/spark/spark-env.sh");
    assert!(
        env.lines().any(|l| l == "SPARK_LOCAL_IP=127.0.0.1"),
        "{env}"
    );
    let argv = |svc_name: &str, node: usize, which: &str| {
        let s = svc(svc_name);
        let cmd = if which == "start" { &s.start } else { &s.ready };
        render_argv(&r, &facts, s, &c.nodes[node], &cmd.as_ref().unwrap().argv()).unwrap()
    };
    assert_eq!(
        argv("master", 0, "start")[1..],
        [
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            "31000",
            "--webui-port",
            "31001"
        ]
    );
    let w2 = argv("workers", 2, "start");
    assert_eq!(
        w2[1..],
        [
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            "127.0.0.1",
            "--port",
            "31020",
            "--webui-port",
            "31021",
            "--cores",
            "2",
            "--memory",
            "1024m",
            "--work-dir",
            "/var/lib/spark/work",
            "spark://127.0.0.1:31000"
        ]
    );
    assert_eq!(
        argv("workers", 3, "ready"),
        [
            "/usr/local/bin/paas-spark-ready",
            "http://127.0.0.1:31001/json/",
            "3"
        ]
    );
    let order: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["spark", "master", "workers"]);
}

// ----- real Mesos -------------------------------------------------------------------------------

fn master() -> Option<String> {
    match std::env::var("MESOS_MASTER").ok().filter(|m| !m.is_empty()) {
        Some(m) => Some(m),
        None => {
            skip(
                "MESOS_MASTER is not set. These tests need a real Mesos master + agent with the Docker containerizer, e.g.\n  \
                  LIBPROCESS_PORT=5353 MESOS_DOCKER_KILL_ORPHANS=false REALMESOS_RUN_DIR=/tmp/rm-prod \
                  MESOS_RESOURCES='cpus:8;mem:16384;disk:20480;ports:[31000-32000]' /opt/realmesos/start.sh\n  \
                  PAAS_NODE_IMAGE=$(deploy/images/build-node-image.sh) MESOS_MASTER=http://127.0.0.1:5353 \
                  cargo test --test product_spark -- --nocapture",
            );
            None
        }
    }
}

fn skip(why: &str) {
    let why = format!("SKIPPED product_spark: {why}");
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("{why}");
}

fn node_image() -> String {
    std::env::var("PAAS_NODE_IMAGE").unwrap_or_else(|_| "paas-node:latest".into())
}

/// The product image to launch: `$PAAS_SPARK_IMAGE`, else the one
/// `build-product-images.sh spark` prints (it rebuilds only what changed; its `/paas` comes
/// from `$PAAS_BINARY` or the node image `$PAAS_NODE_IMAGE`).
fn product_image() -> Option<String> {
    if let Ok(i) = std::env::var("PAAS_SPARK_IMAGE") {
        return Some(i);
    }
    if std::env::var_os("PAAS_BINARY").is_none() && std::env::var_os("PAAS_NODE_IMAGE").is_none() {
        skip(
            "set PAAS_NODE_IMAGE (or PAAS_BINARY) so the spark image can be built with the \
              current paas, or PAAS_SPARK_IMAGE to use a built one",
        );
        return None;
    }
    let started = Instant::now();
    let out = Command::new(common::repo_root().join("deploy/images/build-product-images.sh"))
        .arg(PRODUCT)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run build-product-images.sh");
    assert!(out.status.success(), "build-product-images.sh spark failed");
    let image = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    eprintln!(
        "product image {image} (build-product-images.sh took {:.1?})",
        started.elapsed()
    );
    Some(image)
}

fn serve(data: &Path, master: &str) -> Server {
    Server::start(
        data,
        &[
            "--master",
            master,
            "--node-image",
            &node_image(),
            "--ready-timeout",
            "4m",
        ],
    )
}

/// `paas serve` and the clusters a test launched: when the test fails, its clusters are
/// destroyed (before the server is killed) so no container outlives it.
struct Harness {
    server: Server,
    launched: Vec<String>,
}

impl Harness {
    fn new(server: Server) -> Self {
        Self {
            server,
            launched: Vec::new(),
        }
    }

    fn track(&mut self, id: &str) {
        self.launched.push(id.to_owned());
    }
}

impl std::ops::Deref for Harness {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl std::ops::DerefMut for Harness {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for id in &self.launched {
            let url = self.server.api(&format!("/clusters/{id}"));
            let _ = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-X", "DELETE", &url])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.launched.iter().any(|id| !containers_of(id).is_empty())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Registers the product through REST exactly as the README's curl lines do.
async fn register(s: &Server) {
    let r = call(
        "POST",
        &s.api("/products"),
        json!({"name": PRODUCT, "version": VERSION, "description": "Spark 4 standalone cluster: one master, size workers"}).to_string(),
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    for (part, file) in [
        ("template", "template.json"),
        ("options", "options.json"),
        ("orquestrator", "orchestrate.py"),
    ] {
        let r = call(
            "PUT",
            &s.api(&format!("/products/{PRODUCT}/{VERSION}/{part}")),
            read(file),
            &[JSON],
        )
        .await;
        assert_eq!(r.status, 200, "{part}: {}", r.text());
    }
}

async fn launch(s: &Server, opts: Value) -> String {
    let r = call(
        "POST",
        &s.api(&format!("/products/{PRODUCT}/{VERSION}")),
        opts.to_string(),
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

/// Polls the cluster until `done` holds, printing each status change with its time since
/// `t0`; panics with the record and logs after `secs`.
async fn wait(
    s: &Server,
    id: &str,
    t0: Instant,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    loop {
        let c = get(&s.api(&format!("/clusters/{id}"))).await.json();
        let seen = format!(
            "{} {}",
            c["status"].as_str().unwrap_or_default(),
            c["reason"].as_str().unwrap_or_default()
        );
        if seen != last {
            eprintln!("[{:>6.1?}] cluster {id}: {seen}", t0.elapsed());
            last = seen;
        }
        if done(&c) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "cluster {id} stuck: {c:#}\nlogs:\n{}",
            get(&s.api(&format!("/clusters/{id}/logs"))).await.text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn settled(c: &Value) -> bool {
    matches!(c["status"].as_str(), Some("ready" | "failed"))
}

/// Destroys the cluster, then waits until no Docker container of it runs.
async fn destroy(s: &Server, id: &str) {
    let r = call("DELETE", &s.api(&format!("/clusters/{id}")), "", &[]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let t0 = Instant::now();
    wait(s, id, t0, 120, |c| c["status"] == "destroyed").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = containers_of(id);
        if left.is_empty() {
            eprintln!(
                "cluster {id} destroyed; no container of it left ({:.1?})",
                t0.elapsed()
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "containers of destroyed cluster {id} still run: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Executor ids (`<cluster>.<node>.<attempt>`) of the running Docker containers of `cluster`.
fn containers_of(cluster: &str) -> BTreeSet<String> {
    let ids = Command::new("docker")
        .args(["ps", "-q", "--filter", "name=mesos-"])
        .output()
        .expect("docker ps");
    let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return BTreeSet::new();
    }
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}"])
        .args(&ids)
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("MESOS_EXECUTOR_ID="))
        .filter(|e| e.starts_with(cluster))
        .map(str::to_owned)
        .collect()
}

/// The cluster's NodeAgent secret, read from the store of a stopped `paas serve` (no API serves
/// it); `paas serve` is started again on the same data.
async fn secret_via_store(s: &mut Server, master: &str, id: &str) -> String {
    let data = s.data.clone();
    let st = s.sigterm();
    eprintln!("paas serve stopped ({st}) to read the NodeAgent secret from its store");
    let secret = {
        let store = SledStore::open(&data).expect("open the store");
        let c = store
            .cluster(id.parse().expect("cluster id"))
            .expect("read the cluster")
            .expect("the cluster is stored");
        c.secret
    };
    *s = serve(&data, master);
    secret
}

fn agent(c: &Value, node: &str, secret: &str) -> AgentClient {
    let n = c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .unwrap_or_else(|| panic!("no node {node} in {c:#}"));
    AgentClient::new(
        n["address"].as_str().unwrap(),
        u16::try_from(n["agent_port"].as_u64().expect("agent_port")).unwrap(),
        secret,
    )
    .unwrap()
}

async fn run(agent: &AgentClient, argv: &[&str]) -> String {
    let argv: Vec<String> = argv.iter().map(|a| (*a).to_owned()).collect();
    let out = agent
        .run(&argv, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.ended.success(),
        "{argv:?} {}: stdout {stdout:?} stderr {:?}",
        out.ended,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spark_cluster_on_real_mesos() {
    let Some(master) = master() else { return };
    let Some(image) = product_image() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let mut s = Harness::new(serve(data.path(), &master));
    register(&s).await;

    let t0 = Instant::now();
    let id = launch(&s, json!({"size": 2, "image": image})).await;
    s.track(&id);
    let c = wait(&s, &id, t0, 600, settled).await;
    let to_ready = t0.elapsed();
    let logs = get(&s.api(&format!("/clusters/{id}/logs"))).await.text();
    assert_eq!(c["status"], "ready", "{c:#}\nlogs:\n{logs}");
    eprintln!("spark size 2: POST → ready in {to_ready:.1?}");
    eprintln!("--- /logs of {id}:\n{logs}---");
    assert!(logs.contains("spark cluster configured"), "{logs}");

    // The master's JSON status, straight from its web UI port (host networking).
    let m = c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "master")
        .unwrap()
        .clone();
    let status = get(&format!(
        "http://{}:{}/json/",
        m["address"].as_str().unwrap(),
        m["ports"]["webui"]
    ))
    .await
    .json();
    let alive: Vec<String> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "ALIVE")
        .map(|w| format!("{}:{}", w["host"].as_str().unwrap_or("?"), w["port"]))
        .collect();
    eprintln!(
        "master {} {}: ALIVE workers {alive:?}",
        status["url"], status["status"]
    );
    assert_eq!(alive.len(), 2, "{status:#}");

    let secret = secret_via_store(&mut s, &master, &id).await;
    let c = wait(&s, &id, t0, 60, |c| c["status"] == "ready").await;
    let master_agent = agent(&c, "master", &secret);
    let t1 = Instant::now();
    let out = run(
        &master_agent,
        &["spark-submit", "/usr/local/lib/paas-spark/pi.py", "10"],
    )
    .await;
    eprintln!(
        "$ spark-submit /usr/local/lib/paas-spark/pi.py 10   (on the master, through its NodeAgent; {:.1?})\n{out}",
        t1.elapsed()
    );
    let pi: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Pi is roughly "))
        .unwrap_or_else(|| panic!("no estimate in {out:?}"))
        .trim()
        .parse()
        .unwrap();
    assert!((3.0..3.3).contains(&pi), "pi = {pi}");

    let running = containers_of(&id);
    assert_eq!(running.len(), 3, "one container per node: {running:?}");
    destroy(&s, &id).await;
    let logs = get(&s.api(&format!("/clusters/{id}/logs"))).await.text();
    assert!(
        logs.contains(&format!("spark cluster {id} stopping")),
        "{logs}"
    );
}
