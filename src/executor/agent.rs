//! HTTP client for the agent's v1 executor API: the long-lived SUBSCRIBE stream and one-shot
//! calls, protobuf on the wire (`application/x-protobuf` exactly, or the agent answers 415/406).
//!
//! Every request gets its own HTTP/1.1 connection. The API demands that calls do not share the
//! subscription's connection, and a fresh connection per (rare) call keeps that obvious. Owns no
//! executor state.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::net::TcpStream;

use super::config::AgentEndpoint;
use crate::proto::mesos::v1::executor::{Call, Event};
use crate::recordio::{Decoder, RecordIoError};

const PROTOBUF: &str = "application/x-protobuf";
/// Loopback or LAN: an agent that takes longer than this to accept is as good as gone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one call, and on waiting for the SUBSCRIBE response headers.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// An error body is only read for the log line.
const MAX_ERROR_BODY: usize = 4096;

/// Why talking to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to the agent at {addr}")]
    Connect {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out talking to the agent")]
    Timeout,
    #[error("HTTP error talking to the agent")]
    Http(#[from] hyper::Error),
    #[error("bad request")]
    Request(#[from] http::Error),
    #[error("agent answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("event stream framing")]
    RecordIo(#[from] RecordIoError),
    #[error("event stream ended in the middle of a record")]
    Truncated,
    #[error("undecodable event")]
    Decode(#[from] prost::DecodeError),
}

/// Talks to one agent.
#[derive(Debug, Clone)]
pub struct MesosAgentClient {
    endpoint: AgentEndpoint,
    auth_token: Option<String>,
}

type Conn = Connection<TokioIo<TcpStream>, Full<Bytes>>;

impl MesosAgentClient {
    /// A client for `endpoint`, sending `auth_token` as a bearer token when set.
    pub fn new(endpoint: AgentEndpoint, auth_token: Option<String>) -> Self {
        Self {
            endpoint,
            auth_token,
        }
    }

    /// The agent's executor API URL, for logs.
    pub fn url(&self) -> String {
        self.endpoint.url()
    }

    /// Sends a SUBSCRIBE call and returns its event stream once the agent answered 200.
    ///
    /// # Errors
    ///
    /// [`AgentError`] when the agent is unreachable, slow, or answers anything but 200.
    pub async fn subscribe(&self, call: &Call) -> Result<EventStream, AgentError> {
        let (mut sender, conn) = self.connect().await?;
        let mut conn = Box::pin(conn);
        let request = self.request(call)?;
        let response = tokio::time::timeout(CALL_TIMEOUT, async {
            // The connection future does the actual I/O, so it must be polled alongside.
            tokio::select! {
                response = sender.send_request(request) => response.map_err(AgentError::from),
                closed = &mut conn => match closed {
                    Err(e) => Err(AgentError::Http(e)),
                    Ok(()) => Err(AgentError::Truncated),
                },
            }
        })
        .await
        .map_err(|_| AgentError::Timeout)??;
        let status = response.status();
        let body = response.into_body();
        if status != StatusCode::OK {
            let body = read_error_body(body, conn).await;
            return Err(AgentError::Status { status, body });
        }
        Ok(EventStream {
            conn,
            conn_done: false,
            body,
            body_done: false,
            decoder: Decoder::default(),
        })
    }

    /// Sends a non-SUBSCRIBE call (UPDATE, MESSAGE) and waits for the agent's 202.
    ///
    /// # Errors
    ///
    /// [`AgentError`] when the agent is unreachable, slow, or answers anything but 2xx.
    pub async fn call(&self, call: &Call) -> Result<(), AgentError> {
        let request = self.request(call)?;
        tokio::time::timeout(CALL_TIMEOUT, async {
            let (mut sender, conn) = self.connect().await?;
            let exchange = async move {
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = collect_limited(response.into_body()).await;
                Ok::<_, AgentError>((status, body))
            };
            let (exchange, _conn) = tokio::join!(exchange, conn);
            let (status, body) = exchange?;
            if status.is_success() {
                Ok(())
            } else {
                Err(AgentError::Status { status, body })
            }
        })
        .await
        .map_err(|_| AgentError::Timeout)?
    }

    async fn connect(&self) -> Result<(http1::SendRequest<Full<Bytes>>, Conn), AgentError> {
        let addr = self.endpoint.addr;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| AgentError::Timeout)?
            .map_err(|source| AgentError::Connect { addr, source })?;
        // Status updates are small and latency matters more than batching.
        let _ = stream.set_nodelay(true);
        Ok(http1::handshake(TokioIo::new(stream)).await?)
    }

    fn request(&self, call: &Call) -> Result<Request<Full<Bytes>>, AgentError> {
        let mut builder = Request::post(self.endpoint.path.as_str())
            .header(header::HOST, self.endpoint.addr.to_string())
            .header(header::CONTENT_TYPE, PROTOBUF)
            .header(header::ACCEPT, PROTOBUF);
        if let Some(token) = &self.auth_token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        Ok(builder.body(Full::new(Bytes::from(call.encode_to_vec())))?)
    }
}

async fn read_error_body(body: Incoming, mut conn: Pin<Box<Conn>>) -> String {
    let read = async {
        tokio::select! {
            text = collect_limited(body) => text,
            _ = &mut conn => String::new(),
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, read)
        .await
        .unwrap_or_default()
}

async fn collect_limited(mut body: Incoming) -> String {
    let mut out = Vec::new();
    while out.len() < MAX_ERROR_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    out.truncate(MAX_ERROR_BODY);
    String::from_utf8_lossy(&out).trim().to_owned()
}

/// The agent's events on one SUBSCRIBE connection. Dropping it closes the connection.
pub struct EventStream {
    conn: Pin<Box<Conn>>,
    conn_done: bool,
    body: Incoming,
    body_done: bool,
    decoder: Decoder,
}

impl EventStream {
    /// The next event; `None` when the agent closed the stream cleanly. Cancel-safe: all
    /// partial state lives in `self`, so it can sit in a `select!` branch.
    ///
    /// # Errors
    ///
    /// [`AgentError`] on a connection error, bad framing or an undecodable record. The stream
    /// is unusable afterwards.
    pub async fn next(&mut self) -> Option<Result<Event, AgentError>> {
        loop {
            match self.decoder.next_record() {
                Ok(Some(record)) => return Some(Event::decode(record).map_err(AgentError::from)),
                Ok(None) => {}
                Err(e) => return Some(Err(e.into())),
            }
            if self.body_done {
                return (self.decoder.buffered() > 0).then_some(Err(AgentError::Truncated));
            }
            tokio::select! {
                frame = self.body.frame() => match frame {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            self.decoder.push(&data);
                        }
                    }
                    Some(Err(e)) => return Some(Err(e.into())),
                    None => self.body_done = true,
                },
                closed = &mut self.conn, if !self.conn_done => {
                    self.conn_done = true;
                    if let Err(e) = closed {
                        return Some(Err(e.into()));
                    }
                }
            }
        }
    }
}
