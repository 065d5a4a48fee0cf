//! The `tracing` layer that turns the libraries' spans into OpenTelemetry spans and hands
//! them, finished, to the SDK's batch span processor (which batches and exports them).
//!
//! It records what `cap` needs and nothing else: each span's trace and span ids, its
//! parent (the `tracing` parent, or a remote one set by [`SpanLayer::link`]), start and
//! end times, its fields as attributes, and the log events inside it as span events (an
//! `ERROR` event marks the span failed). Nothing is built until a span closes, and then
//! only the SDK's [`SpanData`]: no span builder, OTel context, tracer or sampler per
//! span: about two thirds of the cost per span of `tracing-opentelemetry` on the thread
//! that makes it (measured side by side by `cargo bench -p cap-cli --bench spans`). Sampling is decided before a span is made
//! (see `cap_runtime::trace_context::hop_span`), so every span this layer sees is
//! recorded.

use cap_runtime::trace_context::TraceContext;
use opentelemetry::trace::{
    Event, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, Key, KeyValue, Value};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanProcessor};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// A span being recorded: kept in the span's extensions from its creation to its close.
struct Recording {
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: SpanId,
    parent_is_remote: bool,
    state: TraceState,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    events: Vec<Event>,
    status: Status,
}

/// The layer (see the module documentation); `processor` gets every span that closes.
pub struct SpanLayer {
    processor: Arc<dyn SpanProcessor>,
    ids: RandomIdGenerator,
    scope: InstrumentationScope,
}

impl SpanLayer {
    /// A layer handing its spans to `processor`.
    pub fn new(processor: Arc<dyn SpanProcessor>) -> Self {
        SpanLayer {
            processor,
            ids: RandomIdGenerator::default(),
            scope: InstrumentationScope::builder("cap")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        }
    }

    /// Makes `span` (new, not yet entered) a child of the remote `parent`, or, without
    /// one, the root of the trace `trace_id`. Nothing when `span` is not recorded by this
    /// layer (disabled, or another subscriber).
    pub fn link(span: &tracing::Span, trace_id: [u8; 16], parent: Option<&TraceContext>) {
        with_recording(span, |r| match parent {
            Some(p) => {
                r.trace_id = TraceId::from_bytes(p.trace_id);
                r.parent_span_id = SpanId::from_bytes(p.span_id);
                r.parent_is_remote = true;
                // Most contexts carry no `tracestate`: nothing to parse.
                r.state = if p.state.is_empty() {
                    TraceState::NONE
                } else {
                    p.state.parse::<TraceState>().unwrap_or_default()
                };
            }
            None => {
                r.trace_id = TraceId::from_bytes(trace_id);
                r.parent_span_id = SpanId::INVALID;
                r.parent_is_remote = false;
            }
        });
    }

    /// The trace context to send from within `span`, when this layer records it.
    pub fn context(span: &tracing::Span) -> Option<TraceContext> {
        with_recording(span, |r| TraceContext {
            trace_id: r.trace_id.to_bytes(),
            span_id: r.span_id.to_bytes(),
            sampled: true,
            state: r.state.header(),
        })
    }
}

/// Runs `f` on the recording of `span`, if the global subscriber is a [`Registry`] with
/// a [`SpanLayer`] that records it.
fn with_recording<T>(span: &tracing::Span, f: impl FnOnce(&mut Recording) -> T) -> Option<T> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let data = registry.span(id)?;
        let mut ext = data.extensions_mut();
        ext.get_mut::<Recording>().map(f)
    })
    .flatten()
}

impl<S> Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let parent = span.parent().and_then(|p| {
            p.extensions()
                .get::<Recording>()
                .map(|r| (r.trace_id, r.span_id, r.state.clone()))
        });
        let (trace_id, parent_span_id, state) = match parent {
            Some(p) => p,
            None => (self.ids.new_trace_id(), SpanId::INVALID, TraceState::NONE),
        };
        let mut attributes = Vec::with_capacity(attrs.fields().len());
        attrs.record(&mut Fields(&mut attributes));
        span.extensions_mut().insert(Recording {
            trace_id,
            span_id: self.ids.new_span_id(),
            parent_span_id,
            parent_is_remote: false,
            state,
            start: SystemTime::now(),
            attributes,
            events: Vec::new(),
            status: Status::Unset,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(r) = span.extensions_mut().get_mut::<Recording>() {
            values.record(&mut Fields(&mut r.attributes));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let mut ext = span.extensions_mut();
        let Some(r) = ext.get_mut::<Recording>() else {
            return;
        };
        let level = *event.metadata().level();
        let mut fields = EventFields {
            name: None,
            attributes: vec![KeyValue::new("level", level.as_str())],
        };
        event.record(&mut fields);
        let name: Cow<'static, str> = match fields.name {
            Some(n) => Cow::Owned(n),
            None => Cow::Borrowed(event.metadata().name()),
        };
        if level == Level::ERROR {
            r.status = Status::error(name.clone());
        }
        r.events
            .push(Event::new(name, SystemTime::now(), fields.attributes, 0));
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(r) = span.extensions_mut().remove::<Recording>() else {
            return;
        };
        let mut events = opentelemetry_sdk::trace::SpanEvents::default();
        events.events = r.events;
        self.processor.on_end(SpanData {
            span_context: SpanContext::new(
                r.trace_id,
                r.span_id,
                TraceFlags::SAMPLED,
                false,
                r.state,
            ),
            parent_span_id: r.parent_span_id,
            parent_span_is_remote: r.parent_is_remote,
            span_kind: SpanKind::Internal,
            name: Cow::Borrowed(span.name()),
            start_time: r.start,
            end_time: SystemTime::now(),
            attributes: r.attributes,
            dropped_attributes_count: 0,
            events,
            links: Default::default(),
            status: r.status,
            instrumentation_scope: self.scope.clone(),
        });
    }
}

/// Records a span's fields as attributes.
struct Fields<'a>(&'a mut Vec<KeyValue>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push(attribute(field, value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0
            .push(KeyValue::new(Key::from_static_str(field.name()), value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push(match i64::try_from(value) {
            Ok(v) => KeyValue::new(Key::from_static_str(field.name()), v),
            Err(_) => attribute(field, value.to_string()),
        });
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0
            .push(KeyValue::new(Key::from_static_str(field.name()), value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0
            .push(KeyValue::new(Key::from_static_str(field.name()), value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push(attribute(field, format!("{value:?}")));
    }
}

fn attribute(field: &Field, value: String) -> KeyValue {
    KeyValue::new(
        Key::from_static_str(field.name()),
        Value::String(value.into()),
    )
}

/// Records a log event: its message as the event's name, its other fields as attributes.
struct EventFields {
    name: Option<String>,
    attributes: Vec<KeyValue>,
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.name = Some(value.to_owned());
        } else {
            Fields(&mut self.attributes).record_str(field, value);
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        Fields(&mut self.attributes).record_i64(field, value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        Fields(&mut self.attributes).record_u64(field, value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        Fields(&mut self.attributes).record_f64(field, value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        Fields(&mut self.attributes).record_bool(field, value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.name = Some(format!("{value:?}"));
        } else {
            Fields(&mut self.attributes).record_debug(field, value);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use opentelemetry_sdk::error::OTelSdkResult;
    use std::sync::Mutex;
    use std::time::Duration;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Keeps what it is given.
    #[derive(Debug, Default)]
    struct Collect(Mutex<Vec<SpanData>>);

    impl SpanProcessor for Collect {
        fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
    }

    /// Runs `f` under a registry with the layer; the spans it closed, by name.
    fn recorded(f: impl FnOnce()) -> Vec<SpanData> {
        let collect = Arc::new(Collect::default());
        let subscriber = tracing_subscriber::registry().with(SpanLayer::new(collect.clone()));
        tracing::subscriber::with_default(subscriber, f);
        std::mem::take(&mut *collect.0.lock().unwrap())
    }

    fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
        spans.iter().find(|s| s.name == name).unwrap()
    }

    fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
        attrs
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    #[test]
    fn a_child_is_in_its_parents_trace_with_its_fields() {
        let spans = recorded(|| {
            let parent = tracing::info_span!("dispatch", job_id = "j1", attempt = 2u64);
            let _in = parent.enter();
            let child = tracing::info_span!("handle", worker_id = tracing::field::Empty);
            child.record("worker_id", "w1");
        });
        assert_eq!(spans.len(), 2);
        let (parent, child) = (named(&spans, "dispatch"), named(&spans, "handle"));
        assert_eq!(parent.parent_span_id, SpanId::INVALID);
        assert!(parent.span_context.is_sampled());
        assert_ne!(parent.span_context.trace_id(), TraceId::INVALID);
        assert_eq!(
            child.span_context.trace_id(),
            parent.span_context.trace_id()
        );
        assert_eq!(child.parent_span_id, parent.span_context.span_id());
        assert_ne!(child.span_context.span_id(), parent.span_context.span_id());
        assert!(!child.parent_span_is_remote);
        assert_eq!(attr(&parent.attributes, "job_id"), Some(&Value::from("j1")));
        assert_eq!(attr(&parent.attributes, "attempt"), Some(&Value::I64(2)));
        assert_eq!(
            attr(&child.attributes, "worker_id"),
            Some(&Value::from("w1"))
        );
        assert!(parent.start_time <= child.start_time && child.end_time <= parent.end_time);
        assert_eq!(parent.instrumentation_scope.name(), "cap");
    }

    #[test]
    fn a_linked_span_continues_the_remote_parent_and_hands_on_its_context() {
        let remote = TraceContext {
            trace_id: [7; 16],
            span_id: [9; 8],
            sampled: true,
            state: "rojo=00f067aa0ba902b7".to_owned(),
        };
        let mut sent = None;
        let spans = recorded(|| {
            let span = tracing::info_span!("handle");
            SpanLayer::link(&span, [1; 16], Some(&remote));
            let _in = span.enter();
            let child = tracing::info_span!("result");
            sent = SpanLayer::context(&child);
        });
        let (handle, result) = (named(&spans, "handle"), named(&spans, "result"));
        assert_eq!(handle.span_context.trace_id(), TraceId::from_bytes([7; 16]));
        assert_eq!(handle.parent_span_id, SpanId::from_bytes([9; 8]));
        assert!(handle.parent_span_is_remote);
        assert_eq!(handle.span_context.trace_state().header(), remote.state);
        assert_eq!(result.parent_span_id, handle.span_context.span_id());
        let sent = sent.unwrap();
        assert_eq!(sent.trace_id, [7; 16]);
        assert_eq!(sent.span_id, result.span_context.span_id().to_bytes());
        assert!(sent.sampled);
        assert_eq!(sent.state, remote.state);
    }

    #[test]
    fn a_root_takes_the_jobs_trace_id() {
        let spans = recorded(|| {
            let span = tracing::info_span!("submit");
            SpanLayer::link(&span, [3; 16], None);
        });
        let submit = named(&spans, "submit");
        assert_eq!(submit.span_context.trace_id(), TraceId::from_bytes([3; 16]));
        assert_eq!(submit.parent_span_id, SpanId::INVALID);
    }

    #[test]
    fn unrecorded_spans_have_no_context() {
        // No subscriber at all, and a disabled span under the layer.
        assert_eq!(SpanLayer::context(&tracing::info_span!("x")), None);
        let spans = recorded(|| {
            let none = tracing::Span::none();
            SpanLayer::link(&none, [3; 16], None);
            assert_eq!(SpanLayer::context(&none), None);
        });
        assert!(spans.is_empty());
    }

    #[test]
    fn log_events_become_span_events_and_an_error_fails_the_span() {
        let spans = recorded(|| {
            let span = tracing::info_span!("dispatch");
            let _in = span.enter();
            tracing::info!(attempt = 1, "dispatched");
            tracing::error!(error = "kernel down", "policy check failed");
        });
        let s = named(&spans, "dispatch");
        assert_eq!(s.events.events.len(), 2);
        let (first, second) = (&s.events.events[0], &s.events.events[1]);
        assert_eq!(first.name, "dispatched");
        assert_eq!(attr(&first.attributes, "level"), Some(&Value::from("INFO")));
        assert_eq!(attr(&first.attributes, "attempt"), Some(&Value::I64(1)));
        assert_eq!(second.name, "policy check failed");
        assert_eq!(
            attr(&second.attributes, "error"),
            Some(&Value::from("kernel down"))
        );
        assert_eq!(s.status, Status::error("policy check failed"));
    }
}
