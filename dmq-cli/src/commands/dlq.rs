//! `dmq dlq`: list, requeue, delete and purge a queue's dead letters.

use anyhow::bail;
use serde_json::json;

use super::admin::{Admin, print_json, print_table, task_id, time};
use crate::cli::{DlqArgs, DlqCommand};

/// Runs `dmq dlq ...`.
pub(crate) async fn run(args: DlqArgs) -> anyhow::Result<()> {
    match args.command {
        DlqCommand::List { queue, offset, limit, broker } => {
            let admin = Admin::connect(&broker).await?;
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let letters = admin.manager.dead_letters(&queue, offset, limit).await?;
            let total = admin.manager.dead_letter_count(&queue).await?;
            // The task name is in the envelope; a letter whose envelope does not
            // decode still lists.
            let task_of = |letter: &dmq_core::DeadLetter| {
                letter.envelope().map(|e| e.task).unwrap_or_else(|_| "?".to_owned())
            };
            if admin.json {
                let list: Vec<_> = letters
                    .iter()
                    .map(|l| {
                        json!({
                            "id": l.id.to_string(),
                            "task": task_of(l),
                            "at": time(l.at),
                            "reason": l.reason,
                        })
                    })
                    .collect();
                return print_json(&json!({ "queue": queue, "total": total, "letters": list }));
            }
            if letters.is_empty() {
                println!("no dead letters in queue {queue:?} (of {total}, from offset {offset})");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = letters
                .iter()
                .map(|l| vec![l.id.to_string(), task_of(l), time(l.at), one_line(&l.reason)])
                .collect();
            print_table(&["ID", "TASK", "DEAD-LETTERED", "REASON"], &rows);
            println!(
                "{}-{} of {total} dead letters in queue {queue:?}",
                offset + 1,
                offset + letters.len()
            );
            Ok(())
        }
        DlqCommand::Requeue { queue, id, all, to, broker } => {
            let admin = Admin::connect(&broker).await?;
            let dest = to.as_deref().unwrap_or(&queue).to_owned();
            if all {
                let n = admin.manager.requeue_all_dead_letters(&queue, to.as_deref()).await?;
                admin.manager.flush_events(crate::commands::admin::FLUSH_EVENTS).await;
                if admin.json {
                    return print_json(&json!({ "requeued": n, "to": dest }));
                }
                println!("requeued {n} dead letters of queue {queue:?} to {dest:?}");
                return Ok(());
            }
            let Some(id) = id else { bail!("name a dead letter's id, or pass --all") };
            let id = task_id(&id)?;
            let requeued = admin.manager.requeue_dead_letter(&queue, id, to.as_deref()).await?;
            admin.manager.flush_events(crate::commands::admin::FLUSH_EVENTS).await;
            if !requeued {
                bail!(no_letter(&queue, id, admin.namespace()));
            }
            if admin.json {
                return print_json(&json!({ "requeued": 1, "id": id.to_string(), "to": dest }));
            }
            println!("requeued {id} to {dest:?}");
            Ok(())
        }
        DlqCommand::Delete { queue, id, broker } => {
            let admin = Admin::connect(&broker).await?;
            let id = task_id(&id)?;
            if !admin.manager.delete_dead_letter(&queue, id).await? {
                bail!(no_letter(&queue, id, admin.namespace()));
            }
            if admin.json {
                return print_json(&json!({ "deleted": 1, "id": id.to_string() }));
            }
            println!("deleted dead letter {id} of queue {queue:?}");
            Ok(())
        }
        DlqCommand::Purge { queue, yes, broker } => {
            if !yes {
                bail!(
                    "purging deletes every dead letter of queue {queue:?} for good; \
                     add --yes to confirm"
                );
            }
            let admin = Admin::connect(&broker).await?;
            let n = admin.manager.purge_dead_letters(&queue).await?;
            if admin.json {
                return print_json(&json!({ "purged": n, "queue": queue }));
            }
            println!("purged {n} dead letters of queue {queue:?}");
            Ok(())
        }
    }
}

/// The error for an id the dead-letter queue does not hold.
fn no_letter(queue: &str, id: dmq_core::TaskId, namespace: &str) -> String {
    format!(
        "queue {queue:?} of namespace {namespace:?} holds no dead letter {id}; \
         see `dmq dlq list {queue}`"
    )
}

/// `text` with line breaks as spaces, to keep a table row on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
