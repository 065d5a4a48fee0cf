//! [`Error`]: the one error type of this crate, matchable by [`ErrorKind`] and mapped to
//! the CAP transport error codes (400-402).

use cap_proto::ErrorCode;
use std::fmt;

/// What went wrong, coarse enough to match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A publish (or a request's publish) could not be handed to the transport.
    Publish,
    /// A subscription could not be created.
    Subscribe,
    /// The connection to the transport is lost or could not be established.
    ConnectionLost,
    /// Payload plus headers exceed the transport's maximum message size.
    PayloadTooLarge,
    /// A request got no reply in time, or the transport did not confirm in time.
    Timeout,
    /// A request was sent to a subject nobody listens on.
    NoResponders,
    /// The bus was closed (or drained); no further operations are possible.
    Closed,
    /// A publish subject is not a valid concrete subject.
    InvalidSubject,
    /// A subscription pattern or queue group name is not valid.
    InvalidPattern,
    /// A header name or value cannot be carried (see [`Headers`](crate::Headers)).
    InvalidHeader,
    /// An acknowledgement (ack, nak, progress) could not be sent.
    Ack,
    /// The transport's configuration is invalid or conflicts with the server's state
    /// (for example a JetStream stream with an incompatible configuration).
    Config,
}

impl ErrorKind {
    /// The CAP error code for this kind: 400 for publish-side failures, 401 for
    /// subscribe-side failures, 402 for connection failures.
    pub const fn code(self) -> ErrorCode {
        match self {
            ErrorKind::Publish
            | ErrorKind::PayloadTooLarge
            | ErrorKind::Timeout
            | ErrorKind::NoResponders
            | ErrorKind::InvalidSubject
            | ErrorKind::InvalidHeader => ErrorCode::TRANSPORT_PUBLISH_FAILED,
            ErrorKind::Subscribe | ErrorKind::InvalidPattern | ErrorKind::Ack => {
                ErrorCode::TRANSPORT_SUBSCRIBE_FAILED
            }
            ErrorKind::ConnectionLost | ErrorKind::Closed | ErrorKind::Config => {
                ErrorCode::TRANSPORT_CONNECTION_LOST
            }
        }
    }

    /// Whether retrying the same operation later may succeed.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Publish
                | ErrorKind::Subscribe
                | ErrorKind::ConnectionLost
                | ErrorKind::Timeout
                | ErrorKind::NoResponders
                | ErrorKind::Ack
        )
    }

    const fn describe(self) -> &'static str {
        match self {
            ErrorKind::Publish => "publish failed",
            ErrorKind::Subscribe => "subscribe failed",
            ErrorKind::ConnectionLost => "connection lost",
            ErrorKind::PayloadTooLarge => "payload too large",
            ErrorKind::Timeout => "timed out",
            ErrorKind::NoResponders => "no responders",
            ErrorKind::Closed => "bus closed",
            ErrorKind::InvalidSubject => "invalid subject",
            ErrorKind::InvalidPattern => "invalid subscription pattern",
            ErrorKind::InvalidHeader => "invalid header",
            ErrorKind::Ack => "acknowledgement failed",
            ErrorKind::Config => "invalid transport configuration",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A bus error: a [`kind`](Error::kind), a short detail and, when there is one, the
/// underlying cause (available through [`std::error::Error::source`]).
///
/// ```
/// use cap_bus::{Error, ErrorKind};
/// use cap_proto::ErrorCode;
///
/// let err = Error::new(ErrorKind::PayloadTooLarge, "2000000 bytes > 1048576");
/// assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
/// assert_eq!(err.code(), ErrorCode::TRANSPORT_PUBLISH_FAILED);
/// assert!(!err.is_retryable());
/// assert_eq!(err.to_string(), "payload too large: 2000000 bytes > 1048576");
/// ```
pub struct Error {
    kind: ErrorKind,
    detail: Box<str>,
    source: Option<Source>,
}

impl Error {
    /// An error of `kind` with a short detail (no payload text, no secrets).
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Error {
            kind,
            detail: detail.into().into_boxed_str(),
            source: None,
        }
    }

    /// An error of `kind` caused by `source`.
    pub fn with_source(
        kind: ErrorKind,
        detail: impl Into<String>,
        source: impl Into<Source>,
    ) -> Self {
        Error {
            kind,
            detail: detail.into().into_boxed_str(),
            source: Some(source.into()),
        }
    }

    /// The bus is closed.
    pub fn closed() -> Self {
        Error::new(ErrorKind::Closed, "")
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The CAP error code (400 publish failed, 401 subscribe failed, 402 connection lost).
    pub fn code(&self) -> ErrorCode {
        self.kind.code()
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// The detail text given when the error was made.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}: {}", self.kind, self.detail)
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("detail", &self.detail);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<cap_proto::SubjectError> for Error {
    fn from(err: cap_proto::SubjectError) -> Self {
        Error::with_source(ErrorKind::InvalidSubject, err.to_string(), err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_cover_the_transport_range() {
        let cases = [
            (ErrorKind::Publish, 400),
            (ErrorKind::PayloadTooLarge, 400),
            (ErrorKind::Timeout, 400),
            (ErrorKind::NoResponders, 400),
            (ErrorKind::InvalidSubject, 400),
            (ErrorKind::InvalidHeader, 400),
            (ErrorKind::Subscribe, 401),
            (ErrorKind::InvalidPattern, 401),
            (ErrorKind::Ack, 401),
            (ErrorKind::ConnectionLost, 402),
            (ErrorKind::Closed, 402),
            (ErrorKind::Config, 402),
        ];
        for (kind, code) in cases {
            assert_eq!(Error::new(kind, "x").code().as_i32(), code, "{kind:?}");
            assert!(kind.code().is_retryable() || code == 0);
        }
    }

    #[test]
    fn source_and_display() {
        use std::error::Error as _;
        let io = std::io::Error::other("boom");
        let err = Error::with_source(ErrorKind::ConnectionLost, "nats://x", io);
        assert_eq!(err.to_string(), "connection lost: nats://x");
        assert_eq!(err.source().map(|s| s.to_string()), Some("boom".into()));
        assert_eq!(Error::closed().to_string(), "bus closed");
        assert!(format!("{err:?}").contains("ConnectionLost"));
        let subj: Error = cap_proto::Subject::new("a b").unwrap_err().into();
        assert_eq!(subj.kind(), ErrorKind::InvalidSubject);
    }
}
