//! The job lifecycle ([`Broker`]): enqueue, claim, ack, complete, retry, release,
//! dead-letter and renew, under fenced leases. Where the broker also has an admin
//! capability, the checks read the queue's figures through it too; they pass without
//! one.

use super::*;

/// Enqueued jobs come back from a claim, with their payloads, under leases.
pub async fn claims_what_was_enqueued(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    for p in ["one", "two", "three"] {
        b.enqueue(job("alpha", 5, p)).await.expect("enqueue");
    }
    if let Some(s) = figures(&b, "alpha").await {
        assert_eq!(s.ready, 3);
    }
    let got = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(payloads(&got), ["one", "two", "three"], "same priority is first in, first out");
    assert!(got.iter().all(|d| d.deliveries == 1 && d.lease.queue == "alpha"));
    if let Some(stats) = figures(&b, "alpha").await {
        assert_eq!((stats.ready, stats.in_flight), (0, 3));
    }
}

/// A claim takes no more than `max` jobs.
pub async fn claim_takes_at_most_max(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    for i in 0..5 {
        b.enqueue(job("alpha", 5, &i.to_string())).await.expect("enqueue");
    }
    assert_eq!(b.claim(WORKER, &q, 2, LONG, Duration::ZERO).await.expect("claim").len(), 2);
    assert_eq!(b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim").len(), 3);
    assert!(b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim").is_empty());
}

/// Among due jobs, priority 9 comes before 5 before 0.
pub async fn higher_priority_is_claimed_first(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    for (priority, p) in [(0, "low"), (9, "high"), (5, "mid"), (9, "high2")] {
        b.enqueue(job("alpha", priority, p)).await.expect("enqueue");
    }
    let got = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(payloads(&got), ["high", "high2", "mid", "low"]);
}

/// A claim on one queue never takes another queue's jobs.
pub async fn queues_are_kept_apart(b: Arc<dyn Broker>) {
    b.enqueue(job("alpha", 5, "a")).await.expect("enqueue");
    b.enqueue(job("beta", 5, "b")).await.expect("enqueue");
    let got = b.claim(WORKER, &queues(&["beta"]), 10, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(payloads(&got), ["b"]);
    if let Some(s) = figures(&b, "alpha").await {
        assert_eq!(s.ready, 1);
    }
    let both = b.claim(WORKER, &queues(&["beta", "alpha"]), 10, LONG, Duration::ZERO).await;
    assert_eq!(payloads(&both.expect("claim")), ["a"]);
}

/// A delayed job is not handed out before its eta, and is soon after.
pub async fn delayed_job_waits_for_its_eta(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    let eta = after(Duration::from_millis(1500));
    b.enqueue(delayed("alpha", eta, "later")).await.expect("enqueue");
    assert!(b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim").is_empty());
    if let Some(s) = figures(&b, "alpha").await {
        assert_eq!(s.delayed, 1);
    }
    let got = b.claim(WORKER, &q, 10, LONG, Duration::from_secs(10)).await.expect("claim");
    assert!(Utc::now() >= eta, "claimed before its eta");
    assert_eq!(payloads(&got), ["later"]);
    assert!(Utc::now() < eta + chrono::Duration::seconds(5), "not claimed soon after its eta");
}

/// After an ack the job is gone, and a second ack is refused.
pub async fn ack_forgets_the_job(b: Arc<dyn Broker>) {
    b.enqueue(job("alpha", 5, "x")).await.expect("enqueue");
    let got = b.claim(WORKER, &queues(&["alpha"]), 1, LONG, Duration::ZERO).await.expect("claim");
    b.ack(&got[0].lease).await.expect("ack");
    if let Some(stats) = figures(&b, "alpha").await {
        assert_eq!((stats.ready, stats.delayed, stats.in_flight, stats.dead), (0, 0, 0, 0));
    }
    assert!(matches!(b.ack(&got[0].lease).await, Err(Error::LeaseLost { .. })));
}

/// Once a lease expires and another worker claims the job, the first worker's
/// token is refused by every settling call and changes nothing.
pub async fn stale_token_changes_nothing(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    b.enqueue(job("alpha", 5, "x")).await.expect("enqueue");
    let first =
        b.claim(WORKER, &q, 1, Duration::from_millis(200), Duration::ZERO).await.expect("claim");
    let second = b.claim(WORKER, &q, 1, LONG, Duration::from_secs(10)).await.expect("reclaim");
    assert_eq!(second.len(), 1, "an expired lease returns the job to ready");
    assert_eq!(second[0].lease.id, first[0].lease.id);
    assert_ne!(second[0].lease.token, first[0].lease.token, "each claim has a fresh token");
    assert_eq!(second[0].deliveries, 2);
    let stale = &first[0].lease;
    let lost = |r: crate::Result<()>| matches!(r, Err(Error::LeaseLost { .. }));
    assert!(lost(b.ack(stale).await));
    assert!(lost(b.retry(stale, b"overwritten".to_vec(), Utc::now()).await));
    assert!(lost(b.release(stale).await));
    assert!(lost(b.dead_letter(stale, "stale").await));
    assert!(lost(b.renew(stale, LONG).await));
    if let Some(stats) = figures(&b, "alpha").await {
        assert_eq!((stats.ready, stats.delayed, stats.in_flight, stats.dead), (0, 0, 1, 0));
    }
    b.ack(&second[0].lease).await.expect("the current holder can ack");
}

/// A released job is ready again at once.
pub async fn release_returns_the_job_at_once(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    b.enqueue(job("alpha", 5, "x")).await.expect("enqueue");
    let got = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
    b.release(&got[0].lease).await.expect("release");
    let again = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(payloads(&again), ["x"]);
}

/// A retried job waits for its eta and comes back with the new payload.
pub async fn retry_holds_the_new_payload_until_its_eta(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    b.enqueue(job("alpha", 5, "attempt 1")).await.expect("enqueue");
    let got = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
    let eta = after(Duration::from_millis(1500));
    b.retry(&got[0].lease, b"attempt 2".to_vec(), eta).await.expect("retry");
    if let Some(stats) = figures(&b, "alpha").await {
        assert_eq!((stats.ready, stats.delayed, stats.in_flight), (0, 1, 0));
    }
    let again = b.claim(WORKER, &q, 1, LONG, Duration::from_secs(10)).await.expect("claim");
    assert!(Utc::now() >= eta);
    assert_eq!(payloads(&again), ["attempt 2"]);
    assert_eq!(again[0].lease.id, got[0].lease.id);
}

/// A renewed lease outlives its first deadline.
pub async fn renew_extends_the_lease(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    b.enqueue(job("alpha", 5, "x")).await.expect("enqueue");
    let got =
        b.claim(WORKER, &q, 1, Duration::from_millis(1500), Duration::ZERO).await.expect("claim");
    b.renew(&got[0].lease, LONG).await.expect("renew");
    let again = b.claim(WORKER, &q, 1, LONG, Duration::from_millis(3000)).await.expect("claim");
    assert!(again.is_empty(), "a renewed job was handed out again");
    b.ack(&got[0].lease).await.expect("ack after renew");
}

/// A claim waiting on an empty queue returns soon after a job is enqueued.
pub async fn waiting_claim_is_woken_by_enqueue(b: Arc<dyn Broker>) {
    let waiter = {
        let b = Arc::clone(&b);
        tokio::spawn(async move {
            let started = Instant::now();
            let got = b.claim(WORKER, &queues(&["alpha"]), 1, LONG, Duration::from_secs(20)).await;
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.enqueue(job("alpha", 5, "wake")).await.expect("enqueue");
    let (got, waited) = waiter.await.expect("join");
    assert_eq!(payloads(&got.expect("claim")), ["wake"]);
    assert!(waited < Duration::from_secs(10), "the waiting claim slept {waited:?}");
}

/// A batch adds every job.
pub async fn batch_enqueue_adds_every_job(b: Arc<dyn Broker>) {
    let jobs: Vec<Job> = (0..100).map(|i| job("alpha", 5, &i.to_string())).collect();
    b.enqueue_batch(jobs).await.expect("batch");
    if let Some(s) = figures(&b, "alpha").await {
        assert_eq!(s.ready, 100);
    }
    let got =
        b.claim(WORKER, &queues(&["alpha"]), 1000, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(got.len(), 100);
}

/// Many claimers at once each get distinct jobs, and together all of them.
pub async fn concurrent_claimers_never_share_a_job(b: Arc<dyn Broker>) {
    let jobs: Vec<Job> = (0..500).map(|i| job("alpha", 5, &i.to_string())).collect();
    b.enqueue_batch(jobs).await.expect("batch");
    let mut claimers = Vec::new();
    for _ in 0..8 {
        let b = Arc::clone(&b);
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = b.claim(WORKER, &queues(&["alpha"]), 7, LONG, Duration::ZERO).await;
                let got = got.expect("claim");
                if got.is_empty() {
                    return mine;
                }
                for d in got {
                    b.ack(&d.lease).await.expect("ack");
                    mine.push(d.lease.id);
                }
            }
        }));
    }
    let mut seen = HashSet::new();
    for claimer in claimers {
        for id in claimer.await.expect("join") {
            assert!(seen.insert(id), "job {id} was handed to two claimers");
        }
    }
    assert_eq!(seen.len(), 500);
}

/// A job whose id is already queued (ready, delayed or in flight) is refused, alone
/// or in a batch, and the refused batch adds nothing; once settled, the id is free.
pub async fn a_queued_id_cannot_be_enqueued_again(b: Arc<dyn Broker>) {
    let first = job("alpha", 5, "first");
    b.enqueue(first.clone()).await.expect("enqueue");
    let again = b.enqueue(first.clone()).await;
    assert!(matches!(again, Err(Error::DuplicateJob { .. })), "{again:?}");
    let batch = vec![job("alpha", 5, "fresh"), first.clone()];
    let refused = b.enqueue_batch(batch).await;
    assert!(matches!(refused, Err(Error::DuplicateJob { .. })), "{refused:?}");
    if let Some(s) = figures(&b, "alpha").await {
        assert_eq!(s.ready, 1, "a refused batch added a job");
    }
    let got = b.claim(WORKER, &queues(&["alpha"]), 1, LONG, Duration::ZERO).await.expect("claim");
    assert!(matches!(b.enqueue(first.clone()).await, Err(Error::DuplicateJob { .. })));
    b.ack(&got[0].lease).await.expect("ack");
    b.enqueue(first).await.expect("the id is free again once the job is settled");
}

/// A batch spanning queues is refused in each queue where an id is already queued:
/// that queue's part adds nothing, and the error names the queue. (A broker may also
/// refuse the other queues' parts, as one that is atomic across queues does; the
/// suite asks only for atomicity per queue, which a partitioned store can give.)
pub async fn a_batch_across_queues_with_a_duplicate_adds_nothing_to_that_queue(b: Arc<dyn Broker>) {
    let queued = job("beta", 5, "queued");
    b.enqueue(queued.clone()).await.expect("enqueue");
    let batch =
        vec![job("alpha", 5, "fresh"), job("beta", 5, "fresh"), queued, job("gamma", 5, "fresh")];
    let refused = b.enqueue_batch(batch).await;
    match &refused {
        Err(Error::DuplicateJob { queue, .. }) => assert_eq!(queue, "beta", "{refused:?}"),
        other => panic!("expected DuplicateJob in beta, got {other:?}"),
    }
    if let Some(s) = figures(&b, "beta").await {
        assert_eq!(s.ready, 1, "the refused queue's part added a job");
    }
    let got = b.claim(WORKER, &queues(&["beta"]), 10, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(got.len(), 1, "the refused queue's part added a job: {got:?}");
}

/// Releasing a job (as at shutdown) does not count toward its deliveries.
pub async fn a_release_does_not_count_as_a_delivery(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    b.enqueue(job("alpha", 5, "x")).await.expect("enqueue");
    for _ in 0..3 {
        let got = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!(got[0].deliveries, 1);
        b.release(&got[0].lease).await.expect("release");
    }
}

/// A claim waiting on an empty queue takes a job retried to be due now.
pub async fn a_retry_wakes_a_waiting_claim(b: Arc<dyn Broker>) {
    b.enqueue(job("alpha", 5, "attempt 1")).await.expect("enqueue");
    let got = b.claim(WORKER, &queues(&["alpha"]), 1, LONG, Duration::ZERO).await.expect("claim");
    let waiter = {
        let b = Arc::clone(&b);
        tokio::spawn(async move {
            let started = Instant::now();
            let got = b.claim(WORKER, &queues(&["alpha"]), 1, LONG, Duration::from_secs(20)).await;
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.retry(&got[0].lease, b"attempt 2".to_vec(), Utc::now()).await.expect("retry");
    let (again, waited) = waiter.await.expect("join");
    assert_eq!(payloads(&again.expect("claim")), ["attempt 2"]);
    assert!(waited < Duration::from_secs(10), "the waiting claim slept {waited:?}");
}

/// While an idempotency key is known in a queue, a second job with it is refused
/// naming the first, and nothing is added; in another queue, or once the key's ttl
/// has passed, it is free. A batch refuses keys.
pub async fn an_idempotency_key_admits_one_job_while_it_is_known(b: Arc<dyn Broker>) {
    let ttl = Duration::from_millis(500);
    let first = job("alpha", 5, "first").with_idempotency_key("order-7", ttl);
    let first_id = first.id;
    b.enqueue(first).await.expect("enqueue");
    let second = job("alpha", 5, "second").with_idempotency_key("order-7", ttl);
    match b.enqueue(second).await {
        Err(Error::IdempotencyKeyTaken { existing, key, .. }) => {
            assert_eq!((existing, key.as_str()), (first_id, "order-7"));
        }
        other => panic!("a second job with a known key was not refused: {other:?}"),
    }
    if let Some(s) = figures(&b, "alpha").await {
        assert_eq!(s.ready, 1, "nothing was added");
    }
    b.enqueue(job("beta", 5, "elsewhere").with_idempotency_key("order-7", ttl))
        .await
        .expect("keys are per queue");
    let batch = vec![job("alpha", 5, "x").with_idempotency_key("order-8", ttl)];
    assert!(matches!(b.enqueue_batch(batch).await, Err(Error::InvalidArgument(_))));
    tokio::time::sleep(Duration::from_millis(800)).await;
    b.enqueue(job("alpha", 5, "later").with_idempotency_key("order-7", ttl))
        .await
        .expect("the key lapsed");
    if let Some(s) = figures(&b, "alpha").await {
        assert_eq!(s.ready, 2);
    }
}

/// A claimer waiting on two queues, woken for one but filled from the other,
/// leaves the wake-up for a claimer waiting on the first: both get a job at once.
pub async fn a_wake_up_is_not_lost_when_a_claimer_waits_on_several_queues(b: Arc<dyn Broker>) {
    // The wide claimer blocks first, so it is the one woken for "beta".
    let wide = {
        let b = Arc::clone(&b);
        tokio::spawn(async move {
            b.claim("wide", &queues(&["alpha", "beta"]), 1, LONG, Duration::from_secs(30)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let narrow = {
        let b = Arc::clone(&b);
        tokio::spawn(async move {
            b.claim("narrow", &queues(&["beta"]), 1, LONG, Duration::from_secs(30)).await
        })
    };
    // Let both block (if one has not yet, the check passes without exercising the
    // lost wake-up; it can still not pass wrongly).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    b.enqueue_batch(vec![job("beta", 5, "b"), job("alpha", 5, "a")]).await.expect("enqueue");
    let wide = wide.await.expect("join").expect("claim");
    let narrow = narrow.await.expect("join").expect("claim");
    assert_eq!(wide.len() + narrow.len(), 2, "each claimer got one job");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a claimer slept through a ready job for {:?}",
        started.elapsed()
    );
}

/// `complete` settles the job as `ack` does and records its completion, per queue
/// and for the time asked; a stale token completes nothing and records nothing.
pub async fn complete_settles_the_job_and_records_its_completion(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    let (kept, brief, stale) =
        (job("alpha", 5, "kept"), job("alpha", 5, "brief"), job("alpha", 5, "stale"));
    let (kept_id, brief_id, stale_id) = (kept.id, brief.id, stale.id);
    b.enqueue_batch(vec![kept, brief]).await.expect("enqueue");
    assert!(!b.is_complete("alpha", kept_id).await.expect("read"));
    let got = b.claim(WORKER, &q, 2, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(got.len(), 2);
    for d in &got {
        // "Forever" saturates; it must not overflow.
        let remember =
            if d.lease.id == kept_id { Duration::MAX } else { Duration::from_millis(300) };
        b.complete(&d.lease, remember).await.expect("complete");
    }
    if let Some(stats) = figures(&b, "alpha").await {
        assert_eq!((stats.ready, stats.delayed, stats.in_flight, stats.dead), (0, 0, 0, 0));
    }
    assert!(b.is_complete("alpha", kept_id).await.expect("read"));
    assert!(b.is_complete("alpha", brief_id).await.expect("read"));
    assert!(!b.is_complete("beta", kept_id).await.expect("read"), "queues are kept apart");
    assert!(matches!(b.complete(&got[0].lease, LONG).await, Err(Error::LeaseLost { .. })));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!b.is_complete("alpha", brief_id).await.expect("read"), "forgotten in time");
    assert!(b.is_complete("alpha", kept_id).await.expect("read"));

    // A lease that passed to another worker records nothing.
    b.enqueue(stale).await.expect("enqueue");
    let first =
        b.claim(WORKER, &q, 1, Duration::from_millis(200), Duration::ZERO).await.expect("claim");
    let second = b.claim(WORKER, &q, 1, LONG, Duration::from_secs(10)).await.expect("reclaim");
    assert_eq!(second.len(), 1);
    assert!(matches!(b.complete(&first[0].lease, LONG).await, Err(Error::LeaseLost { .. })));
    assert!(!b.is_complete("alpha", stale_id).await.expect("read"));
    b.complete(&second[0].lease, LONG).await.expect("the holder completes");
    assert!(b.is_complete("alpha", stale_id).await.expect("read"));
}

/// Every claim of a job carries a greater fence than the claims before it: after a
/// release, and after a lost lease.
pub async fn fences_grow_with_every_claim_of_a_job(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    b.enqueue_batch(vec![job("alpha", 5, "x"), job("alpha", 5, "y")]).await.expect("enqueue");
    let first = b.claim(WORKER, &q, 2, LONG, Duration::ZERO).await.expect("claim");
    assert_ne!(first[0].lease.fence, first[1].lease.fence, "two jobs of one claim");
    let x = first[0].lease.clone();
    b.ack(&first[1].lease).await.expect("ack");
    b.release(&x).await.expect("release");
    let second = b.claim(WORKER, &q, 1, Duration::from_millis(200), Duration::ZERO).await;
    let second = second.expect("claim").remove(0);
    assert_eq!(second.lease.id, x.id);
    assert!(second.lease.fence > x.fence, "{} after {}", second.lease.fence, x.fence);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let third = b.claim(WORKER, &q, 1, LONG, Duration::from_secs(5)).await.expect("claim");
    assert_eq!(third[0].lease.id, x.id, "the lease expired");
    assert!(third[0].lease.fence > second.lease.fence);
    assert!(third[0].lease.fence < 1 << 53, "a fence fits any language's number");
    // Released and claimed again at once, over and over (several times within one
    // millisecond, on a quick broker): each claim's fence is greater still.
    let mut lease = third[0].lease.clone();
    for round in 0..50 {
        b.release(&lease).await.expect("release");
        let again = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
        let again = again.into_iter().next().expect("the released job").lease;
        assert!(again.fence > lease.fence, "round {round}: {} after {}", again.fence, lease.fence);
        lease = again;
    }
}
