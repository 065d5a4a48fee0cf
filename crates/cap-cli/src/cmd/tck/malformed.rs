//! `malformed/*`: bytes that break one wire rule, built from a well-formed JobRequest
//! packet ([`build`]), are published where the real worker takes its jobs. The worker
//! must drop them (its packet layer rejects them with the expected code and alerts)
//! without running the handler; a well-formed job sent afterwards proves it was
//! listening all along.

use super::outcome::{CaseError, Outcome, Params, Verdict, code_name, joined};
use super::worker_bed::{Bed, TOPIC, WAIT, status_name};
use bytes::Bytes;
use cap_proto::packet::{self, DEFAULT_MAX_PACKET_BYTES};
use cap_proto::v1::{self, bus_packet::Payload};
use cap_proto::validate::{MAX_ENTRIES, MAX_ID_LEN};
use cap_proto::{ErrorCode, PROTOCOL_VERSION};
use prost::Message;

/// One way to break a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformation {
    /// The last byte cut off (inside the payload).
    Truncated,
    /// Larger than the packet size bound.
    OverSize,
    /// `protocol_version` written as a two-byte varint.
    NonMinimalVarint,
    /// A second payload member after the JobRequest.
    DuplicateOneof,
    /// No payload.
    EmptyEnvelope,
    /// `protocol_version` one past the supported version.
    UnsupportedVersion,
    /// A payload field number this version does not know.
    UnknownPayload,
    /// A string field one byte over its bound.
    OverBoundString,
    /// A map field one entry over its bound.
    OverBoundMap,
    /// A repeated field one entry over its bound.
    OverBoundRepeated,
}

impl Malformation {
    /// The malformation a case asks for: its `bound` parameter, else its name.
    pub fn of(case: &str, params: Params<'_>) -> Option<Self> {
        match params.get("bound") {
            Some("size") => return Some(Malformation::OverSize),
            Some("string") => return Some(Malformation::OverBoundString),
            Some("map") => return Some(Malformation::OverBoundMap),
            Some("repeated") => return Some(Malformation::OverBoundRepeated),
            Some(_) => return None,
            None => {}
        }
        match case.rsplit('/').next()? {
            "truncated-wire" => Some(Malformation::Truncated),
            "overlong-wire" => Some(Malformation::OverSize),
            "non-minimal-encoding" => Some(Malformation::NonMinimalVarint),
            "duplicate-oneof" => Some(Malformation::DuplicateOneof),
            "empty-envelope" => Some(Malformation::EmptyEnvelope),
            "unsupported-protocol-version" => Some(Malformation::UnsupportedVersion),
            "unknown-payload" => Some(Malformation::UnknownPayload),
            _ => None,
        }
    }
}

/// Appends a varint.
fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The malformed bytes: `valid` (a JobRequest packet) broken in one way.
pub fn build(kind: Malformation, valid: &v1::BusPacket) -> Vec<u8> {
    let mut p = valid.clone();
    match kind {
        Malformation::Truncated => {
            let mut b = packet::encode(&p);
            b.pop();
            b
        }
        Malformation::OverSize => {
            if let Some(Payload::JobRequest(r)) = &mut p.payload {
                r.labels
                    .insert("pad".into(), "x".repeat(DEFAULT_MAX_PACKET_BYTES + 1));
            }
            packet::encode(&p)
        }
        Malformation::NonMinimalVarint => {
            p.protocol_version = 0;
            let mut b = packet::encode(&p);
            // Field 4 (varint) = 1, as 0x81 0x00 instead of 0x01.
            b.extend_from_slice(&[0x20, 0x81, 0x00]);
            b
        }
        Malformation::DuplicateOneof => {
            let mut b = packet::encode(&p);
            let cancel = v1::JobCancel {
                job_id: "tck-malformed".into(),
                reason: "second payload".into(),
                ..Default::default()
            }
            .encode_to_vec();
            varint(&mut b, (16 << 3) | 2);
            varint(&mut b, cancel.len() as u64);
            b.extend_from_slice(&cancel);
            b
        }
        Malformation::EmptyEnvelope => {
            p.payload = None;
            packet::encode(&p)
        }
        Malformation::UnsupportedVersion => {
            p.protocol_version = PROTOCOL_VERSION + 1;
            packet::encode(&p)
        }
        Malformation::UnknownPayload => {
            p.payload = None;
            let mut b = packet::encode(&p);
            varint(&mut b, (99 << 3) | 2);
            b.extend_from_slice(&[1, 0]);
            b
        }
        Malformation::OverBoundString => {
            if let Some(Payload::JobRequest(r)) = &mut p.payload {
                r.adapter_id = "a".repeat(MAX_ID_LEN + 1);
            }
            packet::encode(&p)
        }
        Malformation::OverBoundMap => {
            if let Some(Payload::JobRequest(r)) = &mut p.payload {
                r.labels = (0..=MAX_ENTRIES)
                    .map(|i| (format!("k{i}"), "v".into()))
                    .collect();
            }
            packet::encode(&p)
        }
        Malformation::OverBoundRepeated => {
            if let Some(Payload::JobRequest(r)) = &mut p.payload {
                r.meta.get_or_insert_with(Default::default).requires =
                    (0..=MAX_ENTRIES).map(|i| format!("cap-{i}")).collect();
            }
            packet::encode(&p)
        }
    }
}

/// A worker-owned malformed-input case.
pub async fn worker(case: &str, params: Params<'_>) -> Result<Outcome, CaseError> {
    if params.expect() != Some("drop") {
        return Err(CaseError::param("malformed cases expect `drop`"));
    }
    let kind = Malformation::of(case, params)
        .ok_or_else(|| CaseError::param(format!("no malformation is named by {case}")))?;
    let expected = params.err()?;
    // No bus limit: the worker's own bound must be what refuses an oversize packet.
    let bed = Bed::start(None).await?;
    let out = drop_case(&bed, kind, expected).await;
    bed.stop().await;
    out
}

async fn drop_case(
    bed: &Bed,
    kind: Malformation,
    expected: Option<ErrorCode>,
) -> Result<Outcome, CaseError> {
    let job = "tck-malformed";
    let valid = bed.request(job, None).await?;
    let valid = packet::decode(&valid, DEFAULT_MAX_PACKET_BYTES)
        .map_err(|e| CaseError::harness(format!("our own request does not decode: {e}")))?;
    let bytes = build(kind, &valid);
    let lenient = match packet::decode_lenient(&bytes, usize::MAX) {
        Ok(p) => format!("ok ({})", p.kind().map(|k| k.name()).unwrap_or("-")),
        Err(e) => format!("error ({e})"),
    };
    bed.deliver_on(TOPIC, Bytes::from(bytes.clone())).await?;
    let rejected = bed
        .wait_for(WAIT, |b| b.stats().rejected_total() >= 1)
        .await;
    bed.settle().await;
    let stats = bed.stats();
    let invocations_before_control = bed.probe.invocations();
    let answers: Vec<String> = bed
        .results(job)
        .iter()
        .map(|(_, r)| {
            format!(
                "{}:{}",
                status_name(r.status),
                ErrorCode::of_result(r).as_i32()
            )
        })
        .collect();
    // The control: a well-formed job right after.
    let control = "tck-control";
    bed.deliver_on(TOPIC, bed.request(control, None).await?)
        .await?;
    let served = bed.wait_for(WAIT, |b| !b.results(control).is_empty()).await;
    let control_states = bed.result_states(control);
    let alerts = bed.alert_codes();

    let mut v = Verdict::new();
    v.observe("bytes", bytes.len())
        .observe("lenientDecode", lenient)
        .observe(
            "rejectedCodes",
            joined(
                stats
                    .rejected
                    .iter()
                    .map(|(c, n)| format!("{}x{n}", code_name(*c))),
            ),
        )
        .observe("alertCodes", joined(&alerts))
        .observe("answersToSender", joined(&answers))
        .observe("handlerInvocations", invocations_before_control)
        .observe("control", joined(&control_states));
    // The code the packet layer rejected it with (the one asserted by `err`, if any).
    let code = stats.rejected.keys().next().copied();
    v.check(rejected, format!("the packet is rejected within {WAIT:?}"))
        .check(stats.rejected_total() == 1, "rejected once");
    match expected {
        Some(want) => {
            v.check(
                code == Some(want),
                format!("rejected with {}", code_name(want)),
            );
        }
        None => {
            v.observe("assertedCode", "none (the case has no `err`)");
        }
    }
    v.check(
        code.is_some_and(|c| alerts.contains(&c.as_i32())),
        "an alert with the rejection's code",
    )
    .check(invocations_before_control == 0, "the handler is not run")
    .check(
        answers.iter().all(|a| a.starts_with("FAILED:")),
        "no outcome other than a FAILED answer for the dropped packet",
    )
    .check(
        served && control_states == ["SUCCEEDED"] && bed.probe.invocations() == 1,
        "the worker still runs a well-formed job afterwards",
    );
    let code = code.map(code_name).unwrap_or_else(|| "-".into());
    Ok(v.finish(&format!("dropped, rejected with {code}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_proto::Timestamp;

    fn valid() -> v1::BusPacket {
        v1::BusPacket::new(
            "trace-1",
            "tck-scheduler",
            Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            },
            v1::JobRequest {
                job_id: "j".into(),
                topic: "job.tck.echo".into(),
                context_ptr: "redis://ctx:j".into(),
                ..Default::default()
            },
        )
    }

    fn strict(b: &[u8]) -> Result<v1::BusPacket, cap_proto::Error> {
        packet::decode(b, DEFAULT_MAX_PACKET_BYTES)
    }

    #[test]
    fn each_malformation_breaks_exactly_its_rule() {
        let ok = valid();
        assert!(strict(&packet::encode(&ok)).is_ok());
        let open = |k| {
            let b = build(k, &ok);
            let code = match strict(&b) {
                Err(e) => e.code(),
                Ok(p) => cap_proto::validate::packet(&p)
                    .err()
                    .map(|v| v.code())
                    .unwrap_or(ErrorCode::UNSPECIFIED),
            };
            (b, code)
        };
        use Malformation as M;
        assert_eq!(open(M::Truncated).1, ErrorCode::PROTOCOL_MALFORMED_PACKET);
        let (b, code) = open(M::OverSize);
        assert!(b.len() > DEFAULT_MAX_PACKET_BYTES);
        assert_eq!(code, ErrorCode::PROTOCOL_MALFORMED_PACKET);
        // Only the strict decoder refuses these two: a plain parser reads them.
        for k in [M::NonMinimalVarint, M::DuplicateOneof] {
            let (b, code) = open(k);
            assert!(packet::decode_lenient(&b, usize::MAX).is_ok(), "{k:?}");
            assert_eq!(code, ErrorCode::PROTOCOL_MALFORMED_PACKET, "{k:?}");
        }
        let lenient = packet::decode_lenient(&build(M::NonMinimalVarint, &ok), usize::MAX).unwrap();
        assert_eq!(lenient.protocol_version, 1);
        assert_eq!(
            open(M::EmptyEnvelope).1,
            ErrorCode::PROTOCOL_MALFORMED_PACKET
        );
        assert_eq!(
            open(M::UnsupportedVersion).1,
            ErrorCode::PROTOCOL_VERSION_MISMATCH
        );
        assert_eq!(
            open(M::UnknownPayload).1,
            ErrorCode::PROTOCOL_UNKNOWN_PAYLOAD
        );
        for k in [M::OverBoundString, M::OverBoundMap, M::OverBoundRepeated] {
            let (b, code) = open(k);
            assert!(strict(&b).is_ok(), "{k:?} decodes; validation refuses it");
            assert_eq!(code, ErrorCode::PROTOCOL_MALFORMED_PACKET, "{k:?}");
        }
    }

    #[test]
    fn cases_name_their_malformation() {
        let none = std::collections::BTreeMap::new();
        let bound = |b: &str| [("bound".to_string(), b.to_string())].into_iter().collect();
        assert_eq!(
            Malformation::of("malformed/duplicate-oneof", Params(&none)),
            Some(Malformation::DuplicateOneof)
        );
        let repeated = bound("repeated");
        assert_eq!(
            Malformation::of("malformed/oversize-repeated", Params(&repeated)),
            Some(Malformation::OverBoundRepeated)
        );
        let odd = bound("odd");
        assert_eq!(Malformation::of("malformed/x", Params(&odd)), None);
        assert_eq!(Malformation::of("malformed/x", Params(&none)), None);
    }
}
