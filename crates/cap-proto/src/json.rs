//! The canonical protobuf JSON mapping for every CAP message (feature `json`).
//!
//! lowerCamelCase field names, enum value names (unknown values as numbers), 64-bit
//! integers as strings, bytes as base64, `Timestamp` as RFC 3339, default values
//! omitted. Parsing accepts both lowerCamelCase and the original field names, enum
//! names or numbers, and rejects unknown fields.
//!
//! ```
//! use cap_proto::{json, v1};
//! let r = v1::JobResult { job_id: "j1".into(), status: 5, execution_ms: 12, ..Default::default() };
//! let text = json::to_string(&r).unwrap();
//! assert_eq!(text, r#"{"jobId":"j1","status":"JOB_STATUS_SUCCEEDED","executionMs":"12"}"#);
//! let back: v1::JobResult = json::from_str(&text).unwrap();
//! assert_eq!(back, r);
//! ```

use crate::descriptor::descriptor_pool;
use crate::{CapMessage, Error};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage, SerializeOptions};

fn descriptor(full_name: &str) -> Result<MessageDescriptor, Error> {
    descriptor_pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| Error::Json(format!("unknown message type {full_name}")))
}

/// A message as a JSON value.
pub fn to_value<M: CapMessage>(msg: &M) -> Result<serde_json::Value, Error> {
    bytes_to_value(M::FULL_NAME, &msg.encode_to_vec())
}

/// A message as compact JSON text, fields in field-number order.
pub fn to_string<M: CapMessage>(msg: &M) -> Result<String, Error> {
    bytes_to_string(M::FULL_NAME, &msg.encode_to_vec(), false)
}

/// A message as indented JSON text, fields in field-number order.
pub fn to_string_pretty<M: CapMessage>(msg: &M) -> Result<String, Error> {
    bytes_to_string(M::FULL_NAME, &msg.encode_to_vec(), true)
}

/// Refuses what the proto3 JSON mapping cannot express (the reference peer's
/// `MessageToJson` fails on it too): a `Timestamp` outside years 1-9999 or with nanos
/// outside `0..10^9`, anywhere in the message.
fn check_representable(msg: &DynamicMessage) -> Result<(), Error> {
    if msg.descriptor().full_name() == "google.protobuf.Timestamp" {
        let ts = msg
            .transcode_to::<prost_types::Timestamp>()
            .map_err(|e| Error::Json(e.to_string()))?;
        if !crate::validate::TIMESTAMP_SECONDS.contains(&ts.seconds)
            || !(0..1_000_000_000).contains(&ts.nanos)
        {
            return Err(Error::Json(format!(
                "timestamp {}s {}ns has no JSON form",
                ts.seconds, ts.nanos
            )));
        }
        return Ok(());
    }
    fn value(v: &prost_reflect::Value) -> Result<(), Error> {
        match v {
            prost_reflect::Value::Message(m) => check_representable(m),
            prost_reflect::Value::List(items) => items.iter().try_for_each(value),
            prost_reflect::Value::Map(entries) => entries.values().try_for_each(value),
            _ => Ok(()),
        }
    }
    msg.fields().try_for_each(|(_, v)| value(v))
}

/// JSON text of the protobuf bytes of the message named `full_name`.
pub fn bytes_to_string(full_name: &str, bytes: &[u8], pretty: bool) -> Result<String, Error> {
    let dynamic = DynamicMessage::decode(descriptor(full_name)?, bytes)?;
    check_representable(&dynamic)?;
    let mut out = Vec::with_capacity(bytes.len() * 2);
    let opts = SerializeOptions::new();
    let result = if pretty {
        dynamic.serialize_with_options(&mut serde_json::Serializer::pretty(&mut out), &opts)
    } else {
        dynamic.serialize_with_options(&mut serde_json::Serializer::new(&mut out), &opts)
    };
    result.map_err(|e| Error::Json(e.to_string()))?;
    String::from_utf8(out).map_err(|e| Error::Json(e.to_string()))
}

/// The JSON value of the protobuf bytes of the message named `full_name`.
pub fn bytes_to_value(full_name: &str, bytes: &[u8]) -> Result<serde_json::Value, Error> {
    let dynamic = DynamicMessage::decode(descriptor(full_name)?, bytes)?;
    check_representable(&dynamic)?;
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .map_err(|e| Error::Json(e.to_string()))
}

/// Parses JSON text into a message.
pub fn from_str<M: CapMessage>(text: &str) -> Result<M, Error> {
    let bytes = str_to_bytes(M::FULL_NAME, text)?;
    Ok(M::decode(bytes.as_slice())?)
}

/// Parses a JSON value into a message.
pub fn from_value<M: CapMessage>(value: serde_json::Value) -> Result<M, Error> {
    let dynamic = DynamicMessage::deserialize(descriptor(M::FULL_NAME)?, value)
        .map_err(|e| Error::Json(e.to_string()))?;
    Ok(M::decode(dynamic.encode_to_vec().as_slice())?)
}

/// Parses JSON text for the message named `full_name` into its canonical protobuf bytes.
pub fn str_to_bytes(full_name: &str, text: &str) -> Result<Vec<u8>, Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let dynamic = DynamicMessage::deserialize(descriptor(full_name)?, &mut de)
        .map_err(|e| Error::Json(e.to_string()))?;
    de.end().map_err(|e| Error::Json(e.to_string()))?;
    Ok(crate::canonical::canonicalize_named(
        full_name,
        &dynamic.encode_to_vec(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;

    #[test]
    fn mapping_follows_the_proto3_json_rules() {
        let pkt = v1::BusPacket {
            trace_id: "t".into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5_000_000,
            }),
            protocol_version: 1,
            signature: bytes::Bytes::from_static(&[0xff, 0x00, 0x10]),
            payload: Some(v1::bus_packet::Payload::Handshake(v1::Handshake {
                role: 3,
                supported_versions: vec![1],
                capabilities: [("progress".to_string(), false)].into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let v = to_value(&pkt).unwrap();
        assert_eq!(v["traceId"], "t");
        assert_eq!(v["createdAt"], "2023-11-14T22:13:20.005Z");
        assert_eq!(v["protocolVersion"], 1);
        assert_eq!(v["signature"], "/wAQ");
        assert_eq!(v["handshake"]["role"], "COMPONENT_ROLE_WORKER");
        assert_eq!(v["handshake"]["capabilities"]["progress"], false);
        let back: v1::BusPacket = from_value(v).unwrap();
        assert_eq!(back, pkt);
    }

    #[test]
    fn accepts_proto_names_and_numbers_and_rejects_unknown_fields() {
        let r: v1::JobResult =
            from_str(r#"{"job_id":"j","status":6,"error_code_enum":"ERROR_CODE_JOB_TIMEOUT"}"#)
                .unwrap();
        assert_eq!(r.status, 6);
        assert_eq!(r.error_code_enum, 200);
        assert!(from_str::<v1::JobResult>(r#"{"nope":1}"#).is_err());
        assert!(from_str::<v1::JobResult>(r#"{"jobId":"j"} trailing"#).is_err());
        assert!(from_str::<v1::JobResult>(r#"{"executionMs":"12x"}"#).is_err());
    }

    #[test]
    fn unknown_enum_values_survive_as_numbers() {
        let r = v1::JobResult {
            error_code_enum: 4242,
            ..Default::default()
        };
        let v = to_value(&r).unwrap();
        assert_eq!(v["errorCodeEnum"], 4242);
        assert_eq!(from_value::<v1::JobResult>(v).unwrap(), r);
    }
}
