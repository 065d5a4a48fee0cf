//! The worker side of the trust handshake on the memory bus, against a scripted trust
//! service (the real one is tested in cap-scheduler): the session token in every packet,
//! only the scheduler's packets accepted, `enforce` refusing to start or send without a
//! session, `warn` running without a reachable service, and answers from an impostor or
//! a rejection refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_blob::MemoryBlobStore;
use cap_bus::{Bus, MemoryBus};
use cap_proto::subject;
use cap_proto::trust as rules;
use cap_proto::v1::{self, BusPacket, bus_packet::Payload};
use cap_runtime::packets::{AuthTokenSource, PacketConfig, Packets};
use cap_runtime::trust::{TrustErrorKind, WorkerTrustConfig, WorkerTrustMode};
use cap_runtime::{Context, ErrorKind, JobError, RunningWorker, Worker};
use cap_sign::PrivateKey;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const SCHED: &str = "sched-x";
const KEY_ID: &str = "sk-1";

async fn echo(_ctx: Context, v: serde_json::Value) -> Result<serde_json::Value, JobError> {
    Ok(v)
}

#[derive(Clone, Copy, PartialEq)]
enum Script {
    /// Challenges and sessions as a trust service gives them.
    Serve,
    /// Every request refused with this reason.
    Refuse(i32),
    /// Garbage bytes.
    Garbage,
}

fn ts(t: SystemTime) -> cap_proto::Timestamp {
    cap_proto::packet::timestamp(t)
}

/// A scripted trust service signing with `key`, until the bus closes.
async fn service(bus: MemoryBus, key: PrivateKey, script: Script) {
    let mut ch = bus
        .subscribe(subject::WORKER_HANDSHAKE_CHALLENGE)
        .await
        .unwrap();
    let mut au = bus
        .subscribe(subject::WORKER_HANDSHAKE_AUTHENTICATE)
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            let msg = tokio::select! {
                m = ch.next() => m,
                m = au.next() => m,
            };
            let Some(msg) = msg else { return };
            let reply = answer(msg.payload(), &key, script);
            bus.publish(msg.reply().unwrap(), reply.into())
                .await
                .unwrap();
        }
    });
}

fn answer(raw: &[u8], key: &PrivateKey, script: Script) -> Vec<u8> {
    if script == Script::Garbage {
        return b"\x08\x01garbage".to_vec();
    }
    let now = SystemTime::now();
    let p = cap_proto::packet::decode(raw, 1 << 16).unwrap();
    let (challenge, token) = match p.payload {
        Some(Payload::WorkerHandshakeChallengeRequest(r)) => {
            let c = v1::WorkerHandshakeChallenge {
                request_id: r.request_id,
                challenge_id: "c-1".into(),
                trace_id: r.trace_id,
                agent_id: r.worker_id.clone(),
                worker_id: r.worker_id,
                tenant_id: "default".into(),
                proof_key_id: r.proof_key_id,
                proof_algorithm: r.proof_algorithm,
                server_key_id: KEY_ID.into(),
                audience: r.audience,
                purpose: r.purpose,
                client_nonce: r.client_nonce,
                server_nonce: vec![7; 32],
                protocol_version: 1,
                sdk_version: r.sdk_version,
                issued_at: Some(ts(now)),
                expires_at: Some(ts(now + Duration::from_secs(30))),
            };
            if script == Script::Serve {
                let mut out = BusPacket::new(c.trace_id.clone(), SCHED, ts(now), c);
                cap_sign::transcript::sign_handshake(&mut out, key).unwrap();
                return cap_proto::packet::encode(&out);
            }
            (c, String::new())
        }
        Some(Payload::WorkerHandshakeAuthenticate(a)) => (
            a.challenge.unwrap(),
            format!("cap-ws.{}", &cap_runtime::id::new_trace_id()),
        ),
        other => panic!("unexpected {other:?}"),
    };
    let (accepted, reason) = match script {
        Script::Refuse(r) => (false, r),
        _ => (true, 0),
    };
    let result = v1::WorkerHandshakeResult {
        challenge: Some(challenge.clone()),
        accepted,
        rejection_reason: reason,
        token_expires_at: accepted.then(|| ts(now + Duration::from_secs(600))),
        issued_at: Some(ts(now)),
    };
    let mut out = BusPacket::new(challenge.trace_id, SCHED, ts(now), result);
    if accepted {
        out.auth_token = token;
    }
    cap_sign::transcript::sign_handshake(&mut out, key).unwrap();
    cap_proto::packet::encode(&out)
}

struct Bed {
    bus: MemoryBus,
    store: MemoryBlobStore,
    scheduler_key: PrivateKey,
}

impl Bed {
    fn new() -> Self {
        Bed {
            bus: MemoryBus::new(),
            store: MemoryBlobStore::emulating_redis(Default::default()),
            scheduler_key: PrivateKey::generate(),
        }
    }

    async fn worker(
        &self,
        mode: WorkerTrustMode,
    ) -> Result<RunningWorker<MemoryBus>, cap_runtime::Error> {
        let config = WorkerTrustConfig::new(mode, "w-1", Arc::new(PrivateKey::generate()), SCHED)
            .scheduler_key(KEY_ID, self.scheduler_key.public_key())
            .timeout(Duration::from_millis(300))
            .retries(2);
        Worker::builder(self.bus.clone(), self.store.clone())
            .id("w-1")
            .heartbeat_interval(Duration::from_millis(50))
            .worker_trust(config)
            .handler("job.echo", echo)
            .build()?
            .start()
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_session_every_packet_carries_the_token_and_only_the_scheduler_is_heard() {
    let bed = Bed::new();
    service(bed.bus.clone(), bed.scheduler_key.clone(), Script::Serve).await;
    let mut heartbeats = bed.bus.subscribe(subject::HEARTBEAT).await.unwrap();
    let mut results = bed.bus.subscribe(subject::RESULT).await.unwrap();
    let w = bed.worker(WorkerTrustMode::Enforce).await.unwrap();
    let token = w.trust().unwrap().token().unwrap();
    let hb = common::next_packet(&mut heartbeats).await;
    assert_eq!(hb.auth_token, token.as_ref());

    // A job signed by the scheduler runs, and its result carries the token.
    let mut job =
        common::request_packet(&bed.store, "j-1", "job.echo", &serde_json::json!(1)).await;
    job.sender_id = SCHED.into();
    let signed = cap_sign::packet::sign_to_bytes(&mut job, &bed.scheduler_key).unwrap();
    bed.bus.publish("job.echo", signed.into()).await.unwrap();
    let (p, r) = common::next_result_for(&mut results, "j-1").await;
    assert_eq!(r.status, v1::JobStatus::Succeeded as i32);
    assert_eq!(p.auth_token, token.as_ref());

    // The same job from anyone else (unsigned, or signed by another key) is refused.
    let before = w.packet_stats().rejected_total();
    let unsigned =
        common::request_packet(&bed.store, "j-2", "job.echo", &serde_json::json!(2)).await;
    bed.bus
        .publish("job.echo", cap_proto::packet::encode(&unsigned).into())
        .await
        .unwrap();
    let mut forged =
        common::request_packet(&bed.store, "j-3", "job.echo", &serde_json::json!(3)).await;
    forged.sender_id = SCHED.into();
    let forged = cap_sign::packet::sign_to_bytes(&mut forged, &PrivateKey::generate()).unwrap();
    bed.bus.publish("job.echo", forged.into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(w.packet_stats().rejected_total(), before + 2);
    assert_eq!(w.completed(), 1);

    // Without its session (ended here), an enforce worker takes no job and sends nothing.
    w.trust().unwrap().revoke_locally();
    assert!(!w.trust().unwrap().admits());
    tokio::time::sleep(Duration::from_millis(100)).await;
    while tokio::time::timeout(Duration::from_millis(10), heartbeats.next())
        .await
        .is_ok()
    {}
    assert!(
        tokio::time::timeout(Duration::from_millis(200), heartbeats.next())
            .await
            .is_err()
    );
    w.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_needs_the_service_and_warn_runs_without_it() {
    let bed = Bed::new();
    let mut heartbeats = bed.bus.subscribe(subject::HEARTBEAT).await.unwrap();
    let e = bed.worker(WorkerTrustMode::Enforce).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Trust);
    assert!(
        tokio::time::timeout(Duration::from_millis(150), heartbeats.next())
            .await
            .is_err(),
        "an enforce worker that did not start sends nothing"
    );
    let w = bed.worker(WorkerTrustMode::Warn).await.unwrap();
    assert!(w.trust().unwrap().admits() && w.trust().unwrap().session().is_none());
    let hb = common::next_packet(&mut heartbeats).await;
    assert!(hb.auth_token.is_empty());
    w.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostors_rejections_and_garbage_stop_the_start_in_both_modes() {
    for mode in [WorkerTrustMode::Enforce, WorkerTrustMode::Warn] {
        // A service signing with a key the worker does not trust.
        let bed = Bed::new();
        service(bed.bus.clone(), PrivateKey::generate(), Script::Serve).await;
        let e = bed.worker(mode).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Trust);
        let cause = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<cap_runtime::trust::TrustError>())
            .unwrap();
        assert_eq!(cause.kind(), TrustErrorKind::Packet, "{mode}");

        // A signed rejection: the reason comes through.
        let bed = Bed::new();
        service(
            bed.bus.clone(),
            bed.scheduler_key.clone(),
            Script::Refuse(2),
        )
        .await;
        let e = bed.worker(mode).await.unwrap_err();
        let cause = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<cap_runtime::trust::TrustError>())
            .unwrap();
        assert_eq!(
            cause.rejection(),
            Some(v1::WorkerHandshakeRejectionReason::AuthenticationFailed),
            "{mode}"
        );

        let bed = Bed::new();
        service(bed.bus.clone(), bed.scheduler_key.clone(), Script::Garbage).await;
        assert_eq!(bed.worker(mode).await.unwrap_err().kind(), ErrorKind::Trust);
    }
}

struct Fixed(Result<Option<Arc<str>>, ()>);

impl AuthTokenSource for Fixed {
    fn auth_token(&self) -> Result<Option<Arc<str>>, cap_runtime::Error> {
        self.0
            .clone()
            .map_err(|()| cap_runtime::Error::new(ErrorKind::Trust, "no session"))
    }
}

#[test]
fn the_packet_layer_takes_the_token_from_its_source() {
    let seal = |source: Fixed, preset: &str| {
        let packets = Packets::new(
            MemoryBus::new(),
            PacketConfig::new("w").auth_token(Arc::new(source)),
        );
        let mut p = packets.envelope("t", v1::JobCancel::default());
        p.auth_token = preset.into();
        packets
            .seal(&mut p)
            .map(|b| cap_proto::packet::decode(&b, 1 << 20).unwrap().auth_token)
    };
    assert_eq!(seal(Fixed(Ok(Some(Arc::from("tok")))), "").unwrap(), "tok");
    assert_eq!(seal(Fixed(Ok(None)), "stale").unwrap(), "");
    assert_eq!(
        seal(Fixed(Err(())), "").unwrap_err().kind(),
        ErrorKind::Trust
    );
    assert!(rules::is_session_token("tok"));
}
