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
//! The broker's contracts come in one module per capability, each with a macro of its
//! own, so that a new broker can pass them one at a time:
//! [`lifecycle_conformance_tests!`](crate::lifecycle_conformance_tests) first (the
//! [`Broker`] trait alone), then [`worker_registry_conformance_tests!`](crate::worker_registry_conformance_tests),
//! [`schedule_store_conformance_tests!`](crate::schedule_store_conformance_tests),
//! [`event_stream_conformance_tests!`](crate::event_stream_conformance_tests),
//! [`broker_admin_conformance_tests!`](crate::broker_admin_conformance_tests),
//! [`limits_conformance_tests!`](crate::limits_conformance_tests),
//! [`quotas_conformance_tests!`](crate::quotas_conformance_tests) and
//! [`unique_conformance_tests!`](crate::unique_conformance_tests);
//! [`broker_conformance_tests!`](crate::broker_conformance_tests) runs them all.
//!
//! The checks use real time with generous bounds; they prove behaviour, not speed.

pub mod admin;
pub mod backend;
pub mod events;
pub mod lifecycle;
pub mod limits;
pub mod quotas;
pub mod registry;
pub mod schedules;
pub mod unique;

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
use crate::broker::{
    Broker, BrokerAdmin, Cancelled, Delivery, EventStream, EventsFrom, Job, JobState, QueueDeleted,
    QueueStats, ScheduleStore, WorkerInfo, WorkerRegistry,
};
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

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($fixture:ty, $runner:ident, $module:ident, $($name:ident),* $(,)?) => {
        $( $crate::__conformance_case!($fixture, $runner, $module, $name); )*
    };
}

/// Generates one test per contract of every broker capability for a [`Fixture`]
/// type: the lifecycle, the worker registry, the schedule store, the event stream and
/// the admin capability (each also has a macro of its own).
#[macro_export]
macro_rules! broker_conformance_tests {
    ($fixture:ty) => {
        $crate::lifecycle_conformance_tests!($fixture);
        $crate::worker_registry_conformance_tests!($fixture);
        $crate::schedule_store_conformance_tests!($fixture);
        $crate::event_stream_conformance_tests!($fixture);
        $crate::broker_admin_conformance_tests!($fixture);
        $crate::limits_conformance_tests!($fixture);
        $crate::quotas_conformance_tests!($fixture);
        $crate::unique_conformance_tests!($fixture);
    };
}

/// Generates one test per contract of unique jobs: how long an idempotency key holds
/// ([`KeyHold`](crate::KeyHold)), and a debounce's replacement.
#[macro_export]
macro_rules! unique_conformance_tests {
    ($fixture:ty) => {
        $crate::__conformance_cases!(
            $fixture,
            run_broker,
            unique,
            a_queued_key_holds_while_its_job_waits,
            an_until_done_key_holds_until_its_job_is_settled,
            a_debounced_job_is_replaced_while_it_waits_out_its_delay,
        );
    };
}

/// Generates one test per contract of enqueue quotas
/// ([`QuotaStore`](crate::QuotaStore)).
#[macro_export]
macro_rules! quotas_conformance_tests {
    ($fixture:ty) => {
        $crate::__conformance_cases!(
            $fixture,
            run_broker,
            quotas,
            a_quota_refuses_what_goes_over_it_and_says_when_to_retry,
            a_keys_quota_counts_beside_the_namespaces_and_its_window_ends,
        );
    };
}

/// Generates one test per contract of flow limits ([`Gate`](crate::Gate)s on jobs:
/// rates and concurrency), which need the admin capability too.
#[macro_export]
macro_rules! limits_conformance_tests {
    ($fixture:ty) => {
        $crate::__conformance_cases!(
            $fixture,
            run_broker,
            limits,
            a_rate_limit_lets_its_burst_through_then_spaces_starts,
            a_concurrency_limit_holds_a_slot_per_running_job,
            a_lapsed_lease_gives_its_slot_back,
            jobs_waiting_at_a_gate_are_found_cancelled_and_purged,
            grouped_jobs_are_claimed_round_robin_across_groups,
            a_claim_reports_the_jobs_it_holds_back_once,
            claims_of_one_job_take_grouped_and_ungrouped_jobs_by_turns,
        );
    };
}

/// Generates one test per contract of the job lifecycle ([`Broker`]): the first part
/// of the suite a new broker passes.
#[macro_export]
macro_rules! lifecycle_conformance_tests {
    ($fixture:ty) => {
        $crate::__conformance_cases!(
            $fixture,
            run_broker,
            lifecycle,
            claims_what_was_enqueued,
            claim_takes_at_most_max,
            higher_priority_is_claimed_first,
            queues_are_kept_apart,
            delayed_job_waits_for_its_eta,
            ack_forgets_the_job,
            stale_token_changes_nothing,
            release_returns_the_job_at_once,
            retry_holds_the_new_payload_until_its_eta,
            renew_extends_the_lease,
            waiting_claim_is_woken_by_enqueue,
            batch_enqueue_adds_every_job,
            concurrent_claimers_never_share_a_job,
            a_queued_id_cannot_be_enqueued_again,
            a_batch_across_queues_with_a_duplicate_adds_nothing_to_that_queue,
            a_release_does_not_count_as_a_delivery,
            a_retry_wakes_a_waiting_claim,
            an_idempotency_key_admits_one_job_while_it_is_known,
            a_wake_up_is_not_lost_when_a_claimer_waits_on_several_queues,
            complete_settles_the_job_and_records_its_completion,
            fences_grow_with_every_claim_of_a_job,
        );
    };
}

/// Generates one test per contract of the worker registry
/// ([`WorkerRegistry`](crate::WorkerRegistry)).
#[macro_export]
macro_rules! worker_registry_conformance_tests {
    ($fixture:ty) => {
        $crate::__conformance_cases!(
            $fixture,
            run_broker,
            registry,
            a_heartbeat_registers_the_worker_until_it_lapses,
            reap_returns_the_jobs_of_a_worker_whose_heartbeat_lapsed,
            reap_leaves_the_jobs_of_live_workers_alone,
            reap_leaves_what_a_lapsed_worker_claimed_after_its_lapse,
            a_lapsed_worker_that_stays_silent_loses_even_its_fresh_claims,
            jobs_taken_back_come_one_at_a_time_to_run_alone,
            a_job_lost_while_running_alone_strikes_out_and_spares_its_neighbours,
            a_suspect_in_a_later_queue_is_not_kept_waiting_by_earlier_ones,
        );
    };
}

/// Generates one test per contract of the schedule store
/// ([`ScheduleStore`](crate::ScheduleStore)).
#[macro_export]
macro_rules! schedule_store_conformance_tests {
    ($fixture:ty) => {
        $crate::__conformance_cases!(
            $fixture,
            run_broker,
            schedules,
            each_fire_time_of_a_schedule_is_claimed_once,
        );
    };
}

/// Generates one test per contract of the event stream
/// ([`EventStream`](crate::EventStream)).
#[macro_export]
macro_rules! event_stream_conformance_tests {
    ($fixture:ty) => {
        $crate::__conformance_cases!(
            $fixture,
            run_broker,
            events,
            published_events_read_back_in_order,
            an_event_cursor_reads_on_where_its_page_ended,
            a_waiting_event_read_is_woken_by_a_publish,
            the_event_stream_cap_drops_the_oldest_events,
        );
    };
}

/// Generates one test per contract of the admin capability
/// ([`BrokerAdmin`](crate::BrokerAdmin)).
#[macro_export]
macro_rules! broker_admin_conformance_tests {
    ($fixture:ty) => {
        $crate::__conformance_cases!(
            $fixture,
            run_broker,
            admin,
            purge_removes_the_waiting_jobs_only,
            dead_letter_keeps_the_reason,
            an_id_dead_lettered_twice_keeps_both_letters,
            a_dead_letter_can_be_taken_out_and_the_queue_purged,
            the_queue_registry_lists_every_queue_enqueued_to,
            a_job_is_found_by_id_in_each_state,
            delete_queue_refuses_while_jobs_are_in_flight,
            a_forced_delete_queue_takes_the_jobs_in_flight_and_their_leases,
            delete_queue_deletes_every_partition_of_a_partitioned_queue,
            cancel_removes_a_waiting_job_and_nothing_else,
            cancel_leaves_a_running_job_alone_and_finds_no_finished_one,
            cancel_takes_a_partitions_job_by_the_partitions_name,
            a_paused_queue_hands_out_nothing_until_resumed,
            resuming_wakes_a_claimer_waiting_on_the_paused_queue,
        );
    };
}

/// Generates one test per result-backend contract for a [`Fixture`] type.
#[macro_export]
macro_rules! backend_conformance_tests {
    ($fixture:ty) => {
        $crate::__conformance_cases!(
            $fixture,
            run_backend,
            backend,
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

/// The broker's worker registry, which a check of it needs.
fn registry(b: &Arc<dyn Broker>) -> &dyn WorkerRegistry {
    b.worker_registry()
        .expect("this check needs the broker's worker registry (Broker::worker_registry)")
}

/// The broker's schedule store, which a check of it needs.
fn store(b: &Arc<dyn Broker>) -> &dyn ScheduleStore {
    b.schedule_store()
        .expect("this check needs the broker's schedule store (Broker::schedule_store)")
}

/// The broker's event stream, which a check of it needs.
fn stream(b: &Arc<dyn Broker>) -> &dyn EventStream {
    b.event_stream().expect("this check needs the broker's event stream (Broker::event_stream)")
}

/// The broker's admin capability, which a check of it needs.
fn admin(b: &Arc<dyn Broker>) -> &dyn BrokerAdmin {
    b.admin().expect("this check needs the broker's admin capability (Broker::admin)")
}

/// `queue`'s figures, when the broker has an admin capability to read them: the other
/// capabilities' checks assert on them only then, so that a broker passes those
/// before it has one.
async fn figures(b: &Arc<dyn Broker>, queue: &str) -> Option<QueueStats> {
    match b.admin() {
        Some(admin) => Some(admin.queue_stats(queue).await.expect("queue figures")),
        None => None,
    }
}

/// Reaps `queues` until a reap moves something (another reaper may hold the lock for
/// a moment), for up to 10 s; returns what the last reap moved.
async fn reap_until_something_moves(b: &Arc<dyn Broker>, queues: &[String]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let moved = registry(b).reap(queues).await.expect("reap");
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
