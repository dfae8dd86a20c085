//! What the `dmq` binary's end-to-end tests share: the test Redis, and a fresh
//! namespace on it whose keys are deleted when the test ends, passed or failed.

// Each test file uses its own part of it.
#![allow(dead_code)]

use std::sync::Arc;

pub mod served;

use dmq_core::{Manager, WorkerHandle};
use dmq_redis::{Keys, RedisBackend, RedisBroker};

/// The Redis the tests use: `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A fresh namespace `dmq-test-<uuid>` on the test Redis, with a runtime and a manager
/// on it (and a worker, when a test starts one); on drop, the worker stops and the
/// namespace's keys are deleted.
pub struct Namespace {
    pub rt: tokio::runtime::Runtime,
    pub name: String,
    pub manager: Manager,
    pub backend: Arc<RedisBackend>,
    pub worker: Option<WorkerHandle>,
}

impl Namespace {
    pub fn new() -> Self {
        let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
        let name = format!("dmq-test-{}", uuid::Uuid::new_v4());
        let (manager, backend) = rt.block_on(async {
            let broker = RedisBroker::connect_with_namespace(&redis_url(), &name)
                .await
                .expect("the test Redis is up (scripts/ensure-redis)");
            let backend = Arc::new(
                RedisBackend::connect_with_namespace(&redis_url(), &name)
                    .await
                    .expect("the result backend connects"),
            );
            let manager = Manager::builder()
                .broker(broker)
                .shared_backend(backend.clone())
                .build()
                .expect("a manager");
            (manager, backend)
        });
        Namespace { rt, name, manager, backend, worker: None }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            self.rt.block_on(worker.shutdown());
        }
        let keys = Keys::new(self.name.clone());
        let deleted = self.rt.block_on(async {
            let client = redis::Client::open(redis_url())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            dmq_redis::delete_namespace(&mut conn, &keys)
                .await
                .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))
        });
        if let Err(e) = deleted {
            eprintln!("could not delete namespace {}: {e}", self.name);
        }
    }
}
