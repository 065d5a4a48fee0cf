//! Shared helpers for cap-safety's integration tests.
#![allow(dead_code)]

use cap_proto::v1::{JobMetadata, PolicyCheckRequest};
use cap_safety::{Decision, Policy};

/// Compiles a YAML policy or panics with the error.
pub fn policy(yaml: &str) -> Policy {
    Policy::from_text(yaml, "test.yaml").unwrap_or_else(|e| panic!("policy invalid: {e}"))
}

/// A request builder.
#[derive(Clone, Default)]
pub struct Req(pub PolicyCheckRequest);

pub fn req(topic: &str) -> Req {
    Req(PolicyCheckRequest {
        job_id: "job-1".into(),
        topic: topic.into(),
        ..Default::default()
    })
}

impl Req {
    fn meta(&mut self) -> &mut JobMetadata {
        self.0.meta.get_or_insert_with(JobMetadata::default)
    }
    pub fn tenant(mut self, t: &str) -> Self {
        self.0.tenant = t.into();
        self
    }
    pub fn meta_tenant(mut self, t: &str) -> Self {
        self.meta().tenant_id = t.into();
        self
    }
    pub fn capability(mut self, c: &str) -> Self {
        self.meta().capability = c.into();
        self
    }
    pub fn risk_tags(mut self, tags: &[&str]) -> Self {
        self.meta().risk_tags = tags.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn requires(mut self, r: &[&str]) -> Self {
        self.meta().requires = r.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn pack(mut self, p: &str) -> Self {
        self.meta().pack_id = p.into();
        self
    }
    pub fn actor(mut self, a: &str) -> Self {
        self.meta().actor_id = a.into();
        self
    }
    pub fn actor_type(mut self, t: i32) -> Self {
        self.meta().actor_type = t;
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0.labels.insert(k.into(), v.into());
        self
    }
    pub fn meta_label(mut self, k: &str, v: &str) -> Self {
        self.meta().labels.insert(k.into(), v.into());
        self
    }
    pub fn job(mut self, id: &str) -> Self {
        self.0.job_id = id.into();
        self
    }
    pub fn build(self) -> PolicyCheckRequest {
        self.0
    }
}

/// (decision, rule id) of evaluating `r` under `p`.
pub fn decide(p: &Policy, r: &Req) -> (Decision, String) {
    let v = p.evaluate(&r.0);
    (v.decision(), v.rule_id().to_owned())
}
