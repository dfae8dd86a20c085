//! `dmq queues`: each queue's ready, delayed, in-flight and dead jobs.

use dmq_redis::Keys;
use redis::aio::ConnectionLike;
use serde_json::json;

use super::admin::{Admin, print_json, print_table};
use crate::cli::QueuesArgs;

/// The key suffixes a queue's keys end with (after `{<namespace>:<queue>}:`), as
/// [`dmq_redis::QueueKeys`] builds them; `idem:` is followed by the user's key.
const QUEUE_KEY_SUFFIXES: &[&str] =
    &["ready:", "delayed", "inflight", "jobs", "meta", "dead", "done", "signal", "idem:"];

/// The queues of `keys`' namespace that have at least one key in Redis, sorted and
/// without duplicates, found with `SCAN` (never `KEYS`).
///
/// A queue with nothing in it has no keys, so it is not found. Names are read back
/// from the `{<namespace>:<queue>}:...` keys; as with the key layout itself, a
/// namespace `a` cannot tell its queue `b:c` from queue `c` of a namespace `a:b`.
///
/// # Errors
///
/// When Redis fails.
pub async fn queue_names<C: ConnectionLike + Send>(
    conn: &mut C,
    keys: &Keys,
) -> redis::RedisResult<Vec<String>> {
    let prefix = format!("{{{}:", keys.namespace());
    // The first pattern matches the keys of every queue of the namespace.
    let pattern = keys.patterns().swap_remove(0);
    let mut names = std::collections::BTreeSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
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
/// before the first `}:` that a known suffix follows.
fn queue_of(rest: &str) -> Option<&str> {
    rest.match_indices("}:")
        .map(|(at, _)| at)
        .find(|&at| {
            let suffix = &rest[at + 2..];
            QUEUE_KEY_SUFFIXES.iter().any(|known| suffix.starts_with(known))
        })
        .map(|at| &rest[..at])
        .filter(|name| !name.is_empty())
}

/// Runs `dmq queues`.
pub(crate) async fn run(args: QueuesArgs) -> anyhow::Result<()> {
    let admin = Admin::connect(&args.broker).await?;
    let queues = if args.queues.is_empty() {
        let mut conn = admin.redis().await?;
        queue_names(&mut conn, &admin.keys).await.map_err(|e| {
            anyhow::anyhow!("could not list the queues of namespace {:?}: {e}", admin.namespace())
        })?
    } else {
        args.queues.clone()
    };
    let broker = admin.manager.broker();
    let mut stats = Vec::with_capacity(queues.len());
    for queue in &queues {
        stats.push((queue, broker.queue_stats(queue).await?));
    }
    if admin.json {
        let list: Vec<_> = stats
            .iter()
            .map(|(queue, s)| {
                json!({
                    "queue": queue,
                    "ready": s.ready,
                    "delayed": s.delayed,
                    "in_flight": s.in_flight,
                    "dead": s.dead,
                    "dead_dropped": s.dead_dropped,
                })
            })
            .collect();
        return print_json(&list);
    }
    if stats.is_empty() {
        println!("no queues with jobs in namespace {:?}", admin.namespace());
        return Ok(());
    }
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|(queue, s)| {
            vec![
                (*queue).clone(),
                s.ready.to_string(),
                s.delayed.to_string(),
                s.in_flight.to_string(),
                s.dead.to_string(),
                s.dead_dropped.to_string(),
            ]
        })
        .collect();
    print_table(&["QUEUE", "READY", "DELAYED", "IN-FLIGHT", "DEAD", "DEAD-DROPPED"], &rows);
    Ok(())
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
    }
}
