//! [`TrustError`]: every way the worker side of the trust handshake can fail.

use std::fmt;

/// What went wrong, coarse enough to match on (and to decide whether `warn` mode may
/// carry on without a session: only [`TrustErrorKind::Transport`] failures qualify, as
/// with the reference peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrustErrorKind {
    /// The trust configuration is incomplete or unsafe.
    Config,
    /// A packet (ours or the scheduler's) breaks the structural rules, does not decode,
    /// carries unknown fields or a signature that does not verify.
    Packet,
    /// A verified answer does not belong to our request (other scheduler, other
    /// challenge, other identity, a renewal that did not rotate the token).
    Binding,
    /// A timestamp is outside the allowed skew, or a challenge or token expired.
    Expired,
    /// The scheduler answered with a signed rejection ([`TrustError::rejection`]).
    Rejected,
    /// The trust service could not be reached (no responders, timeout, connection).
    Transport,
    /// Signing our packet failed.
    Sign,
    /// The lifecycle was closed.
    Closed,
}

impl TrustErrorKind {
    fn describe(self) -> &'static str {
        match self {
            TrustErrorKind::Config => "worker trust configuration",
            TrustErrorKind::Packet => "invalid trust packet",
            TrustErrorKind::Binding => "trust answer does not match",
            TrustErrorKind::Expired => "trust packet outside its validity window",
            TrustErrorKind::Rejected => "worker handshake rejected",
            TrustErrorKind::Transport => "trust service unavailable",
            TrustErrorKind::Sign => "trust signing failed",
            TrustErrorKind::Closed => "worker trust closed",
        }
    }
}

/// A failure of the worker trust handshake: a kind, a fixed detail (never text from a
/// received packet), and for [`TrustErrorKind::Rejected`] the protocol's reason.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustError {
    kind: TrustErrorKind,
    detail: String,
    rejection: Option<i32>,
}

impl TrustError {
    /// An error of `kind`.
    pub fn new(kind: TrustErrorKind, detail: impl Into<String>) -> Self {
        TrustError {
            kind,
            detail: detail.into(),
            rejection: None,
        }
    }

    /// A signed rejection with `reason` (`WorkerHandshakeRejectionReason`).
    pub fn rejected(reason: i32) -> Self {
        TrustError {
            kind: TrustErrorKind::Rejected,
            detail: reason_name(reason).to_owned(),
            rejection: Some(reason),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> TrustErrorKind {
        self.kind
    }

    /// The rejection reason, for [`TrustErrorKind::Rejected`].
    pub fn rejection(&self) -> Option<cap_proto::v1::WorkerHandshakeRejectionReason> {
        self.rejection
            .and_then(|r| cap_proto::v1::WorkerHandshakeRejectionReason::try_from(r).ok())
    }

    /// Whether the failure happened at the transport (the only kind `warn` mode fails
    /// open for).
    pub fn is_operational(&self) -> bool {
        self.kind == TrustErrorKind::Transport
    }
}

/// The protocol name of a rejection reason (`AUTHENTICATION_FAILED`), or `UNKNOWN`.
pub fn reason_name(reason: i32) -> &'static str {
    use cap_proto::v1::WorkerHandshakeRejectionReason as R;
    match R::try_from(reason) {
        Ok(R::Unspecified) => "UNSPECIFIED",
        Ok(R::InvalidRequest) => "INVALID_REQUEST",
        Ok(R::AuthenticationFailed) => "AUTHENTICATION_FAILED",
        Ok(R::ReplayDetected) => "REPLAY_DETECTED",
        Ok(R::ClockSkew) => "CLOCK_SKEW",
        Ok(R::ChallengeExpired) => "CHALLENGE_EXPIRED",
        Ok(R::SessionRequired) => "SESSION_REQUIRED",
        Ok(R::SessionInvalid) => "SESSION_INVALID",
        Ok(R::UnsupportedVersion) => "UNSUPPORTED_VERSION",
        Ok(R::InternalError) => "INTERNAL_ERROR",
        Err(_) => "UNKNOWN",
    }
}

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            f.write_str(self.kind.describe())
        } else {
            write!(f, "{}: {}", self.kind.describe(), self.detail)
        }
    }
}

impl fmt::Debug for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustError")
            .field("kind", &self.kind)
            .field("detail", &self.detail)
            .field("rejection", &self.rejection)
            .finish()
    }
}

impl std::error::Error for TrustError {}

impl From<cap_proto::trust::TrustViolation> for TrustError {
    fn from(v: cap_proto::trust::TrustViolation) -> Self {
        TrustError::new(TrustErrorKind::Packet, v.to_string())
    }
}

impl From<TrustError> for crate::Error {
    fn from(e: TrustError) -> Self {
        crate::Error::with_source(crate::ErrorKind::Trust, "", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_reasons() {
        let e = TrustError::rejected(2);
        assert_eq!(e.kind(), TrustErrorKind::Rejected);
        assert_eq!(
            e.rejection(),
            Some(cap_proto::v1::WorkerHandshakeRejectionReason::AuthenticationFailed)
        );
        assert_eq!(
            e.to_string(),
            "worker handshake rejected: AUTHENTICATION_FAILED"
        );
        assert!(!e.is_operational());
        assert!(TrustError::new(TrustErrorKind::Transport, "").is_operational());
        assert_eq!(reason_name(42), "UNKNOWN");
        let outer = crate::Error::from(e);
        assert_eq!(outer.kind(), crate::ErrorKind::Trust);
    }
}
