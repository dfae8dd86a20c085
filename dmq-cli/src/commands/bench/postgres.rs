//! `dmq bench` on PostgreSQL: a schema of the run's own, made for it and dropped at the
//! end (also on an error or Ctrl-C), and what the server spent per job: write
//! transactions, WAL, and the CPU of its processes when it runs on this machine.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail, ensure};
use dmq_core::Manager;
use dmq_postgres::{Mode, PostgresBackend, PostgresBroker};
use serde::Serialize;
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::signal::unix::{SignalKind, signal};

use super::{Output, Report, Setup, measure, with_metrics};
use crate::broker_url::{namespace_hint, redact};
use crate::cli::BenchArgs;

/// How often the drain reads the queue's figures. Each read counts the queue's rows,
/// which costs the server more than Redis's counters do, so it is read less often.
pub(super) const DRAIN_POLL: Duration = Duration::from_millis(100);

/// How long dropping the run's schema waits for a lock before it gives up.
const DROP_LOCK_TIMEOUT: &str = "10s";

/// Linux counts a process's CPU time in /proc in ticks of 1/100 s.
const MICROS_PER_TICK: f64 = 10_000.0;

/// A namespace no other run uses, that names a schema: `dmq_bench_` and 16 hex digits.
fn fresh_namespace() -> String {
    format!("dmq_bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// Runs `dmq bench` on the PostgreSQL of `args.broker`, in a fresh schema.
pub(super) async fn run(args: &BenchArgs, out: Output) -> anyhow::Result<()> {
    ensure!(
        !args.deadpool,
        "--deadpool takes a redis:// URL: deadpool-redis pools Redis connections"
    );
    ensure!(
        args.wait_replicas.is_none(),
        "--wait-replicas waits for Redis replicas (WAIT); on PostgreSQL the server's \
         synchronous_commit and synchronous_standby_names decide what a commit waits for"
    );
    // Registered now, before the schema exists: from the moment it does, Ctrl-C
    // ends the run and the schema is dropped.
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let url = args.broker.as_str();
    let shown = redact(url);
    let namespace = args.namespace.clone().unwrap_or_else(fresh_namespace);
    let stats = PgStats::connect(url, &shown).await?;
    stats.refuse_existing(&namespace).await?;
    // Refuses a namespace that cannot name a schema before it makes anything.
    dmq_postgres::migrate_namespace(url, &namespace, Some(Mode::Broker))
        .await
        .map_err(|e| namespace_hint(e, &namespace))?;

    // From here on the schema is the run's: whatever happens, it is dropped.
    let pools = Mutex::new(Vec::new());
    let measured = tokio::select! {
        measured = connect_and_measure(args, out, &stats, &namespace, &shown, &pools) => measured,
        _ = interrupt.recv() => Err(anyhow!("interrupted")),
    };
    // A run cut off (an error, Ctrl-C) may have left a connection in the middle of a
    // transaction, holding a lock the drop would wait for: its connections are closed
    // first. A finished run's connections are idle and hold none.
    let pools: Vec<PgPool> = pools.lock().map(|mut p| std::mem::take(&mut *p)).unwrap_or_default();
    if measured.is_err() {
        for pool in pools {
            pool.close().await;
        }
    }
    let dropped = stats.drop_schema(&namespace).await;
    let mut report = measured?;
    dropped?;
    report.dropped_schema = Some(namespace.clone());
    out.line(format_args!("cleanup            dropped schema {namespace} and everything in it"));
    out.finish(&report)
}

/// Connects the broker and backend in `namespace` (their pools go to `pools`, to be
/// closed whatever happens) and runs the phases.
async fn connect_and_measure(
    args: &BenchArgs,
    out: Output,
    stats: &PgStats,
    namespace: &str,
    shown: &str,
    pools: &Mutex<Vec<PgPool>>,
) -> anyhow::Result<Report> {
    let url = args.broker.as_str();
    // As `dmq worker` connects: the default pools.
    let broker = PostgresBroker::connect_with_namespace(url, namespace).await?;
    let backend = PostgresBackend::connect_with_namespace(url, namespace).await?;
    let sizes = (
        broker.pool().options().get_max_connections(),
        backend.pool().options().get_max_connections(),
    );
    if let Ok(mut pools) = pools.lock() {
        pools.extend([broker.pool().clone(), backend.pool().clone()]);
    }
    let manager: Manager =
        with_metrics(Manager::builder(), args).backend(backend).broker(broker).build()?;
    let setup = Setup {
        broker: shown.to_owned(),
        namespace: Some(namespace.to_owned()),
        result_backend: "postgres (same schema)",
        connections: format!(
            "PostgresBroker: a pool of {} connections and 1 listening for NOTIFY; \
             PostgresBackend: a pool of {} and 1 listening (the defaults, as dmq worker has \
             them); the drain reads the queue's figures every {} ms",
            sizes.0,
            sizes.1,
            DRAIN_POLL.as_millis()
        ),
        server: Some(stats.describe().await?),
    };
    out.header(&setup, args);
    measure(&manager, args, setup, None, Some(stats), out).await
}

/// The server's figures, read on a connection of their own; and the clean-up.
pub(super) struct PgStats {
    pool: PgPool,
    /// Whether the server runs on this machine, so that its processes' CPU can be read.
    local: bool,
    shown: String,
}

impl PgStats {
    async fn connect(url: &str, shown: &str) -> anyhow::Result<Self> {
        let options: PgConnectOptions =
            url.parse().map_err(|e| anyhow!("could not read the PostgreSQL URL {shown}: {e}"))?;
        let host = options.get_host();
        let local = std::path::Path::new("/proc/self/stat").exists()
            && (options.get_socket().is_some()
                || host.starts_with('/')
                || matches!(host, "localhost" | "127.0.0.1" | "::1"));
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.application_name("dmq-bench"))
            .await
            .with_context(|| {
                format!("could not connect to PostgreSQL at {shown}; is the server running?")
            })?;
        Ok(PgStats { pool, local, shown: shown.to_owned() })
    }

    /// Refuses a schema that exists already: the run drops its schema at the end.
    async fn refuse_existing(&self, schema: &str) -> anyhow::Result<()> {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(schema)
                .fetch_one(&self.pool)
                .await
                .with_context(|| format!("could not look for schema {schema} at {}", self.shown))?;
        if exists {
            bail!(
                "schema {schema:?} exists already at {}, and the bench drops its schema at the \
                 end: name one that does not exist with --namespace, or leave --namespace out \
                 for a fresh dmq_bench_<hex>",
                self.shown
            );
        }
        Ok(())
    }

    /// The server's version and what a commit waits for: `PostgreSQL 15.4,
    /// synchronous_commit on, fsync on`.
    async fn describe(&self) -> anyhow::Result<String> {
        let row = sqlx::query(
            "SELECT current_setting('server_version') AS version, \
             current_setting('synchronous_commit') AS sync, current_setting('fsync') AS fsync, \
             current_setting('max_connections') AS max",
        )
        .fetch_one(&self.pool)
        .await
        .with_context(|| format!("could not read the settings of PostgreSQL at {}", self.shown))?;
        let get = |column: &str| row.try_get::<String, _>(column).unwrap_or_default();
        Ok(format!(
            "PostgreSQL {}, synchronous_commit {}, fsync {}, max_connections {}{}",
            get("version"),
            get("sync"),
            get("fsync"),
            get("max"),
            if self.local { ", on this machine" } else { "" }
        ))
    }

    /// The server's counters now.
    pub(super) async fn snapshot(&self) -> anyhow::Result<PgSnapshot> {
        // The next transaction id and the WAL position are exact at once; the
        // statistics views are not (backends report to them about once a second).
        let row = sqlx::query(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid, \
             (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint AS wal",
        )
        .fetch_one(&self.pool)
        .await
        .with_context(|| format!("could not read the counters of PostgreSQL at {}", self.shown))?;
        let count = |column: &str| {
            row.try_get::<i64, _>(column).ok().and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
        };
        Ok(PgSnapshot {
            next_xid: count("next_xid"),
            wal_bytes: count("wal"),
            cpu_us: if self.local { postgres_cpu_us() } else { None },
        })
    }

    /// Drops `schema` and everything in it.
    async fn drop_schema(&self, schema: &str) -> anyhow::Result<()> {
        // `schema` names one that `migrate_namespace` made, so a plain name.
        let sql = format!(
            "SET lock_timeout = '{DROP_LOCK_TIMEOUT}'; DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        );
        let mut conn = self.pool.acquire().await.with_context(|| {
            format!("could not drop the bench's schema {schema}: drop it by hand (DROP SCHEMA \"{schema}\" CASCADE)")
        })?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await.with_context(|| {
            format!(
                "could not drop the bench's schema {schema} at {}: drop it by hand (DROP \
                 SCHEMA \"{schema}\" CASCADE)",
                self.shown
            )
        })?;
        Ok(())
    }
}

/// The server's counters at one moment.
#[derive(Debug, Clone, Copy)]
pub(super) struct PgSnapshot {
    next_xid: u64,
    wal_bytes: u64,
    cpu_us: Option<f64>,
}

impl PgSnapshot {
    /// What the server did between `earlier` and this snapshot, per job.
    pub(super) fn cost_since(&self, earlier: &PgSnapshot, jobs: u64) -> PgCost {
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let per_job = |delta: u64| delta as f64 / jobs.max(1) as f64;
        PgCost {
            write_transactions_per_job: per_job(self.next_xid.saturating_sub(earlier.next_xid)),
            wal_bytes_per_job: per_job(self.wal_bytes.saturating_sub(earlier.wal_bytes)),
            #[allow(clippy::cast_precision_loss)]
            cpu_us_per_job: self
                .cpu_us
                .zip(earlier.cpu_us)
                .map(|(now, then)| (now - then).max(0.0) / jobs.max(1) as f64),
        }
    }
}

/// What PostgreSQL spent per job in one phase.
#[derive(Debug, Serialize)]
pub(super) struct PgCost {
    /// Transactions that wrote (each took a transaction id), the bench's own reads
    /// left out as they write nothing.
    write_transactions_per_job: f64,
    /// Write-ahead log written.
    wal_bytes_per_job: f64,
    /// CPU time of every `postgres` process on this machine (server-wide: other
    /// clients inflate it); none when the server runs elsewhere.
    cpu_us_per_job: Option<f64>,
}

/// What PostgreSQL spent per job, enqueueing and draining.
#[derive(Debug, Serialize)]
pub(super) struct PostgresCost {
    pub(super) enqueue: PgCost,
    pub(super) drain: PgCost,
}

impl Output {
    /// Prints one phase's PostgreSQL figures.
    pub(super) fn pg_cost(self, label: &str, cost: &PgCost) {
        let cpu = cost
            .cpu_us_per_job
            .map_or_else(String::new, |us| format!(", {us:.1} us PostgreSQL CPU/job"));
        self.line(format_args!(
            "{label:<18} {:.2} write transactions/job, {:.0} bytes WAL/job{cpu}",
            cost.write_transactions_per_job, cost.wal_bytes_per_job,
        ));
    }
}

/// The CPU time every process named `postgres` on this machine has used, in
/// microseconds, from /proc; `None` when /proc cannot be read.
fn postgres_cpu_us() -> Option<f64> {
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A process may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        ticks += postgres_ticks(&stat).unwrap_or(0);
    }
    #[allow(clippy::cast_precision_loss)]
    Some(ticks as f64 * MICROS_PER_TICK)
}

/// The user and system CPU ticks in a /proc/<pid>/stat line, if its process is named
/// `postgres`: `pid (comm) state ...`, utime and stime the 14th and 15th fields.
fn postgres_ticks(stat: &str) -> Option<u64> {
    let (head, rest) = stat.rsplit_once(')')?;
    if head.split_once('(')?.1 != "postgres" {
        return None;
    }
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at the 3rd field.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_namespace_names_a_schema() {
        let name = fresh_namespace();
        assert!(name.starts_with("dmq_bench_") && name.len() == 26, "{name}");
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        assert_ne!(fresh_namespace(), name);
    }

    #[test]
    fn cpu_ticks_are_read_from_postgres_processes_only() {
        let line = "2274 (postgres) S 1 2274 2274 0 -1 4194560 5283 0 12 0 150 75 0 0 20 0 1 0";
        assert_eq!(postgres_ticks(line), Some(225));
        assert_eq!(postgres_ticks("99 (redis-server) S 1 2 3 0 -1 0 0 0 0 0 7 8 0 0"), None);
        // A name with spaces and parentheses is cut at the last `)`.
        assert_eq!(postgres_ticks("7 (a (b) c) S 1 2 3 0 -1 0 0 0 0 0 7 8 0 0"), None);
        assert_eq!(postgres_ticks("garbage"), None);
    }

    #[test]
    fn costs_are_per_job() {
        let before = PgSnapshot { next_xid: 100, wal_bytes: 1_000, cpu_us: Some(5_000.0) };
        let after = PgSnapshot { next_xid: 300, wal_bytes: 51_000, cpu_us: Some(25_000.0) };
        let cost = after.cost_since(&before, 100);
        assert!((cost.write_transactions_per_job - 2.0).abs() < 1e-9);
        assert!((cost.wal_bytes_per_job - 500.0).abs() < 1e-9);
        assert_eq!(cost.cpu_us_per_job, Some(200.0));
        let remote = PgSnapshot { cpu_us: None, ..after };
        assert_eq!(remote.cost_since(&before, 100).cpu_us_per_job, None);
    }
}
