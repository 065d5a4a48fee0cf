//! [`Error`]: what decoding, checking and converting CAP messages can fail with.

use crate::ErrorCode;
use crate::validate::Violations;

/// An error from decoding, validating or converting a CAP message. Each maps to the CAP
/// error code a peer should see ([`Error::code`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is larger than the configured limit; nothing was decoded.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The bytes are not a valid protobuf encoding of the expected message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A `BusPacket` without any payload.
    #[error("packet has no payload")]
    MissingPayload,
    /// A `BusPacket` whose payload this version does not know (field number given).
    #[error("packet carries an unknown payload (field {field})")]
    UnknownPayload {
        /// The unknown field number.
        field: u32,
    },
    /// A `protocol_version` other than the one this implementation speaks.
    #[error(
        "unsupported protocol version {version} (supported: {})",
        crate::PROTOCOL_VERSION
    )]
    VersionMismatch {
        /// The version received.
        version: i32,
    },
    /// The message decoded but breaks protocol rules.
    #[error("invalid message: {0}")]
    Invalid(Violations),
    /// JSON that is not a valid protobuf JSON encoding of the message.
    #[error("invalid JSON: {0}")]
    Json(String),
}

impl Error {
    /// The CAP error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::VersionMismatch { .. } => ErrorCode::PROTOCOL_VERSION_MISMATCH,
            Error::UnknownPayload { .. } => ErrorCode::PROTOCOL_UNKNOWN_PAYLOAD,
            Error::TooLarge { .. }
            | Error::Malformed(_)
            | Error::MissingPayload
            | Error::Invalid(_)
            | Error::Json(_) => ErrorCode::PROTOCOL_MALFORMED_PACKET,
        }
    }
}

impl From<prost::DecodeError> for Error {
    fn from(e: prost::DecodeError) -> Self {
        Error::Malformed(e.to_string())
    }
}

impl From<crate::canonical::WireError> for Error {
    fn from(e: crate::canonical::WireError) -> Self {
        Error::Malformed(e.to_string())
    }
}

impl From<Violations> for Error {
    fn from(v: Violations) -> Self {
        Error::Invalid(v)
    }
}
