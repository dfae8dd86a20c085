//! A partitioned queue on the local Redis Cluster: one hot queue declared with eight
//! partitions is eight queues on eight slots, which spread over the masters; a batch to
//! it lands on all of them, and one worker of the queue drains them all.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dmq_core::{Manager, TaskError, partition_name, task};
use dmq_redis::{Keys, RedisBackend, RedisBroker, RedisConnection, cluster_slot};

#[task(name = "cluster.hot", queue = "hot", partitions = 8)]
async fn hot(n: u32) -> Result<u32, TaskError> {
    Ok(n)
}

/// The `host:port` of the master serving each slot, from `CLUSTER SLOTS`.
async fn master_of_slots(url: &str) -> Vec<(u16, u16, String)> {
    let mut conn = RedisConnection::open(url).await.expect("connect");
    let ranges: Vec<(u16, u16, (String, u16))> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async::<Vec<redis::Value>>(&mut conn)
        .await
        .expect("slots")
        .into_iter()
        .filter_map(|range| {
            let redis::Value::Array(fields) = range else { return None };
            let from: u16 = redis::from_redis_value(fields.first()?.clone()).ok()?;
            let to: u16 = redis::from_redis_value(fields.get(1)?.clone()).ok()?;
            let redis::Value::Array(master) = fields.get(2)?.clone() else { return None };
            let host: String = redis::from_redis_value(master.first()?.clone()).ok()?;
            let port: u16 = redis::from_redis_value(master.get(1)?.clone()).ok()?;
            Some((from, to, (host, port)))
        })
        .collect();
    ranges.into_iter().map(|(a, b, (h, p))| (a, b, format!("{h}:{p}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_queue_spreads_over_the_cluster_and_one_worker_drains_it() {
    let url = common::cluster_url();
    let namespace = common::fresh_namespace();
    let _cleanup = common::Cleanup::at(&url, &namespace);
    let broker = RedisBroker::connect_with_namespace(&url, &namespace).await.expect("connect");
    let backend = RedisBackend::connect_with_namespace(&url, &namespace).await.expect("backend");
    let manager = Manager::builder().broker(broker).backend(backend).build().expect("manager");

    let ids = manager.enqueue_batch((0..800).map(hot::call)).await.expect("a batch of 800");
    let keys = Keys::new(namespace.clone());
    let slots: BTreeSet<u16> = (0..8)
        .map(|p| cluster_slot(keys.queue(&partition_name("hot", p)).signal().as_bytes()))
        .collect();
    assert_eq!(slots.len(), 8, "the partitions share slots: {slots:?}");
    let ranges = master_of_slots(&url).await;
    let mut by_master: BTreeMap<String, u32> = BTreeMap::new();
    for slot in &slots {
        let master = ranges.iter().find(|(a, b, _)| (a..=b).contains(&slot)).map(|r| r.2.clone());
        *by_master.entry(master.expect("a master serves the slot")).or_default() += 1;
    }
    // The cluster's masters hold a third of the slots each (redis-cli --cluster
    // create): the partitions' steered slots put 3, 3 and 2 on them, as evenly as
    // eight can be over three.
    let mut counts: Vec<u32> = by_master.values().copied().collect();
    counts.sort_unstable();
    assert_eq!(counts, [2, 3, 3], "partitions per master: {by_master:?}");
    let admin = manager.admin().expect("admin");
    for p in 0..8 {
        let stats = admin.queue_stats(&partition_name("hot", p)).await.expect("stats");
        assert_eq!(stats.ready, 100, "partition {p}");
    }

    let worker = manager.worker().queues(["hot"]).concurrency(32).start();
    for (n, id) in ids.iter().enumerate() {
        let value = manager.result::<u32>(*id).wait(Duration::from_secs(60)).await.expect("result");
        assert_eq!(value as usize, n);
    }
    worker.shutdown().await;
    for p in 0..8 {
        let stats = admin.queue_stats(&partition_name("hot", p)).await.expect("stats");
        assert_eq!((stats.ready, stats.in_flight), (0, 0), "partition {p}");
    }
}
