//! Protocol validation: every rule the reference peer (cap-sdk-python 2.17.0,
//! `validate_bus_packet` and its worker-trust packet rules) checks, plus bounds on every
//! string, map and repeated field and well-formed pointers, subjects and timestamps. All
//! violations are returned, each with its field path.
//!
//! The envelope rules of the peer: `protocol_version` 1, `trace_id`, `sender_id` and
//! `created_at` present, one payload; a result's `worker_id`, a heartbeat's `worker_id`,
//! a handshake's `component_id` and a structured alert's `source_component` equal the
//! packet's `sender_id`; the four worker-trust payloads are checked structurally
//! (see [`trust`]). One rule needs the received bytes: a trust packet carries no unknown
//! fields at any depth; [`received`] checks it.
//!
//! ```
//! use cap_proto::{validate, v1};
//! let bad = v1::JobRequest { priority: 9, step_index: -1, ..Default::default() };
//! let v = validate::job_request(&bad).unwrap_err();
//! let fields: Vec<_> = v.iter().map(|x| x.field.as_str()).collect();
//! assert_eq!(fields, ["job_id", "topic", "priority", "step_index"]);
//! ```

use crate::pointer::Pointer;
use crate::subject;
use crate::v1::{self, bus_packet::Payload};
use crate::{ErrorCode, PROTOCOL_VERSION};
use std::collections::BTreeMap;
use std::fmt;

pub mod trust;

/// Most entries in any map or repeated field (the reference peer's bound).
pub const MAX_ENTRIES: usize = 1000;
/// Largest budget value (10^10, the reference peer's bound).
pub const MAX_BUDGET: i64 = 10_000_000_000;
/// Longest identifier (job, trace, sender, worker ids and similar), in bytes.
pub const MAX_ID_LEN: usize = 512;
/// Longest free-text field (messages, reasons), in bytes.
pub const MAX_TEXT_LEN: usize = 64 * 1024;
/// Longest map key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// Longest signature accepted, in bytes (a DER P-256 signature is at most 72).
pub const MAX_SIGNATURE_LEN: usize = 512;

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Field path, e.g. `job_request.budget.deadline_ms`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// The CAP error code a peer should see for it.
    pub code: ErrorCode,
}

/// All violations found in a message (never empty when returned as an error).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// The violations, in field order.
    pub fn iter(&self) -> std::slice::Iter<'_, Violation> {
        self.0.iter()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The code to report: a version mismatch when there is one, else malformed packet.
    pub fn code(&self) -> ErrorCode {
        if self
            .0
            .iter()
            .any(|v| v.code == ErrorCode::PROTOCOL_VERSION_MISMATCH)
        {
            ErrorCode::PROTOCOL_VERSION_MISMATCH
        } else {
            ErrorCode::PROTOCOL_MALFORMED_PACKET
        }
    }

    fn into_result(self) -> Result<(), Violations> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

impl<'a> IntoIterator for &'a Violations {
    type Item = &'a Violation;
    type IntoIter = std::slice::Iter<'a, Violation>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Collects violations under a path prefix.
struct Checker<'a> {
    prefix: &'a str,
    out: &'a mut Vec<Violation>,
}

impl Checker<'_> {
    fn push(&mut self, field: &str, message: impl Into<String>) {
        self.push_code(field, message, ErrorCode::PROTOCOL_MALFORMED_PACKET);
    }

    fn push_code(&mut self, field: &str, message: impl Into<String>, code: ErrorCode) {
        let field = if self.prefix.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.prefix)
        };
        self.out.push(Violation {
            field,
            message: message.into(),
            code,
        });
    }

    fn nested<'b>(&'b mut self, name: &str, prefix_buf: &'b mut String) -> Checker<'b> {
        prefix_buf.clear();
        if !self.prefix.is_empty() {
            prefix_buf.push_str(self.prefix);
            prefix_buf.push('.');
        }
        prefix_buf.push_str(name);
        Checker {
            prefix: prefix_buf,
            out: self.out,
        }
    }

    fn required(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.push(field, "must not be empty");
        }
    }

    fn max_len(&mut self, field: &str, value: &str, max: usize) {
        if value.len() > max {
            self.push(field, format!("longer than {max} bytes"));
        }
    }

    fn id(&mut self, field: &str, value: &str, required: bool) {
        if required {
            self.required(field, value);
        }
        self.max_len(field, value, MAX_ID_LEN);
    }

    fn text(&mut self, field: &str, value: &str) {
        self.max_len(field, value, MAX_TEXT_LEN);
    }

    fn list(&mut self, field: &str, values: &[String], max_item: usize) {
        if values.len() > MAX_ENTRIES {
            self.push(field, format!("exceeds max size ({MAX_ENTRIES})"));
        }
        if values.iter().any(|v| v.len() > max_item) {
            self.push(field, format!("has an entry longer than {max_item} bytes"));
        }
    }

    fn map<V>(&mut self, field: &str, map: &BTreeMap<String, V>, value_len: impl Fn(&V) -> usize) {
        if map.len() > MAX_ENTRIES {
            self.push(field, format!("exceeds max size ({MAX_ENTRIES})"));
        }
        if map.keys().any(|k| k.len() > MAX_KEY_LEN) {
            self.push(field, format!("has a key longer than {MAX_KEY_LEN} bytes"));
        }
        if map.values().any(|v| value_len(v) > MAX_TEXT_LEN) {
            self.push(
                field,
                format!("has a value longer than {MAX_TEXT_LEN} bytes"),
            );
        }
    }

    fn pointer(&mut self, field: &str, value: &str) {
        if !value.is_empty()
            && let Err(e) = Pointer::check(value)
        {
            self.push(field, e.to_string());
        }
    }

    fn pointers(&mut self, field: &str, values: &[String]) {
        self.list(field, values, crate::pointer::MAX_POINTER_LEN);
        for (i, p) in values.iter().enumerate() {
            if let Err(e) = Pointer::check(p) {
                self.push(&format!("{field}[{i}]"), e.to_string());
            }
        }
    }

    fn topic(&mut self, field: &str, value: &str, required: bool) {
        if value.is_empty() {
            if required {
                self.push(field, "must not be empty");
            }
            return;
        }
        if let Err(e) = subject::check_subject(value) {
            self.push(field, e.to_string());
        }
    }

    fn enum_range(&mut self, field: &str, value: i32, max: i32) {
        if !(0..=max).contains(&value) {
            self.push(field, format!("invalid value {value}"));
        }
    }

    /// A `Timestamp` the peer can convert: seconds within years 1-9999, nanos within a
    /// second.
    fn timestamp(&mut self, field: &str, ts: &prost_types::Timestamp) {
        if !TIMESTAMP_SECONDS.contains(&ts.seconds) || !(0..1_000_000_000).contains(&ts.nanos) {
            self.push(field, "is not a valid timestamp");
        }
    }

    fn percent(&mut self, field: &str, value: f32) {
        if !(0.0..=100.0).contains(&value) {
            self.push(field, "must be a percentage between 0 and 100");
        }
    }
}

fn run(f: impl FnOnce(&mut Checker<'_>)) -> Result<(), Violations> {
    let mut out = Vec::new();
    f(&mut Checker {
        prefix: "",
        out: &mut out,
    });
    Violations(out).into_result()
}

/// Validates a whole packet, its envelope and its payload.
///
/// Every rule that needs only the decoded packet; [`received`] adds the one that needs
/// the bytes (no unknown fields in a worker-trust packet).
pub fn packet(p: &v1::BusPacket) -> Result<(), Violations> {
    run(|c| check_packet(c, p))
}

/// Validates a packet as received: [`packet`], and for the four worker-trust payloads
/// that `raw` (the bytes `p` was decoded from) carries no field the schema does not
/// know, at any depth (the reference peer refuses those before any cryptography).
pub fn received(raw: &[u8], p: &v1::BusPacket) -> Result<(), Violations> {
    run(|c| {
        check_packet(c, p);
        if trust::is_trust_payload(p) && has_unknown_fields(raw, p) {
            c.push(
                "unknown_fields",
                "a worker trust packet must carry no unknown fields",
            );
        }
    })
}

/// Whether `raw` holds fields, at any depth, that decoding into `p` dropped: the
/// canonical form of the bytes (which keeps unknown fields) differs from the canonical
/// form of the decoded struct (which has none). Bytes that do not re-encode count as
/// carrying unknown fields.
fn has_unknown_fields(raw: &[u8], p: &v1::BusPacket) -> bool {
    match crate::canonical::canonicalize::<v1::BusPacket>(raw) {
        Ok(kept) => kept != crate::canonical::to_bytes(p),
        Err(_) => true,
    }
}

/// Smallest and largest `Timestamp.seconds` (0001-01-01 and 9999-12-31T23:59:59Z).
pub const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

fn check_packet(c: &mut Checker<'_>, p: &v1::BusPacket) {
    c.id("trace_id", &p.trace_id, true);
    c.id("sender_id", &p.sender_id, true);
    match &p.created_at {
        None => c.push("created_at", "must not be nil"),
        Some(ts) => c.timestamp("created_at", ts),
    }
    if p.protocol_version != PROTOCOL_VERSION {
        c.push_code(
            "protocol_version",
            format!("must equal {PROTOCOL_VERSION} (got {})", p.protocol_version),
            ErrorCode::PROTOCOL_VERSION_MISMATCH,
        );
    }
    if p.signature.len() > MAX_SIGNATURE_LEN {
        c.push(
            "signature",
            format!("longer than {MAX_SIGNATURE_LEN} bytes"),
        );
    }
    let mut buf = String::new();
    if let Some(m) = &p.signature_metadata {
        check_signature_metadata(&mut c.nested("signature_metadata", &mut buf), m);
    }
    if let Some(m) = &p.identity {
        check_identity(&mut c.nested("identity", &mut buf), m);
    }
    c.text("auth_token", &p.auth_token);
    let sender = p.sender_id.as_str();
    match &p.payload {
        None => c.push("payload", "must not be nil"),
        Some(Payload::JobRequest(m)) => {
            check_job_request(&mut c.nested("job_request", &mut buf), m)
        }
        Some(Payload::JobResult(m)) => {
            let mut r = c.nested("job_result", &mut buf);
            check_job_result(&mut r, m);
            if m.worker_id != sender {
                r.push("worker_id", "must equal the packet's sender_id");
            }
        }
        Some(Payload::Heartbeat(m)) => {
            let mut h = c.nested("heartbeat", &mut buf);
            check_heartbeat(&mut h, m);
            if m.worker_id != sender {
                h.push("worker_id", "must equal the packet's sender_id");
            }
        }
        Some(Payload::Alert(m)) => {
            let mut a = c.nested("alert", &mut buf);
            check_alert(&mut a, m);
            if is_structured(m) && m.source_component != sender {
                a.push("source_component", "must equal the packet's sender_id");
            }
        }
        Some(Payload::JobProgress(m)) => {
            check_job_progress(&mut c.nested("job_progress", &mut buf), m)
        }
        Some(Payload::JobCancel(m)) => check_job_cancel(&mut c.nested("job_cancel", &mut buf), m),
        Some(Payload::Handshake(m)) => {
            let mut h = c.nested("handshake", &mut buf);
            check_handshake(&mut h, m);
            if m.component_id != sender {
                h.push("component_id", "must equal the packet's sender_id");
            }
        }
        Some(
            Payload::WorkerHandshakeChallengeRequest(_)
            | Payload::WorkerHandshakeChallenge(_)
            | Payload::WorkerHandshakeAuthenticate(_)
            | Payload::WorkerHandshakeResult(_),
        ) => trust::check(c, p),
    }
}

fn check_signature_metadata(c: &mut Checker<'_>, m: &v1::SignatureMetadata) {
    c.id("profile_version", &m.profile_version, false);
    c.id("algorithm", &m.algorithm, false);
    if m.message_id.len() > MAX_KEY_LEN {
        c.push("message_id", format!("longer than {MAX_KEY_LEN} bytes"));
    }
    c.id("audience", &m.audience, false);
    if let Some(ts) = &m.expires_at {
        c.timestamp("expires_at", ts);
    }
    c.id("key_id", &m.key_id, false);
}

fn check_identity(c: &mut Checker<'_>, m: &v1::IdentityBinding) {
    c.id("tenant_id", &m.tenant_id, false);
    c.id("principal_id", &m.principal_id, false);
    c.id("actor_id", &m.actor_id, false);
    c.id("delegation_id", &m.delegation_id, false);
}

fn check_dispatch(c: &mut Checker<'_>, m: &v1::DispatchIdentity) {
    c.id("dispatch_id", &m.dispatch_id, false);
    c.id("assigned_worker_id", &m.assigned_worker_id, false);
}

/// Longest `sha256` of a [`v1::ResourceRef`] accepted, in bytes (a digest is 32).
pub const MAX_DIGEST_LEN: usize = 64;

fn check_resource_ref(c: &mut Checker<'_>, m: &v1::ResourceRef) {
    c.id("resolver_id", &m.resolver_id, false);
    c.text("uri", &m.uri);
    if m.sha256.len() > MAX_DIGEST_LEN {
        c.push("sha256", format!("longer than {MAX_DIGEST_LEN} bytes"));
    }
    c.id("media_type", &m.media_type, false);
    if let Some(ts) = &m.expires_at {
        c.timestamp("expires_at", ts);
    }
    c.id("purpose", &m.purpose, false);
}

/// The identity, dispatch and resource references shared by the job payloads.
fn check_refs(
    c: &mut Checker<'_>,
    identity: Option<&v1::IdentityBinding>,
    dispatch: Option<&v1::DispatchIdentity>,
    (name, resource): (&str, Option<&v1::ResourceRef>),
) {
    let mut buf = String::new();
    if let Some(m) = identity {
        check_identity(&mut c.nested("identity", &mut buf), m);
    }
    if let Some(m) = dispatch {
        check_dispatch(&mut c.nested("dispatch", &mut buf), m);
    }
    if let Some(r) = resource {
        check_resource_ref(&mut c.nested(name, &mut buf), r);
    }
}

fn check_artifact_refs(c: &mut Checker<'_>, refs: &[v1::ResourceRef]) {
    if refs.len() > MAX_ENTRIES {
        c.push("artifact_refs", format!("exceeds max size ({MAX_ENTRIES})"));
    }
    let mut buf = String::new();
    for (i, r) in refs.iter().enumerate() {
        check_resource_ref(&mut c.nested(&format!("artifact_refs[{i}]"), &mut buf), r);
    }
}

/// Validates a job request (the reference peer's rules plus bounds and pointer checks).
pub fn job_request(m: &v1::JobRequest) -> Result<(), Violations> {
    run(|c| check_job_request(c, m))
}

fn check_budget(c: &mut Checker<'_>, b: &v1::Budget) {
    for (name, v) in [
        ("max_input_tokens", b.max_input_tokens),
        ("max_output_tokens", b.max_output_tokens),
        ("max_total_tokens", b.max_total_tokens),
        ("deadline_ms", b.deadline_ms),
    ] {
        if v < 0 {
            c.push(name, "must not be negative");
        } else if v > MAX_BUDGET && name != "deadline_ms" {
            c.push(name, format!("exceeds max ({MAX_BUDGET})"));
        }
    }
}

fn check_meta(c: &mut Checker<'_>, m: &v1::JobMetadata) {
    c.id("tenant_id", &m.tenant_id, false);
    c.id("actor_id", &m.actor_id, false);
    c.enum_range("actor_type", m.actor_type, 2);
    c.id("idempotency_key", &m.idempotency_key, false);
    c.id("capability", &m.capability, false);
    c.list("risk_tags", &m.risk_tags, MAX_KEY_LEN);
    c.list("requires", &m.requires, MAX_KEY_LEN);
    c.id("pack_id", &m.pack_id, false);
    c.map("labels", &m.labels, String::len);
}

fn check_hints(c: &mut Checker<'_>, h: &v1::ContextHints) {
    if h.max_input_tokens < 0 {
        c.push("max_input_tokens", "must not be negative");
    }
    c.list("tags", &h.tags, MAX_KEY_LEN);
}

fn check_job_request(c: &mut Checker<'_>, m: &v1::JobRequest) {
    let mut buf = String::new();
    c.id("job_id", &m.job_id, true);
    c.topic("topic", &m.topic, true);
    c.enum_range("priority", m.priority, 3);
    if m.step_index < 0 {
        c.push("step_index", "must not be negative");
    }
    c.pointer("context_ptr", &m.context_ptr);
    c.id("adapter_id", &m.adapter_id, false);
    c.map("env", &m.env, String::len);
    c.id("parent_job_id", &m.parent_job_id, false);
    c.id("workflow_id", &m.workflow_id, false);
    c.id("memory_id", &m.memory_id, false);
    if let Some(h) = &m.context_hints {
        check_hints(&mut c.nested("context_hints", &mut buf), h);
    }
    if let Some(b) = &m.budget {
        check_budget(&mut c.nested("budget", &mut buf), b);
    }
    c.id("tenant_id", &m.tenant_id, false);
    c.id("principal_id", &m.principal_id, false);
    c.map("labels", &m.labels, String::len);
    if let Some(meta) = &m.meta {
        check_meta(&mut c.nested("meta", &mut buf), meta);
    }
    if let Some(comp) = &m.compensation {
        let mut k = c.nested("compensation", &mut buf);
        let mut inner = String::new();
        k.topic("topic", &comp.topic, true);
        k.pointer("context_ptr", &comp.context_ptr);
        k.enum_range("priority", comp.priority, 3);
        k.id("adapter_id", &comp.adapter_id, false);
        k.map("env", &comp.env, String::len);
        k.id("memory_id", &comp.memory_id, false);
        k.id("tenant_id", &comp.tenant_id, false);
        k.id("principal_id", &comp.principal_id, false);
        k.map("labels", &comp.labels, String::len);
        if let Some(h) = &comp.context_hints {
            check_hints(&mut k.nested("context_hints", &mut inner), h);
        }
        if let Some(b) = &comp.budget {
            check_budget(&mut k.nested("budget", &mut inner), b);
        }
        if let Some(meta) = &comp.meta {
            check_meta(&mut k.nested("meta", &mut inner), meta);
        }
        check_refs(
            &mut k,
            comp.identity.as_ref(),
            comp.dispatch.as_ref(),
            ("context_ref", comp.context_ref.as_ref()),
        );
    }
    check_refs(
        c,
        m.identity.as_ref(),
        m.dispatch.as_ref(),
        ("context_ref", m.context_ref.as_ref()),
    );
}

/// Validates a job result.
pub fn job_result(m: &v1::JobResult) -> Result<(), Violations> {
    run(|c| check_job_result(c, m))
}

fn check_job_result(c: &mut Checker<'_>, m: &v1::JobResult) {
    c.id("job_id", &m.job_id, true);
    if m.status == 0 {
        c.push("status", "must not be UNSPECIFIED");
    } else if crate::state::JobState::from_i32(m.status).is_none() {
        c.push("status", format!("invalid value {}", m.status));
    }
    c.pointer("result_ptr", &m.result_ptr);
    c.id("worker_id", &m.worker_id, true);
    if m.execution_ms < 0 {
        c.push("execution_ms", "must not be negative");
    }
    c.id("error_code", &m.error_code, false);
    c.text("error_message", &m.error_message);
    c.pointers("artifact_ptrs", &m.artifact_ptrs);
    check_refs(
        c,
        m.identity.as_ref(),
        m.dispatch.as_ref(),
        ("result_ref", m.result_ref.as_ref()),
    );
    check_artifact_refs(c, &m.artifact_refs);
}

/// Validates a heartbeat.
pub fn heartbeat(m: &v1::Heartbeat) -> Result<(), Violations> {
    run(|c| check_heartbeat(c, m))
}

fn check_heartbeat(c: &mut Checker<'_>, m: &v1::Heartbeat) {
    c.id("worker_id", &m.worker_id, true);
    c.id("region", &m.region, false);
    c.id("type", &m.r#type, false);
    c.percent("cpu_load", m.cpu_load);
    c.percent("gpu_utilization", m.gpu_utilization);
    c.percent("memory_load", m.memory_load);
    if m.active_jobs < 0 {
        c.push("active_jobs", "must not be negative");
    }
    if m.max_parallel_jobs < 0 {
        c.push("max_parallel_jobs", "must not be negative");
    }
    if !(0..=100).contains(&m.progress_pct) {
        c.push("progress_pct", "must be between 0 and 100");
    }
    c.list("capabilities", &m.capabilities, MAX_KEY_LEN);
    c.id("pool", &m.pool, false);
    c.map("labels", &m.labels, String::len);
    c.text("last_memo", &m.last_memo);
    c.text("auth_token", &m.auth_token);
    c.id("agent_name", &m.agent_name, false);
}

/// Validates a capability handshake on its own (inside a packet, [`packet`] also checks
/// that `component_id` equals the sender).
pub fn handshake(m: &v1::Handshake) -> Result<(), Violations> {
    run(|c| check_handshake(c, m))
}

fn check_handshake(c: &mut Checker<'_>, m: &v1::Handshake) {
    c.id("component_id", &m.component_id, true);
    if m.role == 0 {
        c.push("role", "must not be UNSPECIFIED");
    } else {
        c.enum_range("role", m.role, 5);
    }
    if m.supported_versions.is_empty() {
        c.push("supported_versions", "must not be empty");
    }
    if m.supported_versions.len() > MAX_ENTRIES {
        c.push(
            "supported_versions",
            format!("exceeds max size ({MAX_ENTRIES})"),
        );
    }
    if m.supported_versions.iter().any(|v| *v <= 0) {
        c.push("supported_versions", "versions must be > 0");
    }
    c.map("capabilities", &m.capabilities, |_| 0);
    c.id("sdk_version", &m.sdk_version, false);
    c.list("ready_topics", &m.ready_topics, subject::MAX_SUBJECT_LEN);
    for (i, t) in m.ready_topics.iter().enumerate() {
        if let Err(e) = subject::check_pattern(t) {
            c.push(&format!("ready_topics[{i}]"), e.to_string());
        }
    }
    c.id("agent_name", &m.agent_name, false);
}

/// Validates a progress report.
pub fn job_progress(m: &v1::JobProgress) -> Result<(), Violations> {
    run(|c| check_job_progress(c, m))
}

fn check_job_progress(c: &mut Checker<'_>, m: &v1::JobProgress) {
    c.id("job_id", &m.job_id, true);
    c.id("step_id", &m.step_id, false);
    if !(0..=100).contains(&m.percent) {
        c.push("percent", "must be between 0 and 100");
    }
    c.text("message", &m.message);
    c.pointer("result_ptr", &m.result_ptr);
    c.pointers("artifact_ptrs", &m.artifact_ptrs);
    if m.status != 0 && crate::state::JobState::from_i32(m.status).is_none() {
        c.push("status", format!("invalid value {}", m.status));
    }
    check_refs(
        c,
        m.identity.as_ref(),
        m.dispatch.as_ref(),
        ("result_ref", m.result_ref.as_ref()),
    );
    check_artifact_refs(c, &m.artifact_refs);
}

/// Validates a cancel request.
pub fn job_cancel(m: &v1::JobCancel) -> Result<(), Violations> {
    run(|c| check_job_cancel(c, m))
}

fn check_job_cancel(c: &mut Checker<'_>, m: &v1::JobCancel) {
    c.id("job_id", &m.job_id, true);
    c.text("reason", &m.reason);
    c.id("requested_by", &m.requested_by, true);
    check_refs(c, m.identity.as_ref(), m.dispatch.as_ref(), ("", None));
}

/// Validates a system alert: the reference peer accepts a *legacy* alert (`message`,
/// `level`, `component` and `code` set) or a *structured* one (any of `severity`,
/// `error_code_enum`, `source_component` set: then `message`, a known severity, a known
/// error code, and inside a packet `source_component` equal to the sender).
pub fn alert(m: &v1::SystemAlert) -> Result<(), Violations> {
    run(|c| check_alert(c, m))
}

/// Whether an alert has the structured shape (the peer's test).
fn is_structured(m: &v1::SystemAlert) -> bool {
    m.severity != 0 || m.error_code_enum != 0 || !m.source_component.is_empty()
}

fn check_alert(c: &mut Checker<'_>, m: &v1::SystemAlert) {
    c.required("message", &m.message);
    c.text("message", &m.message);
    if is_structured(m) {
        if !(1..=4).contains(&m.severity) {
            c.push("severity", "must be specified");
        }
        let code = ErrorCode::from_i32(m.error_code_enum);
        if code == ErrorCode::UNSPECIFIED || !code.is_known() {
            c.push("error_code_enum", "must be a specified, known error code");
        }
    } else {
        c.required("level", &m.level);
        c.required("component", &m.component);
        c.required("code", &m.code);
    }
    c.id("level", &m.level, false);
    c.id("component", &m.component, false);
    c.id("code", &m.code, false);
    c.id("source_component", &m.source_component, false);
    c.map("details", &m.details, String::len);
    c.id("trace_id", &m.trace_id, false);
}

#[cfg(test)]
mod tests;
