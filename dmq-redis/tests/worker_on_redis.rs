//! Workers on `RedisBroker`: many jobs across queues and workers run exactly once,
//! delayed jobs start at their eta, workers register and take back a dead worker's
//! jobs. Failure handling on Redis (retries, dead letters, bad input) is tested on both
//! brokers in `tests/failure.rs`.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dmq_core::{Error, Manager, TaskError, task};
use dmq_redis::RedisBroker;

const WAIT: Duration = Duration::from_secs(60);

static RUNS: [AtomicU32; 2_000] = [const { AtomicU32::new(0) }; 2_000];

#[task(name = "redis.count", queue = "r-a")]
async fn count(slot: usize) -> Result<usize, TaskError> {
    RUNS[slot].fetch_add(1, Ordering::SeqCst);
    Ok(slot)
}

async fn manager(namespace: &str) -> Manager {
    let broker = RedisBroker::connect_with_namespace(&common::redis_url(), namespace)
        .await
        .expect("connect to redis (scripts/ensure-redis starts one)");
    Manager::builder().broker(broker).build().expect("manager")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_jobs_on_two_queues_and_two_workers_each_run_exactly_once() {
    let namespace = common::fresh_namespace();
    let _cleanup = common::Cleanup::of(&namespace);
    let manager = manager(&namespace).await;
    let queues = ["r-a", "r-b"];
    let first = manager.worker().concurrency(16).queues(queues).start();
    let second = manager.worker().concurrency(16).queues(queues).start();

    let singles: Vec<_> =
        (0..1_000).map(|slot| count::call(slot).queue(queues[slot % 2])).collect();
    let mut ids = Vec::new();
    for call in singles {
        ids.push(call.enqueue(&manager).await.expect("enqueue").id());
    }
    let batch = (1_000..2_000).map(|slot| count::call(slot).queue(queues[slot % 2]));
    ids.extend(manager.enqueue_batch(batch).await.expect("batch"));
    for (slot, id) in ids.iter().enumerate() {
        assert_eq!(manager.result::<usize>(*id).wait(WAIT).await.expect("result"), slot);
    }
    first.shutdown().await;
    second.shutdown().await;
    for (slot, runs) in RUNS.iter().enumerate() {
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "job {slot} ran a number of times other than one"
        );
    }
    for queue in queues {
        let stats = manager.admin().expect("admin").queue_stats(queue).await.expect("stats");
        assert_eq!(
            (stats.ready, stats.delayed, stats.in_flight, stats.dead),
            (0, 0, 0, 0),
            "{queue}"
        );
    }
}

#[task(queue = "r-delay")]
async fn started_at() -> Result<i64, TaskError> {
    Ok(chrono::Utc::now().timestamp_micros())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_starts_at_its_eta_on_an_idle_worker_not_before() {
    let namespace = common::fresh_namespace();
    let _cleanup = common::Cleanup::of(&namespace);
    let manager = manager(&namespace).await;
    let worker = manager.worker().queues(["r-delay"]).start();
    let mut lateness = Vec::new();
    for _ in 0..5 {
        let eta = chrono::Utc::now() + chrono::Duration::milliseconds(300);
        let handle = started_at::call().eta(eta).enqueue(&manager).await.expect("enqueue");
        let started = handle.result(WAIT).await.expect("result");
        // The envelope keeps the eta in milliseconds.
        let eta_micros = eta.timestamp_millis() * 1000;
        assert!(started >= eta_micros, "started {} µs before its eta", eta_micros - started);
        lateness.push(started - eta_micros);
    }
    lateness.sort_unstable();
    eprintln!("delayed-job lateness after eta, µs: {lateness:?}");
    // The bound is 100 ms on an idle worker; the median keeps one hiccup of a
    // loaded CI machine from failing the test, while a polling timer would miss it.
    assert!(lateness[2] < 100_000, "median lateness {} µs (all: {lateness:?})", lateness[2]);
    worker.shutdown().await;
}

/// Holds each `redis.held` job until the test adds a permit.
static GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);

#[task(name = "redis.held", queue = "r-reg")]
async fn held() -> Result<(), TaskError> {
    GATE.acquire().await.expect("the gate stays open").forget();
    Ok(())
}

/// Polls the registry until its only worker reports `running` jobs running.
async fn until_running(manager: &Manager, running: u32) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let listed =
            manager.broker().worker_registry().expect("registry").workers().await.expect("workers");
        if listed.first().is_some_and(|w| w.info.running == running) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "never {running} running: {listed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_worker_is_registered_and_deregisters_on_shutdown() {
    let namespace = common::fresh_namespace();
    let _cleanup = common::Cleanup::of(&namespace);
    let manager = manager(&namespace).await;
    let worker = manager
        .worker()
        .concurrency(3)
        .queues(["r-reg"])
        .heartbeat(Duration::from_millis(100))
        .start();
    let deadline = std::time::Instant::now() + WAIT;
    let listed = loop {
        let listed =
            manager.broker().worker_registry().expect("registry").workers().await.expect("workers");
        if !listed.is_empty() || std::time::Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].info.queues, ["r-reg"]);
    assert_eq!(listed[0].info.concurrency, 3);
    assert_eq!(listed[0].info.pid, std::process::id());
    let first_until = listed[0].alive_until;
    let deadline = std::time::Instant::now() + WAIT;
    let later = loop {
        let later =
            manager.broker().worker_registry().expect("registry").workers().await.expect("workers");
        if later.first().is_some_and(|w| w.alive_until > first_until) {
            break later;
        }
        assert!(std::time::Instant::now() < deadline, "the heartbeat was not renewed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // An idle worker, waiting in its claim, reports no running jobs; its heartbeats
    // report the jobs it runs.
    assert_eq!(later[0].info.running, 0);
    let first = held::call().enqueue(&manager).await.expect("enqueue");
    let second = held::call().enqueue(&manager).await.expect("enqueue");
    until_running(&manager, 2).await;
    GATE.add_permits(2);
    first.result(WAIT).await.expect("result");
    second.result(WAIT).await.expect("result");
    until_running(&manager, 0).await;
    worker.shutdown().await;
    assert!(
        manager
            .broker()
            .worker_registry()
            .expect("registry")
            .workers()
            .await
            .expect("workers")
            .is_empty()
    );
}

#[task(name = "redis.reaped", queue = "r-reap")]
async fn reaped(n: i64) -> Result<i64, TaskError> {
    Ok(n + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_takes_back_the_jobs_of_a_worker_that_stopped_heartbeating() {
    let namespace = common::fresh_namespace();
    let _cleanup = common::Cleanup::of(&namespace);
    let manager = manager(&namespace).await;
    let broker = manager.broker();
    let queues = vec!["r-reap".to_owned()];
    let handle = reaped::call(41).enqueue(&manager).await.expect("enqueue");
    // A worker that claims the job under a 10-minute lease, then dies: it never
    // heartbeats again.
    let doomed =
        dmq_core::WorkerInfo::new("doomed", "nowhere", 1, queues.clone(), 1, chrono::Utc::now());
    broker
        .worker_registry()
        .expect("registry")
        .heartbeat(&doomed, Duration::from_millis(200))
        .await
        .expect("heartbeat");
    let held = broker
        .claim("doomed", &queues, 1, Duration::from_secs(600), Duration::ZERO)
        .await
        .expect("claim");
    assert_eq!(held.len(), 1);

    let worker = manager.worker().queues(["r-reap"]).heartbeat(Duration::from_millis(50)).start();
    // WAIT (60 s) is far shorter than the lease: only the reaper can hand the job on.
    assert_eq!(handle.result(WAIT).await.expect("the job was taken back and run"), 42);
    assert!(matches!(broker.ack(&held[0].lease).await, Err(Error::LeaseLost { .. })));
    let live: Vec<String> = broker
        .worker_registry()
        .expect("registry")
        .workers()
        .await
        .expect("workers")
        .into_iter()
        .map(|w| w.info.id)
        .collect();
    assert!(!live.contains(&"doomed".to_owned()), "{live:?}");
    worker.shutdown().await;
}
