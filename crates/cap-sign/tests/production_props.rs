//! Property tests of the CAP-PRODUCTION profile: seal → verify holds for arbitrary
//! packets, lifetimes and instants; any single flipped bit of the wire is rejected; and
//! verification never panics, whatever the bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_proto::{Timestamp, v1};
use cap_sign::PrivateKey;
use cap_sign::production::{self, ProductionTrust, Seal};
use proptest::prelude::*;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(PrivateKey::generate)
}

fn trust(audience: &str) -> ProductionTrust {
    ProductionTrust::new(audience, "acme", "sender-1")
        .unwrap()
        .with_key("k", key().public_key())
}

fn arb_payload() -> impl Strategy<Value = v1::bus_packet::Payload> {
    use v1::bus_packet::Payload as P;
    let labels = proptest::collection::btree_map("[a-z]{0,4}", "[a-z]{0,4}", 0..4);
    prop_oneof![
        (
            "[a-z0-9-]{1,12}",
            "[a-z.]{0,10}",
            labels,
            any::<i32>(),
            any::<u64>()
        )
            .prop_map(|(job, topic, labels, step, attempt)| P::JobRequest(
                v1::JobRequest {
                    job_id: job,
                    topic,
                    labels: labels.into_iter().collect(),
                    step_index: step,
                    dispatch: Some(v1::DispatchIdentity {
                        dispatch_id: "d".into(),
                        attempt,
                        assigned_worker_id: "w".into(),
                    }),
                    ..Default::default()
                }
            )),
        ("[a-z0-9-]{1,12}", 0..10i32, any::<i64>()).prop_map(|(job, status, ms)| {
            P::JobResult(v1::JobResult {
                job_id: job,
                status,
                execution_ms: ms,
                worker_id: "sender-1".into(),
                ..Default::default()
            })
        }),
        ("[a-z0-9-]{0,12}", any::<f32>()).prop_map(|(w, load)| P::Heartbeat(v1::Heartbeat {
            worker_id: w,
            cpu_load: load,
            ..Default::default()
        })),
        "[a-z]{0,8}".prop_map(|reason| P::JobCancel(v1::JobCancel {
            job_id: "j".into(),
            reason,
            ..Default::default()
        })),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|nonce| {
            P::WorkerHandshakeChallengeRequest(v1::WorkerHandshakeChallengeRequest {
                client_nonce: nonce,
                ..Default::default()
            })
        }),
    ]
}

fn arb_packet() -> impl Strategy<Value = v1::BusPacket> {
    (
        "[a-z0-9-]{1,12}",
        any::<i64>(),
        arb_payload(),
        "[a-z]{0,6}",
        "[a-z]{0,6}",
    )
        .prop_map(|(trace, secs, payload, principal, token)| {
            let mut p = v1::BusPacket::new(
                trace,
                "sender-1",
                Timestamp {
                    seconds: secs,
                    nanos: 0,
                },
                v1::JobCancel::default(),
            );
            p.payload = Some(payload);
            p.auth_token = token;
            p.identity = Some(v1::IdentityBinding {
                tenant_id: "acme".into(),
                principal_id: principal,
                ..Default::default()
            });
            p
        })
}

/// An instant between 1970 and 2096, to the nanosecond.
fn arb_instant() -> impl Strategy<Value = SystemTime> {
    (0u64..4_000_000_000, 0u32..1_000_000_000).prop_map(|(s, n)| UNIX_EPOCH + Duration::new(s, n))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn seal_then_verify_holds(
        p in arb_packet(),
        now in arb_instant(),
        lifetime_ms in 2u64..=300_000,
        elapsed in 0.0f64..1.0,
        audience in "[a-z][a-z.]{0,15}",
    ) {
        let lifetime = Duration::from_millis(lifetime_ms);
        let seal = Seal::new("k", &audience, now).unwrap().with_lifetime(lifetime).unwrap();
        let raw = production::seal(&p, key(), &seal).unwrap();
        // Any instant from sealing up to 1 ms before expiry.
        let at = now + (lifetime - Duration::from_millis(1)).mul_f64(elapsed);
        let v = production::verify(&raw, &trust(&audience), at).unwrap();
        let mut expected = p.clone();
        expected.signature_metadata = v.packet().signature_metadata.clone();
        expected.signature = v.packet().signature.clone();
        prop_assert_eq!(v.packet(), &expected);
        prop_assert_eq!(
            production::verify(&raw, &trust(&audience), now + lifetime).unwrap_err(),
            production::ProductionError::Expired
        );
    }

    #[test]
    fn any_flipped_bit_is_rejected(p in arb_packet(), bit in any::<usize>()) {
        let now = SystemTime::now();
        let raw = production::seal(&p, key(), &Seal::new("k", "aud", now).unwrap()).unwrap();
        let mut bytes = raw.clone();
        let i = bit % (bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        prop_assert!(production::verify(&bytes, &trust("aud"), now).is_err());
    }

    #[test]
    fn verify_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let now = SystemTime::now();
        prop_assert!(production::verify(&bytes, &trust("aud"), now).is_err());
        if let Ok(e) = production::extract_signature(&bytes) {
            // The split loses exactly the field-14 entry: tag 0x72, length, signature.
            prop_assert!(e.unsigned().len() + e.signature().len() + 2 <= bytes.len());
            prop_assert!(!e.signature().is_empty());
        }
    }

    #[test]
    fn verify_never_panics_on_damaged_packets(
        p in arb_packet(),
        at in any::<usize>(),
        cut in any::<bool>(),
        junk in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let now = SystemTime::now();
        let raw = production::seal(&p, key(), &Seal::new("k", "aud", now).unwrap()).unwrap();
        let i = at % raw.len();
        let mut bytes = raw[..i].to_vec();
        bytes.extend_from_slice(&junk);
        if !cut {
            bytes.extend_from_slice(&raw[i..]);
        }
        let result = production::verify(&bytes, &trust("aud"), now);
        prop_assert!(result.is_err() || bytes == raw);
    }
}
