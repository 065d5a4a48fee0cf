//! No silent drops: a job request refused before it could be read whole (over the size
//! limit, or with a job id too long to echo) still gets a FAILED result its submitter
//! can match (the job id, or its documented shortened form, and the trace id), unless
//! its sender is one the trust policy would not accept.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_bus::Bus;
use cap_proto::v1::{self, JobStatus, bus_packet::Payload};
use cap_proto::{ErrorCode, packet};
use cap_runtime::packets::salvage::answer_id;
use cap_runtime::testing::{self, TestBed};
use cap_runtime::{Context, JobError};
use std::time::Duration;

/// A test bed whose bus carries up to 8 MiB, so the worker's own limit (1 MiB) is the
/// one that refuses.
fn bed() -> TestBed {
    let mut bed = TestBed::new();
    bed.bus = cap_bus::MemoryBus::with_options(
        cap_bus::MemoryOptions::default().max_payload(Some(8 << 20)),
    );
    bed
}

async fn echo(_ctx: Context, v: serde_json::Value) -> Result<serde_json::Value, JobError> {
    Ok(v)
}

fn request(job_id: &str, pad: usize) -> v1::BusPacket {
    v1::BusPacket::new(
        "trace-big",
        "client-big",
        cap_runtime::packets::now(),
        v1::JobRequest {
            job_id: job_id.into(),
            topic: "job.echo".into(),
            context_ptr: format!("redis://ctx:{}", &job_id[..job_id.len().min(100)]),
            labels: [("pad".to_owned(), "p".repeat(pad))].into(),
            ..Default::default()
        },
    )
}

async fn result_for(bed: &TestBed, bytes: Vec<u8>, job_id: &str) -> (v1::BusPacket, v1::JobResult) {
    let mut results = common::sub(&bed.bus, cap_proto::subject::RESULT).await;
    bed.bus.publish("job.echo", bytes.into()).await.unwrap();
    common::next_result_for(&mut results, job_id).await
}

#[tokio::test]
async fn an_oversize_request_gets_failed_201() {
    let bed = bed();
    let w = bed
        .worker()
        .handler("job.echo", echo)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let bytes = packet::encode(&request("job-2mib", 2 << 20));
    assert!(bytes.len() > 2 << 20);
    let (pkt, r) = result_for(&bed, bytes, "job-2mib").await;
    assert_eq!(common::status(&r), JobStatus::Failed);
    assert_eq!(ErrorCode::of_result(&r), ErrorCode::JOB_RESOURCE_EXHAUSTED);
    assert_eq!(pkt.trace_id, "trace-big");
    assert!(
        r.error_message.contains("over the size limit"),
        "{}",
        r.error_message
    );
    assert_eq!(
        w.packet_stats()
            .rejected_with(ErrorCode::JOB_RESOURCE_EXHAUSTED),
        1
    );
    testing::stop(w).await;
}

#[tokio::test]
async fn a_one_megabyte_job_id_gets_failed_101_under_its_shortened_id() {
    let bed = bed();
    let w = bed
        .worker()
        .handler("job.echo", echo)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let huge = "j".repeat(1_000_000);
    let bytes = packet::encode(&request(&huge, 0));
    assert!(bytes.len() < 1 << 20, "within the packet limit: it decodes");
    let short = answer_id(huge.as_bytes()).unwrap();
    let (pkt, r) = result_for(&bed, bytes, &short).await;
    assert_eq!(common::status(&r), JobStatus::Failed);
    assert_eq!(
        ErrorCode::of_result(&r),
        ErrorCode::PROTOCOL_MALFORMED_PACKET
    );
    assert_eq!(pkt.trace_id, "trace-big");
    assert!(r.job_id.len() <= cap_proto::validate::MAX_ID_LEN);
    // The answer is itself a valid packet.
    cap_proto::validate::packet(&pkt).unwrap();
    testing::stop(w).await;
}

#[tokio::test]
async fn unverified_senders_are_not_answered() {
    let bed = bed();
    let key = cap_sign::PrivateKey::generate();
    let mut ring = cap_sign::KeyRing::new();
    ring.add("client-big", key.public_key());
    let w = bed
        .worker()
        .trust(cap_sign::TrustPolicy::new(
            cap_sign::TrustMode::Require,
            ring,
        ))
        .handler("job.echo", echo)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let mut results = common::sub(&bed.bus, cap_proto::subject::RESULT).await;
    // Unsigned, oversize: alert only.
    bed.bus
        .publish(
            "job.echo",
            packet::encode(&request("job-unsigned", 2 << 20)).into(),
        )
        .await
        .unwrap();
    // Signed by the trusted key, oversize: answered.
    let mut p = request("job-signed", 2 << 20);
    let signed = cap_sign::packet::sign_to_bytes(&mut p, &key).unwrap();
    bed.bus.publish("job.echo", signed.into()).await.unwrap();
    let first = common::next_packet(&mut results).await;
    match first.payload {
        Some(Payload::JobResult(r)) => {
            assert_eq!(r.job_id, "job-signed");
            assert_eq!(ErrorCode::of_result(&r), ErrorCode::JOB_RESOURCE_EXHAUSTED);
        }
        other => panic!("unexpected {other:?}"),
    }
    common::assert_quiet(&mut results, Duration::from_millis(300)).await;
    testing::stop(w).await;
}
