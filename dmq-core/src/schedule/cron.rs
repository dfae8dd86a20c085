//! Cron expressions: each field checked on its own (so an error names the wrong one),
//! crontab's day-of-week numbering translated for the `cron` crate, and the next
//! matching wall-clock time.
//!
//! Everything here works on wall-clock (naive) times; the time zone and its
//! daylight-saving transitions are the caller's business (see `super::next_cron`).

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{NaiveDateTime, TimeZone, Utc};
use dmq_rules::{CronShape, CronShapeError};

use crate::error::{Error, Result};

/// A parsed cron expression, matched against wall-clock times.
#[derive(Clone)]
pub(super) struct CronExpr {
    /// A wall-clock time matches when any of these does: two for a five-field
    /// expression that restricts both day fields (crontab fires when either day field
    /// matches), one otherwise.
    alternatives: Vec<cron::Schedule>,
}

impl CronExpr {
    /// Parses `expr`: five fields (crontab), six or seven (the `cron` crate's), or a
    /// shorthand such as `@daily`.
    pub(super) fn parse(expr: &str) -> Result<Self> {
        match dmq_rules::cron_shape(expr) {
            Ok(CronShape::Shorthand(_, five)) => parse_five(expr, five),
            Ok(CronShape::Five(five)) => parse_five(expr, five),
            Ok(CronShape::SixOrSeven(fields)) => parse_six_or_seven(expr, &fields),
            Err(CronShapeError::UnknownShorthand(shorthand)) => Err(invalid(
                expr,
                format_args!(
                    "{shorthand:?} is not a shorthand dmq knows; use @hourly, @daily \
                     (or @midnight), @weekly, @monthly or @yearly (or @annually)"
                ),
            )),
            Err(CronShapeError::FieldCount(n)) => {
                let count = match n {
                    0 => "it has no fields".to_owned(),
                    1 => "it has 1 field, not 5, 6 or 7".to_owned(),
                    n => format!("it has {n} fields, not 5, 6 or 7"),
                };
                Err(invalid(
                    expr,
                    format_args!(
                        "{count}; write five (minute hour day-of-month month day-of-week, as in \
                         crontab), six (second minute hour day-of-month month day-of-week) or \
                         seven (the six, then year), or one of @hourly, @daily, @weekly, \
                         @monthly, @yearly"
                    ),
                ))
            }
        }
    }

    /// The first matching wall-clock time strictly after `after`, to the second, or
    /// `None` when there is none (the `cron` crate stops at the end of 2100).
    pub(super) fn next_naive(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        // The crate's own time-zone handling skips times that fall in a daylight-saving
        // gap; UTC has none, so it serves here as "wall clock, no zone".
        let after = Utc.from_utc_datetime(&after);
        self.alternatives
            .iter()
            .filter_map(|schedule| schedule.after(&after).next())
            .min()
            .map(|at| at.naive_utc())
    }
}

/// `cron expression "...": <reason>`, as an [`Error::InvalidArgument`].
fn invalid(expr: &str, reason: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("cron expression {:?}: {reason}", expr.trim()))
}

/// Minute hour day-of-month month day-of-week, as in crontab: day-of-week 0 and 7 are
/// Sunday, and a day matches either day field when both are restricted.
fn parse_five(expr: &str, [minute, hour, dom, month, dow]: [&str; 5]) -> Result<CronExpr> {
    check(expr, &MINUTE, minute)?;
    check(expr, &HOUR, hour)?;
    let days = check(expr, &DAY_OF_MONTH, dom)?;
    let months = check(expr, &MONTH, month)?;
    let weekdays = check(expr, &DAY_OF_WEEK_CRONTAB, dow)?;

    // Translate the weekdays into the crate's numbering (1 = Sunday ... 7 = Saturday).
    let weekdays: BTreeSet<u32> = weekdays.iter().map(|day| day % 7 + 1).collect();
    let crate_dow = if weekdays.len() == 7 {
        "*".to_owned()
    } else {
        weekdays.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    };

    // Crontab (Vixie cron and its descendants): when neither day field starts with `*`,
    // a day matches if EITHER field matches; otherwise both must.
    let restricted = |field: &str| !field.starts_with(['*', '?']);
    let either = restricted(dom) && restricted(dow);
    if !either {
        check_days_exist(expr, dom, &days, month, &months)?;
    }
    let sources = if either {
        vec![
            format!("0 {minute} {hour} {dom} {month} *"),
            format!("0 {minute} {hour} * {month} {crate_dow}"),
        ]
    } else {
        vec![format!("0 {minute} {hour} {dom} {month} {crate_dow}")]
    };
    crate_schedules(expr, &sources)
}

/// Second minute hour day-of-month month day-of-week [year], as the `cron` crate reads
/// them: day-of-week 1 is Sunday and 7 Saturday, and a day must match both day fields.
fn parse_six_or_seven(expr: &str, fields: &[&str]) -> Result<CronExpr> {
    check(expr, &SECOND, fields[0])?;
    check(expr, &MINUTE, fields[1])?;
    check(expr, &HOUR, fields[2])?;
    let days = check(expr, &DAY_OF_MONTH, fields[3])?;
    let months = check(expr, &MONTH, fields[4])?;
    check(expr, &DAY_OF_WEEK_CRATE, fields[5])?;
    if let Some(year) = fields.get(6) {
        check(expr, &YEAR, year)?;
    }
    check_days_exist(expr, fields[3], &days, fields[4], &months)?;
    crate_schedules(expr, &[fields.join(" ")])
}

fn crate_schedules(expr: &str, sources: &[String]) -> Result<CronExpr> {
    let alternatives = sources
        .iter()
        .map(|source| {
            // Every field passed `check`, which accepts what the crate accepts, so this
            // only fails if the two disagree; say so rather than guess at a field.
            cron::Schedule::from_str(source)
                .map_err(|e| invalid(expr, format_args!("the cron crate refuses {source:?}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(CronExpr { alternatives })
}

/// Refuses an expression whose day-of-month never occurs in its months (`30 2`), which
/// would never fire.
fn check_days_exist(
    expr: &str,
    dom: &str,
    days: &BTreeSet<u32>,
    month: &str,
    months: &BTreeSet<u32>,
) -> Result<()> {
    let longest = |month: u32| match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if months.iter().any(|&m| days.iter().any(|&d| d <= longest(m))) {
        return Ok(());
    }
    Err(invalid(
        expr,
        format_args!(
            "it can never fire: no month in the month field {month:?} has a day in the \
             day-of-month field {dom:?}"
        ),
    ))
}

/// Which names a field takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Names {
    None,
    Months,
    /// Weekday names, numbered from `sunday` (0 in crontab, 1 in the cron crate).
    Weekdays {
        sunday: u32,
    },
}

/// One field of a cron expression: its name for messages, its range and what it takes.
struct Field {
    name: &'static str,
    lo: u32,
    hi: u32,
    names: Names,
    /// Whether `?` (any) is allowed, as the crate allows in the two day fields.
    question_mark: bool,
    /// Appended to a range error.
    hint: &'static str,
}

const SECOND: Field =
    Field { name: "second", lo: 0, hi: 59, names: Names::None, question_mark: false, hint: "" };
const MINUTE: Field = Field { name: "minute", hi: 59, ..SECOND };
const HOUR: Field = Field { name: "hour", hi: 23, ..SECOND };
const DAY_OF_MONTH: Field =
    Field { name: "day-of-month", lo: 1, hi: 31, question_mark: true, ..SECOND };
const MONTH: Field = Field { name: "month", lo: 1, hi: 12, names: Names::Months, ..SECOND };
const DAY_OF_WEEK_CRONTAB: Field = Field {
    name: "day-of-week",
    lo: 0,
    hi: 7,
    names: Names::Weekdays { sunday: 0 },
    question_mark: true,
    hint: " (0 and 7 are Sunday, 1 Monday, 6 Saturday; names like Mon-Fri work too)",
};
const DAY_OF_WEEK_CRATE: Field = Field {
    name: "day-of-week",
    lo: 1,
    hi: 7,
    names: Names::Weekdays { sunday: 1 },
    question_mark: true,
    hint: " (with six or seven fields, day-of-week follows the cron crate: 1 is Sunday, \
           7 Saturday; names like Mon-Fri are clearer)",
};
const YEAR: Field = Field { name: "year", lo: 1970, hi: 2100, ..SECOND };

const MONTH_NAMES: &[(&str, u32)] = &[
    ("jan", 1),
    ("january", 1),
    ("feb", 2),
    ("february", 2),
    ("mar", 3),
    ("march", 3),
    ("apr", 4),
    ("april", 4),
    ("may", 5),
    ("jun", 6),
    ("june", 6),
    ("jul", 7),
    ("july", 7),
    ("aug", 8),
    ("august", 8),
    ("sep", 9),
    ("september", 9),
    ("oct", 10),
    ("october", 10),
    ("nov", 11),
    ("november", 11),
    ("dec", 12),
    ("december", 12),
];

/// Days from Sunday, as the cron crate spells them.
const WEEKDAY_NAMES: &[(&str, u32)] = &[
    ("sun", 0),
    ("sunday", 0),
    ("mon", 1),
    ("monday", 1),
    ("tue", 2),
    ("tues", 2),
    ("tuesday", 2),
    ("wed", 3),
    ("wednesday", 3),
    ("thu", 4),
    ("thurs", 4),
    ("thursday", 4),
    ("fri", 5),
    ("friday", 5),
    ("sat", 6),
    ("saturday", 6),
];

/// Checks one field on its own and returns the values it selects (in the field's own
/// numbering), or the error naming the field and what is wrong with it.
fn check(expr: &str, field: &Field, text: &str) -> Result<BTreeSet<u32>> {
    values(field, text)
        .map_err(|reason| invalid(expr, format_args!("the {} field {text:?} {reason}", field.name)))
}

fn values(field: &Field, text: &str) -> std::result::Result<BTreeSet<u32>, String> {
    let mut set = BTreeSet::new();
    for item in text.split(',') {
        if item.is_empty() {
            return Err("has an empty item; separate values with single commas, as in 1,15".into());
        }
        // Point at the part that is wrong when the field has more than one.
        let part = |reason: String| {
            if item == text { reason } else { format!("has {item:?}, which {reason}") }
        };
        set.extend(item_values(field, item).map_err(part)?);
    }
    Ok(set)
}

/// The values one comma-separated item selects, or what is wrong with it (a phrase
/// that follows "the minute field "61"" or "which"). Mirrors the `cron` crate's
/// grammar: `*`, `?` (day fields only), `N`, `N-M`, a name or `Name-Name`, each but a
/// lone name optionally followed by `/step`; `N/step` runs from N to the field's maximum.
fn item_values(field: &Field, item: &str) -> std::result::Result<Vec<u32>, String> {
    let (base, step) = match item.split_once('/') {
        None => (item, None),
        Some((base, step)) => {
            if !is_number(step) {
                return Err(format!(
                    "has a step that is not a number ({step:?}); write a step as */15 or 0-30/5"
                ));
            }
            let step = number(step);
            if step == 0 || step > field.hi {
                return Err(format!("has a step of {step}; use a step from 1 to {}", field.hi));
            }
            (base, Some(step))
        }
    };
    if matches!(base.to_ascii_lowercase().as_str(), "l" | "lw" | "w") || base.contains('#') {
        return Err(format!("is not supported{UNSUPPORTED}"));
    }

    let (first, last) = if base == "*" {
        (field.lo, field.hi)
    } else if base == "?" {
        if !field.question_mark {
            return Err(
                "is ? (any), which only the day-of-month and day-of-week fields take; use * here"
                    .into(),
            );
        }
        (field.lo, field.hi)
    } else if let Some((from, to)) = base.split_once('-') {
        let (from, to) = if is_number(from) && is_number(to) {
            (in_range(field, from)?, in_range(field, to)?)
        } else if is_name(from) && is_name(to) {
            let from = name_value(field, from)?;
            let mut to = name_value(field, to)?;
            // In crontab numbering Sunday is also 7, so Sat-Sun and Fri-Sun read as meant.
            if field.names == (Names::Weekdays { sunday: 0 }) && to == 0 {
                to = 7;
            }
            (from, to)
        } else {
            return Err(not_understood(base));
        };
        if from > to {
            return Err("runs backwards; write the smaller value first".into());
        }
        (from, to)
    } else if is_number(base) {
        let at = in_range(field, base)?;
        (at, if step.is_some() { field.hi } else { at })
    } else if is_name(base) {
        let at = name_value(field, base)?;
        if step.is_some() {
            return Err("has a step after a single name; a step needs * or a range before it, \
                        as in Mon-Fri/2"
                .into());
        }
        (at, at)
    } else {
        return Err(not_understood(base));
    };
    Ok((first..=last).step_by(step.unwrap_or(1) as usize).collect())
}

const UNSUPPORTED: &str = ": dmq's cron has no L (last day), W (nearest weekday) or # (nth \
                           weekday); list the days instead";

fn not_understood(base: &str) -> String {
    let mut message = "is not a number, name, range (1-5), list (1,15) or step (*/10)".to_owned();
    if base.contains(['L', 'l', 'W', 'w', '#']) && base.contains(|c: char| c.is_ascii_digit()) {
        message.push_str(UNSUPPORTED);
    }
    message
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn is_name(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphabetic())
}

/// A string of digits as a number; one too large for `u32` is out of every range.
fn number(digits: &str) -> u32 {
    digits.parse().unwrap_or(u32::MAX)
}

fn in_range(field: &Field, digits: &str) -> std::result::Result<u32, String> {
    let value = number(digits);
    if (field.lo..=field.hi).contains(&value) {
        Ok(value)
    } else {
        Err(format!("is out of range {}-{}{}", field.lo, field.hi, field.hint))
    }
}

fn name_value(field: &Field, name: &str) -> std::result::Result<u32, String> {
    let lowered = name.to_ascii_lowercase();
    let lookup = |names: &[(&str, u32)]| {
        names.iter().find(|(known, _)| *known == lowered).map(|&(_, value)| value)
    };
    match field.names {
        Names::None => Err("uses a name, but only the month and day-of-week fields take names \
                            (Jan-Dec, Sun-Sat)"
            .into()),
        Names::Months => lookup(MONTH_NAMES)
            .ok_or_else(|| format!("names {name:?} (not a month; use Jan to Dec or 1 to 12)")),
        Names::Weekdays { sunday } => lookup(WEEKDAY_NAMES)
            .map(|day| day + sunday)
            .ok_or_else(|| format!("names {name:?} (not a day of the week; use Sun to Sat)")),
    }
}

/// The values a field selects, comma-separated, for tests.
#[cfg(test)]
fn render(values: &BTreeSet<u32>) -> String {
    values.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, NaiveDate, Weekday};

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    /// The next `n` matches of `expr` after `from`, formatted.
    fn nexts(expr: &str, from: &str, n: usize) -> Vec<String> {
        let parsed = CronExpr::parse(expr).unwrap();
        let mut t = at(from);
        let mut out = Vec::new();
        for _ in 0..n {
            match parsed.next_naive(t) {
                Some(next) => {
                    assert!(next > t, "{expr}: {next} is not after {t}");
                    out.push(next.format("%Y-%m-%d %H:%M:%S").to_string());
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// The weekdays of the next `n` matches after Wednesday 2025-01-01.
    fn weekdays(expr: &str, n: usize) -> Vec<Weekday> {
        nexts(expr, "2025-01-01 00:00:00", n).iter().map(|t| at(t).weekday()).collect()
    }

    fn error(expr: &str) -> String {
        match CronExpr::parse(expr) {
            Err(Error::InvalidArgument(message)) => message,
            Err(other) => panic!("{expr}: not an InvalidArgument: {other:?}"),
            Ok(_) => panic!("{expr}: parsed"),
        }
    }

    #[test]
    fn five_fields_are_minute_first() {
        assert_eq!(
            nexts("0 */4 * * *", "2025-01-01 00:00:00", 7),
            [
                "2025-01-01 04:00:00",
                "2025-01-01 08:00:00",
                "2025-01-01 12:00:00",
                "2025-01-01 16:00:00",
                "2025-01-01 20:00:00",
                "2025-01-02 00:00:00",
                "2025-01-02 04:00:00",
            ]
        );
        assert_eq!(
            nexts("15,45 9-10 * * *", "2025-06-30 10:50:00", 4),
            [
                "2025-07-01 09:15:00",
                "2025-07-01 09:45:00",
                "2025-07-01 10:15:00",
                "2025-07-01 10:45:00"
            ]
        );
        assert_eq!(
            nexts("0 12 1 jan,Jul *", "2025-01-01 12:00:00", 3),
            ["2025-07-01 12:00:00", "2026-01-01 12:00:00", "2026-07-01 12:00:00"]
        );
    }

    #[test]
    fn six_fields_are_second_first() {
        assert_eq!(
            nexts("30 0 9 * * *", "2025-01-01 09:00:30", 2),
            ["2025-01-02 09:00:30", "2025-01-03 09:00:30"]
        );
        assert_eq!(
            nexts("*/20 * * * * *", "2025-01-01 23:59:30", 3),
            ["2025-01-01 23:59:40", "2025-01-02 00:00:00", "2025-01-02 00:00:20"]
        );
    }

    #[test]
    fn seven_fields_end_with_the_year() {
        assert_eq!(
            nexts("0 0 12 1 1 * 2027,2029", "2025-06-01 00:00:00", 5),
            ["2027-01-01 12:00:00", "2029-01-01 12:00:00"]
        );
        assert_eq!(nexts("0 0 0 1 1 ? 2024", "2025-01-01 00:00:00", 1), Vec::<String>::new());
    }

    #[test]
    fn the_31st_skips_short_months() {
        assert_eq!(
            nexts("0 0 31 * *", "2025-01-31 00:00:00", 6),
            [
                "2025-03-31 00:00:00",
                "2025-05-31 00:00:00",
                "2025-07-31 00:00:00",
                "2025-08-31 00:00:00",
                "2025-10-31 00:00:00",
                "2025-12-31 00:00:00",
            ]
        );
        assert_eq!(
            nexts("0 0 30 * *", "2025-01-30 00:00:00", 2),
            ["2025-03-30 00:00:00", "2025-04-30 00:00:00"]
        );
    }

    #[test]
    fn leap_days_wait_for_leap_years() {
        assert_eq!(
            nexts("0 0 29 2 *", "2025-01-01 00:00:00", 3),
            ["2028-02-29 00:00:00", "2032-02-29 00:00:00", "2036-02-29 00:00:00"]
        );
        // 2100 is not a leap year, and the cron crate stops after it.
        assert_eq!(nexts("0 0 29 2 *", "2096-03-01 00:00:00", 1), Vec::<String>::new());
    }

    #[test]
    fn crontab_day_of_week_numbers_start_at_sunday_zero() {
        use Weekday::*;
        assert_eq!(weekdays("0 9 * * 1", 3), [Mon, Mon, Mon]);
        assert_eq!(nexts("0 9 * * 1", "2025-01-01 00:00:00", 1), ["2025-01-06 09:00:00"]);
        assert_eq!(nexts("0 9 * * 0", "2025-01-01 00:00:00", 1), ["2025-01-05 09:00:00"]);
        assert_eq!(nexts("0 9 * * 7", "2025-01-01 00:00:00", 1), ["2025-01-05 09:00:00"]);
        assert_eq!(weekdays("0 9 * * 6", 2), [Sat, Sat]);
        assert_eq!(weekdays("0 9 * * 1-5", 7), [Wed, Thu, Fri, Mon, Tue, Wed, Thu]);
        assert_eq!(weekdays("0 9 * * Mon-Fri", 7), [Wed, Thu, Fri, Mon, Tue, Wed, Thu]);
        assert_eq!(weekdays("0 9 * * 0,6", 4), [Sat, Sun, Sat, Sun]);
        assert_eq!(weekdays("0 9 * * */2", 5), [Thu, Sat, Sun, Tue, Thu]);
        assert_eq!(weekdays("0 9 * * 5-7", 4), [Fri, Sat, Sun, Fri]);
        assert_eq!(weekdays("0 9 * * Sat-Sun", 3), [Sat, Sun, Sat]);
        assert_eq!(weekdays("0 9 * * sun,WED", 3), [Wed, Sun, Wed]);
        assert_eq!(weekdays("0 9 * * 1-7/2", 4), [Wed, Fri, Sun, Mon]);
        assert_eq!(weekdays("0 9 * * 0-7", 3), [Wed, Thu, Fri]);
        // @weekly is Sunday midnight.
        assert_eq!(nexts("@weekly", "2025-01-01 00:00:00", 1), ["2025-01-05 00:00:00"]);
    }

    #[test]
    fn six_and_seven_fields_number_days_of_week_as_the_cron_crate() {
        use Weekday::*;
        assert_eq!(weekdays("0 0 9 * * 1", 2), [Sun, Sun]);
        assert_eq!(weekdays("0 0 9 * * 2-6", 5), [Wed, Thu, Fri, Mon, Tue]);
        assert_eq!(weekdays("0 0 9 * * Mon-Fri", 5), [Wed, Thu, Fri, Mon, Tue]);
        assert_eq!(weekdays("0 0 9 ? * 7 2025", 2), [Sat, Sat]);
    }

    #[test]
    fn five_fields_fire_on_either_day_field_when_both_are_restricted() {
        // Crontab: the 13th, and every Friday.
        assert_eq!(
            nexts("0 0 13 * 5", "2025-01-01 00:00:00", 4),
            [
                "2025-01-03 00:00:00",
                "2025-01-10 00:00:00",
                "2025-01-13 00:00:00",
                "2025-01-17 00:00:00"
            ]
        );
        // The cron crate: Friday the 13th.
        assert_eq!(nexts("0 0 0 13 * 6", "2025-01-01 00:00:00", 1), ["2025-06-13 00:00:00"]);
        // A day field starting with * restricts together with the other (crontab does
        // the same): odd days of the month that are Mondays.
        assert_eq!(
            nexts("0 0 */2 * 1", "2025-01-01 00:00:00", 2),
            ["2025-01-13 00:00:00", "2025-01-27 00:00:00"]
        );
    }

    #[test]
    fn shorthands_expand_as_in_crontab() {
        let from = "2025-03-15 10:20:30";
        assert_eq!(nexts("@hourly", from, 1), ["2025-03-15 11:00:00"]);
        assert_eq!(nexts("@daily", from, 1), ["2025-03-16 00:00:00"]);
        assert_eq!(nexts("@midnight", from, 1), ["2025-03-16 00:00:00"]);
        assert_eq!(nexts("@weekly", from, 1), ["2025-03-16 00:00:00"]);
        assert_eq!(nexts("@monthly", from, 1), ["2025-04-01 00:00:00"]);
        assert_eq!(nexts("@yearly", from, 1), ["2026-01-01 00:00:00"]);
        assert_eq!(nexts(" @Annually ", from, 1), ["2026-01-01 00:00:00"]);
    }

    #[test]
    fn next_is_strictly_after_even_on_a_match() {
        assert_eq!(nexts("0 9 * * *", "2025-01-01 09:00:00", 1), ["2025-01-02 09:00:00"]);
        assert_eq!(nexts("0 9 * * *", "2025-01-01 08:59:59", 1), ["2025-01-01 09:00:00"]);
        let parsed = CronExpr::parse("0 9 * * *").unwrap();
        let just_before = at("2025-01-01 08:59:59") + chrono::Duration::milliseconds(999);
        assert_eq!(parsed.next_naive(just_before), Some(at("2025-01-01 09:00:00")));
        let just_after = at("2025-01-01 09:00:00") + chrono::Duration::nanoseconds(1);
        assert_eq!(parsed.next_naive(just_after), Some(at("2025-01-02 09:00:00")));
    }

    #[test]
    fn each_error_names_its_field() {
        let cases = [
            ("61 * * * *", "the minute field \"61\" is out of range 0-59"),
            ("* 24 * * *", "the hour field \"24\" is out of range 0-23"),
            ("* * 0 * *", "the day-of-month field \"0\" is out of range 1-31"),
            ("* * * 13 *", "the month field \"13\" is out of range 1-12"),
            ("* * * * 8", "the day-of-week field \"8\" is out of range 0-7 (0 and 7 are Sunday"),
            ("60 * * * * *", "the second field \"60\" is out of range 0-59"),
            ("0 60 * * * *", "the minute field \"60\" is out of range 0-59"),
            ("0 0 0 1 1 * 1969", "the year field \"1969\" is out of range 1970-2100"),
            ("0 0 0 1 1 * 2101", "the year field \"2101\" is out of range 1970-2100"),
            ("0 0 9 * * 0", "the day-of-week field \"0\" is out of range 1-7 (with six or seven"),
            ("0 0 9 * * 8", "the day-of-week field \"8\" is out of range 1-7"),
            ("5,61 * * * *", "the minute field \"5,61\" has \"61\", which is out of range 0-59"),
            ("* 99999999999 * * *", "the hour field \"99999999999\" is out of range 0-23"),
            ("* * * Jan-Foo *", "the month field \"Jan-Foo\" names \"Foo\" (not a month"),
            ("* * * * Mon,Fry", "the day-of-week field \"Mon,Fry\" has \"Fry\", which names"),
            ("*/0 * * * *", "the minute field \"*/0\" has a step of 0; use a step from 1 to 59"),
            ("* */24 * * *", "the hour field \"*/24\" has a step of 24; use a step from 1 to 23"),
            ("* * */x * *", "the day-of-month field \"*/x\" has a step that is not a number"),
            ("5-2 * * * *", "the minute field \"5-2\" runs backwards; write the smaller value"),
            ("* * * * Fri-Mon", "the day-of-week field \"Fri-Mon\" runs backwards"),
            ("? * * * *", "the minute field \"?\" is ? (any), which only the day-of-month"),
            ("* noon * * *", "the hour field \"noon\" uses a name, but only the month"),
            ("* * * * Tue/2", "the day-of-week field \"Tue/2\" has a step after a single name"),
            ("1,,2 * * * *", "the minute field \"1,,2\" has an empty item"),
            ("1, * * * *", "the minute field \"1,\" has an empty item"),
            ("* * L * *", "the day-of-month field \"L\" is not supported: dmq's cron has no L"),
            ("* * 1,LW * *", "the day-of-month field \"1,LW\" has \"LW\", which is not supported"),
            ("* * 15W * *", "the day-of-month field \"15W\" is not a number, name, range"),
            ("* * * * 5#2", "the day-of-week field \"5#2\" is not supported"),
            ("* * * * 1-Fri", "the day-of-week field \"1-Fri\" is not a number, name, range"),
            ("1-2-3 * * * *", "the minute field \"1-2-3\" is not a number, name, range"),
            ("0 0 0 * * * 20x5", "the year field \"20x5\" is not a number"),
        ];
        for (expr, expected) in cases {
            let message = error(expr);
            let prefix = format!("cron expression {expr:?}: ");
            assert!(message.starts_with(&prefix), "{expr}: {message}");
            assert!(message[prefix.len()..].starts_with(expected), "{expr}: {message}");
        }
        assert_eq!(
            error("61 * * * *"),
            r#"cron expression "61 * * * *": the minute field "61" is out of range 0-59"#
        );
        assert!(error("* * 15W * *").contains("W (nearest weekday)"));
    }

    #[test]
    fn a_wrong_number_of_fields_lists_the_forms() {
        for (expr, count) in [
            ("* * * *", "it has 4 fields, not 5, 6 or 7"),
            ("* * * * * * * *", "it has 8 fields, not 5, 6 or 7"),
            ("*", "it has 1 field, not 5, 6 or 7"),
            ("   ", "it has no fields"),
        ] {
            let message = error(expr);
            assert!(message.contains(count), "{expr}: {message}");
            assert!(
                message.contains("write five (minute hour day-of-month month day-of-week"),
                "{message}"
            );
            assert!(message.contains("six (second minute"), "{message}");
            assert!(message.contains("seven"), "{message}");
        }
        assert!(error("@reboot").contains("\"@reboot\" is not a shorthand dmq knows; use @hourly"));
    }

    #[test]
    fn an_expression_that_can_never_fire_is_refused() {
        let message = error("0 0 30 2 *");
        assert!(message.contains("can never fire"), "{message}");
        assert!(message.contains("month field \"2\""), "{message}");
        assert!(error("0 0 0 31 4,6 ?").contains("can never fire"));
        // Either day field fires in crontab, so this one fires on Mondays in February.
        assert_eq!(nexts("0 0 30 2 1", "2025-01-01 00:00:00", 1), ["2025-02-03 00:00:00"]);
        // The 29th of February exists, in leap years.
        assert!(CronExpr::parse("0 0 29 2 *").is_ok());
    }

    #[test]
    fn the_checker_accepts_what_the_cron_crate_accepts() {
        for expr in [
            "0-5,58 * * * * *",
            "10/2 * * * * *",
            "* * * ? * Mon,Thu",
            "* * * 1,2 * ?",
            "* * * ?/2 * *",
            "* * * * Feb-Nov/2 *",
            "* * * * * Mon-Thurs/2",
            "* * * * * TUESDAY",
            "0 0 0 1 1 ? 2020-2040/10",
            "1-5/59 * * * * *",
            "0 0 0 1 1 * */2",
            "007 * * * *",
        ] {
            if let Err(e) = CronExpr::parse(expr) {
                panic!("{expr}: {e}");
            }
        }
    }

    #[test]
    fn values_follow_the_crate_semantics() {
        let dow = |text| render(&values(&DAY_OF_WEEK_CRONTAB, text).unwrap());
        assert_eq!(dow("*/2"), "0,2,4,6");
        assert_eq!(dow("1/2"), "1,3,5,7");
        assert_eq!(dow("Mon-Fri"), "1,2,3,4,5");
        assert_eq!(dow("Sat-Sun"), "6,7");
        let minute = |text| render(&values(&MINUTE, text).unwrap());
        assert_eq!(minute("50/3"), "50,53,56,59");
        assert_eq!(minute("10-20/5,1"), "1,10,15,20");
    }

    #[test]
    fn naive_dates_used_in_the_tests_are_the_weekdays_they_claim() {
        assert_eq!(NaiveDate::from_ymd_opt(2025, 1, 1).unwrap().weekday(), Weekday::Wed);
        assert_eq!(NaiveDate::from_ymd_opt(2025, 6, 13).unwrap().weekday(), Weekday::Fri);
    }
}
