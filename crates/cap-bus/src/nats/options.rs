//! [`NatsOptions`]: how [`NatsBus`](super::NatsBus) connects, settable from code and
//! from the environment.

use super::jetstream::{JetStreamOptions, Retention, Storage};
use crate::{Error, ErrorKind};
use std::{fmt, path::PathBuf, time::Duration};

/// Default server when `NATS_URL` is not set.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// How the client authenticates. At most one method is used.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// No credentials.
    #[default]
    None,
    /// A token (`NATS_TOKEN`).
    Token(String),
    /// User and password (`NATS_USER`, `NATS_PASSWORD`).
    UserPassword {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// An NKey seed (`NATS_NKEY`, the `SU…` seed text).
    NKey(String),
    /// A `.creds` file with a user JWT and NKey seed (`NATS_CREDS`).
    CredsFile(PathBuf),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        match self {
            Auth::None => f.write_str("None"),
            Auth::Token(_) => f.write_str("Token(<redacted>)"),
            Auth::UserPassword { user, .. } => write!(f, "UserPassword {{ user: {user:?} }}"),
            Auth::NKey(_) => f.write_str("NKey(<redacted>)"),
            Auth::CredsFile(p) => write!(f, "CredsFile({p:?})"),
        }
    }
}

/// TLS settings. TLS is used when the URL says `tls://`, when the server requires it,
/// or when [`required`](TlsOptions::required) is set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsOptions {
    /// PEM file with extra root certificates (`NATS_TLS_CA`).
    pub ca: Option<PathBuf>,
    /// PEM client certificate (`NATS_TLS_CERT`); needs [`key`](TlsOptions::key).
    pub cert: Option<PathBuf>,
    /// PEM client key (`NATS_TLS_KEY`); needs [`cert`](TlsOptions::cert).
    pub key: Option<PathBuf>,
    /// Refuse to connect without TLS (`NATS_TLS_REQUIRED`).
    pub required: bool,
}

/// Reconnection with exponential backoff: the delay before attempt `n` is
/// `initial × 2^(n-1)`, capped at `max`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconnectOptions {
    /// First delay (`NATS_RECONNECT_DELAY_MS`, default 100 ms).
    pub initial_delay: Duration,
    /// Largest delay (`NATS_RECONNECT_MAX_DELAY_MS`, default 5 s).
    pub max_delay: Duration,
    /// Give up after this many attempts; `None` = never (`NATS_MAX_RECONNECTS`, `0` or
    /// unset = never).
    pub max_attempts: Option<usize>,
}

impl Default for ReconnectOptions {
    fn default() -> Self {
        ReconnectOptions {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_attempts: None,
        }
    }
}

impl ReconnectOptions {
    /// Backoff from `initial_delay` doubling up to `max_delay`, never giving up.
    pub fn new(initial_delay: Duration, max_delay: Duration) -> Self {
        ReconnectOptions {
            initial_delay,
            max_delay,
            max_attempts: None,
        }
    }

    /// Gives up after `n` attempts (`None` = never).
    pub fn max_attempts(mut self, n: Option<usize>) -> Self {
        self.max_attempts = n;
        self
    }

    /// The delay before reconnect attempt `attempt` (1-based).
    pub fn delay(&self, attempt: usize) -> Duration {
        let shift = attempt.saturating_sub(1).min(20) as u32;
        self.initial_delay
            .saturating_mul(1u32 << shift)
            .min(self.max_delay)
    }
}

/// Everything [`NatsBus::connect`](super::NatsBus::connect) needs.
///
/// ```
/// use cap_bus::nats::NatsOptions;
/// use std::collections::HashMap;
///
/// let env = HashMap::from([
///     ("NATS_URL", "nats://a:4222, nats://b:4222"),
///     ("NATS_NAME", "scheduler-1"),
///     ("CAP_JETSTREAM_STREAM", "CAP_TEST"),
/// ]);
/// let opts = NatsOptions::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
/// assert_eq!(opts.servers, ["nats://a:4222", "nats://b:4222"]);
/// assert_eq!(opts.name.as_deref(), Some("scheduler-1"));
/// assert_eq!(opts.jetstream.as_ref().unwrap().stream, "CAP_TEST");
///
/// let code = NatsOptions::new("nats://127.0.0.1:4222").name("worker-1").without_jetstream();
/// assert!(code.jetstream.is_none());
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NatsOptions {
    /// Server URLs (`NATS_URL`, comma-separated; default [`DEFAULT_URL`]).
    pub servers: Vec<String>,
    /// Connection name shown by the server (`NATS_NAME`).
    pub name: Option<String>,
    /// Credentials.
    pub auth: Auth,
    /// TLS.
    pub tls: TlsOptions,
    /// Reconnection.
    pub reconnect: ReconnectOptions,
    /// Timeout of one connection attempt (`NATS_CONNECT_TIMEOUT_MS`, default 5 s).
    pub connect_timeout: Duration,
    /// Keep trying when the first connection fails instead of returning an error
    /// (`NATS_RETRY_ON_INITIAL_CONNECT`, default off).
    pub retry_on_initial_connect: bool,
    /// Messages buffered per subscription by the client (default 65536).
    pub subscription_capacity: usize,
    /// JetStream for the durable subjects; `None` = core NATS only
    /// (`CAP_JETSTREAM=off`).
    pub jetstream: Option<JetStreamOptions>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions::new(DEFAULT_URL)
    }
}

impl NatsOptions {
    /// Options for one server URL (or several, comma-separated), with defaults
    /// elsewhere and JetStream on for the default durable subjects.
    pub fn new(url: &str) -> Self {
        NatsOptions {
            servers: split_list(url),
            name: None,
            auth: Auth::None,
            tls: TlsOptions::default(),
            reconnect: ReconnectOptions::default(),
            connect_timeout: Duration::from_secs(5),
            retry_on_initial_connect: false,
            subscription_capacity: 65536,
            jetstream: Some(JetStreamOptions::default()),
        }
    }

    /// Options from the process environment (see [`from_lookup`](NatsOptions::from_lookup)).
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Options from a variable lookup. Variables (all optional):
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `NATS_URL` | comma-separated server URLs (default `nats://127.0.0.1:4222`) |
    /// | `NATS_NAME` | connection name |
    /// | `NATS_TOKEN` | token auth |
    /// | `NATS_USER`, `NATS_PASSWORD` | user/password auth |
    /// | `NATS_NKEY` | NKey seed auth |
    /// | `NATS_CREDS` | path of a `.creds` file |
    /// | `NATS_TLS_CA`, `NATS_TLS_CERT`, `NATS_TLS_KEY` | PEM files |
    /// | `NATS_TLS_REQUIRED` | `true`/`false` |
    /// | `NATS_RECONNECT_DELAY_MS`, `NATS_RECONNECT_MAX_DELAY_MS` | backoff bounds |
    /// | `NATS_MAX_RECONNECTS` | attempts before giving up (`0` = never give up) |
    /// | `NATS_CONNECT_TIMEOUT_MS` | one connection attempt |
    /// | `NATS_RETRY_ON_INITIAL_CONNECT` | `true`/`false` |
    /// | `CAP_JETSTREAM` | `on` (default) / `off` |
    /// | `CAP_JETSTREAM_STREAM` | stream name (default `CAP_JOBS`) |
    /// | `CAP_JETSTREAM_SUBJECTS` | comma-separated durable subjects |
    /// | `CAP_JETSTREAM_RETENTION` | `workqueue` (default) / `limits` |
    /// | `CAP_JETSTREAM_STORAGE` | `file` (default) / `memory` |
    /// | `CAP_JETSTREAM_MAX_AGE_SECS` | how long unconsumed messages are kept |
    /// | `CAP_JETSTREAM_ACK_WAIT_MS` | redelivery delay of an unacknowledged message |
    /// | `CAP_JETSTREAM_MAX_DELIVER` | deliveries per message (`-1` = unlimited) |
    /// | `CAP_JETSTREAM_REPLICAS` | stream copies on a NATS cluster (default 1) |
    ///
    /// More than one auth method, a certificate without a key, or an unparsable number
    /// is an [`ErrorKind::Config`] error.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let mut o = NatsOptions::new(get("NATS_URL").as_deref().unwrap_or(DEFAULT_URL));
        o.name = get("NATS_NAME");

        let mut auths = Vec::new();
        if let Some(t) = get("NATS_TOKEN") {
            auths.push(Auth::Token(t));
        }
        match (get("NATS_USER"), get("NATS_PASSWORD")) {
            (Some(user), Some(password)) => auths.push(Auth::UserPassword { user, password }),
            (None, None) => {}
            _ => return Err(config("NATS_USER and NATS_PASSWORD must be set together")),
        }
        if let Some(seed) = get("NATS_NKEY") {
            auths.push(Auth::NKey(seed));
        }
        if let Some(path) = get("NATS_CREDS") {
            auths.push(Auth::CredsFile(path.into()));
        }
        if auths.len() > 1 {
            return Err(config(
                "set at most one of NATS_TOKEN, NATS_USER/NATS_PASSWORD, NATS_NKEY, NATS_CREDS",
            ));
        }
        o.auth = auths.pop().unwrap_or_default();

        o.tls = TlsOptions {
            ca: get("NATS_TLS_CA").map(Into::into),
            cert: get("NATS_TLS_CERT").map(Into::into),
            key: get("NATS_TLS_KEY").map(Into::into),
            required: parse_bool(&get, "NATS_TLS_REQUIRED")?.unwrap_or(false),
        };
        if let Some(ms) = parse_num::<u64>(&get, "NATS_RECONNECT_DELAY_MS")? {
            o.reconnect.initial_delay = Duration::from_millis(ms);
        }
        if let Some(ms) = parse_num::<u64>(&get, "NATS_RECONNECT_MAX_DELAY_MS")? {
            o.reconnect.max_delay = Duration::from_millis(ms);
        }
        if let Some(n) = parse_num::<usize>(&get, "NATS_MAX_RECONNECTS")? {
            o.reconnect.max_attempts = (n > 0).then_some(n);
        }
        if let Some(ms) = parse_num::<u64>(&get, "NATS_CONNECT_TIMEOUT_MS")? {
            o.connect_timeout = Duration::from_millis(ms);
        }
        if let Some(b) = parse_bool(&get, "NATS_RETRY_ON_INITIAL_CONNECT")? {
            o.retry_on_initial_connect = b;
        }

        let js_on = match get("CAP_JETSTREAM").map(|v| v.trim().to_ascii_lowercase()) {
            None => true,
            Some(v) if matches!(v.as_str(), "on" | "true" | "1" | "yes") => true,
            Some(v) if matches!(v.as_str(), "off" | "false" | "0" | "no") => false,
            Some(_) => return Err(config("CAP_JETSTREAM must be on or off")),
        };
        o.jetstream = if js_on {
            let mut js = JetStreamOptions::default();
            if let Some(s) = get("CAP_JETSTREAM_STREAM") {
                js.stream = s.trim().to_owned();
            }
            if let Some(s) = get("CAP_JETSTREAM_SUBJECTS") {
                js.subjects = split_list(&s);
            }
            if let Some(r) = get("CAP_JETSTREAM_RETENTION") {
                js.retention = match r.trim().to_ascii_lowercase().as_str() {
                    "workqueue" => Retention::WorkQueue,
                    "limits" => Retention::Limits,
                    _ => {
                        return Err(config(
                            "CAP_JETSTREAM_RETENTION must be workqueue or limits",
                        ));
                    }
                };
            }
            if let Some(s) = get("CAP_JETSTREAM_STORAGE") {
                js.storage = match s.trim().to_ascii_lowercase().as_str() {
                    "file" => Storage::File,
                    "memory" => Storage::Memory,
                    _ => return Err(config("CAP_JETSTREAM_STORAGE must be file or memory")),
                };
            }
            if let Some(s) = parse_num::<u64>(&get, "CAP_JETSTREAM_MAX_AGE_SECS")? {
                js.max_age = Duration::from_secs(s);
            }
            if let Some(ms) = parse_num::<u64>(&get, "CAP_JETSTREAM_ACK_WAIT_MS")? {
                js.ack_wait = Duration::from_millis(ms);
            }
            if let Some(n) = parse_num::<usize>(&get, "CAP_JETSTREAM_REPLICAS")? {
                js.replicas = n;
            }
            if let Some(n) = parse_num::<i64>(&get, "CAP_JETSTREAM_MAX_DELIVER")? {
                js.max_deliver = n;
            }
            Some(js)
        } else {
            None
        };
        o.validate()?;
        Ok(o)
    }

    /// Sets the connection name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the credentials.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Sets TLS.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Sets reconnection.
    pub fn reconnect(mut self, reconnect: ReconnectOptions) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// Sets JetStream options (durable subjects, stream, consumers).
    pub fn jetstream(mut self, js: JetStreamOptions) -> Self {
        self.jetstream = Some(js);
        self
    }

    /// Core NATS only: no subject is durable.
    pub fn without_jetstream(mut self) -> Self {
        self.jetstream = None;
        self
    }

    /// Checks the options for contradictions (done by `connect` too).
    pub fn validate(&self) -> Result<(), Error> {
        if self.servers.is_empty() {
            return Err(config("no server URL"));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err(config(
                "a TLS client certificate needs its key (and the reverse)",
            ));
        }
        if let Some(js) = &self.jetstream {
            js.validate()?;
        }
        Ok(())
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(crate) fn config(detail: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, detail)
}

fn parse_num<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    key: &str,
) -> Result<Option<T>, Error> {
    match get(key) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| config(format!("{key} is not a valid number"))),
    }
}

fn parse_bool(get: &impl Fn(&str) -> Option<String>, key: &str) -> Result<Option<bool>, Error> {
    match get(key).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(None),
        Some(v) if matches!(v.as_str(), "true" | "1" | "yes" | "on") => Ok(Some(true)),
        Some(v) if matches!(v.as_str(), "false" | "0" | "no" | "off") => Ok(Some(false)),
        Some(_) => Err(config(format!("{key} must be true or false"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<NatsOptions, Error> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        NatsOptions::from_lookup(|k| env.get(k).cloned())
    }

    #[test]
    fn defaults_without_env() {
        let o = from(&[]).unwrap();
        assert_eq!(o.servers, [DEFAULT_URL]);
        assert_eq!(o.auth, Auth::None);
        let js = o.jetstream.unwrap();
        assert_eq!(js.stream, "CAP_JOBS");
        assert_eq!(js.subjects, ["sys.job.submit", "sys.job.result", "job.>"]);
    }

    #[test]
    fn every_variable_is_read() {
        let o = from(&[
            ("NATS_URL", "tls://h:1,tls://g:2"),
            ("NATS_NAME", "n"),
            ("NATS_CREDS", "/x.creds"),
            ("NATS_TLS_CA", "/ca.pem"),
            ("NATS_TLS_CERT", "/c.pem"),
            ("NATS_TLS_KEY", "/k.pem"),
            ("NATS_TLS_REQUIRED", "true"),
            ("NATS_RECONNECT_DELAY_MS", "50"),
            ("NATS_RECONNECT_MAX_DELAY_MS", "800"),
            ("NATS_MAX_RECONNECTS", "7"),
            ("NATS_CONNECT_TIMEOUT_MS", "1500"),
            ("NATS_RETRY_ON_INITIAL_CONNECT", "yes"),
            ("CAP_JETSTREAM_STREAM", "S"),
            ("CAP_JETSTREAM_SUBJECTS", "a.b, c.>"),
            ("CAP_JETSTREAM_RETENTION", "limits"),
            ("CAP_JETSTREAM_STORAGE", "memory"),
            ("CAP_JETSTREAM_MAX_AGE_SECS", "60"),
            ("CAP_JETSTREAM_ACK_WAIT_MS", "2000"),
            ("CAP_JETSTREAM_MAX_DELIVER", "3"),
        ])
        .unwrap();
        assert_eq!(o.servers, ["tls://h:1", "tls://g:2"]);
        assert_eq!(o.auth, Auth::CredsFile("/x.creds".into()));
        assert!(o.tls.required && o.tls.ca.is_some() && o.tls.key.is_some());
        assert_eq!(o.reconnect.initial_delay, Duration::from_millis(50));
        assert_eq!(o.reconnect.max_attempts, Some(7));
        assert_eq!(o.reconnect.delay(1), Duration::from_millis(50));
        assert_eq!(o.reconnect.delay(3), Duration::from_millis(200));
        assert_eq!(o.reconnect.delay(60), Duration::from_millis(800));
        assert_eq!(o.connect_timeout, Duration::from_millis(1500));
        assert!(o.retry_on_initial_connect);
        let js = o.jetstream.unwrap();
        assert_eq!((js.stream.as_str(), js.subjects.len()), ("S", 2));
        assert_eq!(js.retention, Retention::Limits);
        assert_eq!(js.storage, Storage::Memory);
        assert_eq!(js.max_age, Duration::from_secs(60));
        assert_eq!(js.ack_wait, Duration::from_secs(2));
        assert_eq!(js.max_deliver, 3);
        assert!(
            from(&[("CAP_JETSTREAM", "off")])
                .unwrap()
                .jetstream
                .is_none()
        );
        assert_eq!(
            from(&[("NATS_USER", "u"), ("NATS_PASSWORD", "p")])
                .unwrap()
                .auth,
            Auth::UserPassword {
                user: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(
            from(&[("NATS_TOKEN", "t")]).unwrap().auth,
            Auth::Token("t".into())
        );
        assert_eq!(
            from(&[("NATS_NKEY", "SU")]).unwrap().auth,
            Auth::NKey("SU".into())
        );
    }

    #[test]
    fn contradictions_are_config_errors() {
        let bad: &[&[(&str, &str)]] = &[
            &[("NATS_TOKEN", "t"), ("NATS_NKEY", "s")],
            &[("NATS_USER", "u")],
            &[("NATS_TLS_CERT", "/c.pem")],
            &[("NATS_MAX_RECONNECTS", "many")],
            &[("NATS_TLS_REQUIRED", "maybe")],
            &[("CAP_JETSTREAM", "sometimes")],
            &[("CAP_JETSTREAM_RETENTION", "interest")],
            &[("CAP_JETSTREAM_STORAGE", "tape")],
            &[("CAP_JETSTREAM_SUBJECTS", "a..b")],
            &[("CAP_JETSTREAM_STREAM", "a.b")],
            &[("NATS_URL", " , ")],
        ];
        for env in bad {
            let err = from(env).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config, "{env:?}: {err}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let o = NatsOptions::default().auth(Auth::UserPassword {
            user: "me".into(),
            password: "hunter2".into(),
        });
        let dbg = format!("{o:?}");
        assert!(dbg.contains("me") && !dbg.contains("hunter2"), "{dbg}");
        assert!(!format!("{:?}", Auth::Token("sekrit".into())).contains("sekrit"));
        assert!(!format!("{:?}", Auth::NKey("SUSEED".into())).contains("SUSEED"));
    }
}
