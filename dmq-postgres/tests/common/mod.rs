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
