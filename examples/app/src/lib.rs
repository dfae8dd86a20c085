//! Example tasks for `app worker` (see the README's walk-through).
//!
//! The binary of this crate is `dmq_cli::main()`, so `app worker` runs a worker that
//! knows these tasks, and `app tasks` lists them.

use std::time::Duration;

use dmq_core::{TaskContext, TaskError, task};

/// Adds two numbers.
#[task(queue = "math")]
pub async fn add(x: i64, y: i64) -> Result<i64, TaskError> {
    Ok(x + y)
}

/// Pretends to send an e-mail and returns the message id it would have had.
#[task(name = "emails.send", queue = "emails", max_retries = 3, timeout = "30s")]
pub async fn send_email(to: String, subject: String) -> Result<String, TaskError> {
    if !to.contains('@') {
        return Err(TaskError::fatal(format!("{to:?} is not an e-mail address")));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(format!("<{}-{}@example.invalid>", subject.len(), to.len()))
}

/// Fails its first two attempts and succeeds on the third, returning the attempt.
#[task(queue = "default", max_retries = 5, backoff = "fixed(200ms)")]
pub async fn flaky(ctx: TaskContext) -> Result<u32, TaskError> {
    if ctx.attempt() < 3 {
        return Err(std::io::Error::other(format!("attempt {} fails", ctx.attempt())).into());
    }
    Ok(ctx.attempt())
}

/// Sleeps for `ms` milliseconds and returns them.
#[task(queue = "slow")]
pub async fn slow(ms: u64) -> Result<u64, TaskError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

/// Fires by itself every minute, from whichever worker claims the tick.
#[task(queue = "default", every = "1m")]
pub async fn heartbeat() -> Result<(), TaskError> {
    Ok(())
}

/// A poison pill, to watch what dmq does with one: it kills the worker process that
/// runs it, as a segfault in a native library or an out-of-memory kill would. dmq takes
/// it back from the dead worker, runs it alone, and dead-letters it once it has killed
/// its worker `--max-deliveries` times alone; the jobs that ran beside it are spared.
#[task(queue = "poison")]
pub async fn crash_worker() -> Result<(), TaskError> {
    std::process::abort()
}
