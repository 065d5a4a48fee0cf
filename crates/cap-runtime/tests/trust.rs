//! Signatures and invalid packets: signed results, require mode, alerts with the
//! right severity, FAILED answers to invalid requests, rate limiting, acknowledgement.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_bus::{AckHandle, Acknowledge, Bus, Message};
use cap_proto::v1::{self, AlertSeverity, JobStatus, bus_packet::Payload};
use cap_proto::{ErrorCode, subject};
use cap_runtime::packets::{AlertRate, PacketConfig, Packets};
use cap_runtime::testing::{self, TestBed};
use cap_runtime::{Client, ClientConfig, Context, JobError, SubmitOptions};
use cap_sign::{KeyRing, PrivateKey, TrustMode, TrustPolicy};
use futures_core::future::BoxFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn echo(_ctx: Context, v: serde_json::Value) -> Result<serde_json::Value, JobError> {
    Ok(v)
}

fn alert_of(p: &v1::BusPacket) -> v1::SystemAlert {
    match &p.payload {
        Some(Payload::Alert(a)) => a.clone(),
        other => panic!("expected an alert, got {other:?}"),
    }
}

#[tokio::test]
async fn signed_worker_and_client_in_require_mode() {
    let bed = TestBed::new();
    let worker_key = PrivateKey::generate();
    let client_key = PrivateKey::generate();
    let mut worker_ring = KeyRing::new();
    worker_ring.add("client-a", client_key.public_key());
    let mut client_ring = KeyRing::new();
    client_ring.add("w-signed", worker_key.public_key());

    let mut hs = common::sub(&bed.bus, subject::HANDSHAKE).await;
    let mut results = common::sub(&bed.bus, subject::RESULT).await;
    let w = bed
        .worker()
        .id("w-signed")
        .signer(Arc::new(worker_key.clone()))
        .trust(TrustPolicy::new(TrustMode::Require, worker_ring))
        .handler("job.echo", echo)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    // The handshake is signed and advertises signatures.
    let raw = tokio::time::timeout(common::WAIT, futures_util::StreamExt::next(&mut hs))
        .await
        .unwrap()
        .unwrap();
    let p = cap_sign::packet::verify_bytes(raw.payload(), &worker_key.public_key()).unwrap();
    let Some(Payload::Handshake(h)) = p.payload else {
        panic!()
    };
    assert_eq!(h.capabilities.get("signatures"), Some(&true));

    let client = Client::new(
        bed.bus.clone(),
        bed.store.clone(),
        ClientConfig::new("client-a")
            .signer(Arc::new(client_key))
            .trust(TrustPolicy::new(TrustMode::Require, client_ring)),
    )
    .await
    .unwrap();
    let mut h = client
        .submit_with(
            "job.echo",
            &serde_json::json!({"x": 1}),
            SubmitOptions::default().direct(),
        )
        .await
        .unwrap();
    assert_eq!(
        h.output::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"x": 1})
    );
    // The result on the wire is signed by the worker.
    let raw = tokio::time::timeout(common::WAIT, futures_util::StreamExt::next(&mut results))
        .await
        .unwrap()
        .unwrap();
    cap_sign::packet::verify_bytes(raw.payload(), &worker_key.public_key()).unwrap();
    assert_eq!(w.packet_stats().rejected_total(), 0);
    testing::stop(w).await;
}

#[tokio::test]
async fn require_mode_rejects_unsigned_and_unknown_senders_with_critical_alerts() {
    let bed = TestBed::new();
    let trusted = PrivateKey::generate();
    let mut ring = KeyRing::new();
    ring.add("client-a", trusted.public_key());
    let mut alerts = common::sub(&bed.bus, subject::ALERT).await;
    let mut results = common::sub(&bed.bus, subject::RESULT).await;
    let w = bed
        .worker()
        .trust(TrustPolicy::new(TrustMode::Require, ring))
        .handler("job.echo", echo)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();

    // Unsigned.
    let p = common::request_packet(&bed.store, "u-1", "job.echo", &serde_json::json!(1)).await;
    bed.bus
        .publish("job.echo", cap_proto::packet::encode(&p).into())
        .await
        .unwrap();
    let a = alert_of(&common::next_packet(&mut alerts).await);
    assert_eq!(a.error_code_enum, 104);
    assert_eq!(a.severity, AlertSeverity::Critical as i32);
    assert_eq!(a.details["sender_id"], "test-client");
    assert_eq!(a.trace_id, "trace-u-1");

    // Signed by a key nobody trusts, claiming to be a trusted sender.
    let mut p = common::request_packet(&bed.store, "u-2", "job.echo", &serde_json::json!(1)).await;
    p.sender_id = "client-a".into();
    let forged = cap_sign::packet::sign_to_bytes(&mut p, &PrivateKey::generate()).unwrap();
    bed.bus.publish("job.echo", forged.into()).await.unwrap();
    let a = alert_of(&common::next_packet(&mut alerts).await);
    assert_eq!(a.error_code_enum, 103);
    assert_eq!(a.severity, AlertSeverity::Critical as i32);

    // Neither was executed nor answered.
    common::assert_quiet(&mut results, Duration::from_millis(100)).await;
    let stats = w.packet_stats();
    assert_eq!(
        stats.rejected_with(ErrorCode::PROTOCOL_SIGNATURE_MISSING),
        1
    );
    assert_eq!(
        stats.rejected_with(ErrorCode::PROTOCOL_SIGNATURE_INVALID),
        1
    );
    assert_eq!(stats.alerts_published, 2);

    // A properly signed request runs.
    let mut p = common::request_packet(&bed.store, "ok-1", "job.echo", &serde_json::json!(1)).await;
    p.sender_id = "client-a".into();
    let good = cap_sign::packet::sign_to_bytes(&mut p, &trusted).unwrap();
    bed.bus.publish("job.echo", good.into()).await.unwrap();
    let (_, r) = common::next_result_for(&mut results, "ok-1").await;
    assert_eq!(common::status(&r), JobStatus::Succeeded);
    testing::stop(w).await;
}

#[tokio::test]
async fn invalid_packets_are_alerted_and_invalid_requests_answered_failed() {
    let bed = TestBed::new();
    let mut alerts = common::sub(&bed.bus, subject::ALERT).await;
    let mut results = common::sub(&bed.bus, subject::RESULT).await;
    let w = bed
        .worker()
        .handler("job.echo", echo)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();

    // Garbage: 101, ERROR, no answer possible.
    bed.bus
        .publish("job.echo", "not protobuf at all \u{1}".into())
        .await
        .unwrap();
    let a = alert_of(&common::next_packet(&mut alerts).await);
    assert_eq!(a.error_code_enum, 101);
    assert_eq!(a.severity, AlertSeverity::Error as i32);
    assert!(
        !a.message.contains("protobuf at all"),
        "no payload text: {}",
        a.message
    );

    // An unknown payload (field 23): 102, WARNING.
    let mut unknown = cap_proto::packet::encode(&v1::BusPacket {
        payload: None,
        ..common::request_packet(&bed.store, "x", "job.echo", &serde_json::json!(1)).await
    });
    unknown.extend_from_slice(&[0xba, 0x01, 0x00]);
    bed.bus.publish("job.echo", unknown.into()).await.unwrap();
    let a = alert_of(&common::next_packet(&mut alerts).await);
    assert_eq!(a.error_code_enum, 102);
    assert_eq!(a.severity, AlertSeverity::Warning as i32);

    // A request with a bad priority: alerted, and answered FAILED with 101.
    let mut p =
        common::request_packet(&bed.store, "bad-prio", "job.echo", &serde_json::json!(1)).await;
    if let Some(Payload::JobRequest(r)) = &mut p.payload {
        r.priority = 9;
    }
    bed.bus
        .publish("job.echo", cap_proto::packet::encode(&p).into())
        .await
        .unwrap();
    let a = alert_of(&common::next_packet(&mut alerts).await);
    assert!(a.message.contains("job_request.priority"), "{}", a.message);
    let (pkt, r) = common::next_result_for(&mut results, "bad-prio").await;
    assert_eq!(common::status(&r), JobStatus::Failed);
    assert_eq!(
        ErrorCode::of_result(&r),
        ErrorCode::PROTOCOL_MALFORMED_PACKET
    );
    assert_eq!(pkt.trace_id, "trace-bad-prio");

    // A request for protocol version 2: 100, answered, never executed.
    let mut p = common::request_packet(&bed.store, "v2", "job.echo", &serde_json::json!(1)).await;
    p.protocol_version = 2;
    bed.bus
        .publish("job.echo", cap_proto::packet::encode(&p).into())
        .await
        .unwrap();
    let a = alert_of(&common::next_packet(&mut alerts).await);
    assert_eq!(a.error_code_enum, 100);
    let (_, r) = common::next_result_for(&mut results, "v2").await;
    assert_eq!(
        ErrorCode::of_result(&r),
        ErrorCode::PROTOCOL_VERSION_MISMATCH
    );
    assert_eq!(common::status(&r), JobStatus::Failed);

    let stats = w.packet_stats();
    assert_eq!(stats.rejected_total(), 4);
    assert_eq!(stats.failed_results, 2);
    testing::stop(w).await;
}

#[tokio::test]
async fn alerts_are_rate_limited_and_the_rest_counted() {
    let bed = TestBed::new();
    let mut alerts = common::sub(&bed.bus, subject::ALERT).await;
    let w = bed
        .worker()
        .alert_rate(AlertRate {
            per_second: 0.001,
            burst: 3,
        })
        .handler("job.echo", echo)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    for _ in 0..10 {
        bed.bus.publish("job.echo", "junk".into()).await.unwrap();
    }
    for _ in 0..3 {
        common::next_packet(&mut alerts).await;
    }
    common::assert_quiet(&mut alerts, Duration::from_millis(100)).await;
    let s = w.packet_stats();
    assert_eq!(s.rejected_with(ErrorCode::PROTOCOL_MALFORMED_PACKET), 10);
    assert_eq!(s.alerts_published, 3);
    assert_eq!(s.alerts_suppressed, 7);
    testing::stop(w).await;
}

#[derive(Default)]
struct AckLog(Mutex<Vec<&'static str>>);

impl Acknowledge for AckLog {
    fn ack(&self) -> BoxFuture<'_, Result<(), cap_bus::Error>> {
        self.0.lock().unwrap().push("ack");
        Box::pin(async { Ok(()) })
    }
    fn nak(&self, _: Option<Duration>) -> BoxFuture<'_, Result<(), cap_bus::Error>> {
        self.0.lock().unwrap().push("nak");
        Box::pin(async { Ok(()) })
    }
    fn in_progress(&self) -> BoxFuture<'_, Result<(), cap_bus::Error>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn rejected_durable_messages_are_acknowledged_after_the_alert() {
    let bus = cap_bus::MemoryBus::new();
    let mut alerts = bus.subscribe(subject::ALERT).await.unwrap();
    let packets = Packets::new(bus.clone(), PacketConfig::new("p-1"));
    let log = Arc::new(AckLog::default());
    let msg = Message::new("job.echo", "junk").with_ack(AckHandle::new(log.clone()));
    assert!(packets.receive(&msg).await.is_none());
    assert!(
        futures_util::StreamExt::next(&mut alerts).await.is_some(),
        "alert sent"
    );
    assert_eq!(*log.0.lock().unwrap(), ["ack"]);
    // An accepted one is left for the caller to acknowledge.
    let good = packets.envelope(
        "t",
        v1::JobCancel {
            job_id: "j".into(),
            requested_by: "p-1".into(),
            ..Default::default()
        },
    );
    let msg =
        Message::new("x", cap_proto::packet::encode(&good)).with_ack(AckHandle::new(log.clone()));
    assert!(packets.receive(&msg).await.is_some());
    assert_eq!(log.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn clients_verify_only_their_own_jobs_results() {
    let bed = TestBed::new();
    let worker_key = PrivateKey::generate();
    let mut ring = KeyRing::new();
    ring.add("test-worker", worker_key.public_key());
    let client = Client::new(
        bed.bus.clone(),
        bed.store.clone(),
        ClientConfig::new("c-1").trust(TrustPolicy::new(TrustMode::Require, ring)),
    )
    .await
    .unwrap();
    // Someone else's unsigned result: not ours, so not rejected.
    let other = v1::BusPacket::new(
        "t",
        "elsewhere",
        cap_runtime::packets::now(),
        v1::JobResult {
            job_id: "not-mine".into(),
            status: 5,
            worker_id: "w".into(),
            ..Default::default()
        },
    );
    bed.bus
        .publish(subject::RESULT, cap_proto::packet::encode(&other).into())
        .await
        .unwrap();
    // An unsigned worker: our job's result is rejected (require mode) and times out.
    let w = bed
        .worker()
        .handler("job.echo", echo)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let mut h = client
        .submit_with("job.echo", &1, SubmitOptions::default().direct())
        .await
        .unwrap();
    let e = h
        .result_within(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), cap_runtime::ErrorKind::Timeout);
    // Everything about our job from the unsigned worker was rejected as unsigned.
    let s = client.packet_stats();
    let ours = s.rejected_with(ErrorCode::PROTOCOL_SIGNATURE_MISSING);
    assert!(ours >= 1, "{s:?}");
    assert_eq!(s.rejected_total(), ours, "{s:?}");
    // Another unsigned result for a job that is not ours is skipped, not counted.
    bed.bus
        .publish(subject::RESULT, cap_proto::packet::encode(&other).into())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(client.packet_stats().rejected_total(), ours);
    testing::stop(w).await;
}
