//! Enqueue quotas ([`QuotaStore`]): counted per namespace and per key in windows that
//! open with their first enqueue, all or none, refusing with the time left.

use super::*;
use crate::broker::QuotaStore;
use crate::limits::RateLimit;

fn quotas(b: &Arc<dyn Broker>) -> &dyn QuotaStore {
    b.quota_store().expect("this check needs the broker's quotas (Broker::quota_store)")
}

fn per(text: &str) -> Option<RateLimit> {
    Some(text.parse().expect("a quota"))
}

/// Refused with how long until the window ends, for `quota` (which names `who`).
fn refused(result: crate::error::Result<()>, who: &str, window: Duration) -> Duration {
    match result {
        Err(Error::QuotaExceeded { quota, retry_after, .. }) => {
            assert!(quota.contains(who), "{quota:?} names {who}");
            assert!(retry_after <= window, "{retry_after:?} is longer than the window");
            retry_after
        }
        other => panic!("expected a refusal naming {who}, got {other:?}"),
    }
}

/// A namespace's quota counts enqueues in a window opened by the first: up to the
/// quota they are counted, the next is refused with the time left, and a refund gives
/// room back. Setting the same quota again changes nothing; removing it lifts it.
pub async fn a_quota_refuses_what_goes_over_it_and_says_when_to_retry(b: Arc<dyn Broker>) {
    let store = quotas(&b);
    store.take_quota(None, 5_000).await.expect("no quota set: nothing is counted");
    assert!(store.set_quota(None, per("1000/m")).await.expect("set"), "a new quota");
    assert!(!store.set_quota(None, per("1000/m")).await.expect("set"), "the same quota");
    store.take_quota(None, 999).await.expect("within the quota");
    store.take_quota(None, 1).await.expect("the 1,000th");
    let wait = refused(store.take_quota(None, 1).await, "namespace", Duration::from_secs(60));
    assert!(wait > Duration::from_secs(30), "the window just opened: {wait:?} left");
    let listed = store.quotas().await.expect("quotas");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].key.as_deref(), listed[0].used), (None, 1_000), "{listed:?}");
    assert!(listed[0].window_ends.is_some_and(|t| t > Utc::now()), "{listed:?}");
    store.refund_quota(None, 10).await.expect("refund");
    store.take_quota(None, 10).await.expect("the refunded room");
    refused(store.take_quota(None, 1).await, "namespace", Duration::from_secs(60));
    assert!(store.set_quota(None, None).await.expect("remove"), "removed");
    store.take_quota(None, 5_000).await.expect("no quota any more");
    assert!(store.quotas().await.expect("quotas").is_empty());
}

/// A key's quota counts the key's enqueues beside the namespace's; a refusal by either
/// counts nothing on the other; a window that ends lets enqueues through again.
pub async fn a_keys_quota_counts_beside_the_namespaces_and_its_window_ends(b: Arc<dyn Broker>) {
    let store = quotas(&b);
    store.set_quota(None, per("5/m")).await.expect("set");
    store.set_quota(Some("tenant-1"), per("2/300ms")).await.expect("set");
    store.take_quota(Some("tenant-1"), 2).await.expect("within both");
    refused(store.take_quota(Some("tenant-1"), 1).await, "tenant-1", Duration::from_millis(300));
    // The refusal counted nothing on the namespace: 3 of its 5 are left.
    store.take_quota(Some("tenant-2"), 3).await.expect("another key, no quota of its own");
    refused(store.take_quota(None, 1).await, "namespace", Duration::from_secs(60));
    store.set_quota(None, None).await.expect("remove");
    tokio::time::sleep(Duration::from_millis(400)).await;
    store.take_quota(Some("tenant-1"), 2).await.expect("a new window");
    let listed = store.quotas().await.expect("quotas");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!((listed[0].key.as_deref(), listed[0].used), (Some("tenant-1"), 2), "{listed:?}");
}
