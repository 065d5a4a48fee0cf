//! Handler failures: retryable and fatal errors with codes, plain errors, panics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_proto::{ErrorCode, v1::JobStatus};
use cap_runtime::testing::{self, TestBed};
use cap_runtime::{Context, JobError};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Deserialize, JsonSchema)]
struct Cmd {
    what: String,
}

#[derive(Debug)]
enum ModelError {
    Busy,
    Unsupported(String),
}

impl From<ModelError> for JobError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Busy => {
                JobError::retryable(ErrorCode::JOB_RESOURCE_EXHAUSTED, "model busy")
            }
            ModelError::Unsupported(m) => {
                JobError::fatal(ErrorCode::from_i32(4001), format!("unsupported model {m}"))
            }
        }
    }
}

async fn model(_ctx: Context, c: Cmd) -> Result<String, ModelError> {
    match c.what.as_str() {
        "busy" => Err(ModelError::Busy),
        "bad" => Err(ModelError::Unsupported("gpt-0".into())),
        _ => Ok("ok".into()),
    }
}

async fn plain(_ctx: Context, _c: Cmd) -> Result<String, String> {
    Err("it did not work".into())
}

async fn panicky(_ctx: Context, c: Cmd) -> Result<String, JobError> {
    if c.what == "panic" {
        panic!("handler exploded");
    }
    Ok("alive".into())
}

#[tokio::test]
async fn retryable_and_fatal_errors_set_status_and_code() {
    let bed = TestBed::new();
    let w = bed
        .worker()
        .handler("job.model", model)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();

    let run = bed
        .run("job.model", &serde_json::json!({"what": "busy"}))
        .await
        .unwrap();
    assert_eq!(run.status(), JobStatus::FailedRetryable);
    assert_eq!(run.error_code(), ErrorCode::JOB_RESOURCE_EXHAUSTED);
    assert_eq!(run.result.error_code_enum, 201);
    assert_eq!(run.error_message(), "model busy");

    let run = bed
        .run("job.model", &serde_json::json!({"what": "bad"}))
        .await
        .unwrap();
    assert_eq!(run.status(), JobStatus::FailedFatal);
    assert_eq!(
        run.error_code().as_i32(),
        4001,
        "application codes are kept"
    );
    assert!(run.error_message().contains("gpt-0"));

    let run = bed
        .run("job.model", &serde_json::json!({"what": "fine"}))
        .await
        .unwrap();
    assert_eq!(run.status(), JobStatus::Succeeded);
    testing::stop(w).await;
}

#[tokio::test]
async fn plain_errors_are_failed_without_a_code() {
    let run = testing::run_handler("job.plain", plain, &serde_json::json!({"what": "x"}))
        .await
        .unwrap();
    assert_eq!(run.status(), JobStatus::Failed);
    assert_eq!(run.error_code(), ErrorCode::UNSPECIFIED);
    assert_eq!(run.error_message(), "it did not work");
}

#[tokio::test]
async fn a_panicking_handler_yields_failed_and_the_worker_lives_on() {
    let bed = TestBed::new();
    let w = bed
        .worker()
        .handler("job.p", panicky)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = bed
        .run("job.p", &serde_json::json!({"what": "panic"}))
        .await
        .unwrap();
    assert_eq!(run.status(), JobStatus::Failed);
    assert!(
        run.error_message().contains("handler exploded"),
        "{}",
        run.error_message()
    );
    for _ in 0..3 {
        let run = bed
            .run("job.p", &serde_json::json!({"what": "calm"}))
            .await
            .unwrap();
        assert_eq!(run.output::<String>().unwrap(), "alive");
    }
    assert_eq!(w.completed(), 4);
    testing::stop(w).await;
}

#[tokio::test]
async fn a_direct_job_for_an_unknown_topic_is_failed_retryable_206() {
    use cap_bus::Bus;
    let bed = TestBed::new();
    let w = bed
        .worker()
        .handler("job.p", panicky)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let mut results = common::sub(&bed.bus, cap_proto::subject::RESULT).await;
    let p = common::request_packet(&bed.store, "j-u", "job.unknown", &serde_json::json!({})).await;
    bed.bus
        .publish(
            "worker.test-worker.jobs",
            cap_proto::packet::encode(&p).into(),
        )
        .await
        .unwrap();
    let (_, r) = common::next_result_for(&mut results, "j-u").await;
    assert_eq!(common::status(&r), JobStatus::FailedRetryable);
    assert_eq!(ErrorCode::of_result(&r), ErrorCode::JOB_WORKER_UNAVAILABLE);
    // A direct job for a known topic runs.
    let p = common::request_packet(
        &bed.store,
        "j-k",
        "job.p",
        &serde_json::json!({"what": "x"}),
    )
    .await;
    bed.bus
        .publish(
            "worker.test-worker.jobs",
            cap_proto::packet::encode(&p).into(),
        )
        .await
        .unwrap();
    let (_, r) = common::next_result_for(&mut results, "j-k").await;
    assert_eq!(common::status(&r), JobStatus::Succeeded);
    testing::stop(w).await;
}
