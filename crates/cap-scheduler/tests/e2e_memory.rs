//! The whole flow in one process on the in-memory bus and blob store: client →
//! `sys.job.submit` → scheduler → in-process safety kernel → pool → worker →
//! `sys.job.result` → client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use bytes::Bytes;
use cap_blob::MemoryBlobStore;
use cap_bus::{Bus, MemoryBus};
use cap_proto::{ErrorCode, JobState};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_runtime::{Client, ClientConfig, Context, JobError, SubmitOptions, Worker};
use cap_safety::Kernel;
use cap_safety::policy::Policy;
use cap_scheduler::core::Config;
use cap_scheduler::shell::APPROVAL_SUBJECT;
use cap_scheduler::{MemoryJobStore, Observed, Scheduler, SchedulerOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const POLICY: &str = r#"
version: 1
rules:
  - id: no-forbidden
    match: { topics: ["job.forbidden.*"] }
    decision: deny
    reason: forbidden topic
  - id: needs-a-human
    match: { topics: ["job.approve"] }
    decision: require_approval
    reason: needs sign-off
"#;

async fn echo(_ctx: Context, v: serde_json::Value) -> Result<serde_json::Value, JobError> {
    Ok(v)
}

async fn slow(ctx: Context, _v: serde_json::Value) -> Result<serde_json::Value, JobError> {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(30)) => Ok(serde_json::json!("late")),
        _ = ctx.cancellation().cancelled() => Err(JobError::cancelled("stopped")),
    }
}

struct Stack {
    bus: MemoryBus,
    client: Client<MemoryBus, MemoryBlobStore>,
    observed: tokio::sync::broadcast::Receiver<Observed>,
    stop: CancellationToken,
}

async fn stack(config: Config) -> Stack {
    let bus = MemoryBus::new();
    let store = MemoryBlobStore::emulating_redis(Default::default());
    let kernel = Kernel::new(Policy::from_text(POLICY, "policy.yaml").unwrap());
    let packets = Packets::new(bus.clone(), PacketConfig::new("scheduler-1"));
    let options = SchedulerOptions {
        config,
        tick: Duration::from_millis(20),
        ..Default::default()
    };
    let scheduler = Scheduler::new(packets, Arc::new(kernel), MemoryJobStore::new(), options);
    let observed = scheduler.observe();
    let stop = CancellationToken::new();
    tokio::spawn(scheduler.run(stop.clone()));
    let _worker = Worker::builder(bus.clone(), store.clone())
        .id("worker-1")
        .handler("job.echo", echo)
        .handler("job.approve", echo)
        .handler("job.forbidden.x", echo)
        .handler("job.slow", slow)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    std::mem::forget(_worker);
    // Let subscriptions settle.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = Client::new(bus.clone(), store, ClientConfig::new("client-1"))
        .await
        .unwrap();
    Stack {
        bus,
        client,
        observed,
        stop,
    }
}

fn states_of(
    observed: &mut tokio::sync::broadcast::Receiver<Observed>,
    job: &str,
) -> Vec<JobState> {
    let mut out = Vec::new();
    while let Ok(o) = observed.try_recv() {
        if let Observed::Transition { job_id, state, .. } = o
            && job_id == job
        {
            out.push(state);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_goes_through_the_scheduler_and_succeeds() {
    let mut s = stack(Config::default()).await;
    let mut job = s
        .client
        .submit_with(
            "job.echo",
            &serde_json::json!({"x": 1}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    let out: serde_json::Value = job.output().await.unwrap();
    assert_eq!(out, serde_json::json!({"x": 1}));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let states = states_of(&mut s.observed, job.job_id());
    assert_eq!(
        states,
        [
            JobState::Pending,
            JobState::Scheduled,
            JobState::Dispatched,
            JobState::Running,
            JobState::Succeeded
        ],
        "the scheduler followed the job"
    );
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_topic_gets_a_denied_result() {
    let s = stack(Config::default()).await;
    let mut job = s
        .client
        .submit_with(
            "job.forbidden.x",
            &serde_json::json!({}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    let r = job.result().await.unwrap().clone();
    assert_eq!(r.status, JobState::Denied.status() as i32);
    assert_eq!(ErrorCode::of_result(&r), ErrorCode::SAFETY_DENIED);
    assert!(
        r.error_message.contains("forbidden topic"),
        "{}",
        r.error_message
    );
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_job_runs_once_approved_over_the_bus() {
    let s = stack(Config::default()).await;
    let mut job = s
        .client
        .submit_with(
            "job.approve",
            &serde_json::json!("ok?"),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let cmd = serde_json::json!({"job_id": "unknown", "approve": true}).to_string();
    let reply = s
        .bus
        .request(APPROVAL_SUBJECT, Bytes::from(cmd), Duration::from_secs(2))
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(reply.payload()).unwrap();
    assert_eq!(v["ok"], false);
    let cmd = serde_json::json!({"job_id": job.job_id(), "approve": true}).to_string();
    let reply = s
        .bus
        .request(APPROVAL_SUBJECT, Bytes::from(cmd), Duration::from_secs(2))
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(reply.payload()).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let out: serde_json::Value = job.output().await.unwrap();
    assert_eq!(out, serde_json::json!("ok?"));
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_ends_cancelled_and_its_handler_stops() {
    let s = stack(Config::default()).await;
    let mut job = s
        .client
        .submit_with("job.slow", &serde_json::json!({}), SubmitOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    job.cancel("changed my mind").await.unwrap();
    let r = job.result_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.status, JobState::Cancelled.status() as i32);
    s.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_past_its_run_timeout_times_out() {
    let config = Config {
        run_timeout: Duration::from_millis(300),
        dispatch_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let s = stack(config).await;
    let mut job = s
        .client
        .submit_with("job.slow", &serde_json::json!({}), SubmitOptions::default())
        .await
        .unwrap();
    let r = job.result_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.status, JobState::Timeout.status() as i32);
    assert_eq!(ErrorCode::of_result(r), ErrorCode::JOB_TIMEOUT);
    s.stop.cancel();
}
