//! Worker lifecycle: handshake, heartbeats, progress, cancellation, duplicate
//! deliveries, graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_bus::Bus;
use cap_proto::v1::{self, JobStatus, bus_packet::Payload};
use cap_proto::{negotiate::capability, subject};
use cap_runtime::testing::{self, TestBed};
use cap_runtime::{Context, JobError, SubmitOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

async fn sleepy(ctx: Context, ms: u64) -> Result<u64, JobError> {
    ctx.progress(10, "started").await.ok();
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

#[tokio::test]
async fn handshake_and_heartbeats_describe_the_worker() {
    let bed = TestBed::new();
    let mut hs = common::sub(&bed.bus, subject::HANDSHAKE).await;
    let mut hb = common::sub(&bed.bus, subject::HEARTBEAT).await;
    let w = bed
        .worker()
        .id("w-announce")
        .pool("echo")
        .max_parallel(7)
        .heartbeat_interval(Duration::from_millis(50))
        .handler("job.zeta", sleepy)
        .handler("job.alpha", sleepy)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();

    let p = common::next_packet(&mut hs).await;
    assert_eq!(p.sender_id, "w-announce");
    cap_proto::validate::packet(&p).unwrap();
    let Some(Payload::Handshake(h)) = p.payload else {
        panic!("a handshake")
    };
    assert_eq!(h.component_id, "w-announce");
    assert_eq!(h.role, v1::ComponentRole::Worker as i32);
    assert_eq!(h.supported_versions, [1]);
    assert_eq!(h.ready_topics, ["job.alpha", "job.zeta"]);
    assert!(h.sdk_version.starts_with("cap-rs/"));
    for key in [
        capability::PROGRESS,
        capability::CANCEL,
        capability::HEARTBEATS,
        capability::ERROR_CODES,
    ] {
        assert_eq!(h.capabilities.get(key), Some(&true), "{key}");
    }
    assert!(h.capabilities.keys().all(|k| capability::is_valid(k)));
    assert!(
        !h.capabilities.contains_key(capability::SIGNATURES),
        "not signing"
    );

    // Heartbeats keep coming while idle, and count running jobs.
    let client = bed.client().await.unwrap();
    let mut job = client
        .submit_with("job.alpha", &400, SubmitOptions::default().direct())
        .await
        .unwrap();
    let mut saw_active = false;
    for _ in 0..6 {
        let p = common::next_packet(&mut hb).await;
        cap_proto::validate::packet(&p).unwrap();
        let Some(Payload::Heartbeat(b)) = p.payload else {
            panic!("a heartbeat")
        };
        assert_eq!(b.worker_id, "w-announce");
        assert_eq!(b.pool, "echo");
        assert_eq!(b.max_parallel_jobs, 7);
        assert!((0.0..=100.0).contains(&b.cpu_load));
        assert!(
            b.memory_load > 0.0 && b.memory_load <= 100.0,
            "real memory load {}",
            b.memory_load
        );
        saw_active |= b.active_jobs == 1;
    }
    assert!(saw_active, "a heartbeat reported the running job");
    job.result().await.unwrap();

    // Re-announcing on demand (what a reconnect signal does).
    w.announce().await.unwrap();
    assert!(matches!(
        common::next_packet(&mut hs).await.payload,
        Some(Payload::Handshake(_))
    ));
    testing::stop(w).await;
}

#[tokio::test]
async fn handshake_signal_re_announces() {
    let bed = TestBed::new();
    let mut hs = common::sub(&bed.bus, subject::HANDSHAKE).await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let signal =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|()| ((), rx)) },
        );
    let w = bed
        .worker()
        .handshake_on(signal)
        .handler("job.a", sleepy)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    common::next_packet(&mut hs).await;
    tx.send(()).unwrap();
    let p = common::next_packet(&mut hs).await;
    assert!(matches!(p.payload, Some(Payload::Handshake(_))));
    testing::stop(w).await;
}

#[tokio::test]
async fn progress_reports_reach_the_handle_with_the_trace_id() {
    let bed = TestBed::new();
    let mut raw = common::sub(&bed.bus, subject::PROGRESS).await;
    let w = bed
        .worker()
        .handler("job.steps", |ctx: Context, n: i32| async move {
            for i in 1..=n {
                ctx.progress(i * 100 / n, format!("step {i}"))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, JobError>(n)
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = bed.client().await.unwrap();
    let mut h = client
        .submit_with(
            "job.steps",
            &4,
            SubmitOptions::default().direct().trace_id("trace-progress"),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    while let Some(p) = h.next_progress().await {
        seen.push((p.percent, p.message));
    }
    // The worker announces the start (RUNNING, 0 %) before the handler's own reports.
    assert_eq!(
        seen,
        [
            (0, "started".to_string()),
            (25, "step 1".to_string()),
            (50, "step 2".into()),
            (75, "step 3".into()),
            (100, "step 4".into())
        ]
    );
    let p = common::next_packet(&mut raw).await;
    assert_eq!(p.trace_id, "trace-progress");
    assert_eq!(p.sender_id, "test-worker");
    assert_eq!(h.output::<i32>().await.unwrap(), 4);
    testing::stop(w).await;
}

#[tokio::test]
async fn a_job_cancel_ends_the_running_handler_with_cancelled() {
    let bed = TestBed::new();
    let observed = Arc::new(AtomicUsize::new(0));
    let o = observed.clone();
    let w = bed
        .worker()
        .handler("job.wait", move |ctx: Context, _: serde_json::Value| {
            let o = o.clone();
            async move {
                ctx.progress(1, "waiting").await.ok();
                ctx.cancelled().await;
                o.fetch_add(1, Ordering::SeqCst);
                Ok::<_, JobError>(())
            }
        })
        // An uncooperative handler is cancelled too (its future is dropped).
        .handler(
            "job.stubborn",
            |_ctx: Context, _: serde_json::Value| async move {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, JobError>(())
            },
        )
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = bed.client().await.unwrap();
    for topic in ["job.wait", "job.stubborn"] {
        let mut h = client
            .submit_with(
                topic,
                &serde_json::json!({}),
                SubmitOptions::default().direct(),
            )
            .await
            .unwrap();
        // Wait until it runs.
        while w.active_jobs() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        h.cancel("user pressed stop").await.unwrap();
        let r = h.result().await.unwrap();
        assert_eq!(common::status(r), JobStatus::Cancelled, "{topic}");
        assert!(r.error_message.contains("JobCancel"), "{}", r.error_message);
    }
    testing::stop(w).await;
}

#[tokio::test]
async fn a_redelivered_job_is_not_executed_twice() {
    let bed = TestBed::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let r2 = runs.clone();
    let w = bed
        .worker()
        .handler("job.once", move |_ctx: Context, ms: u64| {
            let r = r2.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, JobError>(ms)
            }
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let mut results = common::sub(&bed.bus, subject::RESULT).await;
    let packet =
        common::request_packet(&bed.store, "dup-1", "job.once", &serde_json::json!(150)).await;
    let bytes: bytes::Bytes = cap_proto::packet::encode(&packet).into();
    // Two copies while it runs, one through the direct subject.
    bed.bus.publish("job.once", bytes.clone()).await.unwrap();
    bed.bus.publish("job.once", bytes.clone()).await.unwrap();
    bed.bus
        .publish("worker.test-worker.jobs", bytes.clone())
        .await
        .unwrap();
    let (_, first) = common::next_result_for(&mut results, "dup-1").await;
    assert_eq!(common::status(&first), JobStatus::Succeeded);
    common::assert_quiet(&mut results, Duration::from_millis(100)).await;
    // A copy after it finished: the recorded result, byte for byte, is published again.
    bed.bus.publish("job.once", bytes.clone()).await.unwrap();
    let (_, again) = common::next_result_for(&mut results, "dup-1").await;
    assert_eq!(again, first);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "executed once");
    testing::stop(w).await;
}

#[tokio::test]
async fn a_retryable_failure_runs_again_when_the_job_comes_back() {
    let bed = TestBed::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let r2 = runs.clone();
    let w = bed
        .worker()
        .handler("job.flaky", move |_ctx: Context, _v: u64| {
            let r = r2.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(JobError::retryable(
                        cap_proto::ErrorCode::JOB_RESOURCE_EXHAUSTED,
                        "busy",
                    ))
                } else {
                    Ok(7u64)
                }
            }
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let mut results = common::sub(&bed.bus, subject::RESULT).await;
    let packet =
        common::request_packet(&bed.store, "retry-1", "job.flaky", &serde_json::json!(0)).await;
    let bytes: bytes::Bytes = cap_proto::packet::encode(&packet).into();
    bed.bus.publish("job.flaky", bytes.clone()).await.unwrap();
    let (_, first) = common::next_result_for(&mut results, "retry-1").await;
    assert_eq!(common::status(&first), JobStatus::FailedRetryable);
    // The retry (a scheduler re-dispatching the same job id) executes the handler again.
    bed.bus.publish("job.flaky", bytes.clone()).await.unwrap();
    let (_, second) = common::next_result_for(&mut results, "retry-1").await;
    assert_eq!(common::status(&second), JobStatus::Succeeded);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    testing::stop(w).await;
}

#[tokio::test]
async fn shutdown_lets_running_jobs_finish_within_the_grace_period() {
    let bed = TestBed::new();
    let w = bed
        .worker()
        .handler("job.sleep", sleepy)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = bed.client().await.unwrap();
    let mut h = client
        .submit_with("job.sleep", &100, SubmitOptions::default().direct())
        .await
        .unwrap();
    while w.active_jobs() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = w.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        (report.in_flight, report.finished, report.cancelled),
        (1, 1, 0)
    );
    assert_eq!(
        common::status(h.result().await.unwrap()),
        JobStatus::Succeeded
    );

    // Intake is closed: a new job waits in vain.
    let mut late = client
        .submit_with("job.sleep", &1, SubmitOptions::default().direct())
        .await
        .unwrap();
    assert_eq!(
        late.result_within(Duration::from_millis(200))
            .await
            .unwrap_err()
            .kind(),
        cap_runtime::ErrorKind::Timeout
    );
}

#[tokio::test]
async fn shutdown_cancels_jobs_still_running_after_the_grace_period() {
    let bed = TestBed::new();
    let w = bed
        .worker()
        .handler("job.sleep", sleepy)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = bed.client().await.unwrap();
    let mut h = client
        .submit_with("job.sleep", &60_000, SubmitOptions::default().direct())
        .await
        .unwrap();
    while w.active_jobs() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let report = w.shutdown(Duration::from_millis(100)).await;
    assert_eq!(
        (report.in_flight, report.finished, report.cancelled),
        (1, 0, 1)
    );
    let r = h.result().await.unwrap();
    assert_eq!(common::status(r), JobStatus::Cancelled);
    assert!(
        r.error_message.contains("shutting down"),
        "{}",
        r.error_message
    );
}
