//! Bus subjects: the CAP subject constants, checked subject builders and NATS-style
//! wildcard matching.
//!
//! Subjects are dot-separated tokens. In a subscription pattern `*` matches exactly one
//! token and `>` (only as the last token) matches one or more tokens.
//!
//! ```
//! use cap_proto::subject::{self, Subject};
//! assert_eq!(subject::pool("echo").unwrap().as_str(), "job.echo");
//! assert_eq!(subject::worker_jobs("w-1").unwrap().as_str(), "worker.w-1.jobs");
//! assert!(subject::pool("bad pool").is_err());
//! assert!(subject::matches("job.*", "job.echo"));
//! assert!(subject::matches("sys.>", "sys.job.submit"));
//! assert!(!subject::matches("job.*", "job.a.b"));
//! ```

use std::fmt;

/// Job requests from clients to the scheduler.
pub const SUBMIT: &str = "sys.job.submit";
/// Job results from workers.
pub const RESULT: &str = "sys.job.result";
/// Worker heartbeats.
pub const HEARTBEAT: &str = "sys.heartbeat";
/// System alerts.
pub const ALERT: &str = "sys.alert";
/// Job progress reports.
pub const PROGRESS: &str = "sys.job.progress";
/// Job cancellation requests.
pub const CANCEL: &str = "sys.job.cancel";
/// Dead letters (`BusPacket{JobResult}`).
pub const DLQ: &str = "sys.job.dlq";
/// Workflow events.
pub const WORKFLOW_EVENT: &str = "sys.workflow.event";
/// Capability handshakes.
pub const HANDSHAKE: &str = "sys.handshake";
/// Worker trust handshake: challenge request/reply (never persisted).
pub const WORKER_HANDSHAKE_CHALLENGE: &str = "sys.worker.handshake.challenge";
/// Worker trust handshake: authenticate request/reply (never persisted).
pub const WORKER_HANDSHAKE_AUTHENTICATE: &str = "sys.worker.handshake.authenticate";
/// Prefix of pool subjects (`job.<pool>`).
pub const POOL_PREFIX: &str = "job.";

/// Longest subject accepted, in bytes.
pub const MAX_SUBJECT_LEN: usize = 512;

/// Why a string is not a valid subject or subject pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubjectError {
    /// The subject is empty.
    #[error("subject is empty")]
    Empty,
    /// A token between dots is empty (`a..b`, `.a`, `a.`).
    #[error("subject has an empty token")]
    EmptyToken,
    /// Whitespace or a control character.
    #[error("subject contains whitespace or a control character")]
    Whitespace,
    /// A wildcard where a concrete subject is required.
    #[error("wildcards are not allowed here")]
    Wildcard,
    /// `*` or `>` inside a token, or `>` before the last token.
    #[error("misplaced wildcard")]
    MisplacedWildcard,
    /// A token that must be a single token contains a dot.
    #[error("`{0}` must be a single token (no dots)")]
    NotSingleToken(&'static str),
    /// Longer than [`MAX_SUBJECT_LEN`].
    #[error("subject is longer than {MAX_SUBJECT_LEN} bytes")]
    TooLong,
}

/// A checked concrete subject (no wildcards), safe to publish to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(String);

impl Subject {
    /// Checks a concrete subject.
    pub fn new(s: impl Into<String>) -> Result<Self, SubjectError> {
        let s = s.into();
        check(&s, false)?;
        Ok(Self(s))
    }

    /// The subject text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The subject text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Subject {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Subject {
    type Error = SubjectError;
    fn try_from(s: &str) -> Result<Self, SubjectError> {
        Subject::new(s)
    }
}

/// Checks a concrete subject (no wildcards), as [`Subject::new`] does, without
/// allocating.
pub fn check_subject(s: &str) -> Result<(), SubjectError> {
    check(s, false)
}

/// Checks a subscription pattern (wildcards allowed where NATS allows them).
pub fn check_pattern(s: &str) -> Result<(), SubjectError> {
    check(s, true)
}

fn check(s: &str, wildcards: bool) -> Result<(), SubjectError> {
    if s.is_empty() {
        return Err(SubjectError::Empty);
    }
    if s.len() > MAX_SUBJECT_LEN {
        return Err(SubjectError::TooLong);
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SubjectError::Whitespace);
    }
    let count = s.split('.').count();
    for (i, token) in s.split('.').enumerate() {
        if token.is_empty() {
            return Err(SubjectError::EmptyToken);
        }
        let has_wild = token.contains(['*', '>']);
        if !has_wild {
            continue;
        }
        if !wildcards {
            return Err(SubjectError::Wildcard);
        }
        let ok = token == "*" || (token == ">" && i + 1 == count);
        if !ok {
            return Err(SubjectError::MisplacedWildcard);
        }
    }
    Ok(())
}

/// The pool subject `job.<pool>`. The pool may span several tokens (`code.review`);
/// a pool given with its `job.` prefix is accepted as is.
pub fn pool(pool: &str) -> Result<Subject, SubjectError> {
    if pool.starts_with(POOL_PREFIX) {
        return Subject::new(pool);
    }
    if pool.is_empty() {
        return Err(SubjectError::Empty);
    }
    Subject::new(format!("{POOL_PREFIX}{pool}"))
}

/// The direct dispatch subject `worker.<worker_id>.jobs`; the id must be one token.
pub fn worker_jobs(worker_id: &str) -> Result<Subject, SubjectError> {
    if worker_id.is_empty() {
        return Err(SubjectError::Empty);
    }
    if worker_id.contains('.') {
        return Err(SubjectError::NotSingleToken("worker_id"));
    }
    Subject::new(format!("worker.{worker_id}.jobs"))
}

/// Whether `subject` matches the subscription `pattern` (NATS semantics).
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concrete_subjects() {
        for ok in [SUBMIT, RESULT, "job.echo", "worker.w1.jobs", "a"] {
            assert!(Subject::new(ok).is_ok(), "{ok}");
        }
        let bad = [
            ("", SubjectError::Empty),
            ("a..b", SubjectError::EmptyToken),
            (".a", SubjectError::EmptyToken),
            ("a.", SubjectError::EmptyToken),
            ("a b", SubjectError::Whitespace),
            ("a\tb", SubjectError::Whitespace),
            ("a\u{0}b", SubjectError::Whitespace),
            ("job.*", SubjectError::Wildcard),
            ("job.>", SubjectError::Wildcard),
        ];
        for (s, e) in bad {
            assert_eq!(Subject::new(s), Err(e), "{s:?}");
        }
        assert_eq!(Subject::new("a".repeat(600)), Err(SubjectError::TooLong));
    }

    #[test]
    fn patterns() {
        for ok in ["job.*", "sys.>", ">", "*.*", "a.*.c"] {
            assert_eq!(check_pattern(ok), Ok(()), "{ok}");
        }
        for bad in ["job.a*", "sys.>.x", "a.b>", "*a"] {
            assert_eq!(
                check_pattern(bad),
                Err(SubjectError::MisplacedWildcard),
                "{bad}"
            );
        }
    }

    #[test]
    fn builders() {
        assert_eq!(pool("echo").unwrap().as_str(), "job.echo");
        assert_eq!(pool("code.review").unwrap().as_str(), "job.code.review");
        assert_eq!(pool("job.echo").unwrap().as_str(), "job.echo");
        assert_eq!(pool(""), Err(SubjectError::Empty));
        assert_eq!(pool("*"), Err(SubjectError::Wildcard));
        assert_eq!(pool("a b"), Err(SubjectError::Whitespace));
        assert_eq!(worker_jobs("w-1").unwrap().as_str(), "worker.w-1.jobs");
        assert_eq!(
            worker_jobs("a.b"),
            Err(SubjectError::NotSingleToken("worker_id"))
        );
        assert_eq!(worker_jobs(""), Err(SubjectError::Empty));
        assert_eq!(worker_jobs(">"), Err(SubjectError::Wildcard));
    }

    #[test]
    fn matching() {
        let cases = [
            ("job.*", "job.echo", true),
            ("job.*", "job.a.b", false),
            ("job.*", "job", false),
            ("job.>", "job.a.b", true),
            ("job.>", "job", false),
            (">", "a", true),
            ("*.b.*", "a.b.c", true),
            ("*.b.*", "a.x.c", false),
            ("sys.job.submit", "sys.job.submit", true),
            ("sys.job.submit", "sys.job.submitx", false),
            ("a.b", "a.b.c", false),
        ];
        for (p, s, want) in cases {
            assert_eq!(matches(p, s), want, "{p} ~ {s}");
        }
    }
}
