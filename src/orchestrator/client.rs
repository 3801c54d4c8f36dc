//! The orchestrator's NodeAgent client: one lazily connected gRPC channel per node, over TLS
//! pinned to the certificate the node's executor reported (its SHA-256, from TASK_RUNNING's
//! `data`; no CA, no names), every call carrying the cluster secret. Converts the wire types
//! into plain results at this edge.

use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use crate::proto::paas::nodeagent::v1 as pb;
use pb::node_agent_client::NodeAgentClient;

/// How long a TCP connect to a node agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Slack on top of a command's own timeout before the call itself is abandoned.
const CALL_SLACK: Duration = Duration::from_secs(10);
/// Limit of unary calls other than commands.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest message either way (a rendered file); the agent accepts as much.
const MAX_MESSAGE: usize = 24 << 20;
/// The server name sent in the TLS handshake; the executor's certificate carries it, though
/// only the pin decides (`executor::nodeagent::CERT_NAME`, not imported across modules).
const AGENT_CERT_NAME: &str = "paas-nodeagent";

/// Why a NodeAgent call failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentCallError {
    #[error("invalid node agent address {addr}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the cluster secret cannot be sent as metadata")]
    Secret,
    /// The node's executor has not reported its certificate yet (no TASK_RUNNING with a pin):
    /// without it there is nothing to trust, so no call is made.
    #[error("node agent at {addr}: no certificate pin on record yet")]
    NoPin { addr: String },
    #[error("node agent at {addr}: certificate pin {pin:?} is not a lowercase hex SHA-256")]
    BadPin { addr: String, pin: String },
    #[error("node agent at {addr}: TLS setup failed")]
    Tls {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The call reached no agent or was refused; `retryable` says whether trying again may help
    /// (the agent is starting, the network blinked).
    #[error("node agent at {addr}: {code:?}: {message}")]
    Call {
        addr: String,
        code: Code,
        message: String,
    },
}

impl AgentCallError {
    /// Whether the failure is of the kind that goes away (agent not yet listening, timeout).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AgentCallError::Call {
                code: Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled,
                ..
            }
        )
    }
}

/// Adds the secret to every call.
#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// How a command ended, as the orchestrator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Code(i32),
    Signal(i32),
    /// Could not be started (no such binary…).
    NotStarted(String),
    TimedOut,
}

impl Ended {
    pub fn success(&self) -> bool {
        *self == Ended::Code(0)
    }

    fn from_pb(e: Option<pb::Exit>) -> Self {
        let Some(e) = e else {
            return Ended::NotStarted("no exit status reported".into());
        };
        if e.timed_out {
            return Ended::TimedOut;
        }
        match e.how {
            Some(pb::exit::How::Code(c)) => Ended::Code(c),
            Some(pb::exit::How::Signal(s)) => Ended::Signal(s),
            Some(pb::exit::How::SpawnError(why)) => Ended::NotStarted(why),
            None => Ended::NotStarted("no exit status reported".into()),
        }
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Code(c) => write!(f, "exited with status {c}"),
            Ended::Signal(s) => write!(f, "killed by signal {s}"),
            Ended::NotStarted(why) => write!(f, "could not start: {why}"),
            Ended::TimedOut => f.write_str("timed out"),
        }
    }
}

/// A finished command.
#[derive(Debug, Clone)]
pub struct Output {
    pub ended: Ended,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// The last `lines` lines of stdout then stderr, for failure messages.
    pub fn tail(&self, lines: usize) -> String {
        let mut all = String::from_utf8_lossy(&self.stdout).into_owned();
        if !self.stderr.is_empty() {
            if !all.is_empty() && !all.ends_with('\n') {
                all.push('\n');
            }
            all.push_str(&String::from_utf8_lossy(&self.stderr));
        }
        tail_lines(&all, lines)
    }
}

/// The last `n` non-empty lines of `text`, joined with ` | ` so they fit a one-line reason.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    let mut out = lines[start..].join(" | ");
    if out.len() > 1000 {
        let mut cut = out.len() - 1000;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out = format!("…{}", &out[cut..]);
    }
    out
}

/// What a supervised service does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceState {
    Unknown,
    Running,
    Exited { ended: Ended, output_tail: String },
}

/// A client of one node's agent.
#[derive(Clone)]
pub struct NodeClient {
    addr: String,
    inner: NodeAgentClient<InterceptedService<Channel, Bearer>>,
}

/// A `Run` request for `argv` within `timeout`; the gRPC deadline leaves the agent time to
/// report a timed-out command.
fn run_request(argv: &[String], timeout: Duration) -> Request<pb::RunRequest> {
    let ms = u32::try_from(timeout.as_millis())
        .unwrap_or(u32::MAX)
        .max(1);
    let mut req = Request::new(pb::RunRequest {
        argv: argv.to_vec(),
        timeout_ms: ms,
        ..Default::default()
    });
    req.set_timeout(timeout + CALL_SLACK);
    req
}

impl NodeClient {
    /// A client for the agent at `host:port`, whose certificate must have the SHA-256
    /// `cert_sha256` (lowercase hex, as the executor reports it). Connects on first use.
    ///
    /// # Errors
    /// [`AgentCallError::NoPin`] without a pin (the node has not reported running yet),
    /// [`AgentCallError::BadPin`] for a malformed one, [`AgentCallError::Address`] for an
    /// unusable address, [`AgentCallError::Secret`] for a secret that is not valid header text.
    pub fn new(
        host: &str,
        port: u16,
        secret: &str,
        cert_sha256: Option<&str>,
    ) -> Result<Self, AgentCallError> {
        let (addr, endpoint) = pinned_endpoint(host, port, cert_sha256)?;
        let bearer: MetadataValue<Ascii> = format!("Bearer {secret}")
            .parse()
            .map_err(|_| AgentCallError::Secret)?;
        let inner = NodeAgentClient::with_interceptor(endpoint.connect_lazy(), Bearer(bearer))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(Self { addr, inner })
    }

    /// `host:port`, for messages.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn err(&self, s: Status) -> AgentCallError {
        AgentCallError::Call {
            addr: self.addr.clone(),
            code: s.code(),
            message: s.message().to_owned(),
        }
    }

    /// # Errors
    /// [`AgentCallError::Call`] when the agent is unreachable or refuses.
    pub async fn health(&self) -> Result<pb::HealthResponse, AgentCallError> {
        let mut req = Request::new(pb::HealthRequest {});
        req.set_timeout(CALL_TIMEOUT);
        let mut c = self.inner.clone();
        c.health(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.err(s))
    }

    /// Writes a file on the node.
    ///
    /// # Errors
    /// [`AgentCallError::Call`] when the agent is unreachable or cannot write it.
    pub async fn put_file(
        &self,
        path: &str,
        mode: u32,
        content: Vec<u8>,
    ) -> Result<(), AgentCallError> {
        let mut req = Request::new(pb::PutFileRequest {
            path: path.to_owned(),
            mode,
            content,
        });
        req.set_timeout(CALL_TIMEOUT);
        let mut c = self.inner.clone();
        c.put_file(req).await.map_err(|s| self.err(s))?;
        Ok(())
    }

    /// Runs `argv` on the node to completion, within `timeout`.
    ///
    /// # Errors
    /// [`AgentCallError::Call`] when the agent is unreachable; a command that fails is an
    /// `Ok` whose [`Output::ended`] says how.
    pub async fn run(&self, argv: &[String], timeout: Duration) -> Result<Output, AgentCallError> {
        let req = run_request(argv, timeout);
        let mut c = self.inner.clone();
        let r = c
            .run_collected(req)
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        Ok(Output {
            ended: Ended::from_pb(r.exit),
            stdout: r.stdout,
            stderr: r.stderr,
        })
    }

    /// Runs `argv` on the node within `timeout`, handing each piece of output to `out` as
    /// it comes (`true`: stdout, `false`: stderr). When `out` is closed (nobody reads any
    /// more) the call is dropped, which makes the agent kill the command.
    ///
    /// # Errors
    /// [`AgentCallError::Call`] when the agent is unreachable or the call breaks; a command
    /// that fails is an `Ok` saying how it ended.
    pub async fn run_streaming(
        &self,
        argv: &[String],
        timeout: Duration,
        out: &tokio::sync::mpsc::Sender<(bool, Vec<u8>)>,
    ) -> Result<Ended, AgentCallError> {
        let req = run_request(argv, timeout);
        let mut c = self.inner.clone();
        let mut stream = c.run(req).await.map_err(|s| self.err(s))?.into_inner();
        while let Some(item) = stream.message().await.map_err(|s| self.err(s))? {
            match item.item {
                Some(pb::run_output::Item::Chunk(chunk)) => {
                    let stdout = chunk.stream() != pb::OutputStream::Stderr;
                    if out.send((stdout, chunk.data)).await.is_err() {
                        return Ok(Ended::NotStarted("the caller went away".into()));
                    }
                }
                Some(pb::run_output::Item::Exit(exit)) => return Ok(Ended::from_pb(Some(exit))),
                None => {}
            }
        }
        Ok(Ended::from_pb(None))
    }

    /// Starts (or keeps, when it already runs the same argv) the supervised service `name`.
    ///
    /// # Errors
    /// [`AgentCallError::Call`] when the agent is unreachable or cannot start it (the message
    /// says why, e.g. no such binary).
    pub async fn start_service(
        &self,
        name: &str,
        argv: &[String],
    ) -> Result<ServiceState, AgentCallError> {
        let mut req = Request::new(pb::StartServiceRequest {
            name: name.to_owned(),
            argv: argv.to_vec(),
            ..Default::default()
        });
        req.set_timeout(CALL_TIMEOUT);
        let mut c = self.inner.clone();
        let st = c
            .start_service(req)
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        Ok(service_state(st))
    }

    /// Stops the supervised service `name` (SIGTERM to its process group, SIGKILL after
    /// `grace`) and returns once it has exited; a service that does not run is left as it is.
    ///
    /// # Errors
    /// [`AgentCallError::Call`] when the agent is unreachable.
    pub async fn stop_service(
        &self,
        name: &str,
        grace: Duration,
    ) -> Result<ServiceState, AgentCallError> {
        let mut req = Request::new(pb::StopServiceRequest {
            name: name.to_owned(),
            grace_ms: u32::try_from(grace.as_millis()).unwrap_or(u32::MAX).max(1),
        });
        req.set_timeout(CALL_TIMEOUT + grace);
        let mut c = self.inner.clone();
        let st = c
            .stop_service(req)
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        Ok(service_state(st))
    }

    /// # Errors
    /// [`AgentCallError::Call`] when the agent is unreachable.
    pub async fn inspect_service(&self, name: &str) -> Result<ServiceState, AgentCallError> {
        let mut req = Request::new(pb::InspectServiceRequest {
            name: name.to_owned(),
        });
        req.set_timeout(CALL_TIMEOUT);
        let mut c = self.inner.clone();
        let st = c
            .inspect_service(req)
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        Ok(service_state(st))
    }
}

fn service_state(st: pb::ServiceStatus) -> ServiceState {
    match st.state() {
        pb::ServiceState::Running => ServiceState::Running,
        pb::ServiceState::Exited => ServiceState::Exited {
            ended: Ended::from_pb(st.exit),
            output_tail: tail_lines(&String::from_utf8_lossy(&st.output_tail), 5),
        },
        pb::ServiceState::Unknown | pb::ServiceState::Unspecified => ServiceState::Unknown,
    }
}

/// The gRPC endpoint of the agent at `host:port` over TLS that trusts only the certificate
/// with SHA-256 `cert_sha256`, and its `host:port` for messages. It carries no secret: callers
/// add it (tests use it to make raw calls).
///
/// # Errors
/// As [`NodeClient::new`], but never [`AgentCallError::Secret`].
pub fn pinned_endpoint(
    host: &str,
    port: u16,
    cert_sha256: Option<&str>,
) -> Result<(String, Endpoint), AgentCallError> {
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let Some(pin) = cert_sha256 else {
        return Err(AgentCallError::NoPin { addr });
    };
    let verifier = PinnedCert::new(pin).ok_or_else(|| AgentCallError::BadPin {
        addr: addr.clone(),
        pin: pin.to_owned(),
    })?;
    let tls = ClientTlsConfig::new().domain_name(AGENT_CERT_NAME);
    let endpoint = Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|source| AgentCallError::Address {
            addr: addr.clone(),
            source,
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .tls_config_with_verifier(tls, Arc::new(verifier))
        .map_err(|source| AgentCallError::Tls {
            addr: addr.clone(),
            source,
        })?;
    Ok((addr, endpoint))
}

/// Trusts exactly one certificate: the one whose SHA-256 the node's executor reported. No CA,
/// no name or date checks (the certificate is made fresh by the executor and pinned for the
/// life of its task); the handshake signatures are still verified with the certificate's key,
/// so only the holder of the key the executor made can answer.
#[derive(Debug)]
struct PinnedCert {
    sha256: [u8; 32],
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl PinnedCert {
    /// `None` unless `pin` is 64 lowercase hex digits.
    fn new(pin: &str) -> Option<Self> {
        if pin.len() != 64 || !pin.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut sha256 = [0u8; 32];
        for (i, byte) in sha256.iter_mut().enumerate() {
            *byte = u8::from_str_radix(pin.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self {
            sha256,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }
}

impl rustls::client::danger::ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let got = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if got.as_ref() == self.sha256 {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_are_short_and_one_line() {
        assert_eq!(tail_lines("a\nb\n\nc\n", 2), "b | c");
        assert_eq!(tail_lines("", 3), "");
        let long = "x".repeat(3000);
        assert!(tail_lines(&long, 1).chars().count() <= 1001);
        let out = Output {
            ended: Ended::Code(1),
            stdout: b"out1\nout2".to_vec(),
            stderr: b"err1\n".to_vec(),
        };
        assert_eq!(out.tail(2), "out2 | err1");
    }
}
