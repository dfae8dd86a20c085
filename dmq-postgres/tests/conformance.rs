//! The broker and result-backend conformance suites on PostgreSQL, each check in a
//! schema of its own.

mod common;

use std::sync::Arc;

use dmq_core::{Broker, ResultBackend};
use dmq_postgres::{PostgresBackend, PostgresBroker};

struct Postgres {
    namespace: String,
    broker: Arc<PostgresBroker>,
    backend: Arc<PostgresBackend>,
}

#[async_trait::async_trait]
impl dmq_core::conformance::Fixture for Postgres {
    async fn setup() -> Self {
        let namespace = common::fresh_namespace();
        let url = common::url();
        let broker = PostgresBroker::connect_sized(&url, &namespace, 4).await.expect("broker");
        let backend =
            PostgresBackend::connect_with_namespace(&url, &namespace).await.expect("backend");
        Postgres { namespace, broker: Arc::new(broker), backend: Arc::new(backend) }
    }

    fn broker(&self) -> Arc<dyn Broker> {
        self.broker.clone()
    }

    fn backend(&self) -> Arc<dyn ResultBackend> {
        self.backend.clone()
    }

    async fn teardown(self) {
        drop(self.broker);
        drop(self.backend);
        common::drop_namespace(&self.namespace).await;
    }
}

dmq_core::broker_conformance_tests!(Postgres);
dmq_core::backend_conformance_tests!(Postgres);
