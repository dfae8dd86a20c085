//! Operators: queues and their depths, workers, schedules, dead letters, purges.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use dmq_core::QueueStats;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{QueueOrPartition, json_of, task_id};
use crate::auth::Scope;
use crate::error::{ApiError, ErrorBody};
use crate::state::{AppState, Caller};

/// A queue and how many jobs it holds, by state.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueueView {
    /// The queue's name (a partition reads `name#N`).
    name: String,
    /// Due and waiting.
    ready: u64,
    /// Due, taken back after their worker was lost; each runs alone.
    suspect: u64,
    /// Due, held back by their gate (a rate or a concurrency limit) until it lets
    /// them start; counted in `ready` too.
    gated: u64,
    /// Waiting for their eta (delayed jobs and retries).
    delayed: u64,
    /// Claimed, under a lease.
    in_flight: u64,
    /// In the dead-letter queue.
    dead: u64,
    /// Dead letters the cap dropped.
    dead_dropped: u64,
    /// Entries that were not jobs, dropped and counted.
    bad_entries: u64,
    /// Since when the queue is paused (no worker claims from it); null while it runs.
    paused_since: Option<DateTime<Utc>>,
}

impl QueueView {
    fn of(name: String, stats: &QueueStats) -> QueueView {
        QueueView {
            name,
            ready: stats.ready,
            suspect: stats.suspect,
            gated: stats.gated,
            delayed: stats.delayed,
            in_flight: stats.in_flight,
            dead: stats.dead,
            dead_dropped: stats.dead_dropped,
            bad_entries: stats.bad_entries,
            paused_since: stats.paused_since,
        }
    }
}

/// The queues.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QueueList {
    /// Every queue the broker knows, sorted, with its figures.
    queues: Vec<QueueView>,
}

/// Every queue and its depths.
#[utoipa::path(get, path = "/v1/queues", tag = "admin",
    responses((status = 200, body = QueueList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn queues(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<QueueList>, ApiError> {
    let grant = caller.require(&state, Scope::Admin)?;
    let admin = state.manager.admin()?;
    let mut queues = Vec::new();
    for name in admin.queues().await? {
        if grant.require_queue(&name).is_err() {
            continue;
        }
        let stats = admin.queue_stats(&name).await?;
        queues.push(QueueView::of(name, &stats));
    }
    Ok(Json(QueueList { queues }))
}

/// One queue's depths.
#[utoipa::path(get, path = "/v1/queues/{queue}", tag = "admin",
    params(("queue" = QueueOrPartition, Path, description = "The queue")),
    responses((status = 200, body = QueueView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn queue(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Result<Json<QueueView>, ApiError> {
    caller.require_on(&state, Scope::Admin, &queue)?;
    let stats = state.manager.admin()?.queue_stats(&queue).await?;
    Ok(Json(QueueView::of(queue, &stats)))
}

/// How many jobs a purge or requeue touched.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Count {
    /// The number.
    count: u64,
}

/// Removes every waiting job (ready or delayed) of a queue.
#[utoipa::path(post, path = "/v1/queues/{queue}/purge", tag = "admin",
    params(("queue" = QueueOrPartition, Path, description = "The queue")),
    responses((status = 200, body = Count),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn purge(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Result<Json<Count>, ApiError> {
    caller.require_on(&state, Scope::Admin, &queue)?;
    let count = state.manager.admin()?.purge(&queue).await?;
    Ok(Json(Count { count }))
}

/// What a pause or resume did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PauseView {
    /// The queue.
    queue: String,
    /// Whether it is paused now.
    paused: bool,
    /// Whether that changed: false when it was paused (or running) already.
    changed: bool,
}

/// Pauses a queue: workers everywhere stop claiming from it until it is resumed, while
/// enqueues still land and running jobs finish. A partitioned queue pauses whole, a
/// partition (`name#N`) alone.
#[utoipa::path(post, path = "/v1/queues/{queue}/pause", tag = "admin",
    params(("queue" = QueueOrPartition, Path, description = "The queue")),
    responses((status = 200, body = PauseView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Result<Json<PauseView>, ApiError> {
    caller.require_on(&state, Scope::Admin, &queue)?;
    let changed = state.manager.pause(&queue).await?;
    Ok(Json(PauseView { queue, paused: true, changed }))
}

/// One gate of a queue: a rate or concurrency limit its jobs pass, and what it holds
/// back.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GateView {
    /// The gate: the task's name, or `task[key]` for limits per key.
    gate: String,
    /// How many of its jobs may start per period (`"50/s"`); null for no rate.
    rate: Option<String>,
    /// How many may start at once under the rate.
    burst: u32,
    /// How many of its jobs may run at once; null for no limit.
    concurrency: Option<u32>,
    /// Its jobs running now.
    running: u64,
    /// Its jobs waiting for it to let them start.
    waiting: u64,
    /// When its rate lets the next job start, when that is ahead.
    next_start: Option<DateTime<Utc>>,
    /// Why it holds its waiting jobs back now, in words; null when it does not.
    holding_back: Option<String>,
}

/// A queue's gates.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GateList {
    /// The queue's gates, by name.
    gates: Vec<GateView>,
}

/// A queue's gates (rate and concurrency limits) and what each holds back.
#[utoipa::path(get, path = "/v1/queues/{queue}/gates", tag = "admin",
    params(("queue" = QueueOrPartition, Path, description = "The queue")),
    responses((status = 200, body = GateList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn gates(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Result<Json<GateList>, ApiError> {
    caller.require_on(&state, Scope::Admin, &queue)?;
    let gates = state.manager.admin()?.gates(&queue).await?;
    let gates = gates
        .into_iter()
        .map(|g| GateView {
            holding_back: g.holding_back(),
            rate: g.gate.rate.map(|r| r.to_string()),
            burst: g.gate.burst,
            concurrency: g.gate.concurrency,
            gate: g.gate.name,
            running: g.running,
            waiting: g.waiting,
            next_start: g.next_start,
        })
        .collect();
    Ok(Json(GateList { gates }))
}

/// Resumes a paused queue: workers claim from it again, woken at once.
#[utoipa::path(post, path = "/v1/queues/{queue}/resume", tag = "admin",
    params(("queue" = QueueOrPartition, Path, description = "The queue")),
    responses((status = 200, body = PauseView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Result<Json<PauseView>, ApiError> {
    caller.require_on(&state, Scope::Admin, &queue)?;
    let changed = state.manager.resume(&queue).await?;
    Ok(Json(PauseView { queue, paused: false, changed }))
}

/// A page of dead letters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    /// Skip this many, newest first (0 by default).
    #[serde(default)]
    #[param(maximum = 18446744073709551615_u64)]
    offset: Option<usize>,
    /// Return at most this many (1 to 1,000; 100 by default).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// A dead letter.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadLetterView {
    /// The job's id.
    id: String,
    /// Its task, when its envelope decodes.
    task: Option<String>,
    /// Its arguments (a JSON array, one value per parameter), when its envelope
    /// decodes and they have a JSON form.
    args: Option<Value>,
    /// Its last attempt, when its envelope decodes.
    attempt: Option<u32>,
    /// Why it was dead-lettered.
    reason: String,
    /// When.
    at: DateTime<Utc>,
}

/// Dead letters, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadLetterList {
    /// The letters.
    dead_letters: Vec<DeadLetterView>,
}

/// A page of a queue's dead letters, newest first.
#[utoipa::path(get, path = "/v1/queues/{queue}/dead-letters", tag = "admin",
    params(("queue" = QueueOrPartition, Path, description = "The queue"), Page),
    responses((status = 200, body = DeadLetterList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<DeadLetterList>, ApiError> {
    caller.require_on(&state, Scope::Admin, &queue)?;
    let Query(page) = page?;
    let limit = page.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be 1 to 1000, not {limit}")));
    }
    let offset = page.offset.unwrap_or(0);
    let letters = state.manager.dead_letters(&queue, offset, limit).await?;
    let dead_letters = letters
        .into_iter()
        .map(|letter| {
            let envelope = dmq_core::Envelope::decode(&letter.payload, usize::MAX).ok();
            DeadLetterView {
                id: letter.id.to_string(),
                task: envelope.as_ref().map(|e| e.task.clone()),
                args: envelope.as_ref().and_then(|e| json_of(&e.args).ok()),
                attempt: envelope.as_ref().map(|e| e.attempt),
                reason: letter.reason,
                at: letter.at,
            }
        })
        .collect();
    Ok(Json(DeadLetterList { dead_letters }))
}

/// Puts one dead letter back in its queue, as a fresh attempt.
#[utoipa::path(post, path = "/v1/queues/{queue}/dead-letters/{id}/requeue", tag = "admin",
    params(("queue" = QueueOrPartition, Path, description = "The queue"),
        ("id" = uuid::Uuid, Path, description = "The job's id")),
    responses((status = 200, body = Count),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn requeue_dead_letter(
    State(state): State<AppState>,
    caller: Caller,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Json<Count>, ApiError> {
    caller.require_on(&state, Scope::Admin, &queue)?;
    let id = task_id(&id)?;
    if state.manager.requeue_dead_letter(&queue, id, None).await? {
        Ok(Json(Count { count: 1 }))
    } else {
        Err(ApiError::not_found(format!("queue {queue:?} holds no dead letter of job {id}")))
    }
}

/// Puts every dead letter of a queue back in it.
#[utoipa::path(post, path = "/v1/queues/{queue}/dead-letters/requeue", tag = "admin",
    params(("queue" = QueueOrPartition, Path, description = "The queue")),
    responses((status = 200, body = Count),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn requeue_all(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Result<Json<Count>, ApiError> {
    caller.require_on(&state, Scope::Admin, &queue)?;
    let count = state.manager.requeue_all_dead_letters(&queue, None).await?;
    Ok(Json(Count { count }))
}

/// Deletes one dead letter.
#[utoipa::path(delete, path = "/v1/queues/{queue}/dead-letters/{id}", tag = "admin",
    params(("queue" = QueueOrPartition, Path, description = "The queue"),
        ("id" = uuid::Uuid, Path, description = "The job's id")),
    responses((status = 200, body = Count),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn delete_dead_letter(
    State(state): State<AppState>,
    caller: Caller,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Json<Count>, ApiError> {
    caller.require_on(&state, Scope::Admin, &queue)?;
    let id = task_id(&id)?;
    if state.manager.delete_dead_letter(&queue, id).await? {
        Ok(Json(Count { count: 1 }))
    } else {
        Err(ApiError::not_found(format!("queue {queue:?} holds no dead letter of job {id}")))
    }
}

/// Empties a queue's dead-letter queue.
#[utoipa::path(delete, path = "/v1/queues/{queue}/dead-letters", tag = "admin",
    params(("queue" = QueueOrPartition, Path, description = "The queue")),
    responses((status = 200, body = Count),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn purge_dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
) -> Result<Json<Count>, ApiError> {
    caller.require_on(&state, Scope::Admin, &queue)?;
    let count = state.manager.purge_dead_letters(&queue).await?;
    Ok(Json(Count { count }))
}

/// A live worker.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkerView {
    /// Its id.
    id: String,
    /// Its machine.
    hostname: String,
    /// Its process id.
    pid: u32,
    /// The queues it takes jobs from.
    queues: Vec<String>,
    /// How many jobs it runs at once.
    concurrency: usize,
    /// How many it was running at its last heartbeat.
    running: u32,
    /// When it started.
    started_at: DateTime<Utc>,
    /// When its registration lapses unless it heartbeats again.
    alive_until: DateTime<Utc>,
}

/// The live workers.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WorkerList {
    /// The workers.
    workers: Vec<WorkerView>,
}

/// The workers whose heartbeat has not lapsed.
#[utoipa::path(get, path = "/v1/workers", tag = "admin",
    responses((status = 200, body = WorkerList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 501, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn workers(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WorkerList>, ApiError> {
    caller.require_everywhere(&state, Scope::Admin)?;
    let registry = state.manager.broker().worker_registry().ok_or_else(|| {
        dmq_core::Error::Unsupported("this broker keeps no worker registry".to_owned())
    })?;
    let workers = registry
        .workers()
        .await?
        .into_iter()
        .map(|w| WorkerView {
            id: w.info.id,
            hostname: w.info.hostname,
            pid: w.info.pid,
            queues: w.info.queues,
            concurrency: w.info.concurrency,
            running: w.info.running,
            started_at: w.info.started_at,
            alive_until: w.alive_until,
        })
        .collect();
    Ok(Json(WorkerList { workers }))
}

/// A periodic schedule's state.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ScheduleView {
    /// Its name.
    name: String,
    /// When it was first registered.
    since: DateTime<Utc>,
    /// Its last fire time.
    last_fire: Option<DateTime<Utc>>,
    /// Its next fire time.
    next_fire: Option<DateTime<Utc>>,
}

/// The periodic schedules.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ScheduleList {
    /// The schedules, by name.
    schedules: Vec<ScheduleView>,
}

/// Every registered periodic schedule, with its last and next fire.
#[utoipa::path(get, path = "/v1/schedules", tag = "admin",
    responses((status = 200, body = ScheduleList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 501, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn schedules(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ScheduleList>, ApiError> {
    caller.require_everywhere(&state, Scope::Admin)?;
    let store = state.manager.broker().schedule_store().ok_or_else(|| {
        dmq_core::Error::Unsupported("this broker keeps no schedule store".to_owned())
    })?;
    let schedules = store
        .schedules()
        .await?
        .into_iter()
        .map(|s| ScheduleView {
            name: s.name,
            since: s.since,
            last_fire: s.last_fire,
            next_fire: s.next_fire,
        })
        .collect();
    Ok(Json(ScheduleList { schedules }))
}

/// Whether to delete a queue whose jobs workers hold.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteQuery {
    /// Delete the jobs workers hold too (their workers' acks then fail with
    /// `lease_lost`); without it, a queue with jobs in flight is refused with 409.
    #[serde(default)]
    force: Option<bool>,
}

/// What a queue's deletion removed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeletedView {
    /// Ready and suspect jobs.
    waiting: u64,
    /// Delayed jobs and retries.
    delayed: u64,
    /// Dead letters.
    dead_letters: u64,
    /// Jobs workers held (only with `force`).
    in_flight: u64,
}

/// Deletes a queue whole: its waiting and delayed jobs, its dead letters and its
/// entry in the queue registry (a queue's partitions too). Refused while workers
/// hold its jobs, unless `force`.
#[utoipa::path(delete, path = "/v1/queues/{queue}", tag = "admin",
    params(("queue" = QueueOrPartition, Path, description = "The queue"), DeleteQuery),
    responses((status = 200, body = DeletedView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "Workers hold jobs of the queue", body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 501, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn delete_queue(
    State(state): State<AppState>,
    caller: Caller,
    Path(queue): Path<String>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Json<DeletedView>, ApiError> {
    caller.require_on(&state, Scope::Admin, &queue)?;
    let Query(query) = query?;
    let force = query.force.unwrap_or(false);
    let deleted = state.manager.admin()?.delete_queue(&queue, force).await?;
    Ok(Json(DeletedView {
        waiting: deleted.waiting,
        delayed: deleted.delayed,
        dead_letters: deleted.dead_letters,
        in_flight: deleted.in_flight,
    }))
}
