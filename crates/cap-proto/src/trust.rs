//! Structural rules of the worker trust handshake (cap-sdk-python 2.17.0's
//! `validate_worker_trust_packet`): what a challenge request, a challenge, an
//! authenticate and a result must look like before any signature is checked, the
//! capability declaration an authenticate carries, session tokens, identities and the
//! strict DER form of trust signatures.
//!
//! Like the rest of this crate it reads no clock: lifetimes are checked between the
//! packet's own timestamps; freshness against "now" is the caller's job.
//!
//! ```
//! use cap_proto::trust;
//! assert!(trust::is_canonical_text("worker-1"));
//! assert!(!trust::is_canonical_text("has space"));
//! assert!(trust::is_session_token("cap-ws.0123abcd"));
//! ```

use crate::v1::{self, BusPacket, bus_packet::Payload};
use prost_types::Timestamp;
use std::fmt;

/// The audience of the scheduler's trust service.
pub const AUDIENCE: &str = "cordum-scheduler";
/// The only trust handshake protocol version.
pub const PROTOCOL_VERSION: i32 = 1;
/// Client and server nonces are exactly this long.
pub const NONCE_SIZE: usize = 32;
/// Largest trust packet on the wire.
pub const MAX_PACKET_SIZE: usize = 64 * 1024;
/// Longest identity (worker, agent, tenant, key id).
pub const MAX_IDENTITY_LENGTH: usize = 256;
/// Longest session token.
pub const MAX_SESSION_TOKEN_SIZE: usize = 16 * 1024;
/// Largest difference between a packet's clock and ours, in seconds.
pub const MAX_SKEW_SECS: i64 = 60;
/// Longest challenge lifetime (`expires_at - issued_at`), in seconds.
pub const MAX_LIFETIME_SECS: i64 = 60;

/// `ECDSA_P256_SHA256`, the only proof algorithm.
pub const PROOF_ALGORITHM_P256: i32 = v1::WorkerHandshakeProofAlgorithm::EcdsaP256Sha256 as i32;
/// Purpose `ISSUE`: a new session.
pub const PURPOSE_ISSUE: i32 = v1::WorkerHandshakePurpose::Issue as i32;
/// Purpose `RENEW`: a new token for a live session.
pub const PURPOSE_RENEW: i32 = v1::WorkerHandshakePurpose::Renew as i32;

/// Which rule a trust packet breaks, coarse enough to pick a rejection reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ViolationKind {
    /// `protocol_version` (envelope or payload) is set but not 1.
    Version,
    /// A renewal without the current session token.
    SessionRequired,
    /// Anything else: a missing field, a wrong length, a broken binding.
    Structure,
}

/// The first rule a trust packet breaks: which kind, which field, and a fixed message
/// (never text from the packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustViolation {
    /// The kind.
    pub kind: ViolationKind,
    /// The field path.
    pub field: &'static str,
    /// What is wrong.
    pub message: &'static str,
}

impl fmt::Display for TrustViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for TrustViolation {}

fn fail<T>(field: &'static str, message: &'static str) -> Result<T, TrustViolation> {
    Err(TrustViolation {
        kind: ViolationKind::Structure,
        field,
        message,
    })
}

fn version<T>(field: &'static str) -> Result<T, TrustViolation> {
    Err(TrustViolation {
        kind: ViolationKind::Version,
        field,
        message: "unsupported version (only 1)",
    })
}

/// Printable ASCII without spaces (0x21-0x7e), 1 to [`MAX_IDENTITY_LENGTH`] bytes: the
/// form of every configured identity and key id.
pub fn is_canonical_text(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_IDENTITY_LENGTH && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Printable ASCII without spaces, 1 to [`MAX_SESSION_TOKEN_SIZE`] bytes.
pub fn is_session_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SESSION_TOKEN_SIZE
        && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// A capability key the handshake accepts: `^[a-z][a-z0-9_.-]{0,63}$`.
pub fn is_capability_key(k: &str) -> bool {
    let b = k.as_bytes();
    matches!(b.first(), Some(c) if c.is_ascii_lowercase())
        && b.len() <= 64
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(c))
}

/// Whether `sig` is an ECDSA signature in strict (canonical) DER: a SEQUENCE of two
/// positive INTEGERs with minimal lengths and no trailing bytes, each at most 33 bytes
/// (a P-256 scalar with its sign byte).
pub fn is_strict_der(sig: &[u8]) -> bool {
    fn integer(b: &[u8]) -> Option<&[u8]> {
        let (&tag, rest) = b.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let len = usize::from(len);
        if tag != 0x02 || len == 0 || len > 33 || rest.len() < len {
            return None;
        }
        let (value, after) = rest.split_at(len);
        // Negative, or a leading zero that is not needed for the sign.
        if value[0] & 0x80 != 0 || (len > 1 && value[0] == 0 && value[1] & 0x80 == 0) {
            return None;
        }
        // Zero is not a valid r or s.
        if value.iter().all(|&x| x == 0) {
            return None;
        }
        Some(after)
    }
    let Some((&0x30, rest)) = sig.split_first() else {
        return false;
    };
    let Some((&len, body)) = rest.split_first() else {
        return false;
    };
    // At most 2 × (2 + 33) = 70 bytes of content: always a one-byte length.
    if len & 0x80 != 0 || usize::from(len) != body.len() {
        return false;
    }
    integer(body)
        .and_then(integer)
        .is_some_and(|after| after.is_empty())
}

/// Whether a timestamp is within the range protobuf allows (years 1-9999, nanos in
/// range).
pub fn is_valid_timestamp(t: &Timestamp) -> bool {
    (-62_135_596_800..=253_402_300_799).contains(&t.seconds)
        && (0..1_000_000_000).contains(&t.nanos)
}

fn timestamp(t: Option<&Timestamp>, field: &'static str) -> Result<Timestamp, TrustViolation> {
    match t {
        Some(t) if is_valid_timestamp(t) => Ok(*t),
        _ => fail(field, "missing or invalid timestamp"),
    }
}

/// Nanoseconds since the epoch (saturating; for comparisons).
pub fn nanos_of(t: &Timestamp) -> i128 {
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// Validates a trust handshake packet: exactly one trust phase, the envelope, and the
/// phase's rules. Unknown fields are not visible here (a decoded message has lost
/// them); check them on the received bytes.
pub fn validate_packet(p: &BusPacket) -> Result<(), TrustViolation> {
    envelope(p)?;
    match &p.payload {
        Some(Payload::WorkerHandshakeChallengeRequest(r)) => request(p, r),
        Some(Payload::WorkerHandshakeChallenge(c)) => challenge(p, c, true),
        Some(Payload::WorkerHandshakeAuthenticate(a)) => authenticate(p, a),
        Some(Payload::WorkerHandshakeResult(r)) => result(p, r),
        _ => fail("payload", "must be exactly one worker trust phase"),
    }
}

fn envelope(p: &BusPacket) -> Result<(), TrustViolation> {
    if p.trace_id.is_empty() {
        return fail("trace_id", "must not be empty");
    }
    if p.sender_id.is_empty() {
        return fail("sender_id", "must not be empty");
    }
    if p.protocol_version == 0 {
        return fail("protocol_version", "must be set");
    }
    if p.protocol_version != PROTOCOL_VERSION {
        return version("protocol_version");
    }
    timestamp(p.created_at.as_ref(), "created_at").map(|_| ())
}

fn purpose_ok(purpose: i32) -> bool {
    purpose == PURPOSE_ISSUE || purpose == PURPOSE_RENEW
}

fn request(p: &BusPacket, r: &v1::WorkerHandshakeChallengeRequest) -> Result<(), TrustViolation> {
    let required = [
        &r.request_id,
        &r.trace_id,
        &r.worker_id,
        &r.proof_key_id,
        &r.audience,
        &r.sdk_version,
    ];
    if required.iter().any(|v| blank(v)) {
        return fail("challenge_request", "required field is empty");
    }
    if p.trace_id != r.trace_id || p.sender_id != r.worker_id {
        return fail(
            "challenge_request",
            "trace or worker does not match envelope",
        );
    }
    if r.protocol_version != PROTOCOL_VERSION && r.protocol_version != 0 {
        return version("challenge_request.protocol_version");
    }
    if r.protocol_version != PROTOCOL_VERSION || !purpose_ok(r.purpose) {
        return fail("challenge_request", "version or purpose is unsupported");
    }
    if r.proof_algorithm != PROOF_ALGORITHM_P256 || r.client_nonce.len() != NONCE_SIZE {
        return fail("challenge_request", "proof algorithm or nonce is invalid");
    }
    if !p.auth_token.is_empty() || p.signature.is_empty() {
        return fail(
            "challenge_request",
            "must be signed without a session token",
        );
    }
    Ok(())
}

/// The rules of a challenge, on its own (`top_level`) or inside an authenticate or a
/// result: required identities, the envelope's trace id, version and purpose, nonce
/// sizes, and a lifetime of at most [`MAX_LIFETIME_SECS`].
pub fn challenge(
    p: &BusPacket,
    c: &v1::WorkerHandshakeChallenge,
    top_level: bool,
) -> Result<(), TrustViolation> {
    let required = [
        &c.request_id,
        &c.challenge_id,
        &c.trace_id,
        &c.worker_id,
        &c.agent_id,
        &c.tenant_id,
        &c.proof_key_id,
        &c.server_key_id,
        &c.audience,
        &c.sdk_version,
    ];
    if required.iter().any(|v| blank(v)) {
        return fail("challenge", "required field is empty");
    }
    if p.trace_id != c.trace_id {
        return fail("challenge.trace_id", "must equal envelope trace_id");
    }
    if top_level && !p.auth_token.is_empty() {
        return fail("auth_token", "challenge must not carry a session");
    }
    if c.protocol_version != PROTOCOL_VERSION && c.protocol_version != 0 {
        return version("challenge.protocol_version");
    }
    if c.protocol_version != PROTOCOL_VERSION || !purpose_ok(c.purpose) {
        return fail("challenge", "version or purpose is unsupported");
    }
    if c.proof_algorithm != PROOF_ALGORITHM_P256
        || c.client_nonce.len() != NONCE_SIZE
        || c.server_nonce.len() != NONCE_SIZE
    {
        return fail("challenge", "proof algorithm or nonce is invalid");
    }
    let issued = timestamp(c.issued_at.as_ref(), "challenge.issued_at")?;
    let expires = timestamp(c.expires_at.as_ref(), "challenge.expires_at")?;
    let lifetime = nanos_of(&expires) - nanos_of(&issued);
    if lifetime <= 0 || lifetime > i128::from(MAX_LIFETIME_SECS) * 1_000_000_000 {
        return fail("challenge.timestamps", "invalid order or lifetime");
    }
    if top_level && p.signature.is_empty() {
        return fail("signature", "challenge must be signed");
    }
    Ok(())
}

fn authenticate(p: &BusPacket, a: &v1::WorkerHandshakeAuthenticate) -> Result<(), TrustViolation> {
    let (Some(c), Some(cap)) = (&a.challenge, &a.capability_handshake) else {
        return fail("authenticate", "challenge and capability are required");
    };
    challenge(p, c, false)?;
    if p.sender_id != c.worker_id || p.signature.is_empty() {
        return fail("authenticate", "worker binding or signature is invalid");
    }
    capability(cap, c)?;
    session(c.purpose, &p.auth_token)
}

/// The capability declaration of an authenticate, bound to its challenge: the worker's
/// id, role WORKER, the challenge's SDK version, versions exactly `[1]`, enabled keys of
/// the capability-key form, ready topics non-blank and distinct.
pub fn capability(
    h: &v1::Handshake,
    c: &v1::WorkerHandshakeChallenge,
) -> Result<(), TrustViolation> {
    if h.component_id != c.worker_id
        || h.role != v1::ComponentRole::Worker as i32
        || h.sdk_version != c.sdk_version
    {
        return fail("capability_handshake", "identity does not match challenge");
    }
    if h.supported_versions != [PROTOCOL_VERSION] {
        return fail(
            "capability_handshake.supported_versions",
            "must contain exactly v1",
        );
    }
    if h.capabilities
        .iter()
        .any(|(k, on)| !on || !is_capability_key(k))
    {
        return fail(
            "capability_handshake.capabilities",
            "key is invalid or disabled",
        );
    }
    let mut seen = std::collections::HashSet::with_capacity(h.ready_topics.len());
    if h.ready_topics
        .iter()
        .any(|t| blank(t) || !seen.insert(t.as_str()))
    {
        return fail(
            "capability_handshake.ready_topics",
            "topic is empty or duplicated",
        );
    }
    Ok(())
}

fn session(purpose: i32, token: &str) -> Result<(), TrustViolation> {
    if purpose == PURPOSE_ISSUE && !token.is_empty() {
        return fail("auth_token", "issue must not carry a session");
    }
    if purpose == PURPOSE_RENEW && token.is_empty() {
        return Err(TrustViolation {
            kind: ViolationKind::SessionRequired,
            field: "auth_token",
            message: "renew requires the current session",
        });
    }
    if purpose == PURPOSE_RENEW && !is_session_token(token) {
        return fail("auth_token", "renew requires the current session");
    }
    Ok(())
}

fn result(p: &BusPacket, r: &v1::WorkerHandshakeResult) -> Result<(), TrustViolation> {
    let Some(c) = &r.challenge else {
        return fail("result", "challenge and signature are required");
    };
    if p.signature.is_empty() {
        return fail("result", "challenge and signature are required");
    }
    challenge(p, c, false)?;
    let issued = timestamp(r.issued_at.as_ref(), "result.issued_at")?;
    if r.accepted {
        let Some(expires) = r.token_expires_at.as_ref() else {
            return fail("result", "accepted result requires a future token expiry");
        };
        if !is_session_token(&p.auth_token) {
            return fail("result", "accepted result requires a future token expiry");
        }
        let expires = timestamp(Some(expires), "result.token_expires_at")?;
        if nanos_of(&expires) <= nanos_of(&issued) {
            return fail("result", "accepted result requires a future token expiry");
        }
        if r.rejection_reason != 0 {
            return fail(
                "result.rejection_reason",
                "must be unspecified when accepted",
            );
        }
        return Ok(());
    }
    if !p.auth_token.is_empty() || !(1..=9).contains(&r.rejection_reason) {
        return fail("result", "rejection must not carry token metadata");
    }
    if r.token_expires_at.is_some() {
        return fail("result", "rejection must not carry token metadata");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp {
        seconds: 1_700_000_000,
        nanos: 0,
    };

    fn challenge_msg() -> v1::WorkerHandshakeChallenge {
        v1::WorkerHandshakeChallenge {
            request_id: "r".into(),
            challenge_id: "c".into(),
            trace_id: "t".into(),
            worker_id: "w".into(),
            agent_id: "a".into(),
            tenant_id: "default".into(),
            proof_key_id: "k".into(),
            proof_algorithm: PROOF_ALGORITHM_P256,
            server_key_id: "s".into(),
            audience: AUDIENCE.into(),
            purpose: PURPOSE_ISSUE,
            client_nonce: vec![1; 32],
            server_nonce: vec![2; 32],
            protocol_version: 1,
            sdk_version: "v".into(),
            issued_at: Some(T),
            expires_at: Some(Timestamp {
                seconds: T.seconds + 30,
                nanos: 0,
            }),
        }
    }

    fn packet(payload: impl Into<Payload>) -> BusPacket {
        let mut p = BusPacket::new("t", "w", T, payload);
        p.signature = vec![0x30].into();
        p
    }

    fn capability_msg() -> v1::Handshake {
        v1::Handshake {
            component_id: "w".into(),
            role: v1::ComponentRole::Worker as i32,
            supported_versions: vec![1],
            capabilities: [("job.echo".to_string(), true)].into(),
            sdk_version: "v".into(),
            ready_topics: vec!["job.echo".into()],
            ..Default::default()
        }
    }

    #[test]
    fn strict_der() {
        // r = 1, s = 0x80 (needs a sign byte).
        assert!(is_strict_der(&[
            0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x02, 0x00, 0x80
        ]));
        // Non-minimal: a leading zero that is not needed.
        assert!(!is_strict_der(&[
            0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01
        ]));
        // Negative.
        assert!(!is_strict_der(&[
            0x30, 0x06, 0x02, 0x01, 0x81, 0x02, 0x01, 0x01
        ]));
        // Zero.
        assert!(!is_strict_der(&[
            0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01
        ]));
        // Trailing bytes, wrong length, not a sequence, empty.
        assert!(!is_strict_der(&[
            0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01, 0x00
        ]));
        assert!(!is_strict_der(&[
            0x30, 0x07, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01
        ]));
        assert!(!is_strict_der(&[
            0x31, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01
        ]));
        assert!(!is_strict_der(&[]));
        assert!(is_strict_der(&[
            0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01
        ]));
    }

    #[test]
    fn texts_tokens_and_keys() {
        assert!(is_canonical_text("a"));
        assert!(!is_canonical_text(""));
        assert!(!is_canonical_text(&"a".repeat(257)));
        assert!(!is_canonical_text("é"));
        assert!(is_session_token(&"a".repeat(16 * 1024)));
        assert!(!is_session_token(&"a".repeat(16 * 1024 + 1)));
        assert!(is_capability_key("job.echo") && is_capability_key("x-1_a"));
        assert!(!is_capability_key("Job") && !is_capability_key("1a") && !is_capability_key(""));
        assert!(!is_capability_key(&format!("a{}", "b".repeat(64))));
    }

    #[test]
    fn challenge_rules() {
        let p = packet(challenge_msg());
        validate_packet(&p).unwrap();
        let mut c = challenge_msg();
        c.server_nonce = vec![0; 31];
        assert_eq!(
            validate_packet(&packet(c)).unwrap_err().kind,
            ViolationKind::Structure
        );
        let mut c = challenge_msg();
        c.expires_at = Some(Timestamp {
            seconds: T.seconds + 61,
            nanos: 0,
        });
        assert_eq!(
            validate_packet(&packet(c)).unwrap_err().field,
            "challenge.timestamps"
        );
        let mut c = challenge_msg();
        c.protocol_version = 2;
        assert_eq!(
            validate_packet(&packet(c)).unwrap_err().kind,
            ViolationKind::Version
        );
        let mut p = packet(challenge_msg());
        p.protocol_version = 999;
        assert_eq!(
            validate_packet(&p).unwrap_err().kind,
            ViolationKind::Version
        );
        let mut p = packet(challenge_msg());
        p.auth_token = "x".into();
        assert_eq!(validate_packet(&p).unwrap_err().field, "auth_token");
        let mut p = packet(challenge_msg());
        p.trace_id = "other".into();
        assert!(validate_packet(&p).is_err());
    }

    #[test]
    fn authenticate_rules_and_sessions() {
        let a = v1::WorkerHandshakeAuthenticate {
            challenge: Some(challenge_msg()),
            capability_handshake: Some(capability_msg()),
        };
        validate_packet(&packet(a.clone())).unwrap();
        let mut p = packet(a.clone());
        p.auth_token = "tok".into();
        assert_eq!(validate_packet(&p).unwrap_err().field, "auth_token");
        let mut renew = a.clone();
        if let Some(c) = renew.challenge.as_mut() {
            c.purpose = PURPOSE_RENEW;
        }
        assert_eq!(
            validate_packet(&packet(renew.clone())).unwrap_err().kind,
            ViolationKind::SessionRequired
        );
        let mut p = packet(renew);
        p.auth_token = "tok".into();
        validate_packet(&p).unwrap();
        let mut bad = a.clone();
        if let Some(h) = bad.capability_handshake.as_mut() {
            h.ready_topics.push("job.echo".into());
        }
        assert!(validate_packet(&packet(bad)).is_err());
        let mut bad = a;
        if let Some(h) = bad.capability_handshake.as_mut() {
            h.capabilities.insert("cancel".into(), false);
        }
        assert!(validate_packet(&packet(bad)).is_err());
    }

    #[test]
    fn result_rules() {
        let accepted = v1::WorkerHandshakeResult {
            challenge: Some(challenge_msg()),
            accepted: true,
            rejection_reason: 0,
            token_expires_at: Some(Timestamp {
                seconds: T.seconds + 600,
                nanos: 0,
            }),
            issued_at: Some(T),
        };
        let mut p = packet(accepted.clone());
        assert!(validate_packet(&p).is_err(), "accepted needs a token");
        p.auth_token = "tok".into();
        validate_packet(&p).unwrap();
        let rejected = v1::WorkerHandshakeResult {
            accepted: false,
            rejection_reason: 2,
            token_expires_at: None,
            ..accepted
        };
        validate_packet(&packet(rejected.clone())).unwrap();
        let mut p = packet(rejected.clone());
        p.auth_token = "tok".into();
        assert!(validate_packet(&p).is_err());
        let mut r = rejected;
        r.rejection_reason = 10;
        assert!(validate_packet(&packet(r)).is_err());
    }

    #[test]
    fn request_rules() {
        let r = v1::WorkerHandshakeChallengeRequest {
            request_id: "r".into(),
            trace_id: "t".into(),
            worker_id: "w".into(),
            proof_key_id: "k".into(),
            proof_algorithm: PROOF_ALGORITHM_P256,
            audience: AUDIENCE.into(),
            purpose: PURPOSE_ISSUE,
            client_nonce: vec![1; 32],
            protocol_version: 1,
            sdk_version: "v".into(),
        };
        validate_packet(&packet(r.clone())).unwrap();
        let mut unsigned = packet(r.clone());
        unsigned.signature = Default::default();
        assert!(validate_packet(&unsigned).is_err());
        let mut v = r.clone();
        v.protocol_version = 999;
        assert_eq!(
            validate_packet(&packet(v)).unwrap_err().kind,
            ViolationKind::Version
        );
        let mut w = r;
        w.worker_id = "other".into();
        assert!(validate_packet(&packet(w)).is_err());
        assert!(validate_packet(&packet(v1::JobCancel::default())).is_err());
    }
}
