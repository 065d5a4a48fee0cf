//! [`serve`]: the `/metrics` HTTP endpoint (hyper, HTTP/1.1).

use super::{Registry, encode};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running `/metrics` endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits for the server to stop (after its token was cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Serves `registry` at `GET /metrics` on `addr` (Prometheus text format) until `stop`
/// is cancelled; other paths answer 404. Binding errors are returned at once.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    stop: CancellationToken,
) -> Result<MetricsServer, crate::Error> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        crate::Error::with_source(
            crate::ErrorKind::Config,
            format!("cannot listen on {addr} for /metrics"),
            e,
        )
    })?;
    let local_addr = listener.local_addr().map_err(|e| {
        crate::Error::with_source(crate::ErrorKind::Config, "metrics listener address", e)
    })?;
    let task = tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics accept failed");
                        continue;
                    }
                },
            };
            let registry = registry.clone();
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(respond(&req, &registry)) }
            });
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(error = %e, "metrics connection failed");
                }
            });
        }
    });
    Ok(MetricsServer { local_addr, task })
}

fn respond<B>(req: &Request<B>, registry: &Registry) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    if req.uri().path() != "/metrics" {
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return resp;
    }
    *resp.body_mut() = Full::new(Bytes::from(encode(registry)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        ),
    );
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_the_registry_and_nothing_else() {
        let mut registry = Registry::default();
        let c = Counter::<u64>::default();
        registry.register("cap_test_things", "Things.", c.clone());
        c.inc_by(7);
        let stop = CancellationToken::new();
        let server = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(registry),
            stop.clone(),
        )
        .await
        .unwrap();
        let ok = get(server.local_addr(), "/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
        assert!(ok.contains("\ncap_test_things_total 7\n"), "{ok}");
        let missing = get(server.local_addr(), "/other").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        stop.cancel();
        server.wait().await;
    }
}
