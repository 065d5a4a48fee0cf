//! Unit tests of the validation rules (the peer parity cases are in `tests/validate.rs`).
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
        ["job_id", "requested_by"]
    );
    let al = v1::SystemAlert {
        severity: 5,
        ..Default::default()
    };
    assert_eq!(
        fields(&alert(&al).unwrap_err()),
        ["message", "severity", "error_code_enum"]
    );
    let legacy = v1::SystemAlert {
        message: "m".into(),
        ..Default::default()
    };
    assert_eq!(
        fields(&alert(&legacy).unwrap_err()),
        ["level", "component", "code"]
    );
}
