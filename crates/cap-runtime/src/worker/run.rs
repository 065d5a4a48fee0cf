//! The running worker: intake, job execution, cancellation, heartbeats, shutdown.

use super::announce::{self, HeartbeatInfo};
use super::fence::{CancelDecision, DispatchFence};
use super::keepalive;
use super::load::LoadSampler;
use super::metrics::MetricsHook;
use super::process::process;
use super::recent::RecentJobs;
use super::{HandlerEntry, RunningWorker, ShutdownReport, Worker, WorkerConfig};
use crate::job::ProgressSink;
use crate::packets::Packets;
use crate::trust::{Announce, TrustLifecycle, TrustState};
use crate::{Error, ErrorKind};
use cap_blob::{BlobStore, PointerScope};
use cap_bus::Bus;
use cap_proto::subject;
use cap_proto::v1::{self, bus_packet::Payload};
use futures_core::future::BoxFuture;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The bus-independent state of a running worker.
pub(crate) struct State {
    pub config: WorkerConfig,
    pub topics: Vec<String>,
    pub signing: bool,
    pub recent: RecentJobs,
    /// Fenced dispatches and cancels (requests with a `DispatchIdentity`).
    pub fence: Arc<DispatchFence>,
    pub permits: Arc<Semaphore>,
    pub(super) active: AtomicUsize,
    pub(super) completed: AtomicU64,
    stop_intake: CancellationToken,
    stop_all: CancellationToken,
    pub(super) jobs_root: CancellationToken,
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

pub(super) struct Shared<B: Bus, S: BlobStore> {
    /// The worker id, shared by every job's context.
    pub worker_id: Arc<str>,
    pub packets: Packets<B>,
    pub store: S,
    /// What the jobs' pointers may name.
    pub scope: PointerScope,
    pub handlers: BTreeMap<String, HandlerEntry>,
    pub state: Arc<State>,
    pub metrics: Arc<dyn MetricsHook>,
    /// The progress sink of jobs without a dispatch identity to echo.
    pub sink: Arc<dyn ProgressSink>,
    pub result_ttl: Option<Duration>,
    /// Whether jobs are admitted (worker trust, `warn` and `enforce` mode).
    pub trust: Option<Arc<TrustState>>,
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
pub(super) enum Route {
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
        fence: Arc::new(DispatchFence::new(
            config.worker_id.clone(),
            config.recent_capacity,
        )),
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
        worker_id = state.config.worker_id.as_str(),
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
        // Cancels naming a dispatch are verified and remembered (a late delivery of it
        // never runs); cancels without one only for jobs running here.
        let wanted = |p: &v1::BusPacket| match &p.payload {
            Some(Payload::JobCancel(c)) => {
                c.dispatch.is_some()
                    || state.recent.is_running(&c.job_id)
                    || state.fence.is_running(&c.job_id)
            }
            _ => false,
        };
        let Some(inbound) = shared.packets.receive_checked(&msg, wanted).await else {
            continue;
        };
        if !inbound.duplicate
            && let Some(Payload::JobCancel(c)) = &inbound.packet.payload
        {
            let trace_id = &inbound.packet.trace_id;
            match &c.dispatch {
                Some(d) => match state.fence.cancel(&c.job_id, d) {
                    CancelDecision::Cancelled => {
                        tracing::info!(job_id = %c.job_id, attempt = d.attempt, trace_id = %trace_id, "job cancel requested");
                    }
                    CancelDecision::Remembered => {
                        tracing::debug!(job_id = %c.job_id, attempt = d.attempt, "cancel of a dispatch not running here remembered");
                    }
                    CancelDecision::Ignored(reason) => {
                        tracing::debug!(job_id = %c.job_id, attempt = d.attempt, reason = %reason, "cancel for another attempt ignored");
                    }
                },
                None => {
                    if state.recent.cancel(&c.job_id) || state.fence.cancel_job(&c.job_id) {
                        tracing::info!(job_id = %c.job_id, trace_id = %trace_id, "job cancel requested");
                    }
                }
            }
        }
        let _ = msg.ack().await;
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
        // The hop's span: fields are recorded once the packet is open; its parent is
        // the dispatch's trace context (W3C headers).
        let make = || {
            tracing::info_span!(
                "handle",
                job_id = tracing::field::Empty,
                trace_id = tracing::field::Empty,
                topic = tracing::field::Empty,
                worker_id = state.config.worker_id.as_str(),
            )
        };
        let parent = crate::trace_context::TraceContext::from_headers(msg.headers());
        let span = match &parent {
            Some(parent) => crate::trace_context::hop_span(Some(parent), "", make),
            // A sender without trace context: a trace of its own, sampled at this
            // process's ratio.
            None if crate::trace_context::hook().is_some() => {
                crate::trace_context::hop_span(None, &crate::id::new_trace_id(), make)
            }
            None => make(),
        };
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                // Boxed: a job's whole path (claim, handler, result) makes a future of
                // tens of KiB; inline, tokio would copy it at every spawn and stage change.
                // Packets of the job keep its sampling decision (see `in_hop`).
                let job = Box::pin(crate::trace_context::in_hop(
                    parent,
                    process(&shared, &msg, route),
                ));
                keepalive::while_in_hand(&msg, keepalive, job).await;
                drop(permit);
            },
            span,
        ));
    }
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
