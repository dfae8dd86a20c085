//! `dmq purge`: deletes the jobs waiting in a queue.

use anyhow::bail;
use serde_json::json;

use super::admin::{Admin, print_json};
use crate::cli::PurgeArgs;

/// Deletes the ready and delayed jobs of the queue, once confirmed with --yes.
pub(crate) async fn run(args: PurgeArgs) -> anyhow::Result<()> {
    let queue = &args.queue;
    if !args.yes {
        bail!(
            "purging deletes every job waiting in queue {queue:?} (ready or delayed) for good; \
             add --yes to confirm"
        );
    }
    let admin = Admin::connect(&args.broker).await?;
    let n = admin.admin()?.purge(queue).await?;
    if admin.json {
        return print_json(&json!({ "purged": n, "queue": queue }));
    }
    println!("purged {n} waiting jobs of queue {queue:?}");
    Ok(())
}
