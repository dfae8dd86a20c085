//! Helpers shared by the end-to-end tests.

#![allow(dead_code)]

use std::fmt::Debug;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use dmq_core::{
    Broker, Error, InMemoryBackend, InMemoryBroker, Manager, ManagerBuilder, ResultBackend, TaskId,
    TaskOutcome, TaskState,
};
use dmq_redis::{Keys, RedisBackend, RedisBroker};

pub mod schema;
pub mod workers;

/// How long a test waits for a result before calling it lost: generous, never a
/// performance bound.
pub const WAIT: Duration = Duration::from_secs(30);

/// The kind and message of a failed task's result; panics on anything else.
pub fn failure<T: Debug>(result: Result<T, Error>) -> (String, String) {
    match result {
        Err(Error::TaskFailed { kind, message, .. }) => (kind, message),
        other => panic!("expected a failed task result, got {other:?}"),
    }
}

/// `args` encoded as a task's argument tuple.
pub fn encode_args<T: serde::Serialize>(args: &T) -> Vec<u8> {
    rmp_serde::to_vec(args).expect("encode the arguments")
}

/// Runs each scenario twice, as the tests `<scenario>::in_memory` and
/// `<scenario>::on_redis`; attributes before a scenario go on both.
#[allow(unused_macros)]
macro_rules! on_both_brokers {
    ($($(#[$attr:meta])* $scenario:ident;)+) => {$(
        mod $scenario {
            $(#[$attr])*
            #[test]
            fn in_memory() {
                $crate::common::run_in_memory(super::$scenario);
            }

            $(#[$attr])*
            #[test]
            fn on_redis() {
                $crate::common::run_on_redis(super::$scenario);
            }
        }
    )+};
}

#[allow(unused_imports)]
pub(crate) use on_both_brokers;

/// The Redis the tests use: `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Where a scenario runs: the in-memory broker and backend, or Redis in a namespace
/// `dmq-test-<uuid>` of its own.
#[derive(Debug, Clone)]
pub enum Backing {
    /// `InMemoryBroker` and `InMemoryBackend`.
    Memory,
    /// `RedisBroker` and `RedisBackend`, both in `namespace`.
    Redis {
        /// The test's own namespace; [`run`] deletes its keys at the end.
        namespace: String,
    },
}

impl Backing {
    /// A manager builder on this backing, its broker keeping the default number of dead
    /// letters per queue.
    pub async fn builder(&self) -> ManagerBuilder {
        self.builder_capped(None).await
    }

    /// A manager builder on this backing, its broker keeping at most `cap` dead letters
    /// per queue (dropping the oldest beyond that, and counting them).
    pub async fn builder_with_dead_letter_cap(&self, cap: usize) -> ManagerBuilder {
        self.builder_capped(Some(cap)).await
    }

    async fn builder_capped(&self, cap: Option<usize>) -> ManagerBuilder {
        let (broker, backend): (Arc<dyn Broker>, Arc<dyn ResultBackend>) = match self {
            Backing::Memory => {
                let broker =
                    cap.map_or_else(InMemoryBroker::new, InMemoryBroker::with_dead_letter_cap);
                (Arc::new(broker), Arc::new(InMemoryBackend::new()))
            }
            Backing::Redis { namespace } => {
                let url = redis_url();
                let hint = "connect to redis (scripts/ensure-redis starts one)";
                let mut broker =
                    RedisBroker::connect_with_namespace(&url, namespace).await.expect(hint);
                if let Some(cap) = cap {
                    broker = broker.with_dead_letter_cap(cap);
                }
                let backend =
                    RedisBackend::connect_with_namespace(&url, namespace).await.expect(hint);
                (Arc::new(broker), Arc::new(backend))
            }
        };
        Manager::builder().shared_broker(broker).shared_backend(backend)
    }

    /// A manager on this backing with the default settings.
    pub async fn manager(&self) -> Manager {
        self.builder().await.build().expect("manager")
    }
}

/// Runs `scenario` on `backing` in a runtime of its own, then stops that runtime (and
/// with it any worker a failed scenario left running) and, on Redis, deletes the
/// namespace's keys: passed or failed, the test leaves nothing behind.
pub fn run<F, Fut>(backing: Backing, scenario: F)
where
    F: FnOnce(Backing) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome =
        std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(scenario(backing.clone()))));
    runtime.shutdown_timeout(Duration::from_secs(10));
    if let Backing::Redis { namespace } = &backing {
        remove_namespace_blocking(namespace);
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `scenario` on the in-memory broker (see [`run`]).
pub fn run_in_memory<F, Fut>(scenario: F)
where
    F: FnOnce(Backing) -> Fut,
    Fut: Future<Output = ()>,
{
    run(Backing::Memory, scenario);
}

/// Runs `scenario` on Redis in a fresh namespace, removed afterwards (see [`run`]).
pub fn run_on_redis<F, Fut>(scenario: F)
where
    F: FnOnce(Backing) -> Fut,
    Fut: Future<Output = ()>,
{
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    run(Backing::Redis { namespace }, scenario);
}

/// Deletes every key of `namespace` (never FLUSHDB or FLUSHALL), on a runtime of its
/// own; reports a failure rather than hiding the test's own result behind it.
fn remove_namespace_blocking(namespace: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let removed: Result<u64, String> = runtime.block_on(async {
        let client = redis::Client::open(redis_url()).map_err(|e| e.to_string())?;
        let mut conn =
            client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
        dmq_redis::delete_namespace(&mut conn, &Keys::new(namespace))
            .await
            .map_err(|e| e.to_string())
    });
    if let Err(e) = removed {
        eprintln!("could not delete the keys of namespace {namespace}: {e}");
    }
}

/// The stored outcome of job `id`; panics when there is none.
pub async fn stored(manager: &Manager, id: TaskId) -> TaskOutcome {
    manager.backend().get(id).await.expect("read the result").expect("a stored result")
}

/// The stored outcome of job `id` once it says the job succeeded, waiting up to
/// [`WAIT`]: a requeued job's failed result stays stored until its new run replaces it.
pub async fn succeeded(manager: &Manager, id: TaskId) -> TaskOutcome {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let outcome = manager.backend().get(id).await.expect("read the result");
        if let Some(outcome) = outcome.filter(|o| o.state == TaskState::Succeeded) {
            return outcome;
        }
        assert!(std::time::Instant::now() < deadline, "job {id} did not succeed within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ids in a page of `queue`'s dead-letter queue, newest first.
pub async fn letter_ids(
    manager: &Manager,
    queue: &str,
    offset: usize,
    limit: usize,
) -> Vec<TaskId> {
    let page = manager.dead_letters(queue, offset, limit).await.expect("list the dead letters");
    page.into_iter().map(|letter| letter.id).collect()
}

/// How many jobs `queue` holds: (ready, delayed, in flight, dead).
pub async fn queue_counts(manager: &Manager, queue: &str) -> (u64, u64, u64, u64) {
    let stats = manager.admin().expect("admin").queue_stats(queue).await.expect("queue stats");
    (stats.ready, stats.delayed, stats.in_flight, stats.dead)
}
