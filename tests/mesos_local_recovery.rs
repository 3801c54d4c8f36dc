//! mesos-local cleans up what it owns: after `kill -9` of `paas serve`, the next `serve` on
//! the same data directory removes the executors the first one left (containers labelled
//! with the data directory's instance id, executor processes it recorded), so every port
//! they held is free and a new cluster reaches its goal. And a relative `--data` works.
//!
//! Black box: the real `paas serve`, real Docker. The Docker tests need the node image
//! (`PAAS_NODE_IMAGE`, default `paas-node:latest`, built by
//! `deploy/images/build-node-image.sh`); without it they are skipped, and fail under `CI`.
//! The process-containerizer test needs nothing.
//!
//! Each test picks its own port range below the ephemeral range, so that tests of other
//! checkouts on the same machine (mesos-local offers 31000+ by default) do not collide.

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use common::{Server, get, launch, register_reference, wait_for};
use paas::mesos_local::instance::{INSTANCE_LABEL, Instance};
use serde_json::Value;

/// Docker tests one at a time: each runs two clusters of two nodes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn node_image() -> String {
    std::env::var("PAAS_NODE_IMAGE").unwrap_or_else(|_| "paas-node:latest".into())
}

/// Whether the Docker tests can run; skips (or fails under `CI`) when they cannot.
fn docker_ready() -> bool {
    let present = Command::new("docker")
        .args(["image", "inspect", &node_image()])
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        let why = format!(
            "node image {} is missing (deploy/images/build-node-image.sh)",
            node_image()
        );
        assert!(std::env::var("CI").is_err(), "CI must build it: {why}");
        eprintln!("SKIPPED: {why}");
    }
    present
}

/// 100 ports below the ephemeral range (32768+), distinct per test of a run and most
/// likely per process: tests of other checkouts run beside these.
fn agent_resources(salt: u16) -> String {
    let base = 20_000
        + ((std::process::id() as u16)
            .wrapping_mul(7)
            .wrapping_add(salt * 131)
            % 100)
            * 100;
    format!("cpus:2;mem:4096;disk:10240;ports:[{base}-{}]", base + 99)
}

fn serve_args<'a>(containerizer: &'a str, resources: &'a str, image: &'a str) -> Vec<&'a str> {
    vec![
        "--local-containerizer",
        containerizer,
        "--local-resources",
        resources,
        "--node-image",
        image,
    ]
}

/// The data directory's instance id, as mesos-local stored it.
fn instance_id(data: &Path) -> String {
    std::fs::read_to_string(data.join("mesos-local/instance-id"))
        .expect("mesos-local wrote its instance id")
        .trim()
        .to_owned()
}

/// Ids of the containers (running or not) labelled with `instance`.
fn containers_of(instance: &str) -> BTreeSet<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label={INSTANCE_LABEL}={instance}"))
        .output()
        .expect("docker ps");
    assert!(out.status.success(), "docker ps failed");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Every `paaslocal-*` container, whoever started it.
fn all_paaslocal() -> BTreeSet<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", "name=paaslocal-"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// The host ports a cluster's nodes hold: their NodeAgent and their named ports.
fn ports_of(c: &Value) -> BTreeSet<u16> {
    let mut ports = BTreeSet::new();
    for n in c["nodes"].as_array().expect("nodes") {
        if let Some(p) = n["agent_port"].as_u64() {
            ports.insert(p as u16);
        }
        for p in n["ports"].as_object().into_iter().flat_map(|m| m.values()) {
            ports.insert(p.as_u64().expect("a port number") as u16);
        }
    }
    ports
}

fn busy_ports(ports: &BTreeSet<u16>) -> Vec<u16> {
    ports
        .iter()
        .copied()
        .filter(|p| TcpListener::bind(("0.0.0.0", *p)).is_err())
        .collect()
}

/// The recorded executor processes that are alive: `pids/<container id>` holds
/// `<pid> <start time>`.
fn recorded_live_pids(data: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(data.join("mesos-local/pids")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|pid| alive(*pid))
        .collect()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s[s.rfind(')')? + 1..].trim_start().starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// Whatever happens, removes what the test's servers started: the servers first (their
/// `Drop` kills them), then this data directory's containers and recorded processes.
struct Cleanup {
    data: PathBuf,
    servers: Vec<Server>,
    /// Containers the test created itself.
    decoys: Vec<String>,
}

impl Cleanup {
    fn new(data: &Path) -> Self {
        Self {
            data: data.to_owned(),
            servers: Vec::new(),
            decoys: Vec::new(),
        }
    }

    /// Creates (does not start) a `paaslocal-*` container of the node image, labelled with
    /// `instance` if given; returns its id.
    fn decoy(&mut self, instance: Option<&str>) -> String {
        let name = format!("paaslocal-decoy-{}", uuid::Uuid::new_v4().simple());
        let mut cmd = Command::new("docker");
        cmd.args(["create", "--name", &name]);
        if let Some(i) = instance {
            cmd.arg("--label").arg(format!("{INSTANCE_LABEL}={i}"));
        }
        let out = cmd.arg(node_image()).output().expect("docker create");
        assert!(
            out.status.success(),
            "docker create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        self.decoys.push(id.clone());
        // `docker ps -q` prints short ids.
        id[..12].to_owned()
    }

    fn start(&mut self, extra: &[&str]) -> &mut Server {
        self.servers.push(Server::start(&self.data, extra));
        self.servers.last_mut().expect("just pushed")
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.servers.clear();
        if !self.decoys.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&self.decoys)
                .output();
        }
        let work = self.data.join("mesos-local");
        if let Ok(id) = std::fs::read_to_string(work.join("instance-id")) {
            let ids = containers_of(id.trim());
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
        // The recorded processes, through the recovery under test (on its own thread:
        // this may run inside the test's runtime).
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            if let Ok(instance) = Instance::open(&work) {
                rt.block_on(instance.recover());
            }
        })
        .join();
    }
}

/// Waits until the cluster is `ready`, failing at once if it ends `failed`.
async fn ready(s: &Server, id: &str) -> Value {
    let c = wait_for(s, id, 180, "ready (or failed)", |c| {
        c["status"] == "ready" || c["status"] == "failed"
    })
    .await;
    assert_eq!(c["status"], "ready", "{c:#}");
    c
}

/// Launches the reference product with `size` nodes.
async fn launch_reference(s: &Server, size: u32) -> String {
    launch(s, &format!(r#"{{"size": {size}}}"#)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_kill_9_then_restart_removes_our_containers_and_frees_their_ports() {
    if !docker_ready() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let resources = agent_resources(1);
    let image = node_image();
    let args = serve_args("docker", &resources, &image);
    let mut guard = Cleanup::new(&data);

    let s = guard.start(&args);
    register_reference(s, &[]).await;
    let first = launch_reference(s, 2).await;
    let c = ready(s, &first).await;
    let ports = ports_of(&c);
    assert!(ports.len() >= 4, "2 NodeAgents and 2 http ports: {c:#}");
    let instance = instance_id(&data);
    let before = containers_of(&instance);
    assert_eq!(before.len(), 2, "one container per node");

    s.kill9();
    // Precondition: kill -9 leaves the containers running, holding their ports.
    assert_eq!(
        containers_of(&instance),
        before,
        "containers outlive kill -9"
    );
    assert_eq!(
        busy_ports(&ports),
        ports.iter().copied().collect::<Vec<_>>()
    );

    // Another instance's container, and an unlabelled one with our name prefix: never ours.
    let decoys = [guard.decoy(Some("another-instance")), guard.decoy(None)];

    let s = guard.start(&args);
    // `serve` answers once mesos-local has started, and it recovers before that.
    assert_eq!(instance_id(&data), instance, "the instance id is kept");
    assert!(
        containers_of(&instance).is_empty(),
        "leftovers of this instance remain: {:?}",
        containers_of(&instance)
    );
    assert!(
        all_paaslocal().is_disjoint(&before),
        "an old paaslocal container remains"
    );
    assert_eq!(busy_ports(&ports), Vec::<u16>::new(), "ports still held");
    for d in &decoys {
        assert!(
            all_paaslocal().contains(d),
            "another instance's container {d} was removed"
        );
    }

    let second = launch_reference(s, 2).await;
    ready(s, &second).await;
    // The first cluster's tasks died with the old run: it heals (new attempts) by itself.
    wait_for(s, &first, 180, "healed: ready with new attempts", |c| {
        c["status"] == "ready"
            && c["nodes"]
                .as_array()
                .is_some_and(|ns| ns.iter().all(|n| n["attempt"] == 2))
    })
    .await;
    assert_eq!(
        containers_of(&instance).len(),
        4,
        "the new cluster's 2 and the healed cluster's 2, nothing else"
    );

    // A clean stop removes them too.
    let status = s.sigterm();
    assert!(status.success(), "serve stops cleanly: {status}");
    wait_until(20, "containers removed after SIGTERM", || {
        containers_of(&instance).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_kill_9_then_restart_kills_our_leftover_executors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let resources = agent_resources(2);
    let args = serve_args("process", &resources, "img");
    let mut guard = Cleanup::new(&data);

    let s = guard.start(&args);
    register_reference(s, &[]).await;
    let first = launch_reference(s, 2).await;
    // The services need the node image; on the host the nodes get as far as running.
    let c = wait_for(s, &first, 90, "nodes running", |c| {
        let nodes = c["nodes"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        nodes.len() == 2 && nodes.iter().all(|n| n["agent_port"].is_u64()) && ports_of(c).len() >= 4
    })
    .await;
    let ports = ports_of(&c);
    // The NodeAgents listen once their executors run.
    wait_until(60, "both NodeAgents listening", || {
        busy_ports(&ports).len() >= 2
    })
    .await;

    s.kill9();
    let leftovers = recorded_live_pids(&data);
    assert_eq!(leftovers.len(), 2, "two executor processes outlive kill -9");

    let s = guard.start(&args);
    let alive_after: Vec<i32> = leftovers.iter().copied().filter(|p| alive(*p)).collect();
    assert!(
        alive_after.is_empty(),
        "leftover executors alive: {alive_after:?}"
    );
    assert_eq!(busy_ports(&ports), Vec::<u16>::new(), "ports still held");

    let second = launch_reference(s, 2).await;
    wait_for(s, &second, 90, "nodes running", |c| {
        let nodes = c["nodes"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        nodes.len() == 2 && nodes.iter().all(|n| n["agent_port"].is_u64())
    })
    .await;
    let status = s.sigterm();
    assert!(status.success(), "serve stops cleanly: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_data_directory_runs_docker_nodes() {
    if !docker_ready() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    // `cargo test` runs in the package root; the data directory is given relative to it.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cwd = std::env::current_dir().unwrap();
    let relative = relative_path(&cwd, &dir.path().join("sl/data"));
    assert!(relative.is_relative(), "{}", relative.display());
    let resources = agent_resources(3);
    let image = node_image();
    let args = serve_args("docker", &resources, &image);
    let mut guard = Cleanup::new(&relative);

    let s = guard.start(&args);
    register_reference(s, &[]).await;
    let id = launch_reference(s, 2).await;
    ready(s, &id).await;
    assert_eq!(
        get(&s.api("/health")).await.json()["mesos"]["subscribed"],
        true
    );
    let status = s.sigterm();
    assert!(status.success(), "serve stops cleanly: {status}");
}

/// `path` relative to `base` (both absolute), with `..` where needed.
fn relative_path(base: &Path, path: &Path) -> PathBuf {
    let b: Vec<Component> = base.components().collect();
    let p: Vec<Component> = path.components().collect();
    let common = b.iter().zip(&p).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c);
    }
    out
}

/// Polls `done` every 200 ms for at most `secs`.
async fn wait_until(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
