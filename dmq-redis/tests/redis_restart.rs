//! A worker survives a Redis restart: it reconnects with backoff and carries on,
//! without being restarted itself. Runs against a private redis-server on a free port,
//! which the test kills and starts again.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dmq_core::{Manager, TaskError, task};
use dmq_redis::RedisBroker;

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
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        match triple::call(5).enqueue(&manager).await {
            Ok(handle) => break handle,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("enqueue after the restart: {e}"),
        }
    };
    assert_eq!(after.result(Duration::from_secs(30)).await.expect("after the restart"), 15);
    worker.shutdown().await;
}
