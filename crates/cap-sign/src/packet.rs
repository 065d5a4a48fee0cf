//! Signing and verifying `BusPacket`s: the signature covers the canonical bytes of the
//! packet with field 14 cleared (see [`cap_proto::canonical::signing_bytes`]).
//!
//! Verification works on the bytes as received: known fields are canonicalised and
//! unknown fields kept in received order, exactly as the reference peer re-encodes, so
//! packets from newer peers (carrying fields this version does not model) verify.

use crate::{Error, Signer, Verifier};
use cap_proto::canonical;
use cap_proto::v1::BusPacket;
use prost::Message;

/// Signs a packet in place: clears `signature`, signs the canonical bytes, stores the DER.
pub fn sign(packet: &mut BusPacket, signer: &dyn Signer) -> Result<(), Error> {
    packet.signature = Default::default();
    let bytes = canonical::to_bytes(packet);
    packet.signature = signer.sign(&bytes)?.into();
    Ok(())
}

/// Signs a packet and returns its canonical wire bytes.
pub fn sign_to_bytes(packet: &mut BusPacket, signer: &dyn Signer) -> Result<Vec<u8>, Error> {
    packet.signature = Default::default();
    // One encoding: sign it, then splice the signature in at its place.
    let unsigned = canonical::to_bytes(packet);
    let signature = signer.sign(&unsigned)?;
    let bytes = canonical::insert_signature(&unsigned, &signature)?;
    packet.signature = signature.into();
    Ok(bytes)
}

/// Signs received wire bytes (keeping fields this version does not know) and returns the
/// canonical signed bytes.
pub fn sign_bytes(raw: &[u8], signer: &dyn Signer) -> Result<Vec<u8>, Error> {
    let unsigned = canonical::signing_bytes(raw)?;
    let signature = signer.sign(&unsigned)?;
    // Field 14 goes among the known fields; unknown fields stay last.
    Ok(canonical::insert_signature(&unsigned, &signature)?)
}

/// Verifies the signature of received bytes with one verifier. Returns the decoded packet.
pub fn verify_bytes(raw: &[u8], verifier: &dyn Verifier) -> Result<BusPacket, Error> {
    let packet = BusPacket::decode(raw).map_err(|e| Error::Decode(e.to_string()))?;
    verify_decoded(raw, &packet, verifier)?;
    Ok(packet)
}

/// Verifies received bytes whose decoded form the caller already has.
pub fn verify_decoded(
    raw: &[u8],
    packet: &BusPacket,
    verifier: &dyn Verifier,
) -> Result<(), Error> {
    if packet.signature.is_empty() {
        return Err(Error::Missing {
            sender: packet.sender_id.clone(),
        });
    }
    let unsigned = canonical::signing_bytes(raw)?;
    verifier
        .verify(&unsigned, &packet.signature)
        .map_err(|e| match e {
            Error::Mismatch { .. } => Error::Mismatch {
                sender: packet.sender_id.clone(),
            },
            other => other,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PrivateKey;
    use cap_proto::{Timestamp, packet, v1};

    fn job() -> BusPacket {
        let req = v1::JobRequest {
            job_id: "j1".into(),
            topic: "job.echo".into(),
            labels: [
                ("a".to_string(), String::new()),
                ("b".to_string(), "1".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        BusPacket::new(
            "t1",
            "client",
            Timestamp {
                seconds: 1_700_000_000,
                nanos: 1,
            },
            req,
        )
    }

    #[test]
    fn sign_then_verify() {
        let key = PrivateKey::generate();
        let mut p = job();
        let bytes = sign_to_bytes(&mut p, &key).unwrap();
        let back = verify_bytes(&bytes, &key.public_key()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn tampering_and_wrong_keys_fail_distinctly() {
        let key = PrivateKey::generate();
        let mut p = job();
        let bytes = sign_to_bytes(&mut p, &key).unwrap();
        // Change a signed value.
        let mut tampered = p.clone();
        tampered.trace_id = "t2".into();
        let tb = packet::encode(&tampered);
        assert!(
            matches!(verify_bytes(&tb, &key.public_key()), Err(Error::Mismatch { sender }) if sender == "client")
        );
        // Another key.
        let other = PrivateKey::generate().public_key();
        assert!(matches!(
            verify_bytes(&bytes, &other),
            Err(Error::Mismatch { .. })
        ));
        // Truncated.
        assert!(matches!(
            verify_bytes(&bytes[..bytes.len() - 3], &key.public_key()),
            Err(Error::Decode(_))
        ));
        // Unsigned.
        let unsigned = packet::encode(&job());
        assert!(matches!(
            verify_bytes(&unsigned, &key.public_key()),
            Err(Error::Missing { .. })
        ));
    }

    #[test]
    fn unknown_fields_are_signed_and_verified_as_received() {
        let key = PrivateKey::generate();
        let mut raw = packet::encode(&job());
        // A newer peer's fields: BusPacket 5 (string) and 6 (varint).
        raw.extend_from_slice(&[0x2a, 0x02, b'i', b'd', 0x30, 0x07]);
        let signed = sign_bytes(&raw, &key).unwrap();
        assert!(signed.ends_with(&[0x2a, 0x02, b'i', b'd', 0x30, 0x07]));
        verify_bytes(&signed, &key.public_key()).unwrap();
        // Dropping the unknown fields (what a decode/re-encode would do) breaks it.
        let decoded = BusPacket::decode(signed.as_slice()).unwrap();
        let reencoded = packet::encode(&decoded);
        assert!(matches!(
            verify_bytes(&reencoded, &key.public_key()),
            Err(Error::Mismatch { .. })
        ));
    }

    #[test]
    fn non_canonical_order_verifies() {
        let key = PrivateKey::generate();
        let mut p = job();
        let bytes = sign_to_bytes(&mut p, &key).unwrap();
        // Move the first field (trace_id, 3 bytes + tag) to the end: same packet, other order.
        let first_len = 2 + bytes[1] as usize;
        let mut reordered = bytes[first_len..].to_vec();
        reordered.extend_from_slice(&bytes[..first_len]);
        verify_bytes(&reordered, &key.public_key()).unwrap();
    }
}
