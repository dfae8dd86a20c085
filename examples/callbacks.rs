//! Callbacks: one that logs failures only, and one that tallies completions per task,
//! both fed the worker's lifecycle events off the hot path. In-memory broker, no Redis.
//!
//! Run with: `cargo run -p dmq-examples --example callbacks`

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use dmq_core::{
    Callback, Event, EventKind, EventType, Manager, Rules, TaskError, async_trait, task,
};

#[task(queue = "callbacks")]
async fn resize(width: u32) -> Result<u32, TaskError> {
    if width == 0 {
        return Err(TaskError::fatal("a zero-width image"));
    }
    Ok(width / 2)
}

/// Prints every event that says something went wrong.
struct LogFailures;

#[async_trait]
impl Callback for LogFailures {
    fn rules(&self) -> Rules {
        Rules::failures()
    }

    async fn on_event(&self, event: &Event) {
        println!("failure event: {event}");
    }
}

/// Counts completed runs per task, and their total run time. Registered as an `Arc`,
/// so that `main` can read the tally.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, (u32, Duration)>>);

#[async_trait]
impl Callback for Tally {
    fn rules(&self) -> Rules {
        Rules::all().events([EventType::Completed])
    }

    async fn on_event(&self, event: &Event) {
        if let EventKind::Completed { run_time } = event.kind {
            let mut tally = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = tally.entry(event.task.clone()).or_default();
            entry.0 += 1;
            entry.1 += run_time;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tally = std::sync::Arc::new(Tally::default());
    let manager = Manager::builder().callback(LogFailures).callback(tally.clone()).build()?;
    let worker = manager.worker().queues(["callbacks"]).start();

    for width in [640, 0, 1024] {
        let handle = resize::call(width).enqueue(&manager).await?;
        match handle.result(Duration::from_secs(10)).await {
            Ok(half) => println!("resized {width} to {half}"),
            Err(e) => println!("resizing {width} failed: {e}"),
        }
    }
    worker.shutdown().await; // lets the callbacks catch up first
    for (task, (runs, time)) in tally.0.lock().expect("the tally").iter() {
        println!("{task}: {runs} completed, {time:?} in all");
    }
    for listener in manager.event_listeners() {
        println!("{}: {} events, {} dropped", listener.name, listener.delivered, listener.dropped);
    }
    Ok(())
}
