//! [`Scheduler`]: the async shell around [`SchedulerCore`]. Subscription tasks turn bus
//! packets into events; one loop owns the core, applies each event, carries out the
//! actions (publish, persist, ask the safety kernel) and only then acknowledges the
//! message, so a crash between receipt and persistence means redelivery, not loss.

use crate::core::{Action, Config, Event, Hold, JobRecord, Millis, Pools, SchedulerCore};
use crate::shell::send;
use crate::shell::store::{JobStore, StoreError};
use bytes::Bytes;
use cap_bus::{Bus, Message};
use cap_proto::v1::bus_packet::Payload;
use cap_proto::{JobState, subject, v1};
use cap_runtime::packets::Packets;
use cap_safety::SafetyClient;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Request/reply subject of the approval command: a JSON body
/// `{"job_id": "…", "approve": true|false, "reason": "…"}`, answered with
/// `{"ok": bool, "message": "…"}`. Restrict who may publish here with NATS permissions.
pub const APPROVAL_SUBJECT: &str = "sys.scheduler.approval";

/// Most events applied together before their records are written and their messages
/// acknowledged.
const MAX_BATCH: usize = 256;

/// Unfinished batches queued for the sending task at most; the event loop waits when it
/// is this far ahead.
const SEND_QUEUE: usize = 64;

/// Default queue group prefix of schedulers: they share `sys.job.submit` as
/// `cap-scheduler-submit` and `sys.job.result` as `cap-scheduler-result`.
pub const QUEUE_GROUP: &str = "cap-scheduler";

/// Settings of a scheduler service.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Timeouts, retries, back-off.
    pub config: Config,
    /// Topic → pool routing.
    pub pools: Pools,
    /// Queue group shared by scheduler instances.
    pub queue_group: String,
    /// How often timers and the reconciler run.
    pub tick: Duration,
    /// Safety checks in flight at most.
    pub max_safety_in_flight: usize,
    /// Time allowed for one safety check before it counts as unreachable.
    pub safety_timeout: Duration,
    /// The worker trust handshake service and its enforcement on inbound worker
    /// packets (`None`: neither, today's behaviour). See [`crate::trust`].
    pub worker_trust: Option<crate::trust::WorkerTrust>,
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
            worker_trust: None,
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
    Store(#[from] StoreError),
}

/// The scheduler's clock: wall-clock milliseconds.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// What one batch of actions leaves to do: events settled at once, jobs to persist,
/// packets to publish. One is kept for the scheduler's life and emptied after each
/// batch, so the loop does not grow fresh buffers every time.
#[derive(Default)]
struct Batch {
    follow_ups: Vec<Event>,
    dirty: Vec<String>,
    outgoing: Vec<(String, cap_proto::v1::BusPacket)>,
}

enum Input {
    Event(Box<Event>, Option<Message>),
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
}

impl<B: Bus, K: SafetyClient + 'static, S: JobStore> Scheduler<B, K, S> {
    /// A scheduler publishing and receiving through `packets` (its sender id is the
    /// scheduler id).
    pub fn new(packets: Packets<B>, safety: Arc<K>, store: S, options: SchedulerOptions) -> Self {
        let (observers, _) = broadcast::channel(4096);
        Scheduler {
            packets,
            safety,
            store: Arc::new(store),
            options,
            observers,
        }
    }

    /// A stream of what happens (state changes, ignored events, alerts).
    pub fn observe(&self) -> broadcast::Receiver<Observed> {
        self.observers.subscribe()
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let id = self.packets.sender_id().to_owned();
        let mut core = SchedulerCore::new(
            id.clone(),
            self.options.config.clone(),
            self.options.pools.clone(),
        );
        let records = self.store.load_all().await?;
        let restored = records.len();
        core.restore(records, now_ms());
        tracing::info!(scheduler = %id, restored, "scheduler starting");

        let (tx, mut rx) = mpsc::channel::<Input>(1024);
        let bus = self.packets.bus().clone();
        // One group per subject: durable (JetStream) consumers are named after the group,
        // and one durable cannot serve two filters.
        let q_submit = format!("{}-submit", self.options.queue_group);
        let q_result = format!("{}-result", self.options.queue_group);
        let subs = [
            (subject::SUBMIT, Some(q_submit.as_str())),
            (subject::RESULT, Some(q_result.as_str())),
            (subject::PROGRESS, None),
            (subject::CANCEL, None),
            (subject::HEARTBEAT, None),
            (subject::HANDSHAKE, None),
        ];
        let mut tasks = Vec::new();
        for (subj, queue) in subs {
            let stream = match queue {
                Some(g) => bus.queue_subscribe(subj, g).await,
                None => bus.subscribe(subj).await,
            }
            .map_err(|source| Error::Subscribe {
                subject: subj.to_owned(),
                source,
            })?;
            tasks.push(tokio::spawn(feed(
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
        let approvals =
            bus.subscribe(APPROVAL_SUBJECT)
                .await
                .map_err(|source| Error::Subscribe {
                    subject: APPROVAL_SUBJECT.to_owned(),
                    source,
                })?;
        tasks.push(tokio::spawn(feed_approvals(
            approvals,
            tx.clone(),
            shutdown.clone(),
        )));

        let limiter = Arc::new(Semaphore::new(self.options.max_safety_in_flight.max(1)));
        let mut ticker = tokio::time::interval(self.options.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Sends and acknowledgements that wait for the server are finished by a task of
        // their own, batch after batch (see `send`). Each batch is persisted first.
        let (send_tx, send_rx) = mpsc::channel::<send::Unfinished>(SEND_QUEUE);
        let sender = tokio::spawn(send::run(send_rx));
        // Buffers reused by every batch.
        let mut work = Batch::default();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut actions = Vec::new();
        let mut acks = Vec::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {
                    actions.extend(core.handle(Event::Tick, now_ms()));
                    let packets = self.carry_out(&mut core, &mut actions, &mut work, &tx, &limiter).await;
                    if let Some(rest) = send::start(&self.packets, packets, Vec::new()).await {
                        let _ = send_tx.send(rest).await;
                    }
                }
                input = rx.recv() => {
                    let Some(first) = input else { break };
                    // Take every event already waiting (up to a bound): they are applied
                    // together, their records written in one go, then acknowledged.
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(i) => batch.push(i),
                            Err(_) => break,
                        }
                    }
                    for input in batch.drain(..) {
                        match input {
                            Input::Event(event, msg) => {
                                let event = *event;
                                self.load_if_needed(&mut core, &event).await;
                                actions.extend(core.handle(event, now_ms()));
                                // Only durable deliveries need acknowledging (see `send`).
                                acks.extend(msg.map(|m| m.ack_handle()).filter(cap_bus::AckHandle::is_durable));
                            }
                            Input::Approval { job_id, approve, reason, msg } => {
                                let event = Event::Approved { job_id: job_id.clone() };
                                self.load_if_needed(&mut core, &event).await;
                                let held = matches!(core.job(&job_id).and_then(|j| j.hold.as_ref()), Some(Hold::Approval { .. }));
                                let reply = if held {
                                    let event = if approve { event } else { Event::Rejected { job_id: job_id.clone(), reason } };
                                    actions.extend(core.handle(event, now_ms()));
                                    serde_json::json!({"ok": true, "message": format!("job {job_id} {}", if approve { "approved" } else { "rejected" })})
                                } else {
                                    serde_json::json!({"ok": false, "message": format!("job {job_id} is not waiting for approval")})
                                };
                                if let Some(r) = msg.reply() {
                                    let _ = bus.publish(r, Bytes::from(reply.to_string())).await;
                                }
                            }
                        }
                    }
                    let packets = self.carry_out(&mut core, &mut actions, &mut work, &tx, &limiter).await;
                    // Persisted: now the packets, then the acknowledgements, may go.
                    let acks = std::mem::take(&mut acks);
                    if let Some(rest) = send::start(&self.packets, packets, acks).await
                        && send_tx.send(rest).await.is_err()
                    {
                        tracing::error!("the sending task is gone; stopping");
                        break;
                    }
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

    /// Another instance (or this one before a restart) may hold the job: load it.
    async fn load_if_needed(&self, core: &mut SchedulerCore, event: &Event) {
        let id = match event {
            Event::Result { result } => &result.job_id,
            Event::Progress { progress } => &progress.job_id,
            Event::Cancel { cancel } => &cancel.job_id,
            Event::Approved { job_id } | Event::Rejected { job_id, .. } => job_id,
            Event::SafetyDecided { job_id, .. } | Event::SafetyUnavailable { job_id, .. } => job_id,
            Event::Submitted { request, .. } => &request.job_id,
            _ => return,
        };
        if core.job(id).is_some() {
            return;
        }
        match self.store.get(id).await {
            Ok(Some(record)) => core.restore([record], now_ms()),
            Ok(None) => {}
            Err(e) => tracing::warn!(job_id = %id, error = %e, "job store lookup failed"),
        }
    }

    /// Carries out `actions` (leaving it empty), and the actions of any event they
    /// settle at once (an in-process safety decision), until nothing is left; persists
    /// the changed records and returns the sealed packets to send. `batch` comes back
    /// empty.
    async fn carry_out(
        &self,
        core: &mut SchedulerCore,
        actions: &mut Vec<Action>,
        batch: &mut Batch,
        tx: &mpsc::Sender<Input>,
        limiter: &Arc<Semaphore>,
    ) -> Vec<(String, Bytes)> {
        loop {
            self.carry_out_once(core, actions, tx, limiter, batch).await;
            if batch.follow_ups.is_empty() {
                break;
            }
            let now = now_ms();
            for event in batch.follow_ups.drain(..) {
                actions.extend(core.handle(event, now));
            }
        }
        // Evicted meanwhile: nothing to write.
        let records: Vec<&JobRecord> = batch.dirty.iter().filter_map(|id| core.job(id)).collect();
        if let Err(e) = self.store.put_many(&records).await {
            tracing::error!(jobs = records.len(), error = %e, "persisting jobs failed");
        }
        batch.dirty.clear();
        // Write-ahead: the records first, then what they decided. A crash in between
        // leaves a job recorded as dispatched but never sent, which the reconciler times
        // out; never one sent twice.
        self.seal_all(batch)
    }

    async fn carry_out_once(
        &self,
        core: &mut SchedulerCore,
        actions: &mut Vec<Action>,
        tx: &mpsc::Sender<Input>,
        limiter: &Arc<Semaphore>,
        batch: &mut Batch,
    ) {
        for action in actions.drain(..) {
            match action {
                Action::CheckSafety { job_id, request } => {
                    let safety = self.safety.clone();
                    let timeout = self.options.safety_timeout;
                    let mut check = Box::pin(async move {
                        match tokio::time::timeout(timeout, safety.check(&request)).await {
                            Ok(Ok(response)) => Event::SafetyDecided { job_id, response },
                            Ok(Err(e)) => Event::SafetyUnavailable {
                                job_id,
                                error: e.to_string(),
                            },
                            Err(_) => Event::SafetyUnavailable {
                                job_id,
                                error: "safety check timed out".into(),
                            },
                        }
                    });
                    // An in-process kernel answers at once: apply the decision now. A
                    // remote one is awaited in its own task so the loop keeps going.
                    match futures_util::FutureExt::now_or_never(&mut check) {
                        Some(event) => batch.follow_ups.push(event),
                        None => {
                            let tx = tx.clone();
                            let limiter = limiter.clone();
                            tokio::spawn(async move {
                                let _permit = limiter.acquire_owned().await;
                                let event = check.await;
                                let _ = tx.send(Input::Event(Box::new(event), None)).await;
                            });
                        }
                    }
                }
                Action::Dispatch {
                    subject,
                    request,
                    trace_id,
                } => {
                    // A dispatch that never arrives is timed out by the reconciler.
                    batch
                        .outgoing
                        .push((subject, self.packets.envelope(&trace_id, *request)));
                }
                Action::PublishResult { result, trace_id } => {
                    batch.outgoing.push((
                        subject::RESULT.to_owned(),
                        self.packets.envelope(&trace_id, *result),
                    ));
                }
                Action::DeadLetter { result, trace_id } => {
                    batch.outgoing.push((
                        subject::DLQ.to_owned(),
                        self.packets.envelope(&trace_id, *result),
                    ));
                }
                Action::ForwardCancel { cancel, trace_id } => {
                    let trace = if trace_id.is_empty() {
                        cap_runtime::id::new_trace_id()
                    } else {
                        trace_id
                    };
                    batch.outgoing.push((
                        subject::CANCEL.to_owned(),
                        self.packets.envelope(&trace, *cancel),
                    ));
                }
                Action::Alert { alert } => {
                    let trace = if alert.trace_id.is_empty() {
                        cap_runtime::id::new_trace_id()
                    } else {
                        alert.trace_id.clone()
                    };
                    let _ = self.observers.send(Observed::Alert((*alert).clone()));
                    batch.outgoing.push((
                        subject::ALERT.to_owned(),
                        self.packets.envelope(&trace, *alert),
                    ));
                }
                Action::Persist { job_id } => {
                    if !batch.dirty.contains(&job_id) {
                        batch.dirty.push(job_id);
                    }
                }
                Action::Evict { job_id } => {
                    if let Err(e) = self.store.delete(&job_id).await {
                        tracing::warn!(job_id = %job_id, error = %e, "evicting job failed");
                    }
                }
                Action::Transition { job_id, state, at } => {
                    let topic = core
                        .job(&job_id)
                        .map(|j| j.request.topic.as_str())
                        .unwrap_or_default();
                    tracing::info!(job_id = %job_id, topic = %topic, state = %state, "job state");
                    // Observers are optional: build the event only for someone.
                    if self.observers.receiver_count() > 0 {
                        let topic = topic.to_owned();
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
            }
        }
    }

    /// Seals the batch's packets, in order.
    fn seal_all(&self, batch: &mut Batch) -> Vec<(String, Bytes)> {
        let mut sealed = Vec::with_capacity(batch.outgoing.len());
        for (subj, mut pkt) in batch.outgoing.drain(..) {
            match self.packets.seal(&mut pkt) {
                Ok(bytes) => sealed.push((subj, bytes)),
                Err(e) => tracing::error!(subject = %subj, error = %e, "cannot seal a packet"),
            }
        }
        sealed
    }
}

/// Packets from one subscription → events.
async fn feed<B: Bus, St>(
    mut stream: St,
    packets: Packets<B>,
    gate: Option<Arc<crate::trust::Gate>>,
    tx: mpsc::Sender<Input>,
    shutdown: CancellationToken,
) where
    St: futures_util::Stream<Item = Message> + Unpin,
{
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = stream.next() => match m { Some(m) => m, None => return },
        };
        let Some(pkt) = packets.receive(&msg).await else {
            continue;
        };
        // Worker trust: packets of workers without a live session stop here (enforce).
        if let Some(gate) = &gate
            && !gate.admit(&packets, msg.payload(), &pkt).await
        {
            let _ = msg.ack().await;
            continue;
        }
        let trace_id = pkt.trace_id.clone();
        let sender = pkt.sender_id.clone();
        let event = match pkt.payload {
            Some(Payload::JobRequest(request)) => Event::Submitted {
                request,
                trace_id,
                sender,
            },
            Some(Payload::JobResult(result)) => Event::Result { result },
            Some(Payload::JobProgress(progress)) => Event::Progress { progress },
            Some(Payload::JobCancel(cancel)) => Event::Cancel { cancel },
            Some(Payload::Heartbeat(heartbeat)) => Event::Heartbeat { heartbeat },
            Some(Payload::Handshake(handshake)) => Event::Handshake { handshake },
            _ => {
                tracing::warn!(subject = %msg.subject(), "unexpected payload on this subject; ignored");
                let _ = msg.ack().await;
                continue;
            }
        };
        if tx
            .send(Input::Event(Box::new(event), Some(msg)))
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn feed_approvals<St>(mut stream: St, tx: mpsc::Sender<Input>, shutdown: CancellationToken)
where
    St: futures_util::Stream<Item = Message> + Unpin,
{
    #[derive(serde::Deserialize)]
    struct Command {
        job_id: String,
        approve: bool,
        #[serde(default)]
        reason: String,
    }
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = stream.next() => match m { Some(m) => m, None => return },
        };
        match serde_json::from_slice::<Command>(msg.payload()) {
            Ok(c) => {
                let input = Input::Approval {
                    job_id: c.job_id,
                    approve: c.approve,
                    reason: c.reason,
                    msg,
                };
                if tx.send(input).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "malformed approval command ignored"),
        }
    }
}

/// Records of jobs in a given state (for tests and tools).
pub fn in_state(records: &[JobRecord], state: JobState) -> usize {
    records.iter().filter(|r| r.state == state).count()
}
