//! What one hop's span costs the thread that makes it, side by side in one run
//! (criterion): `span_hop/registry` (the `tracing` registry alone, nothing exported),
//! `span_hop/cap_layer` (`cap`'s [`SpanLayer`] handing each span to the SDK's batch span
//! processor) and `span_hop/tracing_opentelemetry` (the `tracing-opentelemetry` layer
//! configured as `cap` shipped it before, on the same processor). Both exporting sides
//! export to a sink that counts and drops, on the processor's own thread.
//!
//! A hop's span: made with the four fields `cap` gives every hop (job id, trace id,
//! topic, worker id), entered twice (two polls of the instrumented future), closed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../src/cmd/telemetry/span_layer.rs"]
#[allow(dead_code)]
mod span_layer;

use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};
use span_layer::SpanLayer;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing_subscriber::layer::SubscriberExt as _;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Counts and drops what it is given.
#[derive(Debug, Default, Clone)]
struct Discard(Arc<AtomicU64>);

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn hop() {
    let job = "4bf92f3577b34da6a3ce929d0e0e4736";
    let span = tracing::info_span!(
        "dispatch",
        job_id = job,
        trace_id = job,
        topic = "job.demo.echo",
        worker_id = "demo-worker",
    );
    drop(span.enter());
    drop(black_box(span.enter()));
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("span_hop");
    let level = tracing_subscriber::filter::LevelFilter::INFO;

    let registry = tracing_subscriber::registry().with(level);
    tracing::subscriber::with_default(registry, || {
        g.bench_function("registry", |b| b.iter(hop));
    });

    let exported = Discard::default();
    let processor = Arc::new(BatchSpanProcessor::builder(exported.clone()).build());
    let ours = tracing_subscriber::registry()
        .with(level)
        .with(SpanLayer::new(processor.clone()));
    tracing::subscriber::with_default(ours, || {
        g.bench_function("cap_layer", |b| b.iter(hop));
    });
    opentelemetry_sdk::trace::SpanProcessor::force_flush(&*processor).unwrap();
    assert!(
        exported.0.load(Ordering::Relaxed) > 0,
        "cap's layer exported nothing"
    );

    let exported = Discard::default();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exported.clone())
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .build();
    let theirs = tracing_subscriber::registry().with(level).with(
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("cap"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false),
    );
    tracing::subscriber::with_default(theirs, || {
        g.bench_function("tracing_opentelemetry", |b| b.iter(hop));
    });
    provider.force_flush().unwrap();
    assert!(
        exported.0.load(Ordering::Relaxed) > 0,
        "tracing-opentelemetry exported nothing"
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
