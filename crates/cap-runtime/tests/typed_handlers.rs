//! Typed handlers: input decoding (203 naming the field), missing context (204),
//! output storage and the SUCCEEDED result.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_blob::BlobStore;
use cap_proto::{ErrorCode, v1::JobStatus};
use cap_runtime::testing::{self, TestBed};
use cap_runtime::{Context, JobError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, JsonSchema)]
struct Order {
    item: String,
    quantity: u32,
    address: Address,
}

#[derive(Deserialize, JsonSchema)]
struct Address {
    city: String,
}

#[derive(Serialize, Deserialize, JsonSchema, PartialEq, Debug)]
struct Receipt {
    summary: String,
}

async fn place(ctx: Context, o: Order) -> Result<Receipt, JobError> {
    Ok(Receipt {
        summary: format!(
            "{} x{} to {} (job {})",
            o.item,
            o.quantity,
            o.address.city,
            ctx.job_id()
        ),
    })
}

#[tokio::test]
async fn output_is_stored_and_pointed_to_by_a_succeeded_result() {
    let bed = TestBed::new();
    let w = bed
        .worker()
        .handler("job.order", place)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let input = serde_json::json!({"item": "tea", "quantity": 2, "address": {"city": "Oslo"}});
    let run = bed.run("job.order", &input).await.unwrap();
    assert_eq!(run.status(), JobStatus::Succeeded);
    assert_eq!(run.result.worker_id, "test-worker");
    assert!(run.result.execution_ms >= 0);
    let job_id = &run.result.job_id;
    assert_eq!(run.result.result_ptr, format!("redis://res:{job_id}"));
    let receipt: Receipt = run.output().unwrap();
    assert_eq!(receipt.summary, format!("tea x2 to Oslo (job {job_id})"));
    // The stored result is there with a TTL (the store's default: days).
    assert!(bed.store.exists(&format!("res:{job_id}")).await.unwrap());
    testing::stop(w).await;
}

#[tokio::test]
async fn schema_mismatch_fails_with_203_naming_the_field() {
    let bed = TestBed::new();
    let w = bed
        .worker()
        .handler("job.order", place)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();

    let wrong_type =
        serde_json::json!({"item": "tea", "quantity": "two", "address": {"city": "Oslo"}});
    let run = bed.run("job.order", &wrong_type).await.unwrap();
    assert_eq!(run.status(), JobStatus::Failed);
    assert_eq!(run.error_code(), ErrorCode::JOB_INVALID_INPUT);
    assert_eq!(run.result.error_code, "ERROR_CODE_JOB_INVALID_INPUT");
    assert!(
        run.error_message().contains("quantity"),
        "{}",
        run.error_message()
    );

    let nested_missing = serde_json::json!({"item": "tea", "quantity": 1, "address": {}});
    let run = bed.run("job.order", &nested_missing).await.unwrap();
    assert_eq!(run.error_code(), ErrorCode::JOB_INVALID_INPUT);
    assert!(
        run.error_message().contains("address") && run.error_message().contains("city"),
        "{}",
        run.error_message()
    );
    assert!(run.output.is_none());
    testing::stop(w).await;
}

#[tokio::test]
async fn invalid_json_fails_with_203() {
    let bed = TestBed::new();
    let w = bed
        .worker()
        .handler("job.order", place)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = bed.client().await.unwrap();
    let mut h = client
        .submit_bytes(
            "job.order",
            bytes::Bytes::from_static(b"{oops"),
            cap_runtime::SubmitOptions::default().direct(),
        )
        .await
        .unwrap();
    let r = h.result().await.unwrap().clone();
    assert_eq!(common::status(&r), JobStatus::Failed);
    assert_eq!(ErrorCode::of_result(&r), ErrorCode::JOB_INVALID_INPUT);
    assert!(
        r.error_message.contains("not valid JSON"),
        "{}",
        r.error_message
    );
    // `output` turns a failure into a typed error carrying the result.
    let err = h.output::<Receipt>().await.unwrap_err();
    assert_eq!(err.kind(), cap_runtime::ErrorKind::JobFailed);
    assert_eq!(err.code(), ErrorCode::JOB_INVALID_INPUT);
    testing::stop(w).await;
}

#[tokio::test]
async fn missing_context_fails_with_204() {
    use cap_bus::Bus;
    let bed = TestBed::new();
    let w = bed
        .worker()
        .handler("job.order", place)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let mut results = common::sub(&bed.bus, cap_proto::subject::RESULT).await;

    // A pointer to the job's own context, which is gone.
    let p =
        common::request_packet(&bed.store, "j-missing", "job.order", &serde_json::json!({})).await;
    assert!(
        cap_blob::BlobStore::delete(&bed.store, "ctx:j-missing")
            .await
            .unwrap()
    );
    bed.bus
        .publish("job.order", cap_proto::packet::encode(&p).into())
        .await
        .unwrap();
    let (pkt, r) = common::next_result_for(&mut results, "j-missing").await;
    assert_eq!(common::status(&r), JobStatus::Failed);
    assert_eq!(ErrorCode::of_result(&r), ErrorCode::JOB_NOT_FOUND);
    assert_eq!(
        pkt.trace_id, "trace-j-missing",
        "trace id copied from the request"
    );

    // No context_ptr at all.
    let mut p =
        common::request_packet(&bed.store, "j-none", "job.order", &serde_json::json!({})).await;
    if let Some(cap_proto::v1::bus_packet::Payload::JobRequest(r)) = &mut p.payload {
        r.context_ptr.clear();
    }
    bed.bus
        .publish("job.order", cap_proto::packet::encode(&p).into())
        .await
        .unwrap();
    let (_, r) = common::next_result_for(&mut results, "j-none").await;
    assert_eq!(ErrorCode::of_result(&r), ErrorCode::JOB_NOT_FOUND);
    testing::stop(w).await;
}

#[tokio::test]
async fn raw_handlers_see_and_return_bytes() {
    let bed = TestBed::new();
    let w = bed
        .worker()
        .raw_handler("job.rev", |_ctx: Context, input: bytes::Bytes| async move {
            let mut v = input.to_vec();
            v.reverse();
            Ok::<_, JobError>(bytes::Bytes::from(v))
        })
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let run = bed.run("job.rev", &"abc").await.unwrap();
    assert_eq!(run.output.as_deref(), Some(&b"\"cba\""[..]));
    testing::stop(w).await;
}

#[tokio::test]
async fn builder_rejects_bad_configuration() {
    let bed = TestBed::new();
    let err = bed.worker().build().unwrap_err();
    assert_eq!(err.kind(), cap_runtime::ErrorKind::Config);
    let err = bed.worker().handler("job.*", place).build().unwrap_err();
    assert!(err.to_string().contains("job.*"), "{err}");
    let err = bed
        .worker()
        .id("a.b")
        .handler("job.x", place)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), cap_runtime::ErrorKind::Config);
}
