//! The Redis result backend.
//!
//! An outcome lives under [`Keys::result`] with a TTL. Outcomes are written in
//! batches (whatever was stored while the previous batch was on its way), one round
//! trip each: a `SET` per outcome, then one `PUBLISH` on [`Keys::results_channel`]
//! naming every task id of the batch, so a waiter that saw no result is always told
//! when one arrives, and finds it stored.
//!
//! Waiting never polls Redis. Each backend has at most one subscriber task, started
//! by the first `wait`, holding one pub/sub connection however many callers wait;
//! it wakes the waiters of each announced id. If that connection drops, the
//! subscriber reconnects with backoff and then wakes every waiter, so a result
//! stored while no one was listening is still found.
//!
//! On a Redis Cluster, result keys spread over every slot, so a batch's `SET`s go out
//! as separate commands (sent together, each to its slot's master) before the
//! announcement; and the announcement is a sharded one (`SPUBLISH`, heard with
//! `SSUBSCRIBE`), which reaches only the master of the channel's slot (and its
//! replicas) instead of being broadcast to every node.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use dmq_core::{Error, Result, ResultBackend, TaskId, TaskOutcome};
use futures::StreamExt;
use redis::Value;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind};
use tokio::sync::mpsc;
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::batch::Batcher;
use crate::conn::{Cluster, Conn, Sentinel, Shared, Source};
use crate::error::{copy_error, redis_error};
use crate::keys::{DEFAULT_NAMESPACE, Keys};
use crate::redis_url::RedisUrl;

/// How long connecting and subscribing the pub/sub connection may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the subscriber pings its connection, to notice one that died silently.
const PING_EVERY: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection counts as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// The first and the longest pause between two reconnection attempts.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// How often the command connection retries a failed (re)connection before the call
/// that needed it fails.
const CONNECT_RETRIES: usize = 2;
/// About a century: the longest TTL we pass to Redis (which refuses expiry times
/// that overflow its clock) and "never" for a wait deadline.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// A [`ResultBackend`] that keeps outcomes in Redis, each under its task id with a
/// TTL, and wakes waiting callers through a single subscription per backend.
///
/// Ordinary commands share one multiplexed connection that reconnects by itself.
/// The first [`wait`](ResultBackend::wait) opens one more connection, subscribed to
/// the namespace's results channel, which serves every waiter of this backend (and
/// of its clones): ten thousand concurrent waits still hold two connections.
///
/// Cloning is cheap and shares the connections and the subscription.
///
/// ```no_run
/// # async fn demo() -> dmq_core::Result<()> {
/// use dmq_redis::RedisBackend;
///
/// let backend = RedisBackend::connect("redis://127.0.0.1:6379").await?;
/// let manager = dmq_core::Manager::builder().backend(backend).build()?;
/// # let _ = manager;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    announcer: Announcer,
    shared: Arc<Shared>,
    keys: Keys,
    channel: String,
    /// `host:port` (or the socket path; for a cluster, its URL without the password),
    /// for messages: never the URL itself, which may carry a password.
    addr: String,
    hub: Arc<Hub>,
    /// Writes results in batches: each batch is one round trip, its `SET`s followed
    /// by one `PUBLISH` naming every task in it.
    writer: Batcher<StoredResult, bool>,
    /// The subscriber task, once a wait has started it.
    subscriber: Mutex<Option<AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let subscriber = self.subscriber.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(subscriber) = subscriber.take() {
            subscriber.abort();
        }
    }
}

/// Where results are announced and heard.
#[derive(Clone)]
enum Announcer {
    /// `PUBLISH` and `SUBSCRIBE` on the one Redis (boxed: a client with TLS settings
    /// is large).
    Single(Box<redis::Client>),
    /// `SPUBLISH` and `SSUBSCRIBE` on the cluster's master of the channel's slot.
    Cluster(Arc<Cluster>),
    /// `PUBLISH` and `SUBSCRIBE` on the master Sentinel names when subscribing.
    Sentinel(Arc<Sentinel>),
}

impl Announcer {
    fn publish_command(&self) -> &'static str {
        match self {
            Announcer::Single(_) | Announcer::Sentinel(_) => "PUBLISH",
            Announcer::Cluster(_) => "SPUBLISH",
        }
    }
}

/// What the subscriber task and the waiters share.
struct Hub {
    /// One entry per task id someone waits for, removed when the last waiter goes.
    waiters: Mutex<HashMap<TaskId, Arc<Notify>>>,
    link: watch::Sender<Link>,
}

/// The state of the subscription.
#[derive(Debug, Clone)]
enum Link {
    /// Not subscribed yet, or reconnecting after the connection was lost.
    Connecting,
    /// Subscribed: every result stored from now on is announced.
    Up,
    /// The last attempt to subscribe failed; the subscriber keeps trying.
    Failed { message: String, transient: bool, source: Option<dmq_core::BackendSource> },
}

impl RedisBackend {
    /// Connects to the Redis at `url` (`redis://[[user]:password@]host[:port][/db]`, or
    /// `rediss://` with the TLS options of [`RedisUrl`]), keeping results under the
    /// default namespace, [`DEFAULT_NAMESPACE`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the URL is not valid (see [`RedisUrl::parse`]),
    /// [`Error::Backend`] when Redis cannot be reached (transient) or refuses the
    /// credentials or the TLS handshake.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with_namespace(url, DEFAULT_NAMESPACE).await
    }

    /// Connects to the Redis at `url`, keeping results under `namespace`, so that
    /// several applications (or tests) can share one Redis without meeting.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `namespace` is empty or holds whitespace,
    /// braces or glob characters, or the URL is not valid; otherwise as
    /// [`connect`](RedisBackend::connect).
    pub async fn connect_with_namespace(url: &str, namespace: &str) -> Result<Self> {
        check_namespace(namespace)?;
        let url = RedisUrl::parse(url)?;
        let mut addr = url.client().get_connection_info().addr().to_string();
        let failed = |addr: &str, e| {
            redis_error(&format!("could not connect the result backend to redis at {addr}"), e)
        };
        let (shared, announcer) = match Source::of(&url).await.map_err(|e| failed(&addr, e))? {
            Source::Cluster(cluster) => {
                addr = url.shown().to_owned();
                let source = Source::Cluster(cluster.clone());
                let shared = Shared::connect(&source).await.map_err(|e| failed(&addr, e))?;
                (shared, Announcer::Cluster(Arc::from(cluster)))
            }
            Source::Client(client) => {
                // Few quick retries: `connect` to a Redis that is down fails within a
                // second or so, and a lost connection is retried again by the next
                // command anyway.
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(CONNECT_RETRIES)
                    .set_max_delay(RECONNECT_MAX);
                let conn = ConnectionManager::new_with_config((*client).clone(), config)
                    .await
                    .map_err(|e| failed(&addr, e))?;
                (Shared::Manager(conn), Announcer::Single(client))
            }
            Source::Sentinel(sentinel) => {
                addr = url.shown().to_owned();
                let source = Source::Sentinel(Arc::clone(&sentinel));
                let shared = Shared::connect(&source).await.map_err(|e| failed(&addr, e))?;
                (shared, Announcer::Sentinel(sentinel))
            }
            Source::Pool(_) => unreachable!("a URL makes no pool"),
        };
        let keys = Keys::new(namespace);
        let (link, _) = watch::channel(Link::Connecting);
        let shared = Arc::new(shared);
        let writer = result_writer(
            Arc::clone(&shared),
            keys.results_channel(),
            announcer.publish_command(),
            addr.clone(),
        );
        Ok(RedisBackend {
            inner: Arc::new(Inner {
                announcer,
                shared,
                channel: keys.results_channel(),
                keys,
                addr,
                writer,
                hub: Arc::new(Hub { waiters: Mutex::default(), link }),
                subscriber: Mutex::new(None),
            }),
        })
    }

    /// The namespace the results live under.
    #[must_use]
    pub fn namespace(&self) -> &str {
        self.inner.keys.namespace()
    }

    /// How many distinct task ids callers are waiting for through this backend (and
    /// its clones) right now.
    #[must_use]
    pub fn waiting_tasks(&self) -> usize {
        self.inner.hub.lock().len()
    }

    /// Starts the subscriber task, unless it runs already. It is started again if it
    /// ended, as it does when the tokio runtime that ran it shuts down while this
    /// backend lives on.
    fn start_subscriber(&self) {
        let mut running = self.inner.subscriber.lock().unwrap_or_else(PoisonError::into_inner);
        if running.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        self.inner.hub.link.send_replace(Link::Connecting);
        let subscriber = Subscriber {
            announcer: self.inner.announcer.clone(),
            shared: Arc::clone(&self.inner.shared),
            channel: self.inner.channel.clone(),
            addr: self.inner.addr.clone(),
            hub: Arc::clone(&self.inner.hub),
        };
        *running = Some(tokio::spawn(subscriber.run()).abort_handle());
    }

    /// Waits until the subscription is live, or has failed to come up.
    async fn subscribed(&self, link: &mut watch::Receiver<Link>) -> Result<()> {
        let state = link.wait_for(|l| !matches!(l, Link::Connecting)).await.map(|l| l.clone());
        match state {
            Ok(Link::Failed { message, transient, source: Some(source) }) => {
                Err(Error::backend_caused_by(message, transient, source))
            }
            Ok(Link::Failed { message, transient, source: None }) => {
                Err(Error::backend(message, transient))
            }
            Ok(_) => Ok(()),
            Err(_closed) => Err(Error::backend(
                format!(
                    "the subscription to {} on redis at {} has stopped; connect a new RedisBackend",
                    self.inner.channel, self.inner.addr
                ),
                false,
            )),
        }
    }

    /// Stores `outcome`, under `fence` if given (see [`ResultBackend::store_fenced`]);
    /// returns whether it stored.
    async fn put(
        &self,
        id: TaskId,
        outcome: &TaskOutcome,
        ttl: Duration,
        fence: Option<u64>,
    ) -> Result<bool> {
        let value = encode_fenced(outcome, fence.unwrap_or(0))?;
        let key = self.inner.keys.result(id);
        let ttl_ms = ttl_millis(ttl);
        self.inner.writer.submit(StoredResult { id, key, value, ttl_ms, fence }).await
    }

    fn fail(&self, what: &str, e: redis::RedisError) -> Error {
        self.inner.shared.failed(&e);
        redis_error(&format!("{what} redis at {}", self.inner.addr), e)
    }
}

#[async_trait]
impl ResultBackend for RedisBackend {
    async fn store(&self, id: TaskId, outcome: &TaskOutcome, ttl: Duration) -> Result<()> {
        self.put(id, outcome, ttl, None).await.map(|_| ())
    }

    /// The common case, a job's first result, costs what a plain store does: a
    /// `SET ... NX` in the batch. Only when a result is there already does one more
    /// round trip run `lua/store_result.lua`, which decides by
    /// [`may_replace`](dmq_core::may_replace) and writes in one step.
    async fn store_fenced(
        &self,
        id: TaskId,
        outcome: &TaskOutcome,
        ttl: Duration,
        fence: u64,
    ) -> Result<bool> {
        self.put(id, outcome, ttl, Some(fence)).await
    }

    async fn get(&self, id: TaskId) -> Result<Option<TaskOutcome>> {
        let what = || format!("could not read the result of task {id} from");
        let mut conn = self.inner.shared.get().await.map_err(|e| self.fail(&what(), e))?;
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.inner.keys.result(id))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(&what(), e))?;
        bytes
            .map(|bytes| {
                rmp_serde::from_slice(&bytes).map_err(|e| {
                    Error::backend(
                        format!(
                            "the result of task {id} in redis at {} does not decode ({e}); it was \
                         written by an incompatible version of dmq or by another program",
                            self.inner.addr
                        ),
                        false,
                    )
                })
            })
            .transpose()
    }

    async fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<TaskOutcome>> {
        let now = Instant::now();
        let deadline = now.checked_add(timeout).unwrap_or(now + FAR);
        self.start_subscriber();
        // Interest first: from here on, an announcement of `id` wakes this waiter.
        let interest = Interest::register(&self.inner.hub, id);
        let mut link = self.inner.hub.link.subscribe();
        loop {
            let notified = interest.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Look only once the subscription is live: a result stored after the look
            // is then announced to us, and one stored before it is found by it.
            match tokio::time::timeout_at(deadline, self.subscribed(&mut link)).await {
                Err(_elapsed) => return self.get(id).await,
                // Redis may be down: then `get` says so; if not, the subscription's
                // failure is the news.
                Ok(Err(e)) => return self.get(id).await?.map_or(Err(e), |o| Ok(Some(o))),
                Ok(Ok(())) => {}
            }
            if let Some(outcome) = self.get(id).await? {
                return Ok(Some(outcome));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.get(id).await;
            }
            // Woken: by the announcement of `id`, or after a reconnection. Look again.
        }
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let started = self
            .inner
            .subscriber
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|task| !task.is_finished());
        let subscription = if !started {
            "not running"
        } else {
            match *self.inner.hub.link.borrow() {
                Link::Connecting => "connecting",
                Link::Up => "up",
                Link::Failed { .. } => "failed, retrying",
            }
        };
        f.debug_struct("RedisBackend")
            .field("addr", &self.inner.addr)
            .field("namespace", &self.inner.keys.namespace())
            .field("subscription", &subscription)
            .field("waiting_tasks", &self.waiting_tasks())
            .finish()
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HashMap<TaskId, Arc<Notify>>> {
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes whoever waits for `id`.
    fn wake(&self, id: TaskId) {
        if let Some(notify) = self.lock().get(&id) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter, so that each looks for its result again.
    fn wake_all(&self) {
        for notify in self.lock().values() {
            notify.notify_waiters();
        }
    }
}

/// One caller's interest in one task id; dropping it (when the wait ends or is
/// cancelled) removes the map entry once no one else waits for that id.
struct Interest<'a> {
    hub: &'a Hub,
    id: TaskId,
    notify: Arc<Notify>,
}

impl<'a> Interest<'a> {
    fn register(hub: &'a Hub, id: TaskId) -> Self {
        let notify = Arc::clone(hub.lock().entry(id).or_default());
        Interest { hub, id, notify }
    }
}

impl Drop for Interest<'_> {
    fn drop(&mut self) {
        let mut waiters = self.hub.lock();
        // New interests are taken under this lock, so a count of two (the map's and
        // ours) means no one else waits for `id`.
        let last = waiters
            .get(&self.id)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify) && Arc::strong_count(n) == 2);
        if last {
            waiters.remove(&self.id);
        }
    }
}

/// The background task that holds the subscription.
struct Subscriber {
    announcer: Announcer,
    shared: Arc<Shared>,
    channel: String,
    addr: String,
    hub: Arc<Hub>,
}

impl Subscriber {
    async fn run(self) {
        let mut failures: u32 = 0;
        loop {
            match self.subscribe().await {
                Ok(pubsub) => {
                    failures = 0;
                    self.check_commands().await;
                    self.hub.link.send_replace(Link::Up);
                    // Results stored while no subscription was live were announced to
                    // no one: every waiter looks again.
                    self.hub.wake_all();
                    let why = self.listen(pubsub).await;
                    tracing::warn!(
                        channel = %self.channel,
                        addr = %self.addr,
                        "lost the result subscription ({why}); reconnecting"
                    );
                    self.hub.link.send_replace(Link::Connecting);
                }
                Err(e) => {
                    let context = format!(
                        "could not subscribe to {} on redis at {}",
                        self.channel, self.addr
                    );
                    let (message, transient, source) = match redis_error(&context, e) {
                        Error::Backend { message, transient, source, .. } => {
                            (message, transient, source)
                        }
                        other => (other.to_string(), true, None),
                    };
                    if failures == 0 {
                        tracing::warn!("{message}; retrying with backoff");
                    } else {
                        tracing::debug!(attempt = failures + 1, "{message}");
                    }
                    self.hub.link.send_replace(Link::Failed { message, transient, source });
                    failures = failures.saturating_add(1);
                }
            }
            tokio::time::sleep(backoff(failures)).await;
        }
    }

    async fn subscribe(&self) -> redis::RedisResult<Subscription> {
        let subscribe = async {
            match &self.announcer {
                Announcer::Single(client) => {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&self.channel).await?;
                    Ok(Subscription::Single(pubsub))
                }
                Announcer::Sentinel(sentinel) => {
                    // The master Sentinel names now; after a failover the subscriber
                    // loses this connection and asks again.
                    let mut pubsub = sentinel.master().await?.get_async_pubsub().await?;
                    pubsub.subscribe(&self.channel).await?;
                    Ok(Subscription::Single(pubsub))
                }
                Announcer::Cluster(cluster) => {
                    let (sender, pushed) = mpsc::unbounded_channel();
                    let mut conn = cluster.subscriber(sender)?.get_async_connection().await?;
                    conn.ssubscribe(&self.channel).await?;
                    Ok(Subscription::Cluster(conn, pushed))
                }
            }
        };
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe).await {
            Ok(subscribed) => subscribed,
            Err(_elapsed) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {SUBSCRIBE_TIMEOUT:?}"),
            )
            .into()),
        }
    }

    /// Makes sure the shared command connection works before waiters are woken to
    /// use it: when the subscription was lost, that connection most likely was too,
    /// and its first command would fail and only then start a reconnection.
    async fn check_commands(&self) {
        let ping = async {
            for _ in 0..3 {
                let Ok(mut conn) = self.shared.get().await else { continue };
                if redis::cmd("PING").query_async::<redis::Value>(&mut conn).await.is_ok() {
                    return;
                }
            }
        };
        // Waiters are woken regardless; if Redis is still unwell they report it.
        let _ = tokio::time::timeout(SUBSCRIBE_TIMEOUT, ping).await;
    }

    /// Wakes the waiters of each announced id until the connection is lost; says why.
    async fn listen(&self, subscription: Subscription) -> String {
        let (conn, pushed) = match subscription {
            Subscription::Single(pubsub) => return self.listen_single(pubsub).await,
            Subscription::Cluster(conn, pushed) => (conn, pushed),
        };
        self.listen_cluster(conn, pushed).await
    }

    /// [`listen`](Self::listen) on a cluster: the connection resubscribes by itself
    /// after a reconnection or a failover, and says so with a push of kind
    /// `ssubscribe`, after which every waiter looks again.
    async fn listen_cluster(
        &self,
        conn: ClusterConnection,
        mut pushed: mpsc::UnboundedReceiver<PushInfo>,
    ) -> String {
        let slot = crate::keys::cluster_slot(self.channel.as_bytes());
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resubscribing = false;
        loop {
            tokio::select! {
                push = pushed.recv() => match push {
                    Some(PushInfo { kind: PushKind::SMessage, data }) => {
                        if let Some(Value::BulkString(payload)) = data.get(1) {
                            self.announce(payload);
                        }
                    }
                    Some(PushInfo { kind: PushKind::Disconnection, .. }) => resubscribing = true,
                    // The server ended the subscription: the channel's slot moved to
                    // another master (a failover that left the old one up, or a
                    // resharding). This connection's slot map is stale and would not
                    // resubscribe by itself: subscribe afresh, on a new connection.
                    Some(PushInfo { kind: PushKind::SUnsubscribe, .. }) => {
                        return "the server ended the subscription (the channel's slot moved \
                                to another master)"
                            .to_owned();
                    }
                    Some(PushInfo { kind: PushKind::SSubscribe, .. }) if resubscribing => {
                        resubscribing = false;
                        tracing::info!(channel = %self.channel, "resubscribed to the results; every waiter looks again");
                        self.hub.wake_all();
                    }
                    Some(_) => {}
                    None => return "the connection closed".to_owned(),
                },
                _ = ping.tick() => {
                    let mut conn = Conn::Cluster(conn.clone());
                    let ping_cmd = redis::cmd("PING");
                    let pinged = conn.on_slot::<Value>(&ping_cmd, slot);
                    match tokio::time::timeout(PING_TIMEOUT, pinged).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return format!("a ping failed: {e}"),
                        Err(_elapsed) => {
                            return format!("a ping went unanswered for {PING_TIMEOUT:?}");
                        }
                    }
                }
            }
        }
    }

    /// [`listen`](Self::listen) on a single Redis.
    async fn listen_single(&self, pubsub: PubSub) -> String {
        let (mut sink, mut messages) = pubsub.split();
        let mut ping = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => self.announce(message.get_payload_bytes()),
                    None => return "the connection closed".to_owned(),
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return format!("a ping failed: {e}"),
                        Err(_elapsed) => {
                            return format!("a ping went unanswered for {PING_TIMEOUT:?}");
                        }
                    }
                }
            }
        }
    }

    /// Wakes the waiters of every task id in `message` (ids separated by commas).
    fn announce(&self, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else {
            tracing::debug!(channel = %self.channel, "ignored a message that is not text");
            return;
        };
        for part in text.split(',') {
            match part.parse::<TaskId>() {
                Ok(id) => self.hub.wake(id),
                Err(_) => tracing::debug!(
                    channel = %self.channel,
                    "ignored a message part that is not a task id"
                ),
            }
        }
    }
}

/// A live subscription to the results channel.
enum Subscription {
    Single(PubSub),
    /// The connection, and what its nodes push.
    Cluster(ClusterConnection, mpsc::UnboundedReceiver<PushInfo>),
}

/// A result on its way to Redis.
struct StoredResult {
    id: TaskId,
    key: String,
    value: Vec<u8>,
    ttl_ms: u64,
    /// The fence of a fenced store; `None` for a plain one, which replaces whatever is
    /// there.
    fence: Option<u64>,
}

/// An outcome as stored: a map of the fence of the run that stored it (0 for a plain
/// store), then the outcome's own fields, `state` first. `lua/store_result.lua` reads
/// the first two; readers of the outcome pass over `fence`.
///
/// Written as the outcome's own encoding, a map of a few fields (MessagePack's fixmap,
/// one byte of header), with one more entry spliced in front, rather than through
/// serde's `flatten`, whose map of unknown length rmp-serde buffers: this runs for
/// every result.
fn encode_fenced(outcome: &TaskOutcome, fence: u64) -> Result<Vec<u8>> {
    let encode_error =
        |e: &dyn std::fmt::Display| Error::Encode { what: "a task outcome", reason: e.to_string() };
    // One buffer: the outcome is encoded after room for the fence's entry, which is
    // then written in front of the outcome's fields, over the old header.
    let mut out = Vec::with_capacity(FENCE_ROOM + 128);
    out.resize(FENCE_ROOM, 0);
    rmp_serde::encode::write_named(&mut out, outcome).map_err(|e| encode_error(&e))?;
    // A fixmap with room for one more entry.
    let Some(&header @ 0x80..=0x8e) = out.get(FENCE_ROOM) else {
        return Err(encode_error(&"the outcome did not encode as a small map"));
    };
    let mut entry = [0u8; FENCE_ROOM + 1];
    entry[0] = header + 1;
    let unused = {
        let mut rest: &mut [u8] = &mut entry[1..];
        rmp::encode::write_str(&mut rest, "fence").map_err(|e| encode_error(&e))?;
        rmp::encode::write_uint(&mut rest, fence).map_err(|e| encode_error(&e))?;
        rest.len()
    };
    let len = entry.len() - unused;
    let start = FENCE_ROOM + 1 - len;
    out[start..=FENCE_ROOM].copy_from_slice(&entry[..len]);
    out.drain(..start);
    Ok(out)
}

/// Room for a fence's entry in front of an outcome's fields: the key `fence` (a
/// fixstr, 6 bytes) and its value (a uint64 at most, 9 bytes).
const FENCE_ROOM: usize = 15;

/// The most results written in one round trip.
const MAX_RESULT_BATCH: usize = 512;

/// Starts the task that writes results in batches: one pipeline of `SET ... PX` per
/// result (`NX` for a fenced one), then one `PUBLISH` of the batch's task ids, so a
/// waiter told of its id finds the result stored. A fenced result that found one
/// stored already is decided by `lua/store_result.lua` in a second round trip, and
/// announced again if it replaced it.
fn result_writer(
    shared: Arc<Shared>,
    channel: String,
    publish: &'static str,
    addr: String,
) -> Batcher<StoredResult, bool> {
    let cluster = publish == "SPUBLISH";
    let script = Arc::new(redis::Script::new(include_str!("../lua/store_result.lua")));
    Batcher::new(MAX_RESULT_BATCH, move |batch: Vec<StoredResult>| {
        let shared = Arc::clone(&shared);
        let channel = channel.clone();
        let addr = addr.clone();
        let script = Arc::clone(&script);
        async move {
            let failed = |e: redis::RedisError| {
                shared.failed(&e);
                let e = redis_error(
                    &format!("could not store {} task results in redis at {addr}", batch.len()),
                    e,
                );
                batch.iter().map(|_| Err(copy_error(&e))).collect()
            };
            let mut conn = match shared.get().await {
                Ok(conn) => conn,
                Err(e) => return failed(e),
            };
            let mut pipe = redis::pipe();
            let mut ids = String::with_capacity(batch.len() * 37);
            for result in &batch {
                let set = pipe.cmd("SET").arg(&result.key).arg(&result.value);
                set.arg("PX").arg(result.ttl_ms);
                if result.fence.is_some() {
                    set.arg("NX");
                }
                push_id(&mut ids, result.id);
            }
            // Each `SET` answers OK, or nil when `NX` found a result there: read as
            // values, not as strings made for every job.
            let set: Vec<Value> = if cluster {
                // The keys are on many slots: one command each, sent together, then
                // the announcement once all are stored.
                let sets = pipe.cmd_iter().map(|set| {
                    let mut conn = conn.clone();
                    async move { set.query_async::<Value>(&mut conn).await }
                });
                let set = match futures::future::try_join_all(sets).await {
                    Ok(set) => set,
                    Err(e) => return failed(e),
                };
                let published: redis::RedisResult<i64> =
                    redis::cmd(publish).arg(&channel).arg(ids).query_async(&mut conn).await;
                if let Err(e) = published {
                    return failed(e);
                }
                set
            } else {
                pipe.cmd(publish).arg(&channel).arg(ids).ignore();
                match pipe.query_async(&mut conn).await {
                    Ok(set) => set,
                    Err(e) => return failed(e),
                }
            };
            let found = |i: usize| matches!(set.get(i), Some(Value::Nil));
            let mut stored: Vec<Result<bool>> = (0..batch.len()).map(|i| Ok(!found(i))).collect();
            // Fenced results that found one stored already: decided by the script.
            let contested: Vec<usize> =
                (0..batch.len()).filter(|&i| batch[i].fence.is_some() && found(i)).collect();
            if contested.is_empty() {
                return stored;
            }
            // Sent together on the multiplexed connection; rare, so not batched further.
            let decided = contested.iter().map(|&i| {
                let result = &batch[i];
                let mut conn = conn.clone();
                let mut invocation = script.prepare_invoke();
                invocation.key(&result.key).arg(&result.value).arg(result.ttl_ms);
                invocation.arg(result.fence.unwrap_or(0));
                async move { invocation.invoke_async::<i64>(&mut conn).await }
            });
            let mut replaced = Vec::with_capacity(contested.len());
            for decision in futures::future::join_all(decided).await {
                match decision {
                    Ok(n) => replaced.push(n),
                    Err(e) => return failed(e),
                }
            }
            let mut ids = String::new();
            for (&i, replaced) in contested.iter().zip(replaced) {
                stored[i] = Ok(replaced == 1);
                if replaced == 1 {
                    push_id(&mut ids, batch[i].id);
                }
            }
            if !ids.is_empty() {
                let published: redis::RedisResult<i64> =
                    redis::cmd(publish).arg(&channel).arg(ids).query_async(&mut conn).await;
                if let Err(e) = published {
                    return failed(e);
                }
            }
            stored
        }
    })
}

/// Appends `id` to a comma-separated list of task ids.
fn push_id(ids: &mut String, id: TaskId) {
    if !ids.is_empty() {
        ids.push(',');
    }
    ids.push_str(id.as_uuid().hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()));
}

/// The pause before reconnection attempt `failures + 1`: doubling from
/// [`RECONNECT_MIN`] up to [`RECONNECT_MAX`], with jitter so that many processes
/// do not all come back at the same instant.
fn backoff(failures: u32) -> Duration {
    let ceiling = RECONNECT_MIN.saturating_mul(1 << failures.min(16)).min(RECONNECT_MAX);
    // Equal jitter: between half the ceiling and all of it. A v4 UUID is a ready
    // source of randomness.
    let random = (uuid::Uuid::new_v4().as_u128() & 0xffff) as u32;
    ceiling / 2 + (ceiling / 2).mul_f64(f64::from(random) / f64::from(u16::MAX))
}

/// `ttl` in whole milliseconds for `SET .. PX`: at least one (Redis refuses zero),
/// at most a century (Redis refuses expiry times that overflow).
fn ttl_millis(ttl: Duration) -> u64 {
    let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let far = u64::try_from(FAR.as_millis()).unwrap_or(u64::MAX);
    millis.clamp(1, far)
}

fn check_namespace(namespace: &str) -> Result<()> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || "{}*?[]\\".contains(c);
    if namespace.is_empty() || namespace.chars().any(bad) {
        return Err(Error::InvalidArgument(format!(
            "{namespace:?} cannot be a dmq namespace: use a non-empty name without whitespace, \
             braces or glob characters (*?[]\\), like \"dmq\" or \"billing-prod\""
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fenced_outcome_is_the_outcome_with_its_fence_first() {
        let outcome = TaskOutcome::succeeded(vec![1, 2], 3, chrono::Utc::now());
        for fence in [0, 7, 200, 70_000, 1_700_000_000_000 * 1024] {
            let bytes = encode_fenced(&outcome, fence).expect("encode");
            let back: TaskOutcome = rmp_serde::from_slice(&bytes).expect("readers pass over fence");
            let plain = rmp_serde::to_vec_named(&outcome).expect("encode");
            let expected: TaskOutcome = rmp_serde::from_slice(&plain).expect("decode");
            assert_eq!(back, expected, "times are kept to the millisecond, as before");
            #[derive(serde::Deserialize)]
            struct Front {
                fence: u64,
                state: String,
            }
            let front: Front = rmp_serde::from_slice(&bytes).expect("decode");
            assert_eq!((front.fence, front.state.as_str()), (fence, "succeeded"));
            // The order store_result.lua reads: fence, then state.
            assert_eq!(&bytes[1..7], b"\xa5fence");
        }
    }

    #[test]
    fn ttls_are_whole_milliseconds_redis_accepts() {
        assert_eq!(ttl_millis(Duration::from_secs(86_400)), 86_400_000);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 1);
        assert_eq!(ttl_millis(Duration::ZERO), 1, "redis refuses PX 0");
        assert_eq!(ttl_millis(Duration::MAX), u64::try_from(FAR.as_millis()).unwrap_or(0));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter() {
        for failures in [0, 1, 5, 40, u32::MAX] {
            let ceiling = RECONNECT_MIN.saturating_mul(1 << failures.min(16)).min(RECONNECT_MAX);
            let pause = backoff(failures);
            assert!(pause >= ceiling / 2 && pause <= ceiling, "{failures}: {pause:?}");
        }
        assert!(backoff(40) >= RECONNECT_MAX / 2);
    }

    #[test]
    fn nonsense_namespaces_are_refused() {
        for bad in ["", "a b", "{app}", "app*", "tab\there"] {
            assert!(matches!(check_namespace(bad), Err(Error::InvalidArgument(_))), "{bad:?}");
        }
        for good in ["dmq", "billing-prod", "dmq-test-0f8e", "team:app"] {
            assert!(check_namespace(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn errors_say_what_failed_and_what_to_do() {
        let refused: redis::RedisError =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into();
        let e =
            redis_error("could not read the result of task x from redis at 127.0.0.1:1", refused);
        assert!(e.is_transient());
        let text = e.to_string();
        assert!(text.starts_with("could not read the result of task x from redis at 127.0.0.1:1"));
        assert!(text.contains("is redis-server running"), "{text}");

        let bad_url = redis::Client::open("nonsense://").expect_err("a bad URL");
        let e = redis_error("could not use the redis URL", bad_url);
        assert!(!e.is_transient());
        assert!(e.to_string().contains("redis://"), "{e}");
    }

    #[tokio::test]
    async fn connect_errors_show_no_password() {
        // Nothing listens on port 1: the connection is refused.
        let err = RedisBackend::connect("redis://app:hunter2@127.0.0.1:1").await.err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("127.0.0.1:1") && text.contains("refused"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
