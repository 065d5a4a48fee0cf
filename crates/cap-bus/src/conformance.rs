//! The transport conformance kit (feature `conformance`): the [`Bus`] contract as
//! executable checks, generic over the implementation.
//!
//! ```
//! use cap_bus::{MemoryBus, conformance};
//! # tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap().block_on(async {
//! let report = conformance::run(MemoryBus::new(), &conformance::Config::unique()).await.unwrap();
//! assert!(report.passed.contains(&"queue_balance"));
//! # });
//! ```
//!
//! [`run`] executes every check in turn and closes the bus at the end (the `close`
//! check is destructive). Each check is also public, so a transport under development
//! can run them one by one. Every check uses subjects under [`Config::prefix`], so
//! runs on a shared server do not see each other's traffic. The checks spawn tasks:
//! call them inside a Tokio runtime with the timer enabled.

use crate::{Bus, Error, ErrorKind, Headers, Message};
use bytes::Bytes;
use futures_util::StreamExt;
use std::{
    collections::BTreeSet,
    fmt,
    time::{Duration, Instant},
};

/// Settings of a conformance run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Subject prefix (one or more tokens) for everything the run publishes.
    pub prefix: String,
    /// Longest wait for an expected message.
    pub timeout: Duration,
    /// How long silence must last to conclude that no more messages come.
    pub quiet: Duration,
    /// Messages in the queue-group balance check (1000 by default).
    pub balance_messages: usize,
}

impl Config {
    /// A run under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Config {
            prefix: prefix.into(),
            timeout: Duration::from_secs(5),
            quiet: Duration::from_millis(150),
            balance_messages: 1000,
        }
    }

    /// A run under a fresh prefix `capconf.<unique>`.
    pub fn unique() -> Self {
        Config::new(format!("capconf.{}", unique_token()))
    }

    fn s(&self, rest: &str) -> String {
        format!("{}.{rest}", self.prefix)
    }
}

/// A token unique to this process and moment (for subject prefixes and names).
pub fn unique_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "t{:x}{:x}{}",
        nanos & 0xffff_ffff_ffff,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A failed check: which one and why.
#[derive(Debug)]
pub struct Failure {
    /// The check's name.
    pub check: &'static str,
    /// What was expected and what happened.
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "conformance check `{}` failed: {}",
            self.check, self.detail
        )
    }
}

impl std::error::Error for Failure {}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Checks that passed.
    pub passed: Vec<&'static str>,
    /// Checks that did not apply (with the reason).
    pub skipped: Vec<(&'static str, &'static str)>,
}

type Outcome = Result<Option<&'static str>, Failure>;

fn fail(check: &'static str, detail: impl Into<String>) -> Failure {
    Failure {
        check,
        detail: detail.into(),
    }
}

fn op<T>(check: &'static str, what: &str, r: Result<T, Error>) -> Result<T, Failure> {
    r.map_err(|e| fail(check, format!("{what}: {e}")))
}

/// Runs every check, then closes `bus`.
pub async fn run<B: Bus>(bus: B, cfg: &Config) -> Result<Report, Failure> {
    let mut report = Report::default();
    macro_rules! check {
        ($name:ident) => {
            match $name(&bus, cfg).await? {
                None => report.passed.push(stringify!($name)),
                Some(why) => report.skipped.push((stringify!($name), why)),
            }
        };
    }
    check!(invalid_input);
    check!(wildcards);
    check!(fan_out);
    check!(ordering);
    check!(queue_groups);
    check!(queue_balance);
    check!(unsubscribe_on_drop);
    check!(headers);
    check!(request_reply);
    check!(request_timeout);
    check!(no_responders);
    check!(payload_too_large);
    check!(clones_and_tasks);
    check!(close);
    Ok(report)
}

async fn next_within<S: futures_core::Stream<Item = Message> + Unpin>(
    sub: &mut S,
    d: Duration,
) -> Option<Message> {
    tokio::time::timeout(d, sub.next()).await.ok().flatten()
}

/// Receives until `n` messages arrived (waiting up to `timeout` for each), then
/// waits `quiet` for extras.
async fn collect<S: futures_core::Stream<Item = Message> + Unpin>(
    sub: &mut S,
    n: usize,
    cfg: &Config,
) -> Vec<Message> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match next_within(sub, cfg.timeout).await {
            Some(m) => out.push(m),
            None => return out,
        }
    }
    while let Some(m) = next_within(sub, cfg.quiet).await {
        out.push(m);
    }
    out
}

/// Receives until `quiet` passes with nothing new (or `timeout` for the first one).
async fn drain_quiet<S: futures_core::Stream<Item = Message> + Unpin>(
    sub: &mut S,
    cfg: &Config,
    first_timeout: Duration,
) -> Vec<Message> {
    let mut out = Vec::new();
    let mut wait = first_timeout;
    while let Some(m) = next_within(sub, wait).await {
        out.push(m);
        wait = cfg.quiet;
    }
    out
}

fn subjects(msgs: &[Message]) -> Vec<String> {
    msgs.iter().map(|m| m.subject().to_owned()).collect()
}

fn payloads(msgs: &[Message]) -> Vec<String> {
    msgs.iter()
        .map(|m| String::from_utf8_lossy(m.payload()).into_owned())
        .collect()
}

/// Bad subjects, patterns and queue names fail with the right kinds and nothing is sent.
pub async fn invalid_input<B: Bus>(bus: &B, cfg: &Config) -> Outcome {
    const C: &str = "invalid_input";
    for bad in ["", "a..b", "a b", "x.*", "x.>", ".a", "a."] {
        match bus.publish(bad, Bytes::from_static(b"x")).await {
            Err(e) if e.kind() == ErrorKind::InvalidSubject => {}
            other => return Err(fail(C, format!("publish to {bad:?}: {other:?}"))),
        }
        match bus
            .request(bad, Bytes::new(), Duration::from_millis(100))
            .await
        {
            Err(e) if e.kind() == ErrorKind::InvalidSubject => {}
            other => return Err(fail(C, format!("request to {bad:?}: {other:?}"))),
        }
    }
    for bad in ["", "a..b", "a b", "a.>.b", "a*", ">x"] {
        match bus.subscribe(bad).await {
            Err(e) if e.kind() == ErrorKind::InvalidPattern => {}
            Err(e) => return Err(fail(C, format!("subscribe {bad:?}: {e}"))),
            Ok(_) => return Err(fail(C, format!("subscribe {bad:?} succeeded"))),
        }
    }
    for bad in ["", "a b", "a\tb"] {
        match bus.queue_subscribe(&cfg.s("q"), bad).await {
            Err(e) if e.kind() == ErrorKind::InvalidPattern => {}
            Err(e) => return Err(fail(C, format!("queue {bad:?}: {e}"))),
            Ok(_) => return Err(fail(C, format!("queue {bad:?} succeeded"))),
        }
    }
    Ok(None)
}

/// `*` matches one token, `>` one or more, literals match exactly.
pub async fn wildcards<B: Bus>(bus: &B, cfg: &Config) -> Outcome {
    const C: &str = "wildcards";
    let patterns = ["w.*", "w.>", "w.a.b", "*.x", "w.*.b"];
    let mut subs = Vec::new();
    for p in patterns {
        subs.push(op(C, "subscribe", bus.subscribe(&cfg.s(p)).await)?);
    }
    op(C, "flush", bus.flush().await)?;
    let published = ["w.a", "w.a.b", "w.c.b", "w", "w.x", "x", "w.a.b.c", "v.a"];
    for s in published {
        op(C, "publish", bus.publish(&cfg.s(s), Bytes::from(s)).await)?;
    }
    op(C, "flush", bus.flush().await)?;
    let expect: [&[&str]; 5] = [
        &["w.a", "w.x"],
        &["w.a", "w.a.b", "w.c.b", "w.x", "w.a.b.c"],
        &["w.a.b"],
        // `{prefix}.*.x` needs exactly one token between the prefix and `x`; the
        // prefix itself may have several tokens, so compute the match the NATS way.
        &[],
        &["w.a.b", "w.c.b"],
    ];
    for (i, sub) in subs.iter_mut().enumerate() {
        let want: Vec<String> = if i == 3 {
            published
                .iter()
                .map(|s| cfg.s(s))
                .filter(|s| cap_proto::subject::matches(&cfg.s("*.x"), s))
                .collect()
        } else {
            expect[i].iter().map(|s| cfg.s(s)).collect()
        };
        let got = subjects(&collect(sub, want.len(), cfg).await);
        if got != want {
            return Err(fail(
                C,
                format!("pattern {:?}: want {want:?}, got {got:?}", patterns[i]),
            ));
        }
    }
    Ok(None)
}

/// Every matching plain subscription gets its own copy.
pub async fn fan_out<B: Bus>(bus: &B, cfg: &Config) -> Outcome {
    const C: &str = "fan_out";
    let subject = cfg.s("fan");
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(op(C, "subscribe", bus.subscribe(&subject).await)?);
    }
    op(C, "flush", bus.flush().await)?;
    for i in 0..10 {
        op(
            C,
            "publish",
            bus.publish(&subject, Bytes::from(i.to_string())).await,
        )?;
    }
    let want: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    for (k, sub) in subs.iter_mut().enumerate() {
        let got = payloads(&collect(sub, 10, cfg).await);
        if got != want {
            return Err(fail(
                C,
                format!("subscriber {k}: want {want:?}, got {got:?}"),
            ));
        }
    }
    Ok(None)
}

/// One publisher's messages arrive in publish order.
pub async fn ordering<B: Bus>(bus: &B, cfg: &Config) -> Outcome {
    const C: &str = "ordering";
    let subject = cfg.s("order");
    let mut sub = op(C, "subscribe", bus.subscribe(&subject).await)?;
    op(C, "flush", bus.flush().await)?;
    let n = 500;
    let publisher = {
        let bus = bus.clone();
        let subject = subject.clone();
        tokio::spawn(async move {
            for i in 0..n {
                bus.publish(&subject, Bytes::from(i.to_string())).await?;
            }
            Ok::<(), Error>(())
        })
    };
    let got = payloads(&collect(&mut sub, n, cfg).await);
    op(
        C,
        "publisher",
        publisher
            .await
            .map_err(|e| Error::new(ErrorKind::Publish, e.to_string()))
            .and_then(|r| r),
    )?;
    let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    if got != want {
        let first_bad = got.iter().zip(&want).position(|(a, b)| a != b);
        return Err(fail(
            C,
            format!(
                "got {} messages, first out of order at {first_bad:?}",
                got.len()
            ),
        ));
    }
    Ok(None)
}

/// Each message goes to exactly one member of each queue group, and also to plain
/// subscribers.
pub async fn queue_groups<B: Bus>(bus: &B, cfg: &Config) -> Outcome {
    const C: &str = "queue_groups";
    let subject = cfg.s("qg.work");
    let pattern = cfg.s("qg.*");
    let mut g1 = Vec::new();
    for _ in 0..3 {
        g1.push(op(
            C,
            "queue_subscribe",
            bus.queue_subscribe(&pattern, "g1").await,
        )?);
    }
    let mut g2 = op(
        C,
        "queue_subscribe",
        bus.queue_subscribe(&pattern, "g2").await,
    )?;
    let mut plain = op(C, "subscribe", bus.subscribe(&pattern).await)?;
    op(C, "flush", bus.flush().await)?;
    let n = 30;
    for i in 0..n {
        op(
            C,
            "publish",
            bus.publish(&subject, Bytes::from(i.to_string())).await,
        )?;
    }
    op(C, "flush", bus.flush().await)?;
    let mut seen = Vec::new();
    for m in g1.iter_mut() {
        seen.extend(payloads(&drain_quiet(m, cfg, cfg.quiet * 4).await));
    }
    let unique: BTreeSet<&String> = seen.iter().collect();
    if seen.len() != n || unique.len() != n {
        return Err(fail(
            C,
            format!(
                "group g1 of 3 got {} messages ({} distinct), want {n} once each",
                seen.len(),
                unique.len()
            ),
        ));
    }
    for (name, sub) in [("g2", &mut g2), ("plain", &mut plain)] {
        let got = collect(sub, n, cfg).await.len();
        if got != n {
            return Err(fail(C, format!("{name} got {got} messages, want {n}")));
        }
    }
    Ok(None)
}

/// A queue group of three spreads `balance_messages` messages: each one exactly once,
/// every member at least a tenth of them.
pub async fn queue_balance<B: Bus>(bus: &B, cfg: &Config) -> Outcome {
    const C: &str = "queue_balance";
    let subject = cfg.s("balance");
    let n = cfg.balance_messages;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let mut sub = op(
            C,
            "queue_subscribe",
            bus.queue_subscribe(&subject, "workers").await,
        )?;
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(async move {
            payloads(&drain_quiet(&mut sub, &cfg, cfg.timeout).await)
        }));
    }
    op(C, "flush", bus.flush().await)?;
    for i in 0..n {
        op(
            C,
            "publish",
            bus.publish(&subject, Bytes::from(i.to_string())).await,
        )?;
    }
    op(C, "flush", bus.flush().await)?;
    let mut counts = Vec::new();
    let mut all = Vec::new();
    for t in tasks {
        let got = t.await.map_err(|e| fail(C, format!("member task: {e}")))?;
        counts.push(got.len());
        all.extend(got);
    }
    let unique: BTreeSet<&String> = all.iter().collect();
    if all.len() != n || unique.len() != n {
        return Err(fail(
            C,
            format!(
                "members got {counts:?} ({} distinct), want {n} once each",
                unique.len()
            ),
        ));
    }
    if counts.iter().any(|&c| c < n / 10) {
        return Err(fail(C, format!("unbalanced: {counts:?} of {n}")));
    }
    Ok(None)
}

/// A dropped subscription stops receiving; the rest of its queue group takes over.
pub async fn unsubscribe_on_drop<B: Bus>(bus: &B, cfg: &Config) -> Outcome {
    const C: &str = "unsubscribe_on_drop";
    let subject = cfg.s("drop");
    let a = op(
        C,
        "queue_subscribe",
        bus.queue_subscribe(&subject, "d").await,
    )?;
    let mut b = op(
        C,
        "queue_subscribe",
        bus.queue_subscribe(&subject, "d").await,
    )?;
    let plain = op(C, "subscribe", bus.subscribe(&subject).await)?;
    drop(a);
    drop(plain);
    op(C, "flush", bus.flush().await)?;
    for i in 0..20 {
        op(
            C,
            "publish",
            bus.publish(&subject, Bytes::from(i.to_string())).await,
        )?;
    }
    let got = collect(&mut b, 20, cfg).await.len();
    if got != 20 {
        return Err(fail(C, format!("remaining member got {got} of 20")));
    }
    Ok(None)
}

/// Headers arrive as sent; a message without headers has none.
pub async fn headers<B: Bus>(bus: &B, cfg: &Config) -> Outcome {
    const C: &str = "headers";
    let subject = cfg.s("hdr");
    let mut sub = op(C, "subscribe", bus.subscribe(&subject).await)?;
    op(C, "flush", bus.flush().await)?;
    let mut h = Headers::new();
    op(C, "header", h.insert("Cap-Trace", "trace-1"))?;
    op(C, "header", h.append("Cap-Hop", "a"))?;
    op(C, "header", h.append("Cap-Hop", "b"))?;
    op(C, "header", h.insert("Cap-Empty", ""))?;
    op(
        C,
        "publish",
        bus.publish_with_headers(&subject, h, Bytes::from_static(b"with"))
            .await,
    )?;
    op(
        C,
        "publish",
        bus.publish(&subject, Bytes::from_static(b"without")).await,
    )?;
    let got = collect(&mut sub, 2, cfg).await;
    let [with, without] = got.as_slice() else {
        return Err(fail(C, format!("got {} messages, want 2", got.len())));
    };
    let wh = with.headers();
    let hops: Vec<&str> = wh.get_all("Cap-Hop").collect();
    if wh.get("Cap-Trace") != Some("trace-1")
        || hops != ["a", "b"]
        || wh.get("Cap-Empty") != Some("")
    {
        return Err(fail(C, format!("headers arrived as {wh:?}")));
    }
    if with.payload() != "with" || without.payload() != "without" {
        return Err(fail(C, "payloads changed"));
    }
    if !without.headers().is_empty() {
        return Err(fail(
            C,
            format!("unexpected headers {:?}", without.headers()),
        ));
    }
    Ok(None)
}

/// A request reaches a responder with its headers and the first reply comes back.
pub async fn request_reply<B: Bus>(bus: &B, cfg: &Config) -> Outcome {
    const C: &str = "request_reply";
    let subject = cfg.s("svc.echo");
    let mut svc = op(
        C,
        "queue_subscribe",
        bus.queue_subscribe(&subject, "svc").await,
    )?;
    op(C, "flush", bus.flush().await)?;
    let responder = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let mut served = 0;
            while let Some(req) = svc.next().await {
                let Some(reply) = req.reply() else { continue };
                let mut h = Headers::new();
                let tag = req.headers().get("Req").unwrap_or("none").to_owned();
                h.insert("Echo", tag)?;
                let mut body = req.payload().to_vec();
                body.reverse();
                bus.publish_with_headers(reply, h, Bytes::from(body))
                    .await?;
                served += 1;
            }
            Ok::<usize, Error>(served)
        })
    };
    for i in 0..5 {
        let h = op(C, "header", Headers::new().with("Req", format!("r{i}")))?;
        let reply = op(
            C,
            "request",
            bus.request_with_headers(&subject, h, Bytes::from(format!("ab{i}")), cfg.timeout)
                .await,
        )?;
        if reply.payload() != format!("{i}ba").as_bytes() {
            return Err(fail(C, format!("reply {i} payload {:?}", reply.payload())));
        }
        if reply.headers().get("Echo") != Some(format!("r{i}").as_str()) {
            return Err(fail(C, format!("reply {i} headers {:?}", reply.headers())));
        }
    }
    let reply = op(
        C,
        "request",
        bus.request(&subject, Bytes::from_static(b"xy"), cfg.timeout)
            .await,
    )?;
    if reply.payload() != "yx" {
        return Err(fail(C, "request without headers"));
    }
    responder.abort();
    Ok(None)
}

/// A request nobody answers fails with `Timeout` after about the timeout.
pub async fn request_timeout<B: Bus>(bus: &B, cfg: &Config) -> Outcome {
    const C: &str = "request_timeout";
    let subject = cfg.s("svc.silent");
    let _silent = op(C, "subscribe", bus.subscribe(&subject).await)?;
    op(C, "flush", bus.flush().await)?;
    let t = Duration::from_millis(300);
    let start = Instant::now();
    let res = bus.request(&subject, Bytes::from_static(b"?"), t).await;
    let took = start.elapsed();
    match res {
        Err(e) if e.kind() == ErrorKind::Timeout => {}
        other => return Err(fail(C, format!("want Timeout, got {other:?}"))),
    }
    if took < t.mul_f32(0.9) || took > t + cfg.timeout {
        return Err(fail(C, format!("timeout of {t:?} took {took:?}")));
    }
    Ok(None)
}

/// A request to a subject without subscribers fails with `NoResponders`.
pub async fn no_responders<B: Bus>(bus: &B, cfg: &Config) -> Outcome {
    const C: &str = "no_responders";
    let res = bus
        .request(&cfg.s("svc.nobody"), Bytes::from_static(b"?"), cfg.timeout)
        .await;
    match res {
        Err(e) if e.kind() == ErrorKind::NoResponders => Ok(None),
        other => Err(fail(C, format!("want NoResponders, got {other:?}"))),
    }
}

/// Messages over [`Bus::max_payload`] fail with `PayloadTooLarge`; one at the limit
/// is delivered.
pub async fn payload_too_large<B: Bus>(bus: &B, cfg: &Config) -> Outcome {
    const C: &str = "payload_too_large";
    let Some(max) = bus.max_payload() else {
        return Ok(Some("the bus has no maximum message size"));
    };
    let subject = cfg.s("big");
    let mut sub = op(C, "subscribe", bus.subscribe(&subject).await)?;
    op(C, "flush", bus.flush().await)?;
    let too_big = Bytes::from(vec![7u8; max + 1]);
    match bus.publish(&subject, too_big.clone()).await {
        Err(e) if e.kind() == ErrorKind::PayloadTooLarge => {}
        other => return Err(fail(C, format!("publish {} bytes: {other:?}", max + 1))),
    }
    match bus.request(&subject, too_big, cfg.timeout).await {
        Err(e) if e.kind() == ErrorKind::PayloadTooLarge => {}
        other => return Err(fail(C, format!("request {} bytes: {other:?}", max + 1))),
    }
    // Headers count towards the size.
    let h = op(C, "header", Headers::new().with("Pad", "x"))?;
    match bus
        .publish_with_headers(&subject, h, Bytes::from(vec![7u8; max]))
        .await
    {
        Err(e) if e.kind() == ErrorKind::PayloadTooLarge => {}
        other => return Err(fail(C, format!("max bytes + headers: {other:?}"))),
    }
    op(
        C,
        "publish at the limit",
        bus.publish(&subject, Bytes::from(vec![7u8; max])).await,
    )?;
    let got = collect(&mut sub, 1, cfg).await;
    match got.as_slice() {
        [m] if m.payload().len() == max => Ok(None),
        _ => Err(fail(
            C,
            format!(
                "want one message of {max} bytes, got sizes {:?}",
                got.iter().map(|m| m.payload().len()).collect::<Vec<_>>()
            ),
        )),
    }
}

/// Clones share subscriptions; publishers in many tasks all get through.
pub async fn clones_and_tasks<B: Bus>(bus: &B, cfg: &Config) -> Outcome {
    const C: &str = "clones_and_tasks";
    let subject = cfg.s("tasks");
    let clone = bus.clone();
    let mut sub = op(C, "subscribe", clone.subscribe(&subject).await)?;
    op(C, "flush", bus.flush().await)?;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let bus = bus.clone();
        let subject = subject.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                bus.publish(&subject, Bytes::from(format!("{t}-{i}")))
                    .await?;
            }
            bus.flush().await
        }));
    }
    let got = payloads(&collect(&mut sub, 400, cfg).await);
    for t in tasks {
        op(
            C,
            "task",
            t.await
                .map_err(|e| Error::new(ErrorKind::Publish, e.to_string()))
                .and_then(|r| r),
        )?;
    }
    let unique: BTreeSet<&String> = got.iter().collect();
    if got.len() != 400 || unique.len() != 400 {
        return Err(fail(
            C,
            format!("got {} ({} distinct), want 400", got.len(), unique.len()),
        ));
    }
    Ok(None)
}

/// `close` drains: buffered messages are still yielded, then every stream ends; later
/// operations fail with `Closed` on the bus and its clones; closing twice is fine.
pub async fn close<B: Bus>(bus: &B, cfg: &Config) -> Outcome {
    const C: &str = "close";
    let subject = cfg.s("close");
    let mut plain = op(C, "subscribe", bus.subscribe(&subject).await)?;
    let mut queued = op(
        C,
        "queue_subscribe",
        bus.queue_subscribe(&subject, "cq").await,
    )?;
    let mut idle = op(C, "subscribe", bus.subscribe(&cfg.s("close.idle")).await)?;
    op(C, "flush", bus.flush().await)?;
    for i in 0..3 {
        op(
            C,
            "publish",
            bus.publish(&subject, Bytes::from(i.to_string())).await,
        )?;
    }
    op(C, "flush", bus.flush().await)?;
    // Make sure the messages reached the subscriptions before closing.
    let first = next_within(&mut plain, cfg.timeout).await;
    if first.is_none() {
        return Err(fail(C, "no message before close"));
    }
    let clone = bus.clone();
    op(C, "close", bus.close().await)?;
    if !bus.is_closed() || !clone.is_closed() {
        return Err(fail(C, "is_closed() is false after close"));
    }
    for (name, sub) in [
        ("plain", &mut plain),
        ("queue", &mut queued),
        ("idle", &mut idle),
    ] {
        let deadline = Instant::now() + cfg.timeout;
        loop {
            match tokio::time::timeout_at(deadline.into(), sub.next()).await {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => {
                    return Err(fail(C, format!("{name} stream did not end after close")));
                }
            }
        }
    }
    let expect_closed = |what: &str, r: Result<(), Error>| match r {
        Err(e) if e.kind() == ErrorKind::Closed => Ok(()),
        other => Err(fail(C, format!("{what} after close: {other:?}"))),
    };
    expect_closed("publish", clone.publish(&subject, Bytes::new()).await)?;
    expect_closed("subscribe", clone.subscribe(&subject).await.map(|_| ()))?;
    expect_closed(
        "queue_subscribe",
        clone.queue_subscribe(&subject, "q").await.map(|_| ()),
    )?;
    expect_closed(
        "request",
        clone
            .request(&subject, Bytes::new(), Duration::from_millis(100))
            .await
            .map(|_| ()),
    )?;
    expect_closed("flush", clone.flush().await)?;
    op(C, "second close", clone.close().await)?;
    Ok(None)
}
