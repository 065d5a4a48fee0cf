//! Shared helpers of the real-service tests: the NATS URL, unique names, JetStream
//! options that do not collide with other users of the shared server, and a private
//! nats-server that can be restarted.
#![allow(dead_code, clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use cap_bus::{
    NatsBus, NatsOptions,
    conformance::unique_token,
    nats::{JetStreamOptions, ReconnectOptions},
};
use std::{
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub const NEEDS_NATS: &str =
    "needs a real NATS with JetStream at NATS_URL (default nats://127.0.0.1:4222): run by .ci/run";

pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A fresh subject prefix for one test.
pub fn prefix() -> String {
    format!("capbus.{}", unique_token())
}

/// JetStream options for a private stream `CAPBUS_<token>` whose durable subjects are
/// the CAP durable subjects under `prefix`.
pub fn js_options(prefix: &str) -> JetStreamOptions {
    let mut js = JetStreamOptions::new(
        format!("CAPBUS_{}", unique_token()),
        [
            format!("{prefix}.sys.job.submit"),
            format!("{prefix}.sys.job.result"),
            format!("{prefix}.job.>"),
        ],
    )
    .ack_wait(Duration::from_secs(1));
    js.max_age = Duration::from_secs(600);
    js.publish_retry = Duration::from_secs(20);
    js
}

/// Connects to `url`, panicking with a clear message when it cannot.
pub async fn connect(url: &str, js: Option<JetStreamOptions>) -> NatsBus {
    let mut opts = NatsOptions::new(url).name("cap-bus-tests");
    opts.jetstream = js;
    opts.connect_timeout = Duration::from_secs(3);
    opts.reconnect = ReconnectOptions::new(Duration::from_millis(50), Duration::from_millis(500));
    match NatsBus::connect(opts).await {
        Ok(bus) => bus,
        Err(e) => panic!("{NEEDS_NATS}: cannot connect to {url}: {e}"),
    }
}

/// A throwaway `nats-server -js` on a free port with its own store directory; killed
/// (and its directory removed) on drop, also when a test fails.
pub struct PrivateNats {
    pub port: u16,
    store: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl PrivateNats {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts with extra command-line arguments (auth settings, say).
    pub fn start_with(extra: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let store = std::env::temp_dir().join(format!("capbus-nats-{}", unique_token()));
        std::fs::create_dir_all(&store).expect("store dir");
        let mut s = PrivateNats {
            port,
            store,
            extra: extra.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        s.spawn();
        s
    }

    /// The server's store directory (a private temporary directory).
    pub fn dir(&self) -> &std::path::Path {
        &self.store
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let bin = [
            "/usr/sbin/nats-server",
            "/usr/local/bin/nats-server",
            "nats-server",
        ]
        .into_iter()
        .find(|b| !b.starts_with('/') || std::path::Path::new(b).exists())
        .unwrap_or("nats-server");
        let child = Command::new(bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (is nats-server installed?): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "private nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "private nats-server did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
