//! What a case driver returns ([`Outcome`]: a status, a detail and the evidence that
//! shows why), how it builds one ([`Verdict`]: observations and checks), what stops a
//! case from running ([`CaseError`]), and the case's parameters ([`Params`]).

use super::protocol::Status;
use cap_proto::{ErrorCode, JobState};
use std::collections::BTreeMap;
use std::fmt::{self, Display};

/// The result of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The status.
    pub status: Status,
    /// Why, in one line.
    pub detail: String,
    /// What was observed.
    pub evidence: BTreeMap<String, String>,
}

impl Outcome {
    /// A case without a driver.
    pub fn unsupported(detail: impl Into<String>) -> Self {
        Outcome {
            status: Status::Unsupported,
            detail: detail.into(),
            evidence: BTreeMap::new(),
        }
    }

    /// A case of the other role.
    pub fn not_applicable(detail: impl Into<String>) -> Self {
        Outcome {
            status: Status::NotApplicable,
            detail: detail.into(),
            evidence: BTreeMap::new(),
        }
    }
}

/// Why a case could not be run (reported as ERROR, never as a verdict).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseError {
    /// What kind of problem.
    pub kind: CaseErrorKind,
    /// Details.
    pub message: String,
}

/// The kinds of [`CaseError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaseErrorKind {
    /// A parameter is missing or cannot be read.
    BadParam,
    /// The harness around the component failed (a bus, a store, a worker start).
    Harness,
}

impl CaseError {
    /// A bad parameter.
    pub fn param(message: impl Into<String>) -> Self {
        CaseError {
            kind: CaseErrorKind::BadParam,
            message: message.into(),
        }
    }

    /// A harness failure.
    pub fn harness(message: impl Into<String>) -> Self {
        CaseError {
            kind: CaseErrorKind::Harness,
            message: message.into(),
        }
    }
}

impl Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            CaseErrorKind::BadParam => "bad parameter",
            CaseErrorKind::Harness => "harness failure",
        };
        write!(f, "{what}: {}", self.message)
    }
}

impl std::error::Error for CaseError {}

impl From<cap_runtime::Error> for CaseError {
    fn from(e: cap_runtime::Error) -> Self {
        CaseError::harness(e.to_string())
    }
}

impl From<cap_bus::Error> for CaseError {
    fn from(e: cap_bus::Error) -> Self {
        CaseError::harness(e.to_string())
    }
}

impl From<cap_blob::Error> for CaseError {
    fn from(e: cap_blob::Error) -> Self {
        CaseError::harness(e.to_string())
    }
}

/// A case's result while it is being decided: observations (the evidence) and checks;
/// PASS only when every check held, FAIL naming each one that did not.
#[derive(Debug, Default)]
pub struct Verdict {
    evidence: BTreeMap<String, String>,
    failed: Vec<String>,
    checks: usize,
}

impl Verdict {
    /// An empty verdict.
    pub fn new() -> Self {
        Verdict::default()
    }

    /// Records an observation.
    pub fn observe(&mut self, key: &str, value: impl Display) -> &mut Self {
        self.evidence.insert(key.to_owned(), value.to_string());
        self
    }

    /// Records a check: `ok` is whether `expectation` held.
    pub fn check(&mut self, ok: bool, expectation: impl Into<String>) -> &mut Self {
        self.checks += 1;
        if !ok {
            self.failed.push(expectation.into());
        }
        self
    }

    /// The outcome: PASS with `summary` when every check held (and there was one),
    /// else FAIL listing the expectations that did not hold.
    pub fn finish(mut self, summary: &str) -> Outcome {
        self.evidence
            .insert("checks".to_owned(), self.checks.to_string());
        if self.checks == 0 {
            return Outcome {
                status: Status::Error,
                detail: "the driver made no check".into(),
                evidence: self.evidence,
            };
        }
        if self.failed.is_empty() {
            Outcome {
                status: Status::Pass,
                detail: summary.to_owned(),
                evidence: self.evidence,
            }
        } else {
            Outcome {
                status: Status::Fail,
                detail: format!("expected: {}", self.failed.join("; ")),
                evidence: self.evidence,
            }
        }
    }
}

/// A case's parameters (bounded strings from the scenario file).
#[derive(Clone, Copy, Debug)]
pub struct Params<'a>(pub &'a BTreeMap<String, String>);

impl<'a> Params<'a> {
    /// A parameter, if given and not empty.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|s| !s.trim().is_empty())
    }

    /// A required parameter.
    pub fn required(&self, key: &str) -> Result<&'a str, CaseError> {
        self.get(key)
            .ok_or_else(|| CaseError::param(format!("`{key}` is required")))
    }

    /// A comma-separated list (empty when absent).
    pub fn list(&self, key: &str) -> Vec<String> {
        self.get(key)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A required unsigned number.
    pub fn number(&self, key: &str) -> Result<u64, CaseError> {
        let s = self.required(key)?;
        s.trim()
            .parse()
            .map_err(|_| CaseError::param(format!("`{key}` is not a number: {s:?}")))
    }

    /// A comma-separated list of protocol versions.
    pub fn versions(&self, key: &str) -> Result<Vec<i32>, CaseError> {
        self.list(key)
            .iter()
            .map(|v| {
                v.parse()
                    .map_err(|_| CaseError::param(format!("`{key}`: {v:?} is not a version")))
            })
            .collect()
    }

    /// A job state by its name (`RUNNING`, `FAILED_RETRYABLE`, …).
    pub fn state(&self, key: &str) -> Result<JobState, CaseError> {
        let s = self.required(key)?;
        state_named(s).ok_or_else(|| CaseError::param(format!("`{key}`: unknown state {s:?}")))
    }

    /// The `expect` parameter (`None`: the move or action happens).
    pub fn expect(&self) -> Option<&'a str> {
        self.get("expect")
    }

    /// The error code the case asserts (`err`, by name or number).
    pub fn err(&self) -> Result<Option<ErrorCode>, CaseError> {
        match self.get("err") {
            None => Ok(None),
            Some(e) => ErrorCode::from_legacy(e)
                .map(Some)
                .ok_or_else(|| CaseError::param(format!("`err`: unknown code {e:?}"))),
        }
    }
}

/// The state called `name` (as printed: `RUNNING`, `FAILED_FATAL`).
pub fn state_named(name: &str) -> Option<JobState> {
    JobState::ALL
        .iter()
        .copied()
        .find(|s| s.to_string() == name.trim())
}

/// The name of an error code (`ERROR_CODE_…`, or the number).
pub fn code_name(code: ErrorCode) -> String {
    code.name()
        .map(str::to_owned)
        .unwrap_or_else(|| code.as_i32().to_string())
}

/// Items joined with `,` (`-` for none).
pub fn joined<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    let s: Vec<String> = items.into_iter().map(|x| x.to_string()).collect();
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn verdicts() {
        let mut v = Verdict::new();
        v.observe("n", 1).check(true, "n is 1");
        let o = v.finish("fine");
        assert_eq!(o.status, Status::Pass);
        assert_eq!(o.evidence["n"], "1");
        assert_eq!(o.evidence["checks"], "1");

        let mut v = Verdict::new();
        v.check(true, "a").check(false, "b").check(false, "c");
        let o = v.finish("fine");
        assert_eq!(o.status, Status::Fail);
        assert_eq!(o.detail, "expected: b; c");

        assert_eq!(Verdict::new().finish("x").status, Status::Error);
    }

    #[test]
    fn parameters() {
        let p = params(&[
            ("cpVersions", "1, 2,3"),
            ("from", "FAILED_RETRYABLE"),
            ("attempt", "9"),
            ("bad", "x"),
            ("empty", " "),
            ("err", "ERROR_CODE_PROTOCOL_VERSION_MISMATCH"),
        ]);
        let p = Params(&p);
        assert_eq!(p.versions("cpVersions").unwrap(), [1, 2, 3]);
        assert_eq!(p.state("from").unwrap(), JobState::FailedRetryable);
        assert_eq!(p.number("attempt").unwrap(), 9);
        assert_eq!(p.number("bad").unwrap_err().kind, CaseErrorKind::BadParam);
        assert_eq!(p.get("empty"), None);
        assert!(p.required("empty").is_err());
        assert_eq!(p.err(), Ok(Some(ErrorCode::PROTOCOL_VERSION_MISMATCH)));
        assert!(p.state("bad").is_err());
        // `spec` is a reference, never an assertion.
        let spec = params(&[("spec", "job.proto#ERROR_CODE_PROTOCOL_MALFORMED_PACKET")]);
        assert_eq!(Params(&spec).err(), Ok(None));
        let bad = params(&[("err", "ERROR_CODE_NOPE")]);
        assert!(Params(&bad).err().is_err());
        let number = params(&[("err", "206")]);
        assert_eq!(
            Params(&number).err(),
            Ok(Some(ErrorCode::JOB_WORKER_UNAVAILABLE))
        );
    }

    #[test]
    fn names() {
        assert_eq!(state_named("SUCCEEDED"), Some(JobState::Succeeded));
        assert_eq!(state_named("nope"), None);
        assert_eq!(code_name(ErrorCode::JOB_TIMEOUT), "ERROR_CODE_JOB_TIMEOUT");
        assert_eq!(code_name(ErrorCode::from_i32(4242)), "4242");
        assert_eq!(joined(Vec::<String>::new()), "-");
        assert_eq!(joined([1, 2]), "1,2");
    }
}
