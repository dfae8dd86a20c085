//! The `/v1` endpoints, one module per audience: producers, consumers, operators.

pub(crate) mod admin;
pub(crate) mod consume;
pub(crate) mod events;
pub(crate) mod produce;

use std::time::Duration;

use dmq_core::{TaskId, TaskOutcome, TaskState};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::ApiError;

/// A task id from a path.
pub(crate) fn task_id(text: &str) -> Result<TaskId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("{text:?} is not a job id; a job id is a UUID")))
}

/// Milliseconds from a request, capped at `max`.
pub(crate) fn millis(ms: Option<u64>, default: Duration, max: Duration) -> Duration {
    ms.map_or(default, Duration::from_millis).min(max)
}

/// JSON for MessagePack bytes (a task's arguments or value).
pub(crate) fn json_of(bytes: &[u8]) -> Result<Value, String> {
    rmp_serde::from_slice::<Value>(bytes)
        .map_err(|e| format!("the MessagePack value has no JSON form: {e}"))
}

/// A job's outcome, as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Outcome {
    /// `succeeded`, `failed`, `expired` or `cancelled`.
    state: &'static str,
    /// The task's return value, when it succeeded.
    #[schema(value_type = Object, nullable)]
    value: Option<Value>,
    /// Why the value could not be shown as JSON (a value with MessagePack binary data).
    #[serde(skip_serializing_if = "Option::is_none")]
    value_error: Option<String>,
    /// Why it failed, when it failed.
    error: Option<Failure>,
    /// How many attempts ran.
    attempts: u32,
    /// When the last attempt started.
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When it finished.
    finished_at: chrono::DateTime<chrono::Utc>,
}

/// A failure's kind and message.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Failure {
    /// `error`, `fatal`, `panic`, `timeout`, `unknown_task`, `bad_args`, `bad_output`
    /// or `undecodable`.
    kind: String,
    /// The error message.
    message: String,
}

impl Outcome {
    pub(crate) fn of(outcome: &TaskOutcome) -> Outcome {
        let state = match outcome.state {
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            _ => "expired",
        };
        let (value, value_error) = match outcome.value.as_deref().map(json_of) {
            None => (None, None),
            Some(Ok(value)) => (Some(value), None),
            Some(Err(e)) => (None, Some(e)),
        };
        Outcome {
            state,
            value,
            value_error,
            error: outcome
                .failure
                .as_ref()
                .map(|f| Failure { kind: f.kind.as_str().to_owned(), message: f.message.clone() }),
            attempts: outcome.attempts,
            started_at: outcome.started_at,
            finished_at: outcome.finished_at,
        }
    }
}
