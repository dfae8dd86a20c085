//! `dmq queue delete`: deletes a queue whole.

use anyhow::bail;
use dmq_core::Error;
use serde_json::json;

use super::admin::{Admin, print_json};
use crate::cli::{QueueArgs, QueueCommand};

/// Runs `dmq queue ...`.
pub(crate) async fn run(args: QueueArgs) -> anyhow::Result<()> {
    match args.command {
        QueueCommand::Delete { queue, yes, force, broker } => {
            if !yes {
                bail!(
                    "deleting queue {queue:?} deletes its waiting and delayed jobs and its dead \
                     letters for good; add --yes to confirm"
                );
            }
            let admin = Admin::connect(&broker).await?;
            let deleted = match admin.admin()?.delete_queue(&queue, force).await {
                Ok(deleted) => deleted,
                Err(Error::QueueBusy { in_flight, .. }) => {
                    let jobs = if in_flight == 1 { "job" } else { "jobs" };
                    bail!(
                        "queue {queue:?} has {in_flight} {jobs} in flight, held by workers; \
                         nothing was deleted: wait for them to finish, or add --force to delete \
                         them too (their workers then lose their lease)"
                    )
                }
                Err(e) => return Err(e.into()),
            };
            if admin.json {
                return print_json(&json!({
                    "queue": queue,
                    "waiting": deleted.waiting,
                    "delayed": deleted.delayed,
                    "dead_letters": deleted.dead_letters,
                    "in_flight": deleted.in_flight,
                }));
            }
            println!(
                "deleted queue {queue:?}: {} waiting, {} delayed, {} dead letters, {} in flight",
                deleted.waiting, deleted.delayed, deleted.dead_letters, deleted.in_flight
            );
            Ok(())
        }
    }
}
