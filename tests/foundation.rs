//! The foundation end to end on the in-memory broker: the DESIGN.md example, many
//! jobs on several queues and workers, panics, timeouts, shutdown, lease renewal,
//! concurrency, result types and the size limit. Failure handling (retries, the
//! dead-letter queue, bad input, expiry, idempotency) runs on both brokers in
//! `failure.rs`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dmq_core::{Error, Manager, TaskError, task};

mod common;
use common::{WAIT, failure};

#[task]
async fn add(x: i64, y: i64) -> Result<i64, TaskError> {
    Ok(x + y)
}

#[task(name = "emails.send", queue = "emails", max_retries = 5, timeout = "30s")]
async fn send_email(to: String, body: String) -> Result<(), TaskError> {
    if to.is_empty() || body.is_empty() {
        return Err(TaskError::fatal("an e-mail needs a recipient and a body"));
    }
    Ok(())
}

/// The code of DESIGN.md's "The API a user writes", as written there (less the
/// `.cron(..)` line, which belongs to the scheduling work).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_design_example_returns_5() -> Result<(), Box<dyn std::error::Error>> {
    let manager = Manager::builder().build()?;
    let worker = manager.worker().concurrency(10).start();

    let handle = add::call(2, 3).enqueue(&manager).await?;
    assert_eq!(handle.result(Duration::from_secs(10)).await?, 5);
    let same: i64 = manager.result::<i64>(handle.id()).wait(Duration::from_secs(1)).await?;
    assert_eq!(same, 5);

    add::call(2, 3).delay(Duration::from_secs(30)).enqueue(&manager).await?;
    add::call(2, 3).eta(chrono::Utc::now() + chrono::Duration::hours(1)).enqueue(&manager).await?;
    assert_eq!(manager.admin().expect("admin").queue_stats("default").await?.delayed, 2);

    send_email::call("a@example.com".into(), "hi".into())
        .enqueue(&manager)
        .await?
        .result(WAIT)
        .await?;
    assert_eq!(add(2, 3).await?, 5, "the function stays callable as written");
    worker.shutdown().await;
    Ok(())
}

static RUNS: [AtomicU32; 10_000] = [const { AtomicU32::new(0) }; 10_000];

#[task(name = "foundation.count", queue = "count-a")]
async fn count(slot: usize) -> Result<usize, TaskError> {
    RUNS[slot].fetch_add(1, Ordering::SeqCst);
    Ok(slot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_on_four_queues_and_two_workers_each_run_exactly_once() {
    let manager = Manager::builder().build().expect("manager");
    let queues = ["count-a", "count-b", "count-c", "count-d"];
    let first = manager.worker().concurrency(32).queues(queues).start();
    let second = manager.worker().concurrency(32).queues(queues.iter().rev().copied()).start();

    let mut handles = Vec::new();
    for slot in 0..10_000 {
        let call = count::call(slot).queue(queues[slot % 4]);
        handles.push(call.enqueue(&manager).await.expect("enqueue"));
    }
    for (slot, handle) in handles.iter().enumerate() {
        assert_eq!(handle.result(WAIT).await.expect("result"), slot);
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
        assert_eq!((stats.ready, stats.in_flight, stats.dead), (0, 0, 0), "{queue}");
    }
}

#[task(queue = "panics")]
async fn explode(message: String) -> Result<(), TaskError> {
    panic!("{message}");
}

#[task(queue = "panics")]
async fn echo(text: String) -> Result<String, TaskError> {
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_fails_and_the_next_job_still_runs() {
    let manager = Manager::builder().build().expect("manager");
    let worker = manager.worker().concurrency(1).queues(["panics"]).start();
    let boom = explode::call("kaboom".into()).enqueue(&manager).await.expect("enqueue");
    let after = echo::call("still here".into()).enqueue(&manager).await.expect("enqueue");

    let (kind, message) = failure(boom.result(WAIT).await);
    assert_eq!(kind, "panic");
    assert!(message.contains("kaboom"), "{message}");
    assert_eq!(after.result(WAIT).await.expect("next job"), "still here");
    assert_eq!(
        manager.admin().expect("admin").dead_letter_count("panics").await.expect("count"),
        1
    );
    worker.shutdown().await;
}

#[task(queue = "slow", timeout = "200ms")]
async fn oversleep(secs: u64) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_secs(secs)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_timeout_fails_naming_the_timeout() {
    let manager = Manager::builder().build().expect("manager");
    let worker = manager.worker().queues(["slow"]).start();
    let started = std::time::Instant::now();
    let handle = oversleep::call(60).enqueue(&manager).await.expect("enqueue");
    let (kind, message) = failure(handle.result(WAIT).await);
    assert_eq!(kind, "timeout");
    assert!(message.contains("timed out after 200ms"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(30), "the timeout was not applied");
    worker.shutdown().await;
}

static FINISHED: AtomicU32 = AtomicU32::new(0);

#[task(queue = "shutdown")]
async fn nap(millis: u64) -> Result<u64, TaskError> {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    FINISHED.fetch_add(1, Ordering::SeqCst);
    Ok(millis)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_jobs_finish_within_the_grace_period_and_releases_the_rest() {
    let manager = Manager::builder().build().expect("manager");
    let mut ids = Vec::new();
    // Job 0 finishes at once; job 1 is still running when shutdown starts but ends
    // within the grace period; the long ones are still running when it ends. Enqueued
    // before the worker starts, so its first claim takes jobs 0 to 3.
    for millis in [10, 1_500].into_iter().chain([60_000; 18]) {
        ids.push(nap::call(millis).enqueue(&manager).await.expect("enqueue").id());
    }
    let worker =
        manager.worker().concurrency(4).queues(["shutdown"]).grace(Duration::from_secs(5)).start();
    assert_eq!(manager.result::<u64>(ids[0]).wait(WAIT).await.expect("first job"), 10);
    let report = worker.shutdown().await;

    assert_eq!(
        manager.result::<u64>(ids[1]).get().await.expect("get"),
        Some(1_500),
        "a job running at shutdown finishes within the grace period"
    );
    let mut completed = 0;
    for &id in &ids {
        if manager.result::<u64>(id).get().await.expect("get").is_some() {
            completed += 1;
        }
    }
    let stats = manager.admin().expect("admin").queue_stats("shutdown").await.expect("stats");
    assert_eq!(stats.in_flight, 0, "no job may stay leased after shutdown");
    assert_eq!(completed, 2, "only the short jobs finished");
    assert_eq!(stats.ready, 18, "every unfinished job is back in the queue");
    assert_eq!(FINISHED.load(Ordering::SeqCst), 2);
    assert!((2..=3).contains(&report.released), "released {}", report.released);
}

static LONG_RUNS: AtomicU32 = AtomicU32::new(0);

#[task(queue = "renewal")]
async fn outlive_the_lease(millis: u64) -> Result<u32, TaskError> {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    Ok(LONG_RUNS.fetch_add(1, Ordering::SeqCst) + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_longer_than_its_lease_keeps_it_and_runs_once() {
    let manager = Manager::builder().build().expect("manager");
    // Two workers: without renewal the second would take the job once the lease ran out.
    let first = manager.worker().queues(["renewal"]).lease(Duration::from_millis(300)).start();
    let second = manager.worker().queues(["renewal"]).lease(Duration::from_millis(300)).start();
    let handle = outlive_the_lease::call(2_000).enqueue(&manager).await.expect("enqueue");
    assert_eq!(handle.result(WAIT).await.expect("result"), 1);
    first.shutdown().await;
    second.shutdown().await;
    assert_eq!(LONG_RUNS.load(Ordering::SeqCst), 1, "the job ran more than once");
    let stats = manager.admin().expect("admin").queue_stats("renewal").await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.dead), (0, 0, 0));
}

static RUNNING: AtomicU32 = AtomicU32::new(0);
static MOST_AT_ONCE: AtomicU32 = AtomicU32::new(0);

#[task(queue = "bounded")]
async fn occupy(millis: u64) -> Result<(), TaskError> {
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    MOST_AT_ONCE.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(millis)).await;
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_as_many_jobs_at_once_as_its_concurrency_and_no_more() {
    let manager = Manager::builder().build().expect("manager");
    let calls = (0..40).map(|_| occupy::call(200));
    let ids = manager.enqueue_batch(calls).await.expect("enqueue");
    let worker = manager.worker().concurrency(8).queues(["bounded"]).start();
    for id in ids {
        manager.result::<()>(id).wait(WAIT).await.expect("result");
    }
    worker.shutdown().await;
    assert_eq!(MOST_AT_ONCE.load(Ordering::SeqCst), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_read_as_the_wrong_type_is_an_error() {
    let manager = Manager::builder().build().expect("manager");
    let worker = manager.worker().queues(["default"]).start();
    let handle = add::call(2, 3).enqueue(&manager).await.expect("enqueue");
    handle.result(WAIT).await.expect("result");
    let err = manager.result::<Vec<String>>(handle.id()).wait(WAIT).await.expect_err("wrong type");
    assert!(matches!(err, Error::ResultType { .. }), "{err}");
    assert!(err.to_string().contains("Vec<alloc::string::String>"), "{err}");
    worker.shutdown().await;
}

#[tokio::test]
async fn a_job_over_the_size_limit_is_refused_at_enqueue() {
    let manager = Manager::builder().max_message_size(1024).build().expect("manager");
    let err = echo::call("x".repeat(4096)).enqueue(&manager).await.expect_err("too large");
    assert!(matches!(err, Error::MessageTooLarge { limit: 1024, .. }), "{err}");
    assert!(err.to_string().contains("max_message_size"), "{err}");
    assert_eq!(
        manager.admin().expect("admin").queue_stats("panics").await.expect("stats").ready,
        0
    );
}

static QUIET_RUNS: AtomicU32 = AtomicU32::new(0);

#[task(queue = "quiet", ignore_result)]
async fn quiet(n: u32) -> Result<u32, TaskError> {
    QUIET_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignore_result_task_runs_and_stores_no_result() {
    let manager = Manager::builder().build().expect("manager");
    let ignored = quiet::call(7).enqueue(&manager).await.expect("enqueue");
    let marker =
        echo::call("after".into()).queue("quiet").enqueue(&manager).await.expect("enqueue");
    // One job at a time, in order: once the second job has a result, the first has run.
    let worker = manager.worker().concurrency(1).queues(["quiet"]).start();
    assert_eq!(marker.result(WAIT).await.expect("marker"), "after");
    worker.shutdown().await;
    assert_eq!(QUIET_RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(manager.result::<u32>(ignored.id()).get().await.expect("get"), None);
    let stats = manager.admin().expect("admin").queue_stats("quiet").await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.dead), (0, 0, 0), "the job was acknowledged");
}

#[test]
fn a_backoff_that_makes_no_sense_is_refused() {
    use dmq_core::Backoff;
    let s = Duration::from_secs(1);
    assert!(matches!(Backoff::exponential(s, 0.5, 10 * s), Err(Error::InvalidArgument(_))));
    assert!(matches!(Backoff::linear(10 * s, s, s), Err(Error::InvalidArgument(_))));
}
