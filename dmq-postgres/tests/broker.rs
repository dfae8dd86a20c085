//! The PostgreSQL broker's own settings, and claimers on two brokers (two pools, as
//! two processes would have) sharing one queue.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use dmq_core::{Broker, BrokerAdmin, Event, EventKind, EventStream, EventsFrom, Job, TaskId};
use dmq_postgres::PostgresBroker;

async fn in_fresh_schema<F, Fut>(scenario: F)
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let schema = common::fresh_namespace();
    let outcome = tokio::spawn(scenario(schema.clone())).await;
    common::drop_namespace(&schema).await;
    outcome.expect("the scenario passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_builders_settings_hold() {
    in_fresh_schema(|schema| async move {
        let broker = PostgresBroker::connect_sized(&common::url(), &schema, 2)
            .await
            .expect("broker")
            .with_dead_letter_cap(2)
            .with_max_deliveries(1)
            .with_event_stream_cap(3);
        let queues = ["q".to_owned()];
        let long = Duration::from_secs(30);
        for i in 0..3u8 {
            broker.enqueue(Job::new(TaskId::new(), "q", 5, None, vec![i])).await.expect("e");
            let got = broker.claim("w", &queues, 1, long, Duration::ZERO).await.expect("claim");
            broker.dead_letter(&got[0].lease, &format!("bad {i}")).await.expect("dead-letter");
        }
        let stats = broker.queue_stats("q").await.expect("stats");
        assert_eq!((stats.dead, stats.dead_dropped), (2, 1), "a cap of 2 keeps 2");

        // One strike and a job lost while it ran alone is dead-lettered.
        let short = Duration::from_millis(200);
        broker.enqueue(Job::new(TaskId::new(), "q", 5, None, vec![9])).await.expect("e");
        let lost = broker.claim("w", &queues, 1, short, Duration::ZERO).await.expect("claim");
        assert!(!lost[0].isolated);
        tokio::time::sleep(short * 2).await;
        let alone = broker.claim("w", &queues, 1, short, Duration::from_secs(5)).await.expect("c");
        assert!(alone[0].isolated, "taken back, to run alone");
        tokio::time::sleep(short * 2).await;
        let none = broker.claim("w", &queues, 1, short, Duration::ZERO).await.expect("claim");
        assert!(none.is_empty(), "struck out: {none:?}");
        let letters = broker.dead_letters("q", 0, 1).await.expect("letters");
        assert!(
            letters[0].reason.starts_with("poison: its worker was lost 1 times"),
            "{letters:?}"
        );

        for n in 0..5 {
            let event = Arc::new(Event::new(EventKind::Started, TaskId::new(), "t", "q", n));
            broker.publish_events(&[event]).await.expect("publish");
        }
        let page = broker.read_events(&EventsFrom::Oldest, 10, Duration::ZERO).await.expect("r");
        let kept: Vec<u32> = page.events.iter().map(|e| e.attempt).collect();
        assert_eq!(kept, [2, 3, 4], "a cap of 3 keeps the last 3");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimers_on_two_brokers_take_each_job_once() {
    in_fresh_schema(|schema| async move {
        let url = common::url();
        let one = Arc::new(PostgresBroker::connect_sized(&url, &schema, 3).await.expect("one"));
        let two = Arc::new(PostgresBroker::connect_sized(&url, &schema, 3).await.expect("two"));
        let jobs: Vec<Job> = (0..2_000u32)
            .map(|i| Job::new(TaskId::new(), "q", 5, None, i.to_be_bytes().to_vec()))
            .collect();
        one.enqueue_batch(jobs).await.expect("enqueue");
        let mut claimers = Vec::new();
        for n in 0..6 {
            let broker = if n % 2 == 0 { Arc::clone(&one) } else { Arc::clone(&two) };
            claimers.push(tokio::spawn(async move {
                let (queues, long) = (["q".to_owned()], Duration::from_secs(60));
                let name = format!("w{n}");
                let mut mine = Vec::new();
                loop {
                    let got = broker.claim(&name, &queues, 25, long, Duration::ZERO);
                    let got = got.await.expect("claim");
                    if got.is_empty() {
                        return mine;
                    }
                    for delivery in got {
                        broker.ack(&delivery.lease).await.expect("ack");
                        mine.push(delivery.lease.id);
                    }
                }
            }));
        }
        let mut seen = HashSet::new();
        for claimer in claimers {
            for id in claimer.await.expect("join") {
                assert!(seen.insert(id), "job {id} was claimed twice");
            }
        }
        assert_eq!(seen.len(), 2_000);
        let stats = two.queue_stats("q").await.expect("stats");
        assert_eq!((stats.ready, stats.in_flight), (0, 0));
    })
    .await;
}
