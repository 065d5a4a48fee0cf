//! Building the `redis::Client`: plain or TLS, as configured.

use crate::{Error, Result};

#[cfg(feature = "tls")]
use super::resolver::UrlHost;

use super::config::{RedisConfig, redact};

/// How to reach the server.
pub(crate) struct Target {
    /// The client to connect with.
    pub(crate) client: redis::Client,
    /// Set when `REDIS_TLS_SERVER_NAME` differs from the URL host: `client` then names
    /// the server by `REDIS_TLS_SERVER_NAME` (for SNI and certificate verification), and
    /// connections must resolve through this to reach the URL host.
    #[cfg(feature = "tls")]
    pub(crate) connect_to: Option<UrlHost>,
}

impl From<redis::Client> for Target {
    fn from(client: redis::Client) -> Self {
        Target {
            client,
            #[cfg(feature = "tls")]
            connect_to: None,
        }
    }
}

/// How to reach `url` (already checked by [`RedisConfig::parsed_url`]).
pub(crate) fn build(cfg: &RedisConfig, url: &url::Url) -> Result<Target> {
    if url.scheme() == "rediss" {
        return tls_client(cfg, url);
    }
    // Like the official SDKs, the REDIS_TLS_* variables only matter for rediss:// URLs.
    redis::Client::open(url.as_str())
        .map(Target::from)
        .map_err(|e| Error::config_with(format!("cannot use Redis URL {}", redact(url)), e))
}

#[cfg(not(feature = "tls"))]
fn tls_client(_cfg: &RedisConfig, url: &url::Url) -> Result<Target> {
    Err(Error::config(format!(
        "Redis URL {} needs TLS, but cap-blob was built without its `tls` feature",
        redact(url)
    )))
}

#[cfg(feature = "tls")]
const CERT_MARKER: &[u8] = b"-----BEGIN CERTIFICATE-----";

#[cfg(feature = "tls")]
fn tls_client(cfg: &RedisConfig, url: &url::Url) -> Result<Target> {
    use redis::{ClientTlsConfig, TlsCertificates};

    let tls = &cfg.tls;
    tls.check()?;
    // rustls needs a process-wide crypto provider; keep one installed by the application.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let shown = redact(url);
    let mut url = url.clone();
    if tls.insecure {
        url.set_fragment(Some("insecure"));
    }
    // The redis crate verifies the certificate against the host it connects to. For another
    // name, name the server by it and resolve connections to the URL host (see `resolver`).
    let host = url.host_str().unwrap_or_default();
    let mut connect_to = None;
    if let Some(name) = &tls.server_name
        && !name.eq_ignore_ascii_case(host)
    {
        let bad_name = |reason: String| {
            Error::config(format!(
                "REDIS_TLS_SERVER_NAME `{name}` is not a valid server name: {reason}"
            ))
        };
        rustls::pki_types::ServerName::try_from(name.as_str())
            .map_err(|e| bad_name(e.to_string()))?;
        let real_host = UrlHost::of(&url)
            .ok_or_else(|| Error::config(format!("Redis URL {shown} has no host")))?;
        // In a URL, an IPv6 address goes in brackets.
        let url_host = match name.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("[{name}]"),
            Err(_) => name.clone(),
        };
        url.set_host(Some(&url_host))
            .map_err(|e| bad_name(e.to_string()))?;
        connect_to = Some(real_host);
    }
    let read = |var: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            Error::config_with(format!("{var} file {} cannot be read", path.display()), e)
        })
    };
    let root_cert = match (&tls.ca, tls.insecure) {
        (Some(ca), false) => {
            let pem = read("REDIS_TLS_CA", ca)?;
            // An empty trust store would fail every handshake with a confusing error.
            if !pem.windows(CERT_MARKER.len()).any(|w| w == CERT_MARKER) {
                return Err(Error::config(format!(
                    "REDIS_TLS_CA file {} holds no PEM certificate",
                    ca.display()
                )));
            }
            Some(pem)
        }
        _ => None,
    };
    let client_tls = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read("REDIS_TLS_CERT", cert)?,
            client_key: read("REDIS_TLS_KEY", key)?,
        }),
        _ => None,
    };
    let client = if root_cert.is_none() && client_tls.is_none() {
        redis::Client::open(url.as_str())
    } else {
        redis::Client::build_with_tls(
            url.as_str(),
            TlsCertificates {
                client_tls,
                root_cert,
            },
        )
    }
    .map_err(|e| Error::config_with(format!("cannot set up TLS for {shown}"), e))?;
    Ok(Target { client, connect_to })
}
