//! Middleware: timeout (deadline and default), retry with backoff (per-handler
//! override), layer order, the `max_parallel` limit, and the metrics hook.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_proto::{ErrorCode, v1::JobStatus};
use cap_runtime::testing::{self, TestBed};
use cap_runtime::{
    Context, HandlerOptions, HandlerService, Job, JobError, MetricsHook, RetryPolicy, SubmitOptions,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

async fn sleepy(_ctx: Context, ms: u64) -> Result<u64, JobError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

#[tokio::test]
async fn the_request_deadline_ends_a_job_with_timeout() {
    let bed = TestBed::new();
    let w = bed
        .worker()
        .handler("job.sleep", sleepy)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let t = Instant::now();
    let run = bed
        .run_with(
            "job.sleep",
            &5_000,
            SubmitOptions::default().deadline(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    assert_eq!(run.status(), JobStatus::Timeout);
    assert_eq!(run.error_code(), ErrorCode::JOB_TIMEOUT);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "ended at the deadline"
    );
    // Within the deadline it succeeds.
    let run = bed
        .run_with(
            "job.sleep",
            &10,
            SubmitOptions::default().deadline(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert_eq!(run.status(), JobStatus::Succeeded);
    testing::stop(w).await;
}

#[tokio::test]
async fn the_default_and_handler_timeouts_apply_without_a_deadline() {
    let bed = TestBed::new();
    let w = bed
        .worker()
        .default_timeout(Some(Duration::from_millis(100)))
        .handler("job.sleep", sleepy)
        .handler_with(
            "job.patient",
            sleepy,
            HandlerOptions::default().timeout(Duration::from_secs(5)),
        )
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = bed.run("job.sleep", &3_000).await.unwrap();
    assert_eq!(run.status(), JobStatus::Timeout);
    let run = bed.run("job.patient", &300).await.unwrap();
    assert_eq!(run.status(), JobStatus::Succeeded);
    testing::stop(w).await;
}

#[derive(Clone, Default)]
struct Flaky {
    calls: Arc<AtomicUsize>,
    fail_first: usize,
}

#[tokio::test]
async fn retryable_errors_are_retried_with_backoff_and_per_handler_override() {
    let bed = TestBed::new();
    let flaky = Flaky {
        fail_first: 2,
        ..Default::default()
    };
    let never = Flaky {
        fail_first: usize::MAX,
        ..Default::default()
    };
    let (f1, f2) = (flaky.clone(), never.clone());
    let fast = RetryPolicy::exponential(3)
        .initial(Duration::from_millis(20))
        .jitter(0.5);
    let w = bed
        .worker()
        .retry(RetryPolicy::none())
        .handler_with(
            "job.flaky",
            move |_ctx: Context, _: serde_json::Value| {
                let f = f1.clone();
                async move {
                    let n = f.calls.fetch_add(1, Ordering::SeqCst);
                    if n < f.fail_first {
                        Err(JobError::retryable(
                            ErrorCode::JOB_RESOURCE_EXHAUSTED,
                            "busy",
                        ))
                    } else {
                        Ok(n)
                    }
                }
            },
            HandlerOptions::default().retry(fast),
        )
        .handler("job.never", move |_ctx: Context, _: serde_json::Value| {
            let f = f2.clone();
            async move {
                f.calls.fetch_add(1, Ordering::SeqCst);
                Err::<u32, _>(JobError::retryable(
                    ErrorCode::JOB_RESOURCE_EXHAUSTED,
                    "busy",
                ))
            }
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let t = Instant::now();
    let run = bed.run("job.flaky", &serde_json::json!({})).await.unwrap();
    assert_eq!(run.status(), JobStatus::Succeeded);
    assert_eq!(run.output::<usize>().unwrap(), 2, "third call succeeded");
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
    // Backoff: at least 10 + 20 ms (half jitter of 20 and 40 ms).
    assert!(t.elapsed() >= Duration::from_millis(30));

    // The worker default (no retries) applies to the other handler.
    let run = bed.run("job.never", &serde_json::json!({})).await.unwrap();
    assert_eq!(run.status(), JobStatus::FailedRetryable);
    assert_eq!(never.calls.load(Ordering::SeqCst), 1);
    testing::stop(w).await;
}

#[tokio::test]
async fn fatal_errors_are_not_retried() {
    let bed = TestBed::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let w = bed
        .worker()
        .retry(RetryPolicy::exponential(5).initial(Duration::from_millis(1)))
        .handler("job.fatal", move |_ctx: Context, _: serde_json::Value| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Err::<u32, _>(JobError::fatal(ErrorCode::JOB_PERMISSION_DENIED, "no"))
            }
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = bed.run("job.fatal", &serde_json::json!({})).await.unwrap();
    assert_eq!(run.status(), JobStatus::FailedFatal);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    testing::stop(w).await;
}

/// A layer that records its name on the way in.
#[derive(Clone)]
struct Mark(&'static str, Arc<Mutex<Vec<&'static str>>>);

impl tower::Layer<HandlerService> for Mark {
    type Service = MarkService;
    fn layer(&self, inner: HandlerService) -> MarkService {
        MarkService(self.0, self.1.clone(), inner)
    }
}

#[derive(Clone)]
struct MarkService(&'static str, Arc<Mutex<Vec<&'static str>>>, HandlerService);

impl tower::Service<Job> for MarkService {
    type Response = bytes::Bytes;
    type Error = JobError;
    type Future = <HandlerService as tower::Service<Job>>::Future;
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), JobError>> {
        self.2.poll_ready(cx)
    }
    fn call(&mut self, job: Job) -> Self::Future {
        self.1.lock().unwrap().push(self.0);
        self.2.call(job)
    }
}

#[tokio::test]
async fn layers_apply_in_registration_order_first_outermost() {
    let bed = TestBed::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l2 = log.clone();
    let w = bed
        .worker()
        .layer(Mark("first", log.clone()))
        .layer(Mark("second", log.clone()))
        .handler("job.x", move |_ctx: Context, _: serde_json::Value| {
            let l = l2.clone();
            async move {
                l.lock().unwrap().push("handler");
                Ok::<_, JobError>(())
            }
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    bed.run("job.x", &serde_json::json!({})).await.unwrap();
    assert_eq!(*log.lock().unwrap(), ["first", "second", "handler"]);
    testing::stop(w).await;
}

#[tokio::test]
async fn max_parallel_is_enforced() {
    let bed = TestBed::new();
    let now = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (n, p) = (now.clone(), peak.clone());
    let w = bed
        .worker()
        .max_parallel(3)
        .handler("job.busy", move |_ctx: Context, _: serde_json::Value| {
            let (n, p) = (n.clone(), p.clone());
            async move {
                let cur = n.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(cur, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, JobError>(())
            }
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = bed.client().await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..12 {
        handles.push(
            client
                .submit_with(
                    "job.busy",
                    &serde_json::json!({}),
                    SubmitOptions::default().direct(),
                )
                .await
                .unwrap(),
        );
    }
    for h in &mut handles {
        assert_eq!(
            common::status(h.result().await.unwrap()),
            JobStatus::Succeeded
        );
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        3,
        "exactly max_parallel at the peak"
    );
    testing::stop(w).await;
}

#[derive(Default)]
struct Counting {
    received: AtomicUsize,
    completed: AtomicUsize,
    failed: AtomicUsize,
    heartbeats: AtomicUsize,
}

impl MetricsHook for Counting {
    fn job_received(&self, _: &str, _: &str) {
        self.received.fetch_add(1, Ordering::SeqCst);
    }
    fn job_completed(&self, _: &str, _: &str, _: Duration) {
        self.completed.fetch_add(1, Ordering::SeqCst);
    }
    fn job_failed(&self, _: &str, _: &str, status: JobStatus, _: Duration) {
        assert_eq!(status, JobStatus::Timeout);
        self.failed.fetch_add(1, Ordering::SeqCst);
    }
    fn heartbeat_sent(&self, _: usize) {
        self.heartbeats.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_metrics_hook_sees_jobs_and_heartbeats() {
    let bed = TestBed::new();
    let m = Arc::new(Counting::default());
    let w = bed
        .worker()
        .metrics(m.clone())
        .default_timeout(Some(Duration::from_millis(50)))
        .heartbeat_interval(Duration::from_millis(20))
        .handler("job.sleep", sleepy)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    bed.run("job.sleep", &1).await.unwrap();
    bed.run("job.sleep", &2_000).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(m.received.load(Ordering::SeqCst), 2);
    assert_eq!(m.completed.load(Ordering::SeqCst), 1);
    assert_eq!(m.failed.load(Ordering::SeqCst), 1);
    assert!(m.heartbeats.load(Ordering::SeqCst) >= 2);
    testing::stop(w).await;
}
