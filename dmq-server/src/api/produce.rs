//! Producers: enqueue one job or a batch, read a job's state, wait for its result.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use dmq_core::{Envelope, JobState, MAX_PRIORITY, TaskId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::{Body, Outcome, QueueName, TaskName, millis, task_id, whole};
use crate::auth::Scope;
use crate::error::{ApiError, ErrorBody};
use crate::limits::{MAX_DELAY, MAX_WAIT};
use crate::state::{AppState, Caller};

/// A job to enqueue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnqueueRequest {
    /// The registered task name the workers run, such as `emails.send`.
    #[schema(value_type = TaskName)]
    task: String,
    /// The task's arguments, one JSON value per parameter, in order.
    #[serde(default)]
    args: Vec<Value>,
    /// The queue; by default the task's own when this server knows the task, else
    /// `default`.
    #[serde(default)]
    #[schema(value_type = Option<QueueName>)]
    queue: Option<String>,
    /// Run no sooner than this many milliseconds from now (at most 100 years).
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(maximum = 3153600000000_u64)]
    delay_ms: Option<u64>,
    /// Run no sooner than this instant (RFC 3339); not with `delay_ms`.
    #[serde(default)]
    eta: Option<DateTime<Utc>>,
    /// 0 (lowest) to 9 (highest); 5 by default.
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(maximum = 9)]
    priority: Option<u8>,
    /// A second enqueue with the same key, while the first is known, returns the
    /// first job's id and adds nothing.
    #[serde(default)]
    idempotency_key: Option<String>,
    /// Makes the job unique while `for` says: a second enqueue of the same work adds
    /// nothing and answers 200 with the first job's id and `existing` true. The same
    /// work is the same `idempotency_key`, else the same task and arguments (for a
    /// debounce, the same task). `queued`: while the job waits to run; `until_done`:
    /// until it is done (acknowledged, dead-lettered, cancelled); `ttl`: for `ms`
    /// after the enqueue (a throttle); `debounce`: the job starts `ms` after the last
    /// enqueue, and an enqueue while it waits replaces its arguments and pushes its
    /// start back (not with `eta`, `delay_ms` or `id`). Not in a batch.
    #[serde(default)]
    unique: Option<UniqueRequest>,
    /// The job's id, a UUID of the caller's choosing: a second enqueue with the same
    /// id, while it is known (a day by default, also after the job ran), returns it
    /// with `existing` true and adds nothing, so a client that retries after a
    /// timeout cannot enqueue twice. Without an `idempotency_key`, the id is the key;
    /// with one, the key decides. In a batch, an id whose job still waits fails the
    /// batch (409).
    #[serde(default)]
    id: Option<uuid::Uuid>,
    /// The job must not start after this instant (RFC 3339).
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    /// How many retries a failure gets, instead of the task's setting.
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(format = "uint32", maximum = 4294967295_u64)]
    max_retries: Option<u32>,
    /// How long one run may take, in milliseconds, instead of the task's setting.
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(format = "uint64", maximum = 18446744073709551615_u64)]
    timeout_ms: Option<u64>,
    /// String headers that travel with the job (tenant, trace context, ...).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// For a partitioned queue: jobs with the same key go to the same partition.
    #[serde(default)]
    partition_key: Option<String>,
    /// At most this many of the task's jobs (or of its `concurrency_key`) start per
    /// period, across every worker: a count from 1, `/`, and a period of at most a day,
    /// `ms` after 1 to 7 digits, `s` after up to 4, `m` after up to 3, `h` after up to
    /// 24 (`"100/s"`, `"30/m"`, `"1000/h"`, `"5/250ms"`, `"7/10s"`). By default the
    /// task's own `rate_limit`, when this server knows the task.
    #[serde(default)]
    #[schema(
        pattern = "^[1-9][0-9]{0,8}/([1-9][0-9]{0,6}ms|([1-9][0-9]{0,3})?s|([1-9][0-9]{0,2})?m|([1-9]|1[0-9]|2[0-4])?h)$"
    )]
    rate_limit: Option<String>,
    /// How many may start at once under the rate (by default what the rate allows in
    /// 10 ms, at least 1).
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(minimum = 1, format = "uint32", maximum = 4294967295_u64)]
    burst: Option<u32>,
    /// At most this many of the task's jobs (or of its `concurrency_key`) run at once,
    /// across every worker. By default the task's own `concurrency`, when this server
    /// knows the task.
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(minimum = 1, format = "uint32", maximum = 4294967295_u64)]
    concurrency: Option<u32>,
    /// Applies the limits per key (a tenant, a customer): jobs with different keys do
    /// not share them. With neither a `rate_limit` nor a `concurrency` (given here, or
    /// the task's), like `burst` it changes nothing.
    #[serde(default)]
    #[schema(max_length = 255, pattern = "^[^\\x00]*$")]
    concurrency_key: Option<String>,
    /// Passes the gate of this name, which other tasks may name too, instead of the
    /// task's own: the limits hold for every task that names it together (a limit on
    /// a whole queue). With neither a `rate_limit` nor a `concurrency` (given here, or
    /// the task's), it changes nothing.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\x00]*$")]
    limit_gate: Option<String>,
    /// Counts the job against this key's enqueue quota (`dmq quota set NS RATE --key
    /// KEY`) as well as its namespace's; over either, the enqueue answers 429
    /// `quota_exceeded` with Retry-After.
    #[serde(default)]
    #[schema(max_length = 255, pattern = "^[^\\x00]*$")]
    quota_key: Option<String>,
    /// Claims the job fairly within its queue: grouped jobs (a tenant's) are claimed
    /// round robin across groups, one of each group in turn, so that one group's
    /// backlog does not hold back another's jobs.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255, pattern = "^[^\\x00]*$")]
    group: Option<String>,
}

/// How long a job is unique (see `EnqueueRequest::unique`).
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(tag = "for", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum UniqueRequest {
    /// While the job waits to run.
    Queued {},
    /// Until the job is done.
    UntilDone {},
    /// For `ms` after the enqueue: a throttle.
    Ttl {
        /// Milliseconds, from 1 (at most 100 years).
        #[serde(deserialize_with = "whole::number")]
        #[schema(minimum = 1, maximum = 3153600000000_u64)]
        ms: u64,
    },
    /// The job starts `ms` after the last enqueue of its key.
    Debounce {
        /// Milliseconds, from 1 (at most 100 years).
        #[serde(deserialize_with = "whole::number")]
        #[schema(minimum = 1, maximum = 3153600000000_u64)]
        ms: u64,
    },
}

/// An enqueued job.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Enqueued {
    /// The job's id: read its state and result with it.
    id: String,
    /// The queue it went to.
    queue: String,
    /// When it becomes due, for a delayed job.
    eta: Option<DateTime<Utc>>,
    /// True when its idempotency key (or its chosen id) was known: `id` is the
    /// earlier job's, and nothing was added.
    existing: bool,
}

/// Jobs to enqueue in one atomic step.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchRequest {
    /// The jobs, in order; none may carry an idempotency key.
    #[schema(value_type = Vec<BatchJob>)]
    jobs: Vec<EnqueueRequest>,
}

/// A job of a batch: an [`EnqueueRequest`] without an idempotency key.
pub(crate) struct BatchJob;

impl PartialSchema for BatchJob {
    fn schema() -> RefOr<Schema> {
        let null = || ObjectBuilder::new().schema_type(Type::Null);
        AllOfBuilder::new()
            .item(Ref::from_schema_name("EnqueueRequest"))
            .item(
                ObjectBuilder::new().property("idempotency_key", null()).property("unique", null()),
            )
            .description(Some(
                "A job, as POST /v1/jobs takes it, without an idempotency key or `unique`.",
            ))
            .into()
    }
}

impl ToSchema for BatchJob {}

/// The ids of a batch's jobs, in the order they were sent.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BatchEnqueued {
    /// One id per job.
    ids: Vec<String>,
}

/// The envelope a request asks for, with its partition key. A chosen id is set as
/// is; [`enqueue`] also makes it the idempotency key.
fn envelope_of(
    state: &AppState,
    caller: &Caller,
    request: EnqueueRequest,
) -> Result<(Envelope, Option<String>), ApiError> {
    let known = state.manager.registry().task(&request.task);
    let queue = match (request.queue, &known) {
        (Some(queue), _) => queue,
        (None, Some(info)) => info.queue.to_owned(),
        (None, None) => dmq_core::DEFAULT_QUEUE.to_owned(),
    };
    caller.require_on(state, Scope::Produce, &queue)?;
    let args = rmp_serde::to_vec(&request.args).map_err(|e| {
        ApiError::bad_request(format!("the arguments could not be encoded as MessagePack: {e}"))
    })?;
    if known.is_some() {
        state.manager.registry().check_args(&request.task, &args)?;
    }
    let mut envelope = Envelope::new(request.task, queue, args);
    envelope.eta = match (request.eta, request.delay_ms) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("give eta or delay_ms, not both"));
        }
        (Some(eta), None) => Some(eta),
        (None, Some(ms)) => Some(
            chrono::Duration::from_std(Duration::from_millis(ms))
                .ok()
                .filter(|_| Duration::from_millis(ms) <= MAX_DELAY)
                .and_then(|d| envelope.created_at.checked_add_signed(d))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "delay_ms {ms} is too long; the longest delay is {} ms (100 years)",
                        MAX_DELAY.as_millis()
                    ))
                })?,
        ),
        (None, None) => None,
    };
    if let Some(priority) = request.priority {
        if priority > MAX_PRIORITY {
            return Err(ApiError::bad_request(format!(
                "priority {priority} is out of range; it goes from 0 (lowest) to {MAX_PRIORITY}"
            )));
        }
        envelope.priority = priority;
    }
    envelope.idempotency_key = request.idempotency_key;
    if let Some(unique) = request.unique {
        let bounded = |ms: u64| {
            if ms == 0 || Duration::from_millis(ms) > MAX_DELAY {
                return Err(ApiError::bad_request(format!(
                    "unique.ms {ms} is out of range: give 1 to {} (100 years)",
                    MAX_DELAY.as_millis()
                )));
            }
            Ok(ms)
        };
        envelope.unique_for = Some(match unique {
            UniqueRequest::Queued {} => dmq_core::KeyHold::Queued,
            UniqueRequest::UntilDone {} => dmq_core::KeyHold::UntilDone,
            UniqueRequest::Ttl { ms } => {
                envelope.unique_ttl_ms = Some(bounded(ms)?);
                dmq_core::KeyHold::Ttl
            }
            UniqueRequest::Debounce { ms } => {
                if request.id.is_some() {
                    return Err(ApiError::bad_request(
                        "a debounced job cannot have a chosen id: its enqueue replaces the \
                         waiting job, keeping that job's id; leave id out",
                    ));
                }
                if envelope.eta.is_some() {
                    return Err(ApiError::bad_request(
                        "a debounced job starts unique.ms after its last enqueue: give no eta \
                         or delay_ms beside it",
                    ));
                }
                let quiet =
                    chrono::Duration::milliseconds(i64::try_from(bounded(ms)?).unwrap_or(i64::MAX));
                envelope.eta = Some(envelope.created_at + quiet);
                dmq_core::KeyHold::Debounce
            }
        });
    }
    if let Some(id) = request.id {
        envelope.id = TaskId::from(id);
    }
    envelope.expires_at = request.expires_at;
    envelope.max_retries = request.max_retries;
    envelope.timeout_ms = request.timeout_ms;
    envelope.headers = request.headers;
    for (field, text) in [("group", &request.group), ("limit_gate", &request.limit_gate)] {
        if text.as_deref() == Some("") {
            return Err(ApiError::bad_request(format!("{field} must not be empty")));
        }
    }
    for (field, key) in [
        ("concurrency_key", &request.concurrency_key),
        ("quota_key", &request.quota_key),
        ("group", &request.group),
        ("limit_gate", &request.limit_gate),
    ] {
        if let Some(key) = key {
            if key.contains('\0') || key.chars().count() > 255 {
                return Err(ApiError::bad_request(format!(
                    "{field} must be up to 255 characters without NUL"
                )));
            }
        }
    }
    envelope.quota_key = request.quota_key;
    envelope.group = request.group;
    let given = request.rate_limit.is_some()
        || request.burst.is_some()
        || request.concurrency.is_some()
        || request.concurrency_key.is_some()
        || request.limit_gate.is_some();
    if given {
        // What the request says, over the task's own limits when this server knows it.
        let mut limits = known.and_then(|info| info.limits).unwrap_or_default();
        if let Some(rate) = &request.rate_limit {
            if !is_http_rate(rate) {
                return Err(ApiError::bad_request(format!(
                    "rate_limit {rate:?} is not a rate: write a count from 1, a slash and a \
                     period of at most a day, such as \"100/s\", \"30/m\", \"1000/h\", \
                     \"5/250ms\" or \"7/10s\""
                )));
            }
            limits.rate = Some(rate.parse()?);
        }
        limits.burst = request.burst.or(limits.burst);
        limits.concurrency = request.concurrency.or(limits.concurrency);
        limits.key = request.concurrency_key;
        limits.shared = request.limit_gate.or(limits.shared);
        // A key or a burst alone limits nothing, and the job goes without a gate.
        if limits.is_limited() {
            limits.check(&envelope.task)?;
            envelope.limits = Some(limits);
        }
    }
    Ok((envelope, request.partition_key))
}

/// Whether `text` is a rate limit as the HTTP API takes it (the pattern of
/// `rate_limit` in the OpenAPI document): a count from 1 of up to 9 digits, `/`, and a
/// period of at most a day, `ms` after 1 to 7 digits, `s` after up to 4, `m` after up
/// to 3, `h` after 1 to 24, no amount with a leading zero.
fn is_http_rate(text: &str) -> bool {
    let number = |s: &str, most: usize| {
        !s.is_empty()
            && s.len() <= most
            && !s.starts_with('0')
            && s.bytes().all(|b| b.is_ascii_digit())
    };
    let Some((count, period)) = text.split_once('/') else { return false };
    if !number(count, 9) {
        return false;
    }
    if let Some(amount) = period.strip_suffix("ms") {
        return number(amount, 7);
    }
    let (amount, most) = match period.as_bytes().last() {
        Some(b's') => (&period[..period.len() - 1], 4),
        Some(b'm') => (&period[..period.len() - 1], 3),
        Some(b'h') => {
            let amount = &period[..period.len() - 1];
            return amount.is_empty()
                || (number(amount, 2) && amount.parse::<u32>().is_ok_and(|h| h <= 24));
        }
        _ => return false,
    };
    amount.is_empty() || number(amount, most)
}

/// Enqueues one job.
#[utoipa::path(post, path = "/v1/jobs", tag = "produce", request_body = EnqueueRequest,
    responses(
        (status = 201, description = "Enqueued", body = Enqueued),
        (status = 200, description = "Its idempotency key was known: the earlier job", body = Enqueued),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn enqueue(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Body<EnqueueRequest>, ApiError>,
) -> Result<(StatusCode, Json<Enqueued>), ApiError> {
    let Body(request) = body?;
    let chosen = request.id.is_some();
    let (mut envelope, key) = envelope_of(&state, &caller, request)?;
    if chosen {
        envelope.choose_id(envelope.id);
    }
    let (eta, queue) = (envelope.eta, envelope.queue.clone());
    let (id, existing) = state.manager.enqueue_envelope_reporting(envelope, key.as_deref()).await?;
    let status = if existing { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(Enqueued { id: id.to_string(), queue, eta, existing })))
}

/// Enqueues many jobs in one step: all of a queue's jobs or none.
#[utoipa::path(post, path = "/v1/jobs/batch", tag = "produce", request_body = BatchRequest,
    responses(
        (status = 201, description = "Enqueued", body = BatchEnqueued),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn enqueue_batch(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Body<BatchRequest>, ApiError>,
) -> Result<(StatusCode, Json<BatchEnqueued>), ApiError> {
    let Body(request) = body?;
    caller.require(&state, Scope::Produce)?;
    if request.jobs.len() > state.limits.max_batch {
        return Err(ApiError::bad_request(format!(
            "the batch holds {} jobs, over the server's limit of {} (--max-batch); split it",
            request.jobs.len(),
            state.limits.max_batch
        )));
    }
    if request.jobs.iter().any(|j| j.idempotency_key.is_some() || j.unique.is_some()) {
        return Err(ApiError::bad_request(
            "a job of a batch cannot carry an idempotency key or be unique; enqueue such jobs \
             one by one",
        ));
    }
    let envelopes = request
        .jobs
        .into_iter()
        .map(|job| envelope_of(&state, &caller, job))
        .collect::<Result<Vec<_>, _>>()?;
    let ids = state.manager.enqueue_envelope_batch(envelopes).await?;
    let ids = ids.iter().map(ToString::to_string).collect();
    Ok((StatusCode::CREATED, Json(BatchEnqueued { ids })))
}

/// A job's state: where it waits, or how it ended.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobView {
    /// The job's id.
    id: String,
    /// `ready`, `suspect`, `delayed`, `in_flight`, `dead_lettered`, `stranded`, or,
    /// once it has left its queue, `succeeded`, `failed`, `expired` or `cancelled`.
    state: String,
    /// The queue that holds it, while one does.
    queue: Option<String>,
    /// Its task, while a queue holds it.
    task: Option<String>,
    /// The attempt it is on, while a queue holds it.
    attempt: Option<u32>,
    /// When it is due (delayed), when its lease runs out (in flight), or when it was
    /// dead-lettered.
    at: Option<DateTime<Utc>>,
    /// Why it was dead-lettered.
    reason: Option<String>,
    /// Its outcome, once stored.
    result: Option<Outcome>,
}

fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Ready => "ready",
        JobState::Suspect => "suspect",
        JobState::Delayed => "delayed",
        JobState::InFlight => "in_flight",
        JobState::DeadLettered => "dead_lettered",
        _ => "stranded",
    }
}

/// A job's state and, once it finished, its outcome.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "produce",
    params(("id" = uuid::Uuid, Path, description = "The job's id")),
    responses(
        (status = 200, body = JobView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    caller.require(&state, Scope::Produce)?;
    let id = task_id(&id)?;
    let searchable = caller.0.searchable();
    let (found, outcome) = tokio::try_join!(
        async { state.manager.admin()?.find_job(id, &searchable).await },
        state.manager.backend().get(id),
    )?;
    if found.is_none() && !caller.0.all_queues() {
        // Its queue is unknown: only a token for every queue may read its result.
        return Err(ApiError::not_found(format!("no job {id} is known")));
    }
    let result = outcome.as_ref().map(Outcome::of);
    let view = match found {
        Some(found) => {
            let envelope = dmq_core::Envelope::decode(&found.payload, usize::MAX).ok();
            JobView {
                id: id.to_string(),
                state: state_name(found.state).to_owned(),
                queue: Some(found.queue.clone()),
                task: envelope.as_ref().map(|e| e.task.clone()),
                attempt: envelope.as_ref().map(|e| e.attempt),
                at: found.at,
                reason: found.reason.clone(),
                result,
            }
        }
        None => match result {
            Some(result) => JobView {
                id: id.to_string(),
                state: result.state.to_owned(),
                queue: None,
                task: None,
                attempt: None,
                at: None,
                reason: None,
                result: Some(result),
            },
            None => return Err(ApiError::not_found(format!("no job {id} is known"))),
        },
    };
    Ok(Json(view))
}

/// How long to wait for a result.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitQuery {
    /// Wait up to this many milliseconds for the result (at most 30,000); 0, the
    /// default, answers at once.
    #[serde(default)]
    #[param(format = "uint64", maximum = 18446744073709551615_u64)]
    wait_ms: Option<u64>,
}

/// A job's outcome, waiting for it up to `wait_ms` (a long poll).
#[utoipa::path(get, path = "/v1/jobs/{id}/result", tag = "produce",
    params(("id" = uuid::Uuid, Path, description = "The job's id"), WaitQuery),
    responses(
        (status = 200, body = Outcome),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "No result (yet)", body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn result(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<Outcome>, ApiError> {
    caller.require(&state, Scope::Produce)?;
    if !caller.0.all_queues() {
        return Err(ApiError::forbidden(
            "a result is stored by job id alone, so only a token for every queue may read one",
        ));
    }
    let Query(query) = query?;
    let id = task_id(&id)?;
    let wait = millis(query.wait_ms, Duration::ZERO, MAX_WAIT);
    let backend = state.manager.backend();
    let outcome =
        if wait.is_zero() { backend.get(id).await? } else { backend.wait(id, wait).await? };
    match outcome {
        Some(outcome) => Ok(Json(Outcome::of(&outcome))),
        None => Err(ApiError::not_found(format!(
            "job {id} has no result (yet); it may still be waiting or running, or its result \
             expired"
        ))),
    }
}

/// Where the job to cancel waits.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelQuery {
    /// The queue (or partition, `emails#3`) that holds the job; without it the job is
    /// looked for in every queue, which reads each queue's lists.
    #[serde(default)]
    #[param(value_type = Option<super::QueueOrPartition>)]
    queue: Option<String>,
}

/// What a cancel did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CancelledView {
    /// `cancelled`: the job was waiting, is removed, and its result reads `cancelled`.
    outcome: &'static str,
    /// The queue it was removed from.
    queue: String,
}

/// Cancels a job that has not started: it is removed from its queue, and whoever
/// waits for its result learns it was cancelled. A running job is not stopped (409).
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "produce",
    params(("id" = uuid::Uuid, Path, description = "The job's id"), CancelQuery),
    responses(
        (status = 200, body = CancelledView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "No queue holds the job waiting", body = ErrorBody),
        (status = 409, description = "A worker runs the job", body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 501, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<CancelQuery>, QueryRejection>,
) -> Result<Json<CancelledView>, ApiError> {
    caller.require(&state, Scope::Produce)?;
    let Query(query) = query?;
    let id = task_id(&id)?;
    let queue = match query.queue {
        Some(queue) => queue,
        None => match state.manager.admin()?.find_job(id, &caller.0.searchable()).await? {
            Some(found) => found.queue,
            None => return Err(ApiError::not_found(format!("no queue holds job {id}"))),
        },
    };
    caller.require_on(&state, Scope::Produce, &queue)?;
    match state.manager.cancel(&queue, id).await? {
        dmq_core::Cancelled::Removed { .. } => {
            Ok(Json(CancelledView { outcome: "cancelled", queue }))
        }
        dmq_core::Cancelled::Running => Err(ApiError::conflict(
            "running",
            format!("job {id} is running on a worker; a running job cannot be cancelled yet"),
        )),
        _ => Err(ApiError::not_found(format!(
            "queue {queue:?} holds no waiting job {id}: it finished, was dead-lettered (see \
             its dead letters), or is in another queue"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::UniqueRequest;
    use super::is_http_rate;

    /// The pattern the OpenAPI document gives `rate_limit`, as a checker: what it
    /// takes parses as a rate, and what it refuses the server refuses.
    #[test]
    fn the_http_rate_pattern_takes_rates_of_up_to_a_day() {
        for good in
            ["1/s", "100/s", "30/m", "1000/h", "5/250ms", "7/10s", "1/24h", "999999999/9999999ms"]
        {
            assert!(is_http_rate(good), "{good}");
            assert!(good.parse::<dmq_core::RateLimit>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "0/s",
            "01/s",
            "1/0s",
            "1/ms",
            "1/25h",
            "1/d",
            " 1/s",
            "1/s ",
            "1/s\n",
            "1/2/s",
            "1/min",
            "1000000000/s",
            "1/10000s",
            "1/1000m",
            "1/10000000ms",
            "1/٣s",
        ] {
            assert!(!is_http_rate(bad), "{bad:?}");
        }
    }

    #[test]
    fn unique_takes_exactly_what_its_schema_says() {
        let parse = |text: &str| serde_json::from_str::<UniqueRequest>(text);
        assert!(matches!(parse(r#"{"for":"queued"}"#), Ok(UniqueRequest::Queued {})));
        assert!(matches!(parse(r#"{"for":"ttl","ms":5}"#), Ok(UniqueRequest::Ttl { ms: 5 })));
        assert!(matches!(
            parse(r#"{"for":"debounce","ms":5.0}"#),
            Ok(UniqueRequest::Debounce { .. })
        ));
        for bad in [
            r#"{"for":"queued","ms":5}"#,
            r#"{"for":"ttl"}"#,
            r#"{"for":"ttl","ms":5,"x":1}"#,
            r#"{"for":"later"}"#,
            r#"{"ms":5}"#,
            r#"{"for":"debounce","ms":-1}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
