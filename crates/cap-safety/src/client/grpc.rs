//! [`GrpcSafetyClient`]: the typed gRPC client, with per-call timeouts, retries on
//! transport errors, and an optional fail-closed mode.

use super::{SafetyClient, normalize_response};
use crate::grpc::safety_kernel_client::SafetyKernelClient;
use crate::{Decision, Error};
use cap_proto::v1::{ListSnapshotsRequest, PolicyCheckRequest, PolicyCheckResponse};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Rule id of the denial a fail-closed client returns when the kernel is unreachable.
pub const RULE_FAIL_CLOSED: &str = "builtin:fail-closed";

/// TLS settings of a client (used with the `tls` feature).
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// CA that the server certificate must chain to (PEM).
    pub ca: PathBuf,
    /// Client certificate and key (PEM), for mTLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Name to verify in the server certificate (default: the URL's host).
    pub domain: Option<String>,
}

/// How a [`GrpcSafetyClient`] connects and retries.
#[derive(Debug, Clone)]
pub struct GrpcClientOptions {
    /// The kernel's URL (`http://127.0.0.1:50051`; a bare `host:port` means `http://`).
    pub endpoint: String,
    /// Deadline of each attempt. Default 2 s.
    pub timeout: Duration,
    /// Deadline for establishing a connection. Default 2 s.
    pub connect_timeout: Duration,
    /// Extra attempts after a transport error or timeout. Default 2.
    pub retries: u32,
    /// Pause before the first retry, doubled for each further one. Default 25 ms.
    pub backoff: Duration,
    /// When every attempt fails with a transport error or timeout, answer DENY (rule id
    /// [`RULE_FAIL_CLOSED`]) instead of returning the error. Default off.
    pub fail_closed: bool,
    /// TLS (needs the `tls` feature).
    pub tls: Option<ClientTls>,
}

impl GrpcClientOptions {
    /// Options for `endpoint` with the defaults.
    pub fn new(endpoint: impl Into<String>) -> Self {
        GrpcClientOptions {
            endpoint: endpoint.into(),
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            retries: 2,
            backoff: Duration::from_millis(25),
            fail_closed: false,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Method {
    Check,
    Evaluate,
    Explain,
    Simulate,
}

/// A client of a remote `SafetyKernel`. Cheap to clone; clones share one HTTP/2
/// connection.
#[derive(Debug, Clone)]
pub struct GrpcSafetyClient {
    client: SafetyKernelClient<Channel>,
    options: Arc<GrpcClientOptions>,
}

impl GrpcSafetyClient {
    /// A client that connects on first use (so it can be built before the kernel is up).
    /// Must be called inside a Tokio runtime (the connection is driven by a task); outside
    /// one it is an [`crate::ErrorKind::Config`] error.
    pub fn new(options: GrpcClientOptions) -> Result<Self, Error> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::Config(
                "GrpcSafetyClient::new must be called inside a Tokio runtime".into(),
            ));
        }
        let channel = endpoint(&options)?.connect_lazy();
        Ok(Self::with_channel(channel, options))
    }

    /// A client that connects now, failing if the kernel is unreachable.
    pub async fn connect(options: GrpcClientOptions) -> Result<Self, Error> {
        let channel = endpoint(&options)?.connect().await?;
        Ok(Self::with_channel(channel, options))
    }

    fn with_channel(channel: Channel, options: GrpcClientOptions) -> Self {
        let client = SafetyKernelClient::new(channel)
            .max_decoding_message_size(crate::server::DEFAULT_MAX_MESSAGE_BYTES);
        GrpcSafetyClient {
            client,
            options: Arc::new(options),
        }
    }

    /// The options in force.
    pub fn options(&self) -> &GrpcClientOptions {
        &self.options
    }

    /// `Explain`: the decision with a trace of the rules considered in `reason`.
    pub async fn explain(&self, req: &PolicyCheckRequest) -> Result<PolicyCheckResponse, Error> {
        self.call(Method::Explain, req).await
    }

    /// `Simulate`: evaluates the candidate policy in `req.effective_config`.
    pub async fn simulate(&self, req: &PolicyCheckRequest) -> Result<PolicyCheckResponse, Error> {
        self.call(Method::Simulate, req).await
    }

    /// `ListSnapshots`: snapshot ids, newest first.
    pub async fn list_snapshots(&self) -> Result<Vec<String>, Error> {
        let timeout = self.options.timeout;
        self.retrying(|mut client| async move {
            let mut r = tonic::Request::new(ListSnapshotsRequest {});
            r.set_timeout(timeout);
            Ok(client.list_snapshots(r).await?.into_inner().snapshots)
        })
        .await
    }

    async fn call(
        &self,
        method: Method,
        req: &PolicyCheckRequest,
    ) -> Result<PolicyCheckResponse, Error> {
        let timeout = self.options.timeout;
        let result = self
            .retrying(|mut client| {
                let mut r = tonic::Request::new(req.clone());
                r.set_timeout(timeout);
                async move {
                    let resp = match method {
                        Method::Check => client.check(r).await,
                        Method::Evaluate => client.evaluate(r).await,
                        Method::Explain => client.explain(r).await,
                        Method::Simulate => client.simulate(r).await,
                    }?;
                    Ok(normalize_response(resp.into_inner()))
                }
            })
            .await;
        match result {
            Err(e) if self.options.fail_closed && e.is_retryable() => {
                tracing::warn!(error = %e, job_id = %req.job_id, "safety kernel unavailable: failing closed");
                Ok(PolicyCheckResponse {
                    decision: Decision::Deny.to_wire() as i32,
                    reason: format!("safety kernel unavailable (fail-closed): {e}"),
                    rule_id: RULE_FAIL_CLOSED.into(),
                    ..Default::default()
                })
            }
            other => other,
        }
    }

    /// Runs `attempt` with the per-attempt timeout, retrying transport errors and
    /// timeouts with exponential backoff.
    async fn retrying<T, F, Fut>(&self, attempt: F) -> Result<T, Error>
    where
        F: Fn(SafetyKernelClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let o = &self.options;
        let mut backoff = o.backoff;
        let mut tries = 0;
        loop {
            let outcome = match tokio::time::timeout(o.timeout, attempt(self.client.clone())).await
            {
                Ok(r) => r.map_err(deadline_as_timeout(o.timeout)),
                Err(_) => Err(Error::Timeout(o.timeout)),
            };
            match outcome {
                Err(e) if e.is_retryable() && tries < o.retries => {
                    tries += 1;
                    tracing::debug!(error = %e, attempt = tries, "retrying safety kernel call");
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                }
                other => return other,
            }
        }
    }
}

/// The channel's own deadline surfaces as `CANCELLED` ("Timeout expired"), the server's
/// as `DEADLINE_EXCEEDED`: both are this call timing out.
fn deadline_as_timeout(timeout: Duration) -> impl Fn(Error) -> Error {
    move |e| match &e {
        Error::Status {
            code: tonic::Code::DeadlineExceeded | tonic::Code::Cancelled,
            ..
        } => Error::Timeout(timeout),
        _ => e,
    }
}

impl SafetyClient for GrpcSafetyClient {
    fn check(
        &self,
        req: &PolicyCheckRequest,
    ) -> impl Future<Output = Result<PolicyCheckResponse, Error>> + Send {
        self.call(Method::Check, req)
    }

    fn evaluate(
        &self,
        req: &PolicyCheckRequest,
    ) -> impl Future<Output = Result<PolicyCheckResponse, Error>> + Send {
        self.call(Method::Evaluate, req)
    }
}

fn endpoint(options: &GrpcClientOptions) -> Result<Endpoint, Error> {
    let raw = options.endpoint.trim();
    let url = if raw.contains("://") {
        raw.to_owned()
    } else if options.tls.is_some() {
        format!("https://{raw}")
    } else {
        format!("http://{raw}")
    };
    let ep = Endpoint::from_shared(url.clone())
        .map_err(|e| Error::Config(format!("invalid safety kernel URL `{url}`: {e}")))?
        .connect_timeout(options.connect_timeout)
        .timeout(options.timeout)
        .tcp_nodelay(true);
    with_tls(ep, options.tls.as_ref())
}

#[cfg(feature = "tls")]
fn with_tls(ep: Endpoint, tls: Option<&ClientTls>) -> Result<Endpoint, Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let Some(tls) = tls else { return Ok(ep) };
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|source| Error::Io {
            path: p.clone(),
            source,
        })
    };
    let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
    if let Some((cert, key)) = &tls.identity {
        config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    if let Some(domain) = &tls.domain {
        config = config.domain_name(domain.clone());
    }
    ep.tls_config(config)
        .map_err(|e| Error::Config(format!("TLS: {}", Error::from(e))))
}

#[cfg(not(feature = "tls"))]
fn with_tls(ep: Endpoint, tls: Option<&ClientTls>) -> Result<Endpoint, Error> {
    match tls {
        None => Ok(ep),
        Some(_) => Err(Error::Config(
            "TLS requested, but cap-safety was built without the `tls` feature".into(),
        )),
    }
}
