//! Shared helpers of the process-level tests: a private `nats-server` with JetStream
//! (so streams, consumers and queue groups are this test's alone), `cap` processes that
//! are killed when dropped, and a watcher of the packets on the bus.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

use cap_bus::{Bus, NatsBus, NatsOptions};
use cap_proto::v1::{self, bus_packet::Payload};
use futures_util::StreamExt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A unique tag for ids and topics.
/// With `CAP_TEST_LOG=<level>`, the test's own components log to stderr too (the
/// spawned `cap` processes do in [`Cap::spawn_with`]).
#[allow(dead_code)]
pub fn log_to_stderr() {
    if let Some(level) = std::env::var("CAP_TEST_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
    {
        let _ = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

pub fn tag() -> String {
    cap_runtime::id::new_job_id()[..8].to_owned()
}

/// A private `nats-server -js` on a free port, killed (and its store removed) on drop.
pub struct PrivateNats {
    child: Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl PrivateNats {
    pub fn start() -> Self {
        let port = closed_port();
        let dir = std::env::temp_dir().join(format!("cap-cli-nats-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "nats-server",
        ]
        .into_iter()
        .find(|b| !b.starts_with('/') || std::path::Path::new(b).exists())
        .unwrap();
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("nats-server is required for this test (.ci/run installs it): {e}")
            });
        let guard = PrivateNats { child, port, dir };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return guard;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("private nats-server did not start");
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `cap` process, killed (SIGKILL) and reaped on drop. Its stdout lines are collected.
pub struct Cap {
    pub child: Child,
    pub stdout: Arc<Mutex<Vec<String>>>,
}

impl Cap {
    /// Starts `cap <args>` against `nats_url` and the shared Redis.
    pub fn spawn(nats_url: &str, args: &[&str]) -> Self {
        Self::spawn_with(nats_url, &redis_url(), &[], args)
    }

    /// Starts `cap <args>` against `nats_url` and `redis_url`, with extra environment.
    pub fn spawn_with(
        nats_url: &str,
        redis_url: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Self {
        // `CAP_TEST_LOG=<filter>` shows the processes' logs (on the test's stderr).
        let log = std::env::var("CAP_TEST_LOG").ok();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cap"))
            .args(args)
            .env("NATS_URL", nats_url)
            .env("REDIS_URL", redis_url)
            .env("CAP_LOG", log.as_deref().unwrap_or("warn"))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(if log.is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let lines = stdout.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Cap { child, stdout }
    }

    /// Waits until a stdout line contains `text`.
    pub fn wait_for_line(&self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.stdout.lock().unwrap().iter().any(|l| l.contains(text)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no line with {text:?} within {within:?}");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) with the `kill` command.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} failed");
    }
}

impl Drop for Cap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one packet on the bus was, with when it was seen.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub sender_id: String,
    pub payload: Payload,
}

/// Watches `sys.job.progress` and `sys.job.result` (as a core observer) and keeps every
/// packet about `job_id`.
pub struct Watch {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    pub async fn start(bus: &NatsBus, job_id: &str) -> Self {
        let mut subs = futures_util::stream::select(
            bus.subscribe(cap_proto::subject::PROGRESS).await.unwrap(),
            bus.subscribe(cap_proto::subject::RESULT).await.unwrap(),
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = seen.clone();
        let job_id = job_id.to_owned();
        let task = tokio::spawn(async move {
            while let Some(msg) = subs.next().await {
                let Ok(p) = cap_proto::packet::decode(msg.payload(), 1 << 20) else {
                    continue;
                };
                if p.job_id() != Some(job_id.as_str()) {
                    continue;
                }
                if let Some(payload) = p.payload {
                    keep.lock().unwrap().push(Seen {
                        at: Instant::now(),
                        sender_id: p.sender_id,
                        payload,
                    });
                }
            }
        });
        Watch { seen, task }
    }

    /// The first packet matching `f`, waiting up to `within`.
    pub async fn first(&self, within: Duration, f: impl Fn(&Seen) -> bool) -> Option<Seen> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.seen.lock().unwrap().iter().find(|s| f(s)) {
                return Some(s.clone());
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Workers that reported the job RUNNING (its start), in order, without repeats.
    pub fn starters(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self.seen.lock().unwrap().iter() {
            if let Payload::JobProgress(p) = &s.payload
                && p.status == v1::JobStatus::Running as i32
                && !out.contains(&s.sender_id)
            {
                out.push(s.sender_id.clone());
            }
        }
        out
    }

    pub fn results(&self) -> Vec<v1::JobResult> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| match &s.payload {
                Payload::JobResult(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A bus on `url` with the default JetStream settings (those of the `cap` processes).
pub async fn bus(url: &str) -> NatsBus {
    NatsBus::connect(NatsOptions::new(url).name("cap-cli-test"))
        .await
        .unwrap_or_else(|e| panic!("cannot reach the private NATS at {url}: {e}"))
}

/// A client on `bus` and the shared Redis.
pub async fn client(
    bus: &NatsBus,
    id: &str,
) -> cap_runtime::Client<NatsBus, cap_blob::RedisBlobStore> {
    let store = cap_blob::RedisBlobStore::connect(cap_blob::RedisConfig::new(redis_url()))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis is required at {} (.ci/run starts it): {e}",
                redis_url()
            )
        });
    cap_runtime::Client::new(
        bus.clone(),
        store,
        cap_runtime::ClientConfig::new(id).result_timeout(Duration::from_secs(60)),
    )
    .await
    .unwrap()
}

/// The address a `cap … --metrics 127.0.0.1:0` printed.
pub fn metrics_addr(cap: &Cap) -> String {
    cap.wait_for_line("metrics on http://", Duration::from_secs(20));
    let lines = cap.stdout.lock().unwrap();
    let line = lines
        .iter()
        .find(|l| l.contains("metrics on http://"))
        .unwrap();
    line.trim_start_matches("metrics on http://")
        .trim_end_matches("/metrics")
        .to_owned()
}

/// `GET /metrics` (HTTP/1.1, one request per connection): the body.
pub fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// Waits until `GET /healthz` on `port` answers 200 (a `cap gateway` that is up).
pub fn wait_healthy(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.starts_with("HTTP/1.1 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the gateway did not come up on port {port}");
}
