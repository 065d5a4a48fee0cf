//! Opening received bytes, without IO: size-limited decode, the trust check against the
//! raw bytes, then protocol validation. Every failure is a [`Rejection`] that says what
//! to report, and whether the sender should also get a FAILED result (also for bytes
//! that do not decode, from what [`salvage`](super::salvage) reads at their front).

use cap_proto::packet::PayloadKind;
use cap_proto::v1::{BusPacket, bus_packet::Payload};
use cap_proto::{ErrorCode, validate};
use cap_sign::TrustPolicy;

/// Why a packet was rejected (no attacker-supplied text in here except the bounded,
/// sanitised ids in [`Rejection`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The bytes are over the size limit, do not decode, or carry no payload.
    Decode(&'static str),
    /// The packet carries a payload this version does not know (field number).
    UnknownPayload(u32),
    /// The trust policy refused the packet (missing, unknown-sender, mismatching,
    /// malformed, stale or replayed signature).
    Signature(&'static str),
    /// The packet decoded and passed the trust check but breaks protocol rules; the
    /// field paths (ours, not the sender's text) that are wrong.
    Invalid(Vec<String>),
    /// A CAP-PRODUCTION receiver refused the packet: its exact-wire signature, metadata,
    /// authority, identity binding or replay admission failed (see
    /// [`production::failure_name`](super::production::failure_name) for the words
    /// reported; the error's own strings stay out of logs and alerts).
    Production(cap_sign::production::ProductionError),
    /// A CAP-PRODUCTION receiver got a legacy packet (no signature metadata) on a subject
    /// where it takes none.
    LegacyRefused,
}

impl RejectReason {
    /// A short description for logs and alerts.
    pub fn describe(&self) -> String {
        match self {
            RejectReason::Decode(what) => format!("undecodable packet ({what})"),
            RejectReason::UnknownPayload(f) => format!("unknown payload (field {f})"),
            RejectReason::Signature(what) => format!("signature rejected ({what})"),
            RejectReason::Production(e) => format!(
                "production admission failed ({})",
                super::production::failure_name(e)
            ),
            RejectReason::LegacyRefused => {
                "legacy packet refused by the production profile".to_owned()
            }
            RejectReason::Invalid(fields) => {
                let mut s = String::from("invalid packet: ");
                for (i, f) in fields.iter().take(8).enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    s.push_str(f);
                }
                if fields.len() > 8 {
                    s.push_str(&format!(" (+{} more)", fields.len() - 8));
                }
                s
            }
        }
    }
}

/// A packet that was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rejection {
    /// The CAP error code (100-104).
    pub code: ErrorCode,
    /// Why.
    pub reason: RejectReason,
    /// The packet's trace id, when it could be read (sanitised, at most 128 characters).
    pub trace_id: Option<String>,
    /// The packet's sender id, when it could be read (sanitised, at most 128 characters).
    pub sender_id: Option<String>,
    /// The payload kind, when the packet decoded.
    pub kind: Option<PayloadKind>,
    /// For a job request whose signature was acceptable and whose job id is usable:
    /// the job id and trace id to answer with a FAILED result.
    pub answer: Option<Answer>,
}

/// Where a FAILED result for a rejected job request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The request's job id (valid as an id).
    pub job_id: String,
    /// The request's trace id when valid, else empty (a fresh one is made).
    pub trace_id: String,
}

/// Longest id kept in a rejection (logs and alerts).
pub const MAX_REPORTED_ID: usize = 128;

/// `s` cut to [`MAX_REPORTED_ID`] characters with control characters replaced, so that a
/// hostile id cannot forge log lines.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .take(MAX_REPORTED_ID)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| sanitize(s))
}

fn signature_what(e: &cap_sign::Error) -> &'static str {
    use cap_sign::Error as E;
    match e {
        E::Missing { .. } => "missing",
        E::UnknownSender { .. } => "unknown sender",
        E::Mismatch { .. } => "mismatch",
        E::NotDer => "raw r||s, not DER",
        E::MalformedDer => "malformed DER",
        E::Decode(_) => "undecodable",
        E::Stale { .. } => "stale",
        E::Replayed => "replayed",
        E::ReplayCapacity => "replay guard full",
        E::UnknownFields => "unknown fields",
        _ => "other",
    }
}

/// Decodes `raw` (at most `limit` bytes) into a packet, with nothing checked beyond the
/// structure.
pub fn decode(raw: &[u8], limit: usize) -> Result<BusPacket, Box<Rejection>> {
    cap_proto::packet::decode(raw, limit).map_err(|e| {
        let reason = match &e {
            cap_proto::Error::UnknownPayload { field } => RejectReason::UnknownPayload(*field),
            cap_proto::Error::TooLarge { .. } => RejectReason::Decode("over the size limit"),
            cap_proto::Error::MissingPayload => RejectReason::Decode("no payload"),
            _ => RejectReason::Decode("malformed protobuf"),
        };
        Box::new(Rejection {
            code: e.code(),
            reason,
            trace_id: None,
            sender_id: None,
            kind: None,
            answer: None,
        })
    })
}

/// [`decode`], and when the bytes do not decode, what can still be read from their
/// front (see [`salvage`](super::salvage)): the ids for the report, and for a job
/// request from a sender `trust` accepts, the [`Answer`].
pub fn decode_with(
    raw: &[u8],
    limit: usize,
    trust: &TrustPolicy,
) -> Result<BusPacket, Box<Rejection>> {
    decode(raw, limit).map_err(|mut rejection| {
        super::salvage::salvage(raw, trust, &mut rejection);
        rejection
    })
}

/// A rejection of a decoded packet with `code` and `reason`, naming its (sanitised)
/// trace and sender ids and its payload kind; no answer.
pub fn rejection_of(packet: &BusPacket, code: ErrorCode, reason: RejectReason) -> Rejection {
    Rejection {
        code,
        reason,
        trace_id: non_empty(&packet.trace_id),
        sender_id: non_empty(&packet.sender_id),
        kind: packet.kind(),
        answer: None,
    }
}

/// Checks a decoded packet: the trust policy on the raw bytes, then validation (with the
/// rules that need the bytes, [`validate::received`]).
pub fn check(raw: &[u8], packet: &BusPacket, trust: &TrustPolicy) -> Result<(), Box<Rejection>> {
    let base = |code, reason| Box::new(rejection_of(packet, code, reason));
    if let Err(e) = trust.check(raw, packet) {
        let code = match e.code() {
            ErrorCode::UNSPECIFIED => ErrorCode::PROTOCOL_SIGNATURE_INVALID,
            c => c,
        };
        return Err(base(code, RejectReason::Signature(signature_what(&e))));
    }
    if let Err(v) = validate::received(raw, packet) {
        let fields: Vec<String> = v.iter().map(|x| x.field.clone()).collect();
        let mut rej = base(v.code(), RejectReason::Invalid(fields));
        rej.answer = answer_for(packet, &v);
        return Err(rej);
    }
    Ok(())
}

/// Decode and check in one step.
pub fn open(raw: &[u8], limit: usize, trust: &TrustPolicy) -> Result<BusPacket, Box<Rejection>> {
    let packet = decode_with(raw, limit, trust)?;
    check(raw, &packet, trust)?;
    Ok(packet)
}

/// A job request that failed validation still gets a FAILED result when it has a job id
/// and the sender is one we could answer (its signature passed the trust check, which
/// has happened before this is called). A job id that cannot be echoed (too long,
/// control characters) is answered with its shortened form
/// ([`answer_id`](super::salvage::answer_id)).
fn answer_for(packet: &BusPacket, v: &validate::Violations) -> Option<Answer> {
    let Some(Payload::JobRequest(req)) = &packet.payload else {
        return None;
    };
    let job_id = super::salvage::answer_id(req.job_id.as_bytes())?;
    let trace_ok = !v.iter().any(|x| x.field == "trace_id") && !packet.trace_id.is_empty();
    Some(Answer {
        job_id,
        trace_id: if trace_ok {
            packet.trace_id.clone()
        } else {
            String::new()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_proto::{Timestamp, packet, v1};
    use cap_sign::{KeyRing, PrivateKey, TrustMode};

    fn request(job_id: &str) -> BusPacket {
        BusPacket::new(
            "trace-1",
            "client-1",
            cap_proto::packet::timestamp(std::time::SystemTime::now()),
            v1::JobRequest {
                job_id: job_id.into(),
                topic: "job.echo".into(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn accepted_and_rejected_by_kind() {
        let off = TrustPolicy::off();
        let good = packet::encode(&request("j1"));
        assert!(open(&good, 1 << 20, &off).is_ok());

        let r = open(&[0xff, 0xff, 0xff], 1 << 20, &off).unwrap_err();
        assert_eq!(r.code, ErrorCode::PROTOCOL_MALFORMED_PACKET);
        assert!(matches!(r.reason, RejectReason::Decode(_)));
        assert_eq!(r.sender_id, None);

        let r = open(&good, 4, &off).unwrap_err();
        assert_eq!(r.reason, RejectReason::Decode("over the size limit"));

        let mut unknown = packet::encode(&BusPacket {
            payload: None,
            ..request("j")
        });
        unknown.extend_from_slice(&[0xba, 0x01, 0x00]);
        let r = open(&unknown, 1 << 20, &off).unwrap_err();
        assert_eq!(r.code, ErrorCode::PROTOCOL_UNKNOWN_PAYLOAD);

        let mut v2 = request("j2");
        v2.protocol_version = 2;
        let r = open(&packet::encode(&v2), 1 << 20, &off).unwrap_err();
        assert_eq!(r.code, ErrorCode::PROTOCOL_VERSION_MISMATCH);
        assert_eq!(r.sender_id.as_deref(), Some("client-1"));
        assert_eq!(
            r.answer,
            Some(Answer {
                job_id: "j2".into(),
                trace_id: "trace-1".into()
            })
        );
    }

    #[test]
    fn invalid_requests_are_answered_only_when_the_job_id_is_usable() {
        let off = TrustPolicy::off();
        let mut bad = request("j3");
        if let Some(Payload::JobRequest(r)) = &mut bad.payload {
            r.priority = 9;
        }
        let r = open(&packet::encode(&bad), 1 << 20, &off).unwrap_err();
        assert_eq!(r.code, ErrorCode::PROTOCOL_MALFORMED_PACKET);
        assert_eq!(
            r.reason,
            RejectReason::Invalid(vec!["job_request.priority".into()])
        );
        assert_eq!(r.answer.unwrap().job_id, "j3");

        let no_id = request("");
        let r = open(&packet::encode(&no_id), 1 << 20, &off).unwrap_err();
        assert_eq!(r.answer, None);
        // Too long to echo: answered with the shortened id.
        let long = "x".repeat(600);
        let r = open(&packet::encode(&request(&long)), 1 << 20, &off).unwrap_err();
        assert_eq!(
            r.answer.unwrap().job_id,
            super::super::salvage::answer_id(long.as_bytes()).unwrap()
        );
    }

    #[test]
    fn signatures_are_checked_on_the_raw_bytes_before_validation() {
        let key = PrivateKey::generate();
        let mut ring = KeyRing::new();
        ring.add("client-1", key.public_key());
        let require = TrustPolicy::new(TrustMode::Require, ring);

        let unsigned = packet::encode(&request("j"));
        let r = open(&unsigned, 1 << 20, &require).unwrap_err();
        assert_eq!(r.code, ErrorCode::PROTOCOL_SIGNATURE_MISSING);
        assert_eq!(r.answer, None, "unauthenticated senders get no answer");

        let mut p = request("j");
        let signed = cap_sign::packet::sign_to_bytes(&mut p, &key).unwrap();
        assert!(open(&signed, 1 << 20, &require).is_ok());

        let mut forged = request("j");
        forged.sender_id = "client-1".into();
        let stranger =
            cap_sign::packet::sign_to_bytes(&mut forged, &PrivateKey::generate()).unwrap();
        let r = open(&stranger, 1 << 20, &require).unwrap_err();
        assert_eq!(r.code, ErrorCode::PROTOCOL_SIGNATURE_INVALID);
        assert_eq!(r.reason, RejectReason::Signature("mismatch"));

        // A signed but invalid request from a trusted sender is answered.
        let mut bad = request("j9");
        bad.created_at = None;
        let bytes = cap_sign::packet::sign_to_bytes(&mut bad, &key).unwrap();
        let r = open(&bytes, 1 << 20, &require).unwrap_err();
        assert_eq!(r.answer.unwrap().job_id, "j9");
        let _ = Timestamp::default();
    }

    #[test]
    fn reported_ids_are_sanitised() {
        assert_eq!(sanitize("a\nb"), "a?b");
        assert_eq!(sanitize(&"y".repeat(500)).len(), MAX_REPORTED_ID);
        let r = RejectReason::Invalid((0..10).map(|i| format!("f{i}")).collect());
        assert!(r.describe().ends_with("(+2 more)"), "{}", r.describe());
    }
}
