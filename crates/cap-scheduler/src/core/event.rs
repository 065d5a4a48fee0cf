//! [`Event`]s the scheduler reacts to and the [`Action`]s it asks its shell to carry out.

use super::job::Millis;
use cap_proto::v1;

/// Something that happened: a packet arrived, a safety decision came back, time passed.
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
    /// A JobResult from `sys.job.result`.
    Result {
        /// The result.
        result: v1::JobResult,
    },
    /// A JobProgress from `sys.job.progress`.
    Progress {
        /// The progress report.
        progress: v1::JobProgress,
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
    },
    /// Publish a JobRequest to a pool or worker subject.
    Dispatch {
        /// `job.<pool>` or `worker.<id>.jobs`.
        subject: String,
        /// The request (context pointer possibly redacted).
        request: Box<v1::JobRequest>,
        /// `trace_id` to carry.
        trace_id: String,
        /// The submitted packet's `identity`, for the dispatch packet's envelope.
        identity: Option<Box<v1::IdentityBinding>>,
    },
    /// Publish a JobResult on `sys.job.result` (DENIED, TIMEOUT, CANCELLED, failures the
    /// scheduler decides, and outcomes copied to idempotent followers).
    PublishResult {
        /// The result.
        result: Box<v1::JobResult>,
        /// `trace_id` to carry.
        trace_id: String,
    },
    /// Publish a dead letter on `sys.job.dlq`.
    DeadLetter {
        /// The last result of the job.
        result: Box<v1::JobResult>,
        /// `trace_id` to carry.
        trace_id: String,
    },
    /// Forward a cancel to the workers (`sys.job.cancel`).
    ForwardCancel {
        /// The cancel request.
        cancel: Box<v1::JobCancel>,
        /// `trace_id` to carry.
        trace_id: String,
    },
    /// Publish a SystemAlert on `sys.alert`.
    Alert {
        /// The alert.
        alert: Box<v1::SystemAlert>,
    },
    /// Persist the record of a job (it changed).
    Persist {
        /// The job.
        job_id: String,
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
    },
}
