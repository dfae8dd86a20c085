//! Helpers shared by the Redis tests: each test works in a fresh namespace and removes
//! its keys afterwards (never FLUSHDB or FLUSHALL).

#![allow(dead_code)]

use std::sync::Arc;

use dmq_core::conformance::Fixture;
use dmq_core::{Broker, ResultBackend};
use dmq_redis::{Keys, RedisBackend, RedisBroker};

/// The Redis the tests use: `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
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

/// Deletes the keys of its namespace when dropped, also when the test fails: hold one
/// for the length of a test (`let _cleanup = Cleanup::of(&namespace);`).
pub struct Cleanup(String);

impl Cleanup {
    pub fn of(namespace: &str) -> Self {
        Cleanup(namespace.to_owned())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // On a thread of its own: the test's runtime may be the current one, and a
        // runtime cannot block inside another.
        let namespace = self.0.clone();
        let removed = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(remove_namespace(&namespace));
        })
        .join();
        if removed.is_err() {
            eprintln!("could not delete the keys of namespace {}", self.0);
        }
    }
}

/// A `RedisBroker` and a `RedisBackend` in a fresh namespace, removed afterwards: the
/// fixture both conformance suites run on.
pub struct RedisFixture {
    namespace: String,
    broker: Arc<RedisBroker>,
    backend: Arc<RedisBackend>,
}

#[async_trait::async_trait]
impl Fixture for RedisFixture {
    async fn setup() -> Self {
        let namespace = fresh_namespace();
        let url = redis_url();
        let hint = "connect to redis (scripts/ensure-redis starts one)";
        let broker = RedisBroker::connect_with_namespace(&url, &namespace).await.expect(hint);
        let backend = RedisBackend::connect_with_namespace(&url, &namespace).await.expect(hint);
        RedisFixture { namespace, broker: Arc::new(broker), backend: Arc::new(backend) }
    }

    fn broker(&self) -> Arc<dyn Broker> {
        self.broker.clone()
    }

    fn backend(&self) -> Arc<dyn ResultBackend> {
        self.backend.clone()
    }

    async fn teardown(self) {
        remove_namespace(&self.namespace).await;
    }
}

/// As [`RedisFixture`], with the broker made from a deadpool-redis pool
/// ([`RedisBroker::from_pool`]) instead of a URL.
pub struct PooledFixture(RedisFixture);

#[async_trait::async_trait]
impl Fixture for PooledFixture {
    async fn setup() -> Self {
        let namespace = fresh_namespace();
        let url = redis_url();
        let pool = deadpool_redis::Config::from_url(url.clone())
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .expect("a deadpool-redis pool");
        let hint = "connect to redis (scripts/ensure-redis starts one)";
        let broker = RedisBroker::from_pool(pool, &namespace).await.expect(hint);
        let backend = RedisBackend::connect_with_namespace(&url, &namespace).await.expect(hint);
        PooledFixture(RedisFixture {
            namespace,
            broker: Arc::new(broker),
            backend: Arc::new(backend),
        })
    }

    fn broker(&self) -> Arc<dyn Broker> {
        self.0.broker()
    }

    fn backend(&self) -> Arc<dyn ResultBackend> {
        self.0.backend()
    }

    async fn teardown(self) {
        self.0.teardown().await;
    }
}
