//! `dmq workers`: the live workers and their heartbeats.

use serde_json::json;

use super::admin::{Admin, print_json, print_table, time};
use crate::cli::WorkersArgs;

/// Runs `dmq workers`.
pub(crate) async fn run(args: WorkersArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(&args.broker).await?;
    let workers = admin.workers()?.workers().await?;
    if admin.json {
        let list: Vec<_> = workers
            .iter()
            .map(|w| {
                json!({
                    "id": w.info.id,
                    "hostname": w.info.hostname,
                    "pid": w.info.pid,
                    "queues": w.info.queues,
                    "concurrency": w.info.concurrency,
                    "running": w.info.running,
                    "started_at": time(w.info.started_at),
                    "alive_until": time(w.alive_until),
                })
            })
            .collect();
        return print_json(&list);
    }
    if workers.is_empty() {
        println!("no live workers in namespace {:?}", admin.namespace());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            vec![
                w.info.id.clone(),
                w.info.hostname.clone(),
                w.info.pid.to_string(),
                w.info.queues.join(","),
                w.info.concurrency.to_string(),
                w.info.running.to_string(),
                time(w.info.started_at),
                time(w.alive_until),
            ]
        })
        .collect();
    print_table(
        &["ID", "HOST", "PID", "QUEUES", "CONCURRENCY", "RUNNING", "STARTED", "HEARTBEAT-LAPSES"],
        &rows,
    );
    Ok(())
}
