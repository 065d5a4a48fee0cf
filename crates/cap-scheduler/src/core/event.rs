//! What the core reacts to ([`Event`], [`JobEvent`]) and what it asks its shell to do
//! ([`Action`], [`FollowUp`]).

use super::job::{Millis, TraceParent};
use cap_proto::v1;
use std::sync::Arc;

/// Something that happened: a packet arrived, a safety decision came back, time passed.
/// The input of [`SchedulerCore`](super::SchedulerCore), the in-memory driver.
// Events are moved once from the shell into the core; boxing the big ones would only
// add an allocation per packet.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Event {
    /// A validated, trusted JobRequest from `sys.job.submit`.
    Submitted {
        /// The request.
        request: v1::JobRequest,
        /// `trace_id` of its packet.
        trace_id: String,
        /// `sender_id` of its packet.
        sender: String,
        /// `identity` of its packet (BusPacket field 6), relayed onto every dispatch.
        identity: Option<v1::IdentityBinding>,
    },
    /// The safety kernel answered for a job.
    SafetyDecided {
        /// The job.
        job_id: String,
        /// The decision.
        response: v1::PolicyCheckResponse,
    },
    /// The safety kernel could not be reached for a job.
    SafetyUnavailable {
        /// The job.
        job_id: String,
        /// What went wrong.
        error: String,
    },
    /// A human approved a held job.
    Approved {
        /// The job (its approval_ref).
        job_id: String,
    },
    /// A human rejected a held job.
    Rejected {
        /// The job.
        job_id: String,
        /// Why.
        reason: String,
    },
    /// A JobResult from `sys.job.result` (its `worker_id` is the packet's sender).
    Result {
        /// The result.
        result: v1::JobResult,
    },
    /// A JobProgress from `sys.job.progress`.
    Progress {
        /// The progress report.
        progress: v1::JobProgress,
        /// `sender_id` of its packet (the worker).
        sender: String,
    },
    /// A client asked to cancel a job.
    Cancel {
        /// The cancel request.
        cancel: v1::JobCancel,
    },
    /// A worker heartbeat.
    Heartbeat {
        /// The heartbeat.
        heartbeat: v1::Heartbeat,
    },
    /// A component handshake.
    Handshake {
        /// The handshake.
        handshake: v1::Handshake,
    },
    /// Time passed: run timers and the reconciler.
    Tick,
}

/// An event about one job: the input of the per-job state machine
/// ([`machine::step`](super::machine::step)). Every [`Event`] except heartbeats,
/// handshakes and ticks is one of these; timers and other jobs add the rest.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum JobEvent {
    /// The job was submitted (or submitted again: at-least-once delivery).
    Submitted {
        /// The request.
        request: v1::JobRequest,
        /// `trace_id` of its packet.
        trace_id: String,
        /// `sender_id` of its packet.
        sender: String,
        /// The envelope identity of its packet (BusPacket.identity).
        identity: Option<v1::IdentityBinding>,
        /// How the idempotency key was claimed, when the request has one.
        claim: Option<Claim>,
        /// Raised by the scheduler itself (a workflow compensation), not by a client: a
        /// repeat is silent instead of re-announcing the outcome.
        internal: bool,
        /// Compensations to run after this one (workflow compensations only).
        chain: Vec<v1::JobRequest>,
        /// The trace context its packet carried (see [`TraceParent`]).
        trace_parent: Option<Arc<TraceParent>>,
    },
    /// The safety kernel answered.
    SafetyDecided(v1::PolicyCheckResponse),
    /// The safety kernel could not be reached.
    SafetyUnavailable(String),
    /// A human approved the held job.
    Approved,
    /// A human rejected the held job.
    Rejected(String),
    /// A JobResult arrived.
    Result(v1::JobResult),
    /// A JobProgress arrived from `sender`.
    Progress {
        /// The report.
        progress: v1::JobProgress,
        /// The worker that sent it.
        sender: String,
    },
    /// A JobCancel arrived (or a parent asked its children to stop).
    Cancel(v1::JobCancel),
    /// The job's deadline came.
    Due,
    /// The worker the job was sent to directly stopped beating.
    WorkerLost {
        /// The worker.
        worker_id: String,
    },
}

/// The outcome of claiming an idempotency key for a new job, done atomically by the
/// shell before the job's first step.
#[derive(Clone, Debug, PartialEq)]
pub enum Claim {
    /// This job holds the key: it runs.
    Leader,
    /// Another job holds the key: this one follows it.
    Follower {
        /// The job holding the key.
        leader: String,
    },
}

/// Work for another job, produced by one job's step: the shell turns each into a
/// [`JobEvent`] for that job (after committing the step that produced it).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum FollowUp {
    /// Submit a job the scheduler raises itself (a workflow compensation).
    Submit {
        /// The request.
        request: v1::JobRequest,
        /// `trace_id` to carry.
        trace_id: String,
        /// The envelope identity it runs for (the workflow's).
        identity: Option<v1::IdentityBinding>,
        /// Compensations to run after it.
        chain: Vec<v1::JobRequest>,
    },
    /// Cancel a job (a child of a cancelled parent).
    Cancel(v1::JobCancel),
}

/// Which way a report was out of step with the attempt in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fence {
    /// No attempt is in flight (the job is not dispatched, or its attempt was ended by
    /// a timeout, a cancel or a result).
    Inactive,
    /// An earlier attempt than the one in flight.
    Stale,
    /// A later attempt than any issued.
    Future,
    /// The attempt in flight, but another dispatch id or another worker.
    Foreign,
}

impl Fence {
    /// A short name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Fence::Inactive => "inactive",
            Fence::Stale => "stale",
            Fence::Future => "future",
            Fence::Foreign => "foreign",
        }
    }
}

impl std::fmt::Display for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something the shell must do.
/// Large messages are boxed: actions are collected in batches, and a small enum keeps
/// those vectors cheap to grow.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Ask the safety kernel about a job.
    CheckSafety {
        /// The job.
        job_id: String,
        /// The request to evaluate.
        request: Box<v1::PolicyCheckRequest>,
        /// The job's submit trace context, the parent of the check's span.
        parent: Option<Arc<TraceParent>>,
    },
    /// Publish a JobRequest to a pool or worker subject.
    Dispatch {
        /// `job.<pool>` or `worker.<id>.jobs`.
        subject: String,
        /// The request (context pointer possibly redacted, `dispatch` set).
        request: Box<v1::JobRequest>,
        /// `trace_id` to carry.
        trace_id: String,
        /// The envelope identity to carry (BusPacket.identity).
        identity: Option<Box<v1::IdentityBinding>>,
        /// The job's submit trace context, the parent of the dispatch's span.
        parent: Option<Arc<TraceParent>>,
    },
    /// Publish a JobResult on `sys.job.result` (DENIED, TIMEOUT, CANCELLED, failures the
    /// scheduler decides, and outcomes copied to idempotent followers).
    PublishResult {
        /// The result.
        result: Box<v1::JobResult>,
        /// `trace_id` to carry.
        trace_id: String,
        /// The job's submit trace context: the result keeps its sampling decision.
        parent: Option<Arc<TraceParent>>,
    },
    /// Publish a dead letter on `sys.job.dlq`.
    DeadLetter {
        /// The last result of the job.
        result: Box<v1::JobResult>,
        /// `trace_id` to carry.
        trace_id: String,
        /// The job's submit trace context: the dead letter keeps its sampling decision.
        parent: Option<Arc<TraceParent>>,
    },
    /// Forward a cancel to the workers (`sys.job.cancel`).
    ForwardCancel {
        /// The cancel request (with the fenced attempt's `dispatch`, when there was one).
        cancel: Box<v1::JobCancel>,
        /// `trace_id` to carry.
        trace_id: String,
    },
    /// The attempt in flight was ended (timeout, cancel): withdraw its dispatch from a
    /// durable bus, so that no worker starts it later.
    Withdraw {
        /// The job.
        job_id: String,
        /// The fenced dispatch.
        dispatch_id: String,
    },
    /// Publish a SystemAlert on `sys.alert`.
    Alert {
        /// The alert.
        alert: Box<v1::SystemAlert>,
    },
    /// Remember that `child` belongs to the workflow parent `parent`.
    LinkChild {
        /// The parent job.
        parent: String,
        /// The child job.
        child: String,
    },
    /// A report that did not belong to the attempt in flight was dropped (counted,
    /// logged and alerted by the shell).
    Fenced {
        /// The job.
        job_id: String,
        /// What was dropped: `result`, `progress` or `cancel`.
        what: &'static str,
        /// How it was out of step.
        fence: Fence,
        /// Who sent it.
        sender: String,
    },
    /// An event that could not be applied (a backwards move, a second terminal state, a
    /// cancel after the end): logged and otherwise ignored.
    Ignored {
        /// The job.
        job_id: String,
        /// Why.
        reason: String,
    },
    /// A finished job left the retention window: forget its record.
    Evict {
        /// The job.
        job_id: String,
    },
    /// A state change, for observers (logs, `cap demo`).
    Transition {
        /// The job.
        job_id: String,
        /// The new state.
        state: cap_proto::JobState,
        /// When.
        at: Millis,
        /// The job's tenant ([`JobRecord::tenant`](super::JobRecord::tenant)).
        tenant: String,
        /// The job's topic.
        topic: String,
        /// How long the step that ends here took, from the job's history (see
        /// [`JobRecord::latency_to`](super::JobRecord::latency_to)).
        latency: Option<Millis>,
    },
}
