//! Golden wire vectors produced by cap-sdk-python 2.10.0 and 2.17.0 (regenerate with
//! `$CAP_INTEROP_PYTHON tests/peer/vectors.py make > tests/vectors/peer-2.10.0.jsonl` and
//! `$CAP_INTEROP_PYTHON_217 tests/peer/vectors.py make > tests/vectors/peer-2.17.0.jsonl`),
//! checked both ways: decode → canonical encode gives the peer's bytes, and our JSON
//! equals the peer's JSON.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_proto::{canonical, v1};
use common::{hex, unhex};

#[test]
fn every_peer_vector_matches_byte_for_byte() {
    let vectors = common::golden(common::Version::V210);
    assert!(vectors.len() >= 19);
    for v in &vectors {
        common::check_vector(v);
    }
}

#[test]
fn every_217_peer_vector_matches_byte_for_byte() {
    let vectors = common::golden(common::Version::V217);
    // The 2.10.0 vectors plus new fields, trust packets and policy.proto messages.
    assert!(vectors.len() >= 34);
    for v in &vectors {
        common::check_vector(v);
    }
}

#[test]
fn map_entries_keep_default_values() {
    let hs = v1::Handshake {
        capabilities: [("b".to_string(), false), ("a".to_string(), true)].into(),
        supported_versions: vec![1, -1],
        ..Default::default()
    };
    // Peer bytes: packed [1, -1] (negative int32 as 10 bytes), entries sorted by key,
    // both entries carrying their value even when false.
    assert_eq!(
        hex(&canonical::to_bytes(&hs)),
        "1a0b01ffffffffffffffffff0122050a0161100122050a01621000"
    );
}

#[test]
fn negative_zero_float_is_kept_like_the_peer() {
    let hb = v1::Heartbeat {
        cpu_load: -0.0,
        ..Default::default()
    };
    assert_eq!(hex(&canonical::to_bytes(&hb)), "2500000080");
    let hb = v1::Heartbeat {
        cpu_load: 0.0,
        ..Default::default()
    };
    assert_eq!(canonical::to_bytes(&hb), b"");
}

#[test]
fn empty_present_submessage_is_emitted() {
    let r = v1::JobRequest {
        budget: Some(v1::Budget::default()),
        ..Default::default()
    };
    assert_eq!(hex(&canonical::to_bytes(&r)), "6200");
}

#[test]
fn reordered_repeated_and_unknown_fields_canonicalize_like_the_peer() {
    // job_id "x", topic "y", job_id "z" (last wins), unknown field 31 = 1.
    let raw = unhex("0a01781201790a017af80101");
    assert_eq!(
        hex(&canonical::canonicalize::<v1::JobRequest>(&raw).unwrap()),
        "0a017a120179f80101"
    );
}

#[test]
fn unpacked_repeated_scalars_are_packed() {
    // supported_versions 1 and 2 sent unpacked (wire type 0, twice).
    let raw = unhex("18011802");
    assert_eq!(
        hex(&canonical::canonicalize::<v1::Handshake>(&raw).unwrap()),
        "1a020102"
    );
}

#[test]
fn duplicate_map_keys_keep_the_last_value() {
    // labels {"k":"1"}, then {"k":"2"} (field 15 of JobRequest).
    let raw = unhex("7a060a016b1201317a060a016b120132");
    assert_eq!(
        hex(&canonical::canonicalize::<v1::JobRequest>(&raw).unwrap()),
        "7a060a016b120132"
    );
}

#[test]
fn last_oneof_member_wins_and_repeated_messages_merge() {
    // BusPacket: job_cancel{job_id:"a"} then job_result{job_id:"b"} → only job_result.
    let raw = unhex(
        "8201030a0161" /* 16 */
            .to_owned()
            .as_str(),
    )
    .into_iter()
    .chain(unhex("5a030a0162"))
    .collect::<Vec<_>>();
    assert_eq!(
        hex(&canonical::canonicalize::<v1::BusPacket>(&raw).unwrap()),
        "5a030a0162"
    );
    // Two occurrences of JobRequest.budget merge: {max_input_tokens:1} + {deadline_ms:2}.
    let raw = unhex("620208016202200 2".replace(' ', "").as_str());
    assert_eq!(
        hex(&canonical::canonicalize::<v1::JobRequest>(&raw).unwrap()),
        "620408012002"
    );
}

#[test]
fn wire_type_mismatch_becomes_an_unknown_field() {
    // JobRequest.job_id (1) sent as a varint: not a string, so kept verbatim at the end.
    let raw = unhex("08051201 79".replace(' ', "").as_str());
    assert_eq!(
        hex(&canonical::canonicalize::<v1::JobRequest>(&raw).unwrap()),
        "1201790805"
    );
}

#[test]
fn signing_bytes_drop_only_the_signature() {
    let raw = unhex("0a0174720301020312017392010174");
    // trace_id "t", signature (14) = 010203, sender_id "s", auth_token (18) "t".
    assert_eq!(
        hex(&canonical::signing_bytes(&raw).unwrap()),
        "0a0174120173920101 74".replace(' ', "")
    );
}
