//! [`ErrorCode`]: the CAP error code registry as a `Copy` type that keeps unknown numbers.

use crate::v1;
use std::fmt;

/// A CAP error code. Known codes have constants and names; any other number (for
/// example an application code in 1000-9999) is kept as is, so nothing is lost between
/// decoding and re-encoding.
///
/// ```
/// use cap_proto::{ErrorCode, ErrorCategory};
/// let code = ErrorCode::from_i32(200);
/// assert_eq!(code, ErrorCode::JOB_TIMEOUT);
/// assert_eq!(code.name(), Some("ERROR_CODE_JOB_TIMEOUT"));
/// assert_eq!(code.category(), ErrorCategory::Job);
/// assert!(code.is_retryable());
/// assert_eq!(ErrorCode::from_i32(4242).category(), ErrorCategory::Application);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ErrorCode(i32);

/// The range an error code belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCategory {
    /// 0: no error code.
    Unspecified,
    /// 100-199: protocol errors.
    Protocol,
    /// 200-299: job errors.
    Job,
    /// 300-399: safety errors.
    Safety,
    /// 400-499: transport errors.
    Transport,
    /// 1000-9999: application-defined.
    Application,
    /// Any other number (reserved by the registry).
    Reserved,
}

macro_rules! codes {
    ($($name:ident = $n:literal),* $(,)?) => {
        impl ErrorCode {
            $(
                #[doc = concat!("`ERROR_CODE_", stringify!($name), "` (", stringify!($n), ").")]
                pub const $name: ErrorCode = ErrorCode($n);
            )*

            /// The registry name (`ERROR_CODE_…`), or `None` for a number the registry
            /// does not define.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($n => Some(concat!("ERROR_CODE_", stringify!($name))),)*
                    _ => None,
                }
            }

            /// Every code the registry defines.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];
        }
    };
}

codes!(
    UNSPECIFIED = 0,
    PROTOCOL_VERSION_MISMATCH = 100,
    PROTOCOL_MALFORMED_PACKET = 101,
    PROTOCOL_UNKNOWN_PAYLOAD = 102,
    PROTOCOL_SIGNATURE_INVALID = 103,
    PROTOCOL_SIGNATURE_MISSING = 104,
    JOB_TIMEOUT = 200,
    JOB_RESOURCE_EXHAUSTED = 201,
    JOB_PERMISSION_DENIED = 202,
    JOB_INVALID_INPUT = 203,
    JOB_NOT_FOUND = 204,
    JOB_DUPLICATE = 205,
    JOB_WORKER_UNAVAILABLE = 206,
    SAFETY_DENIED = 300,
    SAFETY_POLICY_VIOLATION = 301,
    SAFETY_RISK_TAG_BLOCKED = 302,
    TRANSPORT_PUBLISH_FAILED = 400,
    TRANSPORT_SUBSCRIBE_FAILED = 401,
    TRANSPORT_CONNECTION_LOST = 402,
);

impl ErrorCode {
    /// The code with this number (known or not).
    pub const fn from_i32(n: i32) -> Self {
        ErrorCode(n)
    }

    /// The number on the wire.
    pub const fn as_i32(self) -> i32 {
        self.0
    }

    /// Whether the registry defines this number.
    pub const fn is_known(self) -> bool {
        self.name().is_some()
    }

    /// The range this code belongs to.
    pub const fn category(self) -> ErrorCategory {
        match self.0 {
            0 => ErrorCategory::Unspecified,
            100..=199 => ErrorCategory::Protocol,
            200..=299 => ErrorCategory::Job,
            300..=399 => ErrorCategory::Safety,
            400..=499 => ErrorCategory::Transport,
            1000..=9999 => ErrorCategory::Application,
            _ => ErrorCategory::Reserved,
        }
    }

    /// Whether retrying the same job may succeed: transport errors, `JOB_TIMEOUT`,
    /// `JOB_RESOURCE_EXHAUSTED` and `JOB_WORKER_UNAVAILABLE`.
    pub const fn is_retryable(self) -> bool {
        matches!(self.0, 200 | 201 | 206 | 400..=499)
    }

    /// The code of a legacy string `error_code`: `TIMEOUT`, `DENIED`, `PERMISSION_DENIED`,
    /// a registry name with or without its `ERROR_CODE_` prefix, or a decimal number.
    pub fn from_legacy(s: &str) -> Option<Self> {
        let s = s.trim();
        match s {
            "" => return None,
            "TIMEOUT" => return Some(Self::JOB_TIMEOUT),
            "DENIED" => return Some(Self::SAFETY_DENIED),
            "PERMISSION_DENIED" => return Some(Self::JOB_PERMISSION_DENIED),
            _ => {}
        }
        if let Ok(n) = s.parse::<i32>() {
            return Some(Self(n));
        }
        let full = s.strip_prefix("ERROR_CODE_").unwrap_or(s);
        Self::ALL
            .iter()
            .copied()
            .find(|c| c.name().is_some_and(|n| &n["ERROR_CODE_".len()..] == full))
    }

    /// The error code a result carries: the enum field when set, else the legacy string.
    pub fn of_result(result: &v1::JobResult) -> Self {
        if result.error_code_enum != 0 {
            return Self(result.error_code_enum);
        }
        Self::from_legacy(&result.error_code).unwrap_or_default()
    }

    /// Sets both the enum field and the legacy string of a result.
    pub fn apply_to(self, result: &mut v1::JobResult) {
        result.error_code_enum = self.0;
        result.error_code = self.to_string();
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "ERROR_CODE_{}", self.0),
        }
    }
}

impl From<i32> for ErrorCode {
    fn from(n: i32) -> Self {
        Self(n)
    }
}

impl From<ErrorCode> for i32 {
    fn from(c: ErrorCode) -> i32 {
        c.0
    }
}

impl From<v1::ErrorCode> for ErrorCode {
    fn from(c: v1::ErrorCode) -> Self {
        Self(c as i32)
    }
}

impl TryFrom<ErrorCode> for v1::ErrorCode {
    type Error = prost::UnknownEnumValue;
    fn try_from(c: ErrorCode) -> Result<Self, Self::Error> {
        v1::ErrorCode::try_from(c.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_generated_enum() {
        for code in ErrorCode::ALL {
            let generated = v1::ErrorCode::try_from(code.as_i32()).unwrap();
            assert_eq!(code.name(), Some(generated.as_str_name()));
        }
        assert_eq!(ErrorCode::ALL.len(), 19);
    }

    #[test]
    fn unknown_numbers_survive() {
        let c = ErrorCode::from_i32(7001);
        assert!(!c.is_known());
        assert_eq!(c.as_i32(), 7001);
        assert_eq!(c.to_string(), "ERROR_CODE_7001");
        assert_eq!(ErrorCode::from_legacy("ERROR_CODE_7001"), None);
        assert_eq!(ErrorCode::from_legacy("7001"), Some(c));
        assert_eq!(ErrorCode::from_i32(-5).category(), ErrorCategory::Reserved);
        assert_eq!(ErrorCode::from_i32(500).category(), ErrorCategory::Reserved);
    }

    #[test]
    fn categories_and_retryability() {
        use ErrorCategory::*;
        let cases = [
            (ErrorCode::UNSPECIFIED, Unspecified, false),
            (ErrorCode::PROTOCOL_SIGNATURE_INVALID, Protocol, false),
            (ErrorCode::JOB_TIMEOUT, Job, true),
            (ErrorCode::JOB_RESOURCE_EXHAUSTED, Job, true),
            (ErrorCode::JOB_WORKER_UNAVAILABLE, Job, true),
            (ErrorCode::JOB_INVALID_INPUT, Job, false),
            (ErrorCode::SAFETY_DENIED, Safety, false),
            (ErrorCode::TRANSPORT_CONNECTION_LOST, Transport, true),
            (ErrorCode::TRANSPORT_PUBLISH_FAILED, Transport, true),
        ];
        for (code, cat, retry) in cases {
            assert_eq!(code.category(), cat, "{code}");
            assert_eq!(code.is_retryable(), retry, "{code}");
        }
    }

    #[test]
    fn legacy_strings() {
        assert_eq!(
            ErrorCode::from_legacy("TIMEOUT"),
            Some(ErrorCode::JOB_TIMEOUT)
        );
        assert_eq!(
            ErrorCode::from_legacy("DENIED"),
            Some(ErrorCode::SAFETY_DENIED)
        );
        assert_eq!(
            ErrorCode::from_legacy("PERMISSION_DENIED"),
            Some(ErrorCode::JOB_PERMISSION_DENIED)
        );
        assert_eq!(
            ErrorCode::from_legacy("ERROR_CODE_JOB_NOT_FOUND"),
            Some(ErrorCode::JOB_NOT_FOUND)
        );
        assert_eq!(
            ErrorCode::from_legacy("JOB_NOT_FOUND"),
            Some(ErrorCode::JOB_NOT_FOUND)
        );
        assert_eq!(ErrorCode::from_legacy("nonsense"), None);
        assert_eq!(ErrorCode::from_legacy(""), None);
    }

    #[test]
    fn result_enum_rules_then_string() {
        let mut r = v1::JobResult {
            error_code: "TIMEOUT".into(),
            ..Default::default()
        };
        assert_eq!(ErrorCode::of_result(&r), ErrorCode::JOB_TIMEOUT);
        r.error_code_enum = 300;
        assert_eq!(ErrorCode::of_result(&r), ErrorCode::SAFETY_DENIED);
        ErrorCode::JOB_INVALID_INPUT.apply_to(&mut r);
        assert_eq!(r.error_code_enum, 203);
        assert_eq!(r.error_code, "ERROR_CODE_JOB_INVALID_INPUT");
        assert_eq!(ErrorCode::of_result(&r), ErrorCode::JOB_INVALID_INPUT);
    }
}
