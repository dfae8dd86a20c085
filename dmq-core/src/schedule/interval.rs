//! Fixed intervals: fire times at the multiples of the interval since the Unix epoch,
//! in absolute time, so every worker agrees on them and no time zone moves them.

use std::time::Duration;

use chrono::{DateTime, Utc};

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// The first multiple of `interval` since the Unix epoch strictly after `t`, or `None`
/// past the last instant chrono represents (or for a zero interval).
pub(super) fn next_multiple(interval: Duration, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let step = i128::try_from(interval.as_nanos()).ok().filter(|&step| step > 0)?;
    let now = i128::from(t.timestamp()) * NANOS_PER_SECOND + i128::from(t.timestamp_subsec_nanos());
    let next = (now.div_euclid(step) + 1).checked_mul(step)?;
    let seconds = i64::try_from(next.div_euclid(NANOS_PER_SECOND)).ok()?;
    let nanos = u32::try_from(next.rem_euclid(NANOS_PER_SECOND)).ok()?;
    DateTime::from_timestamp(seconds, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn fires_at_multiples_of_the_interval_since_the_epoch() {
        let five = 5 * MINUTE;
        assert_eq!(
            next_multiple(five, utc("2025-03-01T10:02:30Z")),
            Some(utc("2025-03-01T10:05:00Z"))
        );
        assert_eq!(
            next_multiple(five, utc("2025-03-01T10:04:59.999999999Z")),
            Some(utc("2025-03-01T10:05:00Z"))
        );
        // Seven seconds does not divide a minute: the multiples run on from the epoch.
        let seven = Duration::from_secs(7);
        assert_eq!(
            next_multiple(seven, utc("1970-01-01T00:00:00Z")),
            Some(utc("1970-01-01T00:00:07Z"))
        );
        assert_eq!(
            next_multiple(seven, utc("1970-01-01T00:01:00Z")),
            Some(utc("1970-01-01T00:01:03Z"))
        );
        // A day is midnight UTC.
        assert_eq!(
            next_multiple(24 * 60 * MINUTE, utc("2025-03-01T23:59:59Z")),
            Some(utc("2025-03-02T00:00:00Z"))
        );
    }

    #[test]
    fn a_time_on_a_fire_time_gives_the_next_one() {
        let five = 5 * MINUTE;
        assert_eq!(
            next_multiple(five, utc("2025-03-01T10:05:00Z")),
            Some(utc("2025-03-01T10:10:00Z"))
        );
        assert_eq!(
            next_multiple(five, utc("1970-01-01T00:00:00Z")),
            Some(utc("1970-01-01T00:05:00Z"))
        );
    }

    #[test]
    fn intervals_that_are_not_whole_milliseconds_keep_their_length() {
        let step = Duration::from_micros(1500);
        // Midnight is a multiple of 1.5 ms (it is of 60 s), so the next one is 1 ms on.
        let t = utc("2025-03-01T00:00:00.0005Z");
        let first = next_multiple(step, t).unwrap();
        assert_eq!(first, utc("2025-03-01T00:00:00.0015Z"));
        let second = next_multiple(step, first).unwrap();
        assert_eq!(second, utc("2025-03-01T00:00:00.003Z"));
    }

    #[test]
    fn times_before_the_epoch_round_up_too() {
        let hour = 60 * MINUTE;
        assert_eq!(
            next_multiple(hour, utc("1969-12-31T22:30:00Z")),
            Some(utc("1969-12-31T23:00:00Z"))
        );
        assert_eq!(
            next_multiple(hour, utc("1969-12-31T23:00:00Z")),
            Some(utc("1970-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn the_end_of_time_gives_none_instead_of_panicking() {
        assert_eq!(next_multiple(MINUTE, DateTime::<Utc>::MAX_UTC), None);
        assert_eq!(next_multiple(Duration::MAX, utc("2025-03-01T00:00:00Z")), None);
        assert_eq!(next_multiple(Duration::ZERO, utc("2025-03-01T00:00:00Z")), None);
        assert!(next_multiple(MINUTE, DateTime::<Utc>::MIN_UTC).is_some());
    }
}
