//! `dmq job`: one job by id, wherever it is.

use anyhow::bail;
use dmq_core::{Envelope, JobState};
use serde_json::json;

use super::admin::{Admin, maybe_time, print_json, task_id, time};
use crate::cli::JobArgs;

/// Runs `dmq job`.
pub(crate) async fn run(args: JobArgs) -> anyhow::Result<()> {
    let id = task_id(&args.id)?;
    let admin = Admin::connect(&args.broker).await?;
    let found = admin.admin()?.find_job(id, &[]).await?;
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
    // A suspect job is ready, and runs alone.
    let suspect = found.state == JobState::Suspect;
    let state = if suspect { JobState::Ready.as_str() } else { found.state.as_str() };
    let envelope = Envelope::decode(&found.payload, found.payload.len()).ok();
    if admin.json {
        return print_json(&json!({
            "id": id.to_string(),
            "queue": found.queue,
            "state": state,
            "suspect": suspect,
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
        JobState::Suspect => println!("state:       ready (suspect: runs alone)"),
        JobState::Stranded => println!(
            "state:       stranded (stored, but waits in no list, so nothing will run it; \
             `dmq doctor --fix` puts it back)"
        ),
        _ => println!("state:       {state}"),
    }
    match found.state {
        JobState::Delayed => println!("due:         {}", maybe_time(found.at)),
        JobState::InFlight => println!("lease until: {}", maybe_time(found.at)),
        JobState::DeadLettered => {
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
