//! `dmq quota`: set, remove and list enqueue quotas.

use anyhow::Context;
use dmq_core::QuotaState;
use serde_json::json;

use super::admin::{Admin, print_json, print_table};
use crate::cli::{BrokerArgs, QuotaArgs, QuotaCommand};

/// Runs one `dmq quota` subcommand on the namespace it names.
pub(crate) async fn run(args: QuotaArgs) -> anyhow::Result<()> {
    match args.command {
        QuotaCommand::Set { target, rate, key, broker } => {
            let quota: dmq_core::RateLimit = rate.parse()?;
            let admin = connect(broker, target).await?;
            let changed = store(&admin)?.set_quota(key.as_deref(), Some(quota)).await?;
            let whose = whose(&admin, key.as_deref());
            if admin.json {
                return print_json(&json!({
                    "namespace": admin.namespace(), "key": key, "quota": quota.to_string(),
                    "changed": changed,
                }));
            }
            if changed {
                println!("set the enqueue quota of {whose} to {quota}");
            } else {
                println!("the enqueue quota of {whose} was {quota} already");
            }
            Ok(())
        }
        QuotaCommand::Remove { target, key, broker } => {
            let admin = connect(broker, target).await?;
            let changed = store(&admin)?.set_quota(key.as_deref(), None).await?;
            let whose = whose(&admin, key.as_deref());
            if admin.json {
                return print_json(&json!({
                    "namespace": admin.namespace(), "key": key, "changed": changed,
                }));
            }
            if changed {
                println!("removed the enqueue quota of {whose}");
            } else {
                println!("{whose} had no enqueue quota");
            }
            Ok(())
        }
        QuotaCommand::List { target, broker } => {
            let admin = connect(broker, target).await?;
            let quotas = store(&admin)?.quotas().await?;
            if admin.json {
                return print_json(&quotas_json(&quotas));
            }
            if quotas.is_empty() {
                println!("no enqueue quotas in namespace {:?}", admin.namespace());
                return Ok(());
            }
            print_quotas(&quotas);
            Ok(())
        }
    }
}

/// Quotas as `--json` prints them, in `dmq quota list` and `dmq limits`.
pub(super) fn quotas_json(quotas: &[QuotaState]) -> Vec<serde_json::Value> {
    quotas
        .iter()
        .map(|q| {
            json!({
                "key": q.key, "quota": q.limit.to_string(), "used": q.used,
                "window_ends": q.window_ends,
            })
        })
        .collect()
}

/// Quotas as a table, in `dmq quota list` and `dmq limits`.
pub(super) fn print_quotas(quotas: &[QuotaState]) {
    let rows: Vec<Vec<String>> = quotas
        .iter()
        .map(|q| {
            vec![
                q.key.clone().unwrap_or_else(|| "(namespace)".to_owned()),
                q.limit.to_string(),
                q.used.to_string(),
                q.window_ends.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339()),
            ]
        })
        .collect();
    print_table(&["QUOTA-KEY", "QUOTA", "USED", "WINDOW-ENDS"], &rows);
}

/// The admin connection of `namespace`, which the command names instead of
/// --namespace.
async fn connect(mut broker: BrokerArgs, namespace: String) -> anyhow::Result<Admin> {
    broker.namespace = namespace;
    Admin::connect(&broker).await
}

fn store(admin: &Admin) -> anyhow::Result<&dyn dmq_core::QuotaStore> {
    admin
        .manager
        .broker()
        .quota_store()
        .context("this broker keeps no enqueue quotas; the Redis and PostgreSQL brokers do")
}

/// How a quota is named in what the command prints.
fn whose(admin: &Admin, key: Option<&str>) -> String {
    match key {
        Some(key) => format!("key {key:?} of namespace {:?}", admin.namespace()),
        None => format!("namespace {:?}", admin.namespace()),
    }
}
