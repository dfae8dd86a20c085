//! The worker registry ([`WorkerRegistry`]): heartbeats, the
//! list of live workers, and the reaper that takes back a lost worker's jobs and runs
//! suspect jobs alone.

use super::*;

/// A heartbeat lists the worker until its ttl passes; deregistering removes it.
pub async fn a_heartbeat_registers_the_worker_until_it_lapses(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    let ids = |list: Vec<crate::WorkerStatus>| {
        let mut ids: Vec<String> = list.into_iter().map(|w| w.info.id).collect();
        ids.sort();
        ids
    };
    registry(&b).heartbeat(&worker("w-long", &q), LONG).await.expect("heartbeat");
    registry(&b)
        .heartbeat(&worker("w-short", &q), Duration::from_millis(300))
        .await
        .expect("heartbeat");
    let listed = registry(&b).workers().await.expect("workers");
    let long = listed.iter().find(|w| w.info.id == "w-long").expect("w-long is listed");
    assert_eq!(long.info.queues, q);
    assert_eq!(long.info.running, 0, "a fresh description reports no running jobs");
    // A later heartbeat replaces what the worker reports.
    registry(&b).heartbeat(&worker("w-long", &q).with_running(3), LONG).await.expect("heartbeat");
    let listed = registry(&b).workers().await.expect("workers");
    let long = listed.iter().find(|w| w.info.id == "w-long").expect("w-long is listed");
    assert_eq!(long.info.running, 3, "running round-trips");
    assert_eq!((long.info.concurrency, long.info.queues.as_slice()), (4, q.as_slice()));
    assert!(long.alive_until > Utc::now() + chrono::Duration::seconds(20));
    assert_eq!(ids(listed), ["w-long", "w-short"]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(ids(registry(&b).workers().await.expect("workers")), ["w-long"], "w-short lapsed");
    registry(&b).deregister("w-long").await.expect("deregister");
    assert!(registry(&b).workers().await.expect("workers").is_empty());
}

/// A worker that stops heartbeating loses its jobs to the reaper long before their
/// leases expire, and its late ack is refused.
pub async fn reap_returns_the_jobs_of_a_worker_whose_heartbeat_lapsed(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    b.enqueue_batch(vec![job("alpha", 5, "a"), job("alpha", 5, "b")]).await.expect("enqueue");
    registry(&b)
        .heartbeat(&worker("doomed", &q), Duration::from_millis(300))
        .await
        .expect("heartbeat");
    registry(&b).heartbeat(&worker("survivor", &q), LONG).await.expect("heartbeat");
    let held = b.claim("doomed", &q, 1, LONG, Duration::ZERO).await.expect("claim");
    let kept = b.claim("survivor", &q, 1, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!((held.len(), kept.len()), (1, 1));
    assert_eq!(registry(&b).reap(&q).await.expect("reap"), 0, "the doomed worker is still alive");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let moved = reap_until_something_moves(&b, &q).await;
    assert_eq!(moved, 1, "only the lapsed worker's job comes back");
    let again = b.claim("survivor", &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].lease.id, held[0].lease.id);
    assert_eq!(again[0].deliveries, 2, "the lost run counts as a delivery");
    assert!(matches!(b.ack(&held[0].lease).await, Err(Error::LeaseLost { .. })));
    b.ack(&again[0].lease).await.expect("ack");
    b.ack(&kept[0].lease).await.expect("the survivor's own job is still its own");
    assert!(registry(&b).workers().await.expect("workers").iter().all(|w| w.info.id != "doomed"));
}

/// Reaping takes nothing from a worker that keeps heartbeating.
pub async fn reap_leaves_the_jobs_of_live_workers_alone(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    b.enqueue(job("alpha", 5, "a")).await.expect("enqueue");
    registry(&b).heartbeat(&worker("alive", &q), LONG).await.expect("heartbeat");
    let held = b.claim("alive", &q, 1, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(registry(&b).reap(&q).await.expect("reap"), 0);
    assert!(b.claim("other", &q, 1, LONG, Duration::ZERO).await.expect("claim").is_empty());
    b.ack(&held[0].lease).await.expect("ack");
}

/// A worker whose heartbeat lapsed but who is still at work (it stalled, then came
/// back) keeps the jobs it claimed since: a claim is a sign of life too.
pub async fn reap_leaves_what_a_lapsed_worker_claimed_after_its_lapse(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    registry(&b).heartbeat(&worker("survivor", &q), LONG).await.expect("heartbeat");
    registry(&b)
        .heartbeat(&worker("stalled", &q), Duration::from_millis(300))
        .await
        .expect("heartbeat");
    tokio::time::sleep(Duration::from_millis(800)).await;
    b.enqueue(job("alpha", 5, "late")).await.expect("enqueue");
    let held = b.claim("stalled", &q, 1, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(held.len(), 1);
    // Any number of reaps: none takes the job claimed after the lapse.
    for _ in 0..3 {
        assert_eq!(registry(&b).reap(&q).await.expect("reap"), 0);
    }
    assert!(b.claim("survivor", &q, 1, LONG, Duration::ZERO).await.expect("claim").is_empty());
    b.ack(&held[0].lease).await.expect("the stalled worker still holds its new job");
}

/// A lapsed worker that claimed a job and then fell silent for good is not
/// forgotten with the job still leased to it: once its ttl has passed since the
/// claim, a reap takes the job back.
pub async fn a_lapsed_worker_that_stays_silent_loses_even_its_fresh_claims(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    registry(&b).heartbeat(&worker("survivor", &q), LONG).await.expect("heartbeat");
    registry(&b)
        .heartbeat(&worker("fading", &q), Duration::from_millis(300))
        .await
        .expect("heartbeat");
    tokio::time::sleep(Duration::from_millis(800)).await;
    b.enqueue(job("alpha", 5, "late")).await.expect("enqueue");
    let held = b.claim("fading", &q, 1, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(registry(&b).reap(&q).await.expect("reap"), 0, "the claim is fresh");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let moved = reap_until_something_moves(&b, &q).await;
    assert_eq!(moved, 1, "the silent worker's job comes back");
    let again = b.claim("survivor", &q, 1, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(again.len(), 1);
    assert!(matches!(b.ack(&held[0].lease).await, Err(Error::LeaseLost { .. })));
    b.ack(&again[0].lease).await.expect("ack");
}

/// Jobs whose lease was lost come back suspect: one per claim, flagged to run
/// alone, before any other ready job, and a release keeps them so.
pub async fn jobs_taken_back_come_one_at_a_time_to_run_alone(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    let batch: Vec<Job> = (0..3).map(|i| job("alpha", 5, &format!("lost {i}"))).collect();
    b.enqueue_batch(batch).await.expect("enqueue");
    let lost = b.claim(WORKER, &q, 10, Duration::from_millis(200), Duration::ZERO).await;
    let lost = lost.expect("claim");
    assert_eq!(lost.len(), 3);
    assert!(lost.iter().all(|d| !d.isolated), "a first delivery runs with others");
    b.enqueue(job("alpha", 9, "fresh")).await.expect("enqueue");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(reap_until_something_moves(&b, &q).await, 3, "the three expired leases");
    if let Some(stats) = figures(&b, "alpha").await {
        assert_eq!((stats.ready, stats.suspect, stats.in_flight), (4, 3, 0), "{stats:?}");
    }
    let mut seen = Vec::new();
    for round in 0..3 {
        let got = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!(got.len(), 1, "round {round}: a suspect job comes alone");
        assert!(got[0].isolated, "round {round}");
        assert_eq!(got[0].deliveries, 2);
        if round == 0 {
            // Handed back (its worker was busy): still suspect, first in line.
            b.release(&got[0].lease).await.expect("release");
            let again = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
            assert_eq!((again.len(), again[0].isolated), (1, true));
            assert_eq!(again[0].lease.id, got[0].lease.id);
            assert_eq!(again[0].deliveries, 2, "a release counts no delivery");
            b.ack(&again[0].lease).await.expect("ack");
        } else {
            b.ack(&got[0].lease).await.expect("ack");
        }
        seen.push(got[0].lease.id);
    }
    let mut expected: Vec<TaskId> = lost.iter().map(|d| d.lease.id).collect();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected, "oldest first, each once");
    let fresh = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(payloads(&fresh), ["fresh"]);
    assert!(!fresh[0].isolated);
}

/// A job whose worker is lost while it runs alone gets a strike; with as many
/// strikes as the broker allows (5 by default) it is dead-lettered as poison. The
/// jobs that were lost beside it the first time run alone and are spared.
pub async fn a_job_lost_while_running_alone_strikes_out_and_spares_its_neighbours(
    b: Arc<dyn Broker>,
) {
    let q = queues(&["alpha"]);
    let pill = job("alpha", 5, "pill");
    let pill_id = pill.id;
    let neighbours: Vec<Job> = (0..4).map(|i| job("alpha", 5, &format!("good {i}"))).collect();
    let mut batch = vec![pill];
    batch.extend(neighbours);
    b.enqueue_batch(batch).await.expect("enqueue");
    let short = Duration::from_millis(150);
    let first = b.claim(WORKER, &q, 10, short, Duration::ZERO).await.expect("claim");
    assert_eq!(first.len(), 5, "all five run together, and their worker dies");
    let mut strikes = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let got = b.claim(WORKER, &q, 10, short, Duration::from_secs(2)).await;
        let Some(delivery) = got.expect("claim").pop() else { break };
        assert!(delivery.isolated);
        if delivery.lease.id == pill_id {
            strikes += 1; // it kills its worker again: never settled
        } else {
            b.ack(&delivery.lease).await.expect("a good job runs alone and succeeds");
        }
    }
    assert_eq!(strikes, crate::DEFAULT_MAX_DELIVERIES, "the pill ran alone until it struck out");
    let dead = admin(&b).dead_letters("alpha", 0, 10).await.expect("dead letters");
    assert_eq!(dead.len(), 1, "only the pill: {dead:?}");
    assert_eq!(dead[0].id, pill_id);
    assert!(
        dead[0].reason.starts_with("poison: its worker was lost 5 times"),
        "{}",
        dead[0].reason
    );
    if let Some(stats) = figures(&b, "alpha").await {
        assert_eq!((stats.ready, stats.in_flight, stats.dead), (0, 0, 1), "{stats:?}");
    }
}

/// A claimer busy with an earlier queue is still offered a suspect job of a later
/// queue (flagged, after the earlier queue's jobs; the worker hands it back and
/// comes for it alone), so that busy earlier queues do not keep it waiting.
pub async fn a_suspect_in_a_later_queue_is_not_kept_waiting_by_earlier_ones(b: Arc<dyn Broker>) {
    b.enqueue(job("beta", 5, "lost")).await.expect("enqueue");
    let short = Duration::from_millis(150);
    let lost = b.claim(WORKER, &queues(&["beta"]), 1, short, Duration::ZERO).await;
    assert_eq!(lost.expect("claim").len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reap_until_something_moves(&b, &queues(&["beta"])).await, 1);
    b.enqueue_batch(vec![job("alpha", 5, "a1"), job("alpha", 5, "a2")]).await.expect("enqueue");
    let both = queues(&["alpha", "beta"]);
    let got = b.claim(WORKER, &both, 10, LONG, Duration::ZERO).await.expect("claim");
    let seen: Vec<(String, bool)> = got
        .iter()
        .map(|d| (String::from_utf8_lossy(&d.payload).into_owned(), d.isolated))
        .collect();
    assert_eq!(
        seen,
        [("a1".to_owned(), false), ("a2".to_owned(), false), ("lost".to_owned(), true)]
    );
    // Handed back, it comes alone to a claim of its own queue.
    let suspect = got.last().expect("the suspect");
    b.release(&suspect.lease).await.expect("release");
    let alone = b.claim(WORKER, &queues(&["beta"]), 10, LONG, Duration::ZERO).await;
    let alone = alone.expect("claim");
    assert_eq!((alone.len(), alone[0].isolated), (1, true));
}
