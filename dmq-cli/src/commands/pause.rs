//! `dmq pause` and `dmq resume`: stop and restart the claims from a queue.

use serde_json::json;

use super::admin::{Admin, print_json};
use crate::cli::PauseArgs;

/// Pauses (`pause`) or resumes the queue, and says whether that changed anything.
pub(crate) async fn run(args: PauseArgs, pause: bool) -> anyhow::Result<()> {
    let queue = &args.queue;
    let admin = Admin::connect(&args.broker).await?;
    let changed =
        if pause { admin.manager.pause(queue).await? } else { admin.manager.resume(queue).await? };
    if admin.json {
        return print_json(&json!({ "queue": queue, "paused": pause, "changed": changed }));
    }
    match (pause, changed) {
        (true, true) => println!(
            "paused queue {queue:?}: workers claim nothing from it until `dmq resume {queue}` \
             (enqueues still land; running jobs finish)"
        ),
        (true, false) => println!("queue {queue:?} was paused already"),
        (false, true) => println!("resumed queue {queue:?}: workers claim from it again"),
        (false, false) => println!("queue {queue:?} was not paused"),
    }
    Ok(())
}
