//! What dmq did not write: rows put in its tables by hand or by another program, a
//! schema missing a function, a schema that serves the other mode. One bad row never
//! stops the good ones, and every refusal says what to do.

mod common;

use std::sync::Arc;
use std::time::Duration;

use dmq_core::{
    Broker, Error, Event, EventKind, EventStream, EventsFrom, Job, ResultBackend, TaskId,
    TaskOutcome,
};
use dmq_postgres::{Mode, PostgresBackend, PostgresBroker};

/// Runs `scenario` with a broker and backend in a fresh schema, dropped afterwards.
async fn in_fresh_schema<F, Fut>(scenario: F)
where
    F: FnOnce(String, Arc<PostgresBroker>, Arc<PostgresBackend>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let schema = common::fresh_namespace();
    let outcome = tokio::spawn({
        let schema = schema.clone();
        async move {
            let url = common::url();
            let broker = PostgresBroker::connect_sized(&url, &schema, 4).await.expect("broker");
            let backend =
                PostgresBackend::connect_with_namespace(&url, &schema).await.expect("backend");
            scenario(schema, Arc::new(broker), Arc::new(backend)).await;
        }
    })
    .await;
    common::drop_namespace(&schema).await;
    outcome.expect("the scenario passed");
}

async fn execute(broker: &PostgresBroker, sql: String) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(broker.pool()).await.expect("hand-written SQL");
}

fn started(n: u32) -> Arc<Event> {
    Arc::new(Event::new(EventKind::Started, TaskId::new(), "t", "q", n))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_batch_dmq_did_not_write_is_passed_over_and_counted() {
    in_fresh_schema(|schema, broker, _| async move {
        broker.publish_events(&[started(1), started(2)]).await.expect("publish");
        execute(
            &broker,
            format!("INSERT INTO \"{schema}\".events (count, batch) VALUES (1, '\\xdeadbeef')"),
        )
        .await;
        broker.publish_events(&[started(3)]).await.expect("publish");
        let page =
            broker.read_events(&EventsFrom::Oldest, 100, Duration::ZERO).await.expect("read");
        let attempts: Vec<u32> = page.events.iter().map(|e| e.attempt).collect();
        assert_eq!(attempts, [1, 2, 3], "the good batches on both sides are read");
        assert_eq!(page.skipped, 1, "the bad batch is counted");
        let after = EventsFrom::After(page.cursor);
        let rest = broker.read_events(&after, 100, Duration::ZERO).await.expect("read");
        assert!(rest.events.is_empty() && rest.skipped == 0, "read on past it: {rest:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_dmq_did_not_write_is_an_error_that_says_so_and_spares_the_others() {
    in_fresh_schema(|schema, broker, backend| async move {
        let good = TaskId::new();
        let outcome = TaskOutcome::succeeded(vec![0xc0], 1, chrono::Utc::now());
        backend.store(good, &outcome, Duration::from_secs(60)).await.expect("store");
        let bad = TaskId::new();
        execute(
            &broker,
            format!(
                "INSERT INTO \"{schema}\".results (id, state, fence, outcome, expires_at) \
                 VALUES ('{bad}', 'succeeded', 0, '\\x00ff', now() + interval '1 minute')"
            ),
        )
        .await;
        match backend.get(bad).await {
            Err(Error::Backend { message, .. }) => {
                assert!(message.contains("does not decode"), "{message}");
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
        assert!(backend.get(good).await.expect("get").is_some(), "the good result reads");
        let fenced = backend.store_fenced(bad, &outcome, Duration::from_secs(60), 5).await;
        assert!(
            !fenced.expect("store"),
            "the stored success (fence 0) is replaced by no later run"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_row_without_a_lease_cannot_be_running_and_a_lapsed_one_is_taken_back() {
    in_fresh_schema(|schema, broker, _| async move {
        let jobs = format!("\"{schema}\".jobs");
        let refused = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {jobs} (queue, id, state, priority, payload) \
             VALUES ('alpha', gen_random_uuid(), 'running', 5, '\\x00')"
        )))
        .execute(broker.pool())
        .await;
        assert!(refused.is_err(), "a running row without a lease would never come back");
        // A running row whose lease lapsed long ago, as a crashed writer might leave.
        let id = TaskId::new();
        execute(
            &broker,
            format!(
                "INSERT INTO {jobs} (queue, id, state, priority, payload, token, fence, worker, \
                 lease_until, claimed_at) VALUES ('alpha', '{id}', 'running', 5, '\\x01', \
                 'gone', 1, 'ghost', now() - interval '1 hour', now() - interval '1 hour')"
            ),
        )
        .await;
        broker.enqueue(Job::new(TaskId::new(), "alpha", 5, None, vec![2])).await.expect("enqueue");
        let queues = ["alpha".to_owned()];
        let long = Duration::from_secs(30);
        let first = broker.claim("w", &queues, 10, long, Duration::ZERO).await.expect("claim");
        assert_eq!(first.len(), 1);
        assert!(first[0].isolated && first[0].lease.id == id, "taken back, to run alone");
        let second = broker.claim("w", &queues, 10, long, Duration::ZERO).await.expect("claim");
        assert_eq!(second.iter().map(|d| d.payload.clone()).collect::<Vec<_>>(), [vec![2]]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_missing_a_function_says_to_migrate() {
    in_fresh_schema(|schema, broker, _| async move {
        execute(&broker, format!("DROP FUNCTION \"{schema}\".claim")).await;
        let queues = ["alpha".to_owned()];
        match broker.claim("w", &queues, 1, Duration::from_secs(1), Duration::ZERO).await {
            Err(e @ Error::Backend { .. }) => {
                assert!(e.to_string().contains("dmq migrate"), "{e}");
                let failure = e
                    .backend_source()
                    .and_then(|s| s.downcast_ref::<dmq_postgres::PostgresFailure>());
                assert!(failure.is_some(), "the database error is kept as the source");
            }
            other => panic!("expected an error, got {other:?}"),
        }
    })
    .await;
}

/// Processes that start together (workers, a CLI command) migrate one fresh schema at
/// the same moment: every one of them succeeds (they used to race to create it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_processes_migrating_one_fresh_schema_at_once_all_succeed() {
    for _ in 0..3 {
        let schema = common::fresh_namespace();
        let url = common::url();
        let runs = (0..8).map(|_| dmq_postgres::migrate_namespace(&url, &schema, None));
        let outcomes = futures::future::join_all(runs).await;
        common::drop_namespace(&schema).await;
        for outcome in outcomes {
            outcome.expect("a migration beside others");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_serves_a_broker_or_an_outbox_never_both() {
    let schema = common::fresh_namespace();
    let url = common::url();
    dmq_postgres::migrate_namespace(&url, &schema, Some(Mode::Outbox)).await.expect("migrate");
    let refused = PostgresBroker::connect_with_namespace(&url, &schema).await;
    common::drop_namespace(&schema).await;
    match refused {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains("namespace of its own"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let bad = PostgresBroker::connect_with_namespace(&url, "Robert'); DROP TABLE jobs;--").await;
    assert!(matches!(bad, Err(Error::InvalidArgument(_))), "{bad:?}");
    let unreachable = PostgresBroker::connect("postgres://postgres@127.0.0.1:1/test").await;
    match unreachable {
        Err(e) => {
            assert!(e.is_transient() && e.to_string().contains("is the server running"), "{e}")
        }
        Ok(_) => panic!("nothing listens on port 1"),
    }
}
