//! [`WorkerBuilder`]: handlers, middleware and settings of a [`Worker`].

use super::handler::{Handler, HandlerInfo, RawHandler, RawService, TypedService, schema_of};
use super::keepalive::DEFAULT_KEEPALIVE;
use super::layers::{RetryLayer, RetryPolicy, TimeoutLayer, TraceLayer};
use super::metrics::{MetricsHook, NoopMetrics};
use super::recent::DEFAULT_RECENT_CAPACITY;
use super::{HandlerEntry, Worker, WorkerConfig};
use crate::job::{HandlerService, Job, JobError};
use crate::packets::production::DEFAULT_CLOCK_SKEW;
use crate::packets::{AlertRate, FixedAuthority, PacketConfig, ProductionConfig};
use crate::trust::{TrustState, WorkerTrustConfig, WorkerTrustMode};
use crate::{Error, ErrorKind};
use bytes::Bytes;
use cap_blob::{BlobStore, PointerScope};
use cap_bus::Bus;
use cap_sign::production::{DynReplayStore, ProductionTrust};
use cap_sign::{Signer, TrustPolicy};
use futures_core::Stream;
use futures_core::stream::BoxStream;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Per-handler settings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct HandlerOptions {
    /// Overrides the worker's retry policy for this handler.
    pub retry: Option<RetryPolicy>,
    /// Overrides the worker's default timeout for this handler (a request's deadline,
    /// when earlier, still wins).
    pub timeout: Option<Duration>,
}

impl HandlerOptions {
    /// Sets the retry policy.
    pub fn retry(mut self, p: RetryPolicy) -> Self {
        self.retry = Some(p);
        self
    }
    /// Sets the timeout.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }
}

type LayerFn = Arc<dyn Fn(HandlerService) -> HandlerService + Send + Sync>;

/// Default number of jobs a worker runs at once.
pub const DEFAULT_MAX_PARALLEL: usize = 64;
/// Default heartbeat interval.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Default timeout of a job without a deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Builds a [`Worker`]. Get one with [`Worker::builder`].
///
/// Middleware: every handler becomes a `tower::Service<Job>`; layers apply in
/// registration order, the first registered outermost. The built-in layers come first
/// ([`TraceLayer`], [`TimeoutLayer`], [`RetryLayer`], in that order) unless
/// [`without_default_layers`](Self::without_default_layers) is called, in which case
/// you register them yourself wherever you want them.
pub struct WorkerBuilder<B: Bus, S: BlobStore> {
    bus: B,
    store: S,
    config: WorkerConfig,
    packet: PacketConfig,
    handlers: BTreeMap<String, (HandlerService, HandlerInfo, HandlerOptions)>,
    layers: Vec<LayerFn>,
    default_layers: bool,
    default_timeout: Option<Duration>,
    retry: RetryPolicy,
    metrics: Arc<dyn MetricsHook>,
    handshake_triggers: Vec<BoxStream<'static, ()>>,
    scope: PointerScope,
    worker_trust: Option<WorkerTrustConfig>,
    production: Option<Arc<dyn DynReplayStore>>,
    errors: Vec<String>,
}

impl<B: Bus, S: BlobStore + 'static> WorkerBuilder<B, S> {
    pub(super) fn new(bus: B, store: S) -> Self {
        let id = crate::id::new_component_id("worker");
        WorkerBuilder {
            bus,
            store,
            config: WorkerConfig {
                worker_id: id.clone(),
                pool: String::new(),
                max_parallel: DEFAULT_MAX_PARALLEL,
                keepalive: DEFAULT_KEEPALIVE,
                run_lease: super::DEFAULT_RUN_LEASE,
                heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
                result_ttl: None,
                recent_capacity: DEFAULT_RECENT_CAPACITY,
                labels: BTreeMap::new(),
            },
            packet: PacketConfig::new(id),
            handlers: BTreeMap::new(),
            layers: Vec::new(),
            default_layers: true,
            default_timeout: Some(DEFAULT_TIMEOUT),
            retry: RetryPolicy::none(),
            metrics: Arc::new(NoopMetrics),
            handshake_triggers: Vec::new(),
            scope: PointerScope::default(),
            worker_trust: None,
            production: None,
            errors: Vec::new(),
        }
    }

    /// The worker id, also its `sender_id` (one subject token; default `worker-<random>`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        let id = id.into();
        self.config.worker_id = id.clone();
        self.packet.sender_id = id;
        self
    }

    /// The pool reported in heartbeats.
    pub fn pool(mut self, pool: impl Into<String>) -> Self {
        self.config.pool = pool.into();
        self
    }

    /// Labels reported in heartbeats.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.labels.insert(key.into(), value.into());
        self
    }

    /// Jobs run at once at most (default 64). Jobs beyond it wait on the bus (each
    /// subscription holds at most one of them in hand, kept alive with in-progress
    /// acknowledgements, see [`keepalive`](Self::keepalive)). 0 makes
    /// [`build`](Self::build) fail with [`ErrorKind::Config`].
    pub fn max_parallel(mut self, n: usize) -> Self {
        if n == 0 {
            self.errors
                .push("max_parallel must be at least 1 (0 would never run a job)".into());
        }
        self.config.max_parallel = n.max(1);
        self
    }

    /// How often a durable delivery the worker holds (waiting for a free slot, or
    /// running) is reported in progress to the bus (default [`DEFAULT_KEEPALIVE`], at
    /// least 10 ms). Keep it well under the bus's ack wait (a third of it), so live jobs
    /// are not redelivered while a killed worker's jobs are, after one ack wait.
    pub fn keepalive(mut self, every: Duration) -> Self {
        self.config.keepalive = every.max(Duration::from_millis(10));
        self
    }

    /// Lease of the claim a worker takes in the blob store before it runs a durable
    /// delivery (default [`DEFAULT_RUN_LEASE`](super::DEFAULT_RUN_LEASE), at least
    /// 30 ms), renewed every third of it while the job runs. A delivery of a job another
    /// worker holds waits for a quarter of a lease; the job of a worker that died runs elsewhere
    /// once its lease lapses. See the [worker module](super) on redelivery.
    pub fn run_lease(mut self, lease: Duration) -> Self {
        self.config.run_lease = lease.max(Duration::from_millis(30));
        self
    }

    /// Heartbeat interval (default 5 s).
    pub fn heartbeat_interval(mut self, d: Duration) -> Self {
        self.config.heartbeat_interval = d.max(Duration::from_millis(10));
        self
    }

    /// Timeout of jobs without a deadline (default 300 s; `None`: unlimited).
    pub fn default_timeout(mut self, d: Option<Duration>) -> Self {
        self.default_timeout = d;
        self
    }

    /// Default retry policy (default: no retries).
    pub fn retry(mut self, p: RetryPolicy) -> Self {
        self.retry = p;
        self
    }

    /// Lifetime of results (default: the store's result TTL).
    pub fn result_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.config.result_ttl = Some(ttl);
        self
    }

    /// Finished jobs remembered to answer re-deliveries (default 10 000).
    pub fn recent_capacity(mut self, n: usize) -> Self {
        self.config.recent_capacity = n.max(1);
        self
    }

    /// What the pointers of jobs may name (default: each job's own `ctx:`/`res:`/`art:`
    /// keys only; [`PointerScope::from_env`] reads `CAP_POINTER_PREFIXES`). Keys under
    /// `cap:` and private network targets are refused whatever the scope.
    pub fn pointer_scope(mut self, scope: PointerScope) -> Self {
        self.scope = scope;
        self
    }

    /// Signs every packet the worker sends.
    pub fn signer(mut self, signer: Arc<dyn Signer>) -> Self {
        self.packet.signer = Some(signer);
        self
    }

    /// How incoming packets are verified (default: verify signed packets, no keys).
    pub fn trust(mut self, trust: TrustPolicy) -> Self {
        self.packet.trust = trust;
        self
    }

    /// The alert rate limit.
    pub fn alert_rate(mut self, rate: AlertRate) -> Self {
        self.packet.alert_rate = rate;
        self
    }

    /// Largest packet accepted.
    pub fn max_packet_bytes(mut self, n: usize) -> Self {
        self.packet.max_packet_bytes = n;
        self
    }

    /// The metrics hook (default: [`NoopMetrics`]).
    pub fn metrics(mut self, hook: Arc<dyn MetricsHook>) -> Self {
        self.metrics = hook;
        self
    }

    /// Publishes the handshake again each time `signal` yields (for example on every
    /// reconnect of the transport; see [`crate::reconnect`]).
    pub fn handshake_on(mut self, signal: impl Stream<Item = ()> + Send + 'static) -> Self {
        self.handshake_triggers.push(Box::pin(signal));
        self
    }

    /// Takes part in the worker trust handshake (see [`crate::trust`]): in `warn` and
    /// `enforce` mode the worker authenticates before it subscribes, renews its session,
    /// authenticates again on each [`handshake_on`](Self::handshake_on) signal before
    /// re-announcing, puts the session token into every packet, and accepts only packets
    /// signed by the configured scheduler (this replaces [`trust`](Self::trust)). In
    /// `enforce` mode [`Worker::start`](crate::Worker::start) fails without a session.
    pub fn worker_trust(mut self, config: WorkerTrustConfig) -> Self {
        self.worker_trust = Some(config);
        self
    }

    /// Runs the CAP-PRODUCTION profile (requires [`worker_trust`](Self::worker_trust) in
    /// `enforce` mode, as the reference peer does): every packet is sealed with the proof
    /// key under its id, for the subject it is published on, bound to the worker's
    /// tenant; only production packets from the expected scheduler, signed with its keys
    /// for the worker's tenant and the subject they arrive on, are admitted, once,
    /// through `replay` (use one namespace per worker, see
    /// [`crate::replay::RedisReplayStore`]), before any handler runs. Results and
    /// progress echo the admitted request's identity and dispatch identity.
    pub fn production(mut self, replay: Arc<dyn DynReplayStore>) -> Self {
        self.production = Some(replay);
        self
    }

    /// Registers a typed handler for `topic`.
    pub fn handler<H, I, O, E>(self, topic: impl Into<String>, handler: H) -> Self
    where
        H: Handler<I, O, E>,
        I: DeserializeOwned + JsonSchema + Send + 'static,
        O: Serialize + JsonSchema + Send + 'static,
        E: Into<JobError> + Send + 'static,
    {
        self.handler_with(topic, handler, HandlerOptions::default())
    }

    /// Registers a typed handler with its own options.
    pub fn handler_with<H, I, O, E>(
        self,
        topic: impl Into<String>,
        handler: H,
        options: HandlerOptions,
    ) -> Self
    where
        H: Handler<I, O, E>,
        I: DeserializeOwned + JsonSchema + Send + 'static,
        O: Serialize + JsonSchema + Send + 'static,
        E: Into<JobError> + Send + 'static,
    {
        let topic = topic.into();
        let info = HandlerInfo {
            topic: topic.clone(),
            input_schema: Some(schema_of::<I>()),
            output_schema: Some(schema_of::<O>()),
        };
        let svc = HandlerService::new(TypedService::<H, I, O, E>::new(handler));
        self.register(topic, svc, info, options)
    }

    /// Registers a raw handler (bytes in, bytes out) for `topic`.
    pub fn raw_handler<H, E>(self, topic: impl Into<String>, handler: H) -> Self
    where
        H: RawHandler<E>,
        E: Into<JobError> + Send + 'static,
    {
        self.raw_handler_with(topic, handler, HandlerOptions::default())
    }

    /// Registers a raw handler with its own options.
    pub fn raw_handler_with<H, E>(
        self,
        topic: impl Into<String>,
        handler: H,
        options: HandlerOptions,
    ) -> Self
    where
        H: RawHandler<E>,
        E: Into<JobError> + Send + 'static,
    {
        let topic = topic.into();
        let info = HandlerInfo {
            topic: topic.clone(),
            input_schema: None,
            output_schema: None,
        };
        let svc = HandlerService::new(RawService::<H, E>::new(handler));
        self.register(topic, svc, info, options)
    }

    /// Registers any `tower::Service<Job>` for `topic`.
    pub fn service<T>(self, topic: impl Into<String>, service: T, options: HandlerOptions) -> Self
    where
        T: tower::Service<Job, Response = Bytes, Error = JobError> + Clone + Send + Sync + 'static,
        T::Future: Send + 'static,
    {
        let topic = topic.into();
        let info = HandlerInfo {
            topic: topic.clone(),
            input_schema: None,
            output_schema: None,
        };
        self.register(topic, HandlerService::new(service), info, options)
    }

    fn register(
        mut self,
        topic: String,
        svc: HandlerService,
        info: HandlerInfo,
        options: HandlerOptions,
    ) -> Self {
        if let Err(e) = cap_proto::Subject::new(topic.as_str()) {
            self.errors.push(format!("topic {topic:?}: {e}"));
        }
        if self
            .handlers
            .insert(topic.clone(), (svc, info, options))
            .is_some()
        {
            self.errors
                .push(format!("topic {topic:?} registered twice"));
        }
        self
    }

    /// Adds a middleware layer to every handler (inside the layers registered before it).
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: tower::Layer<HandlerService> + Send + Sync + 'static,
        L::Service:
            tower::Service<Job, Response = Bytes, Error = JobError> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<Job>>::Future: Send + 'static,
    {
        self.layers
            .push(Arc::new(move |svc| HandlerService::new(layer.layer(svc))));
        self
    }

    /// Leaves out the built-in trace, timeout and retry layers (add them yourself with
    /// [`layer`](Self::layer) to choose their place).
    pub fn without_default_layers(mut self) -> Self {
        self.default_layers = false;
        self
    }

    /// Checks the settings and builds the worker.
    pub fn build(self) -> Result<Worker<B, S>, Error> {
        if let Some(e) = self.errors.first() {
            return Err(Error::new(ErrorKind::Config, e.clone()));
        }
        if self.handlers.is_empty() {
            return Err(Error::new(ErrorKind::Config, "no handlers registered"));
        }
        crate::packets::check_sender_id(&self.config.worker_id)?;
        let mut packet = self.packet;
        let trust = match self.worker_trust {
            Some(t) if t.mode != WorkerTrustMode::Off => {
                let resolved = t.resolve(&self.config.worker_id)?;
                let state = TrustState::new(resolved.mode);
                packet.trust = resolved.inbound_policy();
                packet.auth_token = Some(state.clone());
                Some((resolved, state))
            }
            _ => None,
        };
        if let Some(replay) = self.production {
            let resolved = match &trust {
                Some((r, _)) if r.mode == WorkerTrustMode::Enforce => r,
                _ => {
                    return Err(Error::new(
                        ErrorKind::Config,
                        "CAP-PRODUCTION requires worker trust in enforce mode",
                    ));
                }
            };
            packet.production = Some(production_config(resolved, replay)?);
        }
        let mut layers: Vec<LayerFn> = Vec::new();
        if self.default_layers {
            let timeout = TimeoutLayer::new(self.default_timeout);
            let retry = RetryLayer::new(self.retry);
            layers.push(Arc::new(|s| {
                HandlerService::new(tower::Layer::layer(&TraceLayer, s))
            }));
            layers.push(Arc::new(move |s| {
                HandlerService::new(tower::Layer::layer(&timeout, s))
            }));
            layers.push(Arc::new(move |s| {
                HandlerService::new(tower::Layer::layer(&retry, s))
            }));
        }
        layers.extend(self.layers);
        let handlers = self
            .handlers
            .into_iter()
            .map(|(topic, (mut svc, info, options))| {
                for layer in layers.iter().rev() {
                    svc = layer(svc);
                }
                (
                    topic,
                    HandlerEntry {
                        service: svc,
                        info,
                        options,
                    },
                )
            })
            .collect();
        Ok(Worker {
            bus: self.bus,
            store: self.store,
            config: self.config,
            packet,
            handlers,
            metrics: self.metrics,
            handshake_triggers: self.handshake_triggers,
            scope: self.scope,
            trust,
        })
    }
}

/// The production profile of a worker: sealed with its proof key, in its tenant;
/// admitting the expected scheduler's packets signed with its keys.
fn production_config(
    trust: &crate::trust::ResolvedTrust,
    replay: Arc<dyn DynReplayStore>,
) -> Result<ProductionConfig, Error> {
    let config_error = |e| Error::with_source(ErrorKind::Config, "production profile", e);
    // The audience is replaced by the subject of each received packet.
    let mut base = ProductionTrust::new(&trust.worker_id, &trust.tenant_id, &trust.scheduler_id)
        .map_err(config_error)?
        .with_clock_skew(DEFAULT_CLOCK_SKEW)
        .map_err(config_error)?;
    for (id, key) in &trust.scheduler_keys {
        base = base.with_key(id.clone(), key.clone());
    }
    ProductionConfig::new(
        trust.proof_key.clone(),
        &trust.proof_key_id,
        &trust.tenant_id,
        Arc::new(FixedAuthority::new(base)),
        replay,
    )
    .map_err(config_error)
}
