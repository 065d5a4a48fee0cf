//! Messages the scheduler builds: alerts, policy requests, compensation requests.

use super::job::JobRecord;
use cap_proto::{ErrorCode, v1};

/// A SystemAlert from the scheduler.
///
/// With an error code it has the structured shape (severity, code, `source_component` =
/// the scheduler's sender id); without one, the legacy shape (level, component and a
/// textual code), which is what receivers accept for a code-less notice.
pub fn alert(
    severity: v1::AlertSeverity,
    code: ErrorCode,
    source: &str,
    message: &str,
    trace_id: &str,
) -> Box<v1::SystemAlert> {
    let level = severity
        .as_str_name()
        .trim_start_matches("ALERT_SEVERITY_")
        .to_owned();
    let structured = code != ErrorCode::UNSPECIFIED;
    Box::new(v1::SystemAlert {
        code: if structured {
            code.to_string()
        } else {
            "NOTICE".into()
        },
        level,
        message: message.to_owned(),
        component: "scheduler".into(),
        severity: if structured { severity as i32 } else { 0 },
        error_code_enum: code.as_i32(),
        source_component: if structured {
            source.to_owned()
        } else {
            String::new()
        },
        trace_id: trace_id.to_owned(),
        ..Default::default()
    })
}

/// What the safety kernel is asked about a job.
pub fn policy_request(r: &v1::JobRequest) -> v1::PolicyCheckRequest {
    v1::PolicyCheckRequest {
        job_id: r.job_id.clone(),
        topic: r.topic.clone(),
        tenant: r.tenant_id.clone(),
        priority: r.priority,
        budget: r.budget,
        principal_id: r.principal_id.clone(),
        labels: r.labels.clone(),
        memory_id: r.memory_id.clone(),
        meta: r.meta.clone(),
        identity: r.identity.clone(),
        input_ref: r.context_ref.clone(),
        ..Default::default()
    }
}

/// The compensation job of a succeeded step, with its own id and idempotency key.
pub(crate) fn compensation_request(step: &JobRecord) -> Option<v1::JobRequest> {
    let c = step.request.compensation.as_ref()?;
    let mut meta = c.meta.clone().unwrap_or_default();
    meta.idempotency_key = format!("compensate:{}", step.id());
    Some(v1::JobRequest {
        job_id: format!("{}.compensate", step.id()),
        topic: c.topic.clone(),
        priority: c.priority,
        context_ptr: c.context_ptr.clone(),
        adapter_id: c.adapter_id.clone(),
        env: c.env.clone(),
        parent_job_id: step.request.parent_job_id.clone(),
        workflow_id: step.request.workflow_id.clone(),
        step_index: step.request.step_index,
        memory_id: c.memory_id.clone(),
        context_hints: c.context_hints.clone(),
        budget: c.budget,
        tenant_id: c.tenant_id.clone(),
        principal_id: c.principal_id.clone(),
        labels: c.labels.clone(),
        meta: Some(meta),
        compensation: None,
        identity: c.identity.clone().or_else(|| step.request.identity.clone()),
        // The scheduler assigns every dispatch itself.
        dispatch: None,
        context_ref: c.context_ref.clone(),
    })
}
