//! # cap-testkit
//!
//! Real servers for tests and chaos runs, started on loopback and stopped on drop: a
//! private `nats-server` (JetStream on), a 3-node NATS cluster with JetStream, a private
//! `redis-server`, and a Redis Cluster (primaries and replicas). Every process can be
//! killed (`SIGKILL`) and restarted with its data, to test what survives.
//!
//! It uses the `nats-server`, `redis-server` and `redis-cli` binaries on the machine
//! (`.ci/run` installs them); it panics with a clear message when one is missing: a test
//! that needs a server never silently passes without it.
//!
//! ```no_run
//! let cluster = cap_testkit::RedisCluster::start(3, 1);
//! let urls = cluster.urls(); // "redis://127.0.0.1:p1,redis://127.0.0.1:p2,…"
//! # let _ = urls;
//! ```

// Test support: a server that cannot start must stop the test loudly.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod nats;
mod ports;
mod process;
mod redis;

pub use nats::{NatsCluster, NatsServer};
pub use ports::free_port;
pub use process::Server;
pub use redis::{RedisCluster, RedisServer};
