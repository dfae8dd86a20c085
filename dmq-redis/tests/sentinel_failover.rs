//! Redis Sentinel: a broker and a backend on `redis+sentinel://` find the master
//! through the sentinels, and follow a failover: the master is killed with SIGKILL
//! while jobs flow, the sentinels promote its replica, and the producer, the worker and
//! a caller waiting for a result carry on without a restart.
//!
//! The test starts its own master, replica and three sentinels on free ports (in a
//! temporary directory), and shuts them all down at the end.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dmq_core::{Manager, TaskError, task};
use dmq_redis::{Keys, RedisBackend, RedisBroker};
use futures::StreamExt;

const JOBS: usize = 2_000;
const QUEUES: [&str; 2] = ["s0", "s1"];

static RUNS: [AtomicU32; JOBS] = [const { AtomicU32::new(0) }; JOBS];

#[task(name = "sentinel.count", queue = "s0")]
async fn count(n: usize) -> Result<usize, TaskError> {
    RUNS[n].fetch_add(1, Ordering::SeqCst);
    Ok(n)
}

/// A master, its replica and three sentinels of this test's own; all shut down, and
/// their directory removed, when dropped.
struct PrivateSentinels {
    master: u16,
    replica: u16,
    sentinels: [u16; 3],
    dir: PathBuf,
}

impl PrivateSentinels {
    fn start() -> Self {
        let [master, replica, s1, s2, s3] = free_ports();
        let dir = std::env::temp_dir().join(format!("dmq-sentinel-{master}"));
        std::fs::create_dir_all(&dir).expect("a directory for the servers");
        let set = PrivateSentinels { master, replica, sentinels: [s1, s2, s3], dir };
        set.start_server(master, None);
        set.start_server(replica, Some(master));
        wait("the replica to sync", || {
            common::redis_cli(replica, &["info", "replication"]).contains("master_link_status:up")
        });
        for port in set.sentinels {
            let conf = set.dir.join(format!("sentinel-{port}.conf"));
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndaemonize yes\ndir {dir}\nlogfile {dir}/sentinel-{port}.log\n\
                 sentinel monitor mymaster 127.0.0.1 {master} 2\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n",
                dir = set.dir.display()
            );
            std::fs::write(&conf, text).expect("write a sentinel's configuration");
            let status = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .status()
                .expect("start a sentinel (redis-server --sentinel)");
            assert!(status.success(), "starting sentinel {port}");
        }
        for port in set.sentinels {
            wait("each sentinel to know the replica and the other sentinels", || {
                let info = common::redis_cli(port, &["sentinel", "master", "mymaster"]);
                let field = |name: &str| {
                    let lines: Vec<&str> = info.lines().collect();
                    lines.iter().position(|l| *l == name).and_then(|i| lines.get(i + 1)).copied()
                };
                field("num-slaves") == Some("1") && field("num-other-sentinels") == Some("2")
            });
        }
        set
    }

    fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+sentinel://{}/mymaster", hosts.join(","))
    }

    fn start_server(&self, port: u16, replica_of: Option<u16>) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--daemonize", "yes", "--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join(format!("redis-{port}.log")));
        if let Some(master) = replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        assert!(cmd.status().expect("start redis-server").success(), "starting redis {port}");
        wait("redis-server to answer", || common::redis_cli(port, &["ping"]).contains("PONG"));
    }

    /// The port of the master the sentinels name now.
    fn named_master(&self) -> Option<u16> {
        let addr = common::redis_cli(
            self.sentinels[0],
            &["sentinel", "get-master-addr-by-name", "mymaster"],
        );
        addr.lines().nth(1).and_then(|p| p.trim().parse().ok())
    }
}

impl Drop for PrivateSentinels {
    fn drop(&mut self) {
        for port in [self.master, self.replica].into_iter().chain(self.sentinels) {
            let _ = Command::new("redis-cli")
                .args(["-p", &port.to_string(), "shutdown", "nosave"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits up to a minute for `done`, checking every 100 ms.
fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < give_up, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Five distinct free ports.
fn free_ports() -> [u16; 5] {
    let listeners: Vec<TcpListener> =
        (0..5).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().expect("addr").port()).collect();
    [ports[0], ports[1], ports[2], ports[3], ports[4]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_follows_a_sentinel_failover_without_a_restart() {
    let set = PrivateSentinels::start();
    let url = set.url();
    let namespace = common::fresh_namespace();
    let broker = RedisBroker::connect_with_namespace(&url, &namespace).await.expect("connect");
    let backend = RedisBackend::connect_with_namespace(&url, &namespace).await.expect("backend");
    let manager = Manager::builder().broker(broker).backend(backend).build().expect("manager");
    let worker = manager.worker().concurrency(16).queues(QUEUES).start();

    // A caller waits for a result from before the failover to after it.
    let late = count::call(JOBS - 1).delay(Duration::from_secs(12)).enqueue(&manager).await;
    let late = late.expect("enqueue the late job");

    let sent = AtomicUsize::new(0);
    let killed_at = std::sync::OnceLock::new();
    let outcomes: Vec<(usize, bool, Duration)> = futures::stream::iter(0..JOBS - 1)
        .map(|n| {
            let (manager, sent, killed_at, set) = (&manager, &sent, &killed_at, &set);
            async move {
                if sent.fetch_add(1, Ordering::SeqCst) == JOBS / 3 {
                    common::kill_server(set.master);
                    let _ = killed_at.set(Instant::now());
                }
                let started = Instant::now();
                let queue = QUEUES[n % QUEUES.len()];
                let sent = count::call(n).queue(queue).enqueue(manager).await;
                // Pace the producers, so that the flow spans the failover.
                tokio::time::sleep(Duration::from_millis(10)).await;
                (n, sent.is_ok(), started.elapsed())
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    assert_eq!(set.named_master(), Some(set.replica), "the sentinels promoted the replica");
    let confirmed: Vec<usize> = outcomes.iter().filter(|o| o.1).map(|o| o.0).collect();
    let refused = outcomes.len() - confirmed.len();
    let longest = outcomes.iter().map(|o| o.2).max().unwrap_or_default();

    // The caller waiting across the failover gets its result.
    let value = late.result(Duration::from_secs(120)).await.expect("the late job's result");
    assert_eq!(value, JOBS - 1);
    // Every confirmed job runs but those the failover lost (Redis replicates
    // asynchronously); none is left stuck.
    let give_up = Instant::now() + Duration::from_secs(60);
    let admin = manager.admin().expect("admin");
    let stuck = loop {
        let mut left = 0;
        for queue in QUEUES {
            let stats = admin.queue_stats(queue).await.expect("queue figures");
            left += stats.ready + stats.delayed + stats.in_flight;
        }
        let all_ran = confirmed.iter().all(|&n| RUNS[n].load(Ordering::SeqCst) > 0);
        if (left == 0 && all_ran) || Instant::now() >= give_up {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stuck, 0, "jobs left in the queues a minute after the failover");
    worker.shutdown().await;
    let lost = confirmed.iter().filter(|&&n| RUNS[n].load(Ordering::SeqCst) == 0).count();
    assert!(lost < JOBS / 10, "{lost} confirmed jobs lost");
    eprintln!(
        "sentinel failover: {} confirmed, {refused} refused, {lost} lost, longest enqueue {longest:?}",
        confirmed.len()
    );
    assert!(confirmed.len() > JOBS / 2, "most enqueues went through");
    let _ = dmq_redis::delete_namespace_at(&url, &Keys::new(namespace)).await;
}
