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

/// Acknowledgements made at once share statements (see `batch.rs`), yet each learns
/// its own answer: among 300 concurrent acks, those of leases that lapsed and were
/// taken by another claim are refused with `LeaseLost`, the rest delete their jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acks_each_learn_whether_their_own_lease_held() {
    in_fresh_schema(|schema| async move {
        let broker = Arc::new(
            PostgresBroker::connect_with_namespace(&common::url(), &schema).await.expect("b"),
        );
        let queues = ["q".to_owned()];
        let jobs: Vec<Job> = (0..300u32)
            .map(|i| Job::new(TaskId::new(), "q", 5, None, i.to_be_bytes().to_vec()))
            .collect();
        broker.enqueue_batch(jobs).await.expect("enqueue");
        let short = Duration::from_millis(300);
        let stale = broker.claim("w1", &queues, 30, short, Duration::ZERO).await.expect("claim");
        let held = broker.claim("w1", &queues, 270, Duration::from_secs(60), Duration::ZERO);
        let held = held.await.expect("claim");
        assert_eq!((stale.len(), held.len()), (30, 270));
        tokio::time::sleep(short * 2).await;
        // The next claim takes the lapsed 30 back (their tokens are void) and, as they
        // may be poison, hands out one of them to run alone.
        let again =
            broker.claim("w2", &queues, 30, Duration::from_secs(60), Duration::from_secs(5));
        assert_eq!(again.await.expect("claim again").len(), 1);

        let stale_ids: HashSet<TaskId> = stale.iter().map(|d| d.lease.id).collect();
        let acks = stale.iter().chain(&held).map(|d| {
            let broker = Arc::clone(&broker);
            let lease = d.lease.clone();
            async move { (lease.id, broker.ack(&lease).await) }
        });
        for (id, acked) in futures::future::join_all(acks).await {
            match acked {
                Ok(()) => assert!(!stale_ids.contains(&id), "a lapsed lease acknowledged {id}"),
                Err(dmq_core::Error::LeaseLost { id: lost }) => {
                    assert_eq!(lost, id);
                    assert!(stale_ids.contains(&id), "a held lease was refused for {id}");
                }
                Err(e) => panic!("ack of {id}: {e}"),
            }
        }
        let stats = broker.queue_stats("q").await.expect("stats");
        assert_eq!((stats.ready, stats.in_flight), (29, 1), "only the lapsed 30 are left");
    })
    .await;
}

/// The broker vacuums its tables once it changed enough job rows: with a threshold
/// of 100, draining 500 jobs makes it run `VACUUM` on `jobs` within its 5 s check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_broker_vacuums_its_jobs_table() {
    in_fresh_schema(|schema| async move {
        let broker = PostgresBroker::connect_with_namespace(&common::url(), &schema)
            .await
            .expect("broker")
            .with_vacuum_after(100);
        let queues = ["q".to_owned()];
        let jobs: Vec<Job> =
            (0..500u32).map(|i| Job::new(TaskId::new(), "q", 5, None, i.to_be_bytes().to_vec())).collect();
        broker.enqueue_batch(jobs).await.expect("enqueue");
        loop {
            let got = broker.claim("w", &queues, 100, Duration::from_secs(60), Duration::ZERO);
            let got = got.await.expect("claim");
            if got.is_empty() {
                break;
            }
            for d in got {
                broker.ack(&d.lease).await.expect("ack");
            }
        }
        let vacuums = format!(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE schemaname = '{schema}' AND relname = 'jobs'"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(vacuums.clone()))
                .fetch_one(broker.pool())
                .await
                .expect("read the table's statistics");
            if count > 0 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the broker never vacuumed jobs");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}
