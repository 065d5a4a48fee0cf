//! Shared helpers of the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use cap_blob::BlobStore;
use cap_bus::{Bus, MemoryBus};
use cap_proto::v1::{self, bus_packet::Payload};
use futures_util::StreamExt;
use std::time::Duration;

pub const WAIT: Duration = Duration::from_secs(10);

/// A job request packet (unsigned) for `job_id` on `topic`, with its context stored.
pub async fn request_packet<S: BlobStore>(
    store: &S,
    job_id: &str,
    topic: &str,
    input: &serde_json::Value,
) -> v1::BusPacket {
    let ptr = store
        .put_context(job_id, Bytes::from(serde_json::to_vec(input).unwrap()))
        .await
        .unwrap();
    v1::BusPacket::new(
        format!("trace-{job_id}"),
        "test-client",
        cap_runtime::packets::now(),
        v1::JobRequest {
            job_id: job_id.into(),
            topic: topic.into(),
            context_ptr: ptr.to_string(),
            ..Default::default()
        },
    )
}

/// The next packet on `sub`, decoded (panics after [`WAIT`]).
pub async fn next_packet<S>(sub: &mut S) -> v1::BusPacket
where
    S: futures_core::Stream<Item = cap_bus::Message> + Unpin,
{
    let msg = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("a packet in time")
        .expect("stream open");
    cap_proto::packet::decode(msg.payload(), 1 << 20).expect("a decodable packet")
}

/// The next `JobResult` on `sub` for `job_id`.
pub async fn next_result_for<S>(sub: &mut S, job_id: &str) -> (v1::BusPacket, v1::JobResult)
where
    S: futures_core::Stream<Item = cap_bus::Message> + Unpin,
{
    loop {
        let p = next_packet(sub).await;
        if let Some(Payload::JobResult(r)) = &p.payload
            && r.job_id == job_id
        {
            let r = r.clone();
            return (p, r);
        }
    }
}

/// Asserts that nothing arrives on `sub` within `d`.
pub async fn assert_quiet<S>(sub: &mut S, d: Duration)
where
    S: futures_core::Stream<Item = cap_bus::Message> + Unpin,
{
    if let Ok(Some(m)) = tokio::time::timeout(d, sub.next()).await {
        panic!("unexpected message on {}", m.subject());
    }
}

pub async fn sub(bus: &MemoryBus, pattern: &str) -> cap_bus::MemorySubscription {
    bus.subscribe(pattern).await.unwrap()
}

pub fn status(r: &v1::JobResult) -> v1::JobStatus {
    v1::JobStatus::try_from(r.status).unwrap()
}
