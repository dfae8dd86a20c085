//! The event stream as Server-Sent Events: one `event:` per job event, its data the
//! event as JSON (the fields `dmq events --json` prints).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use chrono::SecondsFormat;
use dmq_core::{Event, EventKind, EventsFrom};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::auth::Scope;
use crate::error::{ApiError, ErrorBody};
use crate::state::{AppState, Caller};

/// How long one read of the stream waits for events before it reads again.
const READ_WAIT: Duration = Duration::from_secs(5);

/// The most events one read takes.
const READ_MAX: usize = 1000;

/// An event as one JSON object, its fields named as in the stream's wire format
/// (docs/wire-format.md), with times as RFC 3339 text: what `dmq events --json`
/// prints and the SSE endpoint sends.
#[must_use]
pub fn event_json(event: &Event) -> Value {
    let time = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let mut object = Map::new();
    object.insert("kind".into(), json!(event.event_type().as_str()));
    object.insert("id".into(), json!(event.id.to_string()));
    object.insert("task".into(), json!(event.task));
    object.insert("queue".into(), json!(event.queue));
    object.insert("attempt".into(), json!(event.attempt));
    object.insert("at".into(), json!(time(event.at)));
    object.insert("worker".into(), json!(event.worker));
    match &event.kind {
        EventKind::Queued { eta } => {
            object.insert("eta".into(), json!(eta.map(time)));
        }
        EventKind::Completed { run_time } => {
            object.insert("run_time_us".into(), json!(micros(*run_time)));
        }
        EventKind::Failed { failure, error, run_time } => {
            object.insert("failure".into(), json!(failure.as_str()));
            object.insert("error".into(), json!(error));
            object.insert("run_time_us".into(), json!(run_time.map(micros)));
        }
        EventKind::Retry { delay, error, run_time } => {
            let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            object.insert("delay_ms".into(), json!(delay_ms));
            object.insert("error".into(), json!(error));
            object.insert("run_time_us".into(), json!(micros(*run_time)));
        }
        EventKind::DeadLettered { reason } => {
            object.insert("reason".into(), json!(reason));
        }
        EventKind::Expired { expired_at } => {
            object.insert("expired_at".into(), json!(time(*expired_at)));
        }
        EventKind::Held { gate, limit } => {
            object.insert("gate".into(), json!(gate));
            object.insert("limit".into(), json!(limit.as_str()));
        }
        // Started, NotFound, and kinds a later dmq adds: no facts to show.
        _ => {}
    }
    Value::Object(object)
}

/// Where the stream starts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Send the last this many events kept first (0, the default: only new ones).
    #[serde(default)]
    #[param(maximum = 18446744073709551615_u64)]
    last: Option<usize>,
}

/// One event of the stream as an SSE client reads it: its `event` and its `data`.
pub(crate) struct StreamEvent;

impl PartialSchema for StreamEvent {
    fn schema() -> RefOr<Schema> {
        let text = || ObjectBuilder::new().schema_type(Type::String);
        ObjectBuilder::new()
            .description(Some(
                "One Server-Sent Event: `event:` its kind, `data:` the event as JSON",
            ))
            .property(
                "event",
                text().description(Some("The event's kind: `queued`, `started`, ...")),
            )
            .property(
                "data",
                text().content_media_type("application/json").description(Some(
                    "The event as a JSON object (the fields `dmq events --json` prints)",
                )),
            )
            .required("event")
            .required("data")
            .into()
    }
}

impl ToSchema for StreamEvent {}

/// Follows the event stream (Server-Sent Events, `text/event-stream`): each event's
/// `event:` is its kind and its `data:` the event as JSON.
#[utoipa::path(get, path = "/v1/events", tag = "admin", params(EventsQuery),
    responses(
        (status = 200, description = "A stream of events", content_type = "text/event-stream", body = StreamEvent),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 501, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn events(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    caller.require_everywhere(&state, Scope::Admin)?;
    let Query(query) = query?;
    if state.manager.broker().event_stream().is_none() {
        return Err(
            dmq_core::Error::Unsupported("this broker keeps no event stream".to_owned()).into()
        );
    }
    let from = match query.last {
        Some(n) if n > 0 => EventsFrom::Last(n),
        _ => EventsFrom::Now,
    };
    // The stream waits on the broker as long as it is open: it holds a permit.
    let permit = state.wait_permit()?;
    let manager = state.manager.clone();
    let stream = futures::stream::unfold(
        (manager, from, Vec::<SseEvent>::new(), permit),
        |(manager, mut from, mut pending, permit)| async move {
            loop {
                if let Some(next) = pending.pop() {
                    return Some((Ok(next), (manager, from, pending, permit)));
                }
                let stream = manager.broker().event_stream()?;
                match stream.read_events(&from, READ_MAX, READ_WAIT).await {
                    Ok(page) => {
                        from = EventsFrom::After(page.cursor);
                        // Popped from the end: kept newest first.
                        pending = page
                            .events
                            .iter()
                            .rev()
                            .map(|e| {
                                SseEvent::default()
                                    .event(e.event_type().as_str())
                                    .data(event_json(e).to_string())
                            })
                            .collect();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the event stream failed; trying again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
