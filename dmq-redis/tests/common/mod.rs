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

/// The local Redis Cluster the cluster tests use: `DMQ_CLUSTER_URL`, or the one
/// `scripts/ensure-redis-cluster` starts (three masters and three replicas on ports
/// 7100-7105) when none runs.
pub fn cluster_url() -> String {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("DMQ_CLUSTER_URL") {
            return url;
        }
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts/ensure-redis-cluster");
        let out = std::process::Command::new(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(out.status.success(), "{} failed", script.display());
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().last().expect("the cluster's URL").trim().to_owned()
    })
    .clone()
}

/// A namespace no other test uses.
pub fn fresh_namespace() -> String {
    format!("dmq-test-{}", uuid::Uuid::new_v4())
}

/// Deletes every key of `namespace` on the test Redis.
pub async fn remove_namespace(namespace: &str) {
    remove_namespace_at(&redis_url(), namespace).await;
}

/// Deletes every key of `namespace` on the Redis or the Redis Cluster at `url`.
pub async fn remove_namespace_at(url: &str, namespace: &str) {
    dmq_redis::delete_namespace_at(url, &Keys::new(namespace)).await.expect("delete the test keys");
}

/// Deletes the keys of its namespace when dropped, also when the test fails: hold one
/// for the length of a test (`let _cleanup = Cleanup::of(&namespace);`).
pub struct Cleanup {
    url: String,
    namespace: String,
}

impl Cleanup {
    /// On the test Redis.
    pub fn of(namespace: &str) -> Self {
        Cleanup::at(&redis_url(), namespace)
    }

    /// On the Redis or the Redis Cluster at `url`.
    pub fn at(url: &str, namespace: &str) -> Self {
        Cleanup { url: url.to_owned(), namespace: namespace.to_owned() }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // On a thread of its own: the test's runtime may be the current one, and a
        // runtime cannot block inside another.
        let (url, namespace) = (self.url.clone(), self.namespace.clone());
        let removed = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(remove_namespace_at(&url, &namespace));
        })
        .join();
        if removed.is_err() {
            eprintln!("could not delete the keys of namespace {}", self.namespace);
        }
    }
}

/// A `RedisBroker` and a `RedisBackend` in a fresh namespace, removed afterwards: the
/// fixture both conformance suites run on.
pub struct RedisFixture {
    url: String,
    namespace: String,
    broker: Arc<RedisBroker>,
    backend: Arc<RedisBackend>,
}

#[async_trait::async_trait]
impl Fixture for RedisFixture {
    async fn setup() -> Self {
        RedisFixture::on(redis_url()).await
    }

    fn broker(&self) -> Arc<dyn Broker> {
        self.broker.clone()
    }

    fn backend(&self) -> Arc<dyn ResultBackend> {
        self.backend.clone()
    }

    async fn teardown(self) {
        remove_namespace_at(&self.url, &self.namespace).await;
    }
}

impl RedisFixture {
    /// A broker and a backend on the Redis (or cluster) at `url`, in a fresh namespace.
    pub async fn on(url: String) -> Self {
        let namespace = fresh_namespace();
        let hint =
            "connect to redis (scripts/ensure-redis and scripts/ensure-redis-cluster start one)";
        let broker = RedisBroker::connect_with_namespace(&url, &namespace).await.expect(hint);
        let backend = RedisBackend::connect_with_namespace(&url, &namespace).await.expect(hint);
        RedisFixture { url, namespace, broker: Arc::new(broker), backend: Arc::new(backend) }
    }
}

/// As [`RedisFixture`], on the local Redis Cluster ([`cluster_url`]).
pub struct ClusterFixture(RedisFixture);

#[async_trait::async_trait]
impl Fixture for ClusterFixture {
    async fn setup() -> Self {
        ClusterFixture(RedisFixture::on(cluster_url()).await)
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
            url,
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

/// What `redis-cli -p <port> <args>` prints, for tests that start servers of their own.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kills the Redis server (or sentinel) on `port` with SIGKILL.
pub fn kill_server(port: u16) {
    let info = redis_cli(port, &["info", "server"]);
    let pid = info
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .expect("process_id")
        .trim()
        .to_owned();
    let killed = std::process::Command::new("kill").args(["-9", &pid]).status().expect("run kill");
    assert!(killed.success(), "kill -9 {pid}");
}
