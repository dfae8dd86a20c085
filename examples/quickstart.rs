//! The quick start, on the in-memory broker (no Redis needed).
//!
//! Run with: `cargo run -p dmq-examples --example quickstart`

use std::time::Duration;

use dmq_core::{Manager, TaskError, task};

/// Adds two numbers.
#[task]
async fn add(x: i64, y: i64) -> Result<i64, TaskError> {
    Ok(x + y)
}

/// Pretends to send an e-mail; an empty address is a fatal error, never retried.
#[task(name = "emails.send", queue = "emails", max_retries = 5, timeout = "30s")]
async fn send_email(to: String, body: String) -> Result<String, TaskError> {
    if to.is_empty() {
        return Err(TaskError::fatal("no recipient"));
    }
    Ok(format!("sent {} bytes to {to}", body.len()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let manager = Manager::builder().build()?; // in-memory broker and backend
    let worker = manager.worker().concurrency(10).start();

    let sum = add::call(2, 3).enqueue(&manager).await?;
    println!("add(2, 3) = {}", sum.result(Duration::from_secs(10)).await?);

    let mail =
        send_email::call("ada@example.com".into(), "Hello!".into()).enqueue(&manager).await?;
    println!("emails.send: {}", mail.result(Duration::from_secs(10)).await?);

    let bad = send_email::call(String::new(), "Hello?".into()).enqueue(&manager).await?;
    match bad.result(Duration::from_secs(10)).await {
        Ok(text) => println!("emails.send unexpectedly succeeded: {text}"),
        Err(e) => println!("emails.send with no recipient: {e}"),
    }

    let later = add::call(40, 2).delay(Duration::from_millis(500)).enqueue(&manager).await?;
    println!("add(40, 2) after 500 ms = {}", later.result(Duration::from_secs(10)).await?);

    worker.shutdown().await;
    Ok(())
}
