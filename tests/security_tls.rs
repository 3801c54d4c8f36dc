//! The NodeAgent's transport security over real gRPC on loopback (issue 11, item 5): TLS with
//! a certificate pinned by its SHA-256, no call without a pin, no plaintext, and `PutFile`
//! refusing symlinked parent directories.

use std::collections::BTreeMap;

use paas::executor::exits::ExitBook;
use paas::executor::nodeagent::{AgentSettings, NodeAgentHandle};
use paas::orchestrator::client::{AgentCallError, NodeClient};
use paas::proto::paas::nodeagent::v1 as pb;
use pb::node_agent_client::NodeAgentClient;
use tonic::Code;

const SECRET: &str = "s3cret-for-tls-tests";

async fn agent(dir: &std::path::Path) -> NodeAgentHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = AgentSettings {
        cluster_id: "c1".into(),
        node: "node0".into(),
        secret: SECRET.into(),
        env: BTreeMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())]),
        working_dir: Some(dir.to_owned()),
    };
    NodeAgentHandle::start(listener, settings, ExitBook::new()).unwrap()
}

fn client(h: &NodeAgentHandle, pin: Option<&str>) -> Result<NodeClient, AgentCallError> {
    NodeClient::new("127.0.0.1", h.local_addr().port(), SECRET, pin)
}

#[tokio::test]
async fn every_start_has_its_own_certificate_and_only_its_pin_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path()).await;
    let b = agent(dir.path()).await;
    assert_eq!(a.cert_sha256().len(), 64);
    assert_ne!(a.cert_sha256(), b.cert_sha256(), "a fresh key per start");

    client(&a, Some(a.cert_sha256()))
        .unwrap()
        .health()
        .await
        .expect("the pinned certificate is trusted");

    // B's pin against A: the handshake fails before the secret is ever sent.
    let err = client(&a, Some(b.cert_sha256()))
        .unwrap()
        .health()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AgentCallError::Call { code, .. } if *code != Code::Unauthenticated),
        "{err}"
    );
    // A pin that does not match fails every call, PutFile included: nothing is written.
    let target = dir.path().join("written-over-a-bad-pin");
    let err = client(&a, Some(b.cert_sha256()))
        .unwrap()
        .put_file(&target.display().to_string(), 0o644, b"x".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, AgentCallError::Call { .. }), "{err}");
    assert!(!target.exists());

    // No pin on record (the node has not reported TASK_RUNNING): no client, so no call.
    let err = client(&a, None).err().expect("no pin, no client");
    assert!(matches!(err, AgentCallError::NoPin { .. }), "{err}");
    for bad in ["", "abc", &"G".repeat(64), &a.cert_sha256().to_uppercase()] {
        let err = client(&a, Some(bad)).err().expect("a malformed pin");
        assert!(matches!(err, AgentCallError::BadPin { .. }), "{bad}: {err}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn plaintext_grpc_gets_nothing_even_with_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let h = agent(dir.path()).await;
    let target = dir.path().join("written-in-plaintext");
    // The old way in: h2c on the bare TCP port. The server only speaks TLS.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", h.local_addr()))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut raw = NodeAgentClient::new(channel);
        let mut req = tonic::Request::new(pb::PutFileRequest {
            path: target.display().to_string(),
            mode: 0,
            content: b"x".to_vec(),
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {SECRET}").parse().unwrap());
        let err = raw.put_file(req).await.unwrap_err();
        assert_ne!(err.code(), Code::Ok);
    }
    assert!(!target.exists());
    h.shutdown().await;
}

#[tokio::test]
async fn put_file_refuses_a_symlinked_parent_directory() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let h = agent(dir.path()).await;
    let c = client(&h, Some(h.cert_sha256())).unwrap();
    // A job on the node swaps a config directory for a link to somewhere else.
    let conf = dir.path().join("etc");
    std::os::unix::fs::symlink(outside.path(), &conf).unwrap();
    let err = c
        .put_file(
            &conf.join("slurm.conf").display().to_string(),
            0o644,
            b"SlurmUser=evil\n".to_vec(),
        )
        .await
        .unwrap_err();
    match &err {
        AgentCallError::Call { code, message, .. } => {
            assert_eq!(*code, Code::FailedPrecondition, "{err}");
            assert!(message.contains("symlink"), "{message}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        std::fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing was written through the link"
    );
    // Real directories still work, created as needed.
    let ok = dir.path().join("real/sub/slurm.conf");
    c.put_file(&ok.display().to_string(), 0o644, b"ok\n".to_vec())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&ok).unwrap(), b"ok\n");
    h.shutdown().await;
}
