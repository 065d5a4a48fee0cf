//! The `cap` commands as separate processes on real NATS and Redis: `cap scheduler`,
//! `cap worker echo`, `cap submit` through the scheduler, `cap tail`. Run by `.ci/run`
//! (`cargo test -- --ignored`); fails when NATS or Redis is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cap(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cap"));
    // Core NATS: no durable state left on the shared server by this test.
    c.args(args)
        .env("CAP_JETSTREAM", "off")
        .env("CAP_LOG", "warn");
    c
}

fn spawn(args: &[&str]) -> Killed {
    Killed(
        cap(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
#[ignore = "needs real NATS and Redis: run by .ci/run"]
fn scheduler_worker_submit_and_tail_as_processes() {
    let tag: String = format!("{:x}", std::process::id() ^ 0x5ca1ab1e);
    let topic = format!("job.cli{tag}");
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/demo/policy.yaml");
    let sched_id = format!("sched-{tag}");
    let _scheduler = spawn(&["scheduler", "--policy", policy, "--id", &sched_id]);
    let _worker = spawn(&["worker", "echo", "--topic", &topic]);
    let mut tail = spawn(&["tail", "sys.job.result", "sys.job.submit"]);
    std::thread::sleep(Duration::from_millis(1500));

    let out = cap(&[
        "submit",
        "--topic",
        &topic,
        "--input",
        r#"{"hello":"scheduler"}"#,
        "--wait",
        "--timeout",
        "20",
    ])
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "submit failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("scheduler"), "{stdout}");
    assert!(stdout.contains("SUCCEEDED"), "{stdout}");

    // A denied topic comes back DENIED from the scheduler (exit 1).
    let out = cap(&[
        "submit",
        "--topic",
        "job.demo.forbidden.x",
        "--input",
        "{}",
        "--wait",
        "--timeout",
        "20",
    ])
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("DENIED"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::thread::sleep(Duration::from_millis(300));
    let _ = tail.0.kill();
    let mut seen = String::new();
    tail.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut seen)
        .unwrap();
    let lines: Vec<serde_json::Value> = seen
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().any(|l| l["subject"] == "sys.job.submit"
            && l["packet"]["jobRequest"]["topic"] == topic.as_str()),
        "{seen}"
    );
    assert!(
        lines.iter().any(|l| l["subject"] == "sys.job.result"
            && l["packet"]["jobResult"]["status"] == "JOB_STATUS_SUCCEEDED"),
        "{seen}"
    );
}
