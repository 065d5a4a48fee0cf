//! # cap-proto
//!
//! The wire layer of CAP, the Cordum Agent Protocol, version 1: the protobuf types,
//! the canonical (deterministic) encoding that signatures cover, validation, the job
//! state machine, pointers, subjects, error codes and handshake negotiation.
//!
//! This crate does no IO: no sockets, no async runtime, no clock reads. Everything is a
//! function of its arguments, so it is equally at home in a worker, a scheduler, a
//! command-line tool or a fuzzer.
//!
//! ```
//! use cap_proto::{packet, v1, validate};
//! use prost_types::Timestamp;
//!
//! let req = v1::JobRequest {
//!     job_id: "job-1".into(),
//!     topic: "job.echo".into(),
//!     context_ptr: cap_proto::Pointer::context("job-1").to_string(),
//!     ..Default::default()
//! };
//! let pkt = v1::BusPacket::new("trace-1", "client-1", Timestamp { seconds: 1_700_000_000, nanos: 0 }, req);
//! validate::packet(&pkt).unwrap();
//!
//! // Canonical bytes: what goes on the wire and what a signature covers.
//! let bytes = packet::encode(&pkt);
//! let back = packet::decode(&bytes, packet::DEFAULT_MAX_PACKET_BYTES).unwrap();
//! assert_eq!(back.job_id(), Some("job-1"));
//! ```
//!
//! ## Modules
//! - [`v1`]: the generated message types (`cordum.agent.v1`).
//! - [`packet`]: building `BusPacket`s, size-limited decoding, payload kinds.
//! - [`canonical`]: deterministic encoding that keeps unknown fields; signing bytes.
//! - [`validate`]: protocol rules, all violations with field paths.
//! - [`state`]: the job lifecycle and its legal transitions.
//! - [`pointer`](mod@pointer), [`subject`]: checked pointers and bus subjects.
//! - [`negotiate`]: protocol version and capability matching.
//! - [`trust`]: structural rules of the worker trust handshake.
//! - [`json`], [`schema`]: the proto3 JSON mapping and JSON Schema (feature `json`).
//!
//! ## Feature flags
//! - `json` (default): [`json`] and [`schema`], through `serde_json` and
//!   `prost-reflect`'s serde support.

pub mod canonical;
mod descriptor;
mod error;
mod error_code;
#[cfg(feature = "json")]
pub mod json;
mod message;
pub mod negotiate;
pub mod packet;
pub mod pointer;
#[cfg(feature = "json")]
pub mod schema;
pub mod state;
pub mod subject;
pub mod trust;
pub mod v1;
pub mod validate;

pub use descriptor::{FILE_DESCRIPTOR_SET, descriptor_pool};
pub use error::Error;
pub use error_code::{ErrorCategory, ErrorCode};
pub use message::{ALL_MESSAGES, CapMessage, resolve_message_name};
pub use packet::{PROTOCOL_VERSION, PayloadKind};
pub use pointer::{Pointer, PointerError};
pub use state::{JobState, TransitionError};
pub use subject::{Subject, SubjectError};
pub use validate::{Violation, Violations};

/// Re-exported so users need not depend on `prost-types` for timestamps.
pub use prost_types::Timestamp;
