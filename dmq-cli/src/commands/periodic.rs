//! `dmq periodic`: the periodic schedules with their last and next fire times.

use serde_json::json;

use super::admin::{Admin, maybe_time, print_json, print_table, time};
use crate::cli::PeriodicArgs;

/// Runs `dmq periodic`.
pub(crate) async fn run(args: PeriodicArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(&args.broker).await?;
    let schedules = admin.schedules()?.schedules().await?;
    if admin.json {
        let list: Vec<_> = schedules
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "since": time(s.since),
                    "last_fire": s.last_fire.map(time),
                    "next_fire": s.next_fire.map(time),
                })
            })
            .collect();
        return print_json(&list);
    }
    if schedules.is_empty() {
        println!("no periodic schedules in namespace {:?}", admin.namespace());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|s| {
            vec![s.name.clone(), time(s.since), maybe_time(s.last_fire), maybe_time(s.next_fire)]
        })
        .collect();
    print_table(&["NAME", "SINCE", "LAST-FIRE", "NEXT-FIRE"], &rows);
    Ok(())
}
