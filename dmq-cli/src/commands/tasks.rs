//! `tasks`: the tasks linked into this binary.

use dmq_core::Registry;
use serde::Serialize;

use crate::cli::TasksArgs;

/// One task, as listed.
#[derive(Debug, Serialize)]
struct Listed {
    name: &'static str,
    queue: &'static str,
    max_retries: Option<u32>,
    timeout_ms: Option<u128>,
    ignore_result: bool,
    guarantee: Option<&'static str>,
    schedule: Option<String>,
    path: &'static str,
}

/// Prints the registered tasks, sorted by name.
pub(crate) fn run(args: &TasksArgs) -> anyhow::Result<()> {
    let registry = Registry::from_linked()?;
    let tasks: Vec<Listed> = registry
        .tasks()
        .into_iter()
        .filter(|t| !super::is_dmqs_own(t))
        .map(|t| Listed {
            name: t.name,
            queue: t.queue,
            max_retries: t.max_retries,
            timeout_ms: t.timeout.map(|d| d.as_millis()),
            ignore_result: t.ignore_result,
            guarantee: t.guarantee.map(|g| g.as_str()),
            schedule: t.schedule.clone(),
            path: t.path,
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string(&tasks)?);
        return Ok(());
    }
    if tasks.is_empty() {
        println!("no tasks are linked into this binary");
        return Ok(());
    }
    let width = tasks.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
    let qwidth = tasks.iter().map(|t| t.queue.len()).max().unwrap_or(5).max(5);
    let pwidth = tasks.iter().map(|t| t.path.len()).max().unwrap_or(8).max(8);
    println!("{:width$}  {:qwidth$}  {:pwidth$}  SCHEDULE", "TASK", "QUEUE", "FUNCTION");
    for t in &tasks {
        let schedule = t.schedule.as_deref().unwrap_or("-");
        println!("{:width$}  {:qwidth$}  {:pwidth$}  {schedule}", t.name, t.queue, t.path);
    }
    Ok(())
}
