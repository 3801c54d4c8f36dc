//! The executor against a scripted in-process agent (hyper on port 0): re-SUBSCRIBE with the
//! unacknowledged tasks and updates after a lost stream when the framework checkpoints, and
//! exit with its node process killed when it does not. The agent side runs on the test's
//! terms: it sees every call and decides every event.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use paas::domain::cluster::Command;
use paas::domain::ids::ClusterId;
use paas::domain::launch::NodeLaunch;
use paas::executor::{ExecutorConfig, ExecutorError, recordio};
use paas::proto::mesos::v1 as mesos;
use paas::proto::mesos::v1::executor::{Call, Event, call, event};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

const PROTOBUF: &str = "application/x-protobuf";
const STEP: Duration = Duration::from_secs(10);

/// What the executor sent the agent.
enum Received {
    /// A SUBSCRIBE, with the sender of that connection's event stream (drop it to close).
    Subscribe(Call, mpsc::UnboundedSender<Event>),
    Call(Call),
}

async fn fake_agent() -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(req, tx.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

async fn handle(
    req: Request<Incoming>,
    tx: mpsc::UnboundedSender<Received>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    // The real agent answers 415/406 to anything but these exact strings.
    assert_eq!(req.uri().path(), "/slave(1)/api/v1/executor");
    assert_eq!(req.headers()[header::CONTENT_TYPE], PROTOBUF);
    assert_eq!(req.headers()[header::ACCEPT], PROTOBUF);
    let body = req.into_body().collect().await.expect("body").to_bytes();
    let call = Call::decode(body).expect("a protobuf executor Call");
    if call.r#type() == call::Type::Subscribe {
        let (events_tx, events_rx) = mpsc::unbounded_channel::<Event>();
        let _ = tx.send(Received::Subscribe(call, events_tx));
        let frames = UnboundedReceiverStream::new(events_rx)
            .map(|ev| Ok::<_, Infallible>(Frame::data(recordio::encode(&ev.encode_to_vec()))));
        let response = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, PROTOBUF)
            .body(BodyExt::boxed(StreamBody::new(frames)))
            .expect("response");
        return Ok(response);
    }
    let _ = tx.send(Received::Call(call));
    Ok(Response::builder()
        .status(StatusCode::ACCEPTED)
        .body(Empty::new().boxed())
        .expect("response"))
}

fn config(agent: SocketAddr, checkpoint: bool) -> ExecutorConfig {
    let vars = [
        ("MESOS_SLAVE_PID", format!("slave(1)@{agent}")),
        ("MESOS_FRAMEWORK_ID", "fw-1".to_owned()),
        ("MESOS_EXECUTOR_ID", "ex-1".to_owned()),
        (
            "MESOS_CHECKPOINT",
            if checkpoint { "1" } else { "0" }.to_owned(),
        ),
        ("MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD", "2secs".to_owned()),
        ("MESOS_SUBSCRIPTION_BACKOFF_MAX", "200ms".to_owned()),
        ("MESOS_RECOVERY_TIMEOUT", "10secs".to_owned()),
    ];
    ExecutorConfig::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .expect("config")
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(STEP, rx.recv())
        .await
        .expect("the executor went quiet")
        .expect("agent gone")
}

async fn expect_subscribe(
    rx: &mut mpsc::UnboundedReceiver<Received>,
) -> (call::Subscribe, mpsc::UnboundedSender<Event>) {
    match next(rx).await {
        Received::Subscribe(call, events) => {
            assert_eq!(call.executor_id.value, "ex-1");
            assert_eq!(call.framework_id.value, "fw-1");
            (call.subscribe.expect("subscribe payload"), events)
        }
        Received::Call(call) => panic!("expected SUBSCRIBE, got {call:?}"),
    }
}

async fn expect_update(rx: &mut mpsc::UnboundedReceiver<Received>) -> mesos::TaskStatus {
    match next(rx).await {
        Received::Call(call) => {
            assert_eq!(call.r#type(), call::Type::Update);
            let status = call.update.expect("update payload").status;
            // What the real agent validates (400 otherwise).
            assert_eq!(status.source(), mesos::task_status::Source::Executor);
            assert_ne!(status.state(), mesos::TaskState::TaskStaging);
            assert_eq!(
                status.executor_id.as_ref().map(|e| e.value.as_str()),
                Some("ex-1")
            );
            let uuid =
                uuid::Uuid::from_slice(status.uuid.as_deref().expect("uuid")).expect("16 bytes");
            assert_eq!(uuid.get_version_num(), 4);
            status
        }
        Received::Subscribe(..) => panic!("expected UPDATE, got SUBSCRIBE"),
    }
}

fn subscribed() -> Event {
    Event {
        r#type: Some(event::Type::Subscribed as i32),
        subscribed: Some(event::Subscribed {
            executor_info: mesos::ExecutorInfo {
                executor_id: mesos::ExecutorId::from("ex-1"),
                ..Default::default()
            },
            framework_info: mesos::FrameworkInfo {
                user: "root".into(),
                name: "fw".into(),
                id: Some(mesos::FrameworkId::from("fw-1")),
                ..Default::default()
            },
            agent_info: mesos::AgentInfo {
                hostname: "localhost".into(),
                id: Some(mesos::AgentId::from("agent-1")),
                ..Default::default()
            },
            container_id: None,
        }),
        ..Default::default()
    }
}

fn launch(task_id: &str, script: &str) -> Event {
    let data = NodeLaunch {
        cluster_id: ClusterId::generate(),
        node: "n1".into(),
        command: Some(Command::Argv(vec![
            "/bin/sh".into(),
            "-c".into(),
            script.into(),
        ])),
        env: Default::default(),
        ports: Default::default(),
        agent_port: None,
        secret: "s".into(),
    };
    Event {
        r#type: Some(event::Type::Launch as i32),
        launch: Some(event::Launch {
            task: mesos::TaskInfo {
                name: task_id.into(),
                task_id: mesos::TaskId::from(task_id),
                agent_id: mesos::AgentId::from("agent-1"),
                data: Some(serde_json::to_vec(&data).expect("json")),
                ..Default::default()
            },
        }),
        ..Default::default()
    }
}

fn acknowledged(status: &mesos::TaskStatus) -> Event {
    Event {
        r#type: Some(event::Type::Acknowledged as i32),
        acknowledged: Some(event::Acknowledged {
            task_id: status.task_id.clone(),
            uuid: status.uuid.clone().expect("uuid"),
        }),
        ..Default::default()
    }
}

fn kill(task_id: &str) -> Event {
    Event {
        r#type: Some(event::Type::Kill as i32),
        kill: Some(event::Kill {
            task_id: mesos::TaskId::from(task_id),
            kill_policy: None,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn checkpointing_executor_resubscribes_with_unacknowledged_state() {
    let (agent, mut rx) = fake_agent().await;
    let executor = tokio::spawn(paas::executor::run(
        config(agent, true),
        CancellationToken::new(),
    ));

    let (first, events) = expect_subscribe(&mut rx).await;
    assert!(first.unacknowledged_tasks.is_empty() && first.unacknowledged_updates.is_empty());
    events.send(subscribed()).unwrap();
    events.send(launch("t1", "exec sleep 30")).unwrap();
    let running = expect_update(&mut rx).await;
    assert_eq!(running.state(), mesos::TaskState::TaskRunning);
    assert_eq!(
        running.agent_id.as_ref().map(|a| a.value.as_str()),
        Some("agent-1")
    );

    // The agent "restarts" before acknowledging anything.
    drop(events);
    let (second, events) = expect_subscribe(&mut rx).await;
    let tasks: Vec<_> = second
        .unacknowledged_tasks
        .iter()
        .map(|t| t.task_id.value.as_str())
        .collect();
    assert_eq!(tasks, ["t1"]);
    assert_eq!(second.unacknowledged_updates.len(), 1);
    assert_eq!(second.unacknowledged_updates[0].status.uuid, running.uuid);

    events.send(subscribed()).unwrap();
    events.send(acknowledged(&running)).unwrap();
    events.send(kill("t1")).unwrap();
    let killed = expect_update(&mut rx).await;
    assert_eq!(killed.state(), mesos::TaskState::TaskKilled);
    assert!(
        killed.message().contains("SIGTERM"),
        "{:?}",
        killed.message()
    );

    // Once its only task is terminal and acknowledged, the executor is done.
    events.send(acknowledged(&killed)).unwrap();
    let result = tokio::time::timeout(STEP, executor)
        .await
        .expect("executor exits")
        .expect("join");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn executor_without_checkpointing_kills_its_node_and_exits_on_stream_loss() {
    let (agent, mut rx) = fake_agent().await;
    let executor = tokio::spawn(paas::executor::run(
        config(agent, false),
        CancellationToken::new(),
    ));
    let pid_file = tempfile::NamedTempFile::new().expect("tempfile");
    let script = format!("echo $$ > {}; exec sleep 30", pid_file.path().display());

    let (_, events) = expect_subscribe(&mut rx).await;
    events.send(subscribed()).unwrap();
    events.send(launch("t1", &script)).unwrap();
    assert_eq!(
        expect_update(&mut rx).await.state(),
        mesos::TaskState::TaskRunning
    );
    let pid = loop {
        if let Ok(pid) = std::fs::read_to_string(pid_file.path())
            .unwrap_or_default()
            .trim()
            .parse::<i32>()
        {
            break pid;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    drop(events);
    let result = tokio::time::timeout(STEP, executor)
        .await
        .expect("executor exits")
        .expect("join");
    assert!(
        matches!(result, Err(ExecutorError::Disconnected(_))),
        "{result:?}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "node process {pid} survived its executor"
    );
    // Nothing reaches an agent that is gone; no call may have been attempted meanwhile.
    assert!(rx.try_recv().is_err());
}

/// The executor's NodeAgent serves TLS with a certificate made at start, and TASK_RUNNING
/// carries its SHA-256: a client pinned to it gets through, one pinned to anything else does
/// not, even with the right secret.
#[tokio::test]
async fn running_reports_the_node_agent_certificate_pin() {
    let (agent, mut rx) = fake_agent().await;
    let shutdown = CancellationToken::new();
    let executor = tokio::spawn(paas::executor::run(config(agent, true), shutdown.clone()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut ev = launch("t1", "exec sleep 30");
    if let Some(l) = ev.launch.as_mut() {
        let mut data: NodeLaunch =
            serde_json::from_slice(l.task.data.as_deref().expect("data")).expect("launch");
        data.agent_port = Some(port);
        data.secret = "tls-test-secret".into();
        l.task.data = Some(serde_json::to_vec(&data).expect("json"));
    }
    let (_, events) = expect_subscribe(&mut rx).await;
    events.send(subscribed()).unwrap();
    events.send(ev).unwrap();
    let running = expect_update(&mut rx).await;
    assert_eq!(running.state(), mesos::TaskState::TaskRunning);
    let pin = paas::domain::launch::NodeRunning::parse(running.data.as_deref().unwrap_or_default())
        .expect("TASK_RUNNING data names the certificate pin")
        .agent_cert_sha256;

    let client = |pin: &str| {
        paas::orchestrator::client::NodeClient::new("127.0.0.1", port, "tls-test-secret", Some(pin))
            .expect("client")
    };
    let health = client(&pin).health().await.expect("pinned call");
    assert_eq!(health.node, "n1");
    let other = "0".repeat(64);
    let err = client(&other)
        .health()
        .await
        .expect_err("another pin is refused");
    assert!(
        matches!(err, paas::orchestrator::client::AgentCallError::Call { .. }),
        "{err}"
    );

    shutdown.cancel();
    events.send(acknowledged(&running)).unwrap();
    let _ = tokio::time::timeout(STEP, executor).await;
}
