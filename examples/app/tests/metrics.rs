//! `app worker --metrics-addr` as a real process: `/metrics` parses as Prometheus
//! text and counts exactly the jobs it ran; `/health` turns 503 when its Redis stops,
//! or when every claim fails for a few seconds (a broken key), and 200 again when
//! Redis is back or the key repaired.
//!
//! The metrics test needs the Redis at `REDIS_URL` (default redis://127.0.0.1:6379)
//! and works in a fresh namespace it deletes afterwards, also when it fails. The
//! health test starts and stops a `redis-server` of its own on a free port: it never
//! touches the shared Redis.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use dmq_core::{Call, Manager, TaskId};
use dmq_redis::{Keys, RedisBackend, RedisBroker};
use prometheus_parse::{LineInfo, Scrape, Value};

const WAIT: Duration = Duration::from_secs(60);

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// An `app worker` process serving its metrics on a port the system picked; killed
/// on drop, if it still runs.
struct Worker {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
}

impl Worker {
    /// Starts `app worker` on `url` in `namespace`, with `extra` options, and waits
    /// until it says where it serves its metrics.
    fn start(url: &str, namespace: &str, extra: &[&str]) -> Worker {
        let log = std::env::temp_dir().join(format!("{namespace}-metrics.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_app"))
            .args(["worker", "--broker", url, "--namespace", namespace])
            .args(["--metrics-addr", "127.0.0.1:0", "--no-scheduler", "--grace", "5s"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("a log file"))
            .spawn()
            .expect("start app worker");
        let mut worker = Worker { child, log, addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
        let deadline = Instant::now() + WAIT;
        worker.addr = loop {
            let logged = worker.logged();
            let served = logged.split("serving metrics at http://").nth(1);
            if let Some(addr) = served.and_then(|rest| rest.split('/').next()?.parse().ok()) {
                break addr;
            }
            if let Ok(Some(status)) = worker.child.try_wait() {
                panic!("app worker exited with {status}; it logged:\n{logged}");
            }
            assert!(Instant::now() < deadline, "the worker never served its metrics:\n{logged}");
            std::thread::sleep(Duration::from_millis(50));
        };
        worker
    }

    fn logged(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` on the worker's endpoint.
    fn get(&self, path: &str) -> Response {
        get(self.addr, path).unwrap_or_else(|e| {
            panic!("GET {path} failed: {e}; the worker logged:\n{}", self.logged())
        })
    }

    /// Polls `GET path` until `done` holds for the response; the last response.
    fn get_until(
        &self,
        path: &str,
        within: Duration,
        done: impl Fn(&Response) -> bool,
    ) -> Response {
        let deadline = Instant::now() + within;
        loop {
            let response = self.get(path);
            if done(&response) || Instant::now() >= deadline {
                return response;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends SIGTERM and waits for the process to exit; whether it exited 0.
    fn stop(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        assert!(sent.success());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.success();
            }
            assert!(Instant::now() < deadline, "the worker did not stop:\n{}", self.logged());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    /// A test that failed leaves it running: SIGTERM first, so that a supervisor
    /// stops its worker processes too, then SIGKILL if it takes more than 10 s.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// An HTTP response: status, content type and body.
#[derive(Debug)]
struct Response {
    status: u16,
    content_type: String,
    body: String,
}

/// A plain HTTP/1.1 GET, one request per connection.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let bad = || std::io::Error::other(format!("not an HTTP response: {raw:?}"));
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type").then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    Ok(Response { status, content_type, body: body.to_owned() })
}

/// A scrape, parsed; every line must be a comment, a sample or empty.
fn parse(text: &str) -> Scrape {
    for line in text.lines() {
        assert!(
            !matches!(LineInfo::parse(line), LineInfo::Ignored),
            "not Prometheus text: {line:?} in\n{text}"
        );
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses")
}

/// The values of `metric`'s samples by their labels (`name=value` joined with `,`,
/// sorted), and whether each was typed a counter.
fn series(scrape: &Scrape, metric: &str) -> BTreeMap<String, (f64, bool)> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter_map(|s| {
            let (value, counter) = match s.value {
                Value::Counter(v) => (v, true),
                Value::Gauge(v) | Value::Untyped(v) => (v, false),
                _ => return None,
            };
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            Some((labels.join(","), (value, counter)))
        })
        .collect()
}

/// The value of `metric` with exactly `labels` (sorted `name=value`, comma joined),
/// which must be a counter when `counter`.
fn value(scrape: &Scrape, metric: &str, labels: &str, counter: bool) -> Option<f64> {
    let (value, is_counter) = *series(scrape, metric).get(labels)?;
    assert_eq!(is_counter, counter, "{metric}{{{labels}}} typed a counter: {is_counter}");
    Some(value)
}

fn sum(scrape: &Scrape, metric: &str) -> f64 {
    series(scrape, metric).values().map(|(v, _)| v).sum()
}

async fn remove_namespace(url: &str, namespace: &str) {
    let client = redis::Client::open(url).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
    dmq_redis::delete_namespace(&mut conn, &Keys::new(namespace)).await.expect("delete keys");
}

/// Deletes a namespace of the shared Redis on drop.
struct Namespace {
    rt: tokio::runtime::Runtime,
    name: String,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        self.rt.block_on(remove_namespace(&redis_url(), &self.name));
    }
}

/// A known mix of jobs, and `/metrics` counting exactly them: 20 `add`s; 3 `flaky`s
/// that fail twice each before they succeed; 3 `emails.send`, 2 of which fail
/// fatally and are dead-lettered; a job of a task the worker does not know; an
/// expired `add`.
#[test]
fn metrics_count_the_jobs_the_worker_ran() {
    let url = redis_url();
    let ns = Namespace {
        rt: tokio::runtime::Runtime::new().expect("a runtime"),
        name: format!("dmq-test-{}", uuid::Uuid::new_v4()),
    };
    let worker = Worker::start(&url, &ns.name, &["--concurrency", "8"]);

    // Before any job: the worker's gauges are there, and no job is counted.
    let before = worker.get("/metrics");
    assert_eq!(before.status, 200);
    assert_eq!(before.content_type, "text/plain; version=0.0.4");
    let scrape = parse(&before.body);
    assert_eq!(value(&scrape, "dmq_worker_concurrency", "", false), Some(8.0), "{}", before.body);
    assert_eq!(sum(&scrape, "dmq_jobs_total"), 0.0);

    let ids: Vec<TaskId> = ns.rt.block_on(async {
        let broker = RedisBroker::connect_with_namespace(&url, &ns.name).await.expect("redis");
        let backend = RedisBackend::connect_with_namespace(&url, &ns.name).await.expect("redis");
        let manager = Manager::builder().broker(broker).backend(backend).build().expect("manager");
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(app::add::call(i, 1).enqueue(&manager).await.expect("enqueue").id());
        }
        for _ in 0..3 {
            ids.push(app::flaky::call().enqueue(&manager).await.expect("enqueue").id());
        }
        for to in ["ada@example.org", "not an address", "nor this"] {
            let call = app::send_email::call(to.to_owned(), "hi".to_owned());
            ids.push(call.enqueue(&manager).await.expect("enqueue").id());
        }
        let unknown = Call::<()>::new("metrics.test.no_such_task", "math", &());
        ids.push(unknown.enqueue(&manager).await.expect("enqueue").id());
        let expired = app::add::call(1, 1).expires_at(Utc::now() - chrono::Duration::hours(1));
        ids.push(expired.enqueue(&manager).await.expect("enqueue").id());
        // Every job ends with a stored outcome: a value, a failure, or expired.
        for id in &ids {
            let deadline = Instant::now() + WAIT;
            while manager.result::<()>(*id).outcome().await.expect("reads").is_none() {
                assert!(Instant::now() < deadline, "job {id} never ended");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        ids
    });
    assert_eq!(ids.len(), 28);

    // The events of a job may be counted a moment after its outcome is stored.
    let response = worker.get_until("/metrics", WAIT, |r| {
        let scrape = parse(&r.body);
        sum(&scrape, "dmq_jobs_total") >= 28.0
            && sum(&scrape, "dmq_dead_letters_total") >= 4.0
            && series(&scrape, "dmq_queue_depth")
                .iter()
                .all(|(labels, (v, _))| !labels.contains("in_flight") || *v == 0.0)
    });
    assert_eq!(response.status, 200);
    let text = &response.body;
    let scrape = parse(text);
    let counter = |metric: &str, labels: &str| value(&scrape, metric, labels, true);
    let gauge = |metric: &str, labels: &str| value(&scrape, metric, labels, false);

    let jobs = |outcome: &str, queue: &str, task: &str| {
        counter("dmq_jobs_total", &format!("outcome={outcome},queue={queue},task={task}"))
    };
    assert_eq!(jobs("completed", "math", "add"), Some(20.0), "{text}");
    assert_eq!(jobs("expired", "math", "add"), Some(1.0), "{text}");
    assert_eq!(jobs("completed", "default", "flaky"), Some(3.0), "{text}");
    assert_eq!(jobs("completed", "emails", "emails.send"), Some(1.0), "{text}");
    assert_eq!(jobs("failed", "emails", "emails.send"), Some(2.0), "{text}");
    assert_eq!(jobs("not_found", "math", "metrics.test.no_such_task"), Some(1.0), "{text}");
    assert_eq!(sum(&scrape, "dmq_jobs_total"), 28.0, "each job counted once:\n{text}");

    let per_task = |metric: &str, queue: &str, task: &str| {
        counter(metric, &format!("queue={queue},task={task}"))
    };
    assert_eq!(per_task("dmq_jobs_started_total", "math", "add"), Some(20.0), "{text}");
    assert_eq!(per_task("dmq_jobs_started_total", "default", "flaky"), Some(9.0), "{text}");
    assert_eq!(per_task("dmq_jobs_started_total", "emails", "emails.send"), Some(3.0), "{text}");
    assert_eq!(per_task("dmq_retries_total", "default", "flaky"), Some(6.0), "{text}");
    assert_eq!(sum(&scrape, "dmq_retries_total"), 6.0, "{text}");
    assert_eq!(per_task("dmq_dead_letters_total", "emails", "emails.send"), Some(2.0), "{text}");
    assert_eq!(per_task("dmq_dead_letters_total", "math", "add"), Some(1.0), "{text}");
    let nope = per_task("dmq_dead_letters_total", "math", "metrics.test.no_such_task");
    assert_eq!(nope, Some(1.0), "{text}");
    assert_eq!(sum(&scrape, "dmq_dead_letters_total"), 4.0, "{text}");
    // The worker enqueued nothing itself: the test did.
    assert_eq!(sum(&scrape, "dmq_jobs_enqueued_total"), 0.0, "{text}");

    // One run-time observation per run: completed, retried or failed.
    let runs = |queue: &str, task: &str| {
        gauge("dmq_job_run_seconds_count", &format!("queue={queue},task={task}"))
    };
    assert_eq!(runs("math", "add"), Some(20.0), "{text}");
    // Each flaky job failed twice (the 6 retries) before it completed.
    assert_eq!(runs("default", "flaky"), Some(9.0), "{text}");
    assert_eq!(runs("emails", "emails.send"), Some(3.0), "{text}");
    let buckets = scrape
        .samples
        .iter()
        .find(|s| s.metric == "dmq_job_run_seconds" && s.labels.get("task") == Some("emails.send"));
    let Some(Value::Histogram(buckets)) = buckets.map(|s| &s.value) else {
        panic!("no run-time histogram of emails.send:\n{text}");
    };
    let all = buckets.iter().find(|b| b.less_than.is_infinite()).map(|b| b.count);
    assert_eq!(all, Some(3.0), "{text}");
    // emails.send sleeps 20 ms when it sends: one run took at least that.
    // The run that slept cannot be in the 10 ms bucket (the fatal ones usually are).
    let quick = buckets.iter().find(|b| b.less_than == 0.01).map(|b| b.count);
    assert!(quick.is_some_and(|n| n <= 2.0), "the 20 ms run counted within 10 ms:\n{text}");

    // Queue depths, read from Redis at the scrape.
    let depth = |queue: &str, state: &str| {
        gauge("dmq_queue_depth", &format!("queue={queue},state={state}"))
    };
    assert_eq!(depth("emails", "dead"), Some(2.0), "{text}");
    assert_eq!(depth("math", "dead"), Some(2.0), "{text}");
    for queue in ["math", "emails", "default", "slow"] {
        assert_eq!(depth(queue, "ready"), Some(0.0), "{queue}: {text}");
        assert_eq!(depth(queue, "delayed"), Some(0.0), "{queue}: {text}");
        assert_eq!(depth(queue, "in_flight"), Some(0.0), "{queue}: {text}");
    }
    assert_eq!(gauge("dmq_jobs_in_flight", ""), Some(0.0), "{text}");
    assert_eq!(gauge("dmq_broker_up", ""), Some(1.0), "{text}");
    assert_eq!(counter("dmq_broker_errors_total", "operation=claim"), Some(0.0), "{text}");
    assert_eq!(sum(&scrape, "dmq_broker_errors_total"), 0.0, "{text}");
    assert_eq!(gauge("dmq_worker_loop_alive", "loop=claim"), Some(1.0), "{text}");
    assert_eq!(gauge("dmq_worker_loop_alive", "loop=heartbeat"), Some(1.0), "{text}");
    assert_eq!(counter("dmq_events_dropped_total", "listener=event-stream"), Some(0.0), "{text}");

    // Anything but /metrics and /health is not found.
    assert_eq!(worker.get("/").status, 404);
    assert_eq!(worker.get("/metrics/x").status, 404);
    let mut worker = worker;
    assert!(worker.stop(), "the worker exits 0 on SIGTERM:\n{}", worker.logged());
    let logged = worker.logged();
    assert!(logged.contains("stopped"), "{logged}");
}

/// A `redis-server` of this test's own on a free port, killed on drop.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = OwnRedis { port, child: None };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and waits until it answers.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/ensure-redis installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            let pong = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server on {} never answered", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `/health` is 200 while the worker reaches its Redis, 503 (saying the broker is
/// unreachable) within seconds of that Redis stopping, and 200 again once it is
/// back; meanwhile `/metrics` still answers, with the broker marked down.
#[test]
fn health_follows_the_broker_down_and_back_up() {
    let mut redis = OwnRedis::start();
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let mut worker = Worker::start(&redis.url(), &namespace, &[]);

    let up = worker.get_until("/health", WAIT, |r| r.status == 200);
    assert_eq!(up.status, 200, "{}", up.body);
    assert!(up.body.starts_with("ok\nbroker: ok"), "{}", up.body);
    assert!(up.body.contains("claim loop: alive"), "{}", up.body);

    redis.stop();
    let started = Instant::now();
    let down = worker.get_until("/health", WAIT, |r| r.status == 503);
    assert_eq!(down.status, 503, "{}", down.body);
    assert!(down.body.contains("broker: unreachable"), "{}", down.body);
    assert!(started.elapsed() < Duration::from_secs(30), "503 came after {:?}", started.elapsed());
    // The scrape still works, and says the broker is down.
    let metrics = worker.get("/metrics");
    assert_eq!(metrics.status, 200);
    let scrape = parse(&metrics.body);
    assert_eq!(value(&scrape, "dmq_broker_up", "", false), Some(0.0), "{}", metrics.body);
    let failed_reads = value(&scrape, "dmq_broker_errors_total", "operation=queue_stats", true);
    assert!(failed_reads.is_some_and(|n| n >= 1.0), "{}", metrics.body);
    assert!(!metrics.body.contains("dmq_queue_depth{"), "{}", metrics.body);

    redis.restart();
    let back = worker.get_until("/health", WAIT, |r| r.status == 200);
    assert_eq!(back.status, 200, "{}\nthe worker logged:\n{}", back.body, worker.logged());
    assert!(back.body.starts_with("ok\nbroker: ok"), "{}", back.body);
    let scrape = parse(&worker.get("/metrics").body);
    assert_eq!(value(&scrape, "dmq_broker_up", "", false), Some(1.0));
    assert!(sum(&scrape, "dmq_broker_errors_total") >= 1.0);

    assert!(worker.stop(), "the worker exits 0 on SIGTERM:\n{}", worker.logged());
}

/// `/health` turns 503 once every claim has failed for over `CLAIMS_FAILING_LIMIT`
/// while the broker still answers PING, saying what fails, and 200 again once claims
/// succeed: a key of the wrong type in the worker's queue (written by another
/// program) makes each claim fail.
#[test]
fn health_says_the_claim_loop_is_failing_while_every_claim_fails() {
    let url = redis_url();
    let ns = Namespace {
        rt: tokio::runtime::Runtime::new().expect("a runtime"),
        name: format!("dmq-test-{}", uuid::Uuid::new_v4()),
    };
    let mut worker = Worker::start(&url, &ns.name, &["--queues", "math"]);
    let up = worker.get_until("/health", WAIT, |r| r.status == 200);
    assert_eq!(up.status, 200, "{}", up.body);
    assert!(up.body.contains("claim loop: alive"), "{}", up.body);

    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut conn = client.get_connection().expect("connect to redis");
    let broken = Keys::new(ns.name.as_str()).queue("math").ready(5);
    redis::cmd("SET").arg(&broken).arg("not a list").query::<()>(&mut conn).expect("SET");
    let started = Instant::now();
    let down = worker.get_until("/health", WAIT, |r| r.status == 503);
    let after = started.elapsed();
    assert_eq!(down.status, 503, "{}\nthe worker logged:\n{}", down.body, worker.logged());
    // The broker answers: the claims fail, and the report says how.
    assert!(down.body.starts_with("unhealthy\nbroker: ok\n"), "{}", down.body);
    let claim = down.body.lines().find(|l| l.starts_with("claim loop: ")).expect("a claim line");
    assert!(claim.starts_with("claim loop: failing for "), "{}", down.body);
    assert!(claim.contains("WRONGTYPE"), "names the error: {}", down.body);
    assert!(
        after >= dmq_core::CLAIMS_FAILING_LIMIT && after < Duration::from_secs(30),
        "503 came after {after:?}"
    );

    redis::cmd("DEL").arg(&broken).query::<()>(&mut conn).expect("DEL");
    let back = worker.get_until("/health", WAIT, |r| r.status == 200);
    assert_eq!(back.status, 200, "{}\nthe worker logged:\n{}", back.body, worker.logged());
    assert!(back.body.contains("claim loop: alive"), "{}", back.body);
    assert!(!back.body.contains("failing"), "{}", back.body);
    assert!(worker.stop(), "the worker exits 0 on SIGTERM:\n{}", worker.logged());
}

/// Two consecutive free ports on 127.0.0.1 (free when looked at).
fn two_free_ports() -> u16 {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = first.local_addr().expect("its address").port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free ports");
}

/// `worker --tasks app --workers 2 --metrics-addr 127.0.0.1:P`: the first process
/// serves on P, the second on P+1, each its own worker.
#[test]
fn supervised_workers_serve_on_consecutive_ports() {
    let url = redis_url();
    let ns = Namespace {
        rt: tokio::runtime::Runtime::new().expect("a runtime"),
        name: format!("dmq-test-{}", uuid::Uuid::new_v4()),
    };
    let port = two_free_ports();
    let app = env!("CARGO_BIN_EXE_app");
    let log = std::env::temp_dir().join(format!("{}-supervisor.log", ns.name));
    let supervisor = Command::new(app)
        .args(["worker", "--tasks", app, "--workers", "2", "--broker", &url])
        .args(["--namespace", &ns.name, "--grace", "5s", "--no-scheduler"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log file"))
        .spawn()
        .expect("start the supervisor");
    let mut supervisor =
        Worker { child: supervisor, log, addr: SocketAddr::from(([127, 0, 0, 1], port)) };

    for p in [port, port + 1] {
        let addr = SocketAddr::from(([127, 0, 0, 1], p));
        let deadline = Instant::now() + WAIT;
        let health = loop {
            match get(addr, "/health") {
                Ok(r) if r.status == 200 => break r,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                other => panic!("{addr}/health: {other:?}; logged:\n{}", supervisor.logged()),
            }
        };
        assert!(health.body.contains("broker: ok"), "{}", health.body);
        let metrics = get(addr, "/metrics").expect("scrapes");
        let scrape = parse(&metrics.body);
        assert_eq!(value(&scrape, "dmq_worker_concurrency", "", false), Some(10.0));
    }
    // Nothing listens past the last process's port.
    let past = get(SocketAddr::from(([127, 0, 0, 1], port + 2)), "/health");
    assert!(past.is_err(), "{past:?}");
    assert!(supervisor.stop(), "the supervisor exits 0:\n{}", supervisor.logged());
}

/// A metrics address in use is a one-line error at start-up, from a worker and from
/// the supervisor, that says to pick another.
#[test]
fn a_taken_metrics_address_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let app = env!("CARGO_BIN_EXE_app");
    let alone = ["worker", "--broker", "memory://", "--metrics-addr", &addr];
    let supervised = ["worker", "--tasks", app, "--broker", "memory://", "--metrics-addr", &addr];
    for args in [&alone[..], &supervised[..]] {
        let out = Command::new(app).args(args).env_remove("RUST_LOG").output().expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        let line = stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
        assert!(line.contains(&format!("could not listen on {addr}")), "{args:?}: {stderr}");
        assert!(line.contains("address in use; pick another --metrics-addr"), "{stderr}");
    }
}
