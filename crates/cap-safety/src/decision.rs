//! [`Decision`]: what the kernel decides, its spellings in policy files and its wire value.

use cap_proto::v1::DecisionType;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

/// A policy decision.
///
/// Policy files name the first five (see [`Decision::parse`] for the accepted spellings);
/// [`Decision::Quarantine`] and [`Decision::Redact`] exist so that a client can represent
/// every value a newer kernel may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Dispatch the job.
    Allow,
    /// Do not dispatch: the job ends DENIED (error 300).
    Deny,
    /// Hold the job until a human approves it (`approval_ref` is the job id).
    /// On the wire: `DECISION_TYPE_REQUIRE_HUMAN`.
    RequireApproval,
    /// Dispatch with the returned constraints enforced.
    AllowWithConstraints,
    /// Do not dispatch now; check again later.
    Throttle,
    /// Later wire value: quarantine (never produced by this kernel).
    Quarantine,
    /// Later wire value: dispatch with the redacted context (never produced by this kernel).
    Redact,
}

/// Every spelling a policy file may use, with the decision it names. Matching ignores
/// ASCII case and surrounding spaces, and treats `-` like `_`.
pub const DECISION_SPELLINGS: &[(&str, Decision)] = &[
    ("allow", Decision::Allow),
    ("permit", Decision::Allow),
    ("deny", Decision::Deny),
    ("block", Decision::Deny),
    ("reject", Decision::Deny),
    ("require_approval", Decision::RequireApproval),
    ("require_human", Decision::RequireApproval),
    ("approval", Decision::RequireApproval),
    ("allow_with_constraints", Decision::AllowWithConstraints),
    ("constrain", Decision::AllowWithConstraints),
    ("throttle", Decision::Throttle),
    ("rate_limit", Decision::Throttle),
];

impl Decision {
    /// Parses a policy-file spelling: the canonical names `allow`, `deny`,
    /// `require_approval`, `allow_with_constraints`, `throttle` and the aliases `permit`,
    /// `block`, `reject`, `require_human`, `approval`, `constrain`, `rate_limit`.
    /// Case, surrounding spaces and `-` versus `_` do not matter.
    pub fn parse(s: &str) -> Option<Decision> {
        let s = s.trim();
        DECISION_SPELLINGS.iter().find_map(|(name, d)| {
            (name.len() == s.len()
                && name
                    .bytes()
                    .zip(s.bytes())
                    .all(|(a, b)| a == b.to_ascii_lowercase() || (a == b'_' && b == b'-')))
            .then_some(*d)
        })
    }

    /// The canonical policy-file name (`require_approval` for [`Decision::RequireApproval`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::RequireApproval => "require_approval",
            Decision::AllowWithConstraints => "allow_with_constraints",
            Decision::Throttle => "throttle",
            Decision::Quarantine => "quarantine",
            Decision::Redact => "redact",
        }
    }

    /// The wire enum.
    pub fn to_wire(self) -> DecisionType {
        match self {
            Decision::Allow => DecisionType::Allow,
            Decision::Deny => DecisionType::Deny,
            Decision::RequireApproval => DecisionType::RequireHuman,
            Decision::AllowWithConstraints => DecisionType::AllowWithConstraints,
            Decision::Throttle => DecisionType::Throttle,
            Decision::Quarantine => DecisionType::Quarantine,
            Decision::Redact => DecisionType::Redact,
        }
    }

    /// The decision a wire value means. Unknown and unspecified values mean
    /// [`Decision::Deny`] (fail closed); the `bool` says whether that fallback applied.
    pub fn from_wire(value: i32) -> (Decision, bool) {
        match DecisionType::try_from(value) {
            Ok(DecisionType::Allow) => (Decision::Allow, false),
            Ok(DecisionType::Deny) => (Decision::Deny, false),
            Ok(DecisionType::RequireHuman) => (Decision::RequireApproval, false),
            Ok(DecisionType::Throttle) => (Decision::Throttle, false),
            Ok(DecisionType::AllowWithConstraints) => (Decision::AllowWithConstraints, false),
            Ok(DecisionType::Quarantine) => (Decision::Quarantine, false),
            Ok(DecisionType::Redact) => (Decision::Redact, false),
            Ok(DecisionType::Unspecified) | Err(_) => (Decision::Deny, true),
        }
    }

    /// Whether the job may be dispatched now (allow, allow with constraints, redact).
    pub fn dispatches(self) -> bool {
        matches!(
            self,
            Decision::Allow | Decision::AllowWithConstraints | Decision::Redact
        )
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Decision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Decision {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(d)?;
        Decision::parse(&s).ok_or_else(|| {
            let names: Vec<&str> = DECISION_SPELLINGS.iter().map(|(n, _)| *n).collect();
            serde::de::Error::custom(format!(
                "unknown decision `{}`: expected one of {}",
                s.trim(),
                names.join(", ")
            ))
        })
    }
}

impl JsonSchema for Decision {
    fn schema_name() -> Cow<'static, str> {
        "Decision".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let mut names: Vec<String> = Vec::new();
        for (name, _) in DECISION_SPELLINGS {
            names.push((*name).to_owned());
            if name.contains('_') {
                names.push(name.replace('_', "-"));
            }
        }
        json_schema!({
            "type": "string",
            "description": "What happens to a job the rule matches. Canonical names: allow, deny, require_approval, allow_with_constraints, throttle. Aliases: permit, block, reject (deny), require_human, approval (require_approval), constrain (allow_with_constraints), rate_limit (throttle). Case-insensitive; `-` and `_` are interchangeable. `allow` with constraints becomes allow_with_constraints; a rule without a decision denies.",
            "enum": names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_parse_ignoring_case_space_and_dashes() {
        assert_eq!(
            Decision::parse(" Require-Human "),
            Some(Decision::RequireApproval)
        );
        assert_eq!(Decision::parse("DENY"), Some(Decision::Deny));
        assert_eq!(
            Decision::parse("allow-with-constraints"),
            Some(Decision::AllowWithConstraints)
        );
        assert_eq!(Decision::parse("alow"), None);
        assert_eq!(Decision::parse("quarantine"), None);
        assert_eq!(Decision::parse(""), None);
    }

    #[test]
    fn wire_values_round_trip_and_unknown_means_deny() {
        for d in [
            Decision::Allow,
            Decision::Deny,
            Decision::RequireApproval,
            Decision::AllowWithConstraints,
            Decision::Throttle,
            Decision::Quarantine,
            Decision::Redact,
        ] {
            assert_eq!(Decision::from_wire(d.to_wire() as i32), (d, false));
        }
        assert_eq!(Decision::from_wire(0), (Decision::Deny, true));
        assert_eq!(Decision::from_wire(99), (Decision::Deny, true));
        assert_eq!(Decision::from_wire(-1), (Decision::Deny, true));
    }
}
