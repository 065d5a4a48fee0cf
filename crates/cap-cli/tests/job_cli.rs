//! `cap job …` and `cap approvals …` as processes, over `cap gateway` and straight from
//! the job store, against a `cap scheduler` and a `cap worker` on a private NATS and the
//! real Redis: a job is read, listed and its result printed both ways; a held job is
//! listed and approved from the CLI and then succeeds; a running job is cancelled.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::{Cap, PrivateNats, closed_port, tag, wait_healthy};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `POST /api/v1/jobs` as `key`/`tenant`: the new job's id.
fn submit(port: u16, key: &str, tenant: &str, topic: &str) -> String {
    let body = serde_json::json!({"topic": topic, "prompt": "from the job CLI test"}).to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-Key: {key}\r\nX-Tenant-ID: {tenant}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let v: Value = serde_json::from_str(out.split_once("\r\n\r\n").unwrap().1).unwrap();
    v["job_id"].as_str().unwrap().to_owned()
}

struct Cli {
    nats: String,
    prefix: String,
    gateway: String,
    key: String,
    tenant: String,
}

impl Cli {
    fn run(&self, args: &[&str], over_gateway: bool) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cap"));
        cmd.args(args)
            .args(["--tenant", &self.tenant, "--store-prefix", &self.prefix])
            .env("NATS_URL", &self.nats);
        if over_gateway {
            cmd.args(["--gateway", &self.gateway, "--api-key", &self.key]);
        }
        cmd.output().unwrap()
    }

    fn json(&self, args: &[&str], over_gateway: bool) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all, over_gateway);
        assert!(
            out.status.success(),
            "cap {all:?} (gateway: {over_gateway}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("cap {all:?}: {e}: {}", String::from_utf8_lossy(&out.stdout))
        })
    }

    /// Polls `cap job get` until the job is in `state`.
    fn wait_state(&self, id: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.json(&["job", "get", id], false);
            if v["state"] == state {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never reached {state}: {v}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
#[ignore = "needs NATS and Redis: run by .ci/run"]
fn job_and_approval_commands_over_the_gateway_and_the_store() {
    let nats = PrivateNats::start();
    let t = tag();
    let dir = std::env::temp_dir().join(format!("cap-job-cli-{t}"));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    let held = format!("job.jc-held-{t}");
    let echo = format!("job.jc-echo-{t}");
    let slow = format!("job.jc-slow-{t}");
    std::fs::write(
        &policy,
        format!(
            "version: 1\nrules:\n  - id: sign-off\n    match: {{ topics: [\"{held}\"] }}\n    decision: require_approval\n    reason: needs a human\n  - id: rest\n    match: {{ topics: [\"job.*\"] }}\n    decision: allow\n"
        ),
    )
    .unwrap();
    let prefix = format!("cap:test:jobcli:{t}:");
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
    let _echo = Cap::spawn(
        &nats.url(),
        &["worker", "echo", "--topic", &echo, "--pool", "echo"],
    );
    let _held_worker = Cap::spawn(&nats.url(), &["worker", "echo", "--topic", &held]);
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
    let tenant = format!("acme-{t}");
    let key = format!("key-{t}");
    let _gateway = Cap::spawn(
        &nats.url(),
        &[
            "gateway",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--api-key",
            &format!("{key}={tenant}"),
            "--store-prefix",
            &prefix,
        ],
    );
    wait_healthy(port, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(800));
    let cli = Cli {
        nats: nats.url(),
        prefix,
        gateway: format!("http://127.0.0.1:{port}"),
        key,
        tenant: tenant.clone(),
    };

    // A job that succeeds: the same view over the gateway and from the store.
    let id = submit(port, &cli.key, &tenant, &echo);
    let direct = cli.wait_state(&id, "SUCCEEDED");
    let via = cli.json(&["job", "get", &id], true);
    for field in ["id", "state", "topic", "tenant", "result_ptr"] {
        assert_eq!(direct[field], via[field], "{field}: {direct} vs {via}");
    }
    assert_eq!(via["tenant"], tenant.as_str());
    let result = cli.json(&["job", "result", &id], true);
    assert_eq!(result, cli.json(&["job", "result", &id], false));
    assert!(
        result.to_string().contains("from the job CLI test"),
        "{result}"
    );
    let table = cli.run(&["job", "get", &id], false);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("state      SUCCEEDED"), "{text}");

    // Lists: both ways hold the job; the state filter keeps it out of RUNNING.
    for over in [true, false] {
        let page = cli.json(&["job", "list"], over);
        let ids: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|j| j["id"].as_str())
            .collect();
        assert!(ids.contains(&id.as_str()), "{page}");
        let running = cli.json(&["job", "list", "--state", "RUNNING"], over);
        assert!(!running.to_string().contains(&id), "{running}");
    }

    // A held job: listed by `cap approvals`, approved from the CLI, then it succeeds.
    let held_id = submit(port, &cli.key, &tenant, &held);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = cli.json(&["approvals", "list"], true);
        if list.to_string().contains(&held_id) {
            break;
        }
        assert!(Instant::now() < deadline, "never held: {list}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let not_yet = cli.run(&["job", "result", &held_id], false);
    assert_eq!(not_yet.status.code(), Some(1));
    let answer = cli.json(&["approvals", "approve", &held_id, "--reason", "ok"], true);
    assert_eq!(answer["job_id"], held_id.as_str(), "{answer}");
    let done = cli.wait_state(&held_id, "SUCCEEDED");
    assert!(done["decisions"].to_string().contains("APPROVED"), "{done}");

    // A running job is cancelled from the CLI (straight on the bus).
    let slow_id = submit(port, &cli.key, &tenant, &slow);
    cli.wait_state(&slow_id, "RUNNING");
    let out = cli.run(&["job", "cancel", &slow_id], false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cli.wait_state(&slow_id, "CANCELLED");
    let _ = std::fs::remove_dir_all(&dir);
}
