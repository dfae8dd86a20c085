// Run with: `cargo run -p dmq-examples --example outbox` (PostgreSQL at DMQ_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/postgres; Redis at DMQ_BROKER_URL, default redis://127.0.0.1:6379)
//! Enqueue in your own transaction: an order and the job that sends its receipt are
//! saved together or not at all. The job waits in PostgreSQL's outbox until the
//! transaction commits, then a relay moves it to Redis, once, where a worker runs it;
//! the job of a rolled-back order never exists.
//!
//! Here the relay and the worker run in this process; in production `dmq worker
//! --outbox postgres://...` runs the relay beside each worker.

use std::time::Duration;

use dmq_core::{Manager, TaskError, task};
use dmq_postgres::{EnqueueIn, OutboxRelay};
use dmq_redis::{RedisBackend, RedisBroker};

/// The namespace of this example: the PostgreSQL schema of its outbox, and its keys
/// in Redis.
const NAMESPACE: &str = "dmq_example_outbox";

/// Pretends to e-mail a receipt.
#[task(name = "example.send_receipt", queue = "receipts")]
async fn send_receipt(order: i64, email: String) -> Result<String, TaskError> {
    Ok(format!("receipt for order {order} sent to {email}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let postgres = std::env::var("DMQ_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let redis =
        std::env::var("DMQ_BROKER_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());

    let manager = Manager::builder()
        .broker(RedisBroker::connect_with_namespace(&redis, NAMESPACE).await?)
        .backend(RedisBackend::connect_with_namespace(&redis, NAMESPACE).await?)
        .build()?;
    let worker = manager.worker().queues(["receipts"]).start();
    // Makes the schema an outbox (as `dmq migrate` would) and relays it to Redis.
    let relay =
        OutboxRelay::connect_with_namespace(&postgres, NAMESPACE, manager.broker().clone()).await?;
    let stats = relay.stats();
    let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
    let relaying = tokio::spawn(relay.run_until(async {
        let _ = relay_stopped.await;
    }));

    // The application's own data.
    let pool = sqlx::PgPool::connect(&postgres).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS example_orders (id bigserial PRIMARY KEY, email text NOT NULL)",
    )
    .execute(&pool)
    .await?;
    let insert = "INSERT INTO example_orders (email) VALUES ($1) RETURNING id";

    // An order that commits: its receipt is sent.
    let mut tx = pool.begin().await?;
    let email = "ann@example.com".to_owned();
    let order: i64 = sqlx::query_scalar(insert).bind(&email).fetch_one(&mut *tx).await?;
    let id = send_receipt::call(order, email).enqueue_in_namespace(&mut tx, NAMESPACE).await?;
    tx.commit().await?;
    let receipt = manager.result::<String>(id).wait(Duration::from_secs(30)).await?;
    println!("order {order} committed; job {id}: {receipt}");

    // An order that rolls back: no order, and no receipt, ever.
    let mut tx = pool.begin().await?;
    let email = "bob@example.com".to_owned();
    let order: i64 = sqlx::query_scalar(insert).bind(&email).fetch_one(&mut *tx).await?;
    let id = send_receipt::call(order, email).enqueue_in_namespace(&mut tx, NAMESPACE).await?;
    tx.rollback().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stored: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM example_orders WHERE id = $1)")
            .bind(order)
            .fetch_one(&pool)
            .await?;
    let result = manager.result::<String>(id).get().await?;
    println!("order {order} rolled back; stored: {stored}, job {id}'s result: {result:?}");

    let _ = stop_relay.send(());
    relaying.await?;
    worker.shutdown().await;
    println!("the relay moved {} job(s) to Redis", stats.relayed());
    Ok(())
}
