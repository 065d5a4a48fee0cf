//! A JetStream redelivery of a job that another worker already finished (its
//! acknowledgement was lost, say with a NATS server that died) is answered from the
//! stored output: the handler does not run a second time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use bytes::Bytes;
use cap_blob::{BlobStore, MemoryBlobStore};
use cap_bus::{Bus, Error, Headers, MemoryBus, Message};
use cap_proto::{subject, v1};
use cap_runtime::{Context, JobError, Worker};
use futures_util::StreamExt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The memory bus, with every delivery on job subjects marked as a redelivery (as
/// JetStream marks a message delivered before but never acknowledged).
#[derive(Clone)]
struct Redelivering(MemoryBus);

type Sub = Pin<Box<dyn futures_util::Stream<Item = Message> + Send>>;

impl Bus for Redelivering {
    type Subscription = Sub;
    async fn publish_with_headers(&self, s: &str, h: Headers, p: Bytes) -> Result<(), Error> {
        self.0.publish_with_headers(s, h, p).await
    }
    async fn subscribe(&self, pattern: &str) -> Result<Sub, Error> {
        Ok(Box::pin(self.0.subscribe(pattern).await?))
    }
    async fn queue_subscribe(&self, pattern: &str, queue: &str) -> Result<Sub, Error> {
        let sub = self.0.queue_subscribe(pattern, queue).await?;
        Ok(Box::pin(sub.map(|m| m.with_delivery_count(2))))
    }
    async fn request_with_headers(
        &self,
        s: &str,
        h: Headers,
        p: Bytes,
        t: Duration,
    ) -> Result<Message, Error> {
        self.0.request_with_headers(s, h, p, t).await
    }
    async fn flush(&self) -> Result<(), Error> {
        self.0.flush().await
    }
    async fn close(&self) -> Result<(), Error> {
        self.0.close().await
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
    fn max_payload(&self) -> Option<usize> {
        self.0.max_payload()
    }
}

#[tokio::test]
async fn a_redelivered_job_with_its_output_stored_is_not_run_again() {
    let bus = MemoryBus::new();
    let store = MemoryBlobStore::emulating_redis(Default::default());
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let _w = Worker::builder(Redelivering(bus.clone()), store.clone())
        .id("w-2")
        .handler("job.redo", move |_: Context, v: serde_json::Value| {
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
    let mut results = common::sub(&bus, subject::RESULT).await;

    // Another worker ran `done` and stored its output before its ack was lost.
    let p = common::request_packet(&store, "done", "job.redo", &serde_json::json!(1)).await;
    store
        .put_result("done", Bytes::from_static(b"{\"by\":\"w-1\"}"))
        .await
        .unwrap();
    bus.publish("job.redo", cap_proto::packet::encode(&p).into())
        .await
        .unwrap();
    let (pkt, r) = common::next_result_for(&mut results, "done").await;
    assert_eq!(common::status(&r), v1::JobStatus::Succeeded);
    assert_eq!(r.result_ptr, "redis://res:done");
    assert_eq!(r.worker_id, pkt.sender_id);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "the handler did not run again"
    );
    assert_eq!(
        &store.get("res:done").await.unwrap()[..],
        b"{\"by\":\"w-1\"}"
    );

    // A redelivered job without a stored output did not finish anywhere: it runs.
    let p = common::request_packet(&store, "fresh", "job.redo", &serde_json::json!(2)).await;
    bus.publish("job.redo", cap_proto::packet::encode(&p).into())
        .await
        .unwrap();
    let (_, r) = common::next_result_for(&mut results, "fresh").await;
    assert_eq!(common::status(&r), v1::JobStatus::Succeeded);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
