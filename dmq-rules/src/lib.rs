//! Rules that dmq-core and dmq-macros both apply, kept in one place: `#[task(...)]`
//! checks its arguments at compile time and cannot name dmq-core (which depends on
//! it), so what both must agree on lives here, in a crate with no dependencies.
//!
//! - the default backoff and the longest delay a backoff may have;
//! - the shape of a cron expression: how many fields, and the shorthands.

/// The longest delay a backoff may have, in milliseconds: a week.
pub const MAX_BACKOFF_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// The default backoff (`Backoff::default()`, and `backoff = "exponential"` alone):
/// its first delay in milliseconds.
pub const DEFAULT_BACKOFF_BASE_MS: u64 = 1_000;

/// The default backoff's factor: each delay doubles.
pub const DEFAULT_BACKOFF_FACTOR: f64 = 2.0;

/// The default backoff's longest delay in milliseconds: ten minutes.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 600_000;

// The default backoff fits under the longest one: checked when this crate compiles.
const _: () = assert!(
    DEFAULT_BACKOFF_BASE_MS <= DEFAULT_BACKOFF_MAX_MS && DEFAULT_BACKOFF_MAX_MS <= MAX_BACKOFF_MS
);

/// The cron shorthands, each with the five crontab fields it stands for (minute, hour,
/// day of month, month, day of week).
pub const CRON_SHORTHANDS: [(&str, [&str; 5]); 7] = [
    ("@yearly", ["0", "0", "1", "1", "*"]),
    ("@annually", ["0", "0", "1", "1", "*"]),
    ("@monthly", ["0", "0", "1", "*", "*"]),
    ("@weekly", ["0", "0", "*", "*", "0"]),
    ("@daily", ["0", "0", "*", "*", "*"]),
    ("@midnight", ["0", "0", "*", "*", "*"]),
    ("@hourly", ["0", "*", "*", "*", "*"]),
];

/// What a cron expression's shape is, before its fields are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronShape<'a> {
    /// Five fields, as crontab writes them.
    Five([&'a str; 5]),
    /// Six fields (a second first) or seven (a year last), as the `cron` crate writes
    /// them.
    SixOrSeven(Vec<&'a str>),
    /// A shorthand such as `@daily`, with the five fields it stands for.
    Shorthand(&'a str, [&'static str; 5]),
}

/// Why an expression has no cron shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronShapeError<'a> {
    /// A word starting with `@` that is no shorthand dmq knows.
    UnknownShorthand(&'a str),
    /// Not 5, 6 or 7 fields: how many it has.
    FieldCount(usize),
}

/// The shape of `expr`: five fields, six or seven, or a shorthand in any case
/// (`@daily`, `@Daily`).
///
/// # Errors
///
/// [`CronShapeError`] when it has none of them.
pub fn cron_shape(expr: &str) -> Result<CronShape<'_>, CronShapeError<'_>> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    match fields[..] {
        [word] if word.starts_with('@') => CRON_SHORTHANDS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(word))
            .map(|(_, five)| CronShape::Shorthand(word, *five))
            .ok_or(CronShapeError::UnknownShorthand(word)),
        [minute, hour, day, month, weekday] => {
            Ok(CronShape::Five([minute, hour, day, month, weekday]))
        }
        [_, _, _, _, _, _] | [_, _, _, _, _, _, _] => Ok(CronShape::SixOrSeven(fields)),
        _ => Err(CronShapeError::FieldCount(fields.len())),
    }
}

/// The shorthands, as error messages list them: `@yearly, @annually, ...`.
#[must_use]
pub fn cron_shorthand_names() -> String {
    let names: Vec<&str> = CRON_SHORTHANDS.iter().map(|(name, _)| *name).collect();
    names.join(", ")
}

/// Reads a rate limit as `#[task(rate_limit = "...")]` and dmq-core's `RateLimit` write
/// it: a count, a slash and a period (`"100/s"`, `"30/m"`, `"1000/h"`, `"5/250ms"`,
/// `"7/10s"`); returns the count and the period in milliseconds (1 ms to a day), or
/// why the text is not one.
///
/// # Errors
///
/// A sentence saying what is wrong, with examples of the form.
pub fn parse_rate(text: &str) -> Result<(u32, u64), String> {
    let bad = |why: &str| {
        format!(
            "rate limit {text:?} {why}: write a count, a slash and a period, such as \
             \"100/s\", \"30/m\", \"1000/h\" or \"5/250ms\""
        )
    };
    let (count, per) = text.trim().split_once('/').ok_or_else(|| bad("has no '/'"))?;
    let count: u32 = count.trim().parse().map_err(|_| bad("does not start with a count"))?;
    if count == 0 {
        return Err(format!(
            "rate limit {text:?} would start nothing: give a count of at least 1 (to stop a \
             queue, pause it: dmq pause)"
        ));
    }
    let per = per.trim();
    let digits = per.bytes().take_while(u8::is_ascii_digit).count();
    let (amount, unit) = per.split_at(digits);
    let amount: u64 = if amount.is_empty() {
        1
    } else {
        amount.parse().map_err(|_| bad("has a period too long"))?
    };
    let unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "s" | "sec" | "second" => 1_000,
        "m" | "min" | "minute" => 60_000,
        "h" | "hour" => 3_600_000,
        _ => return Err(bad("has an unknown period unit (ms, s, m or h)")),
    };
    let ms = amount.checked_mul(unit_ms).ok_or_else(|| bad("has a period too long"))?;
    if !(1..=86_400_000).contains(&ms) {
        return Err(format!("rate limit {text:?}: its period must be from 1ms to 24h"));
    }
    Ok((count, ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(cron_shape("0 */4 * * *"), Ok(CronShape::Five(["0", "*/4", "*", "*", "*"])));
        assert_eq!(
            cron_shape("0 0 */4 * * *"),
            Ok(CronShape::SixOrSeven(vec!["0", "0", "*/4", "*", "*", "*"]))
        );
        assert!(
            matches!(cron_shape("0 0 0 1 1 * 2030"), Ok(CronShape::SixOrSeven(f)) if f.len() == 7)
        );
        assert_eq!(
            cron_shape(" @daily "),
            Ok(CronShape::Shorthand("@daily", ["0", "0", "*", "*", "*"]))
        );
        assert_eq!(
            cron_shape("@Daily"),
            Ok(CronShape::Shorthand("@Daily", ["0", "0", "*", "*", "*"]))
        );
        assert_eq!(cron_shape("@often"), Err(CronShapeError::UnknownShorthand("@often")));
        assert_eq!(cron_shape(""), Err(CronShapeError::FieldCount(0)));
        assert_eq!(cron_shape("* * * *"), Err(CronShapeError::FieldCount(4)));
        assert_eq!(cron_shape("hourly"), Err(CronShapeError::FieldCount(1)));
    }
}
