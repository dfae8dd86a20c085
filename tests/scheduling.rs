//! Periodic schedules end to end, every scenario on both brokers: ticks fired once by
//! several schedulers, the first delay, missed fires skipped or fired once, and a
//! worker whose scheduler is off.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Backing, WAIT};
use dmq_core::{
    FIRE_TIME_HEADER, MissedFires, SCHEDULE_HEADER, Schedule, TaskContext, TaskError, task,
};

/// The fire times each schedule's jobs ran for, by schedule name (each scenario names
/// its schedules uniquely).
static FIRED: Mutex<Option<HashMap<String, Vec<DateTime<Utc>>>>> = Mutex::new(None);

/// Records the fire time its schedule enqueued it for.
#[task(queue = "scheduled")]
async fn stamp(ctx: TaskContext) -> Result<(), TaskError> {
    let schedule = ctx.headers().get(SCHEDULE_HEADER).cloned().unwrap_or_default();
    let fire = ctx
        .headers()
        .get(FIRE_TIME_HEADER)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or_else(|| TaskError::fatal("a fired job carries its fire time"))?;
    let mut fired = FIRED.lock().unwrap_or_else(|p| p.into_inner());
    fired.get_or_insert_with(HashMap::new).entry(schedule).or_default().push(fire.to_utc());
    Ok(())
}

/// The fire times schedule `name` ran for so far, sorted.
fn fired(name: &str) -> Vec<DateTime<Utc>> {
    let fired = FIRED.lock().unwrap_or_else(|p| p.into_inner());
    let mut times = fired.as_ref().and_then(|f| f.get(name).cloned()).unwrap_or_default();
    times.sort();
    times
}

/// A schedule name no other run uses.
fn fresh_name(scenario: &str) -> String {
    format!("{scenario}-{}", uuid::Uuid::new_v4())
}

/// Waits until schedule `name` has run for at least `n` fire times.
async fn until_fired(name: &str, n: usize) -> Vec<DateTime<Utc>> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let times = fired(name);
        if times.len() >= n {
            return times;
        }
        assert!(std::time::Instant::now() < deadline, "{name} fired {} times of {n}", times.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The latest whole hour at or before `t`.
fn hour_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    let hour = 3_600_000;
    DateTime::from_timestamp_millis(t.timestamp_millis().div_euclid(hour) * hour).expect("a time")
}

async fn three_schedulers_fire_each_tick_once(backing: Backing) {
    let manager = backing.manager().await;
    let name = fresh_name("three");
    let every = Schedule::every(Duration::from_millis(200)).expect("a schedule").named(&name);
    manager.periodic(stamp::call(), every).expect("register");
    let workers: Vec<_> = (0..3).map(|_| manager.worker().queues(["scheduled"]).start()).collect();
    until_fired(&name, 15).await;
    for worker in workers {
        worker.shutdown().await;
    }
    let times = fired(&name);
    let step = chrono::Duration::milliseconds(200);
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], step, "a tick ran twice or was skipped: {pair:?}");
    }
    assert!(times.iter().all(|t| t.timestamp_millis() % 200 == 0), "ticks are aligned: {times:?}");
}

async fn the_first_fire_waits_for_the_first_delay(backing: Backing) {
    let manager = backing.manager().await;
    let name = fresh_name("delayed");
    let schedule = Schedule::every(Duration::from_millis(100))
        .expect("a schedule")
        .starting_after(Duration::from_secs(1))
        .named(&name);
    manager.periodic(stamp::call(), schedule).expect("register");
    let worker = manager.worker().queues(["scheduled"]).start();
    let times = until_fired(&name, 3).await;
    worker.shutdown().await;
    let states =
        manager.broker().schedule_store().expect("schedules").schedules().await.expect("schedules");
    let state = states.iter().find(|s| s.name == name).expect("the schedule is registered");
    let not_before = state.since + chrono::Duration::seconds(1);
    assert!(times[0] >= not_before, "fired at {} before {not_before}", times[0]);
    assert!(
        times[0] < not_before + chrono::Duration::milliseconds(500),
        "the first fire {} came long after {not_before}",
        times[0]
    );
    assert_eq!(state.last_fire, times.last().copied());
}

/// An hourly schedule that missed the fire time at the top of this hour, as after
/// downtime, with `policy`: returns what fired once a worker's scheduler dealt with
/// it, and the schedule's recorded next fire. With `seed_last_fire` its last
/// fire was an hour before; without, it never fired.
async fn after_downtime(
    backing: &Backing,
    policy: MissedFires,
    seed_last_fire: bool,
) -> (Vec<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let manager = backing.manager().await;
    let name = fresh_name("downtime");
    let hourly = Schedule::every(Duration::from_secs(3600))
        .expect("a schedule")
        .missed_fires(policy)
        .named(&name);
    manager.periodic(stamp::call(), hourly).expect("register");
    // One fire time missed: the one at the top of this hour, at least 40 s ago (a
    // fire time under 30 s late still fires), and the last fire an hour before. The
    // scenario must not cross into the next hour either: in the last 30 s of an hour,
    // it waits for the next one.
    let now = Utc::now();
    let since_the_hour = now - hour_floor(now);
    let start_at = if since_the_hour > chrono::Duration::seconds(3570) {
        chrono::Duration::seconds(3600 + 40)
    } else {
        chrono::Duration::seconds(40)
    };
    if since_the_hour < start_at {
        let wait = start_at - since_the_hour;
        tokio::time::sleep(wait.to_std().expect("positive")).await;
    }
    let last_seeded = hour_floor(Utc::now()) - chrono::Duration::hours(1);
    if seed_last_fire {
        let seeded = manager
            .broker()
            .schedule_store()
            .expect("schedules")
            .schedule_fire(&name, last_seeded, None)
            .await;
        assert!(seeded.expect("seed"));
    } else {
        // Never fired, but registered with the missed fire time as its next.
        let next = Some(hour_floor(Utc::now()));
        manager
            .broker()
            .schedule_store()
            .expect("schedules")
            .schedule_begin(&name, next)
            .await
            .expect("seed");
    }
    let worker = manager.worker().queues(["scheduled"]).start();
    // The scheduler has dealt with the missed fire time once it records the next one,
    // at the top of the next hour: skipped it, or claimed it (and its job ran).
    let next_hour = hour_floor(Utc::now()) + chrono::Duration::hours(1);
    let deadline = std::time::Instant::now() + WAIT;
    let (next, last) = loop {
        let states = manager
            .broker()
            .schedule_store()
            .expect("schedules")
            .schedules()
            .await
            .expect("schedules");
        let state = states.iter().find(|s| s.name == name);
        let (next, last) = (state.and_then(|s| s.next_fire), state.and_then(|s| s.last_fire));
        let ran = policy == MissedFires::Skip || !fired(&name).is_empty();
        if next == Some(next_hour) && ran {
            break (next, last);
        }
        assert!(std::time::Instant::now() < deadline, "the scheduler never got to {name}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    worker.shutdown().await;
    // The last fire claimed: under Skip still the seeded one (a claim, which any fire
    // makes, would have moved it in the same step as the next fire).
    let expected_last = if seed_last_fire { Some(last_seeded) } else { None };
    if policy == MissedFires::Skip {
        assert_eq!(last, expected_last, "a skipped fire time was claimed");
    } else {
        assert_eq!(last, Some(hour_floor(Utc::now())), "the missed fire time was claimed");
    }
    (fired(&name), next)
}

async fn missed_fires_are_skipped_by_default(backing: Backing) {
    let (times, next) = after_downtime(&backing, MissedFires::Skip, true).await;
    assert!(times.is_empty(), "missed fires ran: {times:?}");
    assert_eq!(next, Some(hour_floor(Utc::now()) + chrono::Duration::hours(1)));
}

async fn missed_fires_fire_once_when_asked(backing: Backing) {
    let (times, next) = after_downtime(&backing, MissedFires::FireOnce, true).await;
    // Once, for the latest of the missed fire times.
    assert_eq!(times, [hour_floor(Utc::now())]);
    assert_eq!(next, Some(hour_floor(Utc::now()) + chrono::Duration::hours(1)));
}

async fn a_missed_first_fire_is_fired_once_when_asked(backing: Backing) {
    let (times, _) = after_downtime(&backing, MissedFires::FireOnce, false).await;
    assert_eq!(times, [hour_floor(Utc::now())]);
    let (times, _) = after_downtime(&backing, MissedFires::Skip, false).await;
    assert!(times.is_empty(), "{times:?}");
}

async fn a_worker_with_its_scheduler_off_fires_nothing(backing: Backing) {
    let manager = backing.manager().await;
    let name = fresh_name("off");
    let every = Schedule::every(Duration::from_millis(100)).expect("a schedule").named(&name);
    manager.periodic(stamp::call(), every.clone()).expect("register");
    let err = manager.periodic(stamp::call(), every).expect_err("a second schedule of one name");
    assert!(err.to_string().contains("registered already"), "{err}");
    let quiet = manager.worker().queues(["scheduled"]).scheduler(false).start();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(fired(&name).is_empty(), "a worker with its scheduler off fired");
    let firing = manager.worker().queues(["scheduled"]).start();
    until_fired(&name, 2).await;
    firing.shutdown().await;
    quiet.shutdown().await;
}

/// Declared periodic by its attribute: every manager of this test binary fires it,
/// into a queue of its own that only the scenario below works.
#[task(name = "scheduling.every_half_second", queue = "attribute-periodic", every = "500ms")]
async fn every_half_second(ctx: TaskContext) -> Result<(), TaskError> {
    stamp(ctx).await
}

async fn a_task_declared_periodic_by_its_attribute_fires(backing: Backing) {
    let manager = backing.manager().await;
    let worker = manager.worker().queues(["attribute-periodic"]).start();
    // Its schedule is named after the task. Other scenarios' managers (in this same
    // process) fire it too, into their own brokers, so what proves this one fired is
    // the fire time its own broker recorded, not the shared record of runs.
    let store = manager.broker().schedule_store().expect("schedules");
    let deadline = std::time::Instant::now() + WAIT;
    let last = loop {
        let states = store.schedules().await.expect("schedules");
        // Registered under the task's name, once this manager's scheduler runs.
        let state = states.iter().find(|s| s.name == "scheduling.every_half_second");
        if let Some(last) = state.and_then(|s| s.last_fire) {
            break last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "this broker's schedule never fired: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let times = until_fired("scheduling.every_half_second", 1).await;
    worker.shutdown().await;
    assert_eq!(last.timestamp_millis() % 500, 0, "fires on multiples of 500 ms: {last}");
    assert!(times.iter().all(|t| t.timestamp_millis() % 500 == 0), "{times:?}");
}

/// When each `once_at` job ran, by key.
static RAN_AT: Mutex<Option<HashMap<String, Vec<DateTime<Utc>>>>> = Mutex::new(None);

#[task(queue = "one-shot")]
async fn once_at(key: String) -> Result<(), TaskError> {
    let mut ran = RAN_AT.lock().unwrap_or_else(|p| p.into_inner());
    ran.get_or_insert_with(HashMap::new).entry(key).or_default().push(Utc::now());
    Ok(())
}

async fn a_one_shot_cron_job_runs_once_at_the_next_match(backing: Backing) {
    let manager = backing.manager().await;
    let worker = manager.worker().queues(["one-shot"]).start();
    let key = fresh_name("one-shot");
    // Six fields, seconds first: at every second that is a multiple of 2.
    let call = once_at::call(key.clone()).cron("*/2 * * * * *").expect("a valid cron");
    let enqueued = Utc::now();
    call.enqueue(&manager).await.expect("enqueue");
    let due = Schedule::cron("*/2 * * * * *").expect("a schedule").next_after(enqueued);
    let due = due.expect("a next match");
    let deadline = std::time::Instant::now() + WAIT;
    let ran = loop {
        let times = {
            let ran = RAN_AT.lock().unwrap_or_else(|p| p.into_inner());
            ran.as_ref().and_then(|r| r.get(&key).cloned())
        };
        if let Some(times) = times {
            break times;
        }
        assert!(std::time::Instant::now() < deadline, "the one-shot job never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Let a second match pass: it must not run again.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    worker.shutdown().await;
    let all = RAN_AT.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|r| r[&key].len());
    assert_eq!(all, Some(1), "a one-shot job ran more than once");
    // Never early (the due time is whole seconds; allow for a rounding of the eta).
    assert!(ran[0] >= due - chrono::Duration::milliseconds(1), "ran at {} before {due}", ran[0]);
    assert!(ran[0] < due + chrono::Duration::seconds(2), "ran at {}, long after {due}", ran[0]);
}

common::on_both_brokers! {
    a_one_shot_cron_job_runs_once_at_the_next_match;
    a_task_declared_periodic_by_its_attribute_fires;
    three_schedulers_fire_each_tick_once;
    the_first_fire_waits_for_the_first_delay;
    missed_fires_are_skipped_by_default;
    missed_fires_fire_once_when_asked;
    a_missed_first_fire_is_fired_once_when_asked;
    a_worker_with_its_scheduler_off_fires_nothing;
}
