//! `dmq pause` and `dmq resume`: stop and restart the claims from a queue.

use serde_json::json;

use super::admin::{Admin, print_json};
use crate::cli::PauseArgs;

/// Pauses (`pause`) or resumes the queue, and says whether that changed anything.
pub(crate) async fn run(args: PauseArgs, pause: bool) -> anyhow::Result<()> {
    let queue = &args.queue;
    let admin = Admin::connect(&args.broker).await?;
    // Pausing a queue nothing used yet is allowed (it holds from its first job on),
    // but may be a typo, or a partitioned queue whose partitions are not known yet.
    let known = admin
        .admin()?
        .queues()
        .await?
        .iter()
        .any(|q| q == queue || dmq_core::is_partition_of(q, queue));
    let changed =
        if pause { admin.manager.pause(queue).await? } else { admin.manager.resume(queue).await? };
    if admin.json {
        return print_json(
            &json!({ "queue": queue, "paused": pause, "changed": changed, "known": known }),
        );
    }
    if pause && !known {
        eprintln!(
            "note: no job and no worker used queue {queue:?} yet: it is paused from its first \
             job on (a partitioned queue's partitions are paused once `dmq queues` lists them: \
             pause it again then)"
        );
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
