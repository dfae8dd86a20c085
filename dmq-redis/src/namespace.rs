//! A whole namespace's keys, for tools and tests: removing them (never FLUSHDB), and
//! reading back which queues have some. On a Redis Cluster each master is scanned for
//! its own keys.

use dmq_core::Result;
use redis::aio::ConnectionLike;

use crate::conn::{Conn, RedisConnection};
use crate::error::redis_error;
use crate::keys::{Keys, QueueKeys, cluster_slot};

/// One page of `SCAN` (never `KEYS`) over the keys matching `pattern`: the next cursor
/// (0 when done) and the keys found.
async fn scan_page<C: ConnectionLike + Send>(
    conn: &mut C,
    pattern: &str,
    cursor: u64,
) -> redis::RedisResult<(u64, Vec<String>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(1000)
        .query_async(conn)
        .await
}

/// Deletes every key of `keys`' namespace, and no other, with `SCAN` and `UNLINK`;
/// returns how many keys went.
///
/// # Errors
///
/// [`dmq_core::Error::Backend`] when Redis fails; the keys deleted until then stay
/// deleted.
pub async fn delete_namespace<C: ConnectionLike + Send>(conn: &mut C, keys: &Keys) -> Result<u64> {
    let what = || format!("deleting the keys of namespace {:?}", keys.namespace());
    let mut deleted = 0;
    for pattern in keys.patterns() {
        let mut cursor = 0u64;
        loop {
            let (next, found) =
                scan_page(conn, &pattern, cursor).await.map_err(|e| redis_error(&what(), e))?;
            if !found.is_empty() {
                deleted += unlink(conn, found).await.map_err(|e| redis_error(&what(), e))?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(deleted)
}

/// `UNLINK`s `found`: one command per cluster slot among them, so that it also works
/// on a node of a cluster, which refuses a command over keys of several slots.
async fn unlink<C: ConnectionLike + Send>(
    conn: &mut C,
    mut found: Vec<String>,
) -> redis::RedisResult<u64> {
    found.sort_by_key(|key| cluster_slot(key.as_bytes()));
    let mut pipe = redis::pipe();
    for group in found.chunk_by(|a, b| cluster_slot(a.as_bytes()) == cluster_slot(b.as_bytes())) {
        pipe.cmd("UNLINK").arg(group);
    }
    let counts: Vec<u64> = pipe.query_async(conn).await?;
    Ok(counts.iter().sum())
}

/// Deletes every key of `keys`' namespace in the Redis or the Redis Cluster at `url`
/// (any URL [`RedisUrl`](crate::RedisUrl) reads), as [`delete_namespace`] does on one connection, on
/// every master of a cluster; returns how many keys went.
///
/// # Errors
///
/// [`dmq_core::Error::InvalidArgument`] for a URL that does not parse,
/// [`dmq_core::Error::Backend`] when Redis fails; the keys deleted until then stay
/// deleted.
pub async fn delete_namespace_at(url: &str, keys: &Keys) -> Result<u64> {
    let conn = RedisConnection::open(url).await?;
    let mut deleted = 0;
    for mut node in conn.masters().await? {
        deleted += delete_namespace(&mut node, keys).await?;
    }
    Ok(deleted)
}

/// [`queue_names`] over every master of a cluster (or the one Redis).
pub(crate) async fn queue_names_everywhere(conn: &Conn, keys: &Keys) -> Result<Vec<String>> {
    let what = || format!("listing the queues of namespace {:?}", keys.namespace());
    let mut names = Vec::new();
    for mut node in conn.masters().await.map_err(|e| redis_error(&what(), e))? {
        names.extend(queue_names(&mut node, keys).await?);
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The queues of `keys`' namespace that have at least one key in Redis, sorted and
/// without duplicates.
///
/// A queue with nothing in it has no keys, so it is not found. Names are read back
/// from the `{<namespace>:<queue>}:...` keys; as with the key layout itself, a
/// namespace `a` cannot tell its queue `b:c` from queue `c` of a namespace `a:b`.
///
/// # Errors
///
/// [`dmq_core::Error::Backend`] when Redis fails.
pub async fn queue_names<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
) -> Result<Vec<String>> {
    let what = || format!("listing the queues of namespace {:?}", keys.namespace());
    let prefix = format!("{{{}:", keys.namespace());
    // The first pattern matches the keys of every queue of the namespace.
    let pattern = keys.patterns().swap_remove(0);
    let mut names = std::collections::BTreeSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, found) =
            scan_page(conn, &pattern, cursor).await.map_err(|e| redis_error(&what(), e))?;
        for key in found {
            if let Some(name) = key.strip_prefix(&prefix).and_then(queue_of) {
                names.insert(name.to_owned());
            }
        }
        if next == 0 {
            return Ok(names.into_iter().collect());
        }
        cursor = next;
    }
}

/// The queue name of `rest`, a queue key without its `{<namespace>:` prefix: the text
/// before the first `}:` that one of [`QueueKeys::SUFFIXES`] follows, without the
/// `,<k>` that steers a partition's slot (no queue name holds a comma).
fn queue_of(rest: &str) -> Option<&str> {
    rest.match_indices("}:")
        .map(|(at, _)| at)
        .find(|&at| {
            let suffix = &rest[at + 2..];
            QueueKeys::SUFFIXES.iter().any(|known| suffix.starts_with(known))
        })
        .map(|at| rest[..at].split(',').next().unwrap_or_default())
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_read_back_from_their_keys() {
        assert_eq!(queue_of("emails}:ready:5"), Some("emails"));
        assert_eq!(queue_of("emails}:dead:dropped"), Some("emails"));
        assert_eq!(queue_of("a}:b}:jobs"), Some("a}:b"));
        assert_eq!(queue_of("emails}:idem:x}:jobs"), Some("emails"));
        assert_eq!(queue_of("emails}:other"), None);
        assert_eq!(queue_of("}:jobs"), None);
        assert_eq!(queue_of("emails"), None);
        assert_eq!(queue_of("emails#3,17}:ready:5"), Some("emails#3"), "a partition's steering");
        let key = Keys::new("ns").queue("emails#3").ready(5);
        assert_eq!(key.strip_prefix("{ns:").and_then(queue_of), Some("emails#3"), "{key}");
    }

    #[test]
    fn every_key_of_a_queue_ends_with_a_known_suffix() {
        let keys = Keys::new("ns").queue("q");
        for key in [
            keys.ready(3),
            keys.delayed(),
            keys.in_flight(),
            keys.payloads(),
            keys.meta(),
            keys.dead(),
            keys.dead_payloads(),
            keys.dead_dropped(),
            keys.completed(),
            keys.signal(),
            keys.idempotency("k"),
        ] {
            let rest = key.strip_prefix("{ns:").unwrap_or_else(|| panic!("{key}"));
            assert_eq!(queue_of(rest), Some("q"), "{key}");
        }
    }
}
