//! Interop with the reference peer, cap-sdk-python 2.10.0: the same keys and the same bytes
//! in Redis, both ways, and the same pointer ↔ key mapping.
//!
//! Needs Redis (REDIS_URL) and the peer's interpreter in CAP_INTEROP_PYTHON.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use bytes::Bytes;
use cap_blob::{BlobStore, Router, pointer};

fn python() -> String {
    std::env::var("CAP_INTEROP_PYTHON").unwrap_or_else(|_| {
        panic!("CAP_INTEROP_PYTHON is not set: run `cargo xtask interop` (it points it at a Python with cap-sdk-python==2.10.0)")
    })
}

/// Runs the peer helper with `args`, `stdin` as its input.
fn peer(args: &[&str], stdin: &[u8]) -> Output {
    let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "peer", "blob_peer.py"]
        .iter()
        .collect();
    let mut child = Command::new(python())
        .arg(&script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run CAP_INTEROP_PYTHON: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn peer_ok(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let out = peer(args, stdin);
    assert!(
        out.status.success(),
        "peer {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    let mut x: u32 = 1;
    let noise: Vec<u8> = (0..1024 * 1024)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect();
    vec![
        (
            "json context",
            br#"{"prompt":"h\u00e9llo \u2603","n":[1,2,3]}"#.to_vec(),
        ),
        ("utf-8 text", "résultat ✓ 結果".as_bytes().to_vec()),
        ("every byte value", (0..=255u8).cycle().take(4096).collect()),
        (
            "invalid utf-8",
            vec![0xff, 0xfe, 0xc0, 0xaf, 0x80, 0x00, b'\r', b'\n'],
        ),
        ("empty", Vec::new()),
        ("1 MiB of noise", noise),
    ]
}

#[tokio::test]
#[ignore = "needs a real Redis and the Python reference peer: run by .ci/run"]
async fn peer_python_sdk_blobs_read_back_byte_for_byte() {
    let version = peer_ok(&["version"], b"");
    assert_eq!(String::from_utf8_lossy(&version).trim(), "2.10.0");
    let url = common::redis_url();
    let store = common::shared_redis().await;
    let router = Router::new().with(store.clone());
    let job = common::unique_prefix("peer-py2rs");
    for (i, (what, data)) in payloads().into_iter().enumerate() {
        // Where the SDK runtime puts a job's result, and a context a Python client wrote.
        for key in [format!("res:{job}-{i}"), format!("ctx:{job}-{i}")] {
            peer_ok(&["write", &url, &key], &data);
            let ptr = String::from_utf8(peer_ok(&["pointer", &key], b"")).unwrap();
            let got = router.get(ptr.trim()).await.unwrap();
            assert_eq!(got.as_ref(), data.as_slice(), "{what} at {key}");
            assert!(store.delete(&key).await.unwrap());
        }
    }
}

#[tokio::test]
#[ignore = "needs a real Redis and the Python reference peer: run by .ci/run"]
async fn peer_blobs_written_here_read_back_in_python_byte_for_byte() {
    let url = common::redis_url();
    let store = common::shared_redis().await;
    let job = common::unique_prefix("peer-rs2py");
    for (i, (what, data)) in payloads().into_iter().enumerate() {
        let job_id = format!("{job}-{i}");
        let ctx = store
            .put_context(&job_id, Bytes::from(data.clone()))
            .await
            .unwrap();
        let res = store
            .put_result(&job_id, Bytes::from(data.clone()))
            .await
            .unwrap();
        assert_eq!(ctx.to_string(), format!("redis://ctx:{job_id}"));
        assert_eq!(res.to_string(), format!("redis://res:{job_id}"));
        // The SDK worker's path: key_from_pointer(context_ptr), then get.
        let got = peer_ok(&["read-ptr", &url, &ctx.to_string()], b"");
        assert_eq!(got, data, "{what} via {ctx}");
        let got = peer_ok(&["read", &url, &format!("res:{job_id}")], b"");
        assert_eq!(got, data, "{what} at res:{job_id}");
        store.delete(&format!("ctx:{job_id}")).await.unwrap();
        store.delete(&format!("res:{job_id}")).await.unwrap();
    }
    // A key we deleted is missing for the SDK too.
    let out = peer(&["read", &url, &format!("res:{job}-0")], b"");
    assert_eq!(out.status.code(), Some(3), "expected missing");
}

#[test]
#[ignore = "needs the Python reference peer: run by .ci/run"]
fn peer_pointer_mapping_matches_the_sdk() {
    for key in [
        "ctx:job-1",
        "res:job-1",
        "ctx:550e8400-e29b-41d4-a716-446655440000",
        "a/b:c",
        "ctx:é",
    ] {
        let theirs = String::from_utf8(peer_ok(&["pointer", key], b"")).unwrap();
        let ours = pointer::for_key(key).unwrap().to_string();
        assert_eq!(theirs.trim(), ours, "pointer of {key}");
        let back = String::from_utf8(peer_ok(&["key", &ours], b"")).unwrap();
        assert_eq!(
            back.trim(),
            pointer::key_from_str(&ours).unwrap(),
            "key of {ours}"
        );
    }
    // What the SDK refuses, we refuse.
    for bad in [
        "",
        "s3://bucket/key",
        "redis://",
        "file:///tmp/x",
        "ctx:job-1",
    ] {
        let out = peer(&["key", bad], b"");
        assert_eq!(out.status.code(), Some(4), "SDK accepted {bad:?}");
        assert!(pointer::key_from_str(bad).is_err(), "we accepted {bad:?}");
    }
}
