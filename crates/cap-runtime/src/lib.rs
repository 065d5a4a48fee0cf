//! # cap-runtime
//!
//! Workers and clients for CAP, the Cordum Agent Protocol: typed job handlers behind
//! `tower` middleware, a signed packet layer over any [`cap_bus::Bus`], clients that
//! submit jobs and await their results, and test support — on the in-memory bus and
//! blob store as on NATS and Redis.
//!
//! ```
//! use cap_runtime::{Client, ClientConfig, Context, JobError, SubmitOptions, Worker};
//! use cap_bus::MemoryBus;
//! use cap_blob::MemoryBlobStore;
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//! use std::time::Duration;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Greet { name: String }
//! #[derive(Serialize, Deserialize, JsonSchema)]
//! struct Greeting { text: String }
//!
//! async fn greet(ctx: Context, input: Greet) -> Result<Greeting, JobError> {
//!     ctx.progress(50, "thinking").await.ok();
//!     Ok(Greeting { text: format!("hello, {}", input.name) })
//! }
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! // Everything in one process: the embedded bus and a store that hands out redis:// pointers.
//! let bus = MemoryBus::new();
//! let store = MemoryBlobStore::emulating_redis(Default::default());
//!
//! let worker = Worker::builder(bus.clone(), store.clone())
//!     .id("greeter-1")
//!     .handler("job.greet", greet)
//!     .build()?
//!     .start()
//!     .await?;
//!
//! let client = Client::new(bus, store, ClientConfig::new("client-1")).await?;
//! // `direct`: straight to the worker's subject, no scheduler in between.
//! let mut job = client
//!     .submit_with("job.greet", &serde_json::json!({ "name": "Ada" }), SubmitOptions::default().direct())
//!     .await?;
//! let out: Greeting = job.output().await?;
//! assert_eq!(out.text, "hello, Ada");
//! assert_eq!(job.result().await?.worker_id, "greeter-1");
//!
//! worker.shutdown(Duration::from_secs(1)).await;
//! # Ok::<(), cap_runtime::Error>(())
//! # }).unwrap();
//! ```
//!
//! ## Pieces
//! - [`packets`]: `BusPacket`s over any bus — canonical encoding, signing, verification
//!   on the raw bytes, validation; rejected packets counted, logged, alerted
//!   (rate-limited) and, for job requests, answered with a FAILED result. Two signature
//!   profiles: legacy (the default) and CAP-PRODUCTION ([`packets::production`]:
//!   exact-wire seals bound to the subject, admission with replay protection before
//!   any handler, legacy packets refused).
//! - [`Worker`] / [`WorkerBuilder`]: handlers per topic (typed `async fn(Context, In) ->
//!   Result<Out, E>` or raw bytes), tower layers in registration order (built in:
//!   [`TraceLayer`], [`TimeoutLayer`], [`RetryLayer`]), `max_parallel`, [`MetricsHook`],
//!   handshake, heartbeats, progress, cancellation, duplicate suppression, dispatch
//!   fencing ([`worker::fence`]: stale, future, foreign and cancelled attempts refused,
//!   exact redeliveries answered with the recorded result), graceful shutdown.
//! - [`Client`] / [`JobHandle`]: submit, await the result, decode the output, follow
//!   progress, cancel.
//! - [`testing`]: run handlers on the in-memory backends.
//! - [`load`]: the end-to-end load generator behind `cap bench e2e`.
//! - [`reconnect`]: re-announce a worker when its NATS connection comes back.
//! - [`replay`]: CAP-PRODUCTION replay admission in Redis ([`replay::RedisReplayStore`]).
//! - [`trust`]: the worker trust handshake (sessions, `off | warn | enforce`).
//!
//! ## Generic and `dyn`
//! `Worker<B, S>` and `Client<B, S>` are generic over the bus and the blob store. For
//! transports chosen at run time use `Arc<dyn DynBus>` ([`cap_bus::SharedBus`]) and
//! `Arc<dyn DynBlobStore>`: both implement the traits.
//!
//! ## Feature flags
//! None: NATS and Redis come with `cap-bus` and `cap-blob`'s default features.

mod client;
mod error;
pub mod id;
pub mod job;
pub mod load;
pub mod metrics;
pub mod packets;
pub mod reconnect;
pub mod replay;
pub mod testing;
pub mod trace_context;
pub mod trust;
pub mod worker;

pub use client::{
    Client, ClientConfig, DEFAULT_REASK, DEFAULT_RESULT_TIMEOUT, JobHandle, PROGRESS_BUFFER,
    SubmitOptions,
};
pub use error::{Error, ErrorKind};
pub use job::{Context, HandlerService, Job, JobError, JobErrorKind};
pub use worker::{
    HandlerOptions, MetricsHook, NoopMetrics, RetryLayer, RetryPolicy, RunningWorker,
    ShutdownReport, TimeoutLayer, TraceLayer, Worker, WorkerBuilder,
};
