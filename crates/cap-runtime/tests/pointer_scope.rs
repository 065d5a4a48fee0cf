//! A job's `context_ptr` as an attacker writes it: the worker reads the job's own
//! context and nothing else of ours (the scheduler's records, another job's result,
//! files, private network targets), and its FAILED results carry fixed messages that
//! name the rule, never the store's address or answer. On the in-memory store and on a
//! real Redis.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use bytes::Bytes;
use cap_blob::{BlobStore, PointerScope, RedisBlobStore, RedisConfig};
use cap_bus::{Bus, MemoryBus};
use cap_proto::v1::JobStatus;
use cap_proto::{ErrorCode, v1};
use cap_runtime::{Context, JobError, Worker};

const RESERVED: &str =
    "context read: pointer refused: keys under `cap:` are reserved to CAP services";
const NOT_OWN: &str = "context read: pointer refused: a job reads only its own keys (ctx:, res:, art: + its job id) and the configured prefixes";
const PRIVATE: &str = "context read: pointer refused: https pointers to loopback, private, link-local or local-only hosts are refused";

async fn echo(_ctx: Context, v: serde_json::Value) -> Result<serde_json::Value, JobError> {
    Ok(v)
}

/// Sends one job per `(job_id, context_ptr)` to a worker on `store` and returns the
/// results in order.
async fn run_jobs<S: BlobStore + Clone + 'static>(
    store: S,
    scope: PointerScope,
    jobs: &[(String, String)],
) -> Vec<v1::JobResult> {
    let bus = MemoryBus::new();
    let topic = "job.scope";
    let w = Worker::builder(bus.clone(), store.clone())
        .id("scope-worker")
        .pointer_scope(scope)
        .handler(topic, echo)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let mut results = common::sub(&bus, cap_proto::subject::RESULT).await;
    let mut out = Vec::new();
    for (job_id, ptr) in jobs {
        let packet = v1::BusPacket::new(
            format!("trace-{job_id}"),
            "attacker",
            cap_runtime::packets::now(),
            v1::JobRequest {
                job_id: job_id.clone(),
                topic: topic.into(),
                context_ptr: ptr.clone(),
                ..Default::default()
            },
        );
        bus.publish(topic, cap_proto::packet::encode(&packet).into())
            .await
            .unwrap();
        let (_, r) = common::next_result_for(&mut results, job_id).await;
        out.push(r);
    }
    w.shutdown(std::time::Duration::from_secs(1)).await;
    out
}

fn assert_refused(r: &v1::JobResult, code: ErrorCode, message: &str) {
    assert_eq!(common::status(r), JobStatus::Failed, "{r:?}");
    assert_eq!(ErrorCode::of_result(r), code, "{r:?}");
    assert_eq!(r.error_message, message);
    assert!(r.result_ptr.is_empty(), "nothing stored for a refused job");
}

fn assert_no_leak(r: &v1::JobResult) {
    let m = &r.error_message;
    for leak in ["WRONGTYPE", "127.0.0.1", "6379", "redis://"] {
        assert!(!m.contains(leak), "{leak} in {m:?}");
    }
}

#[tokio::test]
async fn memory_store_the_attacks_fail_and_the_own_context_works() {
    let store = cap_blob::MemoryBlobStore::emulating_redis(Default::default());
    store
        .put_context("mine", Bytes::from_static(b"{\"a\":1}"))
        .await
        .unwrap();
    store
        .put("cap:sched:job:victim", Bytes::from_static(b"{}"), None)
        .await
        .unwrap();
    store
        .put_result("victim", Bytes::from_static(b"\"secret\""))
        .await
        .unwrap();
    let jobs: Vec<(String, String)> = [
        ("mine", "redis://ctx:mine"),
        ("a1", "redis://cap:sched:job:victim"),
        ("a2", "redis://res:victim"),
        ("a3", "https://169.254.169.254/latest/meta-data/"),
        ("a4", "file:///etc/passwd"),
        ("a5", "gopher://x"),
    ]
    .iter()
    .map(|(j, p)| (j.to_string(), p.to_string()))
    .collect();
    let r = run_jobs(store, PointerScope::default(), &jobs).await;
    assert_eq!(common::status(&r[0]), JobStatus::Succeeded, "{:?}", r[0]);
    assert_refused(&r[1], ErrorCode::JOB_PERMISSION_DENIED, RESERVED);
    assert_refused(&r[2], ErrorCode::JOB_PERMISSION_DENIED, NOT_OWN);
    assert_refused(&r[3], ErrorCode::JOB_PERMISSION_DENIED, PRIVATE);
    assert_eq!(ErrorCode::of_result(&r[4]), ErrorCode::JOB_INVALID_INPUT);
    // An unknown scheme does not even pass the packet layer's validation.
    assert_eq!(
        ErrorCode::of_result(&r[5]),
        ErrorCode::PROTOCOL_MALFORMED_PACKET
    );
    for x in &r {
        assert_no_leak(x);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Redis: run by .ci/run"]
async fn redis_store_the_attacks_fail_without_leaking_store_internals() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| cap_blob::DEFAULT_REDIS_URL.into());
    let store = RedisBlobStore::connect(RedisConfig::new(url.clone()))
        .await
        .unwrap_or_else(|e| panic!("needs a real Redis at {url}: {e}"));
    let tag = cap_runtime::id::new_job_id();
    let (mine, victim) = (format!("mine-{tag}"), format!("victim-{tag}"));
    let sched_key = format!("cap:sched:job:{victim}");
    let sched_set = format!("cap:sched:{tag}:jobs");
    let shared_set = format!("shared-{tag}:list");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(&sched_key)
        .arg("{\"state\":\"RUNNING\"}")
        .ignore()
        .cmd("SADD")
        .arg(&sched_set)
        .arg(&victim)
        .ignore()
        .cmd("RPUSH")
        .arg(&shared_set)
        .arg("x")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    store
        .put_context(&mine, Bytes::from_static(b"{\"a\":1}"))
        .await
        .unwrap();
    store
        .put_result(&victim, Bytes::from_static(b"\"secret\""))
        .await
        .unwrap();
    let scope = PointerScope::new()
        .allow_prefix(format!("shared-{tag}:"))
        .unwrap();
    let jobs = vec![
        (mine.clone(), format!("redis://ctx:{mine}")),
        (format!("a1-{tag}"), format!("redis://{sched_key}")),
        (format!("a2-{tag}"), format!("redis://res:{victim}")),
        (format!("a3-{tag}"), format!("redis://{sched_set}")),
        (format!("a4-{tag}"), format!("redis://{shared_set}")),
    ];
    let r = run_jobs(store, scope, &jobs).await;
    let _: () = redis::cmd("DEL")
        .arg(&sched_key)
        .arg(&sched_set)
        .arg(&shared_set)
        .arg(format!("ctx:{mine}"))
        .arg(format!("res:{mine}"))
        .arg(format!("res:{victim}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(common::status(&r[0]), JobStatus::Succeeded, "{:?}", r[0]);
    assert_refused(&r[1], ErrorCode::JOB_PERMISSION_DENIED, RESERVED);
    assert_refused(&r[2], ErrorCode::JOB_PERMISSION_DENIED, NOT_OWN);
    assert_refused(&r[3], ErrorCode::JOB_PERMISSION_DENIED, RESERVED);
    // Readable by prefix, but a list, not a blob: "no blob", not Redis's WRONGTYPE.
    assert_refused(
        &r[4],
        ErrorCode::JOB_NOT_FOUND,
        "context read: no blob at the pointer",
    );
    for x in &r {
        assert_no_leak(x);
    }
}
