//! A producer on Redis: enqueues jobs of `examples/app`'s tasks for `app worker`
//! processes to run, and waits for their results.
//!
//! Run with, in one terminal: `cargo run -p app -- worker`
//! and in another: `cargo run -p dmq-examples --example redis_producer`
//! (both use `redis://127.0.0.1:6379` unless `DMQ_BROKER_URL` says otherwise).

use std::time::Duration;

use dmq_core::Manager;
use dmq_redis::{RedisBackend, RedisBroker};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url =
        std::env::var("DMQ_BROKER_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let manager = Manager::builder()
        .broker(RedisBroker::connect(&url).await?)
        .backend(RedisBackend::connect(&url).await?)
        .build()?;
    let handles = manager.enqueue_batch((1..=10).map(|i| app::add::call(i, i * 10))).await?;
    println!("enqueued {} jobs", handles.len());
    for id in handles {
        let sum = manager.result::<i64>(id).wait(Duration::from_secs(30)).await?;
        println!("{id}: {sum}");
    }
    Ok(())
}
