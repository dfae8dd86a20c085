//! Bytes in Redis that dmq did not write, and replies that never arrive: a bad entry in
//! a ready list is dropped alone while the jobs beside it are claimed; a key of the
//! wrong type makes a script fail before it changes anything; a job stranded by a
//! write cut off halfway is found and put back by the doctor; and a claim whose reply
//! was lost is given back at the next claim instead of waiting out its lease.
//!
//! Every test but the lost reply's (a proxy in front of one server) runs twice: on the
//! single test Redis and on the local Redis Cluster (`DMQ_CLUSTER_URL`), where a batch
//! over two queues is atomic per queue rather than whole.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dmq_core::{Broker, BrokerAdmin, Job, TaskId};
use dmq_redis::{RedisBroker, RedisConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LONG: Duration = Duration::from_secs(30);

/// A broker in a fresh namespace, whose keys the guard deletes.
async fn fresh(url: &str) -> (common::Cleanup, RedisBroker) {
    let namespace = common::fresh_namespace();
    let cleanup = common::Cleanup::at(url, &namespace);
    let broker = RedisBroker::connect_with_namespace(url, &namespace).await.expect("connect");
    (cleanup, broker)
}

/// A connection of the test's own to the Redis or Redis Cluster at `url`, for writing
/// what dmq would not.
async fn raw(url: &str) -> RedisConnection {
    RedisConnection::open(url).await.expect("connect")
}

/// Whether `url` names a Redis Cluster.
fn is_cluster(url: &str) -> bool {
    url.starts_with("redis+cluster://")
}

fn jobs(queue: &str, n: usize) -> Vec<Job> {
    (0..n)
        .map(|i| Job::new(TaskId::new(), queue, 5, None, format!("job {i}").into_bytes()))
        .collect()
}

/// A ready list holding an id that is no task id (with an envelope, as another program
/// might write), an upper-case one, and a task id with no envelope: the claim drops both, counts them,
/// and hands out the nine good jobs beside them.
async fn a_bad_entry_in_a_ready_list_is_dropped_alone_and_the_good_jobs_are_claimed(url: &str) {
    let (_cleanup, b) = fresh(url).await;
    let keys = b.keys().queue("q");
    let good = jobs("q", 9);
    let ids: Vec<TaskId> = good.iter().map(|j| j.id).collect();
    b.enqueue_batch(good[..4].to_vec()).await.expect("enqueue");
    let mut conn = raw(url).await;
    let orphan = TaskId::new().to_string();
    let shouting = TaskId::new().to_string().to_uppercase();
    let () = redis::pipe()
        .rpush(keys.ready(5), "not-a-task-id")
        .ignore()
        .hset(keys.payloads(), "not-a-task-id", "some other program's bytes")
        .ignore()
        .rpush(keys.ready(5), &orphan)
        .ignore()
        .rpush(keys.ready(5), &shouting)
        .ignore()
        .hset(keys.payloads(), &shouting, "an upper-case id, which no later write would find")
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("write foreign entries");
    b.enqueue_batch(good[4..].to_vec()).await.expect("enqueue");

    let got = b.claim("w", &["q".to_owned()], 20, LONG, Duration::ZERO).await.expect("claim");
    let mut claimed: Vec<TaskId> = got.iter().map(|d| d.lease.id).collect();
    claimed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(claimed, expected, "every good job, and nothing else");
    for delivery in &got {
        b.ack(&delivery.lease).await.expect("the good jobs settle");
    }
    let stats = b.queue_stats("q").await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight, stats.bad_entries), (0, 0, 3), "{stats:?}");
    let left: bool = redis::cmd("HEXISTS")
        .arg(keys.payloads())
        .arg("not-a-task-id")
        .query_async(&mut conn)
        .await
        .expect("hexists");
    assert!(!left, "the bad entry's leftovers are removed with it");
}

/// A key of the wrong type among a queue's keys makes the claim fail with an error
/// naming it, before the claim changes anything: the job it would have popped from
/// another priority list stays there. An enqueue into such a queue leaves no envelope
/// behind. Once the key is gone, the job is claimed.
async fn a_key_of_the_wrong_type_fails_a_script_before_it_changes_anything(url: &str) {
    let (_cleanup, b) = fresh(url).await;
    let keys = b.keys().queue("q");
    let high = Job::new(TaskId::new(), "q", 9, None, b"high".to_vec());
    b.enqueue(high.clone()).await.expect("enqueue");
    let mut conn = raw(url).await;
    let () =
        redis::cmd("SET").arg(keys.ready(5)).arg("str").query_async(&mut conn).await.expect("set");

    let err = b.claim("w", &["q".to_owned()], 10, LONG, Duration::ZERO).await.unwrap_err();
    assert!(err.to_string().contains(&keys.ready(5)), "the error names the key: {err}");
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    let (ready9, in_flight): (u64, u64) = redis::pipe()
        .llen(keys.ready(9))
        .zcard(keys.in_flight())
        .query_async(&mut conn)
        .await
        .expect("read");
    assert_eq!((ready9, in_flight), (1, 0), "the claim popped nothing");

    let refused = Job::new(TaskId::new(), "q", 5, None, b"refused".to_vec());
    let err = b.enqueue(refused.clone()).await.unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    let stored: bool = redis::cmd("HEXISTS")
        .arg(keys.payloads())
        .arg(refused.id.to_string())
        .query_async(&mut conn)
        .await
        .expect("hexists");
    assert!(!stored, "a refused enqueue leaves no envelope behind");

    let () = redis::cmd("DEL").arg(keys.ready(5)).query_async(&mut conn).await.expect("del");
    let got = b.claim("w", &["q".to_owned()], 10, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(got.iter().map(|d| d.lease.id).collect::<Vec<_>>(), [high.id]);
}

/// A job whose envelope is stored but which waits in no list or set (a write was cut
/// off halfway) is reported by the doctor, put back by it when asked, then claimed.
async fn the_doctor_finds_a_stranded_job_and_puts_it_back(url: &str) {
    let (_cleanup, b) = fresh(url).await;
    let keys = b.keys().queue("q");
    let all = jobs("q", 3);
    b.enqueue_batch(all.clone()).await.expect("enqueue");
    let q = vec!["q".to_owned()];
    let healthy = b.doctor(&q, false).await.expect("doctor");
    assert!(healthy[0].stranded.is_empty(), "{healthy:?}");
    // Strand the middle one: out of its list, its envelope left behind.
    let mut conn = raw(url).await;
    let stranded = all[1].id.to_string();
    let removed: u64 = redis::cmd("LREM")
        .arg(keys.ready(5))
        .arg(1)
        .arg(&stranded)
        .query_async(&mut conn)
        .await
        .expect("lrem");
    assert_eq!(removed, 1);

    let report = b.doctor(&q, false).await.expect("doctor");
    assert_eq!(report[0].stranded, std::slice::from_ref(&stranded));
    assert!(!report[0].fixed);
    assert_eq!(b.queue_stats("q").await.expect("stats").ready, 2, "a report changes nothing");
    let fixed = b.doctor(&q, true).await.expect("doctor --fix");
    assert_eq!((fixed[0].stranded.as_slice(), fixed[0].fixed), (&[stranded.clone()][..], true));
    let got = b.claim("w", &q, 10, LONG, Duration::ZERO).await.expect("claim");
    let mut claimed: Vec<String> = got.iter().map(|d| d.lease.id.to_string()).collect();
    claimed.sort();
    let mut expected: Vec<String> = all.iter().map(|j| j.id.to_string()).collect();
    expected.sort();
    assert_eq!(claimed, expected);
    assert!(b.doctor(&q, false).await.expect("doctor")[0].stranded.is_empty());
}

/// A TCP proxy to the test Redis that, once armed, passes a request on but swallows
/// the reply and closes the connection: a claim whose script ran but whose reply was
/// lost, as when a connection breaks mid-claim.
struct Proxy {
    port: u16,
    armed: Arc<AtomicBool>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let armed = Arc::new(AtomicBool::new(false));
        let target =
            common::redis_url().trim_start_matches("redis://").trim_end_matches('/').to_owned();
        let arm = Arc::clone(&armed);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&target).await else { continue };
                tokio::spawn(pipe_through(client, server, Arc::clone(&arm)));
            }
        });
        Proxy { port, armed }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

async fn pipe_through(client: TcpStream, server: TcpStream, armed: Arc<AtomicBool>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_read.read(&mut buf).await.unwrap_or(0);
            if n == 0 || server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = server_read.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            // Armed: the reply is lost, and so is the connection.
            if armed.swap(false, Ordering::SeqCst) {
                return;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// A claim whose script ran but whose reply was lost fails; the next claim gives back
/// what it took and takes it again at once, long before the lost lease (30 s) runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_reply_was_lost_is_given_back_at_the_next_claim() {
    let namespace = common::fresh_namespace();
    let _cleanup = common::Cleanup::of(&namespace);
    let proxy = Proxy::start().await;
    let b = RedisBroker::connect_with_namespace(&proxy.url(), &namespace).await.expect("connect");
    let q = vec!["q".to_owned()];
    // Loads the claim script, so that the claim below is one request and one reply.
    assert!(b.claim("w", &q, 10, LONG, Duration::ZERO).await.expect("claim").is_empty());
    let all = jobs("q", 3);
    b.enqueue_batch(all.clone()).await.expect("enqueue");

    proxy.armed.store(true, Ordering::SeqCst);
    let lost = b.claim("w", &q, 10, LONG, Duration::ZERO).await;
    assert!(lost.is_err(), "the reply never came: {lost:?}");
    let stats = b.queue_stats("q").await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight), (0, 3), "the script ran: {stats:?}");

    let started = std::time::Instant::now();
    let got = b.claim("w", &q, 10, LONG, Duration::from_secs(5)).await.expect("claim");
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut claimed: Vec<TaskId> = got.iter().map(|d| d.lease.id).collect();
    claimed.sort();
    let mut expected: Vec<TaskId> = all.iter().map(|j| j.id).collect();
    expected.sort();
    assert_eq!(claimed, expected, "the lost claim's jobs, claimed again at once");
    assert!(got.iter().all(|d| d.deliveries == 1), "giving back counts no delivery");
    for delivery in &got {
        b.ack(&delivery.lease).await.expect("ack");
    }
}

/// Asserts that queue `q` holds two ready entries and nothing in flight, as before a
/// claim that failed; returns the ready list's entries.
async fn untouched(b: &RedisBroker, url: &str, what: &str) -> Vec<String> {
    let stats = b.queue_stats("q").await.expect("stats read despite the garbage");
    assert_eq!((stats.ready, stats.in_flight), (2, 0), "{what}: {stats:?}");
    let mut conn = raw(url).await;
    let entries: Vec<String> = redis::cmd("LRANGE")
        .arg(b.keys().queue("q").ready(5))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("lrange");
    entries
}

/// Counters another program overwrote with text: a claim that would increment one
/// fails before it changes anything (it would fail halfway), and the queue's stats
/// still read. The token counter is incremented by every claim that takes a job; the
/// bad-entries counter only by one that meets a bad entry, so a claim without one runs.
async fn a_counter_that_is_no_number_fails_the_claim_before_it_changes_anything(url: &str) {
    let (_cleanup, b) = fresh(url).await;
    let keys = b.keys().queue("q");
    let q = vec!["q".to_owned()];
    let mut conn = raw(url).await;
    // The token counter: every claim that takes a job increments it.
    b.enqueue_batch(jobs("q", 2)).await.expect("enqueue");
    let before: Vec<String> = redis::cmd("LRANGE")
        .arg(keys.ready(5))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("lrange");
    let () = redis::cmd("HSET")
        .arg(keys.meta())
        .arg("~seq")
        .arg("garbage")
        .query_async(&mut conn)
        .await
        .expect("hset");
    let err = b.claim("w", &q, 10, LONG, Duration::ZERO).await.unwrap_err();
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    assert!(err.to_string().contains("~seq"), "the error names the field: {err}");
    assert_eq!(
        untouched(&b, url, "token counter").await,
        before,
        "the popped jobs are back in order"
    );
    let _: i64 = redis::cmd("HDEL")
        .arg(keys.meta())
        .arg("~seq")
        .query_async(&mut conn)
        .await
        .expect("repair");
    let got = b.claim("w", &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(got.len(), 2);
    for d in &got {
        b.ack(&d.lease).await.expect("ack");
    }

    // The bad-entries counter: garbage in it stops only a claim that must count one.
    let () = redis::cmd("SET")
        .arg(keys.bad_entries())
        .arg("garbage")
        .query_async(&mut conn)
        .await
        .expect("set");
    let one = jobs("q", 1);
    b.enqueue_batch(one.clone()).await.expect("enqueue");
    let got =
        b.claim("w", &q, 10, LONG, Duration::ZERO).await.expect("a claim with no bad entry runs");
    assert_eq!(got.iter().map(|d| d.lease.id).collect::<Vec<_>>(), [one[0].id]);
    b.ack(&got[0].lease).await.expect("ack");
    let two = jobs("q", 1);
    b.enqueue_batch(two.clone()).await.expect("enqueue");
    let () = redis::cmd("LPUSH")
        .arg(keys.ready(5))
        .arg("not-a-task-id")
        .query_async(&mut conn)
        .await
        .expect("lpush");
    let err = b.claim("w", &q, 10, LONG, Duration::ZERO).await.unwrap_err();
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    assert!(err.to_string().contains(&keys.bad_entries()), "the error names the key: {err}");
    assert_eq!(
        untouched(&b, url, "bad-entries counter").await,
        ["not-a-task-id".to_owned(), two[0].id.to_string()]
    );
    let _: i64 =
        redis::cmd("DEL").arg(keys.bad_entries()).query_async(&mut conn).await.expect("repair");
    let got = b.claim("w", &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(got.iter().map(|d| d.lease.id).collect::<Vec<_>>(), [two[0].id]);
    let bad: i64 =
        redis::cmd("GET").arg(keys.bad_entries()).query_async(&mut conn).await.expect("get");
    assert_eq!(bad, 1, "the bad entry is counted once the counter is a number again");
}

/// A worker on two queues, one of them broken (a key of the wrong type), still claims
/// the other's jobs.
async fn a_broken_queue_holds_up_none_of_the_others(url: &str) {
    let (_cleanup, b) = fresh(url).await;
    let mut conn = raw(url).await;
    let () = redis::cmd("SET")
        .arg(b.keys().queue("a").ready(5))
        .arg("str")
        .query_async(&mut conn)
        .await
        .expect("set");
    let job = jobs("b", 1);
    b.enqueue_batch(job.clone()).await.expect("enqueue");
    let both = ["a".to_owned(), "b".to_owned()];
    let got = b.claim("w", &both, 10, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(got.iter().map(|d| d.lease.id).collect::<Vec<_>>(), [job[0].id]);
    let err = b.claim("w", &both, 10, LONG, Duration::ZERO).await.unwrap_err();
    assert!(
        err.to_string().contains("WRONGTYPE"),
        "with nothing to claim, the failure shows: {err}"
    );
}

/// The same id pushed twice into a ready list (a producer that replayed its push) is
/// handed out once: the copy is dropped as a bad entry, whether it comes in the same
/// claim or a later one.
async fn an_id_pushed_twice_is_claimed_once(url: &str) {
    let (_cleanup, b) = fresh(url).await;
    let keys = b.keys().queue("q");
    let one = jobs("q", 1);
    b.enqueue_batch(one.clone()).await.expect("enqueue");
    let mut conn = raw(url).await;
    let id = one[0].id.to_string();
    let () = redis::cmd("RPUSH")
        .arg(keys.ready(5))
        .arg(&id)
        .arg(&id)
        .query_async(&mut conn)
        .await
        .expect("push");
    let q = vec!["q".to_owned()];
    let got = b.claim("w", &q, 2, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(got.len(), 1, "one copy in this claim");
    let again = b.claim("w", &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert!(again.is_empty(), "the copy left is no second delivery: {again:?}");
    b.ack(&got[0].lease).await.expect("the one lease is intact");
    assert_eq!(b.queue_stats("q").await.expect("stats").bad_entries, 2);
}

/// Everything under the broker's namespace, read by type (not `DUMP`, whose bytes
/// depend on the encoding), sorted: two snapshots are equal when nothing changed.
async fn snapshot(b: &RedisBroker, url: &str) -> Vec<(String, String)> {
    let mut conn = raw(url).await;
    let mut keys = Vec::new();
    // On a cluster each master answers KEYS for its own keys.
    for mut node in conn.masters().await.expect("the masters") {
        for pattern in b.keys().patterns() {
            let found: Vec<String> =
                redis::cmd("KEYS").arg(&pattern).query_async(&mut node).await.expect("keys");
            keys.extend(found);
        }
    }
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut conn).await.expect("type");
        let body = match kind.as_str() {
            "string" => {
                let v: Vec<u8> =
                    redis::cmd("GET").arg(&key).query_async(&mut conn).await.expect("get");
                format!("{v:?}")
            }
            "list" => {
                let v: Vec<Vec<u8>> = redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn)
                    .await
                    .expect("lrange");
                format!("{v:?}")
            }
            "hash" => {
                let mut v: Vec<(Vec<u8>, Vec<u8>)> =
                    redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await.expect("hgetall");
                v.sort();
                format!("{v:?}")
            }
            "zset" => {
                let v: Vec<(Vec<u8>, f64)> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(&mut conn)
                    .await
                    .expect("zrange");
                format!("{v:?}")
            }
            other => other.to_owned(),
        };
        out.push((key, format!("{kind} {body}")));
    }
    assert!(!out.is_empty(), "a snapshot that found no key compares equal to anything");
    out
}

/// Replaces `key` with a string, keeping what it held under `<key>~kept` (outside the
/// queue's keys, but inside the namespace, so snapshots see it unchanged).
async fn spoil(url: &str, key: &str) {
    let mut conn = raw(url).await;
    let exists: bool = redis::cmd("EXISTS").arg(key).query_async(&mut conn).await.expect("exists");
    if exists {
        let () = redis::cmd("RENAME")
            .arg(key)
            .arg(format!("{key}~kept"))
            .query_async(&mut conn)
            .await
            .expect("rename");
    }
    let () = redis::cmd("SET").arg(key).arg("not dmq's").query_async(&mut conn).await.expect("set");
}

/// Puts back what `spoil` replaced.
async fn mend(url: &str, key: &str) {
    let mut conn = raw(url).await;
    let _: i64 = redis::cmd("DEL").arg(key).query_async(&mut conn).await.expect("del");
    let _: Result<(), _> =
        redis::cmd("RENAME").arg(format!("{key}~kept")).arg(key).query_async(&mut conn).await;
}

/// Asserts that `err` is a wrong-type failure naming `key`, and that the namespace is
/// as `before`.
async fn refused_unchanged(
    b: &RedisBroker,
    url: &str,
    what: &str,
    err: dmq_core::Error,
    key: &str,
    before: &[(String, String)],
) {
    let text = err.to_string();
    assert!(
        text.contains("WRONGTYPE") && text.contains(key),
        "{what}: the error names {key}: {text}"
    );
    assert!(text.contains("nothing was changed"), "{what}: {text}");
    assert_eq!(snapshot(b, url).await, before, "{what}: the failed script changed nothing");
}

/// A script whose later step meets a key of the wrong type (after it already wrote:
/// pushed one queue's jobs, popped jobs, added an envelope) takes back what it wrote
/// and fails naming the key: the namespace is exactly as before, key by key.
async fn a_script_that_fails_after_writing_takes_back_every_write(url: &str) {
    let (_cleanup, b) = fresh(url).await;
    let later = Some(chrono::Utc::now() + chrono::Duration::hours(1));

    // Enqueue: a batch over two queues, the second's ready list spoiled.
    b.enqueue_batch(jobs("a", 2)).await.expect("enqueue");
    let a_then_b = vec![jobs("a", 1).remove(0), jobs("b", 1).remove(0)];
    let key = b.keys().queue("b").ready(5);
    spoil(url, &key).await;
    let before = snapshot(&b, url).await;
    let err = b.enqueue_batch(a_then_b).await.unwrap_err();
    if is_cluster(url) {
        // A script per slot, so atomic per queue: a's part lands, b's changes nothing.
        let a = format!("{{{}:a}}", b.keys().namespace());
        let without_a = |snap: Vec<(String, String)>| -> Vec<(String, String)> {
            snap.into_iter().filter(|(k, _)| !k.starts_with(&a)).collect()
        };
        assert!(err.to_string().contains("WRONGTYPE") && err.to_string().contains(&key), "{err}");
        assert_eq!(
            without_a(snapshot(&b, url).await),
            without_a(before),
            "b's part changed nothing"
        );
        assert_eq!(b.queue_stats("a").await.expect("stats").ready, 3, "a's part landed");
    } else {
        refused_unchanged(&b, url, "enqueue over two queues", err, &key, &before).await;
    }
    mend(url, &key).await;

    // Enqueue: ready jobs first, then a delayed one whose set is spoiled.
    let mut batch = jobs("c", 2);
    batch.push(Job::new(TaskId::new(), "c", 5, later, b"later".to_vec()));
    let key = b.keys().queue("c").delayed();
    spoil(url, &key).await;
    let before = snapshot(&b, url).await;
    let err = b.enqueue_batch(batch).await.unwrap_err();
    refused_unchanged(&b, url, "enqueue with a delayed job", err, &key, &before).await;
    mend(url, &key).await;

    // Enqueue: one job into an empty queue whose wake-up list is spoiled.
    let key = b.keys().queue("d").signal();
    spoil(url, &key).await;
    let before = snapshot(&b, url).await;
    let err = b.enqueue(jobs("d", 1).remove(0)).await.unwrap_err();
    refused_unchanged(&b, url, "enqueue that wakes claimers", err, &key, &before).await;
    mend(url, &key).await;

    let e = vec!["e".to_owned()];
    b.enqueue_batch(jobs("e", 3)).await.expect("enqueue");
    // Claim: the envelopes' hash spoiled after the pop.
    let key = b.keys().queue("e").payloads();
    spoil(url, &key).await;
    let before = snapshot(&b, url).await;
    let err = b.claim("w", &e, 10, LONG, Duration::ZERO).await.unwrap_err();
    refused_unchanged(&b, url, "claim reading envelopes", err, &key, &before).await;
    mend(url, &key).await;
    // Claim: fewer jobs than ready, so it passes the wake-up on: that list spoiled.
    let key = b.keys().queue("e").signal();
    spoil(url, &key).await;
    let before = snapshot(&b, url).await;
    let err = b.claim("w", &e, 2, LONG, Duration::ZERO).await.unwrap_err();
    refused_unchanged(&b, url, "claim passing the wake-up on", err, &key, &before).await;
    mend(url, &key).await;

    // Ack and complete: the envelopes' hash, then the completed set, spoiled.
    let got = b.claim("w", &e, 2, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(got.len(), 2);
    let key = b.keys().queue("e").payloads();
    spoil(url, &key).await;
    let before = snapshot(&b, url).await;
    let err = b.ack(&got[0].lease).await.unwrap_err();
    refused_unchanged(&b, url, "ack", err, &key, &before).await;
    mend(url, &key).await;
    let key = b.keys().queue("e").completed();
    spoil(url, &key).await;
    let before = snapshot(&b, url).await;
    let err = b.complete(&got[1].lease, LONG).await.unwrap_err();
    refused_unchanged(&b, url, "complete", err, &key, &before).await;
    mend(url, &key).await;

    // Mended, every job of the scenarios above is still there to run.
    b.ack(&got[0].lease).await.expect("ack once mended");
    b.complete(&got[1].lease, LONG).await.expect("complete once mended");
    let rest = b.claim("w", &e, 10, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(rest.len(), 1);
    let stats = b.queue_stats("a").await.expect("stats");
    let kept = if is_cluster(url) { 3 } else { 2 };
    assert_eq!(stats.ready, kept, "queue a kept its jobs and took none of the refused batch");
}

/// A claim that met only bad entries, with good jobs behind them, says so (next
/// change: now), so the claimer comes back at once instead of waiting for a wake-up.
async fn good_jobs_behind_a_claims_worth_of_bad_entries_are_claimed_at_once(url: &str) {
    let (_cleanup, b) = fresh(url).await;
    let keys = b.keys().queue("q");
    let mut conn = raw(url).await;
    for i in 0..4 {
        let () = redis::cmd("RPUSH")
            .arg(keys.ready(5))
            .arg(format!("junk {i}"))
            .query_async(&mut conn)
            .await
            .expect("rpush");
    }
    let good = jobs("q", 1);
    b.enqueue_batch(good.clone()).await.expect("enqueue");
    // Drop the wake-up the enqueue left: the claimer must not need it.
    let _: i64 = redis::cmd("DEL").arg(keys.signal()).query_async(&mut conn).await.expect("del");
    let started = std::time::Instant::now();
    let got = b.claim("w", &["q".to_owned()], 4, LONG, LONG).await.expect("claim");
    assert_eq!(got.iter().map(|d| d.lease.id).collect::<Vec<_>>(), [good[0].id]);
    assert!(started.elapsed() < Duration::from_secs(10), "claimed after {:?}", started.elapsed());
}

/// A queue registry of the wrong type (another program's string under its key) stops
/// no enqueue and no claim; listing the queues fails, naming the key, until the key is
/// mended, and then lists the queue again.
async fn a_spoiled_queue_registry_stops_no_job_and_listing_says_why(url: &str) {
    let (_cleanup, b) = fresh(url).await;
    let registry = b.keys().queues();
    let mut conn = raw(url).await;
    let () = redis::cmd("SET")
        .arg(&registry)
        .arg("another program's string")
        .query_async(&mut conn)
        .await
        .expect("spoil the registry");
    let job = Job::new(TaskId::new(), "q", 5, None, b"payload".to_vec());
    let id = job.id;
    b.enqueue(job).await.expect("an enqueue is not stopped by the registry");
    let got = b.claim("w", &["q".to_owned()], 1, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(got.iter().map(|d| d.lease.id).collect::<Vec<_>>(), [id]);
    let refused = b.queues().await.expect_err("a registry of the wrong type cannot be listed");
    assert!(refused.to_string().contains(&format!("queue registry {registry}")), "{refused}");
    // Mended by deleting it: the registry is found missing and rebuilt from the
    // queues' keys the first time it is listed.
    let () = redis::cmd("DEL").arg(&registry).query_async(&mut conn).await.expect("mend");
    let fresh_broker =
        RedisBroker::connect_with_namespace(url, b.keys().namespace()).await.expect("connect");
    let found = fresh_broker.find_job(id, &[]).await.expect("find");
    assert_eq!(found.map(|f| f.state), Some(dmq_core::JobState::InFlight));
    assert_eq!(fresh_broker.queues().await.expect("queues"), ["q"]);
}

/// A namespace an older dmq wrote (queues with keys but no registry) that a newer
/// producer then starts the registry in: the first listing still finds the old queue
/// by its keys, once, and lists both.
async fn queues_made_before_the_registry_are_listed_beside_new_ones(url: &str) {
    let (_cleanup, b) = fresh(url).await;
    let old = b.keys().queue("old");
    let mut conn = raw(url).await;
    // What an older dmq left: a dead letter and a delayed job, nothing registered.
    let () = redis::pipe()
        .lpush(old.dead(), format!("1700000000000|{}|fatal: boom", TaskId::new()))
        .ignore()
        .zadd(old.delayed(), TaskId::new().to_string(), 4_000_000_000_000_i64)
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("write an old queue");
    b.enqueue(Job::new(TaskId::new(), "new", 5, None, b"x".to_vec())).await.expect("enqueue");
    assert_eq!(b.queues().await.expect("queues"), ["new", "old"]);
    // Scanned once: a later listing reads the registry alone, and still has both.
    let scanned: bool = redis::cmd("EXISTS")
        .arg(b.keys().queues_scanned())
        .query_async(&mut conn)
        .await
        .expect("exists");
    assert!(scanned);
    assert_eq!(b.queues().await.expect("queues"), ["new", "old"]);
}

/// A queue whose dead-letter list another program replaced with a string does not
/// hide a job in another queue from `find_job` (`dmq job`); looking for a job found
/// nowhere still says what is wrong with the spoiled queue.
async fn a_spoiled_queue_hides_no_job_of_another(url: &str) {
    let (_cleanup, b) = fresh(url).await;
    let mut conn = raw(url).await;
    b.enqueue(Job::new(TaskId::new(), "aaa-spoiled", 5, None, b"x".to_vec()))
        .await
        .expect("enqueue");
    let () = redis::cmd("SET")
        .arg(b.keys().queue("aaa-spoiled").dead())
        .arg("another program's string")
        .query_async(&mut conn)
        .await
        .expect("spoil the dead-letter list");
    let job = Job::new(TaskId::new(), "zzz-good", 5, None, b"y".to_vec());
    let id = job.id;
    b.enqueue(job).await.expect("enqueue");
    // The spoiled queue sorts first, so it is searched first.
    assert_eq!(b.queues().await.expect("queues"), ["aaa-spoiled", "zzz-good"]);
    let found = b.find_job(id, &[]).await.expect("found past the spoiled queue");
    assert_eq!(
        found.map(|f| (f.queue, f.state)),
        Some(("zzz-good".to_owned(), dmq_core::JobState::Ready))
    );
    let missing = b.find_job(TaskId::new(), &[]).await.expect_err("the spoiled queue is named");
    assert!(missing.to_string().contains("aaa-spoiled"), "{missing}");
}

/// `cancel` meets a key of the wrong type among the queue's keys (wherever the job
/// waits, and where it does not) and fails naming it, changing nothing: the job and
/// its envelope stay, key by key. Once the key is mended, the cancel removes the job.
async fn a_key_of_the_wrong_type_fails_a_cancel_before_it_changes_anything(url: &str) {
    let (_cleanup, b) = fresh(url).await;
    let keys = b.keys().queue("q");
    let ready = Job::new(TaskId::new(), "q", 9, None, b"ready".to_vec());
    let later = Some(chrono::Utc::now() + chrono::Duration::hours(1));
    let delayed = Job::new(TaskId::new(), "q", 5, later, b"delayed".to_vec());
    b.enqueue_batch(vec![ready.clone(), delayed.clone()]).await.expect("enqueue");
    b.enqueue(Job::new(TaskId::new(), "q", 0, None, b"low".to_vec())).await.expect("enqueue");
    // Every key the cancel script reads, its payloads first and the suspect list last.
    let mut spoiled = vec![keys.payloads(), keys.meta(), keys.delayed(), keys.in_flight()];
    spoiled.extend((0..=9).map(|p| keys.ready(p)));
    spoiled.push(keys.suspect());
    for key in &spoiled {
        spoil(url, key).await;
        let before = snapshot(&b, url).await;
        for job in [&ready, &delayed] {
            let what =
                format!("cancelling the {} job with {key} spoiled", job.payload.escape_ascii());
            let err = b.cancel("q", job.id).await.expect_err(&what);
            refused_unchanged(&b, url, &what, err, key, &before).await;
        }
        mend(url, key).await;
    }
    for job in [&ready, &delayed] {
        let cancelled = b.cancel("q", job.id).await.expect("cancel");
        assert!(
            matches!(&cancelled, dmq_core::Cancelled::Removed { payload } if *payload == job.payload),
            "{cancelled:?}"
        );
    }
    let stats = b.queue_stats("q").await.expect("stats");
    assert_eq!((stats.ready, stats.delayed), (1, 0), "the low job alone is left");
}

/// The gate keys (flow limits) of a queue, spoiled: a gates hash of another type fails a
/// claim and an ack of a gated job before they change anything; members of the gated set
/// that dmq did not write (no separator, no priority) are dropped by the claim that
/// meets them, and hold back no job.
async fn spoiled_gate_keys_change_nothing_and_foreign_gate_members_hold_back_no_job(url: &str) {
    let (_cleanup, b) = fresh(url).await;
    let q = ["g".to_owned()];
    let gate = dmq_core::Gate::new("report", None, 1, Some(1));
    let gated: Vec<Job> = jobs("g", 3).into_iter().map(|j| j.with_gate(gate.clone())).collect();
    for job in gated {
        b.enqueue(job).await.expect("enqueue");
    }
    let first = b.claim("w", &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(first.len(), 1, "the gate lets one run");
    let keys = b.keys().queue("g");

    let key = keys.gates();
    spoil(url, &key).await;
    let before = snapshot(&b, url).await;
    let err = b.claim("w", &q, 10, LONG, Duration::ZERO).await.unwrap_err();
    refused_unchanged(&b, url, "claim with a spoiled gates hash", err, &key, &before).await;
    let err = b.ack(&first[0].lease).await.unwrap_err();
    refused_unchanged(&b, url, "ack with a spoiled gates hash", err, &key, &before).await;
    mend(url, &key).await;

    // Foreign members among the held jobs, ahead of the real ones.
    let mut conn = raw(url).await;
    let () = redis::cmd("ZADD")
        .arg(keys.gated())
        .arg(0)
        .arg("wreport\0x\0")
        .arg(0)
        .arg("wreport\0")
        .query_async(&mut conn)
        .await
        .expect("zadd");
    b.ack(&first[0].lease).await.expect("ack");
    let mut ran = 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ran < 3 && std::time::Instant::now() < deadline {
        let got = b.claim("w", &q, 10, LONG, Duration::from_millis(500)).await.expect("claim");
        assert!(got.len() <= 1, "the gate lets one run at a time: {}", got.len());
        for d in got {
            b.ack(&d.lease).await.expect("ack");
            ran += 1;
        }
    }
    assert_eq!(ran, 3, "every job ran, one at a time");
    let stats = b.queue_stats("g").await.expect("stats");
    assert_eq!((stats.ready, stats.gated, stats.in_flight), (0, 0, 0), "{stats:?}");
}

/// Grouped jobs (fair claiming) wait in the gated set too: members in the groups' range
/// that dmq did not write (no separator, no priority) are dropped by the claim that
/// meets them and hold back no job, and a gated set of another type fails a grouped
/// enqueue with nothing added.
async fn foreign_group_members_hold_back_no_job_and_a_spoiled_set_adds_nothing(url: &str) {
    let (_cleanup, b) = fresh(url).await;
    let q = ["g".to_owned()];
    let keys = b.keys().queue("g");
    let mut conn = raw(url).await;
    let () = redis::cmd("ZADD")
        .arg(keys.gated())
        .arg(0)
        .arg("g")
        .arg(0)
        .arg("ga")
        .arg(0)
        .arg("ga\0x\0")
        .arg(0)
        .arg("ga\0")
        .arg(0)
        .arg("gb\09\0")
        .query_async(&mut conn)
        .await
        .expect("zadd");
    for job in jobs("g", 3) {
        b.enqueue(job.in_group("a")).await.expect("enqueue");
    }
    let mut ran = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ran < 3 && std::time::Instant::now() < deadline {
        for d in b.claim("w", &q, 10, LONG, Duration::from_millis(200)).await.expect("claim") {
            b.ack(&d.lease).await.expect("ack");
            ran += 1;
        }
    }
    assert_eq!(ran, 3, "every grouped job ran");
    let stats = b.queue_stats("g").await.expect("stats");
    assert_eq!((stats.ready, stats.in_flight), (0, 0), "{stats:?}");

    let key = keys.gated();
    spoil(url, &key).await;
    let before = snapshot(&b, url).await;
    let job = jobs("g", 1).remove(0).in_group("a");
    let err = b.enqueue(job).await.unwrap_err();
    refused_unchanged(&b, url, "grouped enqueue with a spoiled gated set", err, &key, &before)
        .await;
    mend(url, &key).await;
}

/// Each test above, on the single test Redis and on the local Redis Cluster.
macro_rules! on_single_and_cluster {
    ($($name:ident),* $(,)?) => {
        mod single {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::common::redis_url()).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::common::cluster_url()).await;
                }
            )*
        }
    };
}

on_single_and_cluster!(
    a_bad_entry_in_a_ready_list_is_dropped_alone_and_the_good_jobs_are_claimed,
    a_key_of_the_wrong_type_fails_a_script_before_it_changes_anything,
    the_doctor_finds_a_stranded_job_and_puts_it_back,
    a_counter_that_is_no_number_fails_the_claim_before_it_changes_anything,
    a_broken_queue_holds_up_none_of_the_others,
    an_id_pushed_twice_is_claimed_once,
    a_script_that_fails_after_writing_takes_back_every_write,
    good_jobs_behind_a_claims_worth_of_bad_entries_are_claimed_at_once,
    a_spoiled_queue_registry_stops_no_job_and_listing_says_why,
    queues_made_before_the_registry_are_listed_beside_new_ones,
    a_spoiled_queue_hides_no_job_of_another,
    a_key_of_the_wrong_type_fails_a_cancel_before_it_changes_anything,
    spoiled_gate_keys_change_nothing_and_foreign_gate_members_hold_back_no_job,
    foreign_group_members_hold_back_no_job_and_a_spoiled_set_adds_nothing,
);
