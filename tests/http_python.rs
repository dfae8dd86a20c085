//! dmq over HTTP from Python: `dmq serve` (a process, with a tokens file) in front of
//! Redis, a Rust worker process (`dmq-test-worker`) on queue A, and
//! `python/http_roundtrip.py`, which uses the Python client
//! (clients/python/dmq_client.py) to
//!
//! - enqueue jobs of the Rust task `e2e.count` on queue A (one by one and in a batch)
//!   and wait for each result over HTTP;
//! - consume queue B, which no Rust worker serves, with a token limited to it: claim,
//!   renew, release, ack, nack without retry, and the `run` loop (ack on return, nack
//!   on exception), then read each job's outcome over HTTP;
//! - see what the tokens may not do refused: 403 for the consumer on queue A, for the
//!   producer claiming, for the consumer enqueueing; 401 without a token or with an
//!   unknown one; 409 for a settled lease.
//!
//! The test checks every line the script prints, and checks in Redis itself (through
//! `RedisBackend`, `BrokerAdmin` and the worker's run records) that the results,
//! failures and dead letters the script saw over HTTP are stored there.
//!
//! The script needs Python 3 with `requests`: `scripts/ensure-python` installs it in
//! a virtual environment and prints its interpreter, which `scripts/test` passes in
//! `DMQ_PYTHON`; without it this test runs that script itself. The test works in a
//! namespace of its own, removed at the end; its processes are killed, passed or failed.

mod common;
mod http_common;

/// The worker binary's own source, for the key its `count` task records runs under.
#[allow(dead_code)]
#[path = "bin/test_worker.rs"]
mod test_worker;

use std::collections::BTreeMap;
use std::process::Command;

use common::Backing;
use dmq_core::{FailureKind, TaskId, TaskState};
use http_common::{Scratch, python, repo_root, serve, worker};

/// The queue the Rust worker serves.
const QUEUE_A: &str = "http-a";
/// The queue the Python script consumes.
const QUEUE_B: &str = "http-b";
/// How many jobs go to queue A.
const JOBS: u64 = 20;

#[test]
fn a_python_client_produces_for_rust_workers_and_consumes_over_http() {
    common::run_on_redis(roundtrip);
}

async fn roundtrip(backing: Backing) {
    let Backing::Redis { namespace } = &backing else { unreachable!("run_on_redis") };
    let url = common::redis_url();
    let scratch = Scratch::new();
    let producer_token = format!("producer-{}", uuid::Uuid::new_v4().simple());
    let consumer_token = format!("consumer-{}", uuid::Uuid::new_v4().simple());
    let tokens = format!(
        r#"{{"tokens": [
            {{"name": "producer", "token": "{producer_token}", "scopes": ["produce"]}},
            {{"name": "consumer", "token": "{consumer_token}", "scopes": ["consume"],
              "queues": ["{QUEUE_B}"]}}
        ]}}"#
    );
    let tokens_file = scratch.0.join("tokens.json");
    std::fs::write(&tokens_file, tokens).expect("write the tokens file");

    let (server, base) = serve(
        &scratch.0,
        &url,
        namespace,
        &["--tokens".to_owned(), tokens_file.display().to_string()],
    );
    let rust_worker = worker(&scratch.0, &url, namespace, QUEUE_A);

    let root = repo_root();
    let mut script = Command::new(python());
    script
        .arg(root.join("tests/python/http_roundtrip.py"))
        .env("PYTHONPATH", root.join("clients/python"))
        .env("DMQ_URL", &base)
        .env("DMQ_PRODUCER_TOKEN", &producer_token)
        .env("DMQ_CONSUMER_TOKEN", &consumer_token)
        .env("DMQ_QUEUE_A", QUEUE_A)
        .env("DMQ_QUEUE_B", QUEUE_B)
        .env("DMQ_JOBS", JOBS.to_string());
    let ran = tokio::task::spawn_blocking(move || script.output())
        .await
        .expect("the script's thread")
        .expect("run python/http_roundtrip.py");
    let stdout = String::from_utf8_lossy(&ran.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&ran.stderr).into_owned();
    let said = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(ran.status.success(), "the Python script failed ({}): {said}", ran.status);

    // What the script printed, by kind of line.
    let mut lines: BTreeMap<&str, Vec<Vec<&str>>> = BTreeMap::new();
    for line in stdout.lines() {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        lines.entry(kind).or_default().push(rest.splitn(3, ' ').collect());
    }
    let kinds: Vec<&str> = lines.keys().copied().collect();
    assert_eq!(kinds, ["acked", "count", "failed", "refused"], "{said}");

    // (c) What the tokens may not do, in the order the script tried.
    let refused: Vec<String> = lines["refused"].iter().map(|l| l.join(" ")).collect();
    assert_eq!(
        refused,
        [
            "second-ack 409 lease_lost",
            "consumer-claims-queue-a 403 forbidden",
            "producer-claims 403 forbidden",
            "consumer-enqueues 403 forbidden",
            "no-token 401 unauthorized",
            "unknown-token 401 unauthorized",
        ],
        "{said}"
    );

    let manager = backing.manager().await;
    let backend = manager.backend();
    let id = |text: &str| -> TaskId { text.parse().expect("a job id") };
    let mut redis = dmq_redis::RedisConnection::open(&url).await.expect("connect to redis");

    // (a) Each job of queue A: its value over HTTP is n * 2, the Rust worker ran it (its
    // run record), and Redis holds its result.
    let counted = &lines["count"];
    assert_eq!(counted.len(), JOBS as usize, "{said}");
    for (n, line) in (0..JOBS).zip(counted) {
        let [job, arg, value] = line[..] else { panic!("a count line: {line:?}") };
        assert_eq!((arg, value), (n.to_string().as_str(), (n * 2).to_string().as_str()));
        let outcome = backend.get(id(job)).await.expect("read a result").expect("a result");
        assert_eq!(outcome.state, TaskState::Succeeded);
        let stored: u64 =
            rmp_serde::from_slice(outcome.value.as_deref().expect("a value")).expect("a u64");
        assert_eq!(stored, n * 2, "job {job}");
        let runs: Option<u64> = redis::cmd("HGET")
            .arg(test_worker::runs_key(namespace))
            .arg(job)
            .query_async(&mut redis)
            .await
            .expect("read the run records");
        assert!(runs.is_some_and(|r| r >= 1), "the Rust worker has no run of job {job}");
    }

    // (b) Queue B's acked jobs hold the values the script acked with.
    let mut acked: Vec<(&str, &str)> = lines["acked"].iter().map(|l| (l[0], l[1])).collect();
    acked.sort_by_key(|&(_, value)| value);
    let values: Vec<&str> = acked.iter().map(|&(_, value)| value).collect();
    assert_eq!(values, ["ADA", "BOB"], "{said}");
    for (job, value) in acked {
        let outcome = backend.get(id(job)).await.expect("read a result").expect("a result");
        assert_eq!(outcome.state, TaskState::Succeeded, "job {job}");
        let stored: String =
            rmp_serde::from_slice(outcome.value.as_deref().expect("a value")).expect("a string");
        assert_eq!(stored, value, "job {job}");
    }

    // ... and its failed jobs are failed in the backend and dead-lettered in the broker.
    let failed: Vec<Vec<&str>> = lines["failed"].clone();
    let kinds: Vec<(&str, &str)> = failed.iter().map(|l| (l[1], l[2])).collect();
    assert_eq!(
        kinds,
        [("fatal", "no such mailbox"), ("error", "ValueError: nothing to shout")],
        "{said}"
    );
    let dead = common::letter_ids(&manager, QUEUE_B, 0, 10).await;
    for (line, kind) in failed.iter().zip([FailureKind::Fatal, FailureKind::Error]) {
        let job = id(line[0]);
        let outcome = backend.get(job).await.expect("read a result").expect("a result");
        assert_eq!(outcome.state, TaskState::Failed, "job {job}");
        let failure = outcome.failure.expect("a failure");
        assert_eq!((failure.kind, failure.message.as_str()), (kind, line[2]), "job {job}");
        assert!(dead.contains(&job), "job {job} is not among the dead letters {dead:?}");
    }
    assert_eq!(dead.len(), 2, "{dead:?}");

    // Nothing is left waiting or held, and queue A dead-lettered nothing.
    assert_eq!(common::queue_counts(&manager, QUEUE_A).await, (0, 0, 0, 0));
    assert_eq!(common::queue_counts(&manager, QUEUE_B).await, (0, 0, 0, 2));

    // The server and the worker are still up (they served to the end).
    drop((rust_worker, server));
}
