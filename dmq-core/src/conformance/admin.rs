//! The admin capability ([`BrokerAdmin`]): the queue registry,
//! queue figures, purges, dead letters, and finding a job by id.

use super::*;

/// `purge` removes ready and delayed jobs, and leaves the job in flight and the
/// dead letters; a purged id can be enqueued again.
pub async fn purge_removes_the_waiting_jobs_only(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    let running = job("alpha", 5, "running");
    b.enqueue(running).await.expect("enqueue");
    let held = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(held.len(), 1);
    b.enqueue(job("alpha", 5, "dead")).await.expect("enqueue");
    let dead = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
    b.dead_letter(&dead[0].lease, "for the test").await.expect("dead-letter");
    let ready = job("alpha", 9, "ready");
    let ready_id = ready.id;
    b.enqueue_batch(vec![ready, job("alpha", 0, "low")]).await.expect("enqueue");
    b.enqueue(delayed("alpha", after(LONG), "later")).await.expect("enqueue");
    assert_eq!(admin(&b).purge("alpha").await.expect("purge"), 3);
    if let Some(stats) = figures(&b, "alpha").await {
        assert_eq!((stats.ready, stats.delayed, stats.in_flight, stats.dead), (0, 0, 1, 1));
    }
    assert_eq!(admin(&b).purge("alpha").await.expect("purge"), 0);
    assert_eq!(admin(&b).purge("never-used").await.expect("purge"), 0);
    // The purged id is forgotten, and the job in flight still settles.
    b.enqueue(Job::new(ready_id, "alpha", 5, None, b"again".to_vec())).await.expect("again");
    b.ack(&held[0].lease).await.expect("ack");
}

/// Dead letters keep their reason, newest first, and are counted.
pub async fn dead_letter_keeps_the_reason(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    for p in ["first", "second"] {
        b.enqueue(job("alpha", 5, p)).await.expect("enqueue");
    }
    for reason in ["bad one", "bad two"] {
        let got = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
        b.dead_letter(&got[0].lease, reason).await.expect("dead-letter");
    }
    assert_eq!(admin(&b).dead_letter_count("alpha").await.expect("count"), 2);
    let page = admin(&b).dead_letters("alpha", 0, 10).await.expect("list");
    let seen: Vec<(&str, &[u8])> =
        page.iter().map(|d| (d.reason.as_str(), d.payload.as_slice())).collect();
    assert_eq!(seen, [("bad two", &b"second"[..]), ("bad one", &b"first"[..])]);
    assert_eq!(admin(&b).dead_letters("alpha", 1, 10).await.expect("list").len(), 1);
    if let Some(s) = figures(&b, "alpha").await {
        assert_eq!(s.in_flight, 0);
    }
}

/// The same id dead-lettered twice (requeued in between) keeps two letters, each
/// with its own payload.
pub async fn an_id_dead_lettered_twice_keeps_both_letters(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    let id = TaskId::new();
    for payload in ["first life", "second life"] {
        let one = Job::new(id, "alpha", 5, None, payload.as_bytes().to_vec());
        b.enqueue(one).await.expect("enqueue");
        let got = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
        b.dead_letter(&got[0].lease, payload).await.expect("dead-letter");
        // Dead letters carry millisecond timestamps; keep the two apart.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let page = admin(&b).dead_letters("alpha", 0, 10).await.expect("list");
    let seen: Vec<(&str, &[u8])> =
        page.iter().map(|d| (d.reason.as_str(), d.payload.as_slice())).collect();
    assert_eq!(seen, [("second life", &b"second life"[..]), ("first life", &b"first life"[..])]);
}

/// `take_dead_letter` removes and returns the newest letter of one job, with its
/// payload; `purge_dead_letters` empties the queue's dead letters and says how many.
pub async fn a_dead_letter_can_be_taken_out_and_the_queue_purged(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    let mut ids = Vec::new();
    for payload in ["one", "two", "three"] {
        let one = job("alpha", 5, payload);
        ids.push(one.id);
        b.enqueue(one).await.expect("enqueue");
        let got = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
        b.dead_letter(&got[0].lease, &format!("bad {payload}")).await.expect("dead-letter");
    }
    let taken = admin(&b).take_dead_letter("alpha", ids[1]).await.expect("take").expect("a letter");
    assert_eq!((taken.id, taken.reason.as_str()), (ids[1], "bad two"));
    assert_eq!(taken.payload, b"two");
    assert_eq!(taken.queue, "alpha");
    assert!(admin(&b).take_dead_letter("alpha", ids[1]).await.expect("take").is_none());
    assert!(admin(&b).take_dead_letter("alpha", TaskId::new()).await.expect("take").is_none());
    assert_eq!(admin(&b).dead_letter_count("alpha").await.expect("count"), 2);
    assert_eq!(admin(&b).purge_dead_letters("alpha").await.expect("purge"), 2);
    assert_eq!(admin(&b).dead_letter_count("alpha").await.expect("count"), 0);
    assert!(admin(&b).dead_letters("alpha", 0, 10).await.expect("list").is_empty());
    assert_eq!(admin(&b).purge_dead_letters("alpha").await.expect("purge"), 0);
}

/// Every queue a job was enqueued to is listed, sorted, whatever state its jobs are
/// in, and one a job went to and left too, and one a worker takes jobs from; a queue
/// never used is not.
pub async fn the_queue_registry_lists_every_queue_enqueued_to(b: Arc<dyn Broker>) {
    assert_eq!(admin(&b).queues().await.expect("queues"), Vec::<String>::new());
    b.enqueue(job("gamma", 5, "ready")).await.expect("enqueue");
    b.enqueue(delayed("alpha", after(LONG), "later")).await.expect("enqueue");
    b.enqueue_batch(vec![job("beta", 5, "one"), job("delta", 1, "two")]).await.expect("batch");
    let got = b.claim(WORKER, &queues(&["delta"]), 1, LONG, Duration::ZERO).await.expect("claim");
    b.ack(&got[0].lease).await.expect("ack");
    assert_eq!(
        admin(&b).queues().await.expect("queues"),
        ["alpha", "beta", "delta", "gamma"],
        "sorted, the emptied queue included"
    );
    // A queue a worker takes jobs from is known too, where workers register.
    if let Some(workers) = b.worker_registry() {
        let listening = worker("listener", &queues(&["epsilon"]));
        workers.heartbeat(&listening, LONG).await.expect("heartbeat");
        assert_eq!(
            admin(&b).queues().await.expect("queues"),
            ["alpha", "beta", "delta", "epsilon", "gamma"]
        );
    }
}

/// `find_job` finds a job in each state it can be in, in the queue that holds it,
/// with its payload and what the state says of it; a job no queue holds is `None`.
pub async fn a_job_is_found_by_id_in_each_state(b: Arc<dyn Broker>) {
    let found = |state| {
        move |hit: Option<crate::broker::FoundJob>| {
            let hit = hit.expect("the job is found");
            assert_eq!(hit.state, state, "{hit:?}");
            hit
        }
    };
    let ready = job("alpha", 5, "ready");
    let ready_id = ready.id;
    b.enqueue(ready).await.expect("enqueue");
    let hit = found(JobState::Ready)(admin(&b).find_job(ready_id, &[]).await.expect("find"));
    assert_eq!((hit.queue.as_str(), hit.payload.as_slice()), ("alpha", b"ready".as_slice()));
    let eta = after(LONG);
    let later = delayed("beta", eta, "later");
    let later_id = later.id;
    b.enqueue(later).await.expect("enqueue");
    let hit = found(JobState::Delayed)(admin(&b).find_job(later_id, &[]).await.expect("find"));
    assert_eq!(hit.queue, "beta");
    let due = hit.at.expect("a delayed job's due time");
    assert!((due - eta).num_seconds().abs() <= 1, "due {due}, eta {eta}");
    // Only the queues asked about are searched.
    let elsewhere = admin(&b).find_job(later_id, &queues(&["alpha"])).await.expect("find");
    assert!(elsewhere.is_none(), "{elsewhere:?}");
    let held = b.claim(WORKER, &queues(&["alpha"]), 1, LONG, Duration::ZERO).await.expect("claim");
    let hit = found(JobState::InFlight)(admin(&b).find_job(ready_id, &[]).await.expect("find"));
    let until = hit.at.expect("a lease deadline");
    assert!(until > Utc::now() && until <= after(LONG + Duration::from_secs(1)), "{until}");
    b.dead_letter(&held[0].lease, "fatal: boom").await.expect("dead-letter");
    let hit = found(JobState::DeadLettered)(admin(&b).find_job(ready_id, &[]).await.expect("find"));
    assert_eq!(hit.reason.as_deref(), Some("fatal: boom"));
    assert_eq!(hit.payload, b"ready");
    assert!(admin(&b).find_job(TaskId::new(), &[]).await.expect("find").is_none());
}
