//! The broker conformance suite, unchanged, against `RedisBroker` on a real Redis.

mod common;

dmq_core::broker_conformance_tests!(common::RedisFixture);

use dmq_core::{Broker, BrokerAdmin, Error, Job, TaskId};

/// Beyond the suite (which asks for atomicity per queue): on one Redis a batch is one
/// script, atomic across its queues too.
#[tokio::test]
async fn on_one_redis_a_batch_across_queues_is_atomic_as_a_whole() {
    let namespace = common::fresh_namespace();
    let _cleanup = common::Cleanup::of(&namespace);
    let url = common::redis_url();
    let broker = dmq_redis::RedisBroker::connect_with_namespace(&url, &namespace).await.unwrap();
    let queued = Job::new(TaskId::new(), "beta", 5, None, vec![0]);
    broker.enqueue(queued.clone()).await.unwrap();
    let batch = vec![Job::new(TaskId::new(), "alpha", 5, None, vec![1]), queued];
    assert!(matches!(broker.enqueue_batch(batch).await, Err(Error::DuplicateJob { .. })));
    assert_eq!(broker.queue_stats("alpha").await.unwrap().ready, 0, "alpha's part was added");
}
