//! Shared helpers for cap-proto's integration tests: peer vectors and the Python peer.
#![allow(dead_code)]

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

/// The vectors committed from a run of cap-sdk-python 2.10.0.
pub fn golden() -> Vec<Vector> {
    parse_vectors(include_str!("../vectors/peer-2.10.0.jsonl"))
}

/// The interpreter of the interop venv (set by `cargo xtask interop` / `.ci/run`).
pub fn peer_python() -> PathBuf {
    match std::env::var_os("CAP_INTEROP_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "CAP_INTEROP_PYTHON is not set: run `cargo xtask interop` (it installs \
             cap-sdk-python==2.10.0 into a venv and runs the peer tests)"
        ),
    }
}

/// Runs a script from `tests/peer` with the peer's interpreter and returns stdout.
pub fn run_peer(script: &str, args: &[&str]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peer")
        .join(script);
    let out = Command::new(peer_python())
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
