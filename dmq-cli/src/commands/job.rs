//! `dmq job`: one job by id, wherever it is.

use anyhow::bail;
use chrono::{DateTime, Utc};
use dmq_core::{Envelope, TaskId};
use serde_json::json;

use super::admin::{Admin, maybe_time, print_json, task_id, time};
use crate::cli::JobArgs;

/// How many of a queue's newest dead letters `dmq job` looks through.
const DEAD_LETTERS_SEARCHED: usize = 10_000;

/// Where a job was found.
struct Found {
    queue: String,
    /// `ready`, `delayed`, `in flight`, `dead-lettered`, or `stranded`: stored but in
    /// no list, so that nothing would run it (see `dmq doctor`).
    state: &'static str,
    /// Ready, and taken back after its worker was lost: it waits in the suspect list
    /// to run alone.
    suspect: bool,
    /// The due time (delayed), the lease deadline (in flight) or when it was
    /// dead-lettered.
    at: Option<DateTime<Utc>>,
    reason: Option<String>,
    payload: Vec<u8>,
}

/// Runs `dmq job`.
pub(crate) async fn run(args: JobArgs) -> anyhow::Result<()> {
    let id = task_id(&args.id)?;
    let admin = Admin::connect(&args.broker).await?;
    let mut conn = admin.redis().await?;
    let queues = dmq_redis::queue_names(&mut conn, &admin.keys).await?;
    let mut found = None;
    for queue in &queues {
        if let Some(hit) = find_in(&admin, &mut conn, queue, id).await? {
            found = Some(hit);
            break;
        }
    }
    let outcome = admin.manager.backend().get(id).await?;
    let Some(found) = found else {
        if let Some(outcome) = outcome {
            if admin.json {
                return print_json(&json!({
                    "id": id.to_string(),
                    "state": "finished",
                    "attempts": outcome.attempts,
                    "finished_at": time(outcome.finished_at),
                }));
            }
            println!("id:          {id}");
            println!("state:       finished (no longer in a queue; see `dmq result {id}`)");
            println!("attempts:    {}", outcome.attempts);
            println!("finished:    {}", time(outcome.finished_at));
            return Ok(());
        }
        bail!(
            "no job {id} in any queue of namespace {:?}, and no stored result: it never \
             existed here, or it finished and its result expired",
            admin.namespace()
        );
    };
    let envelope = Envelope::decode(&found.payload, found.payload.len()).ok();
    if admin.json {
        return print_json(&json!({
            "id": id.to_string(),
            "queue": found.queue,
            "state": found.state,
            "suspect": found.suspect,
            "at": found.at.map(time),
            "reason": found.reason,
            "task": envelope.as_ref().map(|e| e.task.clone()),
            "attempt": envelope.as_ref().map(|e| e.attempt),
            "priority": envelope.as_ref().map(|e| e.priority),
            "created_at": envelope.as_ref().map(|e| time(e.created_at)),
            "expires_at": envelope.as_ref().and_then(|e| e.expires_at).map(time),
            "result_stored": outcome.is_some(),
        }));
    }
    println!("id:          {id}");
    println!("queue:       {}", found.queue);
    match found.state {
        "ready" if found.suspect => println!("state:       ready (suspect: runs alone)"),
        "stranded" => println!(
            "state:       stranded (stored, but waits in no list, so nothing will run it; \
             `dmq doctor --fix` puts it back)"
        ),
        state => println!("state:       {state}"),
    }
    match found.state {
        "delayed" => println!("due:         {}", maybe_time(found.at)),
        "in flight" => println!("lease until: {}", maybe_time(found.at)),
        "dead-lettered" => {
            println!("when:        {}", maybe_time(found.at));
            println!("reason:      {}", found.reason.unwrap_or_default());
        }
        _ => {}
    }
    match envelope {
        Some(e) => {
            println!("task:        {}", e.task);
            println!("attempt:     {}", e.attempt);
            println!("priority:    {}", e.priority);
            println!("created:     {}", time(e.created_at));
            if let Some(expires) = e.expires_at {
                println!("expires:     {}", time(expires));
            }
        }
        None => println!("envelope:    ({} bytes that do not decode)", found.payload.len()),
    }
    if outcome.is_some() {
        println!("result:      stored; see `dmq result {id}`");
    }
    Ok(())
}

/// Looks for job `id` in `queue`: waiting or in flight, else dead-lettered.
async fn find_in(
    admin: &Admin,
    conn: &mut redis::aio::MultiplexedConnection,
    queue: &str,
    id: TaskId,
) -> anyhow::Result<Option<Found>> {
    let keys = admin.keys.queue(queue);
    let field = id.to_string();
    let (payload, due, lease): (Option<Vec<u8>>, Option<f64>, Option<f64>) = redis::pipe()
        .hget(keys.payloads(), &field)
        .zscore(keys.delayed(), &field)
        .zscore(keys.in_flight(), &field)
        .query_async(conn)
        .await?;
    let at = |ms: f64| {
        // Scores are whole Unix milliseconds.
        #[allow(clippy::cast_possible_truncation)]
        DateTime::from_timestamp_millis(ms as i64)
    };
    if let Some(payload) = payload {
        let found = |state, at, suspect| Found {
            queue: queue.to_owned(),
            state,
            suspect,
            at,
            reason: None,
            payload,
        };
        return Ok(Some(match (due, lease) {
            (_, Some(ms)) => found("in flight", at(ms), false),
            (Some(ms), None) => found("delayed", at(ms), false),
            (None, None) => match waiting_in(conn, &keys, &field).await? {
                // Claimed or moved since the first look: ready a moment ago.
                Waiting::Elsewhere | Waiting::Ready => found("ready", None, false),
                Waiting::Suspect => found("ready", None, true),
                Waiting::Nowhere => found("stranded", None, false),
            },
        }));
    }
    let mut offset = 0;
    while offset < DEAD_LETTERS_SEARCHED {
        let page = admin.manager.dead_letters(queue, offset, 500).await?;
        if page.is_empty() {
            break;
        }
        if let Some(letter) = page.iter().find(|l| l.id == id) {
            return Ok(Some(Found {
                queue: queue.to_owned(),
                state: "dead-lettered",
                suspect: false,
                at: Some(letter.at),
                reason: Some(letter.reason.clone()),
                payload: letter.payload.clone(),
            }));
        }
        offset += page.len();
    }
    Ok(None)
}

/// Which list a stored job that is neither delayed nor in flight waits in.
enum Waiting {
    /// The suspect list: it runs alone.
    Suspect,
    /// A ready list.
    Ready,
    /// No list, though stored: stranded.
    Nowhere,
    /// Its envelope is gone, or it is delayed or in flight now.
    Elsewhere,
}

/// Looks for `field`, a job id, in the suspect and ready lists of `keys`' queue, in
/// one transaction with its envelope and sorted sets, so that a job claimed meanwhile
/// is not taken for stranded. Each `LPOS` reads its list to the end when the id is not
/// in it; this runs only for the queue whose envelope hash holds the job. A key of
/// another type (not written by dmq) holds no job.
async fn waiting_in(
    conn: &mut redis::aio::MultiplexedConnection,
    keys: &dmq_redis::QueueKeys,
    field: &str,
) -> anyhow::Result<Waiting> {
    let mut pipe = redis::pipe();
    pipe.atomic()
        .ignore_errors()
        .hexists(keys.payloads(), field)
        .zscore(keys.delayed(), field)
        .zscore(keys.in_flight(), field)
        .cmd("LPOS")
        .arg(keys.suspect())
        .arg(field);
    for priority in 0..=9 {
        pipe.cmd("LPOS").arg(keys.ready(priority)).arg(field);
    }
    let reply: Vec<redis::Value> = pipe.query_async(conn).await?;
    // A reply that is neither nil nor an error (a wrong-type key's): a score, a position.
    let held = |v: &redis::Value| !matches!(v, redis::Value::Nil | redis::Value::ServerError(_));
    let [stored, due, lease, suspect, ready @ ..] = reply.as_slice() else {
        bail!("unexpected reply from redis looking for job {field} in queue lists");
    };
    let stored: bool = redis::from_redis_value_ref(stored)?;
    Ok(if !stored || held(due) || held(lease) {
        Waiting::Elsewhere
    } else if held(suspect) {
        Waiting::Suspect
    } else if ready.iter().any(held) {
        Waiting::Ready
    } else {
        Waiting::Nowhere
    })
}
