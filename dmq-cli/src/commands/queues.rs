//! `dmq queues`: each queue's ready, suspect, delayed, in-flight and dead jobs, and the
//! bad entries dropped from it, and whether it is paused. A partitioned queue shows as
//! one row, its partitions' figures added up, unless `--partitions` asks for a row per
//! partition.

use dmq_core::{QueueStats, is_partition_of, split_partition};
use serde_json::json;

use super::admin::{Admin, print_json, print_table};
use crate::cli::QueuesArgs;

/// One row: a queue, or a partitioned queue with its partitions folded in.
struct Row {
    queue: String,
    /// How many partitions were folded into the row; 0 for a queue without any.
    partitions: usize,
    stats: QueueStats,
    /// How many of its partitions are paused (0 or 1 for a queue without any).
    paused: usize,
}

/// Runs `dmq queues`.
pub(crate) async fn run(args: QueuesArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(&args.broker).await?;
    let queues = named_or_all(&admin, &args.queues).await?;
    let broker = admin.admin()?;
    let mut rows: Vec<Row> = Vec::with_capacity(queues.len());
    for queue in &queues {
        let stats = broker.queue_stats(queue).await?;
        let (logical, partition) = split_partition(queue);
        if args.partitions || partition.is_none() {
            let paused = usize::from(stats.paused_since.is_some());
            rows.push(Row { queue: queue.clone(), partitions: 0, stats, paused });
            continue;
        }
        match rows.iter_mut().find(|row| row.partitions > 0 && row.queue == logical) {
            Some(row) => {
                row.partitions += 1;
                row.paused += usize::from(stats.paused_since.is_some());
                add(&mut row.stats, &stats);
            }
            None => {
                let paused = usize::from(stats.paused_since.is_some());
                rows.push(Row { queue: logical.to_owned(), partitions: 1, stats, paused });
            }
        }
    }
    if admin.json {
        let list: Vec<_> = rows
            .iter()
            .map(|Row { queue, partitions, stats: s, paused }| {
                let mut row = json!({
                    "queue": queue,
                    "ready": s.ready,
                    "suspect": s.suspect,
                    "gated": s.gated,
                    "delayed": s.delayed,
                    "in_flight": s.in_flight,
                    "dead": s.dead,
                    "dead_dropped": s.dead_dropped,
                    "bad_entries": s.bad_entries,
                    "paused": *paused > 0 && *paused == (*partitions).max(1),
                    "paused_since": s.paused_since,
                });
                if *partitions > 0 {
                    row["partitions"] = json!(partitions);
                    row["paused_partitions"] = json!(paused);
                }
                row
            })
            .collect();
        return print_json(&list);
    }
    if rows.is_empty() {
        println!("no queues known in namespace {:?}", admin.namespace());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|Row { queue, partitions, stats: s, paused }| {
            vec![
                if *partitions > 0 {
                    format!("{queue} ({partitions} partitions)")
                } else {
                    queue.clone()
                },
                s.ready.to_string(),
                s.suspect.to_string(),
                s.gated.to_string(),
                s.delayed.to_string(),
                s.in_flight.to_string(),
                s.dead.to_string(),
                s.dead_dropped.to_string(),
                s.bad_entries.to_string(),
                match (*paused, *partitions) {
                    (0, _) => "no".to_owned(),
                    (p, n) if p == n.max(1) => "yes".to_owned(),
                    (p, n) => format!("{p} of {n}"),
                },
            ]
        })
        .collect();
    print_table(
        &[
            "QUEUE",
            "READY",
            "SUSPECT",
            "GATED",
            "DELAYED",
            "IN-FLIGHT",
            "DEAD",
            "DEAD-DROPPED",
            "BAD-ENTRIES",
            "PAUSED",
        ],
        &rows,
    );
    Ok(())
}

/// Adds `more`'s figures to `total`'s.
fn add(total: &mut QueueStats, more: &QueueStats) {
    total.ready += more.ready;
    total.suspect += more.suspect;
    total.gated += more.gated;
    total.delayed += more.delayed;
    total.in_flight += more.in_flight;
    total.dead += more.dead;
    total.dead_dropped += more.dead_dropped;
    total.bad_entries += more.bad_entries;
    // The row's pause time: the earliest of its partitions'.
    total.paused_since = match (total.paused_since, more.paused_since) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
}

/// The queues `named` on the command line, each partitioned one as its partitions
/// (`emails#0`, `emails#1`, ... as the queue registry lists them), or when none is
/// named every queue the broker's queue registry holds, sorted.
pub(super) async fn named_or_all(admin: &Admin, named: &[String]) -> anyhow::Result<Vec<String>> {
    let known = admin.admin()?.queues().await?;
    if named.is_empty() {
        return Ok(known);
    }
    let mut queues = Vec::new();
    for name in named {
        let partitions: Vec<&String> = known.iter().filter(|q| is_partition_of(q, name)).collect();
        if partitions.is_empty() {
            queues.push(name.clone());
        } else {
            queues.extend(partitions.into_iter().cloned());
        }
    }
    Ok(queues)
}
