//! The gRPC server: `cordum.agent.v1.SafetyKernel` plus the standard health
//! (`grpc.health.v1.Health`) and reflection (v1 and v1alpha) services, request size
//! limits, optional TLS/mTLS (feature `tls`), hot reload of the policy file, and graceful
//! shutdown.

use crate::grpc::safety_kernel_server::SafetyKernelServer;
use crate::reload::{self, ReloadOptions};
use crate::{Error, Kernel};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Environment variable overriding the listen address (`cap safety serve`).
pub const ENV_LISTEN: &str = "CAP_SAFETY_LISTEN";
/// Environment variable naming the policy file (`cap safety serve`).
pub const ENV_POLICY: &str = "CAP_SAFETY_POLICY";
/// Environment variable naming the server certificate (PEM).
pub const ENV_TLS_CERT: &str = "CAP_SAFETY_TLS_CERT";
/// Environment variable naming the server private key (PEM).
pub const ENV_TLS_KEY: &str = "CAP_SAFETY_TLS_KEY";
/// Environment variable naming the CA that client certificates must chain to (mTLS).
pub const ENV_CLIENT_CA: &str = "CAP_SAFETY_CLIENT_CA";
/// Environment variable naming the kernel a client talks to (`cap safety check --addr`).
pub const ENV_ADDR: &str = "CAP_SAFETY_ADDR";
/// Default largest request (and response) message, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Certificate files for TLS; with `client_ca`, clients must present a certificate signed
/// by it (mTLS).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// CA for client certificates (PEM); `None` means no client authentication.
    pub client_ca: Option<PathBuf>,
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Largest request and response message. Default 4 MiB.
    pub max_message_bytes: usize,
    /// TLS, when set (needs the `tls` feature).
    pub tls: Option<TlsFiles>,
    /// How the policy file is watched (ignored for kernels without a file).
    pub reload: ReloadOptions,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            tls: None,
            reload: ReloadOptions::default(),
        }
    }
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), Error>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://<local_addr>`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting, lets in-flight calls finish, and waits for the server to end.
    pub async fn shutdown(self) -> Result<(), Error> {
        let _ = self.stop.send(true);
        self.wait().await
    }

    /// Waits for the server to end (after [`ServerHandle::shutdown`] or a serve error).
    pub async fn wait(self) -> Result<(), Error> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Config(format!("server task failed: {e}"))),
        }
    }
}

/// Binds and starts serving `kernel` in the background.
pub async fn spawn(kernel: Kernel, options: ServeOptions) -> Result<ServerHandle, Error> {
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", options.listen)))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("listener address: {e}")))?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<SafetyKernelServer<Kernel>>().await;
    let reflection = |b: tonic_reflection::server::Builder<'static>| {
        b.register_encoded_file_descriptor_set(cap_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
        .build_v1()
        .map_err(|e| Error::Config(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
        .build_v1alpha()
        .map_err(|e| Error::Config(format!("reflection: {e}")))?;

    let limit = options.max_message_bytes;
    let kernel_service = SafetyKernelServer::new(kernel.clone())
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);

    let builder = tls_builder(options.tls.as_ref())?;
    let router = {
        let mut builder = builder;
        builder
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(kernel_service)
    };

    let (stop, mut stopped) = watch::channel(false);
    let reloader = kernel
        .policy_path()
        .is_some()
        .then(|| reload::spawn(kernel.clone(), options.reload.clone(), stop.subscribe()));
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
            health.set_not_serving::<SafetyKernelServer<Kernel>>().await;
        };
        let result = router
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .map_err(Error::from);
        if let Some(r) = reloader {
            r.abort();
        }
        tracing::info!("safety kernel stopped");
        result
    });
    tracing::info!(%local_addr, snapshot = kernel.snapshot().id(), "safety kernel listening");
    Ok(ServerHandle {
        local_addr,
        stop,
        task,
    })
}

/// Serves `kernel` until `shutdown` completes, then drains in-flight calls.
pub async fn serve(
    kernel: Kernel,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let handle = spawn(kernel, options).await?;
    shutdown.await;
    handle.shutdown().await
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested");
}

#[cfg(feature = "tls")]
fn tls_builder(tls: Option<&TlsFiles>) -> Result<tonic::transport::Server, Error> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let builder = tonic::transport::Server::builder();
    let Some(tls) = tls else { return Ok(builder) };
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|source| Error::Io {
            path: p.clone(),
            source,
        })
    };
    let mut config =
        ServerTlsConfig::new().identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?));
    if let Some(ca) = &tls.client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    builder
        .tls_config(config)
        .map_err(|e| Error::Config(format!("TLS: {}", Error::from(e))))
}

#[cfg(not(feature = "tls"))]
fn tls_builder(tls: Option<&TlsFiles>) -> Result<tonic::transport::Server, Error> {
    match tls {
        None => Ok(tonic::transport::Server::builder()),
        Some(_) => Err(Error::Config(
            "TLS requested, but cap-safety was built without the `tls` feature".into(),
        )),
    }
}
