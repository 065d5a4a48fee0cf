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
    let mismatch = || Error::Mismatch {
        sender: packet.sender_id.clone(),
    };
    // The reference peer's canonical form first: what cap-rs and every cap-sdk-python
    // release sign, so almost every packet verifies on the first try.
    let peer = canonical::signing_bytes(raw)?;
    match verifier.verify(&peer, &packet.signature) {
        Ok(()) => return Ok(()),
        Err(Error::Mismatch { .. }) => {}
        Err(other) => return Err(other),
    }
    // Then the forms other signers produce: the bytes as received without field 14 (a
    // signer that signs its own wire encoding), and bytewise map order (Go). Each is
    // tried only when it differs from the forms already tried.
    let as_received = canonical::without_signature(raw)?;
    if as_received != peer {
        match verifier.verify(&as_received, &packet.signature) {
            Ok(()) => return Ok(()),
            Err(Error::Mismatch { .. }) => {}
            Err(other) => return Err(other),
        }
    }
    let bytewise = canonical::signing_bytes_in(raw, canonical::MapOrder::Bytewise)?;
    if bytewise != peer && bytewise != as_received {
        match verifier.verify(&bytewise, &packet.signature) {
            Ok(()) => return Ok(()),
            Err(Error::Mismatch { .. }) => {}
            Err(other) => return Err(other),
        }
    }
    Err(mismatch())
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
        // A newer peer's fields: BusPacket 7 (string) and 8 (varint), unknown here.
        raw.extend_from_slice(&[0x3a, 0x02, b'i', b'd', 0x40, 0x07]);
        let signed = sign_bytes(&raw, &key).unwrap();
        assert!(signed.ends_with(&[0x3a, 0x02, b'i', b'd', 0x40, 0x07]));
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
    fn signatures_over_other_signers_forms_verify() {
        use cap_proto::canonical::{self, MapOrder};
        let key = PrivateKey::generate();
        let mut p = job();
        if let Some(v1::bus_packet::Payload::JobRequest(r)) = &mut p.payload {
            r.labels = [("team", "a"), ("team_id", "b"), ("", "c"), ("x", "d")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        }
        let peer = packet::encode(&p);
        let bytewise = canonical::canonicalize_in::<BusPacket>(&peer, MapOrder::Bytewise).unwrap();
        assert_ne!(peer, bytewise, "prefix keys order differently");
        // A Go signer: signs the bytewise form and sends it.
        let sig = crate::Signer::sign(&key, &bytewise).unwrap();
        let sent = canonical::insert_signature(&bytewise, &sig).unwrap();
        verify_bytes(&sent, &key.public_key()).unwrap();
        // The same signature on the peer-ordered bytes verifies too (the bytewise form is
        // tried), while a signature over neither form does not.
        let resent = canonical::insert_signature(&peer, &sig).unwrap();
        verify_bytes(&resent, &key.public_key()).unwrap();
        let other = crate::Signer::sign(&key, b"something else").unwrap();
        let bad = canonical::insert_signature(&peer, &other).unwrap();
        assert!(matches!(
            verify_bytes(&bad, &key.public_key()),
            Err(Error::Mismatch { .. })
        ));
        // A signer that signs its own (non-canonical) wire order: the bytes as received.
        let mut reordered = bytewise.clone();
        let first_len = 2 + reordered[1] as usize;
        reordered.rotate_left(first_len);
        let sig = crate::Signer::sign(&key, &reordered).unwrap();
        let mut sent = reordered.clone();
        sent.extend_from_slice(&[0x72, sig.len() as u8]);
        sent.extend_from_slice(&sig);
        verify_bytes(&sent, &key.public_key()).unwrap();
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
