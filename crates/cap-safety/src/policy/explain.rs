//! [`Policy::explain`]: the same decision as [`Policy::evaluate`], with a readable trace
//! of the rules considered and why each matched or not.

use super::compile::Policy;
use super::eval::{Field, Origin, TenantSource, Verdict, View, mcp_reason};
use super::file::Match;
use cap_proto::v1::PolicyCheckRequest;
use std::fmt::Write;

impl Policy {
    /// Decides exactly like [`Policy::evaluate`] and returns a trace of the evaluation:
    /// the rules considered (up to the deciding one) and, for each, every condition with
    /// whether it held and the values compared.
    ///
    /// The trace is plain text, one fact per line:
    ///
    /// ```text
    /// decision: deny (rule deny-prod, rules[2])
    /// reason: production deploys need a ticket
    /// tenant: acme (from request.tenant)
    /// topic: job.deploy.prod
    /// rules[0] allow-echo: no match
    ///   - topics: no (job.deploy.prod matches none of [job.echo])
    /// rules[1] deny-secrets: no match
    ///   - secrets_present: no (want true, request has false)
    /// rules[2] deny-prod: MATCH
    ///   - tenants: yes ("acme" in [acme])
    ///   - topics: yes (job.deploy.prod matches one of [job.deploy.*])
    /// ```
    pub fn explain<'p>(&'p self, req: &PolicyCheckRequest) -> (Verdict<'p>, String) {
        let verdict = self.evaluate(req);
        let mut t = String::new();
        let rule_ref = match verdict.origin() {
            Origin::Rule(i) | Origin::McpDenied(i) => {
                format!(" (rule {}, rules[{i}])", verdict.rule_id())
            }
            Origin::Legacy => format!(" (legacy rule {})", verdict.rule_id()),
            Origin::Builtin => format!(" (built-in {})", verdict.rule_id()),
            Origin::Default => " (no rule matched)".to_owned(),
        };
        let _ = writeln!(t, "decision: {}{rule_ref}", verdict.decision());
        let _ = writeln!(t, "reason: {}", verdict.reason());
        if verdict.origin() == Origin::Builtin {
            let _ = writeln!(t, "topic: {:?}: no rule is considered for it", req.topic);
            return (verdict, t.trim_end().to_owned());
        }
        let view = View::new(self, req);
        let from = match view.tenant_source {
            TenantSource::Request => "from request.tenant",
            TenantSource::Meta => "from meta.tenant_id",
            TenantSource::Default => "the policy's default_tenant",
            TenantSource::None => "none given and no default_tenant",
        };
        let _ = writeln!(t, "tenant: {} ({from})", view.tenant);
        let _ = writeln!(t, "topic: {}", view.topic);
        let last = match verdict.origin() {
            Origin::Rule(i) | Origin::McpDenied(i) => i,
            _ => self.rules.len().saturating_sub(1),
        };
        for (i, rule) in self.rules.iter().enumerate().take(last + 1) {
            let Some(source) = self.file.rules.get(i) else {
                break;
            };
            let mut lines = Vec::new();
            let matched = rule.cond.check(&view, |field, ok| {
                lines.push(describe(field, ok, &source.matcher, &view));
                true
            });
            let head = if !matched {
                "no match".to_owned()
            } else if let Some(x) = rule.cond.mcp.as_ref().and_then(|m| m.violation(&view)) {
                format!("MATCH, but deny: {}", mcp_reason(&rule.id, &view, x))
            } else if lines.is_empty() {
                "MATCH (no conditions)".to_owned()
            } else {
                "MATCH".to_owned()
            };
            let _ = writeln!(t, "rules[{i}] {}: {head}", rule.id);
            for l in lines {
                let _ = writeln!(t, "  - {l}");
            }
        }
        if matches!(verdict.origin(), Origin::Legacy | Origin::Default) {
            match self.tenants.get(&*view.tenant) {
                Some(lt) => {
                    let _ = writeln!(
                        t,
                        "legacy lists of tenant {}: {} deny_topics, {} allow_topics",
                        lt.name,
                        lt.deny.len(),
                        lt.allow.len()
                    );
                }
                None if !self.tenants.is_empty() => {
                    let _ = writeln!(t, "legacy lists: none for tenant {:?}", &*view.tenant);
                }
                None => {}
            }
        }
        (verdict, t.trim_end().to_owned())
    }
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "no" }
}

fn list(v: &[String]) -> String {
    format!(
        "[{}]",
        v.iter().map(|s| s.trim()).collect::<Vec<_>>().join(", ")
    )
}

fn describe(field: Field, ok: bool, m: &Match, v: &View<'_>) -> String {
    let y = yes(ok);
    match field {
        Field::Tenants => format!("tenants: {y} ({:?} in {})", &*v.tenant, list(&m.tenants)),
        Field::Topics => format!(
            "topics: {y} ({} matches {} {})",
            v.topic,
            if ok { "one of" } else { "none of" },
            list(&m.topics)
        ),
        Field::Capabilities => {
            format!(
                "capabilities: {y} ({:?} in {})",
                &*v.capability,
                list(&m.capabilities)
            )
        }
        Field::RiskTags => format!(
            "risk_tags: {y} (any of {} in {})",
            list(v.risk_tags),
            list(&m.risk_tags)
        ),
        Field::Requires => format!(
            "requires: {y} (all of {} in {})",
            list(&m.requires),
            list(v.requires)
        ),
        Field::PackIds => format!("pack_ids: {y} ({:?} in {})", &*v.pack_id, list(&m.pack_ids)),
        Field::ActorIds => format!(
            "actor_ids: {y} ({:?} in {})",
            &*v.actor_id,
            list(&m.actor_ids)
        ),
        Field::ActorTypes => {
            let have = match v.actor_type {
                1 => "human",
                2 => "service",
                _ => "unspecified",
            };
            format!("actor_types: {y} ({have} in {})", list(&m.actor_types))
        }
        Field::Labels => {
            let parts: Vec<String> = m
                .labels
                .iter()
                .map(|(k, want)| match v.label(k) {
                    Some(got) if got == want => format!("{k}={want} ok"),
                    Some(got) => format!("{k}: want {want:?}, have {got:?}"),
                    None => format!("{k}: want {want:?}, missing"),
                })
                .collect();
            format!("labels: {y} ({})", parts.join("; "))
        }
        Field::SecretsPresent => format!(
            "secrets_present: {y} (want {}, request has {})",
            m.secrets_present.unwrap_or_default(),
            v.secrets_present
        ),
    }
}
