//! The NodeAgent over real gRPC on loopback: the executor's server (port 0) and the
//! orchestrator's client, plus a raw tonic client for the authentication cases.

use std::collections::BTreeMap;
use std::time::Duration;

use paas::executor::exits::ExitBook;
use paas::executor::nodeagent::{AgentSettings, NodeAgentHandle};
use paas::orchestrator::client::{Ended, NodeClient, ServiceState, pinned_endpoint};
use paas::proto::paas::nodeagent::v1 as pb;
use pb::node_agent_client::NodeAgentClient;
use tonic::Code;

const SECRET: &str = "s3cret-for-tests";

async fn agent(dir: &std::path::Path) -> NodeAgentHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = AgentSettings {
        cluster_id: "c1".into(),
        node: "node0".into(),
        secret: SECRET.into(),
        env: BTreeMap::from([
            ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
            ("NODE_NAME".to_owned(), "node0".to_owned()),
        ]),
        working_dir: Some(dir.to_owned()),
    };
    NodeAgentHandle::start(listener, settings, ExitBook::new()).unwrap()
}

fn client(h: &NodeAgentHandle, secret: &str) -> NodeClient {
    NodeClient::new(
        "127.0.0.1",
        h.local_addr().port(),
        secret,
        Some(h.cert_sha256()),
    )
    .unwrap()
}

/// A raw tonic client over TLS pinned to the agent's certificate, carrying no secret.
async fn raw_client(h: &NodeAgentHandle) -> NodeAgentClient<tonic::transport::Channel> {
    let (_, endpoint) =
        pinned_endpoint("127.0.0.1", h.local_addr().port(), Some(h.cert_sha256())).unwrap();
    NodeAgentClient::new(endpoint.connect().await.unwrap())
}

fn argv(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn calls_need_the_cluster_secret() {
    let dir = tempfile::tempdir().unwrap();
    let h = agent(dir.path()).await;

    // Right secret, either header.
    let ok = client(&h, SECRET).health().await.unwrap();
    assert_eq!((ok.cluster_id.as_str(), ok.node.as_str()), ("c1", "node0"));
    let mut raw = raw_client(&h).await;
    let mut req = tonic::Request::new(pb::HealthRequest {});
    req.metadata_mut()
        .insert("x-paas-secret", SECRET.parse().unwrap());
    raw.health(req).await.unwrap();

    // Missing.
    let err = raw
        .health(tonic::Request::new(pb::HealthRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Missing on a call that would change the node: nothing is written.
    let target = dir.path().join("nope");
    let err = raw
        .put_file(tonic::Request::new(pb::PutFileRequest {
            path: target.display().to_string(),
            mode: 0,
            content: b"x".to_vec(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(!target.exists());

    // Wrong.
    let err = client(&h, "wrong").health().await.unwrap_err();
    assert!(
        matches!(
            &err,
            paas::orchestrator::client::AgentCallError::Call {
                code: Code::Unauthenticated,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_transient());
    h.shutdown().await;
}

#[tokio::test]
async fn put_file_and_run_commands() {
    let dir = tempfile::tempdir().unwrap();
    let h = agent(dir.path()).await;
    let c = client(&h, SECRET);

    let path = dir.path().join("etc/ref/peers.conf");
    c.put_file(
        &path.display().to_string(),
        0o600,
        b"name = node0\n".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"name = node0\n");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Idempotent: the same call again leaves the same file.
    c.put_file(
        &path.display().to_string(),
        0o600,
        b"name = node0\n".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"name = node0\n");
    let err = c.put_file("relative/x", 0, vec![]).await.unwrap_err();
    assert!(err.to_string().contains("absolute"), "{err}");

    // Collected output, exit code, the node's environment, the default working directory.
    let out = c
        .run(
            &argv(&[
                "/bin/sh",
                "-c",
                "echo out $NODE_NAME; pwd; echo err >&2; exit 3",
            ]),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(out.ended, Ended::Code(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("out node0"), "{stdout}");
    assert!(
        stdout.contains(&dir.path().display().to_string()),
        "{stdout}"
    );
    assert_eq!(out.stderr, b"err\n");

    // Timeout kills it.
    let t0 = std::time::Instant::now();
    let out = c
        .run(
            &argv(&["/bin/sh", "-c", "sleep 30"]),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    assert_eq!(out.ended, Ended::TimedOut);
    assert!(t0.elapsed() < Duration::from_secs(10));

    // A missing binary is reported, not an RPC error.
    let out = c
        .run(&argv(&["/no/such/binary"]), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        matches!(out.ended, Ended::NotStarted(ref m) if m.contains("/no/such/binary")),
        "{:?}",
        out.ended
    );
    h.shutdown().await;
}

#[tokio::test]
async fn run_streams_output_then_the_exit() {
    let dir = tempfile::tempdir().unwrap();
    let h = agent(dir.path()).await;
    let mut raw = raw_client(&h).await;
    let mut req = tonic::Request::new(pb::RunRequest {
        argv: argv(&["/bin/sh", "-c", "echo one; echo two >&2; exit 7"]),
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {SECRET}").parse().unwrap());
    let mut stream = raw.run(req).await.unwrap().into_inner();
    let (mut out, mut err, mut exit) = (Vec::new(), Vec::new(), None);
    while let Some(item) = stream.message().await.unwrap() {
        match item.item.unwrap() {
            pb::run_output::Item::Chunk(c) => match c.stream() {
                pb::OutputStream::Stderr => err.extend(c.data),
                _ => out.extend(c.data),
            },
            pb::run_output::Item::Exit(e) => exit = Some(e),
        }
    }
    assert_eq!(out, b"one\n");
    assert_eq!(err, b"two\n");
    assert_eq!(exit.unwrap().how, Some(pb::exit::How::Code(7)));
    h.shutdown().await;
}

#[tokio::test]
async fn services_start_idempotently_stop_and_die_with_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let h = agent(dir.path()).await;
    let c = client(&h, SECRET);
    let pidfile = dir.path().join("pid");
    let script = format!(
        "echo started; echo $$ > {}; exec sleep 600",
        pidfile.display()
    );
    let cmd = argv(&["/bin/sh", "-c", &script]);

    assert_eq!(
        c.start_service("web", &cmd).await.unwrap(),
        ServiceState::Running
    );
    // Same spec: left running (same pid), not restarted.
    let pid = wait_for_pid(&pidfile).await;
    assert_eq!(
        c.start_service("web", &cmd).await.unwrap(),
        ServiceState::Running
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(wait_for_pid(&pidfile).await, pid);
    assert!(alive(pid));
    assert_eq!(
        c.inspect_service("nope").await.unwrap(),
        ServiceState::Unknown
    );

    // Stop: SIGTERM ends it; the status says how, with its output.
    let mut raw = raw_client(&h).await;
    let mut req = tonic::Request::new(pb::StopServiceRequest {
        name: "web".into(),
        grace_ms: 2000,
    });
    req.metadata_mut()
        .insert("x-paas-secret", SECRET.parse().unwrap());
    let st = raw.stop_service(req).await.unwrap().into_inner();
    assert_eq!(st.state(), pb::ServiceState::Exited);
    assert_eq!(
        st.exit.unwrap().how,
        Some(pb::exit::How::Signal(libc::SIGTERM))
    );
    assert!(String::from_utf8_lossy(&st.output_tail).contains("started"));
    assert!(!alive(pid));

    // A service that fails is reported as exited with its status and output.
    c.start_service(
        "bad",
        &argv(&["/bin/sh", "-c", "echo broken config >&2; exit 4"]),
    )
    .await
    .unwrap();
    let mut state = ServiceState::Running;
    for _ in 0..100 {
        state = c.inspect_service("bad").await.unwrap();
        if state != ServiceState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        state,
        ServiceState::Exited {
            ended: Ended::Code(4),
            output_tail: "broken config".into()
        }
    );

    // Shutting the agent down (the task is killed) kills what still runs.
    std::fs::remove_file(&pidfile).unwrap();
    c.start_service("web", &cmd).await.unwrap();
    let pid = wait_for_pid(&pidfile).await;
    assert!(alive(pid));
    h.shutdown().await;
    assert!(!alive(pid), "service outlived the agent");
}

async fn wait_for_pid(path: &std::path::Path) -> i32 {
    for _ in 0..100 {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no pid in {}", path.display());
}

/// Whether `pid` runs (a zombie counts as gone: it was reaped or is about to be).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
