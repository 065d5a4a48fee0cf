//! Start-up order: `cap scheduler` starts while the Safety Kernel is down (its jobs are
//! re-checked, then DENIED: fail closed), and an unreachable Redis is reported by the
//! scheduler and the worker within 3 s with a message naming it. A private nats-server
//! (and the shared Redis for the first test). Run by `.ci/run`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{Cap, PrivateNats};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
#[ignore = "needs nats-server and a real Redis: run by .ci/run"]
fn the_scheduler_starts_with_the_kernel_down_and_denies_after_the_rechecks() {
    let nats = PrivateNats::start();
    let t = common::tag();
    let topic = format!("job.kd{t}");
    let kernel = format!("http://127.0.0.1:{}", common::closed_port());
    let _scheduler = Cap::spawn(
        &nats.url(),
        &["scheduler", "--safety", &kernel, "--id", &format!("s-{t}")],
    );
    let worker = Cap::spawn(&nats.url(), &["worker", "echo", "--topic", &topic]);
    worker.wait_for_line("ready", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_cap"))
        .args([
            "submit",
            "--topic",
            &topic,
            "--input",
            "{}",
            "--wait",
            "--timeout",
            "30",
        ])
        .env("NATS_URL", nats.url())
        .env("REDIS_URL", common::redis_url())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("DENIED"), "{stdout} {stderr}");
    assert!(stdout.contains("safety kernel unreachable"), "{stdout}");
    eprintln!("denied after {:?}", started.elapsed());
}

/// Runs `cap <args>` with Redis at a closed port; returns its exit status, stderr and
/// how long it took.
fn with_closed_redis(nats_url: &str, args: &[&str]) -> (Option<i32>, String, Duration, u16) {
    let port = common::closed_port();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_cap"))
        .args(args)
        .env("NATS_URL", nats_url)
        .env("REDIS_URL", format!("redis://127.0.0.1:{port}/0"))
        .env("CAP_JETSTREAM", "off")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
        port,
    )
}

#[test]
#[ignore = "needs nats-server: run by .ci/run"]
fn an_unreachable_redis_is_reported_within_3_s() {
    let nats = PrivateNats::start();
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/demo/policy.yaml");
    for args in [
        &["scheduler", "--policy", policy][..],
        &["worker", "echo", "--topic", "job.noredis"][..],
    ] {
        let (code, stderr, took, port) = with_closed_redis(&nats.url(), args);
        eprintln!("{}: exit {code:?} after {took:?}", args[0]);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(took < Duration::from_secs(3), "{args:?}: took {took:?}");
        assert!(stderr.contains("Redis"), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("127.0.0.1:{port}")),
            "{args:?}: {stderr}"
        );
    }
}
