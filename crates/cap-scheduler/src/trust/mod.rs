//! Authenticated workers: the scheduler's side of the CAP worker trust handshake
//! (cap-sdk-python 2.17.0 speaks the client side; `cap_runtime::trust` is ours).
//!
//! - [`TrustServer`] ([`server`]): answers challenge requests and authenticates over
//!   `sys.worker.handshake.challenge` / `sys.worker.handshake.authenticate`, issues,
//!   renews and revokes sessions; every refusal carries the protocol's reason.
//! - [`WorkerKeys`] ([`keys`]): the registered worker proof keys and their identities.
//! - [`TrustStore`] ([`store`]): challenges and sessions with time limits, in memory or
//!   in Redis (`RedisTrustStore`, feature `redis`) so instances share them and a
//!   restarted scheduler keeps them.
//! - [`shell`]: the service on a bus (queue group, reply subjects).
//! - [`Gate`] ([`gate`]): `off | warn | enforce` on inbound worker packets.
//! - [`production`]: the scheduler's CAP-PRODUCTION profile, built on the registered
//!   worker keys and the trust service's own key.
//!
//! Turn it on with [`SchedulerOptions::worker_trust`](crate::SchedulerOptions): the
//! scheduler then serves the handshake and checks every inbound worker packet. Sign the
//! scheduler's packets (`PacketConfig::signer`) with the same key, under the same sender
//! id, so that workers in `warn` or `enforce` mode accept them.
//!
//! ```
//! use cap_scheduler::trust::{MemoryTrustStore, TrustServer, TrustServerConfig, WorkerKey, WorkerKeys, WorkerTrust};
//! use cap_runtime::trust::WorkerTrustMode;
//! use cap_sign::PrivateKey;
//! use std::sync::Arc;
//!
//! let scheduler_key = PrivateKey::generate();
//! let mut keys = WorkerKeys::new();
//! keys.insert(WorkerKey::new("w-1", PrivateKey::generate().public_key())).unwrap();
//! let config = TrustServerConfig::new("cap-scheduler", "sched-1", Arc::new(scheduler_key), keys);
//! let server = TrustServer::new(config, Arc::new(MemoryTrustStore::new())).unwrap();
//! let trust = WorkerTrust::new(WorkerTrustMode::Enforce, server);
//! assert_eq!(trust.gate.mode(), WorkerTrustMode::Enforce);
//! ```

mod error;
pub mod gate;
pub mod keys;
pub mod production;
#[cfg(feature = "redis")]
mod redis_store;
mod refusal;
pub mod server;
mod session;
pub mod shell;
pub mod store;

pub use error::{Error, ErrorKind};
pub use gate::{Decision, Gate, GateStats, Violation};
pub use keys::{WorkerKey, WorkerKeys};
#[cfg(feature = "redis")]
pub use redis_store::{DEFAULT_NAMESPACE, RedisTrustStore};
pub use server::{Outcome, Reply, TrustServer, TrustServerConfig, TrustStats};
pub use session::{SessionRecord, TOKEN_PREFIX, new_token, token_id};
pub use store::{Consumed, MemoryTrustStore, TrustStore};

pub use cap_runtime::trust::WorkerTrustMode;
use std::sync::Arc;

/// The trust service and the enforcement point of one scheduler.
#[derive(Clone, Debug)]
pub struct WorkerTrust {
    /// The handshake service.
    pub server: Arc<TrustServer>,
    /// The enforcement point.
    pub gate: Arc<Gate>,
}

impl WorkerTrust {
    /// `server` with a gate in `mode`, which lets the scheduler's own packets through
    /// (sender id = the server's scheduler id, signed with its key).
    pub fn new(mode: WorkerTrustMode, server: TrustServer) -> Self {
        let server = Arc::new(server);
        let mut gate = Gate::new(mode, server.clone());
        if let Some(key) = server.config().signer.public_key() {
            gate = gate.peer(server.config().scheduler_id.clone(), key);
        }
        WorkerTrust {
            server,
            gate: Arc::new(gate),
        }
    }

    /// The same service with another gate (more peers, another cache lifetime).
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = Arc::new(gate);
        self
    }
}
