//! JSON Schema (draft 2020-12) for every CAP message, generated from the protobuf
//! descriptors so it describes exactly the JSON that [`crate::json`] produces.
//!
//! ```
//! let schema = cap_proto::schema::for_message("JobResult").unwrap();
//! assert_eq!(schema["$ref"], "#/$defs/cordum.agent.v1.JobResult");
//! let props = &schema["$defs"]["cordum.agent.v1.JobResult"]["properties"];
//! assert_eq!(props["executionMs"]["type"], serde_json::json!(["string", "integer"]));
//! ```

use crate::descriptor::descriptor_pool;
use crate::message::resolve_message_name;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

/// The schema of one message (short or full name), with every message and enum it
/// reaches under `$defs`. `None` for a name that is not a CAP message.
pub fn for_message(name: &str) -> Option<Value> {
    let full = resolve_message_name(name)?;
    let desc = descriptor_pool().get_message_by_name(full)?;
    let mut defs = Map::new();
    add_message(&desc, &mut defs);
    Some(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": full,
        "$ref": format!("#/$defs/{full}"),
        "$defs": defs,
    }))
}

/// One schema with every CAP message under `$defs`.
pub fn all() -> Value {
    let mut defs = Map::new();
    for name in crate::message::ALL_MESSAGES {
        if let Some(d) = descriptor_pool().get_message_by_name(name) {
            add_message(&d, &mut defs);
        }
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "CAP v1 messages",
        "$defs": defs,
    })
}

fn add_message(desc: &MessageDescriptor, defs: &mut Map<String, Value>) {
    let name = desc.full_name().to_owned();
    if defs.contains_key(&name) {
        return;
    }
    if name == "google.protobuf.Timestamp" {
        defs.insert(name, json!({"type": "string", "format": "date-time"}));
        return;
    }
    defs.insert(name.clone(), Value::Null);
    let mut props = Map::new();
    for f in desc.fields() {
        let schema = field_schema(&f, defs);
        props.insert(f.json_name().to_owned(), schema);
    }
    let mut obj = json!({
        "type": "object",
        "properties": props,
        "additionalProperties": false,
    });
    let oneofs: Vec<Value> = desc
        .oneofs()
        .map(|o| {
            let members: Vec<Value> = o
                .fields()
                .map(|f| json!({"required": [f.json_name()]}))
                .collect();
            json!({"not": {"anyOf": pairwise(&members)}})
        })
        .collect();
    if !oneofs.is_empty() {
        obj["allOf"] = Value::Array(oneofs);
    }
    defs.insert(name, obj);
}

/// `{"allOf": [a, b]}` for each pair: a oneof allows at most one member.
fn pairwise(members: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, a) in members.iter().enumerate() {
        for b in &members[i + 1..] {
            out.push(json!({"allOf": [a, b]}));
        }
    }
    out
}

fn field_schema(f: &FieldDescriptor, defs: &mut Map<String, Value>) -> Value {
    if f.is_map()
        && let Some(entry) = f.kind().as_message()
    {
        let value = kind_schema(&entry.map_entry_value_field().kind(), defs);
        return json!({"type": "object", "additionalProperties": value});
    }
    let single = kind_schema(&f.kind(), defs);
    if f.is_list() {
        json!({"type": "array", "items": single})
    } else {
        single
    }
}

fn kind_schema(kind: &Kind, defs: &mut Map<String, Value>) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({
            "oneOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]
        }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX})
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({"type": "integer", "minimum": 0, "maximum": u32::MAX})
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": ["string", "integer"], "pattern": "^-?[0-9]+$"})
        }
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Kind::Enum(e) => {
            let names: Vec<String> = e.values().map(|v| v.name().to_owned()).collect();
            json!({"anyOf": [{"type": "string", "enum": names}, {"type": "integer"}]})
        }
        Kind::Message(m) => {
            add_message(m, defs);
            json!({"$ref": format!("#/$defs/{}", m.full_name())})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_has_a_schema_with_json_names() {
        for name in crate::message::ALL_MESSAGES {
            let s = for_message(name).unwrap();
            assert!(s["$defs"][name]["properties"].is_object(), "{name}");
        }
        let s = for_message("buspacket").unwrap();
        let p = &s["$defs"]["cordum.agent.v1.BusPacket"]["properties"];
        assert_eq!(p["createdAt"]["$ref"], "#/$defs/google.protobuf.Timestamp");
        assert_eq!(p["signature"]["contentEncoding"], "base64");
        assert_eq!(
            s["$defs"]["google.protobuf.Timestamp"]["format"],
            "date-time"
        );
        let hs = &s["$defs"]["cordum.agent.v1.Handshake"]["properties"];
        assert_eq!(
            hs["capabilities"]["additionalProperties"]["type"],
            "boolean"
        );
        assert_eq!(hs["readyTopics"]["type"], "array");
        assert!(for_message("NoSuchMessage").is_none());
        assert!(all()["$defs"].as_object().unwrap().len() >= crate::message::ALL_MESSAGES.len());
    }
}
