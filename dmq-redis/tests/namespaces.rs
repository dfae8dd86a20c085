//! Deleting a namespace removes its keys and leaves every other namespace alone, even
//! one whose name starts or ends the same way.

mod common;

use dmq_core::{Broker, BrokerAdmin, Job, TaskId};
use dmq_redis::{Keys, RedisBroker};

async fn one_job_in(namespace: &str) -> RedisBroker {
    let broker = RedisBroker::connect_with_namespace(&common::redis_url(), namespace)
        .await
        .expect("connect");
    broker.enqueue(Job::new(TaskId::new(), "q", 5, None, b"x".to_vec())).await.expect("enqueue");
    broker
}

#[tokio::test]
async fn deleting_a_namespace_leaves_its_neighbours_alone() {
    let base = common::fresh_namespace();
    let longer = format!("{base}-b");
    let suffix = format!("x{base}");
    let target = one_job_in(&base).await;
    let neighbours = [one_job_in(&longer).await, one_job_in(&suffix).await];

    let client = redis::Client::open(common::redis_url()).expect("url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    let deleted = dmq_redis::delete_namespace(&mut conn, &Keys::new(&base)).await.expect("delete");
    assert!(deleted >= 2, "deleted {deleted} keys");
    assert_eq!(target.queue_len("q").await.expect("len"), 0);
    for neighbour in &neighbours {
        assert_eq!(neighbour.queue_len("q").await.expect("len"), 1, "{neighbour:?} lost its job");
    }
    common::remove_namespace(&longer).await;
    common::remove_namespace(&suffix).await;
}
