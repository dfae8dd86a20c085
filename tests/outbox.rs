//! The transactional outbox end to end, as processes: `enqueue_in` in transactions on
//! PostgreSQL, `worker --outbox` processes relaying to Redis, a worker process running
//! the jobs. A rolled-back job never runs and a committed one runs once, and every job
//! is enqueued to Redis exactly once while relays are SIGKILLed in the middle of their
//! batches, again and again.

#[path = "bin/outbox_app.rs"]
mod outbox_app;

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dmq_core::{Manager, TaskId};
use dmq_postgres::{EnqueueIn, Mode};
use dmq_redis::{Keys, RedisBackend, RedisBroker};
use futures::FutureExt as _;
use outbox_app::{QUEUE, record};
use sqlx::PgPool;
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(60);

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn postgres_url() -> String {
    std::env::var("DMQ_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// One test's places: a PostgreSQL schema for the outbox, a Redis namespace for the
/// broker, and the hash the task counts its runs in.
struct Places {
    schema: String,
    namespace: String,
    runs_key: String,
    app: PgPool,
}

/// Runs `test` with fresh places, then drops the schema and deletes the namespace's
/// keys, whether it passed or not.
async fn with_places<F, Fut>(test: F)
where
    F: FnOnce(Places) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let schema = format!("dmq_test_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let app = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&postgres_url())
        .await
        .expect("connect to PostgreSQL (scripts/ensure-postgres starts one)");
    // As `dmq migrate` would: the schema serves an outbox before the first enqueue_in.
    dmq_postgres::migrate_namespace(&postgres_url(), &schema, Some(Mode::Outbox))
        .await
        .expect("migrate the outbox's schema");
    let places = Places {
        runs_key: format!("{{{namespace}}}:outbox-e2e:runs"),
        schema: schema.clone(),
        namespace: namespace.clone(),
        app: app.clone(),
    };
    let outcome = AssertUnwindSafe(test(places)).catch_unwind().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")))
        .execute(&app)
        .await
        .expect("drop the test's schema");
    dmq_redis::delete_namespace_at(&redis_url(), &Keys::new(&namespace))
        .await
        .expect("delete the test's keys");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

impl Places {
    /// Starts `dmq-test-outbox-app worker` with `args`, its log going to `log`.
    fn worker(&self, args: &[&str], log: &Path) -> Child {
        Command::new(env!("CARGO_BIN_EXE_dmq-test-outbox-app"))
            .arg("worker")
            .args(["--namespace", &self.namespace, "--grace", "5s"])
            .args(args)
            .env("DMQ_BROKER_URL", redis_url())
            .env("DMQ_TEST_RUNS_KEY", &self.runs_key)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("a log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("start dmq-test-outbox-app worker")
    }

    /// Starts a worker that relays the outbox and works a queue no job goes to.
    fn relay(&self, log: &Path) -> Child {
        let outbox = postgres_url();
        let args = [
            "--queues",
            "outbox-idle",
            "--no-scheduler",
            "--outbox",
            &outbox,
            "--outbox-namespace",
            &self.schema,
        ];
        self.worker(&args, log)
    }

    async fn outbox_ids(&self) -> Vec<TaskId> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM \"{}\".outbox",
            self.schema
        )))
        .fetch_all(&self.app)
        .await
        .expect("read the outbox");
        ids.into_iter().map(TaskId::from).collect()
    }

    /// How many times each job ran, by id.
    async fn runs(&self) -> HashMap<String, u64> {
        let mut conn = dmq_redis::RedisConnection::open(&redis_url()).await.expect("redis");
        redis::cmd("HGETALL").arg(&self.runs_key).query_async(&mut conn).await.expect("runs")
    }

    /// The pid of the relay process that holds the outbox's lock, if one does.
    async fn lock_holder(&self) -> Option<u32> {
        let name: Option<String> = sqlx::query_scalar(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted \
               AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($1, 0)",
        )
        .bind(format!("dmq outbox relay {}", self.schema))
        .fetch_optional(&self.app)
        .await
        .expect("read pg_locks");
        let name = name?;
        let pid = name.strip_prefix("dmq outbox relay (pid ")?.strip_suffix(')')?;
        pid.parse().ok()
    }
}

/// A log file for one process of a test.
fn log_file(places: &Places, what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}-{what}.log", places.namespace))
}

/// Sends SIGTERM to `child` and waits for it to exit; returns whether it exited 0.
async fn terminate(child: &mut Child) -> bool {
    let Some(pid) = child.id() else { return false };
    let sent = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
    assert!(sent.expect("kill -TERM").success());
    tokio::time::timeout(WAIT, child.wait()).await.expect("exits").expect("wait").success()
}

/// Reads and removes the log files.
fn logs(paths: &[PathBuf]) -> String {
    let mut all = String::new();
    for path in paths {
        all.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        let _ = std::fs::remove_file(path);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_outbox_runs_a_committed_job_once_and_never_a_rolled_back_one() {
    with_places(|places| async move {
        let log = log_file(&places, "worker");
        let mut worker = places
            .worker(&["--outbox", &postgres_url(), "--outbox-namespace", &places.schema], &log);
        let outcome = AssertUnwindSafe(async {
            let app = &places.app;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE \"{}\".orders (id bigserial PRIMARY KEY, total bigint NOT NULL)",
                places.schema
            )))
            .execute(app)
            .await
            .unwrap();
            let insert = format!("INSERT INTO \"{}\".orders (total) VALUES ($1)", places.schema);

            let mut rolled_back = app.begin().await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
                .bind(1_i64)
                .execute(&mut *rolled_back)
                .await
                .unwrap();
            let lost = record::call(1)
                .enqueue_in_namespace(&mut rolled_back, &places.schema)
                .await
                .unwrap();
            rolled_back.rollback().await.unwrap();

            let mut committed = app.begin().await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(insert))
                .bind(2_i64)
                .execute(&mut *committed)
                .await
                .unwrap();
            let kept =
                record::call(2).enqueue_in_namespace(&mut committed, &places.schema).await.unwrap();
            committed.commit().await.unwrap();

            let manager = Manager::builder()
                .broker(
                    RedisBroker::connect_with_namespace(&redis_url(), &places.namespace)
                        .await
                        .unwrap(),
                )
                .backend(
                    RedisBackend::connect_with_namespace(&redis_url(), &places.namespace)
                        .await
                        .unwrap(),
                )
                .build()
                .unwrap();
            let value = manager.result::<u64>(kept).wait(WAIT).await.expect("the job ran");
            assert_eq!(value, 2);
            // A while later: it ran once, the other never reached Redis, and the outbox
            // is empty.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let runs = places.runs().await;
            assert_eq!(runs.get(&kept.to_string()), Some(&1), "{runs:?}");
            assert_eq!(runs.len(), 1, "{runs:?}");
            let queues = [QUEUE.to_owned()];
            let admin = manager.admin().unwrap();
            assert!(admin.find_job(lost, &queues).await.unwrap().is_none());
            assert!(places.outbox_ids().await.is_empty());
        })
        .catch_unwind()
        .await;
        let clean = terminate(&mut worker).await;
        let logged = logs(&[log]);
        if let Err(panic) = outcome {
            eprintln!("the worker logged:\n{logged}");
            std::panic::resume_unwind(panic);
        }
        assert!(clean, "the worker exits 0 on SIGTERM; it logged:\n{logged}");
        assert!(logged.contains("relaying the outbox"), "{logged}");
        assert!(logged.contains("the outbox relay stopped"), "{logged}");
    })
    .await;
}

/// How many jobs the SIGKILL test enqueues, in transactions of `PER_TRANSACTION`; every
/// fifth transaction rolls back.
const JOBS: u64 = 4_000;
const PER_TRANSACTION: u64 = 10;

/// How many relays the SIGKILL test kills at most; then the last one finishes.
const MAX_KILLS: usize = 30;

/// Enqueues `JOBS` jobs in transactions; returns the ids committed and rolled back.
async fn produce(app: PgPool, schema: String) -> (HashSet<TaskId>, HashSet<TaskId>) {
    let mut committed = HashSet::new();
    let mut rolled_back = HashSet::new();
    for t in 0..JOBS / PER_TRANSACTION {
        let mut tx = app.begin().await.expect("begin");
        let mut ids = Vec::new();
        for n in 0..PER_TRANSACTION {
            let order = t * PER_TRANSACTION + n;
            ids.push(
                record::call(order)
                    .enqueue_in_namespace(&mut tx, &schema)
                    .await
                    .expect("enqueue_in"),
            );
        }
        if t % 5 == 4 {
            tx.rollback().await.expect("roll back");
            rolled_back.extend(ids);
        } else {
            tx.commit().await.expect("commit");
            committed.extend(ids);
        }
        // Spread over the kills, rather than all in before the first relay starts.
        if t % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    (committed, rolled_back)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_sigkilled_between_enqueueing_and_deleting_enqueue_every_job_exactly_once() {
    with_places(|places| async move {
        let mut logs_written = vec![log_file(&places, "consumer")];
        let mut consumer =
            places.worker(&["--queues", QUEUE, "--concurrency", "32"], &logs_written[0]);
        let producer = tokio::spawn(produce(places.app.clone(), places.schema.clone()));
        let stop_producing = producer.abort_handle();

        let outcome = AssertUnwindSafe(async {
            let mut relays: Vec<Child> = Vec::new();
            let mut kills = 0;
            // Rows left in the outbox after a kill whose job had already run: the relay
            // died between enqueueing them and committing their delete.
            let mut in_window = 0;
            let mut round = 0;
            let began = Instant::now();
            loop {
                round += 1;
                if producer.is_finished() && places.outbox_ids().await.is_empty() {
                    break;
                }
                assert!(began.elapsed() < 5 * WAIT, "the outbox never emptied");
                if relays.is_empty() {
                    let log = log_file(&places, &format!("relay-{round}"));
                    relays.push(places.relay(&log));
                    logs_written.push(log);
                }
                if kills >= MAX_KILLS {
                    // Enough: the last relay finishes the work, however slow the machine.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                // Every third round, a standby waits for the lock beside the holder, and
                // takes over at once when the holder is killed.
                if round % 3 == 0 && relays.len() < 2 {
                    let log = log_file(&places, &format!("standby-{round}"));
                    relays.push(places.relay(&log));
                    logs_written.push(log);
                }
                let started = Instant::now();
                // A killed relay's server process may hold the lock a moment longer.
                let holder = loop {
                    assert!(started.elapsed() < WAIT, "no relay took the outbox's lock");
                    let pid = places.lock_holder().await;
                    if let Some(at) = relays.iter().position(|r| r.id().is_some() && r.id() == pid)
                    {
                        break at;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                };
                // Into its batches, which are mostly Redis calls: a kill most likely
                // lands between a batch's enqueues and its delete.
                let work = 10 + uuid::Uuid::new_v4().as_u128() % 90;
                tokio::time::sleep(Duration::from_millis(u64::try_from(work).unwrap())).await;
                let mut killed = relays.remove(holder);
                killed.start_kill().expect("SIGKILL");
                killed.wait().await.expect("wait");
                kills += 1;
                if relays.is_empty() {
                    // No relay runs: what the dead one left is there to see, once the
                    // consumer has run what it had enqueued.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let left = places.outbox_ids().await;
                    let runs = places.runs().await;
                    in_window +=
                        left.iter().filter(|id| runs.contains_key(&id.to_string())).count();
                }
            }
            let (committed, rolled_back) = producer.await.expect("the producer");
            for mut relay in relays {
                assert!(terminate(&mut relay).await, "a relay exits 0 on SIGTERM");
            }

            // Every committed job runs, once.
            let started = Instant::now();
            let mut runs = places.runs().await;
            while runs.len() < committed.len() && started.elapsed() < WAIT {
                tokio::time::sleep(Duration::from_millis(100)).await;
                runs = places.runs().await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let runs = places.runs().await;
            eprintln!(
                "{kills} relays killed; {in_window} rows were left in the outbox with their \
                 job run already; {} jobs committed, {} rolled back",
                committed.len(),
                rolled_back.len()
            );
            let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
            assert!(twice.is_empty(), "jobs ran more than once: {twice:?}");
            for id in &committed {
                assert_eq!(
                    runs.get(&id.to_string()),
                    Some(&1),
                    "job {id} ran {:?} times",
                    runs.get(&id.to_string())
                );
            }
            for id in &rolled_back {
                assert!(!runs.contains_key(&id.to_string()), "rolled-back job {id} ran");
            }
            assert_eq!(runs.len(), committed.len());
            assert!(kills >= 5, "only {kills} relays were killed while they worked");
            // The test saw the dangerous window, so exactly once above is not luck.
            assert!(in_window > 0, "no kill left a relayed row behind in {kills} kills");
        })
        .catch_unwind()
        .await;
        stop_producing.abort();
        let clean = terminate(&mut consumer).await;
        let logged = logs(&logs_written);
        if let Err(panic) = outcome {
            eprintln!("the processes logged:\n{logged}");
            std::panic::resume_unwind(panic);
        }
        assert!(clean, "the consumer exits 0 on SIGTERM");
        // The relays that took over said so when they found such rows.
        assert!(logged.contains("that the broker held already"), "{logged}");
    })
    .await;
}
