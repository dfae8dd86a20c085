//! Shared by dmq-postgres's tests: the PostgreSQL they talk to, and a fresh schema
//! per test that is dropped after it.

#![allow(dead_code)]

use sqlx::Connection;

/// The PostgreSQL the tests use: `DMQ_POSTGRES_URL`, or the machine's own server
/// (scripts/ensure-postgres starts one when there is none).
pub fn url() -> String {
    std::env::var("DMQ_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A namespace (a schema) no other test uses.
pub fn fresh_namespace() -> String {
    format!("dmq_test_{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// Drops `namespace`'s schema and everything in it.
pub async fn drop_namespace(namespace: &str) {
    let mut conn = sqlx::PgConnection::connect(&url()).await.expect("connect to drop a schema");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{namespace}\" CASCADE")))
        .execute(&mut conn)
        .await
        .expect("drop the test's schema");
    let _ = conn.close().await;
}

/// The Redis the outbox tests relay to: `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A Redis namespace no other test uses.
pub fn fresh_redis_namespace() -> String {
    format!("dmq-test-{}", uuid::Uuid::new_v4())
}

/// Deletes every key of Redis namespace `namespace`.
pub async fn drop_redis_namespace(namespace: &str) {
    dmq_redis::delete_namespace_at(&redis_url(), &dmq_redis::Keys::new(namespace))
        .await
        .expect("delete the test's Redis keys");
}

/// A pool for the test's own SQL: the "application" that enqueues in its transactions.
pub async fn app_pool() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&url())
        .await
        .expect("connect to PostgreSQL (scripts/ensure-postgres starts one)")
}

/// Runs `test` in `namespace`'s schema, then drops the schema whether it passed or not.
pub async fn in_schema<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::FutureExt as _;
    let namespace = fresh_namespace();
    let outcome = std::panic::AssertUnwindSafe(test(namespace.clone())).catch_unwind().await;
    drop_namespace(&namespace).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
