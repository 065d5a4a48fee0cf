//! A client that misses its job's result (its connection was down when the result went
//! out; results are not stored for clients) still gets it: it submits the job again, and
//! the scheduler answers a repeated submission of a finished job with its outcome.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use bytes::Bytes;
use cap_blob::MemoryBlobStore;
use cap_bus::{Bus, Error, Headers, MemoryBus, Message};
use cap_proto::{JobState, subject};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_runtime::{Client, ClientConfig, Context, JobError, SubmitOptions, Worker};
use cap_safety::Kernel;
use cap_safety::policy::Policy;
use cap_scheduler::{MemoryJobStore, Scheduler, SchedulerOptions};
use futures_util::StreamExt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The memory bus, except that subscriptions made through it to `sys.job.result` lose
/// the first `drop` messages (a client whose connection was down meanwhile).
#[derive(Clone)]
struct LossyResults {
    inner: MemoryBus,
    dropped: Arc<AtomicUsize>,
    drop: usize,
}

type Sub = Pin<Box<dyn futures_util::Stream<Item = Message> + Send>>;

impl Bus for LossyResults {
    type Subscription = Sub;

    async fn publish_with_headers(&self, s: &str, h: Headers, p: Bytes) -> Result<(), Error> {
        self.inner.publish_with_headers(s, h, p).await
    }
    async fn subscribe(&self, pattern: &str) -> Result<Sub, Error> {
        let sub = self.inner.subscribe(pattern).await?;
        if pattern != subject::RESULT {
            return Ok(Box::pin(sub));
        }
        let (dropped, limit) = (self.dropped.clone(), self.drop);
        Ok(Box::pin(sub.filter(move |_| {
            let lose = dropped.fetch_add(1, Ordering::SeqCst) < limit;
            std::future::ready(!lose)
        })))
    }
    async fn queue_subscribe(&self, pattern: &str, queue: &str) -> Result<Sub, Error> {
        Ok(Box::pin(self.inner.queue_subscribe(pattern, queue).await?))
    }
    async fn request_with_headers(
        &self,
        s: &str,
        h: Headers,
        p: Bytes,
        t: Duration,
    ) -> Result<Message, Error> {
        self.inner.request_with_headers(s, h, p, t).await
    }
    async fn flush(&self) -> Result<(), Error> {
        self.inner.flush().await
    }
    async fn close(&self) -> Result<(), Error> {
        self.inner.close().await
    }
    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
    fn max_payload(&self) -> Option<usize> {
        self.inner.max_payload()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_result_is_asked_for_again_and_announced_again() {
    let bus = MemoryBus::new();
    let blobs = MemoryBlobStore::emulating_redis(Default::default());
    let kernel = Kernel::new(Policy::from_text("version: 1\nrules: []\n", "p.yaml").unwrap());
    let scheduler = Scheduler::new(
        Packets::new(bus.clone(), PacketConfig::new("scheduler-1")),
        Arc::new(kernel),
        MemoryJobStore::new(),
        SchedulerOptions {
            tick: Duration::from_millis(20),
            ..Default::default()
        },
    );
    let stop = CancellationToken::new();
    tokio::spawn(scheduler.run(stop.clone()));
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let worker = Worker::builder(bus.clone(), blobs.clone())
        .id("worker-1")
        .handler("job.once", move |_: Context, v: serde_json::Value| {
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
    tokio::time::sleep(Duration::from_millis(50)).await;

    let lossy = LossyResults {
        inner: bus.clone(),
        dropped: Arc::default(),
        drop: 1,
    };
    let make = |reask| {
        let (lossy, blobs) = (lossy.clone(), blobs.clone());
        async move {
            Client::new(lossy, blobs, ClientConfig::new("client-1").reask(reask))
                .await
                .unwrap()
        }
    };
    // Without asking again, the missed result is simply missed.
    let deaf = make(None).await;
    let mut job = deaf
        .submit_with(
            "job.once",
            &serde_json::json!({"n": 1}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    assert!(job.result_within(Duration::from_millis(600)).await.is_err());

    // Asking again every 200 ms: the scheduler announces the outcome again.
    lossy.dropped.store(0, Ordering::SeqCst);
    let client = make(Some(Duration::from_millis(200))).await;
    let mut job = client
        .submit_with(
            "job.once",
            &serde_json::json!({"n": 2}),
            SubmitOptions::default(),
        )
        .await
        .unwrap();
    let r = job.result_within(Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.status, JobState::Succeeded.status() as i32);
    assert!(
        lossy.dropped.load(Ordering::SeqCst) >= 2,
        "the first result was lost"
    );
    // Asking again never ran the job again.
    assert_eq!(runs.load(Ordering::SeqCst), 2, "one run per job");
    worker.shutdown(Duration::from_secs(1)).await;
    stop.cancel();
}
