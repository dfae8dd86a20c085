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

/// Every key of `queue` in `namespace`, found by `SCAN`.
async fn keys_of_queue(namespace: &str, queue: &str) -> Vec<String> {
    let client = redis::Client::open(common::redis_url()).expect("a redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connects");
    let prefix = dmq_redis::Keys::new(namespace).queue(queue).signal();
    let pattern = format!("{}*", prefix.trim_end_matches("signal"));
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .query_async(&mut conn)
            .await
            .expect("SCAN");
        keys.extend(page);
        if next == 0 {
            keys.sort();
            return keys;
        }
        cursor = next;
    }
}

/// Beyond the suite: a deleted queue leaves no key behind but the idempotency keys of
/// its jobs (which expire on their own), and its dead-letter drop count starts again.
#[tokio::test]
async fn a_deleted_queue_leaves_no_key_but_its_idempotency_keys() {
    use std::time::Duration;
    let namespace = common::fresh_namespace();
    let _cleanup = common::Cleanup::of(&namespace);
    let broker = dmq_redis::RedisBroker::connect_with_namespace(&common::redis_url(), &namespace)
        .await
        .unwrap()
        .with_dead_letter_cap(1);
    let q = vec!["alpha".to_owned()];
    let long = Duration::from_secs(60);
    let keyed = Job::new(TaskId::new(), "alpha", 5, None, vec![0])
        .with_idempotency_key("once", Duration::from_secs(600));
    broker.enqueue(keyed).await.unwrap();
    broker
        .enqueue_batch((0..3).map(|i| Job::new(TaskId::new(), "alpha", 5, None, vec![i])).collect())
        .await
        .unwrap();
    let got = broker.claim("w", &q, 3, long, Duration::ZERO).await.unwrap();
    broker.dead_letter(&got[0].lease, "one").await.unwrap();
    broker.dead_letter(&got[1].lease, "two").await.unwrap();
    broker.complete(&got[2].lease, long).await.unwrap();
    broker
        .enqueue(Job::new(TaskId::new(), "alpha", 5, Some(chrono::Utc::now() + long), vec![9]))
        .await
        .unwrap();
    let stats = broker.queue_stats("alpha").await.unwrap();
    assert_eq!((stats.ready, stats.delayed, stats.dead, stats.dead_dropped), (1, 1, 1, 1));
    assert!(keys_of_queue(&namespace, "alpha").await.len() > 5);

    let deleted = broker.delete_queue("alpha", false).await.unwrap();
    assert_eq!((deleted.waiting, deleted.delayed, deleted.dead_letters), (1, 1, 1));
    let idempotency = dmq_redis::Keys::new(namespace.as_str()).queue("alpha").idempotency("once");
    assert_eq!(keys_of_queue(&namespace, "alpha").await, [idempotency]);
    assert_eq!(broker.queue_stats("alpha").await.unwrap().dead_dropped, 0);
}

/// Beyond the suite, with a manager on Redis: a waiter on a job's result, subscribed
/// before the job is cancelled, learns at once that it will not run (the cancelled
/// outcome's notification wakes it), and the outcome reads back as `cancelled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_on_a_cancelled_jobs_result_learns_at_once_on_redis() {
    use std::time::Duration;
    let namespace = common::fresh_namespace();
    let _cleanup = common::Cleanup::of(&namespace);
    let url = common::redis_url();
    let manager = dmq_core::Manager::builder()
        .broker(dmq_redis::RedisBroker::connect_with_namespace(&url, &namespace).await.unwrap())
        .backend(dmq_redis::RedisBackend::connect_with_namespace(&url, &namespace).await.unwrap())
        .build()
        .unwrap();
    let mut envelope = dmq_core::Envelope::new("reports.build", "reports", vec![0x90]);
    envelope.eta = Some(chrono::Utc::now() + chrono::Duration::hours(1));
    let id = manager.enqueue_envelope(envelope).await.unwrap();
    let waiter = {
        let result = manager.result::<i64>(id);
        tokio::spawn(async move { result.wait(Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(manager.cancel("reports", id).await.unwrap().is_removed());
    let waited = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter is woken, not left to its timeout")
        .unwrap();
    assert!(matches!(waited, Err(Error::Cancelled { id: got }) if got == id), "{waited:?}");
    let outcome = manager.backend().get(id).await.unwrap().expect("stored");
    assert_eq!(outcome.state, dmq_core::TaskState::Cancelled);
    assert_eq!(broker_stats(&manager, "reports").await, (0, 0));
}

/// (ready, delayed) of `queue`.
async fn broker_stats(manager: &dmq_core::Manager, queue: &str) -> (u64, u64) {
    let stats = manager.admin().unwrap().queue_stats(queue).await.unwrap();
    (stats.ready, stats.delayed)
}
