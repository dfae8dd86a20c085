//! Worker processes for the end-to-end tests: `dmq-test-worker` started with its
//! settings, stopped with SIGTERM, killed with SIGKILL (also when its guard drops, so
//! that a failing test leaves no process behind), and a storm of such kills.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use dmq_core::{Manager, TaskId};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long a process test waits for anything before calling it lost: generous, never
/// a performance bound.
pub const WAIT: Duration = Duration::from_secs(120);

/// How a worker process is started.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// One queue, or several separated by commas.
    pub queue: &'static str,
    /// Jobs run at once.
    pub concurrency: usize,
    /// The lease on each claimed job.
    pub lease: Duration,
    /// How often the worker heartbeats.
    pub heartbeat: Duration,
}

/// Deliveries after which the workers dead-letter a job that never settled.
pub const MAX_DELIVERIES: u32 = 3;

/// One `dmq-test-worker` process, killed (SIGKILL) when the guard drops if it still
/// runs. Its stderr goes to a log file, printed when the test fails.
pub struct WorkerProcess {
    /// The process.
    pub child: Child,
    /// Its pid.
    pub pid: u32,
    /// The file its stderr goes to.
    pub log: PathBuf,
}

impl WorkerProcess {
    /// Starts a worker whose broker, results and run records are in the Redis at
    /// `url`, in `namespace`.
    pub fn start(url: &str, namespace: &str, settings: Settings) -> Self {
        Self::start_with(url, namespace, settings, &[])
    }

    /// Starts a worker with `extra` arguments after the usual ones (`--broker URL`
    /// puts its broker and results elsewhere; its run records stay in `url`).
    pub fn start_with(url: &str, namespace: &str, settings: Settings, extra: &[&str]) -> Self {
        let log = std::env::temp_dir().join(format!("{namespace}-{}.log", uuid::Uuid::new_v4()));
        let stderr = File::create(&log).expect("create the worker's log file");
        let child = Command::new(env!("CARGO_BIN_EXE_dmq-test-worker"))
            .args(["--redis", url, "--namespace", namespace, "--queues", settings.queue])
            .args(["--concurrency", &settings.concurrency.to_string()])
            .args(["--lease-ms", &settings.lease.as_millis().to_string()])
            .args(["--heartbeat-ms", &settings.heartbeat.as_millis().to_string()])
            .args(if extra.contains(&"--max-deliveries") {
                Vec::new()
            } else {
                vec!["--max-deliveries".to_owned(), MAX_DELIVERIES.to_string()]
            })
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("start dmq-test-worker");
        let pid = child.id().expect("a running child has a pid");
        WorkerProcess { child, pid, log }
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("query the worker process").is_none()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {} failed: {sent}", self.pid);
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!("worker {} did not exit within {WAIT:?} of SIGTERM", self.pid)
            })
            .expect("wait for the worker process")
    }

    /// Sends SIGKILL and waits for the process to exit.
    pub async fn kill(&mut self) -> ExitStatus {
        self.child.start_kill().expect("send SIGKILL");
        self.child.wait().await.expect("wait for the killed worker process")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        kill_now(&mut self.child);
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("--- last lines of worker {}'s log ---\n{}", self.pid, tail.join("\n"));
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Kills `child` with SIGKILL, if it still runs, and waits a little for it to be gone,
/// so that it writes nothing after its guard dropped. For `Drop`, which cannot await.
pub fn kill_now(child: &mut Child) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    let _ = child.start_kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Calls `check` every 20 ms until it returns `Some`, for at most [`WAIT`].
pub async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "gave up after {WAIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `signal` (STOP, CONT, KILL) to process `pid`.
pub async fn signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .await
        .expect("run kill");
    assert!(sent.success(), "kill -{signal} {pid} failed: {sent}");
}

/// The end of a stalled-worker test: `stalled` (stopped with SIGSTOP while it ran job
/// `id`, a task that returns its worker's pid) has lost the job to `successor`. Resumes
/// `stalled` once the successor started the job (`resume_early`, `runs` counting the
/// job's starts) or once the successor stored its result, then asserts that the
/// successor's result stands and that the resumed run gave its own up.
pub async fn resume_and_see_the_fence_hold<F, Fut>(
    manager: &Manager,
    id: TaskId,
    stalled: &WorkerProcess,
    successor: &WorkerProcess,
    resume_early: bool,
    runs: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = usize>,
{
    if resume_early {
        // Resumed once the successor started the job, before it stores its result.
        poll("the successor to start the job", || async { (runs().await == 2).then_some(()) })
            .await;
        signal(stalled.pid, "CONT").await;
    }
    let stored = manager.result::<u32>(id).wait(WAIT).await.expect("the successor's result");
    assert_eq!(stored, successor.pid, "the successor ran the job to the end");
    if !resume_early {
        signal(stalled.pid, "CONT").await;
    }
    // The resumed run finishes (its sleep is over) and tries to store its own pid:
    // wait until it says it gave that up, or until the stored result changed.
    let given_up = poll("the resumed worker to give up its run's result", || async {
        let logged = std::fs::read_to_string(&stalled.log).unwrap_or_default();
        if logged.contains("storing nothing from this run") {
            return Some(true);
        }
        let now = manager.result::<u32>(id).get().await.ok()??;
        (now != successor.pid).then_some(false)
    })
    .await;
    let now = manager.result::<u32>(id).get().await.expect("read the result");
    assert_eq!(now, Some(successor.pid), "the stored result changed");
    assert!(given_up);
    assert_eq!(runs().await, 2, "one run each");
}

/// Waits until every one of `workers` has registered with the broker: its claim loop
/// runs.
pub async fn registered(manager: &Manager, workers: &[WorkerProcess]) {
    let pids: HashSet<u32> = workers.iter().map(|w| w.pid).collect();
    poll("the worker processes to register", || async {
        let listed = manager.broker().worker_registry().expect("registry").workers().await.ok()?;
        let live: HashSet<u32> = listed.iter().map(|w| w.info.pid).collect();
        pids.is_subset(&live).then_some(())
    })
    .await;
}

/// Kills one of `workers` with SIGKILL every `every`, in turn, for `length`, starting
/// a fresh one (`start`) in its place each time; returns the pids it killed.
pub async fn storm(
    workers: &mut [WorkerProcess],
    length: Duration,
    every: Duration,
    start: impl Fn() -> WorkerProcess,
) -> HashSet<u32> {
    let mut killed = HashSet::new();
    let storm_ends = Instant::now() + length;
    let mut round = 0usize;
    while Instant::now() < storm_ends {
        tokio::time::sleep(every).await;
        let victim = round % workers.len();
        round += 1;
        killed.insert(workers[victim].pid);
        let status = workers[victim].kill().await;
        assert_eq!(status.signal(), Some(9));
        workers[victim] = start();
    }
    killed
}
