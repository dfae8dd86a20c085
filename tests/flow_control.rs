//! Flow control end to end, with real processes: `dmq pause` stops worker processes
//! from starting a queue's jobs while enqueues still land and the jobs already running
//! finish, `dmq queues` shows the pause, and `dmq resume` starts the waiting jobs, on
//! Redis and on PostgreSQL. A task's rate limit and its concurrency limit per key hold
//! across four worker processes, measured from the tasks' own start and end times.
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

use test_worker::{limited, limited_key, per_key, per_key_key, stamp, stamps_key};

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

/// A manager on the schema's broker, to enqueue from this process.
async fn manager_on(schema: &Schema) -> dmq_core::Manager {
    let (broker, backend) =
        dmq_cli::connect_url(&schema.broker, &schema.name, None).await.expect("connect");
    dmq_core::Manager::builder()
        .shared_broker(broker)
        .shared_backend(backend)
        .build()
        .expect("manager")
}

/// The entries of one of the tasks' run records, `<what> <start µs> <end µs>`.
async fn runs(schema: &Schema, key: &str) -> Vec<(String, u128, u128)> {
    let mut conn = RedisConnection::open(&schema.redis).await.expect("connect to redis");
    let entries: Vec<String> =
        redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query_async(&mut conn).await.expect("read");
    entries
        .iter()
        .map(|e| {
            let mut parts = e.split(' ');
            let mut next = || parts.next().unwrap_or_default().to_owned();
            let (what, start, end) = (next(), next(), next());
            (what, start.parse().expect("a start"), end.parse().expect("an end"))
        })
        .collect()
}

/// Four worker processes of `queue`, each running up to `concurrency` jobs at once.
fn four_workers(
    schema: &Schema,
    queue: &'static str,
    concurrency: usize,
) -> Vec<common::workers::WorkerProcess> {
    let settings = Settings {
        queue,
        concurrency,
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_millis(500),
    };
    (0..4).map(|_| schema.worker(settings, &[])).collect()
}

/// 1,000 jobs of a task limited to 50 a second with a burst of 5, run by four worker
/// processes: they start over about 20 seconds, never more than 55 in any one second
/// of the broker's clock (measured at the tasks' starts, which lag a little).
async fn a_rate_limit_holds_across_worker_processes(schema: Schema) {
    let mut workers = four_workers(&schema, limited::QUEUE, 16);
    let manager = manager_on(&schema).await;
    let calls: Vec<_> = (0..1_000).map(limited::call).collect();
    manager.enqueue_batch(calls).await.expect("enqueue");
    let key = limited_key(&schema.name);
    let ran = poll("the 1,000 limited jobs to run", || async {
        let ran = runs(&schema, &key).await;
        (ran.len() >= 1_000).then_some(ran)
    })
    .await;
    let ids: std::collections::HashSet<&String> = ran.iter().map(|(id, _, _)| id).collect();
    assert_eq!((ran.len(), ids.len()), (1_000, 1_000), "each job ran once");
    let mut starts: Vec<u128> = ran.iter().map(|(_, start, _)| *start).collect();
    starts.sort_unstable();
    let span = starts[999] - starts[0];
    // 5 at once, then 995 at 50 a second: 19.9 s.
    assert!(span >= 18_000_000, "1,000 jobs started within {span} µs: the rate did not hold");
    assert!(span <= 40_000_000, "the jobs took {span} µs to start: they waited past the rate");
    let mut most = 0;
    let mut from = 0;
    for (to, &start) in starts.iter().enumerate() {
        while starts[from] + 1_000_000 <= start {
            from += 1;
        }
        most = most.max(to - from + 1);
    }
    // The broker holds the rate on its own clock, when it hands jobs out; a task
    // starts a little later, after the claim's commit and reply, and that lag varies
    // (a few ms, tens on a loaded machine), so a second of starts may take in a job or
    // two admitted just before it. Up to 5 over 50/s plus the burst of 5 is that lag;
    // more would be the rate failing.
    eprintln!("rate limit 50/s, burst 5: at most {most} starts in one second, over {span} µs");
    assert!(most <= 60, "{most} jobs started within one second: over 50/s plus a burst of 5");
    let stats = manager.admin().expect("admin").queue_stats(limited::QUEUE).await.expect("figures");
    assert_eq!((stats.ready, stats.gated, stats.in_flight), (0, 0, 0), "{stats:?}");
    for worker in &mut workers {
        assert!(worker.terminate().await.success());
    }
}

/// 200 jobs with at most 3 running at once per key, over 4 keys, run by four worker
/// processes of 8 slots each: never more than 3 of one key at once, as the tasks' own
/// start and end times say, while the keys run beside each other.
async fn a_concurrency_limit_per_key_holds_across_worker_processes(schema: Schema) {
    let mut workers = four_workers(&schema, per_key::QUEUE, 8);
    let manager = manager_on(&schema).await;
    let calls: Vec<_> = (0..200).map(|i| per_key::call(format!("tenant-{}", i % 4), 100)).collect();
    manager.enqueue_batch(calls).await.expect("enqueue");
    let key = per_key_key(&schema.name);
    let ran = poll("the 200 jobs to run", || async {
        let ran = runs(&schema, &key).await;
        (ran.len() >= 200).then_some(ran)
    })
    .await;
    assert_eq!(ran.len(), 200, "each job ran once");
    // The most that ran at once: of each key, and of all keys together.
    let most_at_once = |runs: &[&(String, u128, u128)]| {
        let mut events: Vec<(u128, i32)> =
            runs.iter().flat_map(|(_, start, end)| [(*start, 1), (*end, -1)]).collect();
        // An end before a start at the same instant.
        events.sort_unstable();
        let (mut now, mut most) = (0, 0);
        for (_, change) in events {
            now += change;
            most = most.max(now);
        }
        most
    };
    let all: Vec<&(String, u128, u128)> = ran.iter().collect();
    for tenant in 0..4 {
        let name = format!("tenant-{tenant}");
        let of_key: Vec<_> = ran.iter().filter(|(key, _, _)| *key == name).collect();
        assert_eq!(of_key.len(), 50, "{name}");
        let most = most_at_once(&of_key);
        assert!(most <= 3, "{most} jobs of {name} ran at once, over its limit of 3");
        assert!(most >= 2, "only {most} job of {name} ran at a time: the limit is 3");
    }
    let together = most_at_once(&all);
    assert!(together > 3, "the keys did not run beside each other: {together} at once");
    // A task records its end just before its worker acknowledges it.
    let admin = manager.admin().expect("admin");
    poll("the last acknowledgements", || async {
        let stats = admin.queue_stats(per_key::QUEUE).await.expect("figures");
        ((stats.ready, stats.gated, stats.in_flight) == (0, 0, 0)).then_some(())
    })
    .await;
    for worker in &mut workers {
        assert!(worker.terminate().await.success());
    }
    // The workers' claims reported the jobs they held back, each once, by its key's
    // concurrency limit.
    let held = events_of(&manager, dmq_core::EventType::Held).await;
    assert!(held.len() >= 50, "at most 12 of the 200 could start at first: {} held", held.len());
    let mut ids: Vec<_> = held.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), held.len(), "a job reported held twice");
    for event in &held {
        let dmq_core::EventKind::Held { gate, limit } = &event.kind else { unreachable!() };
        assert!(gate.starts_with(&format!("{}[tenant-", per_key::NAME)), "{event}");
        assert_eq!(*limit, dmq_core::HeldBy::Concurrency, "{event}");
        assert_eq!(event.task, per_key::NAME, "{event}");
    }
}

/// Every event of `kind` in the broker's event stream.
async fn events_of(manager: &dmq_core::Manager, kind: dmq_core::EventType) -> Vec<dmq_core::Event> {
    let stream = manager.broker().event_stream().expect("an event stream");
    let mut from = dmq_core::EventsFrom::Oldest;
    let mut found = Vec::new();
    loop {
        let page = stream.read_events(&from, 1_000, Duration::ZERO).await.expect("read events");
        if page.events.is_empty() {
            return found;
        }
        found.extend(page.events.into_iter().filter(|e| e.event_type() == kind));
        from = dmq_core::EventsFrom::After(page.cursor);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_worker_processes_on_redis() {
    a_rate_limit_holds_across_worker_processes(Schema::fresh_on_redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_per_key_holds_across_worker_processes_on_redis() {
    a_concurrency_limit_per_key_holds_across_worker_processes(Schema::fresh_on_redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_holds_across_worker_processes_on_postgres() {
    a_rate_limit_holds_across_worker_processes(Schema::fresh()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_per_key_holds_across_worker_processes_on_postgres() {
    a_concurrency_limit_per_key_holds_across_worker_processes(Schema::fresh()).await;
}

/// A namespace's quota of 1,000 enqueues a minute, set with `dmq quota set`: the
/// 1,001st enqueue of the minute fails, from Rust and from `dmq enqueue`, saying when
/// to retry, and adds nothing; removed, the quota counts no more.
async fn a_quota_refuses_the_1001st_enqueue_of_a_minute(schema: Schema) {
    let set = schema.json(&["quota", "set", &schema.name, "1000/m"]).await;
    assert_eq!((&set["quota"], &set["changed"]), (&Value::from("1000/m"), &Value::Bool(true)));
    let manager = manager_on(&schema).await;
    let calls: Vec<_> = (0..1_000).map(|n| stamp::call(n, 0)).collect();
    manager.enqueue_batch(calls).await.expect("1,000 enqueues are within the quota");
    match stamp::call(1_000, 0).enqueue(&manager).await {
        Err(dmq_core::Error::QuotaExceeded { retry_after, limit, .. }) => {
            assert_eq!(limit, "1000/m");
            assert!(
                retry_after > Duration::ZERO && retry_after <= Duration::from_secs(60),
                "{retry_after:?}"
            );
        }
        other => panic!("the 1,001st enqueue: {other:?}"),
    }
    let said = schema.fails(&["enqueue", stamp::NAME, "[1001, 0]", "--queue", stamp::QUEUE]).await;
    assert!(said.contains("quota") && said.contains("retry in"), "{said}");
    let listed = schema.json(&["quota", "list", &schema.name]).await;
    assert_eq!(
        (&listed[0]["quota"], &listed[0]["used"]),
        (&Value::from("1000/m"), &Value::from(1000))
    );
    assert_eq!(row(&schema, stamp::QUEUE).await["ready"], 1000, "the refused jobs were not added");
    let removed = schema.json(&["quota", "remove", &schema.name]).await;
    assert_eq!(removed["changed"], true);
    // A fresh manager reads the quotas at once (one that read them lately, within a
    // second).
    let manager = manager_on(&schema).await;
    stamp::call(1_001, 0).enqueue(&manager).await.expect("no quota any more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_refuses_the_1001st_enqueue_of_a_minute_on_redis() {
    a_quota_refuses_the_1001st_enqueue_of_a_minute(Schema::fresh_on_redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_refuses_the_1001st_enqueue_of_a_minute_on_postgres() {
    a_quota_refuses_the_1001st_enqueue_of_a_minute(Schema::fresh()).await;
}

/// A worker killed (SIGKILL) while its jobs hold every slot of a key gives the slots
/// back once its jobs are taken back: the key's other jobs start, the killed worker's
/// jobs run again (alone, as any job of a lost worker), and no more than 3 of the key
/// ever finish overlapping.
async fn the_slots_of_a_killed_worker_come_back(schema: Schema) {
    let settings = Settings {
        queue: per_key::QUEUE,
        concurrency: 8,
        lease: Duration::from_secs(3),
        heartbeat: Duration::from_millis(300),
    };
    let mut doomed = schema.worker(settings, &[]);
    let manager = manager_on(&schema).await;
    let admin = manager.admin().expect("admin");
    let long: Vec<_> = (0..3).map(|_| per_key::call("k".to_owned(), 2_000)).collect();
    manager.enqueue_batch(long).await.expect("enqueue");
    poll("the doomed worker to hold the key's 3 slots", || async {
        let gates = admin.gates(per_key::QUEUE).await.ok()?;
        gates.iter().any(|g| g.gate.name == "e2e.per_key[k]" && g.running == 3).then_some(())
    })
    .await;
    let short: Vec<_> = (0..3).map(|_| per_key::call("k".to_owned(), 10)).collect();
    manager.enqueue_batch(short).await.expect("enqueue");
    doomed.kill().await;
    let mut survivor = schema.worker(settings, &[]);
    let key = per_key_key(&schema.name);
    let ran = poll("the key's 6 jobs to finish after the kill", || async {
        let ran = runs(&schema, &key).await;
        (ran.len() >= 6).then_some(ran)
    })
    .await;
    assert_eq!(ran.len(), 6, "each job finished once: {ran:?}");
    let mut events: Vec<(u128, i32)> =
        ran.iter().flat_map(|(_, start, end)| [(*start, 1), (*end, -1)]).collect();
    events.sort_unstable();
    let (mut now, mut most) = (0, 0);
    for (_, change) in events {
        now += change;
        most = most.max(now);
    }
    assert!(most <= 3, "{most} jobs of one key ran at once, over its limit of 3");
    let gates = admin.gates(per_key::QUEUE).await.expect("gates");
    assert!(gates.iter().all(|g| g.waiting == 0), "{gates:?}");
    assert!(survivor.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slots_of_a_killed_worker_come_back_on_redis() {
    the_slots_of_a_killed_worker_come_back(Schema::fresh_on_redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slots_of_a_killed_worker_come_back_on_postgres() {
    the_slots_of_a_killed_worker_come_back(Schema::fresh()).await;
}

/// How many times job `id` started, by the `stamp` tasks' run records.
async fn starts_of(schema: &Schema, id: dmq_core::TaskId) -> usize {
    let id = id.to_string();
    started(schema).await.iter().filter(|s| **s == id).count()
}

/// Unique jobs run by two worker processes. Debounce: five calls with new arguments,
/// 100 ms apart, make one job, which runs once, 1.5 s after the last, with the last
/// call's arguments. `UntilDone`: the same work enqueued while the job waits and while
/// it runs is that job; once it is done, a new one. `Queued`: once the job has
/// started, the same work is a new job, and that one holds while it waits.
async fn unique_jobs_as_processes(schema: Schema) {
    use dmq_core::UniqueFor;
    let settings = Settings {
        queue: stamp::QUEUE,
        concurrency: 2,
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_millis(500),
    };
    let mut workers: Vec<_> = (0..2).map(|_| schema.worker(settings, &[])).collect();
    let manager = manager_on(&schema).await;
    let quiet = Duration::from_millis(1_500);

    let mut ids = Vec::new();
    for n in 0..5 {
        let handle = stamp::call(n, 0).debounce(quiet).enqueue(&manager).await.expect("enqueue");
        ids.push(handle.id());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last_call = std::time::Instant::now() - Duration::from_millis(100);
    assert!(ids.iter().all(|id| *id == ids[0]), "one job for the five calls: {ids:?}");
    let handle = stamp::call(0, 0).debounce(quiet).enqueue(&manager).await.expect("enqueue");
    assert_eq!(handle.id(), ids[0], "a sixth call, still within the quiet time");
    let waited = handle.result(Duration::from_secs(60)).await.expect("the debounced job ran");
    assert!(waited.starts_with("0:"), "the last call's arguments ran: {waited}");
    assert!(last_call.elapsed() >= quiet, "it ran before the quiet time passed");
    assert_eq!(starts_of(&schema, ids[0]).await, 1, "the debounced job ran once");
    let after = stamp::call(9, 0).debounce(quiet).enqueue(&manager).await.expect("enqueue");
    assert_ne!(after.id(), ids[0], "the job ran: a call now makes a new one");
    assert!(after.result(Duration::from_secs(60)).await.expect("ran").starts_with("9:"));

    let until_done = || stamp::call(100, 1_500).unique(UniqueFor::UntilDone);
    let first = until_done().enqueue(&manager).await.expect("enqueue");
    assert_eq!(until_done().enqueue(&manager).await.expect("enqueue").id(), first.id());
    poll("the first job to start", || async {
        (starts_of(&schema, first.id()).await == 1).then_some(())
    })
    .await;
    assert_eq!(
        until_done().enqueue(&manager).await.expect("enqueue").id(),
        first.id(),
        "the job runs: the same work is that job"
    );
    first.result(Duration::from_secs(60)).await.expect("ran");
    let next = until_done().enqueue(&manager).await.expect("enqueue");
    assert_ne!(next.id(), first.id(), "the job is done: the same work is a new job");
    next.result(Duration::from_secs(60)).await.expect("ran");

    let queued = || stamp::call(200, 1_500).unique(UniqueFor::Queued);
    let first = queued().enqueue(&manager).await.expect("enqueue");
    poll("the first job to start", || async {
        (starts_of(&schema, first.id()).await == 1).then_some(())
    })
    .await;
    // Paused, so that the next job waits (the workers have room to start it at once).
    let admin = manager.admin().expect("admin");
    admin.pause(stamp::QUEUE).await.expect("pause");
    let second = queued().enqueue(&manager).await.expect("enqueue");
    assert_ne!(second.id(), first.id(), "the first job started: a new one");
    let third = queued().enqueue(&manager).await.expect("enqueue");
    assert_eq!(third.id(), second.id(), "the second job waits: the same work is that job");
    admin.resume(stamp::QUEUE).await.expect("resume");
    for handle in [first, second, third] {
        handle.result(Duration::from_secs(60)).await.expect("ran");
    }
    for worker in &mut workers {
        assert!(worker.terminate().await.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_jobs_as_processes_on_redis() {
    unique_jobs_as_processes(Schema::fresh_on_redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_jobs_as_processes_on_postgres() {
    unique_jobs_as_processes(Schema::fresh()).await;
}

/// Fairness: a tenant's 10 jobs enqueued after another tenant's 10,000 start among the
/// first few hundred of two worker processes, long before the other's backlog drains.
async fn a_small_group_is_not_starved_by_a_large_one(schema: Schema) {
    let manager = manager_on(&schema).await;
    let big: Vec<_> = (0..10_000).map(|n| stamp::call(n, 0).group("tenant-big")).collect();
    manager.enqueue_batch(big).await.expect("enqueue");
    let mut small = Vec::new();
    for n in 0..10 {
        let handle = stamp::call(n, 0).group("tenant-small").enqueue(&manager).await;
        small.push(handle.expect("enqueue").id().to_string());
    }
    let settings = Settings {
        queue: stamp::QUEUE,
        concurrency: 8,
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_millis(500),
    };
    let mut workers: Vec<_> = (0..2).map(|_| schema.worker(settings, &[])).collect();
    let order = poll("the small tenant's 10 jobs to start", || async {
        let order = started(&schema).await;
        small.iter().all(|id| order.contains(id)).then_some(order)
    })
    .await;
    let last_small = order.iter().rposition(|id| small.contains(id)).expect("started");
    eprintln!("the small tenant's last job was start number {} of 10,010", last_small + 1);
    assert!(last_small < 500, "the small tenant waited behind {last_small} jobs");
    let admin = manager.admin().expect("admin");
    let stats = admin.queue_stats(stamp::QUEUE).await.expect("figures");
    assert!(stats.ready > 9_000, "the big tenant's backlog is still there: {stats:?}");
    admin.purge(stamp::QUEUE).await.expect("purge");
    for worker in &mut workers {
        assert!(worker.terminate().await.success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_group_is_not_starved_by_a_large_one_on_redis() {
    a_small_group_is_not_starved_by_a_large_one(Schema::fresh_on_redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_group_is_not_starved_by_a_large_one_on_postgres() {
    a_small_group_is_not_starved_by_a_large_one(Schema::fresh()).await;
}
