//! A namespace of its own for a process test, on PostgreSQL or Redis: a fresh schema
//! (and Redis namespace), worker processes on it, and `dmq` run as a process on it.

use std::process::{Output, Stdio};

use dmq_redis::Keys;
use serde_json::Value;
use tokio::process::Command;

use super::redis_url;
use super::workers::{Settings, WAIT, WorkerProcess};

/// The PostgreSQL the tests use: `DMQ_POSTGRES_URL`, or the local default.
pub fn postgres_url() -> String {
    std::env::var("DMQ_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A name no other test uses: `dmq_test_<16 hex>`.
fn fresh_name() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("dmq_test_{}", &hex[..16])
}

/// A fresh namespace: a schema of its own, dropped (with the workers' run records in
/// Redis, and the broker's keys when the broker is Redis) when this guard drops, even
/// when the test fails. Declared first in a test, so that it drops last, after the
/// processes and pools that use the schema.
pub struct Schema {
    /// The namespace: the schema's name, and the Redis namespace.
    pub name: String,
    /// The PostgreSQL the schema is in.
    pub postgres: String,
    /// The Redis that holds the workers' run records.
    pub redis: String,
    /// The broker the workers and `dmq` use: `postgres` (by default) or `redis`.
    pub broker: String,
}

impl Schema {
    /// A fresh namespace whose broker is PostgreSQL.
    pub fn fresh() -> Self {
        Self::named(&fresh_name(), &postgres_url())
    }

    /// A fresh namespace whose broker is Redis.
    pub fn fresh_on_redis() -> Self {
        Self::named(&fresh_name(), &redis_url())
    }

    /// Namespace `name` with the broker at `broker`.
    pub fn named(name: &str, broker: &str) -> Self {
        Schema {
            name: name.to_owned(),
            postgres: postgres_url(),
            redis: redis_url(),
            broker: broker.to_owned(),
        }
    }

    /// Worker settings' extra arguments: the broker is this namespace's.
    pub fn worker_args<'a>(&'a self, more: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["--broker", self.broker.as_str()];
        args.extend_from_slice(more);
        args
    }

    /// Starts a worker process on this schema.
    pub fn worker(&self, settings: Settings, more: &[&str]) -> WorkerProcess {
        WorkerProcess::start_with(&self.redis, &self.name, settings, &self.worker_args(more))
    }

    /// Runs `dmq` (the `dmq-test-cli` binary) with `args`, its broker this namespace's
    /// and its namespace this schema unless `args` say otherwise; killed if it
    /// outlives [`WAIT`].
    pub async fn dmq(&self, args: &[&str]) -> Output {
        let run = Command::new(env!("CARGO_BIN_EXE_dmq-test-cli"))
            .args(args)
            .env("DMQ_BROKER_URL", &self.broker)
            .env("DMQ_NAMESPACE", &self.name)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(WAIT, run)
            .await
            .unwrap_or_else(|_| panic!("dmq {args:?} did not finish within {WAIT:?}"))
            .expect("run dmq-test-cli")
    }

    /// Runs `dmq`, expects success, and returns its stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.dmq(args).await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "dmq {args:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs `dmq ... --json`, expects success, and parses its output.
    pub async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let stdout = self.ok(&args).await;
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("dmq {args:?} printed no JSON ({e}): {stdout}"))
    }

    /// Runs `dmq`, expects it to fail with exit status 1 and one `error: ` line on
    /// stderr, and returns that line.
    pub async fn fails(&self, args: &[&str]) -> String {
        let out = self.dmq(args).await;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        assert_eq!(out.status.code(), Some(1), "dmq {args:?}: {stderr}");
        assert!(stderr.starts_with("error: ") && !stderr.contains('\n'), "dmq {args:?}: {stderr}");
        stderr
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Drop cannot await, and may run on a runtime thread: clean up on a thread with
        // a runtime of its own.
        let (postgres, redis, name) =
            (self.postgres.clone(), self.redis.clone(), self.name.clone());
        let cleaned = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                use sqlx::Connection as _;
                let mut conn =
                    sqlx::PgConnection::connect(&postgres).await.map_err(|e| e.to_string())?;
                // A process the test left behind may still hold a lock for a moment.
                let drop_schema =
                    format!("SET lock_timeout = '30s'; DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
                sqlx::raw_sql(sqlx::AssertSqlSafe(drop_schema))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                dmq_redis::delete_namespace_at(&redis, &Keys::new(name))
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        match cleaned {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop schema {} or its records: {e}", self.name),
            Err(_) => eprintln!("dropping schema {} panicked", self.name),
        }
    }
}
