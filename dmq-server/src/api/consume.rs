//! Consumers in any language: claim jobs under dmq's fenced leases (a long poll),
//! renew a lease, and settle a job: ack with its result, nack with its error (the
//! retry policy applies, then the dead-letter queue), or release it unrun.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use dmq_core::{Lease, Nack, NackOutcome};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{Body, OptionalBody, QueueOrPartition, json_of, millis, task_id, whole};
use crate::auth::Scope;
use crate::error::{ApiError, ErrorBody};
use crate::limits::{DEFAULT_LEASE, LEASE_RANGE, MAX_CLAIM, MAX_WAIT};
use crate::state::{AppState, Caller};

/// A lease on a claimed job, as the claim returned it: send it back whole to renew
/// or settle the job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LeaseBody {
    /// The job's id.
    #[schema(value_type = uuid::Uuid)]
    id: String,
    /// The queue it was claimed from.
    #[schema(value_type = QueueOrPartition)]
    queue: String,
    /// The lease's token, fresh for every claim.
    token: String,
    /// A number that grows with every claim of the job.
    #[serde(deserialize_with = "whole::number")]
    #[schema(format = "uint64", maximum = 18446744073709551615_u64)]
    fence: u64,
}

impl LeaseBody {
    fn of(lease: &Lease) -> LeaseBody {
        LeaseBody {
            id: lease.id.to_string(),
            queue: lease.queue.clone(),
            token: lease.token.clone(),
            fence: lease.fence,
        }
    }

    fn lease(&self) -> Result<Lease, ApiError> {
        let id = task_id(&self.id)?;
        Ok(Lease { id, queue: self.queue.clone(), token: self.token.clone(), fence: self.fence })
    }
}

/// What to claim.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClaimRequest {
    /// The most jobs to take (1 to 100; 1 by default).
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(minimum = 1, maximum = 100)]
    max: Option<usize>,
    /// The lease's length in milliseconds (1,000 to 3,600,000; 30,000 by default):
    /// renew it before it runs out, or the job goes back to its queue.
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(minimum = 1000, maximum = 3600000)]
    lease_ms: Option<u64>,
    /// When no job is due, wait up to this many milliseconds for one (at most 30,000;
    /// 0 by default).
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(format = "uint64", maximum = 18446744073709551615_u64)]
    wait_ms: Option<u64>,
}

/// A claimed job.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ClaimedBody {
    /// The lease: send it back to renew or settle the job.
    lease: LeaseBody,
    /// The job's id.
    id: String,
    /// The task to run.
    task: String,
    /// Its arguments: a JSON array, one value per parameter, or a string saying why
    /// they have no JSON form (MessagePack binary data).
    args: Value,
    /// The attempt this run is, from 1.
    attempt: u32,
    /// How many times the job was claimed since it was last enqueued or retried.
    deliveries: u32,
    /// True when the job came back after its last holder was lost running it: run it
    /// alone, or release it.
    isolated: bool,
    /// The job's headers.
    headers: BTreeMap<String, String>,
    /// When it was enqueued.
    created_at: DateTime<Utc>,
    /// When the lease runs out, unless renewed.
    lease_expires_at: DateTime<Utc>,
}

/// The claimed jobs; none when none came within the wait.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Claimed {
    /// The jobs.
    jobs: Vec<ClaimedBody>,
}

/// Claims up to `max` jobs of a queue, each under a lease.
#[utoipa::path(post, path = "/v1/queues/{queue}/claim", tag = "consume",
    params(("queue" = QueueOrPartition, Path, description = "The queue")),
    request_body = Option<ClaimRequest>,
    responses(
        (status = 200, body = Claimed),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn claim(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
    body: Result<OptionalBody<ClaimRequest>, ApiError>,
) -> Result<Json<Claimed>, ApiError> {
    caller.require_on(&state, Scope::Consume, &queue)?;
    let OptionalBody(request) = body?;
    let max = request.max.unwrap_or(1);
    if !(1..=MAX_CLAIM).contains(&max) {
        return Err(ApiError::bad_request(format!("max must be 1 to {MAX_CLAIM}, not {max}")));
    }
    let lease = lease_length(request.lease_ms)?;
    let wait = millis(request.wait_ms, Duration::ZERO, MAX_WAIT);
    let queues = [queue];
    // A claim that may wait holds a broker connection meanwhile: one of a bounded number.
    let _permit = if wait.is_zero() { None } else { Some(state.wait_permit()?) };
    let claimed = state.consumer.claim(&queues, max, lease, wait).await?;
    let expires = Utc::now() + chrono::Duration::from_std(lease).unwrap_or_default();
    let jobs = claimed
        .into_iter()
        .map(|job| ClaimedBody {
            lease: LeaseBody::of(&job.lease),
            id: job.lease.id.to_string(),
            // The arguments a producer wrote in MessagePack that JSON cannot carry
            // (binary data) arrive as a string saying so; the job can be nacked.
            args: json_of(&job.envelope.args).unwrap_or_else(Value::String),
            task: job.envelope.task,
            attempt: job.envelope.attempt,
            deliveries: job.deliveries,
            isolated: job.isolated,
            headers: job.envelope.headers,
            created_at: job.envelope.created_at,
            lease_expires_at: expires,
        })
        .collect();
    Ok(Json(Claimed { jobs }))
}

fn lease_length(ms: Option<u64>) -> Result<Duration, ApiError> {
    let lease = ms.map_or(DEFAULT_LEASE, Duration::from_millis);
    if lease < LEASE_RANGE.0 || lease > LEASE_RANGE.1 {
        return Err(ApiError::bad_request(format!(
            "lease_ms must be {} to {}",
            LEASE_RANGE.0.as_millis(),
            LEASE_RANGE.1.as_millis()
        )));
    }
    Ok(lease)
}

/// A lease to renew.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenewRequest {
    /// The lease, as the claim returned it.
    lease: LeaseBody,
    /// The new length from now, in milliseconds (1,000 to 3,600,000; 30,000 by
    /// default).
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(minimum = 1000, maximum = 3600000)]
    lease_ms: Option<u64>,
}

/// What a settling call did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Settled {
    /// `renewed`, `acked`, `retried`, `dead_lettered` or `released`.
    outcome: &'static str,
    /// For a retried job: the attempt it runs as next.
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    /// For a retried job: when it becomes due again.
    #[serde(skip_serializing_if = "Option::is_none")]
    eta: Option<DateTime<Utc>>,
}

impl Settled {
    fn plain(outcome: &'static str) -> Json<Settled> {
        Json(Settled { outcome, attempt: None, eta: None })
    }
}

/// Extends a lease.
#[utoipa::path(post, path = "/v1/leases/renew", tag = "consume", request_body = RenewRequest,
    responses(
        (status = 200, body = Settled),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "The lease passed to another holder", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn renew(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Body<RenewRequest>, ApiError>,
) -> Result<Json<Settled>, ApiError> {
    let Body(request) = body?;
    caller.require_on(&state, Scope::Consume, &request.lease.queue)?;
    let lease = request.lease.lease()?;
    state.consumer.renew(&lease, lease_length(request.lease_ms)?).await?;
    Ok(Settled::plain("renewed"))
}

/// A job done, with its result.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckRequest {
    /// The lease, as the claim returned it.
    lease: LeaseBody,
    /// The task's return value, any JSON value (null when it returns nothing).
    #[serde(default)]
    result: Value,
}

/// Settles a job as done and stores its result.
#[utoipa::path(post, path = "/v1/leases/ack", tag = "consume", request_body = AckRequest,
    responses(
        (status = 200, body = Settled),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "The lease passed to another holder", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn ack(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Body<AckRequest>, ApiError>,
) -> Result<Json<Settled>, ApiError> {
    let Body(request) = body?;
    caller.require_on(&state, Scope::Consume, &request.lease.queue)?;
    let lease = request.lease.lease()?;
    let value = rmp_serde::to_vec_named(&request.result).map_err(|e| {
        ApiError::bad_request(format!("the result could not be encoded as MessagePack: {e}"))
    })?;
    state.consumer.ack(&lease, value, DEFAULT_LEASE).await?;
    Ok(Settled::plain("acked"))
}

/// A failed run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NackRequest {
    /// The lease, as the claim returned it.
    lease: LeaseBody,
    /// What went wrong.
    error: String,
    /// False to fail the job for good now; true (the default) lets the retry policy
    /// decide.
    #[serde(default)]
    retry: Option<bool>,
    /// Retry after this many milliseconds instead of the job's backoff.
    #[serde(default, deserialize_with = "whole::option")]
    #[schema(format = "uint64", maximum = 18446744073709551615_u64)]
    delay_ms: Option<u64>,
}

/// Settles a failed run: retried by the job's retry policy, or dead-lettered.
#[utoipa::path(post, path = "/v1/leases/nack", tag = "consume", request_body = NackRequest,
    responses(
        (status = 200, body = Settled),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "The lease passed to another holder", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn nack(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Body<NackRequest>, ApiError>,
) -> Result<Json<Settled>, ApiError> {
    let Body(request) = body?;
    caller.require_on(&state, Scope::Consume, &request.lease.queue)?;
    let lease = request.lease.lease()?;
    let mut nack = Nack::new(request.error);
    if request.retry == Some(false) {
        nack = nack.fatal();
    }
    if let Some(ms) = request.delay_ms {
        nack = nack.retry_after(Duration::from_millis(ms));
    }
    Ok(match state.consumer.nack(&lease, &nack).await? {
        NackOutcome::Retried { attempt, eta } => {
            Json(Settled { outcome: "retried", attempt: Some(attempt), eta: Some(eta) })
        }
        _ => Settled::plain("dead_lettered"),
    })
}

/// A lease to give back.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseRequest {
    /// The lease, as the claim returned it.
    lease: LeaseBody,
}

/// Puts a job back in its queue at once, unrun.
#[utoipa::path(post, path = "/v1/leases/release", tag = "consume", request_body = ReleaseRequest,
    responses(
        (status = 200, body = Settled),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "The lease passed to another holder", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn release(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Body<ReleaseRequest>, ApiError>,
) -> Result<Json<Settled>, ApiError> {
    let Body(request) = body?;
    caller.require_on(&state, Scope::Consume, &request.lease.queue)?;
    state.consumer.release(&request.lease.lease()?).await?;
    Ok(Settled::plain("released"))
}
