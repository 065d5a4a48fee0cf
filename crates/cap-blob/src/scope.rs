//! [`PointerScope`]: which blobs a job may read through the pointers it carries.
//!
//! A `JobRequest` names its input with `context_ptr`, and whoever submits the job writes
//! that pointer. Without a rule, a worker resolving it is a confused deputy: it reads
//! any key of the store it was given (the scheduler's job records, another job's
//! result) with its own credentials, and returns the bytes as the job's output. The
//! deployment-wide rule, checked by every worker before it reads:
//!
//! - **Reserved**: keys under `cap:` (the scheduler's `cap:sched:*` and anything else
//!   CAP's services keep there) are never readable through a pointer.
//! - **Own keys**: a job may read the keys of its own id: `ctx:<job_id>` (its context,
//!   where our client and the official SDKs write it), `res:<job_id>` and
//!   `art:<job_id>`. Exact keys: job ids are free text, so a prefix of one job's keys
//!   may be another job's key.
//! - **Configured prefixes**: keys starting with a prefix the deployment lists
//!   ([`allow_prefix`](PointerScope::allow_prefix), `CAP_POINTER_PREFIXES`), e.g. a
//!   shared read-only area, a kernel's redacted contexts, or pipelines that feed one
//!   job's result to the next.
//! - **Network targets**: an `https://` pointer to a loopback, private, link-local,
//!   shared, multicast or otherwise non-public address, or to a name that is local by
//!   definition (`localhost`, `*.localhost`, `*.local`, `*.internal`, `*.home.arpa`), is
//!   refused. Names are not resolved here: a public name that resolves to a private
//!   address must be stopped by whatever fetches it.
//!
//! Pointers of other schemes than `redis`, `mem`, `file`, `s3` and `https` do not parse.
//! A refusal is [`ErrorKind::OutOfScope`](crate::ErrorKind::OutOfScope) with a fixed
//! message naming the [`ScopeRule`], never the key or anything the store said.
//!
//! ```
//! use cap_blob::{BlobStore, ErrorKind, MemoryBlobStore, Pointer, PointerScope};
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = MemoryBlobStore::emulating_redis(Default::default());
//! store.put_context("job-1", "{}".into()).await?;
//! store.put("cap:sched:job:job-2", "secret".into(), None).await?;
//! let scope = PointerScope::default();
//!
//! let own = Pointer::context("job-1");
//! assert_eq!(store.get_scoped(&own, &scope.for_job("job-1")).await?, "{}");
//! // Another job's context, the scheduler's keys: refused before the store is asked.
//! let err = store.get_scoped(&own, &scope.for_job("job-9")).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::OutOfScope);
//! let sched: Pointer = "redis://cap:sched:job:job-2".parse().unwrap();
//! let err = store.get_scoped(&sched, &scope.for_job("job-1")).await.unwrap_err();
//! assert_eq!(err.to_string(), "pointer refused: keys under `cap:` are reserved to CAP services");
//! # Ok::<(), cap_blob::Error>(())
//! # }).unwrap();
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cap_proto::Pointer;
use cap_proto::pointer::{CONTEXT_PREFIX, RESULT_PREFIX};

use crate::{Error, Result, key};

/// Keys under this prefix belong to CAP's services and are never readable through a
/// pointer.
pub const RESERVED_PREFIX: &str = "cap:";

/// Key prefix of job artifacts (`art:<job_id>`).
pub const ARTIFACT_PREFIX: &str = "art:";

/// The environment variable listing extra readable key prefixes, comma-separated.
pub const PREFIXES_ENV: &str = "CAP_POINTER_PREFIXES";

/// The rule a refused pointer broke. Its text is the error message: fixed, so it never
/// carries the key or a store's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScopeRule {
    /// The key is under [`RESERVED_PREFIX`].
    Reserved,
    /// The key is neither one of the job's own keys nor under a configured prefix.
    NotOwnKey,
    /// An `https://` pointer to a loopback, private, link-local or otherwise non-public
    /// address or local name.
    PrivateNetwork,
    /// An `https://` pointer whose host cannot be made out.
    Unverifiable,
}

impl ScopeRule {
    /// The rule as a sentence fragment (the error message without its prefix).
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeRule::Reserved => "keys under `cap:` are reserved to CAP services",
            ScopeRule::NotOwnKey => {
                "a job reads only its own keys (ctx:, res:, art: + its job id) and the configured prefixes"
            }
            ScopeRule::PrivateNetwork => {
                "https pointers to loopback, private, link-local or local-only hosts are refused"
            }
            ScopeRule::Unverifiable => "the pointer's target cannot be checked",
        }
    }
}

impl fmt::Display for ScopeRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The deployment-wide pointer rule (see the [module docs](self)): the key prefixes every
/// job may read besides its own keys. The default allows only the job's own keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PointerScope {
    prefixes: Vec<String>,
}

impl PointerScope {
    /// Only each job's own keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also lets every job read keys starting with `prefix`. An empty prefix, one that
    /// is not a valid key, or one under [`RESERVED_PREFIX`] is an
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) error.
    pub fn allow_prefix(mut self, prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        key::check(&prefix)
            .map_err(|_| Error::config(format!("pointer prefix {prefix:?} is not a valid key")))?;
        if prefix.starts_with(RESERVED_PREFIX) {
            return Err(Error::config(format!(
                "pointer prefix {prefix:?} is under the reserved `{RESERVED_PREFIX}`"
            )));
        }
        if !self.prefixes.contains(&prefix) {
            self.prefixes.push(prefix);
        }
        Ok(self)
    }

    /// From [`PREFIXES_ENV`] (`CAP_POINTER_PREFIXES`, comma-separated; unset: none).
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// From a variable lookup (see [`from_env`](Self::from_env)).
    ///
    /// ```
    /// use cap_blob::PointerScope;
    /// let scope = PointerScope::from_lookup(|_| Some("shared:, pipe:".into())).unwrap();
    /// assert_eq!(scope.prefixes().collect::<Vec<_>>(), ["shared:", "pipe:"]);
    /// assert!(PointerScope::from_lookup(|_| Some("cap:sched:".into())).is_err());
    /// ```
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut scope = Self::new();
        if let Some(list) = lookup(PREFIXES_ENV) {
            for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                scope = scope.allow_prefix(p)?;
            }
        }
        Ok(scope)
    }

    /// The configured prefixes, in order.
    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        self.prefixes.iter().map(String::as_str)
    }

    /// The rule applied to the pointers of job `job_id`.
    pub fn for_job<'a>(&'a self, job_id: &'a str) -> JobScope<'a> {
        JobScope {
            scope: self,
            job_id,
        }
    }

    fn allows_prefix(&self, key: &str) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }
}

/// A [`PointerScope`] applied to one job: what a pointer carried by that job may name.
#[derive(Clone, Copy, Debug)]
pub struct JobScope<'a> {
    scope: &'a PointerScope,
    job_id: &'a str,
}

impl JobScope<'_> {
    /// The job.
    pub fn job_id(&self) -> &str {
        self.job_id
    }

    /// Checks a store key the job's pointer resolved to.
    pub fn check_key(&self, key: &str) -> Result<()> {
        if key.starts_with(RESERVED_PREFIX) {
            return Err(Error::out_of_scope(ScopeRule::Reserved));
        }
        if is_own_key(key, self.job_id) || self.scope.allows_prefix(key) {
            return Ok(());
        }
        Err(Error::out_of_scope(ScopeRule::NotOwnKey))
    }

    /// Checks what can be checked of a pointer before any store maps it to a key: the
    /// target of an `https://` pointer, and for the key-value schemes the key itself.
    /// Stores that map pointers to keys their own way (`file://` under a root) are
    /// checked with [`check_key`](Self::check_key) on the key they map to.
    pub fn check_pointer(&self, pointer: &Pointer) -> Result<()> {
        match pointer {
            Pointer::Https { url } => check_https_target(url).map_err(Error::out_of_scope),
            Pointer::Redis { key } | Pointer::Mem { key } => self.check_key(key),
            _ => Ok(()),
        }
    }
}

fn is_own_key(key: &str, job_id: &str) -> bool {
    [CONTEXT_PREFIX, RESULT_PREFIX, ARTIFACT_PREFIX]
        .iter()
        .any(|p| key.strip_prefix(p) == Some(job_id))
        && !job_id.is_empty()
}

/// Checks what any job's pointer may name, whoever the job is: not a reserved key (for
/// the key-value schemes and `s3://` object keys), not a non-public network target (for
/// `https://`). The scheduler applies it at submit; workers apply the full
/// [`JobScope`].
pub fn check_target(pointer: &Pointer) -> std::result::Result<(), ScopeRule> {
    match pointer {
        Pointer::Redis { key } | Pointer::Mem { key } | Pointer::S3 { key, .. }
            if key.starts_with(RESERVED_PREFIX) =>
        {
            Err(ScopeRule::Reserved)
        }
        Pointer::Https { url } => check_https_target(url),
        _ => Ok(()),
    }
}

/// Refuses an `https://` URL whose host is a non-public address or a local-only name
/// (parsed as a browser or HTTP client would: `https://0x7f.1/` is 127.0.0.1).
pub fn check_https_target(url: &str) -> std::result::Result<(), ScopeRule> {
    let parsed = url::Url::parse(url).map_err(|_| ScopeRule::Unverifiable)?;
    match parsed.host() {
        None => Err(ScopeRule::Unverifiable),
        Some(url::Host::Ipv4(ip)) => public(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => public(IpAddr::V6(ip)),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let local = name == "localhost"
                || [".localhost", ".local", ".internal", ".home.arpa"]
                    .iter()
                    .any(|tld| name.ends_with(tld))
                || name == "local"
                || name == "internal";
            if local {
                Err(ScopeRule::PrivateNetwork)
            } else {
                Ok(())
            }
        }
    }
}

fn public(ip: IpAddr) -> std::result::Result<(), ScopeRule> {
    let ok = match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    };
    if ok {
        Ok(())
    } else {
        Err(ScopeRule::PrivateNetwork)
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7])));
    }
    if s[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2])));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible and other ::/96
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn rule(e: Error) -> ScopeRule {
        match e {
            Error::OutOfScope { rule } => rule,
            other => panic!("not a scope error: {other}"),
        }
    }

    #[test]
    fn a_job_reads_its_own_keys_and_the_configured_prefixes_only() {
        let scope = PointerScope::new().allow_prefix("shared:").unwrap();
        let job = scope.for_job("j-1");
        for ok in ["ctx:j-1", "res:j-1", "art:j-1", "shared:model", "shared:"] {
            assert!(job.check_key(ok).is_ok(), "{ok}");
        }
        for (bad, want) in [
            ("ctx:j-2", ScopeRule::NotOwnKey),
            ("res:j-10", ScopeRule::NotOwnKey),
            ("ctx:j-1:x", ScopeRule::NotOwnKey),
            ("ctx:j", ScopeRule::NotOwnKey),
            ("art:j-1/x", ScopeRule::NotOwnKey),
            ("other", ScopeRule::NotOwnKey),
            ("cap:sched:job:j-1", ScopeRule::Reserved),
            ("cap:sched:jobs", ScopeRule::Reserved),
            ("cap:anything", ScopeRule::Reserved),
        ] {
            assert_eq!(rule(job.check_key(bad).unwrap_err()), want, "{bad}");
        }
        // An empty job id owns nothing.
        assert!(scope.for_job("").check_key("ctx:").is_err());
        // A configured prefix never opens the reserved keys.
        let wide = PointerScope::new().allow_prefix("c").unwrap();
        assert_eq!(
            rule(wide.for_job("x").check_key("cap:sched:jobs").unwrap_err()),
            ScopeRule::Reserved
        );
        assert!(wide.for_job("x").check_key("ctx:other").is_ok());
    }

    #[test]
    fn prefixes_are_checked_when_configured() {
        for bad in ["", "cap:", "cap:sched:", "a b", "user@host"] {
            let e = PointerScope::new().allow_prefix(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{bad:?}");
        }
        let s = PointerScope::from_lookup(|k| {
            assert_eq!(k, PREFIXES_ENV);
            Some(" a:, ,b:,a:".into())
        })
        .unwrap();
        assert_eq!(s.prefixes().collect::<Vec<_>>(), ["a:", "b:"]);
        assert_eq!(
            PointerScope::from_lookup(|_| None).unwrap(),
            PointerScope::new()
        );
    }

    #[test]
    fn https_targets_must_be_public() {
        for bad in [
            "https://127.0.0.1/x",
            "https://127.1/x",
            "https://0x7f.1/x",
            "https://2130706433/x",
            "https://0177.0.0.1/x",
            "https://10.1.2.3/x",
            "https://172.16.0.1/x",
            "https://192.168.1.1:8443/x",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/x",
            "https://0.0.0.0/x",
            "https://[::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://[::ffff:a9fe:a9fe]/x",
            "https://[fe80::1]/x",
            "https://[fd00::1]/x",
            "https://[64:ff9b::a9fe:a9fe]/x",
            "https://[2002:a00:1::]/x",
            "https://localhost/x",
            "https://LOCALHOST./x",
            "https://api.localhost/x",
            "https://metadata.google.internal/x",
            "https://printer.local/x",
        ] {
            assert_eq!(
                check_https_target(bad),
                Err(ScopeRule::PrivateNetwork),
                "{bad}"
            );
        }
        for ok in [
            "https://example.com/x",
            "https://93.184.215.14/x",
            "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/x",
            "https://local.example.com/x",
        ] {
            assert_eq!(check_https_target(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn pointers_are_checked_by_scheme() {
        let scope = PointerScope::new();
        let job = scope.for_job("j");
        let p = |s: &str| Pointer::parse(s).unwrap();
        assert!(job.check_pointer(&p("redis://ctx:j")).is_ok());
        assert!(job.check_pointer(&p("mem://res:j")).is_ok());
        assert_eq!(
            rule(job.check_pointer(&p("redis://cap:sched:jobs")).unwrap_err()),
            ScopeRule::Reserved
        );
        assert_eq!(
            rule(job.check_pointer(&p("redis://res:other")).unwrap_err()),
            ScopeRule::NotOwnKey
        );
        assert_eq!(
            rule(
                job.check_pointer(&p("https://169.254.169.254/"))
                    .unwrap_err()
            ),
            ScopeRule::PrivateNetwork
        );
        // file:// is mapped to a key by its store, then checked.
        assert!(job.check_pointer(&p("file:///etc/passwd")).is_ok());

        assert_eq!(
            check_target(&p("redis://cap:sched:job:1")),
            Err(ScopeRule::Reserved)
        );
        assert_eq!(check_target(&p("s3://b/cap:x")), Err(ScopeRule::Reserved));
        assert_eq!(check_target(&p("redis://res:other")), Ok(()));
        assert_eq!(
            check_target(&p("https://10.0.0.1/")),
            Err(ScopeRule::PrivateNetwork)
        );
    }

    #[test]
    fn messages_are_fixed() {
        let e = Error::out_of_scope(ScopeRule::Reserved);
        assert_eq!(e.kind(), ErrorKind::OutOfScope);
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "pointer refused: keys under `cap:` are reserved to CAP services"
        );
    }
}
