//! The broker conformance suite, unchanged, against `RedisBroker` on a real Redis.

mod common;

use std::sync::Arc;

use dmq_core::conformance::Fixture;
use dmq_core::{Broker, InMemoryBackend, ResultBackend};
use dmq_redis::RedisBroker;

struct RedisFixture {
    namespace: String,
    broker: Arc<RedisBroker>,
}

#[async_trait::async_trait]
impl Fixture for RedisFixture {
    async fn setup() -> Self {
        let namespace = common::fresh_namespace();
        let broker = RedisBroker::connect_with_namespace(&common::redis_url(), &namespace)
            .await
            .expect("connect to redis (scripts/ensure-redis starts one)");
        RedisFixture { namespace, broker: Arc::new(broker) }
    }

    fn broker(&self) -> Arc<dyn Broker> {
        self.broker.clone()
    }

    fn backend(&self) -> Arc<dyn ResultBackend> {
        Arc::new(InMemoryBackend::new())
    }

    async fn teardown(self) {
        common::remove_namespace(&self.namespace).await;
    }
}

dmq_core::broker_conformance_tests!(RedisFixture);
