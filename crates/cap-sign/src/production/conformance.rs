//! The contract every [`ReplayStore`] must honour, written once and run against each
//! backend (the in-memory store here, Redis in `cap-runtime`, and any third-party store).

use super::ProductionError;
use super::replay::{ReplayEntry, ReplayKey, ReplayOutcome, ReplayStore};
use std::time::{Duration, SystemTime};

/// Runs the replay-store contract against `store` at `now`, on keys whose tenant starts
/// with `unique` (use a fresh value per run on a shared backend). Returns the first
/// broken rule.
///
/// Rules: first admission is `First`, a repeat is `Duplicate` (also after a conflicting
/// attempt); the same key with another digest is `ReplayConflict`; keys that differ in any
/// one of tenant, audience, sender or message id are independent, also when the strings
/// could be joined ambiguously; empty key strings and entries already past `keep_until`
/// are refused as unavailable, and the refusal admits nothing.
pub async fn check_replay_store<S: ReplayStore + ?Sized>(
    store: &S,
    unique: &str,
    now: SystemTime,
) -> Result<(), String> {
    let keep = now + Duration::from_secs(120);
    let base = ReplayEntry {
        key: ReplayKey {
            tenant: format!("{unique}-tenant"),
            audience: "job.conformance".into(),
            sender: "sender-1".into(),
            message_id: [0x11; 16],
        },
        digest: [0xaa; 32],
        keep_until: keep,
    };
    expect(
        store,
        &base,
        now,
        Ok(ReplayOutcome::First),
        "first admission",
    )
    .await?;
    expect(
        store,
        &base,
        now,
        Ok(ReplayOutcome::Duplicate),
        "same bytes again",
    )
    .await?;
    let other_digest = ReplayEntry {
        digest: [0xbb; 32],
        ..base.clone()
    };
    expect(
        store,
        &other_digest,
        now,
        Err(ProductionError::ReplayConflict),
        "same key, other digest",
    )
    .await?;
    expect(
        store,
        &base,
        now,
        Ok(ReplayOutcome::Duplicate),
        "original after a conflicting attempt",
    )
    .await?;

    type Change = fn(&mut ReplayKey);
    let variants: [(&str, Change); 4] = [
        ("other tenant", |k| k.tenant.push_str("-2")),
        ("other audience", |k| k.audience.push_str(".2")),
        ("other sender", |k| k.sender.push_str("-2")),
        ("other message id", |k| k.message_id[15] ^= 1),
    ];
    for (what, change) in variants {
        let mut e = base.clone();
        change(&mut e.key);
        expect(store, &e, now, Ok(ReplayOutcome::First), what).await?;
        expect(store, &e, now, Ok(ReplayOutcome::Duplicate), what).await?;
    }
    // Strings that would collide if joined with a separator.
    let mut left = base.clone();
    left.key.tenant = format!("{unique}-x:y");
    left.key.audience = "z".into();
    let mut right = base.clone();
    right.key.tenant = format!("{unique}-x");
    right.key.audience = "y:z".into();
    expect(
        store,
        &left,
        now,
        Ok(ReplayOutcome::First),
        "joined strings (1)",
    )
    .await?;
    expect(
        store,
        &right,
        now,
        Ok(ReplayOutcome::First),
        "joined strings (2)",
    )
    .await?;

    let mut empty = base.clone();
    empty.key.sender = String::new();
    unavailable(store, &empty, now, "empty sender").await?;
    let mut expired = base.clone();
    expired.key.message_id = [0x22; 16];
    expired.keep_until = now;
    unavailable(store, &expired, now, "entry already past keep_until").await?;
    expired.keep_until = keep;
    expect(
        store,
        &expired,
        now,
        Ok(ReplayOutcome::First),
        "a refused entry was not remembered",
    )
    .await
}

async fn expect<S: ReplayStore + ?Sized>(
    store: &S,
    entry: &ReplayEntry,
    now: SystemTime,
    want: Result<ReplayOutcome, ProductionError>,
    what: &str,
) -> Result<(), String> {
    let got = store.admit(entry, now).await;
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: expected {want:?}, got {got:?}"))
    }
}

async fn unavailable<S: ReplayStore + ?Sized>(
    store: &S,
    entry: &ReplayEntry,
    now: SystemTime,
    what: &str,
) -> Result<(), String> {
    match store.admit(entry, now).await {
        Err(ProductionError::ReplayUnavailable(_)) => Ok(()),
        other => Err(format!("{what}: expected ReplayUnavailable, got {other:?}")),
    }
}
