//! Domain-separated transcripts for the newer signature profiles:
//! `ASCII(domain) || 0x00 || canonical bytes`, hashed with SHA-256 and signed as DER.

use crate::{Error, Signer, Verifier};
use cap_proto::PayloadKind;
use cap_proto::canonical;
use cap_proto::v1::BusPacket;
use prost::Message;

/// Domain of `WorkerHandshakeChallengeRequest` packets.
pub const WORKER_HANDSHAKE_CHALLENGE_REQUEST: &str = "CAP-WORKER-HANDSHAKE-CHALLENGE-REQUEST-V1";
/// Domain of `WorkerHandshakeChallenge` packets.
pub const WORKER_HANDSHAKE_CHALLENGE: &str = "CAP-WORKER-HANDSHAKE-CHALLENGE-V1";
/// Domain of `WorkerHandshakeAuthenticate` packets.
pub const WORKER_HANDSHAKE_AUTHENTICATE: &str = "CAP-WORKER-HANDSHAKE-AUTHENTICATE-V1";
/// Domain of `WorkerHandshakeResult` packets.
pub const WORKER_HANDSHAKE_RESULT: &str = "CAP-WORKER-HANDSHAKE-RESULT-V1";
/// Domain of the production signature profile.
pub const PRODUCTION_SIGNATURE: &str = "CAP-PRODUCTION-SIGNATURE-V1";

/// `domain || 0x00 || bytes`.
///
/// ```
/// let t = cap_sign::transcript::transcript("D", b"\x0a\x01x");
/// assert_eq!(t, b"D\x00\x0a\x01x");
/// ```
pub fn transcript(domain: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + 1 + bytes.len());
    out.extend_from_slice(domain.as_bytes());
    out.push(0);
    out.extend_from_slice(bytes);
    out
}

/// The trust-handshake domain of a payload kind, if it has one.
pub fn handshake_domain(kind: PayloadKind) -> Option<&'static str> {
    match kind {
        PayloadKind::WorkerHandshakeChallengeRequest => Some(WORKER_HANDSHAKE_CHALLENGE_REQUEST),
        PayloadKind::WorkerHandshakeChallenge => Some(WORKER_HANDSHAKE_CHALLENGE),
        PayloadKind::WorkerHandshakeAuthenticate => Some(WORKER_HANDSHAKE_AUTHENTICATE),
        PayloadKind::WorkerHandshakeResult => Some(WORKER_HANDSHAKE_RESULT),
        _ => None,
    }
}

/// The transcript of a received trust-handshake packet: its domain, then the canonical
/// bytes without the signature. Such packets must carry no unknown fields at any level.
pub fn handshake_transcript(raw: &[u8]) -> Result<(BusPacket, Vec<u8>), Error> {
    let packet = BusPacket::decode(raw).map_err(|e| Error::Decode(e.to_string()))?;
    let domain = packet
        .kind()
        .and_then(handshake_domain)
        .ok_or_else(|| Error::Decode("not a worker trust handshake packet".into()))?;
    let unsigned = canonical::signing_bytes(raw)?;
    let mut known = packet.clone();
    known.signature = Default::default();
    // The canonical form of the decoded packet drops unknown fields; any difference
    // from the received canonical bytes means there were some.
    if canonical::to_bytes(&known) != unsigned {
        return Err(Error::UnknownFields);
    }
    Ok((packet, transcript(domain, &unsigned)))
}

/// Signs a trust-handshake packet in place with its domain-separated transcript.
pub fn sign_handshake(packet: &mut BusPacket, signer: &dyn Signer) -> Result<(), Error> {
    let domain = packet
        .kind()
        .and_then(handshake_domain)
        .ok_or_else(|| Error::Decode("not a worker trust handshake packet".into()))?;
    packet.signature = Default::default();
    let bytes = transcript(domain, &canonical::to_bytes(packet));
    packet.signature = signer.sign(&bytes)?.into();
    Ok(())
}

/// Verifies a received trust-handshake packet; it must be signed.
pub fn verify_handshake(raw: &[u8], verifier: &dyn Verifier) -> Result<BusPacket, Error> {
    let (packet, bytes) = handshake_transcript(raw)?;
    if packet.signature.is_empty() {
        return Err(Error::Missing {
            sender: packet.sender_id,
        });
    }
    verifier
        .verify(&bytes, &packet.signature)
        .map_err(|e| match e {
            Error::Mismatch { .. } => Error::Mismatch {
                sender: packet.sender_id.clone(),
            },
            other => other,
        })?;
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PrivateKey;
    use cap_proto::{Timestamp, v1};

    fn challenge() -> BusPacket {
        BusPacket::new(
            "t",
            "ctl",
            Timestamp {
                seconds: 10,
                nanos: 0,
            },
            v1::WorkerHandshakeChallenge {
                challenge_id: "c1".into(),
                worker_id: "w1".into(),
                server_nonce: vec![1, 2, 3],
                ..Default::default()
            },
        )
    }

    #[test]
    fn domain_separation() {
        let key = PrivateKey::generate();
        let mut p = challenge();
        sign_handshake(&mut p, &key).unwrap();
        let raw = cap_proto::packet::encode(&p);
        verify_handshake(&raw, &key.public_key()).unwrap();
        // The same signature is not a plain packet signature (different transcript).
        assert!(crate::packet::verify_bytes(&raw, &key.public_key()).is_err());
        let (_, t) = handshake_transcript(&raw).unwrap();
        assert!(t.starts_with(b"CAP-WORKER-HANDSHAKE-CHALLENGE-V1\x00"));
    }

    #[test]
    fn unknown_fields_and_missing_signatures_are_rejected() {
        let key = PrivateKey::generate();
        let mut p = challenge();
        sign_handshake(&mut p, &key).unwrap();
        let mut raw = cap_proto::packet::encode(&p);
        raw.extend_from_slice(&[0x38, 0x01]); // unknown field 7
        assert_eq!(
            verify_handshake(&raw, &key.public_key()),
            Err(Error::UnknownFields)
        );
        let unsigned = cap_proto::packet::encode(&challenge());
        assert!(matches!(
            verify_handshake(&unsigned, &key.public_key()),
            Err(Error::Missing { .. })
        ));
        let plain = cap_proto::packet::encode(&BusPacket::new(
            "t",
            "s",
            Timestamp::default(),
            v1::JobCancel::default(),
        ));
        assert!(matches!(
            verify_handshake(&plain, &key.public_key()),
            Err(Error::Decode(_))
        ));
        assert_eq!(handshake_domain(PayloadKind::JobRequest), None);
    }
}
