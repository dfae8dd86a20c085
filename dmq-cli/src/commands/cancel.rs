//! `dmq cancel`: removes a job that has not started, so that it never runs.

use anyhow::bail;
use dmq_core::{Cancelled, Envelope, JobState};
use serde_json::json;

use super::admin::{Admin, print_json, task_id};
use crate::cli::CancelArgs;

/// Cancels the job with the manager (which stores its cancelled result); an error
/// (exit status 1) when the job is running or the queue does not hold it.
pub(crate) async fn run(args: CancelArgs) -> anyhow::Result<()> {
    let id = task_id(&args.id)?;
    let queue = &args.queue;
    let admin = Admin::connect(&args.broker).await?;
    let cancelled = admin.manager.cancel(queue, id).await?;
    let outcome = match &cancelled {
        Cancelled::Removed { .. } => "removed",
        Cancelled::Running => "running",
        _ => "not_found",
    };
    if admin.json {
        print_json(&json!({ "id": id.to_string(), "queue": queue, "outcome": outcome }))?;
    }
    match cancelled {
        Cancelled::Removed { payload } => {
            if !admin.json {
                let task = Envelope::decode(&payload, payload.len())
                    .map_or_else(|_| String::new(), |e| format!(" (task {})", e.task));
                println!("cancelled job {id} of queue {queue:?}{task}: it will not run");
            }
            Ok(())
        }
        Cancelled::Running => bail!(
            "job {id} of queue {queue:?} is running: a worker holds it, so it was left \
             alone (cancelling a running job is not supported yet)"
        ),
        _ => {
            // Say where the job is when it is elsewhere: a partition, another queue.
            let elsewhere = admin.admin()?.find_job(id, &[]).await.ok().flatten();
            match elsewhere {
                Some(found) if found.state == JobState::DeadLettered => bail!(
                    "job {id} is in the dead-letter queue of queue {:?}, so nothing was \
                     cancelled: `dmq dlq delete '{}' {id}` deletes the dead letter",
                    found.queue,
                    found.queue
                ),
                Some(found) if found.queue != *queue => bail!(
                    "queue {queue:?} holds no job {id}; it is in queue {:?} ({}): run \
                     `dmq cancel '{}' {id}`",
                    found.queue,
                    found.state.as_str(),
                    found.queue
                ),
                _ => bail!(
                    "no job {id} waits or runs in queue {queue:?}, so nothing was \
                     cancelled: it finished, was cancelled already, or was never there"
                ),
            }
        }
    }
}
