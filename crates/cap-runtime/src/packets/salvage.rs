//! Salvage: answering a job request that was refused before it could be read whole.
//!
//! A job request over the size limit (or whose tail does not decode) is not decoded.
//! Its submitter would still wait out its timeout for a result that never comes, although
//! the envelope and the job id are usually right at the front of the bytes. So the
//! rejection path walks the envelope's top-level fields (skipping over their contents,
//! at most [`MAX_SCAN_FIELDS`] of them), reads `trace_id`, `sender_id`, `created_at` and
//! `signature`, and the first fields of the `job_request` payload up to its `job_id`
//! (field 1) — never the whole payload. When the job id and the trust check allow it,
//! the rejection carries an [`Answer`]: a FAILED result with `JOB_RESOURCE_EXHAUSTED`
//! (201) for an oversize request, `PROTOCOL_MALFORMED_PACKET` (101) otherwise.
//!
//! **Trust**: the envelope read from the bytes is checked with the receiver's trust
//! policy against the raw bytes, as a decoded packet would be: with signatures off, or
//! an unsigned request under `VerifyIfSigned`, it is answered; a signature must verify
//! (which needs the bytes to be well-formed). An unverified sender is never answered, so
//! nobody can make us publish FAILED results for other people's job ids.
//!
//! **Job ids that cannot be echoed**: a job id over [`MAX_ID_LEN`](validate::MAX_ID_LEN)
//! bytes, with control characters, or not UTF-8 would make the answer itself invalid.
//! Such a request is answered with [`answer_id`]: the id's first
//! [`KEPT_PREFIX_CHARS`] characters (control characters as `?`), then
//! [`TRUNCATED_MARK`] and the 64-bit FNV-1a hash of the full id bytes in 16 hex digits
//! (`aaaa…aaaa#trunc-4f2a…`). A submitter can compute the same id to match it, and the
//! result's trace id is the request's.

use super::inbound::{Answer, RejectReason, Rejection, sanitize};
use cap_proto::v1::BusPacket;
use cap_proto::{ErrorCode, PayloadKind, Timestamp, validate};
use cap_sign::TrustPolicy;

/// Top-level envelope fields looked at, at most.
pub const MAX_SCAN_FIELDS: usize = 64;
/// Characters of an unusable job id kept in its [`answer_id`].
pub const KEPT_PREFIX_CHARS: usize = 64;
/// What separates the kept prefix from the hash in an [`answer_id`].
pub const TRUNCATED_MARK: &str = "#trunc-";

const TRACE_ID: u32 = 1;
const SENDER_ID: u32 = 2;
const CREATED_AT: u32 = 3;
const JOB_REQUEST: u32 = 10;
const SIGNATURE: u32 = 14;
const JOB_ID: u32 = 1;

/// The id a FAILED result for job id `raw` carries: the id itself when it is a valid,
/// printable id, else its shortened form (see the [module docs](self)). `None` for an
/// empty id.
///
/// ```
/// use cap_runtime::packets::salvage::answer_id;
/// assert_eq!(answer_id(b"job-1").as_deref(), Some("job-1"));
/// let long = answer_id("x".repeat(1_000_000).as_bytes()).unwrap();
/// assert_eq!(long.len(), 64 + "#trunc-".len() + 16);
/// assert!(long.starts_with(&"x".repeat(64)));
/// assert_eq!(answer_id(b""), None);
/// ```
pub fn answer_id(raw: &[u8]) -> Option<String> {
    if raw.is_empty() {
        return None;
    }
    if let Ok(s) = std::str::from_utf8(raw)
        && s.len() <= validate::MAX_ID_LEN
        && !s.chars().any(char::is_control)
    {
        return Some(s.to_owned());
    }
    let text = String::from_utf8_lossy(&raw[..raw.len().min(KEPT_PREFIX_CHARS * 4)]);
    let prefix: String = text
        .chars()
        .take(KEPT_PREFIX_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    Some(format!("{prefix}{TRUNCATED_MARK}{:016x}", fnv1a(raw)))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Fills in what a rejected, undecodable packet `raw` still tells: its sanitised ids and
/// payload kind, and for a job request from a sender the trust policy accepts, the
/// [`Answer`] (and code 201 when it was over the size limit).
pub(crate) fn salvage(raw: &[u8], trust: &TrustPolicy, rejection: &mut Rejection) {
    let env = Envelope::scan(raw);
    let text = |b: &[u8]| std::str::from_utf8(b).ok().map(str::to_owned);
    let trace_id = text(env.trace_id).unwrap_or_default();
    let sender_id = text(env.sender_id).unwrap_or_default();
    rejection.trace_id = (!trace_id.is_empty()).then(|| sanitize(&trace_id));
    rejection.sender_id = (!sender_id.is_empty()).then(|| sanitize(&sender_id));
    let Some(job_id) = env.job_id else {
        return;
    };
    rejection.kind = Some(PayloadKind::JobRequest);
    let stub = BusPacket {
        trace_id: trace_id.clone(),
        sender_id,
        created_at: env.created_at,
        signature: bytes::Bytes::copy_from_slice(env.signature),
        ..Default::default()
    };
    if trust.check(raw, &stub).is_err() {
        return;
    }
    let Some(job_id) = answer_id(job_id) else {
        return;
    };
    let trace_ok = !trace_id.is_empty()
        && trace_id.len() <= validate::MAX_ID_LEN
        && !trace_id.chars().any(char::is_control);
    if rejection.reason == RejectReason::Decode("over the size limit") {
        rejection.code = ErrorCode::JOB_RESOURCE_EXHAUSTED;
    }
    rejection.answer = Some(Answer {
        job_id,
        trace_id: if trace_ok { trace_id } else { String::new() },
    });
}

/// The envelope fields of a packet, read without decoding its payload.
#[derive(Debug, Default, PartialEq)]
struct Envelope<'a> {
    trace_id: &'a [u8],
    sender_id: &'a [u8],
    created_at: Option<Timestamp>,
    signature: &'a [u8],
    /// The job id, when the payload is a job request whose job id could be read.
    job_id: Option<&'a [u8]>,
}

impl<'a> Envelope<'a> {
    fn scan(raw: &'a [u8]) -> Self {
        let mut env = Envelope::default();
        let mut r = Wire(raw);
        for _ in 0..MAX_SCAN_FIELDS {
            if r.0.is_empty() {
                break;
            }
            let Some((field, value)) = r.field() else {
                // The rest is malformed: keep what was read before it.
                break;
            };
            match (field, value) {
                (TRACE_ID, Value::Bytes(b)) => env.trace_id = b,
                (SENDER_ID, Value::Bytes(b)) => env.sender_id = b,
                (CREATED_AT, Value::Bytes(b)) => env.created_at = timestamp(b),
                (SIGNATURE, Value::Bytes(b)) => env.signature = b,
                (JOB_REQUEST, Value::Bytes(b) | Value::Truncated(b)) => env.job_id = job_id(b),
                _ => {}
            }
        }
        env
    }
}

/// Field 1 of a job request, looked for among its first fields.
fn job_id(request: &[u8]) -> Option<&[u8]> {
    let mut r = Wire(request);
    for _ in 0..MAX_SCAN_FIELDS {
        match r.field()? {
            (JOB_ID, Value::Bytes(b)) => return Some(b),
            _ if r.0.is_empty() => return None,
            _ => {}
        }
    }
    None
}

fn timestamp(b: &[u8]) -> Option<Timestamp> {
    let mut r = Wire(b);
    let mut ts = Timestamp::default();
    while !r.0.is_empty() {
        match r.field()? {
            (1, Value::Varint(v)) => ts.seconds = v as i64,
            (2, Value::Varint(v)) => ts.nanos = v as i32,
            _ => {}
        }
    }
    Some(ts)
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A length-delimited value whose length runs past the end: the bytes there are.
    Truncated(&'a [u8]),
    Other,
}

/// A cursor over protobuf wire format: tags and values, contents skipped not parsed.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn field(&mut self) -> Option<(u32, Value<'a>)> {
        let tag = self.varint()?;
        let number = u32::try_from(tag >> 3).ok()?;
        let value = match tag & 7 {
            0 => Value::Varint(self.varint()?),
            1 => self.take(8).map(|_| Value::Other)?,
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                match self.take(len) {
                    Some(b) => Value::Bytes(b),
                    // Cut short: what there is of it (the front of a payload is enough
                    // to find a job id); nothing follows.
                    None => Value::Truncated(std::mem::take(&mut self.0)),
                }
            }
            5 => self.take(4).map(|_| Value::Other)?,
            _ => return None,
        };
        Some((number, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_proto::{packet, v1};
    use cap_sign::{KeyRing, PrivateKey, TrustMode};

    fn request(job_id: &str, context_len: usize) -> BusPacket {
        BusPacket::new(
            "trace-9",
            "client-9",
            packet::timestamp(std::time::SystemTime::now()),
            v1::JobRequest {
                job_id: job_id.into(),
                topic: "job.echo".into(),
                labels: [("pad".to_owned(), "p".repeat(context_len))].into(),
                ..Default::default()
            },
        )
    }

    /// The rejection `inbound::decode` makes of `raw`, before salvage.
    fn rejected(raw: &[u8], limit: usize) -> Rejection {
        assert!(packet::decode(raw, limit).is_err());
        Rejection {
            code: ErrorCode::PROTOCOL_MALFORMED_PACKET,
            reason: if raw.len() > limit {
                RejectReason::Decode("over the size limit")
            } else {
                RejectReason::Decode("malformed protobuf")
            },
            trace_id: None,
            sender_id: None,
            kind: None,
            answer: None,
        }
    }

    #[test]
    fn an_oversize_request_is_answered_with_201() {
        let raw = packet::encode(&request("job-big", 3 << 20));
        let mut r = rejected(&raw, 1 << 20);
        salvage(&raw, &TrustPolicy::off(), &mut r);
        assert_eq!(r.code, ErrorCode::JOB_RESOURCE_EXHAUSTED);
        assert_eq!(r.kind, Some(PayloadKind::JobRequest));
        assert_eq!(r.sender_id.as_deref(), Some("client-9"));
        assert_eq!(
            r.answer,
            Some(Answer {
                job_id: "job-big".into(),
                trace_id: "trace-9".into()
            })
        );
        // Unsigned under the default policy: answered too.
        let mut r = rejected(&raw, 1 << 20);
        salvage(&raw, &TrustPolicy::default(), &mut r);
        assert!(r.answer.is_some());
    }

    #[test]
    fn a_truncated_request_is_answered_with_101() {
        let raw = packet::encode(&request("job-cut", 10_000));
        let cut = &raw[..raw.len() / 2];
        let mut r = rejected(cut, 1 << 20);
        salvage(cut, &TrustPolicy::off(), &mut r);
        assert_eq!(r.code, ErrorCode::PROTOCOL_MALFORMED_PACKET);
        assert_eq!(r.answer.unwrap().job_id, "job-cut");
    }

    #[test]
    fn only_senders_the_policy_accepts_are_answered() {
        let key = PrivateKey::generate();
        let mut ring = KeyRing::new();
        ring.add("client-9", key.public_key());
        let require = TrustPolicy::new(TrustMode::Require, ring);

        // Unsigned: not answered under Require.
        let raw = packet::encode(&request("job-u", 2 << 20));
        let mut r = rejected(&raw, 1 << 20);
        salvage(&raw, &require, &mut r);
        assert_eq!(r.answer, None);
        assert_eq!(r.trace_id.as_deref(), Some("trace-9"), "ids still reported");

        // Signed by the trusted key: the signature verifies over the raw bytes.
        let mut p = request("job-s", 2 << 20);
        let signed = cap_sign::packet::sign_to_bytes(&mut p, &key).unwrap();
        let mut r = rejected(&signed, 1 << 20);
        salvage(&signed, &require, &mut r);
        assert_eq!(r.answer.unwrap().job_id, "job-s");

        // Signed by a stranger claiming the sender: not answered, in either mode.
        let mut p = request("job-x", 2 << 20);
        let forged = cap_sign::packet::sign_to_bytes(&mut p, &PrivateKey::generate()).unwrap();
        for policy in [
            require.clone(),
            TrustPolicy::new(TrustMode::VerifyIfSigned, KeyRing::new()),
        ] {
            let mut r = rejected(&forged, 1 << 20);
            salvage(&forged, &policy, &mut r);
            assert_eq!(r.answer, None);
        }
    }

    #[test]
    fn unusable_job_ids_get_a_stable_shortened_id() {
        let huge = "j".repeat(1_000_000);
        let a = answer_id(huge.as_bytes()).unwrap();
        assert_eq!(a, answer_id(huge.as_bytes()).unwrap(), "stable");
        assert!(a.len() <= validate::MAX_ID_LEN);
        assert_ne!(a, answer_id(&huge.as_bytes()[1..]).unwrap());
        assert_eq!(
            answer_id(b"a\nb").unwrap(),
            format!("a?b{TRUNCATED_MARK}{:016x}", fnv1a(b"a\nb"))
        );
        let not_utf8 = answer_id(&[0xff, b'x']).unwrap();
        assert!(not_utf8.starts_with("\u{fffd}x#trunc-"), "{not_utf8}");
        let fine = "é".repeat(200); // 400 bytes: within the limit
        assert_eq!(answer_id(fine.as_bytes()).unwrap(), fine);
    }

    #[test]
    fn garbage_and_other_payloads_are_not_answered() {
        for raw in [&b""[..], b"\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f"] {
            let mut r = rejected(raw, 1 << 20);
            salvage(raw, &TrustPolicy::off(), &mut r);
            assert_eq!(r.answer, None, "{raw:?}");
        }
        let cancel = BusPacket::new(
            "t",
            "s",
            Timestamp::default(),
            v1::JobCancel {
                job_id: "j".into(),
                reason: "r".repeat(2 << 20),
                ..Default::default()
            },
        );
        let raw = packet::encode(&cancel);
        let mut r = rejected(&raw, 1 << 20);
        salvage(&raw, &TrustPolicy::off(), &mut r);
        assert_eq!(r.answer, None);
        assert_eq!(r.sender_id.as_deref(), Some("s"));
        // A job id past the first fields of the request is not looked for.
        let mut fields = Vec::new();
        for _ in 0..MAX_SCAN_FIELDS + 1 {
            fields.extend_from_slice(&[0x10, 0x01]); // field 2 varint
        }
        fields.extend_from_slice(&[0x0a, 0x01, b'j']);
        assert_eq!(job_id(&fields), None);
    }
}
