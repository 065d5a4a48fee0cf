//! The workload shared by the criterion bench, `cap bench sign` and the peer comparison,
//! so every figure is measured on the same packet.

use cap_proto::{Timestamp, v1};

/// A typical job request packet: ids, topic, pointer, a few labels and env entries,
/// metadata and a budget (about 300 bytes on the wire).
pub fn typical_job_request() -> v1::BusPacket {
    let req = v1::JobRequest {
        job_id: "3f6c1a52-9a1e-4f7e-8f64-2b8f1f0a9c11".into(),
        topic: "job.code.review".into(),
        priority: 1,
        context_ptr: "redis://ctx:3f6c1a52-9a1e-4f7e-8f64-2b8f1f0a9c11".into(),
        env: [
            ("LANG".to_string(), "en".to_string()),
            ("MODE".to_string(), String::new()),
        ]
        .into(),
        tenant_id: "acme".into(),
        principal_id: "alice".into(),
        labels: [
            ("team".to_string(), "platform".to_string()),
            ("tier".to_string(), "gold".to_string()),
        ]
        .into(),
        budget: Some(v1::Budget {
            max_total_tokens: 100_000,
            deadline_ms: 30_000,
            ..Default::default()
        }),
        meta: Some(v1::JobMetadata {
            tenant_id: "acme".into(),
            actor_id: "alice".into(),
            actor_type: 1,
            capability: "code.review".into(),
            risk_tags: vec!["network".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    v1::BusPacket::new(
        "trace-7d1e9b2c",
        "client-1",
        Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_000_000,
        },
        req,
    )
}
