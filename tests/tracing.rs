//! Traces across the broker, every scenario on both brokers: the run's `task` span is
//! a child of the span that enqueued the job (one enqueue or a batch), and the task's
//! body runs inside it; a call's own `traceparent` wins, with none of the current
//! span's `tracestate`, and a garbage one is ignored without harming the run; without
//! an OpenTelemetry context nothing is sent.
//!
//! The test binary installs, once, a global subscriber with an OpenTelemetry layer over
//! an SDK tracer provider that exports finished spans to memory: the worker runs jobs
//! on a multi-thread runtime, where a thread-local subscriber would not reach. Tests
//! running in parallel share that exporter, and find their own spans by the job's id
//! (the `task` span's `id` field) or the enqueuing span's own ids.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

use dmq_core::{TRACEPARENT_HEADER, TRACESTATE_HEADER, TaskContext, TaskError, TaskId, task};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

use common::{Backing, WAIT};

common::on_both_brokers! {
    a_run_s_span_is_a_child_of_the_span_that_enqueued_it;
    the_task_s_body_runs_inside_the_run_s_span;
    each_run_of_a_batch_is_a_child_of_the_span_that_enqueued_the_batch;
    a_traceparent_set_by_the_call_wins_over_the_current_span;
    a_garbage_traceparent_is_passed_on_untouched_and_the_run_succeeds_in_a_trace_of_its_own;
    without_an_opentelemetry_context_nothing_is_sent;
}

/// Returns the headers its job arrived with.
#[task(name = "tracing.headers", queue = "tracing")]
async fn headers(ctx: TaskContext) -> Result<BTreeMap<String, String>, TaskError> {
    Ok(ctx.headers().clone())
}

/// Returns the OpenTelemetry trace and span ids of the span its body runs in.
#[task(name = "tracing.current_span", queue = "tracing")]
async fn current_span() -> Result<(String, String), TaskError> {
    let context = tracing::Span::current().context();
    let ids = context.span().span_context().clone();
    Ok((ids.trace_id().to_string(), ids.span_id().to_string()))
}

/// The exporter behind this binary's global subscriber, installed on first use.
fn exporter() -> &'static InMemorySpanExporter {
    static INSTALLED: OnceLock<(SdkTracerProvider, InMemorySpanExporter)> = OnceLock::new();
    let (_, exporter) = INSTALLED.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("dmq-tests"));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("no other global subscriber in this test binary");
        (provider, exporter)
    });
    exporter
}

/// A new span to enqueue in, with its OpenTelemetry trace and span ids.
fn enqueuing_span() -> (tracing::Span, TraceId, SpanId) {
    exporter();
    let span = tracing::info_span!("enqueue");
    let context = span.context();
    let ids = context.span().span_context().clone();
    assert!(ids.is_valid(), "the enqueuing span has an OpenTelemetry context");
    (span, ids.trace_id(), ids.span_id())
}

/// A new span to enqueue in whose OpenTelemetry context has a `tracestate`
/// (`vendor=opaque`), as a run's span has when its job arrived with one; with its trace
/// id.
fn enqueuing_span_with_tracestate() -> (tracing::Span, TraceId) {
    exporter();
    let state = TraceState::from_key_value([("vendor", "opaque")]).expect("a valid tracestate");
    let trace_id = TraceId::from(uuid::Uuid::new_v4().as_u128());
    let remote = SpanContext::new(trace_id, SpanId::from(9), TraceFlags::SAMPLED, true, state);
    let span = tracing::info_span!("enqueue");
    span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote))
        .expect("the span has not started yet");
    let context = span.context();
    let ids = context.span().span_context().clone();
    assert_eq!(ids.trace_id(), trace_id);
    assert_eq!(ids.trace_state().header(), "vendor=opaque", "the span inherits the tracestate");
    (span, trace_id)
}

/// The exported `task` span of job `id`'s run, waiting up to [`WAIT`] for it to end.
async fn run_span(id: TaskId) -> SpanData {
    let id = id.to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let spans = exporter().get_finished_spans().expect("read the exported spans");
        let mut runs = spans.into_iter().filter(|span| {
            span.name == "task"
                && span
                    .attributes
                    .iter()
                    .any(|kv| kv.key.as_str() == "id" && kv.value.as_str() == id)
        });
        if let Some(run) = runs.next() {
            assert!(runs.next().is_none(), "job {id} ran once, so it has one task span");
            return run;
        }
        assert!(Instant::now() < deadline, "no task span for job {id} ended within {WAIT:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The value of attribute `key` of `span`, as text.
fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

async fn a_run_s_span_is_a_child_of_the_span_that_enqueued_it(backing: Backing) {
    let manager = backing.manager().await;
    let worker = manager.worker().queues(["tracing"]).start();
    let (span, trace_id, span_id) = enqueuing_span();

    let handle = headers::call().enqueue(&manager).instrument(span).await.expect("enqueue");
    let sent = handle.result(WAIT).await.expect("the run succeeds");
    assert_eq!(
        sent.get(TRACEPARENT_HEADER),
        Some(&format!("00-{trace_id}-{span_id}-01")),
        "the job carries the enqueuing span's context: {sent:?}"
    );
    assert!(!sent.contains_key(TRACESTATE_HEADER), "an empty tracestate is not sent: {sent:?}");

    let run = run_span(handle.id()).await;
    assert_eq!(run.span_context.trace_id(), trace_id, "the run continues the enqueuer's trace");
    assert_eq!(run.parent_span_id, span_id, "the run's parent is the enqueuing span");
    assert!(run.parent_span_is_remote);
    assert_eq!(attribute(&run, "name").as_deref(), Some("tracing.headers"));
    assert_eq!(attribute(&run, "queue").as_deref(), Some("tracing"));
    assert_eq!(attribute(&run, "attempt").as_deref(), Some("1"));
    worker.shutdown().await;
}

async fn the_task_s_body_runs_inside_the_run_s_span(backing: Backing) {
    let manager = backing.manager().await;
    let worker = manager.worker().queues(["tracing"]).start();
    let (span, trace_id, _) = enqueuing_span();

    let handle = current_span::call().enqueue(&manager).instrument(span).await.expect("enqueue");
    let (inside_trace_id, inside_span_id) = handle.result(WAIT).await.expect("the run succeeds");
    let run = run_span(handle.id()).await;
    assert_eq!(inside_trace_id, trace_id.to_string(), "the body runs in the enqueuer's trace");
    assert_eq!(
        inside_span_id,
        run.span_context.span_id().to_string(),
        "the body's current span is the run's `task` span"
    );
    worker.shutdown().await;
}

async fn each_run_of_a_batch_is_a_child_of_the_span_that_enqueued_the_batch(backing: Backing) {
    let manager = backing.manager().await;
    let worker = manager.worker().queues(["tracing"]).start();
    let (span, trace_id, span_id) = enqueuing_span();

    let calls = (0..3).map(|_| headers::call());
    let ids = manager.enqueue_batch(calls).instrument(span).await.expect("enqueue a batch");
    assert_eq!(ids.len(), 3);
    for id in ids {
        manager.result::<BTreeMap<String, String>>(id).wait(WAIT).await.expect("the run succeeds");
        let run = run_span(id).await;
        assert_eq!(run.span_context.trace_id(), trace_id, "job {id}");
        assert_eq!(run.parent_span_id, span_id, "job {id}");
    }
    worker.shutdown().await;
}

async fn a_traceparent_set_by_the_call_wins_over_the_current_span(backing: Backing) {
    let manager = backing.manager().await;
    let worker = manager.worker().queues(["tracing"]).start();
    // The current span has a tracestate, which must not be mixed with the call's
    // traceparent.
    let (span, enqueuer_trace_id) = enqueuing_span_with_tracestate();
    // As a producer in another language would write it, with ids of its own.
    let (theirs, their_span) = (TraceId::from(uuid::Uuid::new_v4().as_u128()), SpanId::from(7));
    let traceparent = format!("00-{theirs}-{their_span}-01");

    let handle = headers::call()
        .header(TRACEPARENT_HEADER, traceparent.as_str())
        .enqueue(&manager)
        .instrument(span)
        .await
        .expect("enqueue");
    let sent = handle.result(WAIT).await.expect("the run succeeds");
    assert_eq!(
        sent,
        BTreeMap::from([(TRACEPARENT_HEADER.to_owned(), traceparent)]),
        "nothing of the current span is added, not even its tracestate"
    );

    let run = run_span(handle.id()).await;
    assert_ne!(theirs, enqueuer_trace_id);
    assert_eq!(run.span_context.trace_id(), theirs, "the run continues the call's trace");
    assert_eq!(run.parent_span_id, their_span);
    assert_eq!(run.span_context.trace_state().header(), "", "nor has the run its tracestate");
    worker.shutdown().await;
}

async fn a_garbage_traceparent_is_passed_on_untouched_and_the_run_succeeds_in_a_trace_of_its_own(
    backing: Backing,
) {
    let manager = backing.manager().await;
    let worker = manager.worker().queues(["tracing"]).start();
    let (span, enqueuer_trace_id, _) = enqueuing_span();

    let garbage = "00-not-a-trace-context";
    let handle = headers::call()
        .header(TRACEPARENT_HEADER, garbage)
        .enqueue(&manager)
        .instrument(span)
        .await
        .expect("enqueue");
    let sent = handle.result(WAIT).await.expect("the run succeeds all the same");
    assert_eq!(sent.get(TRACEPARENT_HEADER).map(String::as_str), Some(garbage));

    let run = run_span(handle.id()).await;
    assert!(run.span_context.is_valid());
    assert_ne!(run.span_context.trace_id(), enqueuer_trace_id);
    assert_eq!(run.parent_span_id, SpanId::INVALID, "the run's span is a root: {run:?}");
    worker.shutdown().await;
}

async fn without_an_opentelemetry_context_nothing_is_sent(backing: Backing) {
    exporter();
    let manager = backing.manager().await;
    let worker = manager.worker().queues(["tracing"]).start();

    // An OpenTelemetry layer, but no current span.
    let outside = headers::call().enqueue(&manager).await.expect("enqueue");
    // A current span, but no OpenTelemetry layer: a subscriber of this thread only,
    // which the enqueue runs on.
    let plain = {
        let _plain = tracing::subscriber::set_default(tracing_subscriber::registry());
        let span = tracing::info_span!("enqueue");
        assert!(!span.is_disabled());
        headers::call().enqueue(&manager).instrument(span).await.expect("enqueue")
    };
    for handle in [outside, plain] {
        let sent = handle.result(WAIT).await.expect("the run succeeds");
        assert!(sent.is_empty(), "no header was added: {sent:?}");
        let run = run_span(handle.id()).await;
        assert_eq!(run.parent_span_id, SpanId::INVALID, "the run's span is a root: {run:?}");
    }
    worker.shutdown().await;
}
