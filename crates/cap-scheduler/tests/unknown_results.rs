//! Results for jobs the scheduler does not know are counted (and logged at debug), not
//! dropped without a trace; results of known jobs are not counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_bus::MemoryBus;
use cap_proto::{JobState, subject, v1};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_safety::Kernel;
use cap_safety::policy::Policy;
use cap_scheduler::{MemoryJobStore, Observed, Scheduler, SchedulerOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn results_of_unknown_jobs_are_counted() {
    let bus = MemoryBus::new();
    let kernel = Kernel::new(Policy::from_text("version: 1\nrules: []\n", "p.yaml").unwrap());
    let scheduler = Scheduler::new(
        Packets::new(bus.clone(), PacketConfig::new("sched-u")),
        Arc::new(kernel),
        MemoryJobStore::new(),
        SchedulerOptions {
            tick: Duration::from_millis(20),
            ..Default::default()
        },
    );
    let stats = scheduler.stats();
    let mut observed = scheduler.observe();
    let stop = CancellationToken::new();
    let task = tokio::spawn(scheduler.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;

    let worker = Packets::new(bus.clone(), PacketConfig::new("worker-u"));
    let result = |job_id: &str| v1::JobResult {
        job_id: job_id.into(),
        status: v1::JobStatus::Succeeded as i32,
        worker_id: "worker-u".into(),
        ..Default::default()
    };
    worker
        .publish(subject::RESULT, worker.envelope("t-ghost", result("ghost")))
        .await
        .unwrap();
    until("the unknown result to be counted", || {
        stats.unknown_results() == 1
    })
    .await;

    // A known job: submitted, dispatched (no worker answers), then its result.
    let client = Packets::new(bus.clone(), PacketConfig::new("client-u"));
    let request = v1::JobRequest {
        job_id: "known".into(),
        topic: "job.echo".into(),
        context_ptr: "redis://ctx:known".into(),
        ..Default::default()
    };
    client
        .publish(subject::SUBMIT, client.envelope("t-known", request))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), observed.recv()).await {
            Ok(Ok(Observed::Transition { job_id, state, .. }))
                if job_id == "known" && state == JobState::Dispatched =>
            {
                break;
            }
            Ok(Ok(_)) => {}
            other => panic!("no dispatch: {other:?}"),
        }
    }
    worker
        .publish(subject::RESULT, worker.envelope("t-known", result("known")))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), observed.recv()).await {
            Ok(Ok(Observed::Transition { job_id, state, .. }))
                if job_id == "known" && state == JobState::Succeeded =>
            {
                break;
            }
            Ok(Ok(_)) => {}
            other => panic!("no result applied: {other:?}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(stats.unknown_results(), 1);
    stop.cancel();
    task.await.unwrap().unwrap();
}
