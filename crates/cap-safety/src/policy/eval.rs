//! Evaluation: [`Policy::evaluate`] turns a request into a [`Verdict`]. Pure: no IO, no
//! clock, no shared state.

use super::compile::{CompiledRule, Conditions, McpCompiled, Policy};
use super::names::normalize;
use crate::Decision;
use cap_proto::v1::{self, PolicyCheckRequest};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Rule id of the built-in denial of an empty topic.
pub const RULE_EMPTY_TOPIC: &str = "builtin:empty-topic";
/// Rule id of the built-in denial of a topic outside `job.*`.
pub const RULE_NON_JOB_TOPIC: &str = "builtin:non-job-topic";
/// Label whose value true/1/yes marks a job as carrying secrets.
pub const LABEL_SECRETS_PRESENT: &str = "secrets_present";
/// Risk tag that marks a job as carrying secrets.
pub const RISK_TAG_SECRETS: &str = "secrets";
/// Labels naming the MCP server, tool, resource and action a job uses.
pub const MCP_LABELS: [&str; 4] = ["mcp.server", "mcp.tool", "mcp.resource", "mcp.action"];

/// Where the resolved tenant came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantSource {
    /// `PolicyCheckRequest.tenant`.
    Request,
    /// `meta.tenant_id`.
    Meta,
    /// The policy's `default_tenant`.
    Default,
    /// None of them: the tenant is empty.
    None,
}

/// What produced a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The rule at this index of `rules` matched.
    Rule(usize),
    /// The rule at this index matched, but its MCP lists reject the job: deny.
    McpDenied(usize),
    /// The legacy per-tenant topic lists decided.
    Legacy,
    /// No rule matched: the policy's default decision.
    Default,
    /// The built-in topic check (empty topic, or outside `job.*`) denied.
    Builtin,
}

/// The outcome of evaluating one request: borrowed from the policy, cheap to build.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict<'p> {
    decision: Decision,
    rule_id: &'p str,
    reason: Cow<'p, str>,
    constraints: Option<&'p v1::PolicyConstraints>,
    remediations: &'p [v1::PolicyRemediation],
    origin: Origin,
}

impl<'p> Verdict<'p> {
    fn simple(decision: Decision, rule_id: &'p str, reason: &'p str, origin: Origin) -> Self {
        Verdict {
            decision,
            rule_id,
            reason: Cow::Borrowed(reason),
            constraints: None,
            remediations: &[],
            origin,
        }
    }

    fn rule(rule: &'p CompiledRule, index: usize) -> Self {
        Verdict {
            decision: rule.decision,
            rule_id: &rule.id,
            reason: Cow::Borrowed(&rule.reason),
            constraints: rule.constraints.as_ref(),
            remediations: &rule.remediations,
            origin: Origin::Rule(index),
        }
    }

    /// The decision.
    pub fn decision(&self) -> Decision {
        self.decision
    }

    /// The id of the deciding rule (`""` for the default decision).
    pub fn rule_id(&self) -> &'p str {
        self.rule_id
    }

    /// Why.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The constraints to enforce, if any.
    pub fn constraints(&self) -> Option<&'p v1::PolicyConstraints> {
        self.constraints
    }

    /// Suggested remediations.
    pub fn remediations(&self) -> &'p [v1::PolicyRemediation] {
        self.remediations
    }

    /// What produced the verdict.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Whether the job must wait for a human approval.
    pub fn approval_required(&self) -> bool {
        self.decision == Decision::RequireApproval
    }

    /// The wire response: `approval_ref` is `job_id` when approval is required.
    pub fn to_response(&self, job_id: &str, policy_snapshot: &str) -> v1::PolicyCheckResponse {
        let approval_required = self.approval_required();
        v1::PolicyCheckResponse {
            decision: self.decision.to_wire() as i32,
            reason: self.reason.to_string(),
            redacted_context_ptr: String::new(),
            policy_snapshot: policy_snapshot.to_owned(),
            rule_id: self.rule_id.to_owned(),
            constraints: self.constraints.cloned(),
            approval_required,
            approval_ref: if approval_required {
                job_id.to_owned()
            } else {
                String::new()
            },
            remediations: self.remediations.to_vec(),
            ..Default::default()
        }
    }
}

/// The request as the rules see it: normalized names, resolved tenant, derived flags.
#[derive(Debug)]
pub(crate) struct View<'a> {
    pub(crate) topic: &'a str,
    pub(crate) tenant: Cow<'a, str>,
    pub(crate) tenant_source: TenantSource,
    pub(crate) capability: Cow<'a, str>,
    pub(crate) pack_id: Cow<'a, str>,
    pub(crate) actor_id: Cow<'a, str>,
    /// 0 unspecified, 1 human, 2 service (the mask bits of `Conditions::actor_types`).
    pub(crate) actor_type: u8,
    pub(crate) risk_tags: &'a [String],
    pub(crate) requires: &'a [String],
    labels: &'a BTreeMap<String, String>,
    meta_labels: Option<&'a BTreeMap<String, String>>,
    pub(crate) secrets_present: bool,
    pub(crate) mcp: [Cow<'a, str>; 4],
}

impl<'a> View<'a> {
    pub(crate) fn new(policy: &'a Policy, req: &'a PolicyCheckRequest) -> Self {
        let meta = req.meta.as_ref();
        let (tenant, tenant_source) = resolve_tenant(policy, req);
        let str_of = |f: fn(&'a v1::JobMetadata) -> &'a str| meta.map_or("", f);
        let mut view = View {
            topic: &req.topic,
            tenant,
            tenant_source,
            capability: normalize(str_of(|m| &m.capability)),
            pack_id: normalize(str_of(|m| &m.pack_id)),
            actor_id: normalize(str_of(|m| &m.actor_id)),
            actor_type: match meta.map_or(0, |m| m.actor_type) {
                1 => 1,
                2 => 2,
                _ => 0,
            },
            risk_tags: meta.map_or(&[], |m| m.risk_tags.as_slice()),
            requires: meta.map_or(&[], |m| m.requires.as_slice()),
            labels: &req.labels,
            meta_labels: meta.map(|m| &m.labels),
            secrets_present: false,
            mcp: Default::default(),
        };
        if policy.uses_secrets {
            view.secrets_present = view.label(LABEL_SECRETS_PRESENT).is_some_and(|v| {
                let v = v.trim();
                ["true", "1", "yes"]
                    .iter()
                    .any(|t| v.eq_ignore_ascii_case(t))
            }) || view
                .risk_tags
                .iter()
                .any(|t| normalize(t) == RISK_TAG_SECRETS);
        }
        if policy.uses_mcp {
            for (slot, key) in view.mcp.iter_mut().zip(MCP_LABELS) {
                if let Some(v) = req.labels.get(key).or_else(|| meta?.labels.get(key)) {
                    *slot = normalize(v);
                }
            }
        }
        view
    }

    /// A label: the request's `labels` first, then `meta.labels`.
    pub(crate) fn label(&self, key: &str) -> Option<&'a str> {
        self.labels
            .get(key)
            .or_else(|| self.meta_labels?.get(key))
            .map(String::as_str)
    }
}

/// The tenant a request is evaluated for (normalized), and where it came from.
pub(crate) fn resolve_tenant<'a>(
    policy: &'a Policy,
    req: &'a PolicyCheckRequest,
) -> (Cow<'a, str>, TenantSource) {
    if !req.tenant.trim().is_empty() {
        return (normalize(&req.tenant), TenantSource::Request);
    }
    if let Some(m) = &req.meta
        && !m.tenant_id.trim().is_empty()
    {
        return (normalize(&m.tenant_id), TenantSource::Meta);
    }
    if !policy.default_tenant.is_empty() {
        return (Cow::Borrowed(&policy.default_tenant), TenantSource::Default);
    }
    (Cow::Borrowed(""), TenantSource::None)
}

/// The conditions a rule can have, for traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Tenants,
    Topics,
    Capabilities,
    RiskTags,
    Requires,
    PackIds,
    ActorIds,
    ActorTypes,
    Labels,
    SecretsPresent,
}

impl Conditions {
    /// Checks every condition present, cheapest first, reporting each to `each`; stops as
    /// soon as `each` returns `false`. Returns whether all reported conditions held.
    #[inline]
    pub(crate) fn check(&self, v: &View<'_>, mut each: impl FnMut(Field, bool) -> bool) -> bool {
        let mut all = true;
        let mut report = |field: Field, ok: bool| -> bool {
            all &= ok;
            each(field, ok)
        };
        if let Some(set) = &self.tenants
            && !report(Field::Tenants, set.contains(&v.tenant))
        {
            return false;
        }
        if let Some(mask) = self.actor_types
            && !report(Field::ActorTypes, mask & v.actor_type != 0)
        {
            return false;
        }
        if let Some(want) = self.secrets_present
            && !report(Field::SecretsPresent, want == v.secrets_present)
        {
            return false;
        }
        if let Some(set) = &self.capabilities
            && !report(Field::Capabilities, set.contains(&v.capability))
        {
            return false;
        }
        if let Some(set) = &self.pack_ids
            && !report(Field::PackIds, set.contains(&v.pack_id))
        {
            return false;
        }
        if let Some(set) = &self.actor_ids
            && !report(Field::ActorIds, set.contains(&v.actor_id))
        {
            return false;
        }
        if !self.labels.is_empty()
            && !report(
                Field::Labels,
                self.labels
                    .iter()
                    .all(|(k, want)| v.label(k).is_some_and(|got| got == &**want)),
            )
        {
            return false;
        }
        if let Some(set) = &self.risk_tags
            && !report(
                Field::RiskTags,
                v.risk_tags.iter().any(|t| set.contains_raw(t)),
            )
        {
            return false;
        }
        if !self.requires.is_empty()
            && !report(
                Field::Requires,
                self.requires
                    .iter()
                    .all(|r| v.requires.iter().any(|have| normalize(have) == **r)),
            )
        {
            return false;
        }
        if let Some(patterns) = &self.topics
            && !report(Field::Topics, patterns.iter().any(|p| p.matches(v.topic)))
        {
            return false;
        }
        all
    }

    /// Whether every condition holds.
    #[inline]
    pub(crate) fn matches(&self, v: &View<'_>) -> bool {
        self.check(v, |_, ok| ok)
    }
}

/// An MCP item a rule rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct McpViolation {
    /// Index into [`super::compile::MCP_KINDS`].
    pub(crate) kind: usize,
    /// `true`: on the deny list; `false`: missing from a non-empty allow list.
    pub(crate) denied: bool,
}

impl McpCompiled {
    /// The first MCP item the job names that these lists reject.
    #[inline]
    pub(crate) fn violation(&self, v: &View<'_>) -> Option<McpViolation> {
        for kind in 0..4 {
            let name = &*v.mcp[kind];
            if name.is_empty() {
                continue;
            }
            if self.deny[kind].contains(name) {
                return Some(McpViolation { kind, denied: true });
            }
            if !self.allow[kind].is_empty() && !self.allow[kind].contains(name) {
                return Some(McpViolation {
                    kind,
                    denied: false,
                });
            }
        }
        None
    }
}

pub(crate) fn mcp_reason(rule_id: &str, v: &View<'_>, x: McpViolation) -> String {
    let kind = super::compile::MCP_KINDS[x.kind];
    let name = &v.mcp[x.kind];
    if x.denied {
        format!("mcp {kind} `{name}` is on deny_{kind}s of rule {rule_id}")
    } else {
        format!("mcp {kind} `{name}` is not on allow_{kind}s of rule {rule_id}")
    }
}

impl Policy {
    /// Decides on a request. First match wins; no match → the default decision (allow
    /// unless the file sets `default_decision`); an empty topic or one outside `job.*`
    /// is denied before any rule is considered.
    pub fn evaluate<'p>(&'p self, req: &PolicyCheckRequest) -> Verdict<'p> {
        let topic = req.topic.as_str();
        if topic.trim().is_empty() {
            return Verdict::simple(
                Decision::Deny,
                RULE_EMPTY_TOPIC,
                "topic is empty",
                Origin::Builtin,
            );
        }
        if !topic.starts_with(cap_proto::subject::POOL_PREFIX) {
            return Verdict::simple(
                Decision::Deny,
                RULE_NON_JOB_TOPIC,
                "topic is outside job.*",
                Origin::Builtin,
            );
        }
        let view = View::new(self, req);
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.cond.matches(&view) {
                if let Some(mcp) = &rule.cond.mcp
                    && let Some(x) = mcp.violation(&view)
                {
                    return Verdict {
                        decision: Decision::Deny,
                        rule_id: &rule.id,
                        reason: Cow::Owned(mcp_reason(&rule.id, &view, x)),
                        constraints: None,
                        remediations: &rule.remediations,
                        origin: Origin::McpDenied(i),
                    };
                }
                return Verdict::rule(rule, i);
            }
        }
        if let Some(v) = self.legacy(&view) {
            return v;
        }
        Verdict::simple(
            self.default_decision,
            "",
            &self.default_reason,
            Origin::Default,
        )
    }

    /// The legacy tenant lists' verdict, if they decide.
    fn legacy<'p>(&'p self, view: &View<'_>) -> Option<Verdict<'p>> {
        if self.tenants.is_empty() || view.tenant.is_empty() {
            return None;
        }
        let t = self.tenants.get(&*view.tenant)?;
        if let Some(e) = t.deny.iter().find(|e| e.pattern.matches(view.topic)) {
            return Some(Verdict::simple(
                Decision::Deny,
                &e.id,
                &e.reason,
                Origin::Legacy,
            ));
        }
        if t.allow.is_empty() {
            return None;
        }
        Some(
            match t.allow.iter().find(|e| e.pattern.matches(view.topic)) {
                Some(e) => Verdict::simple(Decision::Allow, &e.id, &e.reason, Origin::Legacy),
                None => Verdict::simple(
                    Decision::Deny,
                    &t.not_allowed_id,
                    &t.not_allowed_reason,
                    Origin::Legacy,
                ),
            },
        )
    }

    /// The tenant a request is evaluated for (normalized: trimmed, lowercase).
    pub fn resolve_tenant<'a>(
        &'a self,
        req: &'a PolicyCheckRequest,
    ) -> (Cow<'a, str>, TenantSource) {
        resolve_tenant(self, req)
    }
}
