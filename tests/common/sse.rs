//! A server-sent events reader over real HTTP, for the live event streams and exec.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// One event as received.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

/// An open event stream.
pub struct Sse {
    pub status: u16,
    pub headers: http::HeaderMap,
    body: Incoming,
    buf: Vec<u8>,
    /// Whether the server ended the stream.
    pub ended: bool,
}

impl Sse {
    /// `GET url` with `headers` (the response may be an error: see `status`).
    pub async fn open(url: &str, headers: &[(&str, &str)]) -> Sse {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut req = http::Request::builder().method("GET").uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = client
            .request(req.body(Empty::new()).expect("request"))
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        Sse {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.into_body(),
            buf: Vec::new(),
            ended: false,
        }
    }

    /// The body, read to its end (an error answer).
    pub async fn text(self) -> String {
        let rest = self.body.collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&[&self.buf[..], &rest[..]].concat()).into_owned()
    }

    /// The next event; `None` when the stream ended, or nothing came within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(e) = self.take_event() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Err(_) => return None,
                Ok(None | Some(Err(_))) => self.ended = true,
                Ok(Some(Ok(f))) => {
                    if let Ok(data) = f.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// Events until one satisfies `done` (included), failing after `secs`.
    pub async fn until(
        &mut self,
        secs: u64,
        what: &str,
        done: impl Fn(&Event) -> bool,
    ) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(e) = self.next(left).await else {
                panic!(
                    "no {what} within {secs} s (ended: {}); got {got:#?}",
                    self.ended
                );
            };
            let stop = done(&e);
            got.push(e);
            if stop {
                return got;
            }
        }
    }

    /// Every event that arrives within `quiet` of the previous one.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Event> {
        let mut got = Vec::new();
        while let Some(e) = self.next(quiet).await {
            got.push(e);
        }
        got
    }

    /// Cuts one complete event (blank-line terminated) from the buffer; comments are
    /// skipped.
    fn take_event(&mut self) -> Option<Event> {
        loop {
            let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
            let block: Vec<u8> = self.buf.drain(..end + 2).collect();
            let text = String::from_utf8(block).expect("UTF-8 events");
            let (mut id, mut event, mut data) = (None, String::from("message"), None);
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.parse().expect("a numeric id"));
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str(v).expect("one line of JSON"));
                }
            }
            if let Some(data) = data {
                return Some(Event { id, event, data });
            }
        }
    }
}
