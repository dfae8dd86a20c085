//! Retries: a task that fails twice and succeeds on its third attempt, a fatal error
//! that is never retried, and the dead-letter queue. In-memory broker, no Redis.
//!
//! Run with: `cargo run -p dmq-examples --example retries`

use std::time::Duration;

use dmq_core::{Backoff, Manager, RetryPolicy, TaskContext, TaskError, task};

/// Fails with an I/O error on its first two attempts.
#[task(queue = "retries", max_retries = 5, backoff = "exponential(100ms, 2, 1s)")]
async fn fetch(url: String, ctx: TaskContext) -> Result<String, TaskError> {
    if ctx.attempt() < 3 {
        return Err(std::io::Error::other(format!("{url} timed out")).into());
    }
    Ok(format!("{url}: fetched on attempt {}", ctx.attempt()))
}

/// Only I/O errors are worth retrying here; anything else fails at once.
fn io_errors_only() -> RetryPolicy {
    let backoff = Backoff::fixed(Duration::from_millis(100)).expect("a valid backoff");
    RetryPolicy::new(3, backoff).retry_on::<std::io::Error>()
}

/// Fails with a parse error, which its policy does not retry.
#[task(queue = "retries", retry = io_errors_only)]
async fn parse(text: String) -> Result<i64, TaskError> {
    Ok(text.parse::<i64>()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let manager = Manager::builder().build()?;
    let worker = manager.worker().queues(["retries"]).start();

    let fetched = fetch::call("https://example.com".into()).enqueue(&manager).await?;
    println!("{}", fetched.result(Duration::from_secs(10)).await?);

    let parsed = parse::call("forty-two".into()).enqueue(&manager).await?;
    let err = parsed.result(Duration::from_secs(10)).await.expect_err("not a number");
    println!("parse failed at once: {err}");

    for letter in manager.dead_letters("retries", 0, 10).await? {
        println!("dead letter {}: {}", letter.id, letter.reason);
    }
    worker.shutdown().await;
    Ok(())
}
