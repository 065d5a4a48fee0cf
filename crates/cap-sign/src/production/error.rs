//! [`ProductionError`]: every way CAP-PRODUCTION signing, verification, identity binding
//! and replay admission can fail, one kind per check of the reference peer.

use cap_proto::ErrorCode;

/// A CAP-PRODUCTION failure. Each variant is one check (the reference peer's message is
/// quoted in its doc), so callers and tests match on the kind; [`code`](Self::code) gives
/// the CAP error code a peer or an alert should carry.
///
/// Every failure rejects the packet (fail closed). [`is_store_failure`](Self::is_store_failure)
/// tells apart the replay-store failures that are not the packet's fault: the packet must
/// still not be acted upon, but it may be retried later (NAK, not ACK-and-drop).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProductionError {
    /// More than 1 MiB on the wire ("production packet exceeds size limit").
    #[error("production packet of {size} bytes exceeds the 1 MiB limit")]
    TooLarge {
        /// Size of the input.
        size: usize,
    },
    /// The input ends inside a tag, a varint or a field ("truncated varint", "truncated
    /// field").
    #[error("truncated production packet")]
    Truncated,
    /// A varint longer than 10 bytes ("oversize varint").
    #[error("oversize varint")]
    OversizeVarint,
    /// A varint (tag, length or value) in a longer form than needed ("non-minimal varint").
    #[error("non-minimal varint")]
    NonMinimalVarint,
    /// A top-level field number `BusPacket` does not define ("unknown BusPacket field").
    #[error("unknown BusPacket field {field}")]
    UnknownField {
        /// The field number.
        field: u64,
    },
    /// A known top-level field with another wire type ("wrong BusPacket field wire type").
    #[error("BusPacket field {field} has wire type {wire_type}")]
    WrongWireType {
        /// The field number.
        field: u32,
        /// The wire type received.
        wire_type: u8,
    },
    /// A top-level field present twice ("duplicate singular BusPacket field").
    #[error("duplicate BusPacket field {field}")]
    DuplicateField {
        /// The field number.
        field: u32,
    },
    /// A second payload ("multiple BusPacket payload fields").
    #[error("second BusPacket payload (field {field})")]
    MultiplePayloads {
        /// The field number of the second payload.
        field: u32,
    },
    /// `protocol_version` missing, not 1, or not encoded as the single byte `0x01`
    /// ("invalid protocol version wire").
    #[error("protocol_version must be present and encoded as the single byte 0x01")]
    ProtocolVersion,
    /// No field 14 ("missing signature").
    #[error("packet carries no signature")]
    MissingSignature,
    /// An empty field 14 ("malformed signature").
    #[error("empty signature field")]
    MalformedSignature,
    /// The unsigned bytes do not decode as a `BusPacket` ("malformed production protobuf").
    #[error("malformed production protobuf: {0}")]
    Malformed(String),
    /// A field the schema does not know inside a nested message ("unknown nested protobuf
    /// field").
    #[error("unknown nested protobuf field")]
    UnknownNestedField,
    /// No `signature_metadata`: an unsigned or legacy-signed packet ("missing signature
    /// metadata").
    #[error("packet carries no signature metadata (not a CAP-PRODUCTION packet)")]
    MissingMetadata,
    /// A profile other than `cap-production-v1` or an algorithm other than
    /// `ECDSA-P256-SHA256` ("unsupported production signature profile").
    #[error("unsupported production signature profile")]
    UnsupportedProfile,
    /// A message id that is not 16 bytes, or an empty audience or key id ("invalid
    /// signature metadata").
    #[error("invalid signature metadata: {0}")]
    InvalidMetadata(&'static str),
    /// The packet was signed for another subject ("audience mismatch").
    #[error("signature audience `{got}` is not `{expected}`")]
    AudienceMismatch {
        /// The audience this receiver expects.
        expected: String,
        /// The audience in the packet.
        got: String,
    },
    /// `expires_at` is not a valid timestamp ("invalid signature expiry").
    #[error("invalid signature expiry")]
    InvalidExpiry,
    /// `expires_at` is not after now − skew ("signature expired").
    #[error("signature expired")]
    Expired,
    /// `expires_at` is after now + max lifetime + skew ("signature lifetime exceeds bound").
    #[error("signature lifetime exceeds the bound")]
    LifetimeExceeded,
    /// `identity.tenant_id` is not the expected tenant ("tenant mismatch").
    #[error("tenant `{got}` is not `{expected}`")]
    TenantMismatch {
        /// The tenant this receiver expects.
        expected: String,
        /// The tenant in the packet's identity binding.
        got: String,
    },
    /// `sender_id` is not the expected sender ("sender mismatch").
    #[error("sender `{got}` is not `{expected}`")]
    SenderMismatch {
        /// The sender this receiver expects.
        expected: String,
        /// The packet's sender.
        got: String,
    },
    /// No trusted key with the packet's key id ("unknown key id").
    #[error("no trusted key with id `{key_id}`")]
    UnknownKeyId {
        /// The key id in the packet's metadata.
        key_id: String,
    },
    /// The signature does not verify over the production transcript ("invalid signature").
    #[error("signature does not verify")]
    BadSignature,
    /// A mirror of the identity in a `JobRequest` disagrees with the envelope's
    /// authoritative `IdentityBinding` (`IdentityMismatchError`).
    #[error("job request identity mismatch: {0}")]
    IdentityMismatch(&'static str),
    /// The same (tenant, audience, sender, message id) was admitted with another body
    /// digest (`ReplayConflictError`).
    #[error("replay conflict: message id reused with a different body")]
    ReplayConflict,
    /// The replay store could not answer (backend down, invalid admission input): reject
    /// the packet, never treat it as first seen (`ReplayStoreUnavailableError`).
    #[error("replay store unavailable: {0}")]
    ReplayUnavailable(String),
    /// The bounded in-memory replay store is full of unexpired entries (fail closed).
    #[error("replay store is full ({capacity} unexpired entries)")]
    ReplayFull {
        /// The store's capacity.
        capacity: usize,
    },
    /// A receiver or sealing configuration the profile does not allow (empty or padded
    /// authority, lifetime above 5 min, skew above 1 min, …).
    #[error("invalid production configuration: {0}")]
    Config(&'static str),
    /// The signer failed (KMS/HSM error, or an RNG failure generating a message id).
    #[error("signer failed: {0}")]
    Signer(String),
}

impl ProductionError {
    /// The CAP error code for this error: 101 for structure, 100 for the version, 104 for
    /// a missing production signature, 103 for signature, metadata, authority and replay
    /// conflicts, 0 for configuration, signer and replay-store failures.
    pub fn code(&self) -> ErrorCode {
        use ProductionError as E;
        match self {
            E::TooLarge { .. }
            | E::Truncated
            | E::OversizeVarint
            | E::NonMinimalVarint
            | E::UnknownField { .. }
            | E::WrongWireType { .. }
            | E::DuplicateField { .. }
            | E::MultiplePayloads { .. }
            | E::Malformed(_)
            | E::UnknownNestedField
            | E::IdentityMismatch(_) => ErrorCode::PROTOCOL_MALFORMED_PACKET,
            E::ProtocolVersion => ErrorCode::PROTOCOL_VERSION_MISMATCH,
            E::MissingSignature | E::MissingMetadata => ErrorCode::PROTOCOL_SIGNATURE_MISSING,
            E::MalformedSignature
            | E::UnsupportedProfile
            | E::InvalidMetadata(_)
            | E::AudienceMismatch { .. }
            | E::InvalidExpiry
            | E::Expired
            | E::LifetimeExceeded
            | E::TenantMismatch { .. }
            | E::SenderMismatch { .. }
            | E::UnknownKeyId { .. }
            | E::BadSignature
            | E::ReplayConflict => ErrorCode::PROTOCOL_SIGNATURE_INVALID,
            E::ReplayUnavailable(_) | E::ReplayFull { .. } | E::Config(_) | E::Signer(_) => {
                ErrorCode::UNSPECIFIED
            }
        }
    }

    /// Whether this is a replay-store failure ([`ReplayUnavailable`](Self::ReplayUnavailable),
    /// [`ReplayFull`](Self::ReplayFull)) rather than a fault of the packet: reject it now,
    /// and let the transport redeliver it later.
    pub fn is_store_failure(&self) -> bool {
        matches!(
            self,
            ProductionError::ReplayUnavailable(_) | ProductionError::ReplayFull { .. }
        )
    }
}

impl From<crate::Error> for ProductionError {
    fn from(e: crate::Error) -> Self {
        ProductionError::Signer(e.to_string())
    }
}
