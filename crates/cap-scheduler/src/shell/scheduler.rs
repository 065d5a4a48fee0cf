//! [`Scheduler`]: the async shell. Subscription tasks turn bus packets into inputs; one
//! loop batches them, applies them through the [`Engine`] against the shared job store
//! (compare-and-set per job), carries out what was committed (publish, ask the safety
//! kernel, alert) and only then acknowledges the messages, so a crash between receipt
//! and commit means redelivery, not loss. Deadlines are claimed from the store, so any
//! number of instances can run side by side and survive each other's death.

use super::engine::Engine;
use super::feed::{self, Item};
use super::metrics::SchedulerMetrics;
use super::send::{self, Outgoing};
use super::stats::SchedulerStats;
use super::store::JobStore;
use super::traces;
use crate::core::{
    Action, Config, Event, Fence, Hold, JobEvent, JobRecord, Millis, Pools, workers,
};
use bytes::Bytes;
use cap_bus::{AckHandle, Bus, Message};
use cap_proto::{JobState, subject, v1};
use cap_runtime::packets::Packets;
use cap_runtime::trace_context::TraceContext;
use cap_safety::SafetyClient;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Request/reply subject of the approval command: a JSON body
/// `{"job_id": "…", "approve": true|false, "reason": "…"}`, answered with
/// `{"ok": bool, "message": "…"}`. Restrict who may publish here with NATS permissions.
pub const APPROVAL_SUBJECT: &str = "sys.scheduler.approval";

/// Prefix of the subjects job state changes are announced on, one per tenant:
/// `cap.sched.events.<tenant>` (see [`events_subject`]). Subscribe to
/// `cap.sched.events.>` for every tenant.
pub const EVENTS_PREFIX: &str = "cap.sched.events";

/// The subject of a tenant's job state changes: `cap.sched.events.<tenant>`, with every
/// byte of the tenant that is not an ASCII letter, digit, `-` or `_` written as `_`
/// (`_` alone for no tenant). Receivers read the tenant from the event, not the subject.
pub fn events_subject(tenant: &str) -> String {
    let token: String = tenant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let token = if token.is_empty() { "_".into() } else { token };
    format!("{EVENTS_PREFIX}.{token}")
}

/// A job state change as announced on [`events_subject`] (JSON): a hint that the job's
/// record changed, published after the change was committed. The record in the job
/// store stays the truth (its `history` holds every change with its time).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobStateEvent {
    /// The job.
    pub job_id: String,
    /// Its tenant ([`JobRecord::tenant`]).
    pub tenant: String,
    /// Its topic.
    pub topic: String,
    /// The new state (`SCHEDULED`, `SUCCEEDED`, ...).
    pub state: String,
    /// When (scheduler clock, ms since the Unix epoch).
    pub at: Millis,
}

/// Most inputs applied together before their records are committed and their messages
/// acknowledged.
const MAX_BATCH: usize = 256;

/// Unfinished batches queued for the sending task at most; the event loop waits when it
/// is this far ahead.
const SEND_QUEUE: usize = 64;

/// Default queue group prefix of schedulers: instances share `sys.job.submit` as
/// `cap-scheduler-submit`, `sys.job.result` as `cap-scheduler-result`, and so on.
pub const QUEUE_GROUP: &str = "cap-scheduler";

/// Settings of a scheduler service.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Timeouts, retries, back-off, retention.
    pub config: Config,
    /// Topic → pool routing.
    pub pools: Pools,
    /// Queue group shared by scheduler instances.
    pub queue_group: String,
    /// How often deadlines are claimed and workers checked.
    pub tick: Duration,
    /// Safety checks in flight at most.
    pub max_safety_in_flight: usize,
    /// Time allowed for one safety check before it counts as unreachable.
    pub safety_timeout: Duration,
    /// How long a claimed deadline is leased: if the instance that claimed it dies, the
    /// job is looked at again after this long.
    pub lease: Duration,
    /// Due jobs claimed per tick at most.
    pub claim_batch: usize,
    /// Records cached at most (jobs in flight; dropping the cache is always safe).
    pub cache_cap: usize,
    /// After the bus was lost, how long no job is timed out for silence (results held
    /// by the bus during the outage are delivered after it; JetStream redelivers what
    /// was not acknowledged within its ack wait).
    pub outage_grace: Duration,
    /// The worker trust handshake service and its enforcement on inbound worker
    /// packets (`None`: neither, today's behaviour). See [`crate::trust`].
    pub worker_trust: Option<crate::trust::WorkerTrust>,
    /// Dispatch fencing on the wire (default on, in both signature profiles): every
    /// dispatch carries its `DispatchIdentity`, reports are compared with it, the
    /// dispatch's durable receipt is kept so that an ended attempt is withdrawn, and
    /// cancels name the attempt they end. Off (for measurements): dispatches and
    /// cancels go out without an identity, no receipt is kept, nothing is withdrawn,
    /// and reports are matched to the attempt in flight by job id and sender only.
    pub fencing: bool,
    /// Announce every job state change on [`events_subject`] (default on): what the
    /// gateway's live streams follow.
    pub job_events: bool,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            config: Config::default(),
            pools: Pools::default(),
            queue_group: QUEUE_GROUP.to_owned(),
            tick: Duration::from_millis(100),
            max_safety_in_flight: 256,
            safety_timeout: Duration::from_secs(2),
            lease: Duration::from_secs(10),
            claim_batch: 1024,
            cache_cap: 100_000,
            outage_grace: Duration::from_secs(10),
            worker_trust: None,
            fencing: true,
            job_events: true,
        }
    }
}

/// What observers of a scheduler see (for logs, dashboards and `cap demo`).
#[derive(Clone, Debug, PartialEq)]
pub enum Observed {
    /// A job changed state.
    Transition {
        /// The job.
        job_id: String,
        /// Its topic.
        topic: String,
        /// The new state.
        state: JobState,
        /// When (scheduler clock, ms).
        at: Millis,
    },
    /// An event that could not be applied.
    Ignored {
        /// The job.
        job_id: String,
        /// Why.
        reason: String,
    },
    /// A report that did not belong to the attempt in flight was dropped.
    Fenced {
        /// The job.
        job_id: String,
        /// `result`, `progress` or `cancel`.
        what: &'static str,
        /// How it was out of step.
        fence: Fence,
    },
    /// An alert the scheduler published.
    Alert(v1::SystemAlert),
}

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A subscription could not be made.
    #[error("subscribing to {subject}: {source}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// The bus error.
        source: cap_bus::Error,
    },
    /// The job store failed at start-up.
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
}

/// The scheduler's clock: wall-clock milliseconds.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

pub(crate) enum Input {
    Item(Box<Item>, Option<Message>),
    Approval {
        job_id: String,
        approve: bool,
        reason: String,
        msg: Message,
    },
}

/// The scheduler service over a bus, a safety client and a job store.
pub struct Scheduler<B: Bus, K: SafetyClient + 'static, S: JobStore> {
    packets: Packets<B>,
    safety: Arc<K>,
    store: Arc<S>,
    options: SchedulerOptions,
    observers: broadcast::Sender<Observed>,
    stats: SchedulerStats,
    metrics: Option<Arc<SchedulerMetrics>>,
}

impl<B: Bus, K: SafetyClient + 'static, S: JobStore> Scheduler<B, K, S> {
    /// A scheduler publishing and receiving through `packets` (its sender id is the
    /// scheduler id; instances of one scheduler share it, and the store).
    pub fn new(packets: Packets<B>, safety: Arc<K>, store: S, options: SchedulerOptions) -> Self {
        let (observers, _) = broadcast::channel(4096);
        Scheduler {
            packets,
            safety,
            store: Arc::new(store),
            options,
            observers,
            stats: SchedulerStats::default(),
            metrics: None,
        }
    }

    /// Counts into `metrics` (made with [`SchedulerMetrics::register`] from this
    /// scheduler's [`stats`](Self::stats)).
    pub fn with_metrics(mut self, metrics: SchedulerMetrics) -> Self {
        self.metrics = Some(Arc::new(metrics));
        self
    }

    /// A stream of what happens (state changes, ignored events, alerts).
    pub fn observe(&self) -> broadcast::Receiver<Observed> {
        self.observers.subscribe()
    }

    /// The scheduler's counters (a handle that stays valid while it runs).
    pub fn stats(&self) -> SchedulerStats {
        self.stats.clone()
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let id = self.packets.sender_id().to_owned();
        let mut engine = Engine::new(
            self.store.clone(),
            id.clone(),
            self.options.config.clone(),
            self.options.pools.clone(),
            self.options.cache_cap,
            Box::new(cap_runtime::id::new_trace_id),
        );
        // Workers other instances (or this one before a restart) have seen.
        let now = now_ms();
        for w in self.store.workers().await? {
            let hs = v1::Handshake {
                component_id: w.worker_id.clone(),
                role: v1::ComponentRole::Worker as i32,
                supported_versions: self.options.config.supported_versions.clone(),
                capabilities: w.capabilities.iter().map(|c| (c.clone(), true)).collect(),
                ready_topics: w.ready_topics.clone(),
                ..Default::default()
            };
            engine.registry.handshake(&hs, now);
        }
        tracing::info!(scheduler = %id, workers = engine.registry.len(), "scheduler starting");
        if let Some(warning) = self.store.durability_warning().await {
            tracing::warn!(scheduler = %id, "{warning}");
        }

        let (tx, mut rx) = mpsc::channel::<Input>(1024);
        let bus = self.packets.bus().clone();
        let group = |what: &str| format!("{}-{what}", self.options.queue_group);
        // One group per subject: durable (JetStream) consumers are named after the group,
        // and one durable cannot serve two filters. Heartbeats and handshakes reach every
        // instance (each keeps a registry); the rest is shared out.
        let subs = [
            (subject::SUBMIT, Some(group("submit"))),
            (subject::RESULT, Some(group("result"))),
            (subject::PROGRESS, Some(group("progress"))),
            (subject::CANCEL, Some(group("cancel"))),
            (subject::HEARTBEAT, None),
            (subject::HANDSHAKE, None),
        ];
        let mut tasks = Vec::new();
        for (subj, queue) in subs {
            let stream = match &queue {
                Some(g) => bus.queue_subscribe(subj, g).await,
                None => bus.subscribe(subj).await,
            }
            .map_err(|source| Error::Subscribe {
                subject: subj.to_owned(),
                source,
            })?;
            tasks.push(tokio::spawn(feed::packets(
                stream,
                self.packets.clone(),
                self.options.worker_trust.as_ref().map(|t| t.gate.clone()),
                tx.clone(),
                shutdown.clone(),
            )));
        }
        if let Some(trust) = &self.options.worker_trust {
            let served = crate::trust::shell::spawn(
                &bus,
                trust.server.clone(),
                &self.options.queue_group,
                shutdown.clone(),
            );
            tasks.extend(served.await?);
        }
        let approvals = bus
            .queue_subscribe(APPROVAL_SUBJECT, &group("approval"))
            .await
            .map_err(|source| Error::Subscribe {
                subject: APPROVAL_SUBJECT.to_owned(),
                source,
            })?;
        tasks.push(tokio::spawn(feed::approvals(
            approvals,
            tx.clone(),
            shutdown.clone(),
        )));

        let limiter = Arc::new(Semaphore::new(self.options.max_safety_in_flight.max(1)));
        let mut ticker = tokio::time::interval(self.options.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (send_tx, send_rx) = mpsc::channel::<send::Unfinished>(SEND_QUEUE);
        let sender = tokio::spawn(send::run(send_rx));
        let mut batch: Vec<Input> = Vec::with_capacity(MAX_BATCH);
        let sink = receipt_sink(self.store.clone(), &self.options.config);
        let mut last_refresh = now_ms();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    let now = now_ms();
                    if !bus.is_connected() {
                        let grace = crate::core::timers::ms(self.options.outage_grace);
                        engine.hold_timeouts_until(now.saturating_add(grace));
                    }
                    let mut events = Vec::new();
                    let lease_until = now.saturating_add(crate::core::timers::ms(self.options.lease));
                    match self.store.claim_due(now, lease_until, self.options.claim_batch).await {
                        Ok(ids) => events.extend(ids.into_iter().map(|id| (id, JobEvent::Due))),
                        Err(e) => tracing::warn!(error = %e, "claiming deadlines failed"),
                    }
                    let (lost, mut actions) = workers::expire(&mut engine.registry, &self.options.config, &id, now);
                    for w in lost {
                        for job in engine.sent_to(&w) {
                            events.push((job, JobEvent::WorkerLost { worker_id: w.clone() }));
                        }
                    }
                    if now.saturating_sub(last_refresh) > 5_000 {
                        last_refresh = now;
                        self.refresh_workers(&mut engine, now).await;
                    }
                    let outcome = engine.apply(events, now).await;
                    self.count_unknown(&outcome);
                    actions.extend(outcome.actions);
                    let out = self.carry_out(&mut engine, actions, &tx, &limiter).await;
                    if let Some(rest) = send::start(&self.packets, out, Vec::new(), Vec::new(), &sink).await {
                        let _ = send_tx.send(rest).await;
                    }
                    self.record_stats(&engine, tx.max_capacity() - tx.capacity());
                }
                input = rx.recv() => {
                    let Some(first) = input else { break };
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(i) => batch.push(i),
                            Err(_) => break,
                        }
                    }
                    let now = now_ms();
                    let mut events: Vec<(String, JobEvent)> = Vec::with_capacity(batch.len());
                    // The message of each job event (same index), and the messages that are
                    // acknowledged whatever happens (heartbeats, handshakes).
                    let mut handles: Vec<Option<AckHandle>> = Vec::with_capacity(batch.len());
                    let mut acks = Vec::new();
                    let mut actions = Vec::new();
                    for input in batch.drain(..) {
                        match input {
                            Input::Item(item, msg) => {
                                let handle = msg.map(|m| m.ack_handle()).filter(AckHandle::is_durable);
                                match *item {
                                    Item::Job(job_id, ev) => {
                                        events.push((job_id, ev));
                                        handles.push(handle);
                                    }
                                    Item::Worker(ev) => {
                                        actions.extend(self.worker_event(&mut engine, ev, now).await);
                                        acks.extend(handle);
                                    }
                                }
                            }
                            Input::Approval { job_id, approve, reason, msg } => {
                                let reply = self.approval(&mut engine, &job_id, approve, reason, now, &mut actions).await;
                                if let Some(r) = msg.reply() {
                                    let _ = bus.publish(r, Bytes::from(reply.to_string())).await;
                                }
                            }
                        }
                    }
                    let outcome = engine.apply(events, now).await;
                    self.count_unknown(&outcome);
                    actions.extend(outcome.actions);
                    let out = self.carry_out(&mut engine, actions, &tx, &limiter).await;
                    // Committed: now the packets, then the acknowledgements, may go. Events
                    // the store did not take are given back for redelivery.
                    let failed: std::collections::HashSet<usize> = outcome.failed.into_iter().collect();
                    let mut naks = Vec::new();
                    for (i, h) in handles.into_iter().enumerate() {
                        if let Some(h) = h {
                            if failed.contains(&i) { naks.push(h) } else { acks.push(h) }
                        }
                    }
                    if let Some(rest) = send::start(&self.packets, out, acks, naks, &sink).await
                        && send_tx.send(rest).await.is_err()
                    {
                        tracing::error!("the sending task is gone; stopping");
                        break;
                    }
                    self.record_stats(&engine, tx.max_capacity() - tx.capacity());
                }
            }
        }
        for t in tasks {
            t.abort();
        }
        // What was decided still goes out.
        drop(send_tx);
        let _ = sender.await;
        tracing::info!(scheduler = %id, "scheduler stopped");
        Ok(())
    }

    /// A heartbeat or a handshake: the registry (and, for a handshake, the shared copy).
    async fn worker_event(&self, engine: &mut Engine<S>, ev: Event, now: Millis) -> Vec<Action> {
        match ev {
            Event::Heartbeat { heartbeat } => {
                engine.registry.heartbeat(&heartbeat, now);
                Vec::new()
            }
            Event::Handshake { handshake } => {
                let id = engine.id().to_owned();
                let actions = workers::handshake(
                    &mut engine.registry,
                    &self.options.config,
                    &id,
                    &handshake,
                    now,
                );
                if let Some(w) = engine.registry.get(&handshake.component_id) {
                    let ttl = self.options.config.heartbeat_interval * 3;
                    if let Err(e) = self
                        .store
                        .put_worker(w, ttl.max(Duration::from_secs(15)))
                        .await
                    {
                        tracing::warn!(error = %e, "sharing a worker's handshake failed");
                    }
                }
                actions
            }
            _ => Vec::new(),
        }
    }

    /// Learns handshakes other instances have seen (ready topics are only sent once).
    async fn refresh_workers(&self, engine: &mut Engine<S>, now: Millis) {
        match self.store.workers().await {
            Ok(ws) => {
                for w in ws {
                    if engine.registry.get(&w.worker_id).is_none() {
                        let hs = v1::Handshake {
                            component_id: w.worker_id.clone(),
                            role: v1::ComponentRole::Worker as i32,
                            supported_versions: self.options.config.supported_versions.clone(),
                            capabilities: w
                                .capabilities
                                .iter()
                                .map(|c| (c.clone(), true))
                                .collect(),
                            ready_topics: w.ready_topics.clone(),
                            ..Default::default()
                        };
                        engine.registry.handshake(&hs, now);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "reading shared workers failed"),
        }
    }

    /// Applies an approval command; returns the reply.
    async fn approval(
        &self,
        engine: &mut Engine<S>,
        job_id: &str,
        approve: bool,
        reason: String,
        now: Millis,
        actions: &mut Vec<Action>,
    ) -> serde_json::Value {
        engine.forget(job_id);
        let record: Option<JobRecord> = match self.store.load(&[job_id.to_owned()]).await {
            Ok(mut r) => r.pop().flatten().map(|s| s.record),
            Err(e) => {
                return serde_json::json!({"ok": false, "message": format!("job store unavailable: {e}")});
            }
        };
        let held = matches!(record.and_then(|r| r.hold), Some(Hold::Approval { .. }));
        if !held {
            return serde_json::json!({"ok": false, "message": format!("job {job_id} is not waiting for approval")});
        }
        let ev = if approve {
            JobEvent::Approved
        } else {
            JobEvent::Rejected(reason)
        };
        let outcome = engine.apply(vec![(job_id.to_owned(), ev)], now).await;
        let ok = outcome.failed.is_empty();
        actions.extend(outcome.actions);
        if ok {
            serde_json::json!({"ok": true, "message": format!("job {job_id} {}", if approve { "approved" } else { "rejected" })})
        } else {
            serde_json::json!({"ok": false, "message": format!("job {job_id}: the job store did not take the decision; try again")})
        }
    }

    fn count_unknown(&self, outcome: &super::engine::Outcome) {
        for (job_id, worker_id, status) in &outcome.unknown_results {
            self.stats.unknown_result(job_id, worker_id, *status);
        }
    }

    fn record_stats(&self, engine: &Engine<S>, queue_depth: usize) {
        let e = engine.stats();
        self.stats.engine(e.commits, e.conflicts, e.failed);
        if let Some(m) = &self.metrics {
            m.gauges(engine.cached(), queue_depth, engine.registry.len());
        }
    }

    /// Carries out actions; packets come back sealed, in order, for the sending step.
    async fn carry_out(
        &self,
        engine: &mut Engine<S>,
        actions: Vec<Action>,
        tx: &mpsc::Sender<Input>,
        limiter: &Arc<Semaphore>,
    ) -> Vec<Outgoing> {
        let mut out: Vec<Outgoing> = Vec::new();
        let mut decided: Vec<(String, JobEvent)> = Vec::new();
        let mut queue = actions;
        loop {
            for action in queue.drain(..) {
                self.carry_out_one(engine, action, tx, limiter, &mut out, &mut decided);
            }
            if decided.is_empty() {
                break;
            }
            // In-process safety decisions: applied now, their actions carried out too.
            let outcome = engine.apply(std::mem::take(&mut decided), now_ms()).await;
            queue = outcome.actions;
        }
        out
    }

    fn carry_out_one(
        &self,
        engine: &mut Engine<S>,
        action: Action,
        tx: &mpsc::Sender<Input>,
        limiter: &Arc<Semaphore>,
        out: &mut Vec<Outgoing>,
        decided: &mut Vec<(String, JobEvent)>,
    ) {
        match action {
            Action::CheckSafety {
                job_id,
                request,
                parent,
            } => {
                let safety = self.safety.clone();
                let timeout = self.options.safety_timeout;
                let id = job_id.clone();
                let metrics = self.metrics.clone();
                let parent = traces::parent(parent.as_deref());
                let span = traces::hop(parent.as_ref(), None, |trace_id| {
                    tracing::info_span!(
                        "policy_check",
                        job_id = job_id.as_str(),
                        trace_id,
                        topic = request.topic.as_str(),
                        worker_id = "",
                    )
                });
                let mut check = Box::pin(tracing::Instrument::instrument(
                    async move {
                        let started = std::time::Instant::now();
                        let event = match tokio::time::timeout(timeout, safety.check(&request))
                            .await
                        {
                            Ok(Ok(response)) => JobEvent::SafetyDecided(response),
                            Ok(Err(e)) => JobEvent::SafetyUnavailable(e.to_string()),
                            Err(_) => JobEvent::SafetyUnavailable("safety check timed out".into()),
                        };
                        if let Some(m) = &metrics {
                            let answer = match &event {
                                JobEvent::SafetyDecided(r) => Some(r),
                                _ => None,
                            };
                            m.safety(answer, started.elapsed());
                        }
                        event
                    },
                    span,
                ));
                // An in-process kernel answers at once: apply the decision now. A remote
                // one is awaited in its own task so the loop keeps going.
                match futures_util::FutureExt::now_or_never(&mut check) {
                    Some(event) => decided.push((id, event)),
                    None => {
                        let tx = tx.clone();
                        let limiter = limiter.clone();
                        tokio::spawn(async move {
                            let _permit = limiter.acquire_owned().await;
                            let event = check.await;
                            let item = Item::Job(id, event);
                            let _ = tx.send(Input::Item(Box::new(item), None)).await;
                        });
                    }
                }
            }
            Action::Dispatch {
                subject,
                request,
                trace_id,
                identity,
                parent,
            } => {
                let mut request = *request;
                let mut identity = identity.map(|b| *b);
                if let Some(production) = &self.packets.config().production {
                    // What the worker admits and echoes: the job's identity, in the
                    // envelope and in the request.
                    let bound = crate::trust::production::dispatch_identity(
                        &request,
                        identity.as_ref(),
                        &production.default_identity().tenant_id,
                    );
                    if request.identity.is_none() {
                        request.identity = Some(bound.clone());
                    }
                    identity = Some(bound);
                }
                let receipt_for = if self.options.fencing {
                    let dispatch_id = request
                        .dispatch
                        .as_ref()
                        .map(|d| d.dispatch_id.clone())
                        .unwrap_or_default();
                    Some((request.job_id.clone(), dispatch_id))
                } else {
                    request.dispatch = None;
                    None
                };
                let parent = traces::parent(parent.as_deref());
                let span = traces::hop(parent.as_ref(), Some(&trace_id), |trace_id| {
                    tracing::info_span!(
                        "dispatch",
                        job_id = request.job_id.as_str(),
                        trace_id,
                        topic = request.topic.as_str(),
                        worker_id = request
                            .dispatch
                            .as_ref()
                            .map_or("", |d| d.assigned_worker_id.as_str()),
                    )
                });
                let mut pkt = self.packets.envelope(&trace_id, request);
                pkt.identity = identity;
                self.seal_in(out, subject, pkt, receipt_for, &span, parent.as_ref());
            }
            Action::PublishResult {
                result,
                trace_id,
                parent,
            } => {
                // The job's sampling decision travels with its result too.
                let parent = traces::parent(parent.as_deref());
                let pkt = self.packets.envelope(&trace_id, *result);
                let span = tracing::Span::current();
                let subject = subject::RESULT.to_owned();
                self.seal_in(out, subject, pkt, None, &span, parent.as_ref());
            }
            Action::DeadLetter {
                result,
                trace_id,
                parent,
            } => {
                if let Some(m) = &self.metrics {
                    m.dead_letter();
                }
                let parent = traces::parent(parent.as_deref());
                let pkt = self.packets.envelope(&trace_id, *result);
                let span = tracing::Span::current();
                let subject = subject::DLQ.to_owned();
                self.seal_in(out, subject, pkt, None, &span, parent.as_ref());
            }
            Action::ForwardCancel { cancel, trace_id } => {
                let trace = if trace_id.is_empty() {
                    cancel.job_id.clone()
                } else {
                    trace_id
                };
                let mut cancel = *cancel;
                if !self.options.fencing {
                    cancel.dispatch = None;
                }
                let pkt = self.packets.envelope(&trace, cancel);
                self.seal(out, subject::CANCEL.to_owned(), pkt, None);
            }
            Action::Withdraw { .. } if !self.options.fencing => {}
            Action::Withdraw {
                job_id,
                dispatch_id,
            } => {
                let store = self.store.clone();
                let bus = self.packets.bus().clone();
                let stats = self.stats.clone();
                tokio::spawn(async move {
                    let receipt = match store.take_receipt(&job_id, &dispatch_id).await {
                        Ok(Some(r)) => r,
                        Ok(None) => return,
                        Err(e) => {
                            tracing::warn!(job_id = %job_id, error = %e, "reading a dispatch receipt failed");
                            return;
                        }
                    };
                    let Ok(receipt) = receipt.parse::<cap_bus::Receipt>() else {
                        return;
                    };
                    match bus.withdraw(&receipt).await {
                        Ok(true) => {
                            tracing::info!(job_id = %job_id, dispatch_id = %dispatch_id, "dispatch withdrawn");
                            stats.withdrew();
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(job_id = %job_id, error = %e, "withdrawing a dispatch failed")
                        }
                    }
                });
            }
            Action::Alert { alert } => {
                let trace = if alert.trace_id.is_empty() {
                    cap_runtime::id::new_trace_id()
                } else {
                    alert.trace_id.clone()
                };
                let _ = self.observers.send(Observed::Alert((*alert).clone()));
                let pkt = self.packets.envelope(&trace, *alert);
                self.seal(out, subject::ALERT.to_owned(), pkt, None);
            }
            Action::Fenced {
                job_id,
                what,
                fence,
                sender,
            } => {
                self.stats.fence(fence);
                tracing::warn!(job_id = %job_id, what, fence = %fence, sender = %sender, "report outside the attempt in flight dropped");
                let _ = self.observers.send(Observed::Fenced {
                    job_id: job_id.clone(),
                    what,
                    fence,
                });
                let alert = crate::core::alert(
                    v1::AlertSeverity::Warning,
                    cap_proto::ErrorCode::JOB_DUPLICATE,
                    engine.id(),
                    &format!("{what} for job {job_id} dropped: {fence} attempt"),
                    &job_id,
                );
                let _ = self.observers.send(Observed::Alert((*alert).clone()));
                let pkt = self.packets.envelope(&job_id, *alert);
                self.seal(out, subject::ALERT.to_owned(), pkt, None);
            }
            Action::Transition {
                job_id,
                state,
                at,
                tenant,
                topic,
                latency,
            } => {
                tracing::debug!(job_id = %job_id, state = %state, "job state");
                if let Some(m) = &self.metrics {
                    m.transition(state, latency);
                }
                if self.options.job_events {
                    let event = JobStateEvent {
                        job_id: job_id.clone(),
                        tenant: tenant.clone(),
                        topic: topic.clone(),
                        state: state.to_string(),
                        at,
                    };
                    match serde_json::to_vec(&event) {
                        Ok(bytes) => out.push(Outgoing {
                            subject: events_subject(&tenant),
                            bytes: Bytes::from(bytes),
                            headers: cap_bus::Headers::default(),
                            receipt_for: None,
                        }),
                        Err(e) => tracing::warn!(error = %e, "cannot encode a job event"),
                    }
                }
                // Observers are optional: build the event only for someone.
                if self.observers.receiver_count() > 0 {
                    let _ = self.observers.send(Observed::Transition {
                        job_id,
                        topic,
                        state,
                        at,
                    });
                }
            }
            Action::Ignored { job_id, reason } => {
                tracing::info!(job_id = %job_id, reason = %reason, "event ignored");
                let _ = self.observers.send(Observed::Ignored { job_id, reason });
            }
            Action::LinkChild { .. } | Action::Evict { .. } => {}
        }
    }

    /// Seals `pkt` for `subject` in the packet layer's profile (a production seal is
    /// bound to the subject it goes out on).
    fn seal(
        &self,
        out: &mut Vec<Outgoing>,
        subject: String,
        pkt: v1::BusPacket,
        receipt_for: Option<(String, String)>,
    ) {
        self.seal_in(
            out,
            subject,
            pkt,
            receipt_for,
            &tracing::Span::current(),
            None,
        );
    }

    /// [`seal`](Self::seal), with the trace context of `span`, a hop of the job
    /// submitted with `parent` (when known).
    fn seal_in(
        &self,
        out: &mut Vec<Outgoing>,
        subject: String,
        mut pkt: v1::BusPacket,
        receipt_for: Option<(String, String)>,
        span: &tracing::Span,
        parent: Option<&TraceContext>,
    ) {
        let headers = self
            .packets
            .trace_headers_after(&pkt.trace_id, span, parent);
        match self.packets.seal_for(&subject, &mut pkt) {
            Ok(bytes) => out.push(Outgoing {
                subject,
                bytes,
                headers,
                receipt_for,
            }),
            Err(e) => tracing::error!(subject = %subject, error = %e, "cannot seal a packet"),
        }
    }
}

/// Where dispatch receipts go: into the store, for as long as a dispatch can live.
fn receipt_sink<S: JobStore>(store: Arc<S>, config: &Config) -> send::ReceiptSink {
    let ttl = config.dispatch_timeout + config.run_timeout + Duration::from_secs(60);
    Arc::new(
        move |job_id: String, dispatch_id: String, receipt: cap_bus::Receipt| {
            let store = store.clone();
            Box::pin(async move {
                if let Err(e) = store
                    .put_receipt(&job_id, &dispatch_id, &receipt.to_string(), ttl)
                    .await
                {
                    tracing::warn!(job_id = %job_id, error = %e, "keeping a dispatch receipt failed");
                }
            })
        },
    )
}

/// Records of jobs in a given state (for tests and tools).
pub fn in_state(records: &[JobRecord], state: JobState) -> usize {
    records.iter().filter(|r| r.state == state).count()
}
