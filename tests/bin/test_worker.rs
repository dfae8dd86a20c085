//! `dmq-test-worker`: one worker process for the `processes` and `postgres` end-to-end
//! tests, which start, stop (SIGTERM) and kill (SIGKILL) it.
//!
//! It runs an in-process worker on the broker and result backend of `--broker` (any URL
//! `dmq worker` takes, through `dmq_cli::connect_url`; the Redis of `--redis` when not
//! given) in the namespace it is given, until SIGTERM or SIGINT, then shuts down
//! gracefully and exits 0. Its tasks record their runs in the Redis of `--redis`,
//! whatever the broker, under the key names built by `runs_key`, `pids_key` and
//! `starts_key`, inside the namespace, so that `dmq_redis::delete_namespace` removes
//! them with the rest.
//!
//! `processes.rs` and `postgres.rs` include this file as a module, so that the tests
//! enqueue these very tasks (`count::call(..)`) and read these very keys.
//!
//! ```text
//! dmq-test-worker --redis redis://127.0.0.1:6379 --namespace dmq-test-1 \
//!     --queues e2e-count --concurrency 16 --lease-ms 2000 --heartbeat-ms 200
//! dmq-test-worker --broker postgres://postgres@127.0.0.1:5432/test \
//!     --namespace dmq_test_1 --queues e2e-count
//! ```

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use dmq_core::{Manager, Schedule, TaskContext, TaskError, task};
use tokio::signal::unix::{SignalKind, signal};

/// The worker's settings, from arguments or the environment.
#[derive(Debug, Parser)]
#[command(name = "dmq-test-worker")]
struct Args {
    /// The Redis holding the run records, and the broker and results unless --broker
    /// names another.
    #[arg(long, env = "DMQ_TEST_WORKER_REDIS", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// The broker and result backend, by URL: redis://..., postgres://... [default:
    /// --redis].
    #[arg(long, env = "DMQ_TEST_WORKER_BROKER")]
    broker: Option<String>,
    /// The test's namespace.
    #[arg(long, env = "DMQ_TEST_WORKER_NAMESPACE")]
    namespace: String,
    /// The queues to take jobs from, comma separated.
    #[arg(long, env = "DMQ_TEST_WORKER_QUEUES", value_delimiter = ',', required = true)]
    queues: Vec<String>,
    /// Jobs run at once.
    #[arg(long, env = "DMQ_TEST_WORKER_CONCURRENCY", default_value_t = 10)]
    concurrency: usize,
    /// The lease on each claimed job, in milliseconds.
    #[arg(long, env = "DMQ_TEST_WORKER_LEASE_MS", default_value_t = 30_000)]
    lease_ms: u64,
    /// The heartbeat interval, in milliseconds.
    #[arg(long, env = "DMQ_TEST_WORKER_HEARTBEAT_MS", default_value_t = 5_000)]
    heartbeat_ms: u64,
    /// How long running jobs may finish after SIGTERM, in milliseconds.
    #[arg(long, env = "DMQ_TEST_WORKER_GRACE_MS", default_value_t = 30_000)]
    grace_ms: u64,
    /// Deliveries after which a job that never settles is dead-lettered as poison.
    #[arg(long, env = "DMQ_TEST_WORKER_MAX_DELIVERIES", default_value_t = 5)]
    max_deliveries: u32,
    /// The delivery guarantee: at-most-once, at-least-once or exactly-once.
    #[arg(long, env = "DMQ_TEST_WORKER_GUARANTEE", default_value = "at-least-once")]
    guarantee: dmq_core::Guarantee,
    /// Runs the periodic schedule "e2e.tick" (task `e2e.tick`) every this many
    /// milliseconds.
    #[arg(long, env = "DMQ_TEST_WORKER_TICK_MS")]
    tick_ms: Option<u64>,
}

/// The hash of task id to how many times that `count` job ran, in namespace `ns`.
///
/// The record keys carry the hash tag `{ns}`, whose keys `delete_namespace` removes.
pub(crate) fn runs_key(ns: &str) -> String {
    format!("{{{ns}}}:e2e:runs")
}

/// The hash of process id to how many `count` jobs that process ran.
pub(crate) fn pids_key(ns: &str) -> String {
    format!("{{{ns}}}:e2e:pids")
}

/// The list with one `task-id pid` entry each time a `slow` job starts.
pub(crate) fn starts_key(ns: &str) -> String {
    format!("{{{ns}}}:e2e:starts")
}

/// The list with one `task-id pid` entry each time a `stamp` job starts.
pub(crate) fn stamps_key(ns: &str) -> String {
    format!("{{{ns}}}:e2e:stamps")
}

/// The hash of fire time (as the job's fire-time header says) to how many `tick`
/// jobs ran for it.
pub(crate) fn ticks_key(ns: &str) -> String {
    format!("{{{ns}}}:e2e:ticks")
}

/// The list with one `task-id start-µs end-µs` entry (wall clock, Unix µs) per run of
/// `limited` or `per_key`, each in its own key: see [`limited_key`].
pub(crate) fn limited_key(ns: &str) -> String {
    format!("{{{ns}}}:e2e:limited")
}

/// The list with one `key start-µs end-µs` entry per run of `per_key`.
pub(crate) fn per_key_key(ns: &str) -> String {
    format!("{{{ns}}}:e2e:per-key")
}

/// Where the tasks record their runs.
struct Records {
    conn: dmq_redis::RedisConnection,
    runs: String,
    pids: String,
    starts: String,
    stamps: String,
    ticks: String,
    limited: String,
    per_key: String,
}

static RECORDS: OnceLock<Records> = OnceLock::new();

fn records() -> Result<&'static Records, TaskError> {
    RECORDS.get().ok_or_else(|| TaskError::msg("the run records are not set up"))
}

/// Records one run of job `ctx.id()` in this process, and returns `n * 2`.
#[task(name = "e2e.count", queue = "e2e-count")]
pub(crate) async fn count(n: u64, ctx: TaskContext) -> Result<u64, TaskError> {
    let records = records()?;
    let mut conn = records.conn.clone();
    let () = redis::pipe()
        .atomic()
        .cmd("HINCRBY")
        .arg(&records.runs)
        .arg(ctx.id().to_string())
        .arg(1)
        .ignore()
        .cmd("HINCRBY")
        .arg(&records.pids)
        .arg(std::process::id())
        .arg(1)
        .ignore()
        .query_async(&mut conn)
        .await?;
    Ok(n * 2)
}

/// Records that it started in this process, sleeps `ms` milliseconds, and returns
/// the pid of the process that ran it to the end.
#[task(name = "e2e.slow", queue = "e2e-slow")]
pub(crate) async fn slow(ms: u64, ctx: TaskContext) -> Result<u32, TaskError> {
    let records = records()?;
    let mut conn = records.conn.clone();
    let pid = std::process::id();
    let _: u64 = redis::cmd("RPUSH")
        .arg(&records.starts)
        .arg(format!("{} {pid}", ctx.id()))
        .query_async(&mut conn)
        .await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(pid)
}

/// A poison pill: records that it started in this process, then kills the process
/// (SIGABRT), as a segfaulting native library or an out-of-memory kill would.
#[task(name = "e2e.crash", queue = "e2e-poison")]
pub(crate) async fn crash(ctx: TaskContext) -> Result<(), TaskError> {
    let records = records()?;
    let mut conn = records.conn.clone();
    let _: u64 = redis::cmd("RPUSH")
        .arg(&records.starts)
        .arg(format!("{} {}", ctx.id(), std::process::id()))
        .query_async(&mut conn)
        .await?;
    std::process::abort()
}

/// Records that it started in this process, sleeps `ms` milliseconds, and returns a
/// stamp of this very run: `n`, the pid, and a random number, so that two runs of one
/// job store different results.
#[task(name = "e2e.stamp", queue = "e2e-stamp")]
pub(crate) async fn stamp(n: u64, ms: u64, ctx: TaskContext) -> Result<String, TaskError> {
    let records = records()?;
    let mut conn = records.conn.clone();
    let pid = std::process::id();
    let _: u64 = redis::cmd("RPUSH")
        .arg(&records.stamps)
        .arg(format!("{} {pid}", ctx.id()))
        .query_async(&mut conn)
        .await?;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(format!("{n}:{pid}:{}", uuid::Uuid::new_v4().simple()))
}

/// Fails its first attempt, asking to be retried after `ms` milliseconds, and
/// returns the attempt that succeeded.
#[task(name = "e2e.second_time", queue = "e2e-backoff", max_retries = 3)]
pub(crate) async fn second_time(ms: u64, ctx: TaskContext) -> Result<u32, TaskError> {
    if ctx.attempt() == 1 {
        let failure = std::io::Error::other("the first attempt fails");
        return Err(TaskError::retry_after(failure, Duration::from_millis(ms)));
    }
    Ok(ctx.attempt())
}

/// Records one run for the fire time its periodic schedule enqueued it for.
#[task(name = "e2e.tick", queue = "e2e-tick")]
pub(crate) async fn tick(ctx: TaskContext) -> Result<(), TaskError> {
    let records = records()?;
    let fire = ctx.headers().get(dmq_core::FIRE_TIME_HEADER).cloned().unwrap_or_default();
    let mut conn = records.conn.clone();
    let _: i64 =
        redis::cmd("HINCRBY").arg(&records.ticks).arg(fire).arg(1).query_async(&mut conn).await?;
    Ok(())
}

/// Returns `n * 3` after `ms` milliseconds; touches Redis only through dmq.
#[task(name = "e2e.triple", queue = "e2e-restart")]
pub(crate) async fn triple(n: i64, ms: u64) -> Result<i64, TaskError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(n * 3)
}

/// The wall clock in Unix microseconds: the processes of one test share a machine.
fn now_us() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros())
}

/// Starts at most 50 per second, 5 at once, across every worker: records when it ran.
#[task(name = "e2e.limited", queue = "e2e-limited", rate_limit = "50/s", burst = 5)]
pub(crate) async fn limited(n: u64, ctx: TaskContext) -> Result<u64, TaskError> {
    let started = now_us();
    let records = records()?;
    let mut conn = records.conn.clone();
    let entry = format!("{} {started} {}", ctx.id(), now_us());
    let _: u64 =
        redis::cmd("RPUSH").arg(&records.limited).arg(entry).query_async(&mut conn).await?;
    Ok(n)
}

/// At most 3 run at once per `key`, across every worker: sleeps `ms` and records when
/// it ran.
#[task(name = "e2e.per_key", queue = "e2e-per-key", concurrency = 3, concurrency_key = key)]
pub(crate) async fn per_key(key: String, ms: u64) -> Result<(), TaskError> {
    let started = now_us();
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let records = records()?;
    let mut conn = records.conn.clone();
    let entry = format!("{key} {started} {}", now_us());
    let _: u64 =
        redis::cmd("RPUSH").arg(&records.per_key).arg(entry).query_async(&mut conn).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let ns = &args.namespace;

    let conn = dmq_redis::RedisConnection::open(&args.redis).await?;
    let records = Records {
        conn,
        runs: runs_key(ns),
        pids: pids_key(ns),
        starts: starts_key(ns),
        stamps: stamps_key(ns),
        ticks: ticks_key(ns),
        limited: limited_key(ns),
        per_key: per_key_key(ns),
    };
    if RECORDS.set(records).is_err() {
        anyhow::bail!("the run records were set up twice");
    }

    let url = args.broker.as_deref().unwrap_or(&args.redis);
    let (broker, backend) = dmq_cli::connect_url(url, ns, Some(args.max_deliveries)).await?;
    let manager = Manager::builder().shared_broker(broker).shared_backend(backend).build()?;
    if let Some(ms) = args.tick_ms {
        let every = Schedule::every(Duration::from_millis(ms))?.named("e2e.tick");
        manager.periodic(tick::call(), every)?;
    }
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let worker = manager
        .worker()
        .queues(args.queues)
        .concurrency(args.concurrency)
        .lease(Duration::from_millis(args.lease_ms))
        .heartbeat(Duration::from_millis(args.heartbeat_ms))
        .grace(Duration::from_millis(args.grace_ms))
        .guarantee(args.guarantee)
        .start();

    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    let report = worker.shutdown().await;
    eprintln!("dmq-test-worker {}: stopped, {} jobs released", std::process::id(), report.released);
    Ok(())
}
