//! The documents are true for a producer in another language: `python/producer.py`,
//! written from docs/wire-format.md and docs/redis-layout.md alone, enqueues jobs into
//! Redis (task ids as text and as bytes, a struct argument, a priority, a delay), a
//! worker on `RedisBroker` and `RedisBackend` runs them, and the script reads their
//! results back as the documents say. It also picks partitions of a partitioned queue
//! by partition key (FNV-1a-64 mod N, as documented), and the jobs must be claimed from
//! the partition dmq's own `partition_of_key` names; and it enqueues two jobs behind a
//! gate of one start an hour, as documented, of which the worker must run one only. The same script runs against the
//! local Redis Cluster through redis-py's `RedisCluster`, waiting for results with
//! `SSUBSCRIBE` as the documents say a producer on a cluster must.
//!
//! The script needs Python 3 with `msgpack` and `redis`: `scripts/ensure-python`
//! installs them in a virtual environment and prints its interpreter, which
//! `scripts/test` passes in `DMQ_PYTHON`; without it this test runs that script itself.

mod common;
#[path = "common/python.rs"]
mod python;

use python::python;

use std::path::Path;
use std::process::Command;

use dmq_core::{Manager, TaskContext, TaskError, partition_name, partition_of_key, task};
use dmq_redis::{RedisBackend, RedisBroker};
use serde::{Deserialize, Serialize};

#[task(name = "py.add", queue = "py")]
async fn add(x: i64, y: i64) -> Result<i64, TaskError> {
    Ok(x + y)
}

#[task(name = "py.greet", queue = "py")]
async fn greet(name: String) -> Result<String, TaskError> {
    Ok(format!("hello, {name}"))
}

/// A struct argument: a map with its field names on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct Rect {
    width: u32,
    height: u32,
}

/// A struct result: stored as a map with its field names.
#[derive(Debug, Serialize, Deserialize)]
struct Area {
    area: u32,
    unit: String,
}

#[task(name = "py.area", queue = "py")]
async fn area(rect: Rect) -> Result<Area, TaskError> {
    Ok(Area { area: rect.width * rect.height, unit: "px²".to_owned() })
}

#[task(name = "py.divide", queue = "py")]
async fn divide(a: i64, b: i64) -> Result<i64, TaskError> {
    if b == 0 {
        return Err(TaskError::fatal("division by zero"));
    }
    Ok(a / b)
}

/// Returns the queue it was claimed from: the partition its producer chose.
#[task(name = "pyp.where", queue = "pyp", partitions = 4)]
async fn where_claimed(ctx: TaskContext, key: String) -> Result<String, TaskError> {
    let _ = key;
    Ok(ctx.queue().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_producer_following_the_documents_gets_its_results() {
    let url = common::redis_url();
    produce_from_python(&url, std::slice::from_ref(&url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_producer_following_the_documents_gets_its_results_on_a_cluster() {
    let url = common::cluster_url();
    let nodes = url.strip_prefix("redis+cluster://").expect("a redis+cluster:// URL").to_owned();
    produce_from_python(&url, &["--cluster".to_owned(), nodes]).await;
}

/// Runs `python/producer.py` with `connect` (how it reaches Redis) against a worker on
/// `url`, and checks every line it prints.
async fn produce_from_python(url: &str, connect: &[String]) {
    let namespace = common::fresh_namespace();
    let _cleanup = common::Cleanup::at(url, &namespace);
    let hint =
        "connect to redis (scripts/ensure-redis and scripts/ensure-redis-cluster start them)";
    let broker = RedisBroker::connect_with_namespace(url, &namespace).await.expect(hint);
    let backend = RedisBackend::connect_with_namespace(url, &namespace).await.expect(hint);
    let manager = Manager::builder().broker(broker).backend(backend).build().expect("manager");
    let worker = manager.worker().queues(["py", "pyp", "pyg"]).start();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/producer.py");
    let mut args = vec![script.into_os_string()];
    args.extend(connect.iter().map(Into::into));
    args.push(namespace.into());
    let python = python();
    let ran = tokio::task::spawn_blocking(move || Command::new(&python).args(args).output())
        .await
        .expect("the script's thread")
        .expect("run the Python producer");
    let stdout = String::from_utf8_lossy(&ran.stdout);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    let dead =
        manager.admin().expect("admin").dead_letters("py", 0, 10).await.expect("dead letters");
    // Of the two jobs behind a gate of one start an hour, one ran and one waits.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let gated = loop {
        let stats = manager.admin().expect("admin").queue_stats("pyg").await.expect("figures");
        if (stats.ready, stats.gated, stats.in_flight) == (1, 1, 0)
            || std::time::Instant::now() > deadline
        {
            break stats;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let dead: Vec<_> = dead.iter().map(|d| d.reason.clone()).collect();
    worker.shutdown().await;

    let said = format!("stdout:\n{stdout}\nstderr:\n{stderr}\ndead letters: {dead:?}");
    assert!(ran.status.success(), "the Python producer failed ({}): {said}", ran.status);
    let keys = ["alice", "bob", "carol"];
    let partition = |key: &str| partition_name("pyp", partition_of_key(key, 4));
    let mut expected: Vec<String> =
        keys.iter().map(|key| format!("partition {key} {}", partition(key))).collect();
    expected.extend(
        [
            "add succeeded 5",
            "add-negative succeeded -42",
            r#"greet-urgent succeeded "hello, Ada""#,
            r#"area-of-a-struct succeeded {"area": 12, "unit": "px\u00b2"}"#,
            "add-delayed succeeded 42",
            "add-delayed started after its eta",
            "add-id-as-bytes succeeded 2",
            "divide-by-zero failed fatal: division by zero",
        ]
        .map(str::to_owned),
    );
    expected
        .extend(keys.iter().map(|key| format!(r#"where-{key} succeeded "{}""#, partition(key))));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, expected, "{said}");
    // The fatal failure is the only dead letter.
    assert_eq!(dead.len(), 1, "{said}");
    assert_eq!((gated.ready, gated.gated, gated.in_flight), (1, 1, 0), "{gated:?}; {said}");
}
