//! Every script dmq runs must touch one Redis Cluster slot: the keys it is handed all
//! hash alike (their `{hash tag}`). This runs each broker and backend operation against
//! a real Redis while `MONITOR` records the commands, and checks the keys of every
//! `EVALSHA`/`EVAL` in the test's namespace.
//!
//! What still crosses slots is listed in `KNOWN_CROSSING` (issue 15 removes them one by
//! one): a new crossing fails the test, and so does a listed one that no longer
//! crosses, so the list cannot go stale.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use dmq_core::{
    Broker, BrokerAdmin, EventStream, EventsFrom, Job, ResultBackend, ScheduleStore, TaskId,
    TaskOutcome, WorkerInfo, WorkerRegistry,
};
use dmq_redis::{RedisBackend, RedisBroker};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Operations whose script still takes keys of more than one slot today.
const KNOWN_CROSSING: &[&str] = &["enqueue a batch across two queues"];

/// Operations with a transaction or a multi-key command over more than one slot today.
const KNOWN_CROSSING_COMMANDS: &[&str] = &["claim waiting on two empty queues"];

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the text between
/// the first `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &key[open + 1..open + 1 + close])
    });
    let bytes = tagged.unwrap_or(key);
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

#[test]
fn slots_match_redis_cluster_s_own_examples() {
    // From the Redis Cluster specification.
    // CRC16 of "123456789" is 0x31C3, below 16384.
    assert_eq!(slot(b"123456789"), 0x31C3);
    assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
    assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
    assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"), "an empty tag hashes the whole key");
    assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
}

/// The quoted words of one `MONITOR` line, unescaped.
fn words(line: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut chars = line.bytes().peekable();
    while let Some(c) = chars.next() {
        if c != b'"' {
            continue;
        }
        let mut word = Vec::new();
        while let Some(c) = chars.next() {
            match c {
                b'"' => break,
                b'\\' => match chars.next() {
                    Some(b'x') => {
                        let hex: Vec<u8> = chars.by_ref().take(2).collect();
                        let text = String::from_utf8_lossy(&hex).into_owned();
                        word.push(u8::from_str_radix(&text, 16).unwrap_or(b'?'));
                    }
                    Some(b'n') => word.push(b'\n'),
                    Some(b'r') => word.push(b'\r'),
                    Some(b't') => word.push(b'\t'),
                    Some(other) => word.push(other),
                    None => break,
                },
                other => word.push(other),
            }
        }
        out.push(word);
    }
    out
}

/// A command as `MONITOR` showed it: the client that sent it, and its words.
type Sent = (String, Vec<Vec<u8>>);

/// One unit of work Redis ran for the test's namespace: a script, a transaction
/// (`MULTI` ... `EXEC`), or a lone command.
#[derive(Debug)]
struct Unit {
    /// `evalsha`, `multi`, or the command's name.
    kind: String,
    keys: Vec<Vec<u8>>,
}

/// Runs every broker and backend operation against the test Redis while `MONITOR`
/// records what it is sent, and returns, for each operation, the units of work it
/// made that touch the test's namespace.
async fn record() -> BTreeMap<String, Vec<Unit>> {
    let namespace = common::fresh_namespace();
    let _cleanup = common::Cleanup::of(&namespace);
    let url = common::redis_url();
    let mut monitor = Command::new("redis-cli")
        .args(["-u", &url, "monitor"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run redis-cli monitor");
    let mut lines = BufReader::new(monitor.stdout.take().expect("its output")).lines();
    assert_eq!(lines.next_line().await.expect("read").as_deref(), Some("OK"));
    let broker = RedisBroker::connect_with_namespace(&url, &namespace).await.expect("connect");
    let backend = RedisBackend::connect_with_namespace(&url, &namespace).await.expect("connect");
    let client = redis::Client::open(url.as_str()).expect("url");
    let marker = client.get_multiplexed_async_connection().await.expect("connect");
    // Marks carry the namespace: tests running at once see each other's marks.
    let prefix = format!("key-slots-mark:{namespace}:");
    let mark = |name: String| {
        let mut conn = marker.clone();
        let said = format!("{prefix}{name}");
        async move {
            let _: String =
                redis::cmd("ECHO").arg(said).query_async(&mut conn).await.expect("echo");
        }
    };

    // Each operation, then a mark naming it: what the monitor saw before the mark is
    // that operation's.
    let long = Duration::from_secs(30);
    let q = vec!["alpha".to_owned()];
    let job = |queue: &str| Job::new(TaskId::new(), queue, 5, None, b"x".to_vec());
    let mut ops: Vec<&str> = Vec::new();
    macro_rules! op {
        ($name:expr, $body:expr) => {{
            let _ = $body;
            mark($name.to_owned()).await;
            ops.push($name);
        }};
    }
    op!("enqueue", broker.enqueue(job("alpha")).await.expect("enqueue"));
    op!("enqueue delayed", {
        let eta = chrono::Utc::now() + chrono::Duration::hours(1);
        broker.enqueue(Job::new(TaskId::new(), "alpha", 5, Some(eta), b"x".to_vec())).await
    });
    op!("enqueue a batch", broker.enqueue_batch(vec![job("alpha"), job("alpha")]).await);
    op!(
        "enqueue a batch across two queues",
        broker.enqueue_batch(vec![job("alpha"), job("beta")]).await
    );
    let worker = WorkerInfo::new("w", "host", 1, q.clone(), 4, chrono::Utc::now());
    op!("heartbeat", broker.heartbeat(&worker, long).await);
    let got = broker.claim("w", &q, 4, long, Duration::ZERO).await.expect("claim");
    mark("claim".to_owned()).await;
    ops.push("claim");
    assert!(got.len() >= 3, "{got:?}");
    op!("renew", broker.renew(&got[0].lease, long).await);
    op!("ack", broker.ack(&got[0].lease).await);
    op!("complete", broker.complete(&got[1].lease, long).await);
    op!("retry", broker.retry(&got[2].lease, b"y".to_vec(), chrono::Utc::now()).await);
    op!("enqueue two more", broker.enqueue_batch(vec![job("alpha"), job("alpha")]).await);
    let more = broker.claim("w", &q, 2, long, Duration::ZERO).await.expect("claim");
    mark("claim again".to_owned()).await;
    ops.push("claim again");
    assert_eq!(more.len(), 2, "{more:?}");
    op!("release", broker.release(&more[0].lease).await);
    op!("dead-letter", broker.dead_letter(&more[1].lease, "boom").await);
    op!("reap", broker.reap(&q).await);
    op!("schedule begin", broker.schedule_begin("s", None).await);
    op!("schedule fire", broker.schedule_fire("s", chrono::Utc::now(), None).await);
    op!("purge", broker.purge("alpha").await);
    op!("doctor", broker.doctor(&q, true).await);
    op!("take a dead letter", broker.take_dead_letter("alpha", more[1].lease.id).await);
    op!("publish events", broker.publish_events(&[]).await);
    op!("read events", broker.read_events(&EventsFrom::Oldest, 10, Duration::ZERO).await);
    op!("deregister", broker.deregister("w").await);
    let two = vec!["gamma".to_owned(), "delta".to_owned()];
    op!(
        "claim waiting on two empty queues",
        broker.claim("w", &two, 1, long, Duration::from_millis(200)).await
    );
    op!("queue figures", broker.queue_stats("alpha").await);
    op!("list queues", broker.queues().await);
    op!("find a job", broker.find_job(TaskId::new(), &[]).await);
    op!("list dead letters", broker.dead_letters("alpha", 0, 10).await);
    op!("purge dead letters", broker.purge_dead_letters("alpha").await);
    op!("list workers", broker.workers().await);
    op!("list schedules", broker.schedules().await);
    op!("read a result", backend.get(got[0].lease.id).await);
    let outcome = TaskOutcome::succeeded(vec![1], 1, chrono::Utc::now());
    op!("store a result", backend.store_fenced(got[0].lease.id, &outcome, long, 7).await);
    mark("end".to_owned()).await;

    // What each client sent, in order, per operation.
    let mut current: Vec<Sent> = Vec::new();
    let mut seen: BTreeMap<String, Vec<Sent>> = BTreeMap::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read the monitor") {
            // `<time> [<db> <client>] "command" "arg" ...`
            let client = line
                .split_once('[')
                .and_then(|(_, rest)| rest.split_once(']'))
                .map(|(inside, _)| inside.to_owned())
                .unwrap_or_default();
            let w = words(&line);
            let Some(command) = w.first() else { continue };
            if command.eq_ignore_ascii_case(b"echo") {
                let said = w.get(1).map(|said| String::from_utf8_lossy(said).into_owned());
                if let Some(name) = said.unwrap_or_default().strip_prefix(&prefix) {
                    if name == "end" {
                        return;
                    }
                    seen.insert(name.to_owned(), std::mem::take(&mut current));
                }
                continue;
            }
            // Only what may touch this test's namespace (other tests share the server):
            // its own commands, and the brackets of transactions, which name no key.
            let bracket = [&b"multi"[..], b"exec", b"discard"]
                .iter()
                .any(|b| command.eq_ignore_ascii_case(b));
            if bracket || line.contains(&namespace) {
                current.push((client, w));
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the monitor never showed the end mark");

    // The keys of each command, as Redis itself reads them (`COMMAND GETKEYS`), and
    // the commands of a transaction taken together.
    let mut conn = marker.clone();
    let mut units = BTreeMap::new();
    for (op, sent) in seen {
        let mut open: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        let mut made = Vec::new();
        for (client, words) in sent {
            let name = String::from_utf8_lossy(&words[0]).to_ascii_lowercase();
            match name.as_str() {
                "multi" => {
                    open.insert(client, Vec::new());
                    continue;
                }
                "exec" | "discard" => {
                    if let Some(keys) = open.remove(&client) {
                        made.push(Unit { kind: "multi".to_owned(), keys });
                    }
                    continue;
                }
                _ => {}
            }
            let mut getkeys = redis::cmd("COMMAND");
            getkeys.arg("GETKEYS");
            for word in &words {
                getkeys.arg(word.as_slice());
            }
            // A command without keys (PING, CLIENT ...) has none to check.
            let keys: Vec<Vec<u8>> = getkeys.query_async(&mut conn).await.unwrap_or_default();
            match open.get_mut(&client) {
                Some(transaction) => transaction.extend(keys),
                None => made.push(Unit { kind: name, keys }),
            }
        }
        let ours: Vec<Unit> = made
            .into_iter()
            .filter(|unit| {
                unit.keys.iter().any(|k| String::from_utf8_lossy(k).contains(&namespace))
            })
            .collect();
        units.insert(op, ours);
    }
    units
}

/// The operations with a unit of `kinds` (or of any other kind, when `scripts` is
/// false) whose keys fall in more than one slot; printed as found.
fn crossing(units: &BTreeMap<String, Vec<Unit>>, scripts: bool) -> BTreeSet<String> {
    let mut crossing = BTreeSet::new();
    for (op, made) in units {
        for unit in made {
            let scripted = unit.kind == "evalsha" || unit.kind == "eval";
            if scripted != scripts {
                continue;
            }
            let slots: BTreeSet<u16> = unit.keys.iter().map(|k| slot(k)).collect();
            if slots.len() > 1 {
                crossing.insert(op.clone());
                let keys: Vec<String> =
                    unit.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
                eprintln!("{op}: {} over {} slots: {keys:?}", unit.kind, slots.len());
            }
        }
    }
    crossing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_script_touches_one_slot_but_the_known_ones() {
    let units = record().await;
    let scripted = units
        .values()
        .filter(|made| made.iter().any(|u| u.kind == "evalsha" || u.kind == "eval"))
        .count();
    assert!(scripted >= 15, "too few operations ran a script: {units:?}");
    let known: BTreeSet<String> = KNOWN_CROSSING.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(crossing(&units, true), known, "the operations whose scripts cross slots");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transaction_and_command_touches_one_slot_but_the_known_ones() {
    let units = record().await;
    let known: BTreeSet<String> = KNOWN_CROSSING_COMMANDS.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        crossing(&units, false),
        known,
        "the operations whose transactions or multi-key commands cross slots"
    );
}
