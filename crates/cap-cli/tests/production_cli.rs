//! `cap scheduler --profile production` and `cap worker echo --profile production`: flag
//! checks (no services), and as processes on a private NATS server and the shared Redis
//! with the reference peer cap-sdk-python 2.17.0 (`CAP_INTEROP_PYTHON_217`): the
//! production scheduler (worker trust enforce, replay store in Redis) serves `cap worker
//! echo` in the production profile and a 2.17 `Agent` in production mode, and every job a
//! 2.17 client submits through it succeeds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_sign::PrivateKey;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn cap(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cap"));
    c.args(args)
        .env("CAP_JETSTREAM", "off")
        .env("CAP_LOG", "warn");
    c
}

/// Runs `cap` where nothing listens (reaching a service would be another failure).
fn run(args: &[&str]) -> Output {
    cap(args)
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env("REDIS_URL", "redis://127.0.0.1:1/0")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn fails_with(out: &Output, text: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure mentioning {text}"
    );
    assert!(stderr.contains(text), "{stderr}");
    assert!(
        !stderr.contains("connecting"),
        "checked before connecting: {stderr}"
    );
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!(
            "cap-cli-prod-{tag}-{}-{}",
            std::process::id(),
            &cap_runtime::id::new_trace_id()[..6]
        ));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    /// Writes `name.key.pem` (private) and `name.pem` (public) into `sub`.
    fn keypair(&self, sub: &str, name: &str) -> PrivateKey {
        let k = PrivateKey::generate();
        let dir = self.0.join(sub);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.key.pem")), k.to_pem().unwrap()).unwrap();
        std::fs::write(
            dir.join(format!("{name}.pem")),
            k.public_key().to_pem().unwrap(),
        )
        .unwrap();
        k
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn policy() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/demo/policy.yaml")
}

#[test]
fn production_flags_are_checked_before_connecting() {
    let d = Dir::new("flags");
    d.keypair("k", "w-1");
    let key = d.path("k/w-1.key.pem");
    let sched_key = format!("s={}", d.path("k/w-1.pem"));
    fails_with(
        &run(&["worker", "echo", "--profile", "prod"]),
        "legacy or production",
    );
    fails_with(
        &run(&["worker", "echo", "--profile", "production"]),
        "--profile production needs --worker-trust enforce",
    );
    fails_with(
        &run(&[
            "worker",
            "echo",
            "--id",
            "w-1",
            "--profile",
            "production",
            "--worker-trust",
            "warn",
            "--proof-key",
            &key,
            "--scheduler-key",
            &sched_key,
        ]),
        "--profile production needs --worker-trust enforce",
    );
    fails_with(
        &run(&[
            "worker",
            "echo",
            "--id",
            "w-1",
            "--profile",
            "production",
            "--worker-trust",
            "enforce",
            "--proof-key",
            &key,
            "--scheduler-key",
            &sched_key,
            "--key",
            &key,
        ]),
        "--key does not apply with --profile production",
    );
    fails_with(
        &run(&["worker", "echo", "--redis", "redis://127.0.0.1:1/0"]),
        "applies to --profile production only",
    );
    fails_with(
        &run(&["scheduler", "--policy", policy(), "--profile", "production"]),
        "--profile production needs --worker-keys DIR and --key PEM",
    );
    let out = run(&["scheduler", "--policy", policy(), "--replay", "disk"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--replay"));
}

/// A private `nats-server` on a free port, killed on drop.
struct Nats(Child, u16);

impl Nats {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let bin = if Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server"
        } else {
            "nats-server"
        };
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("nats-server is required (.ci/run installs it): {e}"));
        let n = Nats(child, port);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not start");
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.1)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn python() -> String {
    std::env::var("CAP_INTEROP_PYTHON_217").unwrap_or_else(|_| {
        panic!("CAP_INTEROP_PYTHON_217 is not set (a python with cap-sdk-python==2.17.0)")
    })
}

fn peer_script(name: &str) -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../cap-scheduler/tests/peer/").to_owned() + name
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// Reads lines of `child`'s stdout until one starts with `prefix`.
fn wait_line(child: &mut Child, prefix: &str) -> String {
    let out = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(out).lines();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("no {prefix:?} line"))
            .unwrap();
        if line.starts_with(prefix) {
            return line;
        }
    }
}

/// Deletes the Redis keys under `prefix`; how many there were.
fn purge(prefix: &str) -> usize {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let (mut cursor, mut n) = (0u64, 0);
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(500)
            .query(&mut conn)
            .unwrap();
        if !keys.is_empty() {
            n += keys.len();
            let _: () = redis::cmd("DEL").arg(&keys).query(&mut conn).unwrap();
        }
        if next == 0 {
            return n;
        }
        cursor = next;
    }
}

#[test]
#[ignore = "needs nats-server, Redis and cap-sdk-python 2.17.0 (CAP_INTEROP_PYTHON_217): run by .ci/run"]
fn production_scheduler_serves_a_production_cap_worker_and_a_217_agent_in_production_mode() {
    let nats = Nats::start();
    let d = Dir::new("procs");
    let tag = &cap_runtime::id::new_trace_id()[..8];
    let sched = format!("sched-prod-cli-{tag}");
    let (w, py) = (format!("w-prod-{tag}"), format!("py-prod-{tag}"));
    d.keypair("sched", "sched-k");
    d.keypair("workers", &w);
    d.keypair("workers", &py);
    let ns = format!("cap-cli-prod-{tag}");
    let topic = "job.prod-cli-echo";
    let scheduler = cap(&[
        "scheduler",
        "--policy",
        policy(),
        "--id",
        &sched,
        "--key",
        &d.path("sched/sched-k.key.pem"),
        "--worker-keys",
        &d.path("workers"),
        "--worker-trust",
        "enforce",
        "--worker-trust-namespace",
        &ns,
        "--redis",
        &redis_url(),
        "--profile",
        "production",
        "--replay",
        "redis",
    ])
    .env("NATS_URL", nats.url())
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let scheduler = Killed(scheduler);
    std::thread::sleep(Duration::from_millis(800));
    let mut worker = cap(&[
        "worker",
        "echo",
        "--topic",
        topic,
        "--id",
        &w,
        "--no-jetstream",
        "--worker-trust",
        "enforce",
        "--proof-key",
        &d.path(&format!("workers/{w}.key.pem")),
        "--scheduler-id",
        &sched,
        "--scheduler-key",
        &format!("sched-k={}", d.path("sched/sched-k.pem")),
        "--profile",
        "production",
        "--redis",
        &redis_url(),
    ])
    .env("NATS_URL", nats.url())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let ready = wait_line(&mut worker, "worker ");
    assert!(ready.contains("profile production"), "{ready}");
    let _w = Killed(worker);
    let mut agent = Command::new(python())
        .arg(peer_script("production_agent.py"))
        .args([
            &nats.url(),
            &redis_url(),
            topic,
            &py,
            &d.path(&format!("workers/{py}.key.pem")),
            &sched,
        ])
        .arg(format!("sched-k={}", d.path("sched/sched-k.pem")))
        .arg("default")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = wait_line(&mut agent, "READY");
    assert_eq!(ready, "READY session");
    let _a = Killed(agent);
    std::thread::sleep(Duration::from_millis(1000));

    let ids: Vec<String> = (0..12).map(|i| format!("prod-cli-job-{tag}-{i}")).collect();
    let out = Command::new(python())
        .arg(peer_script("submit_217.py"))
        .args([&nats.url(), &redis_url(), topic, "20"])
        .args(&ids)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut by = std::collections::HashMap::<String, usize>::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["status"], "JOB_STATUS_SUCCEEDED", "{r}");
        *by.entry(r["worker_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(by.values().sum::<usize>(), 12);
    assert!(by.keys().all(|k| *k == w || *k == py), "{by:?}");
    drop(scheduler);
    // The replay stores of the scheduler and of our worker admitted in Redis.
    assert!(purge(&format!("cap:replay:sched:{sched}:")) > 0);
    assert!(purge(&format!("cap:replay:worker:{w}:")) > 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = cap_scheduler::trust::RedisTrustStore::connect(&redis_url(), &ns)
            .await
            .unwrap();
        store.purge().await.unwrap();
    });
}
