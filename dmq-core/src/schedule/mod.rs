//! Schedules: when a periodic task fires, and the one-shot `.cron()` of a call.
//!
//! [`Schedule::next_after`] is pure: the next fire time after an instant, computed
//! without a clock, so every worker computes the same fire times and tests need not
//! wait for real time.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::error::{Error, Result};

/// What a scheduler does about fire times that passed while no worker ran it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissedFires {
    /// Forget them: the next fire is the next one after now.
    #[default]
    Skip,
    /// Fire once for all of them, at once, then carry on.
    FireOnce,
}

/// When a periodic task fires: a cron expression or a fixed interval, in a time zone
/// (UTC by default), optionally not before some time after it was first registered.
#[derive(Clone)]
pub struct Schedule {
    kind: Kind,
    tz: Tz,
    starting_after: Option<Duration>,
    missed: MissedFires,
    name: Option<String>,
}

#[derive(Clone)]
enum Kind {
    Cron { expr: String, parsed: Box<cron::Schedule> },
    Every(Duration),
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedule")
            .field("schedule", &self.describe())
            .field("time_zone", &self.tz.name())
            .field("starting_after", &self.starting_after)
            .field("missed_fires", &self.missed)
            .field("name", &self.name)
            .finish()
    }
}

impl Schedule {
    /// A cron schedule: the classic five fields (minute first, as in crontab), or the
    /// `cron` crate's six and seven fields (seconds first, then an optional year).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] saying which field is wrong.
    pub fn cron(expr: &str) -> Result<Self> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let full = match fields.len() {
            5 => format!("0 {}", fields.join(" ")),
            6 | 7 => fields.join(" "),
            n => {
                return Err(Error::InvalidArgument(format!(
                    "cron expression {expr:?} has {n} fields; use five (minute hour day-of-month \
                     month day-of-week) or six or seven (second first, year last)"
                )));
            }
        };
        let parsed = cron::Schedule::from_str(&full).map_err(|e| {
            Error::InvalidArgument(format!("cron expression {expr:?} does not parse: {e}"))
        })?;
        Ok(Schedule::new(Kind::Cron { expr: expr.trim().to_owned(), parsed: Box::new(parsed) }))
    }

    /// Every `interval`, at the multiples of it since the Unix epoch (so every
    /// worker agrees on the fire times): `every(5 min)` fires at :00, :05, :10, ...
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an interval under a millisecond.
    pub fn every(interval: Duration) -> Result<Self> {
        if interval < Duration::from_millis(1) {
            return Err(Error::InvalidArgument(format!(
                "a schedule's interval must be at least 1 ms, not {interval:?}"
            )));
        }
        Ok(Schedule::new(Kind::Every(interval)))
    }

    fn new(kind: Kind) -> Self {
        Schedule { kind, tz: Tz::UTC, starting_after: None, missed: MissedFires::Skip, name: None }
    }

    /// Fires no earlier than `delay` after the schedule was first registered with the
    /// broker (by any worker).
    #[must_use]
    pub fn starting_after(mut self, delay: Duration) -> Self {
        self.starting_after = Some(delay);
        self
    }

    /// Reads the cron expression in time zone `tz` (UTC by default).
    #[must_use]
    pub fn in_time_zone(mut self, tz: Tz) -> Self {
        self.tz = tz;
        self
    }

    /// What to do about fires missed while no worker ran (skip by default).
    #[must_use]
    pub fn missed_fires(mut self, policy: MissedFires) -> Self {
        self.missed = policy;
        self
    }

    /// Names the schedule; by default a periodic task's schedule is named after the
    /// task and the schedule.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The name given with [`named`](Schedule::named), if any.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The delay given with [`starting_after`](Schedule::starting_after), if any.
    #[must_use]
    pub fn first_delay(&self) -> Option<Duration> {
        self.starting_after
    }

    /// The policy for missed fires.
    #[must_use]
    pub fn missed(&self) -> MissedFires {
        self.missed
    }

    /// The schedule's time zone.
    #[must_use]
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The schedule as written: `cron "0 */4 * * *"` or `every 5m`.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Cron { expr, .. } => format!("cron {expr:?}"),
            Kind::Every(d) => format!("every {d:?}"),
        }
    }

    /// The first fire time strictly after `t`, or `None` when there is none (a cron
    /// expression whose years are all past). Pure.
    #[must_use]
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Cron { parsed, .. } => {
                parsed.after(&t.with_timezone(&self.tz)).next().map(|d| d.with_timezone(&Utc))
            }
            Kind::Every(interval) => {
                let step = i64::try_from(interval.as_millis()).ok()?;
                let now = t.timestamp_millis();
                let next = (now.div_euclid(step) + 1).checked_mul(step)?;
                DateTime::from_timestamp_millis(next)
            }
        }
    }
}
