//! [`admit`]: the whole receive path of a CAP-PRODUCTION packet, in the order that keeps
//! it safe — verify (signature, audience, expiry, tenant, sender, key), then the identity
//! binding of a job request, then replay admission, all before any handler runs.
//! Admission comes after verification so an unauthenticated packet never takes a replay
//! slot, and before the handler so a redelivery never repeats a side effect.

use super::identity::validate_identity_binding;
use super::replay::{ReplayOutcome, ReplayStore};
use super::verify::{Verified, verify};
use super::{ProductionError, ProductionTrust};
use cap_proto::v1::bus_packet::Payload;
use std::time::SystemTime;

/// The result of admitting a verified packet.
#[derive(Clone, Debug, PartialEq)]
pub enum Admission {
    /// First copy: act on it.
    First(Verified),
    /// A redelivery of a packet already admitted (same key, same body): acknowledge it
    /// without acting again.
    Duplicate(Verified),
}

impl Admission {
    /// The verified packet, whichever the outcome.
    pub fn verified(&self) -> &Verified {
        match self {
            Admission::First(v) | Admission::Duplicate(v) => v,
        }
    }

    /// Whether this is the first copy.
    pub fn is_first(&self) -> bool {
        matches!(self, Admission::First(_))
    }
}

/// Verifies `raw` against `trust` at `now`, checks a job request's identity mirrors
/// against the envelope identity, then admits it to `store` (kept until expiry + skew).
/// Any error rejects the packet; [`ProductionError::is_store_failure`] tells which errors
/// are worth a redelivery.
pub async fn admit<S: ReplayStore + ?Sized>(
    raw: &[u8],
    trust: &ProductionTrust,
    store: &S,
    now: SystemTime,
) -> Result<Admission, ProductionError> {
    let verified = verify(raw, trust, now)?;
    if let (Some(Payload::JobRequest(request)), Some(identity)) =
        (&verified.packet().payload, &verified.packet().identity)
    {
        validate_identity_binding(request, identity)?;
    }
    let entry = verified.replay_entry(trust.clock_skew());
    match store.admit(&entry, now).await? {
        ReplayOutcome::First => Ok(Admission::First(verified)),
        ReplayOutcome::Duplicate => Ok(Admission::Duplicate(verified)),
    }
}
