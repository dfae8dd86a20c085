//! Flow control end to end, with real processes: `dmq pause` stops worker processes
//! from starting a queue's jobs while enqueues still land and the jobs already running
//! finish, `dmq queues` shows the pause, and `dmq resume` starts the waiting jobs, on
//! Redis and on PostgreSQL.
//!
//! Needs Redis at `REDIS_URL` (default redis://127.0.0.1:6379), which also holds the
//! workers' run records, and PostgreSQL at `DMQ_POSTGRES_URL` (default
//! postgres://postgres@127.0.0.1:5432/test; `scripts/ensure-postgres` starts one). Each
//! test works in a namespace (and schema) of its own, removed when it ends.

use std::time::Duration;

use dmq_redis::RedisConnection;
use serde_json::Value;

mod common;

use common::schema::Schema;
use common::workers::{Settings, poll};

/// The worker binary's own source: the tests enqueue its very tasks and read the keys
/// it writes, so the two cannot drift apart.
#[allow(dead_code)]
#[path = "bin/test_worker.rs"]
mod test_worker;

use test_worker::{stamp, stamps_key};

/// The ids of the `stamp` jobs that started, in the order they started.
async fn started(schema: &Schema) -> Vec<String> {
    let mut conn = RedisConnection::open(&schema.redis).await.expect("connect to redis");
    let entries: Vec<String> = redis::cmd("LRANGE")
        .arg(stamps_key(&schema.name))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("read the run records");
    entries.iter().filter_map(|e| e.split_once(' ')).map(|(id, _)| id.to_owned()).collect()
}

/// Enqueues a `stamp` job that sleeps `ms` for each of `numbers`, with `dmq enqueue`
/// processes run side by side; returns their ids.
async fn enqueue_stamps(schema: &Schema, numbers: std::ops::Range<u64>, ms: u64) -> Vec<String> {
    let runs = numbers.map(|n| async move {
        let args = format!("[{n}, {ms}]");
        let out = schema.json(&["enqueue", stamp::NAME, &args, "--queue", stamp::QUEUE]).await;
        out["id"].as_str().expect("an id").to_owned()
    });
    futures::future::join_all(runs).await
}

/// `dmq queues QUEUE --json`'s one row.
async fn row(schema: &Schema, queue: &str) -> Value {
    let listed = schema.json(&["queues", queue]).await;
    listed.as_array().and_then(|rows| rows.first()).cloned().expect("a row for the queue")
}

/// Asserts that job `id` succeeded, waiting for its result.
async fn succeeds(schema: &Schema, id: &str) {
    let result = schema.json(&["result", id, "--wait", "60s"]).await;
    assert_eq!(result["state"], "succeeded", "job {id}: {result}");
}

async fn pause_and_resume_as_processes(schema: Schema) {
    let queue = stamp::QUEUE;
    let settings = Settings {
        queue,
        concurrency: 4,
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_millis(500),
    };
    let mut workers = [schema.worker(settings, &[]), schema.worker(settings, &[])];
    poll("dmq workers to list both workers", || async {
        let listed = schema.json(&["workers"]).await;
        (listed.as_array()?.len() == 2).then_some(())
    })
    .await;

    // Four jobs that take three seconds start, and run to their end through the pause.
    let running = enqueue_stamps(&schema, 0..4, 3_000).await;
    poll("the long jobs to start", || async { (started(&schema).await.len() == 4).then_some(()) })
        .await;
    let paused = schema.json(&["pause", queue]).await;
    assert_eq!((&paused["paused"], &paused["changed"]), (&Value::Bool(true), &Value::Bool(true)));
    let again = schema.ok(&["pause", queue]).await;
    assert!(again.contains("paused already"), "{again}");
    // Enqueues land; the four free slots take none of them.
    let waiting = enqueue_stamps(&schema, 4..10, 10).await;
    for id in &running {
        succeeds(&schema, id).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ran = started(&schema).await;
    ran.sort();
    let mut running = running;
    running.sort();
    assert_eq!(ran, running, "only the jobs started before the pause ran");
    let listed = row(&schema, queue).await;
    assert_eq!((&listed["ready"], &listed["paused"]), (&Value::from(6), &Value::Bool(true)));
    assert!(listed["paused_since"].is_string(), "{listed}");
    let table = schema.ok(&["queues", queue]).await;
    let header = table.lines().next().unwrap_or_default();
    assert!(header.trim_end().ends_with("PAUSED"), "{table}");
    let line = table.lines().find(|l| l.starts_with(queue)).unwrap_or_default();
    assert!(line.trim_end().ends_with("yes"), "{table}");

    let resumed = schema.json(&["resume", queue]).await;
    assert_eq!(
        (&resumed["paused"], &resumed["changed"]),
        (&Value::Bool(false), &Value::Bool(true))
    );
    for id in &waiting {
        succeeds(&schema, id).await;
    }
    assert_eq!(started(&schema).await.len(), 10, "each job ran once");
    assert_eq!(row(&schema, queue).await["paused"], false);
    let again = schema.ok(&["resume", queue]).await;
    assert!(again.contains("was not paused"), "{again}");
    for worker in &mut workers {
        assert!(worker.terminate().await.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_as_processes_on_redis() {
    pause_and_resume_as_processes(Schema::fresh_on_redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_as_processes_on_postgres() {
    pause_and_resume_as_processes(Schema::fresh()).await;
}
