//! The result backend ([`ResultBackend`]): stores, reads, waits, TTLs and fenced
//! stores.

use super::*;

fn outcome(seed: u8) -> TaskOutcome {
    let at = |ms| DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let mut outcome = TaskOutcome::succeeded(vec![seed, 1, 2], 2, at(1_700_000_000_000));
    outcome.finished_at = at(1_700_000_000_250);
    outcome
}

/// What was stored reads back unchanged.
pub async fn stored_outcome_reads_back(b: Arc<dyn ResultBackend>) {
    let id = TaskId::new();
    b.store(id, &outcome(7), LONG).await.expect("store");
    assert_eq!(b.get(id).await.expect("get"), Some(outcome(7)));
    let failed = TaskOutcome::failed(FailureKind::Timeout, "took too long", 3, None);
    let other = TaskId::new();
    b.store(other, &failed, LONG).await.expect("store");
    let back = b.get(other).await.expect("get").expect("stored");
    assert_eq!(back.failure, failed.failure);
    assert_eq!(back.attempts, 3);
}

/// An id with nothing stored reads as `None`.
pub async fn missing_outcome_is_none(b: Arc<dyn ResultBackend>) {
    assert_eq!(b.get(TaskId::new()).await.expect("get"), None);
}

/// A second store replaces the first.
pub async fn store_replaces_the_outcome(b: Arc<dyn ResultBackend>) {
    let id = TaskId::new();
    b.store(id, &outcome(1), LONG).await.expect("store");
    b.store(id, &outcome(2), LONG).await.expect("store");
    assert_eq!(b.get(id).await.expect("get"), Some(outcome(2)));
}

/// A fenced store never replaces a success, nor what a later run (a greater fence)
/// stored; it replaces a failure of its own run or an earlier one.
pub async fn a_fenced_store_replaces_no_success_and_no_later_run(b: Arc<dyn ResultBackend>) {
    let id = TaskId::new();
    let failed = |attempts| TaskOutcome::failed(FailureKind::Error, "boom", attempts, None);
    assert!(b.store_fenced(id, &failed(1), LONG, 10).await.expect("store"), "nothing there");
    assert!(!b.store_fenced(id, &outcome(1), LONG, 9).await.expect("store"), "an earlier run");
    assert_eq!(b.get(id).await.expect("get").map(|o| o.attempts), Some(1));
    assert!(b.store_fenced(id, &failed(2), LONG, 10).await.expect("store"), "the same run");
    assert!(b.store_fenced(id, &outcome(2), LONG, 12).await.expect("store"), "a later run");
    assert_eq!(b.get(id).await.expect("get"), Some(outcome(2)));
    assert!(!b.store_fenced(id, &outcome(3), LONG, 13).await.expect("store"), "a later run");
    assert!(!b.store_fenced(id, &failed(3), LONG, 14).await.expect("store"));
    assert!(b.store_fenced(id, &outcome(2), LONG, 12).await.expect("store"), "its own again");
    assert_eq!(b.get(id).await.expect("get"), Some(outcome(2)), "the success stays");
    // A plain store's success is a success too.
    let plain = TaskId::new();
    b.store(plain, &outcome(5), LONG).await.expect("store");
    assert!(!b.store_fenced(plain, &outcome(6), LONG, 1).await.expect("store"));
    assert_eq!(b.get(plain).await.expect("get"), Some(outcome(5)));
}

/// A waiter returns soon after the outcome is stored.
pub async fn wait_is_woken_by_store(b: Arc<dyn ResultBackend>) {
    let id = TaskId::new();
    let waiter = {
        let b = Arc::clone(&b);
        tokio::spawn(async move {
            let started = Instant::now();
            (b.wait(id, Duration::from_secs(20)).await, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.store(id, &outcome(3), LONG).await.expect("store");
    let (got, waited) = waiter.await.expect("join");
    assert_eq!(got.expect("wait"), Some(outcome(3)));
    assert!(waited < Duration::from_secs(10), "the waiter slept {waited:?}");
}

/// A wait with nothing stored gives `None` once its timeout passes, not before.
pub async fn wait_gives_none_after_its_timeout(b: Arc<dyn ResultBackend>) {
    let started = Instant::now();
    let got = b.wait(TaskId::new(), Duration::from_millis(300)).await.expect("wait");
    assert_eq!(got, None);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// An outcome is gone once its TTL has passed.
pub async fn outcome_expires_after_its_ttl(b: Arc<dyn ResultBackend>) {
    let id = TaskId::new();
    b.store(id, &outcome(4), Duration::from_millis(1500)).await.expect("store");
    assert!(b.get(id).await.expect("get").is_some());
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(b.get(id).await.expect("get"), None);
}

/// Many waiters on many ids are each woken by their own store.
pub async fn many_waiters_are_all_woken(b: Arc<dyn ResultBackend>) {
    let ids: Vec<TaskId> = (0..200).map(|_| TaskId::new()).collect();
    let waiters: Vec<_> = ids
        .iter()
        .map(|&id| {
            let b = Arc::clone(&b);
            tokio::spawn(async move { b.wait(id, Duration::from_secs(20)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stored = Instant::now();
    for (i, &id) in ids.iter().enumerate() {
        b.store(id, &outcome(u8::try_from(i % 256).unwrap_or(0)), LONG).await.expect("store");
    }
    for (i, waiter) in waiters.into_iter().enumerate() {
        let got = waiter.await.expect("join").expect("wait").expect("woken with the outcome");
        assert_eq!(got, outcome(u8::try_from(i % 256).unwrap_or(0)));
    }
    let waited = stored.elapsed();
    assert!(waited < Duration::from_secs(10), "the waiters were not woken: {waited:?}");
}
