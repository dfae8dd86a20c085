//! Lifecycle events and callbacks end to end, on both brokers: which events each
//! path of a job emits, in which order and with which facts; callbacks that select
//! by rules; a slow callback that must not hold up the jobs, and one that panics; the
//! result an ending event reports, stored before it comes; a burst of events written
//! whole to the broker's event stream; and what flushing waits for.
//!
//! Each scenario builds its own manager with its own recording callbacks, so the
//! in-memory and Redis variants, which run in parallel, never see each other's events.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use dmq_core::{
    Backoff, Callback, DEFAULT_PRIORITY, Envelope, Event, EventKind, EventType, EventsFrom,
    FailureKind, Guarantee, Job, Manager, Rules, TaskError, TaskId, TaskState, async_trait, task,
};

use common::{Backing, WAIT, encode_args};

common::on_both_brokers! {
    a_successful_job_is_queued_started_and_completed;
    a_retried_then_exhausted_job_emits_retry_then_failed_then_dead_lettered;
    a_fatal_error_fails_and_dead_letters_after_one_run;
    an_unknown_task_is_not_found_failed_and_dead_lettered;
    an_expired_job_is_expired_and_dead_lettered_without_starting;
    an_undecodable_envelope_is_failed_and_dead_lettered;
    an_at_most_once_failure_is_failed_but_never_dead_lettered;
    a_delayed_job_is_queued_with_its_eta;
    a_callback_selecting_failures_sees_only_failures;
    rules_select_by_task_and_queue;
    a_callback_sleeping_for_seconds_does_not_hold_up_ten_thousand_jobs;
    a_panicking_callback_leaves_the_worker_and_the_other_callbacks_running;
    a_callback_finds_stored_the_result_an_ending_event_reports;
    a_burst_of_events_reaches_the_event_stream_whole_and_in_order;
    flushing_waits_for_a_callback_to_handle_what_it_was_sent;
}

const QUEUE: &str = "events";

#[task(name = "events.succeed", queue = "events")]
async fn succeed(x: i64) -> Result<i64, TaskError> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(x * 2)
}

#[task(name = "events.always_fails", queue = "events")]
async fn always_fails() -> Result<(), TaskError> {
    Err(TaskError::msg("the printer is on fire"))
}

#[task(name = "events.fatal", queue = "events")]
async fn fatal() -> Result<(), TaskError> {
    Err(TaskError::fatal("bad card number"))
}

#[task(name = "events.noop", queue = "events-bulk", ignore_result)]
async fn noop() -> Result<(), TaskError> {
    Ok(())
}

#[task(name = "events.other", queue = "events-other")]
async fn other() -> Result<(), TaskError> {
    Ok(())
}

/// Records every event its rules select.
#[derive(Default)]
struct Recorder {
    rules: Rules,
    seen: Mutex<Vec<Event>>,
}

impl Recorder {
    fn new(rules: Rules) -> Arc<Self> {
        Arc::new(Recorder { rules, seen: Mutex::default() })
    }

    fn all(&self) -> Vec<Event> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The events about job `id`, in the order the callback received them, but for
    /// the producer's Queued, which may arrive after a quick worker's first events:
    /// it goes first, where its time (taken before the job reached the broker) puts it.
    fn of(&self, id: TaskId) -> Vec<Event> {
        let (mut events, rest): (Vec<Event>, Vec<Event>) = self
            .all()
            .into_iter()
            .filter(|e| e.id == id)
            .partition(|e| e.event_type() == EventType::Queued);
        events.extend(rest);
        events
    }

    /// Waits for the events about job `id` to end with one of kind `last`, then
    /// returns them all.
    async fn until(&self, manager: &Manager, id: TaskId, last: EventType) -> Vec<Event> {
        let deadline = Instant::now() + WAIT;
        loop {
            manager.flush_events(WAIT).await;
            let events = self.of(id);
            if events.last().is_some_and(|e| e.event_type() == last) {
                return events;
            }
            assert!(Instant::now() < deadline, "no {last} event for {id}; saw {events:#?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[async_trait]
impl Callback for Recorder {
    fn rules(&self) -> Rules {
        self.rules.clone()
    }

    async fn on_event(&self, event: &Event) {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).push(event.clone());
    }
}

/// A manager on `backing` whose events go to `recorder`.
async fn recorded(backing: &Backing, recorder: &Arc<Recorder>) -> Manager {
    let callback: Arc<dyn Callback> = recorder.clone();
    backing.builder().await.shared_callback(callback).build().expect("manager")
}

fn types(events: &[Event]) -> Vec<EventType> {
    events.iter().map(Event::event_type).collect()
}

/// Asserts the facts every event of job `id` carries.
fn assert_about(events: &[Event], id: TaskId, task: &str, queue: &str) {
    for event in events {
        assert_eq!((event.id, event.task.as_str(), event.queue.as_str()), (id, task, queue));
    }
    for pair in events.windows(2) {
        assert!(pair[0].at <= pair[1].at, "events out of time order: {pair:#?}");
    }
}

/// Asserts that workers emitted every event but `Queued` (which the producer did),
/// all the same worker.
fn assert_workers(events: &[Event]) {
    let worker = events.iter().find_map(|e| e.worker.clone()).expect("a worker's event");
    for event in events {
        match event.kind {
            EventKind::Queued { .. } => assert_eq!(event.worker, None, "{event:?}"),
            _ => assert_eq!(event.worker.as_deref(), Some(worker.as_str()), "{event:?}"),
        }
    }
}

async fn a_successful_job_is_queued_started_and_completed(backing: Backing) {
    let recorder = Recorder::new(Rules::all());
    let manager = recorded(&backing, &recorder).await;
    let worker = manager.worker().queues([QUEUE]).start();
    let handle = succeed::call(21).enqueue(&manager).await.expect("enqueue");
    assert_eq!(handle.result(WAIT).await.expect("the result"), 42);
    let events = recorder.until(&manager, handle.id(), EventType::Completed).await;
    assert_eq!(types(&events), [EventType::Queued, EventType::Started, EventType::Completed]);
    assert_about(&events, handle.id(), "events.succeed", QUEUE);
    assert_workers(&events);
    assert!(events.iter().all(|e| e.attempt == 1), "{events:#?}");
    assert_eq!(events[0].kind, EventKind::Queued { eta: None });
    let EventKind::Completed { run_time } = events[2].kind else { unreachable!() };
    assert!(run_time >= Duration::from_millis(20), "the task sleeps 20 ms; ran {run_time:?}");
    assert!(run_time < WAIT, "{run_time:?}");
    worker.shutdown().await;
    // Nothing more comes for that job after it completed (shutdown flushed the bus).
    assert!(manager.flush_events(WAIT).await);
    assert_eq!(recorder.of(handle.id()).len(), 3);
}

async fn a_retried_then_exhausted_job_emits_retry_then_failed_then_dead_lettered(backing: Backing) {
    let recorder = Recorder::new(Rules::all());
    let manager = recorded(&backing, &recorder).await;
    let worker = manager.worker().queues([QUEUE]).start();
    let gap = Duration::from_millis(600);
    let handle = always_fails::call()
        .max_retries(1)
        .backoff(Backoff::fixed(gap).expect("a backoff"))
        .enqueue(&manager)
        .await
        .expect("enqueue");
    let events = recorder.until(&manager, handle.id(), EventType::DeadLettered).await;
    use EventType::{DeadLettered, Failed, Queued, Retry, Started};
    assert_eq!(types(&events), [Queued, Started, Retry, Started, Failed, DeadLettered]);
    assert_about(&events, handle.id(), "events.always_fails", QUEUE);
    assert_workers(&events);
    let attempts: Vec<u32> = events.iter().map(|e| e.attempt).collect();
    assert_eq!(attempts, [1, 1, 1, 2, 2, 2]);
    match &events[2].kind {
        EventKind::Retry { delay, error, run_time } => {
            assert_eq!(*delay, gap);
            assert!(*run_time < WAIT, "{run_time:?}");
            assert!(error.contains("the printer is on fire"), "{error}");
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    // The second run waits for the retry's delay (counted from before the retry was
    // written, which the Retry event is dated after: half the gap is a safe bound).
    assert!(events[3].at - events[2].at >= chrono::Duration::milliseconds(300), "{events:#?}");
    match &events[4].kind {
        EventKind::Failed { failure, error, run_time } => {
            assert_eq!(*failure, FailureKind::Error);
            assert!(error.contains("the printer is on fire"), "{error}");
            assert!(run_time.is_some());
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    match &events[5].kind {
        EventKind::DeadLettered { reason } => {
            assert!(reason.contains("the printer is on fire"), "{reason}");
            let letters = manager.dead_letters(QUEUE, 0, 1).await.expect("dead letters");
            assert_eq!(&letters[0].reason, reason);
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }
    worker.shutdown().await;
}

async fn a_fatal_error_fails_and_dead_letters_after_one_run(backing: Backing) {
    let recorder = Recorder::new(Rules::all());
    let manager = recorded(&backing, &recorder).await;
    let worker = manager.worker().queues([QUEUE]).start();
    let handle = fatal::call().max_retries(5).enqueue(&manager).await.expect("enqueue");
    let events = recorder.until(&manager, handle.id(), EventType::DeadLettered).await;
    use EventType::{DeadLettered, Failed, Queued, Started};
    assert_eq!(types(&events), [Queued, Started, Failed, DeadLettered]);
    assert!(
        matches!(&events[2].kind, EventKind::Failed { failure: FailureKind::Fatal, error, .. } if error.contains("bad card number")),
        "{events:#?}"
    );
    worker.shutdown().await;
}

async fn an_unknown_task_is_not_found_failed_and_dead_lettered(backing: Backing) {
    let recorder = Recorder::new(Rules::all());
    let manager = recorded(&backing, &recorder).await;
    let worker = manager.worker().queues([QUEUE]).start();
    let envelope = Envelope::new("events.nobody_home", QUEUE, encode_args(&()));
    let id = manager.enqueue_envelope(envelope).await.expect("enqueue");
    let events = recorder.until(&manager, id, EventType::DeadLettered).await;
    use EventType::{DeadLettered, Failed, NotFound, Queued};
    assert_eq!(types(&events), [Queued, NotFound, Failed, DeadLettered]);
    assert_about(&events, id, "events.nobody_home", QUEUE);
    assert_workers(&events);
    assert!(
        matches!(
            &events[2].kind,
            EventKind::Failed { failure: FailureKind::UnknownTask, run_time: None, .. }
        ),
        "{events:#?}"
    );
    worker.shutdown().await;
}

async fn an_expired_job_is_expired_and_dead_lettered_without_starting(backing: Backing) {
    let recorder = Recorder::new(Rules::all());
    let manager = recorded(&backing, &recorder).await;
    let worker = manager.worker().queues([QUEUE]).start();
    let expired_at = Utc::now() - chrono::Duration::seconds(1);
    let handle = succeed::call(1).expires_at(expired_at).enqueue(&manager).await.expect("enqueue");
    let events = recorder.until(&manager, handle.id(), EventType::DeadLettered).await;
    use EventType::{DeadLettered, Expired, Queued};
    assert_eq!(types(&events), [Queued, Expired, DeadLettered]);
    assert_about(&events, handle.id(), "events.succeed", QUEUE);
    match &events[1].kind {
        // The envelope keeps times to the millisecond.
        EventKind::Expired { expired_at: at } => {
            assert!((*at - expired_at).num_milliseconds().abs() <= 1, "{at} vs {expired_at}");
        }
        other => panic!("expected an expiry, got {other:?}"),
    }
    worker.shutdown().await;
}

async fn an_undecodable_envelope_is_failed_and_dead_lettered(backing: Backing) {
    let recorder = Recorder::new(Rules::all());
    let manager = recorded(&backing, &recorder).await;
    let worker = manager.worker().queues([QUEUE]).start();
    let id = TaskId::new();
    let job = Job::new(id, QUEUE, DEFAULT_PRIORITY, None, b"\xc1 not messagepack".to_vec());
    manager.broker().enqueue(job).await.expect("enqueue");
    let events = recorder.until(&manager, id, EventType::DeadLettered).await;
    // Enqueued behind the manager's back: no Queued event. The task is unknown.
    assert_eq!(types(&events), [EventType::Failed, EventType::DeadLettered]);
    assert_about(&events, id, "", QUEUE);
    assert!(
        matches!(&events[0].kind, EventKind::Failed { failure: FailureKind::Undecodable, .. }),
        "{events:#?}"
    );
    worker.shutdown().await;
}

async fn an_at_most_once_failure_is_failed_but_never_dead_lettered(backing: Backing) {
    let recorder = Recorder::new(Rules::all());
    let manager = recorded(&backing, &recorder).await;
    let worker = manager.worker().queues([QUEUE]).guarantee(Guarantee::AtMostOnce).start();
    let handle = always_fails::call().max_retries(3).enqueue(&manager).await.expect("enqueue");
    let ok = succeed::call(2).enqueue(&manager).await.expect("enqueue");
    let events = recorder.until(&manager, handle.id(), EventType::Failed).await;
    assert_eq!(types(&events), [EventType::Queued, EventType::Started, EventType::Failed]);
    let done = recorder.until(&manager, ok.id(), EventType::Completed).await;
    assert_eq!(types(&done), [EventType::Queued, EventType::Started, EventType::Completed]);
    worker.shutdown().await;
    assert_eq!(recorder.of(handle.id()).len(), 3, "{:#?}", recorder.of(handle.id()));
    assert_eq!(manager.dead_letter_count(QUEUE).await.expect("count"), 0);
}

async fn a_delayed_job_is_queued_with_its_eta(backing: Backing) {
    let recorder = Recorder::new(Rules::all());
    let manager = recorded(&backing, &recorder).await;
    let worker = manager.worker().queues([QUEUE]).start();
    let before = Utc::now();
    let handle = succeed::call(5)
        .delay(Duration::from_millis(300))
        .enqueue(&manager)
        .await
        .expect("enqueue");
    let events = recorder.until(&manager, handle.id(), EventType::Completed).await;
    let EventKind::Queued { eta: Some(eta) } = events[0].kind else {
        panic!("expected a Queued event with an eta: {events:#?}");
    };
    assert!(eta >= before + chrono::Duration::milliseconds(299), "{eta} vs {before}");
    assert!(events[1].at >= eta, "started before its eta: {events:#?}");
    worker.shutdown().await;
}

async fn a_callback_selecting_failures_sees_only_failures(backing: Backing) {
    let everything = Recorder::new(Rules::all());
    let failed_only = Recorder::new(Rules::all().events([EventType::Failed]));
    let failures = Recorder::new(Rules::failures());
    let manager = backing
        .builder()
        .await
        .shared_callback(everything.clone())
        .shared_callback(failed_only.clone())
        .shared_callback(failures.clone())
        .build()
        .expect("manager");
    let worker = manager.worker().queues([QUEUE]).start();
    let mut failing = Vec::new();
    let mut fine = Vec::new();
    for i in 0..5 {
        fine.push(succeed::call(i).enqueue(&manager).await.expect("enqueue").id());
        failing.push(fatal::call().enqueue(&manager).await.expect("enqueue").id());
    }
    for id in &failing {
        everything.until(&manager, *id, EventType::DeadLettered).await;
    }
    for id in &fine {
        everything.until(&manager, *id, EventType::Completed).await;
    }
    worker.shutdown().await;
    let seen = failed_only.all();
    assert_eq!(seen.len(), failing.len(), "{seen:#?}");
    assert!(seen.iter().all(|e| e.event_type() == EventType::Failed), "{seen:#?}");
    let mut ids: Vec<TaskId> = seen.iter().map(|e| e.id).collect();
    ids.sort();
    failing.sort();
    assert_eq!(ids, failing);
    // Failures in the wider sense: a Failed and a DeadLettered for each failing job.
    let wider = failures.all();
    assert_eq!(wider.len(), 2 * failing.len(), "{wider:#?}");
    assert!(wider.iter().all(|e| failing.contains(&e.id)), "{wider:#?}");
    assert!(everything.all().len() > wider.len());
}

async fn rules_select_by_task_and_queue(backing: Backing) {
    let by_task = Recorder::new(Rules::all().tasks(["events.other"]));
    let by_queue = Recorder::new(Rules::all().queues([QUEUE]).events([EventType::Completed]));
    let manager = backing
        .builder()
        .await
        .shared_callback(by_task.clone())
        .shared_callback(by_queue.clone())
        .build()
        .expect("manager");
    let worker = manager.worker().queues([QUEUE, "events-other"]).start();
    let mine = succeed::call(1).enqueue(&manager).await.expect("enqueue");
    let theirs = other::call().enqueue(&manager).await.expect("enqueue");
    mine.result(WAIT).await.expect("result");
    theirs.result(WAIT).await.expect("result");
    by_task.until(&manager, theirs.id(), EventType::Completed).await;
    by_queue.until(&manager, mine.id(), EventType::Completed).await;
    worker.shutdown().await;
    assert!(by_task.all().iter().all(|e| e.task == "events.other"), "{:#?}", by_task.all());
    assert_eq!(by_task.all().len(), 3);
    assert_eq!(types(&by_queue.all()), [EventType::Completed]);
    assert_eq!(by_queue.all()[0].id, mine.id());
}

/// Sleeps on every event, far longer than the jobs take.
struct Sleepy {
    handled: AtomicU64,
}

#[async_trait]
impl Callback for Sleepy {
    async fn on_event(&self, _event: &Event) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(SLEEPY_NAP).await;
    }
}

/// How long `Sleepy` sleeps on each event: longer than the whole drain may take, so
/// that a single nap on the path of a single job fails the test.
const SLEEPY_NAP: Duration = Duration::from_secs(60);

/// How long a worker takes to run `jobs` no-op jobs enqueued up front on `manager`.
async fn drain(manager: &Manager, jobs: usize) -> Duration {
    let calls = (0..jobs).map(|_| noop::call());
    let ids = manager.enqueue_batch(calls).await.expect("enqueue");
    let started = Instant::now();
    let worker = manager.worker().queues(["events-bulk"]).concurrency(64).start();
    let deadline = started + WAIT * 4;
    loop {
        let (ready, delayed, in_flight, _) = common::queue_counts(manager, "events-bulk").await;
        if ready + delayed + in_flight == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{jobs} jobs did not drain; {ready} left");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    worker.shutdown().await;
    assert_eq!(ids.len(), jobs);
    took
}

async fn a_callback_sleeping_for_seconds_does_not_hold_up_ten_thousand_jobs(backing: Backing) {
    const JOBS: usize = 10_000;
    let plain = backing.manager().await;
    let baseline = drain(&plain, JOBS).await;
    let sleepy = Arc::new(Sleepy { handled: AtomicU64::new(0) });
    let callback: Arc<dyn Callback> = sleepy.clone();
    let buffer = 1_000;
    let manager = backing
        .builder()
        .await
        .shared_callback(callback)
        .event_buffer(buffer)
        .build()
        .expect("manager");
    let slowed = drain(&manager, JOBS).await;
    // A generous bound (the two runs share the machine with the other tests) that
    // still fails if the callback were on the jobs' path: one nap per event would take
    // days, and even one in the path of a single job adds a minute. The cost itself is
    // measured by `dmq bench --slow-callback`.
    let bound = baseline * 2 + Duration::from_secs(4);
    assert!(bound < SLEEPY_NAP, "the drain without a callback took {baseline:?}");
    assert!(slowed <= bound, "with a sleeping callback {slowed:?}, without {baseline:?}");
    // Queued, Started and Completed for each job; the callback took one and slept.
    let stats = manager.event_listeners();
    let callback_stats = stats.iter().find(|s| s.name.ends_with("Sleepy")).expect("its stats");
    let events = 3 * JOBS as u64;
    assert_eq!(callback_stats.delivered + callback_stats.dropped, events, "{stats:?}");
    // It takes one event per nap: all it was handed is its queue and what it took.
    let handled = sleepy.handled.load(Ordering::Relaxed);
    assert!(
        handled <= 1 + slowed.as_secs() / SLEEPY_NAP.as_secs(),
        "{handled} handled in {slowed:?}"
    );
    assert!(callback_stats.delivered <= buffer as u64 + handled, "{stats:?}");
    assert!(callback_stats.dropped >= events - buffer as u64 - handled, "{stats:?}");
}

/// Panics on every Started event.
#[derive(Default)]
struct Panicky {
    calls: AtomicU64,
}

#[async_trait]
impl Callback for Panicky {
    async fn on_event(&self, event: &Event) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        assert!(event.event_type() != EventType::Started, "a callback with a bug");
    }
}

async fn a_panicking_callback_leaves_the_worker_and_the_other_callbacks_running(backing: Backing) {
    let panicky = Arc::new(Panicky::default());
    let recorder = Recorder::new(Rules::all());
    let callback: Arc<dyn Callback> = panicky.clone();
    let manager = backing
        .builder()
        .await
        .shared_callback(callback)
        .shared_callback(recorder.clone())
        .build()
        .expect("manager");
    let worker = manager.worker().queues([QUEUE]).start();
    let monitor = worker.monitor();
    for round in 0..3 {
        for i in 0..5 {
            let x = round * 10 + i;
            let handle = succeed::call(x).enqueue(&manager).await.expect("enqueue");
            assert_eq!(handle.result(WAIT).await.expect("a result"), x * 2);
        }
    }
    // Each Completed comes just after its result is stored: wait for all 45 events.
    let deadline = Instant::now() + WAIT;
    while recorder.all().len() < 45 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(manager.flush_events(WAIT).await);
    // It was called for every event, before and after each panic.
    assert_eq!(panicky.calls.load(Ordering::Relaxed), 45);
    assert_eq!(recorder.all().len(), 45);
    assert!(monitor.vitals().loops_alive(), "{:?}", monitor.vitals());
    worker.shutdown().await;
}

/// Reads the result of a job the moment an event says it ended, as a callback that
/// reacts to `Failed` by fetching the failure would.
#[derive(Default)]
struct ResultReader {
    manager: OnceLock<Manager>,
    /// Each ending event's kind, with the state of the result found on receiving it.
    seen: Mutex<Vec<(EventType, TaskId, Option<TaskState>)>>,
}

#[async_trait]
impl Callback for ResultReader {
    fn rules(&self) -> Rules {
        use EventType::{Completed, DeadLettered, Expired, Failed, NotFound};
        Rules::all().events([Completed, Failed, DeadLettered, NotFound, Expired])
    }

    async fn on_event(&self, event: &Event) {
        let manager = self.manager.get().expect("the manager, set before any job");
        let found = manager.backend().get(event.id).await.expect("reading the result");
        let state = found.map(|outcome| outcome.state);
        let entry = (event.event_type(), event.id, state);
        self.seen.lock().unwrap_or_else(PoisonError::into_inner).push(entry);
    }
}

/// Runs jobs of every ending under `guarantee` and waits for `expected` ending events.
async fn read_results_on_ending_events(backing: &Backing, guarantee: Guarantee, expected: usize) {
    let reader = Arc::new(ResultReader::default());
    let callback: Arc<dyn Callback> = reader.clone();
    let manager = backing.builder().await.shared_callback(callback).build().expect("manager");
    reader.manager.set(manager.clone()).expect("set once");
    let worker = manager.worker().queues([QUEUE]).guarantee(guarantee).start();
    for i in 0..10 {
        succeed::call(i).enqueue(&manager).await.expect("enqueue");
        if guarantee == Guarantee::AtMostOnce {
            always_fails::call().enqueue(&manager).await.expect("enqueue");
        } else {
            fatal::call().enqueue(&manager).await.expect("enqueue");
        }
    }
    if guarantee != Guarantee::AtMostOnce {
        let expired_at = Utc::now() - chrono::Duration::seconds(1);
        for i in 0..5 {
            succeed::call(i).expires_at(expired_at).enqueue(&manager).await.expect("enqueue");
            let envelope = Envelope::new("events.nobody_home", QUEUE, encode_args(&()));
            manager.enqueue_envelope(envelope).await.expect("enqueue");
        }
    }
    let deadline = Instant::now() + WAIT;
    let seen = loop {
        manager.flush_events(WAIT).await;
        let seen = reader.seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if seen.len() >= expected {
            break seen;
        }
        assert!(Instant::now() < deadline, "{} of {expected} ending events: {seen:#?}", seen.len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    worker.shutdown().await;
    assert_eq!(seen.len(), expected, "{seen:#?}");
    for (kind, id, state) in &seen {
        let want = match kind {
            EventType::Completed => TaskState::Succeeded,
            EventType::Expired => TaskState::Expired,
            EventType::DeadLettered => {
                let expired = seen.iter().any(|(k, i, _)| i == id && *k == EventType::Expired);
                if expired { TaskState::Expired } else { TaskState::Failed }
            }
            _ => TaskState::Failed,
        };
        assert_eq!(*state, Some(want), "{kind} of {id} came before its result was stored");
    }
}

async fn a_callback_finds_stored_the_result_an_ending_event_reports(backing: Backing) {
    // At least once: 10 Completed; 10 fatal failures, Failed + DeadLettered each; 5
    // expired, Expired + DeadLettered; 5 unknown, NotFound + Failed + DeadLettered.
    read_results_on_ending_events(&backing, Guarantee::AtLeastOnce, 10 + 20 + 10 + 15).await;
    // Exactly once ends its jobs the same way, through the broker's completion record.
    read_results_on_ending_events(&backing, Guarantee::ExactlyOnce, 10 + 20 + 10 + 15).await;
    // At most once: 10 Completed, 10 Failed.
    read_results_on_ending_events(&backing, Guarantee::AtMostOnce, 20).await;
}

async fn a_burst_of_events_reaches_the_event_stream_whole_and_in_order(backing: Backing) {
    // Three batches' worth and more (the writer takes up to 512 events a write), all
    // queued at once by one batch enqueue.
    const JOBS: usize = 1_500;
    let manager = backing.builder().await.event_stream(true).build().expect("manager");
    let ids = manager.enqueue_batch((0..JOBS).map(|_| noop::call())).await.expect("enqueue");
    assert!(manager.flush_events(WAIT).await, "the stream writer did not catch up");
    let mut read = Vec::new();
    let mut from = EventsFrom::Oldest;
    loop {
        let page = manager
            .broker()
            .event_stream()
            .expect("stream")
            .read_events(&from, 1_000, Duration::ZERO)
            .await
            .expect("read");
        assert_eq!(page.skipped, 0);
        if page.events.is_empty() {
            break;
        }
        read.extend(page.events);
        from = EventsFrom::After(page.cursor);
    }
    assert!(read.iter().all(|e| e.event_type() == EventType::Queued), "{read:#?}");
    let read_ids: Vec<TaskId> = read.iter().map(|e| e.id).collect();
    assert_eq!(read_ids, ids, "the stream holds {} of the {JOBS} Queued events", read.len());
    let stats = manager.event_listeners();
    let stream = stats.iter().find(|s| s.name == "event-stream").expect("the stream's stats");
    assert_eq!((stream.delivered, stream.dropped), (JOBS as u64, 0), "{stats:?}");
}

/// Takes a while over each event, and counts those it finished.
#[derive(Default)]
struct Dawdler {
    finished: AtomicU64,
}

#[async_trait]
impl Callback for Dawdler {
    async fn on_event(&self, _event: &Event) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.finished.fetch_add(1, Ordering::Relaxed);
    }
}

async fn flushing_waits_for_a_callback_to_handle_what_it_was_sent(backing: Backing) {
    let dawdler = Arc::new(Dawdler::default());
    let callback: Arc<dyn Callback> = dawdler.clone();
    let manager = backing.builder().await.shared_callback(callback).build().expect("manager");
    for i in 0..3 {
        succeed::call(i).enqueue(&manager).await.expect("enqueue");
    }
    // Three Queued events, 100 ms each: all done once the flush returns.
    assert!(manager.flush_events(WAIT).await, "the flush timed out");
    assert_eq!(dawdler.finished.load(Ordering::Relaxed), 3);
    // And one that times out says so.
    for i in 0..5 {
        succeed::call(i).enqueue(&manager).await.expect("enqueue");
    }
    assert!(
        !manager.flush_events(Duration::from_millis(50)).await,
        "500 ms of work flushed in 50 ms"
    );
}
