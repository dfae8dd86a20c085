//! Bytes in Redis that dmq did not write, and replies that never arrive: a bad entry in
//! a ready list is dropped alone while the jobs beside it are claimed; a key of the
//! wrong type makes a script fail before it changes anything; a job stranded by a
//! write cut off halfway is found and put back by the doctor; and a claim whose reply
//! was lost is given back at the next claim instead of waiting out its lease.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dmq_core::{Broker, Job, TaskId};
use dmq_redis::RedisBroker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LONG: Duration = Duration::from_secs(30);

/// A broker in a fresh namespace, whose keys the guard deletes.
async fn fresh() -> (common::Cleanup, RedisBroker) {
    let namespace = common::fresh_namespace();
    let cleanup = common::Cleanup::of(&namespace);
    let broker = RedisBroker::connect_with_namespace(&common::redis_url(), &namespace)
        .await
        .expect("connect");
    (cleanup, broker)
}

async fn raw() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(common::redis_url()).expect("url");
    client.get_multiplexed_async_connection().await.expect("connect")
}

fn jobs(queue: &str, n: usize) -> Vec<Job> {
    (0..n)
        .map(|i| Job::new(TaskId::new(), queue, 5, None, format!("job {i}").into_bytes()))
        .collect()
}

/// A ready list holding an id that is no task id (with an envelope, as another program
/// might write), an upper-case one, and a task id with no envelope: the claim drops both, counts them,
/// and hands out the nine good jobs beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_entry_in_a_ready_list_is_dropped_alone_and_the_good_jobs_are_claimed() {
    let (_cleanup, b) = fresh().await;
    let keys = b.keys().queue("q");
    let good = jobs("q", 9);
    let ids: Vec<TaskId> = good.iter().map(|j| j.id).collect();
    b.enqueue_batch(good[..4].to_vec()).await.expect("enqueue");
    let mut conn = raw().await;
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_of_the_wrong_type_fails_a_script_before_it_changes_anything() {
    let (_cleanup, b) = fresh().await;
    let keys = b.keys().queue("q");
    let high = Job::new(TaskId::new(), "q", 9, None, b"high".to_vec());
    b.enqueue(high.clone()).await.expect("enqueue");
    let mut conn = raw().await;
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doctor_finds_a_stranded_job_and_puts_it_back() {
    let (_cleanup, b) = fresh().await;
    let keys = b.keys().queue("q");
    let all = jobs("q", 3);
    b.enqueue_batch(all.clone()).await.expect("enqueue");
    let q = vec!["q".to_owned()];
    let healthy = b.doctor(&q, false).await.expect("doctor");
    assert!(healthy[0].stranded.is_empty(), "{healthy:?}");
    // Strand the middle one: out of its list, its envelope left behind.
    let mut conn = raw().await;
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

/// Counters another program overwrote with text: the claim refuses to run before it
/// changes anything (it would fail halfway, incrementing them), and the queue's stats
/// still read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_that_is_no_number_fails_the_claim_before_it_changes_anything() {
    let (_cleanup, b) = fresh().await;
    let keys = b.keys().queue("q");
    let one = jobs("q", 1);
    b.enqueue_batch(one.clone()).await.expect("enqueue");
    let mut conn = raw().await;
    let q = vec!["q".to_owned()];
    for (key, field) in [(keys.bad_entries(), None), (keys.meta(), Some("~seq"))] {
        let mut garbage = match field {
            Some(field) => redis::cmd("HSET").arg(&key).arg(field).clone(),
            None => redis::cmd("SET").arg(&key).clone(),
        };
        let () = garbage.arg("garbage").query_async(&mut conn).await.expect("write garbage");
        let err = b.claim("w", &q, 10, LONG, Duration::ZERO).await.unwrap_err();
        assert!(err.to_string().contains("nothing was changed"), "{err}");
        let stats = b.queue_stats("q").await.expect("stats read despite the garbage");
        assert_eq!((stats.ready, stats.in_flight), (1, 0), "{key}: {stats:?}");
        let repair = match field {
            Some(field) => redis::cmd("HDEL").arg(&key).arg(field).clone(),
            None => redis::cmd("DEL").arg(&key).clone(),
        };
        let _: i64 = repair.query_async(&mut conn).await.expect("repair");
    }
    let got = b.claim("w", &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(got.len(), 1);
}

/// A worker on two queues, one of them broken (a key of the wrong type), still claims
/// the other's jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_queue_holds_up_none_of_the_others() {
    let (_cleanup, b) = fresh().await;
    let mut conn = raw().await;
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_pushed_twice_is_claimed_once() {
    let (_cleanup, b) = fresh().await;
    let keys = b.keys().queue("q");
    let one = jobs("q", 1);
    b.enqueue_batch(one.clone()).await.expect("enqueue");
    let mut conn = raw().await;
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
