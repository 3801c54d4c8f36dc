//! The Slurm 22.05 product (`examples/products/slurm/22.05`), end to end.
//!
//! - `template_renders_slurm_conf_with_every_node` (always runs): the product's template and
//!   options go through both rendering phases as the API and the orchestrator run them; the
//!   rendered `slurm.conf` names every compute node with its own port.
//! - `slurm_cluster_on_real_mesos`: against a REAL Mesos master + agent with the Docker
//!   containerizer, `paas serve` registers the product through REST, launches size 2, waits for
//!   `ready` (printing the time from POST to ready), runs `srun -N 2 hostname` on the
//!   controller through its NodeAgent, checks one line per compute node, destroys the cluster
//!   and checks no container of it is left.
//! - `slurm_failures_are_clear_on_real_mesos`: a missing product image and a size the agent
//!   cannot hold each end with a reason that says why, and leave no container behind.
//!
//! Environment: `MESOS_MASTER` (unset: the real-Mesos tests print why and pass, or fail when
//! `CI` is set); `PAAS_NODE_IMAGE` (node image for `--node-image`, also where the product image
//! takes its `/paas` from) or `PAAS_BINARY`; `PAAS_SLURM_IMAGE` to use a ready product image
//! instead of building it (`deploy/images/build-product-images.sh slurm`, cached).
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

const PRODUCT: &str = "slurm";
const VERSION: &str = "22.05";

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn product_dir() -> PathBuf {
    common::repo_root().join("examples/products/slurm/22.05")
}

fn read(file: &str) -> String {
    std::fs::read_to_string(product_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

// ----- both rendering phases, no Mesos ------------------------------------------------------

#[test]
fn template_renders_slurm_conf_with_every_node() {
    let doc = OptionsDoc::from_value(serde_json::from_str(&read("options.json")).unwrap()).unwrap();
    let opts = doc
        .resolve(&obj(json!({"size": 3, "cpus_per_node": 2})))
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
    assert_eq!(names, ["controller", "compute1", "compute2", "compute3"]);
    assert!(c.nodes.iter().all(|n| n.docker_image == "paas-slurm:22.05"));
    assert_eq!(c.nodes[0].port_names, ["slurmctld"]);
    assert_eq!(c.nodes[1].port_names, ["slurmd"]);
    // What the scheduler fills in at placement: every node on 127.0.0.1, its own ports.
    for (i, n) in c.nodes.iter_mut().enumerate() {
        n.address = Some("127.0.0.1".into());
        n.ports = n
            .port_names
            .iter()
            .map(|p| (p.clone(), 31000 + i as u16))
            .collect();
    }
    let facts = cluster_facts(&c);
    let r = Renderer::files();
    let svc = |name: &str| c.services.iter().find(|s| s.name.as_str() == name).unwrap();
    let files = render_files(&r, &facts, svc("slurm"), &c.nodes[2]).unwrap();
    let conf = files
        .iter()
        .find(|f| f.path == "/etc/slurm/slurm.conf")
        .unwrap();
    let conf = String::from_utf8(conf.content.clone()).unwrap();
    for line in [
        "SlurmctldHost=localhost(127.0.0.1)",
        "SlurmctldPort=31000",
        "NodeName=compute1 NodeAddr=127.0.0.1 Port=31001 CPUs=2 RealMemory=512 State=UNKNOWN",
        "NodeName=compute2 NodeAddr=127.0.0.1 Port=31002 CPUs=2 RealMemory=512 State=UNKNOWN",
        "NodeName=compute3 NodeAddr=127.0.0.1 Port=31003 CPUs=2 RealMemory=512 State=UNKNOWN",
        "PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        "ProctrackType=proctrack/linuxproc",
    ] {
        assert!(
            conf.lines().any(|l| l == line),
            "missing {line:?} in:\n{conf}"
        );
    }
    // One munge key, the same on every node.
    let key = |node: usize| {
        render_files(&r, &facts, svc("slurm"), &c.nodes[node])
            .unwrap()
            .into_iter()
            .find(|f| f.path == "/etc/paas/munge.key")
            .unwrap()
    };
    assert_eq!(key(0).content, key(3).content);
    assert!(key(0).content.len() >= 32, "munge wants 32 bytes or more");
    assert_eq!(key(0).mode, 0o400);
    // Each slurmd is started under its own node name; the ready check wants every node idle.
    let compute = svc("compute");
    let start = render_argv(
        &r,
        &facts,
        compute,
        &c.nodes[2],
        &compute.start.as_ref().unwrap().argv(),
    )
    .unwrap();
    assert_eq!(
        start,
        ["/usr/local/bin/paas-slurm-start", "compute", "compute2"]
    );
    assert_eq!(
        compute.ready.as_ref().unwrap().argv(),
        ["/usr/local/bin/paas-slurm-ready", "idle", "3"]
    );
    assert_eq!(svc("slurm").nodes.len(), 4);
    // Services are configured in template order: the files everywhere, then the controller.
    let order: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["slurm", "controller", "compute"]);
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
                  cargo test --test product_slurm -- --nocapture",
            );
            None
        }
    }
}

fn skip(why: &str) {
    let why = format!("SKIPPED product_slurm: {why}");
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("{why}");
}

fn node_image() -> String {
    std::env::var("PAAS_NODE_IMAGE").unwrap_or_else(|_| "paas-node:latest".into())
}

/// The product image to launch: `$PAAS_SLURM_IMAGE`, else the one
/// `build-product-images.sh slurm` prints (it rebuilds only what changed; its `/paas` comes
/// from `$PAAS_BINARY` or the node image `$PAAS_NODE_IMAGE`).
fn product_image() -> Option<String> {
    if let Ok(i) = std::env::var("PAAS_SLURM_IMAGE") {
        return Some(i);
    }
    if std::env::var_os("PAAS_BINARY").is_none() && std::env::var_os("PAAS_NODE_IMAGE").is_none() {
        skip(
            "set PAAS_NODE_IMAGE (or PAAS_BINARY) so the slurm image can be built with the \
              current paas, or PAAS_SLURM_IMAGE to use a built one",
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
    assert!(out.status.success(), "build-product-images.sh slurm failed");
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
        json!({"name": PRODUCT, "version": VERSION, "description": "Slurm 22.05 cluster: one slurmctld, size slurmd"}).to_string(),
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
async fn slurm_cluster_on_real_mesos() {
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
    eprintln!("slurm size 2: POST → ready in {to_ready:.1?}");
    eprintln!("--- /logs of {id}:\n{logs}---");
    assert!(logs.contains("slurm cluster configured"), "{logs}");

    let secret = secret_via_store(&mut s, &master, &id).await;
    let c = wait(&s, &id, t0, 60, |c| c["status"] == "ready").await;
    let ctl = agent(&c, "controller", &secret);
    let sinfo = run(&ctl, &["sinfo", "--Node", "--long"]).await;
    eprintln!("$ sinfo --Node --long   (on the controller, through its NodeAgent)\n{sinfo}");
    let hostnames = run(&ctl, &["srun", "-N", "2", "hostname"]).await;
    eprintln!("$ srun -N 2 hostname   (on the controller, through its NodeAgent)\n{hostnames}");
    assert_eq!(
        hostnames.lines().filter(|l| !l.trim().is_empty()).count(),
        2,
        "one line per compute node: {hostnames:?}"
    );
    // Every node shares the host's network (and so its hostname): the node names tell the two
    // slurmd apart.
    let names = run(
        &ctl,
        &["srun", "-N", "2", "-l", "printenv", "SLURMD_NODENAME"],
    )
    .await;
    eprintln!("$ srun -N 2 -l printenv SLURMD_NODENAME\n{names}");
    let names: BTreeSet<&str> = names
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(names, BTreeSet::from(["compute1", "compute2"]));

    let running = containers_of(&id);
    assert_eq!(running.len(), 3, "one container per node: {running:?}");
    destroy(&s, &id).await;
    let logs = get(&s.api(&format!("/clusters/{id}/logs"))).await.text();
    assert!(
        logs.contains(&format!("slurm cluster {id} stopping")),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slurm_failures_are_clear_on_real_mesos() {
    let Some(master) = master() else { return };
    let _one = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let mut s = Harness::new(serve(data.path(), &master));
    register(&s).await;

    // 1. A product image that does not exist (and cannot be pulled: no registry here).
    let missing = "paas-slurm:no-such-image";
    let t0 = Instant::now();
    let id = launch(&s, json!({"size": 1, "image": missing})).await;
    s.track(&id);
    let c = wait(&s, &id, t0, 300, |c| {
        settled(c)
            || c["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no-such-image"))
    })
    .await;
    let reason = c["reason"].as_str().unwrap_or_default().to_owned();
    eprintln!("missing image: {} — {reason}", c["status"]);
    assert_ne!(c["status"], "ready", "{c:#}");
    assert!(
        reason.contains(missing),
        "the reason names the image: {c:#}"
    );
    destroy(&s, &id).await;

    // 2. Compute nodes larger than the agent: the cluster waits and says what is short.
    let t0 = Instant::now();
    let id = launch(&s, json!({"size": 2, "mem_per_node": 10_000_000})).await;
    s.track(&id);
    let c = wait(&s, &id, t0, 60, |c| {
        c["reason"]
            .as_str()
            .is_some_and(|r| r.contains("do not fit") && r.contains("mem"))
    })
    .await;
    eprintln!(
        "too big: {} — {}",
        c["status"],
        c["reason"].as_str().unwrap_or_default()
    );
    assert!(
        matches!(c["status"].as_str(), Some("registered" | "scheduling")),
        "{c:#}"
    );
    // Placement is per node, not all or nothing: the controller fits and runs meanwhile.
    eprintln!("running meanwhile: {:?}", containers_of(&id));
    destroy(&s, &id).await;
}
