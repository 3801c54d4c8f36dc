//! HTTP/1.1 client side of the Mesos v1 scheduler API (mesos-v1.md §1, §2.3).
//!
//! Two kinds of exchange, on purpose on different connections, as Mesos requires:
//! - [`Transport::subscribe`] opens a **dedicated** connection (hyper's low-level
//!   `client::conn::http1`), follows the master's 307 to the leader, and returns a
//!   [`Subscription`]: the `Mesos-Stream-Id`, the leader's [`Endpoint`] and a [`RecordStream`]
//!   of RecordIO records read frame by frame from the long-lived chunked body.
//! - [`Transport::call`] sends every other call over a **pooled** client
//!   (`hyper_util::client::legacy`) with the stream id header, and maps the status code.
//!   The ACKs are the exception: [`super::acks`] pipelines them on a connection of its own,
//!   with the request head of `Transport::pipelined_head`, and falls back to `call`.
//!
//! With [`Credentials`], every request (SUBSCRIBE and every call) carries HTTP basic auth, as
//! a master started with `--authenticate_http_frameworks` requires; a 401 becomes
//! [`TransportError::Unauthorized`].
//!
//! This module moves opaque bytes. It does not encode or decode `Call`/`Event` (the caller
//! does, with protobuf or JSON, and says which through [`ContentType`]), does not retry or
//! back off, and does not watch heartbeats: those are decisions of the event loop, which
//! gets [`TransportError::is_retryable`] to help it.

use std::fmt;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::Stream;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, LOCATION};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_util::task::AbortOnDropHandle;

use crate::recordio::{DEFAULT_MAX_RECORD_SIZE, Decoder, RecordIoError};

/// The header carrying the subscription's stream id; required on every call but SUBSCRIBE.
pub const STREAM_ID_HEADER: HeaderName = HeaderName::from_static("mesos-stream-id");

/// The scheduler API path on a master.
pub const SCHEDULER_PATH: &str = "/api/v1/scheduler";

/// The master's default port, used when an address names none.
pub const DEFAULT_MASTER_PORT: u16 = 5050;

/// Error bodies are for humans and logs; more than this is not worth buffering.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The wire format of calls and events. Mesos matches the header value **exactly**: no
/// parameters such as `; charset=utf-8`, or the answer is 415.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// `application/x-protobuf`: serialized `Call`s and `Event`s.
    Protobuf,
    /// `application/json`: Mesos' own JSON mapping (mesos-v1.md §4).
    Json,
}

impl ContentType {
    /// The exact header value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }

    fn header(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a master's scheduler API lives: `http://host:port/path`.
///
/// Only plain `http` exists: Mesos' 307 `Location` is protocol-relative and the docs say to
/// resend with `http:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    authority: Authority,
    path: PathAndQuery,
}

impl Endpoint {
    /// Parses `host:port`, `http://host[:port]` or `http://host[:port]/path`.
    ///
    /// A missing port means [`DEFAULT_MASTER_PORT`]; a missing or `/` path means
    /// [`SCHEDULER_PATH`]. Any other path is kept (e.g. `/master/api/v1/scheduler`).
    ///
    /// # Errors
    /// [`TransportError::InvalidEndpoint`] for anything that is not an `http` URL with a host.
    pub fn parse(input: &str) -> Result<Self, TransportError> {
        let bad = |reason: &str| TransportError::InvalidEndpoint {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let with_scheme = if input.contains("://") {
            input.to_owned()
        } else {
            format!("http://{input}")
        };
        let uri: Uri = with_scheme.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// is supported"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.host().is_empty() || authority.as_str().contains('@') {
            return Err(bad("no host, or user info in the address"));
        }
        let authority = if authority.port_u16().is_some() {
            authority.clone()
        } else if authority.as_str() != authority.host() {
            return Err(bad("the port is not a number"));
        } else {
            format!("{}:{DEFAULT_MASTER_PORT}", authority.host())
                .parse()
                .map_err(|_| bad("bad host"))?
        };
        let path = match uri.path_and_query() {
            Some(p) if p.as_str() != "/" && !p.as_str().is_empty() => p.clone(),
            _ => PathAndQuery::from_static(SCHEDULER_PATH),
        };
        Ok(Self { authority, path })
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        self.authority.as_str()
    }

    /// The request path, e.g. `/api/v1/scheduler`.
    pub fn path(&self) -> &str {
        self.path.as_str()
    }

    /// The absolute URI, `http://host:port/path`.
    pub fn uri(&self) -> Uri {
        Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(self.path.clone())
            .build()
            // invariant: a scheme, an already-parsed authority and path always form a URI.
            .unwrap_or_else(|_| Uri::from_static("/"))
    }

    /// The endpoint a 307 `Location` points to. Mesos sends `//host:port/path`; absolute
    /// `http://` URLs and absolute paths (same host) are accepted too.
    fn follow(&self, location: &str) -> Option<Self> {
        if let Some(rest) = location.strip_prefix("//") {
            Self::parse(&format!("http://{rest}")).ok()
        } else if location.starts_with("http://") {
            Self::parse(location).ok()
        } else if location.starts_with('/') {
            Some(Self {
                authority: self.authority.clone(),
                path: location.parse().ok()?,
            })
        } else {
            None
        }
    }
}

impl FromStr for Endpoint {
    type Err = TransportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// A subscription's `Mesos-Stream-Id`: valid for the life of its connection only, and sent
/// on every other call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamId(HeaderValue);

impl StreamId {
    /// Wraps a stream id received some other way (tests, a stored value).
    ///
    /// # Errors
    /// [`TransportError::InvalidStreamId`] if it is empty or not a valid header value.
    pub fn parse(s: &str) -> Result<Self, TransportError> {
        match HeaderValue::from_str(s) {
            Ok(v) if !s.is_empty() => Ok(Self(v)),
            _ => Err(TransportError::InvalidStreamId {
                value: s.to_owned(),
            }),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // invariant: built from a `&str` or checked with `to_str` in `from_response`.
        self.0.to_str().unwrap_or_default()
    }

    fn from_response(v: Option<&HeaderValue>) -> Option<Self> {
        let v = v?;
        (!v.is_empty() && v.to_str().is_ok()).then(|| Self(v.clone()))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The framework's principal and secret for the master's HTTP framework authentication
/// (`--authenticate_http_frameworks`, basic authenticator). `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    principal: String,
    /// The ready `Authorization: Basic …` value, marked sensitive (hyper keeps it out of
    /// HPACK tables; we keep it out of logs).
    header: HeaderValue,
}

impl Credentials {
    /// # Errors
    /// [`TransportError::InvalidCredentials`] for an empty principal or secret, a principal
    /// with `:` (basic auth could not carry it), or text that is not a valid header value.
    pub fn new(principal: &str, secret: &str) -> Result<Self, TransportError> {
        let bad = |reason: &str| TransportError::InvalidCredentials {
            principal: principal.to_owned(),
            reason: reason.to_owned(),
        };
        if principal.is_empty()
            || principal.contains(':')
            || principal.chars().any(char::is_control)
        {
            return Err(bad(
                "the principal must be non-empty, without ':' or control characters",
            ));
        }
        if secret.is_empty() {
            return Err(bad("the secret is empty"));
        }
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{principal}:{secret}"));
        let mut header = HeaderValue::from_str(&format!("Basic {token}"))
            .map_err(|_| bad("not valid header text"))?;
        header.set_sensitive(true);
        Ok(Self {
            principal: principal.to_owned(),
            header,
        })
    }

    /// The principal, also sent as `FrameworkInfo.principal`.
    pub fn principal(&self) -> &str {
        &self.principal
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("principal", &self.principal)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Knobs of the transport. [`Default`] follows the Mesos docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Bound on one [`Transport::call`], and on getting the SUBSCRIBE response headers
    /// (the stream itself is unbounded; its liveness is the event loop's heartbeat watch).
    /// Mesos suggests about 75 s.
    pub call_timeout: Duration,
    /// Bound on opening a TCP connection.
    pub connect_timeout: Duration,
    /// 307 hops followed by one SUBSCRIBE before giving up (a redirect loop during an
    /// election must not spin forever).
    pub max_redirects: usize,
    /// Largest event accepted, see [`DEFAULT_MAX_RECORD_SIZE`].
    pub max_record_size: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(75),
            connect_timeout: Duration::from_secs(10),
            max_redirects: 5,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
        }
    }
}

/// Why an exchange with the master failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid master address {input:?}: {reason}")]
    InvalidEndpoint { input: String, reason: String },
    #[error("invalid Mesos-Stream-Id {value:?}")]
    InvalidStreamId { value: String },
    #[error("invalid framework credentials for principal {principal:?}: {reason}")]
    InvalidCredentials { principal: String, reason: String },
    /// 401: the master authenticates frameworks and refused ours (no credentials, or wrong
    /// ones). Retrying cannot help until the principal or secret changes.
    #[error(
        "{endpoint} answered 401 unauthorized: the master refused the framework's credentials ({hint}): {body}"
    )]
    Unauthorized {
        endpoint: String,
        hint: &'static str,
        body: String,
    },
    #[error("cannot connect to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed on the SUBSCRIBE connection (reset, malformed response…).
    #[error("HTTP exchange with {endpoint} failed")]
    Http {
        endpoint: String,
        #[source]
        source: hyper::Error,
    },
    /// The HTTP exchange failed on the pooled call connection, connecting included.
    #[error("HTTP call to {endpoint} failed")]
    Client {
        endpoint: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("no answer from {endpoint} within {after:?}")]
    Timeout { endpoint: String, after: Duration },
    #[error("{endpoint} redirected to unusable location {location:?}")]
    BadRedirect { endpoint: String, location: String },
    #[error("gave up after {hops} redirects, the last to {endpoint}")]
    TooManyRedirects { hops: usize, endpoint: String },
    /// 503: no leader elected yet, or the leader is still recovering. Retry later.
    #[error("{endpoint} is unavailable: {body}")]
    Unavailable { endpoint: String, body: String },
    /// Any other unexpected status, with the body Mesos explains it in.
    #[error("{endpoint} answered {status}: {body}")]
    Status {
        endpoint: String,
        status: StatusCode,
        body: String,
    },
    #[error("{endpoint} answered SUBSCRIBE without a usable Mesos-Stream-Id")]
    MissingStreamId { endpoint: String },
    #[error("{endpoint} streams {got:?} instead of {expected}")]
    UnexpectedContentType {
        endpoint: String,
        expected: ContentType,
        got: String,
    },
    /// The event stream broke while reading: connection reset, bad chunk encoding.
    #[error("event stream from {endpoint} broke")]
    Stream {
        endpoint: String,
        #[source]
        source: hyper::Error,
    },
    /// The event stream is not valid RecordIO, or ended inside a record.
    #[error("event stream from {endpoint} is corrupt")]
    RecordIo {
        endpoint: String,
        #[source]
        source: RecordIoError,
    },
}

impl TransportError {
    /// Whether the same request may succeed later without change: network failures,
    /// timeouts, 503, redirect loops (an election in progress) and broken streams (resubscribe).
    /// A 4xx, a bad address or a bad redirect target needs a different request or a human.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Http { .. }
            | Self::Client { .. }
            | Self::Timeout { .. }
            | Self::TooManyRedirects { .. }
            | Self::Unavailable { .. }
            | Self::Stream { .. }
            | Self::RecordIo { .. } => true,
            Self::Status { status, .. } => status.is_server_error(),
            Self::InvalidEndpoint { .. }
            | Self::InvalidStreamId { .. }
            | Self::InvalidCredentials { .. }
            | Self::Unauthorized { .. }
            | Self::BadRedirect { .. }
            | Self::MissingStreamId { .. }
            | Self::UnexpectedContentType { .. } => false,
        }
    }

    /// The HTTP status the master answered, if the failure was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Unavailable { .. } => Some(StatusCode::SERVICE_UNAVAILABLE),
            Self::Unauthorized { .. } => Some(StatusCode::UNAUTHORIZED),
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An open event stream.
#[derive(Debug)]
pub struct Subscription {
    /// Send it on every other call while this stream lives.
    pub stream_id: StreamId,
    /// The master that answered 200 after any redirects: send the calls there.
    pub leader: Endpoint,
    /// The records (serialized `Event`s). The connection closes when this is dropped.
    pub records: RecordStream,
}

/// Most records read ahead of the consumer of a [`RecordStream`]: a burst that arrives while
/// the event loop is busy waits here, decoded, to be taken as one batch.
pub const READ_AHEAD: usize = 4096;

/// The RecordIO records of a subscription's body.
///
/// Yields `Ok(record)` per record, at most one `Err` (the stream is dead after it), then
/// `None`; a clean end of the body (the master closed the stream) is just `None`.
/// Dropping it closes the connection, which Mesos takes as a disconnect.
///
/// A task of its own reads the body and splits it into records as the bytes arrive, up to
/// [`READ_AHEAD`] records ahead of the consumer. hyper reads the next chunk of a body only
/// when asked for it, so without this task nothing would arrive while the event loop works,
/// and [`RecordStream::try_next_record`] would find at most one record at a time.
pub struct RecordStream {
    records: tokio::sync::mpsc::Receiver<Result<Bytes, TransportError>>,
    endpoint: String,
    /// The reading task, and the task that drives the dedicated connection: both aborted
    /// (socket closed) when the stream is dropped, so neither outlives its owner.
    _reader: AbortOnDropHandle<()>,
    _connection: AbortOnDropHandle<()>,
}

impl fmt::Debug for RecordStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordStream")
            .field("endpoint", &self.endpoint)
            .field("buffered", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl RecordStream {
    /// Starts reading `body` ahead on a task of its own (see the type's docs).
    fn spawn(
        body: Incoming,
        max_record_size: usize,
        endpoint: String,
        connection: AbortOnDropHandle<()>,
    ) -> Self {
        let (tx, records) = tokio::sync::mpsc::channel(READ_AHEAD);
        let mut reader = Reader {
            body,
            decoder: Decoder::with_max_record_size(max_record_size),
            endpoint: endpoint.clone(),
            done: false,
        };
        let task = tokio::spawn(async move {
            while let Some(r) = std::future::poll_fn(|cx| Pin::new(&mut reader).poll_next(cx)).await
            {
                let failed = r.is_err();
                if tx.send(r).await.is_err() || failed {
                    return;
                }
            }
        });
        Self {
            records,
            endpoint,
            _reader: AbortOnDropHandle::new(task),
            _connection: connection,
        }
    }

    /// The next record, or `None` once the stream has ended.
    ///
    /// Cancel-safe: it can be raced in `select!` against a heartbeat timer or shutdown
    /// without losing a record.
    pub async fn next_record(&mut self) -> Option<Result<Bytes, TransportError>> {
        self.records.recv().await
    }

    /// The next record if one is ready now (its bytes already arrived), without waiting:
    /// `None` when the next record would need waiting, else what
    /// [`RecordStream::next_record`] would return. The event loop takes a whole burst with
    /// it before acting on any of it.
    pub fn try_next_record(&mut self) -> Option<Option<Result<Bytes, TransportError>>> {
        use tokio::sync::mpsc::error::TryRecvError;
        match self.records.try_recv() {
            Ok(r) => Some(Some(r)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(None),
        }
    }
}

impl Stream for RecordStream {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.records.poll_recv(cx)
    }
}

/// Splits a body into records as its frames arrive: what [`RecordStream`]'s task runs.
struct Reader {
    body: Incoming,
    decoder: Decoder,
    endpoint: String,
    done: bool,
}

impl Reader {
    fn fail(&mut self, source: RecordIoError) -> Poll<Option<Result<Bytes, TransportError>>> {
        self.done = true;
        Poll::Ready(Some(Err(TransportError::RecordIo {
            endpoint: self.endpoint.clone(),
            source,
        })))
    }
}

impl Stream for Reader {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            // Drain what is buffered first: one frame may have completed several records.
            match self.decoder.next_record() {
                Ok(Some(record)) => return Poll::Ready(Some(Ok(record))),
                Ok(None) => {}
                Err(e) => return self.fail(e),
            }
            let this = &mut *self;
            match ready!(Pin::new(&mut this.body.frame()).poll(cx)) {
                Some(Ok(frame)) => {
                    // Trailers carry nothing for us; only data frames feed the decoder.
                    if let Ok(data) = frame.into_data() {
                        this.decoder.push(&data);
                    }
                }
                Some(Err(source)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(TransportError::Stream {
                        endpoint: this.endpoint.clone(),
                        source,
                    })));
                }
                None => {
                    return match this.decoder.finish() {
                        Ok(()) => {
                            this.done = true;
                            Poll::Ready(None)
                        }
                        Err(e) => this.fail(e),
                    };
                }
            }
        }
    }
}

/// The scheduler's HTTP client: one per framework, cheap to share by reference.
#[derive(Debug, Clone)]
pub struct Transport {
    /// Pooled connections for ordinary calls, never for SUBSCRIBE.
    client: Client<HttpConnector, Full<Bytes>>,
    config: TransportConfig,
    /// Sent as basic auth on every request when set.
    credentials: Option<Credentials>,
}

impl Default for Transport {
    fn default() -> Self {
        Self::new(TransportConfig::default())
    }
}

impl Transport {
    /// A transport with the given limits. Building needs no runtime; its methods must run
    /// inside tokio (connections are driven by spawned tasks).
    pub fn new(config: TransportConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        // Calls are small request/response pairs; Nagle would only add latency.
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            // Below the master's idle cut-off, so a pooled connection is rarely stale.
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            client,
            config,
            credentials: None,
        }
    }

    /// The same transport, authenticating every request as `credentials`.
    #[must_use]
    pub fn with_credentials(mut self, credentials: Option<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Adds the `Authorization` header when the transport has credentials.
    fn authorize(&self, builder: http::request::Builder) -> http::request::Builder {
        match &self.credentials {
            Some(c) => builder.header(AUTHORIZATION, c.header.clone()),
            None => builder,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// Sends a SUBSCRIBE `body` on a new dedicated connection and returns the open stream.
    ///
    /// The body is resent as-is to wherever a 307 points (at most
    /// [`TransportConfig::max_redirects`] hops). `Content-Type` and `Accept` are both
    /// `content_type`; no `Mesos-Stream-Id` is sent (Mesos answers 400 to one).
    ///
    /// # Errors
    /// [`TransportError::Unavailable`] on 503 (no leader yet: retry with backoff);
    /// [`TransportError::Status`] on any other non-200, non-307 status, with the body;
    /// [`TransportError::TooManyRedirects`] / [`TransportError::BadRedirect`];
    /// [`TransportError::MissingStreamId`] / [`TransportError::UnexpectedContentType`] for a
    /// 200 we cannot use; [`TransportError::Connect`], [`TransportError::Http`] or
    /// [`TransportError::Timeout`] for the network.
    pub async fn subscribe(
        &self,
        master: &Endpoint,
        body: Bytes,
        content_type: ContentType,
    ) -> Result<Subscription, TransportError> {
        let mut endpoint = master.clone();
        let mut hops = 0;
        loop {
            let (response, connection) = with_timeout(&endpoint, self.config.call_timeout, async {
                self.open(&endpoint, body.clone(), content_type).await
            })
            .await?;
            let status = response.status();
            if status == StatusCode::TEMPORARY_REDIRECT {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let next =
                    endpoint
                        .follow(location)
                        .ok_or_else(|| TransportError::BadRedirect {
                            endpoint: endpoint.to_string(),
                            location: location.to_owned(),
                        })?;
                hops += 1;
                if hops > self.config.max_redirects {
                    return Err(TransportError::TooManyRedirects {
                        hops: hops - 1,
                        endpoint: next.to_string(),
                    });
                }
                tracing::debug!(from = %endpoint, to = %next, "following the master's redirect");
                endpoint = next;
                // `connection` drops here: that hop's socket closes.
                continue;
            }
            if status != StatusCode::OK {
                let text = error_text(response, &endpoint, self.config.call_timeout).await;
                return Err(self.status_error(&endpoint, status, text));
            }
            return self.accept_stream(endpoint, response, connection, content_type);
        }
    }

    /// Sends one non-SUBSCRIBE call to the leader on a pooled connection.
    ///
    /// # Errors
    /// Any status other than 202 or 200 is [`TransportError::Status`] with the body
    /// (400: bad call or stale stream id; 403: not subscribed; 415: content type), except
    /// 503, [`TransportError::Unavailable`]. A 307 is not followed: the leader changed, and
    /// only a new SUBSCRIBE can fix that. [`TransportError::Timeout`] after
    /// [`TransportConfig::call_timeout`]; [`TransportError::Client`] for the network.
    pub async fn call(
        &self,
        leader: &Endpoint,
        stream_id: &StreamId,
        body: Bytes,
        content_type: ContentType,
    ) -> Result<(), TransportError> {
        let request = self
            .authorize(Request::builder())
            .method(Method::POST)
            .uri(leader.uri())
            .header(CONTENT_TYPE, content_type.header())
            .header(STREAM_ID_HEADER, stream_id.0.clone())
            .body(Full::new(body))
            // invariant: method, URI and headers are all pre-validated typed values.
            .map_err(|e| TransportError::InvalidEndpoint {
                input: leader.to_string(),
                reason: e.to_string(),
            })?;
        with_timeout(leader, self.config.call_timeout, async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|source| TransportError::Client {
                        endpoint: leader.to_string(),
                        source,
                    })?;
            let status = response.status();
            if status == StatusCode::ACCEPTED || status == StatusCode::OK {
                // Read the (empty) body to the end so the connection goes back to the pool.
                let _ = Limited::new(response.into_body(), MAX_ERROR_BODY)
                    .collect()
                    .await;
                return Ok(());
            }
            let text = read_text(response.into_body()).await;
            Err(self.status_error(leader, status, text))
        })
        .await
    }

    /// Connects to `endpoint` and sends one SUBSCRIBE, returning the response headers and
    /// the task driving the connection (which must live as long as the body is read).
    async fn open(
        &self,
        endpoint: &Endpoint,
        body: Bytes,
        content_type: ContentType,
    ) -> Result<(Response<Incoming>, AbortOnDropHandle<()>), TransportError> {
        let connect_error = |source| TransportError::Connect {
            endpoint: endpoint.to_string(),
            source,
        };
        let tcp = tokio::time::timeout(
            self.config.connect_timeout,
            tokio::net::TcpStream::connect(endpoint.authority()),
        )
        .await
        .map_err(|_| connect_error(std::io::ErrorKind::TimedOut.into()))?
        .map_err(connect_error)?;
        // Events are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        let http_error = |source| TransportError::Http {
            endpoint: endpoint.to_string(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(http_error)?;
        // A connection error also fails the pending response or body read, which is where
        // the caller sees it; the driver's own result carries nothing more.
        let driver = AbortOnDropHandle::new(tokio::spawn(async move {
            let _ = connection.await;
        }));
        let request = self
            .authorize(Request::builder())
            .method(Method::POST)
            .uri(endpoint.path())
            .header(HOST, endpoint.authority())
            .header(CONTENT_TYPE, content_type.header())
            .header(ACCEPT, content_type.header())
            .body(Full::new(body))
            .map_err(|e| TransportError::InvalidEndpoint {
                input: endpoint.to_string(),
                reason: e.to_string(),
            })?;
        sender.ready().await.map_err(http_error)?;
        let response = sender.send_request(request).await.map_err(http_error)?;
        Ok((response, driver))
    }

    fn accept_stream(
        &self,
        leader: Endpoint,
        response: Response<Incoming>,
        connection: AbortOnDropHandle<()>,
        content_type: ContentType,
    ) -> Result<Subscription, TransportError> {
        let Some(stream_id) = StreamId::from_response(response.headers().get(&STREAM_ID_HEADER))
        else {
            return Err(TransportError::MissingStreamId {
                endpoint: leader.to_string(),
            });
        };
        // Mesos streams in the Accept type; anything else would decode as garbage. A missing
        // header is tolerated (nothing contradicts what we asked for).
        if let Some(got) = response.headers().get(CONTENT_TYPE)
            && got.as_bytes() != content_type.as_str().as_bytes()
        {
            return Err(TransportError::UnexpectedContentType {
                endpoint: leader.to_string(),
                expected: content_type,
                got: String::from_utf8_lossy(got.as_bytes()).into_owned(),
            });
        }
        let records = RecordStream::spawn(
            response.into_body(),
            self.config.max_record_size,
            leader.to_string(),
            connection,
        );
        Ok(Subscription {
            stream_id,
            leader,
            records,
        })
    }
}

async fn with_timeout<T>(
    endpoint: &Endpoint,
    after: Duration,
    work: impl Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    tokio::time::timeout(after, work)
        .await
        .map_err(|_| TransportError::Timeout {
            endpoint: endpoint.to_string(),
            after,
        })?
}

impl Transport {
    /// The request head that every call pipelined to `leader` shares, up to its
    /// `Content-Length`: the request line and the headers [`Transport::call`] sends (the
    /// stream id, the content type and, with credentials, `Authorization`).
    pub(super) fn pipelined_head(
        &self,
        leader: &Endpoint,
        stream_id: &StreamId,
        content_type: ContentType,
    ) -> Vec<u8> {
        let mut head = Vec::with_capacity(256);
        for part in [
            b"POST ".as_slice(),
            leader.path().as_bytes(),
            b" HTTP/1.1\r\nHost: ",
            leader.authority().as_bytes(),
            b"\r\nContent-Type: ",
            content_type.as_str().as_bytes(),
            b"\r\nMesos-Stream-Id: ",
            stream_id.0.as_bytes(),
            b"\r\n",
        ] {
            head.extend_from_slice(part);
        }
        if let Some(c) = &self.credentials {
            head.extend_from_slice(b"Authorization: ");
            head.extend_from_slice(c.header.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head
    }

    /// What a call answered with `status` and `body` failed with, as [`Transport::call`]
    /// says it.
    pub(super) fn answer_error(
        &self,
        leader: &Endpoint,
        status: StatusCode,
        body: &[u8],
    ) -> TransportError {
        let body = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)])
            .trim()
            .to_owned();
        self.status_error(leader, status, body)
    }

    fn status_error(
        &self,
        endpoint: &Endpoint,
        status: StatusCode,
        body: String,
    ) -> TransportError {
        if status == StatusCode::UNAUTHORIZED {
            let hint = if self.credentials.is_some() {
                "wrong principal or secret"
            } else {
                "none sent: start serve with --principal and --secret-file"
            };
            return TransportError::Unauthorized {
                endpoint: endpoint.to_string(),
                hint,
                body,
            };
        }
        status_error(endpoint, status, body)
    }
}

fn status_error(endpoint: &Endpoint, status: StatusCode, body: String) -> TransportError {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        TransportError::Unavailable {
            endpoint: endpoint.to_string(),
            body,
        }
    } else {
        TransportError::Status {
            endpoint: endpoint.to_string(),
            status,
            body,
        }
    }
}

/// The body of an error response on the SUBSCRIBE connection, bounded in time and size.
async fn error_text(response: Response<Incoming>, endpoint: &Endpoint, after: Duration) -> String {
    with_timeout(endpoint, after, async {
        Ok(read_text(response.into_body()).await)
    })
    .await
    .unwrap_or_else(|e| format!("<no body: {e}>"))
}

/// A response body as trimmed text for an error message. Never fails: an unreadable body
/// is described instead, since the status code already says what went wrong.
async fn read_text(body: Incoming) -> String {
    match Limited::new(body, MAX_ERROR_BODY).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes())
            .trim()
            .to_owned(),
        Err(e) => format!("<unreadable body: {e}>"),
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use http_body_util::StreamBody;
    use http_body_util::combinators::BoxBody;
    use hyper::body::Frame;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;

    use super::*;
    use crate::recordio::encode;

    type TestBody = BoxBody<Bytes, Infallible>;

    /// What a test server saw of one request.
    #[derive(Debug, Clone)]
    struct Seen {
        path: String,
        content_type: Option<String>,
        accept: Option<String>,
        stream_id: Option<String>,
        host: Option<String>,
        authorization: Option<String>,
        body: Bytes,
    }

    type Log = Arc<Mutex<Vec<Seen>>>;

    /// A hyper server on 127.0.0.1:0 answering every request with `handler`; it stops, and
    /// closes its connections, when the returned handle is dropped.
    async fn serve<F, Fut>(handler: F) -> (SocketAddr, Log, AbortOnDropHandle<()>)
    where
        F: Fn(Seen) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Log = Arc::default();
        let log2 = log.clone();
        let task = tokio::spawn(async move {
            // Owning the connections here aborts them all when the server task is aborted.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (handler, log) = (handler.clone(), log2.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    let (handler, log) = (handler.clone(), log.clone());
                    async move {
                        let header = |n: &HeaderName| {
                            req.headers().get(n).map(|v| v.to_str().unwrap().to_owned())
                        };
                        let mut seen = Seen {
                            path: req.uri().path().to_owned(),
                            content_type: header(&CONTENT_TYPE),
                            accept: header(&ACCEPT),
                            stream_id: header(&STREAM_ID_HEADER),
                            host: header(&HOST),
                            authorization: header(&AUTHORIZATION),
                            body: Bytes::new(),
                        };
                        seen.body = req.into_body().collect().await.unwrap().to_bytes();
                        log.lock().unwrap().push(seen.clone());
                        Ok::<_, Infallible>(handler(seen).await)
                    }
                });
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        (addr, log, AbortOnDropHandle::new(task))
    }

    /// A protobuf subscription to a test leader, the sender that feeds its body, and the
    /// leader (stopped when dropped).
    async fn subscribed() -> (
        Subscription,
        mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
        AbortOnDropHandle<()>,
    ) {
        let (addr, _log, server, mut streams) = leader(ContentType::Protobuf).await;
        let sub = Transport::default()
            .subscribe(&endpoint(addr), Bytes::new(), ContentType::Protobuf)
            .await
            .unwrap();
        let tx = streams.recv().await.unwrap();
        (sub, tx, server)
    }

    fn respond(status: u16, body: &'static str) -> Response<TestBody> {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(body.as_bytes())).boxed())
            .unwrap()
    }

    fn endpoint(addr: SocketAddr) -> Endpoint {
        Endpoint::parse(&addr.to_string()).unwrap()
    }

    /// Mesos' own checks on a SUBSCRIBE (mesos-v1.md §0, §1.3), then a 200 streaming
    /// whatever the test pushes into the returned sender.
    async fn leader(
        content_type: ContentType,
    ) -> (
        SocketAddr,
        Log,
        AbortOnDropHandle<()>,
        mpsc::Receiver<mpsc::Sender<Result<Frame<Bytes>, Infallible>>>,
    ) {
        let (senders_tx, senders_rx) = mpsc::channel(4);
        let (addr, log, server) = serve(move |seen: Seen| {
            let senders_tx = senders_tx.clone();
            async move {
                if seen.stream_id.is_some() {
                    return respond(
                        400,
                        "Subscribe calls should not include the 'Mesos-Stream-Id' header",
                    );
                }
                if seen.content_type.as_deref() != Some(content_type.as_str()) {
                    return respond(
                        415,
                        "Expecting 'Content-Type' of application/json or application/x-protobuf",
                    );
                }
                let (tx, rx) = mpsc::channel(16);
                senders_tx.send(tx).await.unwrap();
                Response::builder()
                    .header(CONTENT_TYPE, content_type.as_str())
                    .header(STREAM_ID_HEADER, "0b0d2e63-stream")
                    .body(StreamBody::new(ReceiverStream::new(rx)).boxed())
                    .unwrap()
            }
        })
        .await;
        (addr, log, server, senders_rx)
    }

    async fn chunk(tx: &mpsc::Sender<Result<Frame<Bytes>, Infallible>>, bytes: &[u8]) {
        tx.send(Ok(Frame::data(Bytes::copy_from_slice(bytes))))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn subscribe_follows_a_protocol_relative_redirect_and_streams_records() {
        let (leader_addr, leader_log, _leader, mut streams) = leader(ContentType::Protobuf).await;
        let location = format!("//{leader_addr}{SCHEDULER_PATH}");
        let (standby_addr, standby_log, _standby) = serve(move |_| {
            let location = location.clone();
            async move {
                Response::builder()
                    .status(307)
                    .header(LOCATION, location)
                    .body(Full::new(Bytes::new()).boxed())
                    .unwrap()
            }
        })
        .await;

        let transport = Transport::default();
        let mut sub = transport
            .subscribe(
                &endpoint(standby_addr),
                Bytes::from_static(b"subscribe-call"),
                ContentType::Protobuf,
            )
            .await
            .unwrap();
        assert_eq!(sub.stream_id.as_str(), "0b0d2e63-stream");
        assert_eq!(sub.leader, endpoint(leader_addr));

        // The same request reached both masters, with exact headers and no stream id.
        for log in [&standby_log, &leader_log] {
            let seen = log.lock().unwrap()[0].clone();
            assert_eq!(seen.path, SCHEDULER_PATH);
            assert_eq!(seen.content_type.as_deref(), Some("application/x-protobuf"));
            assert_eq!(seen.accept.as_deref(), Some("application/x-protobuf"));
            assert_eq!(seen.stream_id, None);
            assert_eq!(&seen.body[..], b"subscribe-call");
        }
        assert_eq!(
            leader_log.lock().unwrap()[0].host,
            Some(leader_addr.to_string())
        );

        let tx = streams.recv().await.unwrap();
        // A record split across chunks is not yielded early (and the wait is cancel-safe).
        chunk(&tx, b"5\nhel").await;
        let early = tokio::time::timeout(Duration::from_millis(100), sub.records.next_record());
        assert!(early.await.is_err(), "a partial record must not be yielded");
        // The rest of it, two more records and half a header in one chunk.
        chunk(&tx, b"lo3\nabc2\nxy1").await;
        chunk(&tx, b"").await;
        chunk(&tx, b"\nz").await;
        let mut want = vec!["hello", "abc", "xy", "z"];
        let big = vec![b'e'; 100_000];
        chunk(&tx, &encode(&big)).await;
        for w in want.drain(..) {
            let got = sub.records.next_record().await.unwrap().unwrap();
            assert_eq!(&got[..], w.as_bytes());
        }
        assert_eq!(
            sub.records.next_record().await.unwrap().unwrap().len(),
            100_000
        );

        // The master closes the stream on a record boundary: a clean end.
        drop(tx);
        assert!(sub.records.next_record().await.is_none());
        assert!(sub.records.next_record().await.is_none());
    }

    #[tokio::test]
    async fn try_next_record_takes_what_arrived_and_never_waits() {
        let (mut sub, tx, _server) = subscribed().await;
        assert!(
            sub.records.try_next_record().is_none(),
            "nothing arrived yet"
        );
        // Three records and half of a fourth in one chunk: the event loop's burst.
        chunk(
            &tx,
            b"1
a1
b1
c1
",
        )
        .await;
        let first = sub.records.next_record().await.unwrap().unwrap();
        assert_eq!(&first[..], b"a");
        let mut rest = Vec::new();
        while let Some(r) = sub.records.try_next_record() {
            rest.push(r.unwrap().unwrap());
        }
        assert_eq!(rest, [&b"b"[..], &b"c"[..]]);
        // The half record completes later and is then read the ordinary way.
        chunk(&tx, b"d").await;
        assert_eq!(&sub.records.next_record().await.unwrap().unwrap()[..], b"d");
        drop(tx);
        assert!(sub.records.next_record().await.is_none());
        assert!(matches!(sub.records.try_next_record(), Some(None)));
    }

    /// The reason the stream has a reading task: records sent as separate chunks while
    /// the consumer is busy elsewhere are all read (hyper alone reads a body's next chunk
    /// only when asked), so the event loop then takes them as one batch.
    #[tokio::test]
    async fn records_are_read_ahead_while_the_consumer_is_busy() {
        let (mut sub, tx, _server) = subscribed().await;
        for i in 0..50u8 {
            chunk(&tx, &encode(&[i])).await;
        }
        // The consumer does not touch the stream until every record was read ahead.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while sub.records.records.len() < 50 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of 50 records were read ahead",
                sub.records.records.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut got = Vec::new();
        while let Some(r) = sub.records.try_next_record() {
            got.push(r.unwrap().unwrap()[0]);
        }
        assert_eq!(got, (0..50).collect::<Vec<u8>>());
        assert!(
            sub.records.try_next_record().is_none(),
            "nothing more arrived"
        );
    }

    #[tokio::test]
    async fn json_mode_uses_the_exact_json_type() {
        let (addr, log, _server, mut streams) = leader(ContentType::Json).await;
        let mut sub = Transport::default()
            .subscribe(
                &endpoint(addr),
                Bytes::from_static(b"{}"),
                ContentType::Json,
            )
            .await
            .unwrap();
        let seen = log.lock().unwrap()[0].clone();
        assert_eq!(seen.content_type.as_deref(), Some("application/json"));
        assert_eq!(seen.accept.as_deref(), Some("application/json"));
        let tx = streams.recv().await.unwrap();
        chunk(&tx, &encode(br#"{"type":"HEARTBEAT"}"#)).await;
        let got = sub.records.next_record().await.unwrap().unwrap();
        assert_eq!(&got[..], br#"{"type":"HEARTBEAT"}"#);
    }

    #[tokio::test]
    async fn a_stream_of_the_wrong_type_is_refused() {
        // The server streams protobuf whatever we asked for.
        let (addr, _log, _server, _streams) = leader(ContentType::Protobuf).await;
        let (addr2, _log2, _server2) = serve(|_| async {
            Response::builder()
                .header(CONTENT_TYPE, "application/json; charset=utf-8")
                .header(STREAM_ID_HEADER, "s")
                .body(Full::new(Bytes::new()).boxed())
                .unwrap()
        })
        .await;
        let err = Transport::default()
            .subscribe(&endpoint(addr2), Bytes::new(), ContentType::Json)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TransportError::UnexpectedContentType { got, .. } if got == "application/json; charset=utf-8"),
            "{err:?}"
        );
        assert!(!err.is_retryable());
        // And our JSON request to a protobuf-only double gets its 415 as a status error.
        let err = Transport::default()
            .subscribe(&endpoint(addr), Bytes::new(), ContentType::Json)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }

    #[tokio::test]
    async fn corrupt_or_truncated_streams_end_with_one_error() {
        for (wire, truncated) in [(&b"2\nokX\n"[..], false), (&b"2\nok5\nab"[..], true)] {
            let (mut sub, tx, _server) = subscribed().await;
            chunk(&tx, wire).await;
            drop(tx);
            assert_eq!(
                &sub.records.next_record().await.unwrap().unwrap()[..],
                b"ok"
            );
            let err = sub.records.next_record().await.unwrap().unwrap_err();
            match err {
                TransportError::RecordIo {
                    source: RecordIoError::Truncated { buffered: 4 },
                    ..
                } if truncated => {}
                TransportError::RecordIo {
                    source: RecordIoError::InvalidHeader { .. },
                    ..
                } if !truncated => {}
                other => panic!("{wire:?}: {other:?}"),
            }
            assert!(sub.records.next_record().await.is_none());
        }
    }

    #[tokio::test]
    async fn subscribe_maps_statuses_and_missing_headers() {
        let (unavailable, _l1, _s1) = serve(|_| async { respond(503, "No leader elected") }).await;
        let err = Transport::default()
            .subscribe(&endpoint(unavailable), Bytes::new(), ContentType::Protobuf)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TransportError::Unavailable { body, .. } if body == "No leader elected"),
            "{err:?}"
        );
        assert!(err.is_retryable());

        let (no_id, _l2, _s2) = serve(|_| async { respond(200, "") }).await;
        let err = Transport::default()
            .subscribe(&endpoint(no_id), Bytes::new(), ContentType::Protobuf)
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransportError::MissingStreamId { .. }),
            "{err:?}"
        );

        let (bad, _l3, _s3) = serve(|_| async { respond(400, "Failed to validate call") }).await;
        let err = Transport::default()
            .subscribe(&endpoint(bad), Bytes::new(), ContentType::Protobuf)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn redirects_are_capped_and_validated() {
        // A master that keeps redirecting to itself.
        let listener_port = Arc::new(Mutex::new(String::new()));
        let port = listener_port.clone();
        let (addr, log, _server) = serve(move |_| {
            let location = format!("//{}{SCHEDULER_PATH}", port.lock().unwrap());
            async move {
                Response::builder()
                    .status(307)
                    .header(LOCATION, location)
                    .body(Full::new(Bytes::new()).boxed())
                    .unwrap()
            }
        })
        .await;
        *listener_port.lock().unwrap() = addr.to_string();
        let transport = Transport::new(TransportConfig {
            max_redirects: 3,
            ..TransportConfig::default()
        });
        let err = transport
            .subscribe(&endpoint(addr), Bytes::new(), ContentType::Protobuf)
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransportError::TooManyRedirects { hops: 3, .. }),
            "{err:?}"
        );
        assert_eq!(log.lock().unwrap().len(), 4, "the first try plus 3 hops");

        let (addr, _log, _server) = serve(|_| async {
            Response::builder()
                .status(307)
                .header(LOCATION, "https://elsewhere/api/v1/scheduler")
                .body(Full::new(Bytes::new()).boxed())
                .unwrap()
        })
        .await;
        let err = transport
            .subscribe(&endpoint(addr), Bytes::new(), ContentType::Protobuf)
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::BadRedirect { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn connection_refused_is_a_retryable_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = Transport::default()
            .subscribe(&endpoint(addr), Bytes::new(), ContentType::Protobuf)
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
        assert!(err.is_retryable());
    }

    /// A master double for ordinary calls: Mesos' header checks, then the status the test
    /// asks for in the body ("hang" never answers).
    async fn call_master() -> (SocketAddr, Log, AbortOnDropHandle<()>) {
        serve(|seen: Seen| async move {
            let exact = [ContentType::Protobuf.as_str(), ContentType::Json.as_str()];
            if !seen
                .content_type
                .as_deref()
                .is_some_and(|c| exact.contains(&c))
            {
                return respond(
                    415,
                    "Expecting 'Content-Type' of application/json or application/x-protobuf",
                );
            }
            if seen.stream_id.as_deref() != Some("0b0d2e63-stream") {
                return respond(400, "The stream ID is missing or invalid");
            }
            match &seen.body[..] {
                b"hang" => std::future::pending().await,
                b"200" => respond(200, ""),
                b"202" => respond(202, ""),
                b"400" => respond(
                    400,
                    "Failed to validate scheduler::Call: Expecting 'framework_id' to be present",
                ),
                b"403" => respond(403, "Framework is not subscribed"),
                b"503" => respond(503, "Master has not finished recovery"),
                _ => respond(500, "unexpected test body"),
            }
        })
        .await
    }

    #[tokio::test]
    async fn calls_send_the_stream_id_and_map_statuses() {
        let (addr, log, _server) = call_master().await;
        let leader = endpoint(addr);
        let transport = Transport::default();
        let id = StreamId::parse("0b0d2e63-stream").unwrap();
        let call = |body: &'static str, ct| {
            transport.call(&leader, &id, Bytes::from_static(body.as_bytes()), ct)
        };

        call("202", ContentType::Protobuf).await.unwrap();
        call("200", ContentType::Json).await.unwrap();
        // Several calls share the pooled connection; each is still checked by the server.
        call("202", ContentType::Protobuf).await.unwrap();

        let err = call("400", ContentType::Protobuf).await.unwrap_err();
        assert!(
            matches!(&err, TransportError::Status { status, body, .. }
                if *status == StatusCode::BAD_REQUEST && body.contains("framework_id")),
            "{err:?}"
        );
        assert!(!err.is_retryable());

        let err = call("403", ContentType::Protobuf).await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
        assert!(
            err.to_string().contains("Framework is not subscribed"),
            "{err}"
        );
        assert!(!err.is_retryable());

        let err = call("503", ContentType::Protobuf).await.unwrap_err();
        assert!(matches!(err, TransportError::Unavailable { .. }), "{err:?}");
        assert!(err.is_retryable());

        let seen = log.lock().unwrap().clone();
        assert_eq!(seen.len(), 6);
        assert!(seen.iter().all(|s| s.path == SCHEDULER_PATH));
        assert!(
            seen.iter()
                .all(|s| s.stream_id.as_deref() == Some("0b0d2e63-stream"))
        );
        assert_eq!(
            seen[0].content_type.as_deref(),
            Some("application/x-protobuf")
        );
        assert_eq!(seen[1].content_type.as_deref(), Some("application/json"));
        assert_eq!(seen[0].host, Some(addr.to_string()));

        // A stale stream id is a 400 from Mesos, surfaced as such.
        let stale = StreamId::parse("old-stream").unwrap();
        let err = transport
            .call(
                &leader,
                &stale,
                Bytes::from_static(b"202"),
                ContentType::Protobuf,
            )
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    }

    #[tokio::test]
    async fn calls_time_out() {
        let (addr, _log, _server) = call_master().await;
        let transport = Transport::new(TransportConfig {
            call_timeout: Duration::from_millis(200),
            ..TransportConfig::default()
        });
        let id = StreamId::parse("0b0d2e63-stream").unwrap();
        let err = transport
            .call(
                &endpoint(addr),
                &id,
                Bytes::from_static(b"hang"),
                ContentType::Protobuf,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, TransportError::Timeout { after, .. } if after == Duration::from_millis(200)),
            "{err:?}"
        );
        assert!(err.is_retryable());
    }

    #[test]
    fn endpoints_parse() {
        let ok = [
            ("10.0.0.1:5050", "http://10.0.0.1:5050/api/v1/scheduler"),
            ("master.local", "http://master.local:5050/api/v1/scheduler"),
            ("http://m:5051", "http://m:5051/api/v1/scheduler"),
            ("http://m:5051/", "http://m:5051/api/v1/scheduler"),
            (
                "http://m/master/api/v1/scheduler",
                "http://m:5050/master/api/v1/scheduler",
            ),
            ("[::1]:5050", "http://[::1]:5050/api/v1/scheduler"),
        ];
        for (input, want) in ok {
            let e = Endpoint::parse(input).unwrap();
            assert_eq!(e.to_string(), want, "{input}");
            assert_eq!(e.uri().to_string(), want, "{input}");
        }
        assert_eq!(Endpoint::parse("m:1").unwrap().authority(), "m:1");
        assert_eq!(Endpoint::parse("m:1").unwrap().path(), SCHEDULER_PATH);
        for bad in [
            "",
            "https://m:5050",
            "ftp://m",
            "http://",
            "http://u@m:1",
            "m:port",
        ] {
            assert!(
                matches!(
                    Endpoint::parse(bad),
                    Err(TransportError::InvalidEndpoint { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn redirect_locations_resolve() {
        let here = Endpoint::parse("http://standby:5050/api/v1/scheduler").unwrap();
        let cases = [
            (
                "//leader:5050/api/v1/scheduler",
                Some("http://leader:5050/api/v1/scheduler"),
            ),
            (
                "//10.0.0.2:5051/master/api/v1/scheduler",
                Some("http://10.0.0.2:5051/master/api/v1/scheduler"),
            ),
            (
                "http://leader:5050/api/v1/scheduler",
                Some("http://leader:5050/api/v1/scheduler"),
            ),
            (
                "/master/api/v1/scheduler",
                Some("http://standby:5050/master/api/v1/scheduler"),
            ),
            ("", None),
            ("leader:5050/api/v1/scheduler", None),
            ("https://leader:5050/api/v1/scheduler", None),
            ("//", None),
        ];
        for (location, want) in cases {
            assert_eq!(
                here.follow(location).map(|e| e.to_string()).as_deref(),
                want,
                "{location:?}"
            );
        }
    }

    #[test]
    fn stream_ids_and_content_types() {
        assert_eq!(StreamId::parse("abc").unwrap().to_string(), "abc");
        assert!(StreamId::parse("").is_err());
        assert!(StreamId::parse("a\nb").is_err());
        assert_eq!(ContentType::Protobuf.to_string(), "application/x-protobuf");
        assert_eq!(ContentType::Json.as_str(), "application/json");
    }

    #[tokio::test]
    async fn credentials_go_on_every_request_and_a_401_says_unauthorized() {
        // A master that authenticates frameworks: 401 unless `paas:s3cret`.
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("paas:s3cret")
        );
        let (addr, log, _server) = serve(move |seen: Seen| {
            let ok = seen.authorization.as_deref() == Some(want.as_str());
            async move {
                if ok {
                    respond(202, "")
                } else {
                    respond(401, "")
                }
            }
        })
        .await;
        let sid = StreamId::parse("s").unwrap();
        let body = || Bytes::from_static(b"call");

        let anonymous = Transport::default();
        let err = anonymous
            .subscribe(&endpoint(addr), body(), ContentType::Protobuf)
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Unauthorized { .. }), "{err}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("401 unauthorized"), "{err}");
        assert!(err.to_string().contains("--secret-file"), "{err}");

        let wrong =
            Transport::default().with_credentials(Some(Credentials::new("paas", "nope").unwrap()));
        let err = wrong
            .call(&endpoint(addr), &sid, body(), ContentType::Protobuf)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("wrong principal or secret"),
            "{err}"
        );

        let right = Transport::default()
            .with_credentials(Some(Credentials::new("paas", "s3cret").unwrap()));
        right
            .call(&endpoint(addr), &sid, body(), ContentType::Protobuf)
            .await
            .unwrap();
        // SUBSCRIBE carries it too (202 is not a stream, so it fails later, past the auth).
        let err = right
            .subscribe(&endpoint(addr), body(), ContentType::Protobuf)
            .await
            .unwrap_err();
        assert!(!matches!(err, TransportError::Unauthorized { .. }), "{err}");
        let seen = log.lock().unwrap().clone();
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0].authorization, None);
        assert!(seen[2].authorization.is_some() && seen[3].authorization == seen[2].authorization);
        // The secret never shows in Debug output.
        let c = Credentials::new("paas", "s3cret").unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        for (p, sec) in [("", "x"), ("a:b", "x"), ("paas", "")] {
            assert!(Credentials::new(p, sec).is_err(), "{p:?} {sec:?}");
        }
    }
}
