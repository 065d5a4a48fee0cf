//! The worker side of the CAP worker trust handshake (cap-sdk-python 2.17.0's
//! `worker_trust*`): a worker proves its identity to the scheduler with a signed
//! challenge-response over `sys.worker.handshake.challenge` and
//! `sys.worker.handshake.authenticate`, receives a session token, puts it into
//! `BusPacket.auth_token` of everything it sends, and renews it before it expires.
//!
//! Modes ([`WorkerTrustMode`]), as the reference peer defines them:
//! - `off`: no handshake (today's behaviour);
//! - `warn`: handshake; if the trust service cannot be reached the worker runs without
//!   a session; only packets signed by the expected scheduler id with its configured
//!   keys are accepted;
//! - `enforce`: no session, no jobs and nothing sent; the same inbound rule.
//!
//! Turn it on with [`WorkerBuilder::worker_trust`](crate::WorkerBuilder::worker_trust).
//! The packet layer takes the token from [`TrustState`] (an
//! [`AuthTokenSource`](crate::packets::AuthTokenSource)); [`TrustLifecycle`] runs the
//! exchanges; [`client`] holds the packet logic without IO.

pub mod client;
mod config;
mod error;
mod lifecycle;

pub use config::{
    DEFAULT_RENEW_MIN_INTERVAL, DEFAULT_RETRIES, DEFAULT_TENANT, DEFAULT_TIMEOUT, ENV_MODE,
    MAX_RETRIES, ResolvedTrust, WorkerTrustConfig, WorkerTrustMode,
};
pub use error::{TrustError, TrustErrorKind, reason_name};
pub use lifecycle::{Announce, TrustLifecycle, TrustState, renew_wait};
