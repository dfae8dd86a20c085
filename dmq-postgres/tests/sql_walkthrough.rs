//! Runs every SQL query of docs/postgres-layout.md, as an operator would paste it, on
//! a live schema: the documented tables, columns and view are the real ones.

mod common;

use std::time::Duration;

use dmq_core::{Broker, Job, ResultBackend, TaskId, TaskOutcome, WorkerInfo, WorkerRegistry};
use dmq_postgres::{PostgresBackend, PostgresBroker};
use sqlx::Row;

/// The document's ```sql blocks.
fn queries() -> Vec<String> {
    let doc = include_str!("../../docs/postgres-layout.md");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim()) {
            (None, "```sql") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_of_the_layout_document_runs_and_sees_the_jobs() {
    let blocks = queries();
    assert_eq!(blocks.len(), 5, "the document's queries");
    let schema = common::fresh_namespace();
    let outcome = tokio::spawn({
        let schema = schema.clone();
        async move {
            let url = common::url();
            let broker = PostgresBroker::connect_sized(&url, &schema, 2).await.expect("broker");
            let backend =
                PostgresBackend::connect_with_namespace(&url, &schema).await.expect("backend");
            let queues = vec!["emails".to_owned()];
            let worker = WorkerInfo::new("w-1", "host", 7, queues.clone(), 4, chrono::Utc::now());
            broker.heartbeat(&worker, Duration::from_secs(60)).await.expect("heartbeat");
            for i in 0..3u8 {
                broker
                    .enqueue(Job::new(TaskId::new(), "emails", 5, None, vec![i]))
                    .await
                    .expect("e");
            }
            let long = Duration::from_secs(60);
            let held = broker.claim("w-1", &queues, 2, long, Duration::ZERO).await.expect("claim");
            broker.dead_letter(&held[0].lease, "fatal: boom").await.expect("dead-letter");
            let done = TaskOutcome::succeeded(vec![0xc0], 1, chrono::Utc::now());
            backend.store(held[1].lease.id, &done, long).await.expect("store");

            let mut seen = Vec::new();
            for block in &blocks {
                let sql = block.replace("dmq.", &format!("\"{schema}\"."));
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .fetch_all(broker.pool())
                    .await
                    .unwrap_or_else(|e| panic!("the document's query failed: {e}\n{block}"));
                seen.push(rows);
            }
            let depth = &seen[0][0];
            assert_eq!(depth.get::<String, _>("queue"), "emails");
            assert_eq!(
                (
                    depth.get::<i64, _>("ready"),
                    depth.get::<i64, _>("running"),
                    depth.get::<i64, _>("dead")
                ),
                (1, 1, 1)
            );
            assert_eq!(seen[1].len(), 1, "the job running");
            assert_eq!(seen[1][0].get::<String, _>("worker"), "w-1");
            assert_eq!(seen[2][0].get::<String, _>("id"), "w-1");
            assert!(seen[2][0].get::<bool, _>("alive"));
            assert_eq!(seen[3][0].get::<String, _>("reason"), "fatal: boom");
            assert_eq!(seen[4][0].get::<String, _>("state"), "succeeded");
        }
    })
    .await;
    common::drop_namespace(&schema).await;
    outcome.expect("the scenario passed");
}
