//! # cap-gateway
//!
//! The API gateway in front of the CAP bus: clients submit, inspect, list, cancel and
//! approve jobs over HTTP/JSON, follow them live over Server-Sent Events, and a small
//! dashboard page shows them. The paths and JSON shapes follow the Cordum control
//! plane's HTTP API, so its typed Python client (`cordum-sdk` 0.1.0) works against it.
//!
//! The gateway keeps no job state of its own: a submission writes the input to the blob
//! store and publishes the JobRequest on `sys.job.submit`; everything it shows about a
//! job is read from the scheduler's [`JobStore`] (the one truth about jobs), and its
//! live streams follow the scheduler's state change events
//! ([`cap_scheduler::shell::events_subject`]), re-reading the store on each.
//!
//! | Method and path | What |
//! |---|---|
//! | `POST /api/v1/jobs` | submit (`Idempotency-Key` honoured) → `{job_id, trace_id}` |
//! | `GET /api/v1/jobs/{id}` | the job (`JobDetail`) |
//! | `GET /api/v1/jobs?state&topic&limit&cursor` | the tenant's jobs, newest first, `{items, next_cursor}` |
//! | `POST /api/v1/jobs/{id}/cancel` | cancel (409 once finished) |
//! | `GET /api/v1/jobs/{id}/decisions` | safety and approval decisions |
//! | `GET /api/v1/jobs/{id}/events` | SSE: the job's state changes and progress |
//! | `GET /api/v1/events` | SSE: every job of the tenant (resumable with `Last-Event-ID`) |
//! | `GET /api/v1/approvals`, `POST /api/v1/approvals/{id}/approve` \| `/reject` | held jobs |
//! | `GET /api/v1/dlq`, `GET /api/v1/dlq/page`, `POST /api/v1/dlq/{id}/retry`, `DELETE /api/v1/dlq/{id}` | dead letters |
//! | `GET /` | the dashboard |
//!
//! Every `/api` request carries an API key (`X-API-Key` or `Authorization: Bearer`)
//! that maps to a tenant, and the tenant (`X-Tenant-ID` or `X-Cordum-Tenant`): a tenant
//! sees only its own jobs (another tenant's job is a 404).
//!
//! ```
//! use cap_blob::MemoryBlobStore;
//! use cap_bus::MemoryBus;
//! use cap_gateway::{Gateway, GatewayConfig};
//! use cap_runtime::packets::{PacketConfig, Packets};
//! use cap_scheduler::MemoryJobStore;
//! use tower::ServiceExt as _;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let bus = MemoryBus::new();
//! let config = GatewayConfig::default().api_key("secret", "acme");
//! let gateway = Gateway::new(
//!     Packets::new(bus, PacketConfig::new("gateway-1")),
//!     MemoryJobStore::new(),
//!     MemoryBlobStore::new(),
//!     config,
//! );
//! let request = axum::http::Request::get("/api/v1/jobs/nope")
//!     .header("X-API-Key", "secret")
//!     .header("X-Tenant-ID", "acme")
//!     .body(axum::body::Body::empty())
//!     .unwrap();
//! let response = gateway.router().oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 404);
//! # });
//! ```

mod api;
mod auth;
mod error;
mod events;
mod metrics;
pub mod views;

pub use auth::Caller;
pub use error::ApiError;
pub use metrics::GatewayMetrics;

use cap_blob::BlobStore;
use cap_bus::Bus;
use cap_runtime::packets::Packets;
use cap_scheduler::JobStore;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The dashboard page served at `/`.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Settings of a gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// API key → tenant (kept as SHA-256 digests of the keys).
    keys: HashMap<[u8; 32], String>,
    /// Largest request body accepted (413 above).
    pub max_body_bytes: usize,
    /// Requests per second allowed per API key (a token bucket of `rate_burst`); `0`:
    /// no limit. Over it: 429 with `Retry-After`.
    pub rate_per_second: f64,
    /// Bucket size of the rate limit.
    pub rate_burst: f64,
    /// Largest output shown inline in a job's `result` (bigger ones: pointer only).
    pub max_inline_result: usize,
    /// How long a submitted input is kept in the blob store (`None`: the store's
    /// default context TTL).
    pub context_ttl: Option<Duration>,
    /// How long `POST …/cancel` waits for the scheduler to record the cancel before
    /// answering with the state it sees.
    pub cancel_wait: Duration,
    /// How long `POST /api/v1/jobs` waits for the scheduler to record the new job
    /// (so that a `GET` right after finds it) before answering anyway.
    pub submit_wait: Duration,
    /// How long an approval command waits for the scheduler's answer.
    pub approval_timeout: Duration,
    /// The tenant that owns jobs submitted without one (straight on the bus, by tools
    /// that name no tenant): its callers see them as their own. `None`: nobody does.
    pub unnamed_tenant: Option<String>,
    /// Most records read to fill one filtered page (then the page ends early, with a
    /// cursor to go on from).
    pub max_scan: usize,
    /// Request metrics (Prometheus), when set.
    pub(crate) metrics: Option<GatewayMetrics>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            keys: HashMap::new(),
            max_body_bytes: 1 << 20,
            rate_per_second: 0.0,
            rate_burst: 100.0,
            max_inline_result: 256 << 10,
            context_ttl: None,
            cancel_wait: Duration::from_secs(3),
            submit_wait: Duration::from_secs(2),
            approval_timeout: Duration::from_secs(5),
            max_scan: 5_000,
            unnamed_tenant: None,
            metrics: None,
        }
    }
}

impl GatewayConfig {
    /// Adds an API key for `tenant`.
    pub fn api_key(mut self, key: &str, tenant: &str) -> Self {
        self.keys.insert(digest(key), tenant.to_owned());
        self
    }

    /// Counts every request in `metrics` (see [`GatewayMetrics`]).
    pub fn metrics(mut self, metrics: GatewayMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// How many API keys are configured.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The tenant of an API key.
    pub fn tenant_of(&self, key: &str) -> Option<&str> {
        self.keys.get(&digest(key)).map(String::as_str)
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Something that happened to a job, as the gateway's live streams see it.
#[derive(Clone, Debug)]
pub(crate) struct Notice {
    pub job_id: String,
    pub tenant: String,
    /// `None`: its state changed (read the record); `Some`: a progress report.
    pub progress: Option<(i32, String)>,
}

/// The gateway: an HTTP front for one bus, job store and blob store. Cheap to share
/// (`Arc`); [`router`](Gateway::router) builds the axum router.
pub struct Gateway<B: Bus, S: JobStore, O: BlobStore + 'static> {
    pub(crate) packets: Packets<B>,
    pub(crate) jobs: Arc<S>,
    pub(crate) blobs: O,
    pub(crate) config: GatewayConfig,
    limiter: Mutex<HashMap<String, (f64, Instant)>>,
    /// Dead letters deleted from the list (by job id), in this process.
    pub(crate) dismissed: Mutex<HashSet<String>>,
    pub(crate) notices: broadcast::Sender<Notice>,
    /// Submissions waiting for the scheduler to record their job.
    pub(crate) recorded: Mutex<HashMap<String, tokio::sync::oneshot::Sender<()>>>,
}

impl<B: Bus, S: JobStore, O: BlobStore + 'static> std::fmt::Debug for Gateway<B, S, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("sender_id", &self.packets.sender_id())
            .field("keys", &self.config.keys.len())
            .finish()
    }
}

impl<B: Bus, S: JobStore, O: BlobStore + 'static> Gateway<B, S, O> {
    /// A gateway publishing through `packets` (its sender id is the gateway's), reading
    /// jobs from `jobs` (the scheduler's store) and writing inputs to `blobs`.
    pub fn new(packets: Packets<B>, jobs: S, blobs: O, config: GatewayConfig) -> Arc<Self> {
        let (notices, _) = broadcast::channel(4096);
        Arc::new(Gateway {
            packets,
            jobs: Arc::new(jobs),
            blobs,
            config,
            limiter: Mutex::new(HashMap::new()),
            dismissed: Mutex::new(HashSet::new()),
            notices,
            recorded: Mutex::new(HashMap::new()),
        })
    }

    /// The settings.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The axum router of the API and the dashboard.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        api::router(self.clone())
    }

    /// Subscribes to the scheduler's job events and the workers' progress reports and
    /// feeds the live streams until `shutdown`. Without it the streams only show what
    /// they read when they start.
    pub async fn follow_events(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> Result<(), cap_bus::Error> {
        events::follow(self.clone(), shutdown).await
    }

    /// Serves the API on `listener` until `shutdown` (following events meanwhile).
    pub async fn serve(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        self.follow_events(shutdown.clone())
            .await
            .map_err(std::io::Error::other)?;
        let stop = shutdown.clone();
        axum::serve(listener, self.router())
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    }

    /// The tenant a caller's jobs are recorded under (`""` for the unnamed tenant).
    pub(crate) fn store_tenant<'a>(&self, caller_tenant: &'a str) -> &'a str {
        if self.config.unnamed_tenant.as_deref() == Some(caller_tenant) {
            ""
        } else {
            caller_tenant
        }
    }

    /// Takes one request from `key`'s bucket; false when it is empty.
    pub(crate) fn admit(&self, key: &str) -> bool {
        let rate = self.config.rate_per_second;
        if rate <= 0.0 {
            return true;
        }
        let burst = self.config.rate_burst.max(1.0);
        let now = Instant::now();
        let mut buckets = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
