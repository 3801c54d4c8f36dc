//! Bodies in and out: reading a request body within the size limit, the content types a
//! JSON body may come with, JSON decoding with positions, and the response builders.
//!
//! Nothing here knows an endpoint; the handlers in `products` and `clusters` say what a body
//! must contain.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;

/// A response: a complete body, or a stream (server-sent events, command output).
pub(crate) type Resp = Response<Body>;

/// A response body: either all of it at once (almost every route), or chunks sent as they
/// come from a channel. The stream ends when every sender is dropped; a sender that finds
/// the channel closed knows the client went away. No boxing: the complete case costs what
/// `Full` costs.
#[derive(Debug)]
pub enum Body {
    Full(Full<Bytes>),
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
}

impl Body {
    /// A body of these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Full::new(bytes.into()))
    }

    /// No body at all (204).
    pub fn empty() -> Self {
        Body::Full(Full::new(Bytes::new()))
    }

    /// A streamed body and the sender that feeds it. `depth` chunks may wait unsent: the
    /// sender decides what to do when they are full (wait, or drop a slow client).
    pub fn channel(depth: usize) -> (tokio::sync::mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = tokio::sync::mpsc::channel(depth);
        (tx, Body::Stream(rx))
    }
}

impl From<Full<Bytes>> for Body {
    fn from(full: Full<Bytes>) -> Self {
        Body::Full(full)
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Full(full) => std::pin::Pin::new(full).poll_frame(cx),
            Body::Stream(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(hyper::body::Frame::data(c)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(full) => full.is_end_stream(),
            Body::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Full(full) => full.size_hint(),
            Body::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// Reads the whole body, refusing more than the limit with 413, and a body that has not
/// arrived within the read timeout with 408 (a client trickling bytes must not hold a
/// connection and a task forever).
pub(super) async fn read_body(state: &AppState, req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let limit = state.max_body;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge(limit));
    }
    let timeout = state.limits.body_timeout;
    let read = tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect());
    let Ok(read) = read.await else {
        return Err(ApiError::BodyTimeout(timeout));
    };
    match read {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::TooLarge(limit))
        }
        Err(e) => Err(ApiError::bad_request(
            "body_read_failed",
            format!("could not read the request body: {e}"),
        )),
    }
}

/// Accepts JSON bodies sent as JSON, as bytes, or with no type at all; refuses everything
/// else, the form and text types a browser sends cross-site without asking first included
/// (so a web page cannot make a visitor's browser call us).
pub(super) fn check_json_content_type(req: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(ct) = media_type(req.headers()) else {
        return Ok(());
    };
    let ok = ct.is_empty()
        || ct == "application/json"
        || ct.ends_with("+json")
        || ct == "application/octet-stream";
    if ok {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "expected application/json, got {ct}"
        )))
    }
}

/// The request's media type (`Content-Type` without its parameters), lower case; `None`
/// without the header, empty when it is not text.
pub(super) fn media_type(headers: &http::HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?;
    Some(
        ct.to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// Parses JSON, naming the line and column of a syntax error.
pub(super) fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest {
        code: "invalid_json",
        message: {
            let text = e.to_string();
            let why = text
                .rsplit_once(" at line ")
                .map_or(text.as_str(), |(why, _)| why);
            format!(
                "malformed JSON at line {}, column {}: {why}",
                e.line(),
                e.column()
            )
        },
        details: Some(json!({"line": e.line(), "column": e.column()})),
    })
}

pub(super) async fn json_body(state: &AppState, req: Request<Incoming>) -> Result<Value, ApiError> {
    check_json_content_type(&req)?;
    let bytes = read_body(state, req).await?;
    parse_json(&bytes)
}

pub(super) fn object(v: Value, what: &str) -> Result<Map<String, Value>, ApiError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::bad_request(
            "invalid_body",
            format!("{what} must be a JSON object, not {}", kind(&other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(super) fn raw_response(body: Vec<u8>, content_type: &'static str) -> Resp {
    let mut resp = Response::new(Body::full(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

pub(super) fn with_location(mut resp: Resp, location: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Adds `Link: <url>; rel="next"` (RFC 8288), the next page of a list.
pub(super) fn with_link_next(mut resp: Resp, url: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")) {
        resp.headers_mut().insert(header::LINK, v);
    }
    resp
}

/// A response of JSON already encoded.
pub(super) fn json_bytes_response(status: StatusCode, body: Bytes) -> Resp {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON response, pretty-printed (people read these with curl).
pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Resp {
    // invariant: our response bodies are plain serde values with string keys.
    let bytes = serde_json::to_vec_pretty(body).expect("response serialises");
    json_bytes_response(status, Bytes::from(bytes))
}

/// [`json_response`] written into a buffer of `capacity` bytes: a large body whose size is
/// known roughly up front is not copied again at each doubling of its buffer.
pub(crate) fn json_response_sized(
    status: StatusCode,
    body: &impl Serialize,
    capacity: usize,
) -> Resp {
    json_bytes_response(status, Bytes::from(pretty_json(body, capacity)))
}

/// `body` as pretty JSON, written into a buffer of `capacity` bytes.
pub(crate) fn pretty_json(body: &impl Serialize, capacity: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(capacity);
    // invariant: as in json_response; writing to a Vec cannot fail.
    serde_json::to_writer_pretty(&mut bytes, body).expect("response serialises");
    bytes
}
