//! `SignatureMetadata` checks and the time arithmetic of the profile: expiry against
//! now, clock skew and the maximum lifetime, on whole nanoseconds (no overflow, no clock
//! reads).

use super::{ALGORITHM, MESSAGE_ID_LEN, PROFILE_VERSION, ProductionError};
use cap_proto::Timestamp;
use cap_proto::v1::{BusPacket, SignatureMetadata};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Earliest valid `Timestamp` second (0001-01-01T00:00:00Z), as protobuf defines it.
const MIN_SECONDS: i64 = -62_135_596_800;
/// Latest valid `Timestamp` second (9999-12-31T23:59:59Z).
const MAX_SECONDS: i64 = 253_402_300_799;

/// Nanoseconds since the Unix epoch (negative before it).
pub(crate) fn nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// A `SystemTime` from nanoseconds since the epoch (saturating at what `SystemTime` holds).
pub(crate) fn system_time(n: i128) -> SystemTime {
    let magnitude = Duration::new(
        u64::try_from(n.unsigned_abs() / 1_000_000_000).unwrap_or(u64::MAX),
        (n.unsigned_abs() % 1_000_000_000) as u32,
    );
    let t = if n >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    };
    t.unwrap_or(UNIX_EPOCH)
}

/// The instant of a metadata expiry, in nanoseconds since the epoch, checked the way the
/// peer converts it (`Timestamp.ToDatetime`): the seconds within years 1-9999, nanos in
/// `0..1e9`, and precision cut to whole microseconds.
pub(crate) fn expiry_nanos(ts: Option<&Timestamp>) -> Result<i128, ProductionError> {
    // An absent expiry reads as the epoch (proto3 default), which is long expired.
    let ts = ts.copied().unwrap_or_default();
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) || !(0..1_000_000_000).contains(&ts.nanos)
    {
        return Err(ProductionError::InvalidExpiry);
    }
    let micros_as_nanos = i128::from(ts.nanos) / 1000 * 1000;
    Ok(i128::from(ts.seconds) * 1_000_000_000 + micros_as_nanos)
}

/// The time bounds a check runs with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub(crate) now: i128,
    pub(crate) skew: i128,
    pub(crate) max_lifetime: i128,
}

impl Bounds {
    pub(crate) fn new(now: SystemTime, skew: Duration, max_lifetime: Duration) -> Self {
        Bounds {
            now: nanos(now),
            skew: skew.as_nanos() as i128,
            max_lifetime: max_lifetime.as_nanos() as i128,
        }
    }
}

/// The metadata of a packet, checked like the peer's `_validate_metadata`: present,
/// profile and algorithm, a 16-byte message id, non-empty audience and key id, the
/// expected audience (when `audience` is given), then the expiry against `bounds`.
/// Returns the metadata and its expiry (nanoseconds since the epoch).
pub(crate) fn check<'p>(
    packet: &'p BusPacket,
    audience: Option<&str>,
    bounds: Bounds,
) -> Result<(&'p SignatureMetadata, i128), ProductionError> {
    let m = packet
        .signature_metadata
        .as_ref()
        .ok_or(ProductionError::MissingMetadata)?;
    if m.profile_version != PROFILE_VERSION || m.algorithm != ALGORITHM {
        return Err(ProductionError::UnsupportedProfile);
    }
    if m.message_id.len() != MESSAGE_ID_LEN {
        return Err(ProductionError::InvalidMetadata(
            "message_id must be 16 bytes",
        ));
    }
    if m.audience.is_empty() {
        return Err(ProductionError::InvalidMetadata("empty audience"));
    }
    if m.key_id.is_empty() {
        return Err(ProductionError::InvalidMetadata("empty key_id"));
    }
    if let Some(expected) = audience
        && m.audience != expected
    {
        return Err(ProductionError::AudienceMismatch {
            expected: expected.to_owned(),
            got: m.audience.clone(),
        });
    }
    let expiry = expiry_nanos(m.expires_at.as_ref())?;
    if expiry <= bounds.now - bounds.skew {
        return Err(ProductionError::Expired);
    }
    if expiry > bounds.now + bounds.max_lifetime + bounds.skew {
        return Err(ProductionError::LifetimeExceeded);
    }
    Ok((m, expiry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_conversion_matches_the_peer() {
        let ts = |seconds, nanos| Timestamp { seconds, nanos };
        let expiry_nanos = |t: Timestamp| expiry_nanos(Some(&t));
        assert_eq!(expiry_nanos(ts(1, 1_999)).unwrap(), 1_000_001_000);
        assert_eq!(super::expiry_nanos(None).unwrap(), 0);
        assert_eq!(
            expiry_nanos(ts(MAX_SECONDS + 1, 0)),
            Err(ProductionError::InvalidExpiry)
        );
        assert_eq!(
            expiry_nanos(ts(MIN_SECONDS - 1, 0)),
            Err(ProductionError::InvalidExpiry)
        );
        assert_eq!(expiry_nanos(ts(0, -1)), Err(ProductionError::InvalidExpiry));
        assert_eq!(
            expiry_nanos(ts(0, 1_000_000_000)),
            Err(ProductionError::InvalidExpiry)
        );
        assert!(expiry_nanos(ts(MIN_SECONDS, 999_999_999)).is_ok());
    }

    #[test]
    fn system_time_round_trips() {
        for n in [0i128, 1, -1, 1_700_000_000_123_456_789, -5_000_000_001] {
            assert_eq!(nanos(system_time(n)), n);
        }
    }
}
