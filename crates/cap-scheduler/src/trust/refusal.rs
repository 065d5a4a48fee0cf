//! What the trust server does with a request it refuses, and the checks that come
//! before any key is looked at: size, strict decoding, unknown fields, phase and the
//! structural rules ([`decode`], [`structure`]). A refusal is a signed result whose
//! challenge is the received one when well formed, else one made up from what was
//! received ([`Echo`]), so the requester can read the reason.

use super::error::Error;
use super::server::TrustServer;
use super::session::{hex, random_bytes};
use cap_proto::trust::{self as rules, ViolationKind};
use cap_proto::v1::{
    self, BusPacket, WorkerHandshakeRejectionReason as Reason, bus_packet::Payload,
};
use cap_proto::{PayloadKind, Timestamp};
use std::time::SystemTime;

pub(super) struct Reject {
    pub(super) reason: Reason,
    pub(super) why: &'static str,
}

pub(super) fn reject(reason: Reason, why: &'static str) -> Reject {
    Reject { reason, why }
}

/// Fields a refusal's synthetic challenge may borrow from what was received.
#[derive(Default)]
pub(super) struct Echo<'a> {
    request_id: &'a str,
    trace_id: &'a str,
    worker_id: &'a str,
    proof_key_id: &'a str,
    purpose: i32,
    client_nonce: &'a [u8],
    sdk_version: &'a str,
}

impl<'a> Echo<'a> {
    pub(super) fn of(p: &'a BusPacket) -> Self {
        let mut e = Echo {
            trace_id: &p.trace_id,
            worker_id: &p.sender_id,
            ..Default::default()
        };
        let c = match &p.payload {
            Some(Payload::WorkerHandshakeChallengeRequest(r)) => {
                return Echo {
                    request_id: &r.request_id,
                    trace_id: &r.trace_id,
                    worker_id: &r.worker_id,
                    proof_key_id: &r.proof_key_id,
                    purpose: r.purpose,
                    client_nonce: &r.client_nonce,
                    sdk_version: &r.sdk_version,
                };
            }
            Some(Payload::WorkerHandshakeAuthenticate(a)) => a.challenge.as_ref(),
            _ => None,
        };
        if let Some(c) = c {
            e = Echo {
                request_id: &c.request_id,
                trace_id: &c.trace_id,
                worker_id: &c.worker_id,
                proof_key_id: &c.proof_key_id,
                purpose: c.purpose,
                client_nonce: &c.client_nonce,
                sdk_version: &c.sdk_version,
            };
        }
        e
    }
}

impl TrustServer {
    pub(super) fn synthetic_for(
        &self,
        e: Echo<'_>,
        now: SystemTime,
    ) -> Result<v1::WorkerHandshakeChallenge, Error> {
        let fresh = || random_bytes(16).map(|b| hex(&b));
        let pick = |s: &str, fallback: &str| {
            if rules::is_canonical_text(s) {
                s.to_owned()
            } else {
                fallback.to_owned()
            }
        };
        let key = self.key(e.proof_key_id);
        let worker_id = pick(e.worker_id, "unknown");
        Ok(v1::WorkerHandshakeChallenge {
            request_id: pick(e.request_id, &fresh()?),
            challenge_id: fresh()?,
            trace_id: pick(e.trace_id, &fresh()?),
            agent_id: key
                .as_ref()
                .map_or_else(|| worker_id.clone(), |k| k.agent_id.clone()),
            tenant_id: key.map_or_else(|| super::keys::DEFAULT_TENANT.to_owned(), |k| k.tenant_id),
            worker_id,
            proof_key_id: pick(e.proof_key_id, "unknown"),
            proof_algorithm: rules::PROOF_ALGORITHM_P256,
            server_key_id: self.config().server_key_id.clone(),
            audience: self.config().audience.clone(),
            purpose: if e.purpose == rules::PURPOSE_RENEW {
                rules::PURPOSE_RENEW
            } else {
                rules::PURPOSE_ISSUE
            },
            client_nonce: if e.client_nonce.len() == rules::NONCE_SIZE {
                e.client_nonce.to_vec()
            } else {
                random_bytes(rules::NONCE_SIZE)?
            },
            server_nonce: random_bytes(rules::NONCE_SIZE)?,
            protocol_version: rules::PROTOCOL_VERSION,
            sdk_version: pick(e.sdk_version, "unknown"),
            issued_at: Some(ts(now)),
            expires_at: Some(ts(now + self.config().challenge_lifetime)),
        })
    }
}

/// The refusal's result timestamp.
fn ts(t: SystemTime) -> Timestamp {
    cap_proto::packet::timestamp(t)
}

/// A refusal before any key was looked at, with the packet when it decoded at all.
pub(super) type Refused = Box<(Reject, Option<BusPacket>)>;

/// Size, strict decoding and no unknown fields; the decoded packet and its transcript.
/// On failure, the packet when it decoded at all (for the refusal's echo).
pub(super) fn decode(raw: &[u8]) -> Result<(BusPacket, Vec<u8>), Refused> {
    let fail = |why, p| Box::new((reject(Reason::InvalidRequest, why), p));
    if raw.is_empty() || raw.len() > rules::MAX_PACKET_SIZE {
        return Err(fail("packet size must be 1-65536 bytes", None));
    }
    let packet = cap_proto::packet::decode(raw, rules::MAX_PACKET_SIZE)
        .map_err(|_| fail("packet does not decode", None))?;
    match cap_sign::transcript::handshake_transcript(raw) {
        Ok((_, transcript)) => Ok((packet, transcript)),
        Err(cap_sign::Error::UnknownFields) => Err(fail("unknown fields", Some(packet))),
        Err(_) => Err(fail("not a trust packet", Some(packet))),
    }
}

/// The phase and the structural rules.
pub(super) fn structure(p: &BusPacket, want: PayloadKind) -> Result<(), Reject> {
    if p.kind() != Some(want) {
        return Err(reject(
            Reason::InvalidRequest,
            "wrong trust phase for this subject",
        ));
    }
    rules::validate_packet(p).map_err(|v| match v.kind {
        ViolationKind::Version => reject(Reason::UnsupportedVersion, "protocol version is not 1"),
        ViolationKind::SessionRequired => {
            reject(Reason::SessionRequired, "renewal without a session")
        }
        _ => reject(Reason::InvalidRequest, "structure"),
    })
}
