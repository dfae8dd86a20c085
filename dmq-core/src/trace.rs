//! Traces across processes: each run of a job has a `task` span, and the trace of the
//! code that enqueued the job continues in it.
//!
//! An enqueue writes the current span's OpenTelemetry context into the envelope's
//! headers as W3C Trace Context ([`TRACEPARENT_HEADER`], and [`TRACESTATE_HEADER`]
//! when it has one); the worker makes the run's span a child of that context. Both
//! ends go through `opentelemetry_sdk`'s `TraceContextPropagator`, so a producer in
//! another language that writes a `traceparent` header joins the same trace.
//!
//! Without the `opentelemetry` feature, without an OpenTelemetry layer in the
//! subscriber, or outside any span, an enqueue writes nothing, and a run's span has
//! its ordinary parent.

use tracing::Span;

use crate::envelope::Envelope;

/// The header that carries the enqueuing span's trace context, in W3C Trace Context
/// form: `00-<trace id>-<span id>-<flags>`.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The header that carries the vendor-specific part of the trace context (W3C
/// `tracestate`); present only when that is not empty.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// The trace context an enqueue sends along: the current span's, as the headers to
/// add to each envelope. Empty (and free to make and apply) when there is none.
#[derive(Debug, Default)]
pub(crate) struct TraceContext {
    /// `traceparent`, then `tracestate` when it is not empty.
    #[cfg(feature = "opentelemetry")]
    headers: Vec<(String, String)>,
}

impl TraceContext {
    /// The current span's OpenTelemetry context; empty when there is no current span,
    /// no OpenTelemetry layer, or the feature is off.
    pub(crate) fn current() -> Self {
        #[cfg(feature = "opentelemetry")]
        {
            otel::current()
        }
        #[cfg(not(feature = "opentelemetry"))]
        {
            TraceContext {}
        }
    }

    /// Adds the trace context to `envelope`'s headers. A call that set its own
    /// `traceparent` keeps it, and gets no `tracestate` either: its trace context is
    /// the one it chose.
    pub(crate) fn inject(&self, envelope: &mut Envelope) {
        #[cfg(feature = "opentelemetry")]
        {
            if self.headers.is_empty() || envelope.headers.contains_key(TRACEPARENT_HEADER) {
                return;
            }
            for (name, value) in &self.headers {
                envelope.headers.entry(name.clone()).or_insert_with(|| value.clone());
            }
        }
        #[cfg(not(feature = "opentelemetry"))]
        let _ = envelope;
    }
}

/// Adds the current span's trace context to `envelope`'s headers, as every enqueue
/// through a [`Manager`](crate::Manager) does; for code that hands envelopes to a
/// broker or a table itself (dmq-postgres's transactional `enqueue_in`). Writes
/// nothing without the `opentelemetry` feature, an OpenTelemetry layer or a current
/// span, and keeps a `traceparent` the envelope already has.
///
/// ```
/// let mut envelope = dmq_core::Envelope::new("add", "default", Vec::new());
/// dmq_core::inject_trace_context(&mut envelope);
/// // Outside any span, there is no trace to continue.
/// assert!(!envelope.headers.contains_key(dmq_core::TRACEPARENT_HEADER));
/// ```
pub fn inject_trace_context(envelope: &mut Envelope) {
    TraceContext::current().inject(envelope);
}

/// The span one run of `envelope`'s job runs in: `task`, with the job's id, task name,
/// attempt and queue. When the envelope carries a valid `traceparent` and the
/// subscriber has an OpenTelemetry layer, the span continues that trace, as a child of
/// the span that enqueued the job; a malformed one is ignored.
///
/// With no `traceparent`, this costs one look-up in the headers beyond making the span.
pub(crate) fn run_span(envelope: &Envelope) -> Span {
    // The target the span had when it was made in the worker, so that log filters
    // written for the worker keep matching it.
    let span = tracing::info_span!(
        target: "dmq_core::worker::job",
        "task",
        id = %envelope.id,
        name = %envelope.task,
        attempt = envelope.attempt,
        queue = %envelope.queue,
    );
    #[cfg(feature = "opentelemetry")]
    if !span.is_disabled() && envelope.headers.contains_key(TRACEPARENT_HEADER) {
        otel::continue_trace(&span, &envelope.headers);
    }
    span
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use std::collections::BTreeMap;

    use opentelemetry::Context;
    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::TraceContext;

    pub(super) fn current() -> TraceContext {
        let mut trace = TraceContext::default();
        let span = Span::current();
        if span.is_none() {
            return trace;
        }
        // Without an OpenTelemetry layer this is an empty context, made without
        // allocating.
        let cx = span.context();
        if cx.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&cx, &mut Collect(&mut trace.headers));
        }
        trace
    }

    /// Makes the not yet entered `span` a child of the context in `headers`, if it
    /// holds a valid one.
    pub(super) fn continue_trace(span: &Span, headers: &BTreeMap<String, String>) {
        // From an empty context: what is current here has nothing to do with the job.
        let parent =
            TraceContextPropagator::new().extract_with_context(&Context::new(), &Headers(headers));
        if !parent.span().span_context().is_valid() {
            // Its value is not echoed: it came from whoever enqueued the job.
            tracing::debug!(parent: span, "ignoring a malformed traceparent header");
            return;
        }
        // It fails only without an OpenTelemetry layer, where there is no trace to
        // continue.
        let _ = span.set_parent(parent);
    }

    /// Collects what the propagator writes, less empty values (an empty `tracestate`).
    struct Collect<'a>(&'a mut Vec<(String, String)>);

    impl Injector for Collect<'_> {
        fn set(&mut self, key: &str, value: String) {
            if !value.is_empty() {
                self.0.push((key.to_owned(), value));
            }
        }
    }

    /// An envelope's headers, as the propagator reads them.
    struct Headers<'a>(&'a BTreeMap<String, String>);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(String::as_str)
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(String::as_str).collect()
        }
    }
}

#[cfg(all(test, feature = "opentelemetry"))]
mod tests {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Runs `f` under a subscriber with an OpenTelemetry layer.
    fn with_otel<R>(f: impl FnOnce() -> R) -> R {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("dmq-core"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f)
    }

    fn envelope() -> Envelope {
        Envelope::new("trace.test", "default", vec![0x90])
    }

    fn injected() -> Envelope {
        let mut envelope = envelope();
        TraceContext::current().inject(&mut envelope);
        envelope
    }

    #[test]
    fn an_enqueue_in_a_span_sends_that_span_s_context() {
        let (envelope, trace_id, span_id) = with_otel(|| {
            let span = tracing::info_span!("enqueue");
            let _entered = span.enter();
            let cx = span.context();
            let (trace_id, span_id) =
                (cx.span().span_context().trace_id(), cx.span().span_context().span_id());
            (injected(), trace_id, span_id)
        });
        assert_eq!(
            envelope.headers.get(TRACEPARENT_HEADER),
            Some(&format!("00-{trace_id}-{span_id}-01"))
        );
        assert_eq!(
            envelope.headers.get(TRACESTATE_HEADER),
            None,
            "an empty tracestate is left out"
        );
    }

    #[test]
    fn outside_a_span_or_without_an_opentelemetry_layer_nothing_is_sent() {
        let outside = with_otel(injected);
        assert!(outside.headers.is_empty(), "{:?}", outside.headers);

        let plain = tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            let span = tracing::info_span!("enqueue");
            let _entered = span.enter();
            injected()
        });
        assert!(plain.headers.is_empty(), "{:?}", plain.headers);
    }

    #[test]
    fn a_traceparent_set_by_the_call_wins_with_none_of_the_current_span_s_tracestate() {
        let mine = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        // The current span is the run of a job that arrived with a tracestate.
        let mut received = envelope();
        let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        received.headers.insert(TRACEPARENT_HEADER.into(), theirs.into());
        received.headers.insert(TRACESTATE_HEADER.into(), "vendor=opaque".into());
        let envelope = with_otel(|| {
            let span = run_span(&received);
            let _entered = span.enter();
            assert_eq!(
                span.context().span().span_context().trace_state().header(),
                "vendor=opaque"
            );
            let mut envelope = envelope();
            envelope.headers.insert(TRACEPARENT_HEADER.into(), mine.into());
            TraceContext::current().inject(&mut envelope);
            envelope
        });
        assert_eq!(envelope.headers.get(TRACEPARENT_HEADER).map(String::as_str), Some(mine));
        assert_eq!(envelope.headers.len(), 1, "{:?}", envelope.headers);
    }

    #[test]
    fn a_run_continues_the_trace_in_its_headers_and_passes_its_tracestate_on() {
        let mut envelope = envelope();
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        envelope.headers.insert(TRACEPARENT_HEADER.into(), parent.into());
        envelope.headers.insert(TRACESTATE_HEADER.into(), "vendor=opaque".into());
        let child = with_otel(|| {
            let span = run_span(&envelope);
            let _entered = span.enter();
            let trace_id = span.context().span().span_context().trace_id();
            assert_eq!(trace_id.to_string(), "0af7651916cd43dd8448eb211c80319c");
            injected()
        });
        let traceparent = &child.headers[TRACEPARENT_HEADER];
        assert!(traceparent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"), "{traceparent}");
        assert!(!traceparent.contains("b7ad6b7169203331"), "the run's own span is the parent");
        assert_eq!(child.headers.get(TRACESTATE_HEADER).map(String::as_str), Some("vendor=opaque"));
    }

    #[test]
    fn a_malformed_traceparent_is_ignored_and_the_run_keeps_its_ordinary_parent() {
        let zeros = "00-00000000000000000000000000000000-0000000000000000-01";
        for bad in ["", "garbage", "00-zz-yy-01", "00-0af7651916cd43dd8448eb211c80319c", zeros] {
            let mut envelope = envelope();
            envelope.headers.insert(TRACEPARENT_HEADER.into(), bad.into());
            let (outer, run) = with_otel(|| {
                let outer = tracing::info_span!("worker");
                let _entered = outer.enter();
                let run = run_span(&envelope);
                let trace_id = |span: &Span| span.context().span().span_context().trace_id();
                (trace_id(&outer), trace_id(&run))
            });
            assert_eq!(run, outer, "{bad:?}");
        }
    }

    #[test]
    fn the_run_span_is_named_task_and_made_without_a_subscriber_too() {
        let span = with_otel(|| run_span(&envelope()));
        let metadata = span.metadata().expect("an enabled span");
        assert_eq!((metadata.name(), metadata.target()), ("task", "dmq_core::worker::job"));
        let _none = run_span(&envelope());
    }
}
