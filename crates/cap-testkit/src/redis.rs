//! Redis: a private server, and a Redis Cluster (primaries with replicas).

use crate::free_port;
use crate::process::{Server, TempDir, find_binary};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &[&str] = &[
    "/usr/bin/redis-server",
    "/usr/local/bin/redis-server",
    "redis-server",
];
const CLI: &[&str] = &[
    "/usr/bin/redis-cli",
    "/usr/local/bin/redis-cli",
    "redis-cli",
];

/// A private `redis-server` on a free loopback port (no persistence).
pub struct RedisServer {
    server: Server,
    _dir: TempDir,
}

impl RedisServer {
    /// Starts it.
    pub fn start() -> Self {
        let dir = TempDir::new("redis");
        let port = free_port(0);
        let args = node_args(port, dir.path(), false);
        RedisServer {
            server: Server::start(&find_binary(SERVER), args, port),
            _dir: dir,
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.server.port())
    }

    /// The process (to kill and restart it).
    pub fn server(&mut self) -> &mut Server {
        &mut self.server
    }
}

fn node_args(port: u16, dir: &std::path::Path, cluster: bool) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        String::new(),
        "--appendonly".into(),
        "no".into(),
        "--dir".into(),
        dir.display().to_string(),
        "--protected-mode".into(),
        "no".into(),
    ];
    if cluster {
        a.extend([
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-config-file".into(),
            format!("nodes-{port}.conf"),
            "--cluster-node-timeout".into(),
            "2000".into(),
            // A replica may take over at once: the tests kill primaries on purpose.
            "--cluster-replica-validity-factor".into(),
            "0".into(),
        ]);
    }
    a
}

/// A Redis Cluster of `primaries` primaries with `replicas` replicas each, on loopback.
pub struct RedisCluster {
    nodes: Vec<Server>,
    _dir: TempDir,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster (`redis-cli --cluster create`) and waits
    /// until every node reports `cluster_state:ok`.
    pub fn start(primaries: usize, replicas: usize) -> Self {
        let dir = TempDir::new("redis-cluster");
        let n = primaries * (1 + replicas);
        let bin = find_binary(SERVER);
        let nodes: Vec<Server> = (0..n)
            .map(|_| {
                let port = free_port(10_000);
                Server::start(&bin, node_args(port, dir.path(), true), port)
            })
            .collect();
        let mut create = Command::new(find_binary(CLI));
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        let status = create
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("redis-cli --cluster create: {e}"));
        assert!(status.success(), "redis-cli --cluster create failed");
        let c = RedisCluster { nodes, _dir: dir };
        c.wait_ok(Duration::from_secs(20));
        c.wait_in_sync(Duration::from_secs(20));
        c
    }

    /// Waits until every running replica is linked to its primary and has caught up
    /// with it (replication is asynchronous: a primary killed before that loses writes,
    /// as it would in production).
    pub fn wait_in_sync(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let mut ok = true;
            for n in self.nodes.iter().filter(|n| n.is_running()) {
                let info = cli(n.port(), &["info", "replication"]);
                if !info.contains("role:slave") {
                    continue;
                }
                let field = |k: &str| {
                    info.lines()
                        .find_map(|l| l.trim().strip_prefix(k).map(str::to_owned))
                        .unwrap_or_default()
                };
                let primary_port: u16 = field("master_port:").parse().unwrap_or(0);
                let linked = field("master_link_status:") == "up";
                let mine: u64 = field("slave_repl_offset:").parse().unwrap_or(0);
                let theirs: u64 = cli(primary_port, &["info", "replication"])
                    .lines()
                    .find_map(|l| {
                        l.trim()
                            .strip_prefix("master_repl_offset:")
                            .map(str::to_owned)
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(u64::MAX);
                if !linked || mine < theirs {
                    ok = false;
                }
            }
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Redis replicas not in sync within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every running node says `cluster_state:ok`.
    pub fn wait_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ok = self
                .nodes
                .iter()
                .filter(|n| n.is_running())
                .all(|n| cluster_info(n.port()).contains("cluster_state:ok"));
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Redis Cluster not ok within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node URLs, comma-separated (what `RedisConfig` takes for a cluster).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i` (to kill and restart it).
    pub fn node(&mut self, i: usize) -> &mut Server {
        &mut self.nodes[i]
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Indexes of the nodes that are primaries now.
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_running())
            .filter(|i| role(self.nodes[*i].port()) == "master")
            .collect()
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    Command::new(find_binary(CLI))
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn cluster_info(port: u16) -> String {
    cli(port, &["cluster", "info"])
}

fn role(port: u16) -> String {
    cli(port, &["role"])
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}
