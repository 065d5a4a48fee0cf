//! `cap sign --profile production` and `cap verify --profile production`: the upstream
//! fixture, round trips, rejections and exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn cap(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cap"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cap-cli-prod-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64"),
        }
    };
    let clean: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// The upstream fixture's raw bytes, written to `dir`, and its public key file.
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let v: serde_json::Value = serde_json::from_str(include_str!(
        "../../cap-sign/tests/fixtures/production-signing-v1.json"
    ))
    .unwrap();
    let raw = dir.join("fixture.bin");
    std::fs::write(&raw, base64(v["raw_base64"].as_str().unwrap())).unwrap();
    let pem = dir.join("vector.pem");
    std::fs::write(&pem, v["public_key_pem"].as_str().unwrap()).unwrap();
    (raw, pem)
}

const INSIDE: &str = "2098-12-31T23:56:00Z";

#[test]
fn upstream_fixture_verifies_with_now_inside_its_window() {
    let dir = temp("fixture");
    let (raw, pem) = fixture(&dir);
    let key = format!("vector-key={}", pem.display());
    let raw = raw.to_str().unwrap();
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "verify",
            "--profile",
            "production",
            "--key",
            &key,
            "--audience",
            "sys.job.vector",
        ];
        args.extend_from_slice(extra);
        args.push(raw);
        cap(&args, b"")
    };
    let ok = verify(&[
        "--tenant",
        "tenant-vector",
        "--sender",
        "worker-vector",
        "--now",
        INSIDE,
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let out = text(&ok.stdout);
    assert!(
        out.starts_with("valid: CAP-PRODUCTION signature by key `vector-key`"),
        "{out}"
    );
    assert!(
        out.contains("message id 30313233343536373839616263646566"),
        "{out}"
    );
    assert!(out.contains("expires 2099-01-01T00:00:00Z"), "{out}");

    // Today is more than 5 minutes before the expiry; just after it, it has expired.
    let now = verify(&["--tenant", "tenant-vector", "--sender", "worker-vector"]);
    assert_eq!(now.status.code(), Some(1));
    assert!(
        text(&now.stderr).contains("lifetime exceeds"),
        "{}",
        text(&now.stderr)
    );
    let late = verify(&[
        "--tenant",
        "tenant-vector",
        "--sender",
        "worker-vector",
        "--now",
        "2099-01-01T00:00:00Z",
    ]);
    assert_eq!(late.status.code(), Some(1));
    assert!(
        text(&late.stderr).contains("signature expired"),
        "{}",
        text(&late.stderr)
    );
    // A minute of skew keeps it valid a little longer.
    let skewed = verify(&[
        "--tenant",
        "tenant-vector",
        "--sender",
        "worker-vector",
        "--skew",
        "60",
        "--now",
        "2099-01-01T00:00:30Z",
    ]);
    assert_eq!(skewed.status.code(), Some(0), "{}", text(&skewed.stderr));
    // Another tenant, another sender.
    for (t, s, why) in [
        (
            "tenant-other",
            "worker-vector",
            "tenant `tenant-vector` is not `tenant-other`",
        ),
        (
            "tenant-vector",
            "worker-other",
            "sender `worker-vector` is not `worker-other`",
        ),
    ] {
        let bad = verify(&["--tenant", t, "--sender", s, "--now", INSIDE]);
        assert_eq!(bad.status.code(), Some(1));
        assert!(text(&bad.stderr).contains(why), "{}", text(&bad.stderr));
    }
    // The packet's own claims, said to be unchecked.
    let claimed = verify(&["--accept-packet-identity", "--now", INSIDE]);
    assert_eq!(claimed.status.code(), Some(0), "{}", text(&claimed.stderr));
    assert!(text(&claimed.stdout).contains("for tenant `tenant-vector`"));
    assert!(text(&claimed.stderr).contains("taken from the packet"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fixture_rejections_and_usage_errors() {
    let dir = temp("rejections");
    let (raw, pem) = fixture(&dir);
    let key = format!("vector-key={}", pem.display());
    let bytes = std::fs::read(&raw).unwrap();
    let run = |key: &str, audience: &str, input: &[u8]| {
        cap(
            &[
                "verify",
                "--profile",
                "production",
                "--key",
                key,
                "--audience",
                audience,
                "--tenant",
                "tenant-vector",
                "--sender",
                "worker-vector",
                "--now",
                INSIDE,
            ],
            input,
        )
    };
    let wrong_audience = run(&key, "sys.job.other", &bytes);
    assert_eq!(wrong_audience.status.code(), Some(1));
    assert!(text(&wrong_audience.stderr).contains("audience"));
    let wrong_id = run(
        &format!("other-key={}", pem.display()),
        "sys.job.vector",
        &bytes,
    );
    assert_eq!(wrong_id.status.code(), Some(1));
    assert!(text(&wrong_id.stderr).contains("no trusted key with id `vector-key`"));
    let mut tampered = bytes.clone();
    let at = tampered.windows(7).position(|w| w == b"fixture").unwrap();
    tampered[at] ^= 0x20;
    let t = run(&key, "sys.job.vector", &tampered);
    assert_eq!(t.status.code(), Some(1));
    assert!(
        text(&t.stderr).contains("does not verify"),
        "{}",
        text(&t.stderr)
    );
    // protocol_version (0x20 0x01) re-encoded as 0x81 0x00: still a BusPacket, refused.
    let v = bytes.windows(2).position(|w| w == [0x20, 0x01]).unwrap();
    let mut long = bytes[..v + 1].to_vec();
    long.extend_from_slice(&[0x81, 0x00]);
    long.extend_from_slice(&bytes[v + 2..]);
    let l = run(&key, "sys.job.vector", &long);
    assert_eq!(l.status.code(), Some(1));
    assert!(
        text(&l.stderr).contains("non-minimal varint"),
        "{}",
        text(&l.stderr)
    );

    // Usage errors: exit 2.
    let pem_only = pem.to_str().unwrap();
    assert_eq!(
        run(pem_only, "sys.job.vector", &bytes).status.code(),
        Some(2)
    );
    assert_eq!(
        run("vector-key=/nonexistent.pem", "sys.job.vector", &bytes)
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run(&key, "sys.job.vector", &bytes[..bytes.len() - 3])
            .status
            .code(),
        Some(2),
        "not a BusPacket"
    );
    let code = |args: &[&str]| cap(args, &bytes).status.code();
    let base = ["verify", "--profile", "production", "--key", &key];
    assert_eq!(code(&base), Some(2), "no --audience");
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(&["--audience", "sys.job.vector"]);
        a.extend_from_slice(extra);
        code(&a)
    };
    assert_eq!(with(&["--now", INSIDE]), Some(2), "no tenant/sender");
    assert_eq!(
        with(&["--tenant", "t", "--sender", "s", "--now", "soon"]),
        Some(2)
    );
    assert_eq!(
        with(&["--tenant", "t", "--accept-packet-identity", "--now", INSIDE]),
        Some(2)
    );
    assert_eq!(
        with(&["--tenant", "t", "--sender", "s", "--skew", "61"]),
        Some(2)
    );
    // Production flags without --profile production.
    assert_eq!(
        code(&["verify", "--key", pem_only, "--audience", "sys.job.vector"]),
        Some(2)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// An unsigned JobRequest packet (trace "t", sender "sched", tenant "acme"), canonical.
fn job_request_packet() -> Vec<u8> {
    let json = r#"{"traceId":"t","senderId":"sched","protocolVersion":1,
        "createdAt":"2024-01-01T00:00:00Z",
        "identity":{"tenantId":"acme","principalId":"alice"},
        "jobRequest":{"jobId":"j-1","topic":"job.echo","tenantId":"acme","principalId":"alice"}}"#;
    let out = cap(&["encode", "--type", "BusPacket"], json.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    out.stdout
}

#[test]
fn sign_then_verify_and_profiles_do_not_mix() {
    let dir = temp("roundtrip");
    let d = dir.to_str().unwrap();
    assert!(
        cap(&["keygen", "--out", d, "--name", "sched"], b"")
            .status
            .success()
    );
    let private = format!("{d}/sched.key.pem");
    let public = format!("{d}/sched.pem");
    let unsigned = job_request_packet();
    let signed = cap(
        &[
            "sign",
            "--profile",
            "production",
            "--key",
            &private,
            "--key-id",
            "sched-2026",
            "--audience",
            "job.echo",
            "--lifetime",
            "60",
        ],
        &unsigned,
    );
    assert_eq!(signed.status.code(), Some(0), "{}", text(&signed.stderr));
    let key = format!("sched-2026={public}");
    let verify = |input: &[u8], audience: &str| {
        cap(
            &[
                "verify",
                "--profile",
                "production",
                "--key",
                &key,
                "--audience",
                audience,
                "--tenant",
                "acme",
                "--sender",
                "sched",
            ],
            input,
        )
    };
    let ok = verify(&signed.stdout, "job.echo");
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert_eq!(verify(&signed.stdout, "job.other").status.code(), Some(1));
    // A production packet is not a legacy one, and the other way round.
    let legacy = cap(&["verify", "--key", &public], &signed.stdout);
    assert_eq!(legacy.status.code(), Some(1), "{}", text(&legacy.stderr));
    let legacy_signed = cap(&["sign", "--key", &private], &unsigned);
    assert!(legacy_signed.status.success());
    let refused = verify(&legacy_signed.stdout, "job.echo");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("no signature metadata"),
        "{}",
        text(&refused.stderr)
    );

    // Reproducible signing for fixtures: fixed instant and message id.
    let fixed = cap(
        &[
            "sign",
            "--profile",
            "production",
            "--key",
            &private,
            "--key-id",
            "sched-2026",
            "--audience",
            "job.echo",
            "--issued-at",
            "2030-01-01T00:00:00Z",
            "--message-id",
            "00112233445566778899aabbccddeeff",
        ],
        &unsigned,
    );
    assert_eq!(fixed.status.code(), Some(0), "{}", text(&fixed.stderr));
    let at = |now: &str| {
        cap(
            &[
                "verify",
                "--profile",
                "production",
                "--key",
                &key,
                "--audience",
                "job.echo",
                "--tenant",
                "acme",
                "--sender",
                "sched",
                "--now",
                now,
            ],
            &fixed.stdout,
        )
    };
    let ok = at("2030-01-01T00:04:59Z");
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("message id 00112233445566778899aabbccddeeff"));
    assert!(text(&ok.stdout).contains("expires 2030-01-01T00:05:00Z"));
    assert_eq!(at("2030-01-01T00:05:00Z").status.code(), Some(1));

    // Sign usage errors and refused input.
    let sign = |extra: &[&str], input: &[u8]| {
        let mut a = vec!["sign", "--profile", "production", "--key", &private];
        a.extend_from_slice(extra);
        cap(&a, input)
    };
    let both = ["--key-id", "k", "--audience", "job.echo"];
    assert_eq!(sign(&["--key-id", "k"], &unsigned).status.code(), Some(2));
    assert_eq!(
        sign(&[&both[..], &["--lifetime", "301"]].concat(), &unsigned)
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        sign(&[&both[..], &["--message-id", "abc"]].concat(), &unsigned)
            .status
            .code(),
        Some(2)
    );
    let mut with_unknown = unsigned.clone();
    with_unknown.extend_from_slice(&[0x38, 0x01]); // BusPacket field 7
    let u = sign(&both, &with_unknown);
    assert_eq!(u.status.code(), Some(1));
    assert!(
        text(&u.stderr).contains("does not know"),
        "{}",
        text(&u.stderr)
    );
    assert_eq!(
        cap(&["sign", "--key", &private, "--key-id", "k"], &unsigned)
            .status
            .code(),
        Some(2),
        "--key-id needs --profile production"
    );
    std::fs::remove_dir_all(&dir).ok();
}
