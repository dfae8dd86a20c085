//! Helpers shared by the Redis tests: each test works in a fresh namespace and removes
//! its keys afterwards (never FLUSHDB or FLUSHALL).

#![allow(dead_code)]

use dmq_redis::Keys;

/// The Redis the tests use: `DMQ_TEST_REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("DMQ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A namespace no other test uses.
pub fn fresh_namespace() -> String {
    format!("dmq-test-{}", uuid::Uuid::new_v4())
}

/// Deletes every key of `namespace`.
pub async fn remove_namespace(namespace: &str) {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect to redis");
    dmq_redis::delete_namespace(&mut conn, &Keys::new(namespace))
        .await
        .expect("delete the test keys");
}
