//! Flags that can never work are usage errors (exit 2, a message on stderr) before any
//! connection is tried.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::Command;

#[test]
fn worker_max_parallel_zero_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_cap"))
        .args(["worker", "echo", "--max-parallel", "0"])
        // Nothing listens here: reaching it would be a different failure (exit 1).
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env("REDIS_URL", "redis://127.0.0.1:1/0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--max-parallel"), "{stderr}");
    assert!(stderr.contains("0"), "{stderr}");
}
