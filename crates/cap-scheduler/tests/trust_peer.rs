//! The trust server against the reference peer's own code (cap-sdk-python 2.17.0,
//! interpreter from `CAP_INTEROP_PYTHON_217`): `tests/peer/trust_peer.py` builds and
//! signs packets with the peer's `worker_trust_build` / `trust_signing` (defects made
//! after building, then signed again by the peer where the defect needs a valid
//! signature), our server answers in process, and the peer's `verify_challenge` /
//! `verify_result` judge the answers.
//!
//! Proves: the peer gets and renews a session from us; the peer's
//! `trust_packet_digest` equals SHA-256 of our transcript for its packets and ours; and
//! each rejection reason the peer can provoke comes back, signed, readable by the peer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod trust_support;

use base64_lite::{decode, encode};
use cap_proto::v1::WorkerHandshakeRejectionReason as R;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};
use trust_support::*;

fn python() -> String {
    std::env::var("CAP_INTEROP_PYTHON_217").unwrap_or_else(|_| {
        panic!("CAP_INTEROP_PYTHON_217 is not set (a python with cap-sdk-python==2.17.0)")
    })
}

struct Run {
    done: serde_json::Value,
    digests: usize,
}

/// Runs one scenario; `down_after` makes the store fail after that many requests.
async fn run(scenario: &str, down_after: Option<usize>) -> Run {
    let f = Fixture::new();
    let dir =
        std::env::temp_dir().join(format!("cap-trust-peer-{}-{scenario}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("worker.key.pem");
    let public = dir.join("scheduler.pem");
    std::fs::write(&key, f.worker_key.to_pem().unwrap()).unwrap();
    std::fs::write(&public, f.scheduler_key.public_key().to_pem().unwrap()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peer/trust_peer.py");
    let mut child = Command::new(python())
        .arg(&script)
        .arg(scenario)
        .arg(&key)
        .arg(&public)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the peer");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut served = 0;
    let mut digests = 0;
    let done = loop {
        let line = lines.next().expect("the peer ended early").unwrap();
        let msg: serde_json::Value = serde_json::from_str(&line).unwrap();
        let data = msg["data"].as_str().map(decode);
        match msg["op"].as_str().unwrap() {
            "done" => break msg,
            "digest" => {
                // The peer's digest = SHA-256(domain || 0 || deterministic unsigned bytes).
                let (_, transcript) =
                    cap_sign::transcript::handshake_transcript(&data.unwrap()).unwrap();
                let ours = Sha256::digest(&transcript);
                assert_eq!(
                    hex(&ours),
                    msg["digest"].as_str().unwrap(),
                    "digest of a packet differs"
                );
                digests += 1;
            }
            op => {
                if down_after == Some(served) {
                    f.store.set_unavailable(true);
                }
                served += 1;
                let at = SystemTime::now() + Duration::from_secs(msg["at"].as_u64().unwrap_or(0));
                let reply = f
                    .server
                    .handle(
                        if op == "challenge" {
                            cap_proto::subject::WORKER_HANDSHAKE_CHALLENGE
                        } else {
                            cap_proto::subject::WORKER_HANDSHAKE_AUTHENTICATE
                        },
                        &data.unwrap(),
                        at,
                    )
                    .await
                    .unwrap();
                // Whatever we answer is signed by the scheduler and well formed.
                reason(&reply, &f.scheduler_key);
                let answer = serde_json::json!({ "reply": encode(&reply.bytes) });
                writeln!(stdin, "{answer}").unwrap();
            }
        }
    };
    drop(stdin);
    assert!(child.wait().unwrap().success(), "the peer failed");
    let _ = std::fs::remove_dir_all(&dir);
    Run { done, digests }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
#[ignore = "needs cap-sdk-python 2.17.0 (CAP_INTEROP_PYTHON_217): run by .ci/run"]
async fn the_peer_gets_and_renews_a_session_and_digests_match() {
    let r = run("ok", None).await;
    assert_eq!(r.digests, 4, "request, challenge, authenticate, result");
    let first = r.done["first"]["token"].as_str().expect("a session");
    let second = r.done["second"]["token"]
        .as_str()
        .expect("a renewed session");
    assert!(first.starts_with("cap-ws.") && second.starts_with("cap-ws."));
    assert_ne!(first, second, "renewal rotates the token");
}

/// A defect the peer made; the reason we answered; for authenticate-phase defects,
/// the reason the peer read from our signed result (`None`: the peer's checks stop
/// earlier, as for a challenge-phase refusal, which its API cannot read).
async fn refused(scenario: &str, want: R, peer_reads: bool) {
    let down = (scenario == "internal").then_some(1);
    let r = run(scenario, down).await;
    assert_eq!(r.done["reason"], want as i32, "{scenario}: {}", r.done);
    if peer_reads {
        assert_eq!(r.done["peer_reason"], want as i32, "{scenario}: {}", r.done);
    } else {
        assert!(r.done.get("token").is_none(), "{scenario}: {}", r.done);
    }
    if let Some(parses) = r.done.get("peer_parses") {
        assert_eq!(
            parses, true,
            "the peer's codec refuses our refusal: {}",
            r.done
        );
    }
}

#[tokio::test]
#[ignore = "needs cap-sdk-python 2.17.0 (CAP_INTEROP_PYTHON_217): run by .ci/run"]
async fn peer_made_challenge_requests_are_refused_with_the_right_reason() {
    for (scenario, want) in [
        ("tampered", R::AuthenticationFailed),
        ("wrong_key", R::AuthenticationFailed),
        ("unknown_key", R::AuthenticationFailed),
        ("wrong_audience", R::AuthenticationFailed),
        ("identity", R::AuthenticationFailed),
        ("skewed", R::ClockSkew),
        ("unknown_field", R::InvalidRequest),
        ("version_2", R::UnsupportedVersion),
        ("version_999", R::UnsupportedVersion),
        ("payload_version_2", R::UnsupportedVersion),
        ("replayed_request", R::ReplayDetected),
    ] {
        refused(scenario, want, false).await;
    }
}

#[tokio::test]
#[ignore = "needs cap-sdk-python 2.17.0 (CAP_INTEROP_PYTHON_217): run by .ci/run"]
async fn peer_made_authenticates_are_refused_and_the_peer_reads_the_reason() {
    for (scenario, want, peer_reads) in [
        ("expired", R::ChallengeExpired, true),
        ("replayed", R::ReplayDetected, true),
        ("session_required", R::SessionRequired, true),
        ("session_invalid", R::SessionInvalid, true),
        ("auth_version_999", R::UnsupportedVersion, false),
        ("internal", R::InternalError, true),
        // The refusal names the altered challenge the peer sent, which its own
        // correlation check then refuses before reading the reason.
        ("nonce", R::AuthenticationFailed, false),
    ] {
        refused(scenario, want, peer_reads).await;
    }
}

/// Standard base64 (the peer's `base64.b64encode`), without a dependency.
mod base64_lite {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(b: &[u8]) -> String {
        let mut s = String::new();
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    s.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    pub fn decode(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut acc = 0u32;
        let mut bits = 0;
        for ch in s.bytes().filter(|&c| c != b'=') {
            let v = A.iter().position(|&a| a == ch).expect("base64") as u32;
            acc = (acc << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        out
    }

    #[test]
    fn round_trip() {
        for n in 0u8..40 {
            let b: Vec<u8> = (0..n).map(|i: u8| i.wrapping_mul(37)).collect();
            assert_eq!(decode(&encode(&b)), b);
        }
        assert_eq!(encode(b"hi"), "aGk=");
    }
}
