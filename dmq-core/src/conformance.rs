//! The contracts every [`Broker`] and [`ResultBackend`] must keep, as reusable tests
//! (enabled by the `test-util` feature).
//!
//! Implement [`Fixture`] for a type that sets up a fresh broker and backend (and
//! cleans them up), then generate one `#[tokio::test]` per contract:
//!
//! ```ignore
//! struct Memory(Arc<InMemoryBroker>, Arc<InMemoryBackend>);
//! #[async_trait::async_trait]
//! impl dmq_core::conformance::Fixture for Memory { /* ... */ }
//!
//! dmq_core::broker_conformance_tests!(Memory);
//! dmq_core::backend_conformance_tests!(Memory);
//! ```
//!
//! The checks use real time with generous bounds; they prove behaviour, not speed.

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use tokio::time::Instant;

use crate::backend::{ResultBackend, TaskOutcome};
use crate::broker::{Broker, Delivery, EventsFrom, Job, WorkerInfo};
use crate::error::Error;
use crate::events::{Event, EventKind};
use crate::task::{FailureKind, TaskId};

/// Sets up a fresh broker and backend for one check, and cleans up after it.
#[async_trait]
pub trait Fixture: Send + Sync + Sized + 'static {
    /// A fresh, empty broker and backend (a new namespace, say).
    async fn setup() -> Self;
    /// The broker under test.
    fn broker(&self) -> Arc<dyn Broker>;
    /// The backend under test.
    fn backend(&self) -> Arc<dyn ResultBackend>;
    /// Removes whatever the check left behind. Runs even when the check failed.
    async fn teardown(self) {}
}

/// Runs one broker check against a fresh fixture.
pub async fn run_broker<F: Fixture, Fut: Future<Output = ()>>(check: fn(Arc<dyn Broker>) -> Fut) {
    let fixture = F::setup().await;
    let outcome = AssertUnwindSafe(check(fixture.broker())).catch_unwind().await;
    fixture.teardown().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Runs one backend check against a fresh fixture.
pub async fn run_backend<F: Fixture, Fut: Future<Output = ()>>(
    check: fn(Arc<dyn ResultBackend>) -> Fut,
) {
    let fixture = F::setup().await;
    let outcome = AssertUnwindSafe(check(fixture.backend())).catch_unwind().await;
    fixture.teardown().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_case {
    ($fixture:ty, $runner:ident, $module:ident, $name:ident) => {
        #[::dmq_core::__private::tokio::test(
            flavor = "multi_thread",
            worker_threads = 2,
            crate = "::dmq_core::__private::tokio"
        )]
        async fn $name() {
            $crate::conformance::$runner::<$fixture, _>($crate::conformance::$module::$name).await;
        }
    };
}

/// Generates one test per broker contract for a [`Fixture`] type.
#[macro_export]
macro_rules! broker_conformance_tests {
    ($fixture:ty) => {
        $crate::__broker_cases!(
            $fixture,
            claims_what_was_enqueued,
            claim_takes_at_most_max,
            higher_priority_is_claimed_first,
            queues_are_kept_apart,
            delayed_job_waits_for_its_eta,
            ack_forgets_the_job,
            stale_token_changes_nothing,
            release_returns_the_job_at_once,
            retry_holds_the_new_payload_until_its_eta,
            dead_letter_keeps_the_reason,
            renew_extends_the_lease,
            waiting_claim_is_woken_by_enqueue,
            batch_enqueue_adds_every_job,
            concurrent_claimers_never_share_a_job,
            a_queued_id_cannot_be_enqueued_again,
            a_batch_across_queues_with_a_duplicate_adds_nothing,
            a_release_does_not_count_as_a_delivery,
            a_retry_wakes_a_waiting_claim,
            an_id_dead_lettered_twice_keeps_both_letters,
            a_heartbeat_registers_the_worker_until_it_lapses,
            reap_returns_the_jobs_of_a_worker_whose_heartbeat_lapsed,
            reap_leaves_the_jobs_of_live_workers_alone,
            reap_leaves_what_a_lapsed_worker_claimed_after_its_lapse,
            a_lapsed_worker_that_stays_silent_loses_even_its_fresh_claims,
            a_dead_letter_can_be_taken_out_and_the_queue_purged,
            an_idempotency_key_admits_one_job_while_it_is_known,
            a_wake_up_is_not_lost_when_a_claimer_waits_on_several_queues,
            complete_settles_the_job_and_records_its_completion,
            each_fire_time_of_a_schedule_is_claimed_once,
            purge_removes_the_waiting_jobs_only,
            published_events_read_back_in_order,
            an_event_cursor_reads_on_where_its_page_ended,
            a_waiting_event_read_is_woken_by_a_publish,
            the_event_stream_cap_drops_the_oldest_events,
            fences_grow_with_every_claim_of_a_job,
            jobs_taken_back_come_one_at_a_time_to_run_alone,
            a_job_lost_while_running_alone_strikes_out_and_spares_its_neighbours,
            a_suspect_in_a_later_queue_is_not_kept_waiting_by_earlier_ones,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __broker_cases {
    ($fixture:ty, $($name:ident),* $(,)?) => {
        $( $crate::__conformance_case!($fixture, run_broker, broker, $name); )*
    };
}

/// Generates one test per result-backend contract for a [`Fixture`] type.
#[macro_export]
macro_rules! backend_conformance_tests {
    ($fixture:ty) => {
        $crate::__backend_cases!(
            $fixture,
            stored_outcome_reads_back,
            missing_outcome_is_none,
            store_replaces_the_outcome,
            wait_is_woken_by_store,
            wait_gives_none_after_its_timeout,
            outcome_expires_after_its_ttl,
            many_waiters_are_all_woken,
            a_fenced_store_replaces_no_success_and_no_later_run,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __backend_cases {
    ($fixture:ty, $($name:ident),* $(,)?) => {
        $( $crate::__conformance_case!($fixture, run_backend, backend, $name); )*
    };
}

const LONG: Duration = Duration::from_secs(30);

/// The worker the checks claim as, unless a check needs several.
const WORKER: &str = "conformance-worker";

fn worker(id: &str, queues: &[String]) -> WorkerInfo {
    WorkerInfo::new(id, "conformance-host", std::process::id(), queues.to_vec(), 4, Utc::now())
}

fn job(queue: &str, priority: u8, payload: &str) -> Job {
    Job::new(TaskId::new(), queue, priority, None, payload.as_bytes().to_vec())
}

fn delayed(queue: &str, eta: DateTime<Utc>, payload: &str) -> Job {
    Job::new(TaskId::new(), queue, 5, Some(eta), payload.as_bytes().to_vec())
}

fn queues(names: &[&str]) -> Vec<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

fn payloads(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| String::from_utf8_lossy(&d.payload).into_owned()).collect()
}

fn after(d: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Reaps `queues` until a reap moves something (another reaper may hold the lock for
/// a moment), for up to 10 s; returns what the last reap moved.
async fn reap_until_something_moves(b: &Arc<dyn Broker>, queues: &[String]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let moved = b.reap(queues).await.expect("reap");
        if moved > 0 || Instant::now() >= deadline {
            return moved;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Events of every kind, `n` of them, their times to the millisecond and run times
/// to the microsecond (as a stream may keep them).
fn events(n: usize) -> Vec<Arc<Event>> {
    let at = |i: usize| {
        let ms = 1_700_000_000_000 + i64::try_from(i).unwrap_or(0);
        DateTime::from_timestamp_millis(ms).unwrap_or_default()
    };
    (0..n)
        .map(|i| {
            let kind = match i % 8 {
                0 => EventKind::Queued { eta: (i % 16 == 8).then(|| at(i + 60_000)) },
                1 => EventKind::Started,
                2 => EventKind::Completed { run_time: Duration::from_micros(1_234) },
                3 => EventKind::Failed {
                    failure: FailureKind::Fatal,
                    error: format!("boom {i}"),
                    run_time: Some(Duration::from_micros(99)),
                },
                4 => EventKind::Retry {
                    delay: Duration::from_millis(1500),
                    error: "later".into(),
                    run_time: Duration::from_micros(700),
                },
                5 => EventKind::DeadLettered { reason: "fatal: boom".into() },
                6 => EventKind::NotFound,
                _ => EventKind::Expired { expired_at: at(i) },
            };
            let event = Event::new(kind, TaskId::new(), format!("task.{}", i % 3), "alpha", 1)
                .with_time(at(i));
            Arc::new(if i % 2 == 0 { event.with_worker("conformance-worker") } else { event })
        })
        .collect()
}

/// The events' ids, to compare what was read with what was published.
fn ids(events: &[impl std::borrow::Borrow<Event>]) -> Vec<TaskId> {
    events.iter().map(|e| e.borrow().id).collect()
}

/// The broker contracts, one function each.
pub mod broker {
    use super::*;

    /// Enqueued jobs come back from a claim, with their payloads, under leases.
    pub async fn claims_what_was_enqueued(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        for p in ["one", "two", "three"] {
            b.enqueue(job("alpha", 5, p)).await.expect("enqueue");
        }
        assert_eq!(b.queue_len("alpha").await.expect("len"), 3);
        let got = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!(payloads(&got), ["one", "two", "three"], "same priority is first in, first out");
        assert!(got.iter().all(|d| d.deliveries == 1 && d.lease.queue == "alpha"));
        let stats = b.queue_stats("alpha").await.expect("stats");
        assert_eq!((stats.ready, stats.in_flight), (0, 3));
    }

    /// A claim takes no more than `max` jobs.
    pub async fn claim_takes_at_most_max(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        for i in 0..5 {
            b.enqueue(job("alpha", 5, &i.to_string())).await.expect("enqueue");
        }
        assert_eq!(b.claim(WORKER, &q, 2, LONG, Duration::ZERO).await.expect("claim").len(), 2);
        assert_eq!(b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim").len(), 3);
        assert!(b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim").is_empty());
    }

    /// Among due jobs, priority 9 comes before 5 before 0.
    pub async fn higher_priority_is_claimed_first(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        for (priority, p) in [(0, "low"), (9, "high"), (5, "mid"), (9, "high2")] {
            b.enqueue(job("alpha", priority, p)).await.expect("enqueue");
        }
        let got = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!(payloads(&got), ["high", "high2", "mid", "low"]);
    }

    /// A claim on one queue never takes another queue's jobs.
    pub async fn queues_are_kept_apart(b: Arc<dyn Broker>) {
        b.enqueue(job("alpha", 5, "a")).await.expect("enqueue");
        b.enqueue(job("beta", 5, "b")).await.expect("enqueue");
        let got =
            b.claim(WORKER, &queues(&["beta"]), 10, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!(payloads(&got), ["b"]);
        assert_eq!(b.queue_len("alpha").await.expect("len"), 1);
        let both = b.claim(WORKER, &queues(&["beta", "alpha"]), 10, LONG, Duration::ZERO).await;
        assert_eq!(payloads(&both.expect("claim")), ["a"]);
    }

    /// A delayed job is not handed out before its eta, and is soon after.
    pub async fn delayed_job_waits_for_its_eta(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        let eta = after(Duration::from_millis(1500));
        b.enqueue(delayed("alpha", eta, "later")).await.expect("enqueue");
        assert!(b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim").is_empty());
        assert_eq!(b.queue_stats("alpha").await.expect("stats").delayed, 1);
        let got = b.claim(WORKER, &q, 10, LONG, Duration::from_secs(10)).await.expect("claim");
        assert!(Utc::now() >= eta, "claimed before its eta");
        assert_eq!(payloads(&got), ["later"]);
        assert!(Utc::now() < eta + chrono::Duration::seconds(5), "not claimed soon after its eta");
    }

    /// After an ack the job is gone, and a second ack is refused.
    pub async fn ack_forgets_the_job(b: Arc<dyn Broker>) {
        b.enqueue(job("alpha", 5, "x")).await.expect("enqueue");
        let got =
            b.claim(WORKER, &queues(&["alpha"]), 1, LONG, Duration::ZERO).await.expect("claim");
        b.ack(&got[0].lease).await.expect("ack");
        let stats = b.queue_stats("alpha").await.expect("stats");
        assert_eq!((stats.ready, stats.delayed, stats.in_flight, stats.dead), (0, 0, 0, 0));
        assert!(matches!(b.ack(&got[0].lease).await, Err(Error::LeaseLost { .. })));
    }

    /// `complete` settles the job as `ack` does and records its completion, per queue
    /// and for the time asked; a stale token completes nothing and records nothing.
    pub async fn complete_settles_the_job_and_records_its_completion(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        let (kept, brief, stale) =
            (job("alpha", 5, "kept"), job("alpha", 5, "brief"), job("alpha", 5, "stale"));
        let (kept_id, brief_id, stale_id) = (kept.id, brief.id, stale.id);
        b.enqueue_batch(vec![kept, brief]).await.expect("enqueue");
        assert!(!b.is_complete("alpha", kept_id).await.expect("read"));
        let got = b.claim(WORKER, &q, 2, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!(got.len(), 2);
        for d in &got {
            // "Forever" saturates; it must not overflow.
            let remember =
                if d.lease.id == kept_id { Duration::MAX } else { Duration::from_millis(300) };
            b.complete(&d.lease, remember).await.expect("complete");
        }
        let stats = b.queue_stats("alpha").await.expect("stats");
        assert_eq!((stats.ready, stats.delayed, stats.in_flight, stats.dead), (0, 0, 0, 0));
        assert!(b.is_complete("alpha", kept_id).await.expect("read"));
        assert!(b.is_complete("alpha", brief_id).await.expect("read"));
        assert!(!b.is_complete("beta", kept_id).await.expect("read"), "queues are kept apart");
        assert!(matches!(b.complete(&got[0].lease, LONG).await, Err(Error::LeaseLost { .. })));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!b.is_complete("alpha", brief_id).await.expect("read"), "forgotten in time");
        assert!(b.is_complete("alpha", kept_id).await.expect("read"));

        // A lease that passed to another worker records nothing.
        b.enqueue(stale).await.expect("enqueue");
        let first = b
            .claim(WORKER, &q, 1, Duration::from_millis(200), Duration::ZERO)
            .await
            .expect("claim");
        let second = b.claim(WORKER, &q, 1, LONG, Duration::from_secs(10)).await.expect("reclaim");
        assert_eq!(second.len(), 1);
        assert!(matches!(b.complete(&first[0].lease, LONG).await, Err(Error::LeaseLost { .. })));
        assert!(!b.is_complete("alpha", stale_id).await.expect("read"));
        b.complete(&second[0].lease, LONG).await.expect("the holder completes");
        assert!(b.is_complete("alpha", stale_id).await.expect("read"));
    }

    /// A schedule is registered once (its `since` stays), each fire time is claimed by
    /// exactly one of many concurrent claimers, an earlier fire time is refused after
    /// a later one, and the state lists the last and next fires.
    pub async fn each_fire_time_of_a_schedule_is_claimed_once(b: Arc<dyn Broker>) {
        let first = b.schedule_begin("tick", None).await.expect("begin");
        assert_eq!((first.last_fire, first.next_fire), (None, None));
        let t0 = after(Duration::from_secs(60));
        let again = b.schedule_begin("tick", Some(t0)).await.expect("begin");
        assert_eq!(again.since, first.since, "registered once");
        assert_eq!(again.next_fire.map(|t| t.timestamp_millis()), Some(t0.timestamp_millis()));

        let mut won = 0;
        for n in 0..5 {
            let fire = t0 + chrono::Duration::seconds(n);
            let next = Some(fire + chrono::Duration::seconds(1));
            let claims = (0..8).map(|_| {
                let b = Arc::clone(&b);
                tokio::spawn(async move { b.schedule_fire("tick", fire, next).await })
            });
            let granted = futures::future::join_all(claims)
                .await
                .into_iter()
                .filter(|r| matches!(r, Ok(Ok(true))))
                .count();
            assert_eq!(granted, 1, "fire {n} was claimed {granted} times");
            won += granted;
        }
        assert_eq!(won, 5);
        assert!(!b.schedule_fire("tick", t0, None).await.expect("fire"), "an old fire time");
        b.schedule_begin("another", None).await.expect("begin");
        let all = b.schedules().await.expect("list");
        let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["another", "tick"]);
        let last = t0 + chrono::Duration::seconds(4);
        assert_eq!(all[1].last_fire.map(|t| t.timestamp_millis()), Some(last.timestamp_millis()));
        let next = last + chrono::Duration::seconds(1);
        assert_eq!(all[1].next_fire.map(|t| t.timestamp_millis()), Some(next.timestamp_millis()));
    }

    /// `purge` removes ready and delayed jobs, and leaves the job in flight and the
    /// dead letters; a purged id can be enqueued again.
    pub async fn purge_removes_the_waiting_jobs_only(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        let running = job("alpha", 5, "running");
        b.enqueue(running).await.expect("enqueue");
        let held = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!(held.len(), 1);
        b.enqueue(job("alpha", 5, "dead")).await.expect("enqueue");
        let dead = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
        b.dead_letter(&dead[0].lease, "for the test").await.expect("dead-letter");
        let ready = job("alpha", 9, "ready");
        let ready_id = ready.id;
        b.enqueue_batch(vec![ready, job("alpha", 0, "low")]).await.expect("enqueue");
        b.enqueue(delayed("alpha", after(LONG), "later")).await.expect("enqueue");
        assert_eq!(b.purge("alpha").await.expect("purge"), 3);
        let stats = b.queue_stats("alpha").await.expect("stats");
        assert_eq!((stats.ready, stats.delayed, stats.in_flight, stats.dead), (0, 0, 1, 1));
        assert_eq!(b.purge("alpha").await.expect("purge"), 0);
        assert_eq!(b.purge("never-used").await.expect("purge"), 0);
        // The purged id is forgotten, and the job in flight still settles.
        b.enqueue(Job::new(ready_id, "alpha", 5, None, b"again".to_vec())).await.expect("again");
        b.ack(&held[0].lease).await.expect("ack");
    }

    /// Once a lease expires and another worker claims the job, the first worker's
    /// token is refused by every settling call and changes nothing.
    pub async fn stale_token_changes_nothing(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        b.enqueue(job("alpha", 5, "x")).await.expect("enqueue");
        let first = b
            .claim(WORKER, &q, 1, Duration::from_millis(200), Duration::ZERO)
            .await
            .expect("claim");
        let second = b.claim(WORKER, &q, 1, LONG, Duration::from_secs(10)).await.expect("reclaim");
        assert_eq!(second.len(), 1, "an expired lease returns the job to ready");
        assert_eq!(second[0].lease.id, first[0].lease.id);
        assert_ne!(second[0].lease.token, first[0].lease.token, "each claim has a fresh token");
        assert_eq!(second[0].deliveries, 2);
        let stale = &first[0].lease;
        let lost = |r: crate::Result<()>| matches!(r, Err(Error::LeaseLost { .. }));
        assert!(lost(b.ack(stale).await));
        assert!(lost(b.retry(stale, b"overwritten".to_vec(), Utc::now()).await));
        assert!(lost(b.release(stale).await));
        assert!(lost(b.dead_letter(stale, "stale").await));
        assert!(lost(b.renew(stale, LONG).await));
        let stats = b.queue_stats("alpha").await.expect("stats");
        assert_eq!((stats.ready, stats.delayed, stats.in_flight, stats.dead), (0, 0, 1, 0));
        b.ack(&second[0].lease).await.expect("the current holder can ack");
    }

    /// A released job is ready again at once.
    pub async fn release_returns_the_job_at_once(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        b.enqueue(job("alpha", 5, "x")).await.expect("enqueue");
        let got = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
        b.release(&got[0].lease).await.expect("release");
        let again = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!(payloads(&again), ["x"]);
    }

    /// A retried job waits for its eta and comes back with the new payload.
    pub async fn retry_holds_the_new_payload_until_its_eta(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        b.enqueue(job("alpha", 5, "attempt 1")).await.expect("enqueue");
        let got = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
        let eta = after(Duration::from_millis(1500));
        b.retry(&got[0].lease, b"attempt 2".to_vec(), eta).await.expect("retry");
        let stats = b.queue_stats("alpha").await.expect("stats");
        assert_eq!((stats.ready, stats.delayed, stats.in_flight), (0, 1, 0));
        let again = b.claim(WORKER, &q, 1, LONG, Duration::from_secs(10)).await.expect("claim");
        assert!(Utc::now() >= eta);
        assert_eq!(payloads(&again), ["attempt 2"]);
        assert_eq!(again[0].lease.id, got[0].lease.id);
    }

    /// Dead letters keep their reason, newest first, and are counted.
    pub async fn dead_letter_keeps_the_reason(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        for p in ["first", "second"] {
            b.enqueue(job("alpha", 5, p)).await.expect("enqueue");
        }
        for reason in ["bad one", "bad two"] {
            let got = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
            b.dead_letter(&got[0].lease, reason).await.expect("dead-letter");
        }
        assert_eq!(b.dead_letter_count("alpha").await.expect("count"), 2);
        let page = b.dead_letters("alpha", 0, 10).await.expect("list");
        let seen: Vec<(&str, &[u8])> =
            page.iter().map(|d| (d.reason.as_str(), d.payload.as_slice())).collect();
        assert_eq!(seen, [("bad two", &b"second"[..]), ("bad one", &b"first"[..])]);
        assert_eq!(b.dead_letters("alpha", 1, 10).await.expect("list").len(), 1);
        assert_eq!(b.queue_stats("alpha").await.expect("stats").in_flight, 0);
    }

    /// A renewed lease outlives its first deadline.
    pub async fn renew_extends_the_lease(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        b.enqueue(job("alpha", 5, "x")).await.expect("enqueue");
        let got = b
            .claim(WORKER, &q, 1, Duration::from_millis(1500), Duration::ZERO)
            .await
            .expect("claim");
        b.renew(&got[0].lease, LONG).await.expect("renew");
        let again = b.claim(WORKER, &q, 1, LONG, Duration::from_millis(3000)).await.expect("claim");
        assert!(again.is_empty(), "a renewed job was handed out again");
        b.ack(&got[0].lease).await.expect("ack after renew");
    }

    /// A claim waiting on an empty queue returns soon after a job is enqueued.
    pub async fn waiting_claim_is_woken_by_enqueue(b: Arc<dyn Broker>) {
        let waiter = {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                let started = Instant::now();
                let got =
                    b.claim(WORKER, &queues(&["alpha"]), 1, LONG, Duration::from_secs(20)).await;
                (got, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.enqueue(job("alpha", 5, "wake")).await.expect("enqueue");
        let (got, waited) = waiter.await.expect("join");
        assert_eq!(payloads(&got.expect("claim")), ["wake"]);
        assert!(waited < Duration::from_secs(10), "the waiting claim slept {waited:?}");
    }

    /// A batch adds every job.
    pub async fn batch_enqueue_adds_every_job(b: Arc<dyn Broker>) {
        let jobs: Vec<Job> = (0..100).map(|i| job("alpha", 5, &i.to_string())).collect();
        b.enqueue_batch(jobs).await.expect("batch");
        assert_eq!(b.queue_len("alpha").await.expect("len"), 100);
        let got =
            b.claim(WORKER, &queues(&["alpha"]), 1000, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!(got.len(), 100);
    }

    /// Many claimers at once each get distinct jobs, and together all of them.
    pub async fn concurrent_claimers_never_share_a_job(b: Arc<dyn Broker>) {
        let jobs: Vec<Job> = (0..500).map(|i| job("alpha", 5, &i.to_string())).collect();
        b.enqueue_batch(jobs).await.expect("batch");
        let mut claimers = Vec::new();
        for _ in 0..8 {
            let b = Arc::clone(&b);
            claimers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = b.claim(WORKER, &queues(&["alpha"]), 7, LONG, Duration::ZERO).await;
                    let got = got.expect("claim");
                    if got.is_empty() {
                        return mine;
                    }
                    for d in got {
                        b.ack(&d.lease).await.expect("ack");
                        mine.push(d.lease.id);
                    }
                }
            }));
        }
        let mut seen = HashSet::new();
        for claimer in claimers {
            for id in claimer.await.expect("join") {
                assert!(seen.insert(id), "job {id} was handed to two claimers");
            }
        }
        assert_eq!(seen.len(), 500);
    }
    /// A job whose id is already queued (ready, delayed or in flight) is refused, alone
    /// or in a batch, and the refused batch adds nothing; once settled, the id is free.
    pub async fn a_queued_id_cannot_be_enqueued_again(b: Arc<dyn Broker>) {
        let first = job("alpha", 5, "first");
        b.enqueue(first.clone()).await.expect("enqueue");
        let again = b.enqueue(first.clone()).await;
        assert!(matches!(again, Err(Error::DuplicateJob { .. })), "{again:?}");
        let batch = vec![job("alpha", 5, "fresh"), first.clone()];
        let refused = b.enqueue_batch(batch).await;
        assert!(matches!(refused, Err(Error::DuplicateJob { .. })), "{refused:?}");
        assert_eq!(b.queue_len("alpha").await.expect("len"), 1, "a refused batch added a job");
        let got =
            b.claim(WORKER, &queues(&["alpha"]), 1, LONG, Duration::ZERO).await.expect("claim");
        assert!(matches!(b.enqueue(first.clone()).await, Err(Error::DuplicateJob { .. })));
        b.ack(&got[0].lease).await.expect("ack");
        b.enqueue(first).await.expect("the id is free again once the job is settled");
    }

    /// A batch spanning queues is refused whole when any id in it is already queued.
    pub async fn a_batch_across_queues_with_a_duplicate_adds_nothing(b: Arc<dyn Broker>) {
        let queued = job("beta", 5, "queued");
        b.enqueue(queued.clone()).await.expect("enqueue");
        let batch = vec![job("alpha", 5, "fresh"), job("gamma", 5, "fresh"), queued];
        let refused = b.enqueue_batch(batch).await;
        assert!(matches!(refused, Err(Error::DuplicateJob { .. })), "{refused:?}");
        assert_eq!(b.queue_len("alpha").await.expect("len"), 0, "a refused batch added a job");
        assert_eq!(b.queue_len("gamma").await.expect("len"), 0, "a refused batch added a job");
    }

    /// Releasing a job (as at shutdown) does not count toward its deliveries.
    pub async fn a_release_does_not_count_as_a_delivery(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        b.enqueue(job("alpha", 5, "x")).await.expect("enqueue");
        for _ in 0..3 {
            let got = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
            assert_eq!(got[0].deliveries, 1);
            b.release(&got[0].lease).await.expect("release");
        }
    }

    /// Every claim of a job carries a greater fence than the claims before it: after a
    /// release, and after a lost lease.
    pub async fn fences_grow_with_every_claim_of_a_job(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        b.enqueue_batch(vec![job("alpha", 5, "x"), job("alpha", 5, "y")]).await.expect("enqueue");
        let first = b.claim(WORKER, &q, 2, LONG, Duration::ZERO).await.expect("claim");
        assert_ne!(first[0].lease.fence, first[1].lease.fence, "two jobs of one claim");
        let x = first[0].lease.clone();
        b.ack(&first[1].lease).await.expect("ack");
        b.release(&x).await.expect("release");
        let second = b.claim(WORKER, &q, 1, Duration::from_millis(200), Duration::ZERO).await;
        let second = second.expect("claim").remove(0);
        assert_eq!(second.lease.id, x.id);
        assert!(second.lease.fence > x.fence, "{} after {}", second.lease.fence, x.fence);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let third = b.claim(WORKER, &q, 1, LONG, Duration::from_secs(5)).await.expect("claim");
        assert_eq!(third[0].lease.id, x.id, "the lease expired");
        assert!(third[0].lease.fence > second.lease.fence);
        assert!(third[0].lease.fence < 1 << 53, "a fence fits any language's number");
    }

    /// Jobs whose lease was lost come back suspect: one per claim, flagged to run
    /// alone, before any other ready job, and a release keeps them so.
    pub async fn jobs_taken_back_come_one_at_a_time_to_run_alone(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        let batch: Vec<Job> = (0..3).map(|i| job("alpha", 5, &format!("lost {i}"))).collect();
        b.enqueue_batch(batch).await.expect("enqueue");
        let lost = b.claim(WORKER, &q, 10, Duration::from_millis(200), Duration::ZERO).await;
        let lost = lost.expect("claim");
        assert_eq!(lost.len(), 3);
        assert!(lost.iter().all(|d| !d.isolated), "a first delivery runs with others");
        b.enqueue(job("alpha", 9, "fresh")).await.expect("enqueue");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(reap_until_something_moves(&b, &q).await, 3, "the three expired leases");
        let stats = b.queue_stats("alpha").await.expect("stats");
        assert_eq!((stats.ready, stats.suspect, stats.in_flight), (4, 3, 0), "{stats:?}");
        let mut seen = Vec::new();
        for round in 0..3 {
            let got = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
            assert_eq!(got.len(), 1, "round {round}: a suspect job comes alone");
            assert!(got[0].isolated, "round {round}");
            assert_eq!(got[0].deliveries, 2);
            if round == 0 {
                // Handed back (its worker was busy): still suspect, first in line.
                b.release(&got[0].lease).await.expect("release");
                let again = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
                assert_eq!((again.len(), again[0].isolated), (1, true));
                assert_eq!(again[0].lease.id, got[0].lease.id);
                assert_eq!(again[0].deliveries, 2, "a release counts no delivery");
                b.ack(&again[0].lease).await.expect("ack");
            } else {
                b.ack(&got[0].lease).await.expect("ack");
            }
            seen.push(got[0].lease.id);
        }
        let mut expected: Vec<TaskId> = lost.iter().map(|d| d.lease.id).collect();
        expected.sort();
        seen.sort();
        assert_eq!(seen, expected, "oldest first, each once");
        let fresh = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!(payloads(&fresh), ["fresh"]);
        assert!(!fresh[0].isolated);
    }

    /// A claimer busy with an earlier queue is still offered a suspect job of a later
    /// queue (flagged, after the earlier queue's jobs; the worker hands it back and
    /// comes for it alone), so that busy earlier queues do not keep it waiting.
    pub async fn a_suspect_in_a_later_queue_is_not_kept_waiting_by_earlier_ones(
        b: Arc<dyn Broker>,
    ) {
        b.enqueue(job("beta", 5, "lost")).await.expect("enqueue");
        let short = Duration::from_millis(150);
        let lost = b.claim(WORKER, &queues(&["beta"]), 1, short, Duration::ZERO).await;
        assert_eq!(lost.expect("claim").len(), 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(reap_until_something_moves(&b, &queues(&["beta"])).await, 1);
        b.enqueue_batch(vec![job("alpha", 5, "a1"), job("alpha", 5, "a2")]).await.expect("enqueue");
        let both = queues(&["alpha", "beta"]);
        let got = b.claim(WORKER, &both, 10, LONG, Duration::ZERO).await.expect("claim");
        let seen: Vec<(String, bool)> = got
            .iter()
            .map(|d| (String::from_utf8_lossy(&d.payload).into_owned(), d.isolated))
            .collect();
        assert_eq!(
            seen,
            [("a1".to_owned(), false), ("a2".to_owned(), false), ("lost".to_owned(), true)]
        );
        // Handed back, it comes alone to a claim of its own queue.
        let suspect = got.last().expect("the suspect");
        b.release(&suspect.lease).await.expect("release");
        let alone = b.claim(WORKER, &queues(&["beta"]), 10, LONG, Duration::ZERO).await;
        let alone = alone.expect("claim");
        assert_eq!((alone.len(), alone[0].isolated), (1, true));
    }

    /// A job whose worker is lost while it runs alone gets a strike; with as many
    /// strikes as the broker allows (5 by default) it is dead-lettered as poison. The
    /// jobs that were lost beside it the first time run alone and are spared.
    pub async fn a_job_lost_while_running_alone_strikes_out_and_spares_its_neighbours(
        b: Arc<dyn Broker>,
    ) {
        let q = queues(&["alpha"]);
        let pill = job("alpha", 5, "pill");
        let pill_id = pill.id;
        let neighbours: Vec<Job> = (0..4).map(|i| job("alpha", 5, &format!("good {i}"))).collect();
        let mut batch = vec![pill];
        batch.extend(neighbours);
        b.enqueue_batch(batch).await.expect("enqueue");
        let short = Duration::from_millis(150);
        let first = b.claim(WORKER, &q, 10, short, Duration::ZERO).await.expect("claim");
        assert_eq!(first.len(), 5, "all five run together, and their worker dies");
        let mut strikes = 0;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let got = b.claim(WORKER, &q, 10, short, Duration::from_secs(2)).await;
            let Some(delivery) = got.expect("claim").pop() else { break };
            assert!(delivery.isolated);
            if delivery.lease.id == pill_id {
                strikes += 1; // it kills its worker again: never settled
            } else {
                b.ack(&delivery.lease).await.expect("a good job runs alone and succeeds");
            }
        }
        assert_eq!(
            strikes,
            crate::DEFAULT_MAX_DELIVERIES,
            "the pill ran alone until it struck out"
        );
        let dead = b.dead_letters("alpha", 0, 10).await.expect("dead letters");
        assert_eq!(dead.len(), 1, "only the pill: {dead:?}");
        assert_eq!(dead[0].id, pill_id);
        assert!(
            dead[0].reason.starts_with("poison: its worker was lost 5 times"),
            "{}",
            dead[0].reason
        );
        let stats = b.queue_stats("alpha").await.expect("stats");
        assert_eq!((stats.ready, stats.in_flight, stats.dead), (0, 0, 1), "{stats:?}");
    }

    /// A claim waiting on an empty queue takes a job retried to be due now.
    pub async fn a_retry_wakes_a_waiting_claim(b: Arc<dyn Broker>) {
        b.enqueue(job("alpha", 5, "attempt 1")).await.expect("enqueue");
        let got =
            b.claim(WORKER, &queues(&["alpha"]), 1, LONG, Duration::ZERO).await.expect("claim");
        let waiter = {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                let started = Instant::now();
                let got =
                    b.claim(WORKER, &queues(&["alpha"]), 1, LONG, Duration::from_secs(20)).await;
                (got, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.retry(&got[0].lease, b"attempt 2".to_vec(), Utc::now()).await.expect("retry");
        let (again, waited) = waiter.await.expect("join");
        assert_eq!(payloads(&again.expect("claim")), ["attempt 2"]);
        assert!(waited < Duration::from_secs(10), "the waiting claim slept {waited:?}");
    }

    /// The same id dead-lettered twice (requeued in between) keeps two letters, each
    /// with its own payload.
    pub async fn an_id_dead_lettered_twice_keeps_both_letters(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        let id = TaskId::new();
        for payload in ["first life", "second life"] {
            let one = Job::new(id, "alpha", 5, None, payload.as_bytes().to_vec());
            b.enqueue(one).await.expect("enqueue");
            let got = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
            b.dead_letter(&got[0].lease, payload).await.expect("dead-letter");
            // Dead letters carry millisecond timestamps; keep the two apart.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let page = b.dead_letters("alpha", 0, 10).await.expect("list");
        let seen: Vec<(&str, &[u8])> =
            page.iter().map(|d| (d.reason.as_str(), d.payload.as_slice())).collect();
        assert_eq!(
            seen,
            [("second life", &b"second life"[..]), ("first life", &b"first life"[..])]
        );
    }
    /// A heartbeat lists the worker until its ttl passes; deregistering removes it.
    pub async fn a_heartbeat_registers_the_worker_until_it_lapses(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        let ids = |list: Vec<crate::WorkerStatus>| {
            let mut ids: Vec<String> = list.into_iter().map(|w| w.info.id).collect();
            ids.sort();
            ids
        };
        b.heartbeat(&worker("w-long", &q), LONG).await.expect("heartbeat");
        b.heartbeat(&worker("w-short", &q), Duration::from_millis(300)).await.expect("heartbeat");
        let listed = b.workers().await.expect("workers");
        let long = listed.iter().find(|w| w.info.id == "w-long").expect("w-long is listed");
        assert_eq!(long.info.queues, q);
        assert_eq!(long.info.running, 0, "a fresh description reports no running jobs");
        // A later heartbeat replaces what the worker reports.
        b.heartbeat(&worker("w-long", &q).with_running(3), LONG).await.expect("heartbeat");
        let listed = b.workers().await.expect("workers");
        let long = listed.iter().find(|w| w.info.id == "w-long").expect("w-long is listed");
        assert_eq!(long.info.running, 3, "running round-trips");
        assert_eq!((long.info.concurrency, long.info.queues.as_slice()), (4, q.as_slice()));
        assert!(long.alive_until > Utc::now() + chrono::Duration::seconds(20));
        assert_eq!(ids(listed), ["w-long", "w-short"]);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(ids(b.workers().await.expect("workers")), ["w-long"], "w-short lapsed");
        b.deregister("w-long").await.expect("deregister");
        assert!(b.workers().await.expect("workers").is_empty());
    }

    /// A worker that stops heartbeating loses its jobs to the reaper long before their
    /// leases expire, and its late ack is refused.
    pub async fn reap_returns_the_jobs_of_a_worker_whose_heartbeat_lapsed(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        b.enqueue_batch(vec![job("alpha", 5, "a"), job("alpha", 5, "b")]).await.expect("enqueue");
        b.heartbeat(&worker("doomed", &q), Duration::from_millis(300)).await.expect("heartbeat");
        b.heartbeat(&worker("survivor", &q), LONG).await.expect("heartbeat");
        let held = b.claim("doomed", &q, 1, LONG, Duration::ZERO).await.expect("claim");
        let kept = b.claim("survivor", &q, 1, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!((held.len(), kept.len()), (1, 1));
        assert_eq!(b.reap(&q).await.expect("reap"), 0, "the doomed worker is still alive");
        tokio::time::sleep(Duration::from_millis(800)).await;
        let moved = reap_until_something_moves(&b, &q).await;
        assert_eq!(moved, 1, "only the lapsed worker's job comes back");
        let again = b.claim("survivor", &q, 10, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].lease.id, held[0].lease.id);
        assert_eq!(again[0].deliveries, 2, "the lost run counts as a delivery");
        assert!(matches!(b.ack(&held[0].lease).await, Err(Error::LeaseLost { .. })));
        b.ack(&again[0].lease).await.expect("ack");
        b.ack(&kept[0].lease).await.expect("the survivor's own job is still its own");
        assert!(b.workers().await.expect("workers").iter().all(|w| w.info.id != "doomed"));
    }

    /// Reaping takes nothing from a worker that keeps heartbeating.
    pub async fn reap_leaves_the_jobs_of_live_workers_alone(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        b.enqueue(job("alpha", 5, "a")).await.expect("enqueue");
        b.heartbeat(&worker("alive", &q), LONG).await.expect("heartbeat");
        let held = b.claim("alive", &q, 1, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!(b.reap(&q).await.expect("reap"), 0);
        assert!(b.claim("other", &q, 1, LONG, Duration::ZERO).await.expect("claim").is_empty());
        b.ack(&held[0].lease).await.expect("ack");
    }
    /// A worker whose heartbeat lapsed but who is still at work (it stalled, then came
    /// back) keeps the jobs it claimed since: a claim is a sign of life too.
    pub async fn reap_leaves_what_a_lapsed_worker_claimed_after_its_lapse(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        b.heartbeat(&worker("survivor", &q), LONG).await.expect("heartbeat");
        b.heartbeat(&worker("stalled", &q), Duration::from_millis(300)).await.expect("heartbeat");
        tokio::time::sleep(Duration::from_millis(800)).await;
        b.enqueue(job("alpha", 5, "late")).await.expect("enqueue");
        let held = b.claim("stalled", &q, 1, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!(held.len(), 1);
        // Any number of reaps: none takes the job claimed after the lapse.
        for _ in 0..3 {
            assert_eq!(b.reap(&q).await.expect("reap"), 0);
        }
        assert!(b.claim("survivor", &q, 1, LONG, Duration::ZERO).await.expect("claim").is_empty());
        b.ack(&held[0].lease).await.expect("the stalled worker still holds its new job");
    }

    /// A claimer waiting on two queues, woken for one but filled from the other,
    /// leaves the wake-up for a claimer waiting on the first: both get a job at once.
    pub async fn a_wake_up_is_not_lost_when_a_claimer_waits_on_several_queues(b: Arc<dyn Broker>) {
        // The wide claimer blocks first, so it is the one woken for "beta".
        let wide = {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                b.claim("wide", &queues(&["alpha", "beta"]), 1, LONG, Duration::from_secs(30)).await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let narrow = {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                b.claim("narrow", &queues(&["beta"]), 1, LONG, Duration::from_secs(30)).await
            })
        };
        // Let both block (if one has not yet, the check passes without exercising the
        // lost wake-up; it can still not pass wrongly).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        b.enqueue_batch(vec![job("beta", 5, "b"), job("alpha", 5, "a")]).await.expect("enqueue");
        let wide = wide.await.expect("join").expect("claim");
        let narrow = narrow.await.expect("join").expect("claim");
        assert_eq!(wide.len() + narrow.len(), 2, "each claimer got one job");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a claimer slept through a ready job for {:?}",
            started.elapsed()
        );
    }
    /// A lapsed worker that claimed a job and then fell silent for good is not
    /// forgotten with the job still leased to it: once its ttl has passed since the
    /// claim, a reap takes the job back.
    pub async fn a_lapsed_worker_that_stays_silent_loses_even_its_fresh_claims(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        b.heartbeat(&worker("survivor", &q), LONG).await.expect("heartbeat");
        b.heartbeat(&worker("fading", &q), Duration::from_millis(300)).await.expect("heartbeat");
        tokio::time::sleep(Duration::from_millis(800)).await;
        b.enqueue(job("alpha", 5, "late")).await.expect("enqueue");
        let held = b.claim("fading", &q, 1, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!(b.reap(&q).await.expect("reap"), 0, "the claim is fresh");
        tokio::time::sleep(Duration::from_millis(800)).await;
        let moved = reap_until_something_moves(&b, &q).await;
        assert_eq!(moved, 1, "the silent worker's job comes back");
        let again = b.claim("survivor", &q, 1, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!(again.len(), 1);
        assert!(matches!(b.ack(&held[0].lease).await, Err(Error::LeaseLost { .. })));
        b.ack(&again[0].lease).await.expect("ack");
    }
    /// `take_dead_letter` removes and returns the newest letter of one job, with its
    /// payload; `purge_dead_letters` empties the queue's dead letters and says how many.
    pub async fn a_dead_letter_can_be_taken_out_and_the_queue_purged(b: Arc<dyn Broker>) {
        let q = queues(&["alpha"]);
        let mut ids = Vec::new();
        for payload in ["one", "two", "three"] {
            let one = job("alpha", 5, payload);
            ids.push(one.id);
            b.enqueue(one).await.expect("enqueue");
            let got = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
            b.dead_letter(&got[0].lease, &format!("bad {payload}")).await.expect("dead-letter");
        }
        let taken = b.take_dead_letter("alpha", ids[1]).await.expect("take").expect("a letter");
        assert_eq!((taken.id, taken.reason.as_str()), (ids[1], "bad two"));
        assert_eq!(taken.payload, b"two");
        assert_eq!(taken.queue, "alpha");
        assert!(b.take_dead_letter("alpha", ids[1]).await.expect("take").is_none());
        assert!(b.take_dead_letter("alpha", TaskId::new()).await.expect("take").is_none());
        assert_eq!(b.dead_letter_count("alpha").await.expect("count"), 2);
        assert_eq!(b.purge_dead_letters("alpha").await.expect("purge"), 2);
        assert_eq!(b.dead_letter_count("alpha").await.expect("count"), 0);
        assert!(b.dead_letters("alpha", 0, 10).await.expect("list").is_empty());
        assert_eq!(b.purge_dead_letters("alpha").await.expect("purge"), 0);
    }
    /// While an idempotency key is known in a queue, a second job with it is refused
    /// naming the first, and nothing is added; in another queue, or once the key's ttl
    /// has passed, it is free. A batch refuses keys.
    pub async fn an_idempotency_key_admits_one_job_while_it_is_known(b: Arc<dyn Broker>) {
        let ttl = Duration::from_millis(500);
        let first = job("alpha", 5, "first").with_idempotency_key("order-7", ttl);
        let first_id = first.id;
        b.enqueue(first).await.expect("enqueue");
        let second = job("alpha", 5, "second").with_idempotency_key("order-7", ttl);
        match b.enqueue(second).await {
            Err(Error::IdempotencyKeyTaken { existing, key, .. }) => {
                assert_eq!((existing, key.as_str()), (first_id, "order-7"));
            }
            other => panic!("a second job with a known key was not refused: {other:?}"),
        }
        assert_eq!(b.queue_len("alpha").await.expect("len"), 1, "nothing was added");
        b.enqueue(job("beta", 5, "elsewhere").with_idempotency_key("order-7", ttl))
            .await
            .expect("keys are per queue");
        let batch = vec![job("alpha", 5, "x").with_idempotency_key("order-8", ttl)];
        assert!(matches!(b.enqueue_batch(batch).await, Err(Error::InvalidArgument(_))));
        tokio::time::sleep(Duration::from_millis(800)).await;
        b.enqueue(job("alpha", 5, "later").with_idempotency_key("order-7", ttl))
            .await
            .expect("the key lapsed");
        assert_eq!(b.queue_len("alpha").await.expect("len"), 2);
    }

    /// Events published in batches read back from the oldest in the order they were
    /// published, every kind with all its facts.
    pub async fn published_events_read_back_in_order(b: Arc<dyn Broker>) {
        let published = events(20);
        for batch in [&published[..7], &published[7..8], &published[8..]] {
            b.publish_events(batch).await.expect("publish");
        }
        let page = b.read_events(&EventsFrom::Oldest, 100, Duration::ZERO).await.expect("read");
        let expected: Vec<Event> = published.iter().map(|e| Event::clone(e)).collect();
        assert_eq!(page.events, expected);
        assert_eq!(page.skipped, 0);
        let again = b.read_events(&EventsFrom::After(page.cursor), 100, Duration::ZERO).await;
        assert!(again.expect("read").events.is_empty(), "nothing after the last event");
    }

    /// Pages of at most `max` events follow each other through and across batches from
    /// the cursor each returns; `Now` starts after what is there, `Last(n)` at the
    /// last n events, and a `max` of 0 only places the cursor.
    pub async fn an_event_cursor_reads_on_where_its_page_ended(b: Arc<dyn Broker>) {
        let all = events(7);
        let now = b.read_events(&EventsFrom::Now, 0, Duration::ZERO).await.expect("place");
        assert!(now.events.is_empty());
        for batch in [&all[..3], &all[3..4], &all[4..6]] {
            b.publish_events(batch).await.expect("publish");
        }
        let mut from = EventsFrom::After(now.cursor);
        let mut pages = Vec::new();
        for _ in 0..4 {
            let page = b.read_events(&from, 2, Duration::ZERO).await.expect("read");
            pages.push(ids(&page.events));
            from = EventsFrom::After(page.cursor);
        }
        let expected = [ids(&all[..2]), ids(&all[2..4]), ids(&all[4..6]), Vec::new()];
        assert_eq!(pages, expected, "pages of two, then nothing");

        for (n, expected) in [(0, &all[6..6]), (2, &all[4..6]), (3, &all[3..6]), (4, &all[2..6])] {
            let page = b.read_events(&EventsFrom::Last(n), 100, Duration::ZERO).await;
            assert_eq!(ids(&page.expect("read").events), ids(expected), "the last {n}");
        }
        let page = b.read_events(&EventsFrom::Last(100), 100, Duration::ZERO).await;
        assert_eq!(ids(&page.expect("read").events), ids(&all[..6]), "fewer kept than asked");
        let first = b.read_events(&EventsFrom::Last(4), 3, Duration::ZERO).await.expect("read");
        assert_eq!(ids(&first.events), ids(&all[2..5]), "the last 4, three at a time");
        let rest = EventsFrom::After(first.cursor);
        let rest = b.read_events(&rest, 3, Duration::ZERO).await.expect("read");
        assert_eq!(ids(&rest.events), ids(&all[5..6]));

        let tail = b.read_events(&EventsFrom::Now, 10, Duration::ZERO).await.expect("read");
        assert!(tail.events.is_empty(), "Now starts after what is there");
        b.publish_events(&all[6..]).await.expect("publish");
        let page = b.read_events(&EventsFrom::After(tail.cursor), 10, Duration::ZERO).await;
        assert_eq!(ids(&page.expect("read").events), ids(&all[6..]), "only what came after");
    }

    /// A read that finds nothing waits for a publish and returns with it, without
    /// sleeping out its wait; with nothing published it returns empty after its wait.
    pub async fn a_waiting_event_read_is_woken_by_a_publish(b: Arc<dyn Broker>) {
        let published = events(2);
        let now = b.read_events(&EventsFrom::Now, 0, Duration::ZERO).await.expect("place");
        let started = Instant::now();
        let reader = {
            let (b, from) = (Arc::clone(&b), EventsFrom::After(now.cursor.clone()));
            tokio::spawn(async move { b.read_events(&from, 10, LONG).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!reader.is_finished(), "the read returned before anything was published");
        b.publish_events(&published).await.expect("publish");
        let page = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the publish woke the read")
            .expect("the read did not panic")
            .expect("read");
        assert_eq!(ids(&page.events), ids(&published));
        assert!(started.elapsed() < Duration::from_secs(10), "woken, not timed out");

        let started = Instant::now();
        let wait = Duration::from_millis(300);
        let empty = b.read_events(&EventsFrom::After(page.cursor), 10, wait).await.expect("read");
        assert!(empty.events.is_empty());
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(250), "gave up after {waited:?}, before its wait");
        assert!(waited < Duration::from_secs(10), "overslept its wait: {waited:?}");
    }

    /// The stream is capped: publishing enough drops the oldest events, and what is
    /// kept is the newest events, in order, with none missing between.
    pub async fn the_event_stream_cap_drops_the_oldest_events(b: Arc<dyn Broker>) {
        // One event per batch, so that every kind of cap (in events or in batches)
        // is reached; the cap is the broker's, so publish until the first is gone.
        let template = events(1).pop().expect("an event");
        let mut published = Vec::new();
        let mut trimmed = false;
        while published.len() < 300_000 {
            for _ in 0..500 {
                let mut event = Event::clone(&template);
                event.id = TaskId::new();
                published.push(event.id);
                b.publish_events(&[Arc::new(event)]).await.expect("publish");
            }
            let oldest = b.read_events(&EventsFrom::Oldest, 1, Duration::ZERO).await;
            if oldest.expect("read").events.first().map(|e| e.id) != Some(published[0]) {
                trimmed = true;
                break;
            }
        }
        assert!(trimmed, "the stream kept all of {} events", published.len());
        let mut kept = Vec::new();
        let mut from = EventsFrom::Oldest;
        loop {
            let page = b.read_events(&from, 1_000, Duration::ZERO).await.expect("read");
            if page.events.is_empty() {
                break;
            }
            kept.extend(ids(&page.events));
            from = EventsFrom::After(page.cursor);
        }
        assert!(!kept.is_empty(), "the cap kept nothing");
        let start = published.iter().position(|id| *id == kept[0]).expect("a published event");
        assert!(start > 0, "the oldest was dropped");
        assert!(kept == published[start..], "the newest {} events, in order", kept.len());
    }
}

fn outcome(seed: u8) -> TaskOutcome {
    let at = |ms| DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let mut outcome = TaskOutcome::succeeded(vec![seed, 1, 2], 2, at(1_700_000_000_000));
    outcome.finished_at = at(1_700_000_000_250);
    outcome
}

/// The result-backend contracts, one function each.
pub mod backend {
    use super::*;

    /// What was stored reads back unchanged.
    pub async fn stored_outcome_reads_back(b: Arc<dyn ResultBackend>) {
        let id = TaskId::new();
        b.store(id, &outcome(7), LONG).await.expect("store");
        assert_eq!(b.get(id).await.expect("get"), Some(outcome(7)));
        let failed = TaskOutcome::failed(FailureKind::Timeout, "took too long", 3, None);
        let other = TaskId::new();
        b.store(other, &failed, LONG).await.expect("store");
        let back = b.get(other).await.expect("get").expect("stored");
        assert_eq!(back.failure, failed.failure);
        assert_eq!(back.attempts, 3);
    }

    /// An id with nothing stored reads as `None`.
    pub async fn missing_outcome_is_none(b: Arc<dyn ResultBackend>) {
        assert_eq!(b.get(TaskId::new()).await.expect("get"), None);
    }

    /// A second store replaces the first.
    pub async fn store_replaces_the_outcome(b: Arc<dyn ResultBackend>) {
        let id = TaskId::new();
        b.store(id, &outcome(1), LONG).await.expect("store");
        b.store(id, &outcome(2), LONG).await.expect("store");
        assert_eq!(b.get(id).await.expect("get"), Some(outcome(2)));
    }

    /// A fenced store never replaces a success, nor what a later run (a greater fence)
    /// stored; it replaces a failure of its own run or an earlier one.
    pub async fn a_fenced_store_replaces_no_success_and_no_later_run(b: Arc<dyn ResultBackend>) {
        let id = TaskId::new();
        let failed = |attempts| TaskOutcome::failed(FailureKind::Error, "boom", attempts, None);
        assert!(b.store_fenced(id, &failed(1), LONG, 10).await.expect("store"), "nothing there");
        assert!(!b.store_fenced(id, &outcome(1), LONG, 9).await.expect("store"), "an earlier run");
        assert_eq!(b.get(id).await.expect("get").map(|o| o.attempts), Some(1));
        assert!(b.store_fenced(id, &failed(2), LONG, 10).await.expect("store"), "the same run");
        assert!(b.store_fenced(id, &outcome(2), LONG, 12).await.expect("store"), "a later run");
        assert_eq!(b.get(id).await.expect("get"), Some(outcome(2)));
        assert!(!b.store_fenced(id, &outcome(3), LONG, 13).await.expect("store"), "a later run");
        assert!(!b.store_fenced(id, &failed(3), LONG, 14).await.expect("store"));
        assert!(b.store_fenced(id, &outcome(2), LONG, 12).await.expect("store"), "its own again");
        assert_eq!(b.get(id).await.expect("get"), Some(outcome(2)), "the success stays");
        // A plain store's success is a success too.
        let plain = TaskId::new();
        b.store(plain, &outcome(5), LONG).await.expect("store");
        assert!(!b.store_fenced(plain, &outcome(6), LONG, 1).await.expect("store"));
        assert_eq!(b.get(plain).await.expect("get"), Some(outcome(5)));
    }

    /// A waiter returns soon after the outcome is stored.
    pub async fn wait_is_woken_by_store(b: Arc<dyn ResultBackend>) {
        let id = TaskId::new();
        let waiter = {
            let b = Arc::clone(&b);
            tokio::spawn(async move {
                let started = Instant::now();
                (b.wait(id, Duration::from_secs(20)).await, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.store(id, &outcome(3), LONG).await.expect("store");
        let (got, waited) = waiter.await.expect("join");
        assert_eq!(got.expect("wait"), Some(outcome(3)));
        assert!(waited < Duration::from_secs(10), "the waiter slept {waited:?}");
    }

    /// A wait with nothing stored gives `None` once its timeout passes, not before.
    pub async fn wait_gives_none_after_its_timeout(b: Arc<dyn ResultBackend>) {
        let started = Instant::now();
        let got = b.wait(TaskId::new(), Duration::from_millis(300)).await.expect("wait");
        assert_eq!(got, None);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    /// An outcome is gone once its TTL has passed.
    pub async fn outcome_expires_after_its_ttl(b: Arc<dyn ResultBackend>) {
        let id = TaskId::new();
        b.store(id, &outcome(4), Duration::from_millis(1500)).await.expect("store");
        assert!(b.get(id).await.expect("get").is_some());
        tokio::time::sleep(Duration::from_millis(3000)).await;
        assert_eq!(b.get(id).await.expect("get"), None);
    }

    /// Many waiters on many ids are each woken by their own store.
    pub async fn many_waiters_are_all_woken(b: Arc<dyn ResultBackend>) {
        let ids: Vec<TaskId> = (0..200).map(|_| TaskId::new()).collect();
        let waiters: Vec<_> = ids
            .iter()
            .map(|&id| {
                let b = Arc::clone(&b);
                tokio::spawn(async move { b.wait(id, Duration::from_secs(20)).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stored = Instant::now();
        for (i, &id) in ids.iter().enumerate() {
            b.store(id, &outcome(u8::try_from(i % 256).unwrap_or(0)), LONG).await.expect("store");
        }
        for (i, waiter) in waiters.into_iter().enumerate() {
            let got = waiter.await.expect("join").expect("wait").expect("woken with the outcome");
            assert_eq!(got, outcome(u8::try_from(i % 256).unwrap_or(0)));
        }
        let waited = stored.elapsed();
        assert!(waited < Duration::from_secs(10), "the waiters were not woken: {waited:?}");
    }
}
