//! Property tests: decoding never panics on arbitrary bytes, encode → decode is the
//! identity, and the two canonical paths (from a struct, from wire bytes) agree.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_proto::{canonical, packet, v1};
use proptest::prelude::*;
use prost::Message;

fn small_string() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9._:-]{0,12}").unwrap()
}

fn string_map() -> impl Strategy<Value = std::collections::BTreeMap<String, String>> {
    proptest::collection::btree_map(small_string(), small_string(), 0..4)
}

fn job_request() -> impl Strategy<Value = v1::JobRequest> {
    (
        (
            small_string(),
            small_string(),
            -1i32..5,
            small_string(),
            string_map(),
        ),
        (
            any::<i32>(),
            string_map(),
            proptest::option::of((any::<i64>(), any::<i64>())),
        ),
        proptest::option::of((
            small_string(),
            proptest::collection::vec(small_string(), 0..3),
            string_map(),
        )),
    )
        .prop_map(
            |((job_id, topic, priority, ctx, env), (step, labels, budget), meta)| v1::JobRequest {
                job_id,
                topic,
                priority,
                context_ptr: ctx,
                env,
                step_index: step,
                labels,
                budget: budget.map(|(a, b)| v1::Budget {
                    max_input_tokens: a,
                    deadline_ms: b,
                    ..Default::default()
                }),
                meta: meta.map(|(tenant, tags, labels)| v1::JobMetadata {
                    tenant_id: tenant,
                    risk_tags: tags,
                    labels,
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
}

fn heartbeat() -> impl Strategy<Value = v1::Heartbeat> {
    (
        small_string(),
        any::<f32>(),
        any::<i32>(),
        proptest::collection::vec(small_string(), 0..3),
        string_map(),
    )
        .prop_map(|(worker_id, cpu, active, caps, labels)| v1::Heartbeat {
            worker_id,
            cpu_load: cpu,
            active_jobs: active,
            capabilities: caps,
            labels,
            ..Default::default()
        })
}

fn handshake() -> impl Strategy<Value = v1::Handshake> {
    (
        small_string(),
        any::<i32>(),
        proptest::collection::vec(any::<i32>(), 0..4),
        proptest::collection::btree_map(small_string(), any::<bool>(), 0..4),
    )
        .prop_map(|(id, role, versions, caps)| v1::Handshake {
            component_id: id,
            role,
            supported_versions: versions,
            capabilities: caps,
            ..Default::default()
        })
}

fn payload() -> impl Strategy<Value = v1::bus_packet::Payload> {
    use v1::bus_packet::Payload;
    prop_oneof![
        job_request().prop_map(Payload::JobRequest),
        heartbeat().prop_map(Payload::Heartbeat),
        handshake().prop_map(Payload::Handshake),
        (small_string(), any::<i32>(), any::<i64>()).prop_map(|(id, status, ms)| {
            Payload::JobResult(v1::JobResult {
                job_id: id,
                status,
                execution_ms: ms,
                ..Default::default()
            })
        }),
        (small_string(), small_string()).prop_map(|(id, r)| Payload::JobCancel(v1::JobCancel {
            job_id: id,
            reason: r,
            ..Default::default()
        })),
    ]
}

fn bus_packet() -> impl Strategy<Value = v1::BusPacket> {
    (
        small_string(),
        small_string(),
        any::<i64>(),
        0i32..1_000_000_000,
        any::<i32>(),
        payload(),
        proptest::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(
            |(trace, sender, secs, nanos, version, payload, sig)| v1::BusPacket {
                trace_id: trace,
                sender_id: sender,
                created_at: Some(prost_types::Timestamp {
                    seconds: secs,
                    nanos,
                }),
                protocol_version: version,
                payload: Some(payload),
                signature: sig.into(),
                ..Default::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = packet::decode(&bytes, packet::DEFAULT_MAX_PACKET_BYTES);
        let _ = canonical::canonicalize::<v1::BusPacket>(&bytes);
        let _ = canonical::signing_bytes(&bytes);
        let _ = canonical::unknown_fields::<v1::BusPacket>(&bytes);
    }

    #[test]
    fn mutated_packets_never_panic(p in bus_packet(), pos in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = packet::encode(&p);
        if !bytes.is_empty() {
            let i = pos % bytes.len();
            bytes[i] = byte;
        }
        let _ = packet::decode(&bytes, packet::DEFAULT_MAX_PACKET_BYTES);
        let _ = canonical::signing_bytes(&bytes);
    }

    #[test]
    fn encode_then_decode_is_identity(p in bus_packet()) {
        let bytes = packet::encode(&p);
        let back = v1::BusPacket::decode(bytes.as_slice()).unwrap();
        // NaN != NaN: compare canonical bytes, which are exact.
        prop_assert_eq!(packet::encode(&back), bytes);
    }

    #[test]
    fn struct_and_wire_canonical_paths_agree(p in bus_packet()) {
        let canonical = canonical::to_bytes(&p);
        // prost's own (non-canonical) bytes canonicalize to the same thing, except that
        // prost drops -0.0 floats; compare on packets without them.
        let has_neg_zero = matches!(&p.payload, Some(v1::bus_packet::Payload::Heartbeat(h)) if h.cpu_load.to_bits() == 0x8000_0000);
        if !has_neg_zero {
            prop_assert_eq!(canonical::canonicalize::<v1::BusPacket>(&p.encode_to_vec()).unwrap(), canonical.clone());
        }
        // Canonicalizing canonical bytes changes nothing.
        prop_assert_eq!(canonical::canonicalize::<v1::BusPacket>(&canonical).unwrap(), canonical);
    }

    #[test]
    fn inserting_a_signature_equals_encoding_the_signed_packet(
        p in bus_packet(),
        sig in proptest::collection::vec(any::<u8>(), 0..80),
        unknown in proptest::option::of(5u32..7),
    ) {
        let mut unsigned_pkt = p.clone();
        unsigned_pkt.signature = Default::default();
        let mut unsigned = canonical::to_bytes(&unsigned_pkt);
        let mut signed_pkt = p;
        signed_pkt.signature = sig.clone().into();
        let mut expected = canonical::to_bytes(&signed_pkt);
        if let Some(n) = unknown {
            // A newer peer's field (BusPacket 5 or 6) stays after the known ones.
            let extra = [((n << 3) as u8), 0x01];
            unsigned.extend_from_slice(&extra);
            expected = canonical::canonicalize::<v1::BusPacket>(&[expected, extra.to_vec()].concat()).unwrap();
        }
        prop_assert_eq!(canonical::insert_signature(&unsigned, &sig).unwrap(), expected);
    }
}

/// Nested message lengths across every varint width of the length prefix (1 to 3
/// bytes, and the edges between them) encode exactly as prost's bytes canonicalize,
/// and decode back.
#[test]
fn nested_lengths_at_varint_boundaries() {
    for len in [
        0usize, 1, 100, 118, 119, 120, 121, 126, 127, 128, 129, 200, 16_370, 16_376, 16_377,
        16_383, 16_384, 16_385, 70_000, 2_097_150, 2_097_152,
    ] {
        let p = v1::BusPacket::new(
            "trace-1",
            "sender-1",
            prost_types::Timestamp {
                seconds: 1,
                nanos: 2,
            },
            v1::JobProgress {
                job_id: "job-1".into(),
                message: "m".repeat(len),
                ..Default::default()
            },
        );
        let canonical = canonical::to_bytes(&p);
        assert_eq!(
            canonical::canonicalize::<v1::BusPacket>(&p.encode_to_vec()).unwrap(),
            canonical,
            "message of {len} bytes"
        );
        assert_eq!(
            v1::BusPacket::decode(canonical.as_slice()).unwrap(),
            p,
            "message of {len} bytes"
        );
    }
}

proptest! {
    /// `Pointer::check` accepts and rejects exactly what `Pointer::parse` does, with
    /// the same error; `subject::check_subject` agrees with `Subject::new`.
    #[test]
    fn borrowed_checks_agree_with_parsing(
        s in proptest::string::string_regex("(redis|mem|s3|file|https|ftp|)(://)?[a-z@/.: \\x00]{0,12}").unwrap()
    ) {
        prop_assert_eq!(cap_proto::Pointer::check(&s), cap_proto::Pointer::parse(&s).map(|_| ()));
        prop_assert_eq!(
            cap_proto::subject::check_subject(&s),
            cap_proto::Subject::new(s.as_str()).map(|_| ())
        );
    }
}
