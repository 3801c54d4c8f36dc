//! The orchestrator end to end without Mesos: a store holding a `scheduled` cluster whose
//! nodes are NodeAgents on loopback (one per node, in this process), the orchestrator
//! configuring it, and the outcomes: `ready` with the script output in the log, or `failed`
//! with a reason naming the cause. Also: a restart mid-configuration resumes from progress.
//!
//! The nodes run the real reference product's commands (`paas node-tool serve/probe`, the
//! binary under test), with file paths moved under a temporary directory: in-process nodes
//! share one filesystem.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use paas::domain::cluster::{ClusterSpec, Command};
use paas::domain::lifecycle::ClusterEvent;
use paas::domain::template::Renderer;
use paas::domain::{
    Cluster, ClusterId, ClusterStatus, Name, NodeStatus, Part, Product, TaskId, Timestamp,
};
use paas::executor::exits::ExitBook;
use paas::executor::nodeagent::{AgentSettings, NodeAgentHandle};
use paas::metrics::Metrics;
use paas::orchestrator::{Orchestrator, OrchestratorConfig};
use paas::proto::mesos::v1::TaskState;
use paas::registry::{MemoryStore, Store, Update};
use paas::scheduler::task_updates::{Observed, apply_update};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const SECRET: &str = "flow-secret";
const PAAS: &str = env!("CARGO_BIN_EXE_paas");

struct Fixture {
    store: Arc<dyn Store>,
    agents: Vec<NodeAgentHandle>,
    dir: tempfile::TempDir,
    id: ClusterId,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `scheduled` reference cluster of `size` nodes, with `script` as its orchestration script.
/// `edit` may change the cluster before it is stored (break a template, a check).
async fn fixture(size: usize, script: Option<&[u8]>, edit: impl FnOnce(&mut Cluster)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (name, version) = (
        Name::parse("reference").unwrap(),
        Name::parse("1.0.0").unwrap(),
    );
    let t = || Timestamp::now();
    store
        .create_product(&Product {
            name: name.clone(),
            version: version.clone(),
            description: "reference".into(),
            logo_url: None,
            created_at: t(),
            updated_at: t(),
            parts: Default::default(),
            files: None,
        })
        .unwrap();
    if let Some(s) = script {
        store
            .put_part(&name, &version, Part::Orchestrator, s, &t())
            .unwrap();
    }
    let id = ClusterId::generate();
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/products/reference/minimal.json"),
    )
    .unwrap();
    let ctx = json!({"opts": {"size": size, "cpu": 0.1, "mem": 64}, "cluster_id": id.to_string(),
                     "user": "alice", "product": "reference", "version": "1.0.0", "node_image": "img"});
    let spec = ClusterSpec::parse(&Renderer::spec().render(&template, &ctx).unwrap()).unwrap();
    let mut opts = serde_json::Map::new();
    opts.insert("size".into(), json!(size));
    let mut c = Cluster::new(
        id,
        "alice".into(),
        name,
        version,
        opts,
        spec,
        SECRET.into(),
        t(),
    );
    // In-process nodes share one filesystem: give each its own directory, and run the
    // binary under test instead of the image's `/paas`.
    let root = dir.path().display().to_string();
    for s in &mut c.services {
        for f in &mut s.files {
            f.path = f
                .path
                .replace("/etc/reference", &format!("{root}/{{{{node.name}}}}"));
        }
        for cmd in [&mut s.start, &mut s.ready].into_iter().flatten() {
            let argv = cmd
                .argv()
                .into_iter()
                .map(|a| {
                    a.replace("/etc/reference", &format!("{root}/{{{{node.name}}}}"))
                        .replace("/paas", PAAS)
                })
                .collect();
            *cmd = Command::Argv(argv);
        }
    }
    c.apply(ClusterEvent::PlacementStarted, None, t()).unwrap();
    let mut agents = Vec::new();
    for n in &mut c.nodes {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let settings = AgentSettings {
            cluster_id: id.to_string(),
            node: n.name.to_string(),
            secret: SECRET.into(),
            env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
            working_dir: Some(dir.path().to_owned()),
        };
        let h = NodeAgentHandle::start(listener, settings, ExitBook::new()).unwrap();
        n.observed.status = NodeStatus::Running;
        n.observed.task_id = Some(TaskId {
            cluster: id,
            node: n.name.clone(),
            attempt: 1,
        });
        n.observed.host = Some("localhost".into());
        n.observed.address = Some("127.0.0.1".into());
        n.observed.ports = [("http".to_owned(), free_port())].into();
        n.observed.agent_port = Some(h.local_addr().port());
        n.observed.agent_cert_sha256 = Some(h.cert_sha256().to_owned());
        agents.push(h);
    }
    c.apply(ClusterEvent::AllRunning, None, t()).unwrap();
    edit(&mut c);
    store.create_cluster(c.clone()).unwrap();
    Fixture {
        store,
        agents,
        dir,
        id,
    }
}

fn config(dir: &std::path::Path) -> OrchestratorConfig {
    let mut cfg = OrchestratorConfig::new("http://127.0.0.1:1/bigdata/api/v1");
    cfg.scan_interval = Duration::from_millis(200);
    cfg.ready_timeout = Duration::from_secs(10);
    cfg.ready_interval = Duration::from_millis(200);
    cfg.check_timeout = Duration::from_secs(3);
    cfg.agent_wait = Duration::from_secs(5);
    cfg.script_timeout = Duration::from_secs(20);
    cfg.work_dir = dir.to_owned();
    cfg
}

struct Running {
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

fn start(f: &Fixture, cfg: OrchestratorConfig) -> Running {
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    Orchestrator::spawn(
        cfg,
        f.store.clone(),
        Arc::new(Metrics::new()),
        shutdown.clone(),
        &tracker,
    );
    Running { shutdown, tracker }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        tokio::time::timeout(Duration::from_secs(10), self.tracker.wait())
            .await
            .expect("orchestrator stops within 10 s");
    }
}

/// Waits until the cluster satisfies `done`, up to `secs`.
async fn wait(f: &Fixture, secs: u64, done: impl Fn(&Cluster) -> bool) -> Cluster {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let c = f.store.cluster(f.id).unwrap().unwrap();
        if done(&c) {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out; cluster is {} ({:?}), progress {:?}\nlog:\n{}",
            c.status,
            c.reason,
            c.configure,
            log(f)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log(f: &Fixture) -> String {
    String::from_utf8_lossy(&f.store.log(f.id).unwrap()).into_owned()
}

fn terminal(c: &Cluster) -> bool {
    matches!(c.status, ClusterStatus::Ready | ClusterStatus::Failed)
}

async fn teardown(f: Fixture) {
    for a in f.agents {
        a.shutdown().await;
    }
}

fn reference_script() -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/products/reference/orquestrators/minimal/fabfile.py"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_cluster_of_three_becomes_ready() {
    let script = reference_script();
    let f = fixture(3, Some(&script), |_| {}).await;
    let run = start(&f, config(f.dir.path()));
    let c = wait(&f, 60, terminal).await;
    assert_eq!(
        c.status,
        ClusterStatus::Ready,
        "{:?}\n{}",
        c.reason,
        log(&f)
    );
    let statuses: Vec<_> = c.history.iter().map(|h| h.status).collect();
    assert!(statuses.ends_with(&[
        ClusterStatus::Scheduled,
        ClusterStatus::Configuring,
        ClusterStatus::Configured,
        ClusterStatus::Ready
    ]));
    let p = c.configure.as_ref().unwrap();
    assert_eq!(
        p.done,
        [
            "files/head",
            "start/head",
            "ready/head",
            "files/workers",
            "start/workers",
            "ready/workers",
            "script/start"
        ]
    );
    // The peers file of a worker names every node with its allocated port.
    let conf = std::fs::read_to_string(f.dir.path().join("node2/peers.conf")).unwrap();
    let ports: Vec<String> = c
        .nodes
        .iter()
        .map(|n| format!("{}@127.0.0.1:{}", n.name, n.observed.ports["http"]))
        .collect();
    assert!(
        conf.contains(&format!("peers = {}", ports.join(","))),
        "{conf}"
    );
    let log = log(&f);
    assert!(log.contains("reference cluster configured"), "{log}");
    assert!(log.contains(&format!("cluster {}", f.id)), "{log}");
    // Destroy: `SCRIPT stop` runs once.
    f.store
        .update_cluster(f.id, &mut |c| {
            c.desired = paas::domain::Desired::Destroyed;
            let _ = c.apply(ClusterEvent::DestroyRequested, None, Timestamp::now());
            Ok(Update::Write)
        })
        .unwrap();
    // No wake-up: the orchestrator sees the destroy's commit.
    wait(&f, 20, |c| {
        c.configure
            .as_ref()
            .is_some_and(|p| p.script == paas::domain::ScriptState::Stopped)
    })
    .await;
    let log2 = String::from_utf8_lossy(&f.store.log(f.id).unwrap()).into_owned();
    assert!(
        log2.contains(&format!("cluster {} stopping", f.id)),
        "{log2}"
    );
    run.stop().await;
    teardown(f).await;
}

/// Issue 12: "all RUNNING → `configuring`" waited for the 5 s scan. With the scan an hour
/// apart, only the commit of the last TASK_RUNNING can start the configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commit_of_the_last_running_node_starts_configuration_without_a_scan() {
    let script = reference_script();
    // The last node still starts: the cluster is `scheduling`, nothing to configure yet.
    let f = fixture(3, Some(&script), |c| {
        c.status = ClusterStatus::Scheduling;
        if let Some(n) = c.nodes.last_mut() {
            n.observed.status = NodeStatus::Starting;
        }
    })
    .await;
    // A `scheduled` cluster stored before the start, only the first scan can find: once
    // it moves, that scan is over and the next one is an hour away.
    let mut sentinel = f.store.cluster(f.id).unwrap().unwrap();
    sentinel.id = ClusterId::generate();
    sentinel.status = ClusterStatus::Scheduled;
    // It must not reach (and disturb) the nodes of the cluster under test.
    for n in &mut sentinel.nodes {
        n.observed.status = NodeStatus::Running;
        n.observed.agent_port = None;
        n.observed.address = None;
    }
    f.store.create_cluster(sentinel.clone()).unwrap();
    let mut cfg = config(f.dir.path());
    cfg.scan_interval = Duration::from_secs(3600);
    // The sentinel's steps find no agent: let them fail soon.
    cfg.agent_wait = Duration::from_millis(500);
    cfg.loss_grace = Duration::ZERO;
    let run = start(&f, cfg);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while f.store.cluster(sentinel.id).unwrap().unwrap().status == ClusterStatus::Scheduled {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first scan never ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        f.store.cluster(f.id).unwrap().unwrap().status,
        ClusterStatus::Scheduling
    );

    // The scheduler's write of the last TASK_RUNNING, through its own update function.
    let last = f
        .store
        .cluster(f.id)
        .unwrap()
        .unwrap()
        .nodes
        .last()
        .unwrap()
        .clone();
    let obs = Observed {
        task_id: last.observed.task_id.clone().unwrap(),
        state: TaskState::TaskRunning,
        reason: None,
        message: None,
        agent_id: None,
        agent_cert_sha256: None,
    };
    let c = f
        .store
        .update_cluster(f.id, &mut |c| {
            apply_update(c, last.name.as_str(), &obs, &Timestamp::now());
            Ok(Update::Write)
        })
        .unwrap();
    assert_eq!(c.status, ClusterStatus::Scheduled);

    let c = wait(&f, 60, terminal).await;
    assert_eq!(
        c.status,
        ClusterStatus::Ready,
        "{:?}\n{}",
        c.reason,
        log(&f)
    );
    let statuses: Vec<_> = c.history.iter().map(|h| h.status).collect();
    assert!(
        statuses.ends_with(&[
            ClusterStatus::Scheduled,
            ClusterStatus::Configuring,
            ClusterStatus::Configured,
            ClusterStatus::Ready
        ]),
        "{statuses:?}"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while f.store.cluster(sentinel.id).unwrap().unwrap().status != ClusterStatus::Failed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sentinel never failed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.stop().await;
    teardown(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_exiting_1_fails_the_cluster_with_its_output() {
    let f = fixture(
        2,
        Some(b"#!/bin/sh\necho \"about to fail: $1\"\nexit 1\n"),
        |_| {},
    )
    .await;
    let run = start(&f, config(f.dir.path()));
    let c = wait(&f, 60, terminal).await;
    assert_eq!(c.status, ClusterStatus::Failed);
    let reason = c.reason.unwrap();
    assert!(reason.contains("script/start"), "{reason}");
    assert!(reason.contains("exited with status 1"), "{reason}");
    assert!(reason.contains("about to fail: start"), "{reason}");
    assert!(log(&f).contains("about to fail: start"));
    run.stop().await;
    teardown(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_check_that_never_passes_times_out() {
    let f = fixture(2, None, |c| {
        let w = c
            .services
            .iter_mut()
            .find(|s| s.name.as_str() == "workers")
            .unwrap();
        w.ready = Some(Command::Argv(vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo not yet; exit 1".into(),
        ]));
    })
    .await;
    let mut cfg = config(f.dir.path());
    cfg.ready_timeout = Duration::from_secs(2);
    let run = start(&f, cfg);
    let c = wait(&f, 60, terminal).await;
    assert_eq!(c.status, ClusterStatus::Failed);
    let reason = c.reason.unwrap();
    assert!(reason.contains("ready/workers"), "{reason}");
    assert!(reason.contains("node node1"), "{reason}");
    assert!(reason.contains("did not pass within 2s"), "{reason}");
    assert!(reason.contains("not yet"), "{reason}");
    run.stop().await;
    teardown(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_template_variable_fails_the_cluster_naming_it() {
    let f = fixture(2, None, |c| {
        c.services[0].files[0].template =
            "name = {{node.name}}\nheap = {{opts.heap_size}}\n".into();
    })
    .await;
    let run = start(&f, config(f.dir.path()));
    let c = wait(&f, 60, terminal).await;
    assert_eq!(c.status, ClusterStatus::Failed);
    let reason = c.reason.unwrap();
    assert!(reason.contains("files/head"), "{reason}");
    assert!(reason.contains("opts.heap_size"), "{reason}");
    assert!(reason.contains("peers.conf"), "{reason}");
    run.stop().await;
    teardown(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_configuration_resumes_without_redoing_finished_steps() {
    // The script blocks until the test lets it go, so the first orchestrator is stopped
    // while `script/start` is under way, after every service step is done.
    let gate = tempfile::tempdir().unwrap();
    let go = gate.path().join("go");
    let script = format!(
        "#!/bin/sh\nwhile [ ! -e {} ]; do sleep 0.1; done\necho script ran\n",
        go.display()
    );
    let f = fixture(2, Some(script.as_bytes()), |_| {}).await;
    let run = start(&f, config(f.dir.path()));
    let c = wait(&f, 60, |c| {
        c.configure
            .as_ref()
            .is_some_and(|p| p.current.as_deref() == Some("script/start"))
    })
    .await;
    assert_eq!(c.status, ClusterStatus::Configuring);
    run.stop().await;

    std::fs::write(&go, "").unwrap();
    let run = start(&f, config(f.dir.path()));
    let c = wait(&f, 60, terminal).await;
    assert_eq!(c.status, ClusterStatus::Ready, "{:?}", c.reason);
    let log = log(&f);
    // Each service step finished once; only the interrupted step ran twice.
    for step in ["files/head", "start/head", "ready/head", "files/workers"] {
        assert_eq!(
            log.matches(&format!("step {step} done")).count(),
            1,
            "{step}\n{log}"
        );
    }
    assert_eq!(log.matches("==> start").count(), 2, "{log}");
    assert_eq!(log.matches("script ran").count(), 1, "{log}");
    run.stop().await;
    teardown(f).await;
}

/// Stops node1's NodeAgent, as when its container is killed, and waits until the
/// orchestrator has configured the head (so the next step, on node1, is the one that fails).
async fn lose_node1_mid_configure(f: &mut Fixture, loss_grace: Duration) -> Running {
    f.agents.remove(1).shutdown().await;
    let mut cfg = config(f.dir.path());
    cfg.agent_wait = Duration::from_millis(500);
    cfg.loss_grace = loss_grace;
    let run = start(f, cfg);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !log(f).contains("step ready/head done") {
        assert!(tokio::time::Instant::now() < deadline, "log:\n{}", log(f));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_on_a_node_lost_mid_configure_heals_instead_of_failing() {
    let mut f = fixture(2, None, |_| {}).await;
    let run = lose_node1_mid_configure(&mut f, Duration::from_secs(20)).await;
    // The scheduler learns of the loss a moment after the step failed (TASK_FAILED).
    tokio::time::sleep(Duration::from_secs(2)).await;
    f.store
        .update_cluster(f.id, &mut |c| {
            let _ = c.node_lost("node1", "TASK_FAILED: container killed", &Timestamp::now());
            Ok(Update::Write)
        })
        .unwrap();
    let c = wait(&f, 30, |_| {
        log(&f).contains("lost meanwhile: healing instead")
    })
    .await;
    assert_eq!(c.status, ClusterStatus::Healing, "{:?}", c.reason);
    assert_eq!(c.node("node1").unwrap().observed.status, NodeStatus::Queued);
    let log = log(&f);
    assert!(
        log.contains("configure step files/workers failed on node node1"),
        "{log}"
    );
    run.stop().await;
    assert_eq!(
        f.store.cluster(f.id).unwrap().unwrap().status,
        ClusterStatus::Healing
    );
    teardown(f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_on_an_unreachable_node_nobody_reports_lost_fails_the_cluster() {
    let mut f = fixture(2, None, |_| {}).await;
    let run = lose_node1_mid_configure(&mut f, Duration::from_secs(1)).await;
    let c = wait(&f, 30, terminal).await;
    assert_eq!(c.status, ClusterStatus::Failed);
    let reason = c.reason.unwrap();
    assert!(
        reason.contains("configure step files/workers failed on node node1"),
        "{reason}"
    );
    run.stop().await;
    teardown(f).await;
}
