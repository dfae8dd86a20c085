//! The broker and result-backend conformance suites, run on the in-memory
//! implementations.

use std::sync::Arc;

use dmq_core::conformance::Fixture;
use dmq_core::{Broker, InMemoryBackend, InMemoryBroker, ResultBackend};

struct Memory {
    broker: Arc<InMemoryBroker>,
    backend: Arc<InMemoryBackend>,
}

#[async_trait::async_trait]
impl Fixture for Memory {
    async fn setup() -> Self {
        Memory {
            broker: Arc::new(InMemoryBroker::new()),
            backend: Arc::new(InMemoryBackend::new()),
        }
    }

    fn broker(&self) -> Arc<dyn Broker> {
        self.broker.clone()
    }

    fn backend(&self) -> Arc<dyn ResultBackend> {
        self.backend.clone()
    }
}

dmq_core::broker_conformance_tests!(Memory);
dmq_core::backend_conformance_tests!(Memory);
