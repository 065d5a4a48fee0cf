//! Protocol validation: every rule the reference peer checks, plus the version, bounds on
//! every string, map and repeated field, well-formed pointers and subjects, and
//! `handshake.component_id == sender_id`. All violations are returned, each with its
//! field path.
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
pub fn packet(p: &v1::BusPacket) -> Result<(), Violations> {
    run(|c| check_packet(c, p))
}

fn check_packet(c: &mut Checker<'_>, p: &v1::BusPacket) {
    c.id("trace_id", &p.trace_id, true);
    c.id("sender_id", &p.sender_id, true);
    match &p.created_at {
        None => c.push("created_at", "must not be nil"),
        Some(ts) if !(0..1_000_000_000).contains(&ts.nanos) => {
            c.push("created_at", "nanos out of range")
        }
        Some(_) => {}
    }
    if p.protocol_version <= 0 {
        c.push_code(
            "protocol_version",
            "must be > 0",
            ErrorCode::PROTOCOL_VERSION_MISMATCH,
        );
    } else if p.protocol_version != PROTOCOL_VERSION {
        c.push_code(
            "protocol_version",
            format!(
                "unsupported version {} (supported: {PROTOCOL_VERSION})",
                p.protocol_version
            ),
            ErrorCode::PROTOCOL_VERSION_MISMATCH,
        );
    }
    if p.signature.len() > MAX_SIGNATURE_LEN {
        c.push(
            "signature",
            format!("longer than {MAX_SIGNATURE_LEN} bytes"),
        );
    }
    c.text("auth_token", &p.auth_token);
    let mut buf = String::new();
    match &p.payload {
        None => c.push("payload", "must not be nil"),
        Some(Payload::JobRequest(m)) => {
            check_job_request(&mut c.nested("job_request", &mut buf), m)
        }
        Some(Payload::JobResult(m)) => check_job_result(&mut c.nested("job_result", &mut buf), m),
        Some(Payload::Heartbeat(m)) => check_heartbeat(&mut c.nested("heartbeat", &mut buf), m),
        Some(Payload::Alert(m)) => check_alert(&mut c.nested("alert", &mut buf), m),
        Some(Payload::JobProgress(m)) => {
            check_job_progress(&mut c.nested("job_progress", &mut buf), m)
        }
        Some(Payload::JobCancel(m)) => check_job_cancel(&mut c.nested("job_cancel", &mut buf), m),
        Some(Payload::Handshake(m)) => {
            let mut h = c.nested("handshake", &mut buf);
            check_handshake(&mut h, m);
            if !m.component_id.is_empty() && m.component_id != p.sender_id {
                h.push("component_id", "must equal the packet's sender_id");
            }
        }
        Some(Payload::WorkerHandshakeChallengeRequest(m)) => {
            let mut w = c.nested("worker_handshake_challenge_request", &mut buf);
            w.id("request_id", &m.request_id, true);
            w.id("worker_id", &m.worker_id, true);
            w.id("trace_id", &m.trace_id, false);
            w.id("proof_key_id", &m.proof_key_id, false);
            w.id("audience", &m.audience, false);
            w.id("sdk_version", &m.sdk_version, false);
            w.enum_range("proof_algorithm", m.proof_algorithm, 1);
            w.enum_range("purpose", m.purpose, 2);
            if m.client_nonce.len() > 1024 {
                w.push("client_nonce", "longer than 1024 bytes");
            }
        }
        Some(Payload::WorkerHandshakeChallenge(m)) => {
            check_challenge(&mut c.nested("worker_handshake_challenge", &mut buf), m)
        }
        Some(Payload::WorkerHandshakeAuthenticate(m)) => {
            let mut w = c.nested("worker_handshake_authenticate", &mut buf);
            let mut inner = String::new();
            match &m.challenge {
                Some(ch) => check_challenge(&mut w.nested("challenge", &mut inner), ch),
                None => w.push("challenge", "must not be nil"),
            }
            if let Some(hs) = &m.capability_handshake {
                check_handshake(&mut w.nested("capability_handshake", &mut inner), hs);
            }
        }
        Some(Payload::WorkerHandshakeResult(m)) => {
            let mut w = c.nested("worker_handshake_result", &mut buf);
            let mut inner = String::new();
            if let Some(ch) = &m.challenge {
                check_challenge(&mut w.nested("challenge", &mut inner), ch);
            }
            w.enum_range("rejection_reason", m.rejection_reason, 9);
        }
    }
}

fn check_challenge(c: &mut Checker<'_>, m: &v1::WorkerHandshakeChallenge) {
    c.id("request_id", &m.request_id, false);
    c.id("challenge_id", &m.challenge_id, true);
    c.id("worker_id", &m.worker_id, true);
    for (name, v) in [
        ("trace_id", &m.trace_id),
        ("agent_id", &m.agent_id),
        ("tenant_id", &m.tenant_id),
        ("proof_key_id", &m.proof_key_id),
        ("server_key_id", &m.server_key_id),
        ("audience", &m.audience),
        ("sdk_version", &m.sdk_version),
    ] {
        c.id(name, v, false);
    }
    c.enum_range("proof_algorithm", m.proof_algorithm, 1);
    c.enum_range("purpose", m.purpose, 2);
    if m.client_nonce.len() > 1024 || m.server_nonce.len() > 1024 {
        c.push("server_nonce", "nonces must be at most 1024 bytes");
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
    }
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
}

/// Validates a cancel request.
pub fn job_cancel(m: &v1::JobCancel) -> Result<(), Violations> {
    run(|c| check_job_cancel(c, m))
}

fn check_job_cancel(c: &mut Checker<'_>, m: &v1::JobCancel) {
    c.id("job_id", &m.job_id, true);
    c.text("reason", &m.reason);
    c.id("requested_by", &m.requested_by, false);
}

/// Validates a system alert.
pub fn alert(m: &v1::SystemAlert) -> Result<(), Violations> {
    run(|c| check_alert(c, m))
}

fn check_alert(c: &mut Checker<'_>, m: &v1::SystemAlert) {
    c.id("level", &m.level, false);
    c.text("message", &m.message);
    c.id("component", &m.component, false);
    c.id("code", &m.code, false);
    c.enum_range("severity", m.severity, 4);
    c.id("source_component", &m.source_component, false);
    c.map("details", &m.details, String::len);
    c.id("trace_id", &m.trace_id, false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Timestamp;

    fn fields(v: &Violations) -> Vec<&str> {
        v.iter().map(|x| x.field.as_str()).collect()
    }

    fn good_request() -> v1::JobRequest {
        v1::JobRequest {
            job_id: "j1".into(),
            topic: "job.echo".into(),
            context_ptr: "redis://ctx:j1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_good_packet_passes() {
        let p = v1::BusPacket::new("t", "s", Timestamp::default(), good_request());
        assert_eq!(packet(&p), Ok(()));
    }

    #[test]
    fn envelope_rules() {
        let mut p = v1::BusPacket::default();
        let v = packet(&p).unwrap_err();
        assert_eq!(
            fields(&v),
            [
                "trace_id",
                "sender_id",
                "created_at",
                "protocol_version",
                "payload"
            ]
        );
        assert_eq!(v.code(), ErrorCode::PROTOCOL_VERSION_MISMATCH);
        p = v1::BusPacket::new("t", "s", Timestamp::default(), good_request());
        p.protocol_version = 2;
        let v = packet(&p).unwrap_err();
        assert_eq!(fields(&v), ["protocol_version"]);
        assert_eq!(v.code(), ErrorCode::PROTOCOL_VERSION_MISMATCH);
        p.protocol_version = 1;
        p.trace_id = "x".repeat(MAX_ID_LEN + 1);
        let v = packet(&p).unwrap_err();
        assert_eq!(fields(&v), ["trace_id"]);
        assert_eq!(v.code(), ErrorCode::PROTOCOL_MALFORMED_PACKET);
    }

    #[test]
    fn job_request_rules_with_paths() {
        let mut r = good_request();
        r.context_ptr = "redis://u:p@h/0".into();
        r.topic = "job.*".into();
        r.budget = Some(v1::Budget {
            max_input_tokens: -1,
            max_total_tokens: MAX_BUDGET + 1,
            deadline_ms: -5,
            ..Default::default()
        });
        r.meta = Some(v1::JobMetadata {
            risk_tags: vec!["x".into(); MAX_ENTRIES + 1],
            actor_type: 7,
            ..Default::default()
        });
        r.labels = (0..=MAX_ENTRIES)
            .map(|i| (i.to_string(), String::new()))
            .collect();
        let p = v1::BusPacket::new("t", "s", Timestamp::default(), r);
        let v = packet(&p).unwrap_err();
        assert_eq!(
            fields(&v),
            [
                "job_request.topic",
                "job_request.context_ptr",
                "job_request.budget.max_input_tokens",
                "job_request.budget.max_total_tokens",
                "job_request.budget.deadline_ms",
                "job_request.labels",
                "job_request.meta.actor_type",
                "job_request.meta.risk_tags",
            ]
        );
    }

    #[test]
    fn job_result_rules() {
        let r = v1::JobResult {
            execution_ms: -1,
            status: 42,
            ..Default::default()
        };
        let v = job_result(&r).unwrap_err();
        assert_eq!(
            fields(&v),
            ["job_id", "status", "worker_id", "execution_ms"]
        );
        let r = v1::JobResult {
            job_id: "j".into(),
            status: 5,
            worker_id: "w".into(),
            artifact_ptrs: vec!["redis://a".into(), "nope".into()],
            ..Default::default()
        };
        assert_eq!(fields(&job_result(&r).unwrap_err()), ["artifact_ptrs[1]"]);
    }

    #[test]
    fn handshake_rules() {
        let hs = v1::Handshake {
            component_id: "w1".into(),
            role: 3,
            supported_versions: vec![1],
            ready_topics: vec!["job.echo".into(), "bad topic".into()],
            ..Default::default()
        };
        let p = v1::BusPacket::new("t", "other", Timestamp::default(), hs.clone());
        let v = packet(&p).unwrap_err();
        assert_eq!(
            fields(&v),
            ["handshake.ready_topics[1]", "handshake.component_id"]
        );
        let empty = v1::Handshake::default();
        let v = handshake(&empty).unwrap_err();
        assert_eq!(fields(&v), ["component_id", "role", "supported_versions"]);
    }

    #[test]
    fn heartbeat_progress_cancel_alert_rules() {
        let hb = v1::Heartbeat {
            cpu_load: 101.0,
            memory_load: f32::NAN,
            active_jobs: -1,
            ..Default::default()
        };
        assert_eq!(
            fields(&heartbeat(&hb).unwrap_err()),
            ["worker_id", "cpu_load", "memory_load", "active_jobs"]
        );
        let pr = v1::JobProgress {
            percent: 101,
            status: 99,
            ..Default::default()
        };
        assert_eq!(
            fields(&job_progress(&pr).unwrap_err()),
            ["job_id", "percent", "status"]
        );
        assert_eq!(
            fields(&job_cancel(&v1::JobCancel::default()).unwrap_err()),
            ["job_id"]
        );
        let al = v1::SystemAlert {
            severity: 5,
            ..Default::default()
        };
        assert_eq!(fields(&alert(&al).unwrap_err()), ["severity"]);
    }
}
