//! Schedules: when a periodic task fires, and the one-shot `.cron()` of a call.
//!
//! [`Schedule::next_after`] is pure: the next fire time after an instant, computed
//! without a clock, so every worker computes the same fire times and tests need not
//! wait for real time.
//!
//! A cron expression is read on the wall clock of the schedule's time zone
//! (`cron.rs` parses it and finds the next matching wall-clock time); this module maps
//! wall-clock times to instants across daylight-saving transitions. An interval
//! (`interval.rs`) is absolute time and ignores the zone.

mod cron;
mod interval;
mod periodic;

use std::fmt;
use std::time::Duration;

use chrono::offset::LocalResult;
use chrono::{DateTime, NaiveDateTime, Offset, TimeZone, Utc};

/// A time zone of the IANA database (`Tz::Europe__Paris`, `Tz::UTC`), from the
/// `chrono-tz` crate, for [`Schedule::in_time_zone`].
pub use chrono_tz::Tz;

pub(crate) use periodic::{Periodic, Periodics};

use self::cron::CronExpr;
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
///
/// [`next_after`](Schedule::next_after) is a pure function of the instant it is
/// given, so every worker computes the same fire times.
///
/// ```
/// use std::time::Duration;
///
/// use chrono::{DateTime, Utc};
/// use dmq_core::{Schedule, Tz};
///
/// // Monday to Friday at 09:00, Paris time.
/// let weekdays = Schedule::cron("0 9 * * Mon-Fri")?.in_time_zone(Tz::Europe__Paris);
/// let friday_noon: DateTime<Utc> = "2025-03-28T12:00:00Z".parse()?;
/// // Monday 31 March, 09:00 in Paris, is 07:00 UTC: summer time began on the 30th.
/// let monday = "2025-03-31T07:00:00Z".parse()?;
/// assert_eq!(weekdays.next_after(friday_noon), Some(monday));
///
/// // Every five minutes, at :00, :05, :10 ... in absolute time.
/// let every = Schedule::every(Duration::from_secs(5 * 60))?;
/// let next = every.next_after("2025-03-28T12:02:10Z".parse()?);
/// assert_eq!(next, Some("2025-03-28T12:05:00Z".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    Cron { expr: String, parsed: CronExpr },
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
    /// A cron schedule, read in the schedule's time zone (UTC unless
    /// [`in_time_zone`](Schedule::in_time_zone) says otherwise).
    ///
    /// Three forms parse:
    ///
    /// - **Five fields, as in crontab**: `minute hour day-of-month month day-of-week`.
    ///   Day-of-week 0 and 7 are Sunday, 1 to 6 Monday to Saturday (`0 9 * * 1` is
    ///   Mondays at 09:00; `1-5`, `0,6`, `*/2` and names such as `Mon-Fri` or `Sat-Sun`
    ///   work too). As in crontab, when both day fields are restricted (neither starts
    ///   with `*` or `?`) a day matches if *either* does: `0 0 13 * 5` fires on the
    ///   13th and on every Friday.
    /// - **Six or seven fields, as the [`cron`](https://docs.rs/cron/0.15) crate reads
    ///   them**: `second minute hour day-of-month month day-of-week [year]`. These
    ///   follow the crate exactly: day-of-week 1 is *Sunday* and 7 Saturday (so
    ///   `0 0 9 * * 1` is Sundays; prefer names), a day must match *both* day fields,
    ///   and years run 1970 to 2100.
    /// - **Shorthands**: `@hourly`, `@daily` (or `@midnight`), `@weekly` (Sunday
    ///   midnight), `@monthly`, `@yearly` (or `@annually`).
    ///
    /// Each field takes `*`, numbers, ranges (`1-5`), lists (`1,15`), steps (`*/15`,
    /// `0-30/5`, `10/5` for 10 to the maximum) and, in the month and day-of-week
    /// fields, English names or their three-letter abbreviations; `?` means any in the
    /// two day fields. `L`, `W` and `#` are not supported. A day-of-month that a month
    /// does not have is skipped that month: `0 0 31 * *` fires in the seven long
    /// months, `0 0 29 2 *` in leap years.
    ///
    /// The cron crate computes fire times up to the end of 2100; after that,
    /// [`next_after`](Schedule::next_after) returns `None`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the field that is wrong and why, checked one
    /// field at a time (`cron expression "61 * * * *": the minute field "61" is out of
    /// range 0-59`); for a wrong number of fields, the forms that parse; and for an
    /// expression that can never fire (`0 0 30 2 *`), that.
    pub fn cron(expr: &str) -> Result<Self> {
        let parsed = CronExpr::parse(expr)?;
        Ok(Schedule::new(Kind::Cron { expr: expr.trim().to_owned(), parsed }))
    }

    /// Every `interval`, at the multiples of it since the Unix epoch (so every
    /// worker agrees on the fire times): `every(5 min)` fires at :00, :05, :10, ...
    /// The interval is absolute time: time zones and daylight saving do not move it,
    /// and a day is midnight UTC.
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

    /// Reads the cron expression on the wall clock of `tz` (UTC by default).
    ///
    /// At daylight-saving transitions each wall-clock time fires at most once, and
    /// no day is skipped:
    ///
    /// - a time the clocks skip in spring (02:30 when they jump from 02:00 to 03:00)
    ///   fires once, at the instant of the jump (03:00 new time), together with any
    ///   other skipped time and 03:00 itself;
    /// - a time that happens twice in autumn (02:30 when the clocks go back from 03:00
    ///   to 02:00) fires once, the first time. The whole repeated hour is not fired
    ///   again, so an every-minute expression pauses for that hour; use
    ///   [`every`](Schedule::every) for intervals in absolute time.
    ///
    /// An [`every`](Schedule::every) schedule ignores the zone.
    #[must_use]
    pub fn in_time_zone(mut self, tz: Tz) -> Self {
        self.tz = tz;
        self
    }

    /// [`in_time_zone`](Schedule::in_time_zone) by IANA name: `"Europe/Paris"`,
    /// `"America/New_York"`, `"UTC"`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the zone when the time-zone database has no
    /// zone of that name (names are case-sensitive; the message suggests the right
    /// spelling when only the case is wrong).
    pub fn in_time_zone_named(self, name: &str) -> Result<Self> {
        let wanted = name.trim();
        match wanted.parse::<Tz>() {
            Ok(tz) => Ok(self.in_time_zone(tz)),
            Err(_) => {
                let same_but_case =
                    chrono_tz::TZ_VARIANTS.iter().find(|tz| tz.name().eq_ignore_ascii_case(wanted));
                Err(Error::InvalidArgument(match same_but_case {
                    Some(tz) => format!(
                        "unknown time zone {name:?}; did you mean {:?}? (names are case-sensitive)",
                        tz.name()
                    ),
                    None => format!(
                        "unknown time zone {name:?}; use a name from the IANA time-zone \
                         database, such as \"Europe/Paris\", \"America/New_York\" or \"UTC\""
                    ),
                }))
            }
        }
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

    /// The schedule as written: `cron "0 */4 * * *"` or `every 300s`.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Cron { expr, .. } => format!("cron {expr:?}"),
            Kind::Every(d) => format!("every {d:?}"),
        }
    }

    /// The first fire time strictly after `t` (a `t` exactly on a fire time gives the
    /// next one), or `None` when there is none: a cron expression whose years are all
    /// past, any cron expression after 2100, or an interval past the end of chrono's
    /// calendar. Pure: no clock, no I/O.
    ///
    /// Cron fire times are whole seconds; see
    /// [`in_time_zone`](Schedule::in_time_zone) for daylight-saving transitions.
    #[must_use]
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Cron { parsed, .. } => next_cron(parsed, self.tz, t),
            Kind::Every(interval) => interval::next_multiple(*interval, t),
        }
    }
}

/// 1969-01-01T00:00:00Z: the cron crate's years start in 1970, so every cron schedule's
/// first fire time after any earlier instant is its first one after this.
const CRON_FLOOR_SECONDS: i64 = -31_536_000;
/// 2101-01-02T00:00:00Z: after the last wall-clock second of 2100 in any zone, where
/// the cron crate stops.
const CRON_CEILING_SECONDS: i64 = 4_134_067_200;

/// The first fire time of `expr` on the wall clock of `tz` strictly after `t`.
///
/// Each matching wall-clock time fires at the instant the clock first shows it, or,
/// for a time a daylight-saving gap skips, at the instant of the jump. That mapping
/// never decreases as wall-clock time increases, and the wall clock has shown every
/// time up to its reading at `t` by `t`, so the answer is the first matching
/// wall-clock time after the reading at `t` whose instant is after `t`.
fn next_cron(expr: &CronExpr, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let floor = DateTime::from_timestamp(CRON_FLOOR_SECONDS, 0)?;
    let ceiling = DateTime::from_timestamp(CRON_CEILING_SECONDS, 0)?;
    if t >= ceiling {
        return None;
    }
    let t = t.max(floor);
    let mut wall = t.with_timezone(&tz).naive_local();
    loop {
        let candidate = expr.next_naive(wall)?;
        let at = match tz.from_local_datetime(&candidate) {
            LocalResult::Single(at) => at.to_utc(),
            // The clocks went back: fire the first time this wall-clock time comes.
            LocalResult::Ambiguous(first, _) => first.to_utc(),
            // The clocks jumped over it: fire at the jump.
            LocalResult::None => match gap_end(tz, candidate) {
                Some(at) => at,
                None => {
                    wall = candidate;
                    continue;
                }
            },
        };
        if at > t {
            return Some(at);
        }
        // The clock showed `candidate` before `t` and then went back: `t` is in a
        // repeated hour, all of which has fired. Carry on after its first pass.
        wall = first_pass_end(tz, at, t).map_or(candidate, |end| end.max(candidate));
    }
}

/// The total UTC offset of `tz` at the Unix time `seconds`.
fn offset_at(tz: Tz, seconds: i64) -> Option<chrono::FixedOffset> {
    let at = DateTime::from_timestamp(seconds, 0)?;
    Some(tz.offset_from_utc_datetime(&at.naive_utc()).fix())
}

/// The last wall-clock second before the clocks went back, somewhere in `(from, to]`
/// (`from` before the change, `to` after it). Zone offsets change on whole seconds.
fn first_pass_end(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<NaiveDateTime> {
    let before = offset_at(tz, from.timestamp())?;
    let (mut lo, mut hi) = (from.timestamp(), to.timestamp());
    if offset_at(tz, hi)? == before {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset_at(tz, mid)? == before {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(DateTime::from_timestamp(lo, 0)?.with_timezone(&tz).naive_local())
}

/// The instant the clocks of `tz` jump over `local`, a wall-clock time they skip.
fn gap_end(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    // Zone offsets stay within 16 hours of UTC, so the wall clock shows less than
    // `local` this long before `local` read as UTC, and more this long after.
    const SPAN: i64 = 26 * 60 * 60;
    let shows_later = |seconds: i64| {
        DateTime::from_timestamp(seconds, 0)
            .is_some_and(|at| at.with_timezone(&tz).naive_local() > local)
    };
    let as_utc = local.and_utc().timestamp();
    let (mut lo, mut hi) = (as_utc - SPAN, as_utc + SPAN);
    if shows_later(lo) || !shows_later(hi) {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if shows_later(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveDate};
    use proptest::prelude::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn cron_in(expr: &str, tz: Tz) -> Schedule {
        Schedule::cron(expr).unwrap().in_time_zone(tz)
    }

    /// The next `n` fire times after `from`, as UTC RFC 3339 strings.
    fn fires(schedule: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut t = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            let next = schedule.next_after(t).unwrap();
            assert!(next > t, "{schedule:?}: {next} is not after {t}");
            out.push(next.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            t = next;
        }
        out
    }

    #[test]
    fn the_bounds_are_the_dates_they_claim() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap().and_hms_opt(0, 0, 0);
        assert_eq!(
            DateTime::from_timestamp(CRON_FLOOR_SECONDS, 0).map(|t| t.naive_utc()),
            day(1969, 1, 1)
        );
        assert_eq!(
            DateTime::from_timestamp(CRON_CEILING_SECONDS, 0).map(|t| t.naive_utc()),
            day(2101, 1, 2)
        );
    }

    #[test]
    fn utc_is_the_default_zone() {
        let schedule = Schedule::cron("0 */4 * * *").unwrap();
        assert_eq!(schedule.time_zone(), Tz::UTC);
        assert_eq!(
            fires(&schedule, "2025-01-01T01:02:03Z", 3),
            ["2025-01-01T04:00:00Z", "2025-01-01T08:00:00Z", "2025-01-01T12:00:00Z"]
        );
    }

    #[test]
    fn next_after_is_strictly_after_t() {
        let schedule = cron_in("0 9 * * *", Tz::Europe__Paris);
        let fire = utc("2025-06-02T07:00:00Z");
        assert_eq!(schedule.next_after(fire), Some(utc("2025-06-03T07:00:00Z")));
        let just_before = fire - chrono::Duration::nanoseconds(1);
        assert_eq!(schedule.next_after(just_before), Some(fire));
        let just_after = fire + chrono::Duration::nanoseconds(1);
        assert_eq!(schedule.next_after(just_after), Some(utc("2025-06-03T07:00:00Z")));

        let every = Schedule::every(Duration::from_secs(60)).unwrap();
        assert_eq!(every.next_after(fire), Some(utc("2025-06-02T07:01:00Z")));
    }

    #[test]
    fn the_zone_moves_cron_fire_times() {
        // 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
        let schedule = cron_in("0 9 * * *", Tz::Europe__Paris);
        assert_eq!(fires(&schedule, "2025-01-15T12:00:00Z", 1), ["2025-01-16T08:00:00Z"]);
        assert_eq!(fires(&schedule, "2025-07-15T12:00:00Z", 1), ["2025-07-16T07:00:00Z"]);
        // Day-of-week is read on the zone's calendar: Monday 00:30 in Tokyo is Sunday
        // 15:30 UTC.
        let tokyo = cron_in("30 0 * * Mon", Tz::Asia__Tokyo);
        assert_eq!(fires(&tokyo, "2025-01-01T00:00:00Z", 1), ["2025-01-05T15:30:00Z"]);
    }

    #[test]
    fn spring_forward_in_paris_fires_a_skipped_time_at_the_jump() {
        // 2025-03-30: at 02:00 CET (01:00 UTC) the clocks jump to 03:00 CEST.
        let schedule = cron_in("30 2 * * *", Tz::Europe__Paris);
        assert_eq!(
            fires(&schedule, "2025-03-27T12:00:00Z", 5),
            [
                "2025-03-28T01:30:00Z", // 02:30 CET
                "2025-03-29T01:30:00Z",
                "2025-03-30T01:00:00Z", // 02:30 does not exist: at the jump, 03:00 CEST
                "2025-03-31T00:30:00Z", // 02:30 CEST
                "2025-04-01T00:30:00Z",
            ]
        );
    }

    #[test]
    fn fall_back_in_paris_fires_a_repeated_time_once() {
        // 2025-10-26: at 03:00 CEST (01:00 UTC) the clocks go back to 02:00 CET.
        let schedule = cron_in("30 2 * * *", Tz::Europe__Paris);
        assert_eq!(
            fires(&schedule, "2025-10-23T12:00:00Z", 5),
            [
                "2025-10-24T00:30:00Z", // 02:30 CEST
                "2025-10-25T00:30:00Z",
                "2025-10-26T00:30:00Z", // the first 02:30, CEST; not again at 01:30 UTC
                "2025-10-27T01:30:00Z", // 02:30 CET
                "2025-10-28T01:30:00Z",
            ]
        );
    }

    #[test]
    fn spring_forward_in_new_york_fires_a_skipped_time_at_the_jump() {
        // 2025-03-09: at 02:00 EST (07:00 UTC) the clocks jump to 03:00 EDT.
        let schedule = cron_in("30 2 * * *", Tz::America__New_York);
        assert_eq!(
            fires(&schedule, "2025-03-06T12:00:00Z", 5),
            [
                "2025-03-07T07:30:00Z", // 02:30 EST
                "2025-03-08T07:30:00Z",
                "2025-03-09T07:00:00Z", // 02:30 does not exist: 03:00 EDT
                "2025-03-10T06:30:00Z", // 02:30 EDT
                "2025-03-11T06:30:00Z",
            ]
        );
    }

    #[test]
    fn fall_back_in_new_york_fires_a_repeated_time_once() {
        // 2025-11-02: at 02:00 EDT (06:00 UTC) the clocks go back to 01:00 EST.
        let schedule = cron_in("30 1 * * *", Tz::America__New_York);
        assert_eq!(
            fires(&schedule, "2025-10-30T12:00:00Z", 5),
            [
                "2025-10-31T05:30:00Z", // 01:30 EDT
                "2025-11-01T05:30:00Z",
                "2025-11-02T05:30:00Z", // the first 01:30, EDT; not again at 06:30 UTC
                "2025-11-03T06:30:00Z", // 01:30 EST
                "2025-11-04T06:30:00Z",
            ]
        );
        // From inside the repeated hour, the second 01:30 does not fire either.
        let second_pass = utc("2025-11-02T06:10:00Z"); // 01:10 EST
        assert_eq!(schedule.next_after(second_pass), Some(utc("2025-11-03T06:30:00Z")));
    }

    #[test]
    fn every_fifteen_minutes_across_both_transitions_in_paris() {
        let schedule = cron_in("*/15 * * * *", Tz::Europe__Paris);
        // Spring: 02:00, 02:15, 02:30, 02:45 and 03:00 CEST are one instant, fired once.
        assert_eq!(
            fires(&schedule, "2025-03-30T00:30:00Z", 4),
            [
                "2025-03-30T00:45:00Z", // 01:45 CET
                "2025-03-30T01:00:00Z", // 03:00 CEST, for the skipped times too
                "2025-03-30T01:15:00Z", // 03:15 CEST
                "2025-03-30T01:30:00Z",
            ]
        );
        // Autumn: 02:00 to 02:45 fired in summer time and do not fire again in winter.
        assert_eq!(
            fires(&schedule, "2025-10-26T00:30:00Z", 3),
            [
                "2025-10-26T00:45:00Z", // 02:45 CEST
                "2025-10-26T02:00:00Z", // 03:00 CET
                "2025-10-26T02:15:00Z",
            ]
        );
    }

    #[test]
    fn every_second_resumes_after_the_repeated_hour() {
        let schedule = cron_in("* * * * * *", Tz::Europe__Paris);
        // 02:30 CET, the second time round: 02:30:01 has fired already, in summer time.
        assert_eq!(
            schedule.next_after(utc("2025-10-26T01:30:00Z")),
            Some(utc("2025-10-26T02:00:00Z"))
        );
        assert_eq!(
            schedule.next_after(utc("2025-10-26T00:59:58Z")),
            Some(utc("2025-10-26T00:59:59Z"))
        );
    }

    /// Over a year, a daily time fires once on every local day: none skipped, none
    /// twice, whatever the transitions.
    fn assert_once_a_day_for_a_year(expr: &str, tz: Tz) {
        let schedule = cron_in(expr, tz);
        // The last second of 2024 on the zone's clock.
        let mut t = tz.with_ymd_and_hms(2024, 12, 31, 23, 59, 59).single().unwrap().to_utc();
        let mut day = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        for _ in 0..365 {
            let next = schedule.next_after(t).unwrap();
            assert_eq!(next.with_timezone(&tz).date_naive(), day, "{expr} in {tz}: {next}");
            day = day.succ_opt().unwrap();
            t = next;
        }
        assert_eq!(day.year(), 2026);
    }

    #[test]
    fn a_daily_time_fires_every_day_of_the_year() {
        for tz in [Tz::Europe__Paris, Tz::America__New_York, Tz::Australia__Lord_Howe] {
            for expr in ["30 2 * * *", "30 1 * * *", "0 3 * * *", "0 0 * * *", "59 23 * * *"] {
                assert_once_a_day_for_a_year(expr, tz);
            }
        }
    }

    #[test]
    fn an_hourly_cron_fires_once_per_wall_clock_hour() {
        let schedule = cron_in("0 * * * *", Tz::America__New_York);
        let count = |from: &str, to: &str| {
            let (mut t, to) = (utc(from), utc(to));
            let mut n = 0;
            while let Some(next) = schedule.next_after(t).filter(|&next| next < to) {
                n += 1;
                t = next;
            }
            n
        };
        // Local midnight to midnight: 23 hours in spring, 25 in autumn, 24 wall-clock
        // hours fire in autumn (01:00 once).
        assert_eq!(count("2025-03-09T04:59:59Z", "2025-03-10T04:00:00Z"), 23);
        assert_eq!(count("2025-11-02T03:59:59Z", "2025-11-03T05:00:00Z"), 24);
        assert_eq!(count("2025-06-01T03:59:59Z", "2025-06-02T04:00:00Z"), 24);
    }

    #[test]
    fn every_ignores_the_zone() {
        let day = Schedule::every(Duration::from_secs(24 * 60 * 60)).unwrap();
        let paris = day.clone().in_time_zone(Tz::Europe__Paris);
        let t = utc("2025-03-29T22:30:00Z");
        assert_eq!(day.next_after(t), Some(utc("2025-03-30T00:00:00Z")));
        assert_eq!(paris.next_after(t), day.next_after(t));
    }

    #[test]
    fn every_refuses_intervals_under_a_millisecond() {
        let error = Schedule::every(Duration::from_micros(999)).unwrap_err();
        assert!(matches!(error, Error::InvalidArgument(_)));
        assert!(error.to_string().contains("at least 1 ms"), "{error}");
    }

    #[test]
    fn cron_fire_times_stop_after_2100() {
        let schedule = cron_in("0 0 1 1 *", Tz::America__New_York);
        assert_eq!(schedule.next_after(utc("2100-06-01T00:00:00Z")), None);
        assert_eq!(schedule.next_after(DateTime::<Utc>::MAX_UTC), None);
        // Before 1970 the first fire is the first of 1970, on the zone's clock.
        assert_eq!(
            schedule.next_after(utc("1900-01-01T00:00:00Z")),
            Some(utc("1970-01-01T05:00:00Z"))
        );
        assert_eq!(
            schedule.next_after(DateTime::<Utc>::MIN_UTC),
            Some(utc("1970-01-01T05:00:00Z"))
        );
        let leap = Schedule::cron("0 0 29 2 *").unwrap();
        assert_eq!(leap.next_after(utc("2025-01-01T00:00:00Z")), Some(utc("2028-02-29T00:00:00Z")));
    }

    #[test]
    fn a_zone_by_name() {
        let schedule = Schedule::cron("0 9 * * *").unwrap().in_time_zone_named("Europe/Paris");
        assert_eq!(schedule.unwrap().time_zone(), Tz::Europe__Paris);

        let error = Schedule::cron("0 9 * * *").unwrap().in_time_zone_named("Europe/Pariss");
        let message = error.unwrap_err().to_string();
        assert!(
            message.starts_with("unknown time zone \"Europe/Pariss\"; use a name"),
            "{message}"
        );

        let error =
            Schedule::every(Duration::from_secs(1)).unwrap().in_time_zone_named("europe/paris");
        let message = error.unwrap_err().to_string();
        assert!(message.contains("did you mean \"Europe/Paris\"?"), "{message}");
    }

    #[test]
    fn describe_and_debug_show_the_schedule_as_written() {
        let schedule = Schedule::cron("  0 */4 * * * ")
            .unwrap()
            .in_time_zone(Tz::Europe__Paris)
            .named("reports")
            .starting_after(Duration::from_secs(60))
            .missed_fires(MissedFires::FireOnce);
        assert_eq!(schedule.describe(), "cron \"0 */4 * * *\"");
        assert_eq!(schedule.name(), Some("reports"));
        assert_eq!(schedule.first_delay(), Some(Duration::from_secs(60)));
        assert_eq!(schedule.missed(), MissedFires::FireOnce);
        let debug = format!("{schedule:?}");
        assert!(
            debug.contains("cron \\\"0 */4 * * *\\\"") && debug.contains("Europe/Paris"),
            "{debug}"
        );
        let every = Schedule::every(Duration::from_secs(300)).unwrap();
        assert_eq!(every.describe(), "every 300s");
    }

    #[test]
    fn a_bad_expression_is_an_invalid_argument() {
        let error = Schedule::cron("61 * * * *").unwrap_err();
        assert!(matches!(error, Error::InvalidArgument(_)));
        assert_eq!(
            error.to_string(),
            "cron expression \"61 * * * *\": the minute field \"61\" is out of range 0-59"
        );
    }

    const EXPRESSIONS: &[&str] = &[
        "*/15 * * * *",
        "30 2 * * *",
        "0 9 * * 1-5",
        "0 0 13 * 5",
        "0 0 31 * *",
        "0 0 29 2 *",
        "*/7 * * * * *",
        "0 30 1 * * * 2020-2099",
        "@hourly",
    ];
    const ZONES: &[Tz] = &[
        Tz::UTC,
        Tz::Europe__Paris,
        Tz::America__New_York,
        Tz::Australia__Lord_Howe,
        Tz::Pacific__Apia,
        Tz::Asia__Kolkata,
    ];

    /// Instants the clocks changed in 2025: in Paris and New York forward then back
    /// an hour, on Lord Howe Island back then forward half an hour.
    const TRANSITIONS: &[(Tz, i64)] = &[
        (Tz::Europe__Paris, 1_743_296_400),        // 2025-03-30T01:00:00Z
        (Tz::Europe__Paris, 1_761_440_400),        // 2025-10-26T01:00:00Z
        (Tz::America__New_York, 1_741_503_600),    // 2025-03-09T07:00:00Z
        (Tz::America__New_York, 1_762_063_200),    // 2025-11-02T06:00:00Z
        (Tz::Australia__Lord_Howe, 1_743_865_200), // 2025-04-05T15:00:00Z
        (Tz::Australia__Lord_Howe, 1_759_591_800), // 2025-10-04T15:30:00Z
    ];

    #[test]
    fn the_transitions_are_transitions() {
        for &(tz, at) in TRANSITIONS {
            assert_ne!(offset_at(tz, at - 1), offset_at(tz, at), "{tz} at {at}");
        }
    }

    const DAILY: &[&str] = &["30 2 * * *", "30 1 * * *", "0 2 * * *", "15 2 * * *", "59 1 * * *"];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Near a transition, a daily time fires after `t`, today or tomorrow on the
        /// zone's calendar (never the day after), and nothing fires in between.
        #[test]
        fn around_a_transition_no_day_is_skipped(
            (tz, at) in proptest::sample::select(TRANSITIONS),
            expr in proptest::sample::select(DAILY),
            shift in -3 * 86_400i64..3 * 86_400,
            nanos in 0u32..1_000_000_000,
        ) {
            let schedule = cron_in(expr, tz);
            let t = DateTime::from_timestamp(at + shift, nanos).unwrap();
            let next = schedule.next_after(t).unwrap();
            prop_assert!(next > t);
            let days = next.with_timezone(&tz).date_naive() - t.with_timezone(&tz).date_naive();
            prop_assert!((0..=1).contains(&days.num_days()), "{} then {}", t, next);
            prop_assert_eq!(schedule.next_after(t + (next - t) / 2), Some(next));
            prop_assert_eq!(schedule.next_after(next - chrono::Duration::nanoseconds(1)), Some(next));
        }

        /// Near a transition, sub-daily expressions fire strictly after `t`, within
        /// their period plus the repeated hour, and consistently.
        #[test]
        fn around_a_transition_fires_are_after_t(
            (tz, at) in proptest::sample::select(TRANSITIONS),
            expr in proptest::sample::select(&["*/15 * * * *", "0 * * * *", "*/10 * * * * *"][..]),
            shift in -3 * 3600i64..3 * 3600,
            nanos in 0u32..1_000_000_000,
        ) {
            let schedule = cron_in(expr, tz);
            let t = DateTime::from_timestamp(at + shift, nanos).unwrap();
            let next = schedule.next_after(t).unwrap();
            prop_assert!(next > t);
            prop_assert!(next - t <= chrono::Duration::hours(2), "{} then {}", t, next);
            prop_assert_eq!(schedule.next_after(t + (next - t) / 2), Some(next));
            prop_assert_eq!(schedule.next_after(next - chrono::Duration::nanoseconds(1)), Some(next));
        }

        /// Fire times increase strictly, and every instant from `t` up to the next
        /// fire time has that same next fire time: no time in between fires.
        #[test]
        fn next_after_is_strictly_increasing_and_consistent(
            expr in proptest::sample::select(EXPRESSIONS),
            tz in proptest::sample::select(ZONES),
            seconds in 0i64..3_786_912_000, // 1970 to 2089
            nanos in 0u32..1_000_000_000,
        ) {
            let schedule = cron_in(expr, tz);
            let t = DateTime::from_timestamp(seconds, nanos).unwrap();
            let next = schedule.next_after(t).unwrap();
            prop_assert!(next > t);
            let later = schedule.next_after(next).unwrap();
            prop_assert!(later > next);
            let halfway = t + (next - t) / 2;
            prop_assert_eq!(schedule.next_after(halfway), Some(next));
            prop_assert_eq!(schedule.next_after(next - chrono::Duration::nanoseconds(1)), Some(next));
        }

        #[test]
        fn every_is_aligned_and_strictly_increasing(
            millis in 1u64..100_000_000,
            seconds in -4_000_000_000i64..4_000_000_000,
            nanos in 0u32..1_000_000_000,
        ) {
            let schedule = Schedule::every(Duration::from_millis(millis)).unwrap();
            let t = DateTime::from_timestamp(seconds, nanos).unwrap();
            let next = schedule.next_after(t).unwrap();
            prop_assert!(next > t);
            prop_assert!(next - t <= chrono::Duration::milliseconds(millis as i64));
            prop_assert_eq!(next.timestamp_millis().rem_euclid(millis as i64), 0);
            prop_assert_eq!(next.timestamp_subsec_nanos() % 1_000_000, 0);
        }
    }
}
