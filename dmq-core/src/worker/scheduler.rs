//! The periodic scheduler every worker runs (unless told not to): it enqueues each
//! fire time of each periodic schedule once, however many workers run it, by
//! claiming the fire time in the broker before enqueueing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::envelope::Envelope;
use crate::error::Result;
use crate::manager::Manager;
use crate::schedule::{MissedFires, Schedule};

/// The header a fired job carries: the name of the schedule that fired it.
pub const SCHEDULE_HEADER: &str = "dmq-schedule";

/// The header a fired job carries: the fire time it stands for (RFC 3339, UTC).
pub const FIRE_TIME_HEADER: &str = "dmq-fire-time";

/// The longest the scheduler sleeps before it looks again (for schedules added since,
/// and for the fires other workers claimed).
const MAX_NAP: Duration = Duration::from_secs(1);

/// How many fire times the scheduler steps over to find the latest missed one.
const MAX_STEPS: usize = 100_000;

/// One periodic schedule and the job it enqueues at each fire time.
#[derive(Debug)]
pub(crate) struct Periodic {
    pub(crate) name: String,
    pub(crate) schedule: Schedule,
    /// The job to enqueue, but for its id and times, set at each fire.
    pub(crate) template: Envelope,
}

/// Runs the scheduler until `stop` is cancelled.
pub(crate) async fn run(manager: Manager, stop: CancellationToken) {
    let mut next: HashMap<String, DateTime<Utc>> = HashMap::new();
    loop {
        let mut soonest = Utc::now() + chrono::Duration::from_std(MAX_NAP).unwrap_or_default();
        for periodic in manager.periodics() {
            match step(&manager, &periodic, next.get(&periodic.name).copied()).await {
                Ok(Some(at)) => {
                    soonest = soonest.min(at);
                    next.insert(periodic.name.clone(), at);
                }
                Ok(None) => {
                    next.remove(&periodic.name);
                }
                Err(e) => {
                    tracing::warn!(schedule = %periodic.name, error = %e, "the scheduler could not reach the broker; will try again");
                }
            }
        }
        let nap = (soonest - Utc::now()).to_std().unwrap_or(Duration::ZERO).min(MAX_NAP);
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(nap) => {}
        }
    }
}

/// Fires `periodic` if its fire time `due` has come, and returns the fire time to
/// wait for next (`None` when the schedule has no more). A schedule this worker has
/// not seen yet (`due` is `None`) is registered first.
async fn step(
    manager: &Manager,
    periodic: &Periodic,
    due: Option<DateTime<Utc>>,
) -> Result<Option<DateTime<Utc>>> {
    let now = Utc::now();
    let due = match due {
        Some(due) => due,
        None => match first_due(manager, periodic, now).await? {
            Some(due) => due,
            None => return Ok(None),
        },
    };
    if due > now {
        return Ok(Some(due));
    }
    let schedule = &periodic.schedule;
    let following = schedule.next_after(due);
    // More than one tick behind: the ticks in between were missed (no worker ran, or
    // this one stalled).
    if following.is_some_and(|f| f <= now) {
        return missed(manager, periodic, due, now).await;
    }
    fire(manager, periodic, due, following).await?;
    Ok(following)
}

/// Where a schedule this worker has not seen yet stands: registers it with the
/// broker, applies its first delay, and deals with the fires missed since the last
/// one any worker claimed.
async fn first_due(
    manager: &Manager,
    periodic: &Periodic,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let schedule = &periodic.schedule;
    let state = manager.broker().schedule_begin(&periodic.name, None).await?;
    // With a first delay, nothing fires before it has passed since the schedule was
    // first registered (by any worker).
    let not_before = schedule.first_delay().map(|d| {
        let delay = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        state.since.checked_add_signed(delay).unwrap_or(DateTime::<Utc>::MAX_UTC)
            - chrono::Duration::milliseconds(1)
    });
    // Fired before: carry on from the last fire, which may have been missed.
    let after = state.last_fire.unwrap_or(now);
    let after = not_before.map_or(after, |t| after.max(t));
    let due = schedule.next_after(after);
    if let Some(due) = due {
        manager.broker().schedule_begin(&periodic.name, Some(due)).await?;
    }
    Ok(due)
}

/// Deals with the fire times from `due` to `now`, all past: skips them, or fires
/// once for them all, as the schedule says. Returns the next fire time after now.
async fn missed(
    manager: &Manager,
    periodic: &Periodic,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>> {
    let schedule = &periodic.schedule;
    // The latest fire time at or before now: every scheduler that gets here finds the
    // same one, so only one of them can claim it.
    let mut latest = due;
    for _ in 0..MAX_STEPS {
        match schedule.next_after(latest) {
            Some(next) if next <= now => latest = next,
            _ => break,
        }
    }
    let following = schedule.next_after(latest);
    match schedule.missed() {
        MissedFires::FireOnce => {
            tracing::info!(schedule = %periodic.name, from = %due, to = %latest, "fire times were missed; firing once for them");
            fire(manager, periodic, latest, following).await?;
        }
        MissedFires::Skip => {
            tracing::info!(schedule = %periodic.name, from = %due, to = %latest, "fire times were missed; skipping them");
            if let Some(next) = following {
                manager.broker().schedule_begin(&periodic.name, Some(next)).await?;
            }
        }
    }
    Ok(following)
}

/// Claims fire time `at` and, when this worker won it, enqueues the job.
async fn fire(
    manager: &Manager,
    periodic: &Periodic,
    at: DateTime<Utc>,
    following: Option<DateTime<Utc>>,
) -> Result<()> {
    if !manager.broker().schedule_fire(&periodic.name, at, following).await? {
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
        match manager.enqueue_envelope(envelope.clone()).await {
            Ok(id) => {
                tracing::debug!(schedule = %periodic.name, fire = %at, %id, "fired");
                return Ok(());
            }
            Err(e) if e.is_transient() && attempt < 10 => {
                tracing::warn!(schedule = %periodic.name, error = %e, "enqueueing a fired job failed; trying again");
                tokio::time::sleep(pause).await;
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

/// The periodic schedules the manager knows, for a worker's scheduler.
pub(crate) type Periodics = Vec<Arc<Periodic>>;
