//! A job whose lease keeps expiring while it runs alone (it crashes or hangs every
//! worker that takes it) is dead-lettered after the allowed number of strikes instead
//! of going round forever.

mod common;

use std::time::Duration;

use dmq_core::{Broker, BrokerAdmin, Job, TaskId};
use dmq_redis::RedisBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_delivered_too_often_is_dead_lettered_as_poison() {
    let namespace = common::fresh_namespace();
    let _cleanup = common::Cleanup::of(&namespace);
    let broker = RedisBroker::connect_with_namespace(&common::redis_url(), &namespace)
        .await
        .expect("connect")
        .with_max_deliveries(2);
    let queues = vec!["poison".to_owned()];
    let id = TaskId::new();
    broker
        .enqueue(Job::new(id, "poison", 5, None, b"kills workers".to_vec()))
        .await
        .expect("enqueue");
    let lease = Duration::from_millis(200);
    for delivery in 1..=3 {
        // Claim and "crash": never settle, let the lease run out. The first delivery
        // may have run beside others; the next two run alone, and count.
        let got = broker
            .claim("poison-test", &queues, 1, lease, Duration::from_secs(10))
            .await
            .expect("claim");
        assert_eq!(got.len(), 1, "delivery {delivery}");
        assert_eq!(got[0].deliveries, delivery);
        assert_eq!(got[0].isolated, delivery > 1, "delivery {delivery}");
    }
    let got = broker
        .claim("poison-test", &queues, 1, lease, Duration::from_millis(1500))
        .await
        .expect("claim");
    assert!(got.is_empty(), "a poison job was handed out a fourth time");
    let dead = broker.dead_letters("poison", 0, 10).await.expect("dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].payload, b"kills workers");
    let reason = &dead[0].reason;
    assert!(
        reason.starts_with("poison: its worker was lost 2 times while it ran alone"),
        "{reason}"
    );
    let stats = broker.queue_stats("poison").await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.dead), (0, 0, 1));
}
