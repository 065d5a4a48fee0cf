//! Verifying received CAP-PRODUCTION bytes against a [`ProductionTrust`], in the peer's
//! order: trust, exact-wire structure, decoding, unknown nested fields, metadata (profile,
//! message id, audience, key id, expiry), tenant, sender, key, signature.

use super::metadata::{self, Bounds};
use super::replay::{ReplayEntry, ReplayKey};
use super::wire::extract_signature;
use super::{MESSAGE_ID_LEN, ProductionError, ProductionTrust};
use crate::Verifier;
use cap_proto::canonical;
use cap_proto::v1::BusPacket;
use prost::Message;
use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};

/// A packet whose production signature verified, with what replay admission needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    packet: BusPacket,
    body_digest: [u8; 32],
    message_id: [u8; MESSAGE_ID_LEN],
    expires_at: i128,
}

impl Verified {
    /// The decoded packet (its `signature` set to the verified signature).
    pub fn packet(&self) -> &BusPacket {
        &self.packet
    }

    /// The decoded packet, owned.
    pub fn into_packet(self) -> BusPacket {
        self.packet
    }

    /// The signed body digest: SHA-256 of the unsigned bytes, without the domain prefix
    /// (the replay digest every implementation stores; not the signature preimage).
    pub fn body_digest(&self) -> &[u8; 32] {
        &self.body_digest
    }

    /// The 16-byte message id of the metadata.
    pub fn message_id(&self) -> &[u8; MESSAGE_ID_LEN] {
        &self.message_id
    }

    /// When the signature expires (the metadata's `expires_at`, to the microsecond).
    pub fn expires_at(&self) -> SystemTime {
        metadata::system_time(self.expires_at)
    }

    /// The replay key: (tenant of the identity binding, audience, sender, message id).
    pub fn replay_key(&self) -> ReplayKey {
        let tenant = self
            .packet
            .identity
            .as_ref()
            .map(|i| i.tenant_id.clone())
            .unwrap_or_default();
        let audience = self
            .packet
            .signature_metadata
            .as_ref()
            .map(|m| m.audience.clone())
            .unwrap_or_default();
        ReplayKey {
            tenant,
            audience,
            sender: self.packet.sender_id.clone(),
            message_id: self.message_id,
        }
    }

    /// The replay entry to admit: the key, the body digest, kept until expiry + `skew`
    /// (verification tolerates the skew, so the record must outlive it).
    pub fn replay_entry(&self, skew: Duration) -> ReplayEntry {
        ReplayEntry {
            key: self.replay_key(),
            digest: self.body_digest,
            keep_until: metadata::system_time(self.expires_at + skew.as_nanos() as i128),
        }
    }
}

/// Verifies received production bytes at `now`. On success the packet's signature,
/// audience, expiry, tenant, sender and key are all as `trust` requires; identity binding
/// of a job request and replay admission are the caller's next steps (see
/// [`admit`](super::admit), which does all three).
pub fn verify(
    raw: &[u8],
    trust: &ProductionTrust,
    now: SystemTime,
) -> Result<Verified, ProductionError> {
    let extracted = extract_signature(raw)?;
    let unsigned = extracted.unsigned();
    let mut packet = decode(unsigned)?;
    reject_unknown_nested(unsigned, &packet)?;
    let bounds = Bounds::new(now, trust.clock_skew(), trust.max_lifetime());
    let (meta, expires_at) = metadata::check(&packet, Some(trust.audience()), bounds)?;
    let tenant = packet
        .identity
        .as_ref()
        .map(|i| i.tenant_id.as_str())
        .unwrap_or_default();
    if tenant != trust.tenant() {
        return Err(ProductionError::TenantMismatch {
            expected: trust.tenant().to_owned(),
            got: tenant.to_owned(),
        });
    }
    if packet.sender_id != trust.sender() {
        return Err(ProductionError::SenderMismatch {
            expected: trust.sender().to_owned(),
            got: packet.sender_id.clone(),
        });
    }
    let key = trust
        .key(&meta.key_id)
        .ok_or_else(|| ProductionError::UnknownKeyId {
            key_id: meta.key_id.clone(),
        })?;
    let mut message_id = [0u8; MESSAGE_ID_LEN];
    message_id.copy_from_slice(&meta.message_id);
    key.verify(extracted.transcript(), extracted.signature())
        .map_err(|_| ProductionError::BadSignature)?;
    let body_digest: [u8; 32] = Sha256::digest(unsigned).into();
    packet.signature = bytes::Bytes::copy_from_slice(extracted.signature());
    Ok(Verified {
        packet,
        body_digest,
        message_id,
        expires_at,
    })
}

/// SHA-256 of unsigned bytes: the signed body digest used as the replay digest.
pub fn body_digest(unsigned: &[u8]) -> [u8; 32] {
    Sha256::digest(unsigned).into()
}

/// SHA-256 of the transcript (domain, `0x00`, unsigned): the digest ECDSA signs (the
/// fixture's `preimage_digest_hex`).
pub fn preimage_digest(unsigned: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(super::DOMAIN);
    h.update(unsigned);
    h.finalize().into()
}

/// Decodes unsigned bytes. A known field with another wire type is an unknown field to
/// the peer's parser (and so an unknown nested field), but a decoding error to prost:
/// when the bytes are otherwise well-formed (the canonicaliser, which treats such an
/// occurrence as unknown, reads them), report it as the peer does.
pub(crate) fn decode(unsigned: &[u8]) -> Result<BusPacket, ProductionError> {
    BusPacket::decode(unsigned).map_err(|e| {
        if canonical::canonicalize::<BusPacket>(unsigned).is_ok() {
            ProductionError::UnknownNestedField
        } else {
            ProductionError::Malformed(e.to_string())
        }
    })
}

/// Refuses unsigned bytes carrying a field the schema does not know at any level: their
/// canonical form (which keeps unknown fields) must equal that of the decoded packet
/// (which has none), the peer's `_reject_unknown_nested_fields`.
pub(crate) fn reject_unknown_nested(
    unsigned: &[u8],
    decoded: &BusPacket,
) -> Result<(), ProductionError> {
    let known = canonical::to_bytes(decoded);
    // Fast path: bytes already in canonical form are exactly the known fields.
    if known == unsigned {
        return Ok(());
    }
    let received = canonical::canonicalize::<BusPacket>(unsigned)
        .map_err(|e| ProductionError::Malformed(e.to_string()))?;
    if received != known {
        return Err(ProductionError::UnknownNestedField);
    }
    Ok(())
}
