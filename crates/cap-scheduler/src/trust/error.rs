//! [`Error`]: the one error type of the scheduler's trust service.

use std::fmt;

/// What went wrong, coarse enough to match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A setting is unusable (an identity that is not canonical, a lifetime out of
    /// bounds, a mode without keys).
    Config,
    /// The worker key directory or one of its files cannot be used.
    Keys,
    /// The challenge and session store failed (answered as `INTERNAL_ERROR`).
    Store,
    /// Signing a reply failed, or the RNG did.
    Sign,
}

/// An error of the trust service: a kind and a detail (never text from a packet).
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    detail: String,
}

impl Error {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Error {
            kind,
            detail: detail.into(),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub(crate) fn store(e: impl fmt::Display) -> Self {
        Error::new(ErrorKind::Store, e.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ErrorKind::Config => "worker trust configuration",
            ErrorKind::Keys => "worker keys",
            ErrorKind::Store => "trust store",
            ErrorKind::Sign => "trust signing",
        };
        write!(f, "{what}: {}", self.detail)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("detail", &self.detail)
            .finish()
    }
}

impl std::error::Error for Error {}
