//! [`TrustPolicy`]: what to do with signatures on incoming packets.

use crate::{Error, KeyRing, ReplayGuard};
use cap_proto::v1::BusPacket;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

/// How incoming signatures are treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TrustMode {
    /// Signatures are not checked.
    Off,
    /// Unsigned packets pass; signed ones must verify with a trusted key of their sender
    /// (a signed packet from a sender without a key is rejected).
    #[default]
    VerifyIfSigned,
    /// Every packet must be signed by a trusted key of its sender (the official SDKs'
    /// behaviour once keys are configured).
    Require,
}

impl FromStr for TrustMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(TrustMode::Off),
            "verify-if-signed" => Ok(TrustMode::VerifyIfSigned),
            "require" => Ok(TrustMode::Require),
            other => Err(format!(
                "unknown trust mode `{other}` (off, verify-if-signed, require)"
            )),
        }
    }
}

/// What a trust check concluded about an accepted packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The signature verified with a trusted key.
    Verified,
    /// Unsigned, and the mode allows it.
    Unsigned,
    /// The mode is [`TrustMode::Off`].
    NotChecked,
}

/// A trust mode, the trusted keys and an optional replay guard.
///
/// ```
/// use cap_sign::{KeyRing, PrivateKey, TrustMode, TrustPolicy, Verdict, packet};
/// use cap_proto::{Timestamp, v1};
///
/// let key = PrivateKey::generate();
/// let mut ring = KeyRing::new();
/// ring.add("client-1", key.public_key());
/// let policy = TrustPolicy::new(TrustMode::Require, ring);
///
/// let mut p = v1::BusPacket::new("t", "client-1", Timestamp::default(), v1::JobCancel::default());
/// let bytes = packet::sign_to_bytes(&mut p, &key).unwrap();
/// assert_eq!(policy.check(&bytes, &p).unwrap(), Verdict::Verified);
///
/// let unsigned = cap_proto::packet::encode(&v1::BusPacket::new("t", "client-1", Timestamp::default(), v1::JobCancel::default()));
/// let decoded = cap_proto::packet::decode(&unsigned, 1 << 20).unwrap();
/// assert_eq!(policy.check(&unsigned, &decoded).unwrap_err().code(), cap_proto::ErrorCode::PROTOCOL_SIGNATURE_MISSING);
/// ```
#[derive(Clone, Debug, Default)]
pub struct TrustPolicy {
    mode: TrustMode,
    keys: Arc<KeyRing>,
    replay: Option<Arc<ReplayGuard>>,
}

impl TrustPolicy {
    /// A policy with no replay guard.
    pub fn new(mode: TrustMode, keys: KeyRing) -> Self {
        Self {
            mode,
            keys: Arc::new(keys),
            replay: None,
        }
    }

    /// Signatures off.
    pub fn off() -> Self {
        Self::new(TrustMode::Off, KeyRing::new())
    }

    /// Adds freshness and replay checks to every accepted packet.
    pub fn with_replay_guard(mut self, guard: ReplayGuard) -> Self {
        self.replay = Some(Arc::new(guard));
        self
    }

    /// The mode.
    pub fn mode(&self) -> TrustMode {
        self.mode
    }

    /// The trusted keys.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Checks received bytes and their decoded packet against the policy, using the
    /// system clock for freshness.
    pub fn check(&self, raw: &[u8], packet: &BusPacket) -> Result<Verdict, Error> {
        self.check_at(raw, packet, SystemTime::now())
    }

    /// Like [`check`](Self::check) with an explicit `now`.
    pub fn check_at(
        &self,
        raw: &[u8],
        packet: &BusPacket,
        now: SystemTime,
    ) -> Result<Verdict, Error> {
        let verdict = match self.mode {
            TrustMode::Off => Verdict::NotChecked,
            TrustMode::VerifyIfSigned if packet.signature.is_empty() => Verdict::Unsigned,
            TrustMode::Require if packet.signature.is_empty() => {
                return Err(Error::Missing {
                    sender: packet.sender_id.clone(),
                });
            }
            TrustMode::VerifyIfSigned | TrustMode::Require => {
                let unsigned = cap_proto::canonical::signing_bytes(raw)?;
                self.keys
                    .verify(&packet.sender_id, &unsigned, &packet.signature)?;
                Verdict::Verified
            }
        };
        if let Some(guard) = &self.replay {
            let sig: &[u8] = if verdict == Verdict::Verified {
                &packet.signature
            } else {
                &[]
            };
            guard.check(packet.created_at.as_ref(), sig, now)?;
        }
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PrivateKey, packet};
    use cap_proto::{ErrorCode, Timestamp, v1};

    fn pkt(sender: &str) -> BusPacket {
        BusPacket::new(
            "t",
            sender,
            cap_proto::packet::timestamp(SystemTime::now()),
            v1::JobCancel {
                job_id: "j".into(),
                ..Default::default()
            },
        )
    }

    #[test]
    fn modes() {
        let key = PrivateKey::generate();
        let mut ring = KeyRing::new();
        ring.add("a", key.public_key());
        let mut signed = pkt("a");
        let signed_bytes = packet::sign_to_bytes(&mut signed, &key).unwrap();
        let unsigned = pkt("a");
        let unsigned_bytes = cap_proto::packet::encode(&unsigned);
        let mut stranger = pkt("b");
        let stranger_bytes = packet::sign_to_bytes(&mut stranger, &PrivateKey::generate()).unwrap();

        let off = TrustPolicy::new(TrustMode::Off, ring.clone());
        assert_eq!(
            off.check(&stranger_bytes, &stranger),
            Ok(Verdict::NotChecked)
        );

        let vis = TrustPolicy::new(TrustMode::VerifyIfSigned, ring.clone());
        assert_eq!(vis.check(&signed_bytes, &signed), Ok(Verdict::Verified));
        assert_eq!(vis.check(&unsigned_bytes, &unsigned), Ok(Verdict::Unsigned));
        assert_eq!(
            vis.check(&stranger_bytes, &stranger).unwrap_err().code(),
            ErrorCode::PROTOCOL_SIGNATURE_INVALID
        );

        let req = TrustPolicy::new(TrustMode::Require, ring);
        assert_eq!(req.check(&signed_bytes, &signed), Ok(Verdict::Verified));
        let e = req.check(&unsigned_bytes, &unsigned).unwrap_err();
        assert_eq!(e.code(), ErrorCode::PROTOCOL_SIGNATURE_MISSING);
        let e = req.check(&stranger_bytes, &stranger).unwrap_err();
        assert!(matches!(e, Error::UnknownSender { .. }));
        assert_eq!(e.code(), ErrorCode::PROTOCOL_SIGNATURE_INVALID);
        assert_eq!("require".parse::<TrustMode>(), Ok(TrustMode::Require));
        assert!("maybe".parse::<TrustMode>().is_err());
    }

    #[test]
    fn replayed_copies_are_refused() {
        let key = PrivateKey::generate();
        let mut ring = KeyRing::new();
        ring.add("a", key.public_key());
        let policy =
            TrustPolicy::new(TrustMode::Require, ring).with_replay_guard(ReplayGuard::default());
        let mut p = pkt("a");
        let bytes = packet::sign_to_bytes(&mut p, &key).unwrap();
        assert_eq!(policy.check(&bytes, &p), Ok(Verdict::Verified));
        assert_eq!(policy.check(&bytes, &p), Err(Error::Replayed));
        let mut old = p.clone();
        old.created_at = Some(Timestamp {
            seconds: 1,
            nanos: 0,
        });
        let old_bytes = packet::sign_to_bytes(&mut old, &key).unwrap();
        assert!(matches!(
            policy.check(&old_bytes, &old),
            Err(Error::Stale { .. })
        ));
    }
}
