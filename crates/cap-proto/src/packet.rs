//! `BusPacket` construction, size-limited decoding and payload inspection.
//!
//! ```
//! use cap_proto::{packet, v1};
//! use prost_types::Timestamp;
//!
//! let req = v1::JobRequest { job_id: "j1".into(), topic: "job.echo".into(), ..Default::default() };
//! let pkt = v1::BusPacket::new("trace-1", "client-1", Timestamp { seconds: 1_700_000_000, nanos: 0 }, req);
//! assert_eq!(pkt.protocol_version, cap_proto::PROTOCOL_VERSION);
//! assert_eq!(pkt.kind(), Some(packet::PayloadKind::JobRequest));
//!
//! let bytes = packet::encode(&pkt);
//! let back = packet::decode(&bytes, packet::DEFAULT_MAX_PACKET_BYTES).unwrap();
//! assert_eq!(back, pkt);
//! assert!(packet::decode(&bytes[..bytes.len() - 1], 1 << 20).is_err());
//! ```

use crate::message::CapMessage;
use crate::v1::{self, bus_packet::Payload};
use crate::{Error, canonical};
use prost_types::Timestamp;
use std::time::{SystemTime, UNIX_EPOCH};

/// The CAP protocol version this implementation produces and accepts.
pub const PROTOCOL_VERSION: i32 = 1;

/// Default largest packet accepted by [`decode`]: 1 MiB.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 1 << 20;

/// Which payload a packet carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PayloadKind {
    /// `job_request` (10).
    JobRequest,
    /// `job_result` (11).
    JobResult,
    /// `heartbeat` (12).
    Heartbeat,
    /// `alert` (13).
    Alert,
    /// `job_progress` (15).
    JobProgress,
    /// `job_cancel` (16).
    JobCancel,
    /// `handshake` (17).
    Handshake,
    /// `worker_handshake_challenge_request` (19).
    WorkerHandshakeChallengeRequest,
    /// `worker_handshake_challenge` (20).
    WorkerHandshakeChallenge,
    /// `worker_handshake_authenticate` (21).
    WorkerHandshakeAuthenticate,
    /// `worker_handshake_result` (22).
    WorkerHandshakeResult,
}

impl PayloadKind {
    /// The payload's field name in `BusPacket`.
    pub fn name(self) -> &'static str {
        match self {
            PayloadKind::JobRequest => "job_request",
            PayloadKind::JobResult => "job_result",
            PayloadKind::Heartbeat => "heartbeat",
            PayloadKind::Alert => "alert",
            PayloadKind::JobProgress => "job_progress",
            PayloadKind::JobCancel => "job_cancel",
            PayloadKind::Handshake => "handshake",
            PayloadKind::WorkerHandshakeChallengeRequest => "worker_handshake_challenge_request",
            PayloadKind::WorkerHandshakeChallenge => "worker_handshake_challenge",
            PayloadKind::WorkerHandshakeAuthenticate => "worker_handshake_authenticate",
            PayloadKind::WorkerHandshakeResult => "worker_handshake_result",
        }
    }

    /// The payload's field number in `BusPacket`.
    pub fn field_number(self) -> u32 {
        match self {
            PayloadKind::JobRequest => 10,
            PayloadKind::JobResult => 11,
            PayloadKind::Heartbeat => 12,
            PayloadKind::Alert => 13,
            PayloadKind::JobProgress => 15,
            PayloadKind::JobCancel => 16,
            PayloadKind::Handshake => 17,
            PayloadKind::WorkerHandshakeChallengeRequest => 19,
            PayloadKind::WorkerHandshakeChallenge => 20,
            PayloadKind::WorkerHandshakeAuthenticate => 21,
            PayloadKind::WorkerHandshakeResult => 22,
        }
    }

    /// The kind of a payload.
    pub fn of(payload: &Payload) -> Self {
        match payload {
            Payload::JobRequest(_) => PayloadKind::JobRequest,
            Payload::JobResult(_) => PayloadKind::JobResult,
            Payload::Heartbeat(_) => PayloadKind::Heartbeat,
            Payload::Alert(_) => PayloadKind::Alert,
            Payload::JobProgress(_) => PayloadKind::JobProgress,
            Payload::JobCancel(_) => PayloadKind::JobCancel,
            Payload::Handshake(_) => PayloadKind::Handshake,
            Payload::WorkerHandshakeChallengeRequest(_) => {
                PayloadKind::WorkerHandshakeChallengeRequest
            }
            Payload::WorkerHandshakeChallenge(_) => PayloadKind::WorkerHandshakeChallenge,
            Payload::WorkerHandshakeAuthenticate(_) => PayloadKind::WorkerHandshakeAuthenticate,
            Payload::WorkerHandshakeResult(_) => PayloadKind::WorkerHandshakeResult,
        }
    }
}

macro_rules! into_payload {
    ($($ty:ident => $variant:ident),* $(,)?) => {$(
        impl From<v1::$ty> for Payload {
            fn from(m: v1::$ty) -> Self {
                Payload::$variant(m)
            }
        }
    )*};
}

into_payload!(
    JobRequest => JobRequest,
    JobResult => JobResult,
    Heartbeat => Heartbeat,
    SystemAlert => Alert,
    JobProgress => JobProgress,
    JobCancel => JobCancel,
    Handshake => Handshake,
    WorkerHandshakeChallengeRequest => WorkerHandshakeChallengeRequest,
    WorkerHandshakeChallenge => WorkerHandshakeChallenge,
    WorkerHandshakeAuthenticate => WorkerHandshakeAuthenticate,
    WorkerHandshakeResult => WorkerHandshakeResult,
);

impl v1::BusPacket {
    /// A version-1 packet around `payload`. `created_at` comes from the caller (this
    /// crate reads no clock); [`timestamp`] converts a `SystemTime`.
    pub fn new(
        trace_id: impl Into<String>,
        sender_id: impl Into<String>,
        created_at: Timestamp,
        payload: impl Into<Payload>,
    ) -> Self {
        v1::BusPacket {
            trace_id: trace_id.into(),
            sender_id: sender_id.into(),
            created_at: Some(created_at),
            protocol_version: PROTOCOL_VERSION,
            payload: Some(payload.into()),
            ..Default::default()
        }
    }

    /// Which payload the packet carries.
    pub fn kind(&self) -> Option<PayloadKind> {
        self.payload.as_ref().map(PayloadKind::of)
    }

    /// The job a job-related payload is about.
    pub fn job_id(&self) -> Option<&str> {
        match self.payload.as_ref()? {
            Payload::JobRequest(m) => Some(&m.job_id),
            Payload::JobResult(m) => Some(&m.job_id),
            Payload::JobProgress(m) => Some(&m.job_id),
            Payload::JobCancel(m) => Some(&m.job_id),
            _ => None,
        }
    }

    /// Whether the packet carries a signature.
    pub fn is_signed(&self) -> bool {
        !self.signature.is_empty()
    }
}

/// Converts a `SystemTime` into a protobuf `Timestamp` (times before 1970 are negative).
pub fn timestamp(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp {
            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos() as i32,
        },
        Err(e) => {
            let d = e.duration();
            let mut seconds = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let mut nanos = -(d.subsec_nanos() as i32);
            if nanos < 0 {
                nanos += 1_000_000_000;
                seconds -= 1;
            }
            Timestamp { seconds, nanos }
        }
    }
}

/// The canonical bytes of a packet (what goes on the wire).
pub fn encode(packet: &v1::BusPacket) -> Vec<u8> {
    canonical::to_bytes(packet)
}

/// Decodes a message of type `M`, refusing inputs over `limit` bytes.
pub fn decode_message<M: CapMessage>(bytes: &[u8], limit: usize) -> Result<M, Error> {
    if bytes.len() > limit {
        return Err(Error::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(M::decode(bytes)?)
}

/// Decodes a `BusPacket`, refusing inputs over `limit` bytes and packets without a
/// payload this version knows ([`Error::UnknownPayload`] when the packet carries one it
/// does not model, [`Error::MissingPayload`] when it carries none).
///
/// It checks structure only; [`crate::validate`] checks the protocol rules, including
/// `protocol_version`.
pub fn decode(bytes: &[u8], limit: usize) -> Result<v1::BusPacket, Error> {
    let packet = decode_lenient(bytes, limit)?;
    canonical::check_strict::<v1::BusPacket>(bytes)?;
    Ok(packet)
}

/// Like [`decode`], without the strictness checks ([`canonical::check_strict`]): it
/// accepts non-minimal varints and several payload members (the last one wins), as a
/// plain protobuf parser does. For tools that show what arrived (`cap decode`); never
/// for packets that are acted upon.
pub fn decode_lenient(bytes: &[u8], limit: usize) -> Result<v1::BusPacket, Error> {
    let packet: v1::BusPacket = decode_message(bytes, limit)?;
    if packet.payload.is_none() {
        let unknown = canonical::unknown_fields::<v1::BusPacket>(bytes)?;
        // Every envelope field is known; an unknown field is a payload this version
        // does not model.
        return Err(match unknown.into_iter().next() {
            Some(field) => Error::UnknownPayload { field },
            None => Error::MissingPayload,
        });
    }
    Ok(packet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_before_and_after_epoch() {
        use std::time::Duration;
        let t = UNIX_EPOCH + Duration::new(5, 250);
        assert_eq!(
            timestamp(t),
            Timestamp {
                seconds: 5,
                nanos: 250
            }
        );
        let t = UNIX_EPOCH - Duration::new(1, 500_000_000);
        assert_eq!(
            timestamp(t),
            Timestamp {
                seconds: -2,
                nanos: 500_000_000
            }
        );
        let t = UNIX_EPOCH - Duration::new(3, 0);
        assert_eq!(
            timestamp(t),
            Timestamp {
                seconds: -3,
                nanos: 0
            }
        );
    }

    #[test]
    fn decode_classifies_missing_and_unknown_payloads() {
        let mut pkt = v1::BusPacket::new("t", "s", Timestamp::default(), v1::JobCancel::default());
        pkt.payload = None;
        let bytes = encode(&pkt);
        assert_eq!(decode(&bytes, 1024), Err(Error::MissingPayload));

        let mut with_unknown = bytes.clone();
        with_unknown.extend_from_slice(&[0xba, 0x01, 0x00]); // field 23, empty message
        let err = decode(&with_unknown, 1024).unwrap_err();
        assert_eq!(err, Error::UnknownPayload { field: 23 });
        assert_eq!(err.code(), crate::ErrorCode::PROTOCOL_UNKNOWN_PAYLOAD);
    }

    #[test]
    fn decode_enforces_the_limit_before_parsing() {
        let pkt = v1::BusPacket::new("t", "s", Timestamp::default(), v1::JobCancel::default());
        let bytes = encode(&pkt);
        let err = decode(&bytes, bytes.len() - 1).unwrap_err();
        assert_eq!(
            err,
            Error::TooLarge {
                size: bytes.len(),
                limit: bytes.len() - 1
            }
        );
        assert!(decode(&bytes, bytes.len()).is_ok());
    }

    #[test]
    fn kinds_and_job_ids() {
        let pkt = v1::BusPacket::new(
            "t",
            "s",
            Timestamp::default(),
            v1::JobResult {
                job_id: "j9".into(),
                ..Default::default()
            },
        );
        assert_eq!(pkt.kind(), Some(PayloadKind::JobResult));
        assert_eq!(pkt.kind().map(PayloadKind::field_number), Some(11));
        assert_eq!(pkt.job_id(), Some("j9"));
        assert!(!pkt.is_signed());
    }
}
