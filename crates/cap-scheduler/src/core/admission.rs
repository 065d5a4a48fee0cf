//! [`Admission`]: what the scheduler refuses at submit, before the safety kernel is
//! asked and before anything is dispatched. A refused job ends FAILED with
//! `JOB_INVALID_INPUT` (203) and a reason naming the rule.
//!
//! The rules are about the pointers a job carries (`context_ptr`, and its
//! compensation's): only the accepted schemes (default `redis`, `mem`, `s3`, `https`;
//! a `file://` pointer names a path on whichever machine the worker runs), never a key
//! under `cap:` (the scheduler's own records), never an `https://` target that is a
//! loopback, private, link-local or local-only host (see [`cap_blob::scope`]). What a
//! job may read beyond that (its own keys only, by default) is the workers' rule,
//! [`cap_blob::PointerScope`].
//!
//! ```
//! use cap_scheduler::core::Admission;
//! use cap_proto::v1;
//! let rules = Admission::default();
//! let mut job = v1::JobRequest { job_id: "j".into(), context_ptr: "redis://ctx:j".into(), ..Default::default() };
//! assert!(rules.admit(&job).is_ok());
//! job.context_ptr = "file:///etc/passwd".into();
//! assert_eq!(
//!     rules.admit(&job).unwrap_err().to_string(),
//!     "context_ptr refused: scheme file:// is not accepted (accepted: redis, mem, s3, https)"
//! );
//! ```

use cap_blob::scope::{ScopeRule, check_target};
use cap_proto::{Pointer, v1};
use std::fmt;

/// The schemes accepted when none are configured.
pub const DEFAULT_POINTER_SCHEMES: [&str; 4] = ["redis", "mem", "s3", "https"];

/// The submit-time rules (part of [`Config`](super::Config)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    /// Pointer schemes accepted in `context_ptr` (without `://`).
    pub pointer_schemes: Vec<String>,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            pointer_schemes: DEFAULT_POINTER_SCHEMES.map(str::to_owned).to_vec(),
        }
    }
}

/// Why a job was refused at submit: the field and the rule (its text is the result's
/// error message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The field holding the refused pointer.
    pub field: &'static str,
    /// What is wrong with it.
    pub rule: Rule,
}

/// The rule a refused pointer broke.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// Not a pointer at all.
    Malformed(String),
    /// A scheme outside [`Admission::pointer_schemes`].
    Scheme {
        /// The pointer's scheme.
        scheme: &'static str,
        /// The accepted ones, comma-separated.
        accepted: String,
    },
    /// A reserved key or a non-public network target.
    Target(ScopeRule),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} refused: ", self.field)?;
        match &self.rule {
            Rule::Malformed(e) => write!(f, "{e}"),
            Rule::Scheme { scheme, accepted } => {
                write!(
                    f,
                    "scheme {scheme}:// is not accepted (accepted: {accepted})"
                )
            }
            Rule::Target(rule) => write!(f, "{rule}"),
        }
    }
}

impl std::error::Error for Refusal {}

impl Admission {
    /// Accepts `schemes` (replacing the list).
    pub fn with_schemes(schemes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Admission {
            pointer_schemes: schemes.into_iter().map(Into::into).collect(),
        }
    }

    /// Checks a submitted job.
    pub fn admit(&self, request: &v1::JobRequest) -> Result<(), Refusal> {
        self.pointer("context_ptr", &request.context_ptr)?;
        if let Some(c) = &request.compensation {
            self.pointer("compensation.context_ptr", &c.context_ptr)?;
        }
        Ok(())
    }

    fn pointer(&self, field: &'static str, ptr: &str) -> Result<(), Refusal> {
        if ptr.is_empty() {
            return Ok(());
        }
        let refuse = |rule| Refusal { field, rule };
        let pointer = Pointer::parse(ptr).map_err(|e| refuse(Rule::Malformed(e.to_string())))?;
        let scheme = pointer.scheme();
        if !self.pointer_schemes.iter().any(|s| s == scheme) {
            return Err(refuse(Rule::Scheme {
                scheme,
                accepted: self.pointer_schemes.join(", "),
            }));
        }
        check_target(&pointer).map_err(|r| refuse(Rule::Target(r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(ptr: &str) -> v1::JobRequest {
        v1::JobRequest {
            job_id: "j".into(),
            context_ptr: ptr.into(),
            ..Default::default()
        }
    }

    #[test]
    fn refuses_by_rule_and_names_it() {
        let a = Admission::default();
        for ok in [
            "",
            "redis://ctx:j",
            "redis://res:other",
            "mem://k",
            "s3://bucket/k",
            "https://example.com/x",
        ] {
            assert_eq!(a.admit(&job(ok)), Ok(()), "{ok}");
        }
        for (bad, reason) in [
            (
                "redis://cap:sched:job:x",
                "context_ptr refused: keys under `cap:` are reserved to CAP services",
            ),
            (
                "redis://cap:sched:jobs",
                "context_ptr refused: keys under `cap:` are reserved to CAP services",
            ),
            (
                "https://169.254.169.254/latest",
                "context_ptr refused: https pointers to loopback, private, link-local or local-only hosts are refused",
            ),
            (
                "https://localhost:8080/",
                "context_ptr refused: https pointers to loopback, private, link-local or local-only hosts are refused",
            ),
            (
                "file:///etc/passwd",
                "context_ptr refused: scheme file:// is not accepted (accepted: redis, mem, s3, https)",
            ),
            (
                "gopher://x",
                "context_ptr refused: unsupported pointer scheme `gopher`",
            ),
        ] {
            assert_eq!(a.admit(&job(bad)).unwrap_err().to_string(), reason, "{bad}");
        }
    }

    #[test]
    fn compensations_are_checked_and_schemes_configurable() {
        let mut j = job("redis://ctx:j");
        j.compensation = Some(v1::Compensation {
            context_ptr: "https://10.0.0.1/undo".into(),
            ..Default::default()
        });
        let e = Admission::default().admit(&j).unwrap_err();
        assert_eq!(e.field, "compensation.context_ptr");
        assert_eq!(e.rule, Rule::Target(ScopeRule::PrivateNetwork));

        let files = Admission::with_schemes(["redis", "file"]);
        assert_eq!(files.admit(&job("file:///var/cap/ctx:j")), Ok(()));
        assert!(files.admit(&job("https://example.com/")).is_err());
    }
}
