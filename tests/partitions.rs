//! Partitioned queues on the in-memory broker: a queue declared with N partitions is N
//! queues; enqueues spread over them by round robin, by task id, or by a partition key
//! (one key, one partition, in order); a worker of the queue claims from every
//! partition, each claim starting at another; names that look like partitions are
//! refused where they would strand jobs.

use std::sync::Mutex;
use std::time::Duration;

use dmq_core::{
    Broker, BrokerAdmin, Error, InMemoryBroker, Manager, PartitionBy, TaskContext, TaskError,
    partition_name, partition_of_key, task,
};

const WAIT: Duration = Duration::from_secs(30);

/// The queue each run of `record` ran from, in order.
static RAN_FROM: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[task(name = "parts.record", queue = "parts", partitions = 4)]
async fn record(n: u32, ctx: TaskContext) -> Result<u32, TaskError> {
    RAN_FROM.lock().unwrap_or_else(|p| p.into_inner()).push(ctx.queue().to_owned());
    Ok(n)
}

/// A second task on the partitioned queue, without the attribute: it declares
/// nothing, so the manager builds whichever of the two the linker lists first.
#[task(name = "parts.other", queue = "parts")]
async fn other(n: u32) -> Result<u32, TaskError> {
    Ok(n)
}

#[task(name = "parts.plain", queue = "plain")]
async fn plain(n: u32) -> Result<u32, TaskError> {
    Ok(n)
}

fn manager() -> (std::sync::Arc<InMemoryBroker>, Manager) {
    let broker = std::sync::Arc::new(InMemoryBroker::new());
    let manager = Manager::builder()
        .shared_broker(broker.clone())
        .partitions_by("by-id", 3, PartitionBy::TaskId)
        .build()
        .expect("a manager");
    (broker, manager)
}

async fn ready(broker: &InMemoryBroker, queue: &str) -> u64 {
    broker.queue_stats(queue).await.expect("stats").ready
}

#[tokio::test]
async fn round_robin_spreads_evenly_and_a_worker_drains_every_partition() {
    let (broker, manager) = manager();
    let mut handles = Vec::new();
    for n in 0..40 {
        handles.push(record::call(n).enqueue(&manager).await.expect("enqueue"));
    }
    let batch = manager.enqueue_batch((40..80).map(record::call)).await.expect("a batch");
    assert_eq!(ready(&broker, "parts").await, 0, "nothing lands on the queue's own name");
    for p in 0..4 {
        assert_eq!(ready(&broker, &partition_name("parts", p)).await, 20, "partition {p}");
    }
    let listed = broker.queues().await.expect("queues");
    assert!(listed.contains(&"parts#3".to_owned()), "{listed:?}");

    let worker = manager.worker().queues(["parts"]).concurrency(8).start();
    assert_eq!(worker.queues(), ["parts#0", "parts#1", "parts#2", "parts#3"]);
    for (n, handle) in handles.iter().enumerate() {
        assert_eq!(handle.result(WAIT).await.expect("a result"), n as u32);
    }
    for id in batch {
        manager.result::<u32>(id).wait(WAIT).await.expect("a result");
    }
    worker.shutdown().await;
}

#[tokio::test]
async fn one_key_goes_to_one_partition_and_keeps_its_order() {
    let (broker, manager) = manager();
    let key = "customer-17";
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(record::call(n).partition_key(key).enqueue(&manager).await.expect("enqueue").id());
    }
    let home = partition_name("parts", partition_of_key(key, 4));
    assert_eq!(ready(&broker, &home).await, 12, "every job of the key is in {home}");
    // Claimed one by one, they come in the order they were enqueued.
    let mut claimed = Vec::new();
    for _ in 0..12 {
        let got = broker
            .claim("w", std::slice::from_ref(&home), 1, WAIT, Duration::ZERO)
            .await
            .expect("claim");
        claimed.push(got[0].lease.id);
        broker.ack(&got[0].lease).await.expect("ack");
    }
    assert_eq!(claimed, ids);
}

#[tokio::test]
async fn by_task_id_the_partition_follows_from_the_id() {
    let (broker, manager) = manager();
    let mut expected = [0u64; 3];
    for n in 0..30 {
        let id = plain::call(n).queue("by-id").enqueue(&manager).await.expect("enqueue").id();
        expected[(id.as_uuid().as_u128() % 3) as usize] += 1;
    }
    for (p, n) in expected.iter().enumerate() {
        let partition = partition_name("by-id", p as u16);
        assert_eq!(ready(&broker, &partition).await, *n, "{partition}");
    }
}

#[tokio::test]
async fn each_claim_starts_at_another_partition() {
    RAN_FROM.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let (_broker, manager) = manager();
    let mut handles = Vec::new();
    // Every job of partition 0 first: a worker that always started at partition 0
    // would run them all before any other.
    let key = (0..).map(|n| format!("k{n}")).find(|k| partition_of_key(k, 4) == 0).expect("a key");
    for n in 0..8 {
        handles.push(record::call(n).partition_key(&key).enqueue(&manager).await.expect("enqueue"));
    }
    for n in 8..16 {
        handles.push(record::call(n).enqueue(&manager).await.expect("enqueue"));
    }
    // One job at a time: each claim takes one job, from the first partition it tries.
    let worker = manager.worker().queues(["parts"]).concurrency(1).start();
    for handle in &handles {
        handle.result(WAIT).await.expect("a result");
    }
    worker.shutdown().await;
    let ran = RAN_FROM.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let first: std::collections::BTreeSet<&String> = ran[..4].iter().collect();
    assert_eq!(first.len(), 4, "the first four claims came from four partitions: {ran:?}");
}

#[tokio::test]
async fn names_that_stand_for_partitions_are_refused_where_they_would_strand_jobs() {
    let (_broker, manager) = manager();
    // A queue without partitions cannot be sent to as if it had some.
    let refused = plain::call(1).queue("plain#2").enqueue(&manager).await.unwrap_err();
    assert!(matches!(refused, Error::InvalidArgument(_)), "{refused:?}");
    assert!(refused.to_string().contains("partition"), "{refused}");
    // Nor a partition a partitioned queue does not have.
    let refused = record::call(1).queue("parts#9").enqueue(&manager).await.unwrap_err();
    assert!(refused.to_string().contains("has 4 partition(s)"), "{refused}");
    // A partition it has is fine: an envelope that went to one may be sent there again.
    record::call(1).queue("parts#2").enqueue(&manager).await.expect("an existing partition");
    // A task of the queue without the attribute goes to its partitions too.
    other::call(1).enqueue(&manager).await.expect("a task of the queue without the attribute");
    // Declarations must agree.
    let clash = Manager::builder().partitions("parts", 8).build().unwrap_err();
    assert!(clash.to_string().contains("declare it one way"), "{clash}");
    let bad = Manager::builder().partitions("x#1", 2).build().unwrap_err();
    assert!(bad.to_string().contains("names partition"), "{bad}");
}
