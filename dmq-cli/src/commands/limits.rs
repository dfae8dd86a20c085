//! `dmq limits`: each queue's gates (rate and concurrency limits) and what they hold
//! back, and the namespace's enqueue quotas.

use serde_json::json;

use super::admin::{Admin, print_json, print_table};
use crate::cli::LimitsArgs;

/// Shows the gates of the named queues (or of every queue with any) and the quotas.
pub(crate) async fn run(args: LimitsArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(&args.broker).await?;
    let broker_admin = admin.admin()?;
    let queues = if args.queues.is_empty() { broker_admin.queues().await? } else { args.queues };
    let mut gates = Vec::new();
    for queue in &queues {
        for gate in broker_admin.gates(queue).await? {
            gates.push((queue.clone(), gate));
        }
    }
    let quotas = match admin.manager.broker().quota_store() {
        Some(store) => store.quotas().await?,
        None => Vec::new(),
    };
    if admin.json {
        let gates: Vec<_> = gates
            .iter()
            .map(|(queue, g)| {
                json!({
                    "queue": queue, "gate": g.gate.name,
                    "rate": g.gate.rate.map(|r| r.to_string()), "burst": g.gate.burst,
                    "concurrency": g.gate.concurrency, "running": g.running,
                    "waiting": g.waiting, "next_start": g.next_start,
                    "holding_back": g.holding_back(),
                })
            })
            .collect();
        let quotas = super::quota::quotas_json(&quotas);
        return print_json(&json!({ "gates": gates, "quotas": quotas }));
    }
    if gates.is_empty() {
        println!("no gates (rate or concurrency limits) in namespace {:?}", admin.namespace());
    } else {
        let rows: Vec<Vec<String>> = gates
            .iter()
            .map(|(queue, g)| {
                vec![
                    queue.clone(),
                    g.gate.name.clone(),
                    g.gate.rate.map_or_else(
                        || "-".to_owned(),
                        |r| format!("{r} (burst {})", g.gate.burst),
                    ),
                    g.gate.concurrency.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                    g.running.to_string(),
                    g.waiting.to_string(),
                    g.holding_back().unwrap_or_else(|| "-".to_owned()),
                ]
            })
            .collect();
        print_table(
            &["QUEUE", "GATE", "RATE", "CONCURRENCY", "RUNNING", "WAITING", "HOLDING-BACK"],
            &rows,
        );
    }
    if !quotas.is_empty() {
        println!();
        super::quota::print_quotas(&quotas);
    }
    Ok(())
}
