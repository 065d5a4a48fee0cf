//! The adapter-v1 wire of the CAP conformance kit: JSON Lines on stdin (runner →
//! adapter: `hello`, `run`, `bye`) and stdout (adapter → runner: `handshake`, `result`).
//!
//! Parsing is strict: one JSON object per line, at most [`MAX_LINE_BYTES`], blank lines
//! ignored; a field the protocol does not define, a key given twice, a value of the wrong
//! type or a missing required field is a [`Violation`]. What the adapter writes is
//! bounded the same way ([`encode_result`] shortens detail and evidence rather than emit
//! a line the runner must refuse).

use serde::Serialize;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;

/// The adapter-v1 protocol version.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest line accepted or written, newline excluded.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Longest detail text written (longer text is cut, marked with `…`).
pub const MAX_DETAIL_BYTES: usize = 8 * 1024;

/// Longest evidence value written.
pub const MAX_EVIDENCE_VALUE_BYTES: usize = 4 * 1024;

/// A runner → adapter message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// The opening request for the handshake.
    Hello,
    /// Run one case.
    Run(Run),
    /// Shut down.
    Bye,
}

/// One `run` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The id to echo in the result.
    pub id: String,
    /// The scenario (case) id.
    pub scenario: String,
    /// The case's bounded string parameters.
    pub params: BTreeMap<String, String>,
}

/// What was wrong with a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// Longer than [`MAX_LINE_BYTES`].
    LineTooLong,
    /// Not UTF-8.
    NotUtf8,
    /// Not one JSON object (or trailing data after it).
    NotJson,
    /// A key given twice in one object.
    DuplicateKey,
    /// A field adapter-v1 does not define for this direction.
    UnknownField,
    /// A field with a value of the wrong type.
    WrongType,
    /// A required field is missing.
    MissingField,
    /// A `type` that is not a runner → adapter message.
    UnknownType,
}

impl ViolationKind {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::LineTooLong => "line too long",
            ViolationKind::NotUtf8 => "not UTF-8",
            ViolationKind::NotJson => "not a JSON object",
            ViolationKind::DuplicateKey => "duplicate key",
            ViolationKind::UnknownField => "unknown field",
            ViolationKind::WrongType => "wrong type",
            ViolationKind::MissingField => "missing field",
            ViolationKind::UnknownType => "unknown message type",
        }
    }
}

/// A line that breaks adapter-v1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// What kind of violation.
    pub kind: ViolationKind,
    /// Details (field names are ours or the sender's, shortened).
    pub message: String,
    /// The `id` of a `run` whose id could still be read, so it can be answered.
    pub run_id: Option<String>,
}

impl Violation {
    fn new(kind: ViolationKind, message: impl Into<String>) -> Self {
        Violation {
            kind,
            message: message.into(),
            run_id: None,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for Violation {}

/// Reads the next line (without its `\n`, and without a trailing `\r`), reading at
/// most [`MAX_LINE_BYTES`] + 1 bytes of it into memory. `Ok(None)` at end of input; a
/// longer line is consumed to its end and reported as [`ViolationKind::LineTooLong`].
pub fn read_line(input: &mut impl BufRead) -> std::io::Result<Option<Result<Vec<u8>, Violation>>> {
    let mut line = Vec::new();
    let mut too_long = false;
    let mut any = false;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        any = true;
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
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
        let used = done.unwrap_or(buf.len());
        input.consume(used);
        if done.is_some() {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if too_long {
        return Ok(Some(Err(Violation::new(
            ViolationKind::LineTooLong,
            format!("a line is longer than {MAX_LINE_BYTES} bytes"),
        ))));
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(Ok(line)))
}

/// Parses one line from the runner. `Ok(None)` for a blank line.
pub fn parse_command(line: &[u8]) -> Result<Option<Command>, Violation> {
    if line.len() > MAX_LINE_BYTES {
        return Err(Violation::new(
            ViolationKind::LineTooLong,
            format!("{} bytes", line.len()),
        ));
    }
    let text = std::str::from_utf8(line)
        .map_err(|e| Violation::new(ViolationKind::NotUtf8, e.to_string()))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let value = parse_strict(text)?;
    let Value::Object(obj) = value else {
        return Err(Violation::new(ViolationKind::NotJson, "not an object"));
    };
    // The id of a run, when readable, so that even a bad run gets its one result.
    let run_id = match (obj.get("type"), obj.get("id")) {
        (Some(Value::String(t)), Some(Value::String(id))) if t == "run" => Some(id.clone()),
        _ => None,
    };
    command_of(obj).map(Some).map_err(|mut v| {
        v.run_id = run_id;
        v
    })
}

fn command_of(obj: Map<String, Value>) -> Result<Command, Violation> {
    const FIELDS: [&str; 4] = ["type", "id", "scenario", "params"];
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(Violation::new(
            ViolationKind::UnknownField,
            format!("`{}`", shorten(k, 64)),
        ));
    }
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(Violation::new(ViolationKind::WrongType, "`type`")),
        None => return Err(Violation::new(ViolationKind::MissingField, "`type`")),
    };
    let string = |name: &str| -> Result<Option<String>, Violation> {
        match obj.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Violation::new(
                ViolationKind::WrongType,
                format!("`{name}` must be a string"),
            )),
        }
    };
    let id = string("id")?;
    let scenario = string("scenario")?;
    let params = match obj.get("params") {
        None => BTreeMap::new(),
        Some(Value::Object(p)) => {
            let mut out = BTreeMap::new();
            for (k, v) in p {
                let Value::String(s) = v else {
                    return Err(Violation::new(
                        ViolationKind::WrongType,
                        format!("params.`{}` must be a string", shorten(k, 64)),
                    ));
                };
                out.insert(k.clone(), s.clone());
            }
            out
        }
        Some(_) => {
            return Err(Violation::new(
                ViolationKind::WrongType,
                "`params` must be an object of strings",
            ));
        }
    };
    match ty {
        "hello" => Ok(Command::Hello),
        "bye" => Ok(Command::Bye),
        "run" => {
            let id = id.ok_or_else(|| Violation::new(ViolationKind::MissingField, "`id`"))?;
            let scenario = scenario
                .ok_or_else(|| Violation::new(ViolationKind::MissingField, "`scenario`"))?;
            Ok(Command::Run(Run {
                id,
                scenario,
                params,
            }))
        }
        other => Err(Violation::new(
            ViolationKind::UnknownType,
            format!("`{}`", shorten(other, 64)),
        )),
    }
}

/// Parses exactly one JSON value, rejecting duplicate keys at any depth and trailing data.
fn parse_strict(text: &str) -> Result<Value, Violation> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict.deserialize(&mut de).map_err(|e| {
        let kind = if e.to_string().starts_with("duplicate key") {
            ViolationKind::DuplicateKey
        } else {
            ViolationKind::NotJson
        };
        Violation::new(kind, e.to_string())
    })?;
    de.end()
        .map_err(|e| Violation::new(ViolationKind::NotJson, format!("trailing data: {e}")))?;
    Ok(value)
}

/// A `serde_json::Value` deserializer that refuses duplicate object keys.
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
                return Err(de::Error::custom(format!(
                    "duplicate key `{}`",
                    shorten(&key, 64)
                )));
            }
            let value = map.next_value_seed(Strict)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// The role an adapter plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Worker-owned behaviour.
    Worker,
    /// Scheduler-owned behaviour.
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
}

/// The outcome of one case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The behaviour was run and is conformant.
    Pass,
    /// The behaviour was run and is not conformant.
    Fail,
    /// The case could not be run (a harness fault, a bad parameter).
    Error,
    /// The adapter has no driver for the case.
    Unsupported,
    /// The case belongs to the other role.
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
}

/// The adapter's capability declaration.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Handshake {
    #[serde(rename = "type")]
    kind: &'static str,
    protocol_version: u32,
    role: &'static str,
    profiles: Vec<String>,
    features: Vec<String>,
    sdk: String,
    transport: String,
}

impl Handshake {
    /// A handshake for `role`.
    pub fn new(
        role: Role,
        profiles: Vec<String>,
        features: Vec<String>,
        sdk: impl Into<String>,
        transport: impl Into<String>,
    ) -> Self {
        Handshake {
            kind: "handshake",
            protocol_version: PROTOCOL_VERSION,
            role: role.as_str(),
            profiles,
            features,
            sdk: sdk.into(),
            transport: transport.into(),
        }
    }
}

/// One line: the handshake.
pub fn encode_handshake(hs: &Handshake) -> Result<String, serde_json::Error> {
    serde_json::to_string(hs)
}

#[derive(Serialize)]
struct ResultLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    detail: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    evidence: BTreeMap<String, String>,
}

/// One line: the result of run `id`, with detail and evidence shortened to fit the
/// bounds (and evidence dropped, with a note in the detail, if the line would still be
/// too long).
pub fn encode_result(
    id: &str,
    status: Status,
    detail: &str,
    evidence: &BTreeMap<String, String>,
) -> Result<String, serde_json::Error> {
    let detail = shorten(detail, MAX_DETAIL_BYTES);
    let evidence: BTreeMap<String, String> = evidence
        .iter()
        .map(|(k, v)| (shorten(k, 256), shorten(v, MAX_EVIDENCE_VALUE_BYTES)))
        .collect();
    let line = serde_json::to_string(&ResultLine {
        kind: "result",
        id,
        status: status.as_str(),
        detail: &detail,
        evidence,
    })?;
    if line.len() <= MAX_LINE_BYTES {
        return Ok(line);
    }
    let detail = format!("{detail} (evidence dropped: over the line limit)");
    serde_json::to_string(&ResultLine {
        kind: "result",
        id: &shorten(id, MAX_DETAIL_BYTES),
        status: status.as_str(),
        detail: &detail,
        evidence: BTreeMap::new(),
    })
}

/// `s` cut to at most `max` bytes at a character boundary, with `…` when cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(line: &str) -> ViolationKind {
        parse_command(line.as_bytes()).unwrap_err().kind
    }

    #[test]
    fn the_three_commands() {
        assert_eq!(
            parse_command(br#"{"type":"hello"}"#),
            Ok(Some(Command::Hello))
        );
        assert_eq!(parse_command(br#"{"type":"bye"}"#), Ok(Some(Command::Bye)));
        let run = parse_command(
            br#"{"type":"run","id":"a/b","scenario":"a/b","params":{"from":"RUNNING"}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            run,
            Command::Run(Run {
                id: "a/b".into(),
                scenario: "a/b".into(),
                params: [("from".to_string(), "RUNNING".to_string())].into(),
            })
        );
        // params may be absent (the runner omits an empty map).
        assert!(matches!(
            parse_command(br#"{"type":"run","id":"x","scenario":"x"}"#),
            Ok(Some(Command::Run(r))) if r.params.is_empty()
        ));
    }

    #[test]
    fn blank_lines_are_ignored() {
        assert_eq!(parse_command(b""), Ok(None));
        assert_eq!(parse_command(b"  \t "), Ok(None));
    }

    #[test]
    fn unknown_fields_and_duplicates_are_violations() {
        assert_eq!(
            kind(r#"{"type":"hello","extra":1}"#),
            ViolationKind::UnknownField
        );
        // A field of the other direction is unknown here too.
        assert_eq!(
            kind(r#"{"type":"run","id":"x","scenario":"x","status":"PASS"}"#),
            ViolationKind::UnknownField
        );
        assert_eq!(
            kind(r#"{"type":"hello","type":"hello"}"#),
            ViolationKind::DuplicateKey
        );
        assert_eq!(
            kind(r#"{"type":"run","id":"x","scenario":"x","params":{"a":"1","a":"2"}}"#),
            ViolationKind::DuplicateKey
        );
    }

    #[test]
    fn types_and_required_fields() {
        assert_eq!(
            kind(r#"{"type":"run","scenario":"x"}"#),
            ViolationKind::MissingField
        );
        assert_eq!(
            kind(r#"{"type":"run","id":"x"}"#),
            ViolationKind::MissingField
        );
        assert_eq!(kind(r#"{"id":"x"}"#), ViolationKind::MissingField);
        assert_eq!(kind(r#"{"type":7}"#), ViolationKind::WrongType);
        assert_eq!(
            kind(r#"{"type":"run","id":"x","scenario":"x","params":{"n":1}}"#),
            ViolationKind::WrongType
        );
        assert_eq!(
            kind(r#"{"type":"result","id":"x"}"#),
            ViolationKind::UnknownType
        );
        assert_eq!(kind(r#"{"type":"handshake"}"#), ViolationKind::UnknownType);
        assert_eq!(kind(r#"["hello"]"#), ViolationKind::NotJson);
        assert_eq!(
            kind(r#"{"type":"hello"} {"type":"bye"}"#),
            ViolationKind::NotJson
        );
        assert_eq!(kind("{\"type\":"), ViolationKind::NotJson);
        assert_eq!(
            parse_command(&[0xff, 0xfe]).unwrap_err().kind,
            ViolationKind::NotUtf8
        );
    }

    #[test]
    fn a_bad_run_keeps_its_id_so_it_gets_one_answer() {
        let v =
            parse_command(br#"{"type":"run","id":"case-1","scenario":"c","x":true}"#).unwrap_err();
        assert_eq!(v.kind, ViolationKind::UnknownField);
        assert_eq!(v.run_id.as_deref(), Some("case-1"));
        let v = parse_command(br#"{"type":"hello","x":true}"#).unwrap_err();
        assert_eq!(v.run_id, None);
    }

    #[test]
    fn lines_are_bounded() {
        let mut big = vec![b'x'; MAX_LINE_BYTES + 10];
        big.push(b'\n');
        big.extend_from_slice(b"{\"type\":\"bye\"}\r\n");
        let mut input = std::io::Cursor::new(big);
        let first = read_line(&mut input).unwrap().unwrap();
        assert_eq!(first.unwrap_err().kind, ViolationKind::LineTooLong);
        // The reader is past the long line: the next one is intact, \r removed.
        let second = read_line(&mut input).unwrap().unwrap().unwrap();
        assert_eq!(second, b"{\"type\":\"bye\"}");
        assert!(read_line(&mut input).unwrap().is_none());
        // Exactly at the limit is fine; a last line without \n too.
        let mut at = vec![b' '; MAX_LINE_BYTES];
        at.push(b'\n');
        at.extend_from_slice(b"tail");
        let mut input = std::io::Cursor::new(at);
        assert_eq!(
            read_line(&mut input).unwrap().unwrap().unwrap().len(),
            MAX_LINE_BYTES
        );
        assert_eq!(read_line(&mut input).unwrap().unwrap().unwrap(), b"tail");
        assert_eq!(
            parse_command(&vec![b' '; MAX_LINE_BYTES + 1])
                .unwrap_err()
                .kind,
            ViolationKind::LineTooLong
        );
    }

    #[test]
    fn output_lines_are_well_formed_and_bounded() {
        let hs = Handshake::new(
            Role::ControlPlane,
            vec!["core".into()],
            vec!["safety".into()],
            "cap-rs/0",
            "memory",
        );
        let v: Value = serde_json::from_str(&encode_handshake(&hs).unwrap()).unwrap();
        assert_eq!(v["type"], "handshake");
        assert_eq!(v["protocolVersion"], 1);
        assert_eq!(v["role"], "control-plane");
        assert_eq!(v["profiles"][0], "core");
        assert_eq!(v["sdk"], "cap-rs/0");
        assert_eq!(v["transport"], "memory");

        let line = encode_result("id-1", Status::Pass, "", &BTreeMap::new()).unwrap();
        assert_eq!(line, r#"{"type":"result","id":"id-1","status":"PASS"}"#);
        let na = encode_result("x", Status::NotApplicable, "other role", &BTreeMap::new());
        assert!(na.unwrap().contains(r#""status":"N/A""#));

        let big = |n: usize| -> BTreeMap<String, String> {
            (0..n)
                .map(|i| (format!("k{i}"), "é".repeat(10_000)))
                .collect()
        };
        // Long values are cut.
        let line = encode_result("id-2", Status::Fail, &"d".repeat(100_000), &big(10)).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["status"], "FAIL");
        assert!(v["detail"].as_str().unwrap().len() <= MAX_DETAIL_BYTES);
        let k1 = v["evidence"]["k1"].as_str().unwrap();
        assert!(k1.ends_with('…') && k1.len() <= MAX_EVIDENCE_VALUE_BYTES);
        // Too much evidence for one line: dropped, and the detail says so.
        let line = encode_result("id-3", Status::Fail, "d", &big(400)).unwrap();
        assert!(line.len() <= MAX_LINE_BYTES);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(v.get("evidence").is_none());
        assert!(v["detail"].as_str().unwrap().contains("evidence dropped"));
    }

    #[test]
    fn shorten_respects_char_boundaries() {
        assert_eq!(shorten("abc", 3), "abc");
        let s = shorten("ééééé", 6);
        assert!(s.len() <= 6 && s.ends_with('…'), "{s}");
    }
}
