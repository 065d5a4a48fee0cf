//! Helpers shared by the CAP-PRODUCTION tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cap_proto::{Timestamp, v1};
use cap_sign::production::{self, DOMAIN};
use cap_sign::{PrivateKey, PublicKey, Signer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The upstream fixture, decoded.
pub struct Fixture {
    pub raw: Vec<u8>,
    pub unsigned: Vec<u8>,
    pub signature: Vec<u8>,
    pub preimage_digest: Vec<u8>,
    pub key: PublicKey,
}

pub const FIXTURE_KEY_ID: &str = "vector-key";
pub const FIXTURE_AUDIENCE: &str = "sys.job.vector";
pub const FIXTURE_TENANT: &str = "tenant-vector";
pub const FIXTURE_SENDER: &str = "worker-vector";

/// The fixture's expiry: 2099-01-01T00:00:00Z.
pub fn fixture_expiry() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(4_070_908_800)
}

/// An instant inside the fixture's validity window (four minutes before expiry).
pub fn fixture_now() -> SystemTime {
    fixture_expiry() - Duration::from_secs(240)
}

pub fn fixture() -> Fixture {
    let text = include_str!("../fixtures/production-signing-v1.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let b = |k: &str| base64(v[k].as_str().unwrap());
    Fixture {
        raw: b("raw_base64"),
        unsigned: b("unsigned_base64"),
        signature: b("signature_base64"),
        preimage_digest: unhex(v["preimage_digest_hex"].as_str().unwrap()),
        key: PublicKey::from_pem(v["public_key_pem"].as_str().unwrap()).unwrap(),
    }
}

pub fn fixture_trust() -> production::ProductionTrust {
    production::ProductionTrust::new(FIXTURE_AUDIENCE, FIXTURE_TENANT, FIXTURE_SENDER)
        .unwrap()
        .with_key(FIXTURE_KEY_ID, fixture().key)
}

/// Standard base64 (with padding) to bytes.
pub fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Signs arbitrary unsigned bytes with the production transcript and appends field 14,
/// skipping every check (to build validly signed negatives).
pub fn sign_raw(unsigned: &[u8], key: &PrivateKey) -> Vec<u8> {
    let mut t = DOMAIN.to_vec();
    t.extend_from_slice(unsigned);
    let sig = key.sign(&t).unwrap();
    let mut out = unsigned.to_vec();
    production::append_signature(&mut out, &sig);
    out
}

/// A job request from `sender` for tenant `acme`, with identity mirrors that agree.
pub fn job_request(sender: &str) -> v1::BusPacket {
    let mut p = v1::BusPacket::new(
        "trace-1",
        sender,
        Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        },
        v1::JobRequest {
            job_id: "job-1".into(),
            topic: "job.echo".into(),
            tenant_id: "acme".into(),
            principal_id: "alice".into(),
            labels: [("team".to_string(), "a".to_string())].into(),
            ..Default::default()
        },
    );
    p.identity = Some(v1::IdentityBinding {
        tenant_id: "acme".into(),
        principal_id: "alice".into(),
        ..Default::default()
    });
    p
}

/// Polls a future that never waits (the in-memory store's) to completion.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// A protobuf varint.
pub fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}
