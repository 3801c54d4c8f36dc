//! Acknowledgements, sent off the event loop.
//!
//! The event loop hands the ACKs of a batch over once the batch is durable, and goes on at
//! once: a burst of a thousand updates costs a thousand calls to the master, and the loop
//! must not wait for them before it handles the next offers or commits. One task per
//! session sends them. Ordering does not matter to Mesos: an ACK names its update by uuid.
//!
//! The calls are pipelined (HTTP/1.1): every ACK queued by the time the last batch was
//! answered is written back to back on one connection, in one write, and the answers are
//! read in order (libprocess answers pipelined requests in order, as does hyper). A burst
//! then costs the master and us a few reads and writes instead of a request and a response
//! per ACK, each with its own wake-ups. Where the connection fails or closes before every
//! ACK of a batch is answered, the rest are written once more on a new connection, and then
//! sent one call each over the pooled transport, at most `in_flight` at a time.
//!
//! A lost ACK (a failed call, or a session that ends with ACKs still queued) costs the
//! master resending that update, which then applies as a duplicate. An ACK sent twice (its
//! answer lost with a connection) is one the agent already has, which it ignores.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use http::StatusCode;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::transport::{ContentType, Endpoint, StreamId, Transport};
use crate::proto::mesos::v1 as mesos;
use crate::proto::mesos::v1::scheduler::{Call, call};

/// The most ACKs written back to back before their answers are read.
const MAX_PIPELINED: usize = 256;

/// The ACK sender of one subscription.
pub struct Acks {
    queue: mpsc::UnboundedSender<call::Acknowledge>,
    _task: AbortOnDropHandle<()>,
}

impl Acks {
    /// Starts the sender of the session `stream_id` with `leader`; the pooled calls of its
    /// fallback are at most `in_flight` at a time.
    pub fn spawn(
        transport: Transport,
        leader: Endpoint,
        stream_id: StreamId,
        framework_id: mesos::FrameworkId,
        in_flight: usize,
    ) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let head = transport.pipelined_head(&leader, &stream_id, ContentType::Protobuf);
        let sender = Sender {
            transport,
            leader,
            stream_id,
            framework_id,
            head,
        };
        let task = tokio::spawn(async move { sender.run(rx, in_flight.max(1)).await });
        Self {
            queue,
            _task: AbortOnDropHandle::new(task),
        }
    }

    /// Queues `acks`; never waits.
    pub fn send(&self, acks: impl IntoIterator<Item = call::Acknowledge>) {
        for a in acks {
            let _ = self.queue.send(a);
        }
    }
}

struct Sender {
    transport: Transport,
    leader: Endpoint,
    stream_id: StreamId,
    framework_id: mesos::FrameworkId,
    /// The request head of every pipelined ACK, up to its `Content-Length`.
    head: Vec<u8>,
}

impl Sender {
    async fn run(&self, mut rx: mpsc::UnboundedReceiver<call::Acknowledge>, in_flight: usize) {
        let mut pipe = None;
        let mut batch = Vec::with_capacity(MAX_PIPELINED);
        while rx.recv_many(&mut batch, MAX_PIPELINED).await > 0 {
            let rest = self.pipelined(&mut pipe, &batch).await;
            if rest < batch.len() {
                self.one_by_one(batch.drain(rest..), in_flight).await;
            }
            batch.clear();
        }
    }

    /// The body of the ACKNOWLEDGE call of `ack`.
    fn body(&self, ack: call::Acknowledge) -> Vec<u8> {
        Call {
            framework_id: Some(self.framework_id.clone()),
            r#type: Some(call::Type::Acknowledge as i32),
            acknowledge: Some(ack),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// Sends `acks` pipelined on `pipe` (a new connection if there is none or it failed),
    /// twice at most: how many, from the first, were answered. A connection that can carry
    /// the next batch is left in `pipe`.
    async fn pipelined(&self, pipe: &mut Option<Pipe>, acks: &[call::Acknowledge]) -> usize {
        let mut answered = 0;
        for _ in 0..2 {
            if answered == acks.len() {
                break;
            }
            let mut p = match pipe.take() {
                Some(p) => p,
                None => match Pipe::connect(&self.leader, self.transport.config().connect_timeout)
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(master = %self.leader, error = %e, "cannot connect to send ACKs");
                        break;
                    }
                },
            };
            let mut requests =
                Vec::with_capacity((acks.len() - answered) * (self.head.len() + 128));
            for a in &acks[answered..] {
                let body = self.body(a.clone());
                requests.extend_from_slice(&self.head);
                requests.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                );
                requests.extend_from_slice(&body);
            }
            let count = acks.len() - answered;
            let exchange = p.exchange(&requests, count, |status, body| {
                if !(status == StatusCode::ACCEPTED || status == StatusCode::OK) {
                    let e = self.transport.answer_error(&self.leader, status, body);
                    tracing::warn!(call = "ACKNOWLEDGE", error = %e, "mesos call failed");
                }
            });
            let timeout = self.transport.config().call_timeout;
            match tokio::time::timeout(timeout, exchange).await {
                Ok(Exchange {
                    answered: n,
                    reusable,
                }) => {
                    answered += n;
                    if reusable && answered == acks.len() {
                        *pipe = Some(p);
                    }
                }
                Err(_) => {
                    tracing::warn!(master = %self.leader, after = ?timeout, "ACKs unanswered");
                }
            }
        }
        answered
    }

    /// Sends each of `acks` as a call of its own over the pooled transport, at most
    /// `in_flight` at a time.
    async fn one_by_one(&self, acks: impl Iterator<Item = call::Acknowledge>, in_flight: usize) {
        let mut calls = futures_util::stream::iter(acks.map(|a| self.acknowledge(a)))
            .buffer_unordered(in_flight);
        while calls.next().await.is_some() {}
    }

    async fn acknowledge(&self, ack: call::Acknowledge) {
        let body = Bytes::from(self.body(ack));
        if let Err(e) = self
            .transport
            .call(&self.leader, &self.stream_id, body, ContentType::Protobuf)
            .await
        {
            tracing::warn!(call = "ACKNOWLEDGE", error = %e, "mesos call failed");
        }
    }
}

/// How a pipelined exchange went.
struct Exchange {
    /// How many requests, from the first, were answered.
    answered: usize,
    /// Whether the connection can carry the next batch: every request was answered and
    /// none of the answers closed it.
    reusable: bool,
}

/// One connection to the leader, carrying ACKs back to back.
struct Pipe {
    tcp: TcpStream,
    /// What was read and not yet taken as an answer.
    buf: BytesMut,
}

impl Pipe {
    async fn connect(leader: &Endpoint, within: Duration) -> std::io::Result<Pipe> {
        let tcp = tokio::time::timeout(within, TcpStream::connect(leader.authority()))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        tcp.set_nodelay(true)?;
        Ok(Pipe {
            tcp,
            buf: BytesMut::with_capacity(16 * 1024),
        })
    }

    /// Writes `requests` (`count` of them) and reads their answers in order, handing each
    /// status and body to `on_answer`.
    async fn exchange(
        &mut self,
        requests: &[u8],
        count: usize,
        mut on_answer: impl FnMut(StatusCode, &[u8]),
    ) -> Exchange {
        let mut answered = 0;
        let unusable = |answered| Exchange {
            answered,
            reusable: false,
        };
        if let Err(e) = self.tcp.write_all(requests).await {
            tracing::debug!(error = %e, "the ACK connection failed");
            return unusable(0);
        }
        while answered < count {
            match parse_answer(&self.buf) {
                Parsed::Answer {
                    status,
                    body,
                    len,
                    close,
                } => {
                    on_answer(status, &self.buf[body]);
                    self.buf.advance(len);
                    answered += 1;
                    if close {
                        return unusable(answered);
                    }
                }
                Parsed::Partial => match self.tcp.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return unusable(answered),
                    Ok(_) => {}
                },
                Parsed::Unusable(why) => {
                    tracing::debug!(why, "an ACK's answer cannot be read on");
                    return unusable(answered);
                }
            }
        }
        Exchange {
            answered,
            reusable: self.buf.is_empty(),
        }
    }
}

/// The first answer in a buffer of pipelined answers.
#[derive(Debug, PartialEq)]
enum Parsed {
    /// A whole answer, `len` bytes in all, with its body at `body`; `close` if the server
    /// closes the connection after it.
    Answer {
        status: StatusCode,
        body: std::ops::Range<usize>,
        len: usize,
        close: bool,
    },
    /// More bytes are needed.
    Partial,
    /// The answer cannot be delimited or read (a chunked or unbounded body, a malformed
    /// head): the connection cannot be read on.
    Unusable(&'static str),
}

fn parse_answer(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Unusable("a malformed answer"),
    };
    let Some(status) = response.code.and_then(|c| StatusCode::from_u16(c).ok()) else {
        return Parsed::Unusable("no status");
    };
    if status.is_informational() {
        return Parsed::Unusable("an informational answer");
    }
    let (mut length, mut close) = (None, response.version == Some(0));
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
            if length.is_none() {
                return Parsed::Unusable("a bad Content-Length");
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Unusable("a body in chunks");
        } else if h.name.eq_ignore_ascii_case("connection") {
            let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            close |= value.split(',').any(|v| v.trim() == "close");
        }
    }
    let length = match length {
        Some(n) => n,
        // Only these answers have no body without saying so.
        None if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED => 0,
        None => return Parsed::Unusable("a body up to the connection's end"),
    };
    if buf.len() < head + length {
        return Parsed::Partial;
    }
    Parsed::Answer {
        status,
        body: head..head + length,
        len: head + length,
        close,
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;

    /// A master that answers every call 202 after `delay`, and records each call with the
    /// stream id it came with, the connections it took and the most calls it had in flight
    /// at once. With `keep_alive` false it closes each connection after one answer.
    struct Master {
        calls: Mutex<Vec<(String, Call)>>,
        connections: AtomicUsize,
        in_flight: AtomicUsize,
        most: AtomicUsize,
    }

    async fn master(
        delay: Duration,
        keep_alive: bool,
    ) -> (Endpoint, Arc<Master>, AbortOnDropHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let m = Arc::new(Master {
            calls: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        });
        let m2 = m.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                m2.connections.fetch_add(1, Ordering::SeqCst);
                let m = m2.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let m = m.clone();
                    async move {
                        let now = m.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        m.most.fetch_max(now, Ordering::SeqCst);
                        let stream = req
                            .headers()
                            .get("Mesos-Stream-Id")
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        tokio::time::sleep(delay).await;
                        m.calls
                            .lock()
                            .unwrap()
                            .push((stream, Call::decode(body).unwrap()));
                        m.in_flight.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(202)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                connections.spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        let endpoint = Endpoint::parse(&addr.to_string()).unwrap();
        (endpoint, m, AbortOnDropHandle::new(task))
    }

    /// The sender of session `stream-1` of framework `fw`.
    fn session_acks(leader: Endpoint, in_flight: usize) -> Acks {
        Acks::spawn(
            Transport::default(),
            leader,
            StreamId::parse("stream-1").unwrap(),
            mesos::FrameworkId { value: "fw".into() },
            in_flight,
        )
    }

    fn ack(i: u8) -> call::Acknowledge {
        call::Acknowledge {
            agent_id: mesos::AgentId { value: "a1".into() },
            task_id: mesos::TaskId {
                value: format!("t{i}"),
            },
            uuid: vec![i],
        }
    }

    /// Waits until `m` has `n` calls, then checks each is an ACK of session `stream-1` of
    /// `fw`, and that they are the ACKs `0..n`, each once.
    async fn all_arrive_once(m: &Master, n: u8) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while m.calls.lock().unwrap().len() < usize::from(n) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not every ACK arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Nothing more comes after.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let calls = m.calls.lock().unwrap().clone();
        let mut uuids: Vec<u8> = calls
            .iter()
            .map(|(stream, c)| {
                assert_eq!(stream, "stream-1");
                assert_eq!(c.r#type, Some(call::Type::Acknowledge as i32));
                assert_eq!(c.framework_id.as_ref().unwrap().value, "fw");
                c.acknowledge.as_ref().unwrap().uuid[0]
            })
            .collect();
        uuids.sort_unstable();
        assert_eq!(uuids, (0..n).collect::<Vec<u8>>(), "each once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_ack_is_sent_once_with_the_session_pipelined_on_one_connection() {
        let (leader, m, _server) = master(Duration::from_millis(2), true).await;
        let acks = session_acks(leader, 4);
        // Queuing never waits for the master.
        acks.send((0..40).map(ack));
        all_arrive_once(&m, 40).await;
        acks.send((40..60).map(ack));
        all_arrive_once(&m, 60).await;
        assert_eq!(
            m.connections.load(Ordering::SeqCst),
            1,
            "both bursts on one connection"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_master_that_closes_after_each_answer_still_gets_every_ack_once() {
        let (leader, m, _server) = master(Duration::from_millis(20), false).await;
        let acks = session_acks(leader, 4);
        acks.send((0..40).map(ack));
        all_arrive_once(&m, 40).await;
        // Two pipelined tries answered one each; the rest went one call each, at most
        // four at once.
        let most = m.most.load(Ordering::SeqCst);
        assert!(
            (2..=4).contains(&most),
            "the rest sent concurrently, at most 4 at once: {most}"
        );
        assert!(m.connections.load(Ordering::SeqCst) >= 40);
    }

    #[tokio::test]
    async fn dropping_the_sender_stops_what_is_still_queued() {
        let (leader, m, _server) = master(Duration::from_millis(200), true).await;
        let acks = session_acks(leader, 1);
        acks.send([ack(0)]);
        // Once the first is at the master, the rest wait in the queue for its answer.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while m.in_flight.load(Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the first ACK never came"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        acks.send((1..10).map(ack));
        drop(acks);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            m.calls.lock().unwrap().len() <= 1,
            "a session's ACKs end with it"
        );
    }

    #[test]
    fn answers_are_delimited_by_their_length_and_read_in_order() {
        let two = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\nHTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\nConnection: close\r\n\r\nnope!";
        let first = parse_answer(two);
        let Parsed::Answer {
            status,
            body,
            len,
            close,
        } = first
        else {
            panic!("{first:?}");
        };
        assert_eq!(
            (status, body.len(), close),
            (StatusCode::ACCEPTED, 0, false)
        );
        let second = parse_answer(&two[len..]);
        let Parsed::Answer {
            status,
            body,
            len: len2,
            close,
        } = second
        else {
            panic!("{second:?}");
        };
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(&two[len..][body], b"nope!");
        assert!(close, "the server closes after it");
        assert_eq!(len + len2, two.len());
        // A head or a body not all there yet.
        for cut in [10, 30, two.len() - 2] {
            let at = if cut > len {
                &two[len..cut]
            } else {
                &two[..cut]
            };
            assert_eq!(parse_answer(at), Parsed::Partial, "{cut}");
        }
        // HTTP/1.0 closes unless told otherwise.
        let old = parse_answer(b"HTTP/1.0 202 Accepted\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(old, Parsed::Answer { close: true, .. }), "{old:?}");
    }

    #[test]
    fn answers_that_cannot_be_delimited_stop_the_connection() {
        for answer in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\nbody up to the end",
            "HTTP/1.1 202 Accepted\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert!(
                matches!(parse_answer(answer.as_bytes()), Parsed::Unusable(_)),
                "{answer:?}"
            );
        }
        // A 204 has no body without saying so.
        assert!(matches!(
            parse_answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
            Parsed::Answer { len: 27, .. }
        ));
    }
}
