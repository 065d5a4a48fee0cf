//! [`Policy`]: a validated policy file compiled for evaluation (globs compiled, names
//! normalized into sets, wire-shaped constraints and remediations built once).

use super::file::{Constraints, McpLists, PolicyFile, Remediation, Rule};
use super::glob::TopicPattern;
use super::names::{NameSet, normalize};
use crate::{Decision, Error};
use cap_proto::v1;
use std::collections::{HashMap, HashSet};

/// A compiled, immutable policy. Cheap to share (`Send + Sync`); evaluation does no IO
/// and, for the usual lowercase request values, no allocation.
#[derive(Debug)]
pub struct Policy {
    pub(crate) version: String,
    pub(crate) default_tenant: Box<str>,
    pub(crate) default_decision: Decision,
    pub(crate) default_reason: Box<str>,
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) tenants: HashMap<Box<str>, LegacyTenant>,
    /// Whether any rule has MCP lists or a `secrets_present` condition (the request view
    /// skips that work otherwise).
    pub(crate) uses_mcp: bool,
    pub(crate) uses_secrets: bool,
    pub(crate) file: PolicyFile,
}

/// One compiled rule.
#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub(crate) id: Box<str>,
    /// The effective decision (a missing decision denies; `allow` with constraints is
    /// `allow_with_constraints`).
    pub(crate) decision: Decision,
    /// The rule's reason, or a generated one when the file has none.
    pub(crate) reason: Box<str>,
    pub(crate) cond: Conditions,
    pub(crate) constraints: Option<v1::PolicyConstraints>,
    pub(crate) remediations: Vec<v1::PolicyRemediation>,
}

/// The conditions of a rule; `None` / empty means "not a condition".
#[derive(Debug, Default)]
pub(crate) struct Conditions {
    pub(crate) tenants: Option<NameSet>,
    pub(crate) topics: Option<Vec<TopicPattern>>,
    pub(crate) capabilities: Option<NameSet>,
    pub(crate) risk_tags: Option<NameSet>,
    pub(crate) requires: Vec<Box<str>>,
    pub(crate) pack_ids: Option<NameSet>,
    pub(crate) actor_ids: Option<NameSet>,
    /// Bit 1: human, bit 2: service.
    pub(crate) actor_types: Option<u8>,
    pub(crate) labels: Vec<(Box<str>, Box<str>)>,
    pub(crate) secrets_present: Option<bool>,
    pub(crate) mcp: Option<McpCompiled>,
}

/// The MCP kinds, in label order.
pub(crate) const MCP_KINDS: [&str; 4] = ["server", "tool", "resource", "action"];

/// Allow and deny sets per MCP kind (server, tool, resource, action).
#[derive(Debug, Default)]
pub(crate) struct McpCompiled {
    pub(crate) allow: [NameSet; 4],
    pub(crate) deny: [NameSet; 4],
}

/// One tenant's legacy topic lists.
#[derive(Debug)]
pub(crate) struct LegacyTenant {
    /// The tenant name as written in the file.
    pub(crate) name: Box<str>,
    pub(crate) deny: Vec<LegacyEntry>,
    pub(crate) allow: Vec<LegacyEntry>,
    /// Rule id and reason when a non-empty allow list lacks the topic.
    pub(crate) not_allowed_id: Box<str>,
    pub(crate) not_allowed_reason: Box<str>,
}

#[derive(Debug)]
pub(crate) struct LegacyEntry {
    pub(crate) pattern: TopicPattern,
    pub(crate) id: Box<str>,
    pub(crate) reason: Box<str>,
}

impl Policy {
    /// Validates and compiles a parsed policy file. `source` names it in errors.
    pub fn compile(file: PolicyFile, source: &str) -> Result<Policy, Error> {
        let mut ids = HashSet::new();
        let mut rules = Vec::with_capacity(file.rules.len());
        for (i, rule) in file.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            let id = rule.id.trim();
            if id.is_empty() {
                return Err(Error::policy_at(
                    source,
                    format!("{at}.id"),
                    "rule id is empty",
                ));
            }
            if !ids.insert(id.to_owned()) {
                return Err(Error::policy_at(
                    source,
                    format!("{at}.id"),
                    format!("duplicate rule id `{id}`"),
                ));
            }
            rules.push(compile_rule(rule, &at, source)?);
        }

        let mut tenants = HashMap::new();
        for (name, lists) in &file.tenants {
            let at = format!("tenants.{name}");
            let key = normalize(name);
            if key.is_empty() {
                return Err(Error::policy_at(source, at, "tenant name is empty"));
            }
            let compile_list = |list: &[String], field: &str, verb: &str| {
                list.iter()
                    .enumerate()
                    .map(|(j, p)| {
                        let pattern = TopicPattern::compile(p).map_err(|e| {
                            Error::policy_at(source, format!("{at}.{field}[{j}]"), e)
                        })?;
                        Ok(LegacyEntry {
                            pattern,
                            id: format!("legacy:{name}:{verb}:{}", j + 1).into(),
                            reason: if verb == "deny" {
                                format!(
                                    "topic denied for tenant {name} by deny_topics `{}`",
                                    p.trim()
                                )
                            } else {
                                format!(
                                    "topic allowed for tenant {name} by allow_topics `{}`",
                                    p.trim()
                                )
                            }
                            .into(),
                        })
                    })
                    .collect::<Result<Vec<_>, Error>>()
            };
            let entry = LegacyTenant {
                name: name.as_str().into(),
                deny: compile_list(&lists.deny_topics, "deny_topics", "deny")?,
                allow: compile_list(&lists.allow_topics, "allow_topics", "allow")?,
                not_allowed_id: format!("legacy:{name}:not-allowed").into(),
                not_allowed_reason: format!("topic is not in allow_topics of tenant {name}").into(),
            };
            if tenants
                .insert(key.into_owned().into_boxed_str(), entry)
                .is_some()
            {
                return Err(Error::policy_at(
                    source,
                    at,
                    "tenant listed twice (names compare ignoring case)",
                ));
            }
        }

        let default_decision = file.default_decision.unwrap_or(Decision::Allow);
        let uses_mcp = rules.iter().any(|r| r.cond.mcp.is_some());
        let uses_secrets = rules.iter().any(|r| r.cond.secrets_present.is_some());
        Ok(Policy {
            version: file.version.trim().to_owned(),
            default_tenant: normalize(&file.default_tenant)
                .into_owned()
                .into_boxed_str(),
            default_decision,
            default_reason: format!("no rule matched: default {default_decision}").into(),
            rules,
            tenants,
            uses_mcp,
            uses_secrets,
            file,
        })
    }

    /// The policy's `version` label (trimmed; may be empty).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Number of rules (not counting legacy tenant lists).
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The rule ids, in evaluation order.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| &*r.id)
    }

    /// The parsed file this policy was compiled from.
    pub fn file(&self) -> &PolicyFile {
        &self.file
    }
}

fn names(list: &[String], at: &str, field: &str, source: &str) -> Result<Option<NameSet>, Error> {
    if list.is_empty() {
        return Ok(None);
    }
    for (j, v) in list.iter().enumerate() {
        if v.trim().is_empty() {
            return Err(Error::policy_at(
                source,
                format!("{at}.{field}[{j}]"),
                "empty value",
            ));
        }
    }
    Ok(Some(NameSet::new(list)))
}

fn compile_rule(rule: &Rule, at: &str, source: &str) -> Result<CompiledRule, Error> {
    let m = &rule.matcher;
    let mat = format!("{at}.match");
    let mut cond = Conditions {
        tenants: names(&m.tenants, &mat, "tenants", source)?,
        capabilities: names(&m.capabilities, &mat, "capabilities", source)?,
        risk_tags: names(&m.risk_tags, &mat, "risk_tags", source)?,
        pack_ids: names(&m.pack_ids, &mat, "pack_ids", source)?,
        actor_ids: names(&m.actor_ids, &mat, "actor_ids", source)?,
        secrets_present: m.secrets_present,
        ..Conditions::default()
    };
    if !m.topics.is_empty() {
        let mut topics = Vec::with_capacity(m.topics.len());
        for (j, p) in m.topics.iter().enumerate() {
            topics.push(
                TopicPattern::compile(p)
                    .map_err(|e| Error::policy_at(source, format!("{mat}.topics[{j}]"), e))?,
            );
        }
        cond.topics = Some(topics);
    }
    for (j, r) in m.requires.iter().enumerate() {
        let n = normalize(r);
        if n.is_empty() {
            return Err(Error::policy_at(
                source,
                format!("{mat}.requires[{j}]"),
                "empty value",
            ));
        }
        if !cond.requires.iter().any(|x| **x == *n) {
            cond.requires.push(n.into_owned().into_boxed_str());
        }
    }
    if !m.actor_types.is_empty() {
        let mut mask = 0u8;
        for (j, t) in m.actor_types.iter().enumerate() {
            mask |= match &*normalize(t) {
                "human" | "actor_type_human" => 1,
                "service" | "actor_type_service" => 2,
                other => {
                    return Err(Error::policy_at(
                        source,
                        format!("{mat}.actor_types[{j}]"),
                        format!("unknown actor type `{other}`: expected human or service"),
                    ));
                }
            };
        }
        cond.actor_types = Some(mask);
    }
    for (k, v) in &m.labels {
        if k.is_empty() {
            return Err(Error::policy_at(
                source,
                format!("{mat}.labels"),
                "empty label key",
            ));
        }
        cond.labels.push((k.as_str().into(), v.as_str().into()));
    }
    if let Some(mcp) = &m.mcp {
        cond.mcp = Some(compile_mcp(mcp, &format!("{mat}.mcp"), source)?);
    }

    let constraints = match &rule.constraints {
        Some(c) => constraints_to_wire(c, &format!("{at}.constraints"), source)?,
        None => None,
    };
    let decision = match rule.decision {
        None => Decision::Deny,
        Some(Decision::Allow) if constraints.is_some() => Decision::AllowWithConstraints,
        Some(d) => d,
    };
    let id = rule.id.trim();
    let reason = if rule.reason.trim().is_empty() {
        match rule.decision {
            None => format!("rule {id} has no decision: deny"),
            Some(_) => format!("{decision} by rule {id}"),
        }
    } else {
        rule.reason.trim().to_owned()
    };
    Ok(CompiledRule {
        id: id.into(),
        decision,
        reason: reason.into(),
        cond,
        constraints,
        remediations: rule.remediations.iter().map(remediation_to_wire).collect(),
    })
}

fn compile_mcp(l: &McpLists, at: &str, source: &str) -> Result<McpCompiled, Error> {
    let pairs: [(&[String], &str, &[String], &str); 4] = [
        (
            &l.allow_servers,
            "allow_servers",
            &l.deny_servers,
            "deny_servers",
        ),
        (&l.allow_tools, "allow_tools", &l.deny_tools, "deny_tools"),
        (
            &l.allow_resources,
            "allow_resources",
            &l.deny_resources,
            "deny_resources",
        ),
        (
            &l.allow_actions,
            "allow_actions",
            &l.deny_actions,
            "deny_actions",
        ),
    ];
    let mut out = McpCompiled::default();
    for (i, (allow, an, deny, dn)) in pairs.into_iter().enumerate() {
        out.allow[i] = names(allow, at, an, source)?.unwrap_or_default();
        out.deny[i] = names(deny, at, dn, source)?.unwrap_or_default();
    }
    Ok(out)
}

/// The wire form of a rule's constraints; `None` when every field is empty.
fn constraints_to_wire(
    c: &Constraints,
    at: &str,
    source: &str,
) -> Result<Option<v1::PolicyConstraints>, Error> {
    let neg = |field: &str, v: i64| -> Result<(), Error> {
        if v < 0 {
            Err(Error::policy_at(
                source,
                format!("{at}.{field}"),
                format!("must not be negative (got {v})"),
            ))
        } else {
            Ok(())
        }
    };
    let budgets = match &c.budgets {
        Some(b) => {
            neg("budgets.max_runtime_ms", b.max_runtime_ms)?;
            neg("budgets.max_retries", b.max_retries.into())?;
            neg("budgets.max_artifact_bytes", b.max_artifact_bytes)?;
            neg("budgets.max_concurrent_jobs", b.max_concurrent_jobs.into())?;
            let w = v1::BudgetConstraints {
                max_runtime_ms: b.max_runtime_ms,
                max_retries: b.max_retries,
                max_artifact_bytes: b.max_artifact_bytes,
                max_concurrent_jobs: b.max_concurrent_jobs,
            };
            (w != v1::BudgetConstraints::default()).then_some(w)
        }
        None => None,
    };
    let sandbox = c.sandbox.as_ref().and_then(|s| {
        let w = v1::SandboxProfile {
            isolated: s.isolated,
            network_allowlist: s.network_allowlist.clone(),
            fs_read_only: s.fs_read_only.clone(),
            fs_read_write: s.fs_read_write.clone(),
        };
        (w != v1::SandboxProfile::default()).then_some(w)
    });
    let toolchain = c.toolchain.as_ref().and_then(|t| {
        let w = v1::ToolchainConstraints {
            allowed_tools: t.allowed_tools.clone(),
            allowed_commands: t.allowed_commands.clone(),
        };
        (w != v1::ToolchainConstraints::default()).then_some(w)
    });
    let diff = match &c.diff {
        Some(d) => {
            neg("diff.max_files", d.max_files.into())?;
            neg("diff.max_lines", d.max_lines.into())?;
            let w = v1::DiffConstraints {
                max_files: d.max_files,
                max_lines: d.max_lines,
                deny_path_globs: d.deny_path_globs.clone(),
            };
            (w != v1::DiffConstraints::default()).then_some(w)
        }
        None => None,
    };
    let w = v1::PolicyConstraints {
        budgets,
        sandbox,
        toolchain,
        diff,
        redaction_level: c.redaction_level.trim().to_owned(),
    };
    Ok((w != v1::PolicyConstraints::default()).then_some(w))
}

fn remediation_to_wire(r: &Remediation) -> v1::PolicyRemediation {
    v1::PolicyRemediation {
        id: r.id.clone(),
        title: r.title.clone(),
        summary: r.summary.clone(),
        replacement_topic: r.replacement_topic.clone(),
        replacement_capability: r.replacement_capability.clone(),
        add_labels: r.add_labels.clone(),
        remove_labels: r.remove_labels.clone(),
    }
}
