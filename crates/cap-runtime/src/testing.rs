//! Test support: run handlers on the in-memory bus and blob store and look at the
//! `JobResult` (what the official SDKs offer as `run_handler` / `create_test_agent`).
//!
//! ```
//! use cap_runtime::{Context, JobError, testing};
//! use cap_proto::v1::JobStatus;
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! async fn double(_: Context, n: i64) -> Result<i64, JobError> { Ok(n * 2) }
//! let run = testing::run_handler("job.double", double, &21).await.unwrap();
//! assert_eq!(run.status(), JobStatus::Succeeded);
//! assert_eq!(run.output::<i64>().unwrap(), 42);
//!
//! let bad = testing::run_handler("job.double", double, &"not a number").await.unwrap();
//! assert_eq!(bad.error_code(), cap_proto::ErrorCode::JOB_INVALID_INPUT);
//! # });
//! ```

use crate::client::{Client, ClientConfig, SubmitOptions};
use crate::job::JobError;
use crate::worker::{Handler, RunningWorker, Worker, WorkerBuilder};
use crate::{Error, ErrorKind};
use bytes::Bytes;
use cap_blob::{BlobStore, MemoryBlobStore};
use cap_bus::MemoryBus;
use cap_proto::{ErrorCode, v1};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::sync::OnceCell;

/// How long [`TestBed::run`] waits for a result.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An in-memory bus and blob store (handing out `redis://` pointers like the official
/// runtime), with helpers to build workers and run jobs on them.
#[derive(Debug, Default)]
pub struct TestBed {
    /// The bus.
    pub bus: MemoryBus,
    /// The blob store.
    pub store: MemoryBlobStore,
    client: OnceCell<Client<MemoryBus, MemoryBlobStore>>,
}

impl TestBed {
    /// A fresh bus and store.
    pub fn new() -> Self {
        TestBed {
            bus: MemoryBus::new(),
            store: MemoryBlobStore::emulating_redis(Default::default()),
            client: OnceCell::new(),
        }
    }

    /// A worker builder on this bed (id `test-worker`, heartbeats every second).
    pub fn worker(&self) -> WorkerBuilder<MemoryBus, MemoryBlobStore> {
        Worker::builder(self.bus.clone(), self.store.clone())
            .id("test-worker")
            .heartbeat_interval(Duration::from_secs(1))
    }

    /// The bed's client (id `test-client`), made on first use.
    pub async fn client(&self) -> Result<&Client<MemoryBus, MemoryBlobStore>, Error> {
        self.client
            .get_or_try_init(|| {
                Client::new(
                    self.bus.clone(),
                    self.store.clone(),
                    ClientConfig::new("test-client").result_timeout(TEST_TIMEOUT),
                )
            })
            .await
    }

    /// Submits `input` straight to `topic` and waits for the result.
    pub async fn run<I: Serialize + ?Sized>(
        &self,
        topic: &str,
        input: &I,
    ) -> Result<JobRun, Error> {
        self.run_with(topic, input, SubmitOptions::default()).await
    }

    /// [`run`](Self::run) with options (always direct).
    pub async fn run_with<I: Serialize + ?Sized>(
        &self,
        topic: &str,
        input: &I,
        options: SubmitOptions,
    ) -> Result<JobRun, Error> {
        let client = self.client().await?;
        let mut handle = client.submit_with(topic, input, options.direct()).await?;
        let result = handle.result().await?.clone();
        self.collect(result).await
    }

    /// Reads the output a result points to (for results obtained otherwise).
    pub async fn collect(&self, result: v1::JobResult) -> Result<JobRun, Error> {
        let output = if result.result_ptr.is_empty() {
            None
        } else {
            let ptr = cap_proto::Pointer::parse(&result.result_ptr)
                .map_err(|e| Error::with_source(ErrorKind::Blob, "result_ptr", e))?;
            Some(self.store.get_ptr(&ptr).await?)
        };
        Ok(JobRun { result, output })
    }
}

/// One finished job: its result and, on success, its output bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRun {
    /// The result as published.
    pub result: v1::JobResult,
    /// The output stored at `result_ptr`.
    pub output: Option<Bytes>,
}

impl JobRun {
    /// The status.
    pub fn status(&self) -> v1::JobStatus {
        v1::JobStatus::try_from(self.result.status).unwrap_or(v1::JobStatus::Unspecified)
    }

    /// The error code.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::of_result(&self.result)
    }

    /// The error message.
    pub fn error_message(&self) -> &str {
        &self.result.error_message
    }

    /// The output decoded from JSON.
    pub fn output<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let bytes = self
            .output
            .as_ref()
            .ok_or_else(|| Error::job_failed(self.result.clone()))?;
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// Runs `handler` once on `input`, on a fresh in-memory bus and store, and returns the
/// result and output.
pub async fn run_handler<H, I, O, E, In>(
    topic: &str,
    handler: H,
    input: &In,
) -> Result<JobRun, Error>
where
    H: Handler<I, O, E>,
    I: DeserializeOwned + JsonSchema + Send + 'static,
    O: Serialize + JsonSchema + Send + 'static,
    E: Into<JobError> + Send + 'static,
    In: Serialize + ?Sized,
{
    let bed = TestBed::new();
    let worker = bed
        .worker()
        .handler(topic, handler)
        .build()?
        .start()
        .await?;
    let run = bed.run(topic, input).await;
    stop(worker).await;
    run
}

/// Shuts a test worker down (1 s grace).
pub async fn stop(worker: RunningWorker<MemoryBus>) {
    worker.shutdown(Duration::from_secs(1)).await;
}
