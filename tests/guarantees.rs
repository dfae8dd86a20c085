//! Retry policies' error filters and the delivery guarantees, end to end on both
//! brokers: every scenario runs on the in-memory broker and on Redis.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use common::{Backing, WAIT, failure};
use dmq_core::{
    Backoff, Error, Guarantee, Manager, RetryPolicy, TaskError, TaskOutcome, TaskState, task,
};

/// Runs per key: each scenario passes a key of its own (the memory and Redis runs of
/// one scenario run at once, in one process).
static RUNS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

fn run_once_more(key: &str) -> u32 {
    let mut runs = RUNS.lock().unwrap_or_else(|p| p.into_inner());
    let n = runs.get_or_insert_with(HashMap::new).entry(key.to_owned()).or_insert(0);
    *n += 1;
    *n
}

fn runs(key: &str) -> u32 {
    let runs = RUNS.lock().unwrap_or_else(|p| p.into_inner());
    runs.as_ref().and_then(|r| r.get(key).copied()).unwrap_or(0)
}

/// Waits until the job recording its runs under `key` has started.
async fn started(key: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    while runs(key) == 0 {
        assert!(std::time::Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A key no other run uses.
fn fresh_key(scenario: &str) -> String {
    format!("{scenario}-{}", uuid::Uuid::new_v4())
}

// ---------------------------------------------------------------------------------
// retry_on / dont_retry_on

/// Fails as `how` says on the first two runs, then succeeds with the run number.
#[task(queue = "filters")]
async fn fails_with(key: String, how: String) -> Result<u32, TaskError> {
    let run = run_once_more(&key);
    if run > 2 {
        return Ok(run);
    }
    match how.as_str() {
        "io" => Err(std::io::Error::other("the disk is busy").into()),
        "parse" => Err("x"
            .parse::<i32>()
            .map_err(TaskError::from)
            .err()
            .unwrap_or_else(|| TaskError::msg("parsed"))),
        "forbidden" => Err(std::io::Error::other("forbidden by the remote").into()),
        "panic" => panic!("a panic is not an I/O error"),
        "later" => Err(TaskError::retry_after("come back later", Duration::from_millis(50))),
        _ => Err(TaskError::fatal(format!("unknown mode {how}"))),
    }
}

/// The manager default the filter scenario runs with: only I/O errors are retried,
/// except those the remote forbade.
fn io_only() -> RetryPolicy {
    let backoff = Backoff::fixed(Duration::from_millis(50)).expect("a valid backoff");
    RetryPolicy::new(3, backoff)
        .retry_on::<std::io::Error>()
        .dont_retry_if(|e| e.to_string().contains("forbidden"))
}

async fn retry_filters_choose_what_is_retried(backing: Backing) {
    let manager = backing.builder().await.default_retry(io_only()).build().expect("manager");
    let worker = manager.worker().queues(["filters"]).start();
    let mut expected = Vec::new();
    // (mode, runs, succeeds)
    for (how, want_runs, succeeds) in [
        ("io", 3, true),         // retried: an I/O error
        ("parse", 1, false),     // not retried: not named by retry_on
        ("forbidden", 1, false), // not retried: dont_retry_if wins
        ("panic", 1, false),     // not retried: a panic is not an I/O error
        ("later", 3, true),      // retried: retry_after is the task's own request
    ] {
        let key = fresh_key(how);
        let handle =
            fails_with::call(key.clone(), how.to_owned()).enqueue(&manager).await.expect("enqueue");
        expected.push((how, key, handle, want_runs, succeeds));
    }
    for (how, key, handle, want_runs, succeeds) in expected {
        let result = handle.result(WAIT).await;
        if succeeds {
            assert_eq!(result.expect(how), want_runs, "{how}");
        } else {
            let (kind, _) = failure(result);
            assert!(kind == "error" || kind == "panic", "{how}: {kind}");
        }
        assert_eq!(runs(&key), want_runs, "{how} ran {} times", runs(&key));
    }
    let letters = manager.dead_letters("filters", 0, 10).await.expect("dead letters");
    assert_eq!(letters.len(), 3);
    for letter in &letters {
        let envelope = letter.envelope().expect("a dead letter's envelope decodes");
        assert_eq!(envelope.attempt, 1, "not retried: {letter:?}");
        assert!(letter.at >= envelope.created_at);
    }
    assert!(letters.iter().any(|l| l.reason.contains("invalid digit")), "{letters:?}");

    // A call's policy cannot carry filters: they are code the worker runs.
    let err = fails_with::call(fresh_key("call"), "io".to_owned())
        .retry(io_only())
        .enqueue(&manager)
        .await
        .expect_err("filters on a call are refused");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("#[task(retry"), "{err}");
    worker.shutdown().await;
}

// ---------------------------------------------------------------------------------
// Delivery guarantees

#[task(queue = "once")]
async fn count_run(key: String) -> Result<u32, TaskError> {
    Ok(run_once_more(&key))
}

/// Waits until `queue` holds nothing ready, delayed or in flight.
async fn drained(manager: &Manager, queue: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = manager.admin().expect("admin").queue_stats(queue).await.expect("stats");
        if s.ready + s.delayed + s.in_flight == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{queue} never drained: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Enqueues the job `id` of `count_run(key)` again, as a producer that retried an
/// enqueue or a redelivery after a crash would.
async fn enqueue_again(manager: &Manager, id: dmq_core::TaskId, key: &str) {
    let mut envelope = count_run::call(key.to_owned()).into_envelope().expect("envelope");
    envelope.id = id;
    manager.enqueue_envelope(envelope).await.expect("enqueue the same id again");
}

async fn an_exactly_once_job_delivered_again_after_completion_does_not_run(backing: Backing) {
    let manager = backing.manager().await;
    let worker = manager.worker().queues(["once"]).guarantee(Guarantee::ExactlyOnce).start();

    // Completed, then delivered again: acknowledged without running.
    let key = fresh_key("exactly");
    let first = count_run::call(key.clone()).enqueue(&manager).await.expect("enqueue");
    assert_eq!(first.result(WAIT).await.expect("result"), 1);
    drained(&manager, "once").await;
    assert!(manager.broker().is_complete("once", first.id()).await.expect("read"));
    enqueue_again(&manager, first.id(), &key).await;
    drained(&manager, "once").await;
    assert_eq!(runs(&key), 1, "the job ran again");
    assert_eq!(first.result(WAIT).await.expect("result"), 1, "the first result stays");

    // Its result stored but not acknowledged (a crash in between): not run again, and
    // the acknowledgement records the completion.
    let key = fresh_key("stored");
    let id = dmq_core::TaskId::new();
    let value = rmp_serde::to_vec_named(&7u32).expect("encode");
    let stored = TaskOutcome::succeeded(value, 1, chrono::Utc::now());
    manager.backend().store(id, &stored, WAIT).await.expect("store");
    enqueue_again(&manager, id, &key).await;
    drained(&manager, "once").await;
    assert_eq!(runs(&key), 0, "a job whose success is stored ran");
    assert!(manager.broker().is_complete("once", id).await.expect("read"));
    assert_eq!(manager.result::<u32>(id).get().await.expect("read"), Some(7));
    assert_eq!(manager.dead_letter_count("once").await.expect("count"), 0);
    worker.shutdown().await;

    // The same redelivery under at-least-once runs again: the check above can fail.
    let worker = manager.worker().queues(["once"]).start();
    let key = fresh_key("at-least");
    let first = count_run::call(key.clone()).enqueue(&manager).await.expect("enqueue");
    assert_eq!(first.result(WAIT).await.expect("result"), 1);
    drained(&manager, "once").await;
    enqueue_again(&manager, first.id(), &key).await;
    drained(&manager, "once").await;
    assert_eq!(runs(&key), 2, "at least once runs a redelivered job");
    worker.shutdown().await;
}

#[task(queue = "once-by-attribute", guarantee = "exactly-once")]
async fn count_run_exactly_once(key: String) -> Result<u32, TaskError> {
    Ok(run_once_more(&key))
}

async fn a_tasks_guarantee_wins_over_the_workers(backing: Backing) {
    let manager = backing.manager().await;
    // The worker's own guarantee is the default, at least once.
    let worker = manager.worker().queues(["once-by-attribute"]).start();
    let key = fresh_key("attribute");
    let first = count_run_exactly_once::call(key.clone()).enqueue(&manager).await.expect("enqueue");
    assert_eq!(first.result(WAIT).await.expect("result"), 1);
    drained(&manager, "once-by-attribute").await;
    let mut envelope = count_run_exactly_once::call(key.clone()).into_envelope().expect("envelope");
    envelope.id = first.id();
    manager.enqueue_envelope(envelope).await.expect("enqueue the same id again");
    drained(&manager, "once-by-attribute").await;
    assert_eq!(runs(&key), 1, "the task's exactly-once was not honoured");
    worker.shutdown().await;
}

/// Runs for `millis`, failing if `fail` says so, after noting that it started.
#[task(queue = "at-most", max_retries = 3)]
async fn slow_run(key: String, millis: u64, fail: bool) -> Result<u32, TaskError> {
    let run = run_once_more(&key);
    tokio::time::sleep(Duration::from_millis(millis)).await;
    if fail {
        return Err(std::io::Error::other("failed, retryable").into());
    }
    Ok(run)
}

async fn an_at_most_once_job_is_acknowledged_before_it_runs_and_never_retried(backing: Backing) {
    let manager = backing.manager().await;
    let worker = manager
        .worker()
        .queues(["at-most"])
        .guarantee(Guarantee::AtMostOnce)
        .grace(Duration::from_millis(100))
        .start();

    // While it runs, the broker holds nothing: it was acknowledged on claim.
    let key = fresh_key("running");
    let handle =
        slow_run::call(key.clone(), 1_500, false).enqueue(&manager).await.expect("enqueue");
    started(&key).await;
    let stats = manager.admin().expect("admin").queue_stats("at-most").await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight), (0, 0), "held while running: {stats:?}");
    assert_eq!(handle.result(WAIT).await.expect("result"), 1);

    // A retryable failure is stored, never retried nor dead-lettered.
    let key = fresh_key("failing");
    // Retries allowed, 10 ms apart: at least once, the result would come after 4 runs.
    let gap = Backoff::fixed(Duration::from_millis(10)).expect("a backoff");
    let handle = slow_run::call(key.clone(), 0, true)
        .max_retries(3)
        .backoff(gap)
        .enqueue(&manager)
        .await
        .expect("enqueue");
    let (kind, message) = failure(handle.result(WAIT).await);
    assert_eq!(kind, "error");
    assert!(message.contains("failed, retryable"), "{message}");
    let stats = manager.admin().expect("admin").queue_stats("at-most").await.expect("stats");
    assert_eq!((stats.ready, stats.delayed, stats.dead), (0, 0, 0), "{stats:?}");
    drained(&manager, "at-most").await;
    assert_eq!(runs(&key), 1);

    // Cut off at the end of a shutdown's grace period: lost, not released.
    let key = fresh_key("cut-off");
    let handle =
        slow_run::call(key.clone(), 60_000, false).enqueue(&manager).await.expect("enqueue");
    started(&key).await;
    let report = worker.shutdown().await;
    assert_eq!(report.released, 0);
    let stats = manager.admin().expect("admin").queue_stats("at-most").await.expect("stats");
    assert_eq!((stats.ready, stats.delayed, stats.in_flight, stats.dead), (0, 0, 0, 0));
    assert!(handle.result(Duration::from_millis(200)).await.is_err(), "no result: it was lost");
}

/// The same check under at-least-once: the job is in flight while it runs.
async fn an_at_least_once_job_is_held_while_it_runs(backing: Backing) {
    let manager = backing.manager().await;
    let worker = manager.worker().queues(["at-most"]).start();
    let key = fresh_key("held");
    let handle =
        slow_run::call(key.clone(), 1_000, false).enqueue(&manager).await.expect("enqueue");
    started(&key).await;
    let stats = manager.admin().expect("admin").queue_stats("at-most").await.expect("stats");
    assert_eq!(stats.in_flight, 1, "{stats:?}");
    assert_eq!(handle.result(WAIT).await.expect("result"), 1);
    let outcome = manager.result::<u32>(handle.id()).outcome().await.expect("read");
    assert_eq!(outcome.map(|o| o.state), Some(TaskState::Succeeded));
    worker.shutdown().await;
}

common::on_both_brokers! {
    retry_filters_choose_what_is_retried;
    an_exactly_once_job_delivered_again_after_completion_does_not_run;
    an_at_most_once_job_is_acknowledged_before_it_runs_and_never_retried;
    an_at_least_once_job_is_held_while_it_runs;
    a_tasks_guarantee_wins_over_the_workers;
}

/// A result backend whose reads always fail for good, as a corrupt stored result does.
#[derive(Debug, Default)]
struct UnreadableBackend(dmq_core::InMemoryBackend);

#[async_trait::async_trait]
impl dmq_core::ResultBackend for UnreadableBackend {
    async fn store(
        &self,
        id: dmq_core::TaskId,
        outcome: &TaskOutcome,
        ttl: Duration,
    ) -> dmq_core::Result<()> {
        self.0.store(id, outcome, ttl).await
    }

    async fn store_fenced(
        &self,
        id: dmq_core::TaskId,
        outcome: &TaskOutcome,
        ttl: Duration,
        fence: u64,
    ) -> dmq_core::Result<bool> {
        self.0.store_fenced(id, outcome, ttl, fence).await
    }

    async fn get(&self, _id: dmq_core::TaskId) -> dmq_core::Result<Option<TaskOutcome>> {
        Err(Error::backend("the stored result is corrupt".to_owned(), false))
    }

    async fn wait(
        &self,
        id: dmq_core::TaskId,
        timeout: Duration,
    ) -> dmq_core::Result<Option<TaskOutcome>> {
        self.0.wait(id, timeout).await
    }
}

/// An exactly-once job whose completion cannot be read for good is dead-lettered
/// with the reason, neither run nor handed back to come straight round again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exactly_once_job_whose_state_cannot_be_read_is_dead_lettered() {
    let manager =
        Manager::builder().backend(UnreadableBackend::default()).build().expect("manager");
    let worker = manager.worker().queues(["once"]).guarantee(Guarantee::ExactlyOnce).start();
    let key = fresh_key("unreadable");
    count_run::call(key.clone()).enqueue(&manager).await.expect("enqueue");
    let deadline = std::time::Instant::now() + WAIT;
    let letters = loop {
        let letters = manager.dead_letters("once", 0, 10).await.expect("dead letters");
        if !letters.is_empty() {
            break letters;
        }
        assert!(std::time::Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(letters[0].reason.contains("the stored result is corrupt"), "{letters:?}");
    assert_eq!(runs(&key), 0);
    drained(&manager, "once").await;
    worker.shutdown().await;
}
