//! `dmq queues`: each queue's ready, delayed, in-flight and dead jobs.

use serde_json::json;

use super::admin::{Admin, print_json, print_table};
use crate::cli::QueuesArgs;

/// Runs `dmq queues`.
pub(crate) async fn run(args: QueuesArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(&args.broker).await?;
    let queues = if args.queues.is_empty() {
        let mut conn = admin.redis().await?;
        dmq_redis::queue_names(&mut conn, &admin.keys).await?
    } else {
        args.queues.clone()
    };
    let broker = admin.manager.broker();
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
                    "delayed": s.delayed,
                    "in_flight": s.in_flight,
                    "dead": s.dead,
                    "dead_dropped": s.dead_dropped,
                })
            })
            .collect();
        return print_json(&list);
    }
    if stats.is_empty() {
        println!("no queues with jobs in namespace {:?}", admin.namespace());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|(queue, s)| {
            vec![
                (*queue).clone(),
                s.ready.to_string(),
                s.delayed.to_string(),
                s.in_flight.to_string(),
                s.dead.to_string(),
                s.dead_dropped.to_string(),
            ]
        })
        .collect();
    print_table(&["QUEUE", "READY", "DELAYED", "IN-FLIGHT", "DEAD", "DEAD-DROPPED"], &rows);
    Ok(())
}
