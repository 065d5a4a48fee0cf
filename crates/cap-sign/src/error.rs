//! [`Error`]: every way signing, verification and trust checks can fail.

use cap_proto::ErrorCode;

/// A signing, verification, key or trust failure. Each kind is distinct, and each maps to
/// the CAP error code a peer should see ([`Error::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The packet carries no signature but the trust policy requires one (104).
    #[error("packet from `{sender}` is not signed")]
    Missing {
        /// The claimed sender.
        sender: String,
    },
    /// No trusted key for this sender (103).
    #[error("no trusted key for sender `{sender}`")]
    UnknownSender {
        /// The claimed sender.
        sender: String,
    },
    /// The signature is well-formed but does not match the bytes and key(s) (103).
    #[error("signature does not verify for sender `{sender}`")]
    Mismatch {
        /// The claimed sender.
        sender: String,
    },
    /// 64 bytes that look like a raw `r || s` signature instead of ASN.1 DER (103).
    #[error("signature is raw r||s, not ASN.1 DER")]
    NotDer,
    /// Not a valid ASN.1 DER ECDSA signature (103).
    #[error("signature is not valid ASN.1 DER")]
    MalformedDer,
    /// The packet bytes do not decode (101).
    #[error("packet does not decode: {0}")]
    Decode(String),
    /// `created_at` is missing or outside the accepted window (103).
    #[error("packet time is outside the accepted window ({skew_ms} ms off)")]
    Stale {
        /// How far `created_at` is from now, in milliseconds (positive: in the future).
        skew_ms: i64,
    },
    /// A copy of a packet already accepted within the window (103).
    #[error("replayed packet")]
    Replayed,
    /// The replay guard is full of packets still inside the window (fail closed) (103).
    #[error("replay guard is at capacity")]
    ReplayCapacity,
    /// A packet that must carry only known fields carries unknown ones (101).
    #[error("packet carries fields this version does not know")]
    UnknownFields,
    /// A key that cannot be read or is not a P-256 key.
    #[error("key error: {0}")]
    Key(String),
    /// The signer failed (e.g. a KMS/HSM error).
    #[error("signer failed: {0}")]
    Signer(String),
}

impl Error {
    /// The CAP error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Missing { .. } => ErrorCode::PROTOCOL_SIGNATURE_MISSING,
            Error::Decode(_) | Error::UnknownFields => ErrorCode::PROTOCOL_MALFORMED_PACKET,
            Error::Key(_) | Error::Signer(_) => ErrorCode::UNSPECIFIED,
            _ => ErrorCode::PROTOCOL_SIGNATURE_INVALID,
        }
    }
}

impl From<cap_proto::canonical::WireError> for Error {
    fn from(e: cap_proto::canonical::WireError) -> Self {
        Error::Decode(e.to_string())
    }
}
