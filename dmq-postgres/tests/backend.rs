//! The PostgreSQL result backend beyond the conformance suite: typed results behind
//! the Redis broker, one listening connection however many wait, and the sweep of
//! lapsed rows.

mod common;

use std::sync::Arc;
use std::time::Duration;

use dmq_core::{Error, Manager, ResultBackend, TaskError, TaskId, TaskOutcome};
use dmq_postgres::PostgresBackend;
use dmq_redis::{Keys, RedisBroker};

#[dmq_core::task(name = "pg_backend.add", queue = "pg-backend")]
async fn add(x: i64, y: i64) -> Result<i64, TaskError> {
    Ok(x + y)
}

#[dmq_core::task(name = "pg_backend.refuse", queue = "pg-backend")]
async fn refuse(why: String) -> Result<(), TaskError> {
    Err(TaskError::fatal(why))
}

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
struct Receipt {
    order: u64,
    lines: Vec<String>,
}

#[dmq_core::task(name = "pg_backend.receipt", queue = "pg-backend")]
async fn receipt(order: u64) -> Result<Receipt, TaskError> {
    Ok(Receipt { order, lines: vec![format!("order {order}"), "paid".to_owned()] })
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_results_come_back_through_postgres_behind_the_redis_broker() {
    let schema = common::fresh_namespace();
    let redis_namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let outcome = tokio::spawn({
        let (schema, redis_namespace) = (schema.clone(), redis_namespace.clone());
        async move {
            let broker = RedisBroker::connect_with_namespace(&redis_url(), &redis_namespace)
                .await
                .expect("redis (scripts/ensure-redis starts one)");
            let backend = PostgresBackend::connect_with_namespace(&common::url(), &schema)
                .await
                .expect("postgres (scripts/ensure-postgres starts one)");
            let manager = Manager::builder().broker(broker).backend(backend).build().expect("m");
            let worker = manager.worker().queues(["pg-backend"]).concurrency(4).start();
            let sum = add::call(2, 3).enqueue(&manager).await.expect("enqueue");
            assert_eq!(sum.result(Duration::from_secs(20)).await.expect("a sum"), 5);
            let made = receipt::call(7).enqueue(&manager).await.expect("enqueue");
            let expected = Receipt { order: 7, lines: vec!["order 7".into(), "paid".into()] };
            assert_eq!(made.result(Duration::from_secs(20)).await.expect("a receipt"), expected);
            let again: Receipt =
                manager.result::<Receipt>(made.id()).get().await.expect("read").expect("kept");
            assert_eq!(again, expected, "read again by id, typed");
            let refused = refuse::call("no stock".to_owned()).enqueue(&manager).await.expect("e");
            match refused.result(Duration::from_secs(20)).await {
                Err(Error::TaskFailed { message, .. }) => assert!(message.contains("no stock")),
                other => panic!("expected the task's failure, got {other:?}"),
            }
            let wrong = manager.result::<String>(sum.id()).get().await;
            assert!(matches!(wrong, Err(Error::ResultType { .. })), "{wrong:?}");
            worker.shutdown().await;
        }
    })
    .await;
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
    dmq_redis::delete_namespace(&mut conn, &Keys::new(&redis_namespace)).await.expect("cleanup");
    common::drop_namespace(&schema).await;
    outcome.expect("the scenario passed");
}

/// How many connections named `name` PostgreSQL has open.
async fn connections_named(name: &str) -> i64 {
    let pool = sqlx::PgPool::connect(&common::url()).await.expect("connect");
    let n = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
        .bind(name)
        .fetch_one(&pool)
        .await
        .expect("count connections");
    pool.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_waiters_share_one_listening_connection_and_all_wake() {
    let schema = common::fresh_namespace();
    let name = format!("dmq_waiters_{}", &schema[10..]);
    let url = format!("{}?application_name={name}", common::url());
    let outcome = tokio::spawn({
        let schema = schema.clone();
        async move {
            let backend =
                Arc::new(PostgresBackend::connect_with_namespace(&url, &schema).await.expect("b"));
            let ids: Vec<TaskId> = (0..300).map(|_| TaskId::new()).collect();
            let waiters: Vec<_> = ids
                .iter()
                .map(|&id| {
                    let backend = Arc::clone(&backend);
                    tokio::spawn(async move { backend.wait(id, Duration::from_secs(60)).await })
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let open = connections_named(&name).await;
            // The pool (10 at most) and the one listening connection: not one per waiter.
            assert!(open <= 11, "{open} connections for 300 waiters");
            assert!(waiters.iter().all(|w| !w.is_finished()), "a wait ended before its result");
            let outcome = TaskOutcome::succeeded(vec![0xc0], 1, chrono::Utc::now());
            for &id in &ids {
                backend.store(id, &outcome, Duration::from_secs(60)).await.expect("store");
            }
            for waiter in waiters {
                let got = tokio::time::timeout(Duration::from_secs(20), waiter)
                    .await
                    .expect("every waiter is woken")
                    .expect("join")
                    .expect("wait");
                let got = got.expect("a result");
                assert_eq!((got.state, got.value.as_deref()), (outcome.state, Some(&[0xc0][..])));
            }
        }
    })
    .await;
    common::drop_namespace(&schema).await;
    outcome.expect("the scenario passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_results_are_swept_in_batches_and_never_read() {
    let schema = common::fresh_namespace();
    let outcome = tokio::spawn({
        let schema = schema.clone();
        async move {
            let backend = PostgresBackend::connect_with_namespace(&common::url(), &schema)
                .await
                .expect("backend");
            let outcome = TaskOutcome::succeeded(vec![0xc0], 1, chrono::Utc::now());
            let brief: Vec<TaskId> = (0..2_500).map(|_| TaskId::new()).collect();
            for &id in &brief {
                backend.store(id, &outcome, Duration::from_millis(100)).await.expect("store");
            }
            let kept = TaskId::new();
            backend.store(kept, &outcome, Duration::from_secs(600)).await.expect("store");
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(backend.get(brief[0]).await.expect("get"), None, "a lapsed result");
            let rows = |backend: &PostgresBackend| {
                let (pool, table) = (backend.pool().clone(), format!("\"{schema}\".results"));
                async move {
                    let sql = format!("SELECT count(*) FROM {table}");
                    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                        .fetch_one(&pool)
                        .await
                        .expect("count")
                }
            };
            assert_eq!(rows(&backend).await, 2_501, "lapsed rows wait for the sweep");
            assert_eq!(backend.sweep().await.expect("sweep"), 2_500, "in three batches");
            assert_eq!(rows(&backend).await, 1);
            assert!(backend.get(kept).await.expect("get").is_some());

            // The backend sweeps on its own too.
            let backend = backend.with_sweep_every(Duration::from_millis(200));
            for &id in &brief[..50] {
                backend.store(id, &outcome, Duration::from_millis(50)).await.expect("store");
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while rows(&backend).await > 1 {
                assert!(tokio::time::Instant::now() < deadline, "the sweeper never ran");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    })
    .await;
    common::drop_namespace(&schema).await;
    outcome.expect("the scenario passed");
}
