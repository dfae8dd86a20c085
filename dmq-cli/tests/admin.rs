//! The admin commands end to end: the built `dmq` binary against a real Redis.
//!
//! Needs a Redis at `REDIS_URL` (default redis://127.0.0.1:6379; `scripts/ensure-redis`
//! starts one). Each test prepares known state with the Rust API in a fresh namespace
//! `dmq-test-<uuid>` and deletes that namespace's keys afterwards, also when it fails.

use std::process::{Command, Output};
use std::time::Duration;

use chrono::{DateTime, SubsecRound as _, Utc};
use dmq_core::{Envelope, FailureKind, ResultBackend as _, TaskId, TaskOutcome, WorkerInfo};
use serde_json::{Value, json};

mod common;

use common::{Namespace, redis_url};

impl Namespace {
    /// Runs `dmq` with `args` in this namespace.
    fn dmq(&self, args: &[&str]) -> Output {
        dmq_with(args, &[("DMQ_BROKER_URL", &redis_url()), ("DMQ_NAMESPACE", &self.name)])
    }

    /// Runs `dmq`, expects success, and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.dmq(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "dmq {args:?} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs `dmq ... --json`, expects success, and parses its output.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let stdout = self.ok(&args);
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("dmq {args:?} printed no JSON ({e}): {stdout}"))
    }

    /// Enqueues a job of `task` to `queue`, due at `eta` (now when `None`).
    fn enqueue(&self, task: &str, queue: &str, eta: Option<DateTime<Utc>>) -> TaskId {
        let args = rmp_serde::to_vec(&(1u32,)).expect("encodes");
        let mut envelope = Envelope::new(task, queue, args);
        envelope.eta = eta;
        self.rt.block_on(self.manager.enqueue_envelope(envelope)).expect("enqueues")
    }

    /// Claims up to `n` jobs of `queue` as a worker would.
    fn claim(&self, queue: &str, n: usize) -> Vec<dmq_core::Delivery> {
        self.rt
            .block_on(self.manager.broker().claim(
                "test-worker",
                &[queue.to_owned()],
                n,
                Duration::from_secs(60),
                Duration::from_secs(1),
            ))
            .expect("claims")
    }

    /// Dead-letters `n` fresh jobs of `queue` with reasons `boom 0`, `boom 1`, ...;
    /// returns their ids.
    fn dead_letters(&self, queue: &str, n: usize) -> Vec<TaskId> {
        let ids: Vec<TaskId> = (0..n).map(|_| self.enqueue("app.fail", queue, None)).collect();
        let claimed = self.claim(queue, n);
        assert_eq!(claimed.len(), n);
        for (i, delivery) in claimed.iter().enumerate() {
            self.rt
                .block_on(self.manager.broker().dead_letter(&delivery.lease, &format!("boom {i}")))
                .expect("dead-letters");
        }
        ids
    }

    /// Runs one raw Redis command, as another program (or a write cut off halfway)
    /// would.
    fn redis<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> T {
        self.rt.block_on(async {
            let client = redis::Client::open(redis_url()).expect("a redis url");
            let mut conn = client.get_multiplexed_async_connection().await.expect("connects");
            command.query_async(&mut conn).await.expect("the raw redis command")
        })
    }

    /// The Redis keys of `queue`.
    fn keys(&self, queue: &str) -> dmq_redis::QueueKeys {
        dmq_redis::Keys::new(self.name.clone()).queue(queue)
    }

    fn stats(&self, queue: &str) -> dmq_core::QueueStats {
        self.rt.block_on(self.manager.admin().expect("admin").queue_stats(queue)).expect("stats")
    }
    /// Every queue key of the namespace, found by `SCAN`, whatever its queue's name.
    fn queue_keys(&self) -> Vec<String> {
        let pattern = dmq_redis::Keys::new(self.name.clone()).patterns().swap_remove(0);
        self.rt.block_on(async {
            let client = redis::Client::open(redis_url()).expect("a redis url");
            let mut conn = client.get_multiplexed_async_connection().await.expect("connects");
            let mut keys: Vec<String> = Vec::new();
            let mut cursor = 0u64;
            loop {
                let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .query_async(&mut conn)
                    .await
                    .expect("SCAN");
                keys.extend(page);
                if next == 0 {
                    return keys;
                }
                cursor = next;
            }
        })
    }
}

/// Runs `dmq` with `args` and only the environment variables `env` of its own.
fn dmq_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dmq"));
    command.args(args).env_remove("DMQ_BROKER_URL").env_remove("DMQ_NAMESPACE");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("the dmq binary runs")
}

/// Checks that `out` failed with one `error: ...` line containing `expected`.
fn assert_error(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status of a failure; stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(expected), "expected {expected:?} in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[test]
fn queues_shows_each_queues_depths() {
    let ns = Namespace::new();
    // emails: 2 dead, then 1 in flight, 1 ready and 1 delayed; reports: 1 ready.
    ns.dead_letters("emails", 2);
    ns.enqueue("app.send", "emails", None);
    assert_eq!(ns.claim("emails", 1).len(), 1);
    ns.enqueue("app.send", "emails", None);
    ns.enqueue("app.send", "emails", Some(Utc::now() + chrono::Duration::hours(1)));
    ns.enqueue("app.report", "reports", None);

    let list = ns.json(&["queues"]);
    assert_eq!(
        list,
        json!([
            {"queue": "emails", "ready": 1, "suspect": 0, "gated": 0, "delayed": 1, "in_flight": 1,
             "dead": 2, "dead_dropped": 0, "bad_entries": 0, "paused": false,
             "paused_since": null},
            {"queue": "reports", "ready": 1, "suspect": 0, "gated": 0, "delayed": 0, "in_flight": 0,
             "dead": 0, "dead_dropped": 0, "bad_entries": 0, "paused": false,
             "paused_since": null},
        ])
    );

    let table = ns.ok(&["queues"]);
    let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        lines,
        [
            vec![
                "QUEUE",
                "READY",
                "SUSPECT",
                "GATED",
                "DELAYED",
                "IN-FLIGHT",
                "DEAD",
                "DEAD-DROPPED",
                "BAD-ENTRIES",
                "PAUSED"
            ],
            vec!["emails", "1", "0", "0", "1", "1", "2", "0", "0", "no"],
            vec!["reports", "1", "0", "0", "0", "0", "0", "0", "0", "no"],
        ],
        "{table}"
    );

    // Named queues, one without any keys.
    let named = ns.json(&["queues", "reports", "nothing-here"]);
    assert_eq!(named[0]["queue"], "reports");
    assert_eq!(named[0]["ready"], 1);
    assert_eq!(
        named[1],
        json!({"queue": "nothing-here", "ready": 0, "suspect": 0, "gated": 0, "delayed": 0,
               "in_flight": 0, "dead": 0, "dead_dropped": 0, "bad_entries": 0, "paused": false,
               "paused_since": null})
    );
}

#[test]
fn an_empty_namespace_has_no_queues_workers_or_schedules() {
    let ns = Namespace::new();
    assert_eq!(ns.json(&["queues"]), json!([]));
    assert_eq!(ns.json(&["workers"]), json!([]));
    assert_eq!(ns.json(&["periodic"]), json!([]));
    assert!(ns.ok(&["queues"]).contains("no queues"));
    assert!(ns.ok(&["workers"]).contains("no live workers"));
    assert!(ns.ok(&["periodic"]).contains("no periodic schedules"));
}

#[test]
fn workers_and_periodic_schedules() {
    let ns = Namespace::new();
    let started = Utc::now().trunc_subsecs(0) - chrono::Duration::minutes(5);
    let info = WorkerInfo::new(
        "worker-7",
        "box-1",
        4242,
        vec!["emails".to_owned(), "reports".to_owned()],
        16,
        started,
    )
    .with_running(5);
    ns.rt
        .block_on(
            ns.manager
                .broker()
                .worker_registry()
                .expect("registry")
                .heartbeat(&info, Duration::from_secs(60)),
        )
        .expect("heartbeat");
    let next = Utc::now().trunc_subsecs(0) + chrono::Duration::hours(2);
    ns.rt
        .block_on(
            ns.manager
                .broker()
                .schedule_store()
                .expect("schedules")
                .schedule_begin("nightly-report", Some(next)),
        )
        .expect("schedule");

    let workers = ns.json(&["workers"]);
    assert_eq!(workers.as_array().map(Vec::len), Some(1), "{workers}");
    let w = &workers[0];
    assert_eq!(
        (&w["id"], &w["hostname"], &w["pid"], &w["concurrency"]),
        (&json!("worker-7"), &json!("box-1"), &json!(4242), &json!(16))
    );
    assert_eq!(w["queues"], json!(["emails", "reports"]));
    assert_eq!(w["running"], json!(5));
    assert_eq!(w["started_at"], rfc3339(started));
    let lapses: DateTime<Utc> =
        w["alive_until"].as_str().expect("a time").parse().expect("RFC 3339");
    assert!(lapses > Utc::now(), "a fresh heartbeat lapses in the future: {lapses}");
    let table = ns.ok(&["workers"]);
    assert!(table.starts_with("ID"), "{table}");
    let row: Vec<&str> = table.lines().nth(1).expect("a row").split_whitespace().collect();
    assert_eq!(row[..6], ["worker-7", "box-1", "4242", "emails,reports", "16", "5"], "{table}");

    let schedules = ns.json(&["periodic"]);
    assert_eq!(schedules.as_array().map(Vec::len), Some(1), "{schedules}");
    assert_eq!(schedules[0]["name"], "nightly-report");
    assert_eq!(schedules[0]["last_fire"], Value::Null);
    assert_eq!(schedules[0]["next_fire"], rfc3339(next));
    let table = ns.ok(&["periodic"]);
    let row: Vec<&str> = table.lines().nth(1).expect("a row").split_whitespace().collect();
    assert_eq!(
        (row[0], row[2], row[3]),
        ("nightly-report", "-", rfc3339(next).as_str()),
        "{table}"
    );
}

#[test]
fn dlq_list_requeue_delete_and_purge() {
    let ns = Namespace::new();
    let ids = ns.dead_letters("emails", 4);

    let listed = ns.json(&["dlq", "list", "emails"]);
    assert_eq!(listed["total"], 4);
    let letters = listed["letters"].as_array().expect("letters");
    let mut listed_ids: Vec<String> =
        letters.iter().map(|l| l["id"].as_str().unwrap_or("").to_owned()).collect();
    listed_ids.sort();
    let mut expected: Vec<String> = ids.iter().map(ToString::to_string).collect();
    expected.sort();
    assert_eq!(listed_ids, expected);
    assert!(letters.iter().all(|l| l["task"] == "app.fail"), "{listed}");
    assert!(letters.iter().any(|l| l["reason"] == "boom 3"), "{listed}");
    let page = ns.json(&["dlq", "list", "emails", "--offset", "1", "--limit", "2"]);
    assert_eq!(page["letters"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["letters"][0], letters[1]);
    let table = ns.ok(&["dlq", "list", "emails"]);
    assert!(table.starts_with("ID") && table.contains("boom 0"), "{table}");
    assert!(table.contains("1-4 of 4 dead letters"), "{table}");

    // Requeue one by id: back to ready.
    let first = ids[0].to_string();
    assert!(ns.ok(&["dlq", "requeue", "emails", &first]).contains(&first));
    let stats = ns.stats("emails");
    assert_eq!((stats.ready, stats.dead), (1, 3));
    // It is gone from the dead-letter queue now.
    let out = ns.dmq(&["dlq", "requeue", "emails", &first]);
    assert_error(&out, "holds no dead letter");
    assert_error(&ns.dmq(&["dlq", "delete", "emails", "not-a-uuid"]), "not a task id");

    // Delete one.
    let second = ids[1].to_string();
    assert_eq!(ns.json(&["dlq", "delete", "emails", &second])["deleted"], 1);
    assert_error(&ns.dmq(&["dlq", "delete", "emails", &second]), "holds no dead letter");
    assert_eq!(ns.stats("emails").dead, 2);

    // Requeue the rest to another queue.
    let moved = ns.json(&["dlq", "requeue", "emails", "--all", "--to", "emails-retry"]);
    assert_eq!(moved, json!({"requeued": 2, "to": "emails-retry"}));
    assert_eq!(ns.stats("emails").dead, 0);
    assert_eq!(ns.stats("emails-retry").ready, 2);

    // Purge needs --yes.
    ns.dead_letters("emails", 2);
    assert_error(&ns.dmq(&["dlq", "purge", "emails"]), "--yes");
    assert_eq!(ns.stats("emails").dead, 2, "nothing is purged without --yes");
    assert!(ns.ok(&["dlq", "purge", "emails", "--yes"]).contains("purged 2"));
    assert_eq!(ns.stats("emails").dead, 0);
    assert_eq!(ns.json(&["dlq", "list", "emails"])["total"], 0);
}

#[test]
fn enqueue_sends_json_arguments_as_a_messagepack_tuple() {
    let ns = Namespace::new();
    let out = ns.ok(&[
        "enqueue",
        "emails.send",
        r#"["ann@example.com", 3]"#,
        "--queue",
        "mail",
        "--priority",
        "9",
    ]);
    let id: TaskId = out.trim().parse().expect("prints the task id");
    let claimed = ns.claim("mail", 1);
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].lease.id, id);
    let envelope = Envelope::decode(&claimed[0].payload, 1 << 20).expect("decodes");
    assert_eq!(
        (envelope.task.as_str(), envelope.queue.as_str(), envelope.priority),
        ("emails.send", "mail", 9)
    );
    let args: (String, u32) = rmp_serde::from_slice(&envelope.args).expect("a (String, u32) tuple");
    assert_eq!(args, ("ann@example.com".to_owned(), 3));

    // The queue defaults to a registered task's own (the bench's task is linked into
    // the binary), else to `default`.
    let sent = ns.json(&["enqueue", "dmq.bench.noop", "[1]"]);
    assert_eq!(sent["queue"], "dmq-bench");
    assert_eq!(ns.stats("dmq-bench").ready, 1);
    let sent = ns.json(&["enqueue", "not.registered", "[]"]);
    assert_eq!(sent["queue"], "default");
    assert_eq!(ns.stats("default").ready, 1);

    // --delay and --eta make it delayed.
    let sent = ns.json(&["enqueue", "later", "[]", "--queue", "later", "--delay", "1h"]);
    let eta: DateTime<Utc> = sent["eta"].as_str().expect("an eta").parse().expect("RFC 3339");
    assert!(eta > Utc::now() + chrono::Duration::minutes(59), "{eta}");
    ns.ok(&["enqueue", "later", "[]", "--queue", "later", "--eta", "2099-01-01T00:00:00Z"]);
    let stats = ns.stats("later");
    assert_eq!((stats.ready, stats.delayed), (0, 2));

    assert_error(&ns.dmq(&["enqueue", "t", "[1, 2"]), "not valid JSON");
    assert_error(&ns.dmq(&["enqueue", "t", r#"{"to": "ann"}"#]), "must be a JSON array");
    assert_error(&ns.dmq(&["enqueue", "t", "3"]), "must be a JSON array");
}

/// A task without arguments, run by the test's own in-process worker.
#[dmq_core::task(name = "admin.ping", queue = "ping")]
async fn ping() -> Result<String, dmq_core::TaskError> {
    Ok("pong".to_owned())
}

#[test]
fn enqueue_runs_a_task_without_arguments_given_an_empty_array() {
    let mut ns = Namespace::new();
    let worker = {
        let _runtime = ns.rt.enter();
        ns.manager.worker().queues(["ping"]).start()
    };
    ns.worker = Some(worker);
    // `dmq` does not know the task: the worker alone decodes the `[]`.
    let out = ns.ok(&["enqueue", "admin.ping", "[]", "--queue", "ping"]);
    let id: TaskId = out.trim().parse().expect("prints the task id");
    let value = ns.rt.block_on(ns.manager.result::<String>(id).wait(Duration::from_secs(30)));
    assert_eq!(value.expect("the worker ran it and stored its value"), "pong");
}

#[test]
fn enqueue_refuses_names_a_queue_or_task_cannot_have() {
    let ns = Namespace::new();
    for queue in ["", " ", "a b", "{emails}", "em}ails", "a,b", "tab\there"] {
        let out = ns.dmq(&["enqueue", "t", "[]", "--queue", queue]);
        assert_error(&out, &format!("queue name {queue:?} is not usable"));
    }
    let out = ns.dmq(&["enqueue", "t", "[]", "--queue", &"q".repeat(256)]);
    assert_error(&out, "is 256 bytes long");
    for task in ["", " t", "a,b", "new\nline"] {
        let out = ns.dmq(&["enqueue", task, "[]", "--queue", "q"]);
        assert_error(&out, &format!("task name {task:?} is not usable"));
    }
    assert!(ns.queue_keys().is_empty(), "nothing reached Redis: {:?}", ns.queue_keys());
    // The longest name there may be is fine.
    ns.ok(&["enqueue", "t", "[]", "--queue", &"q".repeat(255)]);
    assert_eq!(ns.stats(&"q".repeat(255)).ready, 1);
}

#[test]
fn enqueue_reads_the_arguments_from_stdin_or_a_file() {
    use std::io::Write as _;
    let ns = Namespace::new();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dmq"))
        .args(["enqueue", "emails.send", "-", "--queue", "mail"])
        .env("DMQ_BROKER_URL", redis_url())
        .env("DMQ_NAMESPACE", &ns.name)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the dmq binary runs");
    let mut stdin = child.stdin.take().expect("a pipe");
    stdin.write_all(br#"["ann@example.com", 3]"#).expect("writes the arguments");
    drop(stdin);
    let out = child.wait_with_output().expect("dmq enqueue ends");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let from_stdin: TaskId =
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("prints the task id");

    // Over the 128 KiB one argument of a command line can hold on Linux.
    let body = "x".repeat(200 * 1024);
    let path = std::env::temp_dir().join(format!("{}.json", ns.name));
    std::fs::write(&path, json!([body, 7]).to_string()).expect("writes the file");
    let out =
        ns.dmq(&["enqueue", "emails.send", &format!("@{}", path.display()), "--queue", "mail"]);
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let from_file: TaskId =
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("prints the task id");

    let claimed = ns.claim("mail", 2);
    assert_eq!(claimed.len(), 2);
    for delivery in claimed {
        let envelope = Envelope::decode(&delivery.payload, 1 << 20).expect("decodes");
        let args: (String, u32) = rmp_serde::from_slice(&envelope.args).expect("a (String, u32)");
        if envelope.id == from_stdin {
            assert_eq!(args, ("ann@example.com".to_owned(), 3));
        } else {
            assert_eq!(envelope.id, from_file);
            assert_eq!((args.0.len(), args.1), (body.len(), 7));
        }
    }

    let missing = std::env::temp_dir().join(format!("{}-missing.json", ns.name));
    let out = ns.dmq(&["enqueue", "t", &format!("@{}", missing.display())]);
    assert_error(&out, &format!("could not read the arguments from {}", missing.display()));
    assert_error(&ns.dmq(&["enqueue", "t", "@"]), "name the file");
    let out = ns.dmq(&["enqueue", "t", &format!("@{}", std::env::temp_dir().display())]);
    assert_error(&out, "could not read the arguments from");
}

#[test]
fn usage_errors_are_one_error_line_with_status_1() {
    for (args, expected) in [
        (&["enqueue"][..], "<TASK>"),
        (&["enqueue", "t"][..], "<JSON_ARGS>"),
        (&["enqueue", "t", "[]", "--priority", "10"][..], "10"),
        (&["enqueue", "t", "[]", "--colour", "red"][..], "--colour"),
        (&["nope"][..], "nope"),
        (&[][..], "bench, worker, tasks"),
        (&["dlq"][..], "list, requeue, delete, purge"),
        (&["worker", "--workers", "2"][..], "--tasks"),
    ] {
        let out = dmq_with(args, &[]);
        assert_error(&out, expected);
        assert!(out.stdout.is_empty(), "dmq {args:?} printed {:?}", out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("usage: dmq"), "dmq {args:?}: {stderr}");
    }
    // Help and the version are no errors: on stdout, status 0, as clap prints them.
    for args in [&["--help"][..], &["enqueue", "--help"][..], &["help", "enqueue"][..]] {
        let out = dmq_with(args, &[]);
        assert_eq!(out.status.code(), Some(0), "dmq {args:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("Usage: dmq") && stdout.lines().count() > 5, "{stdout}");
        assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let out = dmq_with(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("dmq {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn result_shows_the_stored_outcome() {
    let ns = Namespace::new();
    let ttl = Duration::from_secs(600);
    let ok = TaskId::new();
    let value = rmp_serde::to_vec(&("done", 42, vec![1.5])).expect("encodes");
    let outcome = TaskOutcome::succeeded(value, 2, Utc::now());
    ns.rt.block_on(ns.backend.store(ok, &outcome, ttl)).expect("stores");
    let failed = TaskId::new();
    let outcome = TaskOutcome::failed(FailureKind::Fatal, "no such user", 1, None);
    ns.rt.block_on(ns.backend.store(failed, &outcome, ttl)).expect("stores");

    let shown = ns.json(&["result", &ok.to_string()]);
    assert_eq!(shown["state"], "succeeded");
    assert_eq!(shown["attempts"], 2);
    assert_eq!(shown["value"], json!(["done", 42, [1.5]]));
    assert_eq!(shown["failure"], Value::Null);
    let text = ns.ok(&["result", &ok.to_string()]);
    assert!(text.contains("succeeded") && text.contains(r#"["done",42,[1.5]]"#), "{text}");

    let shown = ns.json(&["result", &failed.to_string()]);
    assert_eq!(shown["state"], "failed");
    assert_eq!(shown["failure"], json!({"kind": "fatal", "message": "no such user"}));
    assert_eq!(shown["value"], Value::Null);
    let text = ns.ok(&["result", &failed.to_string()]);
    assert!(text.contains("fatal") && text.contains("no such user"), "{text}");

    let missing = TaskId::new().to_string();
    assert_error(&ns.dmq(&["result", &missing]), "no result stored");
    assert_error(&ns.dmq(&["result", &missing, "--wait", "200ms"]), "after waiting 200ms");
    assert_error(&ns.dmq(&["result", "nope"]), "not a task id");

    // --wait picks up a result stored while it waits: stored only once the dmq
    // process listens for results (it subscribes to the namespace's results channel).
    let late = TaskId::new();
    let waiting = Command::new(env!("CARGO_BIN_EXE_dmq"))
        .args(["result", &late.to_string(), "--wait", "20s", "--json"])
        .env("DMQ_BROKER_URL", redis_url())
        .env("DMQ_NAMESPACE", &ns.name)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the dmq binary runs");
    let channel = dmq_redis::Keys::new(ns.name.clone()).results_channel();
    ns.rt.block_on(async {
        let client = redis::Client::open(redis_url()).expect("a redis url");
        let mut conn = client.get_multiplexed_async_connection().await.expect("connects");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, listeners): (String, u64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn)
                .await
                .expect("PUBSUB NUMSUB");
            if listeners > 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "dmq result never listened");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let outcome =
            TaskOutcome::succeeded(rmp_serde::to_vec(&7).expect("encodes"), 1, Utc::now());
        ns.backend.store(late, &outcome, Duration::from_secs(600)).await.expect("stores");
    });
    let out = waiting.wait_with_output().expect("dmq result ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(shown["value"], 7);
}

#[test]
fn errors_are_one_line_and_never_a_panic() {
    for args in [
        ["queues", "--broker", "memory://"].as_slice(),
        ["dlq", "list", "q", "--broker", "memory://"].as_slice(),
    ] {
        assert_error(&dmq_with(args, &[]), "need a shared broker");
    }
    assert_error(&dmq_with(&["workers", "--broker", "nope://host"], &[]), "unsupported broker URL");
    assert_error(&dmq_with(&["periodic", "--broker", "redis://127.0.0.1:1"], &[]), "127.0.0.1:1");
    assert_error(
        &dmq_with(&["dlq", "purge", "q", "--broker", "redis://127.0.0.1:1"], &[]),
        "--yes",
    );
    let password = dmq_with(&["queues", "--broker", "redis://:hunter2@127.0.0.1:1"], &[]);
    assert_error(&password, "127.0.0.1:1");
    assert!(
        !String::from_utf8_lossy(&password.stderr).contains("hunter2"),
        "the password is hidden"
    );
    assert_error(
        &dmq_with(&["enqueue", "t", "not json", "--broker", "redis://127.0.0.1:1"], &[]),
        "not valid JSON",
    );
    assert_error(
        &dmq_with(&["queues", "--namespace", "a b"], &[("DMQ_BROKER_URL", &redis_url())]),
        "namespace",
    );
}

#[test]
fn purge_deletes_the_waiting_jobs_once_confirmed() {
    let ns = Namespace::new();
    for _ in 0..3 {
        ns.ok(&["enqueue", "reports.build", "[]", "--queue", "reports"]);
    }
    ns.ok(&["enqueue", "reports.build", "[]", "--queue", "reports", "--delay", "1h"]);
    let stats = ns.stats("reports");
    assert_eq!((stats.ready, stats.delayed), (3, 1));
    assert_error(&ns.dmq(&["purge", "reports"]), "--yes");
    assert_eq!(ns.stats("reports").ready, 3, "nothing is purged without --yes");
    assert_eq!(ns.json(&["purge", "reports", "--yes"])["purged"], 4);
    let stats = ns.stats("reports");
    assert_eq!((stats.ready, stats.delayed), (0, 0));
}

#[test]
fn job_finds_a_job_in_each_state() {
    let ns = Namespace::new();
    let ready = ns.enqueue("reports.build", "reports", None);
    let later = Utc::now() + chrono::Duration::hours(1);
    let delayed = ns.enqueue("reports.build", "reports", Some(later));
    let dead = ns.dead_letters("emails", 1)[0];
    let running = ns.enqueue("app.slow", "slow", None);
    let held = ns.claim("slow", 1);
    assert_eq!(held[0].lease.id, running);

    let shown = ns.json(&["job", &ready.to_string()]);
    assert_eq!(
        (shown["queue"].as_str(), shown["state"].as_str()),
        (Some("reports"), Some("ready"))
    );
    assert_eq!(shown["task"], "reports.build");
    assert_eq!(shown["attempt"], 1);
    let shown = ns.json(&["job", &delayed.to_string()]);
    assert_eq!(shown["state"], "delayed");
    assert!(
        shown["at"]
            .as_str()
            .is_some_and(|t| t.starts_with(&later.format("%Y-%m-%dT%H").to_string()))
    );
    let shown = ns.json(&["job", &dead.to_string()]);
    assert_eq!(
        (shown["queue"].as_str(), shown["state"].as_str()),
        (Some("emails"), Some("dead-lettered"))
    );
    assert_eq!(shown["reason"], "boom 0");
    let shown = ns.json(&["job", &running.to_string()]);
    assert_eq!(shown["state"], "in flight");
    let human = ns.ok(&["job", &ready.to_string()]);
    assert!(
        human.contains("state:       ready") && human.contains("task:        reports.build"),
        "{human}"
    );

    assert_error(&ns.dmq(&["job", &TaskId::new().to_string()]), "no job");
    assert_error(&ns.dmq(&["job", "nope"]), "not a task id");
}

#[test]
fn worker_errors_are_one_line_that_say_what_to_do() {
    // A task binary that is nowhere: the error lists where it looked.
    let out = dmq_with(&["worker", "--tasks", "no-such-dmq-app", "--workers", "2"], &[]);
    assert_error(&out, "no task binary named \"no-such-dmq-app\"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PATH") && stderr.contains("debug"), "{stderr}");
    // The dmq binary itself links no task of the user's.
    assert_error(&dmq_with(&["worker", "--broker", "memory://"], &[]), "links no #[task]");
    // --workers goes with --tasks.
    assert_error(&dmq_with(&["worker", "--workers", "2"], &[]), "--tasks");
}

#[test]
fn the_supervisor_gives_up_on_processes_that_exit_at_once() {
    // The dmq binary links no task of the user's: every worker process it starts as
    // a task binary exits at once, and the supervisor stops restarting it.
    let dmq = env!("CARGO_BIN_EXE_dmq");
    let started = std::time::Instant::now();
    let out = dmq_with(&["worker", "--tasks", dmq, "--workers", "1", "--broker", "memory://"], &[]);
    // Its log and the processes' errors come first; its own error is the last line.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("exited at once 5 times in a row"),
        "{stderr}"
    );
    assert!(stderr.contains("links no #[task]"), "the processes say why: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(60), "gave up after {:?}", started.elapsed());
}

/// Runs `dmq doctor` with `args` and `--json`, expecting exit status `code`; returns
/// the JSON it printed and its stderr.
fn doctor_json(ns: &Namespace, args: &[&str], code: i32) -> (Value, String) {
    let mut all = vec!["doctor"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = ns.dmq(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "dmq {all:?}: {stdout}{stderr}");
    let value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("dmq {all:?} printed no JSON ({e}): {stdout}"));
    (value, stderr)
}

#[test]
fn doctor_finds_stranded_jobs_and_puts_them_back_with_fix() {
    let ns = Namespace::new();
    // An empty namespace, then a healthy queue: nothing to do, exit 0.
    assert_eq!(ns.json(&["doctor"]), json!({"queues": [], "stranded": 0, "put_back": 0}));
    let kept = ns.enqueue("reports.build", "reports", None);
    ns.enqueue("app.send", "emails", None);
    let healthy = ns.ok(&["doctor"]);
    assert!(healthy.contains("2 queues checked: no stranded jobs"), "{healthy}");

    // A job whose envelope is stored but which is in no list: stranded.
    let stranded = ns.enqueue("reports.build", "reports", None);
    let removed: i64 = ns.redis(
        redis::cmd("LREM").arg(ns.keys("reports").ready(5)).arg(0).arg(stranded.to_string()),
    );
    assert_eq!(removed, 1, "the job was in the ready list of priority 5");
    let shown = ns.json(&["job", &stranded.to_string()]);
    assert_eq!(shown["state"], "stranded", "{shown}");
    assert!(
        ns.ok(&["job", &stranded.to_string()]).contains("`dmq doctor --fix` puts it back"),
        "dmq job says how to repair it"
    );

    // Found and named, not fixed without --fix: exit 1, saying to run with --fix.
    let out = ns.dmq(&["doctor"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_error(&out, "1 stranded job found and not put back");
    assert_error(&out, "--fix");
    let row: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("reports "))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(row, ["reports", "1", "0", "0", "0"], "{stdout}");
    assert!(
        stdout.contains(&format!("stranded in reports: {stranded} (not put back)")),
        "{stdout}"
    );
    let (report, stderr) = doctor_json(&ns, &[], 1);
    assert!(stderr.starts_with("error: ") && stderr.contains("--fix"), "{stderr}");
    assert_eq!(
        report,
        json!({
            "queues": [
                {"queue": "emails", "stranded": [], "fixed": false, "suspect": 0, "bad_entries": 0},
                {"queue": "reports", "stranded": [stranded.to_string()], "fixed": false,
                 "suspect": 0, "bad_entries": 0},
            ],
            "stranded": 1,
            "put_back": 0,
        })
    );
    assert_eq!(ns.stats("reports").ready, 1, "only looking changes nothing");
    // A queue named alone: only it is checked.
    let (report, _) = doctor_json(&ns, &["emails"], 0);
    assert_eq!(report["queues"].as_array().map(Vec::len), Some(1), "{report}");

    // --fix puts it back at the front of its ready list: exit 0.
    let (report, _) = doctor_json(&ns, &["reports", "--fix"], 0);
    assert_eq!(report["queues"][0]["stranded"], json!([stranded.to_string()]));
    assert_eq!((&report["queues"][0]["fixed"], &report["put_back"]), (&json!(true), &json!(1)));
    assert_eq!(ns.json(&["job", &stranded.to_string()])["state"], "ready");
    let fixed = ns.ok(&["doctor"]);
    assert!(fixed.contains("no stranded jobs"), "{fixed}");
    let claimed: Vec<TaskId> = ns.claim("reports", 2).iter().map(|d| d.lease.id).collect();
    assert_eq!(claimed, [stranded, kept], "the job put back is claimed, first");
}

#[test]
fn queues_doctor_and_job_show_suspect_jobs_and_bad_entries() {
    let ns = Namespace::new();
    let suspect = ns.enqueue("app.crash", "crashy", None);
    ns.enqueue("app.send", "crashy", None);
    // A worker claims it with a short lease and is lost: the reaper takes it back as
    // suspect.
    let broker = ns.manager.broker();
    let queues = ["crashy".to_owned()];
    let claimed = ns
        .rt
        .block_on(broker.claim("w", &queues, 1, Duration::from_millis(100), Duration::from_secs(1)))
        .expect("claims");
    assert_eq!(claimed.iter().map(|d| d.lease.id).collect::<Vec<_>>(), [suspect]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        ns.rt.block_on(broker.worker_registry().expect("registry").reap(&queues)).expect("reaps"),
        1
    );
    // An entry another program wrote into the ready list: dropped and counted by a claim.
    let _: i64 = ns.redis(redis::cmd("RPUSH").arg(ns.keys("bad").ready(5)).arg("not a job"));
    ns.enqueue("app.send", "bad", None);
    assert_eq!(ns.claim("bad", 10).len(), 1, "the good job is claimed");

    let list = ns.json(&["queues"]);
    assert_eq!((&list[0]["queue"], &list[0]["bad_entries"]), (&json!("bad"), &json!(1)), "{list}");
    assert_eq!(
        list[1],
        json!({"queue": "crashy", "ready": 2, "suspect": 1, "gated": 0, "delayed": 0,
               "in_flight": 0, "dead": 0, "dead_dropped": 0, "bad_entries": 0, "paused": false,
               "paused_since": null})
    );
    let table = ns.ok(&["queues"]);
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0][2], "SUSPECT", "{table}");
    assert_eq!(rows[1], ["bad", "0", "0", "0", "0", "1", "0", "0", "1", "no"], "{table}");
    assert_eq!(rows[2], ["crashy", "2", "1", "0", "0", "0", "0", "0", "0", "no"], "{table}");

    let report = ns.json(&["doctor"]);
    assert_eq!(
        (&report["queues"][0]["bad_entries"], &report["queues"][1]["suspect"]),
        (&json!(1), &json!(1))
    );
    let table = ns.ok(&["doctor"]);
    assert!(
        table.lines().any(|l| l.split_whitespace().eq(["crashy", "0", "0", "1", "0"])),
        "{table}"
    );

    let shown = ns.json(&["job", &suspect.to_string()]);
    assert_eq!((&shown["state"], &shown["suspect"]), (&json!("ready"), &json!(true)), "{shown}");
    let human = ns.ok(&["job", &suspect.to_string()]);
    assert!(human.contains("state:       ready (suspect: runs alone)"), "{human}");
    let other = ns.enqueue("app.send", "crashy", None);
    assert_eq!(ns.json(&["job", &other.to_string()])["suspect"], false);
}

/// The local Redis Cluster: `DMQ_CLUSTER_URL` (set by scripts/test), or the one
/// `scripts/ensure-redis-cluster` starts when none runs.
fn cluster_url() -> String {
    if let Ok(url) = std::env::var("DMQ_CLUSTER_URL") {
        return url;
    }
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-redis-cluster");
    let out = Command::new(&script).output().expect("run scripts/ensure-redis-cluster");
    assert!(out.status.success(), "scripts/ensure-redis-cluster failed");
    String::from_utf8_lossy(&out.stdout).lines().last().expect("a URL").trim().to_owned()
}

/// The admin commands on a Redis Cluster: jobs enqueued to queues on different slots
/// are listed, found by id and purged, all through `--broker redis+cluster://...`.
#[test]
fn the_admin_commands_work_on_a_redis_cluster() {
    let url = cluster_url();
    let namespace = format!("dmq-test-{}", uuid::Uuid::new_v4());
    // Deletes the namespace's keys at the end, passed or failed.
    struct Cleanup(String, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let keys = dmq_redis::Keys::new(self.1.clone());
            let runtime = tokio::runtime::Runtime::new().expect("a runtime");
            if let Err(e) = runtime.block_on(dmq_redis::delete_namespace_at(&self.0, &keys)) {
                eprintln!("could not delete namespace {}: {e}", self.1);
            }
        }
    }
    let _cleanup = Cleanup(url.clone(), namespace.clone());
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--broker", &url, "--namespace", &namespace]);
        let out = dmq_with(&all, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "dmq {all:?}: {}", String::from_utf8_lossy(&out.stderr));
        stdout
    };
    let mut ids = Vec::new();
    for queue in ["emails", "emails", "reports"] {
        ids.push(run(&["enqueue", "app.send", "[1]", "--queue", queue]).trim().to_owned());
    }
    let slot = |queue: &str| {
        dmq_redis::cluster_slot(
            dmq_redis::Keys::new(namespace.clone()).queue(queue).signal().as_bytes(),
        )
    };
    assert_ne!(slot("emails"), slot("reports"), "the two queues share a slot");
    let listed: Value = serde_json::from_str(run(&["queues", "--json"]).trim()).expect("JSON");
    let ready: Vec<(String, u64)> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|q| {
            (q["queue"].as_str().unwrap_or_default().to_owned(), q["ready"].as_u64().unwrap_or(99))
        })
        .collect();
    assert_eq!(ready, [("emails".to_owned(), 2), ("reports".to_owned(), 1)]);
    let found = run(&["job", &ids[2]]);
    assert!(found.contains("reports") && found.contains("ready"), "{found}");
    run(&["purge", "emails", "--yes"]);
    let listed: Value = serde_json::from_str(run(&["queues", "--json"]).trim()).expect("JSON");
    assert_eq!(listed[0]["ready"], 0, "{listed}");
    assert_eq!(listed[1]["ready"], 1, "{listed}");

    let refused = dmq_with(&["queues", "--broker", "redis+cluster://127.0.0.1"], &[]);
    assert_error(&refused, "is not a host:port");
}

/// The names of the queues of a `dmq queues --json` listing, in order.
fn queue_names(listing: &Value) -> Vec<&str> {
    listing.as_array().expect("a list").iter().map(|q| q["queue"].as_str().unwrap_or("")).collect()
}

/// A partitioned queue shows as one row adding up its partitions, or as a row per
/// partition with --partitions; naming it shows its partitions.
#[test]
fn queues_folds_a_partitioned_queue_unless_asked_for_its_partitions() {
    let ns = Namespace::new();
    // Jobs as a manager with `partitions("parts", 3)` places them: on parts#0..parts#2.
    for (partition, jobs) in [(0, 2), (1, 1), (2, 3)] {
        let queue = dmq_core::partition_name("parts", partition);
        let jobs: Vec<dmq_core::Job> = (0..jobs)
            .map(|_| dmq_core::Job::new(TaskId::new(), queue.clone(), 5, None, vec![0x90]))
            .collect();
        ns.rt.block_on(ns.manager.broker().enqueue_batch(jobs)).expect("enqueues");
    }
    ns.enqueue("app.send", "plain", None);

    let folded = ns.json(&["queues"]);
    assert_eq!(folded[0]["queue"], "parts", "{folded}");
    assert_eq!((folded[0]["partitions"].as_u64(), folded[0]["ready"].as_u64()), (Some(3), Some(6)));
    assert_eq!(folded[1]["queue"], "plain");
    assert!(folded[1].get("partitions").is_none(), "{folded}");
    let table = ns.ok(&["queues"]);
    assert!(table.contains("parts (3 partitions)"), "{table}");

    let unfolded = ns.json(&["queues", "--partitions"]);
    let names = queue_names(&unfolded);
    assert_eq!(names, ["parts#0", "parts#1", "parts#2", "plain"]);
    assert_eq!(unfolded[2]["ready"], 3);

    let named = ns.json(&["queues", "parts"]);
    assert_eq!(named.as_array().map(Vec::len), Some(1), "{named}");
    assert_eq!(named[0]["ready"], 6);

    // `dmq enqueue` to the queue goes to one of the partitions the registry lists, and
    // with a partition key to that key's.
    ns.ok(&["enqueue", "app.send", "[1]", "--queue", "parts"]);
    let key_home = dmq_core::partition_name("parts", dmq_core::partition_of_key("user-9", 3));
    for _ in 0..2 {
        ns.ok(&["enqueue", "app.send", "[1]", "--queue", "parts", "--partition-key", "user-9"]);
    }
    let unfolded = ns.json(&["queues", "--partitions"]);
    let names = queue_names(&unfolded);
    assert_eq!(
        names,
        ["parts#0", "parts#1", "parts#2", "plain"],
        "nothing went to \"parts\" itself"
    );
    let total: u64 = unfolded.as_array().expect("a list")[..3]
        .iter()
        .map(|q| q["ready"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 9);
    let home = unfolded
        .as_array()
        .expect("a list")
        .iter()
        .find(|q| q["queue"] == key_home.as_str())
        .expect("the key's partition");
    let before = [2, 1, 3][usize::from(dmq_core::partition_of_key("user-9", 3))];
    assert!(home["ready"].as_u64().unwrap_or(0) >= before + 2, "{unfolded}");
}

/// `dmq pause` pauses a partitioned queue whole (each partition the registry lists) and
/// a partition alone by its name; `dmq queues` says how many of a queue's partitions
/// are paused; claims take nothing from a paused partition; `dmq resume` undoes it; a
/// name no queue can have is refused, saying why.
#[test]
fn pause_and_resume_a_partitioned_queue_whole_or_one_partition() {
    let ns = Namespace::new();
    for partition in 0..2 {
        let queue = dmq_core::partition_name("parts", partition);
        let job = dmq_core::Job::new(TaskId::new(), queue, 5, None, vec![0x90]);
        ns.rt.block_on(ns.manager.broker().enqueue(job)).expect("enqueue");
    }
    let one = ns.json(&["pause", "parts#1"]);
    assert_eq!((&one["queue"], &one["changed"]), (&json!("parts#1"), &json!(true)));
    let folded = ns.json(&["queues", "parts"]);
    assert_eq!((&folded[0]["paused"], &folded[0]["paused_partitions"]), (&json!(false), &json!(1)));
    let table = ns.ok(&["queues"]);
    let row = table.lines().find(|l| l.starts_with("parts")).unwrap_or_default();
    assert!(row.trim_end().ends_with("1 of 2"), "{table}");
    assert_eq!(ns.claim("parts#1", 10).len(), 0, "a paused partition hands out nothing");

    let whole = ns.json(&["pause", "parts"]);
    assert_eq!(whole["changed"], true, "parts#0 was running");
    assert!(ns.ok(&["pause", "parts"]).contains("paused already"));
    let folded = ns.json(&["queues", "parts"]);
    assert_eq!((&folded[0]["paused"], &folded[0]["paused_partitions"]), (&json!(true), &json!(2)));
    assert!(folded[0]["paused_since"].is_string(), "{folded}");
    assert_eq!(ns.claim("parts#0", 10).len(), 0);

    assert_eq!(ns.json(&["resume", "parts"])["changed"], true);
    let folded = ns.json(&["queues", "parts"]);
    assert_eq!((&folded[0]["paused"], &folded[0]["paused_partitions"]), (&json!(false), &json!(0)));
    assert_eq!(ns.claim("parts#0", 10).len() + ns.claim("parts#1", 10).len(), 2);
    assert!(ns.ok(&["resume", "parts"]).contains("was not paused"));

    let refused = ns.dmq(&["pause", "bad name"]);
    assert_error(&refused, "queue name \"bad name\"");
    // A partition's number written otherwise than dmq writes it names that partition,
    // not a queue of its own.
    assert_eq!(ns.json(&["pause", "parts#01"])["changed"], true);
    let unfolded = ns.json(&["queues", "--partitions"]);
    assert_eq!(queue_names(&unfolded), ["parts#0", "parts#1"], "{unfolded}");
    assert_eq!((&unfolded[0]["paused"], &unfolded[1]["paused"]), (&json!(false), &json!(true)));
    assert_eq!(ns.json(&["resume", "parts#01"])["changed"], true);
    // A queue nothing used yet pauses, saying so on stderr (a typo shows).
    let fresh = ns.dmq(&["pause", "not-yet"]);
    assert!(fresh.status.success());
    let note = String::from_utf8_lossy(&fresh.stderr);
    assert!(note.contains("no job and no worker used queue \"not-yet\" yet"), "{note}");
    assert_eq!(ns.json(&["pause", "not-yet"])["known"], true, "registered by its pause");
}

/// `dmq queue delete` asks for --yes, refuses while a worker holds a job of the queue
/// (saying how many, and --force), deletes the queue whole with --force, after which
/// `dmq queues` no longer lists it and the worker's lease is lost.
#[test]
fn queue_delete_asks_for_yes_and_refuses_jobs_in_flight_unless_forced() {
    let ns = Namespace::new();
    ns.dead_letters("reports", 1);
    for _ in 0..3 {
        ns.enqueue("reports.build", "reports", None);
    }
    ns.enqueue("reports.build", "reports", Some(Utc::now() + chrono::Duration::hours(1)));
    ns.enqueue("app.send", "emails", None);
    let held = ns.claim("reports", 1);
    assert_eq!(held.len(), 1);
    let figures = |queue: &str| {
        let s = ns.stats(queue);
        (s.ready, s.delayed, s.in_flight, s.dead)
    };
    assert_eq!(figures("reports"), (2, 1, 1, 1));

    let unconfirmed = ns.dmq(&["queue", "delete", "reports"]);
    assert_error(&unconfirmed, "add --yes to confirm");
    assert_eq!(figures("reports"), (2, 1, 1, 1), "nothing is deleted without --yes");

    let busy = ns.dmq(&["queue", "delete", "reports", "--yes"]);
    assert_error(&busy, "queue \"reports\" has 1 job in flight");
    assert_error(&busy, "--force");
    assert_eq!(figures("reports"), (2, 1, 1, 1), "nothing is deleted while a job is in flight");
    assert_eq!(queue_names(&ns.json(&["queues"])), ["emails", "reports"]);

    let deleted = ns.json(&["queue", "delete", "reports", "--yes", "--force"]);
    assert_eq!(
        deleted,
        json!({"queue": "reports", "waiting": 2, "delayed": 1, "dead_letters": 1, "in_flight": 1})
    );
    assert_eq!(queue_names(&ns.json(&["queues"])), ["emails"]);
    assert_eq!(figures("reports"), (0, 0, 0, 0));
    assert_eq!(figures("emails"), (1, 0, 0, 0), "another queue is left alone");
    let ack = ns.rt.block_on(ns.manager.broker().ack(&held[0].lease));
    assert!(matches!(ack, Err(dmq_core::Error::LeaseLost { .. })), "{ack:?}");

    let again = ns.ok(&["queue", "delete", "reports", "--yes"]);
    assert_eq!(
        again.trim(),
        "deleted queue \"reports\": 0 waiting, 0 delayed, 0 dead letters, 0 in flight"
    );
}

/// `dmq cancel` removes a waiting job (ready or delayed) and stores its cancelled
/// result; a running job is left alone, and a job the queue does not hold (unknown,
/// cancelled already, dead-lettered, in a partition named by its queue's name) changes
/// nothing: those exit with status 1 and a message saying which.
#[test]
fn cancel_removes_a_waiting_job_and_says_why_it_did_not_otherwise() {
    let ns = Namespace::new();
    let ready = ns.enqueue("reports.build", "reports", None);
    let kept = ns.enqueue("reports.build", "reports", None);
    let delayed =
        ns.enqueue("reports.build", "reports", Some(Utc::now() + chrono::Duration::hours(1)));
    let running = ns.enqueue("app.slow", "slow", None);
    let held = ns.claim("slow", 1);
    assert_eq!(held[0].lease.id, running);
    let dead = ns.dead_letters("emails", 1)[0];
    // A job as a manager with `partitions("mail", 2)` places it.
    let parted = TaskId::new();
    let job = dmq_core::Job::new(parted, "mail#1", 5, None, vec![0x90]);
    ns.rt.block_on(ns.manager.broker().enqueue(job)).expect("enqueues");

    let out = ns.ok(&["cancel", "reports", &ready.to_string()]);
    assert_eq!(
        out.trim(),
        format!("cancelled job {ready} of queue \"reports\" (task reports.build): it will not run")
    );
    let removed = ns.json(&["cancel", "reports", &delayed.to_string()]);
    assert_eq!(
        removed,
        json!({"id": delayed.to_string(), "queue": "reports", "outcome": "removed"})
    );
    let stats = ns.stats("reports");
    assert_eq!((stats.ready, stats.delayed), (1, 0), "job {kept} stays");
    let result = ns.json(&["result", &ready.to_string()]);
    assert_eq!(
        (result["state"].as_str(), result["attempts"].as_u64()),
        (Some("cancelled"), Some(0))
    );

    assert_error(&ns.dmq(&["cancel", "slow", &running.to_string()]), "is running");
    assert_eq!(ns.stats("slow").in_flight, 1, "the running job is left alone");
    ns.rt.block_on(ns.manager.broker().ack(&held[0].lease)).expect("its lease still holds");
    assert_error(&ns.dmq(&["cancel", "reports", &ready.to_string()]), "no job");
    assert_error(&ns.dmq(&["cancel", "reports", &TaskId::new().to_string()]), "no job");
    assert_error(&ns.dmq(&["cancel", "emails", &dead.to_string()]), "dmq dlq delete");
    assert_eq!(ns.stats("emails").dead, 1, "the dead letter stays");
    assert_error(&ns.dmq(&["cancel", "mail", &parted.to_string()]), "it is in queue \"mail#1\"");
    ns.ok(&["cancel", "mail#1", &parted.to_string()]);
    assert_error(&ns.dmq(&["cancel", "reports", "nope"]), "not a task id");

    let out = ns.dmq(&["cancel", "slow", &TaskId::new().to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(printed["outcome"], "not_found");
}

#[test]
fn enqueue_with_an_id_of_ones_own_enqueues_once_however_often_it_is_run() {
    let mut ns = Namespace::new();
    let id = TaskId::new().to_string();
    let first = ns.ok(&["enqueue", "admin.ping", "[]", "--queue", "ping", "--id", &id]);
    assert_eq!(first.trim(), id, "prints the id it was given");
    // A script that retries (after a timeout, say) runs the same command again.
    let again = ns.json(&["enqueue", "admin.ping", "[]", "--queue", "ping", "--id", &id]);
    assert_eq!(again["id"], id.as_str());
    assert_eq!(ns.stats("ping").ready, 1, "one job");

    let worker = {
        let _runtime = ns.rt.enter();
        ns.manager.worker().queues(["ping"]).start()
    };
    ns.worker = Some(worker);
    let task_id: TaskId = id.parse().expect("a task id");
    let value = ns.rt.block_on(ns.manager.result::<String>(task_id).wait(Duration::from_secs(30)));
    assert_eq!(value.expect("the job ran"), "pong");
    // Known after it ran, too: nothing is enqueued again.
    ns.ok(&["enqueue", "admin.ping", "[]", "--queue", "ping", "--id", &id]);
    let stats = ns.stats("ping");
    assert_eq!((stats.ready, stats.in_flight), (0, 0), "{stats:?}");

    let out = ns.dmq(&["enqueue", "admin.ping", "[]", "--queue", "ping", "--id", "order-42"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a job id is a UUID") && stderr.contains("--id"), "{stderr}");
}

#[test]
fn limits_shows_what_each_gate_holds_back_and_the_quotas() {
    let ns = Namespace::new();
    assert!(ns.ok(&["limits"]).contains("no gates"));
    for tenant in ["t1", "t1", "t1", "t2"] {
        let mut envelope =
            Envelope::new("app.report", "reports", rmp_serde::to_vec(&(1u32,)).expect("encodes"));
        let mut limits = dmq_core::JobLimits::default();
        limits.concurrency = Some(1);
        limits.key = Some(tenant.to_owned());
        envelope.limits = Some(limits);
        ns.rt.block_on(ns.manager.enqueue_envelope(envelope)).expect("enqueues");
    }
    assert_eq!(ns.claim("reports", 10).len(), 2, "one per tenant");
    let quota_set = ns.json(&["quota", "set", &ns.name, "500/h", "--key", "t1"]);
    assert_eq!(quota_set["changed"], true, "{quota_set}");

    let shown = ns.json(&["limits"]);
    let gates = shown["gates"].as_array().expect("gates");
    assert_eq!(gates.len(), 2, "{shown}");
    assert_eq!(
        (&gates[0]["queue"], &gates[0]["gate"], &gates[0]["concurrency"]),
        (&json!("reports"), &json!("app.report[t1]"), &json!(1)),
        "{shown}"
    );
    assert_eq!((&gates[0]["running"], &gates[0]["waiting"]), (&json!(1), &json!(2)), "{shown}");
    assert_eq!(gates[0]["holding_back"], "concurrency: 1 of 1 running", "{shown}");
    assert_eq!((&gates[1]["waiting"], &gates[1]["holding_back"]), (&json!(0), &Value::Null));
    assert_eq!(
        (&shown["quotas"][0]["key"], &shown["quotas"][0]["quota"]),
        (&json!("t1"), &json!("500/h")),
        "{shown}"
    );
    let table = ns.ok(&["limits", "reports"]);
    assert!(
        table.contains("app.report[t1]") && table.contains("concurrency: 1 of 1 running"),
        "{table}"
    );
    assert!(table.contains("QUOTA-KEY") && table.contains("500/h"), "{table}");
}
