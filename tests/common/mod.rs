//! Shared helpers for black-box tests: start the real `paas` binary on port 0 and talk to
//! it over real HTTP on loopback.
#![allow(dead_code)]

pub mod product;
pub mod sse;

/// Three callers for tests of who may see what: an admin (`root`) and two users.
pub mod tokens {
    use std::path::{Path, PathBuf};

    pub const ADMIN: (&str, &str) = ("authorization", "Bearer admin-token-0123456789");
    pub const ALICE: (&str, &str) = ("authorization", "Bearer alice-token-0123456789");
    pub const BOB: (&str, &str) = ("authorization", "Bearer bob-token-012345678901");

    /// A `--tokens` file in `dir` naming the three.
    pub fn file(dir: &Path) -> PathBuf {
        let p = dir.join("tokens");
        std::fs::write(
            &p,
            "admin-token-0123456789,root,admin\n\
             alice-token-0123456789,alice,user\n\
             bob-token-012345678901,bob,user\n",
        )
        .expect("write the tokens file");
        p
    }
}

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A running `paas serve` process.
pub struct Server {
    pub child: Child,
    /// e.g. `http://127.0.0.1:41234`
    pub url: String,
    pub data: PathBuf,
    /// What it logged until it served (its start lines: mesos-local's among them).
    pub log: String,
}

impl Server {
    /// Starts `paas serve --listen 127.0.0.1:0 --data <data> <extra…>` and waits until it
    /// prints the address it serves on.
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        Self::try_start(data, extra).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    pub fn try_start(data: &Path, extra: &[&str]) -> Result<Server, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_paas"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            // Without a master, serve starts mesos-local; tests that ask for neither a
            // master nor mesos-local want the store only.
            .args(
                if extra
                    .iter()
                    .any(|a| *a == "--master" || a.starts_with("--local"))
                {
                    &[][..]
                } else {
                    &["--master", "none"][..]
                },
            )
            // `serve` refuses a real master without tokens unless told; tests that are not
            // about auth say so (tests/security_api.rs checks the refusal itself).
            .args(
                if extra
                    .windows(2)
                    .any(|w| w[0] == "--master" && w[1] != "none")
                    && !extra.contains(&"--tokens")
                    && !extra.contains(&"--allow-anonymous")
                {
                    &["--allow-anonymous"][..]
                } else {
                    &[][..]
                },
            )
            .env("RUST_LOG", "info")
            .env_remove("MESOS_MASTER")
            .env_remove("PAAS_TOKENS")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = String::new();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                let status = child.wait().map_err(|e| e.to_string())?;
                return Err(format!("exited {status}; stderr:\n{seen}"));
            };
            seen.push_str(&line);
            seen.push('\n');
            if let Some(i) = line.find("paas serving on http://") {
                let rest = &line[i + "paas serving on ".len()..];
                let end = rest.find("/bigdata").expect("base path in the log line");
                break rest[..end].to_owned();
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server {
            child,
            url,
            data: data.to_owned(),
            log: seen,
        })
    }

    /// The URL of the mesos-local master this `serve` started (`--local-…` flags, no
    /// `--master`), from the `master=http://127.0.0.1:PORT` of its start line.
    pub fn local_master(&self) -> Option<String> {
        let line = self
            .log
            .lines()
            .find(|l| l.contains("mesos-local started"))?;
        let rest = &line[line.find("master=http://")? + "master=".len()..];
        Some(rest.split_whitespace().next().unwrap_or(rest).to_owned())
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/bigdata/api/v1{path}", self.url)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm(&mut self) -> ExitStatus {
        self.stop()
            .expect("server did not stop within 15 s of SIGTERM")
    }

    /// Sends SIGTERM and waits up to 15 s for the exit.
    fn stop(&mut self) -> Option<ExitStatus> {
        // SAFETY: plain kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..300 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    /// A server still running when its test ends (also when the test failed) is stopped as
    /// an operator would stop it: SIGTERM, so that its mesos-local stops the executors and
    /// containers it started (a `kill -9` would leave them to the next start on the same
    /// data directory, which a test's temporary directory never sees). `kill -9` only if
    /// it has not stopped 15 s later.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() && self.stop().is_none() {
            self.kill9();
        }
    }
}

/// A response, fully read.
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `error.code` of an error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Sends one request.
pub async fn call(
    method: &str,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Resp {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).expect("request");
    let resp = client
        .request(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

pub async fn get(url: &str) -> Resp {
    call("GET", url, Bytes::new(), &[]).await
}

pub const JSON: (&str, &str) = ("content-type", "application/json");

/// The standard output of a finished run of the `paas` binary (`what` names it); if it
/// failed, panics with its status and both outputs.
pub fn stdout_of_success(out: &std::process::Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real Mesos kit's scripts (`start.sh`, `stop.sh`): `../shared/realmesos` beside the
/// checkout. They find the kit's build output themselves (`$REALMESOS_HOME`).
pub fn realmesos_kit() -> PathBuf {
    repo_root().join("../shared/realmesos")
}

/// The real Mesos master named by `MESOS_MASTER`, or `None` when it is unset, after printing
/// why `test` does not run and `how` to run it. Under `CI` an unset `MESOS_MASTER` fails
/// instead: CI must never pass without having run the real-Mesos tests.
pub fn mesos_master(test: &str, how: &str) -> Option<String> {
    if let Some(m) = std::env::var("MESOS_MASTER").ok().filter(|m| !m.is_empty()) {
        return Some(m);
    }
    let why = format!("SKIPPED {test}: MESOS_MASTER is not set. {how}");
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide MESOS_MASTER (scripts/test.sh starts ../shared/realmesos): {why}"
    );
    eprintln!("{why}");
    None
}

/// Replaces the reference template with its nodes alone: the orchestrator configures the
/// cluster the moment every node runs, and the reference services (the image's `/paas` on
/// fixed host ports) cannot run on the process containerizer. With nothing to configure,
/// the cluster is `ready` once its script ran.
pub async fn nodes_only(s: &Server) {
    const TEMPLATE: &str = r#"{"nodes": { {{#each (range 0 opts.size)}}{{#unless @first}},{{/unless}}"node{{this}}": {"docker_image": "{{../node_image}}", "cpu": {{../opts.cpu}}, "mem": {{../opts.mem}}, "disk": 0, "ports": ["http"]}{{/each}} } }"#;
    let r = call(
        "PUT",
        &s.api("/products/reference/1.0.0/template"),
        TEMPLATE,
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Registers the reference product with all three parts from `examples/`.
pub async fn register_reference(s: &Server, auth: &[(&str, &str)]) {
    let dir = repo_root().join("examples/products/reference");
    let mut h = auth.to_vec();
    h.push(JSON);
    let r = call(
        "POST",
        &s.api("/products"),
        r#"{"name":"reference","version":"1.0.0","description":"Reference product: minimal"}"#,
        &h,
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
            &h,
        )
        .await;
        assert_eq!(r.status, 200, "{part}: {}", r.text());
    }
}

// ---------------------------------------------------------------------------------------
// Following clusters

pub async fn cluster(s: &Server, id: &str) -> Value {
    get(&s.api(&format!("/clusters/{id}"))).await.json()
}

/// Calls `f` every `every` until it returns `Some`, failing with `what` after `secs`.
pub async fn poll<T>(
    secs: u64,
    every: Duration,
    what: &str,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Polls the cluster until `done` holds, failing with the last record after `secs`.
pub async fn wait_for(
    s: &Server,
    id: &str,
    secs: u64,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let c = cluster(s, id).await;
        if done(&c) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "cluster {id} not {what} after {secs} s: {c:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

pub async fn wait_status(s: &Server, id: &str, status: &str, secs: u64) -> Value {
    wait_for(s, id, secs, status, |c| c["status"] == status).await
}

pub async fn launch(s: &Server, body: &str) -> String {
    let r = call(
        "POST",
        &s.api("/products/reference/1.0.0"),
        body.to_owned(),
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

pub async fn destroy(s: &Server, id: &str) {
    let r = call("DELETE", &s.api(&format!("/clusters/{id}")), "", &[]).await;
    assert_eq!(r.status, 202, "{}", r.text());
}

pub fn task_ids(c: &Value) -> BTreeSet<String> {
    c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["task_id"].as_str().map(str::to_owned))
        .collect()
}

/// Executor ids (= our task ids) of the running Mesos Docker containers.
pub fn running_executors() -> BTreeSet<String> {
    executors_named("mesos-")
}

/// Executor ids (= our task ids) of the running Docker containers whose name starts with
/// `prefix`: `mesos-` on real Mesos, `paaslocal-` on mesos-local.
pub fn executors_named(prefix: &str) -> BTreeSet<String> {
    let ids = Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("name={prefix}")])
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
        .map(str::to_owned)
        .collect()
}

/// Tears the test's framework down at the master if the test panics, so that a failure
/// leaves no container behind (its tasks would otherwise outlive `serve` for the failover
/// timeout).
pub struct TeardownOnPanic {
    pub master: String,
    pub framework_id: String,
}

impl TeardownOnPanic {
    /// Waits (up to 30 s) until `s` has subscribed to `master` and finished reconciling,
    /// then guards its framework.
    pub async fn of(s: &Server, master: &str) -> Self {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let h = get(&s.api("/health")).await.json();
            if let Some(id) = h["mesos"]["framework_id"].as_str()
                && h["mesos"]["subscribed"] == true
                && h["mesos"]["reconciling"] == false
            {
                return Self {
                    master: master.to_owned(),
                    framework_id: id.to_owned(),
                };
            }
            assert!(
                Instant::now() < deadline,
                "not subscribed after 30 s: {h:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for TeardownOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::process::Command::new("curl")
                .args(["-s", "-X", "POST", "-d"])
                .arg(format!("frameworkId={}", self.framework_id))
                .arg(format!("{}/master/teardown", self.master))
                .status();
        }
    }
}

/// The Docker container running the executor `executor_id` (our task id), on real Mesos
/// (`mesos-*`) or mesos-local (`paaslocal-*`): both give the executor `MESOS_EXECUTOR_ID`.
pub fn container_of(executor_id: &str) -> String {
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
    panic!("no container runs executor {executor_id}");
}

/// `docker kill` of the container running `executor_id`.
pub fn docker_kill(executor_id: &str) {
    let out = Command::new("docker")
        .args(["kill", &container_of(executor_id)])
        .output()
        .expect("docker kill");
    assert!(out.status.success(), "docker kill {executor_id}: {out:?}");
}

/// `PATCH /clusters/{id}` with new options, expecting 202; the answer's JSON.
pub async fn patch(s: &Server, id: &str, options: Value) -> Value {
    let r = call(
        "PATCH",
        &s.api(&format!("/clusters/{id}")),
        serde_json::json!({ "options": options }).to_string(),
        &[JSON],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()
}

/// Marks a stored cluster `ready` with every node running as attempt 1, as the scheduler and
/// orchestrator would: for tests without Mesos. `serve` must be stopped (sled locks its
/// data directory).
pub fn make_ready_in_store(data: &Path, id: &str) {
    use paas::domain::{ClusterStatus, NodeStatus};
    use paas::registry::{SledStore, Store, Update};
    let store = SledStore::open(data).expect("open the store");
    store
        .update_cluster(id.parse().expect("cluster id"), &mut |c| {
            for n in &mut c.nodes {
                n.observed.status = NodeStatus::Running;
                n.observed.task_id =
                    Some(format!("{}.{}.1", c.id, n.name).parse().expect("task id"));
            }
            c.status = ClusterStatus::Ready;
            Ok(Update::Write)
        })
        .expect("update the stored cluster");
}

/// `PATCH`es the options of a ready cluster and watches the update to its end (`ready` at the
/// new generation, nothing left to roll), polling every 100 ms. Returns the final record and
/// the most nodes seen not `running` at once (a rolling update keeps that at 1).
pub async fn update_watching_down(
    s: &Server,
    id: &str,
    options: Value,
    secs: u64,
) -> (Value, usize) {
    let g = patch(s, id, options).await["generation"].clone();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut most_down = 0;
    loop {
        let c = cluster(s, id).await;
        let down = c["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["status"] != "running")
            .count();
        most_down = most_down.max(down);
        assert_ne!(c["status"], "failed", "the update failed: {c:#}");
        if c["status"] == "ready" && c["generation"] == g && c.get("rolling").is_none() {
            return (c, most_down);
        }
        assert!(
            Instant::now() < deadline,
            "cluster {id} not ready at generation {g} after {secs} s: {c:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
