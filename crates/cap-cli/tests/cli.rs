//! The `cap` binary end to end: codec, schema, validate, keygen/sign/verify, exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn cap(args: &[&str], stdin: &[u8]) -> Output {
    cap_with_env(args, &[], stdin)
}

fn cap_with_env(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cap"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that exits before reading its input (a usage error) closes the pipe:
    // that is not a test failure, the exit status tells.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// Runs `cap demo … --json` with `env`, which must succeed, and reads its report.
fn demo_json(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let out = cap_with_env(args, env, b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Peer-produced packets (cap-sdk-python 2.10.0), one per payload type and more.
fn peer_packets() -> Vec<(String, Vec<u8>)> {
    include_str!("../../cap-proto/tests/vectors/peer-2.10.0.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "cordum.agent.v1.BusPacket" && v["hex"] != "")
        .map(|v| {
            (
                v["name"].as_str().unwrap().to_owned(),
                unhex(v["hex"].as_str().unwrap()),
            )
        })
        .collect()
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cap-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn decode_prints_every_peer_payload_type_and_encode_round_trips() {
    let mut kinds = std::collections::HashSet::new();
    for (name, bytes) in peer_packets() {
        let out = cap(&["decode"], &bytes);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for k in [
            "jobRequest",
            "jobResult",
            "heartbeat",
            "alert",
            "jobProgress",
            "jobCancel",
            "handshake",
        ] {
            if json.get(k).is_some() {
                kinds.insert(k);
            }
        }
        let compact = cap(&["decode", "--compact"], &bytes);
        assert_eq!(compact.stdout.iter().filter(|b| **b == b'\n').count(), 1);
        let back = cap(&["encode"], &compact.stdout);
        assert!(back.status.success());
        if name == "heartbeat_negative" {
            // Its cpu_load is -0.0, which the JSON mapping cannot carry (CONFORMANCE.md).
            continue;
        }
        assert_eq!(back.stdout, bytes, "{name}: encode(decode(x)) == x");
    }
    assert_eq!(kinds.len(), 7);
}

#[test]
fn bad_input_exits_1_with_one_line_and_usage_exits_2() {
    let out = cap(&["decode"], &[0xff, 0xff]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("cap: ") && err.contains("varint"), "{err}");

    let out = cap(&["encode"], br#"{"traceId": 5}"#);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("line 1 column"), "{err}");

    let out = cap(&["decode", "--no-such-flag"], b"");
    assert_eq!(out.status.code(), Some(2));

    // Invalid UTF-8 inside a string field: says which field.
    let out = cap(&["decode"], &[0x0a, 0x02, 0xc3, 0x28]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("trace_id"));

    // An unknown payload (field 23).
    let out = cap(&["decode"], &[0x0a, 0x01, b't', 0xba, 0x01, 0x00]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown payload"));
}

#[test]
fn validate_lists_violations_with_paths() {
    let (_, good) = peer_packets()
        .into_iter()
        .find(|(n, _)| n == "job_cancel")
        .unwrap();
    let out = cap(&["validate"], &good);
    assert_eq!(out.status.code(), Some(0));
    // priority -1 and step_index -7: the peer encodes them, we flag them.
    let (_, bad) = peer_packets()
        .into_iter()
        .find(|(n, _)| n == "job_request_negative")
        .unwrap();
    let out = cap(&["validate"], &bad);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("job_request.priority"), "{text}");
    assert!(text.contains("job_request.step_index"), "{text}");
    assert!(text.contains("job_request.topic"), "{text}");
}

#[test]
fn schema_for_one_and_all_messages() {
    let out = cap(&["schema", "JobRequest"], b"");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["$defs"]["cordum.agent.v1.JobRequest"]["properties"]["contextPtr"].is_object());
    let all = cap(&["schema"], b"");
    let v: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap();
    assert!(v["$defs"]["cordum.agent.v1.BusPacket"].is_object());
    assert_eq!(cap(&["schema", "Nope"], b"").status.code(), Some(1));
}

#[test]
fn keygen_sign_verify_and_exit_codes() {
    let dir = temp("keys");
    let d = dir.to_str().unwrap();
    assert!(
        cap(&["keygen", "--out", d, "--name", "client-1"], b"")
            .status
            .success()
    );
    assert!(
        cap(&["keygen", "--out", d, "--name", "other"], b"")
            .status
            .success()
    );
    let private = format!("{d}/client-1.key.pem");
    let public = format!("{d}/client-1.pem");
    let other = format!("{d}/other.pem");

    let (_, unsigned) = peer_packets()
        .into_iter()
        .find(|(n, _)| n == "job_request_full")
        .unwrap();
    let signed = cap(&["sign", "--key", &private, "--now"], &unsigned);
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );

    assert_eq!(
        cap(&["verify", "--key", &public], &signed.stdout)
            .status
            .code(),
        Some(0)
    );
    let wrong = cap(&["verify", "--key", &other], &signed.stdout);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("does not verify"));
    // The trust dir maps sender_id → key; the packet's sender is `sender-1`.
    let trust = temp("trust");
    std::fs::copy(&public, trust.join("sender-1.pem")).unwrap();
    let t = trust.to_str().unwrap();
    assert_eq!(
        cap(&["verify", "--trust", t], &signed.stdout).status.code(),
        Some(0)
    );
    std::fs::rename(trust.join("sender-1.pem"), trust.join("someone-else.pem")).unwrap();
    let unknown = cap(&["verify", "--trust", t], &signed.stdout);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no trusted key"));
    // Unsigned → 1; truncated → 2; unreadable key → 2.
    assert_eq!(
        cap(&["verify", "--key", &public], &unsigned).status.code(),
        Some(1)
    );
    let truncated = &signed.stdout[..signed.stdout.len() - 5];
    assert_eq!(
        cap(&["verify", "--key", &public], truncated).status.code(),
        Some(2)
    );
    assert_eq!(
        cap(&["verify", "--key", "/nonexistent.pem"], &signed.stdout)
            .status
            .code(),
        Some(2)
    );
    // A private key where a public one is expected is unreadable as a public key.
    assert_eq!(
        cap(&["verify", "--key", &private], &signed.stdout)
            .status
            .code(),
        Some(2)
    );
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&trust).ok();
}

#[test]
fn bench_sign_prints_json() {
    let out = cap(&["bench", "sign", "--seconds", "0.1", "--json"], b"");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["sign_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["verify_per_sec"].as_f64().unwrap() > 0.0);
}

#[test]
fn demo_runs_every_path_and_checks_the_outcomes() {
    let out = cap(&["demo"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "SCHEDULED → DENIED",
        "RUNNING → FAILED_RETRYABLE",
        "FAILED_RETRYABLE → DISPATCHED",
        "RUNNING → TIMEOUT",
        "RUNNING → CANCELLED",
        "RUNNING → FAILED_FATAL",
        ".compensate",
        // The zombie: its attempt timed out; its late reports are refused.
        "progress of a inactive attempt refused",
        "result of a inactive attempt refused",
        "late progress            REFUSED",
        "late result              REFUSED",
        "every job ended as the protocol says",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

#[test]
fn demo_throughput_batch_prints_json() {
    let out = cap(&["demo", "--jobs", "500", "--json"], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["succeeded"], 500);
    assert_eq!(v["failed"], 0);
    assert!(v["jobs_per_sec"].as_f64().unwrap() > 0.0);
}

/// A paired estimate of `rounds` rounds: a positive median inside its interval.
fn assert_paired(p: &serde_json::Value, rounds: u64) {
    assert_eq!(p["rounds"], rounds, "{p}");
    let median = p["median"].as_f64().unwrap();
    let [lo, hi] = [0, 1].map(|i| p["ci95"][i].as_f64().unwrap());
    assert!(median > 0.0 && lo <= median && median <= hi, "{p}");
}

#[test]
fn demo_compares_fencing_on_and_off_in_one_run() {
    let v = demo_json(
        &[
            "demo",
            "--jobs",
            "300",
            "--compare-fencing",
            "--rounds",
            "2",
            "--json",
        ],
        &[],
    );
    assert_eq!(v["rounds"], 2);
    assert_eq!(v["failed"], 0);
    for side in ["fencing_on", "fencing_off"] {
        let s = &v[side];
        assert!(s["median_jobs_per_sec"].as_f64().unwrap() > 0.0, "{v}");
        assert!(s["min_jobs_per_sec"].as_f64() <= s["max_jobs_per_sec"].as_f64());
        assert!(s["p99_ms"]["median"].as_f64().unwrap() > 0.0);
    }
    let cost = v["throughput_cost"].as_f64().unwrap();
    assert_paired(&v["on_off_ratio_paired"], 2);
    assert!((v["on_off_ratio_paired"]["median"].as_f64().unwrap() + cost - 1.0).abs() < 1e-3);
    let usage = cap(&["demo", "--compare-fencing"], b"");
    assert_eq!(usage.status.code(), Some(2), "needs --jobs");
}

#[test]
fn demo_compares_observability_on_and_off_in_one_run() {
    let v = demo_json(
        &[
            "demo",
            "--jobs",
            "300",
            "--compare-observability",
            "--rounds",
            "2",
            "--json",
        ],
        &[],
    );
    assert_eq!(v["rounds"], 2);
    assert_eq!(v["failed"], 0);
    for side in ["observability_on", "observability_off"] {
        let s = &v[side];
        assert!(s["median_jobs_per_sec"].as_f64().unwrap() > 0.0, "{v}");
        assert!(s["min_jobs_per_sec"].as_f64() <= s["max_jobs_per_sec"].as_f64());
    }
    let ratio = v["on_off_ratio"].as_f64().unwrap();
    let cost = v["throughput_cost"].as_f64().unwrap();
    assert!((ratio + cost - 1.0).abs() < 1e-3, "{v}");
    // The cost is the median of the rounds' paired ratios.
    assert_paired(&v["on_off_ratio_paired"], 2);
    assert_eq!(v["on_off_ratio_paired"]["median"].as_f64(), Some(ratio));
    assert_paired(&v["cpu_on_off_ratio_paired"], 2);
    // Every trace sampled by default: six hops' spans per job, exported.
    assert_eq!(v["trace_sample_ratio"], 1.0);
    let spans = v["spans_per_job_on"].as_f64().unwrap();
    assert!((5.9..=6.1).contains(&spans), "{v}");
    for side in ["on", "off"] {
        assert!(v["cpu_us_per_job"][side].as_f64().unwrap() > 0.0, "{v}");
    }

    // No trace sampled: the jobs run, their headers travel, no span is made.
    let v = demo_json(
        &[
            "demo",
            "--jobs",
            "300",
            "--compare-observability",
            "--rounds",
            "1",
            "--json",
        ],
        &[("OTEL_TRACES_SAMPLER", "parentbased_always_off")],
    );
    assert_eq!(v["failed"], 0);
    assert_eq!(v["trace_sample_ratio"], 0.0);
    assert_eq!(v["spans_per_job_on"], 0.0, "{v}");
}

/// Vectors produced by cap-sdk-python 2.17.0: every payload type, the fields added since
/// 2.10.0, trust-handshake packets and policy.proto messages, with the peer's JSON.
fn peer_217_vectors() -> Vec<serde_json::Value> {
    include_str!("../../cap-proto/tests/vectors/peer-2.17.0.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .collect()
}

/// Drops `-0.0` numbers (omitted from our JSON, printed by the peer).
fn without_negative_zero(v: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = v {
        map.retain(|_, x| {
            !(x.as_f64() == Some(0.0) && x.as_f64().is_some_and(f64::is_sign_negative))
        });
        map.values_mut().for_each(without_negative_zero);
    }
}

#[test]
fn decode_and_encode_every_217_message_with_the_peers_json_names() {
    let mut new_fields = std::collections::BTreeSet::new();
    for v in peer_217_vectors() {
        let name = v["name"].as_str().unwrap();
        let ty = v["type"].as_str().unwrap();
        if name == "empty_packet" {
            continue; // no payload: refused (bad_input_exits_1_…)
        }
        let bytes = unhex(v["hex"].as_str().unwrap());
        let out = cap(&["decode", "--type", ty, "--compact"], &bytes);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut theirs: serde_json::Value =
            serde_json::from_str(v["json"].as_str().unwrap()).unwrap();
        without_negative_zero(&mut theirs);
        assert_eq!(ours, theirs, "{name}: our JSON is the peer's MessageToJson");
        let text = String::from_utf8(out.stdout.clone()).unwrap();
        for f in [
            "\"identity\"",
            "\"signatureMetadata\"",
            "\"dispatch\"",
            "\"contextRef\"",
            "\"resultRef\"",
            "\"artifactRefs\"",
            "\"inputRef\"",
            "\"redactedContextRef\"",
            "\"workerHandshakeChallenge\"",
            "\"toolInputRedacted\"",
        ] {
            if text.contains(f) {
                new_fields.insert(f);
            }
        }
        let back = cap(&["encode", "--type", ty], &out.stdout);
        assert!(
            back.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&back.stderr)
        );
        if name != "heartbeat_negative" {
            assert_eq!(back.stdout, bytes, "{name}: encode(decode(x)) == x");
        }
    }
    assert_eq!(new_fields.len(), 10, "{new_fields:?}");
}

/// The peer's `job_request_217` packet (every new field, prefix-key maps).
fn job_request_217() -> Vec<u8> {
    let v = peer_217_vectors()
        .into_iter()
        .find(|v| v["name"] == "job_request_217")
        .unwrap();
    unhex(v["hex"].as_str().unwrap())
}

#[test]
fn decode_shows_non_strict_bytes_and_validate_rejects_them() {
    let good = job_request_217();
    assert_eq!(cap(&["validate"], &good).status.code(), Some(0));
    // protocol_version (`20 01`) as the two-byte varint `20 81 00`.
    let at = good.windows(2).position(|w| w == [0x20, 0x01]).unwrap();
    let mut varint = good[..at].to_vec();
    varint.extend_from_slice(&[0x20, 0x81, 0x00]);
    varint.extend_from_slice(&good[at + 2..]);
    // A second payload: a JobCancel (field 16) after the JobRequest.
    let mut two = good.clone();
    two.extend_from_slice(&[0x82, 0x01, 0x05, 0x0a, 0x03, b'j', b'-', b'2']);
    for (what, bytes, shown) in [
        ("varint", &varint, "jobRequest"),
        ("two payloads", &two, "jobCancel"),
    ] {
        let out = cap(&["decode", "--compact"], bytes);
        assert_eq!(out.status.code(), Some(0), "{what}");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(json.get(shown).is_some(), "{what}: {json}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("receivers drop this packet"), "{what}: {err}");
        let out = cap(&["validate"], bytes);
        assert_eq!(out.status.code(), Some(1), "{what}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("encoding: ") && text.contains("ERROR_CODE_PROTOCOL_MALFORMED_PACKET"),
            "{what}: {text}"
        );
    }
    // The two-payload packet's last payload (a cancel without requested_by) is also
    // checked as the packet a plain parser would see.
    let text = String::from_utf8(cap(&["validate"], &two).stdout).unwrap();
    assert!(text.contains("job_cancel.requested_by"), "{text}");
}

#[test]
fn validate_applies_the_217_receive_rules() {
    let trust = peer_217_vectors()
        .into_iter()
        .find(|v| v["name"] == "trust_challenge")
        .unwrap();
    let mut bytes = unhex(trust["hex"].as_str().unwrap());
    // The peer's vector is unsigned: a challenge must be signed.
    let out = cap(&["validate"], &bytes);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "signature: a challenge must be signed (ERROR_CODE_PROTOCOL_MALFORMED_PACKET)"
    );
    // An unknown field in a trust packet.
    bytes.extend_from_slice(&[0xb8, 0x01, 0x01]);
    let text = String::from_utf8(cap(&["validate"], &bytes).stdout).unwrap();
    assert!(text.contains("unknown_fields:"), "{text}");
    // A result whose worker_id is not its sender.
    let (_, result) = peer_packets()
        .into_iter()
        .find(|(n, _)| n == "job_result")
        .unwrap();
    let text = String::from_utf8(cap(&["validate"], &result).stdout).unwrap();
    assert!(
        text.contains("job_result.worker_id: must equal the packet's sender_id"),
        "{text}"
    );
}

#[test]
fn schema_covers_the_217_messages_and_fields() {
    for (message, field) in [
        ("JobRequest", "identity"),
        ("JobRequest", "contextRef"),
        ("JobResult", "artifactRefs"),
        ("BusPacket", "signatureMetadata"),
        ("ResourceRef", "sha256"),
        ("DispatchIdentity", "attempt"),
        ("Rule", "match"),
        ("PolicyEvaluateRequest", "edgeContext"),
    ] {
        let out = cap(&["schema", message], b"");
        assert!(
            out.status.success(),
            "{message}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let def = &v["$defs"][format!("cordum.agent.v1.{message}")];
        assert!(
            def["properties"][field].is_object(),
            "{message}.{field}: {def}"
        );
    }
}
