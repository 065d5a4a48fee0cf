//! The wire of adapter-v1 as the runner reads it: strict JSON (no key twice, nothing
//! after the object), the adapter's two messages checked against the rules of
//! `adapter-message.schema.json`, and lines read with a bound.

use super::{MAX_LINE_BYTES, Role, Status};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::io::BufRead;

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

pub(super) fn string_map(v: &Value, what: &str) -> Result<BTreeMap<String, String>, String> {
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

/// Reads one line of at most [`MAX_LINE_BYTES`]; `Ok(None)` at the end.
pub(super) fn read_bounded(
    r: &mut impl BufRead,
) -> std::io::Result<Option<Result<String, String>>> {
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
