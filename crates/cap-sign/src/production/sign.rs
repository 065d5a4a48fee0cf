//! Producing CAP-PRODUCTION packets: [`seal`] stamps fresh metadata and signs (the peer's
//! `seal_production_event`); [`sign`] signs a packet whose metadata the caller set (the
//! peer's `sign_production_packet`); [`sign_unsigned`] signs exact unsigned bytes.
//!
//! The signature is ECDSA P-256 over SHA-256(`CAP-PRODUCTION-SIGNATURE-V1` ‖ `0x00` ‖
//! unsigned bytes), in DER; [`Signer`] hashes what it is given with SHA-256, so it is given
//! that transcript and the digest is the peer's prehashed one. The signature goes last, as
//! field 14, after the unsigned bytes.

use super::metadata::{self, Bounds};
use super::verify::{decode, reject_unknown_nested};
use super::wire::{append_signature, check_unsigned};
use super::{
    ALGORITHM, DOMAIN, MAX_LIFETIME, MAX_PACKET_BYTES, MESSAGE_ID_LEN, PROFILE_VERSION,
    ProductionError,
};
use crate::Signer;
use cap_proto::v1::{BusPacket, SignatureMetadata};
use cap_proto::{PROTOCOL_VERSION, canonical, packet};
use prost::Message;
use std::time::{Duration, SystemTime};

/// How to seal one outgoing packet: the signing key's id, the audience (the subject the
/// packet is about to be published on — never a default or the inbound subject), the
/// lifetime (at most 5 min), the current time and the message id (fresh random by
/// default).
///
/// ```
/// use cap_sign::production::Seal;
/// use std::time::{Duration, SystemTime};
///
/// let seal = Seal::new("worker-key-1", "sys.job.result", SystemTime::now())
///     .unwrap()
///     .with_lifetime(Duration::from_secs(60))
///     .unwrap();
/// assert_eq!(seal.lifetime(), Duration::from_secs(60));
/// assert!(Seal::new("k", "  ", SystemTime::now()).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct Seal {
    key_id: String,
    audience: String,
    lifetime: Duration,
    now: SystemTime,
    message_id: Option<[u8; MESSAGE_ID_LEN]>,
}

impl Seal {
    /// Sealing with `key_id` for `audience` at `now`, with the full 5-minute lifetime.
    pub fn new(key_id: &str, audience: &str, now: SystemTime) -> Result<Self, ProductionError> {
        if key_id.trim().is_empty() {
            return Err(ProductionError::Config("sealing requires a key id"));
        }
        if audience.trim().is_empty() {
            return Err(ProductionError::Config(
                "sealing requires the outbound subject as audience",
            ));
        }
        Ok(Seal {
            key_id: key_id.to_owned(),
            audience: audience.to_owned(),
            lifetime: MAX_LIFETIME,
            now,
            message_id: None,
        })
    }

    /// Sets the lifetime: (0, 5 min].
    pub fn with_lifetime(mut self, lifetime: Duration) -> Result<Self, ProductionError> {
        if lifetime.is_zero() || lifetime > MAX_LIFETIME {
            return Err(ProductionError::Config(
                "sealing requires a lifetime in (0, 5 min]",
            ));
        }
        self.lifetime = lifetime;
        Ok(self)
    }

    /// Uses this message id instead of a fresh random one. A reused id makes receivers
    /// drop the packet as a replay (or reject it as a conflict): only for fixtures and
    /// for re-sending the very same packet.
    pub fn with_message_id(mut self, message_id: [u8; MESSAGE_ID_LEN]) -> Self {
        self.message_id = Some(message_id);
        self
    }

    /// The lifetime.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The metadata this seal stamps (generating the message id if none was given).
    pub fn metadata(&self) -> Result<SignatureMetadata, ProductionError> {
        let message_id = match self.message_id {
            Some(id) => id,
            None => fresh_message_id()?,
        };
        let expires = metadata::nanos(self.now) + self.lifetime.as_nanos() as i128;
        Ok(SignatureMetadata {
            profile_version: PROFILE_VERSION.to_owned(),
            algorithm: ALGORITHM.to_owned(),
            message_id: message_id.to_vec(),
            audience: self.audience.clone(),
            expires_at: Some(packet::timestamp(metadata::system_time(expires))),
            key_id: self.key_id.clone(),
        })
    }
}

/// A fresh random message id from the operating system's RNG.
pub fn fresh_message_id() -> Result<[u8; MESSAGE_ID_LEN], ProductionError> {
    use p256::elliptic_curve::Generate;
    <[u8; MESSAGE_ID_LEN]>::try_generate()
        .map_err(|e| ProductionError::Signer(format!("random message id: {e}")))
}

/// Stamps fresh signature metadata on a copy of `packet` (clearing its signature, setting
/// `protocol_version` to 1 when unset) and returns the signed production wire bytes.
///
/// ```
/// use cap_proto::{Timestamp, v1};
/// use cap_sign::PrivateKey;
/// use cap_sign::production::{self, ProductionTrust, Seal};
/// use std::time::SystemTime;
///
/// let key = PrivateKey::generate();
/// let mut p = v1::BusPacket::new("t", "worker-1", Timestamp::default(), v1::JobCancel::default());
/// p.identity = Some(v1::IdentityBinding { tenant_id: "acme".into(), ..Default::default() });
/// let now = SystemTime::now();
/// let raw = production::seal(&p, &key, &Seal::new("k1", "sys.job.cancel", now).unwrap()).unwrap();
///
/// let trust = ProductionTrust::new("sys.job.cancel", "acme", "worker-1").unwrap()
///     .with_key("k1", key.public_key());
/// let verified = production::verify(&raw, &trust, now).unwrap();
/// assert_eq!(verified.packet().sender_id, "worker-1");
/// ```
pub fn seal(
    packet: &BusPacket,
    signer: &dyn Signer,
    seal: &Seal,
) -> Result<Vec<u8>, ProductionError> {
    let mut outgoing = packet.clone();
    outgoing.signature = Default::default();
    if outgoing.protocol_version == 0 {
        outgoing.protocol_version = PROTOCOL_VERSION;
    }
    outgoing.signature_metadata = Some(seal.metadata()?);
    sign(&outgoing, signer, seal.now)
}

/// Signs a packet whose `signature_metadata` the caller filled, after the checks the
/// peer's signer makes: the metadata as a verifier checks it at `now` with no skew (so an
/// expiry in the past or more than 5 min ahead is refused), and the exact-wire structure
/// of the unsigned bytes. Any signature already on `packet` is ignored. Returns the
/// production wire bytes: the canonical unsigned bytes, then field 14.
pub fn sign(
    packet: &BusPacket,
    signer: &dyn Signer,
    now: SystemTime,
) -> Result<Vec<u8>, ProductionError> {
    metadata::check(packet, None, Bounds::new(now, Duration::ZERO, MAX_LIFETIME))?;
    let mut buf = Vec::with_capacity(DOMAIN.len() + packet.encoded_len() + 96);
    buf.extend_from_slice(DOMAIN);
    if packet.signature.is_empty() {
        canonical::encode_into(packet, &mut buf);
    } else {
        let mut unsigned = packet.clone();
        unsigned.signature = Default::default();
        canonical::encode_into(&unsigned, &mut buf);
    }
    check_unsigned(buf.get(DOMAIN.len()..).unwrap_or_default())?;
    finish(buf, signer)
}

/// Signs exact unsigned bytes (a `BusPacket` without field 14, carrying its signature
/// metadata), with the checks of [`sign`] plus the ones a verifier makes on bytes: they
/// decode, and carry no field the schema does not know at any level. The bytes are signed
/// and sent as given, so they may come from any encoder.
pub fn sign_unsigned(
    unsigned: &[u8],
    signer: &dyn Signer,
    now: SystemTime,
) -> Result<Vec<u8>, ProductionError> {
    check_unsigned(unsigned)?;
    let decoded = decode(unsigned)?;
    reject_unknown_nested(unsigned, &decoded)?;
    metadata::check(
        &decoded,
        None,
        Bounds::new(now, Duration::ZERO, MAX_LIFETIME),
    )?;
    let mut buf = Vec::with_capacity(DOMAIN.len() + unsigned.len() + 96);
    buf.extend_from_slice(DOMAIN);
    buf.extend_from_slice(unsigned);
    finish(buf, signer)
}

/// Signs a transcript buffer (domain, `0x00`, unsigned) and turns it into the wire bytes.
fn finish(mut buf: Vec<u8>, signer: &dyn Signer) -> Result<Vec<u8>, ProductionError> {
    let signature = signer.sign(&buf)?;
    if signature.is_empty() {
        return Err(ProductionError::Signer(
            "the signer returned no signature".into(),
        ));
    }
    buf.drain(..DOMAIN.len());
    append_signature(&mut buf, &signature);
    if buf.len() > MAX_PACKET_BYTES {
        return Err(ProductionError::TooLarge { size: buf.len() });
    }
    Ok(buf)
}
