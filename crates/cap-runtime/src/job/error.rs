//! [`JobError`]: how a handler (or the runtime on its behalf) says a job did not succeed.

use cap_proto::{ErrorCode, v1};
use std::fmt;

/// How a job failed, which decides the result's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobErrorKind {
    /// A plain failure: status FAILED.
    Failed,
    /// A failure a retry may fix: retried by the retry layer, then status
    /// FAILED_RETRYABLE.
    Retryable,
    /// A failure no retry fixes: status FAILED_FATAL.
    Fatal,
    /// The job's deadline passed: status TIMEOUT.
    Timeout,
    /// The job was cancelled: status CANCELLED.
    Cancelled,
    /// The handler panicked: status FAILED.
    Panicked,
}

impl JobErrorKind {
    /// The result status for this kind.
    pub fn status(self) -> v1::JobStatus {
        match self {
            JobErrorKind::Failed | JobErrorKind::Panicked => v1::JobStatus::Failed,
            JobErrorKind::Retryable => v1::JobStatus::FailedRetryable,
            JobErrorKind::Fatal => v1::JobStatus::FailedFatal,
            JobErrorKind::Timeout => v1::JobStatus::Timeout,
            JobErrorKind::Cancelled => v1::JobStatus::Cancelled,
        }
    }
}

/// A job failure: a [`JobErrorKind`], a CAP [`ErrorCode`] and a message.
///
/// Handlers return `Result<Output, E>` with `E: Into<JobError>`; strings, I/O and JSON
/// errors convert into a plain [`JobErrorKind::Failed`]. Implement `From<YourError> for
/// JobError` to say which of your errors are retryable.
///
/// ```
/// use cap_runtime::{JobError, JobErrorKind};
/// use cap_proto::{ErrorCode, v1::JobStatus};
/// let e = JobError::retryable(ErrorCode::JOB_RESOURCE_EXHAUSTED, "GPU busy");
/// assert!(e.is_retryable());
/// assert_eq!(e.kind().status(), JobStatus::FailedRetryable);
/// let e = JobError::fatal(ErrorCode::from_i32(4001), "unsupported model");
/// assert_eq!(e.code().as_i32(), 4001);
/// let e: JobError = "plain failure".into();
/// assert_eq!(e.kind(), JobErrorKind::Failed);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct JobError {
    kind: JobErrorKind,
    code: ErrorCode,
    message: String,
}

impl JobError {
    /// An error of `kind` with `code` and `message`.
    pub fn new(kind: JobErrorKind, code: ErrorCode, message: impl Into<String>) -> Self {
        JobError {
            kind,
            code,
            message: message.into(),
        }
    }

    /// A plain failure (status FAILED) without a code.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(JobErrorKind::Failed, ErrorCode::UNSPECIFIED, message)
    }

    /// A failure that a retry may fix.
    pub fn retryable(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(JobErrorKind::Retryable, code, message)
    }

    /// A failure that no retry fixes.
    pub fn fatal(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(JobErrorKind::Fatal, code, message)
    }

    /// Input that does not decode or does not fit the handler's schema (203, FAILED).
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(JobErrorKind::Failed, ErrorCode::JOB_INVALID_INPUT, message)
    }

    /// The job's context is missing (204, FAILED).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(JobErrorKind::Failed, ErrorCode::JOB_NOT_FOUND, message)
    }

    /// The deadline passed (200, TIMEOUT).
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(JobErrorKind::Timeout, ErrorCode::JOB_TIMEOUT, message)
    }

    /// The job was cancelled (CANCELLED).
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(JobErrorKind::Cancelled, ErrorCode::UNSPECIFIED, message)
    }

    /// The handler panicked (FAILED).
    pub fn panicked(message: impl Into<String>) -> Self {
        Self::new(JobErrorKind::Panicked, ErrorCode::UNSPECIFIED, message)
    }

    /// The kind.
    pub fn kind(&self) -> JobErrorKind {
        self.kind
    }

    /// The CAP error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the retry layer may try again.
    pub fn is_retryable(&self) -> bool {
        self.kind == JobErrorKind::Retryable
    }

    /// Writes status, error code (both fields) and message into `result`.
    pub fn apply_to(&self, result: &mut v1::JobResult) {
        result.status = self.kind.status() as i32;
        if self.code != ErrorCode::UNSPECIFIED {
            self.code.apply_to(result);
        }
        result.error_message = truncate(&self.message, cap_proto::validate::MAX_TEXT_LEN);
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobError")
            .field("kind", &self.kind)
            .field("code", &self.code)
            .field("message", &self.message)
            .finish()
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.kind)?;
        if self.code != ErrorCode::UNSPECIFIED {
            write!(f, " ({})", self.code)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl From<String> for JobError {
    fn from(s: String) -> Self {
        JobError::failed(s)
    }
}

impl From<&str> for JobError {
    fn from(s: &str) -> Self {
        JobError::failed(s)
    }
}

impl From<std::io::Error> for JobError {
    fn from(e: std::io::Error) -> Self {
        JobError::failed(e.to_string())
    }
}

impl From<serde_json::Error> for JobError {
    fn from(e: serde_json::Error) -> Self {
        JobError::failed(e.to_string())
    }
}

impl From<Box<dyn std::error::Error + Send + Sync>> for JobError {
    fn from(e: Box<dyn std::error::Error + Send + Sync>) -> Self {
        JobError::failed(e.to_string())
    }
}

impl From<std::convert::Infallible> for JobError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_land_in_the_result() {
        let mut r = v1::JobResult::default();
        JobError::fatal(ErrorCode::JOB_PERMISSION_DENIED, "no").apply_to(&mut r);
        assert_eq!(r.status, v1::JobStatus::FailedFatal as i32);
        assert_eq!(r.error_code_enum, 202);
        assert_eq!(r.error_code, "ERROR_CODE_JOB_PERMISSION_DENIED");
        assert_eq!(r.error_message, "no");

        let mut r = v1::JobResult::default();
        JobError::failed("x".repeat(70_000)).apply_to(&mut r);
        assert_eq!(r.status, v1::JobStatus::Failed as i32);
        assert_eq!(r.error_code_enum, 0);
        assert_eq!(r.error_message.len(), cap_proto::validate::MAX_TEXT_LEN);

        for (e, s) in [
            (JobError::timeout("t"), v1::JobStatus::Timeout),
            (JobError::cancelled("c"), v1::JobStatus::Cancelled),
            (JobError::panicked("p"), v1::JobStatus::Failed),
            (JobError::invalid_input("i"), v1::JobStatus::Failed),
        ] {
            assert_eq!(e.kind().status(), s);
        }
        assert_eq!(
            JobError::retryable(ErrorCode::JOB_TIMEOUT, "m").to_string(),
            "Retryable (ERROR_CODE_JOB_TIMEOUT): m"
        );
    }
}
