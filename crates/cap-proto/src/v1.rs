//! The generated CAP v1 protobuf types (package `cordum.agent.v1`).
//!
//! Produced by `cargo xtask codegen` from `proto/cordum/agent/v1/*.proto`; do not edit.
//! Maps are `BTreeMap`s so that iteration order is the canonical key order.
#![allow(missing_docs, clippy::doc_markdown, clippy::large_enum_variant)]

include!("gen/cordum.agent.v1.rs");

/// Generated canonical encoders (see [`crate::canonical::CanonicalEncode`]).
#[rustfmt::skip]
#[allow(clippy::all)]
mod canonical_encode {
    include!("gen/canonical_encode.rs");
}
