//! End to end with real worker processes (`dmq-test-worker`, started, stopped with
//! SIGTERM and killed with SIGKILL) on a real Redis: several processes drain one queue
//! without losing or repeating a job, a job whose process is killed mid-run is run
//! again by another while the dead one's lease is fenced off, and the processes carry
//! on through a Redis restart without losing a job.
//!
//! Each test works in a fresh namespace `dmq-test-<uuid>` and removes its keys when it
//! ends, passed or failed; the Redis-restart test runs its own redis-server in a
//! temporary directory, removed at the end. Every child process is killed when its
//! guard drops, so a failing test leaves none behind; a failing test prints the tail of
//! each worker's log.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use dmq_core::{Broker, BrokerAdmin, Error, Manager, WorkerRegistry};
use dmq_redis::{Keys, QueueKeys, RedisBackend, RedisBroker, RedisConnection};
use futures::{StreamExt, TryStreamExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;

mod common;

use common::workers::{
    MAX_DELIVERIES, Settings, WAIT, WorkerProcess, kill_now, poll, registered,
    resume_and_see_the_fence_hold, signal, storm,
};

/// The worker binary's own source: the tests enqueue its very tasks and read the keys
/// it writes, so the two cannot drift apart.
#[allow(dead_code)]
#[path = "bin/test_worker.rs"]
mod test_worker;

use test_worker::{
    count, crash, pids_key, runs_key, second_time, slow, stamp, stamps_key, starts_key, tick,
    ticks_key, triple,
};

/// The Redis the tests use: `REDIS_URL`, or the local default (as every test here).
fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A fresh namespace whose keys are deleted when this guard drops, even when the test
/// fails.
struct Namespace {
    url: String,
    name: String,
}

impl Namespace {
    fn fresh(url: &str) -> Self {
        Namespace { url: url.to_owned(), name: format!("dmq-test-{}", uuid::Uuid::new_v4()) }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Drop cannot await, and may run on a runtime thread: clean up on a thread with
        // a runtime of its own.
        let url = self.url.clone();
        let keys = Keys::new(self.name.clone());
        let cleaned = std::thread::spawn(move || -> Result<u64, String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                dmq_redis::delete_namespace_at(&url, &keys).await.map_err(|e| e.to_string())
            })
        })
        .join();
        match cleaned {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("could not delete the keys of namespace {}: {e}", self.name),
            Err(_) => eprintln!("deleting the keys of namespace {} panicked", self.name),
        }
    }
}

/// The broker (for lease inspection) and a manager on it and a Redis backend.
async fn connect(url: &str, namespace: &str) -> (Arc<RedisBroker>, Manager) {
    let hint = "connect to redis (scripts/ensure-redis starts one)";
    let broker = Arc::new(RedisBroker::connect_with_namespace(url, namespace).await.expect(hint));
    let backend = RedisBackend::connect_with_namespace(url, namespace).await.expect(hint);
    let manager =
        Manager::builder().shared_broker(broker.clone()).backend(backend).build().expect("manager");
    (broker, manager)
}

/// A connection for reading the workers' run records, on a Redis or a Redis Cluster.
async fn records_conn(url: &str) -> RedisConnection {
    RedisConnection::open(url).await.expect("connect to redis")
}

/// The runs the `stamp` jobs of namespace `ns` recorded: the pids of each job's runs,
/// by task id, in the order they started.
async fn stamped_runs(url: &str, ns: &str) -> HashMap<String, Vec<u32>> {
    let mut conn = records_conn(url).await;
    let stamps: Vec<String> = redis::cmd("LRANGE")
        .arg(stamps_key(ns))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("read the stamps");
    let mut runs: HashMap<String, Vec<u32>> = HashMap::new();
    for entry in &stamps {
        let (id, pid) = entry.split_once(' ').expect("`id pid`");
        runs.entry(id.to_owned()).or_default().push(pid.parse().expect("a pid"));
    }
    runs
}

/// The `task-id pid` entries the `slow` jobs of namespace `ns` recorded as they started.
async fn starts(mut conn: RedisConnection, ns: &str) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(starts_key(ns))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("read the starts")
}

const JOBS: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_worker_processes_drain_twenty_thousand_jobs_each_run_exactly_once() {
    let url = redis_url();
    let ns = Namespace::fresh(&url);
    let (_broker, manager) = connect(&url, &ns.name).await;
    let settings = Settings {
        queue: count::QUEUE,
        concurrency: 16,
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_secs(1),
    };
    let mut workers: Vec<WorkerProcess> =
        (0..4).map(|_| WorkerProcess::start(&url, &ns.name, settings)).collect();
    registered(&manager, &workers).await;

    let mut ids = Vec::new();
    for first in (0..JOBS).step_by(1_000) {
        let batch = (first..first + 1_000).map(count::call);
        ids.extend(manager.enqueue_batch(batch).await.expect("enqueue a batch"));
    }
    let values: Vec<u64> = futures::stream::iter(&ids)
        .map(|id| {
            let result = manager.result::<u64>(*id);
            async move { result.wait(WAIT).await }
        })
        .buffered(64)
        .try_collect()
        .await
        .expect("every job's result");
    for (n, value) in (0..JOBS).zip(values) {
        assert_eq!(value, n * 2, "the result of job {n}");
    }

    for worker in &mut workers {
        assert!(worker.is_running(), "worker {} exited before it was told to", worker.pid);
    }
    for worker in &mut workers {
        let status = worker.terminate().await;
        assert!(status.success(), "worker {} exited with {status} after SIGTERM", worker.pid);
    }

    // The workers are gone: no run can still be on its way.
    let mut conn = records_conn(&url).await;
    let runs: HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(runs_key(&ns.name))
        .query_async(&mut conn)
        .await
        .expect("read the run counts");
    assert_eq!(runs.len(), ids.len(), "jobs that ran at least once");
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(runs.get(&id.to_string()), Some(&1), "runs of job {n} ({id})");
    }
    let by_pid: HashMap<u32, u64> = redis::cmd("HGETALL")
        .arg(pids_key(&ns.name))
        .query_async(&mut conn)
        .await
        .expect("read the runs per process");
    eprintln!("jobs run per worker process: {by_pid:?}");
    assert_eq!(by_pid.values().sum::<u64>(), JOBS);
    let pids: HashSet<u32> = workers.iter().map(|w| w.pid).collect();
    assert!(by_pid.keys().all(|pid| pids.contains(pid)), "runs by unknown processes");
    assert!(by_pid.len() > 1, "only one process did any work: {by_pid:?}");

    let stats =
        manager.admin().expect("admin").queue_stats(count::QUEUE).await.expect("queue stats");
    assert_eq!((stats.ready, stats.delayed, stats.in_flight, stats.dead), (0, 0, 0, 0));
    assert!(
        manager
            .broker()
            .worker_registry()
            .expect("registry")
            .workers()
            .await
            .expect("workers")
            .is_empty(),
        "left registered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_mid_run_is_run_again_by_another_process_and_the_dead_lease_is_fenced() {
    let url = redis_url();
    let ns = Namespace::fresh(&url);
    let (broker, manager) = connect(&url, &ns.name).await;
    let settings = Settings {
        queue: slow::QUEUE,
        concurrency: 1,
        lease: Duration::from_secs(2),
        heartbeat: Duration::from_millis(200),
    };
    let mut first = WorkerProcess::start(&url, &ns.name, settings);
    registered(&manager, std::slice::from_ref(&first)).await;

    // Long enough that the first process is surely mid-run when it is killed, right
    // after it recorded the start; short enough for the second run to finish quickly.
    let handle = slow::call(3_000).enqueue(&manager).await.expect("enqueue");
    let id = handle.id();
    let conn = records_conn(&url).await;
    poll("the first process to start the job", || async {
        (!starts(conn.clone(), &ns.name).await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(starts(conn.clone(), &ns.name).await, [format!("{id} {}", first.pid)]);
    let dead_lease = broker
        .lease_of(slow::QUEUE, id)
        .await
        .expect("read the lease")
        .expect("the first process holds a lease on the job it runs");

    let status = first.kill().await;
    assert_eq!(status.signal(), Some(9), "the first process ended otherwise than by SIGKILL");
    let mut second = WorkerProcess::start(&url, &ns.name, settings);

    let finished_by = handle.result(WAIT).await.expect("the job's result");
    assert_eq!(finished_by, second.pid, "the job was finished by another than the second");
    assert_eq!(
        starts(conn.clone(), &ns.name).await,
        [format!("{id} {}", first.pid), format!("{id} {}", second.pid)],
        "the job's runs"
    );
    match broker.ack(&dead_lease).await {
        Err(Error::LeaseLost { id: lost }) => assert_eq!(lost, id),
        other => panic!("the killed process's lease still acknowledged the job: {other:?}"),
    }

    let status = second.terminate().await;
    assert!(status.success(), "the second process exited with {status} after SIGTERM");
    let stats =
        manager.admin().expect("admin").queue_stats(slow::QUEUE).await.expect("queue stats");
    assert_eq!((stats.ready, stats.delayed, stats.in_flight, stats.dead), (0, 0, 0, 0));
}

/// A redis-server of this test's own on `port`, keeping its data in `dir` with every
/// write synced to its append-only file, so a restart keeps it all. Killed when
/// dropped.
struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    /// More flags for redis-server (a cluster node's).
    extra: Vec<String>,
    child: Option<Child>,
}

impl PrivateRedis {
    async fn start(port: u16, dir: PathBuf) -> Self {
        PrivateRedis::start_with(port, dir, Vec::new()).await
    }

    async fn start_with(port: u16, dir: PathBuf, extra: Vec<String>) -> Self {
        let mut redis = PrivateRedis { port, dir, extra, child: None };
        redis.restart().await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and directory, and waits until it
    /// answers.
    async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .args(&self.extra)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server (scripts/ensure-redis installs it)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).expect("url");
        poll("the private redis-server to answer", || async {
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
        })
        .await;
    }

    /// Kills the server with SIGKILL.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_now(&mut child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `n` distinct free ports, found together (each listener held until all are).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect()
}

/// How many jobs of `queue` wait (ready or delayed) or run, and how many are
/// dead-lettered, read in one `MULTI`: a job moving between two of these states is
/// neither missed nor counted twice, as it could be by `queue_stats`, which reads them
/// one after another.
async fn unsettled_and_dead(
    mut conn: RedisConnection,
    queue: &QueueKeys,
) -> redis::RedisResult<(u64, u64)> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for priority in 0..=dmq_core::MAX_PRIORITY {
        pipe.cmd("LLEN").arg(queue.ready(priority));
    }
    pipe.cmd("ZCARD").arg(queue.delayed()).cmd("ZCARD").arg(queue.in_flight());
    pipe.cmd("LLEN").arg(queue.dead());
    let mut counts: Vec<u64> = pipe.query_async(&mut conn).await?;
    let dead = counts.pop().unwrap_or(0);
    Ok((counts.iter().sum(), dead))
}

const RESTART_JOBS: i64 = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_carry_on_through_a_redis_restart_and_lose_no_job() {
    let dir = std::env::temp_dir().join(format!("dmq-test-redis-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("create the redis directory");
    let redis = PrivateRedis::start(free_port(), dir).await;
    let url = redis.url();
    through_a_restart(&url, vec![redis]).await;
}

/// The same on a Redis Cluster of three masters without replicas, all killed with
/// SIGKILL and restarted from their append-only files and cluster configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_carry_on_through_a_redis_cluster_restart_and_lose_no_job() {
    let ports: Vec<u16> = free_ports(6);
    let mut nodes = Vec::new();
    for (port, bus) in ports[..3].iter().zip(&ports[3..]) {
        let dir = std::env::temp_dir().join(format!("dmq-test-cluster-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create a node's directory");
        let extra = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]
            .into_iter()
            .map(str::to_owned)
            .chain(["--cluster-port".to_owned(), bus.to_string()])
            .collect();
        nodes.push(PrivateRedis::start_with(*port, dir, extra).await);
    }
    let addresses: Vec<String> = ports[..3].iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .await
        .expect("run redis-cli --cluster create");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stdout));
    for port in &ports[..3] {
        poll("the cluster to be ok on every node", || async {
            let out = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "cluster", "info"])
                .output()
                .await
                .ok()?;
            String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok").then_some(())
        })
        .await;
    }
    let url = format!("redis+cluster://{}", addresses.join(","));
    through_a_restart(&url, nodes).await;
}

/// Two worker processes drain 3,000 jobs from `url`; every server of `servers` is
/// killed with SIGKILL and restarted a second later, mid-drain. No job is lost, none
/// is dead-lettered, and the workers run on without a restart.
async fn through_a_restart(url: &str, mut servers: Vec<PrivateRedis>) {
    let url = url.to_owned();
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let (broker, manager) = connect(&url, &namespace).await;
    let settings = Settings {
        queue: triple::QUEUE,
        concurrency: 4,
        lease: Duration::from_secs(2),
        heartbeat: Duration::from_millis(200),
    };
    let mut workers: Vec<WorkerProcess> =
        (0..2).map(|_| WorkerProcess::start(&url, &namespace, settings)).collect();
    registered(&manager, &workers).await;

    // 8 jobs at a time of 10 ms each: the queue takes seconds to drain, so Redis dies
    // with most of it still waiting.
    let mut ids = Vec::new();
    for first in (0..RESTART_JOBS).step_by(500) {
        let batch = (first..first + 500).map(|n| triple::call(n, 10));
        ids.extend(manager.enqueue_batch(batch).await.expect("enqueue a batch"));
    }
    let at_kill = poll("the workers to take a tenth of the jobs", || async {
        let stats = manager.admin().expect("admin").queue_stats(triple::QUEUE).await.ok()?;
        (stats.ready <= 2_700).then_some(stats)
    })
    .await;
    for server in &mut servers {
        server.kill().await;
    }
    eprintln!("killed redis with {} jobs ready and {} in flight", at_kill.ready, at_kill.in_flight);
    assert!(at_kill.ready > 0, "every job was taken before redis went down: {at_kill:?}");
    // The outage itself, not a wait for anything.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for server in &mut servers {
        server.restart().await;
    }

    // Once no job waits or runs, every job was acknowledged, and a worker stores a
    // job's result before it acknowledges the job: each result is then final.
    // Duplicates are allowed after a crash; a job without its result is not.
    let queue = broker.keys().queue(triple::QUEUE);
    let conn = records_conn(&url).await;
    let dead = poll("every job to be settled", || async {
        let (unsettled, dead) = unsettled_and_dead(conn.clone(), &queue).await.ok()?;
        (unsettled == 0).then_some(dead)
    })
    .await;
    assert_eq!(dead, 0, "jobs were dead-lettered");
    let mut lost = Vec::new();
    for (n, id) in (0..RESTART_JOBS).zip(ids) {
        // The first reads after the restart may meet a connection being replaced.
        let read = poll("a result to be readable", || async {
            match manager.result::<i64>(id).get().await {
                Err(e) if e.is_transient() => None,
                other => Some(other),
            }
        })
        .await;
        match read {
            Ok(Some(value)) => assert_eq!(value, n * 3, "the result of job {n}"),
            Ok(None) => lost.push(n),
            Err(e) => panic!("job {n} ({id}) failed: {e}"),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {RESTART_JOBS} jobs were acknowledged without their result: jobs {lost:?}",
        lost.len()
    );

    for worker in &mut workers {
        assert!(worker.is_running(), "worker {} exited during the restart", worker.pid);
    }
    for worker in &mut workers {
        let status = worker.terminate().await;
        assert!(status.success(), "worker {} exited with {status} after SIGTERM", worker.pid);
    }
}

/// A job that kills the process running it (a poison pill) is taken back from each
/// dead process by the next one's reaper, long before its lease, and after
/// `MAX_DELIVERIES` deliveries it is dead-lettered instead of killing workers forever;
/// the jobs around it all complete. The test restarts the worker each time it dies,
/// as `dmq worker` would.
async fn poison_pill(url: &str) {
    let ns = Namespace::fresh(url);
    let (broker, manager) = connect(url, &ns.name).await;
    // One job at a time: a job running beside the pill when it kills the process
    // would count that delivery too (the reaper cannot tell which job killed it).
    let settings = Settings {
        queue: "e2e-poison,e2e-count",
        concurrency: 1,
        // Far longer than the test: only the reaper, seeing the heartbeats stop, can
        // hand the poison pill on.
        lease: Duration::from_secs(600),
        heartbeat: Duration::from_millis(100),
    };
    let pill = crash::call().enqueue(&manager).await.expect("enqueue").id();
    let good =
        manager.enqueue_batch((0..20).map(count::call)).await.expect("enqueue the good jobs");

    let mut worker = WorkerProcess::start(url, &ns.name, settings);
    let mut deaths = Vec::new();
    let deadline = Instant::now() + WAIT;
    while broker.dead_letter_count(crash::QUEUE).await.expect("dead letters") == 0 {
        if Instant::now() >= deadline {
            let lease = broker.lease_of(crash::QUEUE, pill).await;
            let stats = broker.queue_stats(crash::QUEUE).await;
            let workers = broker.workers().await;
            panic!(
                "the poison pill was never dead-lettered: {} deaths, lease {lease:?}, \
                 {stats:?}, live workers {workers:?}",
                deaths.len()
            );
        }
        if !worker.is_running() {
            deaths.push(worker.child.wait().await.expect("the dead worker's exit status"));
            worker = WorkerProcess::start(url, &ns.name, settings);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first run was not known to run alone; the next MAX_DELIVERIES were, and each
    // counted.
    let runs = MAX_DELIVERIES as usize + 1;
    assert_eq!(deaths.len(), runs, "one death per delivery: {deaths:?}");
    for status in &deaths {
        assert_eq!(status.signal(), Some(6), "a worker died otherwise than by the pill's abort");
    }
    let conn = records_conn(url).await;
    let started = starts(conn, &ns.name).await;
    assert_eq!(started.len(), runs, "the pill's runs: {started:?}");
    assert!(started.iter().all(|s| s.starts_with(&pill.to_string())));

    let letters = broker.dead_letters(crash::QUEUE, 0, 10).await.expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id, pill);
    assert!(letters[0].reason.contains("poison"), "{}", letters[0].reason);
    for (n, id) in good.iter().enumerate() {
        let value = manager.result::<u64>(*id).wait(WAIT).await.expect("a good job's result");
        assert_eq!(value, n as u64 * 2);
    }
    let status = worker.terminate().await;
    assert!(status.success(), "the last worker exited with {status} after SIGTERM");
}

/// A retry waits in Redis, not in the worker: a worker killed while its job waits out
/// the backoff loses nothing, and another process runs the retry.
async fn killed_during_backoff(url: &str) {
    let ns = Namespace::fresh(url);
    let (broker, manager) = connect(url, &ns.name).await;
    let settings = Settings {
        queue: second_time::QUEUE,
        concurrency: 1,
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_millis(200),
    };
    let mut first = WorkerProcess::start(url, &ns.name, settings);
    registered(&manager, std::slice::from_ref(&first)).await;
    let handle = second_time::call(1_500).enqueue(&manager).await.expect("enqueue");
    poll("the failed first attempt to wait as a retry", || async {
        let stats = broker.queue_stats(second_time::QUEUE).await.ok()?;
        (stats.delayed == 1).then_some(())
    })
    .await;
    let status = first.kill().await;
    assert_eq!(status.signal(), Some(9));
    let mut second = WorkerProcess::start(url, &ns.name, settings);
    assert_eq!(handle.result(WAIT).await.expect("the retry's result"), 2, "attempt 2 succeeded");
    let status = second.terminate().await;
    assert!(status.success(), "the second worker exited with {status}");
}

/// Three worker processes run the same every-second schedule: each fire time over 30
/// ticks is enqueued (and run) exactly once, with none skipped while they run.
async fn schedule_ticks(url: &str) {
    let ns = Namespace::fresh(url);
    let (_broker, manager) = connect(url, &ns.name).await;
    let settings = Settings {
        queue: tick::QUEUE,
        concurrency: 4,
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_millis(500),
    };
    let mut workers: Vec<WorkerProcess> = (0..3)
        .map(|_| WorkerProcess::start_with(url, &ns.name, settings, &["--tick-ms", "1000"]))
        .collect();
    registered(&manager, &workers).await;
    let mut conn = records_conn(url).await;
    poll("31 ticks to run", || {
        let mut conn = conn.clone();
        let key = ticks_key(&ns.name);
        async move {
            let ticks: std::collections::HashMap<String, i64> =
                redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await.ok()?;
            (ticks.len() >= 31).then_some(())
        }
    })
    .await;
    for worker in &mut workers {
        let status = worker.terminate().await;
        assert!(status.success(), "worker {} exited with {status}", worker.pid);
    }
    // Read again once every worker stopped: a tick that ran twice shows now.
    let ticks: std::collections::HashMap<String, i64> =
        redis::cmd("HGETALL").arg(ticks_key(&ns.name)).query_async(&mut conn).await.expect("ticks");
    let mut fires: Vec<chrono::DateTime<chrono::Utc>> = ticks
        .keys()
        .map(|k| chrono::DateTime::parse_from_rfc3339(k).expect("a fire time").to_utc())
        .collect();
    fires.sort();
    for (fire, runs) in &ticks {
        assert_eq!(*runs, 1, "tick {fire} ran {runs} times");
    }
    for pair in fires.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::Duration::seconds(1), "a tick was skipped: {pair:?}");
    }
    assert!(fires.len() >= 31, "{} ticks", fires.len());
}

/// A worker stalled (SIGSTOP) past its heartbeat while it runs a job loses the job to
/// another worker, which runs it, stores its result and settles it. Resumed, the
/// stalled worker finishes its run too, but the fence holds: it stores nothing, and
/// cannot settle the job, whether it resumes after its successor stored the result or
/// while the successor still runs. For every guarantee that stores results.
async fn a_stalled_worker_stores_nothing_over_its_successors_result(
    url: &str,
    guarantee: &str,
    resume_early: bool,
) {
    let ns = Namespace::fresh(url);
    let (_broker, manager) = connect(url, &ns.name).await;
    let settings = Settings {
        queue: "e2e-slow",
        concurrency: 1,
        // Long: only the lapsed heartbeat hands the job on, and the stalled worker's
        // renewal is not due when it resumes, so its run goes on to store its result.
        lease: Duration::from_secs(60),
        heartbeat: Duration::from_millis(200),
    };
    let extra = ["--guarantee", guarantee];
    let mut stalled = WorkerProcess::start_with(url, &ns.name, settings, &extra);
    registered(&manager, std::slice::from_ref(&stalled)).await;
    let id = slow::call(1500).enqueue(&manager).await.expect("enqueue").id();
    let conn = records_conn(url).await;
    poll("the first worker to start the job", || {
        let conn = conn.clone();
        let ns = ns.name.clone();
        async move { (!starts(conn, &ns).await.is_empty()).then_some(()) }
    })
    .await;
    signal(stalled.pid, "STOP").await;

    let successor = WorkerProcess::start_with(url, &ns.name, settings, &extra);
    let runs = || async { starts(conn.clone(), &ns.name).await.len() };
    resume_and_see_the_fence_hold(&manager, id, &stalled, &successor, resume_early, runs).await;
    let status = stalled.terminate().await;
    assert!(status.success(), "the resumed worker exited with {status}");
    drop(successor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_stores_nothing_over_its_successors_result_at_least_once() {
    a_stalled_worker_stores_nothing_over_its_successors_result(
        &redis_url(),
        "at-least-once",
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_stores_nothing_over_its_successors_result_exactly_once() {
    a_stalled_worker_stores_nothing_over_its_successors_result(&redis_url(), "exactly-once", false)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_resumed_before_its_successor_finishes_stores_nothing() {
    a_stalled_worker_stores_nothing_over_its_successors_result(&redis_url(), "at-least-once", true)
        .await;
}

const STORM_JOBS: u64 = 5_000;

/// The fault test: 5,000 jobs, four worker processes, one of them killed with SIGKILL
/// every couple of seconds for 30 s and a fresh one started in its place. No job is
/// lost; every job that ran more than once ran on a killed worker every time but its
/// last; and no stored result ever changes once seen (a watcher reads them all the
/// while), though every run of a job returns a different value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_storm_loses_no_job_and_changes_no_stored_result() {
    let url = redis_url();
    let ns = Namespace::fresh(&url);
    let (broker, manager) = connect(&url, &ns.name).await;
    let settings = Settings {
        queue: "e2e-stamp",
        concurrency: 16,
        lease: Duration::from_secs(5),
        heartbeat: Duration::from_millis(200),
    };
    // No poison limit: a good job whose worker is killed while it runs alone is still
    // a good job.
    let extra = ["--max-deliveries", "0"];
    let mut workers: Vec<WorkerProcess> =
        (0..4).map(|_| WorkerProcess::start_with(&url, &ns.name, settings, &extra)).collect();
    registered(&manager, &workers).await;
    let calls = (0..STORM_JOBS).map(|n| stamp::call(n, 100 + (n * 7919) % 300));
    let ids = manager.enqueue_batch(calls).await.expect("enqueue");

    // The watcher: the first value seen for each job must never change.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let keys = Keys::new(ns.name.clone());
        let result_keys: Vec<String> = ids.iter().map(|id| keys.result(*id)).collect();
        let watching = Arc::clone(&watching);
        let mut conn = records_conn(&url).await;
        tokio::spawn(async move {
            let mut seen: HashMap<usize, Vec<u8>> = HashMap::new();
            let mut changed = Vec::new();
            loop {
                let last = !watching.load(std::sync::atomic::Ordering::SeqCst);
                for (chunk, keys) in result_keys.chunks(500).enumerate() {
                    let values: Vec<Option<Vec<u8>>> =
                        redis::cmd("MGET").arg(keys).query_async(&mut conn).await.expect("mget");
                    for (i, value) in values.into_iter().enumerate() {
                        let Some(value) = value else { continue };
                        let at = chunk * 500 + i;
                        match seen.get(&at) {
                            Some(first) if *first != value => changed.push(at),
                            Some(_) => {}
                            None => {
                                seen.insert(at, value);
                            }
                        }
                    }
                }
                if last {
                    return (seen.len(), changed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let killed = storm(&mut workers, Duration::from_secs(30), Duration::from_secs(2), || {
        WorkerProcess::start_with(&url, &ns.name, settings, &extra)
    })
    .await;
    assert!(killed.len() >= 10, "the storm killed {} workers", killed.len());

    let mut results = HashMap::new();
    for (n, id) in ids.iter().enumerate() {
        let value = manager.result::<String>(*id).wait(WAIT).await.unwrap_or_else(|e| {
            panic!(
                "job {n} ({id}) was lost: {e}; queue {:?}",
                futures::executor::block_on(broker.queue_stats(stamp::QUEUE))
            )
        });
        assert!(value.starts_with(&format!("{n}:")), "job {n} stored {value}");
        results.insert(*id, value);
    }
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    let (watched, changed) = watcher.await.expect("the watcher");
    assert!(changed.is_empty(), "stored results changed after they were seen: jobs {changed:?}");
    assert_eq!(watched, STORM_JOBS as usize, "the watcher saw every result");
    let stats = broker.queue_stats(stamp::QUEUE).await.expect("stats");
    assert_eq!(
        (stats.ready, stats.delayed, stats.in_flight, stats.dead),
        (0, 0, 0, 0),
        "{stats:?}"
    );

    // Every run but a job's last was on a killed worker, and the stored result is
    // the one its surviving run returned.
    let runs = stamped_runs(&url, &ns.name).await;
    let mut repeated = 0;
    for (id, value) in &results {
        let pids = runs.get(&id.to_string()).map(Vec::as_slice).unwrap_or_default();
        assert!(!pids.is_empty(), "job {id} stored {value} without a recorded run");
        let survivors: Vec<&u32> = pids.iter().filter(|pid| !killed.contains(pid)).collect();
        assert!(
            survivors.len() <= 1 || pids.len() == 1,
            "job {id} ran more than once on workers that were never killed: {pids:?}"
        );
        let writer: u32 = value.split(':').nth(1).and_then(|p| p.parse().ok()).expect("a pid");
        assert!(pids.contains(&writer), "job {id}'s result came from a run it never had");
        if pids.len() > 1 {
            repeated += 1;
        }
    }
    eprintln!(
        "storm: {} workers killed, {repeated} of {STORM_JOBS} jobs ran more than once",
        killed.len()
    );
    for worker in &mut workers {
        let status = worker.terminate().await;
        assert!(status.success(), "a worker exited with {status} after SIGTERM");
    }
}

/// The local Redis Cluster: `DMQ_CLUSTER_URL` (set by scripts/test), or the one
/// `scripts/ensure-redis-cluster` starts when none runs.
fn cluster_url() -> String {
    if let Ok(url) = std::env::var("DMQ_CLUSTER_URL") {
        return url;
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-redis-cluster");
    let out = std::process::Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(out.status.success(), "{} failed", script.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .expect("the cluster's URL")
        .trim()
        .to_owned()
}

/// Worker processes on a Redis Cluster, each claiming from three queues on three
/// slots, through a storm of SIGKILLs: every job of batches that span the queues is
/// run and its result stored, nothing is left behind, and each stored result came
/// from one of the job's own runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_storm_on_a_redis_cluster_loses_no_job_of_three_queues() {
    const JOBS: u64 = 1_200;
    let queues = ["e2e-stamp", "e2e-stamp-b", "e2e-stamp-c"];
    let url = cluster_url();
    let ns = Namespace::fresh(&url);
    let (broker, manager) = connect(&url, &ns.name).await;
    let slots: HashSet<u16> = queues
        .iter()
        .map(|q| dmq_redis::cluster_slot(Keys::new(ns.name.clone()).queue(q).signal().as_bytes()))
        .collect();
    assert_eq!(slots.len(), 3, "the queues share a slot: {slots:?}");
    let settings = Settings {
        queue: "e2e-stamp,e2e-stamp-b,e2e-stamp-c",
        concurrency: 8,
        lease: Duration::from_secs(5),
        heartbeat: Duration::from_millis(200),
    };
    let extra = ["--max-deliveries", "0"];
    let mut workers: Vec<WorkerProcess> =
        (0..3).map(|_| WorkerProcess::start_with(&url, &ns.name, settings, &extra)).collect();
    registered(&manager, &workers).await;
    // Batches of 60 that each span the three queues.
    let mut ids = Vec::new();
    for first in (0..JOBS).step_by(60) {
        let calls = (first..first + 60)
            .map(|n| stamp::call(n, 50 + (n * 7919) % 150).queue(queues[(n % 3) as usize]));
        ids.extend(manager.enqueue_batch(calls).await.expect("enqueue a batch across queues"));
    }

    let killed = storm(&mut workers, Duration::from_secs(12), Duration::from_millis(1_500), || {
        WorkerProcess::start_with(&url, &ns.name, settings, &extra)
    })
    .await;
    assert!(killed.len() >= 5, "the storm killed {} workers", killed.len());

    let mut results = HashMap::new();
    for (n, id) in ids.iter().enumerate() {
        let value = manager
            .result::<String>(*id)
            .wait(WAIT)
            .await
            .unwrap_or_else(|e| panic!("job {n} ({id}) was lost: {e}"));
        assert!(value.starts_with(&format!("{n}:")), "job {n} stored {value}");
        results.insert(*id, value);
    }
    for queue in queues {
        let stats = broker.queue_stats(queue).await.expect("stats");
        assert_eq!(
            (stats.ready, stats.delayed, stats.in_flight, stats.dead),
            (0, 0, 0, 0),
            "{queue}: {stats:?}"
        );
    }
    let runs = stamped_runs(&url, &ns.name).await;
    let mut repeated = 0;
    for (id, value) in &results {
        let pids = runs.get(&id.to_string()).map(Vec::as_slice).unwrap_or_default();
        let writer: u32 = value.split(':').nth(1).and_then(|p| p.parse().ok()).expect("a pid");
        assert!(pids.contains(&writer), "job {id}'s result came from a run it never had");
        let survivors = pids.iter().filter(|pid| !killed.contains(pid)).count();
        assert!(survivors <= 1, "job {id} ran more than once on workers never killed: {pids:?}");
        repeated += usize::from(pids.len() > 1);
    }
    eprintln!(
        "cluster storm: {} workers killed, {repeated} of {JOBS} jobs ran more than once",
        killed.len()
    );
    for worker in &mut workers {
        let status = worker.terminate().await;
        assert!(status.success(), "a worker exited with {status} after SIGTERM");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_pill_that_kills_its_worker_process_is_dead_lettered() {
    poison_pill(&redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_pill_that_kills_its_worker_process_is_dead_lettered_on_a_redis_cluster() {
    poison_pill(&cluster_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_a_backoff_wait_loses_nothing() {
    killed_during_backoff(&redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_a_backoff_wait_loses_nothing_on_a_redis_cluster() {
    killed_during_backoff(&cluster_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_enqueue_each_tick_of_a_schedule_exactly_once() {
    schedule_ticks(&redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_enqueue_each_tick_of_a_schedule_exactly_once_on_a_redis_cluster() {
    schedule_ticks(&cluster_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_stores_nothing_over_its_successors_result_on_a_redis_cluster() {
    let url = cluster_url();
    a_stalled_worker_stores_nothing_over_its_successors_result(&url, "exactly-once", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_resumed_before_its_successor_finishes_stores_nothing_on_a_redis_cluster()
{
    let url = cluster_url();
    a_stalled_worker_stores_nothing_over_its_successors_result(&url, "at-least-once", true).await;
}
