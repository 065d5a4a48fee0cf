//! Where TCP goes when `REDIS_TLS_SERVER_NAME` differs from the URL host.
//!
//! The `redis` crate connects to, and verifies the certificate against, one host: the one
//! in its connection address. For the override, the client is built with
//! `REDIS_TLS_SERVER_NAME` as that host (so rustls sends it as SNI and checks the
//! certificate against it), and this resolver ignores the name it is asked for and returns
//! the addresses of the URL's real host instead, as Python's `ssl` does with
//! `server_hostname`.

use std::net::SocketAddr;

use redis::RedisFuture;
use redis::io::AsyncDNSResolver;

/// Resolves every lookup to the URL's host, keeping the port asked for.
#[derive(Clone, Debug)]
pub(crate) struct UrlHost {
    host: url::Host<String>,
}

impl UrlHost {
    /// The host of `url`, or `None` if it has none.
    pub(crate) fn of(url: &url::Url) -> Option<Self> {
        url.host().map(|host| UrlHost {
            host: host.to_owned(),
        })
    }

    async fn addrs(&self, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(match &self.host {
            url::Host::Ipv4(ip) => vec![SocketAddr::new((*ip).into(), port)],
            url::Host::Ipv6(ip) => vec![SocketAddr::new((*ip).into(), port)],
            // Also IPv4 literals: `rediss://` is not a special scheme, so the url crate
            // leaves them as names (the lookup parses them without asking DNS).
            url::Host::Domain(name) => tokio::net::lookup_host((name.as_str(), port))
                .await?
                .collect(),
        })
    }
}

impl AsyncDNSResolver for UrlHost {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        _server_name: &'b str,
        port: u16,
    ) -> RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        Box::pin(async move {
            let addrs = self.addrs(port).await?;
            Ok(Box::new(addrs.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn resolve(url: &str) -> Vec<SocketAddr> {
        let url = url::Url::parse(url).unwrap();
        let resolver = UrlHost::of(&url).unwrap();
        resolver
            .resolve("redis.internal", 6390)
            .await
            .unwrap()
            .collect()
    }

    #[tokio::test]
    async fn resolves_the_url_host_not_the_server_name() {
        let v4: SocketAddr = "127.0.0.1:6390".parse().unwrap();
        assert_eq!(resolve("rediss://127.0.0.1:1/0").await, vec![v4]);
        let v6: SocketAddr = "[::1]:6390".parse().unwrap();
        assert_eq!(resolve("rediss://[::1]:1/0").await, vec![v6]);
        let local = resolve("rediss://localhost/0").await;
        assert!(!local.is_empty());
        assert!(
            local
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 6390),
            "{local:?}"
        );
    }
}
