//! `dmq events` end to end: the built `dmq` binary follows the event stream while this
//! test process, another process, enqueues and runs jobs on the same namespace.
//!
//! Needs a Redis at `REDIS_URL` (default redis://127.0.0.1:6379; `scripts/ensure-redis`
//! starts one). Each test works in a fresh namespace `dmq-test-<uuid>` and deletes its
//! keys afterwards, also when it fails.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use dmq_core::{EventsFrom, TaskError, TaskId, task};
use serde_json::Value;

/// The queue of this file's tasks, which only this file's workers take jobs from.
const QUEUE: &str = "events-test";

/// A second queue this file's workers take jobs from, for jobs sent away from `QUEUE`.
const OTHER_QUEUE: &str = "events-test-other";

#[task(name = "events_test.ok", queue = "events-test")]
async fn events_test_ok(n: u32) -> Result<u32, TaskError> {
    Ok(n)
}

#[task(name = "events_test.fail", queue = "events-test")]
async fn events_test_fail() -> Result<(), TaskError> {
    Err(TaskError::fatal("no good"))
}

mod common;

use common::{Namespace, redis_url};

impl Namespace {
    /// A fresh namespace with a worker on it, in this process, for this file's queues.
    fn with_worker() -> Self {
        let mut ns = Namespace::new();
        let worker = ns.rt.block_on(async {
            let queues = [QUEUE, OTHER_QUEUE];
            ns.manager.worker().queues(queues).concurrency(4).scheduler(false).start()
        });
        ns.worker = Some(worker);
        ns
    }

    /// Runs one `events_test.ok` job to its end; returns its id.
    fn run_ok(&self, n: u32) -> TaskId {
        self.run_ok_on(QUEUE, n)
    }

    /// Runs one `events_test.ok` job to its end on `queue`; returns its id.
    fn run_ok_on(&self, queue: &str, n: u32) -> TaskId {
        self.rt.block_on(async {
            let call = events_test_ok::call(n).queue(queue);
            let handle = call.enqueue(&self.manager).await.expect("enqueues");
            assert_eq!(handle.result(Duration::from_secs(20)).await.expect("runs"), n);
            handle.id()
        })
    }

    /// Runs one `events_test.fail` job to its failure; returns its id.
    fn run_fail(&self) -> TaskId {
        self.rt.block_on(async {
            let handle = events_test_fail::call().enqueue(&self.manager).await.expect("enqueues");
            let failed = handle.result(Duration::from_secs(20)).await;
            assert!(failed.is_err(), "the job fails: {failed:?}");
            handle.id()
        })
    }

    /// Waits until this process has written its events to the stream.
    fn flush(&self) {
        let flushed = self.rt.block_on(self.manager.flush_events(Duration::from_secs(10)));
        assert!(flushed, "the events reached the stream");
    }

    /// Waits until the event stream holds all three events (queued, started,
    /// completed) of job `id`. Its result is stored before it completes, so the job's
    /// handle may return, and [`flush`](Namespace::flush) with it, before its last
    /// event is even sent.
    fn wait_in_stream(&self, id: TaskId) {
        self.rt.block_on(async {
            let broker = self.manager.broker();
            let deadline = Instant::now() + Duration::from_secs(20);
            let (mut from, mut seen) = (EventsFrom::Oldest, 0);
            while seen < 3 {
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "{seen} of the 3 events of {id} reached the stream");
                let page = broker
                    .event_stream()
                    .expect("stream")
                    .read_events(&from, 1_000, left)
                    .await
                    .expect("reads events");
                seen += page.events.iter().filter(|event| event.id == id).count();
                from = EventsFrom::After(page.cursor);
            }
        });
    }

    /// Starts `dmq events` with `args` in this namespace, and waits until it says it
    /// is watching.
    fn watch(&self, args: &[&str]) -> Watcher {
        self.watch_with(args, false)
    }

    /// As [`watch`](Namespace::watch); with `close_stdout`, the reading end of its
    /// stdout is closed before it prints anything, as `dmq events | head -0` would.
    fn watch_with(&self, args: &[&str], close_stdout: bool) -> Watcher {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dmq"))
            .arg("events")
            .args(args)
            .env("DMQ_BROKER_URL", redis_url())
            .env("DMQ_NAMESPACE", &self.name)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the dmq binary runs");
        if close_stdout {
            drop(child.stdout.take());
        }
        let (lines, stderr) = mpsc::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut watcher = Watcher { child, stderr, said: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !watcher.said.iter().any(|line| line.starts_with("watching the events of")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match watcher.stderr.recv_timeout(left) {
                Ok(line) => watcher.said.push(line),
                Err(_) => {
                    let _ = watcher.child.kill();
                    panic!("dmq events {args:?} never said it was watching: {:?}", watcher.said);
                }
            }
        }
        watcher
    }
}

/// A running `dmq events`.
struct Watcher {
    child: Child,
    stderr: mpsc::Receiver<String>,
    /// What it said on stderr so far.
    said: Vec<String>,
}

impl Watcher {
    /// Waits up to `timeout` for it to exit by itself (killing it after that); returns
    /// its status and the lines it printed.
    fn finish(mut self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waits for dmq events") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.said.extend(self.stderr.try_iter());
                panic!(
                    "dmq events did not stop by itself within {timeout:?}; stderr: {:?}",
                    self.said
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.child.stdout.take().map_or_else(Vec::new, |pipe| {
            BufReader::new(pipe).lines().map_while(Result::ok).collect()
        });
        self.said.extend(self.stderr.try_iter());
        assert!(!self.said.iter().any(|line| line.contains("panicked")), "stderr: {:?}", self.said);
        (status, stdout)
    }

    /// Waits for it to exit 0, and returns the lines it printed.
    fn success(self, timeout: Duration) -> Vec<String> {
        let (status, lines) = self.finish(timeout);
        assert!(status.success(), "dmq events exited with {status}; printed {lines:?}");
        lines
    }
}

impl Drop for Watcher {
    /// A test that failed before `finish` leaves no `dmq events` running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `kind` and `id` of each JSON line.
fn kinds_and_ids(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|line| {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
            let field = |name: &str| event[name].as_str().unwrap_or_default().to_owned();
            (field("kind"), field("id"))
        })
        .collect()
}

/// The index of the one line that shows event `kind` of `events_test.ok` job `id`, in
/// the text format (time, kind, task, then `key=value` facts).
fn line_of(lines: &[String], kind: &str, id: TaskId) -> usize {
    let shows = |line: &String| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words.get(1..5)
            == Some(&[kind, "events_test.ok", &format!("id={id}"), &format!("queue={QUEUE}")])
    };
    let found: Vec<usize> = (0..lines.len()).filter(|&i| shows(&lines[i])).collect();
    assert_eq!(found.len(), 1, "one {kind} line for {id} in {lines:#?}");
    found[0]
}

#[test]
fn dmq_events_shows_the_events_of_jobs_run_in_another_process() {
    let ns = Namespace::with_worker();
    // Three events per job; it stops by itself once it has shown them.
    let watcher = ns.watch(&["--count", "6", "--for", "60s"]);
    let ids = [ns.run_ok(1), ns.run_ok(2)];
    ns.flush();
    let lines = watcher.success(Duration::from_secs(90));
    assert_eq!(lines.len(), 6, "{lines:#?}");
    for id in ids {
        let queued = line_of(&lines, "queued", id);
        let started = line_of(&lines, "started", id);
        let completed = line_of(&lines, "completed", id);
        // The producer's queued may reach the stream after the worker's started, but
        // its time (the first word) is never later.
        let time = |i: usize| lines[i].split_whitespace().next().map(str::to_owned);
        assert!(time(queued) <= time(started), "queued dated after started: {lines:#?}");
        assert!(started < completed, "in order: {lines:#?}");
        assert!(lines[completed].contains(" run_time="), "{}", lines[completed]);
        assert!(lines[started].contains(" worker="), "a worker's event names it");
    }
}

#[test]
fn dmq_events_filters_by_kind() {
    let ns = Namespace::with_worker();
    // Followed from now: the first failure is the one line it shows, though the
    // successful job's events come first.
    let failures = ns.watch(&["--kind", "failed", "--count", "1", "--json", "--for", "60s"]);
    let ok = ns.run_ok(7);
    let failed = ns.run_fail();
    ns.flush();
    let lines = failures.success(Duration::from_secs(90));
    assert_eq!(kinds_and_ids(&lines), [("failed".to_owned(), failed.to_string())]);
    let event: Value = serde_json::from_str(&lines[0]).expect("JSON");
    assert_eq!(
        (event["failure"].as_str(), event["task"].as_str()),
        (Some("fatal"), Some("events_test.fail"))
    );
    assert_eq!(event["error"].as_str(), Some("no good"));

    // From the start, every failure and nothing else, however long it waits.
    let args = ["--from-start", "--kind", "failed,dead_lettered", "--json", "--for", "2s"];
    let lines = ns.watch(&args).success(Duration::from_secs(30));
    let mut seen = kinds_and_ids(&lines);
    seen.sort();
    let expected = [("dead_lettered", failed), ("failed", failed)];
    assert_eq!(seen, expected.map(|(kind, id)| (kind.to_owned(), id.to_string())));

    // The last event of a kind, by task and queue: the filters apply to --last too, and
    // of two jobs that match, it is the newer one's (this process sent its queued event
    // after the older one's, and sends them to the stream in order).
    let newer = ns.run_ok(8);
    ns.flush();
    let args = ["--last", "1", "--kind", "queued", "--task", "events_test.ok", "--queue", QUEUE];
    let args = [&args[..], &["--json", "--for", "2s"]].concat();
    let lines = ns.watch(&args).success(Duration::from_secs(30));
    let newest = [("queued".to_owned(), newer.to_string())];
    assert_eq!(kinds_and_ids(&lines), newest, "the newer, not {ok}");
    let args = ["--from-start", "--task", "nobody", "--json", "--for", "1s"];
    assert!(ns.watch(&args).success(Duration::from_secs(30)).is_empty());
}

#[test]
fn dmq_events_stops_cleanly_on_sigterm_and_on_a_closed_stdout() {
    let ns = Namespace::with_worker();
    let watcher = ns.watch(&[]);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(watcher.child.id()).expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM is sent");
    let lines = watcher.success(Duration::from_secs(10));
    assert!(lines.is_empty(), "{lines:?}");

    // A reader that goes away (`dmq events | head -1`) ends it, without a panic.
    for n in 0..3 {
        ns.run_ok(n);
    }
    ns.flush();
    let watcher = ns.watch_with(&["--from-start", "--for", "60s"], true);
    watcher.success(Duration::from_secs(30));
}

/// The `kind` and `id` of the three events (queued, started, completed) of each
/// `events_test.ok` job in `ids`, sorted, to compare with sorted `kinds_and_ids`.
fn events_of(ids: &[TaskId]) -> Vec<(String, String)> {
    let mut events: Vec<(String, String)> = ids
        .iter()
        .flat_map(|id| {
            ["queued", "started", "completed"].map(|kind| (kind.to_owned(), id.to_string()))
        })
        .collect();
    events.sort();
    events
}

/// `--queue` shows the events of jobs on that queue and of no other, also with `--last`.
#[test]
fn dmq_events_filters_by_queue() {
    let ns = Namespace::with_worker();
    // One job on each queue, the second sent after the first: the same task, so the
    // queue alone tells them apart.
    let here = ns.run_ok(1);
    let there = ns.run_ok_on(OTHER_QUEUE, 2);
    ns.wait_in_stream(here);
    ns.wait_in_stream(there);

    // From the start, each queue's job's events and nothing else, however long it waits.
    for (queue, id) in [(QUEUE, here), (OTHER_QUEUE, there)] {
        let args = ["--from-start", "--queue", queue, "--json", "--for", "2s"];
        let lines = ns.watch(&args).success(Duration::from_secs(30));
        let mut seen = kinds_and_ids(&lines);
        seen.sort();
        assert_eq!(seen, events_of(&[id]), "--queue {queue}: {lines:#?}");
    }

    // --last with --queue: the last queued on this queue, though the other queue's
    // came after it.
    let args = ["--last", "1", "--kind", "queued", "--queue", QUEUE, "--json", "--for", "2s"];
    let lines = ns.watch(&args).success(Duration::from_secs(30));
    assert_eq!(kinds_and_ids(&lines), [("queued".to_owned(), here.to_string())]);
}

/// Unfiltered `--last N` shows exactly the stream's last N events, then follows it.
#[test]
fn dmq_events_shows_the_last_n_events() {
    let ns = Namespace::with_worker();
    // All the first job's events are in the stream before the second is sent.
    let first = ns.run_ok(1);
    ns.wait_in_stream(first);
    let second = ns.run_ok(2);
    ns.wait_in_stream(second);

    let lines =
        ns.watch(&["--last", "3", "--json", "--for", "2s"]).success(Duration::from_secs(30));
    let mut seen = kinds_and_ids(&lines);
    seen.sort();
    assert_eq!(seen, events_of(&[second]), "not {first}'s: {lines:#?}");

    // More than the stream keeps: all of it.
    let lines =
        ns.watch(&["--last", "100", "--json", "--for", "2s"]).success(Duration::from_secs(30));
    let mut seen = kinds_and_ids(&lines);
    seen.sort();
    assert_eq!(seen, events_of(&[first, second]), "{lines:#?}");
}
