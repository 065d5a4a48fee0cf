//! Worker and client over a real NATS server and Redis (run by .ci/run with
//! `cargo test -- --ignored`). Each test uses its own topic and job ids; the JetStream
//! test uses a private stream that covers only its own pool subject and deletes it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_blob::{RedisBlobStore, RedisConfig};
use cap_bus::nats::JetStreamOptions;
use cap_bus::{Bus, NatsBus, NatsOptions};
use cap_proto::{ErrorCode, v1::JobStatus};
use cap_runtime::{Client, ClientConfig, Context, JobError, SubmitOptions, Worker};
use cap_sign::{KeyRing, PrivateKey, TrustMode, TrustPolicy};
use std::sync::Arc;
use std::time::Duration;

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

async fn nats(js: Option<JetStreamOptions>) -> NatsBus {
    let mut o = NatsOptions::new(&nats_url()).name("cap-runtime-test");
    o = match js {
        Some(js) => o.jetstream(js),
        None => o.without_jetstream(),
    };
    NatsBus::connect(o).await.unwrap_or_else(|e| {
        panic!(
            "needs a NATS server at {} (with JetStream): {e}",
            nats_url()
        )
    })
}

async fn redis() -> RedisBlobStore {
    RedisBlobStore::connect(RedisConfig::from_env())
        .await
        .unwrap_or_else(|e| {
            panic!("needs a Redis server at REDIS_URL (default 127.0.0.1:6379): {e}")
        })
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &cap_runtime::id::new_trace_id()[..10])
}

async fn echo(ctx: Context, v: serde_json::Value) -> Result<serde_json::Value, JobError> {
    ctx.progress(50, "half way").await.ok();
    Ok(serde_json::json!({"echo": v, "worker": ctx.worker_id()}))
}

#[tokio::test]
#[ignore = "needs a real NATS and Redis: run by .ci/run"]
async fn worker_and_client_over_nats_and_redis() {
    let bus = nats(None).await;
    let store = redis().await;
    let topic = format!("job.{}", unique("rt"));
    let worker_id = unique("w");
    let w = Worker::builder(bus.clone(), store.clone())
        .id(worker_id.clone())
        .handler(topic.clone(), echo)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = Client::new(bus.clone(), store.clone(), ClientConfig::new(unique("c")))
        .await
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..50 {
        handles.push(
            client
                .submit_with(
                    &topic,
                    &serde_json::json!({"i": i}),
                    SubmitOptions::default().direct(),
                )
                .await
                .unwrap(),
        );
    }
    for (i, h) in handles.iter_mut().enumerate() {
        let out: serde_json::Value = h.output().await.unwrap();
        assert_eq!(
            out,
            serde_json::json!({"echo": {"i": i}, "worker": worker_id})
        );
        // The result really is in Redis, at res:<job_id>.
        let raw = cap_blob::BlobStore::get(&store, &format!("res:{}", h.job_id()))
            .await
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&raw).unwrap(),
            out
        );
    }
    // Progress over NATS.
    let mut h = client
        .submit_with(&topic, &1, SubmitOptions::default().direct())
        .await
        .unwrap();
    let mut percents = Vec::new();
    while let Some(p) = tokio::time::timeout(common::WAIT, h.next_progress())
        .await
        .unwrap()
    {
        percents.push(p.percent);
    }
    assert!(
        percents.contains(&50),
        "the handler's report arrived: {percents:?}"
    );
    // A bad input over the real services: 203.
    let mut bad = client
        .submit_bytes(
            &topic,
            bytes::Bytes::from_static(b"{nope"),
            SubmitOptions::default().direct(),
        )
        .await
        .unwrap();
    let r = bad.result().await.unwrap();
    assert_eq!(ErrorCode::of_result(r), ErrorCode::JOB_INVALID_INPUT);
    w.shutdown(Duration::from_secs(5)).await;
    bus.close().await.unwrap();
}

#[tokio::test]
#[ignore = "needs a real NATS and Redis: run by .ci/run"]
async fn signed_jobs_over_nats_in_require_mode() {
    let bus = nats(None).await;
    let store = redis().await;
    let topic = format!("job.{}", unique("signed"));
    let (wid, cid) = (unique("w"), unique("c"));
    let (wk, ck) = (PrivateKey::generate(), PrivateKey::generate());
    let mut wring = KeyRing::new();
    wring.add(cid.clone(), ck.public_key());
    let mut cring = KeyRing::new();
    cring.add(wid.clone(), wk.public_key());
    let w = Worker::builder(bus.clone(), store.clone())
        .id(wid.clone())
        .signer(Arc::new(wk))
        .trust(TrustPolicy::new(TrustMode::Require, wring))
        .handler(topic.clone(), echo)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = Client::new(
        bus.clone(),
        store.clone(),
        ClientConfig::new(cid)
            .signer(Arc::new(ck))
            .trust(TrustPolicy::new(TrustMode::Require, cring)),
    )
    .await
    .unwrap();
    let mut h = client
        .submit_with(&topic, &"signed", SubmitOptions::default().direct())
        .await
        .unwrap();
    assert_eq!(
        common::status(h.result().await.unwrap()),
        JobStatus::Succeeded
    );
    // An unsigned client is refused and alerted, not executed.
    let stranger = Client::new(bus.clone(), store.clone(), ClientConfig::new(unique("x")))
        .await
        .unwrap();
    let mut h = stranger
        .submit_with(&topic, &"unsigned", SubmitOptions::default().direct())
        .await
        .unwrap();
    assert!(h.result_within(Duration::from_millis(500)).await.is_err());
    assert_eq!(
        w.packet_stats()
            .rejected_with(ErrorCode::PROTOCOL_SIGNATURE_MISSING),
        1
    );
    w.shutdown(Duration::from_secs(5)).await;
    bus.close().await.unwrap();
}

#[tokio::test]
#[ignore = "needs a real NATS (JetStream) and Redis: run by .ci/run"]
async fn jetstream_pool_subject_delivers_a_job_published_before_the_worker_started() {
    // Not under `job.`: a default `CAP_JOBS` stream (`job.>`) left on a developer's
    // server by `cap demo --nats` would overlap this test's private stream.
    let topic = format!("captest.{}", unique("durable"));
    let js =
        JetStreamOptions::new(unique("CAPRT"), [topic.clone()]).ack_wait(Duration::from_secs(2));
    let bus = nats(Some(js)).await;
    let store = redis().await;
    let client = Client::new(bus.clone(), store.clone(), ClientConfig::new(unique("c")))
        .await
        .unwrap();
    // Published (and stored by JetStream) while no worker runs.
    let mut h = client
        .submit_with(&topic, &"waited", SubmitOptions::default().direct())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let w = Worker::builder(bus.clone(), store.clone())
        .handler(topic.clone(), echo)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let out: serde_json::Value = h.output().await.unwrap();
    assert_eq!(out["echo"], "waited");
    w.shutdown(Duration::from_secs(5)).await;
    // Acknowledged: a new worker on the same durable consumer gets nothing again.
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = runs.clone();
    let w2 = Worker::builder(bus.clone(), store.clone())
        .handler(topic.clone(), move |_c: Context, v: serde_json::Value| {
            r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { Ok::<_, JobError>(v) }
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        runs.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "acked jobs are not redelivered"
    );
    w2.shutdown(Duration::from_secs(5)).await;
    bus.delete_stream().await.unwrap();
    bus.close().await.unwrap();
}
