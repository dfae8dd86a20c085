//! The outbox: `enqueue_in` on a schema in outbox mode, and the `OutboxRelay` that moves
//! what committed to Redis, once: rolled back and committed transactions, a row a dead
//! relay left behind, users' idempotency keys, one relay at a time, a failing broker.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dmq_core::{
    Broker, BrokerAdmin, Delivery, Error, InMemoryBroker, Job, Lease, Manager, Result, TaskError,
    TaskId, task,
};
use dmq_postgres::{EnqueueIn, OutboxRelay, PostgresBroker, RelayStats};
use dmq_redis::{RedisBackend, RedisBroker};
use futures::FutureExt as _;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[task(name = "outbox.ship", queue = "outbox-ship")]
async fn ship(order: i64) -> Result<i64, TaskError> {
    Ok(order)
}

const QUEUE: &str = "outbox-ship";
const LEASE: Duration = Duration::from_secs(30);

/// Runs `test` with a fresh schema and a fresh Redis namespace, both removed after.
async fn with_outbox<F, Fut>(test: F)
where
    F: FnOnce(String, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let redis_ns = common::fresh_redis_namespace();
    let for_test = redis_ns.clone();
    let outcome = std::panic::AssertUnwindSafe(common::in_schema(|ns| test(ns, for_test)))
        .catch_unwind()
        .await;
    common::drop_redis_namespace(&redis_ns).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn redis_broker(namespace: &str) -> Arc<RedisBroker> {
    let broker = RedisBroker::connect_with_namespace(&common::redis_url(), namespace)
        .await
        .expect("connect to Redis (scripts/ensure-redis starts one)");
    Arc::new(broker)
}

/// A relay running in this process until the handle is stopped.
struct Running {
    stats: RelayStats,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    fn start(relay: OutboxRelay) -> Self {
        let stats = relay.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(relay.run_until(async move {
            let _ = stopped.await;
        }));
        Running { stats, stop: Some(stop), task }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the relay stops when told")
            .expect("the relay did not panic");
    }
}

/// The relay of `ns`, relaying to `broker`, that only a notification wakes in time:
/// its fallback poll is a minute.
async fn relay(ns: &str, broker: Arc<dyn Broker>) -> OutboxRelay {
    OutboxRelay::connect_with_namespace(&common::url(), ns, broker)
        .await
        .expect("relay")
        .with_poll_interval(Duration::from_secs(60))
}

/// Waits up to 20 s for `check` to hold.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < give_up, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn outbox_rows(app: &PgPool, ns: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM \"{ns}\".outbox")))
        .fetch_one(app)
        .await
        .expect("count the outbox")
}

async fn ready(admin: &dyn BrokerAdmin) -> u64 {
    admin.queue_stats(QUEUE).await.expect("queue stats").ready
}

/// Commits one job of `ship` in a transaction of its own; returns its id.
async fn commit_one(app: &PgPool, ns: &str, order: i64) -> TaskId {
    let mut tx = app.begin().await.unwrap();
    let id = ship::call(order).enqueue_in_namespace(&mut tx, ns).await.expect("enqueue_in");
    tx.commit().await.unwrap();
    id
}

#[tokio::test]
async fn a_rolled_back_job_never_reaches_redis_and_a_committed_one_reaches_it_once() {
    with_outbox(|ns, redis_ns| async move {
        let broker = redis_broker(&redis_ns).await;
        let running = Running::start(relay(&ns, broker.clone()).await);
        let app = common::app_pool().await;

        let mut rolled_back = app.begin().await.unwrap();
        let lost = ship::call(1).enqueue_in_namespace(&mut rolled_back, &ns).await.unwrap();
        rolled_back.rollback().await.unwrap();
        let mut committed = app.begin().await.unwrap();
        let kept = ship::call(2).enqueue_in_namespace(&mut committed, &ns).await.unwrap();
        // Written to the outbox, not to Redis, while the transaction is open.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let admin = broker.admin().unwrap();
        assert_eq!(ready(admin).await, 0);
        committed.commit().await.unwrap();

        // The commit's notification wakes the relay (its poll is a minute away).
        let stats = running.stats.clone();
        eventually("the relay moved the job", || {
            let stats = stats.clone();
            async move { stats.relayed() == 1 }
        })
        .await;
        let queues = [QUEUE.to_owned()];
        let found = admin.find_job(kept, &queues).await.unwrap().expect("the job is in Redis");
        assert_eq!(found.queue, QUEUE);
        assert!(admin.find_job(lost, &queues).await.unwrap().is_none());
        assert_eq!(outbox_rows(&app, &ns).await, 0);

        // A while later it is still there once, and nothing else came.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(ready(admin).await, 1);
        assert_eq!(running.stats.relayed(), 1);
        assert_eq!(running.stats.already_relayed(), 0);
        running.stop().await;

        // And a worker on Redis runs it.
        let manager = Manager::builder()
            .shared_broker(broker)
            .backend(
                RedisBackend::connect_with_namespace(&common::redis_url(), &redis_ns)
                    .await
                    .unwrap(),
            )
            .build()
            .unwrap();
        let worker = manager.worker().queues([QUEUE]).start();
        let value = manager.result::<i64>(kept).wait(Duration::from_secs(30)).await.unwrap();
        assert_eq!(value, 2);
        worker.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn rows_a_dead_relay_left_behind_are_deleted_not_enqueued_again() {
    with_outbox(|ns, redis_ns| async move {
        let broker = redis_broker(&redis_ns).await;
        // Makes the schema an outbox; this relay never runs.
        drop(relay(&ns, broker.clone()).await);
        let app = common::app_pool().await;
        let done = commit_one(&app, &ns, 1).await;
        let queued = commit_one(&app, &ns, 2).await;

        // What a relay that died before its delete committed did: it enqueued both
        // jobs under their outbox keys; a worker has run the first already.
        let rows: Vec<(uuid::Uuid, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, payload FROM \"{ns}\".outbox ORDER BY position"
        )))
        .fetch_all(&app)
        .await
        .unwrap();
        for (id, payload) in rows {
            let job = Job::new(TaskId::from(id), QUEUE, 5, None, payload)
                .with_idempotency_key(format!("outbox:{id}"), Duration::from_secs(3600));
            broker.enqueue(job).await.unwrap();
        }
        let claimed =
            broker.claim("w", &[QUEUE.to_owned()], 1, LEASE, Duration::ZERO).await.unwrap();
        assert_eq!(claimed.iter().map(|d| d.lease.id).collect::<Vec<_>>(), [done]);
        broker.ack(&claimed[0].lease).await.unwrap();

        let running = Running::start(relay(&ns, broker.clone()).await);
        let stats = running.stats.clone();
        eventually("the relay dealt with both rows", || {
            let stats = stats.clone();
            async move { stats.already_relayed() == 2 }
        })
        .await;
        assert_eq!(outbox_rows(&app, &ns).await, 0);
        assert_eq!(running.stats.relayed(), 0);
        // Neither came again: the finished one is gone, the waiting one waits once.
        let admin = broker.admin().unwrap();
        assert_eq!(ready(admin).await, 1);
        let queues = [QUEUE.to_owned()];
        assert!(admin.find_job(done, &queues).await.unwrap().is_none());
        assert!(admin.find_job(queued, &queues).await.unwrap().is_some());
        running.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_users_idempotency_key_holds_in_the_outbox_and_in_redis() {
    with_outbox(|ns, redis_ns| async move {
        let broker = redis_broker(&redis_ns).await;
        let running = Running::start(relay(&ns, broker.clone()).await);
        let app = common::app_pool().await;

        // Two transactions with one key: one job, whose id both get.
        let mut first = app.begin().await.unwrap();
        let id = ship::call(1)
            .idempotency_key("order-1")
            .enqueue_in_namespace(&mut first, &ns)
            .await
            .unwrap();
        first.commit().await.unwrap();
        let mut second = app.begin().await.unwrap();
        let again = ship::call(1)
            .idempotency_key("order-1")
            .enqueue_in_namespace(&mut second, &ns)
            .await
            .unwrap();
        second.commit().await.unwrap();
        assert_eq!(again, id);

        // A job enqueued on Redis directly holds "order-2" there: the outbox's job with
        // that key is a duplicate, dropped by the relay.
        let manager = Manager::builder().shared_broker(broker.clone()).build().unwrap();
        let direct = ship::call(2).idempotency_key("order-2").enqueue(&manager).await.unwrap();
        let mut third = app.begin().await.unwrap();
        let dropped = ship::call(2)
            .idempotency_key("order-2")
            .enqueue_in_namespace(&mut third, &ns)
            .await
            .unwrap();
        third.commit().await.unwrap();
        assert_ne!(dropped, direct.id());

        let stats = running.stats.clone();
        eventually("the relay dealt with both rows", || {
            let stats = stats.clone();
            async move { stats.relayed() == 1 && stats.duplicates() == 1 }
        })
        .await;
        let admin = broker.admin().unwrap();
        let queues = [QUEUE.to_owned()];
        assert_eq!(ready(admin).await, 2, "order-1's job and the direct order-2 job");
        assert!(admin.find_job(id, &queues).await.unwrap().is_some());
        assert!(admin.find_job(dropped, &queues).await.unwrap().is_none());
        assert_eq!(outbox_rows(&app, &ns).await, 0);
        running.stop().await;
    })
    .await;
}

#[tokio::test]
async fn one_relay_relays_at_a_time_and_another_takes_over_when_it_stops() {
    with_outbox(|ns, redis_ns| async move {
        let broker = redis_broker(&redis_ns).await;
        let first = Running::start(relay(&ns, broker.clone()).await);
        let first_stats = first.stats.clone();
        eventually("the first relay leads", || {
            let stats = first_stats.clone();
            async move { stats.takeovers() == 1 }
        })
        .await;
        let second = Running::start(relay(&ns, broker.clone()).await);
        let app = common::app_pool().await;
        for order in 0..20 {
            commit_one(&app, &ns, order).await;
        }
        eventually("the first relay moved the jobs", || {
            let stats = first_stats.clone();
            async move { stats.relayed() == 20 }
        })
        .await;
        assert_eq!(second.stats.takeovers(), 0, "the second relay waits for the lock");
        assert_eq!(second.stats.relayed(), 0);

        first.stop().await;
        let second_stats = second.stats.clone();
        eventually("the second relay takes over", || {
            let stats = second_stats.clone();
            async move { stats.takeovers() == 1 }
        })
        .await;
        for order in 20..30 {
            commit_one(&app, &ns, order).await;
        }
        eventually("the second relay moved the rest", || {
            let stats = second_stats.clone();
            async move { stats.relayed() == 10 }
        })
        .await;
        assert_eq!(ready(broker.admin().unwrap()).await, 30);
        second.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_broker_schema_and_an_outbox_schema_refuse_each_other() {
    common::in_schema(|ns| async move {
        let url = common::url();
        let _broker = PostgresBroker::connect_sized(&url, &ns, 2).await.expect("broker");
        let err = OutboxRelay::connect_with_namespace(&url, &ns, Arc::new(InMemoryBroker::new()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("a PostgreSQL broker's"), "{err}");
    })
    .await;
    common::in_schema(|ns| async move {
        let url = common::url();
        let _relay =
            OutboxRelay::connect_with_namespace(&url, &ns, Arc::new(InMemoryBroker::new()))
                .await
                .expect("relay");
        let err = PostgresBroker::connect_sized(&url, &ns, 2).await.unwrap_err();
        assert!(err.to_string().contains("an outbox relayed to Redis"), "{err}");
    })
    .await;
}

/// An in-memory broker that can be down, and that refuses jobs of queue `refused`.
#[derive(Debug, Default)]
struct Moody {
    inner: InMemoryBroker,
    down: AtomicBool,
}

#[async_trait::async_trait]
impl Broker for Moody {
    async fn enqueue(&self, job: Job) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::backend("the broker is down", true));
        }
        if job.queue == "refused" {
            return Err(Error::InvalidArgument("queue \"refused\" takes no jobs".to_owned()));
        }
        self.inner.enqueue(job).await
    }
    async fn enqueue_batch(&self, jobs: Vec<Job>) -> Result<()> {
        self.inner.enqueue_batch(jobs).await
    }
    async fn claim(
        &self,
        worker: &str,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        self.inner.claim(worker, queues, max, lease, wait).await
    }
    async fn ack(&self, lease: &Lease) -> Result<()> {
        self.inner.ack(lease).await
    }
    async fn complete(&self, lease: &Lease, remember: Duration) -> Result<()> {
        self.inner.complete(lease, remember).await
    }
    async fn is_complete(&self, queue: &str, id: TaskId) -> Result<bool> {
        self.inner.is_complete(queue, id).await
    }
    async fn retry(&self, lease: &Lease, payload: Vec<u8>, eta: DateTime<Utc>) -> Result<()> {
        self.inner.retry(lease, payload, eta).await
    }
    async fn release(&self, lease: &Lease) -> Result<()> {
        self.inner.release(lease).await
    }
    async fn dead_letter(&self, lease: &Lease, reason: &str) -> Result<()> {
        self.inner.dead_letter(lease, reason).await
    }
    async fn renew(&self, lease: &Lease, lease_for: Duration) -> Result<()> {
        self.inner.renew(lease, lease_for).await
    }
    fn admin(&self) -> Option<&dyn BrokerAdmin> {
        self.inner.admin()
    }
}

#[tokio::test]
async fn rows_wait_while_the_broker_is_down_and_a_refused_job_is_dead_lettered() {
    common::in_schema(|ns| async move {
        let broker = Arc::new(Moody::default());
        broker.down.store(true, Ordering::SeqCst);
        let running = Running::start(relay(&ns, broker.clone()).await);
        let app = common::app_pool().await;
        let mut tx = app.begin().await.unwrap();
        let mut ids = Vec::new();
        for order in 0..3 {
            ids.push(ship::call(order).enqueue_in_namespace(&mut tx, &ns).await.unwrap());
        }
        let refused =
            ship::call(9).queue("refused").enqueue_in_namespace(&mut tx, &ns).await.unwrap();
        tx.commit().await.unwrap();

        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(outbox_rows(&app, &ns).await, 4, "nothing is lost while the broker is down");
        assert_eq!(running.stats.relayed(), 0);

        broker.down.store(false, Ordering::SeqCst);
        let stats = running.stats.clone();
        eventually("the relay moved the jobs once the broker was back", || {
            let stats = stats.clone();
            async move { stats.relayed() == 3 && stats.dead_lettered() == 1 }
        })
        .await;
        assert_eq!(outbox_rows(&app, &ns).await, 0);
        let admin = broker.admin().unwrap();
        assert_eq!(ready(admin).await, 3);
        let reason: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT reason FROM \"{ns}\".dead_letters WHERE id = $1"
        )))
        .bind(refused.as_uuid())
        .fetch_one(&app)
        .await
        .unwrap();
        assert!(reason.contains("takes no jobs"), "{reason}");
        running.stop().await;
    })
    .await;
}
