//! Building the `redis::Client`: plain or TLS, as configured.

use crate::{Error, Result};

use super::config::{RedisConfig, redact};

/// A client for `url` (already checked by [`RedisConfig::parsed_url`]).
pub(crate) fn build(cfg: &RedisConfig, url: &url::Url) -> Result<redis::Client> {
    if url.scheme() == "rediss" {
        return tls_client(cfg, url);
    }
    // Like the official SDKs, the REDIS_TLS_* variables only matter for rediss:// URLs.
    redis::Client::open(url.as_str())
        .map_err(|e| Error::config_with(format!("cannot use Redis URL {}", redact(url)), e))
}

#[cfg(not(feature = "tls"))]
fn tls_client(_cfg: &RedisConfig, url: &url::Url) -> Result<redis::Client> {
    Err(Error::config(format!(
        "Redis URL {} needs TLS, but cap-blob was built without its `tls` feature",
        redact(url)
    )))
}

#[cfg(feature = "tls")]
const CERT_MARKER: &[u8] = b"-----BEGIN CERTIFICATE-----";

#[cfg(feature = "tls")]
fn tls_client(cfg: &RedisConfig, url: &url::Url) -> Result<redis::Client> {
    use redis::{ClientTlsConfig, TlsCertificates};

    let tls = &cfg.tls;
    tls.check()?;
    let host = url.host_str().unwrap_or_default();
    if let Some(name) = &tls.server_name
        && !name.eq_ignore_ascii_case(host)
    {
        return Err(Error::config(format!(
            "REDIS_TLS_SERVER_NAME `{name}` differs from the URL host `{host}`: the redis \
             crate verifies the certificate against the host it connects to, so put \
             `{name}` in REDIS_URL (resolving to the server) instead"
        )));
    }
    // rustls needs a process-wide crypto provider; keep one installed by the application.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let mut url = url.clone();
    if tls.insecure {
        url.set_fragment(Some("insecure"));
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
    let result = if root_cert.is_none() && client_tls.is_none() {
        redis::Client::open(url.as_str())
    } else {
        redis::Client::build_with_tls(
            url.as_str(),
            TlsCertificates {
                client_tls,
                root_cert,
            },
        )
    };
    result.map_err(|e| Error::config_with(format!("cannot set up TLS for {}", redact(&url)), e))
}
