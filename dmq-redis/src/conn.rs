//! Where the broker's connections come from: its own client, or a deadpool-redis pool
//! the application already has.
//!
//! Ordinary commands share one multiplexed connection (measured on a 2-core machine:
//! one shared connection carried 300,000-390,000 enqueues/s, a pool checkout per
//! command 45,000-47,000/s, each checkout costing a round trip to recycle). A blocking
//! wait needs a connection of its own whose response timeout outlasts the block.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionInfo, Pipeline, RedisFuture, RedisResult, Value,
};

use crate::redis_url::{RedisUrl, Tls};

/// Longer than any blocking wait dmq asks for; its own timer ends the wait first.
const NO_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How often a broker on Sentinel asks for the master again while none answers.
const FAILOVER_POLL: Duration = Duration::from_millis(200);

/// The least time between two replacements of a cluster's shared connection.
const CLUSTER_RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

/// How long an ordinary command (a claim script over a big batch, say) may take.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where new connections come from.
pub(crate) enum Source {
    /// Boxed: a client with TLS settings is large.
    Client(Box<Client>),
    Pool(deadpool_redis::Pool),
    Cluster(Box<Cluster>),
    /// The master that Sentinel names, asked again after a connection to it fails.
    Sentinel(Arc<Sentinel>),
}

impl Source {
    /// Where the connections of `url` come from: a cluster client for a cluster URL,
    /// and for a plain URL that reaches a node of a cluster (`cluster_enabled:1`).
    pub(crate) async fn of(url: &RedisUrl) -> RedisResult<Source> {
        if let Some(spec) = url.sentinel() {
            return Ok(Source::Sentinel(Arc::new(Sentinel::new(spec)?)));
        }
        if let Some(nodes) = url.cluster_nodes() {
            let nodes = nodes
                .iter()
                .map(|node| redis::IntoConnectionInfo::into_connection_info(node.as_str()))
                .collect::<RedisResult<Vec<_>>>()?;
            return Ok(Source::Cluster(Box::new(Cluster::new(nodes, url.tls().cloned())?)));
        }
        let client = url.client();
        if is_cluster_node(client).await? {
            let seed = client.get_connection_info().clone();
            return Ok(Source::Cluster(Box::new(Cluster::new(vec![seed], url.tls().cloned())?)));
        }
        Ok(Source::Client(Box::new(client.clone())))
    }

    /// Whether the connections go to a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Source::Cluster(_))
    }

    /// A new connection of the caller's own, with no response timeout.
    pub(crate) async fn open_unbounded(&self) -> RedisResult<Conn> {
        match self {
            Source::Client(client) => {
                let config = AsyncConnectionConfig::new().set_response_timeout(None);
                Ok(Conn::Direct(
                    client.get_multiplexed_async_connection_with_config(&config).await?,
                ))
            }
            Source::Pool(pool) => {
                let mut conn = take(pool).await?;
                conn.set_response_timeout(NO_TIMEOUT);
                Ok(Conn::Direct(conn))
            }
            Source::Cluster(cluster) => {
                Ok(Conn::Cluster(cluster.blocking.get_async_connection().await?))
            }
            Source::Sentinel(sentinel) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(None);
                let master = sentinel.master().await?;
                Ok(Conn::Direct(
                    master.get_multiplexed_async_connection_with_config(&config).await?,
                ))
            }
        }
    }
}

/// The sentinels of one master: asked for its address whenever a connection to it is
/// made, so that connections made after a failover go to the new master.
pub(crate) struct Sentinel {
    client: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
}

impl Sentinel {
    fn new(spec: &crate::redis_url::SentinelSpec) -> RedisResult<Sentinel> {
        use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
        let sentinels = spec.sentinels.iter().map(|(host, port)| match &spec.tls {
            None => redis::ConnectionAddr::Tcp(host.clone(), *port),
            // The builder sets how certificates are checked, and which.
            Some(_) => redis::ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            },
        });
        let mut builder =
            SentinelClientBuilder::new(sentinels, &spec.master, SentinelServerType::Master)?
                .set_client_to_redis_db(spec.db);
        if let Some(username) = &spec.username {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = &spec.password {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(tls) = &spec.tls {
            builder = builder
                .set_client_to_sentinel_tls_mode(tls.mode())
                .set_client_to_redis_tls_mode(tls.mode());
            if let Some(certificates) = &tls.certificates {
                builder = builder
                    .set_client_to_sentinel_certificates(certificates.clone())
                    .set_client_to_redis_certificates(certificates.clone());
            }
        }
        Ok(Sentinel { client: tokio::sync::Mutex::new(builder.build()?) })
    }

    /// A client for the master the sentinels name now (checked to be a master).
    pub(crate) async fn master(&self) -> RedisResult<Client> {
        self.client.lock().await.async_get_client().await
    }

    /// A connection for ordinary commands to the master the sentinels name once one
    /// answers, asking them again every [`FAILOVER_POLL`] for up to
    /// [`RESPONSE_TIMEOUT`]: after the master failed, the sentinels name it until they
    /// have promoted a replica (a few seconds), and the commands waiting meanwhile go
    /// to the new master then instead of failing at once.
    async fn reconnect(&self) -> RedisResult<MultiplexedConnection> {
        let give_up = tokio::time::Instant::now() + RESPONSE_TIMEOUT;
        loop {
            match self.connect().await {
                Ok(conn) => return Ok(conn),
                Err(e) if tokio::time::Instant::now() + FAILOVER_POLL >= give_up => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "no master through Sentinel yet; asking again");
                    tokio::time::sleep(FAILOVER_POLL).await;
                }
            }
        }
    }

    /// A connection for ordinary commands to the master the sentinels name now.
    async fn connect(&self) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        self.master().await?.get_multiplexed_async_connection_with_config(&config).await
    }
}

/// Whether the Redis `client` reaches is a node of a Redis Cluster.
async fn is_cluster_node(client: &Client) -> RedisResult<bool> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
    match redis::cmd("INFO").arg("cluster").query_async::<String>(&mut conn).await {
        Ok(info) => Ok(info.lines().any(|line| line.trim() == "cluster_enabled:1")),
        // A server that refuses INFO (an ACL user without it, a managed service that
        // renamed it) is taken for a single Redis, as before dmq knew clusters.
        Err(e) if matches!(e.kind(), redis::ErrorKind::Server(_)) => {
            tracing::debug!(error = %e, "INFO refused; taking the server for a single Redis");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The clients of a Redis Cluster: one for ordinary commands, one for blocking waits.
#[derive(Clone)]
pub(crate) struct Cluster {
    nodes: Vec<ConnectionInfo>,
    /// TLS to every node, named or found.
    tls: Option<Tls>,
    commands: ClusterClient,
    blocking: ClusterClient,
}

impl Cluster {
    pub(crate) fn new(nodes: Vec<ConnectionInfo>, tls: Option<Tls>) -> RedisResult<Cluster> {
        let commands =
            Self::builder(&nodes, tls.as_ref()).response_timeout(RESPONSE_TIMEOUT).build()?;
        let blocking = Self::builder(&nodes, tls.as_ref()).build()?;
        Ok(Cluster { nodes, tls, commands, blocking })
    }

    /// A connection for ordinary commands.
    pub(crate) async fn connect(&self) -> RedisResult<ClusterConnection> {
        self.commands.get_async_connection().await
    }

    fn builder(nodes: &[ConnectionInfo], tls: Option<&Tls>) -> ClusterClientBuilder {
        let builder =
            ClusterClientBuilder::new(nodes.to_vec()).connection_timeout(Duration::from_secs(5));
        let Some(tls) = tls else { return builder };
        let builder = builder.tls(tls.mode());
        match &tls.certificates {
            Some(certificates) => builder.certs(certificates.clone()),
            None => builder,
        }
    }

    /// A client whose connections speak RESP3 and pass what the server pushes (the
    /// messages of a subscription) to `push`.
    pub(crate) fn subscriber(
        &self,
        push: impl redis::aio::AsyncPushSender,
    ) -> RedisResult<ClusterClient> {
        Self::builder(&self.nodes, self.tls.as_ref())
            .response_timeout(RESPONSE_TIMEOUT)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(push)
            .build()
    }
}

/// A connection taken out of `pool` for good (the pool may open another in its place).
async fn take(pool: &deadpool_redis::Pool) -> RedisResult<MultiplexedConnection> {
    match pool.get().await {
        Ok(conn) => Ok(deadpool_redis::Connection::take(conn)),
        Err(deadpool_redis::PoolError::Backend(e)) => Err(e),
        Err(e) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "could not take a connection from the deadpool-redis pool",
            e.to_string(),
        ))),
    }
}

/// A connection from `pool` for ordinary commands: deadpool's connections answer
/// within redis-rs's default 500 ms, too short for a claim over a big batch.
async fn take_shared(pool: &deadpool_redis::Pool) -> RedisResult<MultiplexedConnection> {
    let mut conn = take(pool).await?;
    conn.set_response_timeout(RESPONSE_TIMEOUT);
    Ok(conn)
}

/// The connection ordinary commands share.
pub(crate) enum Shared {
    /// Reconnects by itself, with backoff.
    Manager(ConnectionManager),
    /// Taken from a pool; replaced by another from the pool once it fails.
    Pooled { pool: deadpool_redis::Pool, current: Mutex<Option<MultiplexedConnection>> },
    /// Connections to every node of a cluster; they follow `MOVED`. Replaced by a new
    /// one, which reads the cluster's slots afresh, after a command meets a replica
    /// where it expected a master (`READONLY`, which redis-rs does not take as a sign
    /// that the slots moved: a failover), and after a command's connection failed.
    Cluster {
        cluster: Arc<Cluster>,
        /// The connection, and when it was made.
        current: Mutex<Option<(tokio::time::Instant, ClusterConnection)>>,
        /// Held while a new connection is made, so that the callers who find none
        /// wait for one connect instead of each making their own.
        connecting: tokio::sync::Mutex<()>,
    },
    /// A connection to the master Sentinel named; replaced by one to the master it
    /// names then, once a command on it fails for the connection's sake or meets a
    /// replica (the old master, demoted).
    Sentinel { sentinel: Arc<Sentinel>, current: Mutex<Option<MultiplexedConnection>> },
}

impl Shared {
    pub(crate) async fn connect(source: &Source) -> RedisResult<Shared> {
        match source {
            Source::Client(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(5))
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                Ok(Shared::Manager(client.get_connection_manager_with_config(config).await?))
            }
            Source::Pool(pool) => {
                let conn = take_shared(pool).await?;
                Ok(Shared::Pooled { pool: pool.clone(), current: Mutex::new(Some(conn)) })
            }
            Source::Cluster(cluster) => {
                let conn = cluster.connect().await?;
                let cluster = Arc::new((**cluster).clone());
                let current = Mutex::new(Some((tokio::time::Instant::now(), conn)));
                Ok(Shared::Cluster { cluster, current, connecting: tokio::sync::Mutex::new(()) })
            }
            Source::Sentinel(sentinel) => {
                let conn = sentinel.connect().await?;
                Ok(Shared::Sentinel {
                    sentinel: Arc::clone(sentinel),
                    current: Mutex::new(Some(conn)),
                })
            }
        }
    }

    /// A handle on the shared connection, cheap to clone.
    pub(crate) async fn get(&self) -> RedisResult<Conn> {
        match self {
            Shared::Manager(manager) => Ok(Conn::Manager(manager.clone())),
            Shared::Cluster { cluster, current, connecting } => {
                if let Some((_, conn)) = lock(current).clone() {
                    return Ok(Conn::Cluster(conn));
                }
                let _one_at_a_time = connecting.lock().await;
                if let Some((_, conn)) = lock(current).clone() {
                    return Ok(Conn::Cluster(conn));
                }
                let conn = cluster.connect().await?;
                *lock(current) = Some((tokio::time::Instant::now(), conn.clone()));
                Ok(Conn::Cluster(conn))
            }
            Shared::Sentinel { sentinel, current } => {
                if let Some(conn) = lock(current).clone() {
                    return Ok(Conn::Direct(conn));
                }
                let conn = sentinel.reconnect().await?;
                *lock(current) = Some(conn.clone());
                Ok(Conn::Direct(conn))
            }
            Shared::Pooled { pool, current } => {
                if let Some(conn) = lock(current).clone() {
                    return Ok(Conn::Direct(conn));
                }
                let conn = take_shared(pool).await?;
                *lock(current) = Some(conn.clone());
                Ok(Conn::Direct(conn))
            }
        }
    }

    /// Notes a failed command: a pooled connection that broke is replaced next time.
    pub(crate) fn failed(&self, e: &redis::RedisError) {
        match self {
            Shared::Pooled { current, .. } => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    *lock(current) = None;
                }
            }
            Shared::Cluster { current, .. } => {
                let replica =
                    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
                // redis-rs's cluster connection does not always recover by itself: after
                // every node restarted at once, it answered "broken pipe" for good. A
                // fresh one connects anew and reads the slots. At most one a second:
                // the commands that were in flight on the old one fail too, and must
                // not throw away the new one (nor make one connect each).
                if replica || e.is_io_error() || e.is_connection_dropped() {
                    let mut current = lock(current);
                    let old = current
                        .as_ref()
                        .is_some_and(|(made, _)| made.elapsed() >= CLUSTER_RECONNECT_INTERVAL);
                    if old {
                        if replica {
                            tracing::info!(
                                "a cluster node answered as a replica; reading the cluster's \
                                 slots afresh"
                            );
                        }
                        *current = None;
                    }
                }
            }
            Shared::Sentinel { current, .. } => {
                let replica =
                    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
                if replica || e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    *lock(current) = None;
                }
            }
            Shared::Manager(_) => {}
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A connection to the Redis, or the Redis Cluster, that a URL names, made as the
/// broker makes its own: for tools and tests that read or write beside dmq (the same
/// URLs work, `redis+cluster://` included). Cheap to clone; clones share it.
///
/// ```no_run
/// # async fn demo() -> dmq_core::Result<()> {
/// let mut conn = dmq_redis::RedisConnection::open("redis+cluster://127.0.0.1:7100").await?;
/// let n: u64 = redis::cmd("HLEN").arg("{app}:workers:info").query_async(&mut conn).await
///     .expect("HLEN");
/// # let _ = n;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisConnection(pub(crate) Conn);

impl RedisConnection {
    /// Connects to `url` (any URL [`RedisUrl`] reads).
    ///
    /// # Errors
    ///
    /// [`dmq_core::Error::InvalidArgument`] for a URL that does not parse,
    /// [`dmq_core::Error::Backend`] when Redis cannot be reached.
    pub async fn open(url: &str) -> dmq_core::Result<Self> {
        let url = RedisUrl::parse(url)?;
        let failed =
            |e| crate::error::redis_error(&format!("connecting to redis at {}", url.shown()), e);
        let source = Source::of(&url).await.map_err(failed)?;
        let conn = Shared::connect(&source).await.map_err(failed)?.get().await.map_err(failed)?;
        Ok(RedisConnection(conn))
    }

    /// Connections that together reach every key: this one on a single Redis, one per
    /// master on a cluster (each sends every command to its master, for `SCAN`).
    ///
    /// # Errors
    ///
    /// [`dmq_core::Error::Backend`] when the cluster cannot say which its masters are.
    pub async fn masters(&self) -> dmq_core::Result<Vec<RedisConnection>> {
        let masters = self.0.masters().await.map_err(|e| {
            crate::error::redis_error("listing the masters of the redis cluster", e)
        })?;
        Ok(masters.into_iter().map(RedisConnection).collect())
    }
}

impl RedisConnection {
    /// The `host:port` of the one node this connection sends everything to: set for
    /// the connections [`masters`](RedisConnection::masters) gives on a cluster.
    #[must_use]
    pub fn node(&self) -> Option<String> {
        match &self.0 {
            Conn::Node { host, port, .. } => Some(format!("{host}:{port}")),
            _ => None,
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

/// A handle on the shared connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Manager(ConnectionManager),
    Direct(MultiplexedConnection),
    Cluster(ClusterConnection),
    /// One node of a cluster: every command goes to it, whatever its keys (for
    /// `SCAN`, which each master answers for its own keys).
    Node {
        conn: ClusterConnection,
        host: String,
        port: u16,
        /// How commands find the node: by its address, or, for a node that does not
        /// know its own address (a cluster of one node that never met another says
        /// `:7000`), as the master of a slot it serves.
        route: SingleNodeRoutingInfo,
    },
}

impl Conn {
    /// Runs `cmd` on the master of `slot` (on a cluster; elsewhere on the one server):
    /// for commands without a key that must reach a given node, such as `CLIENT ID`.
    pub(crate) async fn on_slot<T: redis::FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        slot: u16,
    ) -> RedisResult<T> {
        match self {
            Conn::Cluster(c) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                let value = c.route_command(cmd.clone(), RoutingInfo::SingleNode(route)).await?;
                redis::from_redis_value(value).map_err(Into::into)
            }
            other => cmd.query_async(other).await,
        }
    }

    /// Connections that together reach every key: this one on a single Redis, one
    /// per master on a cluster (each as [`Conn::Node`]).
    pub(crate) async fn masters(&self) -> RedisResult<Vec<Conn>> {
        let Conn::Cluster(c) = self else { return Ok(vec![self.clone()]) };
        // Any node answers for the whole cluster.
        let listing = c
            .clone()
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let listing: String = redis::from_redis_value(listing)?;
        Ok(masters_of(&listing)
            .into_iter()
            .map(|Master { host, port, slot }| {
                let route = if host.is_empty() {
                    SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master))
                } else {
                    SingleNodeRoutingInfo::ByAddress { host: host.clone(), port }
                };
                Conn::Node { conn: c.clone(), host, port, route }
            })
            .collect())
    }
}

/// A master in a `CLUSTER NODES` listing: its address (an empty host when the node
/// does not know its own, as a cluster of one node that never met another) and the
/// first slot it serves.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Master {
    host: String,
    port: u16,
    slot: u16,
}

/// The masters that serve slots in a `CLUSTER NODES` listing: lines of
/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <state> <slots...>`,
/// where a slot entry is `N`, `N-M`, or `[N->-id]`/`[N-<-id]` for one being moved.
fn masters_of(listing: &str) -> Vec<Master> {
    let mut masters = Vec::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, address, flags, _, _, _, _, state, slots @ ..] = fields.as_slice() else {
            continue;
        };
        let serving = flags.split(',').any(|f| f == "master")
            && !flags.split(',').any(|f| f == "fail" || f == "noaddr")
            && *state == "connected";
        let slot = slots
            .iter()
            .filter(|entry| !entry.starts_with('['))
            .find_map(|entry| entry.split('-').next()?.parse::<u16>().ok());
        let address = address.split(['@', ',']).next().unwrap_or_default();
        if let (true, Some(slot), Some((host, port))) = (serving, slot, address.rsplit_once(':')) {
            if let Ok(port) = port.parse() {
                masters.push(Master { host: host.to_owned(), port, slot });
            }
        }
    }
    masters.sort();
    masters
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Direct(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Node { conn, route, .. } => {
                let routed =
                    conn.route_command(cmd.clone(), RoutingInfo::SingleNode(route.clone()));
                Box::pin(routed)
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Direct(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Node { conn, route, .. } => {
                Box::pin(conn.route_pipeline(cmd.clone(), offset, count, route.clone()))
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Direct(c) => c.get_db(),
            Conn::Cluster(c) | Conn::Node { conn: c, .. } => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_are_read_from_a_cluster_nodes_listing() {
        let listing = "\
a1 127.0.0.1:7100@17100 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7103@17103 slave a1 0 1 1 connected
c3 127.0.0.1:7101@17101,node-b master - 0 1 2 connected 5461-10922
d4 127.0.0.1:7102@17102 master,fail - 0 1 3 disconnected 10923-16383
e5 127.0.0.1:7104@17104 master - 0 1 4 connected
f6 127.0.0.1:7105@17105 master - 0 1 5 connected [42->-a1]
";
        let master = |port, slot| Master { host: "127.0.0.1".to_owned(), port, slot };
        assert_eq!(
            masters_of(listing),
            [master(7100, 0), master(7101, 5461)],
            "a replica, a failed master and masters without slots (or only a slot being moved) serve none"
        );
    }

    #[test]
    fn a_lone_node_that_does_not_know_its_address_is_found_by_its_slot() {
        let listing = "a1 :7300@17300 myself,master - 0 0 0 connected 0-16383\n";
        assert_eq!(masters_of(listing), [Master { host: String::new(), port: 7300, slot: 0 }]);
    }
}
