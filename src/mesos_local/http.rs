//! The one HTTP listener of mesos-local, shared by the master and every agent, as one
//! libprocess socket is in `mesos-local`: routing, the status codes real Mesos answers
//! before a call reaches the master (405, 415, 400, 406, 501), decoding, and the
//! long-lived RecordIO responses of SUBSCRIBE.
//!
//! Routes: `POST /api/v1/scheduler` (also `/master/api/v1/scheduler`), `POST
//! /slave(N)/api/v1/executor`, `GET /version`, `GET /master/state` (a mesos-local summary,
//! not Mesos' format), `GET /health`.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::codec::{self, Encoding};
use super::master::{self, Cmd, Reply, SubscribeReply};
use crate::proto::mesos::v1 as mesos;
use crate::proto::mesos::v1::executor as exec;
use crate::proto::mesos::v1::scheduler as sched;

/// Largest accepted call body.
const MAX_BODY: usize = 16 * 1024 * 1024;
const STREAM_ID: &str = "mesos-stream-id";

type Resp = Response<BoxBody<Bytes, Infallible>>;

/// Accepts connections until `shutdown`, serving each on `tracker`.
pub(crate) async fn serve(
    listener: TcpListener,
    cmd: mpsc::UnboundedSender<Cmd>,
    agents: usize,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "mesos-local accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let cmd = cmd.clone();
        let svc = service_fn(move |req| {
            let cmd = cmd.clone();
            async move { Ok::<_, Infallible>(route(req, cmd, agents).await) }
        });
        let conn =
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tracker.spawn(async move {
            // A client that goes away mid-stream is normal (that is how a stream ends).
            let _ = conn.await;
        });
    }
    // Event streams end when the master drops their senders; do not wait for stragglers.
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
}

fn text(status: StatusCode, body: impl Into<String>) -> Resp {
    let body: String = body.into();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)).boxed())
        // invariant: a status and a static header always build.
        .expect("static response")
}

fn reply(r: Reply) -> Resp {
    text(r.status, r.body)
}

async fn route(req: Request<Incoming>, cmd: mpsc::UnboundedSender<Cmd>, agents: usize) -> Resp {
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/api/v1/scheduler" | "/master/api/v1/scheduler" => scheduler(req, cmd).await,
        "/version" | "/master/version" if req.method() == Method::GET => {
            let body = serde_json::json!({
                "version": master::VERSION,
                "build_user": "paas mesos-local",
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.to_string())).boxed())
                // invariant: static parts only.
                .expect("static response")
        }
        "/master/state" | "/state" if req.method() == Method::GET => {
            let (tx, rx) = oneshot::channel();
            if cmd.send(Cmd::Snapshot { reply: tx }).is_err() {
                return text(StatusCode::SERVICE_UNAVAILABLE, "mesos-local is stopping");
            }
            match rx.await {
                Ok(s) => Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(
                        Full::new(Bytes::from(serde_json::to_vec(&s).unwrap_or_default())).boxed(),
                    )
                    // invariant: static parts only.
                    .expect("static response"),
                Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "mesos-local is stopping"),
            }
        }
        "/health" => text(StatusCode::OK, ""),
        "/api/v1/executor" => text(
            StatusCode::NOT_FOUND,
            "mesos-local serves the executor API per agent: POST /slave(N)/api/v1/executor (build it from MESOS_SLAVE_PID)",
        ),
        p => match agent_of(p) {
            Some(n) if (1..=agents).contains(&n) => executor(req, cmd, n - 1).await,
            _ => text(StatusCode::NOT_FOUND, ""),
        },
    }
}

/// `/slave(N)/api/v1/executor` → `N`.
fn agent_of(path: &str) -> Option<usize> {
    path.strip_prefix("/slave(")?
        .strip_suffix(")/api/v1/executor")?
        .parse()
        .ok()
}

/// The checks every call goes through before its content matters: POST, an exact
/// Content-Type, a body that decodes.
async fn read_call<T: prost::Message + Default>(
    req: Request<Incoming>,
    name: &'static str,
) -> Result<(T, http::HeaderMap), Resp> {
    if req.method() != Method::POST {
        return Err(text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Expecting 'POST', received '{}'", req.method()),
        ));
    }
    let encoding = match req.headers().get(header::CONTENT_TYPE) {
        None => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "Expecting 'Content-Type' to be present",
            ));
        }
        Some(v) => match v.to_str().ok().and_then(Encoding::from_content_type) {
            Some(e) => e,
            None => {
                return Err(text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!(
                        "Expecting 'Content-Type' of application/json or application/x-protobuf, got {v:?}"
                    ),
                ));
            }
        },
    };
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!("Failed to read the body: {e}"),
            ));
        }
    };
    match codec::decode::<T>(encoding, name, &body) {
        Ok(c) => Ok((c, parts.headers)),
        Err(e) => Err(text(
            StatusCode::BAD_REQUEST,
            format!("Failed to parse body into Call: {e}: {}", error_source(&e)),
        )),
    }
}

fn error_source(e: &dyn std::error::Error) -> String {
    e.source().map(|s| s.to_string()).unwrap_or_default()
}

fn header_str(headers: &http::HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `validation::scheduler::call::validate`: the shape of a call, before any state.
fn validate_scheduler_call(call: &sched::Call) -> Result<sched::call::Type, (StatusCode, String)> {
    use sched::call::Type as T;
    let Some(t) = call.r#type else {
        return Err((
            StatusCode::BAD_REQUEST,
            "Expecting 'type' to be present".to_owned(),
        ));
    };
    let ty = T::try_from(t).unwrap_or(T::Unknown);
    let bad = |m: &str| Err((StatusCode::BAD_REQUEST, m.to_owned()));
    if ty == T::Unknown {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            "Received an unexpected UNKNOWN call".to_owned(),
        ));
    }
    if ty == T::Subscribe {
        let Some(sub) = &call.subscribe else {
            return bad("Expecting 'subscribe' to be present");
        };
        if call.framework_id.as_ref().map(|f| &f.value)
            != sub.framework_info.id.as_ref().map(|f| &f.value)
        {
            return bad("'framework_id' differs from 'subscribe.framework_info.id'");
        }
        return Ok(ty);
    }
    if call.framework_id.is_none() {
        return bad("Expecting 'framework_id' to be present");
    }
    let missing = match ty {
        T::Accept => call.accept.is_none().then_some("accept"),
        T::Decline => call.decline.is_none().then_some("decline"),
        T::AcceptInverseOffers => call
            .accept_inverse_offers
            .is_none()
            .then_some("accept_inverse_offers"),
        T::DeclineInverseOffers => call
            .decline_inverse_offers
            .is_none()
            .then_some("decline_inverse_offers"),
        T::Kill => call.kill.is_none().then_some("kill"),
        T::Shutdown => call.shutdown.is_none().then_some("shutdown"),
        T::Acknowledge => call.acknowledge.is_none().then_some("acknowledge"),
        T::AcknowledgeOperationStatus => call
            .acknowledge_operation_status
            .is_none()
            .then_some("acknowledge_operation_status"),
        T::Reconcile => call.reconcile.is_none().then_some("reconcile"),
        T::ReconcileOperations => call
            .reconcile_operations
            .is_none()
            .then_some("reconcile_operations"),
        T::Message => call.message.is_none().then_some("message"),
        T::Request => call.request.is_none().then_some("request"),
        T::UpdateFramework => call
            .update_framework
            .is_none()
            .then_some("update_framework"),
        T::Teardown | T::Revive | T::Suppress | T::Subscribe | T::Unknown => None,
    };
    if let Some(m) = missing {
        return bad(&format!("Expecting '{m}' to be present"));
    }
    if let Some(a) = &call.acknowledge
        && !master::valid_uuid(&a.uuid)
    {
        return bad("Not a valid UUID");
    }
    if let Some(u) = &call.update_framework
        && u.framework_info.id.as_ref().map(|f| &f.value)
            != call.framework_id.as_ref().map(|f| &f.value)
    {
        return bad("'framework_id' differs from 'update_framework.framework_info.id'");
    }
    Ok(ty)
}

async fn scheduler(req: Request<Incoming>, cmd: mpsc::UnboundedSender<Cmd>) -> Resp {
    let accept = header_str(req.headers(), header::ACCEPT).map(str::to_owned);
    let (call, headers) = match read_call::<sched::Call>(req, codec::SCHEDULER_CALL).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let ty = match validate_scheduler_call(&call) {
        Ok(t) => t,
        Err((status, why)) => return text(status, why),
    };
    let stream_id = header_str(&headers, STREAM_ID).map(str::to_owned);
    if ty == sched::call::Type::Subscribe {
        if stream_id.is_some() {
            return text(
                StatusCode::BAD_REQUEST,
                "Subscribe calls should not include the 'Mesos-Stream-Id' header",
            );
        }
        let Some(encoding) = Encoding::negotiate(accept.as_deref()) else {
            return text(
                StatusCode::NOT_ACCEPTABLE,
                "Expecting 'Accept' to allow application/json or application/x-protobuf",
            );
        };
        let (tx, rx) = oneshot::channel();
        let sent = cmd.send(Cmd::Subscribe {
            call,
            encoding,
            reply: tx,
        });
        return stream_response(sent.is_ok(), rx, encoding, cmd).await;
    }
    let (tx, rx) = oneshot::channel();
    if cmd
        .send(Cmd::Call {
            call,
            stream_id,
            reply: tx,
        })
        .is_err()
    {
        return text(StatusCode::SERVICE_UNAVAILABLE, "mesos-local is stopping");
    }
    match rx.await {
        Ok(r) => reply(r),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "mesos-local is stopping"),
    }
}

/// `validateExecutorCall`: the shape of an executor call.
fn validate_executor_call(call: &exec::Call) -> Result<exec::call::Type, String> {
    use exec::call::Type as T;
    let Some(t) = call.r#type else {
        return Err("Expecting 'type' to be present".into());
    };
    if call.executor_id.value.is_empty() {
        return Err("Expecting 'executor_id' to be present".into());
    }
    if call.framework_id.value.is_empty() {
        return Err("Expecting 'framework_id' to be present".into());
    }
    let ty = T::try_from(t).unwrap_or(T::Unknown);
    match ty {
        T::Subscribe if call.subscribe.is_none() => {
            Err("Expecting 'subscribe' to be present".into())
        }
        T::Message if call.message.is_none() => Err("Expecting 'message' to be present".into()),
        T::Update => {
            let Some(u) = &call.update else {
                return Err("Expecting 'update' to be present".into());
            };
            let s = &u.status;
            if !s.uuid.as_deref().is_some_and(master::valid_uuid) {
                return Err("Not a valid UUID".into());
            }
            if s.executor_id
                .as_ref()
                .is_some_and(|e| e.value != call.executor_id.value)
            {
                return Err("ExecutorID in Call and TaskStatus must match".into());
            }
            if s.source != Some(mesos::task_status::Source::Executor as i32) {
                return Err("Received Call from executor with invalid source".into());
            }
            if s.state == mesos::TaskState::TaskStaging as i32 {
                return Err("Received TASK_STAGING from executor".into());
            }
            Ok(ty)
        }
        T::Unknown => Err("Received an unexpected UNKNOWN call".into()),
        _ => Ok(ty),
    }
}

async fn executor(req: Request<Incoming>, cmd: mpsc::UnboundedSender<Cmd>, agent: usize) -> Resp {
    let accept = header_str(req.headers(), header::ACCEPT).map(str::to_owned);
    let (call, _) = match read_call::<exec::Call>(req, codec::EXECUTOR_CALL).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let ty = match validate_executor_call(&call) {
        Ok(t) => t,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    if ty == exec::call::Type::Subscribe {
        let Some(encoding) = Encoding::negotiate(accept.as_deref()) else {
            return text(
                StatusCode::NOT_ACCEPTABLE,
                "Expecting 'Accept' to allow application/json or application/x-protobuf",
            );
        };
        let (tx, rx) = oneshot::channel();
        let sent = cmd.send(Cmd::ExecutorSubscribe {
            agent,
            call,
            encoding,
            reply: tx,
        });
        return stream_response(sent.is_ok(), rx, encoding, cmd).await;
    }
    let (tx, rx) = oneshot::channel();
    if cmd
        .send(Cmd::ExecutorCall {
            agent,
            call,
            reply: tx,
        })
        .is_err()
    {
        return text(StatusCode::SERVICE_UNAVAILABLE, "mesos-local is stopping");
    }
    match rx.await {
        Ok(r) => reply(r),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "mesos-local is stopping"),
    }
}

async fn stream_response(
    sent: bool,
    rx: oneshot::Receiver<SubscribeReply>,
    encoding: Encoding,
    cmd: mpsc::UnboundedSender<Cmd>,
) -> Resp {
    if !sent {
        return text(StatusCode::SERVICE_UNAVAILABLE, "mesos-local is stopping");
    }
    match rx.await {
        Ok(SubscribeReply::Status(r)) => reply(r),
        Ok(SubscribeReply::Stream {
            stream_id,
            rx,
            on_close,
        }) => {
            let mut b = Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, encoding.media_type());
            if let Some(id) = stream_id {
                b = b.header("Mesos-Stream-Id", id);
            }
            let body = EventBody {
                rx,
                on_close: Some((cmd, *on_close)),
            };
            // invariant: the stream id is a UUID string, a valid header value.
            b.body(body.boxed()).expect("stream response")
        }
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "mesos-local is stopping"),
    }
}

/// A SUBSCRIBE response body: RecordIO records as the master sends them; it ends when the
/// master drops the sender. When hyper drops it (the client went away, or the stream
/// ended) the master is told, so it can mark the subscriber disconnected.
struct EventBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
    on_close: Option<(mpsc::UnboundedSender<Cmd>, Cmd)>,
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for EventBody {
    fn drop(&mut self) {
        if let Some((tx, cmd)) = self.on_close.take() {
            // The master may be gone already (shutdown); nothing to tell then.
            let _ = tx.send(cmd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_paths() {
        assert_eq!(agent_of("/slave(1)/api/v1/executor"), Some(1));
        assert_eq!(agent_of("/slave(12)/api/v1/executor"), Some(12));
        assert_eq!(agent_of("/slave(x)/api/v1/executor"), None);
        assert_eq!(agent_of("/slave(1)/state"), None);
    }

    #[test]
    fn scheduler_call_shape() {
        let call = |ty: Option<sched::call::Type>| sched::Call {
            r#type: ty.map(|t| t as i32),
            framework_id: Some("f".into()),
            ..Default::default()
        };
        let status = |c: &sched::Call| validate_scheduler_call(c).err().map(|r| r.0);
        assert_eq!(status(&call(None)), Some(StatusCode::BAD_REQUEST));
        assert_eq!(
            status(&call(Some(sched::call::Type::Unknown))),
            Some(StatusCode::NOT_IMPLEMENTED)
        );
        assert_eq!(
            status(&call(Some(sched::call::Type::Accept))),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(status(&call(Some(sched::call::Type::Revive))), None);
        let mut ack = call(Some(sched::call::Type::Acknowledge));
        ack.acknowledge = Some(sched::call::Acknowledge {
            agent_id: "a".into(),
            task_id: "t".into(),
            uuid: vec![0; 16],
        });
        assert_eq!(
            status(&ack),
            Some(StatusCode::BAD_REQUEST),
            "nil uuid has no version"
        );
        ack.acknowledge.as_mut().unwrap().uuid = uuid::Uuid::new_v4().as_bytes().to_vec();
        assert_eq!(status(&ack), None);
        let mut no_fid = call(Some(sched::call::Type::Teardown));
        no_fid.framework_id = None;
        assert_eq!(status(&no_fid), Some(StatusCode::BAD_REQUEST));
    }
}
