//! The validation rules of cap-sdk-python 2.17.0's receive path, case by case, with the
//! field paths we report. (`tests/interop.rs` checks the same rules against the live peer
//! on random packets.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_proto::v1::{self, bus_packet::Payload};
use cap_proto::{ErrorCode, Timestamp, packet, validate};
use common::fixup::{self, Fixer};

fn fields(p: &v1::BusPacket) -> Vec<String> {
    match validate::packet(p) {
        Ok(()) => Vec::new(),
        Err(v) => v.iter().map(|x| x.field.clone()).collect(),
    }
}

fn pkt(payload: impl Into<Payload>) -> v1::BusPacket {
    v1::BusPacket::new("trace-1", "sender-1", fixup::NOW, payload)
}

fn valid(payload: impl Into<Payload>) -> v1::BusPacket {
    let mut p = pkt(payload);
    fixup::make_valid(&mut Fixer::all(), &mut p);
    assert_eq!(fields(&p), Vec::<String>::new(), "{p:?}");
    p
}

#[test]
fn envelope_needs_version_one_trace_sender_and_created_at() {
    let mut p = valid(v1::JobCancel::default());
    p.protocol_version = 2;
    p.created_at = None;
    assert_eq!(fields(&p), ["created_at", "protocol_version"]);
    assert_eq!(
        validate::packet(&p).unwrap_err().code(),
        ErrorCode::PROTOCOL_VERSION_MISMATCH
    );
    p.protocol_version = 1;
    p.created_at = Some(Timestamp {
        seconds: 253_402_300_800,
        nanos: 0,
    });
    assert_eq!(fields(&p), ["created_at"]);
}

#[test]
fn results_heartbeats_and_handshakes_are_the_senders_own() {
    let mut p = valid(v1::JobResult::default());
    if let Some(Payload::JobResult(r)) = &mut p.payload {
        r.worker_id = "worker-9".into();
    }
    assert_eq!(fields(&p), ["job_result.worker_id"]);
    let mut p = valid(v1::Heartbeat::default());
    if let Some(Payload::Heartbeat(h)) = &mut p.payload {
        h.worker_id = "worker-9".into();
    }
    assert_eq!(fields(&p), ["heartbeat.worker_id"]);
    let mut p = valid(v1::Handshake::default());
    if let Some(Payload::Handshake(h)) = &mut p.payload {
        h.component_id = "worker-9".into();
    }
    assert_eq!(fields(&p), ["handshake.component_id"]);
}

#[test]
fn alerts_are_legacy_or_fully_structured() {
    let legacy = v1::SystemAlert {
        level: "ERROR".into(),
        message: "m".into(),
        component: "c".into(),
        code: "X".into(),
        ..Default::default()
    };
    valid(legacy.clone());
    let mut no_code = pkt(v1::SystemAlert {
        code: String::new(),
        ..legacy.clone()
    });
    assert_eq!(fields(&no_code), ["alert.code"]);
    // Structured: any of severity, error_code_enum, source_component.
    no_code.payload = Some(Payload::Alert(v1::SystemAlert {
        message: "m".into(),
        source_component: "sender-1".into(),
        ..Default::default()
    }));
    assert_eq!(
        fields(&no_code),
        ["alert.severity", "alert.error_code_enum"]
    );
    let structured = v1::SystemAlert {
        message: "m".into(),
        severity: v1::AlertSeverity::Warning as i32,
        error_code_enum: ErrorCode::JOB_WORKER_UNAVAILABLE.as_i32(),
        source_component: "someone-else".into(),
        ..Default::default()
    };
    assert_eq!(fields(&pkt(structured.clone())), ["alert.source_component"]);
    let unknown_code = v1::SystemAlert {
        source_component: "sender-1".into(),
        error_code_enum: 4242,
        ..structured.clone()
    };
    assert_eq!(fields(&pkt(unknown_code)), ["alert.error_code_enum"]);
    let empty_message = v1::SystemAlert {
        message: String::new(),
        source_component: "sender-1".into(),
        ..structured
    };
    assert_eq!(fields(&pkt(empty_message)), ["alert.message"]);
}

#[test]
fn progress_and_cancel_rules() {
    let p = pkt(v1::JobProgress {
        job_id: "j".into(),
        percent: 101,
        status: 12,
        ..Default::default()
    });
    assert_eq!(fields(&p), ["job_progress.percent", "job_progress.status"]);
    let p = pkt(v1::JobCancel {
        job_id: "j".into(),
        ..Default::default()
    });
    assert_eq!(fields(&p), ["job_cancel.requested_by"]);
}

#[test]
fn new_fields_are_bounded() {
    let mut p = valid(v1::JobResult::default());
    if let Some(Payload::JobResult(r)) = &mut p.payload {
        r.identity = Some(v1::IdentityBinding {
            tenant_id: "t".repeat(600),
            ..Default::default()
        });
        r.artifact_refs = vec![v1::ResourceRef {
            sha256: vec![0; 65],
            expires_at: Some(Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            ..Default::default()
        }];
    }
    p.signature_metadata = Some(v1::SignatureMetadata {
        message_id: vec![0; 2000],
        ..Default::default()
    });
    assert_eq!(
        fields(&p),
        [
            "signature_metadata.message_id",
            "job_result.identity.tenant_id",
            "job_result.artifact_refs[0].sha256",
            "job_result.artifact_refs[0].expires_at",
        ]
    );
}

fn challenge() -> v1::WorkerHandshakeChallenge {
    let mut c = v1::WorkerHandshakeChallenge::default();
    let mut p = pkt(c.clone());
    fixup::make_valid(&mut Fixer::all(), &mut p);
    if let Some(Payload::WorkerHandshakeChallenge(x)) = p.payload {
        c = x;
    }
    c
}

#[test]
fn trust_challenges_are_bound_to_the_envelope() {
    let mut p = valid(challenge());
    p.trace_id = "other-trace".into();
    p.auth_token = "tok".into();
    assert_eq!(
        fields(&p),
        ["worker_handshake_challenge.trace_id", "auth_token"]
    );
    let mut p = valid(challenge());
    if let Some(Payload::WorkerHandshakeChallenge(c)) = &mut p.payload {
        c.server_nonce = vec![1; 31];
        c.purpose = 0;
        c.agent_id = " \u{1f}".into();
        c.expires_at = Some(Timestamp {
            seconds: fixup::NOW.seconds + 61,
            nanos: 0,
        });
    }
    p.signature = Default::default();
    assert_eq!(
        fields(&p),
        [
            "worker_handshake_challenge.agent_id",
            "worker_handshake_challenge.purpose",
            "worker_handshake_challenge.server_nonce",
            "worker_handshake_challenge.expires_at",
            "signature",
        ]
    );
}

#[test]
fn trust_lifetime_is_compared_in_microseconds_like_the_peer() {
    let mut p = valid(challenge());
    if let Some(Payload::WorkerHandshakeChallenge(c)) = &mut p.payload {
        c.issued_at = Some(Timestamp {
            seconds: 100,
            nanos: 0,
        });
        // 60 s and 999 ns: the peer truncates to microseconds, so exactly one minute.
        c.expires_at = Some(Timestamp {
            seconds: 160,
            nanos: 999,
        });
    }
    assert_eq!(fields(&p), Vec::<String>::new());
    if let Some(Payload::WorkerHandshakeChallenge(c)) = &mut p.payload {
        c.expires_at = Some(Timestamp {
            seconds: 160,
            nanos: 1000,
        });
    }
    assert_eq!(fields(&p), ["worker_handshake_challenge.expires_at"]);
}

#[test]
fn authenticate_binds_worker_capabilities_and_session() {
    let hs = v1::Handshake {
        component_id: "sender-1".into(),
        role: 3,
        supported_versions: vec![1],
        sdk_version: challenge().sdk_version,
        capabilities: [("progress".to_string(), true)].into(),
        ready_topics: vec!["job.echo".into()],
        ..Default::default()
    };
    let mut ch = challenge();
    ch.worker_id = "sender-1".into();
    ch.purpose = v1::WorkerHandshakePurpose::Renew as i32;
    let auth = v1::WorkerHandshakeAuthenticate {
        challenge: Some(ch),
        capability_handshake: Some(hs),
    };
    let mut p = pkt(auth);
    p.signature = vec![1].into();
    p.auth_token = "session".into();
    assert_eq!(fields(&p), Vec::<String>::new());
    p.auth_token = "has space".into();
    if let Some(Payload::WorkerHandshakeAuthenticate(a)) = &mut p.payload {
        let h = a.capability_handshake.as_mut().unwrap();
        h.supported_versions = vec![1, 2];
        h.capabilities.insert("Bad".into(), true);
        h.ready_topics.push("job.echo".into());
        h.role = 2;
    }
    assert_eq!(
        fields(&p),
        [
            "worker_handshake_authenticate.capability_handshake.role",
            "worker_handshake_authenticate.capability_handshake.supported_versions",
            "worker_handshake_authenticate.capability_handshake.capabilities",
            "worker_handshake_authenticate.capability_handshake.ready_topics",
            "auth_token",
        ]
    );
}

#[test]
fn results_accept_with_a_token_or_reject_with_a_reason() {
    let accepted = v1::WorkerHandshakeResult {
        challenge: Some(challenge()),
        accepted: true,
        issued_at: Some(fixup::NOW),
        token_expires_at: Some(Timestamp {
            seconds: fixup::NOW.seconds + 600,
            nanos: 0,
        }),
        ..Default::default()
    };
    let mut p = pkt(accepted.clone());
    p.signature = vec![1].into();
    p.auth_token = "session".into();
    assert_eq!(fields(&p), Vec::<String>::new());
    p.auth_token.clear();
    assert_eq!(fields(&p), ["auth_token"]);
    let rejected = v1::WorkerHandshakeResult {
        accepted: false,
        ..accepted
    };
    let mut p = pkt(rejected);
    p.signature = vec![1].into();
    assert_eq!(
        fields(&p),
        [
            "worker_handshake_result.rejection_reason",
            "worker_handshake_result.token_expires_at",
        ]
    );
}

#[test]
fn received_refuses_unknown_fields_in_trust_packets_only() {
    let p = valid(challenge());
    let raw = packet::encode(&p);
    validate::received(&raw, &p).unwrap();
    let mut unknown = raw.clone();
    unknown.extend_from_slice(&[0xb8, 0x01, 0x01]); // field 23, varint 1
    let v = validate::received(&unknown, &p).unwrap_err();
    assert_eq!(
        v.iter().map(|x| x.field.as_str()).collect::<Vec<_>>(),
        ["unknown_fields"]
    );
    assert_eq!(v.code(), ErrorCode::PROTOCOL_MALFORMED_PACKET);
    // Other payloads may carry fields from newer peers.
    let p = valid(v1::JobCancel::default());
    let mut raw = packet::encode(&p);
    raw.extend_from_slice(&[0xb8, 0x01, 0x01]);
    validate::received(&raw, &p).unwrap();
}
