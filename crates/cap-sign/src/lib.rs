//! # cap-sign
//!
//! ECDSA P-256 packet signatures for CAP, byte-compatible with the official SDKs: the
//! signature covers the canonical (deterministic) bytes of the `BusPacket` with field 14
//! cleared, hashed with SHA-256, stored as ASN.1 DER.
//!
//! Verification runs on the bytes as received, canonicalising the known fields and
//! keeping unknown ones in received order, so packets from newer peers verify; high-S
//! signatures (half of what OpenSSL produces) are accepted.
//!
//! ```
//! use cap_proto::{Timestamp, v1};
//! use cap_sign::{PrivateKey, packet};
//!
//! let key = PrivateKey::generate();
//! let mut p = v1::BusPacket::new("trace-1", "worker-1", Timestamp::default(), v1::JobCancel::default());
//! let bytes = packet::sign_to_bytes(&mut p, &key).unwrap();
//! packet::verify_bytes(&bytes, &key.public_key()).unwrap();
//! ```
//!
//! ## Feature flags
//! - `ring` (default): sign and verify with ring's assembly-optimised P-256; without
//!   it, the pure-Rust `p256` backend does everything. Keys, PEM and DER parsing use
//!   `p256` either way.
//!
//! ## Pieces
//! - [`PrivateKey`], [`PublicKey`]: P-256 keys, PEM (PKCS#8, SEC1, SubjectPublicKeyInfo).
//! - [`Signer`], [`Verifier`]: traits a KMS or HSM implements.
//! - [`packet`]: sign and verify `BusPacket`s.
//! - [`KeyRing`], [`TrustPolicy`], [`TrustMode`]: trusted keys per sender and the
//!   `off` / `verify-if-signed` / `require` modes.
//! - [`ReplayGuard`]: freshness window and replay detection in bounded memory.
//! - [`transcript`]: domain-separated transcripts for the worker trust handshake.
//! - [`production`]: the CAP-PRODUCTION profile — exact-wire signatures bound to an
//!   audience, an expiry and a message id; identity binding; replay admission.

#[doc(hidden)]
pub mod bench_support;
mod error;
mod key;
mod keyring;
pub mod packet;
pub mod production;
mod replay;
mod signer;
pub mod transcript;
mod trust;

pub use error::Error;
pub use key::{PrivateKey, PublicKey};
pub use keyring::KeyRing;
pub use replay::{DEFAULT_CAPACITY, DEFAULT_WINDOW, ReplayGuard};
pub use signer::{Signer, Verifier};
pub use trust::{TrustMode, TrustPolicy, Verdict};

/// The signature backend compiled in: `ring` (feature `ring`, the default) or the
/// pure-Rust `p256`.
#[cfg(feature = "ring")]
pub const BACKEND: &str = "ring (P-256 assembly)";
/// The signature backend compiled in: `ring` (feature `ring`, the default) or the
/// pure-Rust `p256`.
#[cfg(not(feature = "ring"))]
pub const BACKEND: &str = "p256 (pure Rust)";
