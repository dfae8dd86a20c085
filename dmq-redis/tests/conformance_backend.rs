//! The result-backend conformance suite, unchanged, against `RedisBackend` on a real
//! Redis; then what the Redis backend promises beyond it: one subscription however
//! many callers wait, and no waiter left asleep when that subscription drops.

mod common;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dmq_core::{ResultBackend, TaskId, TaskOutcome};
use dmq_redis::{Keys, RedisBackend};
use futures::{FutureExt, StreamExt};
use redis::aio::MultiplexedConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

dmq_core::backend_conformance_tests!(common::RedisFixture);

/// Long enough that a waiter it ends was not woken; results left behind by a failed
/// test expire on their own within [`TTL`].
const WAIT: Duration = Duration::from_secs(120);
const TTL: Duration = Duration::from_secs(300);

async fn connect(url: &str, namespace: &str) -> RedisBackend {
    RedisBackend::connect_with_namespace(url, namespace)
        .await
        .expect("connect to redis (scripts/ensure-redis starts one)")
}

/// Runs `test` with a fresh namespace and removes that namespace's keys afterwards,
/// whether the test passed or not.
async fn in_fresh_namespace<Fut: Future<Output = ()>>(test: impl FnOnce(String) -> Fut) {
    let namespace = common::fresh_namespace();
    let outcome = AssertUnwindSafe(test(namespace.clone())).catch_unwind().await;
    common::remove_namespace(&namespace).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// An outcome that survives the round trip exactly (timestamps in whole milliseconds).
fn outcome(n: usize) -> TaskOutcome {
    let at = DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000).unwrap_or_default();
    let mut outcome = TaskOutcome::succeeded(n.to_le_bytes().to_vec(), 1, at);
    outcome.finished_at = at;
    outcome
}

async fn admin() -> MultiplexedConnection {
    let client = redis::Client::open(common::redis_url()).expect("redis url");
    client.get_multiplexed_async_connection().await.expect("connect to redis")
}

/// How many connections are subscribed to `channel`.
async fn subscribers(admin: &mut MultiplexedConnection, channel: &str) -> usize {
    let (_, count): (String, usize) =
        redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query_async(admin).await.expect("numsub");
    count
}

/// How many clients the server has, whoever they belong to.
async fn clients(admin: &mut MultiplexedConnection) -> usize {
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(admin).await.expect("list");
    list.lines().count()
}

/// Waits up to a minute for `condition`, checking every 20 ms.
async fn eventually<Fut: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> Fut) {
    let give_up = Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(Instant::now() < give_up, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_waits_share_one_subscription() {
    const WAITERS: usize = 10_000;
    in_fresh_namespace(|namespace| async move {
        let backend = Arc::new(connect(&common::redis_url(), &namespace).await);
        let channel = Keys::new(namespace.as_str()).results_channel();
        let mut admin = admin().await;
        let clients_before = clients(&mut admin).await;

        let ids: Vec<TaskId> = (0..WAITERS).map(|_| TaskId::new()).collect();
        let waiters: Vec<_> = ids
            .iter()
            .map(|&id| {
                let backend = Arc::clone(&backend);
                tokio::spawn(async move { backend.wait(id, WAIT).await })
            })
            .collect();
        eventually("every waiter has registered and the subscription is up", || {
            let backend = Arc::clone(&backend);
            let (mut admin, channel) = (admin.clone(), channel.clone());
            async move {
                backend.waiting_tasks() == WAITERS && subscribers(&mut admin, &channel).await > 0
            }
        })
        .await;

        assert_eq!(subscribers(&mut admin, &channel).await, 1, "one subscription for all waiters");
        let opened = clients(&mut admin).await.saturating_sub(clients_before);
        // Other tests and processes may connect meanwhile: bound loosely, far below one
        // connection per waiter.
        assert!(opened < 1_000, "{opened} connections opened for {WAITERS} waits");
        assert!(waiters.iter().all(|w| !w.is_finished()), "a waiter returned before any store");

        let stored = Instant::now();
        futures::stream::iter(ids.iter().enumerate())
            .for_each_concurrent(64, |(i, &id)| {
                let backend = &backend;
                async move { backend.store(id, &outcome(i), TTL).await.expect("store") }
            })
            .await;
        for (i, waiter) in waiters.into_iter().enumerate() {
            let got = waiter.await.expect("join").expect("wait");
            assert_eq!(got, Some(outcome(i)), "waiter {i}");
        }
        let waited = stored.elapsed();
        assert!(waited < WAIT / 2, "the waiters were not woken by the stores: {waited:?}");
        assert_eq!(backend.waiting_tasks(), 0, "finished waits left entries behind");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_leaves_nothing_behind() {
    in_fresh_namespace(|namespace| async move {
        let backend = Arc::new(connect(&common::redis_url(), &namespace).await);
        let id = TaskId::new();
        let cut_short = tokio::time::timeout(Duration::from_millis(300), backend.wait(id, WAIT));
        assert!(cut_short.await.is_err(), "nothing was stored, so the wait cannot have ended");
        assert_eq!(backend.waiting_tasks(), 0, "a dropped wait left its entry behind");

        // Two callers wait for one id; the one that gives up must not strand the other.
        let waiter =
            |backend: Arc<RedisBackend>| tokio::spawn(async move { backend.wait(id, WAIT).await });
        let (quitter, stayer) = (waiter(Arc::clone(&backend)), waiter(Arc::clone(&backend)));
        eventually("both waiters have registered", || {
            let backend = Arc::clone(&backend);
            async move { backend.waiting_tasks() == 1 }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        quitter.abort();
        assert!(quitter.await.is_err_and(|e| e.is_cancelled()));
        assert_eq!(backend.waiting_tasks(), 1, "the remaining waiter lost its entry");
        let stored = Instant::now();
        backend.store(id, &outcome(1), TTL).await.expect("store");
        assert_eq!(stayer.await.expect("join").expect("wait"), Some(outcome(1)));
        assert!(stored.elapsed() < WAIT / 2, "the remaining waiter was not woken");
        assert_eq!(backend.waiting_tasks(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_kept_under_their_key_with_their_ttl_and_announced() {
    in_fresh_namespace(|namespace| async move {
        let backend = connect(&common::redis_url(), &namespace).await;
        let keys = Keys::new(namespace.as_str());
        let client = redis::Client::open(common::redis_url()).expect("redis url");
        let mut listener = client.get_async_pubsub().await.expect("pubsub");
        listener.subscribe(keys.results_channel()).await.expect("subscribe");

        let id = TaskId::new();
        let day = Duration::from_secs(24 * 60 * 60);
        backend.store(id, &outcome(7), day).await.expect("store");

        let mut admin = admin().await;
        let raw: Vec<u8> =
            redis::cmd("GET").arg(keys.result(id)).query_async(&mut admin).await.expect("get");
        let decoded: TaskOutcome = rmp_serde::from_slice(&raw).expect("a MessagePack outcome");
        assert_eq!(decoded, outcome(7));
        let pttl: i64 =
            redis::cmd("PTTL").arg(keys.result(id)).query_async(&mut admin).await.expect("pttl");
        let day_ms = i64::try_from(day.as_millis()).unwrap_or(i64::MAX);
        assert!(pttl > day_ms - 60_000 && pttl <= day_ms, "PTTL {pttl}");

        let message = tokio::time::timeout(Duration::from_secs(10), listener.on_message().next())
            .await
            .expect("an announcement")
            .expect("a message");
        assert_eq!(message.get_payload::<String>().expect("text"), id.to_string());

        let shown = format!("{backend:?}");
        assert!(shown.contains(&namespace) && !shown.contains("redis://"), "{shown}");
    })
    .await;
}

/// A TCP proxy in front of Redis that can cut every connection through it, and refuse
/// new ones, until it is opened again: a network outage on demand, for this test only.
struct Proxy {
    url: String,
    open: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        let url = common::redis_url();
        let client = redis::Client::open(url.as_str()).expect("redis url");
        let upstream = client.get_connection_info().addr().to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let local = listener.local_addr().expect("local address").to_string();
        assert!(url.contains(&upstream), "REDIS_URL must spell out host:port");
        let proxied = url.replacen(&upstream, &local, 1);
        let (open, mut gate) = watch::channel(true);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*gate.borrow_and_update() {
                    continue; // closed: hang up at once
                }
                let (upstream, mut gate) = (upstream.clone(), gate.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = gate.wait_for(|open| !open) => {}
                    }
                });
            }
        });
        Proxy { url: proxied, open, accept }
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn restore(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_stored_while_the_subscription_was_down_still_wakes_its_waiter() {
    in_fresh_namespace(|namespace| async move {
        let proxy = Proxy::start().await;
        let behind_proxy = Arc::new(connect(&proxy.url, &namespace).await);
        let direct = connect(&common::redis_url(), &namespace).await;
        let channel = Keys::new(namespace.as_str()).results_channel();
        let admin = admin().await;

        let id = TaskId::new();
        let waiter = {
            let backend = Arc::clone(&behind_proxy);
            tokio::spawn(async move { backend.wait(id, WAIT).await })
        };
        eventually("the waiter's subscription is up", || {
            let (mut admin, channel) = (admin.clone(), channel.clone());
            async move { subscribers(&mut admin, &channel).await == 1 }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await; // past its first look

        proxy.cut();
        eventually("redis has dropped the subscription", || {
            let (mut admin, channel) = (admin.clone(), channel.clone());
            async move { subscribers(&mut admin, &channel).await == 0 }
        })
        .await;
        // Announced to no one: only the subscriber's recovery can wake the waiter.
        direct.store(id, &outcome(5), TTL).await.expect("store");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "the waiter returned during the outage");

        proxy.restore();
        let restored = Instant::now();
        assert_eq!(waiter.await.expect("join").expect("wait"), Some(outcome(5)));
        let waited = restored.elapsed();
        assert!(waited < WAIT / 2, "the waiter was not woken after reconnecting: {waited:?}");
        eventually("the subscription is back", || {
            let (mut admin, channel) = (admin.clone(), channel.clone());
            async move { subscribers(&mut admin, &channel).await == 1 }
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_on_an_unreachable_redis_reports_it_instead_of_sleeping() {
    in_fresh_namespace(|namespace| async move {
        let proxy = Proxy::start().await;
        let backend = connect(&proxy.url, &namespace).await;
        proxy.cut();
        let started = Instant::now();
        let got = backend.wait(TaskId::new(), WAIT).await;
        let err = got.expect_err("redis cannot be reached, so the wait must fail");
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("redis at"), "the message names the server: {err}");
        let waited = started.elapsed();
        assert!(waited < WAIT / 2, "the wait slept {waited:?} before reporting {err}");
    })
    .await;
}
