//! `enqueue_in` on a schema that serves a PostgresBroker: the job exists for workers if
//! and only if the caller's transaction commits; mistakes are refused saying what to do.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dmq_core::{Broker, Error, Manager, TaskContext, TaskError, TaskId, task};
use dmq_postgres::{EnqueueIn, PostgresBackend, PostgresBroker};
use sqlx::PgPool;

/// How many times each job of `record` ran in this test binary.
static RUNS: Mutex<Option<HashMap<TaskId, u32>>> = Mutex::new(None);

fn runs_of(id: TaskId) -> u32 {
    RUNS.lock().unwrap().as_ref().and_then(|runs| runs.get(&id).copied()).unwrap_or(0)
}

/// Records its run and returns the order's total doubled.
#[task(name = "pg.record", queue = "pg-orders")]
async fn record(total: i64, ctx: TaskContext) -> Result<i64, TaskError> {
    *RUNS.lock().unwrap().get_or_insert_with(HashMap::new).entry(ctx.id()).or_default() += 1;
    Ok(total * 2)
}

/// A task whose queue is spread over 4 partitions.
#[task(name = "pg.parted", queue = "pg-parted", partitions = 4)]
async fn parted(n: i64) -> Result<i64, TaskError> {
    Ok(n)
}

const LEASE: Duration = Duration::from_secs(30);

fn queues(queue: &str) -> Vec<String> {
    vec![queue.to_owned()]
}

/// Makes the application's own table in the test's schema.
async fn orders_table(pool: &PgPool, ns: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE \"{ns}\".orders (id bigserial PRIMARY KEY, total bigint NOT NULL)"
    )))
    .execute(pool)
    .await
    .expect("the application's table");
}

async fn count(pool: &PgPool, sql: String) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(pool).await.expect("count")
}

#[tokio::test]
async fn a_rolled_back_transaction_enqueues_nothing() {
    common::in_schema(|ns| async move {
        let url = common::url();
        let broker = PostgresBroker::connect_sized(&url, &ns, 2).await.expect("broker");
        let app = common::app_pool().await;
        orders_table(&app, &ns).await;

        let mut tx = app.begin().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO \"{ns}\".orders (total) VALUES (7)")))
            .execute(&mut *tx)
            .await
            .unwrap();
        let id = record::call(7).enqueue_in_namespace(&mut tx, &ns).await.expect("enqueue_in");
        tx.rollback().await.unwrap();

        let claimed = broker
            .claim("w", &queues("pg-orders"), 10, LEASE, Duration::from_secs(1))
            .await
            .expect("claim");
        assert!(claimed.is_empty(), "a rolled-back job was claimed: {claimed:?}");
        assert_eq!(count(&app, format!("SELECT count(*) FROM \"{ns}\".jobs")).await, 0);
        assert_eq!(count(&app, format!("SELECT count(*) FROM \"{ns}\".orders")).await, 0);
        assert_eq!(runs_of(id), 0);
    })
    .await;
}

#[tokio::test]
async fn a_committed_transaction_enqueues_a_job_that_runs_once() {
    common::in_schema(|ns| async move {
        let url = common::url();
        let manager = Manager::builder()
            .broker(PostgresBroker::connect_sized(&url, &ns, 4).await.expect("broker"))
            .backend(PostgresBackend::connect_with_namespace(&url, &ns).await.expect("backend"))
            .build()
            .expect("manager");
        let app = common::app_pool().await;
        orders_table(&app, &ns).await;

        let mut tx = app.begin().await.unwrap();
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "INSERT INTO \"{ns}\".orders (total) VALUES (21) RETURNING total"
        )))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        let id = record::call(total).enqueue_in_namespace(&mut tx, &ns).await.expect("enqueue_in");

        // Not there for workers while the transaction is open.
        let early = manager
            .broker()
            .claim("early", &queues("pg-orders"), 10, LEASE, Duration::from_millis(300))
            .await
            .expect("claim");
        assert!(early.is_empty(), "a job was claimed before its transaction committed");

        tx.commit().await.unwrap();
        let worker = manager.worker().concurrency(4).start();
        let value = manager.result::<i64>(id).wait(Duration::from_secs(30)).await.expect("result");
        assert_eq!(value, 42);
        // A while later it has still run once, and nothing is left to claim.
        tokio::time::sleep(Duration::from_millis(500)).await;
        worker.shutdown().await;
        assert_eq!(runs_of(id), 1);
        assert_eq!(count(&app, format!("SELECT count(*) FROM \"{ns}\".jobs")).await, 0);
        assert_eq!(count(&app, format!("SELECT count(*) FROM \"{ns}\".orders")).await, 1);
    })
    .await;
}

#[tokio::test]
async fn the_commit_wakes_a_waiting_claimer() {
    common::in_schema(|ns| async move {
        let url = common::url();
        let broker = PostgresBroker::connect_sized(&url, &ns, 2).await.expect("broker");
        let app = common::app_pool().await;
        let mut tx = app.begin().await.unwrap();
        let id = record::call(1).enqueue_in_namespace(&mut tx, &ns).await.expect("enqueue_in");
        let waiting = tokio::spawn(async move {
            let started = Instant::now();
            let claimed = broker
                .claim("w", &queues("pg-orders"), 10, LEASE, Duration::from_secs(60))
                .await
                .expect("claim");
            (claimed.into_iter().map(|d| d.lease.id).collect::<Vec<_>>(), started.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        tx.commit().await.unwrap();
        let (claimed, waited) = waiting.await.unwrap();
        assert_eq!(claimed, [id]);
        // Woken by the commit's notification, long before its 60 s wait ran out.
        assert!(waited < Duration::from_secs(20), "the claimer waited {waited:?}");
    })
    .await;
}

#[tokio::test]
async fn an_idempotency_key_enqueues_one_job_across_transactions() {
    common::in_schema(|ns| async move {
        let url = common::url();
        let _broker = PostgresBroker::connect_sized(&url, &ns, 2).await.expect("broker");
        let app = common::app_pool().await;
        let mut first = app.begin().await.unwrap();
        let id = record::call(1)
            .idempotency_key("order-1")
            .enqueue_in_namespace(&mut first, &ns)
            .await
            .expect("first");
        first.commit().await.unwrap();
        let mut second = app.begin().await.unwrap();
        let again = record::call(1)
            .idempotency_key("order-1")
            .enqueue_in_namespace(&mut second, &ns)
            .await
            .expect("second");
        second.commit().await.unwrap();
        assert_eq!(again, id, "the second enqueue names the first job");
        assert_eq!(count(&app, format!("SELECT count(*) FROM \"{ns}\".jobs")).await, 1);
    })
    .await;
}

#[tokio::test]
async fn a_delay_and_a_partition_key_are_kept() {
    common::in_schema(|ns| async move {
        let url = common::url();
        let _broker = PostgresBroker::connect_sized(&url, &ns, 2).await.expect("broker");
        let app = common::app_pool().await;
        let mut tx = app.begin().await.unwrap();
        let later = record::call(1)
            .delay(Duration::from_secs(3600))
            .enqueue_in_namespace(&mut tx, &ns)
            .await
            .expect("delayed");
        let keyed = parted::call(2)
            .partition_key("customer-7")
            .enqueue_in_namespace(&mut tx, &ns)
            .await
            .expect("keyed");
        tx.commit().await.unwrap();
        let state: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT state FROM \"{ns}\".jobs WHERE id = $1"
        )))
        .bind(later.as_uuid())
        .fetch_one(&app)
        .await
        .unwrap();
        assert_eq!(state, "delayed");
        let queue: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT queue FROM \"{ns}\".jobs WHERE id = $1"
        )))
        .bind(keyed.as_uuid())
        .fetch_one(&app)
        .await
        .unwrap();
        let partition = dmq_core::partition_of_key("customer-7", 4);
        assert_eq!(queue, dmq_core::partition_name("pg-parted", partition));
    })
    .await;
}

#[tokio::test]
async fn a_schema_that_serves_nothing_yet_is_refused_saying_to_migrate() {
    common::in_schema(|ns| async move {
        let url = common::url();
        // The tables, but no broker or relay has said what the schema serves.
        dmq_postgres::migrate_namespace(&url, &ns, None).await.expect("migrate");
        let app = common::app_pool().await;
        let mut tx = app.begin().await.unwrap();
        let err = record::call(1).enqueue_in_namespace(&mut tx, &ns).await.unwrap_err();
        let message = err.to_string();
        assert!(message.contains("serves neither a broker nor an outbox"), "{message}");
        assert!(message.contains("dmq migrate"), "{message}");
        assert!(message.contains("roll it back"), "{message}");
        assert!(!err.is_transient());
        // As the error says, PostgreSQL has aborted the transaction.
        let next = sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap_err();
        assert_eq!(next.as_database_error().and_then(|d| d.code()).as_deref(), Some("25P02"));
        tx.rollback().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn an_unknown_namespace_is_refused_saying_to_migrate() {
    let app = common::app_pool().await;
    let ns = common::fresh_namespace();
    let mut tx = app.begin().await.unwrap();
    let err = record::call(1).enqueue_in_namespace(&mut tx, &ns).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&ns), "{message}");
    assert!(message.contains("does not exist"), "{message}");
    assert!(message.contains("dmq migrate"), "{message}");
    tx.rollback().await.unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_sent() {
    common::in_schema(|ns| async move {
        let url = common::url();
        let _broker = PostgresBroker::connect_sized(&url, &ns, 2).await.expect("broker");
        let app = common::app_pool().await;
        let mut tx = app.begin().await.unwrap();

        let bad_namespace = record::call(1).enqueue_in_namespace(&mut tx, "Bad-Name").await;
        assert!(matches!(bad_namespace, Err(Error::InvalidArgument(_))), "{bad_namespace:?}");
        let bad_queue = record::call(1).queue("two words").enqueue_in_namespace(&mut tx, &ns).await;
        assert!(matches!(bad_queue, Err(Error::InvalidArgument(_))), "{bad_queue:?}");
        let partition =
            record::call(1).queue("pg-orders#2").enqueue_in_namespace(&mut tx, &ns).await;
        assert!(matches!(partition, Err(Error::InvalidArgument(_))), "{partition:?}");
        // A partition key for a queue no linked task declares partitioned.
        let keyed = record::call(1).partition_key("k").enqueue_in_namespace(&mut tx, &ns).await;
        let Err(Error::InvalidArgument(why)) = keyed else { panic!("{keyed:?}") };
        assert!(why.contains("enqueue it with the manager"), "{why}");
        let priority = record::call(1).priority(10).enqueue_in_namespace(&mut tx, &ns).await;
        assert!(matches!(priority, Err(Error::InvalidArgument(_))), "{priority:?}");

        // None of them reached PostgreSQL: the transaction goes on and commits.
        let id = record::call(1).enqueue_in_namespace(&mut tx, &ns).await.expect("a good one");
        tx.commit().await.unwrap();
        let ids: Vec<uuid::Uuid> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT id FROM \"{ns}\".jobs")))
                .fetch_all(&app)
                .await
                .unwrap();
        assert_eq!(ids, [*id.as_uuid()]);
    })
    .await;
}
