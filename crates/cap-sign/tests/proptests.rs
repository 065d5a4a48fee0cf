//! Property tests: sign → verify holds for arbitrary packets, and flipping any single
//! bit of the signed bytes (or of the packet on the wire) makes verification fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_proto::{Timestamp, canonical, v1};
use cap_sign::{PrivateKey, Verifier, packet};
use proptest::prelude::*;
use std::sync::OnceLock;

fn key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(PrivateKey::generate)
}

fn arb_packet() -> impl Strategy<Value = v1::BusPacket> {
    (
        "[a-z0-9-]{1,12}",
        "[a-z0-9-]{1,12}",
        any::<i64>(),
        proptest::collection::btree_map("[a-z]{0,4}", "[a-z]{0,4}", 0..4),
        any::<i32>(),
        "[a-z.]{0,10}",
    )
        .prop_map(|(trace, sender, secs, labels, step, topic)| {
            let req = v1::JobRequest {
                job_id: trace.clone(),
                topic,
                labels,
                step_index: step,
                ..Default::default()
            };
            v1::BusPacket::new(
                trace,
                sender,
                Timestamp {
                    seconds: secs,
                    nanos: 0,
                },
                req,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sign_then_verify_holds(mut p in arb_packet()) {
        let bytes = packet::sign_to_bytes(&mut p, key()).unwrap();
        prop_assert!(packet::verify_bytes(&bytes, &key().public_key()).is_ok());
    }

    #[test]
    fn any_flipped_bit_of_the_signed_bytes_fails(mut p in arb_packet(), bit in any::<usize>()) {
        let bytes = packet::sign_to_bytes(&mut p, key()).unwrap();
        let mut unsigned = canonical::signing_bytes(&bytes).unwrap();
        let i = bit % (unsigned.len() * 8);
        unsigned[i / 8] ^= 1 << (i % 8);
        prop_assert!(key().public_key().verify(&unsigned, &p.signature).is_err());
    }

    /// On the wire a flip can land in bits protobuf ignores (the sign-extension bytes of
    /// a negative int32 varint, which the peer truncates too): then the packet still
    /// means exactly what was signed. Any flip that changes the content fails.
    #[test]
    fn any_flipped_bit_on_the_wire_fails_or_changes_nothing(mut p in arb_packet(), bit in any::<usize>()) {
        let original = packet::sign_to_bytes(&mut p, key()).unwrap();
        let mut bytes = original.clone();
        let i = bit % (bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        if packet::verify_bytes(&bytes, &key().public_key()).is_ok() {
            prop_assert_eq!(
                canonical::canonicalize::<v1::BusPacket>(&bytes).unwrap(),
                original
            );
        }
    }
}
