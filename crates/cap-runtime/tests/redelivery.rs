//! Durable deliveries come again (JetStream: an acknowledgement lost with a server that
//! died, a worker cut off while it ran the job), to any worker of the pool. The run claim
//! in the shared store lets one worker run a dispatch: a redelivery of a job that ran
//! elsewhere republishes its recorded result, one of a job another worker is running is
//! handed back for later, and the job of a worker whose lease lapsed runs again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use bytes::Bytes;
use cap_blob::{BlobStore, MemoryBlobStore, key};
use cap_bus::{AckHandle, Acknowledge, Bus, Error, Headers, MemoryBus, Message};
use cap_proto::{subject, v1};
use cap_runtime::{Context, JobError, RunningWorker, Worker};
use futures_core::future::BoxFuture;
use futures_util::StreamExt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// What workers told the transport about their deliveries.
#[derive(Default)]
struct Acks {
    acked: AtomicUsize,
    naks: Mutex<Vec<Option<Duration>>>,
}

struct Ack(Arc<Acks>);

impl Acknowledge for Ack {
    fn ack(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.0.acked.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(()) })
    }
    fn nak(&self, delay: Option<Duration>) -> BoxFuture<'_, Result<(), Error>> {
        self.0.naks.lock().unwrap().push(delay);
        Box::pin(async { Ok(()) })
    }
    fn in_progress(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }
}

/// The memory bus, with job deliveries durable (acknowledged into `acks`) as a
/// JetStream consumer's are.
#[derive(Clone)]
struct Durable(MemoryBus, Arc<Acks>);

type Sub = Pin<Box<dyn futures_util::Stream<Item = Message> + Send>>;

impl Bus for Durable {
    type Subscription = Sub;
    async fn publish_with_headers(&self, s: &str, h: Headers, p: Bytes) -> Result<(), Error> {
        self.0.publish_with_headers(s, h, p).await
    }
    async fn subscribe(&self, pattern: &str) -> Result<Sub, Error> {
        Ok(Box::pin(self.0.subscribe(pattern).await?))
    }
    async fn queue_subscribe(&self, pattern: &str, queue: &str) -> Result<Sub, Error> {
        let sub = self.0.queue_subscribe(pattern, queue).await?;
        let acks = self.1.clone();
        Ok(Box::pin(sub.map(move |m| {
            m.with_ack(AckHandle::new(Arc::new(Ack(acks.clone()))))
        })))
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

struct Pool {
    bus: MemoryBus,
    acks: Arc<Acks>,
    store: MemoryBlobStore,
    runs: Arc<Mutex<Vec<String>>>,
    /// While set, handlers wait for `go`.
    gate: Arc<Mutex<bool>>,
    go: Arc<Notify>,
}

impl Pool {
    fn new() -> Self {
        Pool {
            bus: MemoryBus::new(),
            acks: Arc::default(),
            store: MemoryBlobStore::emulating_redis(Default::default()),
            runs: Arc::default(),
            gate: Arc::default(),
            go: Arc::default(),
        }
    }

    async fn worker(&self, id: &str) -> RunningWorker<Durable> {
        self.worker_on(id, &self.bus).await
    }

    async fn worker_on(&self, id: &str, bus: &MemoryBus) -> RunningWorker<Durable> {
        let (runs, gate, go, me) = (
            self.runs.clone(),
            self.gate.clone(),
            self.go.clone(),
            id.to_owned(),
        );
        Worker::builder(Durable(bus.clone(), self.acks.clone()), self.store.clone())
            .id(id)
            .run_lease(Duration::from_secs(5))
            .handler("job.redo", move |_: Context, v: serde_json::Value| {
                let (runs, gate, go, me) = (runs.clone(), gate.clone(), go.clone(), me.clone());
                async move {
                    runs.lock().unwrap().push(me);
                    if *gate.lock().unwrap() {
                        go.notified().await;
                    }
                    Ok::<_, JobError>(v)
                }
            })
            .build()
            .unwrap()
            .start()
            .await
            .unwrap()
    }

    fn runs(&self) -> Vec<String> {
        self.runs.lock().unwrap().clone()
    }

    async fn deliver(&self, p: &v1::BusPacket) {
        self.bus
            .publish("job.redo", cap_proto::packet::encode(p).into())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_redelivery_of_a_job_that_ran_elsewhere_republishes_its_result() {
    let pool = Pool::new();
    let mut results = common::sub(&pool.bus, subject::RESULT).await;
    let p = common::request_packet(&pool.store, "done", "job.redo", &serde_json::json!(1)).await;

    // w-1 runs the job; its acknowledgement is lost (say, with the NATS server).
    let w1 = pool.worker("w-1").await;
    pool.deliver(&p).await;
    let (first, r) = common::next_result_for(&mut results, "done").await;
    assert_eq!(common::status(&r), v1::JobStatus::Succeeded);
    w1.shutdown(Duration::from_secs(1)).await;

    // The delivery comes again, to w-2: the recorded result goes out, nothing runs.
    let _w2 = pool.worker("w-2").await;
    pool.deliver(&p).await;
    let (again, r) = common::next_result_for(&mut results, "done").await;
    assert_eq!(common::status(&r), v1::JobStatus::Succeeded);
    assert_eq!(again, first, "the very packet w-1 published");
    assert_eq!(pool.runs(), ["w-1"], "the handler ran once");
    assert_eq!(pool.acks.acked.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_redelivery_of_a_job_another_worker_is_running_is_handed_back() {
    let pool = Pool::new();
    let mut results = common::sub(&pool.bus, subject::RESULT).await;
    let p = common::request_packet(&pool.store, "slow", "job.redo", &serde_json::json!(1)).await;
    *pool.gate.lock().unwrap() = true;

    let w1 = pool.worker("w-1").await;
    pool.deliver(&p).await;
    while pool.runs().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // w-1 runs it; the delivery comes again, to w-2 (on a bus of its own here, so
    // that it is w-2 that gets it).
    let other = MemoryBus::new();
    let mut elsewhere = common::sub(&other, subject::RESULT).await;
    let _w2 = pool.worker_on("w-2", &other).await;
    other
        .publish("job.redo", cap_proto::packet::encode(&p).into())
        .await
        .unwrap();
    for _ in 0..200 {
        if !pool.acks.naks.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        *pool.acks.naks.lock().unwrap(),
        [Some(Duration::from_millis(1250))],
        "handed back for a quarter of a lease"
    );
    assert_eq!(pool.runs(), ["w-1"]);
    // w-1 finishes: one result, the handler ran once.
    pool.go.notify_waiters();
    let (_, r) = common::next_result_for(&mut results, "slow").await;
    assert_eq!(common::status(&r), v1::JobStatus::Succeeded);
    assert_eq!(r.worker_id, "w-1");
    common::assert_quiet(&mut results, Duration::from_millis(200)).await;
    common::assert_quiet(&mut elsewhere, Duration::from_millis(10)).await;
    assert_eq!(pool.runs(), ["w-1"]);
    drop(w1);
}

#[tokio::test]
async fn the_job_of_a_worker_whose_lease_lapsed_runs_again() {
    let pool = Pool::new();
    let mut results = common::sub(&pool.bus, subject::RESULT).await;
    let p = common::request_packet(&pool.store, "orphan", "job.redo", &serde_json::json!(1)).await;
    // A worker that died while running it left its claim behind, with a short lease.
    let claim = key::run_claim("orphan", "");
    assert!(
        pool.store
            .put_if_absent(
                &claim,
                Bytes::from_static(b"Rdead"),
                Some(Duration::from_millis(200))
            )
            .await
            .unwrap()
    );
    let _w2 = pool.worker("w-2").await;
    pool.deliver(&p).await;
    common::assert_quiet(&mut results, Duration::from_millis(100)).await;
    assert!(pool.runs().is_empty(), "not while the lease holds");
    assert_eq!(pool.acks.naks.lock().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    pool.deliver(&p).await;
    let (_, r) = common::next_result_for(&mut results, "orphan").await;
    assert_eq!(common::status(&r), v1::JobStatus::Succeeded);
    assert_eq!(pool.runs(), ["w-2"]);
}
