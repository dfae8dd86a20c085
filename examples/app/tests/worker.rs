//! `app worker` as a real process against Redis: it runs the jobs enqueued with the
//! Rust API, logs what it knows, and exits 0 on SIGTERM; `app tasks` lists the tasks;
//! a bad broker URL is a one-line error.

use std::panic::AssertUnwindSafe;
use std::process::Stdio;
use std::time::Duration;

use dmq_core::Manager;
use dmq_redis::{Keys, RedisBackend, RedisBroker};
use futures::FutureExt as _;
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(60);

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The local Redis Cluster: `DMQ_CLUSTER_URL` (set by scripts/test), or the one
/// `scripts/ensure-redis-cluster` starts when none runs.
fn cluster_url() -> String {
    if let Ok(url) = std::env::var("DMQ_CLUSTER_URL") {
        return url;
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ensure-redis-cluster");
    let out = std::process::Command::new(&script).output().expect("run ensure-redis-cluster");
    assert!(out.status.success(), "scripts/ensure-redis-cluster failed");
    String::from_utf8_lossy(&out.stdout).lines().last().expect("a URL").trim().to_owned()
}

async fn remove_namespace(url: &str, namespace: &str) {
    dmq_redis::delete_namespace_at(url, &Keys::new(namespace)).await.expect("delete keys");
}

/// Panics as the test's jobs did, or with what the processes logged when they did not
/// finish in time.
fn finished(result: Result<std::thread::Result<()>, tokio::time::error::Elapsed>, logged: &str) {
    match result {
        Ok(Ok(())) => {}
        Ok(Err(panic)) => {
            eprintln!("the processes logged:\n{logged}");
            std::panic::resume_unwind(panic);
        }
        Err(_) => panic!("the jobs did not complete; the processes logged:\n{logged}"),
    }
}

/// Sends SIGTERM to `child`, waits for it to exit, and returns its status and what it
/// logged to `log` (which is removed).
async fn terminate(
    child: &mut tokio::process::Child,
    log: &std::path::Path,
) -> (std::process::ExitStatus, String) {
    let pid = child.id().expect("running").to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill -TERM");
    assert!(sent.success());
    let status = tokio::time::timeout(WAIT, child.wait()).await.expect("exits").expect("wait");
    let logged = std::fs::read_to_string(log).unwrap_or_default();
    let _ = std::fs::remove_file(log);
    (status, logged)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_worker_runs_the_jobs_and_stops_cleanly_on_sigterm() {
    let url = redis_url();
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let log = std::env::temp_dir().join(format!("{namespace}.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_app"))
        .args(["worker", "--broker", &url, "--namespace", &namespace, "--grace", "10s"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start app worker");

    let outcome = async {
        let broker = RedisBroker::connect_with_namespace(&url, &namespace).await.expect("redis");
        let backend = RedisBackend::connect_with_namespace(&url, &namespace).await.expect("redis");
        let manager = Manager::builder().broker(broker).backend(backend).build().expect("manager");
        let mut sums = Vec::new();
        for i in 0..200 {
            sums.push(app::add::call(i, 1).enqueue(&manager).await.expect("enqueue"));
        }
        let flaky = app::flaky::call().enqueue(&manager).await.expect("enqueue");
        let email = app::send_email::call("ada@example.org".into(), "hi".into())
            .enqueue(&manager)
            .await
            .expect("enqueue");
        for (i, handle) in (0..).zip(&sums) {
            assert_eq!(handle.result(WAIT).await.expect("a sum"), i + 1);
        }
        assert_eq!(flaky.result(WAIT).await.expect("the third attempt succeeds"), 3);
        assert!(email.result(WAIT).await.expect("sent").ends_with("@example.invalid>"));
    };
    // A failed assertion in `outcome` must not skip the cleanup below.
    let result = tokio::time::timeout(WAIT * 2, AssertUnwindSafe(outcome).catch_unwind()).await;

    let (status, logged) = terminate(&mut child, &log).await;
    remove_namespace(&url, &namespace).await;
    finished(result, &logged);
    assert!(status.success(), "app worker exited with {status}; it logged:\n{logged}");
    // At start it says what it knows: its tasks, queues and broker.
    for expected in ["ready", "emails.send", "flaky", "\"math\"", "SIGTERM", "stopped"] {
        assert!(logged.contains(expected), "the log lacks {expected:?}:\n{logged}");
    }
    assert!(!logged.contains("dmq.bench"), "dmq's own bench tasks are not the app's:\n{logged}");
}

#[test]
fn app_tasks_lists_the_tasks_of_the_binary() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .args(["tasks", "--json"])
        .output()
        .expect("run app tasks");
    assert!(out.status.success());
    let listed = String::from_utf8(out.stdout).expect("utf-8");
    for name in ["\"add\"", "\"emails.send\"", "\"flaky\"", "\"heartbeat\"", "\"slow\""] {
        assert!(listed.contains(name), "{name} missing from {listed}");
    }
    assert!(!listed.contains("dmq.bench"), "{listed}");
}

/// Runs `app worker --broker url`, expects it to exit 1 with one line on stderr, and
/// returns that line.
fn worker_error(url: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .args(["worker", "--broker", url])
        .output()
        .expect("run app worker");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn a_bad_broker_url_is_a_one_line_error() {
    let stderr = worker_error("nope://x");
    assert!(stderr.starts_with("error: unsupported broker URL"), "{stderr}");
    assert!(stderr.contains("redis://"), "{stderr}");
    let stderr = worker_error("redis://127.0.0.1:1");
    assert!(stderr.starts_with("error: "), "{stderr}");
}

/// `app worker --tasks app --workers 2`: 2,000 jobs enqueued with the Rust API and 20
/// with `app enqueue` (which finds the queue from the binary's own task); a child
/// killed with SIGKILL is restarted and every job completes; SIGTERM to the
/// supervisor stops everything and it exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_restarts_a_killed_worker_and_stops_cleanly() {
    supervisor_restarts_a_killed_worker(redis_url()).await;
}

/// The same on the local Redis Cluster: the supervisor, its workers and `app enqueue`
/// all take the `redis+cluster://` URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervisor_works_on_a_redis_cluster() {
    supervisor_restarts_a_killed_worker(cluster_url()).await;
}

async fn supervisor_restarts_a_killed_worker(url: String) {
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let log = std::env::temp_dir().join(format!("{namespace}-supervisor.log"));
    let app = env!("CARGO_BIN_EXE_app");
    let mut supervisor = Command::new(app)
        .args(["worker", "--tasks", app, "--workers", "2", "--broker", &url])
        .args(["--namespace", &namespace, "--grace", "5s", "--log-level", "info"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start the supervisor");

    let broker = RedisBroker::connect_with_namespace(&url, &namespace).await.expect("redis");
    let backend = RedisBackend::connect_with_namespace(&url, &namespace).await.expect("redis");
    let manager = Manager::builder().broker(broker).backend(backend).build().expect("manager");
    let pids = |manager: Manager| async move {
        let workers = manager
            .broker()
            .worker_registry()
            .expect("registry")
            .workers()
            .await
            .unwrap_or_default();
        workers.iter().map(|w| w.info.pid).collect::<std::collections::BTreeSet<u32>>()
    };
    let outcome = async {
        let deadline = std::time::Instant::now() + WAIT;
        let first = loop {
            let live = pids(manager.clone()).await;
            if live.len() >= 2 {
                break live;
            }
            assert!(std::time::Instant::now() < deadline, "two workers never registered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let ids =
            manager.enqueue_batch((0..2000).map(|i| app::add::call(i, i))).await.expect("enqueue");
        // And some through the command line, as an operator would.
        let mut cli_ids = Vec::new();
        for i in 0..20i64 {
            let out = Command::new(app)
                .args(["enqueue", "add", &format!("[{i}, 100]"), "--broker", &url])
                .args(["--namespace", &namespace])
                .output()
                .await
                .expect("run app enqueue");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let id: dmq_core::TaskId =
                String::from_utf8_lossy(&out.stdout).trim().parse().expect("prints the task id");
            cli_ids.push((i, id));
        }
        let victim = *first.iter().next().expect("a worker");
        let killed = Command::new("kill").args(["-KILL", &victim.to_string()]).status().await;
        assert!(killed.expect("kill -KILL").success());
        // A third process registers: the supervisor restarted the killed one.
        loop {
            let live = pids(manager.clone()).await;
            if live.iter().any(|p| !first.contains(p)) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the killed worker was not restarted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (i, id) in (0..).zip(&ids) {
            let sum = manager.result::<i64>(*id).wait(WAIT).await.expect("every job completes");
            assert_eq!(sum, 2 * i);
        }
        for (i, id) in cli_ids {
            let sum = manager.result::<i64>(id).wait(WAIT).await.expect("a CLI job completes");
            assert_eq!(sum, i + 100);
        }
    };
    // A failed assertion in `outcome` must not skip the cleanup below.
    let result = tokio::time::timeout(WAIT * 2, AssertUnwindSafe(outcome).catch_unwind()).await;

    let (status, logged) = terminate(&mut supervisor, &log).await;
    let left = pids(manager.clone()).await;
    remove_namespace(&url, &namespace).await;
    finished(result, &logged);
    assert!(status.success(), "the supervisor exited with {status}; logged:\n{logged}");
    assert!(logged.contains("restarted a worker process"), "{logged}");
    // Every worker that stopped gracefully deregistered; the killed one may linger
    // until its heartbeat lapses, but nothing else.
    assert!(left.len() <= 1, "workers still registered: {left:?}\n{logged}");
}

/// `app worker --tasks app --workers 1` in namespace `namespace`, its output dropped.
fn start_supervisor(url: &str, namespace: &str) -> tokio::process::Child {
    let app = env!("CARGO_BIN_EXE_app");
    Command::new(app)
        .args(["worker", "--tasks", app, "--workers", "1", "--broker", url])
        .args(["--namespace", namespace, "--grace", "2s"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the supervisor")
}

/// Kills `supervisor` with SIGKILL and says whether worker process `child` is still
/// alive 20 s later (killing it then, so that no test leaves one running).
async fn outlives_its_killed_supervisor(mut supervisor: tokio::process::Child, child: u32) -> bool {
    supervisor.start_kill().expect("SIGKILL the supervisor");
    let _ = supervisor.wait().await;
    let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    let gone_by = std::time::Instant::now() + Duration::from_secs(20);
    while alive(child) && std::time::Instant::now() < gone_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let still = alive(child);
    if still {
        let _ = std::process::Command::new("kill").arg("-9").arg(child.to_string()).status();
    }
    still
}

/// A supervisor killed with SIGKILL leaves no worker behind: each notices it is gone
/// and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_stop_when_their_supervisor_dies() {
    let url = redis_url();
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let supervisor = start_supervisor(&url, &namespace);
    let broker = RedisBroker::connect_with_namespace(&url, &namespace).await.expect("redis");
    let deadline = std::time::Instant::now() + WAIT;
    let child = loop {
        let workers = dmq_core::WorkerRegistry::workers(&broker).await.unwrap_or_default();
        if let Some(w) = workers.first() {
            break w.info.pid;
        }
        assert!(std::time::Instant::now() < deadline, "the worker never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let still = outlives_its_killed_supervisor(supervisor, child).await;
    remove_namespace(&url, &namespace).await;
    assert!(!still, "worker {child} outlived its supervisor");
}

/// A supervisor killed while its worker is still starting (before the worker has
/// connected or registered) leaves no worker behind either: the worker knows its
/// supervisor by pid, not by whoever its parent is when it first looks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_still_starting_stops_when_its_supervisor_dies() {
    let url = redis_url();
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let supervisor = start_supervisor(&url, &namespace);
    let pid = supervisor.id().expect("the supervisor's pid");
    let children = format!("/proc/{pid}/task/{pid}/children");
    let deadline = std::time::Instant::now() + WAIT;
    // The first worker process, as soon as it exists.
    let child: u32 = loop {
        let listed = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(first) = listed.split_whitespace().next() {
            break first.parse().expect("a pid");
        }
        assert!(std::time::Instant::now() < deadline, "the supervisor started no worker");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let still = outlives_its_killed_supervisor(supervisor, child).await;
    remove_namespace(&url, &namespace).await;
    assert!(!still, "worker {child}, started but not yet running, outlived its supervisor");
}

/// A poison pill among 500 good jobs, under `app worker --tasks app --workers 4`: it
/// kills the worker process that runs it, and the ten-odd jobs claimed beside it die
/// with it. Whatever `--max-deliveries` is (1, the strictest, takes one death alone),
/// every good job completes and the pill alone is dead-lettered: the jobs taken back
/// from a dead worker run one at a time, alone.
async fn a_poison_pill_is_dead_lettered_alone(max_deliveries: u32) {
    let url = redis_url();
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let log = std::env::temp_dir().join(format!("{namespace}-poison.log"));
    let app = env!("CARGO_BIN_EXE_app");
    let broker = RedisBroker::connect_with_namespace(&url, &namespace).await.expect("redis");
    let backend = RedisBackend::connect_with_namespace(&url, &namespace).await.expect("redis");
    let manager = Manager::builder().broker(broker).backend(backend).build().expect("manager");
    // Enqueued before the workers start, so that the first claims take the pill in a
    // batch with good jobs.
    let mut calls: Vec<_> = (0..250).map(|i| app::add::call(i, 1).queue("math")).collect();
    let good_first = manager.enqueue_batch(calls.drain(..)).await.expect("enqueue");
    let pill = app::crash_worker::call().queue("math").enqueue(&manager).await.expect("pill");
    let good_then =
        manager.enqueue_batch((250..500).map(|i| app::add::call(i, 1))).await.expect("enqueue");
    let mut supervisor = Command::new(app)
        .args(["worker", "--tasks", app, "--workers", "4", "--broker", &url])
        .args(["--namespace", &namespace, "--queues", "math", "--concurrency", "10"])
        .args(["--heartbeat", "200ms", "--max-deliveries", &max_deliveries.to_string()])
        .args(["--grace", "5s", "--log-level", "warn"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start the supervisor");

    let outcome = async {
        for (i, id) in (0..).zip(good_first.iter().chain(&good_then)) {
            let sum = manager.result::<i64>(*id).wait(WAIT * 3).await.expect("a good job's result");
            assert_eq!(sum, i + 1);
        }
        let deadline = std::time::Instant::now() + WAIT * 3;
        loop {
            let stats = manager.admin().expect("admin").queue_stats("math").await.expect("stats");
            if stats.dead == 1 && stats.ready == 0 && stats.in_flight == 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the pill never settled: {stats:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let letters = manager.dead_letters("math", 0, 10).await.expect("dead letters");
        assert_eq!(letters.len(), 1, "only the pill: {letters:?}");
        assert_eq!(letters[0].id, pill.id());
        let reason = &letters[0].reason;
        let expected =
            format!("poison: its worker was lost {max_deliveries} times while it ran alone");
        assert!(reason.starts_with(&expected), "{reason}");
    };
    let result = tokio::time::timeout(WAIT * 4, AssertUnwindSafe(outcome).catch_unwind()).await;
    let (status, logged) = terminate(&mut supervisor, &log).await;
    remove_namespace(&url, &namespace).await;
    finished(result, &logged);
    assert!(status.success(), "the supervisor exited with {status}; logged:\n{logged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_pill_is_dead_lettered_alone_even_at_one_delivery() {
    a_poison_pill_is_dead_lettered_alone(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_pill_is_dead_lettered_alone_after_three_deaths() {
    a_poison_pill_is_dead_lettered_alone(3).await;
}

/// Runs `app` with `args` against the test Redis in `namespace`.
fn app(args: &[&str], namespace: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .args(args)
        .args(["--broker", &redis_url(), "--namespace", namespace])
        .output()
        .expect("run app")
}

/// `app enqueue` knows its tasks' parameter types: arguments that do not fit are refused
/// at once, naming the types, and nothing is enqueued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_enqueue_refuses_arguments_that_do_not_fit_the_task() {
    let url = redis_url();
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let outcome = std::panic::catch_unwind(|| {
        for (task, args, expected) in [
            ("add", "[2]", "(i64, i64)"),
            ("add", r#"[2, "3"]"#, "(i64, i64)"),
            ("add", "[2, 3.5]", "(i64, i64)"),
            ("emails.send", r#"["ann@example.com", 3]"#, "(String, String)"),
            ("slow", "[-1]", "(u64,)"),
            ("heartbeat", "[1]", "takes no arguments"),
        ] {
            let out = app(&["enqueue", task, args], &namespace);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "app enqueue {task} {args}: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
            assert!(stderr.starts_with("error: "), "{stderr}");
            assert!(stderr.contains(expected), "expected {expected:?} in: {stderr}");
            assert!(stderr.contains(&format!("{task:?}")), "names the task: {stderr}");
        }
        // Arguments that fit are enqueued, and a task without arguments takes `[]`.
        for (task, args) in [("add", "[2, 3]"), ("heartbeat", "[]"), ("flaky", "[]")] {
            let out = app(&["enqueue", task, args], &namespace);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    });
    let broker = RedisBroker::connect_with_namespace(&url, &namespace).await.expect("redis");
    let stats = dmq_core::BrokerAdmin::queue_stats(&broker, "math").await.expect("stats");
    remove_namespace(&url, &namespace).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(stats.ready, 1, "only the call that fits was enqueued");
}

/// `app enqueue flaky '[]'`: a task without arguments, enqueued from the command line
/// as `--help` and the wire format say, runs in `app worker` and stores its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_without_arguments_enqueued_as_an_empty_array_runs() {
    let url = redis_url();
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    let log = std::env::temp_dir().join(format!("{namespace}.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_app"))
        .args(["worker", "--broker", &url, "--namespace", &namespace, "--no-scheduler"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("a log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start app worker");
    let outcome = async {
        let out = app(&["enqueue", "flaky", "[]"], &namespace);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let id: dmq_core::TaskId =
            String::from_utf8_lossy(&out.stdout).trim().parse().expect("prints the task id");
        let backend = RedisBackend::connect_with_namespace(&url, &namespace).await.expect("redis");
        let broker = RedisBroker::connect_with_namespace(&url, &namespace).await.expect("redis");
        let manager = Manager::builder().broker(broker).backend(backend).build().expect("manager");
        let attempt = manager.result::<u32>(id).wait(WAIT).await.expect("flaky succeeds");
        assert_eq!(attempt, 3, "it failed twice, then ran");
    };
    let result = tokio::time::timeout(WAIT * 2, AssertUnwindSafe(outcome).catch_unwind()).await;
    let (status, logged) = terminate(&mut child, &log).await;
    remove_namespace(&url, &namespace).await;
    finished(result, &logged);
    assert!(status.success(), "app worker exited with {status}; it logged:\n{logged}");
}

/// A task binary's usage errors are one `error:` line with status 1, as `dmq`'s are.
#[test]
fn app_usage_errors_are_one_line_with_status_1() {
    for args in [&["enqueue"][..], &["worker", "--concurrency", "0"][..], &["nope"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_app"))
            .args(args)
            .output()
            .expect("run app");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "app {args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains("usage: app"), "{stderr}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_app"))
        .arg("--help")
        .output()
        .expect("run app");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: app"));
}
