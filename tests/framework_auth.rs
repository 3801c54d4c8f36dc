//! Framework authentication against a REAL Apache Mesos master that requires it (issue 11,
//! item 4), and what the Mesos state endpoints and `docker inspect` show of a ready cluster
//! (item 5: the cluster secret and the launch payload must not be there).
//!
//! The test starts its OWN realmesos kit (`../shared/realmesos/start.sh`) on port 5151 with
//! `MESOS_AUTHENTICATE_HTTP_FRAMEWORKS=true`, the basic authenticator and a credentials file,
//! beside the shared kit on 5050: its own run directory, ports 32100-32300 (below the
//! kernel's ephemeral range, 32768+, where an outgoing connection could hold a node's port),
//! and `MESOS_DOCKER_KILL_ORPHANS=false` so that neither kit kills the other's containers. It stops
//! that kit and removes the containers it started when it ends, also on panic.
//!
//! - `serve` without credentials, and with a wrong secret: no framework registers at the
//!   master, and both `/health` and the log say "unauthorized";
//! - with `--principal paas --secret-file F`: `/master/frameworks` shows principal `paas`, and
//!   a reference cluster of 2 nodes reaches `ready` (its NodeAgents over pinned TLS);
//! - `/master/state`, `/master/tasks`, `/slave(1)/state` and `docker inspect` of every node
//!   container hold neither the cluster secret (plain or base64, as Mesos renders `bytes`) nor
//!   the `NodeLaunch` payload.
//!
//! Gated like every real-Mesos test on `MESOS_MASTER` (set when the kit is built and Docker
//! answers; a failure under `CI` when unset). Run under the shared lock:
//! `flock -o /tmp/paas-realmesos.lock cargo test --test framework_auth -- --nocapture`,
//! with `PAAS_NODE_IMAGE` naming a node image of this build.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{JSON, call, get};
use paas::registry::{SledStore, Store};
use serde_json::Value;

const PORT: u16 = 5151;
const PRINCIPAL: &str = "paas";
const SECRET: &str = "framework-auth-test-secret";

/// The kit this test started; stopped (by its recorded PID, through `stop.sh`) on drop, after
/// the containers of the executors it ran are removed.
struct Kit {
    run_dir: tempfile::TempDir,
    url: String,
    /// Executor ids (our task ids) whose containers this kit ran.
    executors: BTreeSet<String>,
}

impl Kit {
    fn start(credentials: &Path) -> Kit {
        let run_dir = tempfile::tempdir().expect("run dir");
        let out = Command::new(common::realmesos_kit().join("start.sh"))
            .env("LIBPROCESS_PORT", PORT.to_string())
            .env("REALMESOS_RUN_DIR", run_dir.path())
            .env("MESOS_DOCKER_KILL_ORPHANS", "false")
            .env(
                "MESOS_RESOURCES",
                "cpus:2;mem:4096;disk:10240;ports:[32100-32300]",
            )
            .env("MESOS_AUTHENTICATE_HTTP_FRAMEWORKS", "true")
            .env("MESOS_HTTP_FRAMEWORK_AUTHENTICATORS", "basic")
            .env("MESOS_CREDENTIALS", credentials)
            .stdin(Stdio::null())
            .output()
            .expect("run start.sh");
        let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let kit = Kit {
            run_dir,
            url,
            executors: BTreeSet::new(),
        };
        assert!(
            out.status.success() && kit.url.starts_with("http://"),
            "the authenticating kit did not start: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        kit
    }
}

impl Drop for Kit {
    fn drop(&mut self) {
        for e in &self.executors {
            let c = container_of(e);
            if !c.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f", &c])
                    .stdout(Stdio::null())
                    .status();
            }
        }
        let _ = Command::new(common::realmesos_kit().join("stop.sh"))
            .env("REALMESOS_RUN_DIR", self.run_dir.path())
            .stdout(Stdio::null())
            .status();
    }
}

/// The running container of executor `executor_id`, or "".
fn container_of(executor_id: &str) -> String {
    let ids = Command::new("docker")
        .args(["ps", "-q"])
        .output()
        .expect("docker ps");
    for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
        let env = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{range .Config.Env}}{{println .}}{{end}}",
                id,
            ])
            .output()
            .expect("docker inspect");
        if String::from_utf8_lossy(&env.stdout)
            .lines()
            .any(|l| l == format!("MESOS_EXECUTOR_ID={executor_id}"))
        {
            return id.to_owned();
        }
    }
    String::new()
}

/// `paas serve` with its log in a file (so the test can read what it says).
struct Serve {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Serve {
    fn start(data: &Path, master: &str, extra: &[&str]) -> Serve {
        let log = data.with_extension("log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_paas"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(["--master", master, "--node-image", &node_image()])
            .args(["--ready-timeout", "2m"])
            // No token file in this test: anonymous admin against a real master must be
            // asked for.
            .arg("--allow-anonymous")
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("MESOS_MASTER")
            .env_remove("PAAS_TOKENS")
            .env_remove("PAAS_MESOS_PRINCIPAL")
            .env_remove("PAAS_MESOS_SECRET_FILE")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn paas serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(i) = text.find("paas serving on http://") {
                let rest = &text[i + "paas serving on ".len()..];
                break rest[..rest.find("/bigdata").expect("base path")].to_owned();
            }
            assert!(Instant::now() < deadline, "serve did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        };
        Serve { child, url, log }
    }

    fn api(&self, path: &str) -> String {
        format!("{}/bigdata/api/v1{path}", self.url)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Registers the reference product from `examples/` (as `common::register_reference`, for a
/// server this test started itself).
async fn register_reference(s: &Serve) {
    let dir = common::repo_root().join("examples/products/reference");
    let r = call(
        "POST",
        &s.api("/products"),
        r#"{"name":"reference","version":"1.0.0","description":"Reference product"}"#,
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    for (part, file) in [
        ("template", "minimal.json"),
        ("options", "options/size.json"),
        ("orquestrator", "orquestrators/minimal/fabfile.py"),
    ] {
        let body = std::fs::read(dir.join(file)).expect("example file");
        let r = call(
            "PUT",
            &s.api(&format!("/products/reference/1.0.0/{part}")),
            body,
            &[JSON],
        )
        .await;
        assert_eq!(r.status, 200, "{part}: {}", r.text());
    }
}

fn node_image() -> String {
    std::env::var("PAAS_NODE_IMAGE").unwrap_or_else(|_| "paas-node:latest".into())
}

fn curl(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sf", "-m", "10", url])
        .output()
        .expect("curl");
    assert!(out.status.success(), "GET {url} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn frameworks(kit: &Kit) -> Vec<Value> {
    let v: Value = serde_json::from_str(&curl(&format!("{}/master/frameworks", kit.url)))
        .expect("frameworks JSON");
    v["frameworks"].as_array().cloned().unwrap_or_default()
}

/// Waits until `/health` names the refusal, then checks that nothing registered.
async fn refused(kit: &Kit, s: &Serve, expect: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = get(&s.api("/health")).await.json();
        let detail = h.to_string();
        if detail.contains("unauthorized") {
            assert_eq!(h["ready"], false, "{h:#}");
            assert!(detail.contains(expect), "{h:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/health never said unauthorized: {h:#}\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let log = s.log();
    assert!(log.contains("401 unauthorized"), "{log}");
    assert!(
        frameworks(kit).is_empty(),
        "nothing may register: {:?}",
        frameworks(kit)
    );
}

/// The encodings under which `secret` would show in a Mesos JSON document: as text, and
/// inside a base64 `bytes` field at any of the three byte alignments.
fn renderings(secret: &str) -> Vec<String> {
    let b = secret.as_bytes();
    let mut all = vec![secret.to_owned()];
    for skip in 0..3 {
        let chunk = &b[skip..];
        let len = chunk.len() / 3 * 3;
        all.push(base64::engine::general_purpose::STANDARD.encode(&chunk[..len]));
    }
    all
}

fn assert_absent(what: &str, text: &str, needles: &[String]) {
    for n in needles {
        assert!(!text.contains(n.as_str()), "{what} shows {n:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_framework_authenticates_and_mesos_shows_no_secret() {
    if common::mesos_master(
        "framework_auth",
        "It starts its own realmesos kit on port 5151 (needs ../shared/realmesos built and \
         Docker), e.g.\n  PAAS_NODE_IMAGE=$(deploy/images/build-node-image.sh) \
         MESOS_MASTER=http://127.0.0.1:5050 flock -o /tmp/paas-realmesos.lock \
         cargo test --test framework_auth -- --nocapture",
    )
    .is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials.json");
    std::fs::write(
        &creds,
        format!(r#"{{"credentials":[{{"principal":"{PRINCIPAL}","secret":"{SECRET}"}}]}}"#),
    )
    .unwrap();
    let mut kit = Kit::start(&creds);
    eprintln!("authenticating kit at {}", kit.url);

    // 1. No credentials, then a wrong secret: refused, and said so.
    let s = Serve::start(&dir.path().join("none"), &kit.url, &[]);
    refused(&kit, &s, "--secret-file").await;
    s.stop();
    let wrong = dir.path().join("wrong.secret");
    std::fs::write(&wrong, "not-the-secret\n").unwrap();
    let wrong = wrong.display().to_string();
    let s = Serve::start(
        &dir.path().join("wrong"),
        &kit.url,
        &["--principal", PRINCIPAL, "--secret-file", &wrong],
    );
    refused(&kit, &s, "wrong principal or secret").await;
    s.stop();

    // 2. The right secret (with the trailing newline an editor leaves).
    let right = dir.path().join("right.secret");
    std::fs::write(&right, format!("{SECRET}\n")).unwrap();
    let right = right.display().to_string();
    let auth = ["--principal", PRINCIPAL, "--secret-file", &right];
    let data = dir.path().join("right");
    let s = Serve::start(&data, &kit.url, &auth);
    let deadline = Instant::now() + Duration::from_secs(60);
    let fw = loop {
        if let Some(f) = frameworks(&kit).into_iter().find(|f| f["active"] == true) {
            break f;
        }
        assert!(Instant::now() < deadline, "never registered:\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(fw["principal"], PRINCIPAL, "{fw:#}");
    let framework_id = fw["id"].as_str().unwrap().to_owned();
    let _teardown = common::TeardownOnPanic {
        master: kit.url.clone(),
        framework_id,
    };

    // 3. A reference cluster reaches ready on this kit: offers, ACCEPT, ACKNOWLEDGE and the
    // orchestrator's pinned TLS calls all worked with authentication on.
    register_reference(&s).await;
    let r = call(
        "POST",
        &s.api("/products/reference/1.0.0"),
        r#"{"size": 2}"#,
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(240);
    let c = loop {
        let c = get(&s.api(&format!("/clusters/{id}"))).await.json();
        for n in c["nodes"].as_array().into_iter().flatten() {
            if let Some(t) = n["task_id"].as_str() {
                kit.executors.insert(t.to_owned());
            }
        }
        if c["status"] == "ready" || c["status"] == "failed" {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "not ready in time: {c:#}\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(c["status"], "ready", "{c:#}");
    for n in c["nodes"].as_array().unwrap() {
        assert_eq!(
            n["agent_cert_sha256"].as_str().map(str::len),
            Some(64),
            "the pin from TASK_RUNNING is on record: {n:#}"
        );
    }

    // 4. What Mesos and Docker show. The secret is read from the store of the stopped
    // server (no API serves it); the tasks keep running meanwhile.
    s.stop();
    let cluster_secret = {
        let store = SledStore::open(&data).expect("open the store");
        store
            .cluster(id.parse().expect("cluster id"))
            .expect("read")
            .expect("stored")
            .secret
    };
    assert!(cluster_secret.len() >= 16, "a real secret");
    let mut needles = renderings(&cluster_secret);
    // The launch payload itself (TaskInfo.data), whichever way it is rendered.
    needles.extend(renderings(&format!(r#"{{"cluster_id":"{id}","node":"#)));
    needles.push(r#""agent_port":"#.to_owned());
    for path in ["/master/state", "/master/tasks", "/slave(1)/state"] {
        let text = curl(&format!("{}{path}", kit.url));
        assert!(text.contains(&id), "{path} shows the cluster's tasks");
        assert_absent(path, &text, &needles);
    }
    assert_eq!(kit.executors.len(), 2, "{:?}", kit.executors);
    for e in &kit.executors {
        let container = container_of(e);
        assert!(!container.is_empty(), "no container runs {e}");
        let out = Command::new("docker")
            .args(["inspect", &container])
            .output()
            .expect("docker inspect");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(e.as_str()), "docker inspect of {e}");
        assert_absent(&format!("docker inspect of {e}"), &text, &needles);
    }

    // 5. Destroy through a restarted (authenticated) server; the kit goes with `kit`.
    let s = Serve::start(&data, &kit.url, &auth);
    let r = call("DELETE", &s.api(&format!("/clusters/{id}")), "", &[]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = get(&s.api(&format!("/clusters/{id}"))).await.json();
        if c["status"] == "destroyed" {
            break;
        }
        assert!(Instant::now() < deadline, "not destroyed: {c:#}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    s.stop();
}

/// Bad credential flags stop `serve` before it starts anything, with a message that says why.
#[test]
fn bad_credential_flags_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.secret");
    std::fs::write(&empty, "\n").unwrap();
    let missing = dir.path().join("missing.secret");
    let (empty, missing) = (empty.display().to_string(), missing.display().to_string());
    for (args, says) in [
        (
            vec!["--principal", "paas"],
            "--principal needs --secret-file",
        ),
        (
            vec!["--principal", "paas", "--secret-file", &missing],
            "missing.secret",
        ),
        (
            vec!["--principal", "paas", "--secret-file", &empty],
            "the secret is empty",
        ),
        (
            vec!["--principal", "a:b", "--secret-file", &empty],
            "without ':'",
        ),
    ] {
        let data = dir.path().join("data");
        let err = common::Server::try_start(&data, &args)
            .err()
            .unwrap_or_else(|| panic!("{args:?} must be refused"));
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!data.exists(), "{args:?} must change nothing");
    }
}
