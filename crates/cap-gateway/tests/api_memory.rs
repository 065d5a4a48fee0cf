//! The gateway over the in-memory bus, blob store and job store, with a scheduler, a
//! safety kernel and a worker in the same process: auth, tenant isolation, the jobs
//! API, pagination, errors, approvals, dead letters and the event streams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cap_blob::MemoryBlobStore;
use cap_bus::MemoryBus;
use cap_gateway::{Gateway, GatewayConfig};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_runtime::{Context, JobError, Worker};
use cap_safety::Kernel;
use cap_safety::policy::Policy;
use cap_scheduler::core::Config;
use cap_scheduler::{MemoryJobStore, Scheduler, SchedulerOptions};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const POLICY: &str = r#"
version: 1
rules:
  - id: needs-a-human
    match: { topics: ["job.approve"] }
    decision: require_approval
    reason: needs sign-off
"#;

async fn echo(_ctx: Context, v: Value) -> Result<Value, JobError> {
    Ok(json!({"echo": v}))
}

async fn slow(ctx: Context, _v: Value) -> Result<Value, JobError> {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(30)) => Ok(json!("late")),
        _ = ctx.cancellation().cancelled() => Err(JobError::cancelled("stopped")),
    }
}

async fn broken(_ctx: Context, _v: Value) -> Result<Value, JobError> {
    Err(JobError::failed("always fails"))
}

struct Stack {
    app: axum::Router,
    stop: CancellationToken,
}

async fn stack(config: GatewayConfig) -> Stack {
    let bus = MemoryBus::new();
    let blobs = MemoryBlobStore::emulating_redis(Default::default());
    let jobs = MemoryJobStore::new();
    let kernel = Kernel::new(Policy::from_text(POLICY, "policy.yaml").unwrap());
    let options = SchedulerOptions {
        config: Config {
            max_retries: 0,
            ..Config::default()
        },
        tick: Duration::from_millis(20),
        ..Default::default()
    };
    let scheduler = Scheduler::new(
        Packets::new(bus.clone(), PacketConfig::new("scheduler-1")),
        Arc::new(kernel),
        jobs.clone(),
        options,
    );
    let stop = CancellationToken::new();
    tokio::spawn(scheduler.run(stop.clone()));
    let worker = Worker::builder(bus.clone(), blobs.clone())
        .id("worker-1")
        .handler("job.echo", echo)
        .handler("job.approve", echo)
        .handler("job.slow", slow)
        .handler("job.broken", broken)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    std::mem::forget(worker);
    let gateway = Gateway::new(
        Packets::new(bus, PacketConfig::new("gateway-1")),
        jobs,
        blobs,
        config,
    );
    gateway.follow_events(stop.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    Stack {
        app: gateway.router(),
        stop,
    }
}

fn keys() -> GatewayConfig {
    GatewayConfig::default()
        .api_key("key-acme", "acme")
        .api_key("key-beta", "beta")
}

/// A request as tenant `acme` (or as given).
struct Req {
    method: &'static str,
    path: String,
    key: Option<&'static str>,
    tenant: Option<&'static str>,
    body: Option<Vec<u8>>,
    headers: Vec<(&'static str, String)>,
}

fn req(method: &'static str, path: impl Into<String>) -> Req {
    Req {
        method,
        path: path.into(),
        key: Some("key-acme"),
        tenant: Some("acme"),
        body: None,
        headers: Vec::new(),
    }
}

impl Req {
    fn json(mut self, v: Value) -> Self {
        self.body = Some(serde_json::to_vec(&v).unwrap());
        self
    }
    fn beta(mut self) -> Self {
        self.key = Some("key-beta");
        self.tenant = Some("beta");
        self
    }
    fn header(mut self, k: &'static str, v: &str) -> Self {
        self.headers.push((k, v.to_owned()));
        self
    }
    fn build(self) -> Request<Body> {
        let mut b = Request::builder().method(self.method).uri(self.path);
        if let Some(k) = self.key {
            b = b.header("X-API-Key", k);
        }
        if let Some(t) = self.tenant {
            b = b.header("X-Tenant-ID", t);
        }
        for (k, v) in self.headers {
            b = b.header(k, v);
        }
        match self.body {
            Some(body) => b
                .header("Content-Type", "application/json")
                .body(Body::from(body))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        }
    }
}

async fn call(app: &axum::Router, r: Req) -> (StatusCode, Value) {
    let res = app.clone().oneshot(r.build()).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, v)
}

async fn submit(app: &axum::Router, topic: &str, prompt: &str) -> String {
    let (s, v) = call(
        app,
        req("POST", "/api/v1/jobs").json(json!({"topic": topic, "prompt": prompt})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["job_id"].as_str().unwrap().to_owned()
}

async fn wait_state(app: &axum::Router, id: &str, want: &str) -> Value {
    for _ in 0..750 {
        let (s, v) = call(app, req("GET", format!("/api/v1/jobs/{id}"))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["state"] == want {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id} never reached {want}");
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_submitted_followed_and_its_result_read() {
    let s = stack(keys()).await;
    let id = submit(&s.app, "job.echo", "hello").await;
    let job = wait_state(&s.app, &id, "SUCCEEDED").await;
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["tenant"], "acme");
    assert_eq!(job["topic"], "job.echo");
    assert_eq!(job["result"], json!({"echo": {"prompt": "hello"}}));
    assert!(job["result_ptr"].as_str().unwrap().starts_with("redis://"));
    assert_eq!(job["retry_count"], 0);
    assert_eq!(job["error"], Value::Null);
    assert!(job["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(job["completed_at"].as_str().unwrap().contains('T'));
    assert!(job["started_at"].is_string());
    assert_eq!(job["decisions"][0]["action"], "ALLOW");
    let states: Vec<&str> = job["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["PENDING", "SCHEDULED", "DISPATCHED", "RUNNING", "SUCCEEDED"]
    );
    let (st, d) = call(&s.app, req("GET", format!("/api/v1/jobs/{id}/decisions"))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(d.as_array().unwrap().len(), 1);
    // Ended: a cancel is a conflict.
    let (st, v) = call(&s.app, req("POST", format!("/api/v1/jobs/{id}/cancel"))).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(error_code(&v), "conflict");
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_tenants_are_enforced() {
    let s = stack(keys()).await;
    let id = submit(&s.app, "job.echo", "mine").await;
    let path = format!("/api/v1/jobs/{id}");

    let mut no_key = req("GET", path.clone());
    no_key.key = None;
    let (st, v) = call(&s.app, no_key).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&v), "unauthorized");
    assert!(v["error"]["message"].is_string());

    let mut bad_key = req("GET", path.clone());
    bad_key.key = Some("nope");
    assert_eq!(call(&s.app, bad_key).await.0, StatusCode::UNAUTHORIZED);

    // A bearer token works like X-API-Key.
    let mut bearer = req("GET", path.clone()).header("Authorization", "Bearer key-acme");
    bearer.key = None;
    assert_eq!(call(&s.app, bearer).await.0, StatusCode::OK);

    // The tenant header is required and must be the key's tenant.
    let mut no_tenant = req("GET", path.clone());
    no_tenant.tenant = None;
    let (st, v) = call(&s.app, no_tenant).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&v), "tenant_required");
    let mut cordum_header = req("GET", path.clone()).header("X-Cordum-Tenant", "acme");
    cordum_header.tenant = None;
    assert_eq!(call(&s.app, cordum_header).await.0, StatusCode::OK);
    let mut other = req("GET", path.clone());
    other.tenant = Some("beta");
    assert_eq!(call(&s.app, other).await.0, StatusCode::FORBIDDEN);
    let mixed = req("GET", path.clone()).header("X-Cordum-Tenant", "beta");
    assert_eq!(call(&s.app, mixed).await.0, StatusCode::FORBIDDEN);

    // Another tenant never sees the job: not by id, not in lists, not to cancel.
    wait_state(&s.app, &id, "SUCCEEDED").await;
    let (st, v) = call(&s.app, req("GET", path.clone()).beta()).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&v), "not_found");
    let (_, list) = call(&s.app, req("GET", "/api/v1/jobs").beta()).await;
    assert_eq!(list["items"], json!([]));
    let (st, _) = call(&s.app, req("POST", format!("{path}/cancel")).beta()).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = call(&s.app, req("GET", "/api/v1/jobs?tenant=acme").beta()).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = call(
        &s.app,
        req("POST", "/api/v1/jobs")
            .beta()
            .json(json!({"prompt": "x", "tenant_id": "acme"})),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // The dashboard needs no key.
    let mut page = req("GET", "/");
    page.key = None;
    page.tenant = None;
    let (st, body) = call(&s.app, page).await;
    assert_eq!(st, StatusCode::OK);
    assert!(body.as_str().unwrap().contains("cap gateway"));
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_with_cursors_and_filter() {
    let s = stack(keys()).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(submit(&s.app, "job.echo", &format!("p{i}")).await);
        // Distinct creation times keep the expected order plain.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for id in &ids {
        wait_state(&s.app, id, "SUCCEEDED").await;
    }
    submit(&s.app, "job.approve", "held").await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/jobs?limit=3&topic=job.echo&cursor={c}"),
            None => "/api/v1/jobs?limit=3&topic=job.echo".into(),
        };
        let (st, v) = call(&s.app, req("GET", path)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        pages += 1;
        for item in v["items"].as_array().unwrap() {
            assert_eq!(item["tenant"], "acme");
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    ids.reverse();
    assert_eq!(seen, ids, "newest first, each job once");
    let (_, v) = call(&s.app, req("GET", "/api/v1/jobs?state=succeeded&limit=500")).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 7);
    let (st, v) = call(&s.app, req("GET", "/api/v1/jobs?state=BOGUS")).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&v), "invalid_request");
    let (st, _) = call(&s.app, req("GET", "/api/v1/jobs?cursor=garbage")).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let (st, _) = call(&s.app, req("GET", "/api/v1/jobs?limit=0")).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submissions_are_refused_and_keys_are_idempotent() {
    let mut config = keys();
    config.max_body_bytes = 4096;
    let s = stack(config).await;
    let (st, v) = call(
        &s.app,
        req("POST", "/api/v1/jobs").json(json!({"prompt": "x".repeat(5000)})),
    )
    .await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(error_code(&v), "too_large");
    let mut raw = req("POST", "/api/v1/jobs");
    raw.body = Some(b"{not json".to_vec());
    let (st, _) = call(&s.app, raw).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    for bad in [
        json!({"topic": "job.echo"}),
        json!({"prompt": 5}),
        json!({"prompt": "x", "priority": "urgent"}),
        json!({"prompt": "x", "topic": "not a topic!"}),
    ] {
        let (st, v) = call(&s.app, req("POST", "/api/v1/jobs").json(bad.clone())).await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{bad} → {v}");
    }
    // The same Idempotency-Key names the same job; another tenant's same key does not.
    let first = req("POST", "/api/v1/jobs")
        .header("Idempotency-Key", "k-1")
        .json(json!({"topic": "job.echo", "prompt": "once"}));
    let (_, a) = call(&s.app, first).await;
    let id = a["job_id"].as_str().unwrap().to_owned();
    wait_state(&s.app, &id, "SUCCEEDED").await;
    let again = req("POST", "/api/v1/jobs")
        .header("Idempotency-Key", "k-1")
        .json(json!({"topic": "job.echo", "prompt": "once"}));
    let (_, b) = call(&s.app, again).await;
    assert_eq!(b["job_id"], id.as_str());
    assert_eq!(b["trace_id"], a["trace_id"]);
    let beta = req("POST", "/api/v1/jobs")
        .beta()
        .header("Idempotency-Key", "k-1")
        .json(json!({"topic": "job.echo", "prompt": "once"}));
    let (_, c) = call(&s.app, beta).await;
    assert_ne!(c["job_id"], id.as_str());
    let (st, v) = call(&s.app, req("GET", "/api/v1/nothing")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&v), "not_found");
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_get_429() {
    let mut config = keys();
    config.rate_per_second = 0.5;
    config.rate_burst = 2.0;
    let s = stack(config).await;
    let path = "/api/v1/jobs";
    assert_eq!(call(&s.app, req("GET", path)).await.0, StatusCode::OK);
    assert_eq!(call(&s.app, req("GET", path)).await.0, StatusCode::OK);
    let res = s
        .app
        .clone()
        .oneshot(req("GET", path).build())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "1");
    // Per key: the other tenant is not held back.
    assert_eq!(
        call(&s.app, req("GET", path).beta()).await.0,
        StatusCode::OK
    );
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_is_cancelled() {
    let s = stack(keys()).await;
    let id = submit(&s.app, "job.slow", "zzz").await;
    wait_state(&s.app, &id, "RUNNING").await;
    let (st, v) = call(&s.app, req("POST", format!("/api/v1/jobs/{id}/cancel"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"id": id, "state": "CANCELLED"}));
    let job = wait_state(&s.app, &id, "CANCELLED").await;
    assert!(job["completed_at"].is_string());
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_jobs_are_listed_approved_and_rejected() {
    let s = stack(keys()).await;
    let a = submit(&s.app, "job.approve", "please").await;
    let r = submit(&s.app, "job.approve", "no").await;
    for id in [&a, &r] {
        for _ in 0..250 {
            let (_, v) = call(&s.app, req("GET", format!("/api/v1/jobs/{id}"))).await;
            if v["waiting_for"] == "approval" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let (st, list) = call(&s.app, req("GET", "/api/v1/approvals")).await;
    assert_eq!(st, StatusCode::OK);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    assert_eq!(items[0]["decision"], "PENDING");
    assert_eq!(items[0]["policy_rule_id"], "needs-a-human");
    assert_eq!(items[0]["policy_reason"], "needs sign-off");
    // Another tenant can neither see nor decide them.
    let (_, other) = call(&s.app, req("GET", "/api/v1/approvals").beta()).await;
    assert_eq!(other["items"], json!([]));
    let (st, _) = call(
        &s.app,
        req("POST", format!("/api/v1/approvals/{a}/approve"))
            .beta()
            .json(json!({"reason": "sneaky"})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let (st, v) = call(
        &s.app,
        req("POST", format!("/api/v1/approvals/{a}/approve")).json(json!({"reason": "fine"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["job_id"], a.as_str());
    let done = wait_state(&s.app, &a, "SUCCEEDED").await;
    let actions: Vec<&str> = done["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["REQUIRE_APPROVAL", "APPROVED"]);
    let (st, _) = call(
        &s.app,
        req("POST", format!("/api/v1/approvals/{a}/approve")).json(json!({"reason": "again"})),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT, "no longer held");

    let (st, _) = call(
        &s.app,
        req("POST", format!("/api/v1/approvals/{r}/reject")).json(json!({"reason": "no way"})),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let denied = wait_state(&s.app, &r, "DENIED").await;
    assert!(
        denied["error"].as_str().unwrap().contains("no way"),
        "{denied}"
    );
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_retried_and_deleted() {
    let s = stack(keys()).await;
    let a = submit(&s.app, "job.broken", "x").await;
    let b = submit(&s.app, "job.broken", "y").await;
    wait_state(&s.app, &a, "FAILED").await;
    wait_state(&s.app, &b, "FAILED").await;
    let (st, list) = call(&s.app, req("GET", "/api/v1/dlq")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert!(list[0]["error"].as_str().unwrap().contains("always fails"));
    let (_, page) = call(&s.app, req("GET", "/api/v1/dlq/page?limit=1")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string());
    let (st, v) = call(&s.app, req("POST", format!("/api/v1/dlq/{a}/retry"))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let retried = v["job_id"].as_str().unwrap().to_owned();
    assert_ne!(retried, a);
    let again = wait_state(&s.app, &retried, "FAILED").await;
    assert_eq!(again["topic"], "job.broken");
    let (st, _) = call(&s.app, req("DELETE", format!("/api/v1/dlq/{b}"))).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = call(&s.app, req("DELETE", format!("/api/v1/dlq/{b}"))).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, list) = call(&s.app, req("GET", "/api/v1/dlq")).await;
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [retried.as_str()],
        "retried and deleted ones leave the list"
    );
    s.stop.cancel();
}

/// Reads SSE frames from a response body until `n` `state` events came.
async fn state_events(body: Body, n: usize) -> Vec<(String, Value)> {
    let mut stream = body.into_data_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("an event within 5 s")
            .expect("the stream goes on")
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let mut id = String::new();
            let mut data = String::new();
            let mut kind = String::new();
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_owned();
                }
            }
            if kind == "state" {
                out.push((id, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_follow_jobs_and_resume() {
    let s = stack(keys()).await;
    // The tenant stream, opened before the job.
    let tenant = s
        .app
        .clone()
        .oneshot(req("GET", "/api/v1/events").build())
        .await
        .unwrap();
    assert_eq!(tenant.status(), StatusCode::OK);
    assert_eq!(tenant.headers()["content-type"], "text/event-stream");
    let beta = s
        .app
        .clone()
        .oneshot(req("GET", "/api/v1/events").beta().build())
        .await
        .unwrap();
    let id = submit(&s.app, "job.echo", "watch me").await;
    let live = state_events(tenant.into_body(), 5).await;
    let states: Vec<&str> = live
        .iter()
        .map(|(_, v)| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["PENDING", "SCHEDULED", "DISPATCHED", "RUNNING", "SUCCEEDED"]
    );
    assert!(live.iter().all(|(_, v)| v["job_id"] == id.as_str()));

    // The job's own stream replays its history and ends with it.
    let one = s
        .app
        .clone()
        .oneshot(req("GET", format!("/api/v1/jobs/{id}/events")).build())
        .await
        .unwrap();
    let all = state_events(one.into_body(), 5).await;
    assert_eq!(
        all.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        live.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        "the same ids in both streams"
    );
    // Resumed after the second event: the three after it.
    let resumed = s
        .app
        .clone()
        .oneshot(
            req("GET", format!("/api/v1/jobs/{id}/events"))
                .header("Last-Event-ID", &live[1].0)
                .build(),
        )
        .await
        .unwrap();
    let rest = state_events(resumed.into_body(), 3).await;
    assert_eq!(
        rest.iter()
            .map(|(_, v)| v["state"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["DISPATCHED", "RUNNING", "SUCCEEDED"]
    );
    // The tenant stream resumes too.
    let resumed = s
        .app
        .clone()
        .oneshot(
            req("GET", "/api/v1/events")
                .header("Last-Event-ID", &live[2].0)
                .build(),
        )
        .await
        .unwrap();
    let rest = state_events(resumed.into_body(), 2).await;
    assert_eq!(
        rest.iter()
            .map(|(_, v)| v["state"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["RUNNING", "SUCCEEDED"]
    );
    // Another tenant's stream saw nothing of it.
    let mut beta = beta.into_body().into_data_stream();
    let got = tokio::time::timeout(Duration::from_millis(300), beta.next()).await;
    assert!(got.is_err(), "beta's stream stayed silent");
    let (st, _) = call(
        &s.app,
        req("GET", format!("/api/v1/jobs/{id}/events")).beta(),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_route_pattern_and_status() {
    let mut registry = cap_runtime::metrics::Registry::default();
    let metrics = cap_gateway::GatewayMetrics::register(&mut registry);
    let s = stack(keys().metrics(metrics)).await;
    let id = submit(&s.app, "job.echo", "count me").await;
    wait_state(&s.app, &id, "SUCCEEDED").await;
    let (st, _) = call(&s.app, req("GET", "/api/v1/jobs/no-such-job")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let mut anonymous = req("GET", format!("/api/v1/jobs/{id}"));
    anonymous.key = None;
    let (st, _) = call(&s.app, anonymous).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = call(&s.app, req("GET", "/no/such/route")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let text = cap_runtime::metrics::encode(&registry);
    let count = |labels: &str| {
        cap_runtime::metrics::sample(&text, &format!("cap_gateway_requests_total{{{labels}}}"))
    };
    assert_eq!(
        count(r#"method="POST",route="/api/v1/jobs",status="200""#),
        Some(1.0),
        "{text}"
    );
    // Job ids never become labels: every GET of a job is under the route's pattern.
    assert!(!text.contains(&id), "{text}");
    assert_eq!(
        count(r#"method="GET",route="/api/v1/jobs/{id}",status="404""#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        count(r#"method="GET",route="/api/v1/jobs/{id}",status="401""#),
        Some(1.0),
        "{text}"
    );
    assert!(
        count(r#"method="GET",route="/api/v1/jobs/{id}",status="200""#).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert_eq!(
        count(r#"method="GET",route="unmatched",status="404""#),
        Some(1.0),
        "{text}"
    );
    assert!(
        cap_runtime::metrics::sample(
            &text,
            r#"cap_gateway_request_seconds_count{method="GET",route="/api/v1/jobs/{id}"}"#
        )
        .unwrap_or(0.0)
            >= 3.0,
        "{text}"
    );
    s.stop.cancel();
}
