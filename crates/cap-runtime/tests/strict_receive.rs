//! Strict receive at a worker: bytes a plain protobuf parser accepts but no deterministic
//! serializer produces (non-minimal varints, two payloads) and worker-trust packets with
//! unknown fields are malformed (101): dropped with an alert on `sys.alert`, never
//! executed, while the honest encoding of the same job runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_bus::Bus;
use cap_proto::v1::{self, AlertSeverity, bus_packet::Payload};
use cap_proto::{ErrorCode, subject};
use cap_runtime::testing::TestBed;
use cap_runtime::{Context, JobError};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

fn alert_of(p: &v1::BusPacket) -> v1::SystemAlert {
    match &p.payload {
        Some(Payload::Alert(a)) => a.clone(),
        other => panic!("expected an alert, got {other:?}"),
    }
}

/// Re-encodes `protocol_version` (field 4 = 1, `20 01`) as `20 81 00`.
fn two_byte_version(bytes: &[u8]) -> Vec<u8> {
    let at = bytes.windows(2).position(|w| w == [0x20, 0x01]).unwrap();
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(&[0x20, 0x81, 0x00]);
    out.extend_from_slice(&bytes[at + 2..]);
    out
}

/// Appends a second payload, a JobCancel (field 16), after the JobRequest.
fn with_second_payload(bytes: &[u8], job_id: &str) -> Vec<u8> {
    let cancel = cap_proto::canonical::to_bytes(&v1::JobCancel {
        job_id: job_id.into(),
        requested_by: "test-client".into(),
        ..Default::default()
    });
    let mut out = bytes.to_vec();
    out.extend_from_slice(&[0x82, 0x01, cancel.len() as u8]);
    out.extend_from_slice(&cancel);
    out
}

#[tokio::test]
async fn non_minimal_varints_and_two_payloads_are_dropped_with_alert_101() {
    let bed = TestBed::new();
    let mut alerts = common::sub(&bed.bus, subject::ALERT).await;
    let mut results = common::sub(&bed.bus, subject::RESULT).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let w = bed
        .worker()
        .handler("job.strict", move |_ctx: Context, v: serde_json::Value| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok::<_, JobError>(v)
            }
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();

    let input = serde_json::json!({"n": 1});
    type Mangle = fn(&[u8], &str) -> Vec<u8>;
    let bad: [(&str, Mangle); 2] = [
        ("varint", |b, _| two_byte_version(b)),
        ("two-payloads", with_second_payload),
    ];
    for (job_id, mangle) in bad {
        let p = common::request_packet(&bed.store, job_id, "job.strict", &input).await;
        let honest = cap_proto::packet::encode(&p);
        let mangled = mangle(&honest, job_id);
        // A plain parser reads a valid job request (or a valid cancel) from these bytes.
        let lenient = cap_proto::packet::decode_lenient(&mangled, 1 << 20).unwrap();
        cap_proto::validate::packet(&lenient).unwrap();
        bed.bus.publish("job.strict", mangled.into()).await.unwrap();
        let a = alert_of(&common::next_packet(&mut alerts).await);
        assert_eq!(
            a.error_code_enum,
            ErrorCode::PROTOCOL_MALFORMED_PACKET.as_i32()
        );
        assert_eq!(a.severity, AlertSeverity::Error as i32);
        assert_eq!(a.source_component, w.id());
        assert!(a.message.contains("malformed"), "{}", a.message);
    }
    // Nothing ran. The submitter is not left waiting: the job id is readable from the
    // front of the bytes, so each gets a FAILED result with 101 (issue #17's salvage).
    for job_id in ["varint", "two-payloads"] {
        let (_, r) = common::next_result_for(&mut results, job_id).await;
        assert_eq!(common::status(&r), v1::JobStatus::Failed, "{job_id}");
        assert_eq!(
            ErrorCode::of_result(&r),
            ErrorCode::PROTOCOL_MALFORMED_PACKET,
            "{job_id}"
        );
    }
    common::assert_quiet(&mut results, Duration::from_millis(300)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(
        w.packet_stats()
            .rejected_with(ErrorCode::PROTOCOL_MALFORMED_PACKET),
        2
    );

    // The honest encoding of the same job runs.
    let p = common::request_packet(&bed.store, "honest", "job.strict", &input).await;
    bed.bus
        .publish("job.strict", cap_proto::packet::encode(&p).into())
        .await
        .unwrap();
    let (pkt, r) = common::next_result_for(&mut results, "honest").await;
    assert_eq!(common::status(&r), v1::JobStatus::Succeeded);
    assert_eq!(r.worker_id, pkt.sender_id);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    w.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn trust_packets_with_unknown_fields_are_rejected_101() {
    use cap_runtime::packets::{PacketConfig, Packets};
    let bus = cap_bus::MemoryBus::new();
    let mut alerts = common::sub(&bus, subject::ALERT).await;
    // Signature checks off: the trust-handshake verifier owns those keys.
    let config = PacketConfig::new("scheduler-1").trust(cap_sign::TrustPolicy::off());
    let packets = Packets::new(bus.clone(), config);
    let request = v1::WorkerHandshakeChallengeRequest {
        request_id: "req-1".into(),
        trace_id: "trace-1".into(),
        worker_id: "worker-1".into(),
        proof_key_id: "wk-1".into(),
        proof_algorithm: 1,
        audience: "cordum-scheduler".into(),
        purpose: 1,
        client_nonce: vec![7; 32],
        protocol_version: 1,
        sdk_version: "cap-rs/test".into(),
    };
    let mut p = v1::BusPacket::new("trace-1", "worker-1", cap_runtime::packets::now(), request);
    p.signature = vec![0x30, 0x00].into();
    let honest = cap_proto::packet::encode(&p);
    let msg = cap_bus::Message::new(subject::HANDSHAKE, honest.clone());
    assert!(packets.receive(&msg).await.is_some());
    let mut unknown = honest;
    unknown.extend_from_slice(&[0xb8, 0x01, 0x01]); // field 23, varint 1
    let msg = cap_bus::Message::new(subject::HANDSHAKE, unknown);
    assert!(packets.receive(&msg).await.is_none());
    let a = alert_of(&common::next_packet(&mut alerts).await);
    assert_eq!(a.error_code_enum, 101);
    assert!(a.message.contains("unknown_fields"), "{}", a.message);
}
