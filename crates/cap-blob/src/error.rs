//! The crate's one error type, matchable by [`ErrorKind`].

use std::fmt;

use cap_proto::PointerError;

/// A boxed cause from a backend (an IO error, a Redis error, ...).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as a `Copy` value to match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No live blob under the key (never written, deleted or expired).
    NotFound,
    /// The blob is larger than the store's limit; nothing was written.
    TooLarge,
    /// The pointer is malformed, or names a blob this store does not serve.
    InvalidPointer,
    /// The key is empty, too long, or has characters a pointer cannot carry.
    InvalidKey,
    /// A [`Router`](crate::Router) has no store for the pointer's scheme.
    UnregisteredScheme,
    /// The backend cannot be reached right now (connection refused or lost, timeout).
    /// Usually worth retrying.
    Unavailable,
    /// The backend answered with an error, or local IO failed.
    Backend,
    /// The store's configuration is unusable (bad URL, unreadable TLS files, ...).
    InvalidConfig,
    /// The pointer names something the job may not read (see
    /// [`PointerScope`](crate::PointerScope)); nothing was read.
    OutOfScope,
}

impl ErrorKind {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable)
    }
}

/// An error from a blob store or the router.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`ErrorKind::NotFound`].
    #[error("blob `{key}` not found")]
    NotFound {
        /// The key that was looked up.
        key: String,
    },
    /// See [`ErrorKind::TooLarge`].
    #[error("blob of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the rejected blob, in bytes.
        size: usize,
        /// The store's limit, in bytes.
        limit: usize,
    },
    /// See [`ErrorKind::InvalidPointer`].
    #[error("invalid pointer: {reason}")]
    InvalidPointer {
        /// Why the pointer was refused.
        reason: String,
        /// The parse error, when the pointer did not parse.
        #[source]
        source: Option<PointerError>,
    },
    /// See [`ErrorKind::InvalidKey`].
    #[error("invalid blob key: {reason}")]
    InvalidKey {
        /// Why the key was refused.
        reason: &'static str,
    },
    /// See [`ErrorKind::UnregisteredScheme`].
    #[error("no blob store is registered for pointer scheme `{scheme}://`")]
    UnregisteredScheme {
        /// The pointer's scheme.
        scheme: String,
    },
    /// See [`ErrorKind::Unavailable`].
    #[error("{backend} blob store at {location} is unavailable: {source}")]
    Unavailable {
        /// Which backend (`redis`, `file`, ...).
        backend: &'static str,
        /// Where it was reached: a URL without its password, or a directory.
        location: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// See [`ErrorKind::Backend`].
    #[error("{backend} blob store at {location} failed: {source}")]
    Backend {
        /// Which backend (`redis`, `file`, ...).
        backend: &'static str,
        /// Where it was reached: a URL without its password, or a directory.
        location: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// See [`ErrorKind::OutOfScope`]. The message is fixed: the rule, never the key.
    #[error("pointer refused: {rule}")]
    OutOfScope {
        /// The rule the pointer broke.
        rule: crate::ScopeRule,
    },
    /// See [`ErrorKind::InvalidConfig`].
    #[error("invalid blob store configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
}

/// How an error of `kind` reads where whoever caused it may see it (a job's result):
/// the kind without the store's details (its location, its own error text).
impl ErrorKind {
    /// A fixed description of the kind.
    pub fn public_message(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "no blob at the pointer",
            ErrorKind::TooLarge => "blob too large",
            ErrorKind::InvalidPointer => "invalid pointer",
            ErrorKind::InvalidKey => "invalid blob key",
            ErrorKind::UnregisteredScheme => "no blob store serves the pointer's scheme",
            ErrorKind::Unavailable => "the blob store is unavailable",
            ErrorKind::Backend => "the blob store failed",
            ErrorKind::InvalidConfig => "the blob store is misconfigured",
            ErrorKind::OutOfScope => "pointer refused",
        }
    }
}

impl Error {
    /// The kind of error, to match on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::InvalidPointer { .. } => ErrorKind::InvalidPointer,
            Error::InvalidKey { .. } => ErrorKind::InvalidKey,
            Error::UnregisteredScheme { .. } => ErrorKind::UnregisteredScheme,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Backend { .. } => ErrorKind::Backend,
            Error::InvalidConfig { .. } => ErrorKind::InvalidConfig,
            Error::OutOfScope { .. } => ErrorKind::OutOfScope,
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    pub(crate) fn not_found(key: &str) -> Self {
        Error::NotFound {
            key: key.to_owned(),
        }
    }

    pub(crate) fn out_of_scope(rule: crate::ScopeRule) -> Self {
        Error::OutOfScope { rule }
    }

    pub(crate) fn invalid_pointer(reason: impl Into<String>) -> Self {
        Error::InvalidPointer {
            reason: reason.into(),
            source: None,
        }
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            reason: reason.into(),
            source: None,
        }
    }

    #[allow(dead_code)] // unused when every backend feature is off
    pub(crate) fn config_with(reason: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::InvalidConfig {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }
}

impl From<PointerError> for Error {
    fn from(e: PointerError) -> Self {
        Error::InvalidPointer {
            reason: e.to_string(),
            source: Some(e),
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::TooLarge => "too large",
            ErrorKind::InvalidPointer => "invalid pointer",
            ErrorKind::InvalidKey => "invalid key",
            ErrorKind::UnregisteredScheme => "unregistered scheme",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Backend => "backend error",
            ErrorKind::InvalidConfig => "invalid configuration",
            ErrorKind::OutOfScope => "out of scope",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_messages() {
        let e = Error::TooLarge { size: 3, limit: 2 };
        assert_eq!(e.kind(), ErrorKind::TooLarge);
        assert_eq!(
            e.to_string(),
            "blob of 3 bytes exceeds the limit of 2 bytes"
        );
        assert!(!e.is_retryable());

        let e: Error = cap_proto::Pointer::parse("ftp://x").unwrap_err().into();
        assert_eq!(e.kind(), ErrorKind::InvalidPointer);
        assert!(std::error::Error::source(&e).is_some());

        let e = Error::Unavailable {
            backend: "redis",
            location: "redis://127.0.0.1:1/0".into(),
            source: "connection refused".into(),
        };
        assert!(e.is_retryable());
        assert_eq!(
            e.to_string(),
            "redis blob store at redis://127.0.0.1:1/0 is unavailable: connection refused"
        );
        assert_eq!(
            ErrorKind::UnregisteredScheme.to_string(),
            "unregistered scheme"
        );
    }
}
