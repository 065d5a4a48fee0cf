//! Interop with the reference peers, cap-sdk-python 2.10.0 and 2.17.0, over real NATS and
//! Redis (run by .ci/run; the interpreters come from `CAP_INTEROP_PYTHON` and
//! `CAP_INTEROP_PYTHON_217`).
//!
//! - A job submitted with `cap.client.submit_job` (context stored in Redis as the SDK's
//!   runtime does) is executed by our worker, and the Python side reads the result.
//!   `submit_job` publishes to `sys.job.submit`; with no scheduler here, the test
//!   forwards the request's exact bytes to the pool subject, as a scheduler's dispatch
//!   would (the signature stays valid).
//! - A job submitted by our client (directly to the pool subject) is executed by a
//!   cap-sdk-python `Agent`, and our client reads its result.
//!
//! Both signed (require mode on both sides) and unsigned. With 2.17.0 our results also
//! pass the peer's receive boundary (`decode_packet`: validation, then the signature).
//! The Python SDK speaks core NATS; our buses here run in core mode too (see the crate
//! README for JetStream). The scheduler path (`cap scheduler` between the two) is in
//! cap-cli's `tests/peer_scheduler.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_blob::{RedisBlobStore, RedisConfig};
use cap_bus::{Bus, NatsBus, NatsOptions};
use cap_proto::v1::bus_packet::Payload;
use cap_runtime::{Client, ClientConfig, Context, JobError, SubmitOptions, Worker};
use cap_sign::{KeyRing, PrivateKey, TrustMode, TrustPolicy};
use futures_util::StreamExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

#[allow(dead_code)]
#[path = "../../cap-proto/tests/common/peer.rs"]
mod peer;

use peer::Version;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peer")
        .join(name)
}

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &cap_runtime::id::new_trace_id()[..10])
}

async fn services() -> (NatsBus, RedisBlobStore) {
    let bus = NatsBus::connect(
        NatsOptions::new(&nats_url())
            .name("cap-runtime-peer")
            .without_jetstream(),
    )
    .await
    .unwrap_or_else(|e| panic!("needs NATS at {}: {e}", nats_url()));
    let store = RedisBlobStore::connect(RedisConfig::new(redis_url()))
        .await
        .unwrap_or_else(|e| panic!("needs Redis at {}: {e}", redis_url()));
    (bus, store)
}

struct Keys {
    dir: PathBuf,
}

impl Keys {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("cap-runtime-peer"));
        std::fs::create_dir_all(&dir).unwrap();
        Keys { dir }
    }
    fn write(&self, name: &str, key: &PrivateKey) -> (PathBuf, PathBuf) {
        let private = self.dir.join(format!("{name}.key.pem"));
        let public = self.dir.join(format!("{name}.pem"));
        std::fs::write(&private, key.to_pem().unwrap()).unwrap();
        std::fs::write(&public, key.public_key().to_pem().unwrap()).unwrap();
        (private, public)
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Forwards requests for `topic` from `sys.job.submit` to the pool subject, unchanged.
async fn forward_submissions(bus: NatsBus, topic: String) -> tokio::task::JoinHandle<()> {
    let mut sub = bus.subscribe(cap_proto::subject::SUBMIT).await.unwrap();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Ok(p) = cap_proto::packet::decode(msg.payload(), 1 << 20) else {
                continue;
            };
            if let Some(Payload::JobRequest(r)) = &p.payload
                && r.topic == topic
            {
                bus.publish(&topic, msg.payload().clone()).await.unwrap();
            }
        }
    })
}

async fn echo(_ctx: Context, v: serde_json::Value) -> Result<serde_json::Value, JobError> {
    Ok(v)
}

async fn python_submits_to_our_worker(version: Version, signed: bool) {
    let (bus, store) = services().await;
    let topic = format!("job.{}", unique("peer-in"));
    let worker_id = unique("rs-worker");
    let keys = Keys::new();
    let (py_key, rs_key) = (PrivateKey::generate(), PrivateKey::generate());
    let (py_priv, _) = keys.write("py-client", &py_key);
    let (_, rs_pub) = keys.write(&worker_id, &rs_key);

    let mut b = Worker::builder(bus.clone(), store.clone())
        .id(worker_id.clone())
        .handler(topic.clone(), echo);
    if signed {
        let mut ring = KeyRing::new();
        ring.add("py-client", py_key.public_key());
        b = b
            .signer(Arc::new(rs_key))
            .trust(TrustPolicy::new(TrustMode::Require, ring));
    }
    let worker = b.build().unwrap().start().await.unwrap();
    let forwarder = forward_submissions(bus.clone(), topic.clone()).await;
    bus.flush().await.unwrap();

    let job_id = unique("py-job");
    let input = r#"{"text": "from python", "n": [1, 2, 3]}"#;
    let mut cmd = tokio::process::Command::new(version.python());
    cmd.arg(script("submit_job.py"))
        .args([
            nats_url(),
            redis_url(),
            topic.clone(),
            job_id.clone(),
            input.into(),
        ])
        .args(["--sender", "py-client"]);
    if signed {
        cmd.arg("--key")
            .arg(&py_priv)
            .arg("--worker-pub")
            .arg(&rs_pub);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the peer finishes")
        .expect("the peer runs");
    assert!(
        out.status.success(),
        "peer failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(v["status"], "JOB_STATUS_SUCCEEDED", "{v}");
    assert_eq!(v["worker_id"], worker_id.as_str());
    assert_eq!(v["sender_id"], worker_id.as_str());
    assert_eq!(
        v["trace_id"],
        format!("py-trace-{job_id}"),
        "trace id copied"
    );
    assert_eq!(
        v["output"],
        serde_json::from_str::<serde_json::Value>(input).unwrap()
    );
    assert_eq!(v["signed"], signed);
    if signed {
        assert_eq!(
            v["verified"], true,
            "the Python side verifies our signature"
        );
    }
    if version == Version::V217 {
        assert_eq!(
            v["boundary_accepted"], true,
            "2.17's decode_packet takes our result: {v}"
        );
    }
    assert_eq!(worker.packet_stats().rejected_total(), 0);
    forwarder.abort();
    worker.shutdown(Duration::from_secs(5)).await;
    bus.close().await.unwrap();
}

async fn our_client_to_python_agent(version: Version, signed: bool) {
    let (bus, store) = services().await;
    let topic = format!("job.{}", unique("peer-out"));
    let agent_id = unique("py-agent");
    let client_id = unique("rs-client");
    let keys = Keys::new();
    let (agent_key, client_key) = (PrivateKey::generate(), PrivateKey::generate());
    let (agent_priv, _) = keys.write(&agent_id, &agent_key);
    let (_, client_pub) = keys.write(&client_id, &client_key);

    let mut cmd = tokio::process::Command::new(version.python());
    cmd.arg(script("echo_agent.py"))
        .args([nats_url(), redis_url(), topic.clone(), agent_id.clone()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if signed {
        cmd.arg("--key").arg(&agent_priv);
        cmd.arg("--trust")
            .arg(format!("{client_id}={}", client_pub.display()));
    }
    let mut child = cmd.spawn().expect("the peer starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the agent gets ready")
        .unwrap();
    assert_eq!(ready.as_deref(), Some("READY"));

    let mut config = ClientConfig::new(client_id.clone()).result_timeout(Duration::from_secs(20));
    if signed {
        let mut ring = KeyRing::new();
        ring.add(agent_id.clone(), agent_key.public_key());
        config = config
            .signer(Arc::new(client_key))
            .trust(TrustPolicy::new(TrustMode::Require, ring));
    }
    let client = Client::new(bus.clone(), store.clone(), config)
        .await
        .unwrap();
    for i in 0..5 {
        let input = serde_json::json!({"i": i, "text": "from rust"});
        let mut job = client
            .submit_with(&topic, &input, SubmitOptions::default().direct())
            .await
            .unwrap();
        let out: serde_json::Value = job.output().await.unwrap();
        assert_eq!(out, input);
        let r = job.result().await.unwrap();
        assert_eq!(r.worker_id, agent_id);
    }
    // Nothing the Agent sent was rejected (in signed mode: every result verified).
    assert_eq!(client.packet_stats().rejected_total(), 0);
    if signed {
        // An unsigned request is ignored by the Agent in its signed mode.
        let stranger = Client::new(bus.clone(), store.clone(), ClientConfig::new(unique("x")))
            .await
            .unwrap();
        let mut job = stranger
            .submit_with(&topic, &1, SubmitOptions::default().direct())
            .await
            .unwrap();
        assert!(job.result_within(Duration::from_millis(800)).await.is_err());
    }
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    bus.close().await.unwrap();
}

macro_rules! both_versions {
    ($($name:ident => $body:expr;)*) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread")]
            #[ignore = "needs cap-sdk-python 2.10.0 (CAP_INTEROP_PYTHON), NATS and Redis: run by .ci/run"]
            async fn peer_210() {
                let version = Version::V210;
                ($body)(version).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            #[ignore = "needs cap-sdk-python 2.17.0 (CAP_INTEROP_PYTHON_217), NATS and Redis: run by .ci/run"]
            async fn peer_217() {
                let version = Version::V217;
                ($body)(version).await;
            }
        }
    )*};
}

both_versions! {
    peer_python_submit_job_is_executed_by_our_worker =>
        |v| python_submits_to_our_worker(v, false);
    peer_python_signed_submit_job_is_executed_by_our_worker_in_require_mode =>
        |v| python_submits_to_our_worker(v, true);
    peer_our_client_job_is_executed_by_a_python_agent =>
        |v| our_client_to_python_agent(v, false);
    peer_our_signed_client_job_is_executed_by_a_signed_python_agent =>
        |v| our_client_to_python_agent(v, true);
}
