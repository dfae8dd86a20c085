//! The admin capability ([`BrokerAdmin`]): the queue registry,
//! queue figures, purges, dead letters, finding a job by id, deleting a queue, and
//! cancelling a job.

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
    // The envelope of a job in flight, read with its lease; none with a lease that
    // is not the job's own (another queue, another token, an altered fence).
    let lease = held[0].lease.clone();
    let read = |lease: crate::broker::Lease| {
        let b = Arc::clone(&b);
        async move { admin(&b).leased_payload(&lease).await.expect("read") }
    };
    assert_eq!(read(lease.clone()).await.as_deref(), Some(b"ready".as_slice()));
    let mut other = lease.clone();
    other.queue = "beta".to_owned();
    assert_eq!(read(other).await, None, "another queue");
    let mut forged = lease.clone();
    forged.token.push('0');
    assert_eq!(read(forged).await, None, "another token");
    let mut raised = lease.clone();
    raised.fence += 1;
    assert_eq!(read(raised).await, None, "an altered fence");
    let mut unknown = lease.clone();
    unknown.id = TaskId::new();
    assert_eq!(read(unknown).await, None, "an unknown job");
    let until = hit.at.expect("a lease deadline");
    assert!(until > Utc::now() && until <= after(LONG + Duration::from_secs(1)), "{until}");
    b.dead_letter(&held[0].lease, "fatal: boom").await.expect("dead-letter");
    let hit = found(JobState::DeadLettered)(admin(&b).find_job(ready_id, &[]).await.expect("find"));
    assert_eq!(hit.reason.as_deref(), Some("fatal: boom"));
    assert_eq!(hit.payload, b"ready");
    assert_eq!(read(lease).await, None, "a dead letter");
    assert!(admin(&b).find_job(TaskId::new(), &[]).await.expect("find").is_none());
}

/// Fills queue `alpha` with two ready jobs, a delayed one, a dead letter and a job in
/// flight (whose delivery it returns), and `beta` with one ready job.
async fn a_queue_of_every_kind(b: &Arc<dyn Broker>) -> Delivery {
    let q = queues(&["alpha"]);
    b.enqueue(job("alpha", 9, "running")).await.expect("enqueue");
    let held = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(held.len(), 1);
    b.enqueue(job("alpha", 9, "dead")).await.expect("enqueue");
    let dead = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
    b.dead_letter(&dead[0].lease, "for the test").await.expect("dead-letter");
    b.enqueue_batch(vec![job("alpha", 5, "one"), job("alpha", 0, "two")]).await.expect("enqueue");
    b.enqueue(delayed("alpha", after(LONG), "later")).await.expect("enqueue");
    b.enqueue(job("beta", 5, "bystander")).await.expect("enqueue");
    held.into_iter().next().expect("one delivery")
}

/// `queue`'s figures as (ready, delayed, in flight, dead, dead dropped).
async fn counts(b: &Arc<dyn Broker>, queue: &str) -> (u64, u64, u64, u64, u64) {
    let s = admin(b).queue_stats(queue).await.expect("queue figures");
    (s.ready, s.delayed, s.in_flight, s.dead, s.dead_dropped)
}

/// `delete_queue` refuses, deleting nothing, while a worker holds a job of the queue;
/// once the job is settled it deletes the queue whole (waiting, delayed, dead
/// letters, its registry entry) and leaves other queues alone.
pub async fn delete_queue_refuses_while_jobs_are_in_flight(b: Arc<dyn Broker>) {
    let held = a_queue_of_every_kind(&b).await;
    let refused = admin(&b).delete_queue("alpha", false).await;
    assert!(
        matches!(&refused, Err(Error::QueueBusy { queue, in_flight: 1 }) if queue == "alpha"),
        "{refused:?}"
    );
    assert_eq!(counts(&b, "alpha").await, (2, 1, 1, 1, 0), "nothing was deleted");
    assert_eq!(admin(&b).queues().await.expect("queues"), ["alpha", "beta"]);
    b.ack(&held.lease).await.expect("the worker's lease still holds");

    let deleted = admin(&b).delete_queue("alpha", false).await.expect("delete");
    let expected = QueueDeleted { waiting: 2, delayed: 1, dead_letters: 1, in_flight: 0 };
    assert_eq!(deleted, expected);
    assert_eq!(counts(&b, "alpha").await, (0, 0, 0, 0, 0));
    assert!(admin(&b).dead_letters("alpha", 0, 10).await.expect("list").is_empty());
    assert_eq!(admin(&b).queues().await.expect("queues"), ["beta"]);
    assert_eq!(counts(&b, "beta").await, (1, 0, 0, 0, 0), "another queue is left alone");
    let nothing = QueueDeleted::default();
    assert_eq!(admin(&b).delete_queue("alpha", false).await.expect("again"), nothing);
    assert_eq!(admin(&b).delete_queue("never-used", true).await.expect("unknown"), nothing);
}

/// A forced `delete_queue` deletes the jobs in flight too: the worker holding one
/// then finds its lease lost, and the job's id is free to be enqueued again.
pub async fn a_forced_delete_queue_takes_the_jobs_in_flight_and_their_leases(b: Arc<dyn Broker>) {
    let held = a_queue_of_every_kind(&b).await;
    let deleted = admin(&b).delete_queue("alpha", true).await.expect("forced delete");
    let expected = QueueDeleted { waiting: 2, delayed: 1, dead_letters: 1, in_flight: 1 };
    assert_eq!(deleted, expected);
    assert_eq!(counts(&b, "alpha").await, (0, 0, 0, 0, 0));
    assert_eq!(admin(&b).queues().await.expect("queues"), ["beta"]);
    let lost = |r: crate::Result<()>| matches!(r, Err(Error::LeaseLost { .. }));
    assert!(lost(b.renew(&held.lease, LONG).await), "renew");
    assert!(lost(b.retry(&held.lease, b"again".to_vec(), Utc::now()).await), "retry");
    assert!(lost(b.ack(&held.lease).await), "ack");
    assert!(admin(&b).find_job(held.lease.id, &[]).await.expect("find").is_none());
    assert_eq!(counts(&b, "alpha").await, (0, 0, 0, 0, 0), "the lost lease left no job behind");
    // The id is forgotten: it may be enqueued again, and the queue is listed again.
    b.enqueue(Job::new(held.lease.id, "alpha", 5, None, b"anew".to_vec())).await.expect("anew");
    assert_eq!(counts(&b, "alpha").await, (1, 0, 0, 0, 0));
    assert_eq!(admin(&b).queues().await.expect("queues"), ["alpha", "beta"]);
}

/// `delete_queue` of a partitioned queue's name deletes every partition the registry
/// lists, with the same refusal while any of them has a job in flight; a partition's
/// own name deletes that partition alone, and a queue whose name merely starts alike
/// is left alone.
pub async fn delete_queue_deletes_every_partition_of_a_partitioned_queue(b: Arc<dyn Broker>) {
    b.enqueue_batch(vec![job("emails#0", 5, "a"), job("emails#0", 5, "b")]).await.expect("batch");
    b.enqueue(job("emails#1", 5, "running")).await.expect("enqueue");
    let held =
        b.claim(WORKER, &queues(&["emails#1"]), 1, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(held.len(), 1);
    b.enqueue(delayed("emails#1", after(LONG), "later")).await.expect("enqueue");
    b.enqueue(job("emails#2", 5, "dead")).await.expect("enqueue");
    let dead =
        b.claim(WORKER, &queues(&["emails#2"]), 1, LONG, Duration::ZERO).await.expect("claim");
    b.dead_letter(&dead[0].lease, "for the test").await.expect("dead-letter");
    b.enqueue(job("emails-archive", 5, "bystander")).await.expect("enqueue");

    let refused = admin(&b).delete_queue("emails", false).await;
    assert!(matches!(refused, Err(Error::QueueBusy { in_flight: 1, .. })), "{refused:?}");
    assert_eq!(counts(&b, "emails#0").await, (2, 0, 0, 0, 0), "nothing was deleted");
    assert_eq!(counts(&b, "emails#2").await, (0, 0, 0, 1, 0), "nothing was deleted");

    let one = admin(&b).delete_queue("emails#2", false).await.expect("one partition");
    assert_eq!(one, QueueDeleted { dead_letters: 1, ..QueueDeleted::default() });
    assert_eq!(
        admin(&b).queues().await.expect("queues"),
        ["emails#0", "emails#1", "emails-archive"]
    );

    let all = admin(&b).delete_queue("emails", true).await.expect("forced delete");
    assert_eq!(all, QueueDeleted { waiting: 2, delayed: 1, dead_letters: 0, in_flight: 1 });
    assert_eq!(admin(&b).queues().await.expect("queues"), ["emails-archive"]);
    assert_eq!(counts(&b, "emails-archive").await, (1, 0, 0, 0, 0));
    assert!(matches!(b.ack(&held[0].lease).await, Err(Error::LeaseLost { .. })));
}

/// Whether `cancelled` removed the job whose payload is `payload`.
fn removed(cancelled: &Cancelled, payload: &str) -> bool {
    matches!(cancelled, Cancelled::Removed { payload: p } if p == payload.as_bytes())
}

/// `cancel` removes a waiting job, ready (of any priority) or delayed, and returns its
/// envelope; the queue's other jobs are untouched, a second cancel finds nothing, a
/// cancelled delayed job is never promoted, and the cancelled id is forgotten (it may
/// be enqueued again).
pub async fn cancel_removes_a_waiting_job_and_nothing_else(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    let (high, low, kept) =
        (job("alpha", 9, "high"), job("alpha", 0, "low"), job("alpha", 5, "kept"));
    let (high_id, low_id) = (high.id, low.id);
    b.enqueue_batch(vec![high, kept, low]).await.expect("enqueue");
    let soon = delayed("alpha", after(Duration::from_millis(300)), "soon");
    let soon_id = soon.id;
    b.enqueue(soon).await.expect("enqueue");
    b.enqueue(delayed("alpha", after(LONG), "later")).await.expect("enqueue");
    b.enqueue(job("beta", 5, "bystander")).await.expect("enqueue");

    let got = admin(&b).cancel("alpha", high_id).await.expect("cancel");
    assert!(removed(&got, "high"), "{got:?}");
    let got = admin(&b).cancel("alpha", low_id).await.expect("cancel");
    assert!(removed(&got, "low"), "{got:?}");
    let got = admin(&b).cancel("alpha", soon_id).await.expect("cancel");
    assert!(removed(&got, "soon"), "{got:?}");
    assert_eq!(counts(&b, "alpha").await, (1, 1, 0, 0, 0), "the other jobs stay");
    assert_eq!(counts(&b, "beta").await, (1, 0, 0, 0, 0), "another queue is left alone");
    for id in [high_id, low_id, soon_id] {
        let again = admin(&b).cancel("alpha", id).await.expect("cancel again");
        assert_eq!(again, Cancelled::NotFound, "cancelled twice");
        assert!(admin(&b).find_job(id, &[]).await.expect("find").is_none());
    }

    // The cancelled delayed job never falls due: only the job left ready is claimed.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = b.claim(WORKER, &q, 10, LONG, Duration::from_millis(300)).await.expect("claim");
    assert_eq!(payloads(&got), ["kept"]);
    assert_eq!(counts(&b, "alpha").await, (0, 1, 1, 0, 0), "the later job still waits");
    b.ack(&got[0].lease).await.expect("ack");

    // Its id is forgotten, envelope and all.
    b.enqueue(Job::new(high_id, "alpha", 5, None, b"anew".to_vec())).await.expect("anew");
    let got = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(payloads(&got), ["anew"]);
    b.ack(&got[0].lease).await.expect("ack");
}

/// `cancel` leaves a job in flight alone (`Running`: its lease still settles), even
/// once its lease lapsed until it is taken back; a job taken back (suspect) or
/// released waits again and is removed. A finished, dead-lettered or unknown job, or
/// an unknown queue, is `NotFound`, and the dead letter stays.
pub async fn cancel_leaves_a_running_job_alone_and_finds_no_finished_one(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    let running = job("alpha", 5, "running");
    let running_id = running.id;
    b.enqueue(running).await.expect("enqueue");
    let held = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(held.len(), 1);
    assert_eq!(admin(&b).cancel("alpha", running_id).await.expect("cancel"), Cancelled::Running);
    assert_eq!(counts(&b, "alpha").await, (0, 0, 1, 0, 0), "untouched");
    b.renew(&held[0].lease, LONG).await.expect("the lease still holds");
    b.ack(&held[0].lease).await.expect("and still settles");
    let finished = admin(&b).cancel("alpha", running_id).await.expect("cancel");
    assert_eq!(finished, Cancelled::NotFound, "finished");

    // Released: it waits again, and is removed.
    b.enqueue(job("alpha", 5, "released")).await.expect("enqueue");
    let got = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
    b.release(&got[0].lease).await.expect("release");
    let cancelled = admin(&b).cancel("alpha", got[0].lease.id).await.expect("cancel");
    assert!(removed(&cancelled, "released"), "{cancelled:?}");
    assert!(matches!(b.ack(&got[0].lease).await, Err(Error::LeaseLost { .. })));

    // Dead-lettered: not found, and the letter stays.
    b.enqueue(job("alpha", 5, "dead")).await.expect("enqueue");
    let dead = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
    b.dead_letter(&dead[0].lease, "for the test").await.expect("dead-letter");
    let got = admin(&b).cancel("alpha", dead[0].lease.id).await.expect("cancel");
    assert_eq!(got, Cancelled::NotFound, "a dead letter is not cancelled");
    assert_eq!(admin(&b).dead_letter_count("alpha").await.expect("count"), 1);

    let unknown = admin(&b).cancel("alpha", TaskId::new()).await.expect("cancel");
    assert_eq!(unknown, Cancelled::NotFound);
    let nowhere = admin(&b).cancel("never-used", TaskId::new()).await.expect("cancel");
    assert_eq!(nowhere, Cancelled::NotFound);

    // A lapsed lease is still in flight until it is taken back; then it is suspect.
    if b.worker_registry().is_none() {
        return;
    }
    b.enqueue(job("alpha", 5, "lost")).await.expect("enqueue");
    let lost = b.claim(WORKER, &q, 1, Duration::from_millis(200), Duration::ZERO).await;
    let lost = lost.expect("claim");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let lapsed = admin(&b).cancel("alpha", lost[0].lease.id).await.expect("cancel");
    assert_eq!(lapsed, Cancelled::Running, "not taken back yet");
    assert_eq!(reap_until_something_moves(&b, &q).await, 1);
    assert_eq!(admin(&b).queue_stats("alpha").await.expect("figures").suspect, 1);
    let suspect = admin(&b).cancel("alpha", lost[0].lease.id).await.expect("cancel");
    assert!(removed(&suspect, "lost"), "{suspect:?}");
    assert_eq!(counts(&b, "alpha").await, (0, 0, 0, 1, 0));
    assert!(b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim").is_empty());
}

/// A partition is a queue of its own: `cancel` of a partitioned queue's logical name
/// finds no job of a partition, and the partition's own name cancels it.
pub async fn cancel_takes_a_partitions_job_by_the_partitions_name(b: Arc<dyn Broker>) {
    let one = job("emails#1", 5, "one");
    let one_id = one.id;
    b.enqueue(one).await.expect("enqueue");
    b.enqueue(job("emails#2", 5, "two")).await.expect("enqueue");
    assert_eq!(admin(&b).cancel("emails", one_id).await.expect("cancel"), Cancelled::NotFound);
    assert_eq!(admin(&b).cancel("emails#2", one_id).await.expect("cancel"), Cancelled::NotFound);
    let got = admin(&b).cancel("emails#1", one_id).await.expect("cancel");
    assert!(removed(&got, "one"), "{got:?}");
    assert_eq!(counts(&b, "emails#1").await, (0, 0, 0, 0, 0));
    assert_eq!(counts(&b, "emails#2").await, (1, 0, 0, 0, 0));
}

/// A paused queue hands out nothing, to any claim, until it is resumed: enqueues,
/// delayed jobs and retries still land in it, the job a worker held already settles,
/// and other queues are claimed from as usual. A pause is said once (the second is
/// no change), shows in the queue's figures, registers a queue no job went to yet,
/// and goes with the queue when it is deleted.
pub async fn a_paused_queue_hands_out_nothing_until_resumed(b: Arc<dyn Broker>) {
    let both = queues(&["alpha", "beta"]);
    b.enqueue(job("alpha", 5, "held")).await.expect("enqueue");
    let held = b.claim(WORKER, &queues(&["alpha"]), 1, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(payloads(&held), ["held"]);
    let before = Utc::now() - chrono::Duration::seconds(60);
    assert!(admin(&b).pause("alpha").await.expect("pause"), "it was running");
    assert!(!admin(&b).pause("alpha").await.expect("pause"), "paused already");
    let since = admin(&b).queue_stats("alpha").await.expect("figures").paused_since;
    assert!(since.is_some_and(|t| t > before && t < Utc::now() + chrono::Duration::seconds(60)));

    b.enqueue(job("alpha", 9, "waits")).await.expect("an enqueue lands in a paused queue");
    b.enqueue(delayed("alpha", after(Duration::from_millis(50)), "falls due"))
        .await
        .expect("enqueue");
    b.enqueue(job("beta", 5, "other")).await.expect("enqueue");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = b.claim(WORKER, &both, 10, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(payloads(&got), ["other"], "only the queue that runs hands out jobs");
    b.ack(&got[0].lease).await.expect("ack");
    let none = b.claim(WORKER, &both, 10, LONG, Duration::from_millis(300)).await.expect("claim");
    assert!(none.is_empty(), "a claim that waits gets nothing from a paused queue either");
    // The job held before the pause settles: here it is retried, into the paused queue.
    b.retry(&held[0].lease, b"retried".to_vec(), Utc::now()).await.expect("retry");
    if let Some(stats) = figures(&b, "alpha").await {
        // The retry may wait among the delayed jobs, due, until a claim promotes it.
        assert_eq!((stats.ready + stats.delayed, stats.in_flight), (3, 0), "{stats:?}");
    }

    assert!(admin(&b).pause("never-used").await.expect("pause"), "a new queue pauses");
    assert!(admin(&b).queues().await.expect("queues").contains(&"never-used".to_owned()));
    admin(&b).delete_queue("never-used", false).await.expect("delete");
    let gone = admin(&b).queue_stats("never-used").await.expect("figures");
    assert_eq!(gone.paused_since, None, "a deleted queue's pause goes with it");

    assert!(admin(&b).resume("alpha").await.expect("resume"), "it was paused");
    assert!(!admin(&b).resume("alpha").await.expect("resume"), "running already");
    assert!(!admin(&b).resume("never-paused").await.expect("resume"));
    assert_eq!(admin(&b).queue_stats("alpha").await.expect("figures").paused_since, None);
    let got = b.claim(WORKER, &both, 10, LONG, Duration::ZERO).await.expect("claim");
    let mut seen = payloads(&got);
    seen.sort();
    assert_eq!(seen, ["falls due", "retried", "waits"]);
    for d in &got {
        b.ack(&d.lease).await.expect("ack");
    }
}

/// A claimer waiting on a paused queue is woken when the queue resumes, and takes
/// the jobs that landed meanwhile, long before its wait would have ended.
pub async fn resuming_wakes_a_claimer_waiting_on_the_paused_queue(b: Arc<dyn Broker>) {
    assert!(admin(&b).pause("alpha").await.expect("pause"));
    b.enqueue(job("alpha", 5, "waited")).await.expect("enqueue");
    let claimer = {
        let b = Arc::clone(&b);
        tokio::spawn(async move {
            let started = Instant::now();
            let got = b.claim(WORKER, &queues(&["alpha"]), 10, LONG, LONG).await.expect("claim");
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!claimer.is_finished(), "the claimer took a job from a paused queue");
    assert!(admin(&b).resume("alpha").await.expect("resume"));
    let (got, waited) = claimer.await.expect("the claimer");
    assert_eq!(payloads(&got), ["waited"]);
    assert!(waited < LONG / 2, "woken by the resume, not by its wait's end: {waited:?}");
    b.ack(&got[0].lease).await.expect("ack");
}
