//! JetStream for the durable CAP subjects: the stream, the durable consumers of queue
//! groups, and acknowledgements.
//!
//! # Design
//! - **Which subjects are durable**: [`JetStreamOptions::subjects`], by default
//!   `sys.job.submit`, `sys.job.result` and every pool subject `job.>`. Everything
//!   else (heartbeats, alerts, progress, handshakes, `worker.<id>.jobs`, request/reply)
//!   stays on core NATS.
//! - **One stream** ([`JetStreamOptions::stream`], default `CAP_JOBS`) captures them,
//!   file storage, **work-queue retention**: a message stays until the consumer it is
//!   delivered to acknowledges it (or [`max_age`](JetStreamOptions::max_age) passes,
//!   default 7 days), so a job published while no worker runs waits for one.
//!   `Retention::Limits` keeps messages until `max_age`/`max_bytes` instead.
//! - **Publishing** to a durable subject goes through JetStream and returns only once
//!   the server has stored the message. Each publish carries a `Nats-Msg-Id` header
//!   (unless the caller set one), so the retries done while the connection is being
//!   re-established (up to [`publish_retry`](JetStreamOptions::publish_retry)) cannot
//!   store it twice.
//! - **Queue subscriptions** on a pattern inside the durable set use a durable pull
//!   consumer named after the queue group (characters other than `A-Za-z0-9_-`
//!   replaced by `_`), filtered on the pattern, explicit ack,
//!   [`ack_wait`](JetStreamOptions::ack_wait) before redelivery (default 5 s: the
//!   fail-over time of a killed member; live members report long work in progress),
//!   [`max_deliver`](JetStreamOptions::max_deliver) deliveries at most. A consumer
//!   that exists with another ack wait or max deliver (made by an older version) is
//!   updated to the configured values. All members
//!   of the group share the consumer, so each message goes to one of them. The
//!   consumer outlives the process: that is what makes redelivery after a crash work.
//!   With work-queue retention, the filters of two groups must not overlap (the server
//!   refuses), which CAP's one-group-per-pool-subject layout satisfies.
//! - **Plain subscriptions** (observers) on durable subjects use core NATS: they see
//!   every message published from now on and need no acknowledgement.
//! - **Created or checked at start**: `connect` creates the stream if missing, adds
//!   missing subjects to an existing one, and refuses (an [`ErrorKind::Config`] error)
//!   a stream whose retention differs.

use super::options::config;
use crate::{Acknowledge, Error, ErrorKind, check};
use async_nats::jetstream::{self, AckKind, consumer::pull, stream};
use futures_core::future::BoxFuture;
use std::time::Duration;

/// Default [`JetStreamOptions::ack_wait`]: a delivery not acknowledged (nor reported in
/// progress) within 5 s goes to another member of the queue group.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(5);

/// How long the stream keeps messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retention {
    /// Until acknowledged by the consumer it was delivered to (job queues).
    #[default]
    WorkQueue,
    /// Until the stream's age or size limits drop it.
    Limits,
}

/// Where the stream stores messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Storage {
    /// On disk: survives a server restart.
    #[default]
    File,
    /// In memory.
    Memory,
}

/// JetStream settings of a [`NatsBus`](super::NatsBus).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JetStreamOptions {
    /// Stream name (default `CAP_JOBS`).
    pub stream: String,
    /// The durable subject patterns (default `sys.job.submit`, `sys.job.result`, `job.>`).
    pub subjects: Vec<String>,
    /// Retention (default work queue).
    pub retention: Retention,
    /// Storage (default file).
    pub storage: Storage,
    /// Oldest message kept (default 7 days).
    pub max_age: Duration,
    /// Largest stream size in bytes, `-1` for no limit (default).
    pub max_bytes: i64,
    /// Window in which a repeated `Nats-Msg-Id` is discarded (default 2 minutes).
    pub duplicate_window: Duration,
    /// Time a consumer has to acknowledge before redelivery (default 5 s): how long the
    /// jobs (and scheduler events) held by a process that died wait before another
    /// member of the queue group gets them. A live holder keeps a delivery longer by
    /// reporting it in progress (CAP workers do, every `ack_wait / 3` or so).
    pub ack_wait: Duration,
    /// Deliveries per message at most, `-1` for unlimited (default 5).
    pub max_deliver: i64,
    /// Unacknowledged messages per consumer at most (default 1000).
    pub max_ack_pending: i64,
    /// Messages one subscription pulls at a time (default 16). Small batches spread a
    /// queue group's work evenly; messages pulled but not acknowledged before a crash
    /// are redelivered after `ack_wait`.
    pub batch: usize,
    /// How long a durable publish keeps retrying while the connection is down
    /// (default 30 s).
    pub publish_retry: Duration,
    /// Timeout of one JetStream API call or publish acknowledgement (default 5 s).
    pub api_timeout: Duration,
    /// Copies of the stream kept by a NATS cluster (default 1; 3 on a 3-node cluster
    /// keeps every message through the loss of one node). At most 5.
    pub replicas: usize,
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        JetStreamOptions {
            stream: "CAP_JOBS".into(),
            subjects: vec![
                cap_proto::subject::SUBMIT.into(),
                cap_proto::subject::RESULT.into(),
                format!("{}>", cap_proto::subject::POOL_PREFIX),
            ],
            retention: Retention::WorkQueue,
            storage: Storage::File,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: -1,
            duplicate_window: Duration::from_secs(120),
            ack_wait: DEFAULT_ACK_WAIT,
            max_deliver: 5,
            max_ack_pending: 1000,
            batch: 16,
            publish_retry: Duration::from_secs(30),
            api_timeout: Duration::from_secs(5),
            replicas: 1,
        }
    }
}

impl JetStreamOptions {
    /// Options for a stream `name` capturing `subjects` (other settings default).
    pub fn new(
        name: impl Into<String>,
        subjects: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        JetStreamOptions {
            stream: name.into(),
            subjects: subjects.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Sets [`ack_wait`](JetStreamOptions::ack_wait).
    pub fn ack_wait(mut self, d: Duration) -> Self {
        self.ack_wait = d;
        self
    }

    /// Sets [`max_deliver`](JetStreamOptions::max_deliver).
    pub fn max_deliver(mut self, n: i64) -> Self {
        self.max_deliver = n;
        self
    }

    /// Sets [`storage`](JetStreamOptions::storage).
    pub fn storage(mut self, s: Storage) -> Self {
        self.storage = s;
        self
    }

    /// Sets [`retention`](JetStreamOptions::retention).
    pub fn retention(mut self, r: Retention) -> Self {
        self.retention = r;
        self
    }

    /// Sets [`replicas`](JetStreamOptions::replicas).
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Sets [`batch`](JetStreamOptions::batch).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
        self
    }

    /// Checks the stream name and subject patterns.
    pub fn validate(&self) -> Result<(), Error> {
        let name_ok = !self.stream.is_empty()
            && self.stream.len() <= 256
            && self
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(config(
                "stream name must be 1-256 characters of A-Za-z0-9_-",
            ));
        }
        if self.subjects.is_empty() {
            return Err(config("JetStream needs at least one durable subject"));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(config("stream replicas must be 1 to 5"));
        }
        for s in &self.subjects {
            check::pattern(s).map_err(|e| config(format!("durable subject {s:?}: {e}")))?;
        }
        Ok(())
    }

    /// Whether a message published to `subject` is stored.
    pub fn is_durable_subject(&self, subject: &str) -> bool {
        self.subjects
            .iter()
            .any(|p| cap_proto::subject::matches(p, subject))
    }

    /// Whether every subject matched by `pattern` is stored.
    pub fn is_durable_pattern(&self, pattern: &str) -> bool {
        self.subjects.iter().any(|c| check::covers(c, pattern))
    }

    pub(crate) fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: self.stream.clone(),
            subjects: self.subjects.clone(),
            retention: match self.retention {
                Retention::WorkQueue => stream::RetentionPolicy::WorkQueue,
                Retention::Limits => stream::RetentionPolicy::Limits,
            },
            storage: match self.storage {
                Storage::File => stream::StorageType::File,
                Storage::Memory => stream::StorageType::Memory,
            },
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    pub(crate) fn consumer_config(&self, durable: &str, pattern: &str) -> pull::Config {
        pull::Config {
            durable_name: Some(durable.to_owned()),
            filter_subject: pattern.to_owned(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            max_ack_pending: self.max_ack_pending,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        }
    }
}

/// The durable consumer name for a queue group.
///
/// ```
/// assert_eq!(cap_bus::nats::durable_name("job.echo"), "job_echo");
/// assert_eq!(cap_bus::nats::durable_name("sched-1"), "sched-1");
/// ```
pub fn durable_name(queue: &str) -> String {
    queue
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Creates the stream, or checks and completes an existing one.
pub(crate) async fn ensure_stream(
    ctx: &jetstream::Context,
    opts: &JetStreamOptions,
) -> Result<(), Error> {
    let want = opts.stream_config();
    let mut stream = ctx
        .get_or_create_stream(want.clone())
        .await
        .map_err(|e| js_setup_error("create or get stream", e))?;
    let info = stream
        .info()
        .await
        .map_err(|e| js_setup_error("stream info", e))?;
    let have = info.config.clone();
    if have.retention != want.retention {
        return Err(config(format!(
            "stream {} exists with retention {:?}, configured {:?}",
            opts.stream, have.retention, want.retention
        )));
    }
    let missing: Vec<&String> = want
        .subjects
        .iter()
        .filter(|s| !have.subjects.contains(s))
        .collect();
    if !missing.is_empty() {
        let mut updated = have.clone();
        updated.subjects.extend(missing.into_iter().cloned());
        ctx.update_stream(updated)
            .await
            .map_err(|e| js_setup_error("update stream subjects", e))?;
    }
    Ok(())
}

/// The durable pull consumer `name` on `stream`, filtered on `pattern`: created when
/// missing; an existing one with another filter is a [`ErrorKind::Config`] error, and
/// one with another ack wait or max deliver is updated to the configured values (so a
/// changed fail-over time takes effect on consumers made earlier).
pub(crate) async fn ensure_consumer(
    stream: &stream::Stream,
    opts: &JetStreamOptions,
    name: &str,
    pattern: &str,
) -> Result<jetstream::consumer::PullConsumer, Error> {
    let sub_err = |what: &str, e: &dyn std::fmt::Display| {
        Error::new(
            ErrorKind::Subscribe,
            format!("durable consumer {name}: {what}: {e}"),
        )
    };
    let want = opts.consumer_config(name, pattern);
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(name, want.clone())
        .await
        .map_err(|e| sub_err("create", &e))?;
    let have = &consumer.cached_info().config;
    if have.filter_subject != pattern {
        return Err(config(format!(
            "durable consumer {name} exists with filter {:?}, not {pattern:?}",
            have.filter_subject
        )));
    }
    if have.ack_wait == want.ack_wait && have.max_deliver == want.max_deliver {
        return Ok(consumer);
    }
    tracing::info!(
        consumer = name,
        ack_wait_ms = want.ack_wait.as_millis() as u64,
        was_ms = have.ack_wait.as_millis() as u64,
        "updating the durable consumer's ack wait / max deliver"
    );
    // Creating an existing durable with a changed config updates it (the editable
    // fields, which these are).
    stream
        .create_consumer(want)
        .await
        .map_err(|e| sub_err("update", &e))
}

fn js_setup_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    let text = e.to_string();
    let kind = if text.contains("timed out") || text.contains("unavailable") {
        ErrorKind::ConnectionLost
    } else {
        ErrorKind::Config
    };
    Error::with_source(kind, format!("JetStream {what}: {text}"), e)
}

/// The acknowledgement of one JetStream delivery.
pub(crate) struct JsAck(pub(crate) jetstream::message::Acker);

fn ack_error(what: &str, e: async_nats::Error) -> Error {
    Error::with_source(ErrorKind::Ack, what.to_owned(), e)
}

impl Acknowledge for JsAck {
    fn ack(&self) -> BoxFuture<'_, Result<(), Error>> {
        // A double ack waits for the server's confirmation, so a successful `ack()` means
        // the message will not come back.
        Box::pin(async move { self.0.double_ack().await.map_err(|e| ack_error("ack", e)) })
    }

    fn nak(&self, delay: Option<Duration>) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.0
                .ack_with(AckKind::Nak(delay))
                .await
                .map_err(|e| ack_error("nak", e))
        })
    }

    fn in_progress(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.0
                .ack_with(AckKind::Progress)
                .await
                .map_err(|e| ack_error("in progress", e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_sets() {
        let js = JetStreamOptions::default();
        assert!(js.is_durable_subject("sys.job.submit"));
        assert!(js.is_durable_subject("job.echo"));
        assert!(js.is_durable_subject("job.code.review"));
        assert!(!js.is_durable_subject("sys.heartbeat"));
        assert!(!js.is_durable_subject("worker.w1.jobs"));
        assert!(js.is_durable_pattern("job.echo"));
        assert!(js.is_durable_pattern("job.*"));
        assert!(!js.is_durable_pattern("sys.job.*"));
        assert!(!js.is_durable_pattern(">"));
    }

    #[test]
    fn configs_follow_options() {
        let js = JetStreamOptions::new("T1", ["t1.>"])
            .ack_wait(Duration::from_secs(2))
            .max_deliver(-1)
            .storage(Storage::Memory)
            .retention(Retention::Limits)
            .batch(0);
        assert_eq!(js.batch, 1);
        js.validate().unwrap();
        let s = js.stream_config();
        assert_eq!(s.retention, stream::RetentionPolicy::Limits);
        assert_eq!(s.storage, stream::StorageType::Memory);
        assert_eq!(s.subjects, ["t1.>"]);
        let c = js.consumer_config("g", "t1.a");
        assert_eq!(c.durable_name.as_deref(), Some("g"));
        assert_eq!(c.filter_subject, "t1.a");
        assert_eq!(c.ack_wait, Duration::from_secs(2));
        assert_eq!(c.max_deliver, -1);
        assert_eq!(durable_name("a.b c*>"), "a_b_c__");
        assert!(JetStreamOptions::new("", ["a"]).validate().is_err());
        assert!(
            JetStreamOptions::new("A", Vec::<String>::new())
                .validate()
                .is_err()
        );
        assert!(JetStreamOptions::new("A", ["a.>.b"]).validate().is_err());
    }
}
