//! The worker's half of the trust handshake, without IO: build and sign the challenge
//! request and the authenticate, verify and correlate the scheduler's challenge and
//! result (the checks of the reference peer's `worker_trust_build.py` and
//! `worker_trust_verify.py`). Time comes in as an argument.
//!
//! ```
//! use cap_runtime::trust::client::{self, RequestOptions};
//! use cap_runtime::trust::{WorkerTrustConfig, WorkerTrustMode};
//! use cap_proto::trust::PURPOSE_ISSUE;
//! use cap_sign::PrivateKey;
//! use std::{sync::Arc, time::SystemTime};
//!
//! let config = WorkerTrustConfig::new(WorkerTrustMode::Enforce, "k1", Arc::new(PrivateKey::generate()), "sched")
//!     .scheduler_key("s1", PrivateKey::generate().public_key())
//!     .resolve("w-1")
//!     .unwrap();
//! let now = SystemTime::now();
//! let request = client::build_challenge_request(&config, &RequestOptions::fresh(PURPOSE_ISSUE, now).unwrap()).unwrap();
//! assert_eq!(request.sender_id, "w-1");
//! assert!(request.is_signed());
//! // An answer that is not from the scheduler is refused.
//! assert!(client::verify_challenge(&config, &request, b"garbage", now).is_err());
//! ```

use super::config::ResolvedTrust;
use super::error::{TrustError, TrustErrorKind};
use cap_proto::trust::{self as rules, PURPOSE_ISSUE, PURPOSE_RENEW};
use cap_proto::v1::{self, BusPacket, bus_packet::Payload};
use cap_proto::{Timestamp, canonical};
use cap_sign::Verifier;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The per-exchange values of a challenge request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestOptions {
    /// A fresh request id.
    pub request_id: String,
    /// A fresh trace id (the whole exchange carries it).
    pub trace_id: String,
    /// [`PURPOSE_ISSUE`] or [`PURPOSE_RENEW`].
    pub purpose: i32,
    /// 32 random bytes.
    pub client_nonce: Vec<u8>,
    /// When the request is made.
    pub created_at: SystemTime,
}

impl RequestOptions {
    /// Random ids (32 hex digits each) and nonce, from the operating system's RNG.
    pub fn fresh(purpose: i32, now: SystemTime) -> Result<Self, TrustError> {
        Ok(RequestOptions {
            request_id: hex(&random::<16>()?),
            trace_id: hex(&random::<16>()?),
            purpose,
            client_nonce: random::<{ rules::NONCE_SIZE }>()?.to_vec(),
            created_at: now,
        })
    }
}

/// `N` bytes from the operating system's RNG.
pub fn random<const N: usize>() -> Result<[u8; N], TrustError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out)
        .map_err(|_| TrustError::new(TrustErrorKind::Sign, "the system RNG failed"))?;
    Ok(out)
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// A protobuf timestamp as a `SystemTime` (`None` before the epoch or out of range).
pub fn system_time(t: &Timestamp) -> Option<SystemTime> {
    let secs = u64::try_from(t.seconds).ok()?;
    let nanos = u32::try_from(t.nanos).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

fn skewed(t: Option<&Timestamp>, now: SystemTime) -> bool {
    let Some(t) = t else { return true };
    let now = cap_proto::packet::timestamp(now);
    let delta = rules::nanos_of(t) - rules::nanos_of(&now);
    delta.abs() > i128::from(rules::MAX_SKEW_SECS) * 1_000_000_000
}

fn at_or_after(now: SystemTime, t: Option<&Timestamp>) -> bool {
    let Some(t) = t else { return true };
    rules::nanos_of(&cap_proto::packet::timestamp(now)) >= rules::nanos_of(t)
}

fn err(kind: TrustErrorKind, detail: &'static str) -> TrustError {
    TrustError::new(kind, detail)
}

/// Builds and signs the challenge request for `options` (and checks it as the
/// scheduler will).
pub fn build_challenge_request(
    config: &ResolvedTrust,
    options: &RequestOptions,
) -> Result<BusPacket, TrustError> {
    if !rules::is_canonical_text(&options.request_id)
        || !rules::is_canonical_text(&options.trace_id)
    {
        return Err(err(
            TrustErrorKind::Packet,
            "request and trace ids are invalid",
        ));
    }
    let request = v1::WorkerHandshakeChallengeRequest {
        request_id: options.request_id.clone(),
        trace_id: options.trace_id.clone(),
        worker_id: config.worker_id.clone(),
        proof_key_id: config.proof_key_id.clone(),
        proof_algorithm: rules::PROOF_ALGORITHM_P256,
        audience: config.audience.clone(),
        purpose: options.purpose,
        client_nonce: options.client_nonce.clone(),
        protocol_version: rules::PROTOCOL_VERSION,
        sdk_version: config.sdk_version.clone(),
    };
    let mut packet = BusPacket::new(
        options.trace_id.clone(),
        config.worker_id.clone(),
        cap_proto::packet::timestamp(options.created_at),
        request,
    );
    sign(&mut packet, config)?;
    rules::validate_packet(&packet)?;
    Ok(packet)
}

fn sign(packet: &mut BusPacket, config: &ResolvedTrust) -> Result<(), TrustError> {
    cap_sign::transcript::sign_handshake(packet, config.proof_key.as_ref())
        .map_err(|_| err(TrustErrorKind::Sign, "the proof key could not sign"))
}

/// The wire bytes of a trust packet (canonical, at most 64 KiB).
pub fn encode(packet: &BusPacket) -> Result<Vec<u8>, TrustError> {
    let bytes = cap_proto::packet::encode(packet);
    if bytes.len() > rules::MAX_PACKET_SIZE {
        return Err(err(TrustErrorKind::Packet, "packet exceeds 65536 bytes"));
    }
    Ok(bytes)
}

/// A challenge that came back signed by the expected scheduler and matches our request.
#[derive(Clone, Debug)]
pub struct VerifiedChallenge {
    challenge: v1::WorkerHandshakeChallenge,
    canonical: Vec<u8>,
}

impl VerifiedChallenge {
    /// The challenge.
    pub fn challenge(&self) -> &v1::WorkerHandshakeChallenge {
        &self.challenge
    }
}

/// Opens a packet from the scheduler: size, strict decoding, no unknown fields, the
/// structural rules, the scheduler's sender id and clock, then its signature by the
/// configured key named in the challenge's `server_key_id` (strict DER).
pub fn open_scheduler_packet(
    config: &ResolvedTrust,
    raw: &[u8],
    now: SystemTime,
) -> Result<BusPacket, TrustError> {
    if raw.is_empty() || raw.len() > rules::MAX_PACKET_SIZE {
        return Err(err(
            TrustErrorKind::Packet,
            "packet size must be 1-65536 bytes",
        ));
    }
    cap_proto::packet::decode(raw, rules::MAX_PACKET_SIZE)
        .map_err(|_| err(TrustErrorKind::Packet, "packet does not decode"))?;
    let (packet, transcript) = cap_sign::transcript::handshake_transcript(raw)
        .map_err(|_| err(TrustErrorKind::Packet, "not a clean trust packet"))?;
    rules::validate_packet(&packet)?;
    if packet.sender_id != config.scheduler_id {
        return Err(err(TrustErrorKind::Binding, "scheduler sender differs"));
    }
    if skewed(packet.created_at.as_ref(), now) {
        return Err(err(
            TrustErrorKind::Expired,
            "created_at outside allowed skew",
        ));
    }
    let challenge = match &packet.payload {
        Some(Payload::WorkerHandshakeChallenge(c)) => c,
        Some(Payload::WorkerHandshakeResult(v1::WorkerHandshakeResult {
            challenge: Some(c),
            ..
        })) => c,
        _ => return Err(err(TrustErrorKind::Packet, "not a scheduler trust phase")),
    };
    let key = config
        .scheduler_keys
        .get(&challenge.server_key_id)
        .ok_or_else(|| err(TrustErrorKind::Packet, "scheduler key id is not configured"))?;
    if !rules::is_strict_der(&packet.signature) {
        return Err(err(TrustErrorKind::Packet, "signature is not strict DER"));
    }
    key.verify(&transcript, &packet.signature)
        .map_err(|_| err(TrustErrorKind::Packet, "scheduler signature is invalid"))?;
    Ok(packet)
}

/// Verifies the scheduler's answer to `request` (a challenge, or a signed rejection,
/// which becomes [`TrustErrorKind::Rejected`]).
pub fn verify_challenge(
    config: &ResolvedTrust,
    request: &BusPacket,
    reply: &[u8],
    now: SystemTime,
) -> Result<VerifiedChallenge, TrustError> {
    let Some(Payload::WorkerHandshakeChallengeRequest(req)) = &request.payload else {
        return Err(err(TrustErrorKind::Packet, "not a challenge request"));
    };
    let packet = open_scheduler_packet(config, reply, now)?;
    let challenge = match packet.payload {
        Some(Payload::WorkerHandshakeChallenge(c)) => c,
        Some(Payload::WorkerHandshakeResult(r)) => {
            let bound = r.challenge.as_ref().is_some_and(|c| {
                c.request_id == req.request_id && c.client_nonce == req.client_nonce
            });
            if r.accepted || !bound {
                return Err(err(
                    TrustErrorKind::Binding,
                    "answer does not match the request",
                ));
            }
            return Err(TrustError::rejected(r.rejection_reason));
        }
        _ => return Err(err(TrustErrorKind::Packet, "not a challenge")),
    };
    let same = challenge.request_id == req.request_id
        && challenge.trace_id == req.trace_id
        && challenge.worker_id == req.worker_id
        && challenge.proof_key_id == req.proof_key_id
        && challenge.proof_algorithm == req.proof_algorithm
        && challenge.audience == req.audience
        && challenge.purpose == req.purpose
        && challenge.client_nonce == req.client_nonce
        && challenge.protocol_version == req.protocol_version
        && challenge.sdk_version == req.sdk_version;
    if !same {
        return Err(err(
            TrustErrorKind::Binding,
            "challenge does not match request",
        ));
    }
    if challenge.agent_id != config.agent_id || challenge.tenant_id != config.tenant_id {
        return Err(err(TrustErrorKind::Binding, "challenge identity differs"));
    }
    fresh(&challenge, now)?;
    let canonical = canonical::to_bytes(&challenge);
    Ok(VerifiedChallenge {
        challenge,
        canonical,
    })
}

fn fresh(c: &v1::WorkerHandshakeChallenge, now: SystemTime) -> Result<(), TrustError> {
    if skewed(c.issued_at.as_ref(), now) {
        return Err(err(
            TrustErrorKind::Expired,
            "challenge issued outside allowed skew",
        ));
    }
    if at_or_after(now, c.expires_at.as_ref()) {
        return Err(err(TrustErrorKind::Expired, "challenge expired"));
    }
    Ok(())
}

/// Signs the verified challenge together with the worker's capability declaration;
/// `current_token` is empty for `ISSUE` and the live session's token for `RENEW`.
pub fn build_authenticate(
    config: &ResolvedTrust,
    verified: &VerifiedChallenge,
    capability: &v1::Handshake,
    current_token: &str,
    now: SystemTime,
) -> Result<BusPacket, TrustError> {
    let c = &verified.challenge;
    let bound = c.worker_id == config.worker_id
        && c.agent_id == config.agent_id
        && c.tenant_id == config.tenant_id
        && c.proof_key_id == config.proof_key_id
        && c.audience == config.audience
        && c.sdk_version == config.sdk_version;
    if !bound {
        return Err(err(TrustErrorKind::Binding, "challenge identity changed"));
    }
    rules::capability(capability, c)?;
    if c.purpose == PURPOSE_ISSUE && !current_token.is_empty() {
        return Err(err(
            TrustErrorKind::Packet,
            "issue must not carry a session",
        ));
    }
    if c.purpose == PURPOSE_RENEW && !rules::is_session_token(current_token) {
        return Err(err(
            TrustErrorKind::Packet,
            "renew requires the current session",
        ));
    }
    let mut packet = BusPacket::new(
        c.trace_id.clone(),
        config.worker_id.clone(),
        cap_proto::packet::timestamp(now),
        v1::WorkerHandshakeAuthenticate {
            challenge: Some(c.clone()),
            capability_handshake: Some(capability.clone()),
        },
    );
    packet.auth_token = current_token.to_owned();
    sign(&mut packet, config)?;
    rules::validate_packet(&packet)?;
    Ok(packet)
}

/// A live session: the token every outgoing packet carries, and when it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The opaque token.
    pub token: Arc<str>,
    /// When the scheduler issued it.
    pub issued_at: SystemTime,
    /// When it stops being accepted.
    pub expires_at: SystemTime,
}

impl Session {
    /// Whether the session is still live at `now`.
    pub fn is_live(&self, now: SystemTime) -> bool {
        now < self.expires_at
    }
}

/// Verifies the scheduler's result for our `authenticate` and returns the session it
/// issued (a signed rejection becomes [`TrustErrorKind::Rejected`]).
pub fn verify_result(
    config: &ResolvedTrust,
    verified: &VerifiedChallenge,
    authenticate: &BusPacket,
    reply: &[u8],
    now: SystemTime,
) -> Result<Session, TrustError> {
    let packet = open_scheduler_packet(config, reply, now)?;
    let Some(Payload::WorkerHandshakeResult(result)) = &packet.payload else {
        return Err(err(TrustErrorKind::Packet, "not a handshake result"));
    };
    let sent = match &authenticate.payload {
        Some(Payload::WorkerHandshakeAuthenticate(a)) => a.challenge.as_ref(),
        _ => None,
    };
    let got = result.challenge.as_ref().map(canonical::to_bytes);
    let sent = sent.map(canonical::to_bytes);
    if got.as_deref() != Some(&verified.canonical[..])
        || sent.as_deref() != Some(&verified.canonical[..])
    {
        return Err(err(TrustErrorKind::Binding, "result challenge differs"));
    }
    if !result.accepted {
        return Err(TrustError::rejected(result.rejection_reason));
    }
    if let Some(c) = &result.challenge {
        fresh(c, now)?;
    }
    if skewed(result.issued_at.as_ref(), now) {
        return Err(err(
            TrustErrorKind::Expired,
            "result issued outside allowed skew",
        ));
    }
    let expires_at = result
        .token_expires_at
        .as_ref()
        .and_then(system_time)
        .ok_or_else(|| err(TrustErrorKind::Packet, "token expiry is invalid"))?;
    if expires_at <= now {
        return Err(err(
            TrustErrorKind::Expired,
            "result token is already expired",
        ));
    }
    if verified.challenge.purpose == PURPOSE_RENEW && packet.auth_token == authenticate.auth_token {
        return Err(err(
            TrustErrorKind::Binding,
            "renewal did not rotate the session token",
        ));
    }
    let issued_at = result
        .issued_at
        .as_ref()
        .and_then(system_time)
        .ok_or_else(|| err(TrustErrorKind::Packet, "issued_at is invalid"))?;
    Ok(Session {
        token: Arc::from(packet.auth_token.as_str()),
        issued_at,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_time() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        let t = Timestamp {
            seconds: 5,
            nanos: 7,
        };
        assert_eq!(system_time(&t), Some(UNIX_EPOCH + Duration::new(5, 7)));
        assert_eq!(
            system_time(&Timestamp {
                seconds: -1,
                nanos: 0
            }),
            None
        );
        let a = random::<32>().unwrap();
        let b = random::<32>().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn skew_and_expiry_edges() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let ts = |s: i64| {
            Some(Timestamp {
                seconds: s,
                nanos: 0,
            })
        };
        assert!(!skewed(ts(1_060).as_ref(), now));
        assert!(skewed(ts(1_061).as_ref(), now));
        assert!(!skewed(ts(940).as_ref(), now));
        assert!(skewed(ts(939).as_ref(), now));
        assert!(skewed(None, now));
        assert!(at_or_after(now, ts(1_000).as_ref()));
        assert!(!at_or_after(now, ts(1_001).as_ref()));
    }
}
