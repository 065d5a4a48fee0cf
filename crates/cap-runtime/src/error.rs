//! [`Error`]: the one error type of this crate, matchable by [`ErrorKind`].

use cap_proto::ErrorCode;
use std::fmt;

/// What went wrong, coarse enough to match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The bus failed (publish, subscribe, connection).
    Bus,
    /// The blob store failed (context or result could not be read or written).
    Blob,
    /// Signing an outgoing packet failed.
    Sign,
    /// A value could not be encoded to JSON, or decoded from it.
    Json,
    /// A configuration value is unusable (an id that is not one subject token, a topic
    /// that is not a subject, ...).
    Config,
    /// No result arrived in time.
    Timeout,
    /// The job finished without success (see [`Error::job_result`]).
    JobFailed,
    /// The component was shut down or closed.
    Closed,
    /// The worker trust handshake failed, or a packet cannot go out without a session
    /// (see [`crate::trust`]).
    Trust,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Bus => "bus error",
            ErrorKind::Blob => "blob store error",
            ErrorKind::Sign => "signing failed",
            ErrorKind::Json => "JSON error",
            ErrorKind::Config => "invalid configuration",
            ErrorKind::Timeout => "timed out",
            ErrorKind::JobFailed => "job failed",
            ErrorKind::Closed => "closed",
            ErrorKind::Trust => "worker trust",
        })
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of the runtime: a [`kind`](Error::kind), a detail without payload text, the
/// underlying cause when there is one, and for [`ErrorKind::JobFailed`] the job's result.
///
/// ```
/// use cap_runtime::{Error, ErrorKind};
/// let e = Error::new(ErrorKind::Timeout, "no result for job j-1 within 5s");
/// assert_eq!(e.kind(), ErrorKind::Timeout);
/// assert_eq!(e.to_string(), "timed out: no result for job j-1 within 5s");
/// ```
pub struct Error {
    kind: ErrorKind,
    detail: Box<str>,
    source: Option<Source>,
    result: Option<Box<cap_proto::v1::JobResult>>,
}

impl Error {
    /// An error of `kind` with a short detail.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Error {
            kind,
            detail: detail.into().into_boxed_str(),
            source: None,
            result: None,
        }
    }

    /// An error of `kind` caused by `source`.
    pub fn with_source(
        kind: ErrorKind,
        detail: impl Into<String>,
        source: impl Into<Source>,
    ) -> Self {
        Error {
            source: Some(source.into()),
            ..Error::new(kind, detail)
        }
    }

    /// A [`ErrorKind::JobFailed`] error carrying the job's result.
    pub fn job_failed(result: cap_proto::v1::JobResult) -> Self {
        let status = cap_proto::JobState::from_i32(result.status)
            .map(|s| format!("{s:?}"))
            .unwrap_or_else(|| result.status.to_string());
        let code = ErrorCode::of_result(&result);
        let mut detail = format!("job {} ended {status}", result.job_id);
        if code != ErrorCode::UNSPECIFIED {
            detail.push_str(&format!(" ({code})"));
        }
        if !result.error_message.is_empty() {
            detail.push_str(": ");
            detail.push_str(&result.error_message);
        }
        Error {
            result: Some(Box::new(result)),
            ..Error::new(ErrorKind::JobFailed, detail)
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The job's result, for [`ErrorKind::JobFailed`].
    pub fn job_result(&self) -> Option<&cap_proto::v1::JobResult> {
        self.result.as_deref()
    }

    /// The CAP error code that describes this error.
    pub fn code(&self) -> ErrorCode {
        if let Some(r) = &self.result {
            return ErrorCode::of_result(r);
        }
        if let Some(e) = self
            .source
            .as_ref()
            .and_then(|s| s.downcast_ref::<cap_bus::Error>())
        {
            return e.code();
        }
        match self.kind {
            ErrorKind::Timeout => ErrorCode::JOB_TIMEOUT,
            ErrorKind::Bus | ErrorKind::Closed => ErrorCode::TRANSPORT_CONNECTION_LOST,
            _ => ErrorCode::UNSPECIFIED,
        }
    }

    pub(crate) fn closed(detail: impl Into<String>) -> Self {
        Error::new(ErrorKind::Closed, detail)
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
        if let Some(s) = &self.source {
            d.field("source", &s.to_string());
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

impl From<cap_bus::Error> for Error {
    fn from(e: cap_bus::Error) -> Self {
        let kind = if e.kind() == cap_bus::ErrorKind::Closed {
            ErrorKind::Closed
        } else {
            ErrorKind::Bus
        };
        Error::with_source(kind, "", e)
    }
}

impl From<cap_blob::Error> for Error {
    fn from(e: cap_blob::Error) -> Self {
        Error::with_source(ErrorKind::Blob, "", e)
    }
}

impl From<cap_sign::Error> for Error {
    fn from(e: cap_sign::Error) -> Self {
        Error::with_source(ErrorKind::Sign, "", e)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::with_source(ErrorKind::Json, "", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_proto::v1;

    #[test]
    fn kinds_codes_and_display() {
        let bus = Error::from(cap_bus::Error::new(cap_bus::ErrorKind::Publish, "x"));
        assert_eq!(bus.kind(), ErrorKind::Bus);
        assert_eq!(bus.code(), ErrorCode::TRANSPORT_PUBLISH_FAILED);
        assert!(std::error::Error::source(&bus).is_some());
        assert_eq!(
            Error::from(cap_bus::Error::closed()).kind(),
            ErrorKind::Closed
        );

        let mut r = v1::JobResult {
            job_id: "j".into(),
            status: v1::JobStatus::FailedFatal as i32,
            error_message: "boom".into(),
            ..Default::default()
        };
        ErrorCode::JOB_INVALID_INPUT.apply_to(&mut r);
        let e = Error::job_failed(r);
        assert_eq!(e.kind(), ErrorKind::JobFailed);
        assert_eq!(e.code(), ErrorCode::JOB_INVALID_INPUT);
        assert!(e.to_string().contains("FailedFatal"), "{e}");
        assert!(e.to_string().contains("boom"), "{e}");
        assert_eq!(e.job_result().map(|r| r.job_id.as_str()), Some("j"));
        assert_eq!(
            Error::new(ErrorKind::Timeout, "").code(),
            ErrorCode::JOB_TIMEOUT
        );
    }
}
