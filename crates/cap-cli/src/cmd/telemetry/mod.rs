//! Logs and traces of the `cap` binary: the stderr log writer, and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, OpenTelemetry export of the libraries' `tracing`
//! spans over OTLP/gRPC with their W3C trace context linked across processes (the
//! [`TraceHook`] of cap-runtime). Without the variable no exporter, layer or hook exists.

mod span_layer;

use cap_runtime::trace_context::{self, TraceContext, TraceHook};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanData, SpanExporter, SpanProcessor};
use span_layer::SpanLayer;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, dynamic_filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The variable that turns export on (the OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`).
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

struct Export {
    processor: Arc<BatchSpanProcessor>,
    /// Drives the exporter's gRPC channel, whatever runtime the command uses.
    _runtime: tokio::runtime::Runtime,
}

static EXPORT: OnceLock<Export> = OnceLock::new();

/// Links spans through the [`SpanLayer`].
struct Hook;

impl TraceHook for Hook {
    fn link(&self, span: &tracing::Span, trace_id: [u8; 16], parent: Option<&TraceContext>) {
        SpanLayer::link(span, trace_id, parent);
    }

    fn context(&self, span: &tracing::Span) -> Option<TraceContext> {
        SpanLayer::context(span)
    }
}

/// Installs the log writer (stderr, `info`, `CAP_LOG=debug|warn|...` to change) and,
/// with [`ENDPOINT_ENV`] set, span export (`OTEL_SERVICE_NAME` names the process,
/// `OTEL_BSP_*` tune the batching).
pub fn init() {
    let level = std::env::var("CAP_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let log_level = LevelFilter::from_level(level);
    trace_context::set_sample_ratio(sample_ratio());
    let endpoint = std::env::var(ENDPOINT_ENV).unwrap_or_default();
    if endpoint.trim().is_empty() {
        let _ = tracing_subscriber::registry()
            .with(log_level)
            .with(log_layer())
            .try_init();
        return;
    }
    match exporter() {
        Ok(export) => {
            // Spans at INFO and above are exported; log lines keep their level. One global
            // filter where one will do: a per-layer filter costs on every span and poll.
            let (plain, filtered) = if log_level < LevelFilter::INFO {
                (None, Some(log_layer().with_filter(log_level)))
            } else {
                (Some(log_layer()), None)
            };
            if tracing_subscriber::registry()
                .with(log_level.max(LevelFilter::INFO))
                .with(plain)
                .with(filtered)
                .with(span_layer(&export.processor))
                .try_init()
                .is_ok()
            {
                let _ = EXPORT.set(export);
                trace_context::install_hook(Box::new(Hook));
            }
        }
        Err(e) => {
            let _ = tracing_subscriber::registry()
                .with(log_level)
                .with(log_layer())
                .try_init();
            tracing::warn!(error = %e, "{ENDPOINT_ENV} is set but the OTLP exporter could not be built; spans are not exported");
        }
    }
}

/// The share of traces sampled, from the OpenTelemetry variables `OTEL_TRACES_SAMPLER`
/// (`always_on`, `always_off`, `traceidratio` and their `parentbased_` forms; every
/// trace when unset) and `OTEL_TRACES_SAMPLER_ARG` (the ratio, 0 to 1).
///
/// The decision is made once per job, where its trace starts (see
/// [`trace_context::set_sample_ratio`]): a job that is not sampled gets no span at all,
/// and its packets say so, so the other processes make none either. The span layer
/// then records every span it is given.
pub fn sample_ratio() -> f64 {
    let sampler = std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_default();
    match sampler.trim() {
        "always_off" | "parentbased_always_off" => 0.0,
        "traceidratio" | "parentbased_traceidratio" => std::env::var("OTEL_TRACES_SAMPLER_ARG")
            .ok()
            .and_then(|a| a.trim().parse::<f64>().ok())
            .filter(|r| (0.0..=1.0).contains(r))
            // As the SDK does: a missing or invalid ratio samples everything.
            .unwrap_or(1.0),
        _ => 1.0,
    }
}

/// The log writer: stderr, coloured on a terminal.
fn log_layer<S>() -> impl tracing_subscriber::Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
}

/// The layer that turns the libraries' spans into OpenTelemetry spans, as `cap` ships it
/// (and as `cap demo --compare-observability` measures it): see [`SpanLayer`]. Each span
/// carries its own fields (job id, trace id, topic, worker id) and nothing per process or
/// per poll; parents come from the `tracing` span tree and, across processes, from
/// [`Hook`].
fn span_layer(processor: &Arc<BatchSpanProcessor>) -> SpanLayer {
    SpanLayer::new(processor.clone())
}

/// The batch span processor (tuned by the `OTEL_BSP_*` variables) exporting to
/// `exporter`, with the resource the OpenTelemetry variables describe
/// (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`).
fn processor<E: SpanExporter + 'static>(exporter: E) -> Arc<BatchSpanProcessor> {
    let mut processor = BatchSpanProcessor::builder(exporter).build();
    processor.set_resource(&opentelemetry_sdk::Resource::builder().build());
    Arc::new(processor)
}

fn exporter() -> anyhow::Result<Export> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()?;
    let exporter = {
        let _enter = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?
    };
    Ok(Export {
        processor: processor(exporter),
        _runtime: runtime,
    })
}

/// Exports the spans still buffered (at the end of a command).
pub fn shutdown() {
    if let Some(export) = EXPORT.get()
        && let Err(e) = export.processor.shutdown()
    {
        eprintln!("cap: exporting the last spans failed: {e}");
    }
}

/// A span exporter that counts and drops what it is given: the batch processor, its queue
/// and its export thread do all the work they do in production, without a collector.
#[derive(Debug, Default)]
struct Discard(Arc<AtomicU64>);

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Whether the spans of the libraries are recorded (see [`Switch`]).
static SPANS: AtomicBool = AtomicBool::new(false);

/// The subscriber `cap demo --compare-observability` measures, behind a switch (see
/// [`switchable`]).
pub struct Switch {
    processor: Arc<BatchSpanProcessor>,
    exported: Arc<AtomicU64>,
}

impl Switch {
    /// Turns span recording and trace context propagation on or off, process-wide.
    pub fn set(&self, on: bool) {
        SPANS.store(on, Ordering::Relaxed);
        trace_context::set_enabled(on);
    }

    /// Spans exported so far, after handing over those still queued.
    pub fn spans_exported(&self) -> u64 {
        if let Err(e) = self.processor.force_flush() {
            tracing::warn!(error = %e, "flushing spans failed");
        }
        self.exported.load(Ordering::Relaxed)
    }
}

/// For `cap demo --compare-observability`: installs the subscriber that the "on" runs
/// pay for, behind a [`Switch`]: the OpenTelemetry layer as `cap` ships it
/// ([`span_layer()`]) recording every span of the libraries at INFO and above (all
/// sampled, unless `OTEL_TRACES_SAMPLER` says otherwise), the batch span processor
/// handing them to an exporter that counts and drops them (no collector is needed), and
/// the cross-process [`TraceHook`]. Off, the global filter turns every span away at its
/// callsite (one atomic load).
pub fn switchable() -> anyhow::Result<Switch> {
    trace_context::set_sample_ratio(sample_ratio());
    let exported = Arc::new(AtomicU64::new(0));
    let processor = processor(Discard(exported.clone()));
    let gate = dynamic_filter_fn(|m, _| {
        SPANS.load(Ordering::Relaxed) && *m.level() <= tracing::Level::INFO
    })
    .with_max_level_hint(LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(gate)
        .with(span_layer(&processor))
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the tracing subscriber: {e}"))?;
    trace_context::install_hook(Box::new(Hook));
    Ok(Switch {
        processor,
        exported,
    })
}
