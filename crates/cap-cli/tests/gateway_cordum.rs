//! The Cordum control plane's Python client (`cordum-sdk` 0.1.0, CAP_CORDUM_PYTHON)
//! against `cap gateway`, with a `cap scheduler` and `cap worker`s, on a private NATS
//! and the real Redis: submit, poll to SUCCEEDED and read the result, list with
//! pagination, cancel a running job, 404 for an unknown id, 401 without a key, and a
//! tenant never sees another's job.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{Cap, PrivateNats, closed_port, tag, wait_healthy};
use std::process::Command;
use std::time::Duration;

const POLICY: &str = r#"
version: 1
rules:
  - id: allow-jobs
    match: { topics: ["job.*"] }
    decision: allow
"#;

#[test]
#[ignore = "needs NATS, Redis and cordum-sdk 0.1.0 (CAP_CORDUM_PYTHON): run by .ci/run"]
fn the_cordum_python_client_works_against_cap_gateway() {
    let python = std::env::var("CAP_CORDUM_PYTHON")
        .expect("CAP_CORDUM_PYTHON must name a python with cordum-sdk==0.1.0 (cargo xtask interop --setup-only)");
    let nats = PrivateNats::start();
    let t = tag();
    let dir = std::env::temp_dir().join(format!("cap-gw-cordum-{t}"));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let prefix = format!("cap:test:gw:{t}:");
    let echo = format!("job.gw-echo-{t}");
    let slow = format!("job.gw-slow-{t}");
    let port = closed_port();
    let _scheduler = Cap::spawn(
        &nats.url(),
        &[
            "scheduler",
            "--policy",
            policy.to_str().unwrap(),
            "--id",
            &format!("sched-{t}"),
            "--store-prefix",
            &prefix,
        ],
    );
    let _echo = Cap::spawn(&nats.url(), &["worker", "echo", "--topic", &echo]);
    let _slow = Cap::spawn(
        &nats.url(),
        &[
            "worker",
            "echo",
            "--topic",
            &slow,
            "--delay-ms",
            "60000",
            "--grace",
            "0",
        ],
    );
    let (ta, tb) = (format!("tenant-a-{t}"), format!("tenant-b-{t}"));
    let _gateway = Cap::spawn(
        &nats.url(),
        &[
            "gateway",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--api-key",
            &format!("key-a-{t}={ta}"),
            "--api-key",
            &format!("key-b-{t}={tb}"),
            "--store-prefix",
            &prefix,
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    wait_healthy(port, Duration::from_secs(15));
    let metrics = common::metrics_addr(&_gateway);
    // Let the workers' handshakes reach the scheduler.
    std::thread::sleep(Duration::from_millis(800));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peer/cordum_client.py");
    let out = Command::new(&python)
        .arg(script)
        .args([
            &format!("http://127.0.0.1:{port}"),
            &format!("key-a-{t}"),
            &ta,
            &format!("key-b-{t}"),
            &tb,
            &echo,
            &slow,
        ])
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "cordum-sdk checks failed:\n{stdout}\n{stderr}"
    );
    for check in [
        "ok get_job polled to SUCCEEDED",
        "ok paginating lists every job once",
        "ok cancel_job on a running job: CANCELLED",
        "ok unknown id is 404",
        "ok no API key is 401",
        "ok another tenant's job is 404",
    ] {
        assert!(stdout.contains(check), "missing {check:?} in:\n{stdout}");
    }
    // The gateway's /metrics saw those requests, under route patterns (no job ids).
    let text = common::scrape(&metrics);
    let requests = |route: &str, status: &str| -> f64 {
        text.lines()
            .filter(|l| {
                l.starts_with("cap_gateway_requests_total{")
                    && l.contains(&format!("route=\"{route}\""))
                    && l.contains(&format!("status=\"{status}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(requests("/api/v1/jobs", "200") >= 2.0, "{text}");
    assert!(requests("/api/v1/jobs/{id}", "200") >= 1.0, "{text}");
    assert!(requests("/api/v1/jobs/{id}", "404") >= 1.0, "{text}");
    assert!(requests("/api/v1/jobs/{id}/cancel", "200") >= 1.0, "{text}");
    assert!(text.lines().any(|l| l.contains("status=\"401\"")), "{text}");
    assert!(
        text.contains("cap_gateway_request_seconds_bucket"),
        "{text}"
    );
}
