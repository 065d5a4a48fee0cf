//! The client: submit jobs and get their results.
//!
//! [`Client::submit`] stores the input JSON at `ctx:<job_id>` (with the context TTL),
//! publishes a signed `JobRequest` to `sys.job.submit` (or, with
//! [`SubmitOptions::direct`], to the topic's own subject, for setups without a scheduler)
//! and returns a [`JobHandle`]. All handles share one subscription to `sys.job.result`
//! and one to `sys.job.progress`, demultiplexed by job id; only packets about this
//! client's pending jobs are verified.

mod demux;
mod handle;

pub use demux::PROGRESS_BUFFER;
pub use handle::JobHandle;

use crate::packets::{AlertRate, PacketConfig, PacketStats, Packets};
use crate::{Error, ErrorKind};
use bytes::Bytes;
use cap_blob::BlobStore;
use cap_bus::Bus;
use cap_proto::{Subject, subject, v1};
use cap_sign::{Signer, TrustPolicy};
use demux::{Pending, Waiter};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Default time [`JobHandle::result`] waits.
pub const DEFAULT_RESULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default interval of [`ClientConfig::reask`].
pub const DEFAULT_REASK: Duration = Duration::from_secs(10);

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The packet layer settings (`sender_id`, signer, trust policy, ...).
    pub packet: PacketConfig,
    /// How long [`JobHandle::result`] waits (default 30 s).
    pub result_timeout: Duration,
    /// Lifetime of stored contexts (`None`: the store's context TTL).
    pub context_ttl: Option<Option<Duration>>,
    /// While waiting for a result through a scheduler, submit the job again this often
    /// (default 10 s; `None`: never). Results are not stored for clients: one published
    /// while the client's connection was down is missed, and a repeated submission of a
    /// finished job makes the scheduler announce its outcome again.
    pub reask: Option<Duration>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self::new(crate::id::new_component_id("client"))
    }
}

impl ClientConfig {
    /// Defaults with `client_id` as sender id.
    pub fn new(client_id: impl Into<String>) -> Self {
        ClientConfig {
            packet: PacketConfig::new(client_id),
            result_timeout: DEFAULT_RESULT_TIMEOUT,
            context_ttl: None,
            reask: Some(DEFAULT_REASK),
        }
    }

    /// Signs requests and cancels with `signer`.
    pub fn signer(mut self, signer: Arc<dyn Signer>) -> Self {
        self.packet.signer = Some(signer);
        self
    }

    /// How results and progress reports are verified.
    pub fn trust(mut self, trust: TrustPolicy) -> Self {
        self.packet.trust = trust;
        self
    }

    /// Sets the default result timeout.
    pub fn result_timeout(mut self, d: Duration) -> Self {
        self.result_timeout = d;
        self
    }

    /// Sets how often a job waiting through a scheduler is submitted again (`None`: never).
    pub fn reask(mut self, every: Option<Duration>) -> Self {
        self.reask = every;
        self
    }

    /// Sets the context lifetime (`None`: never expires).
    pub fn context_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.context_ttl = Some(ttl);
        self
    }

    /// Sets the alert rate limit.
    pub fn alert_rate(mut self, rate: AlertRate) -> Self {
        self.packet.alert_rate = rate;
        self
    }
}

/// How one job is submitted.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct SubmitOptions {
    /// Publish straight to the topic's subject (no scheduler in between).
    pub direct: bool,
    /// The job id (default: a fresh UUID).
    pub job_id: Option<String>,
    /// The trace id (default: a fresh one).
    pub trace_id: Option<String>,
    /// Priority.
    pub priority: v1::JobPriority,
    /// Budget (its `deadline_ms` bounds the run time).
    pub budget: Option<v1::Budget>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Tenant.
    pub tenant_id: String,
    /// Governance metadata (capabilities required, idempotency key, risk tags, …).
    pub meta: Option<v1::JobMetadata>,
    /// Parent job (workflows).
    pub parent_job_id: String,
    /// Workflow id.
    pub workflow_id: String,
    /// Step of the workflow.
    pub step_index: i32,
    /// The job that undoes this one if a later step fails fatally.
    pub compensation: Option<v1::Compensation>,
}

impl SubmitOptions {
    /// Publish to the topic's subject directly.
    pub fn direct(mut self) -> Self {
        self.direct = true;
        self
    }
    /// Uses this job id.
    pub fn job_id(mut self, id: impl Into<String>) -> Self {
        self.job_id = Some(id.into());
        self
    }
    /// Uses this trace id.
    pub fn trace_id(mut self, id: impl Into<String>) -> Self {
        self.trace_id = Some(id.into());
        self
    }
    /// Sets a relative deadline (`Budget.deadline_ms`).
    pub fn deadline(mut self, d: Duration) -> Self {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1);
        self.budget.get_or_insert_with(Default::default).deadline_ms = ms;
        self
    }
    /// Adds a label.
    pub fn label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
    /// Sets the governance metadata.
    pub fn meta(mut self, meta: v1::JobMetadata) -> Self {
        self.meta = Some(meta);
        self
    }
    /// Requires workers with these capabilities (`meta.requires`).
    pub fn requires(mut self, caps: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let meta = self.meta.get_or_insert_with(Default::default);
        meta.requires.extend(caps.into_iter().map(Into::into));
        self
    }
    /// Sets `meta.idempotency_key`: submissions with the same key run once.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.meta
            .get_or_insert_with(Default::default)
            .idempotency_key = key.into();
        self
    }
    /// Makes this job step `step_index` of `workflow_id`, child of `parent_job_id`.
    pub fn child_of(
        mut self,
        parent_job_id: impl Into<String>,
        workflow_id: impl Into<String>,
        step_index: i32,
    ) -> Self {
        self.parent_job_id = parent_job_id.into();
        self.workflow_id = workflow_id.into();
        self.step_index = step_index;
        self
    }
    /// The job that undoes this one.
    pub fn compensation(mut self, c: v1::Compensation) -> Self {
        self.compensation = Some(c);
        self
    }
}

/// Submits jobs and awaits their results. Cheap to clone; clones share the result
/// subscription.
///
/// ```
/// use cap_runtime::{Client, ClientConfig, Context, JobError, SubmitOptions, Worker};
/// use cap_bus::MemoryBus;
/// use cap_blob::MemoryBlobStore;
/// use std::time::Duration;
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let (bus, store) = (MemoryBus::new(), MemoryBlobStore::emulating_redis(Default::default()));
/// async fn add(_: Context, (a, b): (i64, i64)) -> Result<i64, JobError> { Ok(a + b) }
/// let worker = Worker::builder(bus.clone(), store.clone()).handler("job.add", add).build()?.start().await?;
///
/// let client = Client::new(bus, store, ClientConfig::default()).await?;
/// let mut job = client.submit_with("job.add", &(2, 3), SubmitOptions::default().direct()).await?;
/// assert_eq!(job.output::<i64>().await?, 5);
/// worker.shutdown(Duration::from_secs(1)).await;
/// # Ok::<(), cap_runtime::Error>(())
/// # }).unwrap();
/// ```
pub struct Client<B: Bus, S: BlobStore + 'static> {
    inner: Arc<Inner<B, S>>,
}

impl<B: Bus, S: BlobStore + 'static> Clone for Client<B, S> {
    fn clone(&self) -> Self {
        Client {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<B: Bus, S: BlobStore> {
    packets: Packets<B>,
    store: S,
    config: ClientConfig,
    pending: Arc<Pending>,
    stop: CancellationToken,
}

impl<B: Bus, S: BlobStore> Drop for Inner<B, S> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl<B: Bus, S: BlobStore + 'static> Client<B, S> {
    /// A client on `bus` and `store`; subscribes to results and progress.
    pub async fn new(bus: B, store: S, config: ClientConfig) -> Result<Self, Error> {
        crate::packets::check_sender_id(&config.packet.sender_id)?;
        let packets = Packets::new(bus.clone(), config.packet.clone());
        let results = bus.subscribe(subject::RESULT).await?;
        let progress = bus.subscribe(subject::PROGRESS).await?;
        let pending = Arc::new(Pending::default());
        let stop = CancellationToken::new();
        tokio::spawn(demux::run(
            packets.clone(),
            pending.clone(),
            results,
            progress,
            stop.clone(),
        ));
        Ok(Client {
            inner: Arc::new(Inner {
                packets,
                store,
                config,
                pending,
                stop,
            }),
        })
    }

    /// The client's id (its `sender_id`).
    pub fn id(&self) -> &str {
        self.inner.packets.sender_id()
    }

    /// The blob store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The packet layer's counters.
    pub fn packet_stats(&self) -> PacketStats {
        self.inner.packets.stats()
    }

    /// Jobs waiting for a result.
    pub fn pending(&self) -> usize {
        self.inner.pending.len()
    }

    /// Progress reports dropped because a handle did not read them.
    pub fn progress_dropped(&self) -> u64 {
        self.inner
            .pending
            .progress_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Submits `input` (as JSON) to `topic` through the scheduler (`sys.job.submit`).
    pub fn submit<'a, I: Serialize + ?Sized>(
        &'a self,
        topic: &str,
        input: &I,
    ) -> impl Future<Output = Result<JobHandle<B, S>, Error>> + use<'a, B, S, I> {
        self.submit_with(topic, input, SubmitOptions::default())
    }

    /// Submits `input` (as JSON) with options.
    ///
    /// The input is encoded and the request built when this is called; the returned
    /// future stores the context and publishes.
    pub fn submit_with<'a, I: Serialize + ?Sized>(
        &'a self,
        topic: &str,
        input: &I,
        options: SubmitOptions,
    ) -> impl Future<Output = Result<JobHandle<B, S>, Error>> + use<'a, B, S, I> {
        let prepared = serde_json::to_vec(input)
            .map_err(|e| Error::with_source(ErrorKind::Json, "job input", e))
            .and_then(|bytes| Ok((prepare(topic, options)?, Bytes::from(bytes))));
        async move {
            let (prepared, input) = prepared?;
            self.send(prepared, input).await
        }
    }

    /// Submits an input already encoded (normally JSON).
    ///
    /// The request is built when this is called; the returned future stores the
    /// context and publishes.
    pub fn submit_bytes<'a>(
        &'a self,
        topic: &str,
        input: Bytes,
        options: SubmitOptions,
    ) -> impl Future<Output = Result<JobHandle<B, S>, Error>> + use<'a, B, S> {
        // Built before the future: the options and the request are large, and held in
        // an async fn they would enlarge every submit future (which is moved around).
        let prepared = prepare(topic, options);
        async move { self.send(prepared?, input).await }
    }

    async fn send(
        &self,
        mut prepared: Box<Prepared>,
        input: Bytes,
    ) -> Result<JobHandle<B, S>, Error> {
        let inner = &self.inner;
        let ttl = match inner.config.context_ttl {
            Some(t) => t,
            None => inner.store.limits().context_ttl,
        };
        let context_ptr = inner
            .store
            .put_context_with_ttl(&prepared.request.job_id, input, ttl)
            .await?;
        prepared.request.context_ptr = context_ptr.to_string();
        cap_proto::validate::job_request(&prepared.request)
            .map_err(|v| Error::with_source(ErrorKind::Config, "job request", v))?;
        let Prepared {
            subject,
            trace_id,
            direct,
            request,
        } = *prepared;
        let job_id = request.job_id.clone();
        // The first hop of the job's trace (its W3C trace id is the packet's).
        let span = crate::trace_context::hop_span(None, &trace_id, || {
            tracing::info_span!(
                "submit",
                job_id = job_id.as_str(),
                trace_id = trace_id.as_str(),
                topic = request.topic.as_str(),
                worker_id = "",
            )
        });
        let headers = inner.packets.trace_headers(&trace_id, &span);
        let resend = (!direct).then(|| Box::new(request.clone()));
        let bytes = {
            let mut packet = inner.packets.envelope(&trace_id, request);
            inner.packets.seal(&mut packet)?
        };
        // Register before publishing: the result may come back at once.
        let (result_tx, result_rx) = oneshot::channel();
        let (progress_tx, progress_rx) = mpsc::channel(PROGRESS_BUFFER);
        inner.pending.insert(
            job_id.clone(),
            Waiter {
                result: result_tx,
                progress: progress_tx,
                retryable_is_final: direct,
            },
        );
        let handle = JobHandle {
            client: self.clone(),
            job_id,
            trace_id,
            result_rx: Some(result_rx),
            result: None,
            progress_rx,
            resend,
        };
        tracing::Instrument::instrument(
            inner.packets.publish_bytes_with(&subject, headers, bytes),
            span,
        )
        .await?;
        Ok(handle)
    }

    /// Submits a job again (freshly sealed) to ask for its outcome; failures are logged.
    pub(super) async fn resubmit(&self, trace_id: &str, request: &v1::JobRequest) {
        let packets = &self.inner.packets;
        let packet = packets.envelope(trace_id, request.clone());
        match packets.publish(subject::SUBMIT, packet).await {
            Ok(_) => tracing::debug!(job_id = %request.job_id, "asked again for the outcome"),
            Err(e) => tracing::debug!(job_id = %request.job_id, error = %e, "asking again failed"),
        }
    }

    /// Publishes a `JobCancel` for `job_id`.
    pub async fn cancel_job(
        &self,
        job_id: &str,
        trace_id: &str,
        reason: &str,
    ) -> Result<(), Error> {
        let cancel = v1::JobCancel {
            job_id: job_id.to_owned(),
            reason: reason.to_owned(),
            requested_by: self.id().to_owned(),
            ..Default::default()
        };
        let packets = &self.inner.packets;
        packets
            .publish(subject::CANCEL, packets.envelope(trace_id, cancel))
            .await
            .map(|_| ())
    }

    /// Stops the result subscription; handles still waiting fail.
    pub fn close(&self) {
        self.inner.stop.cancel();
    }
}

/// A submission, ready but for its context pointer.
struct Prepared {
    subject: String,
    trace_id: String,
    direct: bool,
    request: v1::JobRequest,
}

/// Builds the request of a submission (boxed: it is large).
fn prepare(topic: &str, options: SubmitOptions) -> Result<Box<Prepared>, Error> {
    let subject = if options.direct {
        Subject::new(topic)
            .map_err(|e| Error::with_source(ErrorKind::Config, "topic", e))?
            .into_string()
    } else {
        subject::SUBMIT.to_owned()
    };
    Ok(Box::new(Prepared {
        subject,
        trace_id: options.trace_id.unwrap_or_else(crate::id::new_trace_id),
        direct: options.direct,
        request: v1::JobRequest {
            job_id: options.job_id.unwrap_or_else(crate::id::new_job_id),
            topic: topic.to_owned(),
            priority: options.priority as i32,
            budget: options.budget,
            labels: options.labels,
            tenant_id: options.tenant_id,
            meta: options.meta,
            parent_job_id: options.parent_job_id,
            workflow_id: options.workflow_id,
            step_index: options.step_index,
            compensation: options.compensation,
            ..Default::default()
        },
    }))
}

impl<B: Bus, S: BlobStore + 'static> fmt::Debug for Client<B, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id())
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}
