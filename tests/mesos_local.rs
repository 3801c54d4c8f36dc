//! mesos-local's wire contract, checked over real HTTP on loopback: the status codes real
//! Mesos answers, the SUBSCRIBE stream (JSON and protobuf), offers, filters, launches,
//! reliable updates with retries, reconciliation, and the executor failures an agent
//! reports. Clients here are raw HTTP, not our scheduler: `mesos_local_framework.rs` runs
//! the real framework against it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use paas::mesos_local::{self, ContainerizerMode, LocalConfig, MesosLocal, Quantities};
use paas::recordio::Decoder;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A running mesos-local, stopped (executors included) when dropped.
struct Local {
    handle: MesosLocal,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Local {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn local(mode: ContainerizerMode, tune: impl FnOnce(&mut LocalConfig)) -> Local {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LocalConfig::new(dir.path());
    cfg.containerizer = mode;
    cfg.executor_path = Some(env!("CARGO_BIN_EXE_paas").into());
    cfg.heartbeat_interval = Duration::from_millis(300);
    cfg.allocation_interval = Duration::from_millis(100);
    cfg.update_retry = Duration::from_millis(400);
    cfg.tick = Duration::from_millis(20);
    tune(&mut cfg);
    let shutdown = CancellationToken::new();
    let handle = mesos_local::start(cfg, shutdown.clone(), &TaskTracker::new())
        .await
        .unwrap();
    Local {
        handle,
        shutdown,
        _dir: dir,
    }
}

struct Resp {
    status: u16,
    body: Bytes,
}

async fn post(url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Resp {
    request("POST", url, headers, body).await
}

async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Resp { status, body }
}

/// A SUBSCRIBE stream read record by record.
struct Stream {
    status: u16,
    headers: http::HeaderMap,
    body: Incoming,
    decoder: Decoder,
    skipped_offers: std::collections::VecDeque<Value>,
    _conn: tokio::task::JoinHandle<()>,
}

impl Stream {
    async fn open(
        addr: std::net::SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> Stream {
        Self::open_bytes(addr, path, headers, body.into_bytes()).await
    }

    async fn open_bytes(
        addr: std::net::SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Stream {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = http::Request::builder()
            .method("POST")
            .uri(path)
            .header("host", addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        Stream {
            status,
            headers,
            body: resp.into_body(),
            decoder: Decoder::new(),
            skipped_offers: Default::default(),
            _conn: conn,
        }
    }

    /// The next record, or `None` when the stream ended; panics after 10 s.
    async fn next_raw(&mut self) -> Option<Bytes> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(r) = self.decoder.next_record().unwrap() {
                    return Some(r);
                }
                match self.body.frame().await {
                    None => return None,
                    Some(Err(_)) => return None,
                    Some(Ok(f)) => {
                        if let Ok(d) = f.into_data() {
                            self.decoder.push(&d);
                        }
                    }
                }
            }
        })
        .await
        .expect("an event within 10 s")
    }

    async fn next(&mut self) -> Option<Value> {
        self.next_raw()
            .await
            .map(|b| serde_json::from_slice(&b).expect("JSON event"))
    }

    /// The next event of type `ty`, skipping others (heartbeats, offers). OFFERS events
    /// skipped on the way are kept: the next `next_of("OFFERS")` returns them first.
    async fn next_of(&mut self, ty: &str) -> Value {
        if ty == "OFFERS"
            && let Some(ev) = self.skipped_offers.pop_front()
        {
            return ev;
        }
        loop {
            let ev = self
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended before {ty}"));
            if ev["type"] == ty {
                return ev;
            }
            if ev["type"] == "OFFERS" {
                self.skipped_offers.push_back(ev);
            }
        }
    }

    fn stream_id(&self) -> String {
        self.headers["mesos-stream-id"].to_str().unwrap().to_owned()
    }
}

const JSON: (&str, &str) = ("content-type", "application/json");
const ACCEPT_JSON: (&str, &str) = ("accept", "application/json");

fn subscribe_body(id: Option<&str>, partition_aware: bool) -> String {
    let mut caps = vec![json!({"type": "MULTI_ROLE"})];
    if partition_aware {
        caps.push(json!({"type": "PARTITION_AWARE"}));
    }
    let mut info = json!({"user": "root", "name": "raw", "roles": ["*"], "capabilities": caps, "failover_timeout": 60});
    let mut call = json!({"type": "SUBSCRIBE"});
    if let Some(id) = id {
        info["id"] = json!({"value": id});
        call["framework_id"] = json!({"value": id});
    }
    call["subscribe"] = json!({"framework_info": info});
    call.to_string()
}

async fn subscribe(l: &Local, id: Option<&str>) -> (Stream, String) {
    let mut s = Stream::open(
        l.handle.addr,
        "/api/v1/scheduler",
        &[JSON, ACCEPT_JSON],
        subscribe_body(id, false),
    )
    .await;
    assert_eq!(s.status, 200);
    let ev = s.next().await.unwrap();
    assert_eq!(ev["type"], "SUBSCRIBED", "{ev}");
    let fid = ev["subscribed"]["framework_id"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    (s, fid)
}

fn scheduler_url(l: &Local) -> String {
    format!("{}/api/v1/scheduler", l.handle.master_url)
}

async fn call(l: &Local, stream_id: &str, body: Value) -> Resp {
    post(
        &scheduler_url(l),
        &[JSON, ("mesos-stream-id", stream_id)],
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn status_codes_match_mesos() {
    let l = local(ContainerizerMode::Simulated, |_| {}).await;
    let url = scheduler_url(&l);
    assert_eq!(request("GET", &url, &[], "").await.status, 405);
    assert_eq!(
        post(
            &url,
            &[("content-type", "application/json; charset=utf-8")],
            "{}"
        )
        .await
        .status,
        415
    );
    assert_eq!(post(&url, &[], "{}").await.status, 400, "no Content-Type");
    assert_eq!(post(&url, &[JSON], "{not json").await.status, 400);
    assert_eq!(post(&url, &[JSON], "{}").await.status, 400, "no type");
    assert_eq!(
        post(&url, &[JSON], r#"{"type":"UNKNOWN"}"#).await.status,
        501
    );
    assert_eq!(
        post(
            &url,
            &[JSON, ("accept", "text/html")],
            subscribe_body(None, false)
        )
        .await
        .status,
        406
    );
    assert_eq!(
        post(
            &url,
            &[JSON, ("mesos-stream-id", "x")],
            subscribe_body(None, false)
        )
        .await
        .status,
        400,
        "SUBSCRIBE with a stream id"
    );
    let body = json!({"type": "REVIVE", "framework_id": {"value": "nope"}});
    let r = call(&l, "x", body).await;
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("Framework cannot be found"));

    let (mut s, fid) = subscribe(&l, None).await;
    assert_eq!(s.headers["content-type"], "application/json");
    assert!(fid.ends_with("-0000"), "{fid}");
    let sid = s.stream_id();
    assert_eq!(
        s.next().await.unwrap()["type"],
        "HEARTBEAT",
        "a heartbeat right after SUBSCRIBED"
    );

    let revive = json!({"type": "REVIVE", "framework_id": {"value": fid}});
    let no_sid = post(&url, &[JSON], revive.to_string()).await;
    assert_eq!(no_sid.status, 400, "missing Mesos-Stream-Id");
    assert_eq!(
        call(&l, "stale", revive.clone()).await.status,
        400,
        "wrong stream id"
    );
    let ok = call(&l, &sid, revive.clone()).await;
    assert_eq!(ok.status, 202);
    assert!(ok.body.is_empty());
    let bad_ack = json!({"type": "ACKNOWLEDGE", "framework_id": {"value": fid},
        "acknowledge": {"agent_id": {"value": "a"}, "task_id": {"value": "t"}, "uuid": "AAAA"}});
    assert_eq!(
        call(&l, &sid, bad_ack).await.status,
        400,
        "not a 16-byte uuid"
    );

    // Periodic heartbeats (300 ms here).
    let mut heartbeats = 0;
    while heartbeats < 2 {
        if s.next().await.unwrap()["type"] == "HEARTBEAT" {
            heartbeats += 1;
        }
    }

    // Resubscribing with the id fails the old stream over; the old stream id is void.
    let (mut s2, fid2) = subscribe(&l, Some(&fid)).await;
    assert_eq!(fid2, fid);
    let err = s.next_of("ERROR").await;
    assert_eq!(err["error"]["message"], "Framework failed over");
    assert!(
        s.next().await.is_none(),
        "the old stream is closed after the ERROR"
    );
    assert_eq!(call(&l, &sid, revive.clone()).await.status, 400);
    assert_eq!(call(&l, &s2.stream_id(), revive).await.status, 202);

    // A dropped stream ends; calls get 403 until the framework resubscribes.
    let sid2 = s2.stream_id();
    assert_eq!(
        l.handle.drop_stream(Some(&fid)).await.unwrap(),
        Some(fid.clone())
    );
    while s2.next().await.is_some() {}
    let revive = json!({"type": "REVIVE", "framework_id": {"value": fid}});
    assert_eq!(call(&l, &sid2, revive).await.status, 403);
    let (_s3, fid3) = subscribe(&l, Some(&fid)).await;
    assert_eq!(fid3, fid);
}

fn accept_body(fid: &str, offer_id: &Value, agent_id: &Value, task: &str, cpus: f64) -> Value {
    json!({"type": "ACCEPT", "framework_id": {"value": fid}, "accept": {
        "offer_ids": [offer_id],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
            "name": task, "task_id": {"value": task}, "agent_id": agent_id,
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
                          {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}}],
            "executor": {"executor_id": {"value": format!("e-{task}")}, "command": {"value": "true"},
                "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}]}
        }]}}],
        "filters": {"refuse_seconds": 0}}})
}

fn scalar(offer: &Value, name: &str) -> f64 {
    offer["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap()["scalar"]["value"]
        .as_f64()
        .unwrap()
}

#[tokio::test]
async fn offers_launch_reliable_updates_kill_and_reconcile() {
    let l = local(ContainerizerMode::Simulated, |c| {
        c.resources = Quantities::parse("cpus:2;mem:1024;ports:[31000-31009]").unwrap();
    })
    .await;
    let (mut s, fid) = subscribe(&l, None).await;
    let sid = s.stream_id();

    // One offer per agent, with everything the agent has, allocated to our role.
    let offers = s.next_of("OFFERS").await;
    let offer = offers["offers"]["offers"][0].clone();
    assert_eq!(offer["allocation_info"]["role"], "*");
    assert_eq!(offer["url"]["path"], "/slave(1)");
    assert_eq!(scalar(&offer, "cpus"), 2.0);
    let agent_id = offer["agent_id"]["value"].as_str().unwrap().to_owned();
    let launch = accept_body(&fid, &offer["id"], &offer["agent_id"], "t1", 0.5);
    assert_eq!(call(&l, &sid, launch).await.status, 202);

    // The update is reliable: it carries a uuid and comes again until acknowledged.
    let u1 = s.next_of("UPDATE").await;
    let st = &u1["update"]["status"];
    assert_eq!(st["state"], "TASK_RUNNING");
    assert_eq!(st["source"], "SOURCE_EXECUTOR");
    assert_eq!(st["agent_id"]["value"], agent_id);
    let uuid = st["uuid"].as_str().unwrap().to_owned();
    let again = s.next_of("UPDATE").await;
    assert_eq!(
        again["update"]["status"]["uuid"], uuid,
        "resent until acknowledged"
    );
    let ack = json!({"type": "ACKNOWLEDGE", "framework_id": {"value": fid},
        "acknowledge": {"agent_id": {"value": agent_id}, "task_id": {"value": "t1"}, "uuid": uuid}});
    assert_eq!(call(&l, &sid, ack).await.status, 202);

    // The next offer has what is left (2 - 0.5 - 0.1 cpus) and names our executor.
    let offers = s.next_of("OFFERS").await;
    let o = offers["offers"]["offers"][0].clone();
    assert_eq!(scalar(&o, "cpus"), 1.4);
    assert_eq!(o["executor_ids"][0]["value"], "e-t1");

    // Offers are single-use: the first offer again is an invalid-offer launch.
    let stale = accept_body(&fid, &offer["id"], &offer["agent_id"], "t2", 0.1);
    assert_eq!(call(&l, &sid, stale).await.status, 202);
    let lost = s.next_of("UPDATE").await;
    let st = &lost["update"]["status"];
    assert_eq!(st["task_id"]["value"], "t2");
    assert_eq!(st["state"], "TASK_LOST");
    assert_eq!(st["reason"], "REASON_INVALID_OFFERS");
    assert_eq!(st["source"], "SOURCE_MASTER");
    assert!(
        st.get("uuid").is_none(),
        "master-generated updates carry no uuid"
    );

    // More than offered: TASK_ERROR.
    let greedy = accept_body(&fid, &o["id"], &o["agent_id"], "t3", 64.0);
    assert_eq!(call(&l, &sid, greedy).await.status, 202);
    let err = s.next_of("UPDATE").await;
    assert_eq!(err["update"]["status"]["state"], "TASK_ERROR");
    assert_eq!(err["update"]["status"]["reason"], "REASON_TASK_INVALID");

    // Reconciliation: a known task gets its latest state, an unknown one TASK_LOST; no uuids.
    let rec = json!({"type": "RECONCILE", "framework_id": {"value": fid}, "reconcile": {"tasks": [
        {"task_id": {"value": "t1"}, "agent_id": {"value": agent_id}},
        {"task_id": {"value": "ghost"}, "agent_id": {"value": agent_id}}]}});
    assert_eq!(call(&l, &sid, rec).await.status, 202);
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 2 {
        let u = s.next_of("UPDATE").await;
        let st = u["update"]["status"].clone();
        assert!(st.get("uuid").is_none());
        assert_eq!(st["reason"], "REASON_RECONCILIATION");
        seen.insert(st["task_id"]["value"].as_str().unwrap().to_owned(), st);
    }
    assert_eq!(seen["t1"]["state"], "TASK_RUNNING");
    assert_eq!(seen["ghost"]["state"], "TASK_LOST");
    assert_eq!(
        seen["ghost"]["message"],
        "Reconciliation: Task is unknown to the agent"
    );

    // KILL: the executor answers TASK_KILLED; acknowledging it removes the task.
    let kill = json!({"type": "KILL", "framework_id": {"value": fid}, "kill": {"task_id": {"value": "t1"}}});
    assert_eq!(call(&l, &sid, kill).await.status, 202);
    let k = s.next_of("UPDATE").await;
    assert_eq!(k["update"]["status"]["state"], "TASK_KILLED");
    let ack = json!({"type": "ACKNOWLEDGE", "framework_id": {"value": fid},
        "acknowledge": {"agent_id": {"value": agent_id}, "task_id": {"value": "t1"},
        "uuid": k["update"]["status"]["uuid"]}});
    assert_eq!(call(&l, &sid, ack).await.status, 202);
    let snap = l.handle.snapshot().await.unwrap();
    assert!(snap.tasks.is_empty(), "{snap:?}");
    assert_eq!(snap.executors, 0);
}

#[tokio::test]
async fn decline_filters_suppress_revive_rescind_and_agent_loss() {
    let l = local(ContainerizerMode::Simulated, |_| {}).await;
    let (mut s, fid) = subscribe(&l, None).await;
    let sid = s.stream_id();
    let offers = s.next_of("OFFERS").await;
    let id = offers["offers"]["offers"][0]["id"].clone();
    let decline = json!({"type": "DECLINE", "framework_id": {"value": fid},
        "decline": {"offer_ids": [id], "filters": {"refuse_seconds": 3600}}});
    assert_eq!(call(&l, &sid, decline).await.status, 202);
    // Filtered: a second of heartbeats and no offer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < deadline {
        let ev = tokio::time::timeout(Duration::from_millis(400), s.next()).await;
        if let Ok(Some(ev)) = ev {
            assert_ne!(ev["type"], "OFFERS", "the filter holds");
        }
    }
    // SUPPRESS then REVIVE: REVIVE clears the filter, offers come back.
    let suppress = json!({"type": "SUPPRESS", "framework_id": {"value": fid}});
    assert_eq!(call(&l, &sid, suppress).await.status, 202);
    let revive = json!({"type": "REVIVE", "framework_id": {"value": fid}});
    assert_eq!(call(&l, &sid, revive).await.status, 202);
    let again = s.next_of("OFFERS").await;
    assert_ne!(again["offers"]["offers"][0]["id"], id);

    // A rescinded offer is announced and void.
    let oid = again["offers"]["offers"][0]["id"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        l.handle.rescind_offer(None).await.unwrap(),
        Some(oid.clone())
    );
    let r = s.next_of("RESCIND").await;
    assert_eq!(r["rescind"]["offer_id"]["value"], oid);

    // Losing the agent: a FAILURE names it.
    let agent = l.handle.lose_agent(0).await.unwrap().unwrap();
    let f = s.next_of("FAILURE").await;
    assert_eq!(f["failure"]["agent_id"]["value"], agent);
    assert!(f["failure"].get("executor_id").is_none());
}

#[tokio::test]
async fn protobuf_stream_and_master_failover() {
    use paas::proto::mesos::v1::scheduler::{Call, Event, call, event};
    use prost::Message;
    let l = local(ContainerizerMode::Simulated, |_| {}).await;
    // A failover timeout, as every real framework sets: with the default 0 the framework
    // could be removed the moment its stream closed, racing the resubscribe below.
    let info = paas::proto::mesos::v1::FrameworkInfo {
        user: "root".into(),
        name: "pb".into(),
        failover_timeout: Some(60.0),
        ..Default::default()
    };
    let sub = Call {
        r#type: Some(call::Type::Subscribe as i32),
        subscribe: Some(call::Subscribe {
            framework_info: info.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pb = [
        ("content-type", "application/x-protobuf"),
        ("accept", "application/x-protobuf"),
    ];
    let mut s =
        Stream::open_bytes(l.handle.addr, "/api/v1/scheduler", &pb, sub.encode_to_vec()).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.headers["content-type"], "application/x-protobuf");
    let ev = Event::decode(s.next_raw().await.unwrap()).unwrap();
    assert_eq!(ev.r#type, Some(event::Type::Subscribed as i32));
    let sub_ev = ev.subscribed.unwrap();
    assert_eq!(sub_ev.heartbeat_interval_seconds, Some(15.0));
    let master_id = sub_ev.master_info.unwrap().id;
    let fid = sub_ev.framework_id;

    let new_master = l.handle.fail_over().await.unwrap().unwrap();
    assert_ne!(new_master, master_id);
    while s.next_raw().await.is_some() {}
    let mut info2 = info;
    info2.id = Some(fid.clone());
    let resub = Call {
        framework_id: Some(fid.clone()),
        r#type: Some(call::Type::Subscribe as i32),
        subscribe: Some(call::Subscribe {
            framework_info: info2,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut s2 = Stream::open_bytes(
        l.handle.addr,
        "/api/v1/scheduler",
        &pb,
        resub.encode_to_vec(),
    )
    .await;
    let ev = Event::decode(s2.next_raw().await.unwrap()).unwrap();
    let sub_ev = ev.subscribed.unwrap();
    assert_eq!(
        sub_ev.framework_id, fid,
        "the same framework id is accepted"
    );
    assert_eq!(sub_ev.master_info.unwrap().id, new_master);
}

#[tokio::test]
async fn executor_exit_and_registration_timeout_fail_tasks() {
    let l = local(ContainerizerMode::Process, |c| {
        c.registration_timeout = Duration::from_millis(700);
    })
    .await;
    let (mut s, fid) = subscribe(&l, None).await;
    let sid = s.stream_id();
    let offers = s.next_of("OFFERS").await;
    let offer = offers["offers"]["offers"][0].clone();
    let task = |id: &str, cmd: &str| {
        json!({"name": id, "task_id": {"value": id}, "agent_id": offer["agent_id"],
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
            "executor": {"executor_id": {"value": id}, "command": {"value": cmd}}})
    };
    let accept = json!({"type": "ACCEPT", "framework_id": {"value": fid}, "accept": {
        "offer_ids": [offer["id"]],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [
            task("exits", "exit 3"), task("hangs", "sleep 30")]}}]}});
    assert_eq!(call(&l, &sid, accept).await.status, 202);
    let mut states = std::collections::BTreeMap::new();
    let mut failures = Vec::new();
    while states.len() < 2 || failures.len() < 2 {
        let ev = s.next().await.unwrap();
        match ev["type"].as_str().unwrap() {
            "UPDATE" => {
                let st = &ev["update"]["status"];
                assert_eq!(st["source"], "SOURCE_AGENT");
                assert!(st["uuid"].is_string(), "agent updates are reliable");
                states.insert(
                    st["task_id"]["value"].as_str().unwrap().to_owned(),
                    (st["state"].clone(), st["reason"].clone()),
                );
                let ack = json!({"type": "ACKNOWLEDGE", "framework_id": {"value": fid},
                    "acknowledge": {"agent_id": st["agent_id"], "task_id": st["task_id"], "uuid": st["uuid"]}});
                assert_eq!(call(&l, &sid, ack).await.status, 202);
            }
            "FAILURE" => failures.push(ev["failure"].clone()),
            _ => {}
        }
    }
    assert_eq!(
        states["exits"],
        (json!("TASK_FAILED"), json!("REASON_EXECUTOR_TERMINATED"))
    );
    assert_eq!(
        states["hangs"],
        (
            json!("TASK_FAILED"),
            json!("REASON_EXECUTOR_REGISTRATION_TIMEOUT")
        )
    );
    let exits = failures
        .iter()
        .find(|f| f["executor_id"]["value"] == "exits")
        .unwrap();
    assert_eq!(exits["status"], 3 << 8, "a raw waitpid status");
}
