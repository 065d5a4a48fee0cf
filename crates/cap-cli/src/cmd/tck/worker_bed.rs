//! The worker harness: a real [`cap_runtime::Worker`] on the in-memory bus and blob
//! store, with a handler ([`Probe`]) that counts its invocations and does what the case
//! plans for each one; a recorder of what the worker publishes (results, progress,
//! alerts); and a sender of crafted packets in the scheduler's place.

use super::outcome::CaseError;
use bytes::Bytes;
use cap_blob::{BlobStore, MemoryBlobStore};
use cap_bus::{Bus, MemoryBus, MemoryOptions};
use cap_proto::v1::{self, bus_packet::Payload};
use cap_proto::{ErrorCode, JobState, subject};
use cap_runtime::packets::{PacketConfig, PacketStats, Packets};
use cap_runtime::{Context, JobError, RunningWorker, Worker};
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};

/// The worker's id (the `assigned_worker_id` the scenarios give it).
pub const WORKER_ID: &str = "wrk-1";
/// The topic its handler serves.
pub const TOPIC: &str = "job.tck.echo";
/// Who sends the crafted packets.
pub const SENDER: &str = "tck-scheduler";
/// How long a case waits for something it expects.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a case waits to be sure something does not happen.
pub const SETTLE: Duration = Duration::from_millis(300);

/// What the handler does on one invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Returns an output.
    Succeed,
    /// Fails so that the result has this status (FAILED, FAILED_RETRYABLE,
    /// FAILED_FATAL).
    Fail(JobState),
    /// Waits until [`Bed::release`] (or until the worker cancels it).
    Hold,
    /// Reports RUNNING progress twice, then returns an output.
    RepeatRunning,
}

/// The handler's side of the harness.
#[derive(Debug)]
pub struct Probe {
    invocations: AtomicUsize,
    completed: AtomicUsize,
    progress_errors: AtomicUsize,
    plan: Mutex<VecDeque<Step>>,
    default: Mutex<Step>,
    gate: Semaphore,
    identities: Mutex<Vec<Option<v1::DispatchIdentity>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Probe {
    fn new() -> Self {
        Probe {
            invocations: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            progress_errors: AtomicUsize::new(0),
            plan: Mutex::new(VecDeque::new()),
            default: Mutex::new(Step::Succeed),
            gate: Semaphore::new(0),
            identities: Mutex::new(Vec::new()),
        }
    }

    /// How many times the handler was called.
    pub fn invocations(&self) -> usize {
        self.invocations.load(Ordering::SeqCst)
    }

    /// How many calls returned by themselves (not cut short by a cancel).
    pub fn completed(&self) -> usize {
        self.completed.load(Ordering::SeqCst)
    }

    /// Progress reports the worker refused.
    pub fn progress_errors(&self) -> usize {
        self.progress_errors.load(Ordering::SeqCst)
    }

    /// The dispatch identity each call saw, in call order.
    pub fn identities(&self) -> Vec<Option<v1::DispatchIdentity>> {
        lock(&self.identities).clone()
    }

    /// Plans the next calls (after those already planned).
    pub fn plan(&self, steps: &[Step]) {
        lock(&self.plan).extend(steps.iter().copied());
    }

    /// What calls do once the plan is used up.
    pub fn otherwise(&self, step: Step) {
        *lock(&self.default) = step;
    }

    async fn run(&self, ctx: Context) -> Result<Bytes, JobError> {
        self.invocations.fetch_add(1, Ordering::SeqCst);
        lock(&self.identities).push(ctx.request().dispatch.clone());
        let step = lock(&self.plan)
            .pop_front()
            .unwrap_or_else(|| *lock(&self.default));
        let out = match step {
            Step::Succeed => Ok(Bytes::from_static(b"{\"ok\":true}")),
            Step::Fail(state) => Err(error_for(state)),
            Step::Hold => match self.gate.acquire().await {
                Ok(permit) => {
                    permit.forget();
                    Ok(Bytes::from_static(b"{\"ok\":true}"))
                }
                Err(_) => Err(JobError::failed("tck: gate closed")),
            },
            Step::RepeatRunning => {
                for _ in 0..2 {
                    if ctx.progress(50, "still running").await.is_err() {
                        self.progress_errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Ok(Bytes::from_static(b"{\"ok\":true}"))
            }
        };
        self.completed.fetch_add(1, Ordering::SeqCst);
        out
    }
}

/// The handler error that gives a result of status `state`.
pub fn error_for(state: JobState) -> JobError {
    match state {
        JobState::FailedRetryable => {
            JobError::retryable(ErrorCode::JOB_RESOURCE_EXHAUSTED, "tck: retryable failure")
        }
        JobState::FailedFatal => JobError::fatal(ErrorCode::JOB_INVALID_INPUT, "tck: fatal"),
        JobState::Cancelled => JobError::cancelled("tck: cancelled"),
        JobState::Timeout => JobError::timeout("tck: timeout"),
        _ => JobError::failed("tck: failure"),
    }
}

/// One packet the worker published.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Its exact bytes.
    pub bytes: Bytes,
    /// Decoded.
    pub packet: v1::BusPacket,
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    notify: Notify,
}

/// A worker on a fresh in-memory bus and store, and what it publishes.
pub struct Bed {
    /// The bus.
    pub bus: MemoryBus,
    /// The blob store.
    pub store: MemoryBlobStore,
    /// The handler's side.
    pub probe: Arc<Probe>,
    worker: Option<RunningWorker<MemoryBus>>,
    sender: Packets<MemoryBus>,
    recorder: Arc<Recorder>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Bed {
    /// Starts worker [`WORKER_ID`] serving [`TOPIC`], on a bus whose largest message is
    /// `max_payload` (`None`: no limit).
    pub async fn start(max_payload: Option<usize>) -> Result<Bed, CaseError> {
        let bus = MemoryBus::with_options(MemoryOptions::default().max_payload(max_payload));
        let store = MemoryBlobStore::emulating_redis(Default::default());
        let recorder = Arc::new(Recorder::default());
        // One subscription for every system subject (results, progress, alerts), so
        // that what one task of the worker publishes is recorded in its order.
        let mut sub = bus.subscribe("sys.>").await?;
        let rec = recorder.clone();
        let tasks = vec![tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let bytes = msg.payload().clone();
                // Lenient: we record what was published, whatever it is.
                if let Ok(packet) = cap_proto::packet::decode_lenient(&bytes, usize::MAX) {
                    lock(&rec.seen).push(Seen { bytes, packet });
                    rec.notify.notify_waiters();
                }
            }
        })];
        let probe = Arc::new(Probe::new());
        let handler_probe = probe.clone();
        let worker = Worker::builder(bus.clone(), store.clone())
            .id(WORKER_ID)
            .heartbeat_interval(Duration::from_secs(60))
            .raw_handler(TOPIC, move |ctx: Context, _input: Bytes| {
                let probe = handler_probe.clone();
                async move { probe.run(ctx).await }
            })
            .build()?
            .start()
            .await?;
        let sender = Packets::new(bus.clone(), PacketConfig::new(SENDER));
        Ok(Bed {
            bus,
            store,
            probe,
            worker: Some(worker),
            sender,
            recorder,
            tasks,
        })
    }

    /// The wire bytes of a JobRequest for `job_id` on [`TOPIC`] (its context stored),
    /// carrying `dispatch`.
    pub async fn request(
        &self,
        job_id: &str,
        dispatch: Option<v1::DispatchIdentity>,
    ) -> Result<Bytes, CaseError> {
        let ptr = self
            .store
            .put_context(job_id, Bytes::from_static(b"{\"n\":1}"))
            .await?;
        let mut packet = self.sender.envelope(
            &format!("trace-{job_id}"),
            v1::JobRequest {
                job_id: job_id.into(),
                topic: TOPIC.into(),
                context_ptr: ptr.to_string(),
                dispatch,
                ..Default::default()
            },
        );
        Ok(self.sender.seal(&mut packet)?)
    }

    /// Delivers bytes on the worker's own subject (`worker.<id>.jobs`), where a
    /// scheduler sends the dispatches it assigns to it.
    pub async fn deliver(&self, bytes: Bytes) -> Result<(), CaseError> {
        let direct =
            subject::worker_jobs(WORKER_ID).map_err(|e| CaseError::harness(e.to_string()))?;
        self.deliver_on(direct.as_str(), bytes).await
    }

    /// Delivers bytes on `subject`.
    pub async fn deliver_on(&self, subject: &str, bytes: Bytes) -> Result<(), CaseError> {
        self.bus.publish(subject, bytes).await?;
        Ok(())
    }

    /// Sends a JobCancel for `job_id` (with `dispatch`) on `sys.job.cancel`.
    pub async fn cancel(
        &self,
        job_id: &str,
        dispatch: Option<v1::DispatchIdentity>,
    ) -> Result<(), CaseError> {
        let packet = self.sender.envelope(
            &format!("trace-{job_id}"),
            v1::JobCancel {
                job_id: job_id.into(),
                reason: "tck cancel".into(),
                requested_by: SENDER.into(),
                dispatch,
                ..Default::default()
            },
        );
        self.sender.publish(subject::CANCEL, packet).await?;
        Ok(())
    }

    /// Lets `n` held calls finish.
    pub fn release(&self, n: usize) {
        self.probe.gate.add_permits(n);
    }

    /// Waits until `done` holds (checked after every recorded packet and every 20 ms),
    /// at most `within`; returns whether it held.
    pub async fn wait_for(&self, within: Duration, done: impl Fn(&Bed) -> bool) -> bool {
        let end = Instant::now() + within;
        loop {
            if done(self) {
                return true;
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            let step = (end - now).min(Duration::from_millis(20));
            let _ = tokio::time::timeout(step, self.recorder.notify.notified()).await;
        }
    }

    /// Waits [`SETTLE`], for whatever is still under way to show.
    pub async fn settle(&self) {
        tokio::time::sleep(SETTLE).await;
    }

    /// Everything recorded so far.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.recorder.seen).clone()
    }

    /// The results published for `job_id`, with their bytes.
    pub fn results(&self, job_id: &str) -> Vec<(Bytes, v1::JobResult)> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s.packet.payload {
                Some(Payload::JobResult(r)) if r.job_id == job_id => Some((s.bytes, r)),
                _ => None,
            })
            .collect()
    }

    /// The statuses of the results for `job_id`, in order.
    pub fn result_states(&self, job_id: &str) -> Vec<String> {
        self.results(job_id)
            .iter()
            .map(|(_, r)| status_name(r.status))
            .collect()
    }

    /// The statuses of the results for `job_id` that do not answer the dispatch `other`
    /// (a result carrying `other`'s identity is about that dispatch alone; one without
    /// an identity is about the job, whatever attempt it runs).
    pub fn result_states_except(&self, job_id: &str, other: &v1::DispatchIdentity) -> Vec<String> {
        self.results(job_id)
            .iter()
            .filter(|(_, r)| r.dispatch.as_ref() != Some(other))
            .map(|(_, r)| status_name(r.status))
            .collect()
    }

    /// The statuses the worker reported for `job_id` (progress and results), in order.
    pub fn reported_states(&self, job_id: &str) -> Vec<String> {
        self.seen()
            .iter()
            .filter_map(|s| match &s.packet.payload {
                Some(Payload::JobProgress(p)) if p.job_id == job_id => Some(status_name(p.status)),
                Some(Payload::JobResult(r)) if r.job_id == job_id => Some(status_name(r.status)),
                _ => None,
            })
            .collect()
    }

    /// The error codes of the alerts published.
    pub fn alert_codes(&self) -> Vec<i32> {
        self.seen()
            .iter()
            .filter_map(|s| match &s.packet.payload {
                Some(Payload::Alert(a)) => Some(a.error_code_enum),
                _ => None,
            })
            .collect()
    }

    /// The worker's packet-layer counters.
    pub fn stats(&self) -> PacketStats {
        self.worker
            .as_ref()
            .map(|w| w.packet_stats())
            .unwrap_or_default()
    }

    /// Stops the worker (held calls are cancelled) and the recorders.
    pub async fn stop(mut self) {
        if let Some(w) = self.worker.take() {
            self.probe.gate.close();
            w.shutdown(Duration::from_millis(200)).await;
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// A status number as a state name (the number when unknown).
pub fn status_name(status: i32) -> String {
    JobState::from_i32(status)
        .map(|s| s.to_string())
        .unwrap_or_else(|| status.to_string())
}

/// A dispatch identity.
pub fn identity(dispatch_id: &str, attempt: u64, worker: &str) -> v1::DispatchIdentity {
    v1::DispatchIdentity {
        dispatch_id: dispatch_id.into(),
        attempt,
        assigned_worker_id: worker.into(),
    }
}

/// An identity for evidence: `dispatch_id/attempt/worker` (`-` for none).
pub fn show(d: &Option<v1::DispatchIdentity>) -> String {
    match d {
        Some(d) => format!("{}/{}/{}", d.dispatch_id, d.attempt, d.assigned_worker_id),
        None => "-".into(),
    }
}
