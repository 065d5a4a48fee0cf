//! cap-sdk-python 2.17.0 through `cap scheduler`, as processes on real NATS and Redis:
//! its `submit_job` (and its `finalize_packet`, for a packet-level identity) to a 2.17.0
//! `Agent` and to `cap worker echo`, with the request's and the envelope's `identity`
//! arriving intact; results the scheduler publishes itself (a duplicate job id, retries
//! exhausted, DENIED) accepted by 2.17.0's receive boundary (`decode_packet`). Run by
//! `.ci/run`; fails when NATS, Redis or `CAP_INTEROP_PYTHON_217` is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python() -> PathBuf {
    match std::env::var_os("CAP_INTEROP_PYTHON_217") {
        Some(p) => PathBuf::from(p),
        None => panic!("CAP_INTEROP_PYTHON_217 is not set: run `cargo xtask interop`"),
    }
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../cap-runtime/tests/peer")
        .join(name)
}

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

fn cap(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cap"));
    // Core NATS (the Python SDK speaks core NATS; nothing durable left on the server).
    c.args(args)
        .env("CAP_JETSTREAM", "off")
        .env("CAP_LOG", "warn")
        .env("NATS_URL", nats_url())
        .env("REDIS_URL", redis_url());
    c
}

fn spawn(mut c: Command) -> Killed {
    Killed(
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Waits for the line `READY` from a peer process.
fn ready(child: &mut Killed) -> BufReader<ChildStdout> {
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "READY", "the peer did not start");
    out
}

/// One scheduler at a time: `cap scheduler`s share the submit and result queue groups,
/// so two of them would take each other's jobs.
static ONE_SCHEDULER: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Env {
    tag: String,
    sched_id: String,
    _scheduler: Killed,
    _turn: std::sync::MutexGuard<'static, ()>,
}

const SCHED_PREFIX: &str = "cap:sched:";

impl Env {
    fn start(name: &str) -> Self {
        let turn = ONE_SCHEDULER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let tag = format!("{name}{:x}", std::process::id());
        let sched_id = format!("sched-{tag}");
        let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/demo/policy.yaml");
        let scheduler = spawn(cap(&["scheduler", "--policy", policy, "--id", &sched_id]));
        Env {
            tag,
            sched_id,
            _scheduler: scheduler,
            _turn: turn,
        }
    }

    fn topic(&self, what: &str) -> String {
        format!("job.p217{what}{}", self.tag)
    }

    /// Runs the peer's `submit_job.py`; its one JSON line.
    fn submit(&self, topic: &str, job_id: &str, extra: &[&str]) -> serde_json::Value {
        let out = Command::new(python())
            .arg(script("submit_job.py"))
            .args([&nats_url(), &redis_url(), topic, job_id, r#"{"n": 7}"#])
            .args(["--sender", "py-client", "--timeout", "25"])
            .args(["--cleanup-scheduler", SCHED_PREFIX])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "submit_job.py failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim()).unwrap()
    }
}

/// Lines `cap tail` printed for `subject` until it is stopped.
fn tail_lines(mut tail: Killed) -> Vec<serde_json::Value> {
    std::thread::sleep(Duration::from_millis(300));
    let _ = tail.0.kill();
    let mut text = String::new();
    tail.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const IDENTITY: &str = "acme,principal-1,alice,delegation-9";

fn identity_json() -> serde_json::Value {
    serde_json::json!({
        "tenantId": "acme",
        "principalId": "principal-1",
        "actorId": "alice",
        "delegationId": "delegation-9",
    })
}

fn settle() {
    // The scheduler and the workers subscribe and announce themselves.
    std::thread::sleep(Duration::from_millis(1500));
}

fn check_dispatches(lines: &[serde_json::Value], job_ids: &[&str], with_envelope: &str) {
    for id in job_ids {
        let dispatch = lines
            .iter()
            .find(|l| l["packet"]["jobRequest"]["jobId"] == *id)
            .unwrap_or_else(|| panic!("no dispatch of {id} seen: {lines:?}"));
        assert_eq!(
            dispatch["packet"]["jobRequest"]["identity"],
            identity_json(),
            "{id}: the request's identity relayed"
        );
        if *id == with_envelope {
            assert_eq!(
                dispatch["packet"]["identity"],
                identity_json(),
                "{id}: the envelope identity relayed"
            );
        }
    }
}

#[test]
#[ignore = "needs cap-sdk-python 2.17.0 (CAP_INTEROP_PYTHON_217), NATS and Redis: run by .ci/run"]
fn peer_217_submit_job_through_cap_scheduler_to_a_217_agent_keeps_identity() {
    let env = Env::start("a");
    let topic = env.topic("agent");
    let mut agent = spawn({
        let mut c = Command::new(python());
        c.arg(script("echo_agent.py")).args([
            &nats_url(),
            &redis_url(),
            &topic,
            &format!("py-agent-{}", env.tag),
            "--report",
        ]);
        c
    });
    let _agent_out = ready(&mut agent);
    let tail = spawn(cap(&["tail", &topic, "worker.*.jobs"]));
    settle();

    let plain = format!("plain-{}", env.tag);
    let v = env.submit(&topic, &plain, &["--identity", IDENTITY]);
    assert_eq!(v["status"], "JOB_STATUS_SUCCEEDED", "{v}");
    assert_eq!(v["boundary_accepted"], true, "{v}");
    assert_eq!(v["output"]["input"], serde_json::json!({"n": 7}));
    assert_eq!(v["output"]["identity"], identity_json(), "{v}");
    assert_eq!(
        v["output"]["sender"],
        env.sched_id.as_str(),
        "dispatched by the scheduler"
    );
    assert_eq!(v["output"]["envelope_identity"], serde_json::Value::Null);

    let enveloped = format!("envelope-{}", env.tag);
    let v = env.submit(
        &topic,
        &enveloped,
        &["--identity", IDENTITY, "--envelope-identity"],
    );
    assert_eq!(v["status"], "JOB_STATUS_SUCCEEDED", "{v}");
    assert_eq!(v["output"]["identity"], identity_json(), "{v}");
    assert_eq!(v["output"]["envelope_identity"], identity_json(), "{v}");
    check_dispatches(&tail_lines(tail), &[&plain, &enveloped], &enveloped);
}

#[test]
#[ignore = "needs cap-sdk-python 2.17.0 (CAP_INTEROP_PYTHON_217), NATS and Redis: run by .ci/run"]
fn peer_217_submit_job_through_cap_scheduler_to_cap_worker_keeps_identity() {
    let env = Env::start("w");
    let topic = env.topic("worker");
    let worker_id = format!("rs-worker-{}", env.tag);
    let _worker = spawn(cap(&[
        "worker", "echo", "--topic", &topic, "--id", &worker_id,
    ]));
    let tail = spawn(cap(&["tail", &topic, "worker.*.jobs"]));
    settle();
    let job = format!("ours-{}", env.tag);
    let v = env.submit(
        &topic,
        &job,
        &["--identity", IDENTITY, "--envelope-identity"],
    );
    assert_eq!(v["status"], "JOB_STATUS_SUCCEEDED", "{v}");
    assert_eq!(v["worker_id"], worker_id.as_str());
    assert_eq!(v["boundary_accepted"], true, "{v}");
    assert_eq!(v["output"], serde_json::json!({"n": 7}));
    check_dispatches(&tail_lines(tail), &[&job], &job);

    // The same job id again, after the end: the scheduler announces the outcome itself,
    // under its own id, and 2.17.0 accepts it.
    let again = env.submit(&topic, &job, &["--no-context"]);
    assert_eq!(again["status"], "JOB_STATUS_SUCCEEDED", "{again}");
    assert_eq!(again["sender_id"], env.sched_id.as_str(), "{again}");
    assert_eq!(again["worker_id"], env.sched_id.as_str(), "{again}");
    assert_eq!(again["boundary_accepted"], true, "{again}");
    assert!(
        again["error_message"]
            .as_str()
            .unwrap()
            .contains(&worker_id),
        "{again}"
    );
}

#[test]
#[ignore = "needs cap-sdk-python 2.17.0 (CAP_INTEROP_PYTHON_217), NATS and Redis: run by .ci/run"]
fn peer_217_accepts_the_schedulers_own_results() {
    let env = Env::start("r");
    let topic = env.topic("flaky");
    let flaky_id = format!("py-flaky-{}", env.tag);
    let mut flaky = spawn({
        let mut c = Command::new(python());
        c.arg(script("flaky_worker.py"))
            .args([&nats_url(), &topic, &flaky_id]);
        c
    });
    let attempts = ready(&mut flaky);
    settle();
    // Retries exhausted: four attempts by a 2.17.0 worker, then the scheduler's FAILED.
    let job = format!("flaky-{}", env.tag);
    let started = Instant::now();
    let v = env.submit(&topic, &job, &[]);
    assert_eq!(v["status"], "JOB_STATUS_FAILED", "{v}");
    assert_eq!(v["sender_id"], env.sched_id.as_str());
    assert_eq!(v["worker_id"], env.sched_id.as_str());
    assert_eq!(v["boundary_accepted"], true, "{v}");
    let message = v["error_message"].as_str().unwrap();
    assert!(
        message.contains("retries exhausted (4 attempts)"),
        "{message}"
    );
    assert!(message.contains(&flaky_id), "{message}");
    assert!(started.elapsed() < Duration::from_secs(25));
    drop(flaky);
    let seen: Vec<String> = attempts.lines().map(Result::unwrap).collect();
    assert_eq!(seen.len(), 4, "{seen:?}");

    // DENIED by policy: the scheduler's result, accepted too.
    let denied = format!("job.demo.forbidden.{}", env.tag);
    let v = env.submit(&denied, &format!("denied-{}", env.tag), &[]);
    assert_eq!(v["status"], "JOB_STATUS_DENIED", "{v}");
    assert_eq!(v["worker_id"], env.sched_id.as_str());
    assert_eq!(v["boundary_accepted"], true, "{v}");
}
