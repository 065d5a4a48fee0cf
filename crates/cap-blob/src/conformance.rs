//! The [`BlobStore`] contract as a test suite, for every backend, ours and yours.
//!
//! Run it from a test against a fresh store; `prefix` keeps the suite's keys apart from
//! anything else in a shared server (use a random one per run). The suite removes its keys
//! when it is done. It needs a tokio runtime with the time driver (TTL checks sleep, for
//! well under a second each).
//!
//! ```
//! use cap_blob::{MemoryBlobStore, conformance};
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let store = MemoryBlobStore::new();
//! conformance::run(&store, "conf-doc").await.unwrap();
//! # });
//! ```
//!
//! Each check is also a public function, to run alone or to see what a contract item means.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;

use crate::{BlobStore, ErrorKind, Pointer, Result};

/// TTL used by the expiry checks, and how long they wait past it.
const SHORT_TTL: Duration = Duration::from_millis(250);
const EXPIRY_MARGIN: Duration = Duration::from_millis(250);

/// One violated contract item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The check that failed (`missing_key`, `ttl_expiry`, ...).
    pub check: &'static str,
    /// What was expected and what happened.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.message)
    }
}

impl std::error::Error for Failure {}

/// Every failed check of a [`run`].
#[derive(Clone, PartialEq, Eq)]
pub struct Failures(pub Vec<Failure>);

impl fmt::Display for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} blob store conformance check(s) failed:",
            self.0.len()
        )?;
        for failure in &self.0 {
            writeln!(f, "  - {failure}")?;
        }
        Ok(())
    }
}

// `unwrap()` in a test prints Debug: make it the readable list.
impl fmt::Debug for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Failures {}

/// The outcome of one check.
pub type Outcome = std::result::Result<(), Failure>;

/// The names of all checks, in the order [`run`] runs them.
pub const CHECKS: &[&str] = &[
    "missing_key",
    "round_trip",
    "overwrite",
    "binary_data",
    "delete",
    "ttl_expiry",
    "put_replaces_ttl",
    "size_limit",
    "concurrent_writers",
    "put_if_absent",
    "invalid_keys",
    "pointers",
];

/// Runs every check; `Err` lists all that failed.
pub async fn run<S: BlobStore + ?Sized>(
    store: &S,
    prefix: &str,
) -> std::result::Result<(), Failures> {
    let outcomes = [
        missing_key(store, prefix).await,
        round_trip(store, prefix).await,
        overwrite(store, prefix).await,
        binary_data(store, prefix).await,
        delete(store, prefix).await,
        ttl_expiry(store, prefix).await,
        put_replaces_ttl(store, prefix).await,
        size_limit(store, prefix).await,
        concurrent_writers(store, prefix).await,
        put_if_absent(store, prefix).await,
        invalid_keys(store, prefix).await,
        pointers(store, prefix).await,
    ];
    let failures: Vec<Failure> = outcomes.into_iter().filter_map(|o| o.err()).collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Failures(failures))
    }
}

fn fail(check: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        check,
        message: message.into(),
    }
}

/// `Ok(value)` or a failure naming the step.
fn ok<T>(check: &'static str, step: &str, r: Result<T>) -> std::result::Result<T, Failure> {
    r.map_err(|e| fail(check, format!("{step}: unexpected error: {e}")))
}

/// The call must fail with `kind`.
fn err_kind<T: fmt::Debug>(
    check: &'static str,
    step: &str,
    r: Result<T>,
    kind: ErrorKind,
) -> Outcome {
    match r {
        Err(e) if e.kind() == kind => Ok(()),
        Err(e) => Err(fail(
            check,
            format!("{step}: expected {kind:?}, got {:?}: {e}", e.kind()),
        )),
        Ok(v) => Err(fail(
            check,
            format!("{step}: expected {kind:?}, got Ok({v:?})"),
        )),
    }
}

fn same(check: &'static str, step: &str, got: &[u8], want: &[u8]) -> Outcome {
    if got == want {
        return Ok(());
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    Err(fail(
        check,
        format!(
            "{step}: got {} bytes, want {} bytes (first difference at byte {at})",
            got.len(),
            want.len()
        ),
    ))
}

/// Deletes `keys`, ignoring errors: cleanup after a check.
async fn cleanup<S: BlobStore + ?Sized>(store: &S, keys: &[String]) {
    for k in keys {
        let _ = store.delete(k).await;
    }
}

/// Runs `body`, then deletes `keys` whatever happened.
async fn with_cleanup<S, F>(store: &S, keys: &[String], body: F) -> Outcome
where
    S: BlobStore + ?Sized,
    F: Future<Output = Outcome>,
{
    let outcome = body.await;
    cleanup(store, keys).await;
    outcome
}

/// `put_if_absent` creates a missing key, leaves a live one (value and TTL) alone, takes
/// the place of an expired one, and of 16 concurrent callers on one key exactly one wins.
pub async fn put_if_absent<S: BlobStore + ?Sized>(store: &S, prefix: &str) -> Outcome {
    const C: &str = "put_if_absent";
    let key = format!("{prefix}-pia");
    let race = format!("{prefix}-pia-race");
    let short = format!("{prefix}-pia-short");
    let keys = [key.clone(), race.clone(), short.clone()];
    with_cleanup(store, &keys, async {
        let hour = Some(Duration::from_secs(3600));
        let first = store
            .put_if_absent(&key, Bytes::from_static(b"a"), hour)
            .await;
        if !ok(C, "first put_if_absent", first)? {
            return Err(fail(C, "false for a key never written"));
        }
        let second = store
            .put_if_absent(&key, Bytes::from_static(b"b"), None)
            .await;
        if ok(C, "second put_if_absent", second)? {
            return Err(fail(C, "true for a key holding a live blob"));
        }
        same(C, "value kept", &ok(C, "get", store.get(&key).await)?, b"a")?;
        // An expired blob is no blob.
        let put = store
            .put(&short, Bytes::from_static(b"s"), Some(SHORT_TTL))
            .await;
        ok(C, "put short", put)?;
        tokio::time::sleep(SHORT_TTL + EXPIRY_MARGIN).await;
        let over = store
            .put_if_absent(&short, Bytes::from_static(b"n"), hour)
            .await;
        if !ok(C, "put_if_absent over an expired blob", over)? {
            return Err(fail(C, "false for a key whose blob expired"));
        }
        same(
            C,
            "new value",
            &ok(C, "get", store.get(&short).await)?,
            b"n",
        )?;
        // Exactly one winner of a race.
        let racers = (0..16u8).map(|i| {
            let race = &race;
            async move { store.put_if_absent(race, Bytes::from(vec![i]), hour).await }
        });
        let mut winners = Vec::new();
        for (i, r) in join_all(racers).await.into_iter().enumerate() {
            if ok(C, "racing put_if_absent", r)? {
                winners.push(i);
            }
        }
        let [winner] = winners[..] else {
            return Err(fail(
                C,
                format!("{} winners of one race: {winners:?}", winners.len()),
            ));
        };
        let got = ok(C, "get raced", store.get(&race).await)?;
        same(
            C,
            "the winner's value",
            &got,
            &[u8::try_from(winner).unwrap_or(u8::MAX)],
        )
    })
    .await
}

/// A key that was never written reads as `NotFound`, does not exist, and deletes as `false`.
pub async fn missing_key<S: BlobStore + ?Sized>(store: &S, prefix: &str) -> Outcome {
    const C: &str = "missing_key";
    let key = format!("{prefix}-missing");
    err_kind(C, "get", store.get(&key).await, ErrorKind::NotFound)?;
    if ok(C, "exists", store.exists(&key).await)? {
        return Err(fail(C, "exists() is true for a key never written"));
    }
    if ok(C, "delete", store.delete(&key).await)? {
        return Err(fail(C, "delete() is true for a key never written"));
    }
    Ok(())
}

/// What is put is what is got; an empty blob is a blob, not a missing one.
pub async fn round_trip<S: BlobStore + ?Sized>(store: &S, prefix: &str) -> Outcome {
    const C: &str = "round_trip";
    let (k, empty) = (format!("{prefix}-rt"), format!("{prefix}-rt-empty"));
    with_cleanup(store, &[k.clone(), empty.clone()], async {
        let v = Bytes::from_static(br#"{"prompt":"hello","n":1}"#);
        ok(C, "put", store.put(&k, v.clone(), None).await)?;
        same(C, "get", &ok(C, "get", store.get(&k).await)?, &v)?;
        if !ok(C, "exists", store.exists(&k).await)? {
            return Err(fail(C, "exists() is false right after put"));
        }
        ok(C, "put empty", store.put(&empty, Bytes::new(), None).await)?;
        same(
            C,
            "get empty",
            &ok(C, "get empty", store.get(&empty).await)?,
            b"",
        )?;
        if !ok(C, "exists empty", store.exists(&empty).await)? {
            return Err(fail(C, "exists() is false for an empty blob"));
        }
        Ok(())
    })
    .await
}

/// A second put replaces the first, also with a shorter value.
pub async fn overwrite<S: BlobStore + ?Sized>(store: &S, prefix: &str) -> Outcome {
    const C: &str = "overwrite";
    let k = format!("{prefix}-ow");
    with_cleanup(store, std::slice::from_ref(&k), async {
        ok(
            C,
            "put 1",
            store.put(&k, Bytes::from(vec![b'a'; 1000]), None).await,
        )?;
        ok(
            C,
            "put 2",
            store.put(&k, Bytes::from_static(b"short"), None).await,
        )?;
        same(C, "get", &ok(C, "get", store.get(&k).await)?, b"short")
    })
    .await
}

/// Values are opaque bytes: every byte value, invalid UTF-8, NULs, protocol-like framing.
pub async fn binary_data<S: BlobStore + ?Sized>(store: &S, prefix: &str) -> Outcome {
    const C: &str = "binary_data";
    let all: Vec<u8> = (0..=255u8).cycle().take(256 * 4).collect();
    let samples: Vec<(&str, Vec<u8>)> = vec![
        ("all byte values", all),
        (
            "invalid UTF-8",
            vec![0xff, 0xfe, 0x80, 0xc0, 0xaf, 0xed, 0xa0, 0x80, 0xf8],
        ),
        ("NULs", vec![0, 0, 0, b'x', 0]),
        ("RESP framing", b"$-1\r\n*3\r\n$3\r\nSET\r\n\r\n".to_vec()),
        ("pseudo-random 256 KiB", pseudo_random(256 * 1024)),
    ];
    let keys: Vec<String> = (0..samples.len())
        .map(|i| format!("{prefix}-bin{i}"))
        .collect();
    let limit = store.limits().max_blob_bytes;
    with_cleanup(store, &keys, async {
        for ((what, data), k) in samples.iter().zip(&keys) {
            let data = &data[..data.len().min(limit)];
            ok(
                C,
                what,
                store.put(k, Bytes::copy_from_slice(data), None).await,
            )?;
            same(C, what, &ok(C, what, store.get(k).await)?, data)?;
        }
        Ok(())
    })
    .await
}

/// Delete removes a live blob (`true`) and then finds nothing (`false`).
pub async fn delete<S: BlobStore + ?Sized>(store: &S, prefix: &str) -> Outcome {
    const C: &str = "delete";
    let k = format!("{prefix}-del");
    with_cleanup(store, std::slice::from_ref(&k), async {
        ok(
            C,
            "put",
            store.put(&k, Bytes::from_static(b"x"), None).await,
        )?;
        if !ok(C, "delete", store.delete(&k).await)? {
            return Err(fail(C, "delete() of a live blob returned false"));
        }
        err_kind(
            C,
            "get after delete",
            store.get(&k).await,
            ErrorKind::NotFound,
        )?;
        if ok(C, "exists after delete", store.exists(&k).await)? {
            return Err(fail(C, "exists() is true after delete"));
        }
        if ok(C, "second delete", store.delete(&k).await)? {
            return Err(fail(C, "a second delete() returned true"));
        }
        Ok(())
    })
    .await
}

/// A blob with a TTL is there before it and gone after it; one without stays.
pub async fn ttl_expiry<S: BlobStore + ?Sized>(store: &S, prefix: &str) -> Outcome {
    const C: &str = "ttl_expiry";
    let short = format!("{prefix}-ttl-short");
    let long = format!("{prefix}-ttl-long");
    let forever = format!("{prefix}-ttl-none");
    let keys = [short.clone(), long.clone(), forever.clone()];
    with_cleanup(store, &keys, async {
        let hour = Some(Duration::from_secs(3600));
        ok(
            C,
            "put long",
            store.put(&long, Bytes::from_static(b"l"), hour).await,
        )?;
        ok(
            C,
            "put forever",
            store.put(&forever, Bytes::from_static(b"f"), None).await,
        )?;
        let t0 = Instant::now();
        let put = store
            .put(&short, Bytes::from_static(b"s"), Some(SHORT_TTL))
            .await;
        ok(C, "put short", put)?;
        let before = store.get(&short).await;
        // Judged only if it ran within the TTL: a slow machine must not fail a good store.
        if t0.elapsed() < SHORT_TTL {
            same(
                C,
                "get before expiry",
                &ok(C, "get before expiry", before)?,
                b"s",
            )?;
        }
        tokio::time::sleep_until((t0 + SHORT_TTL + EXPIRY_MARGIN).into()).await;
        let after = store.get(&short).await;
        err_kind(C, "get after expiry", after, ErrorKind::NotFound)?;
        if ok(C, "exists after expiry", store.exists(&short).await)? {
            return Err(fail(C, "exists() is true after the TTL"));
        }
        if ok(C, "delete after expiry", store.delete(&short).await)? {
            return Err(fail(C, "delete() of an expired blob returned true"));
        }
        same(
            C,
            "get long",
            &ok(C, "get long", store.get(&long).await)?,
            b"l",
        )?;
        same(
            C,
            "get forever",
            &ok(C, "get forever", store.get(&forever).await)?,
            b"f",
        )
    })
    .await
}

/// A put replaces the TTL too: without one the blob becomes permanent, with one it expires.
pub async fn put_replaces_ttl<S: BlobStore + ?Sized>(store: &S, prefix: &str) -> Outcome {
    const C: &str = "put_replaces_ttl";
    let (a, b) = (format!("{prefix}-rettl-a"), format!("{prefix}-rettl-b"));
    with_cleanup(store, &[a.clone(), b.clone()], async {
        ok(
            C,
            "put a with ttl",
            store
                .put(&a, Bytes::from_static(b"1"), Some(SHORT_TTL))
                .await,
        )?;
        ok(
            C,
            "put a without",
            store.put(&a, Bytes::from_static(b"2"), None).await,
        )?;
        ok(
            C,
            "put b without",
            store.put(&b, Bytes::from_static(b"1"), None).await,
        )?;
        ok(
            C,
            "put b with ttl",
            store
                .put(&b, Bytes::from_static(b"2"), Some(SHORT_TTL))
                .await,
        )?;
        tokio::time::sleep(SHORT_TTL + EXPIRY_MARGIN).await;
        same(C, "a kept", &ok(C, "get a", store.get(&a).await)?, b"2")?;
        err_kind(C, "b expired", store.get(&b).await, ErrorKind::NotFound)
    })
    .await
}

/// The size limit holds: exactly the limit is stored, one byte more is refused with
/// `TooLarge` and leaves the previous value in place.
pub async fn size_limit<S: BlobStore + ?Sized>(store: &S, prefix: &str) -> Outcome {
    const C: &str = "size_limit";
    let limit = store.limits().max_blob_bytes;
    let k = format!("{prefix}-size");
    with_cleanup(store, std::slice::from_ref(&k), async {
        ok(
            C,
            "put at limit",
            store.put(&k, Bytes::from(vec![7u8; limit]), None).await,
        )?;
        let got = ok(C, "get at limit", store.get(&k).await)?;
        if got.len() != limit {
            return Err(fail(
                C,
                format!("stored {limit} bytes, got {} back", got.len()),
            ));
        }
        ok(
            C,
            "put small",
            store.put(&k, Bytes::from_static(b"small"), None).await,
        )?;
        let over = Bytes::from(vec![8u8; limit + 1]);
        err_kind(
            C,
            "put over limit",
            store.put(&k, over, None).await,
            ErrorKind::TooLarge,
        )?;
        same(
            C,
            "previous value kept",
            &ok(C, "get", store.get(&k).await)?,
            b"small",
        )
    })
    .await
}

/// Concurrent writers to one key leave exactly one writer's value, whole; concurrent
/// writers to different keys all land.
pub async fn concurrent_writers<S: BlobStore + ?Sized>(store: &S, prefix: &str) -> Outcome {
    const C: &str = "concurrent_writers";
    const WRITERS: u8 = 32;
    let shared = format!("{prefix}-conc");
    let own: Vec<String> = (0..WRITERS).map(|i| format!("{prefix}-conc{i}")).collect();
    let mut keys = own.clone();
    keys.push(shared.clone());
    with_cleanup(store, &keys, async {
        // Distinct lengths, all within the limit.
        let base = (64 * 1024).min(store.limits().max_blob_bytes - usize::from(WRITERS));
        let value = |i: u8| Bytes::from(vec![i; base + usize::from(i)]);
        let writes = (0..WRITERS).map(|i| {
            let (shared, own, v) = (&shared, &own[usize::from(i)], value(i));
            async move {
                let a = store.put(shared, v.clone(), None).await;
                let b = store.put(own, v, None).await;
                a.and(b)
            }
        });
        for r in join_all(writes).await {
            ok(C, "concurrent put", r)?;
        }
        let got = ok(C, "get shared", store.get(&shared).await)?;
        let writer = got.first().copied().unwrap_or(u8::MAX);
        if writer >= WRITERS || got != value(writer) {
            return Err(fail(
                C,
                "the shared key holds no single writer's whole value (torn write)",
            ));
        }
        for (i, k) in (0..WRITERS).zip(&own) {
            same(
                C,
                "own key",
                &ok(C, "get own", store.get(k).await)?,
                &value(i),
            )?;
        }
        Ok(())
    })
    .await
}

/// Keys a pointer cannot carry are refused with `InvalidKey` by every operation.
pub async fn invalid_keys<S: BlobStore + ?Sized>(store: &S, _prefix: &str) -> Outcome {
    const C: &str = "invalid_keys";
    for bad in ["", "has space", "new\nline", "user@host"] {
        let what = format!("{bad:?}");
        err_kind(C, &what, store.get(bad).await, ErrorKind::InvalidKey)?;
        err_kind(
            C,
            &what,
            store.put(bad, Bytes::new(), None).await,
            ErrorKind::InvalidKey,
        )?;
        err_kind(C, &what, store.delete(bad).await, ErrorKind::InvalidKey)?;
        err_kind(C, &what, store.exists(bad).await, ErrorKind::InvalidKey)?;
    }
    Ok(())
}

/// Keys map to pointers and back; the job helpers use `ctx:`/`res:` keys; a pointer the
/// store does not serve is `InvalidPointer`.
pub async fn pointers<S: BlobStore + ?Sized>(store: &S, prefix: &str) -> Outcome {
    const C: &str = "pointers";
    let key = format!("{prefix}-ptr");
    let job = format!("{prefix}-job");
    let keys = [
        key.clone(),
        crate::key::context(&job),
        crate::key::result(&job),
    ];
    with_cleanup(store, &keys, async {
        let p = ok(C, "pointer_for", store.pointer_for(&key))?;
        let text = p.to_string();
        let parsed = Pointer::parse(&text)
            .map_err(|e| fail(C, format!("pointer {text} does not parse: {e}")))?;
        if ok(C, "key_for", store.key_for(&parsed))? != key {
            return Err(fail(
                C,
                format!("pointer {text} does not map back to key {key}"),
            ));
        }
        ok(
            C,
            "put_ptr",
            store.put_ptr(&parsed, Bytes::from_static(b"p"), None).await,
        )?;
        same(C, "get by key", &ok(C, "get", store.get(&key).await)?, b"p")?;

        let ctx = ok(
            C,
            "put_context",
            store.put_context(&job, Bytes::from_static(b"c")).await,
        )?;
        let res = ok(
            C,
            "put_result",
            store.put_result(&job, Bytes::from_static(b"r")).await,
        )?;
        if ok(C, "key_for ctx", store.key_for(&ctx))? != crate::key::context(&job) {
            return Err(fail(
                C,
                format!("context pointer {ctx} does not name ctx:{job}"),
            ));
        }
        if ok(C, "key_for res", store.key_for(&res))? != crate::key::result(&job) {
            return Err(fail(
                C,
                format!("result pointer {res} does not name res:{job}"),
            ));
        }
        same(
            C,
            "get_ptr ctx",
            &ok(C, "get_ptr ctx", store.get_ptr(&ctx).await)?,
            b"c",
        )?;
        same(
            C,
            "get_ptr res",
            &ok(C, "get_ptr res", store.get_ptr(&res).await)?,
            b"r",
        )?;

        let foreign =
            Pointer::parse("https://example.org/blob").map_err(|e| fail(C, e.to_string()))?;
        err_kind(
            C,
            "foreign pointer",
            store.key_for(&foreign).map(str::to_owned),
            ErrorKind::InvalidPointer,
        )
    })
    .await
}

/// Deterministic bytes that look random (xorshift), so no two regions are alike.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}
