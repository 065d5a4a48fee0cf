//! Configuration of the Redis backend, from code or from the environment the official
//! SDKs read.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, Limits, Result};

/// `REDIS_URL` when unset, as in the official SDKs.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// How a [`RedisBlobStore`](super::RedisBlobStore) connects.
///
/// ```
/// use cap_blob::RedisConfig;
/// let env = [("REDIS_URL", "rediss://:pw@cache:6380/1"), ("REDIS_TLS_INSECURE", "true")];
/// let cfg = RedisConfig::from_lookup(|k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()));
/// assert_eq!(cfg.url, "rediss://:pw@cache:6380/1");
/// assert!(cfg.tls.insecure);
/// assert_eq!(cfg.redacted_url(), "rediss://:***@cache:6380/1");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisConfig {
    /// `redis://[user:password@]host[:port][/db]` or `rediss://…` for TLS. For a Redis
    /// Cluster, several node URLs separated by commas (any of them is enough to find
    /// the rest), or one with [`cluster`](Self::cluster) set.
    pub url: String,
    /// Whether `url` names a Redis Cluster (also implied by several URLs; set from
    /// `REDIS_CLUSTER=1|true`).
    pub cluster: bool,
    /// TLS settings, used with `rediss://` URLs only.
    pub tls: RedisTlsConfig,
    /// Size limit and default TTLs.
    pub limits: Limits,
    /// Bound on each connection attempt (default 2 s).
    pub connect_timeout: Duration,
    /// Bound on each command's response (default 5 s, the SDK runtime's IO timeout).
    pub response_timeout: Duration,
    /// Connection attempts after a connection is lost, with exponential backoff, before
    /// pending commands fail with [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable)
    /// (default 3: about 0.7 s while Redis refuses connections). The next command tries again.
    pub reconnect_retries: usize,
}

/// `rediss://` settings, with the meaning the official SDKs give the `REDIS_TLS_*` variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisTlsConfig {
    /// `REDIS_TLS_CA` (else `SSL_CERT_FILE`): PEM file of the CA(s) to trust instead of the
    /// system roots.
    pub ca: Option<PathBuf>,
    /// `REDIS_TLS_CERT`: PEM client certificate chain (mutual TLS); needs `key`.
    pub cert: Option<PathBuf>,
    /// `REDIS_TLS_KEY`: PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// `REDIS_TLS_SERVER_NAME`: the name the server certificate must carry, when it is not
    /// the URL's host. TCP still goes to the URL's host and port; the TLS handshake sends
    /// this name (SNI) and verifies the certificate against it, like `server_hostname` in
    /// the Python SDK. A name that is not a valid DNS name or IP address fails
    /// [`connect`](super::RedisBlobStore::connect) with
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig).
    pub server_name: Option<String>,
    /// `REDIS_TLS_INSECURE` = `1`/`true`: skip certificate verification (development only).
    pub insecure: bool,
}

impl RedisTlsConfig {
    /// Reads the `REDIS_TLS_*` variables through `lookup` (blank values count as unset).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        RedisTlsConfig {
            ca: get("REDIS_TLS_CA")
                .or_else(|| get("SSL_CERT_FILE"))
                .map(PathBuf::from),
            cert: get("REDIS_TLS_CERT").map(PathBuf::from),
            key: get("REDIS_TLS_KEY").map(PathBuf::from),
            server_name: get("REDIS_TLS_SERVER_NAME"),
            insecure: get("REDIS_TLS_INSECURE")
                .is_some_and(|v| v.eq_ignore_ascii_case("1") || v.eq_ignore_ascii_case("true")),
        }
    }

    /// Checks the combination: `cert` and `key` come together.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn check(&self) -> Result<()> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(Error::config(
                "REDIS_TLS_CERT and REDIS_TLS_KEY must be set together",
            ));
        }
        Ok(())
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self::new(DEFAULT_REDIS_URL)
    }
}

impl RedisConfig {
    /// Settings for `url` with defaults for the rest, and no TLS files.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            cluster: false,
            tls: RedisTlsConfig::default(),
            limits: Limits::default(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            reconnect_retries: 3,
        }
    }

    /// Settings from the process environment: `REDIS_URL` (default
    /// [`DEFAULT_REDIS_URL`]) and the `REDIS_TLS_*` variables.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let url = lookup("REDIS_URL")
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned());
        let mut cfg = Self::new(url);
        cfg.cluster = lookup("REDIS_CLUSTER").is_some_and(|v| {
            matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes")
        });
        cfg.tls = RedisTlsConfig::from_lookup(lookup);
        cfg
    }

    /// Names a Redis Cluster (see [`url`](Self::url)).
    pub fn with_cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// The node URLs of a cluster configuration (`None` for a single server).
    pub fn cluster_nodes(&self) -> Option<Vec<String>> {
        let nodes: Vec<String> = self
            .url
            .split(',')
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        (self.cluster || nodes.len() > 1).then_some(nodes)
    }

    /// Sets the size limit and default TTLs.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the TLS settings.
    pub fn with_tls(mut self, tls: RedisTlsConfig) -> Self {
        self.tls = tls;
        self
    }

    /// The URL with its password replaced by `***`, safe to log and show in errors. A URL
    /// that does not parse is not shown at all.
    pub fn redacted_url(&self) -> String {
        self.url
            .split(',')
            .map(|u| match url::Url::parse(u.trim()) {
                Ok(url) => redact(&url),
                Err(_) => "<unparseable Redis URL>".to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parses and checks the URL: scheme `redis` or `rediss`, a host.
    pub(crate) fn parsed_url(&self) -> Result<url::Url> {
        Self::check_url(&self.url)
    }

    /// Parses and checks one URL: scheme `redis` or `rediss`, a host.
    pub(crate) fn check_url(text: &str) -> Result<url::Url> {
        let url = url::Url::parse(text).map_err(|e| {
            Error::config_with(
                "REDIS_URL is not a valid URL (not shown: it may carry a password)",
                e,
            )
        })?;
        match url.scheme() {
            "redis" | "rediss" => {}
            other => {
                return Err(Error::config(format!(
                    "Redis URL {} has scheme `{other}`; expected redis:// or rediss://",
                    redact(&url)
                )));
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Error::config(format!(
                "Redis URL {} has no host",
                redact(&url)
            )));
        }
        Ok(url)
    }
}

/// `url` with its password replaced by `***`.
pub(crate) fn redact(url: &url::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Cannot fail: a URL with a password has a host.
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_match_the_sdks() {
        let cfg = RedisConfig::from_lookup(lookup(&[]));
        assert_eq!(cfg.url, "redis://127.0.0.1:6379/0");
        assert_eq!(cfg.tls, RedisTlsConfig::default());
        let cfg = RedisConfig::from_lookup(lookup(&[("REDIS_URL", "  ")]));
        assert_eq!(cfg.url, DEFAULT_REDIS_URL);
    }

    #[test]
    fn tls_variables() {
        let t = RedisTlsConfig::from_lookup(lookup(&[
            ("REDIS_TLS_CA", " /ca.pem "),
            ("SSL_CERT_FILE", "/other.pem"),
            ("REDIS_TLS_CERT", "/c.pem"),
            ("REDIS_TLS_KEY", "/k.pem"),
            ("REDIS_TLS_SERVER_NAME", "redis.internal"),
            ("REDIS_TLS_INSECURE", "TRUE"),
        ]));
        assert_eq!(t.ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(t.cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(t.key, Some(PathBuf::from("/k.pem")));
        assert_eq!(t.server_name.as_deref(), Some("redis.internal"));
        assert!(t.insecure);
        assert!(t.check().is_ok());

        let t = RedisTlsConfig::from_lookup(lookup(&[("SSL_CERT_FILE", "/sys.pem")]));
        assert_eq!(t.ca, Some(PathBuf::from("/sys.pem")));
        for v in ["0", "false", "yes", ""] {
            let t = RedisTlsConfig::from_lookup(lookup(&[("REDIS_TLS_INSECURE", v)]));
            assert!(!t.insecure, "{v:?}");
        }
        let t = RedisTlsConfig::from_lookup(lookup(&[("REDIS_TLS_CERT", "/c.pem")]));
        assert_eq!(
            t.check().unwrap_err().kind(),
            crate::ErrorKind::InvalidConfig
        );
    }

    #[test]
    fn urls_are_checked_and_redacted() {
        let cfg = RedisConfig::new("redis://user:s3cret@host:6380/2");
        assert_eq!(cfg.redacted_url(), "redis://user:***@host:6380/2");
        assert!(cfg.parsed_url().is_ok());
        assert_eq!(
            RedisConfig::new("redis://h/0").redacted_url(),
            "redis://h/0"
        );

        for bad in ["not a url", "http://h/0", "redis://:pw@/0"] {
            let e = RedisConfig::new(bad).parsed_url().unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidConfig, "{bad}");
            assert!(!e.to_string().contains("pw"), "{e}");
        }
        assert_eq!(
            RedisConfig::new("::bad::secret").redacted_url(),
            "<unparseable Redis URL>"
        );
    }
}
