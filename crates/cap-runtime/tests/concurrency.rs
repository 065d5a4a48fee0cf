//! `max_parallel`: exactly N jobs run at once (measured as wall time of one-second jobs),
//! on the topic route and the direct route, and 0 is refused when the worker is built.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_bus::Bus;
use cap_proto::v1::{JobStatus, bus_packet::Payload};
use cap_runtime::testing::{self, TestBed};
use cap_runtime::{Context, ErrorKind, JobError};
use std::time::{Duration, Instant};

const JOB: Duration = Duration::from_secs(1);

async fn one_second(_ctx: Context, _: serde_json::Value) -> Result<(), JobError> {
    tokio::time::sleep(JOB).await;
    Ok(())
}

/// Runs `jobs` one-second jobs on a worker with `max_parallel` and returns the wall time
/// until the last result. `direct`: sent to the worker's own subject (`worker.<id>.jobs`,
/// how the scheduler dispatches to a chosen worker), else to the topic (the pool's queue
/// group).
async fn wall_time(max_parallel: usize, jobs: usize, direct: bool) -> Duration {
    let bed = TestBed::new();
    let w = bed
        .worker()
        .max_parallel(max_parallel)
        .handler("job.sleep", one_second)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let mut results = common::sub(&bed.bus, cap_proto::subject::RESULT).await;
    let started = Instant::now();
    for i in 0..jobs {
        let job_id = format!("job-{i}");
        let packet =
            common::request_packet(&bed.store, &job_id, "job.sleep", &serde_json::json!({})).await;
        let subject = if direct {
            "worker.test-worker.jobs".to_owned()
        } else {
            "job.sleep".to_owned()
        };
        bed.bus
            .publish(&subject, cap_proto::packet::encode(&packet).into())
            .await
            .unwrap();
    }
    let mut done = std::collections::BTreeSet::new();
    while done.len() < jobs {
        let packet = common::next_packet(&mut results).await;
        if let Some(Payload::JobResult(r)) = packet.payload {
            assert_eq!(common::status(&r), JobStatus::Succeeded, "{r:?}");
            done.insert(r.job_id);
        }
    }
    let took = started.elapsed();
    testing::stop(w).await;
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_one_second_jobs_take_one_second_with_max_parallel_n() {
    for n in [1, 2, 8] {
        for direct in [false, true] {
            let took = wall_time(n, n, direct).await;
            eprintln!("max_parallel {n}, {n} jobs of 1 s (direct: {direct}): {took:?}");
            assert!(
                took >= JOB && took < Duration::from_millis(1800),
                "{n} jobs with max_parallel {n} (direct: {direct}) took {took:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_more_than_max_parallel_takes_two_rounds() {
    for n in [1, 2, 8] {
        let took = wall_time(n, n + 1, false).await;
        eprintln!("max_parallel {n}, {} jobs of 1 s: {took:?}", n + 1);
        assert!(
            took >= 2 * JOB && took < Duration::from_millis(2800),
            "{} jobs with max_parallel {n} took {took:?}",
            n + 1
        );
    }
}

#[test]
fn max_parallel_zero_is_a_config_error() {
    let bed = TestBed::new();
    let err = bed
        .worker()
        .max_parallel(0)
        .handler("job.sleep", one_second)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("max_parallel"), "{err}");
}
