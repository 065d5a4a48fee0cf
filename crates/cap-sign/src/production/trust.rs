//! [`ProductionTrust`]: what a CAP-PRODUCTION receiver accepts — the audience (the subject
//! it listens on), the tenant and sender the packets must be bound to, the trusted keys by
//! key id, the maximum lifetime and the clock skew it tolerates.

use super::{MAX_CLOCK_SKEW, MAX_LIFETIME, ProductionError};
use crate::PublicKey;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A receiver's CAP-PRODUCTION trust configuration.
///
/// The authority strings must be non-empty and carry no surrounding whitespace; the
/// maximum lifetime lies in (0, 5 min], the skew in [0, 1 min] and not above the lifetime
/// (the peer's bounds). Keys are shared (`Arc`), so per-subject copies
/// ([`with_audience`](Self::with_audience)) are cheap.
///
/// ```
/// use cap_sign::{PrivateKey, production::ProductionTrust};
/// use std::time::Duration;
///
/// let key = PrivateKey::generate();
/// let trust = ProductionTrust::new("job.echo", "acme", "cordum-scheduler")
///     .unwrap()
///     .with_key("sched-2026", key.public_key())
///     .with_clock_skew(Duration::from_secs(30))
///     .unwrap();
/// assert_eq!(trust.audience(), "job.echo");
/// assert!(ProductionTrust::new(" job.echo", "acme", "s").is_err());
/// assert!(trust.with_max_lifetime(Duration::from_secs(301)).is_err());
/// ```
#[derive(Clone, Debug)]
pub struct ProductionTrust {
    audience: String,
    tenant: String,
    sender: String,
    keys: Arc<HashMap<String, PublicKey>>,
    max_lifetime: Duration,
    clock_skew: Duration,
}

/// A non-empty string without surrounding whitespace (the peer's authority rule).
fn authority(value: &str) -> Result<String, ProductionError> {
    if value.trim().is_empty() || value.trim() != value {
        return Err(ProductionError::Config(
            "audience, tenant and sender must be non-empty without surrounding whitespace",
        ));
    }
    Ok(value.to_owned())
}

impl ProductionTrust {
    /// A configuration with no keys yet, a 5-minute maximum lifetime and no clock skew
    /// (the peer's defaults).
    pub fn new(audience: &str, tenant: &str, sender: &str) -> Result<Self, ProductionError> {
        Ok(ProductionTrust {
            audience: authority(audience)?,
            tenant: authority(tenant)?,
            sender: authority(sender)?,
            keys: Arc::new(HashMap::new()),
            max_lifetime: MAX_LIFETIME,
            clock_skew: Duration::ZERO,
        })
    }

    /// Trusts `key` for packets whose metadata names `key_id` (replacing any key with
    /// that id).
    pub fn with_key(mut self, key_id: impl Into<String>, key: PublicKey) -> Self {
        Arc::make_mut(&mut self.keys).insert(key_id.into(), key);
        self
    }

    /// The same configuration for another subject.
    pub fn with_audience(&self, audience: &str) -> Result<Self, ProductionError> {
        Ok(ProductionTrust {
            audience: authority(audience)?,
            ..self.clone()
        })
    }

    /// Sets the maximum lifetime a packet may claim: (0, 5 min], and not below the skew.
    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Result<Self, ProductionError> {
        if max_lifetime.is_zero() || max_lifetime > MAX_LIFETIME {
            return Err(ProductionError::Config(
                "max lifetime must lie in (0, 5 min]",
            ));
        }
        if self.clock_skew > max_lifetime {
            return Err(ProductionError::Config(
                "clock skew must not exceed the max lifetime",
            ));
        }
        self.max_lifetime = max_lifetime;
        Ok(self)
    }

    /// Sets the clock skew tolerated on both sides of now: [0, 1 min], and not above the
    /// maximum lifetime.
    pub fn with_clock_skew(mut self, skew: Duration) -> Result<Self, ProductionError> {
        if skew > MAX_CLOCK_SKEW {
            return Err(ProductionError::Config("clock skew must not exceed 1 min"));
        }
        if skew > self.max_lifetime {
            return Err(ProductionError::Config(
                "clock skew must not exceed the max lifetime",
            ));
        }
        self.clock_skew = skew;
        Ok(self)
    }

    /// The subject packets must be addressed to.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The tenant packets must be bound to (`identity.tenant_id`).
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The sender packets must come from (`sender_id`).
    pub fn sender(&self) -> &str {
        &self.sender
    }

    /// The trusted key with this id.
    pub fn key(&self, key_id: &str) -> Option<&PublicKey> {
        self.keys.get(key_id)
    }

    /// How many keys are trusted.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The maximum lifetime.
    pub fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }

    /// The tolerated clock skew.
    pub fn clock_skew(&self) -> Duration {
        self.clock_skew
    }
}
