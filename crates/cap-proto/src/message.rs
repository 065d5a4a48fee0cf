//! [`CapMessage`]: what every CAP protobuf message type implements.

use crate::v1;

/// A message of the CAP v1 schema: a prost message that knows its protobuf name, so
/// it can be canonically encoded, converted to JSON and described by a JSON Schema.
pub trait CapMessage:
    prost::Message
    + crate::canonical::CanonicalEncode
    + Default
    + Clone
    + PartialEq
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// The fully qualified protobuf name, e.g. `cordum.agent.v1.BusPacket`.
    const FULL_NAME: &'static str;
}

macro_rules! cap_messages {
    ($($ty:ident),* $(,)?) => {
        $(
            impl CapMessage for v1::$ty {
                const FULL_NAME: &'static str = concat!("cordum.agent.v1.", stringify!($ty));
            }
        )*
        /// The full names of every CAP v1 message.
        pub const ALL_MESSAGES: &[&str] = &[$(concat!("cordum.agent.v1.", stringify!($ty))),*];
    };
}

cap_messages!(
    BusPacket,
    JobRequest,
    JobResult,
    JobProgress,
    JobCancel,
    ContextHints,
    Budget,
    JobMetadata,
    Compensation,
    Heartbeat,
    SystemAlert,
    Handshake,
    WorkerHandshakeChallengeRequest,
    WorkerHandshakeChallenge,
    WorkerHandshakeAuthenticate,
    WorkerHandshakeResult,
    PolicyCheckRequest,
    PolicyCheckResponse,
    PolicyConstraints,
    BudgetConstraints,
    SandboxProfile,
    ToolchainConstraints,
    DiffConstraints,
    PolicyRemediation,
    ListSnapshotsRequest,
    ListSnapshotsResponse,
    SignatureMetadata,
    IdentityBinding,
    DispatchIdentity,
    ResourceRef,
    RuleScope,
    AuditMetadata,
    Rule,
    TraceStep,
    Decision,
    BundleMetadata,
    BundleVersion,
    Bundle,
    JobEvaluationContext,
    EdgeEvaluationContext,
    PolicyEvaluateRequest,
    PolicyEvaluateResponse,
);

/// Finds a message name by its short or full name (`JobRequest` or
/// `cordum.agent.v1.JobRequest`), ignoring ASCII case.
pub fn resolve_message_name(name: &str) -> Option<&'static str> {
    ALL_MESSAGES.iter().copied().find(|full| {
        full.eq_ignore_ascii_case(name)
            || full
                .rsplit('.')
                .next()
                .is_some_and(|short| short.eq_ignore_ascii_case(name))
    })
}
