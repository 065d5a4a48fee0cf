//! `cap sign --profile production` and `cap verify --profile production`: CAP-PRODUCTION
//! signatures (exact wire bytes, audience, expiry, message id, tenant and sender binding).
//!
//! Exit status as for the legacy profile: 0 valid (or signed); 1 invalid, with the reason
//! and its CAP error code on stderr; 2 usage errors, input that is not a packet, or an
//! unreadable key.

use super::keys::{SignArgs, VerifyArgs};
use super::{read_input, write_stdout};
use anyhow::{Context, Result, bail};
use cap_proto::{Timestamp, canonical, packet, v1};
use cap_sign::production::{self, ProductionTrust, Seal};
use cap_sign::{PrivateKey, PublicKey};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The first production-only flag given to a legacy `cap sign`, if any.
pub fn production_only_sign_flag(a: &SignArgs) -> Option<&'static str> {
    [
        (a.key_id.is_some(), "--key-id"),
        (a.audience.is_some(), "--audience"),
        (a.message_id.is_some(), "--message-id"),
        (a.issued_at.is_some(), "--issued-at"),
        (a.lifetime != 300, "--lifetime"),
    ]
    .into_iter()
    .find_map(|(given, flag)| given.then_some(flag))
}

/// The first production-only flag given to a legacy `cap verify`, if any.
pub fn production_only_verify_flag(a: &VerifyArgs) -> Option<&'static str> {
    [
        (a.audience.is_some(), "--audience"),
        (a.now.is_some(), "--now"),
        (a.tenant.is_some(), "--tenant"),
        (a.sender.is_some(), "--sender"),
        (a.accept_packet_identity, "--accept-packet-identity"),
        (a.skew != 0, "--skew"),
    ]
    .into_iter()
    .find_map(|(given, flag)| given.then_some(flag))
}

fn usage(msg: impl std::fmt::Display) -> Result<ExitCode> {
    eprintln!("cap: {msg}");
    Ok(ExitCode::from(2))
}

/// An RFC 3339 instant (`2098-12-31T23:56:00Z`, offsets and fractions allowed).
fn instant(text: &str) -> Result<SystemTime, String> {
    let ts: Timestamp = text
        .parse()
        .map_err(|e| format!("`{text}` is not an RFC 3339 instant: {e}"))?;
    let nanos = Duration::from_nanos(u64::try_from(ts.nanos).unwrap_or(0));
    let t = if ts.seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(ts.seconds.unsigned_abs()) + nanos)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(ts.seconds.unsigned_abs()))
            .and_then(|t| t.checked_add(nanos))
    };
    t.ok_or_else(|| format!("`{text}` is out of range"))
}

fn message_id(text: &str) -> Result<[u8; 16], String> {
    let bad = || format!("--message-id takes 32 hex digits, not `{text}`");
    if text.len() != 32 || !text.is_ascii() {
        return Err(bad());
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(id)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `cap sign --profile production`: stamps fresh signature metadata on the packet and
/// writes the production wire bytes (canonical unsigned bytes, then field 14).
pub fn sign(a: &SignArgs, key: &PrivateKey) -> Result<ExitCode> {
    let (Some(key_id), Some(audience)) = (a.key_id.as_deref(), a.audience.as_deref()) else {
        return usage("--profile production needs --key-id and --audience");
    };
    let issued = match a.issued_at.as_deref().map(instant).transpose() {
        Ok(t) => t.unwrap_or_else(SystemTime::now),
        Err(e) => return usage(e),
    };
    let id = match a.message_id.as_deref().map(message_id).transpose() {
        Ok(id) => id,
        Err(e) => return usage(e),
    };
    let seal = Seal::new(key_id, audience, issued)
        .and_then(|s| s.with_lifetime(Duration::from_secs(a.lifetime)));
    let mut seal = match seal {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    if let Some(id) = id {
        seal = seal.with_message_id(id);
    }
    let raw = read_input(a.input.as_deref())?;
    let mut pkt = packet::decode(&raw, packet::DEFAULT_MAX_PACKET_BYTES)
        .context("input is not a valid BusPacket")?;
    // The packet is re-encoded to add the metadata: a field this version does not know
    // would be dropped, and the profile forbids them anyway.
    let known = canonical::to_bytes(&pkt);
    if canonical::canonicalize::<v1::BusPacket>(&raw).context("input is not a valid BusPacket")?
        != known
    {
        bail!("input carries fields this version does not know (CAP-PRODUCTION allows none)");
    }
    if a.now {
        pkt.created_at = Some(packet::timestamp(SystemTime::now()));
    }
    let signed = production::seal(&pkt, key, &seal)?;
    write_stdout(&signed)?;
    Ok(ExitCode::SUCCESS)
}

/// `cap verify --profile production`.
pub fn verify(a: &VerifyArgs) -> Result<ExitCode> {
    if a.trust.is_some() {
        return usage("--trust is for the legacy profile: give --key ID=PEM");
    }
    let mut keys: Vec<(String, PublicKey)> = Vec::new();
    for spec in &a.keys {
        let Some((id, path)) = spec.split_once('=').filter(|(id, _)| !id.is_empty()) else {
            return usage(format!(
                "--key takes ID=PEM with --profile production, not `{spec}`"
            ));
        };
        let key = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|pem| PublicKey::from_pem(&pem).map_err(|e| e.to_string()));
        match key {
            Ok(k) => keys.push((id.to_owned(), k)),
            Err(e) => return usage(format!("{path}: {e}")),
        }
    }
    if keys.is_empty() {
        return usage("no key given: use --key ID=PEM");
    }
    let Some(audience) = a.audience.as_deref() else {
        return usage("--profile production needs --audience");
    };
    let now = match a.now.as_deref().map(instant).transpose() {
        Ok(t) => t.unwrap_or_else(SystemTime::now),
        Err(e) => return usage(e),
    };
    let raw = match read_input(a.input.as_deref()) {
        Ok(r) => r,
        Err(e) => return usage(format!("{e:#}")),
    };
    let claimed: v1::BusPacket = match prost::Message::decode(raw.as_slice()) {
        Ok(p) => p,
        Err(e) => return usage(format!("input is not a BusPacket: {e}")),
    };
    let (tenant, sender) = if a.accept_packet_identity {
        let tenant = claimed
            .identity
            .as_ref()
            .map(|i| i.tenant_id.clone())
            .unwrap_or_default();
        (tenant, claimed.sender_id.clone())
    } else {
        match (&a.tenant, &a.sender) {
            (Some(t), Some(s)) => (t.clone(), s.clone()),
            _ => {
                return usage(
                    "give --tenant and --sender (the authority the packet must be bound to), \
                     or --accept-packet-identity",
                );
            }
        }
    };
    let trust = match ProductionTrust::new(audience, &tenant, &sender) {
        Ok(t) => t,
        Err(e) if a.accept_packet_identity => {
            eprintln!(
                "cap: invalid: the packet's tenant `{tenant}` or sender `{sender}` cannot be \
                 an authority ({e})"
            );
            return Ok(ExitCode::from(1));
        }
        Err(e) => return usage(e),
    };
    let trust = keys
        .into_iter()
        .fold(trust, |t, (id, key)| t.with_key(id, key))
        .with_clock_skew(Duration::from_secs(a.skew));
    let trust = match trust {
        Ok(t) => t,
        Err(e) => return usage(e),
    };
    let verified = production::verify(&raw, &trust, now).and_then(|v| {
        if let (Some(v1::bus_packet::Payload::JobRequest(r)), Some(id)) =
            (&v.packet().payload, &v.packet().identity)
        {
            production::validate_identity_binding(r, id)?;
        }
        Ok(v)
    });
    match verified {
        Ok(v) => {
            let p = v.packet();
            let meta = p.signature_metadata.clone().unwrap_or_default();
            let expires = meta.expires_at.map(|t| t.to_string()).unwrap_or_default();
            println!(
                "valid: CAP-PRODUCTION signature by key `{}` from `{}` for tenant `{}`, \
                 audience `{}`, message id {}, expires {expires}",
                meta.key_id,
                p.sender_id,
                trust.tenant(),
                meta.audience,
                hex(v.message_id()),
            );
            if a.accept_packet_identity {
                eprintln!(
                    "cap: note: tenant and sender were taken from the packet, not checked \
                     against an expected authority"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("cap: invalid: {e} ({})", e.code());
            Ok(ExitCode::from(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_and_message_ids() {
        assert_eq!(
            instant("2098-12-31T23:56:00Z").unwrap(),
            UNIX_EPOCH + Duration::from_secs(4_070_908_560)
        );
        assert_eq!(
            instant("1970-01-01T01:00:00.5+01:00").unwrap(),
            UNIX_EPOCH + Duration::from_millis(500)
        );
        assert_eq!(
            instant("1969-12-31T23:59:59.25Z").unwrap(),
            UNIX_EPOCH - Duration::from_millis(750)
        );
        assert!(instant("yesterday").is_err());
        assert_eq!(
            message_id("000102030405060708090a0b0c0d0e0f").unwrap(),
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
        );
        assert!(message_id("00").is_err());
        assert!(message_id("zz0102030405060708090a0b0c0d0e0f").is_err());
        assert!(message_id("é0102030405060708090a0b0c0d0e0").is_err());
    }
}
