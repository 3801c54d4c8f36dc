//! End-to-end check of the executor against a REAL Apache Mesos master and agent with the
//! Docker containerizer (e.g. `../shared/realmesos/start.sh`).
//!
//! The test is its own minimal v1 scheduler (protobuf, hand-rolled SUBSCRIBE / ACCEPT /
//! ACKNOWLEDGE / KILL / TEARDOWN over hyper). In ONE offer it launches three nodes, each with
//! its own executor in its own container of the node image:
//! - `sleeper` runs a command that stays up (and checks its environment): TASK_RUNNING, then
//!   the test KILLs it and expects TASK_KILLED (by SIGTERM);
//! - `stubborn` ignores SIGTERM: KILL with a 3 s grace period ends in SIGKILL, TASK_KILLED;
//! - `shutdown` stays up until the test sends SHUTDOWN for its executor: TASK_KILLED;
//! - `exit3` runs a command that exits 3: TASK_FAILED whose message carries the status;
//! - `missing` names a binary absent from the image: TASK_FAILED "cannot start …".
//!
//! Afterwards no container of any of these executors may be left in `docker ps`.
//!
//! The node commands come from a tiny static C helper compiled here (`cc -static`) and mounted
//! read-only at `/testbin`: the `FROM scratch` image holds nothing but `/paas`.
//!
//! Environment: `MESOS_MASTER` (`http://127.0.0.1:5050` or `127.0.0.1:5050`; unset = skipped,
//! with the reason printed, or a failure when `CI` is set) and `PAAS_NODE_IMAGE` (default
//! `paas-node:latest`, built by `deploy/images/build-node-image.sh`).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command as Proc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use paas::domain::cluster::Command;
use paas::domain::ids::ClusterId;
use paas::domain::launch::NodeLaunch;
use paas::executor::recordio::Decoder;
use paas::proto::mesos::v1 as mesos;
use paas::proto::mesos::v1::scheduler::{Call, Event, call, event};
use prost::Message;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};

const PROTOBUF: &str = "application/x-protobuf";

const HELPER_C: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static int missing(const char *name, const char *want) {
    const char *v = getenv(name);
    if (v && (!want || strcmp(v, want) == 0)) return 0;
    fprintf(stderr, "helper: %s is %s\n", name, v ? v : "(unset)");
    return 1;
}
int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "exit") == 0) return atoi(argv[2]);
    if (argc > 2 && (strcmp(argv[1], "sleep") == 0 || strcmp(argv[1], "ignore-term") == 0)) {
        if (strcmp(argv[1], "ignore-term") == 0) signal(SIGTERM, SIG_IGN);
        /* The executor's environment contract: exit 10 (so the test fails) if broken. */
        if (missing("NODE_NAME", argv[2]) | missing("GREETING", "hello") |
            missing("CLUSTER_ID", NULL) | missing("PORT_HTTP", NULL) |
            missing("MESOS_EXECUTOR_ID", NULL))
            return 10;
        printf("helper: sleeping as %s, port %s\n", getenv("NODE_NAME"), getenv("PORT_HTTP"));
        fflush(stdout);
        for (;;) pause();
    }
    return 64;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_tasks_run_get_killed_and_fail_with_exit_codes() {
    let Some(master) = common::mesos_master(
        "executor_realmesos",
        "This test needs a real Mesos master + agent with the Docker containerizer and the node \
         image, e.g.\n  \
         ../shared/realmesos/start.sh && IMAGE=$(deploy/images/build-node-image.sh) && \
         MESOS_MASTER=http://127.0.0.1:5050 PAAS_NODE_IMAGE=$IMAGE \
         cargo test --test executor_realmesos -- --nocapture",
    ) else {
        return;
    };
    let master: SocketAddr = master
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("MESOS_MASTER must be http://<ip>:<port> or <ip>:<port>");
    let image = std::env::var("PAAS_NODE_IMAGE").unwrap_or_else(|_| "paas-node:latest".into());
    assert!(
        docker(&["image", "inspect", "--format", "{{.Id}}", &image]).is_some(),
        "node image {image} not found; build it with deploy/images/build-node-image.sh"
    );
    let bin_dir = tempfile::tempdir().expect("tempdir");
    build_helper(bin_dir.path());

    let mut sched = Scheduler::subscribe(master).await;
    let result = scenario(&mut sched, &image, bin_dir.path()).await;
    sched.teardown().await;
    if let Err(why) = result {
        panic!("{why}");
    }
}

/// Everything after SUBSCRIBED; the caller tears the framework down whatever happens.
async fn scenario(
    sched: &mut Scheduler,
    image: &str,
    bin_dir: &std::path::Path,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(150);
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let offer = sched.next_offer(deadline).await?;
    let port = first_port(&offer).ok_or("offer has no ports")?;
    eprintln!(
        "offer {} on agent {} (port {port})",
        offer.id.value, offer.agent_id.value
    );

    let nodes: [(&str, Vec<&str>); 5] = [
        ("sleeper", vec!["/testbin/helper", "sleep", "sleeper"]),
        (
            "stubborn",
            vec!["/testbin/helper", "ignore-term", "stubborn"],
        ),
        ("shutdown", vec!["/testbin/helper", "sleep", "shutdown"]),
        ("exit3", vec!["/testbin/helper", "exit", "3"]),
        ("missing", vec!["/no/such/binary"]),
    ];
    let mut task_ids = BTreeMap::new();
    let mut tasks = Vec::new();
    let mut ports_used = 0;
    for (node, argv) in &nodes {
        let task_id = format!("paas-exec-test-{run}-{node}");
        let is_sleeper = argv.len() == 3;
        let launch = NodeLaunch {
            cluster_id: ClusterId::generate(),
            node: (*node).to_owned(),
            command: Some(Command::Argv(
                argv.iter().map(|s| (*s).to_owned()).collect(),
            )),
            env: [("GREETING".to_owned(), "hello".to_owned())].into(),
            ports: if is_sleeper {
                [("http".to_owned(), port + ports_used)].into()
            } else {
                BTreeMap::new()
            },
            agent_port: None,
            secret: "test-secret".to_owned(),
        };
        let mut resources = vec![scalar(&offer, "cpus", 0.1)?, scalar(&offer, "mem", 32.0)?];
        if is_sleeper {
            resources.push(ports(&offer, port + ports_used)?);
            ports_used += 1;
        }
        let executor = mesos::ExecutorInfo {
            r#type: Some(mesos::executor_info::Type::Custom as i32),
            executor_id: mesos::ExecutorId::from(format!("{task_id}-executor")),
            name: Some(format!("paas node {node}")),
            command: Some(mesos::CommandInfo {
                // Keep the image ENTRYPOINT (`/paas executor`); the default would be /bin/sh.
                shell: Some(false),
                environment: Some(mesos::Environment {
                    variables: vec![mesos::environment::Variable {
                        name: "RUST_LOG".into(),
                        value: Some("debug".into()),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            container: Some(mesos::ContainerInfo {
                r#type: mesos::container_info::Type::Docker as i32,
                docker: Some(mesos::container_info::DockerInfo {
                    image: image.to_owned(),
                    network: Some(mesos::container_info::docker_info::Network::Host as i32),
                    force_pull_image: Some(false),
                    ..Default::default()
                }),
                volumes: vec![mesos::Volume {
                    mode: mesos::volume::Mode::Ro as i32,
                    container_path: "/testbin".into(),
                    host_path: Some(bin_dir.display().to_string()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            resources: vec![scalar(&offer, "cpus", 0.1)?, scalar(&offer, "mem", 64.0)?],
            ..Default::default()
        };
        tasks.push(mesos::TaskInfo {
            name: format!("node {node}"),
            task_id: mesos::TaskId::from(task_id.as_str()),
            agent_id: offer.agent_id.clone(),
            resources,
            executor: Some(executor),
            data: Some(serde_json::to_vec(&launch).map_err(|e| e.to_string())?),
            ..Default::default()
        });
        task_ids.insert((*node).to_owned(), task_id);
    }
    sched.accept(&offer, tasks).await?;

    let node_of: BTreeMap<String, String> = task_ids
        .iter()
        .map(|(node, id)| (id.clone(), node.clone()))
        .collect();
    let mut seen: BTreeMap<String, Vec<mesos::TaskStatus>> = BTreeMap::new();
    let terminal = |seen: &BTreeMap<String, Vec<mesos::TaskStatus>>, id: &str| {
        seen.get(id)
            .and_then(|v| v.last())
            .is_some_and(|s| s.state().is_terminal())
    };
    while !task_ids.values().all(|id| terminal(&seen, id)) {
        let status = sched.next_update(deadline).await?;
        eprintln!(
            "UPDATE {} {} source={} reason={} message={:?}",
            status.task_id.value,
            status.state().as_str_name(),
            status.source().as_str_name(),
            status.reason.map_or("-", |_| status.reason().as_str_name()),
            status.message()
        );
        let id = status.task_id.value.clone();
        let first_running = status.state() == mesos::TaskState::TaskRunning
            && !seen
                .get(&id)
                .is_some_and(|v| v.iter().any(|s| s.state() == mesos::TaskState::TaskRunning));
        seen.entry(id.clone()).or_default().push(status);
        let node = node_of.get(&id).map_or("", String::as_str);
        if !first_running || !matches!(node, "sleeper" | "stubborn" | "shutdown") {
            continue;
        }
        let executor_id = format!("{id}-executor");
        let containers = wait_containers(&executor_id, true, deadline)
            .await
            .ok_or_else(|| format!("{node}: container never showed up in `docker ps`"))?;
        // Give the helper time to fail its environment check, should it.
        tokio::time::sleep(Duration::from_secs(1)).await;
        if node == "shutdown" {
            eprintln!("{node} runs in container {containers:?}; sending SHUTDOWN");
            sched.shutdown(&executor_id, &offer.agent_id).await?;
        } else {
            eprintln!("{node} runs in container {containers:?}; sending KILL");
            sched.kill(&id, &offer.agent_id).await?;
        }
    }

    let states = |node: &str| -> Vec<mesos::TaskState> {
        seen[&task_ids[node]].iter().map(|s| s.state()).collect()
    };
    let last = |node: &str| seen[&task_ids[node]].last().cloned().unwrap_or_default();
    for node in task_ids.keys() {
        for s in &seen[&task_ids[node]] {
            if s.source() != mesos::task_status::Source::Executor {
                return Err(format!("{node}: update not from the executor: {s:?}"));
            }
        }
    }
    for (node, signal) in [
        ("sleeper", "SIGTERM"),
        ("stubborn", "SIGKILL"),
        ("shutdown", "SIGTERM"),
    ] {
        let states = states(node);
        if states.first() != Some(&mesos::TaskState::TaskRunning)
            || states.last() != Some(&mesos::TaskState::TaskKilled)
        {
            return Err(format!(
                "{node} went through {states:?}, want RUNNING .. KILLED"
            ));
        }
        let message = last(node).message().to_owned();
        if !message.contains(signal) {
            return Err(format!("{node}: killed with {message:?}, want {signal}"));
        }
    }
    let exit3 = last("exit3");
    if exit3.state() != mesos::TaskState::TaskFailed
        || !exit3.message().contains("exited with status 3")
    {
        return Err(format!(
            "exit3 ended {:?} {:?}",
            exit3.state(),
            exit3.message()
        ));
    }
    let missing = last("missing");
    if missing.state() != mesos::TaskState::TaskFailed
        || !missing.message().contains("cannot start node command")
    {
        return Err(format!(
            "missing ended {:?} {:?}",
            missing.state(),
            missing.message()
        ));
    }

    // Each executor exits once its only task is terminal and acknowledged, and the agent then
    // stops its container.
    for node in task_ids.keys() {
        let executor_id = format!("{}-executor", task_ids[node]);
        if wait_containers(&executor_id, false, deadline)
            .await
            .is_none()
        {
            return Err(format!("{node}: container of {executor_id} still running"));
        }
        eprintln!("{node}: no container of {executor_id} in `docker ps` any more");
    }
    Ok(())
}

// ----- the minimal scheduler --------------------------------------------------------------

struct Scheduler {
    master: SocketAddr,
    stream_id: String,
    framework_id: mesos::FrameworkId,
    events: mpsc::UnboundedReceiver<Event>,
    reader: tokio::task::JoinHandle<()>,
}

impl Scheduler {
    async fn subscribe(master: SocketAddr) -> Self {
        use mesos::framework_info::{Capability, capability::Type as Cap};
        let call = Call {
            r#type: Some(call::Type::Subscribe as i32),
            subscribe: Some(call::Subscribe {
                framework_info: mesos::FrameworkInfo {
                    user: "root".into(),
                    name: "paas-executor-realmesos-test".into(),
                    roles: vec!["*".into()],
                    capabilities: [Cap::MultiRole, Cap::TaskKillingState]
                        .into_iter()
                        .map(|t| Capability {
                            r#type: Some(t as i32),
                        })
                        .collect(),
                    ..Default::default()
                },
                ..Default::default()
            }),
            ..Default::default()
        };
        let stream = TcpStream::connect(master)
            .await
            .expect("connect to MESOS_MASTER");
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        let mut conn = Box::pin(conn);
        let request = post(master, &call, None);
        let response = tokio::select! {
            r = sender.send_request(request) => r.expect("SUBSCRIBE response"),
            _ = &mut conn => panic!("master closed the connection"),
        };
        assert_eq!(response.status(), StatusCode::OK, "SUBSCRIBE status");
        let stream_id = response.headers()["mesos-stream-id"]
            .to_str()
            .expect("stream id")
            .to_owned();
        let (tx, events) = mpsc::unbounded_channel();
        let mut body = response.into_body();
        let reader = tokio::spawn(async move {
            let mut decoder = Decoder::default();
            loop {
                tokio::select! {
                    frame = body.frame() => match frame {
                        Some(Ok(frame)) => {
                            if let Ok(data) = frame.into_data() {
                                decoder.push(&data);
                            }
                            while let Some(record) = decoder.next_record().expect("recordio") {
                                let event = Event::decode(record).expect("event");
                                if tx.send(event).is_err() {
                                    return;
                                }
                            }
                        }
                        _ => return,
                    },
                    _ = &mut conn => return,
                }
            }
        });
        let mut sched = Scheduler {
            master,
            stream_id,
            framework_id: mesos::FrameworkId::from(""),
            events,
            reader,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ev = sched.next_event(deadline).await.expect("SUBSCRIBED");
            if ev.r#type() == event::Type::Subscribed {
                sched.framework_id = ev.subscribed.expect("payload").framework_id;
                eprintln!("SUBSCRIBED as framework {}", sched.framework_id.value);
                return sched;
            }
        }
    }

    async fn next_event(&mut self, deadline: Instant) -> Result<Event, String> {
        match timeout_at(deadline, self.events.recv()).await {
            Ok(Some(ev)) if ev.r#type() == event::Type::Error => {
                Err(format!("ERROR event: {:?}", ev.error))
            }
            Ok(Some(ev)) => Ok(ev),
            Ok(None) => Err("the master closed the event stream".into()),
            Err(_) => Err("timed out waiting for an event".into()),
        }
    }

    async fn next_offer(&mut self, deadline: Instant) -> Result<mesos::Offer, String> {
        loop {
            let ev = self.next_event(deadline).await?;
            if let Some(offers) = ev.offers {
                let mut offers = offers.offers.into_iter();
                if let Some(first) = offers.next() {
                    self.decline(offers.map(|o| o.id).collect()).await?;
                    return Ok(first);
                }
            }
        }
    }

    async fn decline(&self, offer_ids: Vec<mesos::OfferId>) -> Result<(), String> {
        if offer_ids.is_empty() {
            return Ok(());
        }
        self.call(Call {
            r#type: Some(call::Type::Decline as i32),
            decline: Some(call::Decline {
                offer_ids,
                filters: Some(mesos::Filters {
                    refuse_seconds: Some(3600.0),
                }),
            }),
            ..Default::default()
        })
        .await
    }

    /// The next task status update, acknowledged when it carries a uuid. Offers that come
    /// along meanwhile are declined.
    async fn next_update(&mut self, deadline: Instant) -> Result<mesos::TaskStatus, String> {
        loop {
            let ev = self.next_event(deadline).await?;
            if let Some(offers) = ev.offers {
                self.decline(offers.offers.into_iter().map(|o| o.id).collect())
                    .await?;
                continue;
            }
            let Some(update) = ev.update else { continue };
            let status = update.status;
            if let (Some(uuid), Some(agent_id)) = (&status.uuid, &status.agent_id) {
                self.call(Call {
                    r#type: Some(call::Type::Acknowledge as i32),
                    acknowledge: Some(call::Acknowledge {
                        agent_id: agent_id.clone(),
                        task_id: status.task_id.clone(),
                        uuid: uuid.clone(),
                    }),
                    ..Default::default()
                })
                .await?;
            }
            return Ok(status);
        }
    }

    async fn accept(
        &mut self,
        offer: &mesos::Offer,
        tasks: Vec<mesos::TaskInfo>,
    ) -> Result<(), String> {
        use mesos::offer::{Operation, operation};
        self.call(Call {
            r#type: Some(call::Type::Accept as i32),
            accept: Some(call::Accept {
                offer_ids: vec![offer.id.clone()],
                operations: vec![Operation {
                    r#type: Some(operation::Type::Launch as i32),
                    launch: Some(operation::Launch { task_infos: tasks }),
                    ..Default::default()
                }],
                filters: Some(mesos::Filters {
                    refuse_seconds: Some(3600.0),
                }),
            }),
            ..Default::default()
        })
        .await
    }

    async fn kill(&mut self, task_id: &str, agent_id: &mesos::AgentId) -> Result<(), String> {
        self.call(Call {
            r#type: Some(call::Type::Kill as i32),
            kill: Some(call::Kill {
                task_id: mesos::TaskId::from(task_id),
                agent_id: Some(agent_id.clone()),
                kill_policy: Some(mesos::KillPolicy {
                    grace_period: Some(mesos::DurationInfo::from_std(Duration::from_secs(3))),
                }),
            }),
            ..Default::default()
        })
        .await
    }

    async fn shutdown(
        &mut self,
        executor_id: &str,
        agent_id: &mesos::AgentId,
    ) -> Result<(), String> {
        self.call(Call {
            r#type: Some(call::Type::Shutdown as i32),
            shutdown: Some(call::Shutdown {
                executor_id: mesos::ExecutorId::from(executor_id),
                agent_id: agent_id.clone(),
            }),
            ..Default::default()
        })
        .await
    }

    async fn teardown(&mut self) {
        let result = self
            .call(Call {
                r#type: Some(call::Type::Teardown as i32),
                ..Default::default()
            })
            .await;
        eprintln!("TEARDOWN: {result:?}");
        self.reader.abort();
    }

    async fn call(&self, mut call: Call) -> Result<(), String> {
        call.framework_id = Some(self.framework_id.clone());
        let request = post(self.master, &call, Some(&self.stream_id));
        let stream = TcpStream::connect(self.master)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let exchange = async move {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let (exchange, _) = tokio::join!(exchange, conn);
        let (status, body) = exchange?;
        if status == StatusCode::ACCEPTED {
            Ok(())
        } else {
            Err(format!(
                "{:?} -> {status}: {}",
                call.r#type(),
                String::from_utf8_lossy(&body)
            ))
        }
    }
}

fn post(master: SocketAddr, call: &Call, stream_id: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = Request::post("/api/v1/scheduler")
        .header(header::HOST, master.to_string())
        .header(header::CONTENT_TYPE, PROTOBUF)
        .header(header::ACCEPT, PROTOBUF);
    if let Some(id) = stream_id {
        builder = builder.header("Mesos-Stream-Id", id);
    }
    builder
        .body(Full::new(Bytes::from(call.encode_to_vec())))
        .expect("request")
}

// ----- offers -------------------------------------------------------------------------------

/// A copy of the offer's `name` resource with only the quantity changed: every other field
/// (allocation_info, reservations, …) must stay for the launch to be contained in the offer.
fn scalar(offer: &mesos::Offer, name: &str, value: f64) -> Result<mesos::Resource, String> {
    let mut r = offer
        .resources
        .iter()
        .find(|r| r.name == name && r.scalar_value().is_some_and(|v| v >= value))
        .cloned()
        .ok_or_else(|| format!("offer lacks {value} {name}"))?;
    r.scalar = Some(mesos::value::Scalar { value });
    Ok(r)
}

fn ports(offer: &mesos::Offer, port: u16) -> Result<mesos::Resource, String> {
    let mut r = offer
        .resources
        .iter()
        .find(|r| r.name == "ports")
        .cloned()
        .ok_or("offer lacks ports")?;
    r.ranges = Some(mesos::value::Ranges {
        range: vec![mesos::value::Range {
            begin: u64::from(port),
            end: u64::from(port),
        }],
    });
    Ok(r)
}

fn first_port(offer: &mesos::Offer) -> Option<u16> {
    let r = offer.resources.iter().find(|r| r.name == "ports")?;
    let range = r.ranges.as_ref()?.range.first()?;
    u16::try_from(range.begin).ok()
}

// ----- docker and the helper ----------------------------------------------------------------

fn docker(args: &[&str]) -> Option<String> {
    let out = Proc::new("docker").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Running containers whose environment names `executor_id` (the agent passes
/// `MESOS_EXECUTOR_ID` with `-e`).
fn containers_of(executor_id: &str) -> Vec<String> {
    let ids = docker(&["ps", "-q", "--no-trunc"]).unwrap_or_default();
    let needle = format!("MESOS_EXECUTOR_ID={executor_id}");
    ids.lines()
        .filter(|id| {
            docker(&[
                "inspect",
                "--format",
                "{{range .Config.Env}}{{println .}}{{end}}",
                id,
            ])
            .is_some_and(|env| env.lines().any(|l| l == needle))
        })
        .map(str::to_owned)
        .collect()
}

/// Polls `docker ps` until a container of `executor_id` is there (`present`) or is gone.
async fn wait_containers(
    executor_id: &str,
    present: bool,
    deadline: Instant,
) -> Option<Vec<String>> {
    let give_up = deadline.min(Instant::now() + Duration::from_secs(45));
    loop {
        let found = containers_of(executor_id);
        if found.is_empty() != present {
            return Some(found);
        }
        if Instant::now() >= give_up {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn build_helper(dir: &std::path::Path) {
    let src = dir.join("helper.c");
    std::fs::write(&src, HELPER_C).expect("write helper.c");
    let out = Proc::new("cc")
        .args(["-O2", "-static", "-o"])
        .arg(dir.join("helper"))
        .arg(&src)
        .output()
        .expect("a C compiler (cc) is needed to build the static test helper");
    assert!(
        out.status.success(),
        "cc -static failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The bind mount is read by processes in the container; keep it world-readable.
    let _ = Proc::new("chmod").args(["-R", "a+rX"]).arg(dir).status();
}
