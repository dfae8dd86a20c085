//! Retry policies: how many times a failed job runs again, and how long it waits first.
//!
//! The delay computation is pure: [`Backoff::delay`] takes the retry number and a
//! random number in `[0, 1)`, so tests seed it and need no clock.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::task::TaskError;

/// The longest a retry ever waits, whatever the policy or the task asks for: a week.
pub const MAX_BACKOFF: Duration = Duration::from_millis(dmq_rules::MAX_BACKOFF_MS);

/// How the delay before a retry grows with each attempt.
///
/// Build one with [`Backoff::fixed`], [`Backoff::linear`] or [`Backoff::exponential`],
/// which refuse nonsense, then add jitter with [`Backoff::with_jitter`]. It travels in
/// the job's envelope, so any worker process retries the job the same way.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed {
        /// The delay, in milliseconds.
        delay_ms: u64,
        /// How the delay is spread.
        #[serde(default)]
        jitter: Jitter,
    },
    /// `base` before the first retry, then `step` more before each following one.
    Linear {
        /// The first delay, in milliseconds.
        base_ms: u64,
        /// What each retry adds, in milliseconds.
        step_ms: u64,
        /// The longest delay, in milliseconds.
        max_ms: u64,
        /// How the delay is spread.
        #[serde(default)]
        jitter: Jitter,
    },
    /// `base` before the first retry, multiplied by `factor` for each following one,
    /// up to `max`.
    Exponential {
        /// The first delay, in milliseconds.
        base_ms: u64,
        /// What each retry multiplies the delay by (at least 1).
        factor: f64,
        /// The longest delay, in milliseconds.
        max_ms: u64,
        /// How the delay is spread.
        #[serde(default)]
        jitter: Jitter,
    },
}

/// How a delay is spread at random, so that jobs that failed together do not all
/// come back at the same instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Jitter {
    /// Exactly the computed delay.
    #[default]
    None,
    /// Anywhere between zero and the computed delay.
    Full,
    /// Between half the computed delay and all of it.
    Equal,
}

impl Default for Backoff {
    /// 1 s, doubling with each retry, up to ten minutes, without jitter.
    fn default() -> Self {
        Backoff::Exponential {
            base_ms: dmq_rules::DEFAULT_BACKOFF_BASE_MS,
            factor: dmq_rules::DEFAULT_BACKOFF_FACTOR,
            max_ms: dmq_rules::DEFAULT_BACKOFF_MAX_MS,
            jitter: Jitter::None,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

impl Backoff {
    /// The same `delay` before every retry.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a delay over [`MAX_BACKOFF`].
    pub fn fixed(delay: Duration) -> Result<Self> {
        if delay > MAX_BACKOFF {
            return Err(invalid(format!(
                "a fixed backoff of {delay:?} is longer than the longest allowed, {MAX_BACKOFF:?}"
            )));
        }
        Ok(Backoff::Fixed { delay_ms: millis(delay), jitter: Jitter::None })
    }

    /// `base` before the first retry, `step` more before each following one, at most
    /// `max`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `max` is below `base` or over [`MAX_BACKOFF`].
    pub fn linear(base: Duration, step: Duration, max: Duration) -> Result<Self> {
        check_range(base, max)?;
        Ok(Backoff::Linear {
            base_ms: millis(base),
            step_ms: millis(step),
            max_ms: millis(max),
            jitter: Jitter::None,
        })
    }

    /// `base` before the first retry, times `factor` for each following one, at most
    /// `max`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `base` is zero (every delay would be zero),
    /// `factor` is below 1 or not a number, or `max` is below `base` or over
    /// [`MAX_BACKOFF`].
    pub fn exponential(base: Duration, factor: f64, max: Duration) -> Result<Self> {
        if millis(base) == 0 {
            return Err(invalid(format!(
                "an exponential backoff needs a first delay of at least 1 ms, not {base:?}: \
                 every delay is a multiple of it (for no wait at all, use Backoff::fixed(Duration::ZERO))"
            )));
        }
        if !(factor.is_finite() && factor >= 1.0) {
            return Err(invalid(format!(
                "an exponential backoff needs a factor of at least 1, not {factor}"
            )));
        }
        check_range(base, max)?;
        Ok(Backoff::Exponential {
            base_ms: millis(base),
            factor,
            max_ms: millis(max),
            jitter: Jitter::None,
        })
    }

    /// The same backoff with `jitter`.
    #[must_use]
    pub fn with_jitter(self, jitter: Jitter) -> Self {
        match self {
            Backoff::Fixed { delay_ms, .. } => Backoff::Fixed { delay_ms, jitter },
            Backoff::Linear { base_ms, step_ms, max_ms, .. } => {
                Backoff::Linear { base_ms, step_ms, max_ms, jitter }
            }
            Backoff::Exponential { base_ms, factor, max_ms, .. } => {
                Backoff::Exponential { base_ms, factor, max_ms, jitter }
            }
        }
    }

    /// The delay before retry number `retry` (1 for the first retry), given `random`
    /// in `[0, 1)` for the jitter. Pure: the same inputs always give the same delay.
    #[must_use]
    pub fn delay(&self, retry: u32, random: f64) -> Duration {
        let n = retry.max(1) - 1;
        let (ms, jitter) = match *self {
            Backoff::Fixed { delay_ms, jitter } => (delay_ms as f64, jitter),
            Backoff::Linear { base_ms, step_ms, max_ms, jitter } => {
                let ms = base_ms as f64 + step_ms as f64 * f64::from(n);
                (ms.min(max_ms as f64), jitter)
            }
            Backoff::Exponential { base_ms, factor, max_ms, jitter } => {
                let ms = base_ms as f64 * factor.powi(i32::try_from(n).unwrap_or(i32::MAX));
                (ms.min(max_ms as f64), jitter)
            }
        };
        let random = if random.is_finite() { random.clamp(0.0, 1.0) } else { 0.0 };
        let ms = match jitter {
            Jitter::None => ms,
            Jitter::Full => ms * random,
            Jitter::Equal => ms / 2.0 + ms / 2.0 * random,
        };
        let ms = ms.min(millis(MAX_BACKOFF) as f64).max(0.0);
        // In range by the clamp above, so the cast neither wraps nor saturates.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Duration::from_millis(ms.round() as u64)
    }
}

fn check_range(base: Duration, max: Duration) -> Result<()> {
    if max < base {
        return Err(invalid(format!(
            "a backoff's longest delay ({max:?}) is below its first ({base:?})"
        )));
    }
    if max > MAX_BACKOFF {
        return Err(invalid(format!(
            "a backoff's longest delay ({max:?}) is over the longest allowed, {MAX_BACKOFF:?}"
        )));
    }
    Ok(())
}

/// How a failed job is retried: how many times, how long it waits before each, and
/// which errors are worth a retry at all.
///
/// Set it for a task (`#[task(retry = path::to_fn)]`, a function returning the policy),
/// per call (`my_task::call(..).retry(policy)`) or for the whole manager
/// ([`ManagerBuilder::default_retry`](crate::ManagerBuilder::default_retry)).
///
/// ```
/// use dmq_core::{Backoff, Jitter, RetryPolicy};
/// use std::time::Duration;
///
/// # fn main() -> Result<(), dmq_core::Error> {
/// let policy = RetryPolicy::new(
///     5,
///     Backoff::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(60))?
///         .with_jitter(Jitter::Full),
/// )
/// .retry_on::<std::io::Error>() // only I/O errors are retried ...
/// .dont_retry_if(|e| e.to_string().contains("permission denied")); // ... but not these
/// # let _ = policy;
/// # Ok(())
/// # }
/// ```
///
/// Which failures are retried, within `max_retries`:
///
/// - [`TaskError::fatal`](crate::TaskError::fatal) never is, and bad input (an unknown
///   task, arguments that do not fit) never is.
/// - [`TaskError::retry_after`](crate::TaskError::retry_after) always is: it is the
///   task's own request, and its delay wins over the backoff.
/// - Any other error, a panic ([`TaskPanicked`](crate::TaskPanicked)) and a timeout
///   ([`TaskTimedOut`](crate::TaskTimedOut)) are retried unless the error filters say
///   otherwise: an error matched by a `dont_retry_*` filter is not retried, and when
///   the policy has `retry_on`/`retry_if` filters, only an error one of them matches is.
///   A type filter matches the error or any error in its `source()` chain.
///
/// The error filters are code, so they live where the worker runs: in a task's policy
/// function or the manager's default. A call's own policy carries only `max_retries`
/// and `backoff` (they travel in the job); enqueueing a call whose policy has filters
/// is an error.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// How many times a failed job runs again (0: never).
    pub max_retries: u32,
    /// The delay before each retry.
    pub backoff: Backoff,
    filters: Vec<Filter>,
}

/// One `retry_on`/`dont_retry_on`/`retry_if`/`dont_retry_if` of a policy.
#[derive(Clone)]
struct Filter {
    /// Whether a match allows the retry (`retry_*`) or forbids it (`dont_retry_*`).
    retry: bool,
    /// What it matches, for `Debug`: a type name or "a predicate".
    what: &'static str,
    matches: Arc<dyn Fn(&TaskError) -> bool + Send + Sync>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("RetryPolicy");
        out.field("max_retries", &self.max_retries).field("backoff", &self.backoff);
        let named = |retry: bool| -> Vec<&str> {
            self.filters.iter().filter(|r| r.retry == retry).map(|r| r.what).collect()
        };
        let (on, not_on) = (named(true), named(false));
        if !on.is_empty() {
            out.field("retry_on", &on);
        }
        if !not_on.is_empty() {
            out.field("dont_retry_on", &not_on);
        }
        out.finish()
    }
}

/// Whether `error`, or any error in its `source()` chain, is an `E`.
fn is_in_chain<E: StdError + 'static>(error: &TaskError) -> bool {
    let mut next: Option<&(dyn StdError + 'static)> = Some(error.source_error());
    while let Some(e) = next {
        if e.is::<E>() {
            return true;
        }
        next = e.source();
    }
    false
}

impl RetryPolicy {
    /// Up to `max_retries` retries, waiting as `backoff` says.
    #[must_use]
    pub fn new(max_retries: u32, backoff: Backoff) -> Self {
        RetryPolicy { max_retries, backoff, filters: Vec::new() }
    }

    /// Retries errors of type `E` (the error itself or any error in its `source()`
    /// chain). Once a policy has a `retry_on` or `retry_if`, an error none of them
    /// matches is not retried.
    #[must_use]
    pub fn retry_on<E: StdError + 'static>(self) -> Self {
        self.filter(true, std::any::type_name::<E>(), is_in_chain::<E>)
    }

    /// Never retries errors of type `E` (the error itself or any error in its
    /// `source()` chain), whatever else the policy says.
    #[must_use]
    pub fn dont_retry_on<E: StdError + 'static>(self) -> Self {
        self.filter(false, std::any::type_name::<E>(), is_in_chain::<E>)
    }

    /// Retries the errors `predicate` returns true for (see [`retry_on`](Self::retry_on)).
    #[must_use]
    pub fn retry_if(self, predicate: impl Fn(&TaskError) -> bool + Send + Sync + 'static) -> Self {
        self.filter(true, "a predicate", predicate)
    }

    /// Never retries the errors `predicate` returns true for.
    #[must_use]
    pub fn dont_retry_if(
        self,
        predicate: impl Fn(&TaskError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.filter(false, "a predicate", predicate)
    }

    fn filter(
        mut self,
        retry: bool,
        what: &'static str,
        matches: impl Fn(&TaskError) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.filters.push(Filter { retry, what, matches: Arc::new(matches) });
        self
    }

    /// Whether the policy has error filters (`retry_on`, `dont_retry_on`, `retry_if`,
    /// `dont_retry_if`).
    #[must_use]
    pub fn has_error_filters(&self) -> bool {
        !self.filters.is_empty()
    }

    /// Whether the policy lets `error` be retried, leaving aside how many attempts
    /// were made: false for a fatal error, true for a `retry_after` one, otherwise
    /// as the error filters say.
    #[must_use]
    pub fn allows(&self, error: &TaskError) -> bool {
        if error.is_fatal() {
            return false;
        }
        if error.requested_delay().is_some() {
            return true;
        }
        if self.filters.iter().any(|f| !f.retry && (f.matches)(error)) {
            return false;
        }
        let mut allowing = self.filters.iter().filter(|f| f.retry).peekable();
        allowing.peek().is_none() || allowing.any(|f| (f.matches)(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// A seeded source of numbers in [0, 1): xorshift, enough for tests.
    fn seeded(mut state: u64) -> impl FnMut() -> f64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn fixed_linear_and_exponential_grow_as_documented() {
        let fixed = Backoff::fixed(S).unwrap();
        assert_eq!((1..=3).map(|n| fixed.delay(n, 0.5)).collect::<Vec<_>>(), [S, S, S]);
        let linear = Backoff::linear(S, 2 * S, 6 * S).unwrap();
        let got: Vec<_> = (1..=5).map(|n| linear.delay(n, 0.5)).collect();
        assert_eq!(got, [S, 3 * S, 5 * S, 6 * S, 6 * S]);
        let exp = Backoff::exponential(S, 3.0, 20 * S).unwrap();
        let got: Vec<_> = (1..=5).map(|n| exp.delay(n, 0.5)).collect();
        assert_eq!(got, [S, 3 * S, 9 * S, 20 * S, 20 * S]);
    }

    #[test]
    fn the_default_is_one_second_doubling_to_ten_minutes() {
        let b = Backoff::default();
        assert_eq!(b.delay(1, 0.0), S);
        assert_eq!(b.delay(4, 0.0), 8 * S);
        assert_eq!(b.delay(40, 0.0), Duration::from_secs(600));
    }

    #[test]
    fn jitter_stays_in_its_range_and_follows_the_seed() {
        let full = Backoff::fixed(10 * S).unwrap().with_jitter(Jitter::Full);
        let equal = Backoff::fixed(10 * S).unwrap().with_jitter(Jitter::Equal);
        let mut random = seeded(42);
        let mut spread = Vec::new();
        for _ in 0..1000 {
            let r = random();
            let f = full.delay(1, r);
            let e = equal.delay(1, r);
            assert!(f <= 10 * S, "{f:?}");
            assert!(e >= 5 * S && e <= 10 * S, "{e:?}");
            spread.push(f);
        }
        // Jitter does spread: over a thousand draws, both halves of the range occur.
        assert!(spread.iter().any(|d| *d < 5 * S) && spread.iter().any(|d| *d > 5 * S));
        // The same seed gives the same delays.
        let again: Vec<_> = {
            let mut random = seeded(42);
            (0..1000).map(|_| full.delay(1, random())).collect()
        };
        assert_eq!(spread, again);
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        let err = |r: Result<Backoff>| r.unwrap_err().to_string();
        assert!(err(Backoff::exponential(S, 0.0, 10 * S)).contains("factor of at least 1"));
        assert!(err(Backoff::exponential(S, f64::NAN, 10 * S)).contains("factor"));
        assert!(err(Backoff::exponential(Duration::ZERO, 2.0, S)).contains("at least 1 ms"));
        assert!(err(Backoff::exponential(10 * S, 2.0, S)).contains("below its first"));
        assert!(err(Backoff::linear(10 * S, S, S)).contains("below its first"));
        assert!(err(Backoff::fixed(MAX_BACKOFF + S)).contains("longest allowed"));
    }

    #[test]
    fn a_backoff_survives_the_envelope_round_trip() {
        let b = Backoff::exponential(S, 1.5, 60 * S).unwrap().with_jitter(Jitter::Equal);
        let bytes = rmp_serde::to_vec_named(&b).unwrap();
        assert_eq!(rmp_serde::from_slice::<Backoff>(&bytes).unwrap(), b);
    }

    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    fn io() -> TaskError {
        std::io::Error::other("disk").into()
    }

    fn parse() -> TaskError {
        "x".parse::<i32>().unwrap_err().into()
    }

    #[test]
    fn without_filters_every_retryable_error_is_retried() {
        let policy = RetryPolicy::new(3, Backoff::default());
        assert!(policy.allows(&io()) && policy.allows(&parse()));
        assert!(policy.allows(&TaskError::msg("plain")));
        assert!(!policy.allows(&TaskError::fatal("never")));
    }

    #[test]
    fn retry_on_retries_only_the_errors_it_names() {
        let policy = RetryPolicy::new(3, Backoff::default()).retry_on::<std::io::Error>();
        assert!(policy.allows(&io()));
        assert!(!policy.allows(&parse()));
        // A cause deeper in the chain matches too.
        assert!(policy.allows(&TaskError::from(Wrapper(std::io::Error::other("x")))));
        // Several are a union.
        let both = policy.retry_on::<std::num::ParseIntError>();
        assert!(both.allows(&io()) && both.allows(&parse()));
    }

    #[test]
    fn dont_retry_on_wins_over_retry_on() {
        let policy = RetryPolicy::new(3, Backoff::default())
            .retry_if(|_| true)
            .dont_retry_on::<std::num::ParseIntError>();
        assert!(policy.allows(&io()));
        assert!(!policy.allows(&parse()));
        let predicate =
            RetryPolicy::new(3, Backoff::default()).dont_retry_if(|e| e.to_string() == "disk");
        assert!(!predicate.allows(&io()));
        assert!(predicate.allows(&parse()));
    }

    #[test]
    fn a_retry_after_is_the_tasks_own_request_and_passes_the_filters() {
        let policy = RetryPolicy::new(3, Backoff::default()).dont_retry_if(|_| true);
        assert!(policy.allows(&TaskError::retry_after("busy", S)));
        assert!(!policy.allows(&TaskError::fatal("no")));
    }

    #[test]
    fn debug_names_the_filters() {
        let policy = RetryPolicy::new(1, Backoff::default())
            .retry_on::<std::io::Error>()
            .dont_retry_if(|_| false);
        let shown = format!("{policy:?}");
        assert!(shown.contains("retry_on: [\"std::io::error::Error\"]"), "{shown}");
        assert!(shown.contains("dont_retry_on: [\"a predicate\"]"), "{shown}");
    }
}
