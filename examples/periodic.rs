//! Periodic tasks: one declared on its attribute, one registered on the manager.
//! In-memory broker, no Redis; stops after a few seconds.
//!
//! Run with: `cargo run -p dmq-examples --example periodic`

use std::time::Duration;

use dmq_core::{FIRE_TIME_HEADER, Manager, Schedule, TaskContext, TaskError, task};

/// Fires every second, from whichever worker claims the tick.
#[task(queue = "periodic", every = "1s")]
async fn tick(ctx: TaskContext) -> Result<(), TaskError> {
    let fire = ctx.headers().get(FIRE_TIME_HEADER).cloned().unwrap_or_default();
    println!("tick for {fire}");
    Ok(())
}

/// Reports on a team; registered with its argument on the manager.
#[task(queue = "periodic")]
async fn report(team: String) -> Result<(), TaskError> {
    println!("report for {team}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let manager = Manager::builder().build()?;
    // Every two seconds, seconds first (six fields).
    manager.periodic(report::call("ops".into()), Schedule::cron("*/2 * * * * *")?)?;
    let worker = manager.worker().queues(["periodic"]).start();
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    worker.shutdown().await;
    Ok(())
}
