//! The worker trust-handshake packets (`WorkerHandshakeChallengeRequest`, `…Challenge`,
//! `…Authenticate`, `…Result`): the structural rules the reference peer
//! (cap-sdk-python 2.17.0, `validate_worker_trust_packet`) applies before any
//! cryptography, plus our bounds on every identifier.
//!
//! - every identifier the handshake binds is present (not blank);
//! - the payload's trace id is the envelope's, and the worker in a request or
//!   authenticate is the envelope's sender;
//! - version 1, purpose ISSUE or RENEW, proof algorithm ECDSA P-256 SHA-256, nonces of
//!   exactly [`NONCE_LEN`] bytes;
//! - a challenge is issued before it expires and lives at most [`MAX_LIFETIME_MICROS`];
//! - requests, challenges, authenticates and results are signed; requests and
//!   challenges carry no session token, an ISSUE authenticate none either, a RENEW one
//!   a valid token; an accepted result carries a valid token and a later
//!   `token_expires_at`, a rejection a reason and neither;
//! - the capability handshake inside an authenticate is the challenged worker's, role
//!   WORKER, the challenge's SDK version, versions exactly `[1]`, capability keys
//!   `[a-z][a-z0-9_.-]{0,63}` all enabled, ready topics non-blank and distinct.
//!
//! Unknown fields (refused at any depth) need the bytes: [`super::received`].

use super::{Checker, MAX_ID_LEN};
use crate::v1::{self, bus_packet::Payload};
use prost_types::Timestamp;

/// Size of the client and server nonces, in bytes.
pub const NONCE_LEN: usize = 32;
/// Longest lifetime of a challenge (`expires_at - issued_at`), in microseconds: one minute.
pub const MAX_LIFETIME_MICROS: i64 = 60_000_000;
/// Longest session token, in characters.
pub const MAX_SESSION_TOKEN_LEN: usize = 16 * 1024;
/// The trust handshake's protocol version.
pub const HANDSHAKE_VERSION: i32 = 1;

const PURPOSE_ISSUE: i32 = v1::WorkerHandshakePurpose::Issue as i32;
const PURPOSE_RENEW: i32 = v1::WorkerHandshakePurpose::Renew as i32;
const P256: i32 = v1::WorkerHandshakeProofAlgorithm::EcdsaP256Sha256 as i32;
const ROLE_WORKER: i32 = v1::ComponentRole::Worker as i32;

/// Whether the packet carries one of the four worker trust payloads.
pub fn is_trust_payload(p: &v1::BusPacket) -> bool {
    matches!(
        p.payload,
        Some(
            Payload::WorkerHandshakeChallengeRequest(_)
                | Payload::WorkerHandshakeChallenge(_)
                | Payload::WorkerHandshakeAuthenticate(_)
                | Payload::WorkerHandshakeResult(_)
        )
    )
}

/// Whether a session token is acceptable: 1 to [`MAX_SESSION_TOKEN_LEN`] printable,
/// non-space ASCII characters.
pub fn is_valid_session_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_SESSION_TOKEN_LEN
        && token.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Blank as the peer judges it (empty, or only whitespace as Python's `str.isspace`,
/// which also counts the separators U+001C-U+001F).
fn is_blank(s: &str) -> bool {
    s.chars()
        .all(|ch| ch.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&ch))
}

/// A timestamp as microseconds since the epoch (nanos truncated, as the peer's
/// `ToDatetime` does); `None` when it is outside the range the peer converts. An absent
/// timestamp is the epoch, as a proto3 reader sees it.
fn micros(ts: Option<&Timestamp>) -> Option<i64> {
    let ts = ts.copied().unwrap_or_default();
    if !super::TIMESTAMP_SECONDS.contains(&ts.seconds) || !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    Some(ts.seconds * 1_000_000 + i64::from(ts.nanos / 1000))
}

fn is_capability_key(key: &str) -> bool {
    let b = key.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(c))
}

/// Checks a packet carrying a trust payload (the caller has checked the envelope's
/// common rules).
pub(super) fn check(c: &mut Checker<'_>, p: &v1::BusPacket) {
    let mut buf = String::new();
    match &p.payload {
        Some(Payload::WorkerHandshakeChallengeRequest(m)) => check_request(
            &mut c.nested("worker_handshake_challenge_request", &mut buf),
            p,
            m,
        ),
        Some(Payload::WorkerHandshakeChallenge(m)) => {
            let mut w = c.nested("worker_handshake_challenge", &mut buf);
            check_challenge(&mut w, p, m);
            if !p.auth_token.is_empty() {
                c.push("auth_token", "a challenge must not carry a session token");
            }
            if p.signature.is_empty() {
                c.push("signature", "a challenge must be signed");
            }
        }
        Some(Payload::WorkerHandshakeAuthenticate(m)) => {
            check_authenticate(c, p, m);
        }
        Some(Payload::WorkerHandshakeResult(m)) => check_result(c, p, m),
        _ => {}
    }
}

fn require_all(c: &mut Checker<'_>, fields: &[(&str, &str)]) {
    for (name, value) in fields {
        if is_blank(value) {
            c.push(name, "must not be empty");
        }
        c.max_len(name, value, MAX_ID_LEN);
    }
}

fn check_version_purpose_algorithm(c: &mut Checker<'_>, version: i32, purpose: i32, alg: i32) {
    if version != HANDSHAKE_VERSION {
        c.push("protocol_version", "must equal 1");
    }
    if purpose != PURPOSE_ISSUE && purpose != PURPOSE_RENEW {
        c.push("purpose", "must be ISSUE or RENEW");
    }
    if alg != P256 {
        c.push("proof_algorithm", "must be ECDSA_P256_SHA256");
    }
}

fn check_nonce(c: &mut Checker<'_>, field: &str, nonce: &[u8]) {
    if nonce.len() != NONCE_LEN {
        c.push(field, format!("must be {NONCE_LEN} bytes"));
    }
}

fn check_request(c: &mut Checker<'_>, p: &v1::BusPacket, m: &v1::WorkerHandshakeChallengeRequest) {
    require_all(
        c,
        &[
            ("request_id", &m.request_id),
            ("trace_id", &m.trace_id),
            ("worker_id", &m.worker_id),
            ("proof_key_id", &m.proof_key_id),
            ("audience", &m.audience),
            ("sdk_version", &m.sdk_version),
        ],
    );
    if m.trace_id != p.trace_id {
        c.push("trace_id", "must equal the packet's trace_id");
    }
    if m.worker_id != p.sender_id {
        c.push("worker_id", "must equal the packet's sender_id");
    }
    check_version_purpose_algorithm(c, m.protocol_version, m.purpose, m.proof_algorithm);
    check_nonce(c, "client_nonce", &m.client_nonce);
    if !p.auth_token.is_empty() {
        c.push(
            "auth_token",
            "a challenge request must not carry a session token",
        );
    }
    if p.signature.is_empty() {
        c.push("signature", "a challenge request must be signed");
    }
}

/// The rules of a challenge, at the top level or inside an authenticate or result.
fn check_challenge(c: &mut Checker<'_>, p: &v1::BusPacket, m: &v1::WorkerHandshakeChallenge) {
    require_all(
        c,
        &[
            ("request_id", &m.request_id),
            ("challenge_id", &m.challenge_id),
            ("trace_id", &m.trace_id),
            ("worker_id", &m.worker_id),
            ("agent_id", &m.agent_id),
            ("tenant_id", &m.tenant_id),
            ("proof_key_id", &m.proof_key_id),
            ("server_key_id", &m.server_key_id),
            ("audience", &m.audience),
            ("sdk_version", &m.sdk_version),
        ],
    );
    if m.trace_id != p.trace_id {
        c.push("trace_id", "must equal the packet's trace_id");
    }
    check_version_purpose_algorithm(c, m.protocol_version, m.purpose, m.proof_algorithm);
    check_nonce(c, "client_nonce", &m.client_nonce);
    check_nonce(c, "server_nonce", &m.server_nonce);
    let issued = micros(m.issued_at.as_ref());
    let expires = micros(m.expires_at.as_ref());
    if issued.is_none() {
        c.push("issued_at", "is not a valid timestamp");
    }
    if expires.is_none() {
        c.push("expires_at", "is not a valid timestamp");
    }
    if let (Some(i), Some(e)) = (issued, expires)
        && (e <= i || e - i > MAX_LIFETIME_MICROS)
    {
        c.push(
            "expires_at",
            "must be after issued_at, at most one minute later",
        );
    }
}

fn check_authenticate(c: &mut Checker<'_>, p: &v1::BusPacket, m: &v1::WorkerHandshakeAuthenticate) {
    let mut buf = String::new();
    let mut inner = String::new();
    let mut a = c.nested("worker_handshake_authenticate", &mut buf);
    let purpose = match &m.challenge {
        Some(ch) => {
            check_challenge(&mut a.nested("challenge", &mut inner), p, ch);
            if ch.worker_id != p.sender_id {
                a.push("challenge.worker_id", "must equal the packet's sender_id");
            }
            ch.purpose
        }
        None => {
            a.push("challenge", "must not be nil");
            0
        }
    };
    match &m.capability_handshake {
        Some(hs) => {
            let mut h = a.nested("capability_handshake", &mut inner);
            super::check_handshake(&mut h, hs);
            if let Some(ch) = &m.challenge {
                check_capability(&mut h, hs, ch);
            }
        }
        None => a.push("capability_handshake", "must not be nil"),
    }
    if p.signature.is_empty() {
        c.push("signature", "an authenticate must be signed");
    }
    if purpose == PURPOSE_ISSUE && !p.auth_token.is_empty() {
        c.push(
            "auth_token",
            "an ISSUE authenticate must not carry a session token",
        );
    }
    if purpose == PURPOSE_RENEW && !is_valid_session_token(&p.auth_token) {
        c.push(
            "auth_token",
            "a RENEW authenticate requires the current session token",
        );
    }
}

/// The capability handshake inside an authenticate, bound to its challenge.
fn check_capability(c: &mut Checker<'_>, hs: &v1::Handshake, ch: &v1::WorkerHandshakeChallenge) {
    if hs.component_id != ch.worker_id {
        c.push("component_id", "must equal the challenge's worker_id");
    }
    if hs.role != ROLE_WORKER {
        c.push("role", "must be WORKER");
    }
    if hs.sdk_version != ch.sdk_version {
        c.push("sdk_version", "must equal the challenge's sdk_version");
    }
    if hs.supported_versions != [HANDSHAKE_VERSION] {
        c.push("supported_versions", "must be exactly [1]");
    }
    if hs
        .capabilities
        .iter()
        .any(|(k, enabled)| !enabled || !is_capability_key(k))
    {
        c.push(
            "capabilities",
            "keys must match [a-z][a-z0-9_.-]{0,63} and be enabled",
        );
    }
    let mut seen = std::collections::HashSet::new();
    if hs
        .ready_topics
        .iter()
        .any(|t| is_blank(t) || !seen.insert(t.as_str()))
    {
        c.push("ready_topics", "must be non-blank and distinct");
    }
}

fn check_result(c: &mut Checker<'_>, p: &v1::BusPacket, m: &v1::WorkerHandshakeResult) {
    let mut buf = String::new();
    let mut inner = String::new();
    let mut r = c.nested("worker_handshake_result", &mut buf);
    match &m.challenge {
        Some(ch) => check_challenge(&mut r.nested("challenge", &mut inner), p, ch),
        None => r.push("challenge", "must not be nil"),
    }
    let issued = micros(m.issued_at.as_ref());
    if issued.is_none() {
        r.push("issued_at", "is not a valid timestamp");
    }
    if m.accepted {
        match m.token_expires_at.as_ref() {
            None => r.push("token_expires_at", "an accepted result must carry it"),
            Some(ts) => match (micros(Some(ts)), issued) {
                (None, _) => r.push("token_expires_at", "is not a valid timestamp"),
                (Some(e), Some(i)) if e <= i => {
                    r.push("token_expires_at", "must be after issued_at")
                }
                _ => {}
            },
        }
        if m.rejection_reason != 0 {
            r.push("rejection_reason", "must be UNSPECIFIED when accepted");
        }
    } else {
        if !(1..=9).contains(&m.rejection_reason) {
            r.push("rejection_reason", "a rejection must give a reason");
        }
        if m.token_expires_at.is_some() {
            r.push("token_expires_at", "a rejection must not carry it");
        }
    }
    if p.signature.is_empty() {
        c.push("signature", "a result must be signed");
    }
    if m.accepted && !is_valid_session_token(&p.auth_token) {
        c.push(
            "auth_token",
            "an accepted result must carry the session token",
        );
    }
    if !m.accepted && !p.auth_token.is_empty() {
        c.push("auth_token", "a rejection must not carry a session token");
    }
}
