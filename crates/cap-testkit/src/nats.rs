//! NATS: a private server, and a cluster of three with JetStream.

use crate::free_port;
use crate::process::{Server, TempDir, find_binary};
use std::time::{Duration, Instant};

const BINARIES: &[&str] = &[
    "/usr/sbin/nats-server",
    "/usr/bin/nats-server",
    "nats-server",
];

/// A private `nats-server -js` on a free loopback port, with its own store directory.
pub struct NatsServer {
    server: Server,
    _dir: TempDir,
}

impl NatsServer {
    /// Starts it.
    pub fn start() -> Self {
        let dir = TempDir::new("nats");
        let port = free_port(0);
        let args = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-js".into(),
            "-sd".into(),
            dir.path().display().to_string(),
        ];
        NatsServer {
            server: Server::start(&find_binary(BINARIES), args, port),
            _dir: dir,
        }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.server.port())
    }

    /// The process (to kill and restart it).
    pub fn server(&mut self) -> &mut Server {
        &mut self.server
    }
}

/// Three `nats-server`s clustered on loopback with JetStream (each with its own store
/// directory and server name, so a killed node restarts with its data and rejoins).
pub struct NatsCluster {
    nodes: Vec<Server>,
    _dir: TempDir,
}

impl NatsCluster {
    /// Starts a cluster of `n` nodes (3 for JetStream replicas 3) and waits until it
    /// has a JetStream meta leader.
    pub fn start(n: usize) -> Self {
        let dir = TempDir::new("nats-cluster");
        let client: Vec<u16> = (0..n).map(|_| free_port(0)).collect();
        let route: Vec<u16> = (0..n).map(|_| free_port(0)).collect();
        let routes = route
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let bin = find_binary(BINARIES);
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let store = dir.path().join(format!("n{i}"));
            let args = vec![
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                client[i].to_string(),
                "-n".into(),
                format!("cap-n{i}"),
                "-js".into(),
                "-sd".into(),
                store.display().to_string(),
                "--cluster_name".into(),
                "cap-test".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", route[i]),
                "--routes".into(),
                routes.clone(),
            ];
            nodes.push(Server::start(&bin, args, client[i]));
        }
        let c = NatsCluster { nodes, _dir: dir };
        c.wait_for_routes();
        c
    }

    /// Waits until every node reports its routes (the cluster formed).
    fn wait_for_routes(&self) {
        // The monitoring port is not enabled; give the routes a moment, then rely on
        // the callers' JetStream retries (a stream create waits for the meta leader).
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.nodes.iter().all(|n| crate::ports::open(n.port())) {
                std::thread::sleep(Duration::from_millis(1500));
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// All client URLs, comma-separated (a client fails over between them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i` (to kill and restart it).
    pub fn node(&mut self, i: usize) -> &mut Server {
        &mut self.nodes[i]
    }
}
