//! `dmq bench` end to end: the built binary against the in-memory broker, Redis and
//! PostgreSQL.
//!
//! The Redis test needs a server on 127.0.0.1:6379 (`scripts/ensure-redis` starts one,
//! or set `REDIS_URL`); it works in a fresh namespace and checks that none of
//! its keys remain. The PostgreSQL test needs the server of `DMQ_POSTGRES_URL`
//! (default postgres://postgres@127.0.0.1:5432/test; `scripts/ensure-postgres` starts
//! one); it checks that the run's schema is gone.

use std::process::{Command, Output};

use redis::Commands as _;
use serde_json::Value;

fn dmq(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dmq"))
        .args(args)
        .env_remove("DMQ_BROKER_URL")
        .output()
        .expect("the dmq binary runs")
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Runs a small bench with `--json` and checks its figures.
fn bench_json(broker: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "bench",
        "--broker",
        broker,
        "--jobs",
        "2000",
        "--concurrency",
        "32",
        "--latency-samples",
        "50",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = dmq(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dmq bench failed: {stderr}\n{stdout}");
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("--json printed something else ({e}): {stdout}"));

    for phase in ["enqueue_single", "enqueue_batch", "drain"] {
        let rate = report[phase]["jobs_per_sec"].as_f64().unwrap_or(0.0);
        assert!(rate > 0.0, "{phase}: {rate} jobs/s in {report}");
    }
    assert_eq!(
        report["enqueue_single"]["jobs"].as_u64().unwrap_or(0)
            + report["enqueue_batch"]["jobs"].as_u64().unwrap_or(0),
        2000
    );
    assert_eq!(report["drain"]["jobs"], 2000);
    let latency = &report["latency"];
    assert_eq!(latency["samples"], 50);
    for kind in ["enqueue_to_start", "enqueue_to_result"] {
        let p50 = latency[format!("{kind}_p50_us")].as_u64().expect("p50");
        let p99 = latency[format!("{kind}_p99_us")].as_u64().expect("p99");
        assert!(p50 <= p99, "{kind}: p50 {p50} > p99 {p99}");
        assert!(p99 > 0, "{kind}: a job cannot start or finish in zero microseconds");
    }
    report
}

#[test]
fn bench_on_the_in_memory_broker() {
    let report = bench_json("memory://", &[]);
    assert_eq!(report["broker"], "memory://");
    assert!(report["redis"].is_null());
}

#[test]
fn bench_on_redis_leaves_no_key_behind() {
    let url = redis_url();
    let namespace = format!("dmq-bench-test-{}", uuid::Uuid::new_v4());
    let report = bench_json(&url, &["--namespace", &namespace]);
    assert_eq!(report["namespace"], namespace.as_str());
    let drain = &report["redis"]["drain"];
    assert!(drain["commands_per_job"].as_f64().unwrap_or(0.0) > 0.0, "{report}");
    assert!(drain["cpu_us_per_job"].as_f64().is_some(), "{report}");
    assert!(report["deleted_keys"].as_u64().unwrap_or(0) > 0, "{report}");

    let client = redis::Client::open(url.as_str()).expect("a Redis URL");
    let mut conn = client.get_connection().expect("Redis answers");
    let left: Vec<String> = conn
        .scan_match::<_, String>(format!("*{namespace}*"))
        .expect("SCAN answers")
        .collect::<Result<_, _>>()
        .expect("SCAN answers");
    assert!(left.is_empty(), "keys left behind: {left:?}");
}

fn postgres_url() -> String {
    std::env::var("DMQ_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The schemas whose names start with `prefix`.
fn schemas_like(prefix: &str) -> Vec<String> {
    use sqlx::Connection as _;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut conn = sqlx::PgConnection::connect(&postgres_url()).await.expect("PostgreSQL");
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)")
            .bind(prefix)
            .fetch_all(&mut conn)
            .await
            .expect("list schemas")
    })
}

#[test]
fn bench_on_postgres_drops_its_schema() {
    let namespace = format!("dmq_bench_test_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let report = bench_json(&postgres_url(), &["--namespace", &namespace]);
    assert_eq!(report["namespace"], namespace.as_str());
    assert_eq!(report["dropped_schema"], namespace.as_str());
    assert!(report["server"].as_str().is_some_and(|s| s.starts_with("PostgreSQL ")), "{report}");
    assert!(report["connections"].as_str().is_some_and(|s| s.contains("a pool of")), "{report}");
    let drain = &report["postgres"]["drain"];
    // The drain acknowledges and stores results: writes, batched (the acks and
    // results made at once share a transaction), so some, and under 3 per job.
    let per_job = drain["write_transactions_per_job"].as_f64().unwrap_or(0.0);
    assert!(per_job > 0.0 && per_job < 3.0, "{report}");
    assert!(drain["wal_bytes_per_job"].as_f64().unwrap_or(0.0) > 0.0, "{report}");
    assert!(report["redis"].is_null(), "{report}");
    assert_eq!(schemas_like(&namespace), Vec::<String>::new(), "the schema was left behind");

    // A schema that exists is refused, and kept.
    let out = dmq(&["bench", "--broker", &postgres_url(), "--namespace", "public", "--jobs", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("exists already"), "{stderr}");
    assert_eq!(schemas_like("public"), ["public"]);
}

#[test]
fn bench_on_a_deadpool_pool_says_so() {
    let report = bench_json(&redis_url(), &["--deadpool"]);
    let connections = report["connections"].as_str().unwrap_or_default();
    assert!(connections.contains("from_pool"), "{report}");
    assert!(report["deleted_keys"].as_u64().unwrap_or(0) > 0, "{report}");
}

#[test]
fn an_unknown_scheme_is_a_one_line_error() {
    let out = dmq(&["bench", "--broker", "nope://x"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    for scheme in ["redis://", "rediss://", "memory://", "postgres://"] {
        assert!(stderr.contains(scheme), "{stderr} does not mention {scheme}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn help_describes_the_command_and_its_options() {
    let top = dmq(&["--help"]);
    assert!(top.status.success());
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(top.contains("bench") && top.contains("Measure"), "{top}");

    let bench = dmq(&["bench", "--help"]);
    assert!(bench.status.success());
    let bench = String::from_utf8_lossy(&bench.stdout);
    for option in [
        "--broker",
        "--jobs",
        "--concurrency",
        "--batch-size",
        "--namespace",
        "--latency-samples",
        "--json",
        "--deadpool",
    ] {
        assert!(bench.contains(option), "{option} missing from:\n{bench}");
    }
    assert!(bench.contains("DMQ_BROKER_URL") && bench.contains("memory://"), "{bench}");
}
