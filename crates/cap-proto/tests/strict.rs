//! Strict receive and the peer's map order: what `packet::decode` refuses that a plain
//! protobuf parser accepts, and the key order the reference peer writes maps in.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_proto::canonical::{self, MapOrder, WireError};
use cap_proto::{Error, ErrorCode, Timestamp, packet, v1};

fn job(labels: &[(&str, &str)]) -> v1::BusPacket {
    v1::BusPacket::new(
        "t",
        "client",
        Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        },
        v1::JobRequest {
            job_id: "j1".into(),
            topic: "job.echo".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        },
    )
}

/// The keys of the `labels` entries of a canonical JobRequest packet, in written order.
fn written_label_keys(bytes: &[u8]) -> Vec<String> {
    let pkt = packet::decode(bytes, 1 << 20).unwrap();
    let Some(v1::bus_packet::Payload::JobRequest(req)) = pkt.payload else {
        panic!("not a job request")
    };
    let body = canonical::to_bytes(&req);
    // Walk the JobRequest's top-level fields; labels is field 15 (tag 0x7a).
    let mut keys = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let tag = body[i];
        let len = body[i + 1] as usize;
        let value = &body[i + 2..i + 2 + len];
        if tag == 0x7a {
            let klen = value[1] as usize;
            keys.push(String::from_utf8(value[2..2 + klen].to_vec()).unwrap());
        }
        i += 2 + len;
    }
    keys
}

#[test]
fn maps_are_written_in_the_peers_key_order() {
    // Observed from cap-sdk-python 2.10.0 and 2.17.0 (upb):
    // {a, ab, abc, b, ba} -> abc, ab, a, ba, b and {"", "x"} -> x, "".
    let p = job(&[
        ("a", "1"),
        ("ab", "2"),
        ("abc", "3"),
        ("b", "4"),
        ("ba", "5"),
    ]);
    assert_eq!(
        written_label_keys(&packet::encode(&p)),
        ["abc", "ab", "a", "ba", "b"]
    );
    let p = job(&[("", "1"), ("x", "2")]);
    assert_eq!(written_label_keys(&packet::encode(&p)), ["x", ""]);
    let p = job(&[("team", "1"), ("team_id", "2"), ("b\0", "3"), ("ba", "4")]);
    assert_eq!(
        written_label_keys(&packet::encode(&p)),
        ["b\0", "ba", "team_id", "team"]
    );
    // Without prefix keys the two orders agree (and the fast path is taken).
    let p = job(&[("alpha", "1"), ("beta", "2")]);
    assert_eq!(written_label_keys(&packet::encode(&p)), ["alpha", "beta"]);
}

#[test]
fn the_wire_canonicalizer_agrees_with_the_struct_encoder_in_both_orders() {
    let p = job(&[("a", "1"), ("ab", "2"), ("", "e"), ("b", "4")]);
    let peer = packet::encode(&p);
    assert_eq!(
        canonical::canonicalize::<v1::BusPacket>(&peer).unwrap(),
        peer
    );
    let bytewise = canonical::canonicalize_in::<v1::BusPacket>(&peer, MapOrder::Bytewise).unwrap();
    assert_ne!(bytewise, peer);
    // Either form canonicalises back to the peer's form.
    assert_eq!(
        canonical::canonicalize::<v1::BusPacket>(&bytewise).unwrap(),
        peer
    );
    assert!(canonical::map_orders_differ::<v1::BusPacket>(&peer).unwrap());
    let plain = packet::encode(&job(&[("x", "1"), ("y", "2")]));
    assert!(!canonical::map_orders_differ::<v1::BusPacket>(&plain).unwrap());
}

/// Re-encodes the first byte of `protocol_version` (field 4, value 1) as `81 00`.
fn with_two_byte_version(bytes: &[u8]) -> Vec<u8> {
    let at = bytes.windows(2).position(|w| w == [0x20, 0x01]).unwrap();
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(&[0x20, 0x81, 0x00]);
    out.extend_from_slice(&bytes[at + 2..]);
    out
}

#[test]
fn non_minimal_varints_are_malformed() {
    let bytes = packet::encode(&job(&[]));
    // A plain parser reads protocol_version 1 from `20 81 00`.
    let lenient = packet::decode_lenient(&with_two_byte_version(&bytes), 1 << 20).unwrap();
    assert_eq!(lenient.protocol_version, 1);
    let err = packet::decode(&with_two_byte_version(&bytes), 1 << 20).unwrap_err();
    assert_eq!(err.code(), ErrorCode::PROTOCOL_MALFORMED_PACKET);
    assert_eq!(
        canonical::check_strict::<v1::BusPacket>(&with_two_byte_version(&bytes)),
        Err(WireError::NonMinimalVarint)
    );

    // A non-minimal tag: trace_id's tag `0a` as `8a 00`.
    let mut tag = vec![0x8a, 0x00];
    tag.extend_from_slice(&bytes[1..]);
    assert!(packet::decode_lenient(&tag, 1 << 20).is_ok());
    assert!(matches!(
        packet::decode(&tag, 1 << 20),
        Err(Error::Malformed(_))
    ));

    // A non-minimal length: trace_id "t" with length `81 00`.
    let mut len = vec![0x0a, 0x81, 0x00];
    len.extend_from_slice(&bytes[2..]);
    assert!(packet::decode_lenient(&len, 1 << 20).is_ok());
    assert!(matches!(
        packet::decode(&len, 1 << 20),
        Err(Error::Malformed(_))
    ));

    // Nested: the JobRequest's priority (field 3) as `18 82 00` inside the payload.
    let mut p = job(&[]);
    if let Some(v1::bus_packet::Payload::JobRequest(r)) = &mut p.payload {
        r.priority = 2;
    }
    let good = packet::encode(&p);
    let at = good.windows(2).position(|w| w == [0x18, 0x02]).unwrap();
    let mut nested = good[..at].to_vec();
    nested.extend_from_slice(&[0x18, 0x82, 0x00]);
    nested.extend_from_slice(&good[at + 2..]);
    // The payload's length grows by one.
    let payload_at = good.iter().position(|b| *b == 0x52).unwrap();
    nested[payload_at + 1] += 1;
    assert_eq!(
        packet::decode_lenient(&nested, 1 << 20).unwrap(),
        packet::decode(&good, 1 << 20).unwrap()
    );
    assert_eq!(
        canonical::check_strict::<v1::BusPacket>(&nested),
        Err(WireError::NonMinimalVarint)
    );
    // The honest encoding passes.
    canonical::check_strict::<v1::BusPacket>(&good).unwrap();
}

#[test]
fn two_payloads_are_malformed() {
    let bytes = packet::encode(&job(&[]));
    let cancel = canonical::to_bytes(&v1::JobCancel {
        job_id: "j1".into(),
        ..Default::default()
    });
    let mut two = bytes.clone();
    two.push(0x82); // field 16 (job_cancel), wire type 2
    two.push(0x01);
    two.push(cancel.len() as u8);
    two.extend_from_slice(&cancel);
    // A plain parser keeps the last payload.
    let lenient = packet::decode_lenient(&two, 1 << 20).unwrap();
    assert_eq!(lenient.kind(), Some(packet::PayloadKind::JobCancel));
    assert_eq!(
        canonical::check_strict::<v1::BusPacket>(&two),
        Err(WireError::DuplicateOneof(16))
    );
    assert_eq!(
        packet::decode(&two, 1 << 20).unwrap_err().code(),
        ErrorCode::PROTOCOL_MALFORMED_PACKET
    );
    // The same payload twice is refused too (a parser would merge them).
    let mut same = bytes.clone();
    let payload_at = bytes.iter().position(|b| *b == 0x52).unwrap();
    same.extend_from_slice(&bytes[payload_at..]);
    assert_eq!(
        canonical::check_strict::<v1::BusPacket>(&same),
        Err(WireError::DuplicateOneof(10))
    );
}

#[test]
fn envelope_fields_five_and_six_are_known_and_ordered_after_four() {
    let mut p = job(&[]);
    p.signature_metadata = Some(v1::SignatureMetadata {
        profile_version: "cap-production-v1".into(),
        ..Default::default()
    });
    p.identity = Some(v1::IdentityBinding {
        tenant_id: "acme".into(),
        ..Default::default()
    });
    p.auth_token = "tok".into();
    let bytes = packet::encode(&p);
    let tags: Vec<u8> = {
        let mut tags = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let tag = bytes[i];
            i += if tag >= 0x80 { 2 } else { 1 };
            match tag & 7 {
                0 => i += 1,
                _ => {
                    let len = bytes[i] as usize;
                    i += 1 + len;
                }
            }
            tags.push(tag);
        }
        tags
    };
    // 1, 2, 3, 4, 5, 6, 10, 18 (0x92 0x01): 5 and 6 sit right after 4.
    assert_eq!(tags, [0x0a, 0x12, 0x1a, 0x20, 0x2a, 0x32, 0x52, 0x92]);
    assert!(
        canonical::unknown_fields::<v1::BusPacket>(&bytes)
            .unwrap()
            .is_empty()
    );
}
