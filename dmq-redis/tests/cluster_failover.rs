//! A master of a Redis Cluster killed with SIGKILL while jobs flow: its replica takes
//! over, and the producer and the worker carry on without a restart. Redis replicates
//! asynchronously, so an enqueue the dead master confirmed but had not yet passed to its
//! replica can be lost; with `with_replicated_enqueue` (`WAIT` for one replica) none is.
//!
//! Each test starts a cluster of its own (three masters, three replicas) on free ports
//! with `scripts/ensure-redis-cluster`, and shuts it down at the end.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use dmq_core::{Manager, TaskError, task};
use dmq_redis::{Keys, RedisBackend, RedisBroker, RedisConnection, cluster_slot};

const JOBS: usize = 3_000;
const QUEUES: [&str; 6] = ["f0", "f1", "f2", "f3", "f4", "f5"];

static RUNS_PLAIN: [AtomicU32; JOBS] = [const { AtomicU32::new(0) }; JOBS];
static RUNS_MOVED: [AtomicU32; JOBS] = [const { AtomicU32::new(0) }; JOBS];

#[task(name = "failover.moved", queue = "f0")]
async fn moved(n: usize) -> Result<(), TaskError> {
    RUNS_MOVED[n].fetch_add(1, Ordering::SeqCst);
    Ok(())
}
static RUNS_REPLICATED: [AtomicU32; JOBS] = [const { AtomicU32::new(0) }; JOBS];

#[task(name = "failover.plain", queue = "f0")]
async fn plain(n: usize) -> Result<(), TaskError> {
    RUNS_PLAIN[n].fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[task(name = "failover.replicated", queue = "f0")]
async fn replicated(n: usize) -> Result<(), TaskError> {
    RUNS_REPLICATED[n].fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// A cluster of this test's own, shut down (every node, SIGKILL) when dropped.
struct PrivateCluster {
    ports: Vec<u16>,
    url: String,
}

impl PrivateCluster {
    fn start() -> Self {
        let first = free_ports();
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-redis-cluster");
        let out = Command::new(&script)
            .env("DMQ_CLUSTER_PORT", first.to_string())
            .env("DMQ_CLUSTER_REPLICAS", "1")
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(out.status.success(), "{} failed", script.display());
        let url = String::from_utf8_lossy(&out.stdout).lines().last().expect("a URL").to_owned();
        PrivateCluster { ports: (first..first + 6).collect(), url }
    }

    /// The port of the master that serves `key`'s slot.
    fn master_of(&self, key: &str) -> u16 {
        let slot = cluster_slot(key.as_bytes());
        let nodes = common::redis_cli(self.ports[0], &["cluster", "nodes"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                matches!((from.parse::<u16>(), to.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
            });
            if serves {
                let port = fields[1].split('@').next().and_then(|a| a.rsplit_once(':'));
                return port.and_then(|(_, p)| p.parse().ok()).expect("a port");
            }
        }
        panic!("no master serves slot {slot}: {nodes}");
    }

    /// Once a replica has taken over from the master on `port` (which was killed),
    /// starts that node again, as an operator would: it rejoins as the new master's
    /// replica. Runs on a thread of its own.
    fn restart_after_failover(&self, port: u16) -> std::thread::JoinHandle<()> {
        let other = *self.ports.iter().find(|p| **p != port).expect("another node");
        let dir = format!("/tmp/dmq-redis-cluster-{}", self.ports[0]);
        let me = format!("127.0.0.1:{port}@");
        let nodes = common::redis_cli(other, &["cluster", "nodes"]);
        let id = nodes
            .lines()
            .find(|l| l.contains(&me))
            .and_then(|l| l.split_whitespace().next())
            .expect("the killed node's id")
            .to_owned();
        std::thread::spawn(move || {
            // Restarting it before its replica took over would bring it back empty, as
            // the master of its slots, and its replica would copy the empty data set.
            let give_up = Instant::now() + Duration::from_secs(60);
            loop {
                let nodes = common::redis_cli(other, &["cluster", "nodes"]);
                let mine = nodes.lines().find(|l| l.contains(&me)).unwrap_or_default();
                let failed = mine
                    .split_whitespace()
                    .nth(2)
                    .is_some_and(|f| f.split(',').any(|f| f == "fail"));
                let replaced = !nodes.lines().any(|l| l.contains(&format!("slave {id}")));
                if failed && replaced {
                    break;
                }
                assert!(Instant::now() < give_up, "no failover within a minute: {nodes}");
                std::thread::sleep(Duration::from_millis(100));
            }
            let status = Command::new("redis-server")
                .args(["--daemonize", "yes", "--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                .arg(format!("nodes-{port}.conf"))
                .args(["--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no"])
                .args(["--dir", &dir, "--logfile"])
                .arg(format!("{dir}/redis-{port}.log"))
                .status()
                .expect("start redis-server");
            assert!(status.success(), "restarting the killed node");
        })
    }

    /// The id and port of each master.
    fn masters(&self) -> Vec<(String, u16)> {
        masters_at(self.ports[0])
    }

    /// The port of the replica of the master on `port`, as the master itself lists it:
    /// right after a failover another node's listing may not show the new roles yet,
    /// so this asks again for up to 30 s.
    fn replica_of(&self, port: u16) -> u16 {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let nodes = common::redis_cli(port, &["cluster", "nodes"]);
            let id = nodes
                .lines()
                .find(|l| l.contains("myself"))
                .and_then(|l| l.split_whitespace().next())
                .expect("the master's id");
            let replica = nodes.lines().find(|l| l.contains(&format!("slave {id}")));
            let address =
                replica.and_then(|r| r.split_whitespace().nth(1)).and_then(|a| a.split('@').next());
            if let Some(port) =
                address.and_then(|a| a.rsplit_once(':')).and_then(|(_, p)| p.parse().ok())
            {
                return port;
            }
            assert!(Instant::now() < give_up, "no replica of {port} in:\n{nodes}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for port in &self.ports {
            let _ = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "shutdown", "nosave"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(first) = self.ports.first() {
            let _ = std::fs::remove_dir_all(format!("/tmp/dmq-redis-cluster-{first}"));
        }
    }
}

/// The id and port of each master of the cluster the node on `port` belongs to.
fn masters_at(port: u16) -> Vec<(String, u16)> {
    let nodes = common::redis_cli(port, &["cluster", "nodes"]);
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let master = fields.get(2).is_some_and(|f| f.contains("master") && !f.contains("fail"));
            let port = fields.get(1)?.split('@').next()?.rsplit_once(':')?.1.parse().ok()?;
            master.then(|| (fields[0].to_owned(), port))
        })
        .collect()
}

/// Moves `slot` from the master on `from` to the master on `to`, keys and all, as
/// `redis-cli --cluster reshard` does: IMPORTING and MIGRATING, `MIGRATE` in pages of
/// 10 keys (slowly, so that commands meet the slot half moved and are answered `ASK`
/// or `TRYAGAIN`), then the slot assigned to its new master on every master.
fn move_slot(slot: u16, from: u16, to: u16) {
    let masters = masters_at(from);
    let id = |port: u16| {
        masters.iter().find(|(_, p)| *p == port).map(|(id, _)| id.clone()).expect("a master")
    };
    let (from_id, to_id) = (id(from), id(to));
    let slot = slot.to_string();
    let importing = common::redis_cli(to, &["cluster", "setslot", &slot, "importing", &from_id]);
    assert!(importing.contains("OK"), "IMPORTING: {importing}");
    let migrating = common::redis_cli(from, &["cluster", "setslot", &slot, "migrating", &to_id]);
    assert!(migrating.contains("OK"), "MIGRATING: {migrating}");
    let to_port = to.to_string();
    loop {
        let keys = common::redis_cli(from, &["cluster", "getkeysinslot", &slot, "10"]);
        let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            break;
        }
        let mut migrate = vec!["migrate", "127.0.0.1", &to_port, "", "0", "5000", "keys"];
        migrate.extend(keys);
        let moved = common::redis_cli(from, &migrate);
        assert!(moved.contains("OK") || moved.contains("NOKEY"), "MIGRATE: {moved}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (_, port) in &masters {
        common::redis_cli(*port, &["cluster", "setslot", &slot, "node", &to_id]);
    }
}

/// The first of six free ports whose cluster bus ports (10000 above) are free too.
fn free_ports() -> u16 {
    loop {
        let first =
            TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if first > 55_000 {
            continue;
        }
        let free = (first..first + 6)
            .flat_map(|p| [p, p + 10_000])
            .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return first;
        }
    }
}

/// What one run through a failover came to.
#[derive(Debug)]
#[allow(dead_code)] // Read through Debug, in the printed figures.
struct Figures {
    /// Enqueues that returned `Ok`.
    confirmed: usize,
    /// Enqueues that failed (while the cluster failed over), not retried.
    refused: usize,
    /// Confirmed jobs that never ran.
    lost: usize,
    /// The longest an enqueue took: the pause the failover made.
    longest_enqueue: Duration,
}

/// Enqueues `JOBS` jobs over six queues one by one while a worker of this process
/// runs them, kills the master of queue `f0` a third of the way, and counts what ran.
async fn through_a_failover(replicas: bool) -> Figures {
    let cluster = PrivateCluster::start();
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let mut broker = RedisBroker::connect_with_namespace(&cluster.url, &namespace)
        .await
        .expect("connect to the private cluster");
    if replicas {
        broker = broker.with_replicated_enqueue(1, Duration::from_millis(500));
    }
    let backend =
        RedisBackend::connect_with_namespace(&cluster.url, &namespace).await.expect("backend");
    let manager = Manager::builder().broker(broker).backend(backend).build().expect("manager");
    let worker = manager.worker().concurrency(16).queues(QUEUES).start();
    let victim = cluster.master_of(&Keys::new(namespace.clone()).queue("f0").signal());
    let runs = if replicas { &RUNS_REPLICATED } else { &RUNS_PLAIN };

    // Eight producers at once; the master of f0 is killed once a third of the jobs
    // were sent.
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let killed_at = std::sync::OnceLock::new();
    let restarted = std::sync::Mutex::new(None);
    let outcomes: Vec<(usize, Result<(), String>, Duration)> = futures::stream::iter(0..JOBS)
        .map(|n| {
            let (manager, sent, killed_at, restarted, cluster) =
                (&manager, &sent, &killed_at, &restarted, &cluster);
            async move {
                if sent.fetch_add(1, Ordering::SeqCst) == JOBS / 3 {
                    common::kill_server(victim);
                    let _ = killed_at.set(Instant::now());
                    *restarted.lock().expect("lock") = Some(cluster.restart_after_failover(victim));
                }
                let queue = QUEUES[n % QUEUES.len()];
                let started = Instant::now();
                let result = if replicas {
                    replicated::call(n).queue(queue).enqueue(manager).await.map(|_| ())
                } else {
                    plain::call(n).queue(queue).enqueue(manager).await.map(|_| ())
                };
                (n, result.map_err(|e| e.to_string()), started.elapsed())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let confirmed: Vec<usize> =
        outcomes.iter().filter(|(_, r, _)| r.is_ok()).map(|(n, _, _)| *n).collect();
    let refused = outcomes.len() - confirmed.len();
    for (n, result, _) in outcomes.iter().filter(|(_, r, _)| r.is_err()).take(3) {
        eprintln!("enqueue {n} failed during the failover: {result:?}");
    }
    let longest = outcomes.iter().map(|(_, _, took)| *took).max().unwrap_or_default();
    let restarted = restarted.into_inner().expect("lock");

    // Every confirmed job runs, but those the failover lost; none is left stuck.
    let give_up = Instant::now() + Duration::from_secs(60);
    let stuck = loop {
        let mut left = 0;
        for queue in QUEUES {
            match manager.admin().expect("admin").queue_stats(queue).await {
                Ok(s) => left += s.ready + s.delayed + s.in_flight,
                Err(_) => left += 1,
            }
        }
        let all_ran = confirmed.iter().all(|&n| runs[n].load(Ordering::SeqCst) > 0);
        if left == 0 && all_ran {
            break 0;
        }
        if Instant::now() > give_up {
            for queue in QUEUES {
                let stats = manager.admin().expect("admin").queue_stats(queue).await;
                eprintln!("{queue}: {stats:?}");
            }
            let never: Vec<&usize> = confirmed
                .iter()
                .filter(|&&n| runs[n].load(Ordering::SeqCst) == 0)
                .take(10)
                .collect();
            eprintln!("confirmed, never ran: {never:?}");
            break left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    worker.shutdown().await;
    restarted.expect("the victim was killed").join().expect("the victim restarted");
    assert_eq!(stuck, 0, "jobs left in the queues two minutes after the failover");
    let lost = confirmed.iter().filter(|&&n| runs[n].load(Ordering::SeqCst) == 0).count();
    let _ = dmq_redis::delete_namespace_at(&cluster.url, &Keys::new(namespace)).await;
    Figures { confirmed: confirmed.len(), refused, lost, longest_enqueue: longest }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_flow_fails_over_and_the_worker_carries_on() {
    let figures = through_a_failover(false).await;
    eprintln!("failover without WAIT: {figures:?}");
    assert!(figures.confirmed > JOBS / 2, "{figures:?}");
    assert!(figures.longest_enqueue < Duration::from_secs(30), "{figures:?}");
    // Redis replicates asynchronously: the jobs the dead master confirmed in its last
    // moments may be gone. What is measured here goes to the README.
    assert!(figures.lost < JOBS / 10, "{figures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replicated_enqueue_a_failover_loses_no_confirmed_job() {
    let figures = through_a_failover(true).await;
    eprintln!("failover with WAIT for one replica: {figures:?}");
    assert!(figures.confirmed > JOBS / 2, "{figures:?}");
    assert_eq!(figures.lost, 0, "confirmed jobs lost: {figures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_enqueue_is_confirmed_on_a_healthy_cluster() {
    // Not a failover: on the shared local cluster, whose masters each have a replica,
    // a replicated enqueue is confirmed, and the job is there.
    let url = common::cluster_url();
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let _cleanup = common::Cleanup::at(&url, &namespace);
    let broker = RedisBroker::connect_with_namespace(&url, &namespace)
        .await
        .expect("connect")
        .with_replicated_enqueue(1, Duration::from_secs(2));
    let manager = Manager::builder().broker(broker).build().expect("manager");
    let handle = plain::call(0).queue("f3").enqueue(&manager).await.expect("a replicated enqueue");
    let mut conn = RedisConnection::open(&url).await.expect("connect");
    let held: bool = redis::cmd("HEXISTS")
        .arg(Keys::new(namespace.clone()).queue("f3").payloads())
        .arg(handle.id().to_string())
        .query_async(&mut conn)
        .await
        .expect("hexists");
    assert!(held);
}

/// A planned failover (`CLUSTER FAILOVER` on the replica) leaves the old master up, as
/// a replica: the result subscription on it is ended by the server, and a waiting
/// caller must still hear of results stored afterwards, not wait out its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_waiters_hear_results_after_a_planned_failover() {
    use dmq_core::{ResultBackend, TaskId, TaskOutcome};
    let cluster = PrivateCluster::start();
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let keys = Keys::new(namespace.clone());
    let backend = std::sync::Arc::new(
        RedisBackend::connect_with_namespace(&cluster.url, &namespace).await.expect("backend"),
    );
    let store_later = |id: TaskId| {
        let backend = std::sync::Arc::clone(&backend);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let outcome = TaskOutcome::succeeded(vec![0xc0], 1, chrono::Utc::now());
            backend.store(id, &outcome, Duration::from_secs(60)).await.expect("store");
        })
    };
    let waited = |id: TaskId| {
        let backend = std::sync::Arc::clone(&backend);
        async move {
            let started = Instant::now();
            let found = backend.wait(id, Duration::from_secs(20)).await.expect("wait");
            assert!(found.is_some(), "no result");
            started.elapsed()
        }
    };
    let id = TaskId::new();
    let storing = store_later(id);
    assert!(waited(id).await < Duration::from_secs(5), "before the failover");
    storing.await.expect("stored");

    for round in 0..2 {
        let master = cluster.master_of(&keys.results_channel());
        let replica = cluster.replica_of(master);
        // A replica takes over only once it is in sync (after the last round, the old
        // master is syncing as the new one's replica).
        let give_up = Instant::now() + Duration::from_secs(30);
        while !common::redis_cli(replica, &["info", "replication"])
            .contains("master_link_status:up")
        {
            assert!(Instant::now() < give_up, "the replica did not sync");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Asked again when it times out: right after a failover the cluster's nodes may
        // not all know the new roles yet, and a manual failover then times out.
        let give_up = Instant::now() + Duration::from_secs(60);
        'failover: loop {
            assert!(
                common::redis_cli(replica, &["cluster", "failover"]).contains("OK"),
                "CLUSTER FAILOVER"
            );
            let attempt_ends = Instant::now() + Duration::from_secs(7);
            while Instant::now() < attempt_ends {
                if common::redis_cli(replica, &["role"]).starts_with("master") {
                    break 'failover;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(Instant::now() < give_up, "the replica did not take over");
        }
        let id = TaskId::new();
        let storing = store_later(id);
        let took = waited(id).await;
        storing.await.expect("stored");
        assert!(took < Duration::from_secs(10), "after failover {round}: the wait took {took:?}");
    }
    let _ = dmq_redis::delete_namespace_at(&cluster.url, &keys).await;
}

/// `WAIT` holds the connection it is sent on until the replicas confirm or its timeout
/// passes: a replicated enqueue waiting for replicas that are not there must hold up
/// neither the other enqueues nor the broker's other commands. On the local Redis,
/// which has no replica, so every such enqueue waits out its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_enqueue_waiting_for_absent_replicas_holds_up_nothing_else() {
    use dmq_core::{Broker, BrokerAdmin, Error, Job, TaskId};
    let url = common::redis_url();
    let namespace = common::fresh_namespace();
    let _cleanup = common::Cleanup::of(&namespace);
    let broker = std::sync::Arc::new(
        RedisBroker::connect_with_namespace(&url, &namespace)
            .await
            .expect("connect")
            .with_replicated_enqueue(1, Duration::from_secs(1)),
    );
    let enqueues: Vec<_> = (0..4)
        .map(|_| {
            let broker = std::sync::Arc::clone(&broker);
            tokio::spawn(async move {
                let started = Instant::now();
                let job = Job::new(TaskId::new(), "w", 5, None, vec![0x90]);
                (broker.enqueue(job).await, started.elapsed())
            })
        })
        .collect();
    // Timed once a WAIT is pending on the server (CLIENT LIST shows its command).
    let mut conn = RedisConnection::open(&url).await.expect("connect");
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let clients: String =
            redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await.expect("CLIENT LIST");
        if clients.lines().any(|client| client.contains(" cmd=wait ")) {
            break;
        }
        assert!(Instant::now() < give_up, "no WAIT ever pending:\n{clients}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    broker.queue_stats("other").await.expect("queue figures");
    let other = started.elapsed();
    for enqueue in enqueues {
        let (result, took) = enqueue.await.expect("joined");
        match result {
            Err(e @ Error::Backend { .. }) => {
                assert!(e.is_transient() && e.to_string().contains("0 confirmed"), "{e}");
            }
            other => panic!("expected a replica error, got {other:?}"),
        }
        assert!(took < Duration::from_secs(3), "an enqueue waited behind the others: {took:?}");
    }
    assert!(other < Duration::from_millis(900), "a command waited behind WAIT: {other:?}");
}

/// A queue's slot moved to another master while jobs flow (a resharding): commands
/// meet the slot half moved (`ASK`, `TRYAGAIN`) and then moved (`MOVED`); the client
/// follows, and no job is lost or left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_whose_slot_moves_mid_flow_loses_no_job() {
    let cluster = PrivateCluster::start();
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let keys = Keys::new(namespace.clone());
    let broker =
        RedisBroker::connect_with_namespace(&cluster.url, &namespace).await.expect("connect");
    let backend =
        RedisBackend::connect_with_namespace(&cluster.url, &namespace).await.expect("backend");
    let manager = Manager::builder().broker(broker).backend(backend).build().expect("manager");
    let worker = manager.worker().concurrency(8).queues(["f0"]).start();
    let signal = keys.queue("f0").signal();
    let slot = cluster_slot(signal.as_bytes());
    let from = cluster.master_of(&signal);
    let to =
        cluster.masters().into_iter().map(|(_, p)| p).find(|p| *p != from).expect("another master");

    // The slot moves, in a thread of its own, while jobs flow in.
    let started = Instant::now();
    let mover = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(300));
        move_slot(slot, from, to);
        started.elapsed()
    });
    let mut confirmed = Vec::new();
    let mut refused = 0;
    for n in 0..JOBS / 3 {
        match moved::call(n).enqueue(&manager).await {
            Ok(handle) => confirmed.push((n, handle)),
            Err(e) => {
                refused += 1;
                eprintln!("enqueue {n} refused while the slot moved: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = mover.await.expect("the slot moved");
    assert_eq!(cluster.master_of(&signal), to, "the slot is on its new master");
    let give_up = Instant::now() + Duration::from_secs(60);
    while !confirmed.iter().all(|(n, _)| RUNS_MOVED[*n].load(Ordering::SeqCst) > 0) {
        assert!(Instant::now() < give_up, "confirmed jobs never ran after the slot moved");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = manager.admin().expect("admin").queue_stats("f0").await.expect("stats");
    worker.shutdown().await;
    assert_eq!((stats.ready, stats.delayed, stats.in_flight), (0, 0, 0), "{stats:?}");
    eprintln!(
        "slot {slot} moved from {from} to {to} in {took:?}: {} confirmed, {refused} refused, none lost",
        confirmed.len()
    );
    assert!(refused < JOBS / 30, "{refused} of {} enqueues refused", JOBS / 3);
    let _ = dmq_redis::delete_namespace_at(&cluster.url, &keys).await;
}
