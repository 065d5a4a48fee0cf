//! A runner of the CAP conformance kit's adapter protocol (adapter-v1), std and
//! `serde_json` only (so that `cap-cli`'s tests include this file as it is).
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

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Parses one JSON document, rejecting duplicate keys at any depth and trailing data.
pub fn parse_strict(text: &str) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = Strict.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| format!("trailing data: {e}"))?;
    Ok(v)
}

struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            let v = map.next_value_seed(Strict)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

fn string_map(v: &Value, what: &str) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(m) = v else {
        return Err(format!("`{what}` must be an object of strings"));
    };
    m.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(format!("`{what}.{k}` must be a string")),
        })
        .collect()
}

fn string_list(v: &Value, what: &str) -> Result<Vec<String>, String> {
    let Value::Array(a) = v else {
        return Err(format!("`{what}` must be an array of strings"));
    };
    a.iter()
        .map(|x| match x {
            Value::String(s) => Ok(s.clone()),
            _ => Err(format!("`{what}` must hold strings only")),
        })
        .collect()
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

/// The adapter's handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// Its adapter-v1 version.
    pub protocol_version: i64,
    /// Its role.
    pub role: Role,
    /// The profiles it implements.
    pub profiles: Vec<String>,
    /// Its features.
    pub features: Vec<String>,
    /// Its SDK.
    pub sdk: String,
    /// Its transport.
    pub transport: String,
}

/// A message from the adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Its handshake.
    Handshake(Handshake),
    /// A case result.
    Result {
        /// The run id it answers.
        id: String,
        /// The outcome.
        status: Status,
        /// Why.
        detail: String,
        /// What was observed.
        evidence: BTreeMap<String, String>,
    },
}

/// Checks one line from the adapter against the adapter-message schema (strictly) and
/// the direction (an adapter sends `handshake` and `result` only).
pub fn parse_message(line: &str) -> Result<Message, String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(format!(
            "a line of {} bytes (limit {MAX_LINE_BYTES})",
            line.len()
        ));
    }
    let Value::Object(m) = parse_strict(line)? else {
        return Err("not a JSON object".into());
    };
    const FIELDS: [&str; 13] = [
        "type",
        "id",
        "scenario",
        "params",
        "protocolVersion",
        "role",
        "profiles",
        "features",
        "sdk",
        "transport",
        "status",
        "detail",
        "evidence",
    ];
    if let Some(k) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("unknown field `{k}`"));
    }
    let string = |k: &str| -> Result<Option<String>, String> {
        match m.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`{k}` must be a string")),
        }
    };
    for k in ["id", "scenario", "sdk", "transport", "detail"] {
        string(k)?;
    }
    if let Some(p) = m.get("params") {
        string_map(p, "params")?;
    }
    let evidence = match m.get("evidence") {
        Some(e) => string_map(e, "evidence")?,
        None => BTreeMap::new(),
    };
    let profiles = match m.get("profiles") {
        Some(p) => string_list(p, "profiles")?,
        None => Vec::new(),
    };
    let features = match m.get("features") {
        Some(p) => string_list(p, "features")?,
        None => Vec::new(),
    };
    let version = match m.get("protocolVersion") {
        None => None,
        Some(v) => Some(v.as_i64().ok_or("`protocolVersion` must be an integer")?),
    };
    let role = match string("role")? {
        None => None,
        Some(r) => Some(Role::parse(&r).ok_or_else(|| format!("unknown role {r:?}"))?),
    };
    let status = match string("status")? {
        None => None,
        Some(s) => Some(Status::parse(&s).ok_or_else(|| format!("unknown status {s:?}"))?),
    };
    let ty = string("type")?.ok_or("`type` is required")?;
    match ty.as_str() {
        "handshake" => {
            let (Some(protocol_version), Some(role)) = (version, role) else {
                return Err("a handshake requires `protocolVersion` and `role`".into());
            };
            Ok(Message::Handshake(Handshake {
                protocol_version,
                role,
                profiles,
                features,
                sdk: string("sdk")?.unwrap_or_default(),
                transport: string("transport")?.unwrap_or_default(),
            }))
        }
        "result" => {
            let (Some(id), Some(status)) = (string("id")?, status) else {
                return Err("a result requires `id` and `status`".into());
            };
            Ok(Message::Result {
                id,
                status,
                detail: string("detail")?.unwrap_or_default(),
                evidence,
            })
        }
        "hello" | "run" | "bye" => Err(format!("`{ty}` is a runner message, not the adapter's")),
        other => Err(format!("unknown message type {other:?}")),
    }
}

/// The result of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaseResult {
    /// The case id.
    pub id: String,
    /// Its profile.
    pub profile: String,
    /// Its role.
    pub role: Role,
    /// Whether required.
    pub required: bool,
    /// Whether it was the adapter's role's (sent to it).
    pub applicable: bool,
    /// The outcome.
    pub status: Status,
    /// Why.
    pub detail: String,
    /// How long the adapter took.
    pub duration_ms: u64,
    /// What the adapter observed.
    pub evidence: BTreeMap<String, String>,
}

/// One adapter's run.
#[derive(Clone, Debug)]
pub struct Run {
    /// Its handshake.
    pub handshake: Handshake,
    /// Every case, in id order.
    pub cases: Vec<CaseResult>,
    /// Protocol violations by the adapter.
    pub violations: Vec<String>,
    /// The start of its stderr.
    pub stderr: String,
}

enum Incoming {
    Message(Message),
    Violation(String),
}

/// Reads one line of at most [`MAX_LINE_BYTES`]; `Ok(None)` at the end.
fn read_bounded(r: &mut impl BufRead) -> std::io::Result<Option<Result<String, String>>> {
    let mut line = Vec::new();
    let mut too_long = false;
    let mut any = false;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        any = true;
        let (chunk, end) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE_BYTES {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = end.unwrap_or(buf.len());
        r.consume(used);
        if end.is_some() {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if too_long {
        return Ok(Some(Err(format!(
            "a line longer than {MAX_LINE_BYTES} bytes"
        ))));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(
        String::from_utf8(line).map_err(|_| "a line that is not UTF-8".to_owned()),
    ))
}

fn spawn_reader(stdout: impl Read + Send + 'static) -> Receiver<Incoming> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let item = match read_bounded(&mut r) {
                Ok(None) | Err(_) => return,
                Ok(Some(Err(v))) => Incoming::Violation(v),
                Ok(Some(Ok(line))) if line.trim().is_empty() => continue,
                Ok(Some(Ok(line))) => match parse_message(&line) {
                    Ok(m) => Incoming::Message(m),
                    Err(v) => Incoming::Violation(v),
                },
            };
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    rx
}

fn spawn_stderr(stderr: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let k = kept.clone();
    std::thread::spawn(move || {
        let mut r = stderr;
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                return;
            }
            let mut kept = k.lock().unwrap_or_else(|e| e.into_inner());
            let room = STDERR_KEPT.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
    });
    kept
}

fn send(stdin: &mut ChildStdin, v: &Value) -> std::io::Result<()> {
    let mut line = v.to_string();
    line.push('\n');
    stdin.write_all(line.as_bytes())?;
    stdin.flush()
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The runner's time limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// For the handshake.
    pub handshake: Duration,
    /// For each result.
    pub case: Duration,
    /// For the exit after `bye`.
    pub grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            handshake: HANDSHAKE_TIMEOUT,
            case: CASE_TIMEOUT,
            grace: GRACE,
        }
    }
}

/// Runs the adapter `argv` over `scenarios` (those of `profiles`) with the default
/// [`Timeouts`]. `Err` when the adapter cannot be started or does not complete its
/// handshake (then no case ran).
pub fn run_adapter(
    argv: &[String],
    scenarios: &[Scenario],
    profiles: &[String],
) -> Result<Run, String> {
    run_adapter_with(argv, scenarios, profiles, Timeouts::default())
}

/// [`run_adapter`] with other time limits.
pub fn run_adapter_with(
    argv: &[String],
    scenarios: &[Scenario],
    profiles: &[String],
    limits: Timeouts,
) -> Result<Run, String> {
    let (program, args) = argv.split_first().ok_or("the adapter argv is empty")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {program}: {e}"))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        kill(&mut child);
        return Err("the adapter's pipes are missing".into());
    };
    let rx = spawn_reader(stdout);
    let kept = spawn_stderr(stderr);
    let stderr_text = |kept: &Arc<Mutex<Vec<u8>>>| {
        String::from_utf8_lossy(&kept.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    };
    let mut violations = Vec::new();
    if let Err(e) = send(&mut stdin, &json!({"type": "hello"})) {
        kill(&mut child);
        return Err(format!("sending hello: {e}"));
    }
    let handshake = match rx.recv_timeout(limits.handshake) {
        Ok(Incoming::Message(Message::Handshake(h))) => h,
        Ok(Incoming::Message(Message::Result { id, .. })) => {
            kill(&mut child);
            return Err(format!("a result ({id:?}) before the handshake"));
        }
        Ok(Incoming::Violation(v)) => {
            kill(&mut child);
            return Err(format!("a bad handshake line: {v}"));
        }
        Err(RecvTimeoutError::Timeout) => {
            kill(&mut child);
            return Err(format!("no handshake within {:?}", limits.handshake));
        }
        Err(RecvTimeoutError::Disconnected) => {
            kill(&mut child);
            return Err(format!(
                "the adapter ended before its handshake; stderr: {}",
                stderr_text(&kept).trim()
            ));
        }
    };
    if handshake.protocol_version != PROTOCOL_VERSION {
        kill(&mut child);
        return Err(format!(
            "the adapter speaks adapter-v{}, not v{PROTOCOL_VERSION}",
            handshake.protocol_version
        ));
    }
    let mut cases = Vec::new();
    let mut dead: Option<String> = None;
    for sc in scenarios.iter().filter(|s| profiles.contains(&s.profile)) {
        let mut case = CaseResult {
            id: sc.id.clone(),
            profile: sc.profile.clone(),
            role: sc.role,
            required: sc.required,
            applicable: sc.role == handshake.role,
            status: Status::NotApplicable,
            detail: String::new(),
            duration_ms: 0,
            evidence: BTreeMap::new(),
        };
        if !case.applicable {
            case.detail = format!(
                "the adapter's role {} does not own a {} case",
                handshake.role, sc.role
            );
            cases.push(case);
            continue;
        }
        if let Some(why) = &dead {
            case.status = Status::Error;
            case.detail = why.clone();
            cases.push(case);
            continue;
        }
        let mut run = json!({"type": "run", "id": sc.id, "scenario": sc.id});
        if !sc.params.is_empty() {
            run["params"] = json!(sc.params);
        }
        let started = Instant::now();
        if let Err(e) = send(&mut stdin, &run) {
            dead = Some(format!("the adapter stopped reading: {e}"));
            case.status = Status::Error;
            case.detail = format!("sending the run: {e}");
            cases.push(case);
            continue;
        }
        let answer = rx.recv_timeout(limits.case);
        case.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match answer {
            Ok(Incoming::Message(Message::Result {
                id,
                status,
                detail,
                evidence,
            })) if id == sc.id => {
                case.status = status;
                case.detail = detail;
                case.evidence = evidence;
            }
            Ok(Incoming::Message(Message::Result { id, .. })) => {
                let v = format!("a result for {id:?} where {:?} was asked", sc.id);
                case.status = Status::Error;
                case.detail = v.clone();
                violations.push(v);
            }
            Ok(Incoming::Message(Message::Handshake(_))) => {
                let v = format!("a second handshake instead of the result of {}", sc.id);
                case.status = Status::Error;
                case.detail = v.clone();
                violations.push(v);
            }
            Ok(Incoming::Violation(v)) => {
                case.status = Status::Error;
                case.detail = format!("protocol violation: {v}");
                violations.push(format!("{}: {v}", sc.id));
            }
            Err(RecvTimeoutError::Timeout) => {
                case.status = Status::Error;
                case.detail = format!("no result within {:?}", limits.case);
                dead = Some(format!("the adapter was stopped after {} timed out", sc.id));
                kill(&mut child);
            }
            Err(RecvTimeoutError::Disconnected) => {
                case.status = Status::Error;
                case.detail = "the adapter exited".into();
                dead = Some(format!("the adapter exited during {}", sc.id));
            }
        }
        cases.push(case);
    }
    let _ = send(&mut stdin, &json!({"type": "bye"}));
    drop(stdin);
    let end = Instant::now() + limits.grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                violations.push(format!(
                    "the adapter did not exit within {:?} of bye",
                    limits.grace
                ));
                kill(&mut child);
                break;
            }
        }
    }
    // Anything still coming: more messages than runs.
    while let Ok(extra) = rx.recv_timeout(Duration::from_millis(200)) {
        violations.push(match extra {
            Incoming::Message(Message::Result { id, .. }) => format!("an extra result for {id:?}"),
            Incoming::Message(Message::Handshake(_)) => "an extra handshake".into(),
            Incoming::Violation(v) => v,
        });
    }
    Ok(Run {
        handshake,
        cases,
        violations,
        stderr: stderr_text(&kept),
    })
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
