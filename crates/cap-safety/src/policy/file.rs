//! The policy file format (the Cordum control plane's safety policy, YAML or JSON), as
//! plain serde structs. Unknown keys are errors. [`crate::policy::schema`] is generated
//! from these types.

use crate::Decision;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

/// A whole policy file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "CAP safety policy")]
pub struct PolicyFile {
    /// The policy's version label; part of every snapshot id. A string or a number.
    #[serde(default, deserialize_with = "scalar_string")]
    #[schemars(with = "Option<StringOrNumber>")]
    pub version: String,
    /// The tenant used when a request names none (neither `tenant` nor `meta.tenant_id`).
    #[serde(default)]
    pub default_tenant: String,
    /// What happens when no rule matches. Defaults to `allow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_decision: Option<Decision>,
    /// Rules, first match wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// The older per-tenant form: topic deny and allow lists, checked after `rules`.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantTopics>,
}

/// One rule: conditions, and what to decide when all of them hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique, non-empty rule id, returned as `rule_id`.
    pub id: String,
    /// Conditions; every condition present must hold. An empty match matches every job.
    #[serde(default, rename = "match")]
    pub matcher: Match,
    /// The decision. A rule without one denies (fail closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// Human-readable reason, returned as `reason`.
    #[serde(default)]
    pub reason: String,
    /// Constraints returned with the decision. An `allow` rule with constraints decides
    /// `allow_with_constraints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Constraints>,
    /// Suggested ways to make the job acceptable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remediations: Vec<Remediation>,
}

/// Rule conditions. Lists of names compare ignoring case and surrounding spaces; label
/// values compare exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The resolved tenant is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tenants: Vec<String>,
    /// The topic matches one of these shell globs (`*` any run of characters including
    /// dots, `?` one character, `[...]` a class, `{a,b}` alternatives, `\` escapes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// `meta.capability` is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// At least one of `meta.risk_tags` is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risk_tags: Vec<String>,
    /// Every one of these is in `meta.requires`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// `meta.pack_id` is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pack_ids: Vec<String>,
    /// `meta.actor_id` is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actor_ids: Vec<String>,
    /// `meta.actor_type` is one of these: `human`, `service`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actor_types: Vec<String>,
    /// Every key has exactly this value in the request labels (`labels`, then
    /// `meta.labels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Whether secrets are present: label `secrets_present` is true/1/yes, or a risk tag
    /// is `secrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_present: Option<bool>,
    /// MCP allow/deny lists, checked against labels `mcp.server`, `mcp.tool`,
    /// `mcp.resource`, `mcp.action`. When the other conditions hold and the job names an
    /// MCP item that a deny list holds, or that a non-empty allow list lacks, the rule
    /// decides `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpLists>,
}

/// MCP allow/deny lists. Names compare ignoring case and surrounding spaces.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct McpLists {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_tools: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_tools: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_actions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_actions: Vec<String>,
}

/// Constraints attached to a decision (`PolicyConstraints` on the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// Budget limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<Budgets>,
    /// Sandbox limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Sandbox>,
    /// Allowed tools and commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolchain: Option<Toolchain>,
    /// Limits on the changes a job may produce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<Diff>,
    /// Redaction level label.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub redaction_level: String,
}

/// Budget limits (0 means "no limit set"). Negative values are rejected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Budgets {
    #[serde(default)]
    pub max_runtime_ms: i64,
    #[serde(default)]
    pub max_retries: i32,
    #[serde(default)]
    pub max_artifact_bytes: i64,
    #[serde(default)]
    pub max_concurrent_jobs: i32,
}

/// Sandbox limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Sandbox {
    #[serde(default)]
    pub isolated: bool,
    #[serde(default)]
    pub network_allowlist: Vec<String>,
    #[serde(default)]
    pub fs_read_only: Vec<String>,
    #[serde(default)]
    pub fs_read_write: Vec<String>,
}

/// Tools and commands a job may use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Toolchain {
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    #[serde(default)]
    pub allowed_commands: Vec<String>,
}

/// Limits on the changes a job may produce. Negative values are rejected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Diff {
    #[serde(default)]
    pub max_files: i32,
    #[serde(default)]
    pub max_lines: i32,
    #[serde(default)]
    pub deny_path_globs: Vec<String>,
}

/// A suggested way to make a job acceptable (`PolicyRemediation` on the wire).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Remediation {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub replacement_topic: String,
    #[serde(default)]
    pub replacement_capability: String,
    #[serde(default)]
    pub add_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub remove_labels: Vec<String>,
}

/// The older per-tenant form. For the resolved tenant, after `rules`: a topic matching
/// `deny_topics` is denied; otherwise, when `allow_topics` is non-empty, a topic matching
/// it is allowed and any other topic is denied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantTopics {
    /// Topic globs this tenant may use.
    #[serde(default)]
    pub allow_topics: Vec<String>,
    /// Topic globs this tenant may not use (checked first).
    #[serde(default)]
    pub deny_topics: Vec<String>,
}

/// Schema helper: a string or a number.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum StringOrNumber {
    String(String),
    Number(f64),
}

/// Accepts a YAML/JSON scalar (string, number or bool) as a string, so `version: 2` and
/// `version: "2"` both work.
fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or a number")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }
    }
    d.deserialize_any(Visitor)
}
