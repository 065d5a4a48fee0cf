//! The worker: typed handlers behind tower middleware, executing CAP jobs from a bus.
//!
//! # Lifecycle
//! [`Worker::start`] subscribes once per topic in a queue group named after the topic
//! (CAP-NOTES §2) and to `worker.<id>.jobs` (direct dispatch), to `sys.job.cancel`,
//! publishes a `Handshake` on `sys.handshake` (again whenever a signal registered with
//! [`WorkerBuilder::handshake_on`] fires — the [`Bus`] trait has no reconnect event of
//! its own), and a `Heartbeat` on `sys.heartbeat` every interval (also when idle) with
//! the process's CPU and memory load, active jobs, `max_parallel` and pool.
//!
//! For every job request: the packet is opened by the [packet layer](crate::packets)
//! (rejections are alerted, and answered with a FAILED result when possible); a request
//! carrying a `DispatchIdentity` goes through the dispatch fence ([`DispatchFence`]:
//! stale, future, foreign and cancelled attempts are refused, an exact redelivery is
//! dropped or answered with the recorded result, another dispatch id runs), one without
//! through the job-id dedupe (a job id already running here is dropped and one recently
//! finished gets its recorded result published again, [`RecentJobs`]); results and
//! progress echo the dispatch identity; at most `max_parallel` jobs run at once (the rest wait
//! on the bus; a slot is taken once a message is in hand, so exactly `max_parallel` run
//! when that many are waiting); a durable delivery in hand is reported in progress every
//! [`keepalive`](WorkerBuilder::keepalive) interval, so the bus redelivers only the jobs
//! of a worker that died; a durable delivery runs only under a run claim taken in the
//! blob store (shared by the pool: a job that ran elsewhere gets its recorded result
//! republished, one running elsewhere is handed back for later, the job of a worker
//! whose [lease](WorkerBuilder::run_lease) lapsed runs again — see [`DEFAULT_RUN_LEASE`]);
//! the context is fetched through `context_ptr` (missing: FAILED with 204);
//! the handler's service runs (panics become FAILED results, a `JobCancel` or the deadline
//! ends it with CANCELLED or TIMEOUT); the output is stored at `res:<job_id>` and a signed
//! `JobResult` with `worker_id` and `execution_ms` goes to `sys.job.result` with the
//! request's trace id. Durable messages are acknowledged after the result was published.
//!
//! [`RunningWorker::shutdown`] stops intake, lets running jobs finish within a grace
//! period, cancels the rest (they report CANCELLED), and logs what happened.

mod announce;
mod builder;
mod claim;
mod execute;
pub mod fence;
pub mod handler;
mod keepalive;
pub mod layers;
pub mod load;
mod metrics;
mod process;
mod recent;
mod run;

pub use announce::{HeartbeatInfo, SDK_VERSION, capabilities, handshake, heartbeat};
pub use builder::{
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MAX_PARALLEL, DEFAULT_TIMEOUT, HandlerOptions,
    WorkerBuilder,
};
pub use claim::DEFAULT_RUN_LEASE;
pub use fence::{DEFAULT_FENCE_CAPACITY, DispatchFence, FenceReason, FenceStats};
pub use handler::{Handler, HandlerInfo, RawHandler};
pub use keepalive::DEFAULT_KEEPALIVE;
pub use layers::{RetryLayer, RetryPolicy, TimeoutLayer, TraceLayer};
pub use metrics::{MetricsHook, NoopMetrics};
pub use recent::{DEFAULT_RECENT_CAPACITY, RecentJobs};

use crate::Error;
use crate::job::HandlerService;
use crate::packets::{PacketConfig, PacketStats, Packets};
use cap_blob::{BlobStore, PointerScope};
use cap_bus::Bus;
use futures_core::stream::BoxStream;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub(crate) struct WorkerConfig {
    pub worker_id: String,
    pub pool: String,
    pub max_parallel: usize,
    /// Interval of in-progress acknowledgements of durable deliveries in hand.
    pub keepalive: Duration,
    /// Lease of the claim taken before a durable delivery runs.
    pub run_lease: Duration,
    pub heartbeat_interval: Duration,
    /// `None`: the store's default; `Some(x)`: x.
    pub result_ttl: Option<Option<Duration>>,
    pub recent_capacity: usize,
    pub labels: BTreeMap<String, String>,
}

pub(crate) struct HandlerEntry {
    pub service: HandlerService,
    pub info: HandlerInfo,
    pub options: HandlerOptions,
}

/// A configured worker, ready to [`start`](Worker::start).
///
/// ```
/// use cap_runtime::{Context, JobError, Worker};
/// use cap_bus::MemoryBus;
/// use cap_blob::MemoryBlobStore;
///
/// async fn shout(_ctx: Context, text: String) -> Result<String, JobError> {
///     Ok(text.to_uppercase())
/// }
/// let worker = Worker::builder(MemoryBus::new(), MemoryBlobStore::new())
///     .id("worker-1")
///     .handler("job.shout", shout)
///     .max_parallel(8)
///     .build()
///     .unwrap();
/// assert_eq!(worker.topics().collect::<Vec<_>>(), ["job.shout"]);
/// assert_eq!(worker.handler_info("job.shout").unwrap().input_schema.as_ref().unwrap()["type"], "string");
/// ```
pub struct Worker<B: Bus, S: BlobStore> {
    pub(crate) bus: B,
    pub(crate) store: S,
    pub(crate) config: WorkerConfig,
    pub(crate) packet: PacketConfig,
    pub(crate) handlers: BTreeMap<String, HandlerEntry>,
    pub(crate) metrics: Arc<dyn MetricsHook>,
    pub(crate) handshake_triggers: Vec<BoxStream<'static, ()>>,
    pub(crate) scope: PointerScope,
    /// The checked trust configuration and its state, in `warn` and `enforce` mode.
    pub(crate) trust: Option<(crate::trust::ResolvedTrust, Arc<crate::trust::TrustState>)>,
}

impl<B: Bus, S: BlobStore + 'static> Worker<B, S> {
    /// A builder on `bus` and `store`.
    pub fn builder(bus: B, store: S) -> WorkerBuilder<B, S> {
        WorkerBuilder::new(bus, store)
    }

    /// The worker id (its `sender_id`).
    pub fn id(&self) -> &str {
        &self.config.worker_id
    }

    /// The topics served, sorted.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    /// What is known about the handler of `topic` (its JSON Schemas for typed handlers).
    pub fn handler_info(&self, topic: &str) -> Option<&HandlerInfo> {
        self.handlers.get(topic).map(|h| &h.info)
    }

    /// Subscribes, announces itself and starts taking jobs.
    pub async fn start(self) -> Result<RunningWorker<B>, Error> {
        run::start(self).await
    }

    /// Starts, runs until `signal` completes, then shuts down with `grace`.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) -> Result<ShutdownReport, Error> {
        let running = self.start().await?;
        signal.await;
        Ok(running.shutdown(grace).await)
    }
}

impl<B: Bus, S: BlobStore> fmt::Debug for Worker<B, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.config.worker_id)
            .field("topics", &self.handlers.keys().collect::<Vec<_>>())
            .field("max_parallel", &self.config.max_parallel)
            .finish_non_exhaustive()
    }
}

/// A running worker. Dropping it does not stop it; call [`shutdown`](Self::shutdown).
pub struct RunningWorker<B: Bus> {
    pub(crate) packets: Packets<B>,
    pub(crate) state: Arc<run::State>,
    pub(crate) tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(crate) trust: Option<Arc<crate::trust::TrustState>>,
}

/// What a graceful shutdown did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Jobs running when intake stopped.
    pub in_flight: usize,
    /// Of those, jobs that finished within the grace period.
    pub finished: usize,
    /// Of those, jobs cancelled at the end of the grace period.
    pub cancelled: usize,
    /// Jobs completed over the worker's lifetime (any status).
    pub completed_total: u64,
}

impl<B: Bus> RunningWorker<B> {
    /// The worker id.
    pub fn id(&self) -> &str {
        self.packets.sender_id()
    }

    /// Jobs running now.
    pub fn active_jobs(&self) -> usize {
        self.state.active()
    }

    /// Jobs completed so far (any status).
    pub fn completed(&self) -> u64 {
        self.state.completed()
    }

    /// The packet layer's counters (rejections by code, alerts).
    pub fn packet_stats(&self) -> PacketStats {
        self.packets.stats()
    }

    /// The dispatch fence's counters (admitted, duplicates, replays, rejections by
    /// reason, cancels).
    pub fn fence_stats(&self) -> FenceStats {
        self.state.fence.stats()
    }

    /// The dispatch fence (what this worker knows of fenced dispatches and cancels).
    pub fn fence(&self) -> &Arc<DispatchFence> {
        &self.state.fence
    }

    /// The worker trust state (its session), in `warn` and `enforce` mode.
    pub fn trust(&self) -> Option<&Arc<crate::trust::TrustState>> {
        self.trust.as_ref()
    }

    /// The worker's packet layer (to publish packets of your own as this worker).
    pub fn packets(&self) -> &Packets<B> {
        &self.packets
    }

    /// Publishes the handshake now.
    pub async fn announce(&self) -> Result<(), Error> {
        run::publish_handshake(&self.packets, &self.state).await
    }

    /// Stops intake, waits up to `grace` for running jobs, cancels what is still running
    /// (those report CANCELLED) and stops heartbeats.
    pub async fn shutdown(self, grace: Duration) -> ShutdownReport {
        run::shutdown(self, grace).await
    }
}

impl<B: Bus> fmt::Debug for RunningWorker<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningWorker")
            .field("id", &self.id())
            .field("active_jobs", &self.active_jobs())
            .finish_non_exhaustive()
    }
}
