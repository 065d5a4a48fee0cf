//! The running worker: intake, job execution, cancellation, heartbeats, shutdown.

use super::announce::{self, HeartbeatInfo};
use super::keepalive;
use super::load::LoadSampler;
use super::metrics::MetricsHook;
use super::recent::{Admission, RecentJobs};
use super::{HandlerEntry, RunningWorker, ShutdownReport, Worker, WorkerConfig};
use crate::job::{Context, ContextParts, Job, JobError, JobErrorKind, ProgressSink};
use crate::packets::Packets;
use crate::trust::{Announce, TrustLifecycle, TrustState};
use crate::{Error, ErrorKind};
use bytes::Bytes;
use cap_blob::{BlobStore, PointerScope};
use cap_bus::{Bus, Message};
use cap_proto::v1::{self, bus_packet::Payload};
use cap_proto::{ErrorCode, Pointer, subject};
use futures_core::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The bus-independent state of a running worker.
pub(crate) struct State {
    pub config: WorkerConfig,
    pub topics: Vec<String>,
    pub signing: bool,
    pub recent: RecentJobs,
    pub permits: Arc<Semaphore>,
    active: AtomicUsize,
    completed: AtomicU64,
    stop_intake: CancellationToken,
    stop_all: CancellationToken,
    jobs_root: CancellationToken,
    intake: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl State {
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }
}

struct Shared<B: Bus, S: BlobStore> {
    /// The worker id, shared by every job's context.
    worker_id: Arc<str>,
    packets: Packets<B>,
    store: S,
    /// What the jobs' pointers may name.
    scope: PointerScope,
    handlers: BTreeMap<String, HandlerEntry>,
    state: Arc<State>,
    metrics: Arc<dyn MetricsHook>,
    sink: Arc<dyn ProgressSink>,
    result_ttl: Option<Duration>,
    /// Whether jobs are admitted (worker trust, `warn` and `enforce` mode).
    trust: Option<Arc<TrustState>>,
}

struct Sink<B: Bus>(Packets<B>);

impl<B: Bus> ProgressSink for Sink<B> {
    fn progress(
        &self,
        report: v1::JobProgress,
        trace_id: &str,
    ) -> BoxFuture<'static, Result<(), Error>> {
        let packets = self.0.clone();
        let packet = packets.envelope(trace_id, report);
        Box::pin(async move { packets.publish(subject::PROGRESS, packet).await.map(|_| ()) })
    }
}

#[derive(Clone)]
enum Route {
    Topic(Arc<str>),
    Direct,
}

pub(super) async fn start<B: Bus, S: BlobStore + 'static>(
    worker: Worker<B, S>,
) -> Result<RunningWorker<B>, Error> {
    let Worker {
        bus,
        store,
        config,
        packet,
        handlers,
        metrics,
        handshake_triggers,
        scope,
        trust,
    } = worker;
    let signing = packet.signer.is_some();
    let packets = Packets::new(bus.clone(), packet);
    let topics: Vec<String> = handlers.keys().cloned().collect();
    let result_ttl = match config.result_ttl {
        Some(ttl) => ttl,
        None => store.limits().result_ttl,
    };
    let state = Arc::new(State {
        recent: RecentJobs::new(config.recent_capacity),
        permits: Arc::new(Semaphore::new(config.max_parallel)),
        config,
        topics,
        signing,
        active: AtomicUsize::new(0),
        completed: AtomicU64::new(0),
        stop_intake: CancellationToken::new(),
        stop_all: CancellationToken::new(),
        jobs_root: CancellationToken::new(),
        intake: std::sync::Mutex::new(Vec::new()),
    });
    let shared = Arc::new(Shared {
        worker_id: Arc::from(state.config.worker_id.as_str()),
        sink: Arc::new(Sink(packets.clone())),
        packets: packets.clone(),
        store,
        scope,
        handlers,
        state: state.clone(),
        metrics,
        result_ttl,
        trust: trust.as_ref().map(|(_, s)| s.clone()),
    });

    // With worker trust, authenticate before taking any job (enforce: or not at all).
    let lifecycle = match trust {
        Some((config, trust_state)) => {
            let capability = announce::handshake(
                &state.config.worker_id,
                state.topics.iter().map(String::as_str),
                signing,
            );
            let lifecycle = Arc::new(TrustLifecycle::new(
                bus.clone(),
                config,
                capability,
                trust_state,
            ));
            let with_session = lifecycle.authenticate().await?;
            tracing::info!(
                mode = %lifecycle.state().mode(),
                with_session,
                "worker trust established"
            );
            Some(lifecycle)
        }
        None => None,
    };

    // Subscribe everything before announcing, so nothing sent after the handshake is missed.
    let mut subs = Vec::new();
    for topic in &state.topics {
        let sub = bus.queue_subscribe(topic, topic).await?;
        subs.push((sub, Route::Topic(Arc::from(topic.as_str()))));
    }
    let direct = subject::worker_jobs(&state.config.worker_id)
        .map_err(|e| Error::with_source(ErrorKind::Config, "worker id", e))?;
    subs.push((bus.subscribe(direct.as_str()).await?, Route::Direct));
    let cancels = bus.subscribe(subject::CANCEL).await?;

    let mut intake = Vec::new();
    for (sub, route) in subs {
        intake.push(tokio::spawn(intake_loop(shared.clone(), sub, route)));
    }
    if let Ok(mut list) = state.intake.lock() {
        *list = intake;
    }
    let mut tasks = vec![tokio::spawn(cancel_loop(shared.clone(), cancels))];

    publish_handshake(&packets, &state).await?;
    tasks.push(tokio::spawn(heartbeat_loop(shared.clone())));
    if let Some(lifecycle) = lifecycle {
        // Reconnect signals go through the trust lifecycle: authenticate, then announce.
        let (p, s) = (packets.clone(), state.clone());
        let announce: Announce = Arc::new(move || {
            let (p, s) = (p.clone(), s.clone());
            Box::pin(async move { publish_handshake(&p, &s).await })
        });
        tasks.push(tokio::spawn(lifecycle.run(
            handshake_triggers,
            announce,
            state.stop_all.clone(),
        )));
    } else {
        for trigger in handshake_triggers {
            tasks.push(tokio::spawn(handshake_loop(
                packets.clone(),
                state.clone(),
                trigger,
            )));
        }
    }
    tracing::info!(
        worker_id = %state.config.worker_id,
        topics = ?state.topics,
        max_parallel = state.config.max_parallel,
        signing,
        "worker started"
    );
    Ok(RunningWorker {
        packets,
        state,
        tasks,
        trust: shared.trust.clone(),
    })
}

pub(super) async fn publish_handshake<B: Bus>(
    packets: &Packets<B>,
    state: &State,
) -> Result<(), Error> {
    let hs = announce::handshake(
        &state.config.worker_id,
        state.topics.iter().map(String::as_str),
        state.signing,
    );
    let packet = packets.envelope(&crate::id::new_trace_id(), hs);
    packets
        .publish(subject::HANDSHAKE, packet)
        .await
        .map(|_| ())
}

async fn handshake_loop<B: Bus>(
    packets: Packets<B>,
    state: Arc<State>,
    mut trigger: futures_core::stream::BoxStream<'static, ()>,
) {
    loop {
        tokio::select! {
            _ = state.stop_all.cancelled() => return,
            next = trigger.next() => match next {
                None => return,
                Some(()) => {
                    tracing::info!("re-announcing (handshake signal)");
                    if let Err(e) = publish_handshake(&packets, &state).await {
                        tracing::warn!(error = %e, "handshake publish failed");
                    }
                }
            }
        }
    }
}

async fn heartbeat_loop<B: Bus, S: BlobStore + 'static>(shared: Arc<Shared<B, S>>) {
    let state = &shared.state;
    let mut sampler = LoadSampler::new();
    let mut tick = tokio::time::interval(state.config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.stop_all.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (cpu_load, memory_load) = sampler.sample();
        let active = state.active();
        let hb = announce::heartbeat(&HeartbeatInfo {
            worker_id: state.config.worker_id.clone(),
            pool: state.config.pool.clone(),
            cpu_load,
            memory_load,
            active_jobs: active,
            max_parallel: state.config.max_parallel,
            topics: state.topics.clone(),
            labels: state.config.labels.clone(),
        });
        let packet = shared.packets.envelope(&crate::id::new_trace_id(), hb);
        match shared.packets.publish(subject::HEARTBEAT, packet).await {
            Ok(_) => shared.metrics.heartbeat_sent(active),
            Err(e) => tracing::warn!(error = %e, "heartbeat publish failed"),
        }
    }
}

async fn cancel_loop<B: Bus, S: BlobStore + 'static>(
    shared: Arc<Shared<B, S>>,
    mut sub: B::Subscription,
) {
    let state = &shared.state;
    loop {
        let msg = tokio::select! {
            _ = state.stop_all.cancelled() => return,
            m = sub.next() => match m { Some(m) => m, None => return },
        };
        // Only cancels for jobs running here are verified and acted upon.
        let wanted = |p: &v1::BusPacket| match &p.payload {
            Some(Payload::JobCancel(c)) => state.recent.is_running(&c.job_id),
            _ => false,
        };
        if let Some(packet) = shared.packets.receive_if(&msg, wanted).await {
            if let Some(Payload::JobCancel(c)) = &packet.payload
                && state.recent.cancel(&c.job_id)
            {
                tracing::info!(job_id = %c.job_id, trace_id = %packet.trace_id, "job cancel requested");
            }
            let _ = msg.ack().await;
        }
    }
}

async fn intake_loop<B: Bus, S: BlobStore + 'static>(
    shared: Arc<Shared<B, S>>,
    mut sub: B::Subscription,
    route: Route,
) {
    let state = shared.state.clone();
    let keepalive = state.config.keepalive;
    loop {
        // The message first, then a slot: a slot is only ever taken for a job in hand,
        // so exactly max_parallel jobs run when that many wait. Beyond it, one message
        // per subscription waits here (kept alive on the bus), the rest on the bus.
        let msg = tokio::select! {
            _ = state.stop_intake.cancelled() => return,
            m = sub.next() => match m { Some(m) => m, None => return },
        };
        let slot = tokio::select! {
            _ = state.stop_intake.cancelled() => None,
            p = keepalive::while_in_hand(&msg, keepalive, state.permits.clone().acquire_owned()) => p.ok(),
        };
        let Some(permit) = slot else {
            // Stopping: hand the job back to the bus for another worker at once.
            let _ = msg.nak(None).await;
            return;
        };
        let shared = shared.clone();
        let route = route.clone();
        tokio::spawn(async move {
            keepalive::while_in_hand(&msg, keepalive, process(&shared, &msg, route)).await;
            drop(permit);
        });
    }
}

/// A job request taken off the bus, with the big request boxed: the per-job future
/// stays small (spawning moves it around, and its size is copied each time).
struct Incoming {
    trace_id: String,
    sender_id: String,
    request: Box<v1::JobRequest>,
}

impl Incoming {
    fn from_packet(packet: v1::BusPacket) -> Option<Self> {
        match packet.payload {
            Some(Payload::JobRequest(request)) => Some(Incoming {
                trace_id: packet.trace_id,
                sender_id: packet.sender_id,
                request: Box::new(request),
            }),
            _ => None,
        }
    }
}

async fn process<B: Bus, S: BlobStore + 'static>(
    shared: &Arc<Shared<B, S>>,
    msg: &Message,
    route: Route,
) {
    if let Some(trust) = &shared.trust
        && !trust.admits()
    {
        // No session (enforce) or trust failed: no jobs; the delivery goes back.
        tracing::debug!(
            subject = msg.subject(),
            "job not admitted: no worker trust session"
        );
        let _ = msg.nak(None).await;
        return;
    }
    let Some(packet) = shared.packets.receive(msg).await else {
        return;
    };
    let Some(Incoming {
        trace_id,
        sender_id,
        request,
    }) = Incoming::from_packet(packet)
    else {
        tracing::debug!(
            subject = msg.subject(),
            "ignoring a packet that is not a job request"
        );
        let _ = msg.ack().await;
        return;
    };
    let topic: Arc<str> = match route {
        Route::Topic(t) => t,
        Route::Direct => Arc::from(request.topic.as_str()),
    };
    let Some(entry) = shared.handlers.get(&*topic) else {
        let mut result = base_result(&request.job_id, &shared.state.config.worker_id, 0);
        JobError::retryable(
            ErrorCode::JOB_WORKER_UNAVAILABLE,
            "this worker has no handler for the job's topic",
        )
        .apply_to(&mut result);
        Box::pin(publish_result(shared, &trace_id, result, msg, None)).await;
        return;
    };
    let state = &shared.state;
    let token = match state.recent.admit(&request.job_id, &state.jobs_root) {
        Admission::Run(token) => token,
        Admission::Running => {
            tracing::info!(job_id = %request.job_id, "duplicate delivery of a running job dropped");
            let _ = msg.ack().await;
            return;
        }
        Admission::Finished(bytes) => {
            tracing::info!(job_id = %request.job_id, "duplicate delivery: re-publishing the recorded result");
            Box::pin(republish(shared, bytes, msg)).await;
            return;
        }
    };
    state.active.fetch_add(1, Ordering::Relaxed);
    shared.metrics.job_received(&request.job_id, &topic);
    let started = Instant::now();
    let job_id = request.job_id.clone();
    let outcome = execute(
        shared,
        entry,
        request,
        &trace_id,
        sender_id,
        topic.clone(),
        token,
    )
    .await;
    let elapsed = started.elapsed();
    let mut result = base_result(
        &job_id,
        &state.config.worker_id,
        i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX),
    );
    match &outcome {
        Ok(ptr) => {
            result.status = v1::JobStatus::Succeeded as i32;
            result.result_ptr = ptr.to_string();
            shared.metrics.job_completed(&job_id, &topic, elapsed);
        }
        Err(e) => {
            e.apply_to(&mut result);
            shared
                .metrics
                .job_failed(&job_id, &topic, e.kind().status(), elapsed);
        }
    }
    drop(outcome);
    publish_result(shared, &trace_id, result, msg, Some(&job_id)).await;
    state.active.fetch_sub(1, Ordering::Relaxed);
    state.completed.fetch_add(1, Ordering::Relaxed);
}

/// Publishes the recorded result of a finished job again (a duplicate delivery).
async fn republish<B: Bus, S: BlobStore>(shared: &Shared<B, S>, bytes: Bytes, msg: &Message) {
    match shared.packets.publish_bytes(subject::RESULT, bytes).await {
        Ok(()) => {
            let _ = msg.ack().await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "re-publishing a result failed");
            let _ = msg.nak(None).await;
        }
    }
}

fn base_result(job_id: &str, worker_id: &str, execution_ms: i64) -> v1::JobResult {
    v1::JobResult {
        job_id: job_id.to_owned(),
        worker_id: worker_id.to_owned(),
        execution_ms,
        ..Default::default()
    }
}

/// Seals the result, records it (when `record` names the job) so a re-delivery gets the
/// same bytes, publishes it and acknowledges `msg` (or asks for redelivery when the
/// publish failed, so the recorded result goes out then).
async fn publish_result<B: Bus, S: BlobStore>(
    shared: &Shared<B, S>,
    trace_id: &str,
    result: v1::JobResult,
    msg: &Message,
    record: Option<&str>,
) {
    // A retryable failure is not remembered as finished: the next delivery of this job
    // is a retry (a scheduler's, or a redelivery) and must run the handler again.
    let retryable = result.status == v1::JobStatus::FailedRetryable as i32;
    // Sealed before any await, so the packet is not part of this future.
    let sealed = {
        let mut packet = shared.packets.envelope(trace_id, result);
        shared.packets.seal(&mut packet)
    };
    let bytes = match sealed {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "result could not be sealed");
            if let Some(id) = record {
                shared.state.recent.forget(id);
            }
            let _ = msg.nak(None).await;
            return;
        }
    };
    if let Some(id) = record {
        if retryable {
            shared.state.recent.forget(id);
        } else {
            shared.state.recent.finish(id, bytes.clone());
        }
    }
    match shared.packets.publish_bytes(subject::RESULT, bytes).await {
        Ok(()) => {
            if let Err(e) = msg.ack().await {
                tracing::debug!(error = %e, "ack failed");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "result publish failed; asking for redelivery");
            let _ = msg.nak(None).await;
        }
    }
}

async fn execute<B: Bus, S: BlobStore + 'static>(
    shared: &Shared<B, S>,
    entry: &HandlerEntry,
    request: Box<v1::JobRequest>,
    trace_id: &str,
    sender_id: String,
    topic: Arc<str>,
    token: CancellationToken,
) -> Result<Pointer, JobError> {
    let input = fetch_context(
        &shared.store,
        &shared.scope,
        &request.job_id,
        &request.context_ptr,
    )
    .await?;
    let deadline = request.budget.as_ref().and_then(|b| {
        deadline_from_budget(b.deadline_ms, unix_ms(SystemTime::now()), Instant::now())
    });
    let job_id = request.job_id.clone();
    let ctx = Context::new(ContextParts {
        request,
        trace_id: trace_id.to_owned(),
        sender_id,
        worker_id: shared.worker_id.clone(),
        topic,
        cancel: token.clone(),
        deadline,
        retry: entry.options.retry,
        timeout: entry.options.timeout,
        sink: shared.sink.clone(),
    });
    // Announce the start (status RUNNING, 0 %): the scheduler moves the job from
    // DISPATCHED to RUNNING, so its dispatch timeout stops applying.
    let started = v1::JobProgress {
        job_id: job_id.clone(),
        status: v1::JobStatus::Running as i32,
        message: "started".into(),
        ..Default::default()
    };
    if let Err(e) = shared.sink.progress(started, trace_id).await {
        tracing::warn!(job_id = %job_id, error = %e, "start report failed");
    }
    let call = AssertUnwindSafe(entry.service.clone().oneshot(Job { ctx, input })).catch_unwind();
    let output = tokio::select! {
        biased;
        _ = token.cancelled() => Err(JobError::cancelled(if shared.state.jobs_root.is_cancelled() {
            "cancelled: the worker is shutting down"
        } else {
            "cancelled by a JobCancel request"
        })),
        r = call => match r {
            Ok(r) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".into());
                tracing::error!(job_id = %job_id, panic = %what, "handler panicked");
                Err(JobError::panicked(format!("handler panicked: {what}")))
            }
        },
    };
    let output = output?;
    shared
        .store
        .put_result_with_ttl(&job_id, output, shared.result_ttl)
        .await
        .map_err(|e| store_error("result write", e))
}

/// Reads the job's context through its pointer, if `scope` lets job `job_id` read it.
pub(crate) async fn fetch_context<S: BlobStore>(
    store: &S,
    scope: &PointerScope,
    job_id: &str,
    ptr: &str,
) -> Result<Bytes, JobError> {
    if ptr.is_empty() {
        return Err(JobError::not_found("the job has no context_ptr"));
    }
    let pointer =
        Pointer::parse(ptr).map_err(|e| JobError::invalid_input(format!("context_ptr: {e}")))?;
    let bytes = store
        .get_scoped(&pointer, &scope.for_job(job_id))
        .await
        .map_err(|e| store_error("context read", e))?;
    let max = store.limits().max_blob_bytes;
    if bytes.len() > max {
        return Err(JobError::invalid_input(format!(
            "context of {} bytes exceeds the limit of {max} bytes",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// The job's view of a store failure. What the submitter sees is fixed text by kind (a
/// refused pointer names the rule); the store's own words (its address, a server's
/// error text) only go to this worker's log.
fn store_error(what: &str, e: cap_blob::Error) -> JobError {
    use cap_blob::ErrorKind as K;
    let kind = e.kind();
    let message = match &e {
        cap_blob::Error::OutOfScope { rule } => format!("{what}: pointer refused: {rule}"),
        cap_blob::Error::TooLarge { size, limit } => {
            format!("{what}: blob of {size} bytes exceeds the limit of {limit} bytes")
        }
        _ => format!("{what}: {}", kind.public_message()),
    };
    if matches!(kind, K::Unavailable | K::Backend | K::InvalidConfig) {
        tracing::warn!(error = %e, "{what} failed");
    } else {
        tracing::debug!(error = %e, "{what} failed");
    }
    match kind {
        K::NotFound => JobError::not_found(message),
        K::OutOfScope => JobError::new(
            JobErrorKind::Failed,
            ErrorCode::JOB_PERMISSION_DENIED,
            message,
        ),
        K::InvalidPointer | K::UnregisteredScheme | K::InvalidKey => {
            JobError::invalid_input(message)
        }
        K::TooLarge => JobError::fatal(ErrorCode::JOB_RESOURCE_EXHAUSTED, message),
        K::Unavailable => JobError::retryable(ErrorCode::TRANSPORT_CONNECTION_LOST, message),
        _ => JobError::failed(message),
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Values of `Budget.deadline_ms` at or above this are absolute Unix times in
/// milliseconds (after September 2001); smaller ones are a time budget in milliseconds
/// from when the worker received the job.
pub const ABSOLUTE_DEADLINE_THRESHOLD_MS: i64 = 1_000_000_000_000;

/// The instant a job must end, from `Budget.deadline_ms` (0: none).
pub fn deadline_from_budget(deadline_ms: i64, now_unix_ms: i64, now: Instant) -> Option<Instant> {
    if deadline_ms <= 0 {
        return None;
    }
    let remaining = if deadline_ms >= ABSOLUTE_DEADLINE_THRESHOLD_MS {
        deadline_ms.saturating_sub(now_unix_ms).max(0)
    } else {
        deadline_ms
    };
    now.checked_add(Duration::from_millis(u64::try_from(remaining).unwrap_or(0)))
}

pub(super) async fn shutdown<B: Bus>(worker: RunningWorker<B>, grace: Duration) -> ShutdownReport {
    let RunningWorker {
        packets: _,
        state,
        tasks,
        trust: _,
    } = worker;
    state.stop_intake.cancel();
    let intake = state
        .intake
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    for t in intake {
        let _ = t.await;
    }
    let in_flight = state.active();
    let max = u32::try_from(state.config.max_parallel).unwrap_or(u32::MAX);
    tracing::info!(
        in_flight,
        grace_ms = grace.as_millis() as u64,
        "worker shutting down: intake stopped"
    );
    let mut cancelled = 0;
    let all_done = state.permits.clone().acquire_many_owned(max);
    tokio::pin!(all_done);
    if tokio::time::timeout(grace, &mut all_done).await.is_err() {
        cancelled = state.active();
        tracing::warn!(cancelled, "grace period over: cancelling running jobs");
        state.jobs_root.cancel();
        // Cancelled jobs publish their CANCELLED results promptly.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut all_done).await;
    }
    state.stop_all.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let report = ShutdownReport {
        in_flight,
        finished: in_flight.saturating_sub(cancelled),
        cancelled,
        completed_total: state.completed(),
    };
    tracing::info!(
        finished = report.finished,
        cancelled = report.cancelled,
        completed_total = report.completed_total,
        "worker stopped"
    );
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_relative_and_absolute() {
        let now = Instant::now();
        let now_ms = 1_700_000_000_000;
        assert_eq!(deadline_from_budget(0, now_ms, now), None);
        assert_eq!(deadline_from_budget(-5, now_ms, now), None);
        assert_eq!(
            deadline_from_budget(1500, now_ms, now),
            Some(now + Duration::from_millis(1500))
        );
        assert_eq!(
            deadline_from_budget(now_ms + 2000, now_ms, now),
            Some(now + Duration::from_millis(2000))
        );
        assert_eq!(deadline_from_budget(now_ms - 10, now_ms, now), Some(now));
    }
}
