//! Removing a whole namespace's keys (for tools and tests; never FLUSHDB).

use dmq_core::Result;
use redis::aio::ConnectionLike;

use crate::error::redis_error;
use crate::keys::Keys;

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
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await
                .map_err(|e| redis_error(&what(), e))?;
            if !found.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&found)
                    .query_async(conn)
                    .await
                    .map_err(|e| redis_error(&what(), e))?;
                deleted += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(deleted)
}
