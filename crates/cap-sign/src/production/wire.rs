//! The exact-wire structure of a CAP-PRODUCTION packet: the strict top-level checks the
//! reference peer applies before anything is decoded, and the split of the received bytes
//! into the unsigned bytes (every entry but field 14, byte for byte) and the signature.
//!
//! Rules, in the peer's order: at most 1 MiB; every tag, length and varint value minimal
//! (at most 10 bytes); only the field numbers `BusPacket` defines, each with its wire type
//! (1-3, 5, 6 and 10-22 length-delimited, 4 varint); no field twice; at most one payload;
//! `protocol_version` present and encoded as the single byte `0x01`; field 14 present and
//! non-empty. Nested messages are not looked at here (see `verify`).

use super::ProductionError;
use super::{DOMAIN, MAX_PACKET_BYTES};

/// Field number of `protocol_version`.
const VERSION_FIELD: u64 = 4;
/// Field number of `signature`.
const SIGNATURE_FIELD: u64 = 14;
/// Wire type: varint.
const VARINT: u8 = 0;
/// Wire type: length-delimited.
const LEN: u8 = 2;

/// The wire type `BusPacket` field `number` must have, or `None` for a number it does not
/// define (7-9 and 23-27 are unused or reserved).
fn expected_wire_type(number: u128) -> Option<u8> {
    match number {
        4 => Some(VARINT),
        1..=3 | 5 | 6 | 10..=22 => Some(LEN),
        _ => None,
    }
}

/// Whether field `number` is a member of the payload oneof (14 and 18 are not).
fn is_payload(number: u64) -> bool {
    matches!(number, 10..=13 | 15..=17 | 19..=22)
}

/// Received production bytes split into what the signature covers and the signature.
///
/// The transcript (`CAP-PRODUCTION-SIGNATURE-V1 ‖ 0x00 ‖ unsigned`) is built in one
/// buffer while scanning, so signing and verifying need no further copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extracted<'a> {
    transcript: Vec<u8>,
    signature: &'a [u8],
}

impl<'a> Extracted<'a> {
    /// The received bytes with only the field-14 entry removed, nothing re-encoded.
    pub fn unsigned(&self) -> &[u8] {
        self.transcript.get(DOMAIN.len()..).unwrap_or_default()
    }

    /// The signature (ASN.1 DER, as received).
    pub fn signature(&self) -> &'a [u8] {
        self.signature
    }

    /// The signed transcript: domain, `0x00`, unsigned bytes.
    pub fn transcript(&self) -> &[u8] {
        &self.transcript
    }

    /// The unsigned bytes, owned.
    pub fn into_unsigned(mut self) -> Vec<u8> {
        self.transcript.drain(..DOMAIN.len());
        self.transcript
    }
}

/// Checks the exact-wire structure of received production bytes and splits off the
/// signature, like the peer's `extract_signature`.
///
/// ```
/// use cap_sign::production::{extract_signature, ProductionError};
/// // trace_id "t", protocol_version 1, signature 0x30.
/// let raw = [0x0a, 0x01, b't', 0x20, 0x01, 0x72, 0x01, 0x30];
/// let e = extract_signature(&raw).unwrap();
/// assert_eq!(e.unsigned(), &raw[..5]);
/// assert_eq!(e.signature(), &[0x30]);
/// // The version as a two-byte varint is refused.
/// let bad = [0x0a, 0x01, b't', 0x20, 0x81, 0x00, 0x72, 0x01, 0x30];
/// assert_eq!(extract_signature(&bad), Err(ProductionError::NonMinimalVarint));
/// ```
pub fn extract_signature(raw: &[u8]) -> Result<Extracted<'_>, ProductionError> {
    let mut transcript = Vec::with_capacity(DOMAIN.len() + raw.len());
    transcript.extend_from_slice(DOMAIN);
    let signature = scan(raw, Some(&mut transcript))?;
    Ok(Extracted {
        transcript,
        signature,
    })
}

/// Checks unsigned bytes as the verifier will see them once a signature is appended (the
/// signer's pre-flight check, the peer's `_validate_unsigned_bus_packet`).
pub fn check_unsigned(unsigned: &[u8]) -> Result<(), ProductionError> {
    if unsigned.len() > MAX_PACKET_BYTES {
        return Err(ProductionError::TooLarge {
            size: unsigned.len(),
        });
    }
    // Field 14 must not be there already; scanning with a stand-in signature catches it
    // as a duplicate, exactly as the verifier would.
    let mut probe = Vec::with_capacity(unsigned.len() + 3);
    probe.extend_from_slice(unsigned);
    append_signature(&mut probe, &[0x01]);
    scan(&probe, None).map(|_| ())
}

/// Appends the field-14 entry (`0x72`, length, signature) to unsigned bytes.
pub fn append_signature(out: &mut Vec<u8>, signature: &[u8]) {
    put_varint(out, (SIGNATURE_FIELD << 3) | u64::from(LEN));
    put_varint(out, signature.len() as u64);
    out.extend_from_slice(signature);
}

/// The scan shared by [`extract_signature`] and [`check_unsigned`]: validates every
/// top-level entry, copies all but field 14 into `unsigned` (when given) and returns the
/// signature.
fn scan<'a>(
    raw: &'a [u8],
    mut unsigned: Option<&mut Vec<u8>>,
) -> Result<&'a [u8], ProductionError> {
    if raw.len() > MAX_PACKET_BYTES {
        return Err(ProductionError::TooLarge { size: raw.len() });
    }
    let mut seen: u32 = 0; // bit n: field n seen (all defined numbers are below 32)
    let mut payload = false;
    let mut signature: Option<&[u8]> = None;
    let mut pos = 0;
    while pos < raw.len() {
        let start = pos;
        let (tag, after_tag) = varint(raw, pos)?;
        let number = tag >> 3;
        let wire_type = (tag & 7) as u8;
        let expected = expected_wire_type(number).ok_or(ProductionError::UnknownField {
            field: u64::try_from(number).unwrap_or(u64::MAX),
        })?;
        let number = number as u64; // below 23 from here on
        let field = number as u32;
        if wire_type != expected {
            return Err(ProductionError::WrongWireType { field, wire_type });
        }
        if seen & (1 << field) != 0 {
            return Err(ProductionError::DuplicateField { field });
        }
        seen |= 1 << field;
        if is_payload(number) {
            if payload {
                return Err(ProductionError::MultiplePayloads { field });
            }
            payload = true;
        }
        let end = if number == VERSION_FIELD {
            let (version, end) = varint(raw, after_tag)?;
            if version != 1 || end != after_tag + 1 {
                return Err(ProductionError::ProtocolVersion);
            }
            end
        } else {
            // Every other defined field is length-delimited.
            let (len, data) = varint(raw, after_tag)?;
            let end = usize::try_from(len)
                .ok()
                .and_then(|l| data.checked_add(l))
                .filter(|&e| e <= raw.len())
                .ok_or(ProductionError::Truncated)?;
            if number == SIGNATURE_FIELD {
                if end == data {
                    return Err(ProductionError::MalformedSignature);
                }
                signature = raw.get(data..end);
            }
            end
        };
        if number != SIGNATURE_FIELD
            && let Some(out) = unsigned.as_deref_mut()
        {
            out.extend_from_slice(raw.get(start..end).unwrap_or_default());
        }
        pos = end;
    }
    if seen & (1 << VERSION_FIELD) == 0 {
        return Err(ProductionError::ProtocolVersion);
    }
    signature.ok_or(ProductionError::MissingSignature)
}

/// Reads a varint of at most 10 bytes at `pos`, refusing a non-minimal form; returns the
/// value (up to 70 bits, as the peer reads it) and the position after it.
fn varint(raw: &[u8], mut pos: usize) -> Result<(u128, usize), ProductionError> {
    let mut value: u128 = 0;
    for i in 0..10 {
        let byte = *raw.get(pos).ok_or(ProductionError::Truncated)?;
        pos += 1;
        value |= u128::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            // Minimal: a multi-byte varint never ends in a zero byte.
            if i > 0 && byte == 0 {
                return Err(ProductionError::NonMinimalVarint);
            }
            return Ok((value, pos));
        }
    }
    Err(ProductionError::OversizeVarint)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// trace_id "t", protocol_version 1, job_cancel {}.
    const BASE: [u8; 7] = [0x0a, 0x01, b't', 0x20, 0x01, 0x82, 0x01];

    fn signed(parts: &[&[u8]]) -> Vec<u8> {
        let mut v: Vec<u8> = parts.concat();
        append_signature(&mut v, &[0x30, 0x00]);
        v
    }

    fn base() -> Vec<u8> {
        let mut v = BASE.to_vec();
        v.push(0x00); // job_cancel length 0
        v
    }

    #[test]
    fn splits_out_field_14_only() {
        // Signature in the middle: the unsigned bytes are the rest, in received order.
        let mut raw = vec![0x0a, 0x01, b't'];
        append_signature(&mut raw, &[0x30, 0x01]);
        raw.extend_from_slice(&[0x20, 0x01, 0x92, 0x01, 0x01, b'x']);
        let e = extract_signature(&raw).unwrap();
        assert_eq!(
            e.unsigned(),
            &[0x0a, 0x01, b't', 0x20, 0x01, 0x92, 0x01, 0x01, b'x']
        );
        assert_eq!(e.signature(), &[0x30, 0x01]);
        assert!(
            e.transcript()
                .starts_with(b"CAP-PRODUCTION-SIGNATURE-V1\x00")
        );
        assert_eq!(e.clone().into_unsigned(), e.unsigned());
    }

    #[test]
    fn structural_rejections() {
        use ProductionError as E;
        let ok = signed(&[&base()]);
        assert!(extract_signature(&ok).is_ok());
        // Unknown top-level fields: 7 and 23, and field number 0.
        assert_eq!(
            extract_signature(&signed(&[&base(), &[0x38, 0x01]])),
            Err(E::UnknownField { field: 7 })
        );
        assert_eq!(
            extract_signature(&signed(&[&base(), &[0xba, 0x01, 0x00]])),
            Err(E::UnknownField { field: 23 })
        );
        assert_eq!(
            extract_signature(&signed(&[&[0x02, 0x00], &base()])),
            Err(E::UnknownField { field: 0 })
        );
        // trace_id as a varint.
        assert_eq!(
            extract_signature(&signed(&[&[0x08, 0x01], &base()[3..]])),
            Err(E::WrongWireType {
                field: 1,
                wire_type: 0
            })
        );
        // Duplicate trace_id, duplicate signature.
        assert_eq!(
            extract_signature(&signed(&[&base(), &[0x0a, 0x01, b'u']])),
            Err(E::DuplicateField { field: 1 })
        );
        let mut two_sigs = signed(&[&base()]);
        append_signature(&mut two_sigs, &[0x30]);
        assert_eq!(
            extract_signature(&two_sigs),
            Err(E::DuplicateField { field: 14 })
        );
        // Two payloads (job_cancel then heartbeat).
        assert_eq!(
            extract_signature(&signed(&[&base(), &[0x62, 0x00]])),
            Err(E::MultiplePayloads { field: 12 })
        );
        // Version 2, version missing, version as 0x81 0x00.
        let mut v2 = base();
        v2[4] = 0x02;
        assert_eq!(extract_signature(&signed(&[&v2])), Err(E::ProtocolVersion));
        let no_version = [&base()[..3], &base()[5..]].concat();
        assert_eq!(
            extract_signature(&signed(&[&no_version])),
            Err(E::ProtocolVersion)
        );
        let long_version = [&base()[..4], &[0x81, 0x00], &base()[5..]].concat();
        assert_eq!(
            extract_signature(&signed(&[&long_version])),
            Err(E::NonMinimalVarint)
        );
        // Non-minimal length and tag.
        let long_len = [&[0x0a, 0x81, 0x00, b't'][..], &base()[3..]].concat();
        assert_eq!(
            extract_signature(&signed(&[&long_len])),
            Err(E::NonMinimalVarint)
        );
        let long_tag = [&[0x8a, 0x00, 0x01, b't'][..], &base()[3..]].concat();
        assert_eq!(
            extract_signature(&signed(&[&long_tag])),
            Err(E::NonMinimalVarint)
        );
        // Missing and empty signature.
        assert_eq!(extract_signature(&base()), Err(E::MissingSignature));
        let mut empty_sig = base();
        append_signature(&mut empty_sig, &[]);
        assert_eq!(extract_signature(&empty_sig), Err(E::MalformedSignature));
        // Truncation and oversize varints.
        assert_eq!(extract_signature(&ok[..ok.len() - 1]), Err(E::Truncated));
        assert_eq!(extract_signature(&[0x0a]), Err(E::Truncated));
        assert_eq!(extract_signature(&[0xff; 11]), Err(E::OversizeVarint));
        // Size limit.
        let mut big = base();
        big.extend_from_slice(&[0x92, 0x01]); // auth_token
        put_varint(&mut big, MAX_PACKET_BYTES as u64);
        big.resize(big.len() + MAX_PACKET_BYTES, b'a');
        assert!(matches!(
            extract_signature(&signed(&[&big])),
            Err(E::TooLarge { .. })
        ));
    }

    #[test]
    fn huge_tags_are_unknown_fields_not_overflows() {
        // A minimal 10-byte tag above 2^64 (the peer reads it as a big integer).
        let mut raw = vec![0xff; 9];
        raw.push(0x7f);
        raw.push(0x00);
        assert!(matches!(
            extract_signature(&raw),
            Err(ProductionError::UnknownField { .. })
        ));
    }

    #[test]
    fn check_unsigned_refuses_a_signature_already_there() {
        assert_eq!(check_unsigned(&base()), Ok(()));
        assert_eq!(
            check_unsigned(&signed(&[&base()])),
            Err(ProductionError::DuplicateField { field: 14 })
        );
        assert_eq!(
            check_unsigned(&base()[3..]),
            Ok(()),
            "no trace_id is not a structural error"
        );
    }
}
