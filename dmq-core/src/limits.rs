//! Flow limits on a job: how many jobs of its kind may start per period, and how many
//! may run at once, across every worker. Plain values; the broker enforces them.
//!
//! A job passes one *gate*, named by its [`JobLimits::gate`]: the task's name, or the
//! task's name and the call's concurrency key. The gate's rate is a GCRA (the generic
//! cell rate algorithm, a token bucket kept as one timestamp): jobs start at most
//! `count` per `period`, evenly spaced, and up to `burst` may start at once after a
//! quiet spell. In any window of length `w`, at most `burst + count * w / period` start.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The longest gate name a broker keeps, in bytes: a task's name (up to 255 bytes)
/// and a key of up to 255 characters fit.
pub const MAX_GATE_LEN: usize = 2048;

/// How many jobs may start per period: `"100/s"`, `"30/m"`, `"1000/h"`, `"5/250ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    count: u32,
    period: Duration,
}

impl RateLimit {
    /// `count` jobs per `period`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a zero count, or a period under a millisecond
    /// or over a day.
    pub fn new(count: u32, period: Duration) -> Result<Self> {
        if count == 0 {
            return Err(Error::InvalidArgument(
                "a rate limit of 0 jobs would start nothing: pause the queue instead \
                 (dmq pause), or give a count of at least 1"
                    .to_owned(),
            ));
        }
        if period < Duration::from_millis(1) || period > Duration::from_secs(86_400) {
            return Err(Error::InvalidArgument(format!(
                "a rate limit's period must be from 1ms to 24h, not {period:?}"
            )));
        }
        Ok(RateLimit { count, period })
    }

    /// The rate whose steady interval between starts is `interval_us` microseconds, in
    /// the words it was most likely given in (`50/s` rather than `1/20ms`): per second,
    /// minute or hour when one divides evenly. `None` for 0. For brokers that keep a
    /// rate as its interval.
    #[must_use]
    pub fn of_interval_us(interval_us: u64) -> Option<RateLimit> {
        if interval_us == 0 {
            return None;
        }
        for period in [1_000_000_u64, 60_000_000, 3_600_000_000] {
            if period % interval_us == 0 {
                let count = u32::try_from(period / interval_us).ok()?;
                return RateLimit::new(count, Duration::from_micros(period)).ok();
            }
        }
        RateLimit::new(1, Duration::from_micros(interval_us.max(1_000))).ok()
    }

    /// How many jobs may start per [`period`](RateLimit::period).
    #[must_use]
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period the count is for.
    #[must_use]
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The burst a rate gets when none is given: as many jobs as it allows in 10 ms,
    /// at least 1. A claim takes at most the burst at once, and workers claim again
    /// within milliseconds, not microseconds: with a burst of 1, a rate of 2,000/s
    /// would start one job per claim and fall short of its rate. Rates up to 100/s get
    /// 1: their starts are evenly spaced.
    #[must_use]
    pub fn default_burst(&self) -> u32 {
        let per_10ms = u64::from(self.count) * 10_000 / self.period_us().max(1);
        u32::try_from(per_10ms).unwrap_or(u32::MAX).max(1)
    }

    fn period_us(&self) -> u64 {
        u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX)
    }

    /// The time between two starts at the steady rate, in microseconds (at least 1).
    #[must_use]
    pub fn interval_us(&self) -> u64 {
        let period = u64::try_from(self.period.as_micros()).unwrap_or(u64::MAX);
        (period / u64::from(self.count)).max(1)
    }
}

impl FromStr for RateLimit {
    type Err = Error;

    /// Reads `"100/s"`, `"30/m"`, `"1000/h"`, `"5/250ms"`, `"7/10s"`: the rules
    /// `#[task(rate_limit = ...)]` checks at compile time.
    fn from_str(s: &str) -> Result<Self> {
        let (count, ms) = dmq_rules::parse_rate(s).map_err(Error::InvalidArgument)?;
        RateLimit::new(count, Duration::from_millis(ms))
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.period.as_millis();
        let (amount, unit) = if ms % 3_600_000 == 0 {
            (ms / 3_600_000, "h")
        } else if ms % 60_000 == 0 {
            (ms / 60_000, "m")
        } else if ms % 1_000 == 0 {
            (ms / 1_000, "s")
        } else {
            (ms, "ms")
        };
        if amount == 1 {
            write!(f, "{}/{unit}", self.count)
        } else {
            write!(f, "{}/{amount}{unit}", self.count)
        }
    }
}

impl Serialize for RateLimit {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The flow limits a job carries: it waits in the broker, not in a worker, until its
/// gate lets it start. Set by `#[task(rate_limit = "50/s", burst = 5, concurrency = 3)]`
/// and on a call ([`Call::rate_limit`](crate::Call::rate_limit),
/// [`Call::concurrency`](crate::Call::concurrency),
/// [`Call::concurrency_key`](crate::Call::concurrency_key)).
///
/// In the envelope these are the optional map `limits`:
/// `{"rate": "50/s", "burst": 5, "concurrency": 3, "key": "tenant-7"}`, every field
/// optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobLimits {
    /// How many jobs of the gate may start per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateLimit>,
    /// How many may start at once after a quiet spell; when not set, what the rate
    /// allows in 10 ms, at least 1 (see [`JobLimits::burst`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// How many jobs of the gate may run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Makes the limits apply per key (a tenant, a customer, an API token): jobs of
    /// one task with different keys pass different gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The name of a gate tasks share: jobs of every task that names it pass it (and
    /// its key's, with a key), so that its limits hold for them together, as a limit
    /// on a whole queue does when each task of the queue names one gate. None for the
    /// task's own gate. Encoded as `gate`.
    #[serde(default, rename = "gate", skip_serializing_if = "Option::is_none")]
    pub shared: Option<String>,
}

impl JobLimits {
    /// Whether there is anything to enforce: a rate or a concurrency.
    #[must_use]
    pub fn is_limited(&self) -> bool {
        self.rate.is_some() || self.concurrency.is_some()
    }

    /// The burst: as set, or by default what the rate allows in 10 ms, at least 1 (see
    /// [`RateLimit::default_burst`]).
    #[must_use]
    pub fn burst(&self) -> u32 {
        match (self.burst, self.rate) {
            (Some(burst), _) => burst.max(1),
            (None, Some(rate)) => rate.default_burst(),
            (None, None) => 1,
        }
    }

    /// The name of the gate a job of `task` with these limits passes: the task's name
    /// (or the [`shared`](JobLimits::shared) gate's), or `task[key]` with a key.
    #[must_use]
    pub fn gate(&self, task: &str) -> String {
        let base = self.shared.as_deref().unwrap_or(task);
        match &self.key {
            Some(key) => format!("{base}[{key}]"),
            None => base.to_owned(),
        }
    }

    /// Checks the limits of a job of `task`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a concurrency or burst of 0, a key with a NUL
    /// character, or a gate name over [`MAX_GATE_LEN`] bytes.
    pub fn check(&self, task: &str) -> Result<()> {
        if self.concurrency == Some(0) {
            return Err(Error::InvalidArgument(format!(
                "task {task:?} has a concurrency limit of 0, which would run nothing: give \
                 at least 1, or pause the queue (dmq pause)"
            )));
        }
        if self.burst == Some(0) {
            return Err(Error::InvalidArgument(format!(
                "task {task:?} has a burst of 0: a burst is how many jobs may start at \
                 once, at least 1"
            )));
        }
        if let Some(key) = &self.key {
            if key.contains('\0') {
                return Err(Error::InvalidArgument(format!(
                    "the concurrency key of a job of {task:?} has a NUL character: use \
                     printable text"
                )));
            }
        }
        if let Some(shared) = &self.shared {
            if shared.is_empty() || shared.contains('\0') {
                return Err(Error::InvalidArgument(format!(
                    "the shared gate of a job of {task:?} must be text without NUL, not empty"
                )));
            }
        }
        let base = self.shared.as_deref().unwrap_or(task);
        let len = base.len() + self.key.as_ref().map_or(0, |k| k.len() + 2);
        if len > MAX_GATE_LEN {
            return Err(Error::InvalidArgument(format!(
                "the concurrency key of a job of {task:?} is too long: its gate name would \
                 take {len} bytes, over {MAX_GATE_LEN}"
            )));
        }
        Ok(())
    }
}

/// The gate a job passes, as the broker sees it: its name and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gate {
    /// The gate's name ([`JobLimits::gate`]), unique within the job's queue.
    pub name: String,
    /// How many of its jobs may start per period.
    pub rate: Option<RateLimit>,
    /// How many may start at once after a quiet spell (at least 1).
    pub burst: u32,
    /// How many of its jobs may run at once.
    pub concurrency: Option<u32>,
}

impl Gate {
    /// The gate of a job of `task` with `limits`; `None` when they limit nothing.
    #[must_use]
    pub fn of(task: &str, limits: &JobLimits) -> Option<Gate> {
        limits.is_limited().then(|| Gate {
            name: limits.gate(task),
            rate: limits.rate,
            burst: limits.burst(),
            concurrency: limits.concurrency,
        })
    }

    /// A gate named `name` with these limits (for tests and other producers).
    #[must_use]
    pub fn new(
        name: impl Into<String>,
        rate: Option<RateLimit>,
        burst: u32,
        concurrency: Option<u32>,
    ) -> Self {
        Gate { name: name.into(), rate, burst: burst.max(1), concurrency }
    }
}

/// A gate's rate state: the GCRA's theoretical arrival time, in microseconds on the
/// broker's clock. Pure, so a test drives it with made-up times.
///
/// `admit(now)` says whether a job may start at `now` and advances the state when it
/// may; when it may not, [`Gcra::next_start`] says when one may.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gcra {
    /// The theoretical arrival time (µs): the steady-rate instant of the next start.
    pub tat: u64,
}

impl Gcra {
    /// Whether one more job may start at `now` (µs), under `rate` with `burst`;
    /// advances the state when it may.
    pub fn admit(&mut self, now: u64, rate: RateLimit, burst: u32) -> bool {
        let interval = rate.interval_us();
        let tat = self.tat.max(now);
        let tolerance = interval.saturating_mul(u64::from(burst.max(1)) - 1);
        if tat - now > tolerance {
            return false;
        }
        self.tat = tat + interval;
        true
    }

    /// When (µs) the next job may start under `rate` with `burst`.
    #[must_use]
    pub fn next_start(&self, rate: RateLimit, burst: u32) -> u64 {
        let tolerance = rate.interval_us().saturating_mul(u64::from(burst.max(1)) - 1);
        self.tat.saturating_sub(tolerance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print_in_the_same_words() {
        for (text, count, ms) in [
            ("100/s", 100, 1_000),
            ("30/m", 30, 60_000),
            ("1000/h", 1000, 3_600_000),
            ("5/250ms", 5, 250),
            ("7/10s", 7, 10_000),
            (" 2 / min ", 2, 60_000),
        ] {
            let rate: RateLimit = text.parse().unwrap();
            assert_eq!((rate.count(), rate.period()), (count, Duration::from_millis(ms)), "{text}");
            assert_eq!(rate.to_string().parse::<RateLimit>().unwrap(), rate);
        }
        assert_eq!("100/s".parse::<RateLimit>().unwrap().to_string(), "100/s");
        for bad in ["", "100", "x/s", "0/s", "10/d", "10/0s", "10/2d", "-1/s", "10/99999h"] {
            let err = bad.parse::<RateLimit>().unwrap_err().to_string();
            assert!(
                err.contains("100/s") || err.contains("at least 1") || err.contains("24h"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_rate_kept_as_its_interval_reads_back_in_its_words() {
        for text in ["50/s", "100/s", "30/m", "1000/h", "7/s"] {
            let rate: RateLimit = text.parse().unwrap();
            let back = RateLimit::of_interval_us(rate.interval_us()).unwrap();
            assert_eq!(back.interval_us(), rate.interval_us(), "{text}");
        }
        assert_eq!(RateLimit::of_interval_us(20_000).unwrap().to_string(), "50/s");
        assert_eq!(RateLimit::of_interval_us(0), None);
    }

    #[test]
    fn gcra_lets_a_burst_through_then_spaces_starts_evenly() {
        let rate: RateLimit = "10/s".parse().unwrap(); // one per 100 ms
        let mut g = Gcra::default();
        let t0 = 1_000_000_000;
        // A burst of 3 at once, then nothing until the rate allows.
        assert!(g.admit(t0, rate, 3));
        assert!(g.admit(t0, rate, 3));
        assert!(g.admit(t0, rate, 3));
        assert!(!g.admit(t0, rate, 3));
        assert_eq!(g.next_start(rate, 3), t0 + 100_000);
        assert!(!g.admit(t0 + 99_999, rate, 3));
        assert!(g.admit(t0 + 100_000, rate, 3));
        // Over any window, at most burst + rate * window start.
        let mut g = Gcra::default();
        let mut starts = Vec::new();
        let mut now = t0;
        while now < t0 + 5_000_000 {
            while g.admit(now, rate, 3) {
                starts.push(now);
            }
            now += 7_000;
        }
        for (i, &s) in starts.iter().enumerate() {
            let in_window = starts[i..].iter().take_while(|&&t| t < s + 1_000_000).count();
            assert!(in_window <= 3 + 10, "{in_window} starts in one second");
        }
        assert!(starts.len() >= 50, "{}", starts.len());
    }

    #[test]
    fn a_fast_rate_gets_the_burst_of_10_ms_and_a_slow_one_1() {
        let burst = |text: &str| text.parse::<RateLimit>().unwrap().default_burst();
        assert_eq!(burst("50/s"), 1);
        assert_eq!(burst("100/s"), 1);
        assert_eq!(burst("2000/s"), 20);
        assert_eq!(burst("100000/s"), 1000);
        assert_eq!(burst("1/h"), 1);
        let limits = JobLimits { rate: "2000/s".parse().ok(), ..JobLimits::default() };
        assert_eq!(limits.burst(), 20);
        let set = JobLimits { burst: Some(3), ..limits };
        assert_eq!(set.burst(), 3);
    }

    #[test]
    fn limits_name_their_gate_and_refuse_nonsense() {
        let mut limits = JobLimits { concurrency: Some(3), ..JobLimits::default() };
        assert_eq!(limits.gate("report"), "report");
        limits.key = Some("tenant-7".into());
        assert_eq!(limits.gate("report"), "report[tenant-7]");
        limits.check("report").unwrap();
        limits.concurrency = Some(0);
        assert!(limits.check("report").unwrap_err().to_string().contains("at least 1"));
        let long = JobLimits { key: Some("k".repeat(2100)), ..JobLimits::default() };
        assert!(long.check("report").unwrap_err().to_string().contains("too long"));
    }
}
