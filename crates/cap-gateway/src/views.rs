//! The JSON shapes of the API (field names and shapes of cordum-sdk 0.1.0's models:
//! `JobDetail`, `JobSummary`, `SafetyDecision`, `ApprovalItem`, `DLQEntry`), built from
//! the scheduler's [`JobRecord`]. The CLI reads them too (over the gateway or straight
//! from the store), so both show the same thing.

use cap_proto::{ErrorCode, JobState, v1};
use cap_scheduler::core::{Hold, JobRecord, Millis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds
/// (`2026-11-30T15:04:05.123Z`).
pub fn rfc3339(ms: Millis) -> String {
    let secs = ms / 1000;
    let milli = ms % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// A job in a list (cordum `JobSummary`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job id.
    pub id: String,
    /// Its state (`PENDING`, `SCHEDULED`, `DISPATCHED`, `RUNNING`, `SUCCEEDED`, ...).
    pub state: String,
    /// Its topic.
    pub topic: String,
    /// Its tenant.
    pub tenant: String,
    /// When its state last changed.
    pub updated_at: String,
    /// When it was submitted.
    #[serde(default)]
    pub created_at: String,
    /// Why a SCHEDULED job waits: `approval`, `worker`, `safety`, `retry`, `recheck`,
    /// `idempotency` (cap-rs extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

/// A safety or human decision (cordum `SafetyDecision`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SafetyDecision {
    /// The matched policy rule.
    pub rule_id: String,
    /// `ALLOW`, `DENY`, `REQUIRE_APPROVAL`, `THROTTLE`, `ALLOW_WITH_CONSTRAINTS`, ...; a
    /// human's `APPROVED` / `REJECTED`.
    pub action: String,
    /// Why.
    pub reason: String,
    /// When.
    pub evaluated_at: String,
}

/// One state change of a job (cap-rs extension of `JobDetail`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When.
    pub at: String,
    /// The state entered.
    pub state: String,
}

/// Everything about one job (cordum `JobDetail`, plus cap-rs fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    /// The job id.
    pub id: String,
    /// Its state.
    pub state: String,
    /// Its topic.
    pub topic: String,
    /// Its tenant.
    pub tenant: String,
    /// When its state last changed.
    pub updated_at: String,
    /// Trace id of its submission.
    pub trace_id: String,
    /// Where its input lives.
    pub context_ptr: Option<String>,
    /// Where its output lives, once it has one.
    pub result_ptr: Option<String>,
    /// Its output, inline (a JSON object; other JSON values as `{"value": …}`, other
    /// bytes as `{"text": …}`), when it succeeded and the output is still stored.
    pub result: Option<serde_json::Value>,
    /// The capability it asked for.
    pub capability: String,
    /// Its risk tags.
    pub risk_tags: Vec<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its adapter.
    pub adapter_id: String,
    /// Its priority (1 interactive, 2 batch, 3 critical).
    pub priority: i32,
    /// When it was submitted.
    pub created_at: String,
    /// When a worker first started it.
    pub started_at: Option<String>,
    /// When it ended.
    pub completed_at: Option<String>,
    /// Why it failed (error code and message), when it did not succeed.
    pub error: Option<String>,
    /// Dispatches after the first.
    pub retry_count: u32,
    /// Safety and approval decisions, oldest first.
    pub decisions: Vec<SafetyDecision>,
    /// Dispatches so far (cap-rs).
    pub attempts: u32,
    /// The worker that reported on it (cap-rs).
    pub worker_id: String,
    /// Why a SCHEDULED job waits (cap-rs; see [`JobSummary::waiting_for`]).
    pub waiting_for: Option<String>,
    /// Every state change with its time (cap-rs).
    pub history: Vec<HistoryEntry>,
}

/// A job held for a human (cordum `ApprovalItem`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalItem {
    /// The job.
    pub job: JobSummary,
    /// `PENDING` while held; `APPROVED` / `REJECTED` once decided.
    pub decision: String,
    /// The rule that asked for approval.
    pub policy_rule_id: Option<String>,
    /// Why.
    pub policy_reason: Option<String>,
    /// Always true here.
    pub approval_required: bool,
    /// When the kernel asked for approval.
    pub requested_at: String,
}

/// A dead letter (cordum `DLQEntry`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DlqEntry {
    /// The job.
    pub job_id: String,
    /// Its topic.
    pub topic: String,
    /// Its tenant.
    pub tenant: String,
    /// Why it failed.
    pub error: String,
    /// When it failed.
    pub failed_at: String,
    /// Dispatches after the first.
    pub retry_count: u32,
    /// Its final state.
    pub original_state: String,
}

/// One page of a list (`{items, next_cursor}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Why a SCHEDULED job waits, in one word.
pub fn waiting_for(record: &JobRecord) -> Option<String> {
    if record.state.is_terminal() {
        return None;
    }
    record.hold.as_ref().map(|h| {
        match h {
            Hold::Safety { .. } => "safety",
            Hold::Approval { .. } => "approval",
            Hold::Recheck { .. } => "recheck",
            Hold::Worker { .. } => "worker",
            Hold::Retry { .. } => "retry",
            Hold::Follow { .. } => "idempotency",
        }
        .to_owned()
    })
}

/// The summary of a record.
pub fn summary(record: &JobRecord) -> JobSummary {
    JobSummary {
        id: record.id().to_owned(),
        state: record.state.to_string(),
        topic: record.request.topic.clone(),
        tenant: record.tenant().to_owned(),
        updated_at: rfc3339(record.since),
        created_at: rfc3339(record.created()),
        waiting_for: waiting_for(record),
    }
}

/// The decisions of a record.
pub fn decisions(record: &JobRecord) -> Vec<SafetyDecision> {
    record
        .decisions
        .iter()
        .map(|d| SafetyDecision {
            rule_id: d.rule_id.clone(),
            action: d.action.clone(),
            reason: d.reason.clone(),
            evaluated_at: rfc3339(d.at),
        })
        .collect()
}

/// The error of a job that did not succeed: `CODE: message`, or the message alone.
pub fn error_of(record: &JobRecord) -> Option<String> {
    let r = record.result.as_ref()?;
    if r.status == v1::JobStatus::Succeeded as i32 {
        return None;
    }
    let code = ErrorCode::of_result(r);
    let message = r.error_message.trim();
    Some(match (code == ErrorCode::UNSPECIFIED, message.is_empty()) {
        (true, true) => record.state.to_string(),
        (true, false) => message.to_owned(),
        (false, true) => code.to_string(),
        (false, false) => format!("{code}: {message}"),
    })
}

/// An output as an inline result: a JSON object as is, another JSON value as
/// `{"value": …}`, anything else as `{"text": …}`.
pub fn inline_result(bytes: &[u8]) -> serde_json::Value {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(v) => serde_json::json!({ "value": v }),
        Err(_) => serde_json::json!({ "text": String::from_utf8_lossy(bytes) }),
    }
}

/// The detail of a record; `result` is its output read from the blob store, if any.
pub fn detail(record: &JobRecord, result: Option<serde_json::Value>) -> JobDetail {
    let req = &record.request;
    let meta = req.meta.clone().unwrap_or_default();
    let started = record
        .history
        .iter()
        .find(|(_, s)| s == "RUNNING")
        .map(|(at, _)| rfc3339(*at));
    let result_ptr = record
        .result
        .as_ref()
        .map(|r| r.result_ptr.clone())
        .filter(|p| !p.is_empty());
    let mut labels = meta.labels.clone();
    labels.extend(req.labels.clone());
    JobDetail {
        id: record.id().to_owned(),
        state: record.state.to_string(),
        topic: req.topic.clone(),
        tenant: record.tenant().to_owned(),
        updated_at: rfc3339(record.since),
        trace_id: record.trace_id.clone(),
        context_ptr: Some(req.context_ptr.clone()).filter(|p| !p.is_empty()),
        result_ptr,
        result,
        capability: meta.capability,
        risk_tags: meta.risk_tags,
        labels,
        adapter_id: req.adapter_id.clone(),
        priority: req.priority,
        created_at: rfc3339(record.created()),
        started_at: started,
        completed_at: record.state.is_terminal().then(|| rfc3339(record.since)),
        error: error_of(record),
        retry_count: record.attempts.saturating_sub(1),
        decisions: decisions(record),
        attempts: record.attempts,
        worker_id: record.worker_id.clone(),
        waiting_for: waiting_for(record),
        history: record
            .history
            .iter()
            .map(|(at, s)| HistoryEntry {
                at: rfc3339(*at),
                state: s.clone(),
            })
            .collect(),
    }
}

/// The approval item of a held record (`None` when it is not held for approval).
pub fn approval(record: &JobRecord) -> Option<ApprovalItem> {
    if !matches!(record.hold, Some(Hold::Approval { .. })) || record.state.is_terminal() {
        return None;
    }
    let asked = record
        .decisions
        .iter()
        .rev()
        .find(|d| d.action == "REQUIRE_APPROVAL");
    Some(ApprovalItem {
        job: summary(record),
        decision: "PENDING".into(),
        policy_rule_id: asked.map(|d| d.rule_id.clone()).filter(|r| !r.is_empty()),
        policy_reason: asked.map(|d| d.reason.clone()).filter(|r| !r.is_empty()),
        approval_required: true,
        requested_at: rfc3339(asked.map(|d| d.at).unwrap_or(record.since)),
    })
}

/// The dead letter of a record (`None` unless it FAILED, or FAILED_FATAL).
pub fn dead_letter(record: &JobRecord) -> Option<DlqEntry> {
    if !matches!(record.state, JobState::Failed | JobState::FailedFatal) {
        return None;
    }
    Some(DlqEntry {
        job_id: record.id().to_owned(),
        topic: record.request.topic.clone(),
        tenant: record.tenant().to_owned(),
        error: error_of(record).unwrap_or_default(),
        failed_at: rfc3339(record.since),
        retry_count: record.attempts.saturating_sub(1),
        original_state: record.state.to_string(),
    })
}

/// A list cursor: the last `(created, job id)` of a page, as `"<created>:<job id>"`.
pub fn cursor_of(record: &JobRecord) -> String {
    format!("{}:{}", record.created(), record.id())
}

/// Reads a cursor made by [`cursor_of`].
pub fn parse_cursor(text: &str) -> Option<(Millis, String)> {
    let (at, id) = text.split_once(':')?;
    Some((at.parse().ok()?, id.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_050_245_007), "2026-11-30T14:50:45.007Z");
    }

    #[test]
    fn results_are_objects_inline() {
        assert_eq!(inline_result(br#"{"a":1}"#), serde_json::json!({"a": 1}));
        assert_eq!(inline_result(b"[1]"), serde_json::json!({"value": [1]}));
        assert_eq!(
            inline_result(b"\xffhi"),
            serde_json::json!({"text": "\u{fffd}hi"})
        );
    }

    #[test]
    fn cursors_round_trip() {
        let r = JobRecord::new(
            v1::JobRequest {
                job_id: "a:b".into(),
                ..Default::default()
            },
            String::new(),
            String::new(),
            42,
        );
        assert_eq!(parse_cursor(&cursor_of(&r)), Some((42, "a:b".into())));
        assert_eq!(parse_cursor("x:y"), None);
        assert_eq!(parse_cursor("nocolon"), None);
    }
}
