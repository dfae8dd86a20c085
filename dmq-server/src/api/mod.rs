//! The `/v1` endpoints, one module per audience: producers, consumers, operators.

pub(crate) mod admin;
pub(crate) mod consume;
pub(crate) mod events;
pub(crate) mod produce;

use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequest, Request};
use dmq_core::{TaskId, TaskOutcome};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::error::ApiError;

/// The characters no queue or task name may hold (dmq-core's `check_queue_name`):
/// whitespace, control characters, braces and commas, as inclusive ranges.
const NOT_IN_NAMES: [(char, char); 12] = [
    ('\u{0}', ' '),
    ('\u{7f}', '\u{a0}'),
    ('\u{1680}', '\u{1680}'),
    ('\u{2000}', '\u{200a}'),
    ('\u{2028}', '\u{2029}'),
    ('\u{202f}', '\u{202f}'),
    ('\u{205f}', '\u{205f}'),
    ('\u{3000}', '\u{3000}'),
    ('{', '{'),
    ('}', '}'),
    (',', ','),
    // Listed apart: a queue's name may not end in one with digits after it.
    (dmq_core::PARTITION_SEPARATOR, dmq_core::PARTITION_SEPARATOR),
];

/// A regular-expression character class of the characters a name may hold, as
/// `[^...]`; `#` among them when `with_hash`.
fn name_class(with_hash: bool) -> String {
    let last = if with_hash { NOT_IN_NAMES.len() - 1 } else { NOT_IN_NAMES.len() };
    let escape = |c: char| match c {
        '{' | '}' | ',' | '#' => c.to_string(),
        _ => format!("\\u{:04x}", u32::from(c)),
    };
    let ranges: String = NOT_IN_NAMES[..last]
        .iter()
        .map(|&(a, b)| if a == b { escape(a) } else { format!("{}-{}", escape(a), escape(b)) })
        .collect();
    format!("[^{ranges}]")
}

/// A pattern of the queue names a job may be sent to: without a `#`; or with its
/// last `#` followed by something other than digits alone, or by nothing; or `#` and
/// digits alone (no queue before it: a plain name). The pattern refuses `name#N` for
/// every N of digits, the broker only those that are partition numbers (up to 65535).
fn queue_name_pattern() -> String {
    let (any, plain) = (name_class(true), name_class(false));
    let no_digit = format!("[^0-9{}]", &plain[2..plain.len() - 1]);
    format!("({plain}+|{any}*#({plain}*{no_digit}{plain}*)?|#[0-9]+)")
}

fn name_schema(description: &str, pattern: String) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .min_length(Some(1))
        .max_length(Some(dmq_core::MAX_NAME_LEN))
        .pattern(Some(pattern))
        .into()
}

/// What every name is, for the schemas' descriptions.
const NAME_RULE: &str = "1 to 255 bytes of UTF-8 (a character takes 1 to 4) without \
                         whitespace, control characters, braces or commas";

/// A task's name.
pub(crate) struct TaskName;

impl PartialSchema for TaskName {
    fn schema() -> RefOr<Schema> {
        let pattern = format!("^{}+$", name_class(true));
        name_schema(&format!("A task's name: {NAME_RULE}."), pattern)
    }
}

impl ToSchema for TaskName {}

/// The name of a queue a job is sent to.
pub(crate) struct QueueName;

impl PartialSchema for QueueName {
    fn schema() -> RefOr<Schema> {
        let pattern = format!("^{}$", queue_name_pattern());
        let description = format!(
            "A queue's name: {NAME_RULE}, not ending in `#` and digits (a partition's name)."
        );
        name_schema(&description, pattern)
    }
}

impl ToSchema for QueueName {}

/// A queue as a path names it: a queue, or one partition of one (`name#N`).
pub(crate) struct QueueOrPartition;

impl PartialSchema for QueueOrPartition {
    fn schema() -> RefOr<Schema> {
        let pattern = format!("^{}(#[0-9]+)?$", queue_name_pattern());
        let description = format!(
            "A queue's name ({NAME_RULE}), or a partition's: the queue's name, `#` and the \
             partition's number."
        );
        name_schema(&description, pattern)
    }
}

impl ToSchema for QueueOrPartition {}

/// Whole numbers as JSON Schema's `integer` takes them, `1500` or `1500.0` (Python's
/// `json` writes a float so), for `#[serde(deserialize_with = ...)]` on a request's
/// integer fields; a number out of the field's range is refused.
pub(crate) mod whole {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};
    use serde_json::Number;

    /// 2^64: no `u64` is as large.
    const U64_END: f64 = 18_446_744_073_709_551_616.0;

    fn of<T: TryFrom<u64>, E: Error>(n: &Number) -> Result<T, E> {
        let whole = n.as_u64().or_else(|| {
            let f = n.as_f64().filter(|f| f.fract() == 0.0 && (0.0..U64_END).contains(f))?;
            // Exact: a whole number from 0 up to, not including, 2^64.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Some(f as u64)
        });
        whole
            .and_then(|w| T::try_from(w).ok())
            .ok_or_else(|| E::custom(format!("{n} is not a whole number in the field's range")))
    }

    /// A required integer.
    pub(crate) fn number<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
        of(&Number::deserialize(d)?)
    }

    /// An optional integer: absent or null is `None`.
    pub(crate) fn option<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        Option::<Number>::deserialize(d)?.as_ref().map(of).transpose()
    }
}

/// A JSON request body, which must be an object as the document says: serde alone
/// would also take an array for a struct, its fields in order.
pub(crate) struct Body<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<Value>::from_request(request, state).await?;
        object(value).map(Body)
    }
}

/// A request's fields from `value`, which must be a JSON object.
fn object<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object; see /v1/openapi.json"));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid: {e}")))
}

/// As [`Body`], where a request with no body at all (no content type, no length), or
/// with the body `null`, stands for `{}`: for endpoints whose every field is optional
/// (the document says such a body may be left out, or null).
pub(crate) struct OptionalBody<T>(pub(crate) T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let headers = request.headers();
        let empty = headers.get(axum::http::header::CONTENT_TYPE).is_none()
            && headers.get(axum::http::header::CONTENT_LENGTH).is_none_or(|n| n == "0")
            && headers.get(axum::http::header::TRANSFER_ENCODING).is_none();
        if empty {
            return Ok(OptionalBody(T::default()));
        }
        let Json(value) = Json::<Value>::from_request(request, state).await?;
        if value.is_null() {
            return Ok(OptionalBody(T::default()));
        }
        object(value).map(OptionalBody)
    }
}

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
    /// The task's return value (any JSON value), when it succeeded.
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
        let state = outcome.state.as_str();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_schemas_refuse_the_characters_dmq_core_refuses() {
        let refused = |c: char| {
            NOT_IN_NAMES[..NOT_IN_NAMES.len() - 1].iter().any(|&(a, b)| (a..=b).contains(&c))
        };
        for c in (0..=0x10_ffff).filter_map(char::from_u32) {
            let ok = dmq_core::check_task_name(&c.to_string()).is_ok();
            assert_eq!(ok, !refused(c), "U+{:04X}", u32::from(c));
        }
        assert!(dmq_core::check_queue_name("emails#3").is_err(), "a partition's name");
        assert!(name_class(true).len() < name_class(false).len(), "# is refused apart");
    }

    #[test]
    fn whole_numbers_may_be_written_as_floats_but_must_fit() {
        let parse = |text: &str| {
            let mut de = serde_json::Deserializer::from_str(text);
            whole::number::<_, u8>(&mut de).map_err(|e| e.to_string())
        };
        assert_eq!(parse("7"), Ok(7));
        assert_eq!(parse("7.0"), Ok(7));
        for bad in ["7.5", "-1", "256", "1e300", "\"7\""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let mut de = serde_json::Deserializer::from_str("18446744073709551615");
        assert_eq!(whole::number::<_, u64>(&mut de).ok(), Some(u64::MAX));
        let mut de = serde_json::Deserializer::from_str("null");
        assert_eq!(whole::option::<_, u64>(&mut de).ok(), Some(None));
    }

    #[tokio::test]
    async fn a_body_must_be_a_json_object() {
        #[derive(Debug, serde::Deserialize)]
        struct Pair {
            #[serde(default)]
            _a: Option<u32>,
            #[serde(default)]
            _b: Option<u32>,
        }
        let request = |body: &'static str| {
            Request::builder()
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .unwrap()
        };
        assert!(Body::<Pair>::from_request(request("{}"), &()).await.is_ok());
        let refused = Body::<Pair>::from_request(request("[null, 1]"), &()).await;
        let status = refused.err().map(|e| e.status());
        assert_eq!(status, Some(axum::http::StatusCode::BAD_REQUEST));
    }
}
