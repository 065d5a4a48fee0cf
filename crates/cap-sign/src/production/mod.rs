//! CAP-PRODUCTION: exact-wire signatures bound to an audience, an expiry and a message id,
//! identity binding and replay admission (cap-sdk-python 2.17.0's `production_*`).
//!
//! The signature covers SHA-256(`CAP-PRODUCTION-SIGNATURE-V1` ‖ `0x00` ‖ U), where U is
//! the packet **exactly as received** with only its field-14 entry removed — nothing is
//! decoded and re-encoded, so the bytes must be strict: only the `BusPacket` field numbers
//! with their wire types, no field twice, one payload, minimal varints, `protocol_version`
//! as the single byte `0x01`, at most 1 MiB, and no unknown field at any depth. The
//! sender appends field 14 last.
//!
//! `signature_metadata` carries profile `cap-production-v1`, algorithm
//! `ECDSA-P256-SHA256`, a fresh 16-byte message id, the audience (the subject the packet
//! is published on), an expiry at most 5 minutes ahead and the signing key's id; the
//! receiver binds `identity.tenant_id` and `sender_id` to what it expects and picks the
//! key by key id. A legacy-signed packet has no metadata and is refused.
//!
//! ```
//! use cap_proto::{Timestamp, v1};
//! use cap_sign::PrivateKey;
//! use cap_sign::production::{self, Admission, MemoryReplayStore, ProductionError, ProductionTrust, Seal};
//! use std::time::{Duration, SystemTime};
//!
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     let mut f = std::pin::pin!(f);
//! #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! let key = PrivateKey::generate();
//! let now = SystemTime::now();
//! let mut p = v1::BusPacket::new("trace-1", "scheduler", Timestamp::default(), v1::JobRequest {
//!     job_id: "job-1".into(), topic: "job.echo".into(), ..Default::default()
//! });
//! p.identity = Some(v1::IdentityBinding { tenant_id: "acme".into(), ..Default::default() });
//! let raw = production::seal(&p, &key, &Seal::new("sched-1", "job.echo", now).unwrap()).unwrap();
//!
//! let trust = ProductionTrust::new("job.echo", "acme", "scheduler").unwrap()
//!     .with_key("sched-1", key.public_key());
//! let store = MemoryReplayStore::default();
//! assert!(block_on(production::admit(&raw, &trust, &store, now)).unwrap().is_first());
//! // The redelivery is recognised; a copy sent on another subject is refused.
//! assert!(matches!(block_on(production::admit(&raw, &trust, &store, now)), Ok(Admission::Duplicate(_))));
//! let other = trust.with_audience("job.other").unwrap();
//! assert!(matches!(production::verify(&raw, &other, now), Err(ProductionError::AudienceMismatch { .. })));
//! // Six minutes later it has expired.
//! let later = now + Duration::from_secs(360);
//! assert_eq!(production::verify(&raw, &trust, later).unwrap_err(), ProductionError::Expired);
//! ```

mod admit;
pub mod conformance;
mod error;
mod identity;
mod metadata;
mod replay;
mod sign;
mod trust;
mod verify;
mod wire;

pub use admit::{Admission, admit};
pub use error::ProductionError;
pub use identity::validate_identity_binding;
pub use replay::{
    BoxFuture, DEFAULT_REPLAY_CAPACITY, DynReplayStore, MemoryReplayStore, ReplayEntry, ReplayKey,
    ReplayOutcome, ReplayStore,
};
pub use sign::{Seal, fresh_message_id, seal, sign, sign_unsigned};
pub use trust::ProductionTrust;
pub use verify::{Verified, body_digest, preimage_digest, verify};
pub use wire::{Extracted, append_signature, check_unsigned, extract_signature};

use std::time::Duration;

/// `signature_metadata.profile_version` of this profile.
pub const PROFILE_VERSION: &str = "cap-production-v1";
/// `signature_metadata.algorithm` of this profile.
pub const ALGORITHM: &str = "ECDSA-P256-SHA256";
/// The transcript prefix: `CAP-PRODUCTION-SIGNATURE-V1` and a zero byte.
pub const DOMAIN: &[u8] = b"CAP-PRODUCTION-SIGNATURE-V1\x00";
/// Longest lifetime a signature may claim (expiry − now).
pub const MAX_LIFETIME: Duration = Duration::from_secs(300);
/// Largest clock skew a receiver may tolerate.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Largest production packet on the wire.
pub const MAX_PACKET_BYTES: usize = 1 << 20;
/// Length of `signature_metadata.message_id`.
pub const MESSAGE_ID_LEN: usize = 16;
