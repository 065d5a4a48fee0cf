//! `cap scheduler --worker-trust …` and `cap worker echo --worker-trust …`: flag checks
//! (no services), and as processes on a private NATS server and the shared Redis with
//! the reference peer cap-sdk-python 2.17.0 (`CAP_INTEROP_PYTHON_217`): `cap scheduler`
//! in enforce mode serves the handshake to `cap worker echo` and to a 2.17 `Agent`, both
//! in enforce mode, and jobs a 2.17 client submits through it succeed.
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

fn run(args: &[&str]) -> Output {
    cap(args)
        .env("NATS_URL", "nats://127.0.0.1:1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!(
            "cap-cli-trust-{tag}-{}-{}",
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

fn fails_with(out: &Output, text: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure mentioning {text}"
    );
    assert!(stderr.contains(text), "{stderr}");
}

fn policy() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/demo/policy.yaml")
}

#[test]
fn worker_trust_flags_are_checked_before_connecting() {
    let d = Dir::new("flags");
    d.keypair("k", "w-1");
    let key = d.path("k/w-1.key.pem");
    fails_with(
        &run(&["worker", "echo", "--worker-trust", "enforce"]),
        "--proof-key",
    );
    fails_with(
        &run(&["worker", "echo", "--worker-trust", "sometimes"]),
        "off, warn or enforce",
    );
    fails_with(
        &run(&["worker", "echo", "--proof-key", &key]),
        "--worker-trust warn|enforce",
    );
    fails_with(
        &run(&[
            "worker",
            "echo",
            "--worker-trust",
            "warn",
            "--proof-key",
            &key,
        ]),
        "--scheduler-key",
    );
    fails_with(
        &run(&[
            "worker",
            "echo",
            "--worker-trust",
            "warn",
            "--proof-key",
            &key,
            "--scheduler-key",
            "no-equals",
        ]),
        "ID=PEM",
    );
    fails_with(
        &run(&[
            "worker",
            "echo",
            "--id",
            "w-1",
            "--worker-trust",
            "enforce",
            "--proof-key",
            &key,
            "--scheduler-key",
            &format!("s={}", d.path("k/w-1.pem")),
            "--trust",
            &d.path("k"),
        ]),
        "--trust does not apply",
    );
    fails_with(
        &run(&[
            "scheduler",
            "--policy",
            policy(),
            "--worker-trust",
            "enforce",
        ]),
        "--worker-keys DIR and --key PEM",
    );
    fails_with(
        &run(&[
            "scheduler",
            "--policy",
            policy(),
            "--worker-keys",
            &d.path("k"),
        ]),
        "--worker-keys needs --key",
    );
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

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Nats {
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

#[test]
#[ignore = "needs nats-server, Redis and cap-sdk-python 2.17.0 (CAP_INTEROP_PYTHON_217): run by .ci/run"]
fn cap_scheduler_enforce_serves_cap_worker_and_a_217_agent() {
    let nats = Nats::start();
    let d = Dir::new("procs");
    let tag = &cap_runtime::id::new_trace_id()[..8];
    let (w, py) = (format!("w-cli-{tag}"), format!("py-cli-{tag}"));
    d.keypair("sched", "sched-k");
    d.keypair("workers", &w);
    d.keypair("workers", &py);
    // The directory of public keys the scheduler registers (private keys are skipped).
    let ns = format!("cap-cli-trust-{tag}");
    let topic = "job.trust-echo";
    let scheduler = cap(&[
        "scheduler",
        "--policy",
        policy(),
        "--id",
        "sched-cli",
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
        "sched-cli",
        "--scheduler-key",
        &format!("sched-k={}", d.path("sched/sched-k.pem")),
    ])
    .env("NATS_URL", nats.url())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let ready = wait_line(&mut worker, "worker ");
    assert!(ready.contains("ready"), "{ready}");
    let _w = Killed(worker);
    let mut agent = Command::new(python())
        .arg(peer_script("trust_agent.py"))
        .args([
            &nats.url(),
            &redis_url(),
            topic,
            &py,
            "enforce",
            &d.path(&format!("workers/{py}.key.pem")),
            "sched-cli",
        ])
        .arg(format!("sched-k={}", d.path("sched/sched-k.pem")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = wait_line(&mut agent, "READY");
    assert_eq!(ready, "READY session");
    let _a = Killed(agent);
    std::thread::sleep(Duration::from_millis(1000));

    let ids: Vec<String> = (0..12).map(|i| format!("cli-job-{tag}-{i}")).collect();
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
    // The namespace's challenges and sessions.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = cap_scheduler::trust::RedisTrustStore::connect(&redis_url(), &ns)
            .await
            .unwrap();
        assert!(
            store.purge().await.unwrap() > 0,
            "the sessions were in Redis"
        );
    });
}
