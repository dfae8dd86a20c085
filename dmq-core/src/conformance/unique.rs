//! Unique jobs: how long an idempotency key holds ([`KeyHold`]), read by the broker
//! from the state of the job the key names, and the replacement a debounce makes.

use super::*;
use crate::unique::KeyHold;

const TTL: Duration = Duration::from_secs(60);

fn keyed(job: Job, hold: KeyHold) -> Job {
    job.with_idempotency_key("report-9", TTL).with_key_hold(hold)
}

/// Refused, naming the job that holds the key.
async fn taken_by(b: &Arc<dyn Broker>, job: Job) -> TaskId {
    match b.enqueue(job).await {
        Err(Error::IdempotencyKeyTaken { existing, key, .. }) => {
            assert_eq!(key, "report-9");
            existing
        }
        other => panic!("the key should hold: {other:?}"),
    }
}

async fn claim_one(b: &Arc<dyn Broker>) -> Delivery {
    let mut got = b
        .claim("w", &queues(&["alpha"]), 1, Duration::from_secs(30), Duration::from_secs(3))
        .await
        .expect("claim");
    assert_eq!(got.len(), 1, "one job is due");
    got.remove(0)
}

/// A `Queued` key holds while its job waits, and lets the same work in again once a
/// worker has taken the job (and again while that new job waits, it holds).
pub async fn a_queued_key_holds_while_its_job_waits(b: Arc<dyn Broker>) {
    let first = keyed(job("alpha", 5, "first"), KeyHold::Queued);
    let first_id = first.id;
    b.enqueue(first).await.expect("enqueue");
    assert_eq!(taken_by(&b, keyed(job("alpha", 5, "again"), KeyHold::Queued)).await, first_id);
    let running = claim_one(&b).await;
    assert_eq!(running.lease.id, first_id);
    let second = keyed(job("alpha", 5, "second"), KeyHold::Queued);
    let second_id = second.id;
    b.enqueue(second).await.expect("the first job runs: the key no longer holds");
    assert_eq!(taken_by(&b, keyed(job("alpha", 5, "third"), KeyHold::Queued)).await, second_id);
    if let Some(s) = figures(&b, "alpha").await {
        assert_eq!((s.ready, s.in_flight), (1, 1), "{s:?}");
    }
}

/// An `UntilDone` key holds while its job waits, runs and waits for a retry, and lets
/// the same work in once the job is acknowledged.
pub async fn an_until_done_key_holds_until_its_job_is_settled(b: Arc<dyn Broker>) {
    let first = keyed(job("alpha", 5, "first"), KeyHold::UntilDone);
    let first_id = first.id;
    b.enqueue(first).await.expect("enqueue");
    let running = claim_one(&b).await;
    let again = || keyed(job("alpha", 5, "again"), KeyHold::UntilDone);
    assert_eq!(taken_by(&b, again()).await, first_id, "while it runs");
    b.retry(&running.lease, b"retried".to_vec(), Utc::now()).await.expect("retry");
    assert_eq!(taken_by(&b, again()).await, first_id, "while it waits for its retry");
    let running = claim_one(&b).await;
    b.ack(&running.lease).await.expect("ack");
    b.enqueue(again()).await.expect("the job is done: the key no longer holds");
    if let Some(s) = figures(&b, "alpha").await {
        assert_eq!((s.ready, s.in_flight), (1, 0), "{s:?}");
    }
}

/// A `Debounce` key names a job waiting out its delay: an enqueue of a new job with
/// it is refused naming that job; the same enqueue with that job's id replaces its
/// payload and due time. Once the job has started, the key lets a new job in, and a
/// replacement of the started job is refused naming itself (nothing is added).
pub async fn a_debounced_job_is_replaced_while_it_waits_out_its_delay(b: Arc<dyn Broker>) {
    let first = keyed(delayed("alpha", after(Duration::from_secs(30)), "v1"), KeyHold::Debounce);
    let first_id = first.id;
    b.enqueue(first).await.expect("enqueue");
    let newer = keyed(delayed("alpha", after(Duration::from_millis(300)), "v2"), KeyHold::Debounce);
    assert_eq!(taken_by(&b, newer.clone()).await, first_id);
    let mut replacing = newer;
    replacing.id = first_id;
    b.enqueue(replacing.clone()).await.expect("the waiting job replaced");
    if let Some(s) = figures(&b, "alpha").await {
        assert_eq!((s.ready, s.delayed), (0, 1), "one job, still waiting: {s:?}");
    }
    let started = Instant::now();
    let running = claim_one(&b).await;
    assert_eq!(running.lease.id, first_id);
    assert_eq!(payloads(&[running]), ["v2"], "the replacement's payload");
    assert!(started.elapsed() < Duration::from_secs(10), "the replacement's due time held");
    assert_eq!(taken_by(&b, replacing).await, first_id, "the job started: no replacement");
    let later = keyed(delayed("alpha", after(Duration::from_secs(30)), "v3"), KeyHold::Debounce);
    b.enqueue(later).await.expect("the job started: a new one comes in");
    if let Some(s) = figures(&b, "alpha").await {
        assert_eq!((s.delayed, s.in_flight), (1, 1), "{s:?}");
    }
}
