//! Logs and traces of the `cap` binary: the stderr log writer, and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, OpenTelemetry export of the libraries' `tracing`
//! spans over OTLP/gRPC with their W3C trace context linked across processes (the
//! [`TraceHook`] of cap-runtime). Without the variable no exporter, layer or hook exists.

use cap_runtime::trace_context::{self, TraceContext, TraceHook};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use std::cell::Cell;
use std::sync::OnceLock;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The variable that turns export on (the OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`).
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

struct Export {
    provider: SdkTracerProvider,
    /// Drives the exporter's gRPC channel, whatever runtime the command uses.
    _runtime: tokio::runtime::Runtime,
}

static EXPORT: OnceLock<Export> = OnceLock::new();

thread_local! {
    /// The trace id the next root span on this thread must have (see [`Hook::link`]).
    static NEXT_TRACE_ID: Cell<Option<[u8; 16]>> = const { Cell::new(None) };
}

/// Random ids, except a root span's trace id when [`Hook::link`] asks for one.
#[derive(Debug)]
struct Ids(RandomIdGenerator);

impl IdGenerator for Ids {
    fn new_trace_id(&self) -> TraceId {
        match NEXT_TRACE_ID.with(Cell::take) {
            Some(id) => TraceId::from_bytes(id),
            None => self.0.new_trace_id(),
        }
    }
    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// Links spans through tracing-opentelemetry.
struct Hook;

impl TraceHook for Hook {
    fn link(&self, span: &tracing::Span, trace_id: [u8; 16], parent: Option<&TraceContext>) {
        match parent {
            Some(p) => {
                let flags = if p.sampled {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                };
                let state = p.state.parse::<TraceState>().unwrap_or_default();
                let sc = SpanContext::new(
                    TraceId::from_bytes(p.trace_id),
                    SpanId::from_bytes(p.span_id),
                    flags,
                    true,
                    state,
                );
                let cx = opentelemetry::Context::new().with_remote_span_context(sc);
                let _ = span.set_parent(cx);
            }
            None => {
                // The span is built now, on this thread, as a root: its trace id is the
                // job's.
                NEXT_TRACE_ID.with(|c| c.set(Some(trace_id)));
                let _ = span.context();
                NEXT_TRACE_ID.with(|c| c.set(None));
            }
        }
    }

    fn context(&self, span: &tracing::Span) -> Option<TraceContext> {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| TraceContext {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            sampled: sc.is_sampled(),
            state: sc.trace_state().header(),
        })
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
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(LevelFilter::from_level(level));
    let endpoint = std::env::var(ENDPOINT_ENV).unwrap_or_default();
    if endpoint.trim().is_empty() {
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        return;
    }
    match exporter() {
        Ok(export) => {
            let tracer = export.provider.tracer("cap");
            // Spans only: log events already go to the log writer; copying each into
            // its span as an OTel event would cost more than the span itself.
            let otel = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter_fn(|m| m.is_span()))
                .with_filter(LevelFilter::INFO);
            if tracing_subscriber::registry()
                .with(fmt)
                .with(otel)
                .try_init()
                .is_ok()
            {
                let _ = EXPORT.set(export);
                trace_context::install_hook(Box::new(Hook));
            }
        }
        Err(e) => {
            let _ = tracing_subscriber::registry().with(fmt).try_init();
            tracing::warn!(error = %e, "{ENDPOINT_ENV} is set but the OTLP exporter could not be built; spans are not exported");
        }
    }
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
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(Ids(RandomIdGenerator::default()))
        .with_resource(opentelemetry_sdk::Resource::builder().build())
        .build();
    Ok(Export {
        provider,
        _runtime: runtime,
    })
}

/// Exports the spans still buffered (at the end of a command).
pub fn shutdown() {
    if let Some(export) = EXPORT.get()
        && let Err(e) = export.provider.shutdown()
    {
        eprintln!("cap: exporting the last spans failed: {e}");
    }
}

/// For `cap demo --compare-observability`: installs the subscriber that the "on" runs
/// pay for — the OpenTelemetry layer recording every span of the libraries (sampled,
/// built and ended; not exported, so no collector is needed) and the cross-process
/// [`TraceHook`] — behind a switch. The returned function turns spans and trace context
/// propagation on or off for the whole process.
pub fn switchable() -> anyhow::Result<impl Fn(bool) + Send + Sync + 'static> {
    let provider = SdkTracerProvider::builder()
        .with_id_generator(Ids(RandomIdGenerator::default()))
        .build();
    let tracer = provider.tracer("cap");
    let (filter, handle) = tracing_subscriber::reload::Layer::new(LevelFilter::OFF);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(filter_fn(|m| m.is_span()))
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(otel)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the tracing subscriber: {e}"))?;
    trace_context::install_hook(Box::new(Hook));
    // Kept for the process: its tracer must outlive the runs.
    std::mem::forget(provider);
    Ok(move |on: bool| {
        let level = if on {
            LevelFilter::INFO
        } else {
            LevelFilter::OFF
        };
        if let Err(e) = handle.reload(level) {
            tracing::warn!(error = %e, "switching spans failed");
        }
        trace_context::set_enabled(on);
    })
}
