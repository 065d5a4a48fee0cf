//! [`Error`]: everything cap-safety can fail with, matchable by [`ErrorKind`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A policy file (or candidate policy) is not valid: syntax, schema or semantics.
    InvalidPolicy,
    /// A file could not be read.
    Io,
    /// A request the kernel refuses to evaluate.
    InvalidRequest,
    /// The safety kernel could not be reached (connection refused, reset, ...).
    Transport,
    /// A call did not finish within its timeout.
    Timeout,
    /// The safety kernel answered with a gRPC error status.
    Status,
    /// A configuration value is wrong (listen address, TLS files, features).
    Config,
}

/// Where in which policy a policy is invalid, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The policy's origin: a file path, or a label such as `<effective_config>`.
    pub source: String,
    /// The path inside the document, e.g. `rules[2].match.topics[0]` (`.` for the root).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// 1-based line and column of the problem, when the parser knows them.
    pub location: Option<(usize, usize)>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid policy {}: at {}: {}",
            self.source, self.path, self.message
        )?;
        if let Some((line, column)) = self.location {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

/// An error from loading policies, serving, or calling a safety kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A policy is invalid; the boxed details say where and why.
    #[error(transparent)]
    Policy(Box<PolicyError>),
    /// Reading a file failed.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The request cannot be evaluated.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The kernel could not be reached.
    #[error("safety kernel unreachable: {0}")]
    Transport(String),
    /// A call timed out.
    #[error("safety kernel call timed out after {0:?}")]
    Timeout(Duration),
    /// The kernel answered with an error status.
    #[error("safety kernel returned {code:?}: {message}")]
    Status {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// A configuration problem.
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Policy(_) => ErrorKind::InvalidPolicy,
            Error::Io { .. } => ErrorKind::Io,
            Error::InvalidRequest(_) => ErrorKind::InvalidRequest,
            Error::Transport(_) => ErrorKind::Transport,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Status { .. } => ErrorKind::Status,
            Error::Config(_) => ErrorKind::Config,
        }
    }

    /// The policy details when this is an [`ErrorKind::InvalidPolicy`] error.
    pub fn policy(&self) -> Option<&PolicyError> {
        match self {
            Error::Policy(p) => Some(p),
            _ => None,
        }
    }

    /// Whether retrying the same call may succeed (transport failures and timeouts).
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Transport | ErrorKind::Timeout)
    }

    pub(crate) fn policy_at(
        source: &str,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Policy(Box::new(PolicyError {
            source: source.to_owned(),
            path: path.into(),
            message: message.into(),
            location: None,
        }))
    }
}

impl From<PolicyError> for Error {
    fn from(e: PolicyError) -> Self {
        Error::Policy(Box::new(e))
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::Unavailable => Error::Transport(s.message().to_owned()),
            code => Error::Status {
                code,
                message: s.message().to_owned(),
            },
        }
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(e: tonic::transport::Error) -> Self {
        // The Display of a transport error is terse ("transport error"); the source says why.
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        Error::Transport(msg)
    }
}
