//! `dmq queues`: each queue's ready, suspect, delayed, in-flight and dead jobs, and the
//! bad entries dropped from it.

use serde_json::json;

use super::admin::{Admin, print_json, print_table};
use crate::cli::QueuesArgs;

/// Runs `dmq queues`.
pub(crate) async fn run(args: QueuesArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(&args.broker).await?;
    let queues = named_or_all(&admin, &args.queues).await?;
    let broker = admin.admin()?;
    let mut stats = Vec::with_capacity(queues.len());
    for queue in &queues {
        stats.push((queue, broker.queue_stats(queue).await?));
    }
    if admin.json {
        let list: Vec<_> = stats
            .iter()
            .map(|(queue, s)| {
                json!({
                    "queue": queue,
                    "ready": s.ready,
                    "suspect": s.suspect,
                    "delayed": s.delayed,
                    "in_flight": s.in_flight,
                    "dead": s.dead,
                    "dead_dropped": s.dead_dropped,
                    "bad_entries": s.bad_entries,
                })
            })
            .collect();
        return print_json(&list);
    }
    if stats.is_empty() {
        println!("no queues known in namespace {:?}", admin.namespace());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|(queue, s)| {
            vec![
                (*queue).clone(),
                s.ready.to_string(),
                s.suspect.to_string(),
                s.delayed.to_string(),
                s.in_flight.to_string(),
                s.dead.to_string(),
                s.dead_dropped.to_string(),
                s.bad_entries.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "QUEUE",
            "READY",
            "SUSPECT",
            "DELAYED",
            "IN-FLIGHT",
            "DEAD",
            "DEAD-DROPPED",
            "BAD-ENTRIES",
        ],
        &rows,
    );
    Ok(())
}

/// The queues `named` on the command line, or when none is named every queue the
/// broker's queue registry holds, sorted.
pub(super) async fn named_or_all(admin: &Admin, named: &[String]) -> anyhow::Result<Vec<String>> {
    if !named.is_empty() {
        return Ok(named.to_vec());
    }
    Ok(admin.admin()?.queues().await?)
}
