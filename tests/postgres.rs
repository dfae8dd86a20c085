//! End to end on PostgreSQL, with real processes: worker processes
//! (`dmq-test-worker --broker postgres://...`, started, stopped with SIGTERM and
//! killed with SIGKILL) drain thousands of jobs running each once, lose none through a
//! storm of SIGKILLs, take back a job whose process was killed mid-run while the dead
//! process's lease stays fenced off, and dead-letter rows that dmq did not write beside
//! good jobs; and the `dmq` admin commands and `dmq migrate` run as processes on a
//! postgres:// URL.
//!
//! Needs PostgreSQL at `DMQ_POSTGRES_URL` (default
//! postgres://postgres@127.0.0.1:5432/test; `scripts/ensure-postgres` starts one) and
//! Redis at `REDIS_URL` (default redis://127.0.0.1:6379), where the workers record their
//! runs, as in `processes.rs`: records kept apart from the broker under test. Each
//! test works in a fresh schema `dmq_test_<16 hex>`, dropped with its run records when
//! the test ends, passed or failed; every child process is killed when its guard drops.
//! The tests take turns: a worker process holds up to two pools of ten connections
//! (broker and results) and PostgreSQL serves 100 by default.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::Duration;

use dmq_core::{
    Broker, BrokerAdmin, Envelope, Error, FailureKind, JobState, Lease, Manager, TaskId, TaskState,
    WorkerRegistry,
};
use dmq_postgres::{PostgresBackend, PostgresBroker};
use dmq_redis::RedisConnection;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;
use sqlx::Row;

mod common;

use common::redis_url;
use common::schema::{Schema, postgres_url};
use common::workers::{
    Settings, WAIT, WorkerProcess, poll, registered, resume_and_see_the_fence_hold, signal, storm,
};

/// The worker binary's own source: the tests enqueue its very tasks and read the keys
/// it writes, so the two cannot drift apart.
#[allow(dead_code)]
#[path = "bin/test_worker.rs"]
mod test_worker;

use test_worker::{count, pids_key, runs_key, slow, stamp, stamps_key, starts_key};

/// One test at a time (see the module's documentation).
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The broker (for its pool, to read and write the schema's tables) with a small pool,
/// and a manager on it and a PostgreSQL result backend.
async fn connect(schema: &Schema) -> (Arc<PostgresBroker>, Manager) {
    let hint = "connect to PostgreSQL (scripts/ensure-postgres starts one)";
    let broker =
        PostgresBroker::connect_sized(&schema.postgres, &schema.name, 4).await.expect(hint);
    let broker = Arc::new(broker);
    let backend =
        PostgresBackend::connect_with_namespace(&schema.postgres, &schema.name).await.expect(hint);
    let manager =
        Manager::builder().shared_broker(broker.clone()).backend(backend).build().expect("manager");
    (broker, manager)
}

/// A connection for reading the workers' run records.
async fn records_conn() -> RedisConnection {
    RedisConnection::open(&redis_url()).await.expect("connect to redis")
}

/// The `task-id pid` entries a list of run records holds, in the order written.
async fn entries(key: String) -> Vec<String> {
    let mut conn = records_conn().await;
    redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("read the run records")
}

/// The pids of each `stamp` job's runs, by task id, in the order they started.
async fn stamped_runs(ns: &str) -> HashMap<String, Vec<u32>> {
    let mut runs: HashMap<String, Vec<u32>> = HashMap::new();
    for entry in entries(stamps_key(ns)).await {
        let (id, pid) = entry.split_once(' ').expect("`id pid`");
        runs.entry(id.to_owned()).or_default().push(pid.parse().expect("a pid"));
    }
    runs
}

/// Asserts that `queue` holds nothing, waiting, running or dead.
async fn assert_empty(broker: &PostgresBroker, queue: &str) {
    let stats = broker.queue_stats(queue).await.expect("queue stats");
    assert_eq!(
        (stats.ready, stats.delayed, stats.in_flight, stats.dead),
        (0, 0, 0, 0),
        "{queue}: {stats:?}"
    );
}

const JOBS: u64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_drain_three_thousand_jobs_each_run_exactly_once() {
    let _turn = TURN.lock().await;
    let schema = Schema::fresh();
    let (broker, manager) = connect(&schema).await;
    let settings = Settings {
        queue: count::QUEUE,
        concurrency: 8,
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_secs(1),
    };
    let mut workers: Vec<WorkerProcess> = (0..3).map(|_| schema.worker(settings, &[])).collect();
    registered(&manager, &workers).await;

    let mut ids = Vec::new();
    for first in (0..JOBS).step_by(500) {
        let batch = (first..first + 500).map(count::call);
        ids.extend(manager.enqueue_batch(batch).await.expect("enqueue a batch"));
    }
    let values: Vec<u64> = futures::stream::iter(&ids)
        .map(|id| {
            let result = manager.result::<u64>(*id);
            async move { result.wait(WAIT).await }
        })
        .buffered(32)
        .try_collect()
        .await
        .expect("every job's result");
    for (n, value) in (0..JOBS).zip(values) {
        assert_eq!(value, n * 2, "the result of job {n}");
    }

    for worker in &mut workers {
        assert!(worker.is_running(), "worker {} exited before it was told to", worker.pid);
    }
    for worker in &mut workers {
        let status = worker.terminate().await;
        assert!(status.success(), "worker {} exited with {status} after SIGTERM", worker.pid);
    }

    // The workers are gone: no run can still be on its way.
    let mut conn = records_conn().await;
    let runs: HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(runs_key(&schema.name))
        .query_async(&mut conn)
        .await
        .expect("read the run counts");
    assert_eq!(runs.len(), ids.len(), "jobs that ran at least once");
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(runs.get(&id.to_string()), Some(&1), "runs of job {n} ({id})");
    }
    let by_pid: HashMap<u32, u64> = redis::cmd("HGETALL")
        .arg(pids_key(&schema.name))
        .query_async(&mut conn)
        .await
        .expect("read the runs per process");
    eprintln!("jobs run per worker process: {by_pid:?}");
    assert_eq!(by_pid.values().sum::<u64>(), JOBS);
    let pids: HashSet<u32> = workers.iter().map(|w| w.pid).collect();
    assert!(by_pid.keys().all(|pid| pids.contains(pid)), "runs by unknown processes");
    assert!(by_pid.len() > 1, "only one process did any work: {by_pid:?}");

    assert_empty(&broker, count::QUEUE).await;
    let left = broker.workers().await.expect("workers");
    assert!(left.is_empty(), "left registered: {left:?}");
}

const STORM_JOBS: u64 = 2_500;

/// The fault test: 2,500 jobs, three worker processes, one of them killed with SIGKILL
/// every 750 ms for 8 s and a fresh one started in its place. No job is lost; every job
/// that ran more than once ran on a killed worker every time but its last; no stored
/// result ever changes once seen (a watcher reads them all the while), though every run
/// of a job returns a different value; and the queue ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_storm_loses_no_job_and_changes_no_stored_result() {
    let _turn = TURN.lock().await;
    let schema = Schema::fresh();
    let (broker, manager) = connect(&schema).await;
    let settings = Settings {
        queue: stamp::QUEUE,
        concurrency: 8,
        lease: Duration::from_secs(5),
        heartbeat: Duration::from_millis(200),
    };
    // No poison limit: a good job whose worker is killed while it runs alone is still
    // a good job.
    let extra = ["--max-deliveries", "0"];
    let mut workers: Vec<WorkerProcess> = (0..3).map(|_| schema.worker(settings, &extra)).collect();
    registered(&manager, &workers).await;
    let calls = (0..STORM_JOBS).map(|n| stamp::call(n, 50 + (n * 7919) % 100));
    let ids = manager.enqueue_batch(calls).await.expect("enqueue");

    // The watcher: the first outcome seen for each job must never change.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let pool = broker.pool().clone();
        let read = format!("SELECT id, outcome FROM \"{}\".results", schema.name);
        let watching = Arc::clone(&watching);
        tokio::spawn(async move {
            let mut seen: HashMap<uuid::Uuid, Vec<u8>> = HashMap::new();
            let mut changed = HashSet::new();
            loop {
                let last = !watching.load(std::sync::atomic::Ordering::SeqCst);
                let rows = sqlx::query(sqlx::AssertSqlSafe(read.as_str()))
                    .fetch_all(&pool)
                    .await
                    .expect("read the stored results");
                for row in rows {
                    let id: uuid::Uuid = row.get("id");
                    let outcome: Vec<u8> = row.get("outcome");
                    match seen.get(&id) {
                        Some(first) if *first != outcome => {
                            changed.insert(id);
                        }
                        Some(_) => {}
                        None => {
                            seen.insert(id, outcome);
                        }
                    }
                }
                if last {
                    return (seen.len(), changed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let killed = storm(&mut workers, Duration::from_secs(8), Duration::from_millis(750), || {
        schema.worker(settings, &extra)
    })
    .await;
    // About ten rounds; fewer on a machine too busy to keep time, but a storm still.
    assert!(killed.len() >= 5, "the storm killed {} workers", killed.len());

    let mut results = HashMap::new();
    for (n, id) in ids.iter().enumerate() {
        let value = manager.result::<String>(*id).wait(WAIT).await.unwrap_or_else(|e| {
            panic!(
                "job {n} ({id}) was lost: {e}; queue {:?}",
                futures::executor::block_on(broker.queue_stats(stamp::QUEUE))
            )
        });
        assert!(value.starts_with(&format!("{n}:")), "job {n} stored {value}");
        results.insert(*id, value);
    }
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    let (watched, changed) = watcher.await.expect("the watcher");
    assert!(changed.is_empty(), "stored results changed after they were seen: {changed:?}");
    assert_eq!(watched, STORM_JOBS as usize, "the watcher saw every result");
    assert_empty(&broker, stamp::QUEUE).await;

    // Every run but a job's last was on a killed worker, and the stored result is the
    // one a run of that job returned.
    let runs = stamped_runs(&schema.name).await;
    let mut repeated = 0;
    for (id, value) in &results {
        let pids = runs.get(&id.to_string()).map(Vec::as_slice).unwrap_or_default();
        assert!(!pids.is_empty(), "job {id} stored {value} without a recorded run");
        let survivors = pids.iter().filter(|pid| !killed.contains(pid)).count();
        assert!(survivors <= 1, "job {id} ran more than once on workers never killed: {pids:?}");
        let writer: u32 = value.split(':').nth(1).and_then(|p| p.parse().ok()).expect("a pid");
        assert!(pids.contains(&writer), "job {id}'s result came from a run it never had");
        repeated += usize::from(pids.len() > 1);
    }
    eprintln!(
        "postgres storm: {} workers killed, {repeated} of {STORM_JOBS} jobs ran more than once",
        killed.len()
    );
    for worker in &mut workers {
        let status = worker.terminate().await;
        assert!(status.success(), "a worker exited with {status} after SIGTERM");
    }
}

/// The lease of `id` in `queue` as the jobs table holds it while the job runs.
async fn lease_in_table(broker: &PostgresBroker, queue: &str, id: TaskId) -> Option<Lease> {
    let sql = format!(
        "SELECT token, fence FROM \"{}\".jobs WHERE queue = $1 AND id = $2 AND state = 'running'",
        broker.schema()
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(queue)
        .bind(id.as_uuid())
        .fetch_optional(broker.pool())
        .await
        .expect("read the job's lease")?;
    let fence: i64 = row.get("fence");
    Some(Lease {
        id,
        queue: queue.to_owned(),
        token: row.get("token"),
        fence: u64::try_from(fence).expect("a fence is positive"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_mid_run_is_run_again_by_another_process_and_the_dead_lease_is_fenced() {
    let _turn = TURN.lock().await;
    let schema = Schema::fresh();
    let (broker, manager) = connect(&schema).await;
    let settings = Settings {
        queue: slow::QUEUE,
        concurrency: 1,
        lease: Duration::from_secs(2),
        heartbeat: Duration::from_millis(200),
    };
    let mut first = schema.worker(settings, &[]);
    registered(&manager, std::slice::from_ref(&first)).await;

    // Long enough that the first process is surely mid-run when it is killed, right
    // after it recorded the start.
    let handle = slow::call(3_000).enqueue(&manager).await.expect("enqueue");
    let id = handle.id();
    poll("the first process to start the job", || async {
        (!entries(starts_key(&schema.name)).await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(entries(starts_key(&schema.name)).await, [format!("{id} {}", first.pid)]);
    let dead = lease_in_table(&broker, slow::QUEUE, id)
        .await
        .expect("the first process holds a lease on the job it runs");

    let status = first.kill().await;
    assert_eq!(status.signal(), Some(9), "the first process ended otherwise than by SIGKILL");
    let mut second = schema.worker(settings, &[]);

    // Taken back (the lease or the heartbeat lapsed) and claimed anew, under a later
    // fence; the dead lease settles nothing while the second process runs the job.
    let taken = poll("another process to claim the job", || async {
        lease_in_table(&broker, slow::QUEUE, id).await.filter(|l| l.token != dead.token)
    })
    .await;
    assert!(taken.fence > dead.fence, "fences {} then {}", dead.fence, taken.fence);
    for (what, settled) in [
        ("ack", broker.ack(&dead).await),
        ("renew", broker.renew(&dead, Duration::from_secs(60)).await),
        ("release", broker.release(&dead).await),
        ("dead-letter", broker.dead_letter(&dead, "late").await),
    ] {
        match settled {
            Err(Error::LeaseLost { id: lost }) => assert_eq!(lost, id),
            other => panic!("the killed process's lease could still {what} the job: {other:?}"),
        }
    }
    let still = lease_in_table(&broker, slow::QUEUE, id).await;
    assert_eq!(still.map(|l| l.token), Some(taken.token), "the late calls changed the lease");

    let finished_by = handle.result(WAIT).await.expect("the job's result");
    assert_eq!(finished_by, second.pid, "the job was finished by another than the second");
    assert_eq!(
        entries(starts_key(&schema.name)).await,
        [format!("{id} {}", first.pid), format!("{id} {}", second.pid)],
        "the job's runs"
    );
    match broker.ack(&dead).await {
        Err(Error::LeaseLost { id: lost }) => assert_eq!(lost, id),
        other => panic!("the killed process's lease acknowledged the finished job: {other:?}"),
    }
    let stored = manager.result::<u32>(id).get().await.expect("read the result");
    assert_eq!(stored, Some(second.pid), "the late ack changed the stored result");

    let status = second.terminate().await;
    assert!(status.success(), "the second process exited with {status} after SIGTERM");
    assert_empty(&broker, slow::QUEUE).await;
}

/// Inserts a job row straight into the schema's `jobs` table, as another program
/// might, with `payload` as its envelope; returns its id.
async fn insert_raw(broker: &PostgresBroker, queue: &str, payload: &[u8]) -> TaskId {
    let id = uuid::Uuid::new_v4();
    let sql = format!(
        "INSERT INTO \"{}\".jobs (queue, id, state, priority, payload) \
         VALUES ($1, $2, 'ready', 5, $3)",
        broker.schema()
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(queue)
        .bind(id)
        .bind(payload)
        .execute(broker.pool())
        .await
        .expect("insert a row dmq did not write");
    TaskId::from(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_dmq_did_not_write_are_dead_lettered_beside_good_jobs_and_the_worker_carries_on() {
    let _turn = TURN.lock().await;
    let schema = Schema::fresh();
    let (broker, manager) = connect(&schema).await;
    let settings = Settings {
        queue: count::QUEUE,
        concurrency: 4,
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_millis(500),
    };
    let mut worker = schema.worker(settings, &[]);
    registered(&manager, std::slice::from_ref(&worker)).await;

    let mut good =
        manager.enqueue_batch((0..10).map(count::call)).await.expect("enqueue good jobs");
    // Not MessagePack at all; MessagePack that is no envelope; and a real envelope of
    // another job (its id is not the row's).
    let other = Envelope::new(count::NAME, count::QUEUE, rmp_serde::to_vec(&(7u64,)).unwrap());
    let bad = [
        insert_raw(&broker, count::QUEUE, &[0xde, 0xad, 0xbe, 0xef]).await,
        insert_raw(&broker, count::QUEUE, &rmp_serde::to_vec(&("hello", 3)).unwrap()).await,
        insert_raw(&broker, count::QUEUE, &other.encode(1 << 20).expect("encode")).await,
    ];
    good.extend(manager.enqueue_batch((10..20).map(count::call)).await.expect("enqueue more"));

    for (n, id) in good.iter().enumerate() {
        let value = manager.result::<u64>(*id).wait(WAIT).await.expect("a good job's result");
        assert_eq!(value, n as u64 * 2, "the result of good job {n}");
    }
    let letters = poll("the bad rows to be dead-lettered", || async {
        let letters = broker.dead_letters(count::QUEUE, 0, 10).await.ok()?;
        (letters.len() == bad.len()).then_some(letters)
    })
    .await;
    let buried: HashSet<TaskId> = letters.iter().map(|l| l.id).collect();
    assert_eq!(buried, bad.iter().copied().collect(), "the dead letters");
    for letter in &letters {
        assert!(letter.reason.starts_with("undecodable: "), "{}", letter.reason);
    }
    for id in bad {
        let found = broker.find_job(id, &[]).await.expect("find").expect("a dead letter");
        assert_eq!(found.state, JobState::DeadLettered);
        let outcome = manager.backend().get(id).await.expect("read").expect("a stored failure");
        assert_eq!(outcome.state, TaskState::Failed);
        assert_eq!(outcome.failure.map(|f| f.kind), Some(FailureKind::Undecodable));
    }
    // The operator sees one as a job whose envelope does not decode.
    let shown = schema.json(&["job", &bad[0].to_string()]).await;
    assert_eq!(shown["state"], "dead-lettered", "{shown}");
    assert!(shown["task"].is_null(), "{shown}");

    // The worker carries on.
    assert!(worker.is_running(), "the worker stopped");
    let after = count::call(21).enqueue(&manager).await.expect("enqueue");
    assert_eq!(after.result(WAIT).await.expect("a job after the bad rows"), 42);
    let mut conn = records_conn().await;
    let runs: HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(runs_key(&schema.name))
        .query_async(&mut conn)
        .await
        .expect("read the run counts");
    assert_eq!(runs.len(), good.len() + 1, "{runs:?}");
    assert!(runs.values().all(|&n| n == 1), "{runs:?}");
    let status = worker.terminate().await;
    assert!(status.success(), "the worker exited with {status} after SIGTERM");
    let stats = broker.queue_stats(count::QUEUE).await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.dead), (0, 0, 3), "{stats:?}");
}

/// The events `dmq events --from-start` prints, once `done` holds for them.
async fn events_until(schema: &Schema, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    poll("the events to reach the stream", || async {
        let out = schema.ok(&["events", "--from-start", "--json", "--for", "1s"]).await;
        let events: Vec<Value> = out
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON event per line"))
            .collect();
        done(&events).then_some(events)
    })
    .await
}

/// The kinds of `id`'s events.
fn kinds_of(events: &[Value], id: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["id"] == id)
        .map(|e| e["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_commands_and_migrate_run_as_processes_on_a_postgres_url() {
    let _turn = TURN.lock().await;
    let schema = Schema::fresh();
    let queue = count::QUEUE;

    // dmq migrate: makes the schema, again changes nothing, and refuses what it cannot do.
    let said = schema.ok(&["migrate"]).await;
    assert!(said.contains(&format!("schema {:?}", schema.name)), "{said}");
    assert!(said.contains("serves as a broker"), "{said}");
    let again = schema.json(&["migrate"]).await;
    assert_eq!(
        (again["schema"].as_str(), again["serves"].as_str()),
        (Some(&*schema.name), Some("broker"))
    );
    let error = schema.fails(&["migrate", "--outbox"]).await;
    assert!(error.contains("cannot serve as \"outbox\""), "{error}");
    assert!(error.contains("namespace of its own"), "{error}");
    let error = schema.fails(&["migrate", "--broker", &redis_url()]).await;
    assert!(error.contains("PostgreSQL schemas") && error.contains("postgres://"), "{error}");
    let error = schema.fails(&["migrate", "--namespace", "Not-A-Schema"]).await;
    assert!(error.contains("--namespace not_a_schema"), "{error}");
    // A schema of its own for an outbox, which a broker is refused.
    let outbox = Schema::named(&format!("{}_outbox", schema.name), &postgres_url());
    let made = schema.json(&["migrate", "--namespace", &outbox.name, "--outbox"]).await;
    assert_eq!(made["serves"], "outbox");
    let error = schema.fails(&["queues", "--namespace", &outbox.name]).await;
    assert!(error.contains("cannot serve as \"broker\""), "{error}");

    // Before any worker: enqueue, queues, job, cancel, result.
    let first = schema.json(&["enqueue", count::NAME, "[21]", "--queue", queue]).await;
    let first = first["id"].as_str().expect("an id").to_owned();
    let queues = schema.json(&["queues"]).await;
    let row = queues.as_array().and_then(|rows| rows.iter().find(|r| r["queue"] == queue));
    assert_eq!(row.map(|r| r["ready"].clone()), Some(1.into()), "{queues}");
    let job = schema.json(&["job", &first]).await;
    assert_eq!((job["state"].as_str(), job["task"].as_str()), (Some("ready"), Some(count::NAME)));
    let later =
        schema.ok(&["enqueue", count::NAME, "[1]", "--queue", queue, "--delay", "1h"]).await;
    let later = later.trim().to_owned();
    assert_eq!(schema.json(&["job", &later]).await["state"], "delayed");
    let cancelled = schema.json(&["cancel", queue, &later]).await;
    assert_eq!(cancelled["outcome"], "removed");
    assert_eq!(schema.json(&["result", &later]).await["state"], "cancelled");
    let error = schema.fails(&["cancel", queue, &later]).await;
    assert!(error.contains("nothing was cancelled"), "{error}");
    // A task no worker knows: dead-lettered once a worker claims it.
    let unknown = schema.ok(&["enqueue", "e2e.nobody", "[]", "--queue", queue]).await;
    let unknown = unknown.trim().to_owned();

    // A worker process: workers, result, dlq.
    let settings = Settings {
        queue,
        concurrency: 2,
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_millis(500),
    };
    let mut worker = schema.worker(settings, &[]);
    let pid = worker.pid;
    poll("dmq workers to list the worker", || async {
        let listed = schema.json(&["workers"]).await;
        listed.as_array()?.iter().any(|w| w["pid"] == pid).then_some(())
    })
    .await;
    let result = schema.json(&["result", &first, "--wait", "60s"]).await;
    assert_eq!((result["state"].as_str(), result["value"].as_u64()), (Some("succeeded"), Some(42)));
    let letters = poll("the unknown task to be dead-lettered", || async {
        let listed = schema.json(&["dlq", "list", queue]).await;
        (listed["total"] == 1).then_some(listed)
    })
    .await;
    assert_eq!(letters["letters"][0]["id"], unknown.as_str(), "{letters}");
    let reason = letters["letters"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("no task named \"e2e.nobody\""), "{reason}");
    let requeued = schema.json(&["dlq", "requeue", queue, &unknown, "--to", "e2e-parked"]).await;
    assert_eq!(requeued["requeued"], 1);
    let parked = schema.json(&["queues", "e2e-parked"]).await;
    assert_eq!(parked[0]["ready"], 1, "{parked}");
    let error = schema.fails(&["purge", "e2e-parked"]).await;
    assert!(error.contains("--yes"), "{error}");
    assert_eq!(schema.json(&["purge", "e2e-parked", "--yes"]).await["purged"], 1);
    assert_eq!(schema.json(&["queues", "e2e-parked"]).await[0]["ready"], 0);
    let deleted = schema.json(&["queue", "delete", "e2e-parked", "--yes"]).await;
    assert_eq!(deleted["queue"], "e2e-parked");
    let all = schema.json(&["queues"]).await;
    assert!(all.as_array().is_some_and(|rows| rows.iter().all(|r| r["queue"] != "e2e-parked")));

    let another = schema.ok(&["enqueue", "e2e.nobody", "[]", "--queue", queue]).await;
    let another = another.trim().to_owned();
    poll("the second unknown task to be dead-lettered", || async {
        (schema.json(&["dlq", "list", queue]).await["total"] == 1).then_some(())
    })
    .await;
    assert_eq!(schema.json(&["job", &another]).await["state"], "dead-lettered");
    assert_eq!(schema.json(&["dlq", "purge", queue, "--yes"]).await["purged"], 1);
    assert_eq!(schema.json(&["dlq", "list", queue]).await["total"], 0);

    // The event stream, read by another process.
    let events = events_until(&schema, |events| {
        let first = kinds_of(events, &first);
        ["queued", "started", "completed"].iter().all(|k| first.iter().any(|f| f == k))
            && kinds_of(events, &another).iter().any(|k| k == "dead_lettered")
    })
    .await;
    assert!(kinds_of(&events, &unknown).iter().any(|k| k == "dead_lettered"), "{events:?}");

    assert_eq!(schema.json(&["periodic"]).await, Value::Array(Vec::new()));
    let doctor = schema.json(&["doctor"]).await;
    assert_eq!(doctor["stranded"], 0, "{doctor}");

    let status = worker.terminate().await;
    assert!(status.success(), "the worker exited with {status} after SIGTERM");
    assert_eq!(schema.json(&["workers"]).await, Value::Array(Vec::new()));
    let said = schema.ok(&["queues"]).await;
    assert!(said.lines().next().is_some_and(|h| h.starts_with("QUEUE")), "{said}");
}

/// A worker process stalled with SIGSTOP past its heartbeat while it runs a job loses
/// the job to another process, which runs it, stores its result and acknowledges it.
/// Resumed (after its successor stored the result, or while the successor still
/// runs), the stalled process finishes its run too, but the fence holds on PostgreSQL
/// as on Redis: it stores nothing over the successor's result and settles nothing.
async fn a_stalled_worker_stores_nothing_over_its_successors_result(resume_early: bool) {
    let _turn = TURN.lock().await;
    let schema = Schema::fresh();
    let (broker, manager) = connect(&schema).await;
    let settings = Settings {
        queue: slow::QUEUE,
        concurrency: 1,
        // Long: only the lapsed heartbeat hands the job on, and the stalled process's
        // renewal is not due when it resumes, so its run goes on to store its result.
        lease: Duration::from_secs(60),
        heartbeat: Duration::from_millis(200),
    };
    let mut stalled = schema.worker(settings, &[]);
    registered(&manager, std::slice::from_ref(&stalled)).await;
    let id = slow::call(1500).enqueue(&manager).await.expect("enqueue").id();
    poll("the first process to start the job", || async {
        (!entries(starts_key(&schema.name)).await.is_empty()).then_some(())
    })
    .await;
    let first_lease =
        lease_in_table(&broker, slow::QUEUE, id).await.expect("the first process holds a lease");
    signal(stalled.pid, "STOP").await;

    let mut successor = schema.worker(settings, &[]);
    let runs = || async { entries(starts_key(&schema.name)).await.len() };
    resume_and_see_the_fence_hold(&manager, id, &stalled, &successor, resume_early, runs).await;
    // The stalled process's lease is spent: it acknowledges nothing, now or later.
    match broker.ack(&first_lease).await {
        Err(Error::LeaseLost { id: lost }) => assert_eq!(lost, id),
        other => panic!("the stalled process's lease acknowledged the job: {other:?}"),
    }
    let status = stalled.terminate().await;
    assert!(status.success(), "the resumed process exited with {status}");
    let status = successor.terminate().await;
    assert!(status.success(), "the successor exited with {status}");
    assert_empty(&broker, slow::QUEUE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_resumed_after_its_successor_stores_nothing() {
    a_stalled_worker_stores_nothing_over_its_successors_result(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_resumed_while_its_successor_runs_stores_nothing() {
    a_stalled_worker_stores_nothing_over_its_successors_result(true).await;
}
