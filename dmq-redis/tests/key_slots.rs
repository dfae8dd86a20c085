//! Every script dmq runs must touch one Redis Cluster slot: the keys it is handed all
//! hash alike (their `{hash tag}`). This runs each broker and backend operation against
//! the local Redis Cluster while `MONITOR` on every master records the commands, and
//! checks the keys of every `EVALSHA`/`EVAL`, every transaction and every multi-key
//! command in the test's namespace. (The cluster would refuse most crossings itself;
//! this also shows what each operation sends, and asks the cluster itself for each
//! key's slot, with `CLUSTER KEYSLOT`.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use dmq_core::{
    Broker, BrokerAdmin, EventStream, EventsFrom, Job, ResultBackend, ScheduleStore, TaskId,
    TaskOutcome, WorkerInfo, WorkerRegistry,
};
use dmq_redis::{RedisBackend, RedisBroker};
use redis::aio::MultiplexedConnection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

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

/// The slot of `key`, as the cluster computes it.
async fn slot(conn: &mut MultiplexedConnection, key: &[u8]) -> u16 {
    redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(conn).await.expect("cluster keyslot")
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

/// The masters of the cluster at `url` (`redis+cluster://host:port,...`), as
/// `(host, port)`, read from `CLUSTER NODES` of its first node.
async fn masters(url: &str) -> Vec<(String, u16)> {
    let first = url.trim_start_matches("redis+cluster://").split(',').next().expect("a node");
    let client = redis::Client::open(format!("redis://{first}")).expect("node url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connect to a node");
    let listing: String =
        redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn).await.expect("cluster nodes");
    let mut masters = Vec::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let serving =
            fields.len() > 8 && fields[2].contains("master") && !fields[2].contains("fail");
        if serving {
            let address = fields[1].split('@').next().expect("ip:port");
            let (host, port) = address.rsplit_once(':').expect("ip:port");
            masters.push((host.to_owned(), port.parse().expect("a port")));
        }
    }
    assert_eq!(masters.len(), 3, "the test cluster has three masters: {listing}");
    masters
}

/// The lines `redis-cli monitor` prints for the master at `host:port` until it shows
/// the mark `end`; started at once, read in the background.
async fn monitor(host: &str, port: u16, end: String) -> tokio::task::JoinHandle<Vec<String>> {
    let mut monitor = Command::new("redis-cli")
        .args(["-h", host, "-p", &port.to_string(), "monitor"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run redis-cli monitor");
    let mut lines = BufReader::new(monitor.stdout.take().expect("its output")).lines();
    assert_eq!(lines.next_line().await.expect("read").as_deref(), Some("OK"));
    tokio::spawn(async move {
        let _monitor = monitor;
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await.expect("read the monitor") {
            let done = line.contains(&end);
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    })
}

/// Runs every broker and backend operation against the test cluster while `MONITOR`
/// on each master records what it is sent, and returns, for each operation, the units
/// of work it made that touch the test's namespace.
async fn record() -> (BTreeMap<String, Vec<Unit>>, MultiplexedConnection) {
    let namespace = common::fresh_namespace();
    let url = common::cluster_url();
    let _cleanup = common::Cleanup::at(&url, &namespace);
    // Marks carry the namespace: tests running at once see each other's marks.
    let prefix = format!("key-slots-mark:{namespace}:");
    let mut monitors = Vec::new();
    let mut markers: Vec<MultiplexedConnection> = Vec::new();
    for (host, port) in masters(&url).await {
        monitors.push(monitor(&host, port, format!("{prefix}end")).await);
        let client = redis::Client::open(format!("redis://{host}:{port}")).expect("node url");
        markers.push(client.get_multiplexed_async_connection().await.expect("connect"));
    }
    let broker = RedisBroker::connect_with_namespace(&url, &namespace).await.expect("connect");
    let backend = RedisBackend::connect_with_namespace(&url, &namespace).await.expect("connect");
    // A mark goes to every master, after the operation's commands.
    let mark = |name: String| {
        let markers = markers.clone();
        let said = format!("{prefix}{name}");
        async move {
            for mut conn in markers {
                let _: String =
                    redis::cmd("ECHO").arg(&said).query_async(&mut conn).await.expect("echo");
            }
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
        broker
            .enqueue_batch(vec![job("alpha"), job("beta")])
            .await
            .expect("a batch over two slots")
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
        broker
            .claim("w", &two, 1, long, Duration::from_millis(200))
            .await
            .expect("a wait on two slots")
    );
    op!("queue figures", broker.queue_stats("alpha").await);
    op!("list queues", broker.queues().await);
    op!("find a job", broker.find_job(TaskId::new(), &[]).await);
    op!("list dead letters", broker.dead_letters("alpha", 0, 10).await);
    op!("purge dead letters", broker.purge_dead_letters("alpha").await);
    op!("cancel a job", broker.cancel("alpha", TaskId::new()).await.expect("cancel"));
    op!("delete a queue", broker.delete_queue("alpha", true).await.expect("delete"));
    op!(
        "enqueue to two partitions",
        broker.enqueue_batch(vec![job("parts#0"), job("parts#1")]).await.expect("enqueue")
    );
    op!(
        "delete a partitioned queue",
        broker.delete_queue("parts", true).await.expect("a delete over three slots")
    );
    op!("list workers", broker.workers().await);
    op!("list schedules", broker.schedules().await);
    op!("read a result", backend.get(got[0].lease.id).await);
    let outcome = TaskOutcome::succeeded(vec![1], 1, chrono::Utc::now());
    op!("store a result", backend.store_fenced(got[0].lease.id, &outcome, long, 7).await);
    mark("end".to_owned()).await;

    // What each client sent, in order, per operation, on every master.
    let mut seen: BTreeMap<String, Vec<Sent>> = BTreeMap::new();
    for monitor in monitors {
        let lines = tokio::time::timeout(Duration::from_secs(30), monitor)
            .await
            .expect("a monitor never showed the end mark")
            .expect("the monitor task");
        let mut current: Vec<Sent> = Vec::new();
        for line in lines {
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
                    seen.entry(name.to_owned()).or_default().append(&mut current);
                }
                continue;
            }
            // Only what may touch this test's namespace (other tests share the cluster):
            // its own commands, and the brackets of transactions, which name no key.
            let bracket = [&b"multi"[..], b"exec", b"discard"]
                .iter()
                .any(|b| command.eq_ignore_ascii_case(b));
            if bracket || line.contains(&namespace) {
                current.push((client, w));
            }
        }
    }

    // The keys of each command, as Redis itself reads them (`COMMAND GETKEYS`), and
    // the commands of a transaction taken together.
    let mut conn = markers[0].clone();
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
    (units, conn)
}

/// The operations with a unit of a script (or of any other kind, when `scripts` is
/// false) whose keys fall in more than one slot; printed as found.
async fn crossing(
    conn: &mut MultiplexedConnection,
    units: &BTreeMap<String, Vec<Unit>>,
    scripts: bool,
) -> BTreeSet<String> {
    let mut crossing = BTreeSet::new();
    for (op, made) in units {
        for unit in made {
            let scripted = unit.kind == "evalsha" || unit.kind == "eval";
            if scripted != scripts {
                continue;
            }
            let mut slots = BTreeSet::new();
            for key in &unit.keys {
                slots.insert(slot(conn, key).await);
            }
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
async fn every_script_transaction_and_command_touches_one_slot() {
    let (units, mut conn) = record().await;
    let scripted = units
        .values()
        .filter(|made| made.iter().any(|u| u.kind == "evalsha" || u.kind == "eval"))
        .count();
    assert!(scripted >= 15, "too few operations ran a script: {units:?}");
    // The two that crossed before dmq spoke Redis Cluster ran, and were seen.
    for op in ["enqueue a batch across two queues", "claim waiting on two empty queues"] {
        assert!(units.get(op).is_some_and(|made| !made.is_empty()), "{op} was not seen: {units:?}");
    }
    let scripts = crossing(&mut conn, &units, true).await;
    assert_eq!(scripts, BTreeSet::new(), "the operations whose scripts cross slots");
    assert_eq!(
        crossing(&mut conn, &units, false).await,
        BTreeSet::new(),
        "the operations whose transactions or multi-key commands cross slots"
    );
}
