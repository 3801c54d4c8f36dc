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
