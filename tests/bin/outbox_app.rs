//! `dmq-test-outbox-app`: a task binary (its main is `dmq_cli::main()`) for the
//! `outbox` end-to-end tests, which run it as `worker` processes, with and without
//! `--outbox`, and SIGKILL its relays.
//!
//! Its one task, `outbox.record`, counts its runs by job id in the Redis hash named by
//! `DMQ_TEST_RUNS_KEY`, on the Redis of `DMQ_BROKER_URL` (the worker's broker). The
//! `outbox` tests include this file as a module, so that they enqueue this very task.
//!
//! ```text
//! DMQ_BROKER_URL=redis://127.0.0.1:6379 DMQ_TEST_RUNS_KEY='{ns}:outbox:runs' \
//!     dmq-test-outbox-app worker --namespace ns --outbox postgres://postgres@127.0.0.1/test
//! ```

use dmq_core::{TaskContext, TaskError, task};
use tokio::sync::OnceCell;

/// The queue of `record`.
#[allow(dead_code)]
pub(crate) const QUEUE: &str = "outbox-e2e";

/// The connection `record` counts its runs on.
static RECORDS: OnceCell<dmq_redis::RedisConnection> = OnceCell::const_new();

/// Counts one run of job `ctx.id()` and returns `order`.
#[task(name = "outbox.record", queue = "outbox-e2e")]
pub(crate) async fn record(order: u64, ctx: TaskContext) -> Result<u64, TaskError> {
    let key = std::env::var("DMQ_TEST_RUNS_KEY")
        .map_err(|_| TaskError::fatal("DMQ_TEST_RUNS_KEY names no hash to count runs in"))?;
    let conn = RECORDS
        .get_or_try_init(|| async {
            let url = std::env::var("DMQ_BROKER_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
            dmq_redis::RedisConnection::open(&url).await
        })
        .await
        .map_err(TaskError::msg)?;
    let mut conn = conn.clone();
    let _: i64 = redis::cmd("HINCRBY")
        .arg(key)
        .arg(ctx.id().to_string())
        .arg(1)
        .query_async(&mut conn)
        .await?;
    Ok(order)
}

#[allow(dead_code)]
fn main() -> std::process::ExitCode {
    dmq_cli::main()
}
