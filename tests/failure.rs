//! Failure handling end to end, every scenario on both brokers: the in-memory one, and
//! Redis in a fresh namespace removed afterwards. Retries and their backoff gaps, fatal
//! errors, the dead-letter queue (paging, requeue, delete, purge, its cap), bad input
//! in the middle of good jobs, expiry, idempotency keys, and a worker stopped while a
//! retry waits.
//!
//! The tasks record each run under the job's id. Ids are unique, so the in-memory and
//! Redis variants of a scenario, which share this binary's tasks and run in parallel,
//! never see each other's runs. Each scenario has queues of its own.

mod common;

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use dmq_core::{
    Backoff, DEFAULT_PRIORITY, Envelope, Error, FailureKind, Job, Manager, RetryPolicy,
    TaskContext, TaskError, TaskId, TaskState, task,
};

use common::{Backing, WAIT, encode_args, failure, letter_ids, queue_counts, stored, succeeded};

common::on_both_brokers! {
    a_task_failing_twice_succeeds_on_attempt_3_after_the_policy_s_gaps;
    a_fatal_error_is_dead_lettered_after_one_attempt_with_retries_left;
    dead_letters_page_newest_first_and_requeue_delete_and_purge;
    a_requeued_dead_letter_runs_again_whatever_its_key_says;
    a_full_dead_letter_queue_drops_the_oldest_and_counts_them;
    bad_input_among_a_thousand_good_jobs_is_dead_lettered_at_once_and_the_worker_carries_on;
    an_envelope_of_the_wrong_shape_is_dead_lettered_without_echoing_its_contents;
    a_job_whose_envelope_names_another_id_is_dead_lettered_unrun;
    an_expired_job_never_runs;
    a_second_enqueue_with_the_same_idempotency_key_enqueues_nothing;
    a_second_enqueue_with_an_id_of_the_callers_enqueues_nothing;
    a_worker_stopped_during_a_backoff_wait_loses_nothing;
    a_remote_consumers_nack_follows_the_tasks_retry_policy_function;
}

/// When each job's runs started, by job id.
static STARTS: Mutex<BTreeMap<TaskId, Vec<Instant>>> = Mutex::new(BTreeMap::new());

/// Records that job `id` starts a run; returns which run this is, from 1.
fn record_run(id: TaskId) -> usize {
    let mut starts = STARTS.lock().unwrap_or_else(PoisonError::into_inner);
    let runs = starts.entry(id).or_default();
    runs.push(Instant::now());
    runs.len()
}

/// When job `id`'s runs started, in order.
fn starts(id: TaskId) -> Vec<Instant> {
    STARTS.lock().unwrap_or_else(PoisonError::into_inner).get(&id).cloned().unwrap_or_default()
}

/// How many times job `id` has started.
fn runs(id: TaskId) -> usize {
    starts(id).len()
}

/// Fails its first two runs (a retryable error), succeeds on the third with its number.
/// The task allows no retries of its own: the calls set them.
#[task(name = "failure.fails_twice", queue = "failure-backoff")]
async fn fails_twice(ctx: TaskContext) -> Result<usize, TaskError> {
    let run = record_run(ctx.id());
    if run < 3 {
        return Err(std::io::Error::other(format!("run {run} failed")).into());
    }
    Ok(run)
}

async fn a_task_failing_twice_succeeds_on_attempt_3_after_the_policy_s_gaps(backing: Backing) {
    let manager = backing.manager().await;
    let worker = manager.worker().queues(["failure-backoff"]).start();
    // 1 s before the first retry, 2 s before the second.
    let s = Duration::from_secs(1);
    let backoff = Backoff::linear(s, s, 10 * s).expect("a valid backoff");
    let handle = fails_twice::call()
        .retry(RetryPolicy::new(2, backoff))
        .enqueue(&manager)
        .await
        .expect("enqueue");
    assert_eq!(handle.result(WAIT).await.expect("the third attempt succeeds"), 3);
    assert_eq!(stored(&manager, handle.id()).await.attempts, 3);

    let starts = starts(handle.id());
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps.len(), 2, "the task ran {} times, not 3", starts.len());
    eprintln!("gaps between the runs: {gaps:?}");
    // Each retry waited in the broker's delayed set for its delay: never much less
    // (the clock's and the promotion's slack), and not much more on a loaded machine.
    for (gap, want) in gaps.into_iter().zip([s, 2 * s]) {
        assert!(
            gap >= want.mul_f64(0.8) && gap <= want.mul_f64(1.5),
            "a retry started {gap:?} after the failed run; the policy says {want:?} (-20 %, +50 %)"
        );
    }
    worker.shutdown().await;
    assert_eq!(queue_counts(&manager, "failure-backoff").await, (0, 0, 0, 0));
}

/// Fails for good on every run, though it allows five retries.
#[task(name = "failure.declined", queue = "failure-fatal", max_retries = 5)]
async fn declined(ctx: TaskContext) -> Result<(), TaskError> {
    record_run(ctx.id());
    Err(TaskError::fatal("the card was declined for good"))
}

async fn a_fatal_error_is_dead_lettered_after_one_attempt_with_retries_left(backing: Backing) {
    let manager = backing.manager().await;
    let worker = manager.worker().queues(["failure-fatal"]).start();
    let handle = declined::call().enqueue(&manager).await.expect("enqueue");
    let id = handle.id();

    let (kind, message) = failure(handle.result(WAIT).await);
    assert_eq!((kind.as_str(), message.as_str()), ("fatal", "the card was declined for good"));
    assert_eq!(stored(&manager, id).await.attempts, 1);
    let letters = manager.dead_letters("failure-fatal", 0, 10).await.expect("dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].id, id);
    assert_eq!(letters[0].reason, "fatal: the card was declined for good");
    worker.shutdown().await;
    assert_eq!(runs(id), 1);
    assert_eq!(
        queue_counts(&manager, "failure-fatal").await,
        (0, 0, 0, 1),
        "no retry waits: the job is only in the dead-letter queue"
    );
}

/// Enqueues a `fails_twice` job on `queue` that may retry once, so it is dead-lettered
/// after its second run; waits for that and returns its id.
async fn dead_lettered_after_two_runs(manager: &Manager, queue: &str) -> TaskId {
    let once = Backoff::fixed(Duration::from_millis(50)).expect("a valid backoff");
    let handle = fails_twice::call()
        .queue(queue)
        .retry(RetryPolicy::new(1, once))
        .enqueue(manager)
        .await
        .expect("enqueue");
    let (kind, message) = failure(handle.result(WAIT).await);
    assert_eq!((kind.as_str(), message.as_str()), ("error", "run 2 failed"));
    assert_eq!(stored(manager, handle.id()).await.attempts, 2);
    handle.id()
}

async fn dead_letters_page_newest_first_and_requeue_delete_and_purge(backing: Backing) {
    const DLQ: &str = "failure-dlq";
    const OTHER: &str = "failure-dlq-other";
    let manager = backing.manager().await;
    let worker = manager.worker().queues([DLQ, OTHER]).start();
    // One after another, so they are dead-lettered in this order.
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(dead_lettered_after_two_runs(&manager, DLQ).await);
    }
    let newest_first: Vec<TaskId> = ids.iter().rev().copied().collect();

    // Count and pages.
    assert_eq!(manager.dead_letter_count(DLQ).await.expect("count"), 5);
    assert_eq!(letter_ids(&manager, DLQ, 0, 2).await, newest_first[0..2]);
    assert_eq!(letter_ids(&manager, DLQ, 2, 2).await, newest_first[2..4]);
    assert_eq!(letter_ids(&manager, DLQ, 4, 2).await, newest_first[4..]);
    assert_eq!(letter_ids(&manager, DLQ, 5, 2).await, Vec::<TaskId>::new());
    let letters = manager.dead_letters(DLQ, 0, 10).await.expect("dead letters");
    assert!(letters.iter().all(|l| l.reason == "error: run 2 failed"), "{letters:?}");

    // Requeue one into another queue: it runs again, from attempt 1.
    let unknown = TaskId::new();
    assert!(!manager.requeue_dead_letter(DLQ, unknown, None).await.expect("requeue"));
    assert!(manager.requeue_dead_letter(DLQ, ids[0], Some(OTHER)).await.expect("requeue"));
    assert_eq!(manager.dead_letter_count(DLQ).await.expect("count"), 4);
    assert_eq!(succeeded(&manager, ids[0]).await.attempts, 1, "attempts start over");
    assert_eq!(manager.result::<usize>(ids[0]).get().await.expect("value"), Some(3));
    assert_eq!(runs(ids[0]), 3);

    // Requeue all the others, back into their own queue.
    assert_eq!(manager.requeue_all_dead_letters(DLQ, None).await.expect("requeue all"), 4);
    assert_eq!(manager.dead_letter_count(DLQ).await.expect("count"), 0);
    for &id in &ids[1..] {
        assert_eq!(succeeded(&manager, id).await.attempts, 1, "attempts start over");
        assert_eq!(runs(id), 3);
    }

    // Delete one, purge the rest: none of them runs again.
    let mut doomed = Vec::new();
    for _ in 0..3 {
        doomed.push(dead_lettered_after_two_runs(&manager, DLQ).await);
    }
    assert!(manager.delete_dead_letter(DLQ, doomed[1]).await.expect("delete"));
    assert!(!manager.delete_dead_letter(DLQ, doomed[1]).await.expect("delete"), "deleted twice");
    assert_eq!(letter_ids(&manager, DLQ, 0, 10).await, [doomed[2], doomed[0]]);
    assert_eq!(manager.purge_dead_letters(DLQ).await.expect("purge"), 2);
    assert_eq!(manager.dead_letter_count(DLQ).await.expect("count"), 0);
    worker.shutdown().await;
    for queue in [DLQ, OTHER] {
        assert_eq!(queue_counts(&manager, queue).await, (0, 0, 0, 0), "{queue}");
    }
    for id in doomed {
        assert_eq!(runs(id), 2, "a deleted or purged dead letter ran again");
    }
}

/// A dead-lettered job with an idempotency key (unique until done, and a plain one)
/// runs again when an operator requeues it: its key, which still names it, does not
/// make the requeue a no-op that deletes the letter.
async fn a_requeued_dead_letter_runs_again_whatever_its_key_says(backing: Backing) {
    const DLQ: &str = "failure-keyed";
    let manager = backing.manager().await;
    let worker = manager.worker().queues([DLQ]).start();
    let once = Backoff::fixed(Duration::from_millis(50)).expect("a valid backoff");
    let calls = [
        fails_twice::call().unique(dmq_core::UniqueFor::UntilDone),
        fails_twice::call().idempotency_key("keyed-letter"),
    ];
    for call in calls {
        let handle = call
            .queue(DLQ)
            .retry(RetryPolicy::new(1, once))
            .enqueue(&manager)
            .await
            .expect("enqueue");
        let (kind, _) = failure(handle.result(WAIT).await);
        assert_eq!(kind, "error");
        let deadline = Instant::now() + WAIT;
        while manager.dead_letter_count(DLQ).await.expect("count") == 0 {
            assert!(Instant::now() < deadline, "the job was not dead-lettered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(manager.requeue_dead_letter(DLQ, handle.id(), None).await.expect("requeue"));
        assert_eq!(succeeded(&manager, handle.id()).await.attempts, 1, "it ran again");
        assert_eq!(runs(handle.id()), 3);
    }
    worker.shutdown().await;
}

async fn a_full_dead_letter_queue_drops_the_oldest_and_counts_them(backing: Backing) {
    const CAPPED: &str = "failure-capped";
    let manager = backing.builder_with_dead_letter_cap(3).await.build().expect("manager");
    let worker = manager.worker().queues([CAPPED]).start();
    let mut ids = Vec::new();
    for _ in 0..5 {
        // One after another, so they are dead-lettered in this order.
        let handle = declined::call().queue(CAPPED).enqueue(&manager).await.expect("enqueue");
        assert_eq!(failure(handle.result(WAIT).await).0, "fatal");
        ids.push(handle.id());
    }
    let stats = manager.admin().expect("admin").queue_stats(CAPPED).await.expect("stats");
    assert_eq!((stats.dead, stats.dead_dropped), (3, 2), "{stats:?}");
    assert_eq!(letter_ids(&manager, CAPPED, 0, 10).await, [ids[4], ids[3], ids[2]], "the newest");

    // Purging empties the dead-letter queue and keeps the count of drops.
    assert_eq!(manager.purge_dead_letters(CAPPED).await.expect("purge"), 3);
    let stats = manager.admin().expect("admin").queue_stats(CAPPED).await.expect("stats");
    assert_eq!((stats.dead, stats.dead_dropped), (0, 2), "{stats:?}");
    worker.shutdown().await;
}

/// A well-behaved task that would be retried five times if it failed.
#[task(name = "failure.tally", queue = "failure-bad-input", max_retries = 5)]
async fn tally(ctx: TaskContext, n: u32) -> Result<u32, TaskError> {
    record_run(ctx.id());
    Ok(n)
}

/// Put into bad payloads: a reason or stored message containing it copied payload
/// bytes.
const MARKER: &str = "PAYLOAD-MARKER-7f3a9c";

/// The worker's limit on an envelope in the bad-input scenario.
const LIMIT: usize = 16 * 1024;

async fn bad_input_among_a_thousand_good_jobs_is_dead_lettered_at_once_and_the_worker_carries_on(
    backing: Backing,
) {
    const QUEUE: &str = "failure-bad-input";
    let manager = backing.builder().await.max_message_size(LIMIT).build().expect("manager");
    let broker = manager.broker();
    let tally_name = tally::call(0).task_name();

    let mut good = manager.enqueue_batch((0..500).map(tally::call)).await.expect("enqueue");
    // Bytes that are not MessagePack at all, with the marker in them.
    let garbage = TaskId::new();
    let bytes = [b"\xc1".as_slice(), MARKER.as_bytes()].concat();
    broker.enqueue(Job::new(garbage, QUEUE, DEFAULT_PRIORITY, None, bytes)).await.expect("enqueue");
    // A well-formed job of a known task, over the worker's size limit: the manager
    // refuses to enqueue it, so it goes to the broker directly.
    let mut big = Envelope::new(tally_name, QUEUE, encode_args(&(7u32,)));
    big.headers.insert("padding".to_owned(), MARKER.repeat(LIMIT / MARKER.len() + 1));
    let oversized = big.id;
    let bytes = big.encode(4 * LIMIT).expect("encode the envelope");
    let oversized_len = bytes.len();
    assert!(oversized_len > LIMIT);
    broker
        .enqueue(Job::new(oversized, QUEUE, DEFAULT_PRIORITY, None, bytes))
        .await
        .expect("enqueue");
    // A task no worker knows, and arguments that do not fit the task: both with retries
    // allowed, which must not be used.
    let mut envelope = Envelope::new("failure.no_such_task", QUEUE, encode_args(&(7u32,)));
    envelope.max_retries = Some(5);
    let unknown = manager.enqueue_envelope(envelope).await.expect("enqueue");
    let mut envelope = Envelope::new(tally_name, QUEUE, encode_args(&("seven", "eight")));
    envelope.max_retries = Some(5);
    let bad_args = manager.enqueue_envelope(envelope).await.expect("enqueue");
    good.extend(manager.enqueue_batch((500..1000).map(tally::call)).await.expect("enqueue"));

    // Started once everything is queued, the worker meets the bad input midway.
    let worker = manager.worker().concurrency(16).queues([QUEUE]).start();
    for (n, &id) in (0u32..).zip(&good) {
        assert_eq!(manager.result::<u32>(id).wait(WAIT).await.expect("a good job's result"), n);
    }

    let size_reason = format!(
        "undecodable: could not decode the job envelope: \
         the envelope is {oversized_len} bytes, over the {LIMIT}-byte limit"
    );
    let bad = [
        (garbage, FailureKind::Undecodable, 0, "undecodable: could not decode the job envelope: "),
        (oversized, FailureKind::Undecodable, 0, size_reason.as_str()),
        (
            unknown,
            FailureKind::UnknownTask,
            1,
            "unknown_task: no task named \"failure.no_such_task\" is registered in this worker",
        ),
        (
            bad_args,
            FailureKind::BadArgs,
            1,
            "bad_args: the arguments do not fit task \"failure.tally\", which takes (u32,): ",
        ),
    ];
    let mut failures = Vec::new();
    for (id, kind, attempts, _) in &bad {
        let outcome = manager.backend().wait(*id, WAIT).await.expect("wait").expect("a result");
        assert_eq!(outcome.state, TaskState::Failed, "{kind}");
        assert_eq!(outcome.attempts, *attempts, "{kind}: retried");
        let failed = outcome.failure.expect("a failure");
        assert_eq!(failed.kind, *kind);
        assert!(!failed.message.contains(MARKER), "{kind}: the stored message copies the payload");
        failures.push(failed);
    }
    // A job is dead-lettered before its failure is stored: all four are in by now.
    let letters = manager.dead_letters(QUEUE, 0, 10).await.expect("dead letters");
    assert_eq!(letters.len(), bad.len(), "{letters:?}");
    for ((id, kind, _, reason), failed) in bad.iter().zip(&failures) {
        let letter = letters.iter().find(|l| l.id == *id).expect("a dead letter of each bad job");
        assert!(letter.reason.starts_with(reason), "{kind}: {}", letter.reason);
        assert!(!letter.reason.contains(MARKER), "{kind}: the reason copies the payload");
        assert!(letter.reason.ends_with(&failed.message), "{} / {}", letter.reason, failed.message);
    }
    worker.shutdown().await;
    for (n, &id) in good.iter().enumerate() {
        assert_eq!(runs(id), 1, "good job {n} ran a number of times other than one");
    }
    assert_eq!(runs(bad_args), 0);
    assert_eq!(
        queue_counts(&manager, QUEUE).await,
        (0, 0, 0, 4),
        "no retry waits: the bad jobs are only in the dead-letter queue"
    );
}

/// serde's "invalid type: string \"...\"" error quotes the whole string (up to the
/// size limit); the worker must keep it out of the reason, the stored message and the
/// log.
async fn an_envelope_of_the_wrong_shape_is_dead_lettered_without_echoing_its_contents(
    backing: Backing,
) {
    const QUEUE: &str = "failure-wrong-shape";
    let manager = backing.manager().await;
    let worker = manager.worker().queues([QUEUE]).start();
    // Well-formed MessagePack that is no envelope: a string, and a map whose id is a
    // string rather than 16 bytes.
    let wrong_shapes = [
        rmp_serde::to_vec(MARKER).expect("encode"),
        rmp_serde::to_vec_named(&BTreeMap::from([("id", MARKER), ("task", "failure.tally")]))
            .expect("encode"),
    ];
    for bytes in wrong_shapes {
        let id = TaskId::new();
        let job = Job::new(id, QUEUE, DEFAULT_PRIORITY, None, bytes);
        manager.broker().enqueue(job).await.expect("enqueue");
        let outcome = manager.backend().wait(id, WAIT).await.expect("wait").expect("a result");
        let failed = outcome.failure.expect("a failure");
        assert_eq!(failed.kind, FailureKind::Undecodable);
        assert!(!failed.message.contains(MARKER), "copies the payload: {}", failed.message);
        let letters = manager.dead_letters(QUEUE, 0, 1).await.expect("dead letters");
        assert_eq!(letters[0].id, id);
        assert!(!letters[0].reason.contains(MARKER), "copies the payload: {}", letters[0].reason);
    }
    worker.shutdown().await;
}

/// The broker keeps a job under one id and its envelope names another (a producer in
/// another language that wrote two different ids): the worker refuses it rather than
/// run a task whose context gives an id its result is not stored under.
async fn a_job_whose_envelope_names_another_id_is_dead_lettered_unrun(backing: Backing) {
    const QUEUE: &str = "failure-other-id";
    let manager = backing.manager().await;
    let worker = manager.worker().queues([QUEUE]).start();
    let envelope = Envelope::new(tally::call(1).task_name(), QUEUE, encode_args(&(1u32,)));
    let (queued_as, named) = (TaskId::new(), envelope.id);
    let bytes = envelope.encode(dmq_core::DEFAULT_MAX_MESSAGE_SIZE).expect("encode");
    let job = Job::new(queued_as, QUEUE, DEFAULT_PRIORITY, None, bytes);
    manager.broker().enqueue(job).await.expect("enqueue");
    let outcome = manager.backend().wait(queued_as, WAIT).await.expect("wait").expect("a result");
    let failed = outcome.failure.expect("a failure");
    assert_eq!(failed.kind, FailureKind::Undecodable);
    let expected =
        format!("its envelope names the id {named}, but it was queued under the id {queued_as}");
    assert!(failed.message.ends_with(&expected), "{}", failed.message);
    let letters = manager.dead_letters(QUEUE, 0, 1).await.expect("dead letters");
    assert_eq!(letters[0].id, queued_as);
    assert!(letters[0].reason.ends_with(&expected), "{}", letters[0].reason);
    worker.shutdown().await;
    assert_eq!((runs(queued_as), runs(named)), (0, 0), "the task never ran");
}

#[task(name = "failure.too_late", queue = "failure-expiry")]
async fn too_late(ctx: TaskContext) -> Result<(), TaskError> {
    record_run(ctx.id());
    Ok(())
}

async fn an_expired_job_never_runs(backing: Backing) {
    const QUEUE: &str = "failure-expiry";
    let manager = backing.manager().await;
    let worker = manager.worker().queues([QUEUE]).start();
    // Due in 300 ms but expired after 100 ms; and expired a second ago.
    let late = too_late::call()
        .delay(Duration::from_millis(300))
        .expires_in(Duration::from_millis(100))
        .enqueue(&manager)
        .await
        .expect("enqueue");
    let past = too_late::call()
        .expires_at(Utc::now() - chrono::Duration::seconds(1))
        .enqueue(&manager)
        .await
        .expect("enqueue");
    for handle in [&late, &past] {
        let err = handle.result(WAIT).await.expect_err("an expired job has no value");
        assert!(matches!(err, Error::Expired { id } if id == handle.id()), "{err}");
        assert_eq!(stored(&manager, handle.id()).await.state, TaskState::Expired);
    }
    let letters = manager.dead_letters(QUEUE, 0, 10).await.expect("dead letters");
    assert_eq!(letters.len(), 2, "{letters:?}");
    let expiry_reason = |r: &str| r.starts_with("expired at ") && r.ends_with(" before it started");
    assert!(letters.iter().all(|l| expiry_reason(&l.reason)), "{letters:?}");
    // A job whose expiry is still ahead runs as usual on the same worker.
    let in_time = too_late::call().expires_in(WAIT).enqueue(&manager).await.expect("enqueue");
    in_time.result(WAIT).await.expect("a job within its expiry runs");
    worker.shutdown().await;
    assert_eq!((runs(late.id()), runs(past.id())), (0, 0), "an expired job ran");
    assert_eq!(runs(in_time.id()), 1);
}

#[task(name = "failure.charge", queue = "failure-idempotency")]
async fn charge(ctx: TaskContext, cents: u32) -> Result<u32, TaskError> {
    record_run(ctx.id());
    Ok(cents)
}

async fn a_second_enqueue_with_the_same_idempotency_key_enqueues_nothing(backing: Backing) {
    const QUEUE: &str = "failure-idempotency";
    let manager = backing.manager().await;
    let first =
        charge::call(500).idempotency_key("order-42").enqueue(&manager).await.expect("enqueue");
    let again =
        charge::call(700).idempotency_key("order-42").enqueue(&manager).await.expect("enqueue");
    assert_eq!(again.id(), first.id(), "the second enqueue names the first job");
    assert_eq!(manager.admin().expect("admin").queue_len(QUEUE).await.expect("len"), 1);

    let worker = manager.worker().queues([QUEUE]).start();
    assert_eq!(again.result(WAIT).await.expect("result"), 500, "the first call's work");
    worker.shutdown().await;
    assert_eq!(runs(first.id()), 1, "the work ran once");

    // The key is still known after its job ran; another key is another job.
    let third =
        charge::call(500).idempotency_key("order-42").enqueue(&manager).await.expect("enqueue");
    assert_eq!(third.id(), first.id());
    assert_eq!(queue_counts(&manager, QUEUE).await, (0, 0, 0, 0));
    let other =
        charge::call(500).idempotency_key("order-43").enqueue(&manager).await.expect("enqueue");
    assert_ne!(other.id(), first.id());
    assert_eq!(queue_counts(&manager, QUEUE).await, (1, 0, 0, 0));
}

/// A producer that chooses its job's id (`.id(..)`) and enqueues again, after a
/// timeout say, gets the first job's handle back, before and after the job ran; a
/// batch holding a waiting job's id adds nothing; an idempotency key of the call's
/// own decides over the id.
async fn a_second_enqueue_with_an_id_of_the_callers_enqueues_nothing(backing: Backing) {
    const QUEUE: &str = "failure-idempotency";
    let manager = backing.manager().await;
    let id = TaskId::new();
    let first = charge::call(500).id(id).enqueue(&manager).await.expect("enqueue");
    assert_eq!(first.id(), id, "the job has the caller's id");
    let again = charge::call(700).id(id).enqueue(&manager).await.expect("enqueue again");
    assert_eq!(again.id(), id);
    assert_eq!(queue_counts(&manager, QUEUE).await, (1, 0, 0, 0));
    let batch = manager.enqueue_batch([charge::call(1).id(id), charge::call(2)]).await;
    assert!(matches!(batch, Err(Error::DuplicateJob { id: dup, .. }) if dup == id), "{batch:?}");
    assert_eq!(queue_counts(&manager, QUEUE).await, (1, 0, 0, 0), "the batch added nothing");

    let worker = manager.worker().queues([QUEUE]).start();
    assert_eq!(again.result(WAIT).await.expect("result"), 500, "the first call's work");
    worker.shutdown().await;
    let third = charge::call(900).id(id).enqueue(&manager).await.expect("enqueue after it ran");
    assert_eq!(third.id(), id);
    assert_eq!(queue_counts(&manager, QUEUE).await, (0, 0, 0, 0), "known after it ran");
    assert_eq!(runs(id), 1, "the work ran once");

    // With a key of its own, the key decides: another key is another job, which a
    // queue holding no job of that id accepts.
    let keyed =
        charge::call(5).id(id).idempotency_key("order-44").enqueue(&manager).await.expect("e");
    assert_eq!(keyed.id(), id);
    assert_eq!(queue_counts(&manager, QUEUE).await, (1, 0, 0, 0));
}

/// How long the retry of `fails_once` waits.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Fails its first run, asking for a retry after [`RETRY_DELAY`]; then returns the
/// attempt it runs as.
#[task(name = "failure.fails_once", queue = "failure-handover", max_retries = 1)]
async fn fails_once(ctx: TaskContext) -> Result<u32, TaskError> {
    if record_run(ctx.id()) == 1 {
        let error = std::io::Error::other("the first run fails");
        return Err(TaskError::retry_after(error, RETRY_DELAY));
    }
    Ok(ctx.attempt())
}

async fn a_worker_stopped_during_a_backoff_wait_loses_nothing(backing: Backing) {
    const QUEUE: &str = "failure-handover";
    let manager = backing.manager().await;
    let first_worker = manager.worker().queues([QUEUE]).start();
    let handle = fails_once::call().enqueue(&manager).await.expect("enqueue");
    let id = handle.id();

    // Once the first run has failed and its retry waits in the delayed set, stop the
    // worker, well before the retry is due.
    let deadline = Instant::now() + WAIT;
    while !(runs(id) == 1 && queue_counts(&manager, QUEUE).await.1 == 1) {
        assert!(Instant::now() < deadline, "the first run never failed into a waiting retry");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first_start = starts(id)[0];
    assert!(
        first_start.elapsed() < RETRY_DELAY,
        "the retry was (nearly) due before the worker was told to stop: this run proves nothing"
    );
    let report = first_worker.shutdown().await;
    assert_eq!(report.released, 0, "no job was running");
    assert_eq!(runs(id), 1, "the stopping worker ran the retry");

    // With no worker running, the retry falls due and waits; nothing runs it or loses it.
    tokio::time::sleep_until((first_start + RETRY_DELAY + Duration::from_millis(500)).into()).await;
    assert_eq!(runs(id), 1);
    let (ready, delayed, in_flight, dead) = queue_counts(&manager, QUEUE).await;
    assert_eq!((ready + delayed, in_flight, dead), (1, 0, 0), "the retry is kept, due");

    // A new worker runs it: the second attempt succeeds.
    let second_worker = manager.worker().queues([QUEUE]).start();
    assert_eq!(handle.result(WAIT).await.expect("the retry succeeds"), 2);
    assert_eq!(stored(&manager, id).await.attempts, 2);
    second_worker.shutdown().await;
    assert_eq!(runs(id), 2);
    assert_eq!(queue_counts(&manager, QUEUE).await, (0, 0, 0, 0));
}

/// Two retries, ten minutes apart: far from the manager's default (no retry).
fn two_slow_retries() -> RetryPolicy {
    RetryPolicy::new(2, Backoff::fixed(Duration::from_secs(600)).expect("a backoff"))
}

/// Run only by remote consumers ([`dmq_core::Consumer`]), never by a worker here.
#[task(name = "failure.remote", queue = "failure-remote", retry = two_slow_retries)]
async fn remote_policy() -> Result<(), TaskError> {
    Ok(())
}

/// A failure a remote consumer reports is judged by the same retry settings a
/// worker's is: here the task's policy function, which a consumer in this binary
/// knows (its retry limit and its backoff), then the dead-letter queue.
async fn a_remote_consumers_nack_follows_the_tasks_retry_policy_function(backing: Backing) {
    const QUEUE: &str = "failure-remote";
    let manager = backing.manager().await;
    let handle = remote_policy::call().enqueue(&manager).await.expect("enqueue");
    let consumer = manager.consumer("remote-test");
    let queues = [QUEUE.to_owned()];
    for attempt in 1..=3 {
        if attempt > 1 {
            // Due in ten minutes: requeue it now, as the retry's backoff says.
            let letters = manager.admin().expect("admin").find_job(handle.id(), &queues);
            let found = letters.await.expect("find").expect("the retry waits");
            assert_eq!(found.state, dmq_core::JobState::Delayed, "attempt {attempt}");
            let due = found.at.expect("its due time") - Utc::now();
            assert!(due > chrono::Duration::minutes(9), "the task's backoff: {due}");
            let mut envelope = Envelope::decode(&found.payload, usize::MAX).expect("decode");
            envelope.eta = None;
            assert!(manager.admin().expect("admin").purge(QUEUE).await.expect("purge") == 1);
            manager.enqueue_envelope(envelope).await.expect("enqueue the retry now");
        }
        let claimed = consumer.claim(&queues, 1, WAIT, WAIT).await.expect("claim");
        assert_eq!(claimed.len(), 1, "attempt {attempt}");
        assert_eq!(claimed[0].envelope.attempt, attempt);
        let outcome =
            consumer.nack(&claimed[0].lease, &dmq_core::Nack::new("boom")).await.expect("nack");
        match (attempt, outcome) {
            (1 | 2, dmq_core::NackOutcome::Retried { attempt: next, .. }) => {
                assert_eq!(next, attempt + 1);
            }
            (3, dmq_core::NackOutcome::DeadLettered) => {}
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
    assert_eq!(letter_ids(&manager, QUEUE, 0, 10).await, vec![handle.id()]);
    assert_eq!(stored(&manager, handle.id()).await.state, TaskState::Failed);
}
