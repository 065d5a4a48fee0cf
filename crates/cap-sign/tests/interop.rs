//! Signatures against the live reference peer (cap-sdk-python 2.10.0): packets it signs
//! verify here, and packets we sign pass its Agent's verification. Run by
//! `cargo xtask interop` and `.ci/run`; they fail, not skip, without the peer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_proto::{CapMessage, v1};
use cap_sign::{KeyRing, PrivateKey, PublicKey, TrustMode, TrustPolicy, Verdict, packet};
use p256::ecdsa::Signature;
use prost::Message;
use std::path::PathBuf;
use std::process::Command;

fn peer_python() -> PathBuf {
    match std::env::var_os("CAP_INTEROP_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!("CAP_INTEROP_PYTHON is not set: run `cargo xtask interop`"),
    }
}

fn run_peer(args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peer/sign.py");
    let out = Command::new(peer_python())
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "peer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cap-sign-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
#[ignore = "needs the Python peer: run `cargo xtask interop`"]
fn peer_signed_packets_verify_here() {
    let dir = temp_dir("peer-signed");
    let lines = run_peer(&["make", dir.to_str().unwrap()]);
    let key = PublicKey::from_pem(&std::fs::read_to_string(dir.join("peer.pem")).unwrap()).unwrap();
    let mut ring = KeyRing::new();
    ring.add("peer-signer", key);
    let policy = TrustPolicy::new(TrustMode::Require, ring);
    let mut kinds = std::collections::HashSet::new();
    let (mut total, mut high_s) = (0, 0);
    for line in lines.lines() {
        let item: serde_json::Value = serde_json::from_str(line).unwrap();
        let raw = unhex(item["hex"].as_str().unwrap());
        let pkt = cap_proto::packet::decode(&raw, 1 << 20).unwrap();
        assert_eq!(
            policy.check(&raw, &pkt),
            Ok(Verdict::Verified),
            "{}",
            item["name"]
        );
        kinds.insert(pkt.kind().unwrap());
        let sig = Signature::from_der(&pkt.signature).unwrap();
        if sig.normalize_s() != sig {
            high_s += 1;
        }
        total += 1;
    }
    assert_eq!(kinds.len(), 7, "one signed packet per payload type");
    assert!(total >= 70);
    // OpenSSL does not normalise S: with random nonces about half are high-S.
    assert!(high_s > 0 && high_s < total, "{high_s} of {total} high-S");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
#[ignore = "needs the Python peer: run `cargo xtask interop`"]
fn peer_verifies_our_signatures() {
    let dir = temp_dir("ours");
    let key = PrivateKey::generate();
    std::fs::write(dir.join("ours.pem"), key.public_key().to_pem().unwrap()).unwrap();
    let golden = include_str!("../../cap-proto/tests/vectors/peer-2.10.0.jsonl");
    let mut lines = String::new();
    let mut names = Vec::new();
    for line in golden.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["type"] != v1::BusPacket::FULL_NAME {
            continue;
        }
        let mut pkt = v1::BusPacket::decode(unhex(v["hex"].as_str().unwrap()).as_slice()).unwrap();
        if pkt.payload.is_none() {
            continue;
        }
        pkt.sender_id = "rust-signer".into();
        let bytes = packet::sign_to_bytes(&mut pkt, &key).unwrap();
        let name = v["name"].as_str().unwrap().to_owned();
        lines.push_str(&serde_json::json!({"name": name, "hex": hex(&bytes)}).to_string());
        lines.push('\n');
        names.push(name);
    }
    // A packet with fields newer than the peer's schema (auth_token 18, Heartbeat.agent_name 19).
    let mut newer = v1::BusPacket::new(
        "t",
        "rust-signer",
        cap_proto::Timestamp {
            seconds: 5,
            nanos: 0,
        },
        v1::Heartbeat {
            worker_id: "w".into(),
            agent_name: "agent-x".into(),
            ..Default::default()
        },
    );
    newer.auth_token = "token".into();
    let bytes = packet::sign_to_bytes(&mut newer, &key).unwrap();
    lines.push_str(&serde_json::json!({"name": "newer_fields", "hex": hex(&bytes)}).to_string());
    lines.push('\n');
    names.push("newer_fields".into());
    // Negative control: a tampered copy must be rejected by the peer.
    let mut tampered = bytes.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    lines.push_str(&serde_json::json!({"name": "tampered", "hex": hex(&tampered)}).to_string());
    lines.push('\n');

    let file = dir.join("ours.jsonl");
    std::fs::write(&file, lines).unwrap();
    let out = run_peer(&[
        "verify",
        dir.join("ours.pem").to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    let results: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), names.len() + 1);
    for r in &results {
        let expect_ok = r["name"] != "tampered";
        assert_eq!(
            r["ok"].as_bool(),
            Some(expect_ok),
            "peer verdict on {}: {}",
            r["name"],
            r["log"]
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
