//! Shared helpers for cap-proto's integration tests: peer vectors, the Python peers, random
//! messages and their repair into valid packets.
#![allow(dead_code)]

pub mod fixup;
pub mod peer;
pub mod random;

pub use peer::Version;

use cap_proto::{CapMessage, canonical, json, v1};
use std::path::PathBuf;
use std::process::Command;

/// One vector produced by the reference peer.
#[derive(Debug, serde::Deserialize)]
pub struct Vector {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub hex: String,
    pub json: String,
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

pub fn parse_vectors(text: &str) -> Vec<Vector> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The vectors committed from a run of `tests/peer/vectors.py make` with a peer release.
pub fn golden(version: Version) -> Vec<Vector> {
    match version {
        Version::V210 => parse_vectors(include_str!("../vectors/peer-2.10.0.jsonl")),
        Version::V217 => parse_vectors(include_str!("../vectors/peer-2.17.0.jsonl")),
    }
}

/// Runs a script from `tests/peer` with a peer's interpreter and returns stdout.
pub fn run_peer_with(version: Version, script: &str, args: &[&str]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peer")
        .join(script);
    let out = Command::new(version.python())
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "peer script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Checks one vector: our canonical bytes equal the peer's deterministic bytes, both from
/// the decoded struct and from the raw bytes, and our JSON equals the peer's JSON.
fn check<M: CapMessage>(v: &Vector) -> String {
    let bytes = unhex(&v.hex);
    let msg = M::decode(bytes.as_slice()).unwrap();
    assert_eq!(
        hex(&canonical::to_bytes(&msg)),
        v.hex,
        "{}: canonical bytes from struct",
        v.name
    );
    assert_eq!(
        hex(&canonical::canonicalize::<M>(&bytes).unwrap()),
        v.hex,
        "{}: canonicalize",
        v.name
    );

    let ours: serde_json::Value = serde_json::from_str(&json::to_string(&msg).unwrap()).unwrap();
    let mut theirs: serde_json::Value = serde_json::from_str(&v.json).unwrap();
    strip_negative_zero(&mut theirs);
    assert_eq!(ours, theirs, "{}: JSON", v.name);
    let parsed: M = json::from_str(&v.json).unwrap();
    assert_eq!(parsed, msg, "{}: parsing the peer's JSON", v.name);
    json::to_string(&msg).unwrap()
}

/// Checks a vector of any CAP type; returns our JSON for it.
pub fn check_vector(v: &Vector) -> String {
    match v.ty.as_str() {
        "cordum.agent.v1.BusPacket" => check::<v1::BusPacket>(v),
        "cordum.agent.v1.Handshake" => check::<v1::Handshake>(v),
        "cordum.agent.v1.PolicyCheckRequest" => check::<v1::PolicyCheckRequest>(v),
        "cordum.agent.v1.PolicyCheckResponse" => check::<v1::PolicyCheckResponse>(v),
        "cordum.agent.v1.ListSnapshotsResponse" => check::<v1::ListSnapshotsResponse>(v),
        "cordum.agent.v1.PolicyEvaluateRequest" => check::<v1::PolicyEvaluateRequest>(v),
        "cordum.agent.v1.PolicyEvaluateResponse" => check::<v1::PolicyEvaluateResponse>(v),
        "cordum.agent.v1.Bundle" => check::<v1::Bundle>(v),
        other => panic!("no test dispatch for {other}"),
    }
}

/// The peer prints a `-0.0` float in JSON (it judges presence by bit pattern); our JSON
/// omits it like any zero. Bytes keep it on both sides; in JSON the two parse to the same
/// value. CONFORMANCE.md records this one difference.
fn strip_negative_zero(v: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = v {
        map.retain(|_, x| {
            !(x.as_f64() == Some(0.0) && x.as_f64().is_some_and(f64::is_sign_negative))
        });
        for x in map.values_mut() {
            strip_negative_zero(x);
        }
    }
}
