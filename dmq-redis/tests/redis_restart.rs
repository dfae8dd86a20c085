//! A worker survives a Redis restart: it reconnects with backoff and carries on,
//! without being restarted itself. Runs against a private redis-server on a free port,
//! which the test kills and starts again.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dmq_core::{Manager, TaskError, task};
use dmq_redis::{RedisBackend, RedisBroker};

#[task(queue = "restart")]
async fn triple(n: i64) -> Result<i64, TaskError> {
    Ok(n * 3)
}

struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server (scripts/ensure-redis installs it)");
        let redis = PrivateRedis { port, child: Some(child) };
        redis.wait_until_up();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_until_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = redis::Client::open(self.url()).expect("url");
        while Instant::now() < deadline {
            if let Ok(mut conn) = client.get_connection() {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the private redis-server on port {} did not come up", self.port);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_carries_on_after_redis_restarts() {
    let port = free_port();
    let redis = PrivateRedis::start_on(port);
    let broker = RedisBroker::connect(&redis.url()).await.expect("connect");
    carries_on_after_a_restart(redis, broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_a_deadpool_pool_carries_on_after_redis_restarts() {
    let port = free_port();
    let redis = PrivateRedis::start_on(port);
    let pool = deadpool_redis::Config::from_url(redis.url())
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .expect("pool");
    let broker = RedisBroker::from_pool(pool, "dmq").await.expect("connect");
    carries_on_after_a_restart(redis, broker).await;
}

async fn carries_on_after_a_restart(mut redis: PrivateRedis, broker: RedisBroker) {
    let port = redis.port;
    let manager = Manager::builder().broker(broker).build().expect("manager");
    let worker = manager.worker().queues(["restart"]).start();

    let before = triple::call(1).enqueue(&manager).await.expect("enqueue");
    assert_eq!(before.result(Duration::from_secs(30)).await.expect("before the restart"), 3);

    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _redis = PrivateRedis::start_on(port);

    // The producer's first calls may meet the reconnect; retrying them is the caller's
    // choice. The worker needs nothing: it reconnects by itself.
    let after = enqueue_through_reconnect(&manager, 5).await;
    assert_eq!(after.result(Duration::from_secs(30)).await.expect("after the restart"), 15);
    // The job was also acknowledged: acknowledgements go through a connection of
    // their own kind (batched) that must have come back too.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = manager.admin().expect("admin").queue_stats("restart").await.expect("stats");
        if (stats.ready, stats.in_flight, stats.delayed) == (0, 0, 0) {
            break;
        }
        assert!(Instant::now() < deadline, "the job was never acknowledged: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await;
}

/// The broker and backend keep working when the runtime that made them is gone and
/// another one uses them (their batching writer tasks start again).
#[test]
fn broker_and_backend_outlive_the_runtime_that_made_them() {
    let url = common_url();
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let first = tokio::runtime::Runtime::new().expect("runtime");
    let (broker, backend) = first.block_on(async {
        let broker = RedisBroker::connect_with_namespace(&url, &namespace).await.expect("broker");
        let backend =
            RedisBackend::connect_with_namespace(&url, &namespace).await.expect("backend");
        let manager = Manager::builder().broker(broker).backend(backend).build().expect("manager");
        let worker = manager.worker().queues(["restart"]).start();
        let handle = triple::call(2).enqueue(&manager).await.expect("enqueue");
        assert_eq!(handle.result(Duration::from_secs(30)).await.expect("result"), 6);
        worker.shutdown().await;
        (manager.broker().clone(), manager.backend().clone())
    });
    drop(first);
    let second = tokio::runtime::Runtime::new().expect("runtime");
    second.block_on(async {
        let manager = Manager::builder()
            .shared_broker(broker)
            .shared_backend(backend)
            .build()
            .expect("manager");
        // The shared connection's reconnect task died with the first runtime: the
        // first call may fail (transiently) and set off the reconnect.
        let handle = enqueue_through_reconnect(&manager, 3).await;
        let worker = manager.worker().queues(["restart"]).start();
        assert_eq!(handle.result(Duration::from_secs(30)).await.expect("result"), 9);
        worker.shutdown().await;
        let stats = manager.admin().expect("admin").queue_stats("restart").await.expect("stats");
        assert_eq!((stats.ready, stats.in_flight), (0, 0), "the ack went through: {stats:?}");
        let client = redis::Client::open(url.as_str()).expect("url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
        dmq_redis::delete_namespace(&mut conn, &dmq_redis::Keys::new(&namespace))
            .await
            .expect("clean up");
    });
}

/// Enqueues `triple(n)`, trying again while the call fails transiently (the
/// connection is reconnecting), for up to 30 s.
async fn enqueue_through_reconnect(manager: &Manager, n: i64) -> dmq_core::TaskHandle<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match triple::call(n).enqueue(manager).await {
            Ok(handle) => return handle,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("enqueue while the connection comes back: {e}"),
        }
    }
}

fn common_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Connecting asks the server whether it is a node of a cluster (`INFO cluster`); an
/// ACL user that may not run `INFO` is taken for a user of a single Redis, as before
/// dmq knew clusters, rather than refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_that_may_not_run_info_still_connects() {
    let redis = PrivateRedis::start_on(free_port());
    let client = redis::Client::open(redis.url()).expect("url");
    let mut admin = client.get_multiplexed_async_connection().await.expect("connect");
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "noinfo", "on", ">secret", "~*", "&*", "+@all", "-info"][..])
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    let url = format!("redis://noinfo:secret@127.0.0.1:{}", redis.port);
    let mut conn = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect as noinfo");
    let refused = redis::cmd("INFO").arg("cluster").query_async::<String>(&mut conn).await;
    assert!(refused.is_err(), "the user may not run INFO");
    let broker = RedisBroker::connect(&url).await.expect("a broker for a user without INFO");
    let backend = RedisBackend::connect(&url).await.expect("a backend for a user without INFO");
    let manager = Manager::builder().broker(broker).backend(backend).build().expect("manager");
    let handle = triple::call(7).enqueue(&manager).await.expect("enqueue");
    let worker = manager.worker().queues(["restart"]).start();
    assert_eq!(handle.result(Duration::from_secs(30)).await.expect("a result"), 21);
    worker.shutdown().await;
}
