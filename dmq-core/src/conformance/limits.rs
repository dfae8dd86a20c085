//! Flow limits ([`Gate`]): a rate and a concurrency per gate, enforced by the broker
//! at claim time, whichever worker claims. Jobs held back wait in the broker, and the
//! claim takes other jobs meanwhile.

use super::*;
use crate::limits::{Gate, RateLimit};

fn gated(queue: &str, gate: &Gate, payload: &str) -> Job {
    job(queue, 5, payload).with_gate(gate.clone())
}

fn rate(text: &str) -> Option<RateLimit> {
    Some(text.parse().expect("a rate"))
}

/// A rate-limited gate lets its burst through at once, then one job per interval; a
/// claim meanwhile takes the other jobs, and a waiting claim is woken when the rate
/// allows the next one (not at the end of its wait).
pub async fn a_rate_limit_lets_its_burst_through_then_spaces_starts(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    let gate = Gate::new("send", rate("5/s"), 2, None);
    for i in 0..5 {
        b.enqueue(gated("alpha", &gate, &format!("g{i}"))).await.expect("enqueue");
    }
    b.enqueue(job("alpha", 5, "free")).await.expect("enqueue");
    let got = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
    let mut seen = payloads(&got);
    seen.sort();
    assert_eq!(seen, ["free", "g0", "g1"], "the burst of 2 and the unlimited job");
    let none = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert!(none.is_empty(), "over the rate: {:?}", payloads(&none));
    if let Some(stats) = figures(&b, "alpha").await {
        assert_eq!((stats.ready, stats.in_flight), (3, 3), "held jobs wait: {stats:?}");
    }
    let gates = admin(&b).gates("alpha").await.expect("gates");
    assert_eq!(gates.len(), 1, "{gates:?}");
    let send = &gates[0];
    assert_eq!(send.gate, gate, "the gate as its jobs gave it: {send:?}");
    assert_eq!(send.waiting, 3, "{send:?}");
    assert!(send.next_start.is_some_and(|t| t > Utc::now()), "{send:?}");
    assert!(send.holding_back().is_some_and(|why| why.starts_with("rate 5/s")), "{send:?}");
    // The next start is due 200 ms after the burst: a claim waiting 5 s gets it then.
    let started = Instant::now();
    let next = b.claim(WORKER, &q, 10, LONG, Duration::from_secs(5)).await.expect("claim");
    let waited = started.elapsed();
    assert_eq!(payloads(&next), ["g2"], "one at a time at the steady rate");
    assert!(waited >= Duration::from_millis(100), "started {waited:?} after the burst");
    assert!(waited < Duration::from_secs(3), "the claim slept past the rate: {waited:?}");
    // Acknowledging frees nothing for a rate: the next still waits its interval.
    for d in got.iter().chain(&next) {
        b.ack(&d.lease).await.expect("ack");
    }
    let none = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert!(none.is_empty(), "an ack does not make room under a rate");
    let mut rest = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rest.len() < 2 && Instant::now() < deadline {
        let got = b.claim(WORKER, &q, 10, LONG, Duration::from_secs(2)).await.expect("claim");
        assert!(got.len() <= 1, "two starts at once at the steady rate: {:?}", payloads(&got));
        rest.extend(payloads(&got));
    }
    assert_eq!(rest, ["g3", "g4"], "the gate's jobs start in order");
}

/// A gate with a concurrency limit lets that many of its jobs run at once; settling
/// one (ack, retry, release or dead-letter) frees its slot and wakes a waiting claim.
/// Gates of different names (keys) do not share slots.
pub async fn a_concurrency_limit_holds_a_slot_per_running_job(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    let gate = Gate::new("report[t1]", None, 1, Some(2));
    let other = Gate::new("report[t2]", None, 1, Some(1));
    for i in 0..5 {
        b.enqueue(gated("alpha", &gate, &format!("a{i}"))).await.expect("enqueue");
    }
    b.enqueue(gated("alpha", &other, "b0")).await.expect("enqueue");
    let got = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
    let mut seen = payloads(&got);
    seen.sort();
    assert_eq!(seen, ["a0", "a1", "b0"], "two of t1, one of t2");
    let lease = |name: &str| got.iter().find(|d| d.payload == name.as_bytes()).expect(name);
    let none = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert!(none.is_empty(), "t1's slots are full: {:?}", payloads(&none));
    let gates = admin(&b).gates("alpha").await.expect("gates");
    let seen: Vec<_> = gates
        .iter()
        .map(|g| (g.gate.name.as_str(), g.gate.concurrency, g.running, g.waiting))
        .collect();
    assert_eq!(seen, [("report[t1]", Some(2), 2, 3), ("report[t2]", Some(1), 1, 0)]);
    assert_eq!(gates[0].holding_back().as_deref(), Some("concurrency: 2 of 2 running"));
    assert_eq!(gates[1].holding_back(), None, "nothing waits at t2");

    // A claim waiting on the full gate is woken by the ack that frees a slot.
    let waiting = {
        let b = Arc::clone(&b);
        let q = q.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let got = b.claim(WORKER, &q, 10, LONG, Duration::from_secs(20)).await;
            (got.expect("claim"), started.elapsed())
        })
    };
    // The ack comes a second in: the claim (started at once) waits for it, and is
    // woken by it, not by the end of its 20 s wait.
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.ack(&lease("a0").lease).await.expect("ack");
    let (next, waited) = waiting.await.expect("the claim ran");
    assert_eq!(payloads(&next), ["a2"], "one slot came free");
    assert!(waited >= Duration::from_millis(500), "the claim did not wait: {waited:?}");
    assert!(waited < Duration::from_secs(10), "the ack did not wake the claim: {waited:?}");

    // A retry, a release and a dead letter free their slots too.
    b.retry(&lease("a1").lease, b"a1 again".to_vec(), after(Duration::from_secs(60)))
        .await
        .expect("retry");
    let next2 = b.claim(WORKER, &q, 10, LONG, Duration::from_secs(5)).await.expect("claim");
    assert_eq!(payloads(&next2), ["a3"]);
    b.release(&next[0].lease).await.expect("release");
    let again = b.claim(WORKER, &q, 10, LONG, Duration::from_secs(5)).await.expect("claim");
    assert_eq!(payloads(&again).len(), 1, "the released job or the next one takes the slot");
    b.dead_letter(&again[0].lease, "given up").await.expect("dead letter");
    b.dead_letter(&next2[0].lease, "given up").await.expect("dead letter");
    let last = b.claim(WORKER, &q, 10, LONG, Duration::from_secs(5)).await.expect("claim");
    assert!(!last.is_empty() && last.len() <= 2, "{:?}", payloads(&last));
    let none = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert!(none.is_empty(), "{:?}", payloads(&none));
}

/// A job whose lease lapsed (its worker lost) gives its slot back: the job comes back
/// and is claimed again, and the gate lets it run.
pub async fn a_lapsed_lease_gives_its_slot_back(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    let gate = Gate::new("solo", None, 1, Some(1));
    b.enqueue(gated("alpha", &gate, "first")).await.expect("enqueue");
    b.enqueue(gated("alpha", &gate, "second")).await.expect("enqueue");
    let got = b.claim(WORKER, &q, 10, Duration::from_millis(200), Duration::ZERO).await;
    assert_eq!(payloads(&got.expect("claim")), ["first"]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The lapsed job comes back (to run alone), under the gate's one slot.
    let back = b.claim(WORKER, &q, 10, LONG, Duration::from_secs(5)).await.expect("claim");
    assert_eq!(payloads(&back), ["first"], "the lost job comes back, alone");
    let none = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert!(none.is_empty(), "its slot is taken again: {:?}", payloads(&none));
    b.ack(&back[0].lease).await.expect("ack");
    let next = b.claim(WORKER, &q, 10, LONG, Duration::from_secs(5)).await.expect("claim");
    assert_eq!(payloads(&next), ["second"]);
}

/// Jobs waiting at a gate are waiting jobs to the admin: counted as ready, found by
/// id, cancelled and purged; the doctor finds none of them stranded (it would put them
/// back in the ready list, beside their place at the gate).
pub async fn jobs_waiting_at_a_gate_are_found_cancelled_and_purged(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    let gate = Gate::new("slow", rate("1/h"), 1, Some(1));
    let jobs: Vec<Job> = (0..4).map(|i| gated("alpha", &gate, &format!("j{i}"))).collect();
    let ids: Vec<TaskId> = jobs.iter().map(|j| j.id).collect();
    for job in jobs {
        b.enqueue(job).await.expect("enqueue");
    }
    let got = b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert_eq!(payloads(&got), ["j0"]);
    assert!(b.claim(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim").is_empty());
    let stats = admin(&b).queue_stats("alpha").await.expect("figures");
    assert_eq!((stats.ready, stats.gated, stats.in_flight), (3, 3, 1), "{stats:?}");
    for checkup in admin(&b).doctor(&q, true).await.expect("doctor") {
        assert!(checkup.stranded.is_empty(), "held jobs taken for stranded: {checkup:?}");
    }
    let stats = admin(&b).queue_stats("alpha").await.expect("figures");
    assert_eq!((stats.ready, stats.gated), (3, 3), "the doctor moved nothing: {stats:?}");
    let found = admin(&b).find_job(ids[2], &q).await.expect("find").expect("found");
    assert_eq!((found.state, found.payload.as_slice()), (JobState::Ready, b"j2".as_slice()));
    let cancelled = admin(&b).cancel("alpha", ids[1]).await.expect("cancel");
    assert_eq!(cancelled, Cancelled::Removed { payload: b"j1".to_vec() });
    assert_eq!(admin(&b).purge("alpha").await.expect("purge"), 2);
    assert_eq!(admin(&b).queue_stats("alpha").await.expect("figures").ready, 0);
    b.ack(&got[0].lease).await.expect("ack");
}

/// Grouped jobs are claimed round robin across groups, one job of each group in turn,
/// and share the claims with the queue's ungrouped jobs: a group's three jobs behind
/// another's fifty are out within the first ten claimed. Within a group, jobs keep
/// their order. Grouped jobs count as ready, are found, cancelled and purged, and a
/// delayed grouped job joins its group when due.
pub async fn grouped_jobs_are_claimed_round_robin_across_groups(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    let grouped = |group: &str, payload: String| job("alpha", 5, &payload).in_group(group);
    let big: Vec<Job> = (0..50).map(|i| grouped("big", format!("big-{i:02}"))).collect();
    b.enqueue_batch(big).await.expect("enqueue");
    for i in 0..3 {
        b.enqueue(grouped("small", format!("small-{i}"))).await.expect("enqueue");
    }
    for i in 0..2 {
        b.enqueue(job("alpha", 5, &format!("free-{i}"))).await.expect("enqueue");
    }
    let late = grouped("small", "small-late".to_owned());
    let late = Job { eta: Some(after(Duration::from_millis(400))), ..late };
    b.enqueue(late).await.expect("enqueue");
    let cancelled = grouped("small", "small-cancelled".to_owned());
    let cancelled_id = cancelled.id;
    b.enqueue(cancelled).await.expect("enqueue");
    if let Some(s) = figures(&b, "alpha").await {
        assert_eq!((s.ready, s.delayed), (56, 1), "grouped jobs are ready: {s:?}");
        let found = admin(&b).find_job(cancelled_id, &q).await.expect("find");
        assert_eq!(found.map(|f| f.state), Some(JobState::Ready));
        let gone = admin(&b).cancel("alpha", cancelled_id).await.expect("cancel");
        assert!(matches!(gone, Cancelled::Removed { .. }), "{gone:?}");
    } else {
        // No admin: the job is claimed like the others.
        let _ = cancelled_id;
    }
    let mut order = Vec::new();
    while order.len() < 10 {
        let got = b.claim(WORKER, &q, 4, LONG, Duration::ZERO).await.expect("claim");
        assert!(!got.is_empty(), "jobs are ready");
        order.extend(payloads(&got));
    }
    let first_ten = &order[..10];
    for wanted in ["small-0", "small-1", "small-2", "free-0", "free-1"] {
        assert!(first_ten.iter().any(|p| p == wanted), "{wanted} not among {first_ten:?}");
    }
    let smalls: Vec<&String> = order.iter().filter(|p| p.starts_with("small-")).collect();
    assert_eq!(smalls, ["small-0", "small-1", "small-2"], "in order: {order:?}");
    let bigs: Vec<&String> = order.iter().filter(|p| p.starts_with("big-")).collect();
    let mut sorted = bigs.clone();
    sorted.sort();
    assert_eq!(bigs, sorted, "a group's jobs keep their order");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut rest = Vec::new();
    loop {
        let got = b.claim(WORKER, &q, 7, LONG, Duration::ZERO).await.expect("claim");
        if got.is_empty() {
            break;
        }
        rest.extend(payloads(&got));
    }
    assert!(
        rest.iter().take(4).any(|p| p == "small-late"),
        "the due job joined its group: {rest:?}"
    );
    let mut all: Vec<String> = order.into_iter().chain(rest).collect();
    all.sort();
    all.dedup();
    let expected = if figures(&b, "alpha").await.is_some() { 56 } else { 57 };
    assert_eq!(all.len(), expected, "every job claimed once");
}

/// A claim says which jobs it held back at their gates, with the limit that holds
/// each, once per hold: a later claim that still cannot start them does not report
/// them again.
pub async fn a_claim_reports_the_jobs_it_holds_back_once(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    let one_at_a_time = Gate::new("export[t1]", None, 1, Some(1));
    let hourly = Gate::new("mail", rate("1/h"), 1, None);
    for i in 0..3 {
        b.enqueue(gated("alpha", &one_at_a_time, &format!("c{i}"))).await.expect("enqueue");
    }
    for i in 0..2 {
        b.enqueue(gated("alpha", &hourly, &format!("r{i}"))).await.expect("enqueue");
    }
    let (got, held) = b.claim_reporting(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
    let mut started = payloads(&got);
    started.sort();
    assert_eq!(started, ["c0", "r0"], "one of each gate");
    let mut reported: Vec<(String, &str, String)> = held
        .iter()
        .map(|h| (h.gate.clone(), h.limit.as_str(), String::from_utf8_lossy(&h.payload).into()))
        .collect();
    reported.sort();
    assert_eq!(
        reported,
        [
            ("export[t1]".to_owned(), "concurrency", "c1".to_owned()),
            ("export[t1]".to_owned(), "concurrency", "c2".to_owned()),
            ("mail".to_owned(), "rate", "r1".to_owned()),
        ],
        "{held:?}"
    );
    assert!(held.iter().all(|h| h.queue == "alpha"), "{held:?}");
    let (again, held) =
        b.claim_reporting(WORKER, &q, 10, LONG, Duration::ZERO).await.expect("claim");
    assert!(again.is_empty() && held.is_empty(), "held once: {again:?} {held:?}");
}

/// Claims of one job at a time (a busy worker's) take turns between a queue's grouped
/// and ungrouped jobs: neither side waits for the other to run out.
pub async fn claims_of_one_job_take_grouped_and_ungrouped_jobs_by_turns(b: Arc<dyn Broker>) {
    let q = queues(&["alpha"]);
    let grouped: Vec<Job> =
        (0..40).map(|i| job("alpha", 5, &format!("grouped-{i}")).in_group("g")).collect();
    b.enqueue_batch(grouped).await.expect("enqueue");
    let free: Vec<Job> = (0..40).map(|i| job("alpha", 5, &format!("free-{i}"))).collect();
    b.enqueue_batch(free).await.expect("enqueue");
    let mut order = Vec::new();
    for _ in 0..40 {
        let got = b.claim(WORKER, &q, 1, LONG, Duration::ZERO).await.expect("claim");
        assert_eq!(got.len(), 1, "jobs are ready");
        order.extend(payloads(&got));
    }
    let grouped = order.iter().filter(|p| p.starts_with("grouped-")).count();
    assert!((8..=32).contains(&grouped), "{grouped} of 40 claims took a grouped job: {order:?}");
}
