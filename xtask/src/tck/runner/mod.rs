//! A runner of the CAP conformance kit's adapter protocol (adapter-v1), std, `serde` and
//! `serde_json` only (so that `cap-cli`'s tests include this module as it is:
//! `#[path = ".../xtask/src/tck/runner/mod.rs"] mod runner;`).
//!
//! - [`load_dir`]: scenario suites, checked against the rules of
//!   `tck/schema/scenario.schema.json` (unknown fields, types, required fields, unique
//!   ids), in id order.
//! - [`run_adapter`]: starts the adapter from an argv (no shell), sends `hello`, expects
//!   the handshake within [`HANDSHAKE_TIMEOUT`], sends one `run` per case of its role
//!   (cases of the other role are N/A and never sent) and expects exactly one `result`
//!   echoing the id within [`CASE_TIMEOUT`], then `bye` (the adapter is killed after
//!   [`GRACE`]). Every line from the adapter is checked by [`parse_message`] against the
//!   rules of `tck/schema/adapter-message.schema.json`, strictly: one JSON object per
//!   line of at most [`MAX_LINE_BYTES`], no unknown fields, no key twice, blank lines
//!   ignored. A line that breaks them is a violation; the case it answered is ERROR.
//! - [`summarize`]: per profile, conformant only if every applicable required case is
//!   PASS (UNSUPPORTED, N/A from the adapter, FAIL and ERROR are not) and there was no
//!   violation; [`report`]: the run in the shape of `tck/schema/report.schema.json`.
//!
//! Files: [`wire`] (strict JSON, the adapter's lines, bounded line reading), [`process`]
//! (the adapter process and the run), this file (roles, statuses, suites, summaries,
//! reports).

mod process;
mod wire;

// The module's API (for `cargo xtask tck`, its tests and cap-cli's tests; the xtask
// binary itself does not use every item).
#[allow(unused_imports)]
pub use process::{CaseResult, Run, Timeouts, run_adapter, run_adapter_with};
#[allow(unused_imports)]
pub use wire::{Handshake, Message, parse_message, parse_strict};

use wire::string_map;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// The adapter-v1 protocol version.
pub const PROTOCOL_VERSION: i64 = 1;
/// Longest line, newline excluded.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// How long the adapter has to answer `hello`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the adapter has to answer one `run`.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the adapter has to exit after `bye`.
pub const GRACE: Duration = Duration::from_secs(2);
/// How much of the adapter's stderr is kept.
pub const STDERR_KEPT: usize = 64 * 1024;

/// A component boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// `worker`.
    Worker,
    /// `control-plane`.
    ControlPlane,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::ControlPlane => "control-plane",
        }
    }

    /// The role called `s`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "worker" => Some(Role::Worker),
            "control-plane" => Some(Role::ControlPlane),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A case outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Conformant.
    Pass,
    /// Not conformant.
    Fail,
    /// A fault of the adapter or the harness.
    Error,
    /// Not implemented by the adapter.
    Unsupported,
    /// Not applicable.
    NotApplicable,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Error => "ERROR",
            Status::Unsupported => "UNSUPPORTED",
            Status::NotApplicable => "N/A",
        }
    }

    /// The status called `s`.
    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "PASS" => Some(Status::Pass),
            "FAIL" => Some(Status::Fail),
            "ERROR" => Some(Status::Error),
            "UNSUPPORTED" => Some(Status::Unsupported),
            "N/A" => Some(Status::NotApplicable),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One case of a suite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Its unique id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Who owns the behaviour.
    pub role: Role,
    /// Its profile.
    pub profile: String,
    /// Whether an applicable adapter must PASS it.
    pub required: bool,
    /// Its parameters.
    pub params: BTreeMap<String, String>,
}

/// Parses one suite file (the rules of `scenario.schema.json`).
pub fn load_suite(text: &str) -> Result<Vec<Scenario>, String> {
    let Value::Object(top) = parse_strict(text)? else {
        return Err("a suite is a JSON object".into());
    };
    for k in top.keys() {
        if k != "version" && k != "scenarios" {
            return Err(format!("unknown suite field `{k}`"));
        }
    }
    match top.get("version").and_then(Value::as_i64) {
        Some(v) if v >= 1 => {}
        _ => return Err("`version` must be an integer >= 1".into()),
    }
    let Some(Value::Array(items)) = top.get("scenarios") else {
        return Err("`scenarios` must be an array".into());
    };
    let mut out = Vec::new();
    for item in items {
        let Value::Object(s) = item else {
            return Err("a scenario is an object".into());
        };
        const FIELDS: [&str; 6] = ["id", "title", "role", "profile", "required", "params"];
        if let Some(k) = s.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!("unknown scenario field `{k}`"));
        }
        let text = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let id = text("id");
        if id.is_empty() {
            return Err("a scenario id must be a non-empty string".into());
        }
        let role = s
            .get("role")
            .and_then(Value::as_str)
            .and_then(Role::parse)
            .ok_or_else(|| format!("{id}: `role` must be worker or control-plane"))?;
        let profile = text("profile");
        if profile.is_empty() {
            return Err(format!("{id}: `profile` must be a non-empty string"));
        }
        if s.get("title").is_some_and(|t| !t.is_string()) {
            return Err(format!("{id}: `title` must be a string"));
        }
        let required = match s.get("required") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(format!("{id}: `required` must be a boolean")),
        };
        let params = match s.get("params") {
            None => BTreeMap::new(),
            Some(p) => string_map(p, "params").map_err(|e| format!("{id}: {e}"))?,
        };
        out.push(Scenario {
            title: text("title"),
            id,
            role,
            profile,
            required,
            params,
        });
    }
    Ok(out)
}

/// Every `*.json` suite in `dir`, in id order (ids unique across files).
pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut all: Vec<Scenario> = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let suite = load_suite(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        for s in suite {
            if all.iter().any(|x| x.id == s.id) {
                return Err(format!("{}: duplicate scenario id {}", f.display(), s.id));
            }
            all.push(s);
        }
    }
    if all.is_empty() {
        return Err(format!("{}: no scenarios", dir.display()));
    }
    all.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(all)
}

/// The counts of one profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Cases.
    pub total: usize,
    /// PASS.
    pub pass: usize,
    /// FAIL.
    pub fail: usize,
    /// ERROR.
    pub error: usize,
    /// UNSUPPORTED.
    pub unsupported: usize,
    /// N/A.
    pub na: usize,
    /// Every applicable required case PASS, and no protocol violation.
    pub conformant: bool,
}

/// The summary of `run`'s cases of `profile`.
pub fn summarize(run: &Run, profile: &str) -> Summary {
    let mut s = Summary {
        conformant: run.violations.is_empty(),
        ..Summary::default()
    };
    for c in run.cases.iter().filter(|c| c.profile == profile) {
        s.total += 1;
        match c.status {
            Status::Pass => s.pass += 1,
            Status::Fail => s.fail += 1,
            Status::Error => s.error += 1,
            Status::Unsupported => s.unsupported += 1,
            Status::NotApplicable => s.na += 1,
        }
        if c.applicable && c.required && c.status != Status::Pass {
            s.conformant = false;
        }
    }
    s
}

/// The report of `run` for `profile` (the shape of `report.schema.json`).
pub fn report(run: &Run, adapter: &str, profile: &str, tool_version: &str) -> Value {
    let s = summarize(run, profile);
    let cases: Vec<Value> = run
        .cases
        .iter()
        .filter(|c| c.profile == profile)
        .map(|c| {
            let mut v = json!({
                "id": c.id,
                "profile": c.profile,
                "role": c.role.as_str(),
                "required": c.required,
                "applicable": c.applicable,
                "status": c.status.as_str(),
                "durationMs": c.duration_ms,
            });
            if !c.detail.is_empty() {
                v["detail"] = json!(c.detail);
            }
            if !c.evidence.is_empty() {
                v["evidence"] = json!(c.evidence);
            }
            v
        })
        .collect();
    json!({
        "adapter": adapter,
        "sdk": run.handshake.sdk,
        "role": run.handshake.role.as_str(),
        "profile": profile,
        "transport": run.handshake.transport,
        "toolVersion": tool_version,
        "summary": {
            "total": s.total,
            "pass": s.pass,
            "fail": s.fail,
            "error": s.error,
            "unsupported": s.unsupported,
            "na": s.na,
            "conformant": s.conformant,
        },
        "cases": cases,
    })
}
