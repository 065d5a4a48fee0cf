//! The policy engine: the file format ([`file`](mod@file)), loading with path-precise errors,
//! compilation into a [`Policy`], and pure evaluation into a [`Verdict`].
//!
//! ```
//! use cap_safety::{Decision, policy::Policy};
//! use cap_proto::v1::PolicyCheckRequest;
//!
//! let policy = Policy::from_text(r#"
//! version: 1
//! rules:
//!   - id: deny-prod
//!     match: { topics: ["job.deploy.prod*"] }
//!     decision: deny
//!     reason: no production deploys
//! "#, "example.yaml").unwrap();
//!
//! let req = PolicyCheckRequest { topic: "job.deploy.prod.eu".into(), ..Default::default() };
//! let v = policy.evaluate(&req);
//! assert_eq!(v.decision(), Decision::Deny);
//! assert_eq!(v.rule_id(), "deny-prod");
//!
//! let bad = Policy::from_text("rules:\n  - id: x\n    match: { topicz: [a] }\n", "bad.yaml");
//! let err = bad.unwrap_err();
//! assert_eq!(err.policy().unwrap().path, "rules[0].match.topicz");
//! ```

mod compile;
mod eval;
mod explain;
pub mod file;
mod glob;
mod load;
mod names;

pub use compile::Policy;
pub use eval::{
    LABEL_SECRETS_PRESENT, MCP_LABELS, Origin, RISK_TAG_SECRETS, RULE_EMPTY_TOPIC,
    RULE_NON_JOB_TOPIC, TenantSource, Verdict,
};
pub use file::PolicyFile;
pub(crate) use load::read_policy_file;
pub use load::{Format, MAX_POLICY_BYTES, parse, schema};
