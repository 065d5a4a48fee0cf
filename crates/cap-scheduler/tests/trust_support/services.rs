//! Real services for the worker trust tests: a private `nats-server` per test (the
//! handshake subjects are fixed, so tests must not share a server), the shared Redis,
//! and the reference peer's processes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cap_blob::{Limits, RedisBlobStore, RedisConfig};
use cap_bus::{NatsBus, NatsOptions};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

pub fn python() -> String {
    std::env::var("CAP_INTEROP_PYTHON_217").unwrap_or_else(|_| {
        panic!("CAP_INTEROP_PYTHON_217 is not set (a python with cap-sdk-python==2.17.0)")
    })
}

pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peer")
        .join(name)
}

/// A private `nats-server` on a free port, killed on drop.
pub struct PrivateNats {
    child: Child,
    pub port: u16,
    /// JetStream's store directory, when it runs with JetStream.
    js_dir: Option<PathBuf>,
}

impl PrivateNats {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        PrivateNats {
            child: spawn_nats(port, None),
            port,
            js_dir: None,
        }
    }

    /// A server with JetStream (its store in a temporary directory, removed on drop).
    pub fn start_with_jetstream() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("cap-sched-js-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        PrivateNats {
            child: spawn_nats(port, Some(&dir)),
            port,
            js_dir: Some(dir),
        }
    }

    /// Stops the server and starts a new one on the same port (clients reconnect).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_nats(self.port, self.js_dir.as_deref());
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A core-NATS bus named `name` (the reference peer speaks core NATS).
    pub async fn bus(&self, name: &str) -> NatsBus {
        NatsBus::connect(NatsOptions::new(&self.url()).name(name).without_jetstream())
            .await
            .unwrap()
    }

    /// A bus with JetStream for the durable CAP subjects, acknowledgements due after
    /// `ack_wait`.
    pub async fn js_bus(&self, name: &str, ack_wait: Duration) -> NatsBus {
        let js = cap_bus::nats::JetStreamOptions::default().ack_wait(ack_wait);
        NatsBus::connect(NatsOptions::new(&self.url()).name(name).jetstream(js))
            .await
            .unwrap()
    }
}

/// Starts `nats-server` on `port` (with JetStream storing in `js`) and waits until it
/// accepts connections.
fn spawn_nats(port: u16, js: Option<&std::path::Path>) -> Child {
    let bin = [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "nats-server",
    ]
    .into_iter()
    .find(|b| !b.starts_with('/') || std::path::Path::new(b).exists())
    .unwrap();
    let mut args = vec![
        "-a".to_owned(),
        "127.0.0.1".to_owned(),
        "-p".to_owned(),
        port.to_string(),
    ];
    if let Some(dir) = js {
        args.extend([
            "-js".to_owned(),
            "-sd".to_owned(),
            dir.display().to_string(),
        ]);
    }
    let mut child = Command::new(bin)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("nats-server is required (.ci/run installs it): {e}"));
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("private nats-server did not start");
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.js_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Deletes the Redis keys starting with `prefix` (SCAN, then DEL); how many.
pub async fn purge_redis(prefix: &str) -> usize {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cursor: u64 = 0;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            n += keys.len();
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        if next == 0 {
            return n;
        }
        cursor = next;
    }
}

/// The shared Redis, with contexts and results kept ten minutes.
pub async fn blob() -> RedisBlobStore {
    let limits = Limits::default()
        .with_context_ttl(Some(Duration::from_secs(600)))
        .with_result_ttl(Some(Duration::from_secs(600)));
    RedisBlobStore::connect(RedisConfig::new(redis_url()).with_limits(limits))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "Redis is required at {} (.ci/run starts it): {e}",
                redis_url()
            )
        })
}

/// A child process killed (and reaped) on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!(
            "cap-trust-{tag}-{}-{}",
            std::process::id(),
            &cap_runtime::id::new_trace_id()[..8]
        ));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
