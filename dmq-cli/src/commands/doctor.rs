//! `dmq doctor`: finds the jobs that are stored but wait nowhere, and with --fix puts
//! them back.

use anyhow::bail;
use dmq_core::QueueCheckup;
use serde_json::json;

use super::admin::{Admin, print_json, print_table};
use super::queues::named_or_all;
use crate::cli::DoctorArgs;

/// Runs `dmq doctor`: one check-up per queue through [`dmq_core::BrokerAdmin::doctor`],
/// printed; an error (exit status 1) when stranded jobs were found and not put back.
pub(crate) async fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(&args.broker).await?;
    let queues = named_or_all(&admin, &args.queues).await?;
    let checkups = admin.admin()?.doctor(&queues, args.fix).await?;
    let stranded: usize = checkups.iter().map(|c| c.stranded.len()).sum();
    let put_back: usize = checkups.iter().filter(|c| c.fixed).map(|c| c.stranded.len()).sum();
    if admin.json {
        let list: Vec<_> = checkups
            .iter()
            .map(|c| {
                json!({
                    "queue": c.queue,
                    "stranded": c.stranded,
                    "fixed": c.fixed,
                    "suspect": c.suspect,
                    "bad_entries": c.bad_entries,
                })
            })
            .collect();
        print_json(&json!({ "queues": list, "stranded": stranded, "put_back": put_back }))?;
    } else if checkups.is_empty() {
        println!("no queues known in namespace {:?}", admin.namespace());
    } else {
        print_report(&checkups, stranded, put_back);
    }
    let left = stranded - put_back;
    if left > 0 {
        let them = if left == 1 { "it" } else { "them" };
        bail!(
            "{} found and not put back, so nothing will run {them}: run the doctor again \
             with --fix to put {them} back",
            jobs(left)
        );
    }
    Ok(())
}

/// Prints a table with a row per queue, a line per stranded job and a summary line.
fn print_report(checkups: &[QueueCheckup], stranded: usize, put_back: usize) {
    let rows: Vec<Vec<String>> = checkups
        .iter()
        .map(|c| {
            let put_back = if c.fixed { c.stranded.len() } else { 0 };
            vec![
                c.queue.clone(),
                c.stranded.len().to_string(),
                put_back.to_string(),
                c.suspect.to_string(),
                c.bad_entries.to_string(),
            ]
        })
        .collect();
    print_table(&["QUEUE", "STRANDED", "PUT-BACK", "SUSPECT", "BAD-ENTRIES"], &rows);
    for checkup in checkups {
        let what = if checkup.fixed { "put back" } else { "not put back" };
        for id in &checkup.stranded {
            println!("stranded in {}: {id} ({what})", checkup.queue);
        }
    }
    let checked = match checkups.len() {
        1 => "1 queue checked".to_owned(),
        n => format!("{n} queues checked"),
    };
    if stranded == 0 {
        println!("{checked}: no stranded jobs");
    } else if put_back == stranded {
        println!("{checked}: {} put back at the front of the ready lists", jobs(stranded));
    } else {
        println!("{checked}: {}, {} put back", jobs(stranded), put_back);
    }
}

/// "1 stranded job", "2 stranded jobs".
fn jobs(n: usize) -> String {
    if n == 1 { "1 stranded job".to_owned() } else { format!("{n} stranded jobs") }
}
