//! The periodic scheduler every worker runs (unless told not to): it enqueues each
//! fire time of each periodic schedule once, however many workers run it, by
//! claiming the fire time in the broker before enqueueing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::broker::ScheduleStore;
use crate::core::Core;
use crate::error::{Error, Result};
use crate::schedule::{MissedFires, Periodic, Schedule};

use super::Shared;
use super::vitals::{Loop, Op};

/// The header a fired job carries: the name of the schedule that fired it.
pub const SCHEDULE_HEADER: &str = "dmq-schedule";

/// The header a fired job carries: the fire time it stands for (RFC 3339, UTC).
pub const FIRE_TIME_HEADER: &str = "dmq-fire-time";

/// The longest the scheduler sleeps before it looks again (for schedules added since,
/// and for the fires other workers claimed).
const MAX_NAP: Duration = Duration::from_secs(1);

/// How late a fire time may be and still fire: one further in the past counts as
/// missed (no worker ran the scheduler then), and the schedule's policy decides.
pub(crate) const MISSED_AFTER: Duration = Duration::from_secs(30);

/// How many fire times the scheduler steps over, at most, to find the latest missed
/// one within a window it has narrowed down.
const MAX_STEPS: usize = 100_000;

/// The broker's schedule store, which every step of the scheduler needs.
fn store(core: &Core) -> Result<&dyn ScheduleStore> {
    core.broker().schedule_store().ok_or_else(|| {
        Error::Unsupported(
            "this broker has no schedule store (ScheduleStore), so periodic schedules \
             cannot run on it; run them on a broker that has one, or start the worker \
             with .scheduler(false)"
                .to_owned(),
        )
    })
}

/// Where this worker's scheduler stands with one schedule.
#[derive(Clone, Copy)]
enum Due {
    /// Not registered by this worker yet.
    Unknown,
    /// Its next fire time.
    At(DateTime<Utc>),
    /// It has no more fire times.
    Never,
}

/// Runs the scheduler until `stop` is cancelled.
pub(crate) async fn run(shared: Arc<Shared>) {
    let (core, stop, vitals) = (&shared.core, &shared.stop, &shared.vitals);
    vitals.starts(Loop::Scheduler);
    if core.broker().schedule_store().is_none() {
        if !core.periodics().is_empty() {
            tracing::error!(
                "the broker has no schedule store (ScheduleStore), so this worker runs no \
                 periodic schedule; run them on a broker that has one, or start the worker \
                 with .scheduler(false)"
            );
        }
        // Idle, but alive: nothing here is failing.
        loop {
            vitals.beat(Loop::Scheduler);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(MAX_NAP) => {}
            }
        }
    }
    let mut due: HashMap<String, Due> = HashMap::new();
    loop {
        vitals.beat(Loop::Scheduler);
        let mut soonest = Utc::now() + chrono::Duration::from_std(MAX_NAP).unwrap_or_default();
        for periodic in core.periodics() {
            let known = due.get(&periodic.name).copied().unwrap_or(Due::Unknown);
            match step(core, &periodic, known, stop).await {
                Ok(next) => {
                    if let Due::At(at) = next {
                        soonest = soonest.min(at);
                    }
                    due.insert(periodic.name.clone(), next);
                }
                Err(e) => {
                    vitals.broker_error(Op::Schedule);
                    tracing::warn!(schedule = %periodic.name, error = %e, "the scheduler could not reach the broker; will try again");
                }
            }
            if stop.is_cancelled() {
                return;
            }
        }
        let nap = (soonest - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(MAX_NAP);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(nap) => {}
        }
    }
}

/// Fires `periodic` if its fire time has come, and returns where it stands next. A
/// schedule this worker has not seen yet is registered first.
async fn step(
    core: &Core,
    periodic: &Periodic,
    known: Due,
    stop: &CancellationToken,
) -> Result<Due> {
    let now = Utc::now();
    let due = match known {
        Due::Never => return Ok(Due::Never),
        Due::At(due) => due,
        Due::Unknown => match first_due(core, periodic, now).await? {
            Some(due) => due,
            None => return Ok(Due::Never),
        },
    };
    if due > now {
        return Ok(Due::At(due));
    }
    let late = (now - due).to_std().unwrap_or(Duration::ZERO);
    let following = if late > MISSED_AFTER {
        missed(core, periodic, due, now, stop).await?
    } else {
        let following = periodic.schedule.next_after(due);
        fire(core, periodic, due, following, stop).await?;
        following
    };
    Ok(following.map_or(Due::Never, Due::At))
}

/// Where a schedule this worker has not seen yet stands: registers it with the
/// broker, applies its first delay, and deals with the fires missed since the last
/// one any worker claimed.
async fn first_due(
    core: &Core,
    periodic: &Periodic,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let schedule = &periodic.schedule;
    let state = store(core)?.schedule_begin(&periodic.name, None).await?;
    // With a first delay, nothing fires before it has passed since the schedule was
    // first registered (by any worker).
    let not_before = schedule.first_delay().map(|d| {
        let delay = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        state.since.checked_add_signed(delay).unwrap_or(DateTime::<Utc>::MAX_UTC)
            - chrono::Duration::milliseconds(1)
    });
    // Fired before: carry on from the last fire, which may have been missed. Never
    // fired, but a fire time recorded that has passed: a worker registered it and
    // went down before it came, so it was missed too.
    let recorded = state.next_fire.filter(|next| *next <= now);
    let after = match (state.last_fire, recorded) {
        (Some(last), _) => last,
        (None, Some(next)) => next - chrono::Duration::milliseconds(1),
        (None, None) => now,
    };
    let after = not_before.map_or(after, |t| after.max(t));
    let due = schedule.next_after(after);
    if let Some(due) = due {
        store(core)?.schedule_begin(&periodic.name, Some(due)).await?;
    }
    Ok(due)
}

/// Deals with the fire times from `due` to `now`, all past: skips them, or fires
/// once for them all, as the schedule says. Returns the next fire time after now.
async fn missed(
    core: &Core,
    periodic: &Periodic,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
    stop: &CancellationToken,
) -> Result<Option<DateTime<Utc>>> {
    let schedule = &periodic.schedule;
    // Every scheduler that gets here finds the same latest fire time, so only one of
    // them can claim it.
    let latest = latest_fire(schedule, due, now);
    let following = schedule.next_after(latest);
    match schedule.missed() {
        MissedFires::FireOnce => {
            tracing::info!(schedule = %periodic.name, from = %due, to = %latest, "fire times were missed; firing once for them");
            fire(core, periodic, latest, following, stop).await?;
        }
        MissedFires::Skip => {
            tracing::info!(schedule = %periodic.name, from = %due, to = %latest, "fire times were missed; skipping them");
            if let Some(next) = following {
                store(core)?.schedule_begin(&periodic.name, Some(next)).await?;
            }
        }
    }
    Ok(following)
}

/// The latest fire time of `schedule` at or before `now`, given `due`, one such fire
/// time. It looks back from `now` over a window that doubles until it holds a fire
/// time, then steps forward through that window only: quick however long ago `due`
/// was, and whatever the schedule.
fn latest_fire(schedule: &Schedule, due: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    let mut window = chrono::Duration::seconds(1);
    loop {
        let from = (now - window).max(due - chrono::Duration::milliseconds(1));
        if let Some(mut latest) = schedule.next_after(from).filter(|t| *t <= now) {
            for _ in 0..MAX_STEPS {
                match schedule.next_after(latest) {
                    Some(next) if next <= now => latest = next,
                    _ => break,
                }
            }
            return latest;
        }
        if from < due {
            return due;
        }
        window = window * 2;
    }
}

/// Claims fire time `at` and, when this worker won it, enqueues the job.
async fn fire(
    core: &Core,
    periodic: &Periodic,
    at: DateTime<Utc>,
    following: Option<DateTime<Utc>>,
    stop: &CancellationToken,
) -> Result<()> {
    if !store(core)?.schedule_fire(&periodic.name, at, following).await? {
        return Ok(());
    }
    let mut envelope = periodic.template.clone();
    envelope.id = crate::TaskId::new();
    envelope.created_at = Utc::now();
    envelope.headers.insert(SCHEDULE_HEADER.to_owned(), periodic.name.clone());
    envelope.headers.insert(FIRE_TIME_HEADER.to_owned(), at.to_rfc3339());
    // The fire time is ours now: an enqueue that fails for a moment is tried again,
    // or the tick would be lost.
    let mut pause = Duration::from_millis(50);
    for attempt in 1.. {
        match core.enqueue_envelope(envelope.clone()).await {
            Ok(id) => {
                tracing::debug!(schedule = %periodic.name, fire = %at, %id, "fired");
                return Ok(());
            }
            // An earlier attempt that seemed to fail did reach the broker.
            Err(crate::Error::DuplicateJob { .. }) => return Ok(()),
            Err(e) if e.is_transient() && attempt < 10 => {
                tracing::warn!(schedule = %periodic.name, error = %e, "enqueueing a fired job failed; trying again");
                tokio::select! {
                    () = stop.cancelled() => {
                        tracing::error!(schedule = %periodic.name, fire = %at, "stopped before the job of this fire time could be enqueued; it is lost");
                        return Err(e);
                    }
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                tracing::error!(schedule = %periodic.name, fire = %at, error = %e, "could not enqueue the job of this fire time; it is lost");
                return Err(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn the_latest_fire_is_found_however_long_ago_the_first_missed_one_was() {
        let now = at(1_800_000_000_123);
        let every_ms = Schedule::every(Duration::from_millis(1)).unwrap();
        // 350 s of 1 ms ticks, without stepping through them all.
        assert_eq!(latest_fire(&every_ms, now - chrono::Duration::seconds(350), now), now);
        let hourly = Schedule::every(Duration::from_secs(3600)).unwrap();
        let hour = 3_600_000;
        let floor = at(now.timestamp_millis() / hour * hour);
        assert_eq!(latest_fire(&hourly, floor - chrono::Duration::hours(5), now), floor);
        // A week of every-second cron ticks.
        let secondly = Schedule::cron("* * * * * *").unwrap();
        let week_ago = at(1_800_000_000_000 - 7 * 86_400_000);
        assert_eq!(latest_fire(&secondly, week_ago, now), at(1_800_000_000_000));
        // A fire time long ago with none since: that one.
        let yearly = Schedule::cron("0 0 1 1 *").unwrap();
        let new_year = yearly.next_after(now - chrono::Duration::days(366)).unwrap();
        assert!(new_year <= now);
        assert_eq!(latest_fire(&yearly, new_year, now), new_year);
        // Due exactly now.
        assert_eq!(latest_fire(&hourly, floor, floor), floor);
    }
}
