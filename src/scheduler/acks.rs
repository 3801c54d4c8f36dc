//! Acknowledgements, sent off the event loop.
//!
//! The event loop hands the ACKs of a batch over once the batch is durable, and goes on at
//! once: a burst of a thousand updates costs a thousand calls to the master, and the loop
//! must not wait for them before it handles the next offers or commits. One task per
//! session sends them, at most `in_flight` at a time over the pooled transport. Ordering
//! does not matter to Mesos: an ACK names its update by uuid.
//!
//! A lost ACK (a failed call, or a session that ends with ACKs still queued) costs the
//! master resending that update, which then applies as a duplicate.

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::transport::{ContentType, Endpoint, StreamId, Transport};
use crate::proto::mesos::v1 as mesos;
use crate::proto::mesos::v1::scheduler::{Call, call};

/// The ACK sender of one session; dropping it stops the task (queued ACKs are lost).
pub struct Acks {
    queue: mpsc::UnboundedSender<call::Acknowledge>,
    _task: AbortOnDropHandle<()>,
}

impl Acks {
    /// Starts the sender of the session whose stream is `stream_id` at `leader`.
    pub fn spawn(
        transport: Transport,
        leader: Endpoint,
        stream_id: StreamId,
        framework_id: mesos::FrameworkId,
        in_flight: usize,
    ) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let sender = Sender {
            transport,
            leader,
            stream_id,
            framework_id,
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
            // The task ends only with this handle: a closed queue cannot happen here.
            let _ = self.queue.send(a);
        }
    }
}

struct Sender {
    transport: Transport,
    leader: Endpoint,
    stream_id: StreamId,
    framework_id: mesos::FrameworkId,
}

impl Sender {
    async fn run(&self, mut rx: mpsc::UnboundedReceiver<call::Acknowledge>, in_flight: usize) {
        let mut calls = FuturesUnordered::new();
        loop {
            tokio::select! {
                biased;
                Some(()) = calls.next(), if !calls.is_empty() => {}
                ack = rx.recv(), if calls.len() < in_flight => match ack {
                    Some(a) => calls.push(self.acknowledge(a)),
                    None => break,
                },
            }
        }
        while calls.next().await.is_some() {}
    }

    async fn acknowledge(&self, ack: call::Acknowledge) {
        let c = Call {
            framework_id: Some(self.framework_id.clone()),
            r#type: Some(call::Type::Acknowledge as i32),
            acknowledge: Some(ack),
            ..Default::default()
        };
        let body = Bytes::from(c.encode_to_vec());
        if let Err(e) = self
            .transport
            .call(&self.leader, &self.stream_id, body, ContentType::Protobuf)
            .await
        {
            tracing::warn!(call = "ACKNOWLEDGE", error = %e, "mesos call failed");
        }
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
    /// stream id it came with and the most calls it had in flight at once.
    struct Master {
        calls: Mutex<Vec<(String, Call)>>,
        in_flight: AtomicUsize,
        most: AtomicUsize,
    }

    async fn master(delay: Duration) -> (Endpoint, Arc<Master>, AbortOnDropHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let m = Arc::new(Master {
            calls: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        });
        let m2 = m.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_ack_is_sent_once_with_the_session_and_at_most_in_flight_at_once() {
        let (leader, m, _server) = master(Duration::from_millis(20)).await;
        let acks = session_acks(leader, 4);
        // Queuing never waits for the master.
        acks.send((0..40).map(ack));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while m.calls.lock().unwrap().len() < 40 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not every ACK arrived"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
        assert_eq!(uuids, (0..40).collect::<Vec<u8>>(), "each once");
        let most = m.most.load(Ordering::SeqCst);
        assert!(
            (2..=4).contains(&most),
            "sent concurrently, at most 4 at once: {most}"
        );
    }

    #[tokio::test]
    async fn dropping_the_sender_stops_what_is_still_queued() {
        let (leader, m, _server) = master(Duration::from_millis(200)).await;
        let acks = session_acks(leader, 1);
        acks.send((0..10).map(ack));
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(acks);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            m.calls.lock().unwrap().len() <= 1,
            "a session's ACKs end with it"
        );
    }
}
