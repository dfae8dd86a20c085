//! The arguments of `#[task(...)]`: `name`, `queue`, `max_retries`, `timeout`,
//! `backoff`, `jitter`, `retry`, `guarantee`, `ignore_result`, `cron`, `every`,
//! `partitions`, and the flow limits `rate_limit`, `burst`, `concurrency`,
//! `concurrency_key` and `limit_gate`.
//!
//! Every value is checked here, at compile time, so a mistake is an error on the
//! user's literal rather than a worker's surprise. `backoff` is a small language of
//! its own (`"exponential(1s, 2, 10m)"`), checked with the rules of dmq-core's
//! `Backoff` constructors; this crate cannot name dmq-core (dmq-core depends on it),
//! so the rules are restated here and the `tests` crate checks that both agree.
//!
//! `cron` is checked for its shape only (five, six or seven fields, or a macro such
//! as `"@hourly"`): parsing the fields would mean a second cron parser, so dmq-core's
//! `Schedule::cron` reads them when the manager is built. `every` is a duration as
//! `timeout` writes it, of at least 1 ms and whole milliseconds, as
//! `Schedule::every` keeps it. Whether the task takes call arguments, which a
//! periodic task cannot, is the expander's check: it needs the signature.

use std::fmt;
use std::time::Duration;

use proc_macro2::Span;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, ExprCall, ExprLit, ExprPath, Ident, Lit, Path, Token};

mod kw {
    syn::custom_keyword!(name);
    syn::custom_keyword!(queue);
    syn::custom_keyword!(max_retries);
    syn::custom_keyword!(timeout);
    syn::custom_keyword!(backoff);
    syn::custom_keyword!(jitter);
    syn::custom_keyword!(retry);
    syn::custom_keyword!(guarantee);
    syn::custom_keyword!(ignore_result);
    syn::custom_keyword!(cron);
    syn::custom_keyword!(every);
    syn::custom_keyword!(partitions);
    syn::custom_keyword!(rate_limit);
    syn::custom_keyword!(burst);
    syn::custom_keyword!(concurrency);
    syn::custom_keyword!(concurrency_key);
    syn::custom_keyword!(limit_gate);
}

/// The keys `#[task]` accepts, as its error messages list them.
const KEYS: &str = "name, queue, max_retries, timeout, backoff, jitter, retry, guarantee, \
                    ignore_result, cron, every, partitions, rate_limit, burst, concurrency, \
                    concurrency_key, limit_gate";

/// The forms `cron` accepts, as its error messages list them.
const CRON_FORMS: &str = "five fields (minute hour day-of-month month day-of-week, as in \
     \"0 */4 * * *\"), six or seven (a second first, an optional year last, as in \
     \"0 0 */4 * * *\"), or one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly";

/// The forms `backoff` accepts, as its error messages list them.
const BACKOFF_FORMS: &str = "\"fixed(30s)\", \"linear(1s, 5s, 1m)\" (base, step, max), \
     \"exponential(1s, 2, 10m)\" (base, factor, max), or \"exponential\" alone \
     (1s, doubling up to 10m)";

/// The longest delay a backoff may have: dmq-core's `MAX_BACKOFF`, a week.
const MAX_BACKOFF: Duration = Duration::from_millis(dmq_rules::MAX_BACKOFF_MS);

/// What `#[task(...)]` said; `None` for a key it left out.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct TaskArgs {
    /// The registered name; the function's name when `None`.
    pub(crate) name: Option<String>,
    /// The default queue; `"default"` when `None`.
    pub(crate) queue: Option<String>,
    /// The retry limit; the manager's default when `None`.
    pub(crate) max_retries: Option<u32>,
    /// The limit on one run; none when `None`.
    pub(crate) timeout: Option<Duration>,
    /// The delay before each retry; the manager's default when `None`.
    pub(crate) backoff: Option<Backoff>,
    /// How the backoff's delays are spread; only with a `backoff`.
    pub(crate) jitter: Option<Jitter>,
    /// The function returning the task's whole retry policy.
    pub(crate) retry: Option<PolicyFn>,
    /// The delivery guarantee; the worker's when `None`.
    pub(crate) guarantee: Option<Guarantee>,
    /// Whether workers skip storing the task's result.
    pub(crate) ignore_result: bool,
    /// When the task fires by itself (`cron` or `every`); never when `None`.
    pub(crate) periodic: Option<Periodic>,
    /// How many partitions the task's queue has; none when `None`.
    pub(crate) partitions: Option<u16>,
    /// How many jobs may start per period, as written (checked); none when `None`.
    pub(crate) rate_limit: Option<String>,
    /// How many may start at once under the rate; 1 when `None`.
    pub(crate) burst: Option<u32>,
    /// How many may run at once; no limit when `None`.
    pub(crate) concurrency: Option<u32>,
    /// The argument whose value keys the limits; the task's name alone when `None`.
    pub(crate) concurrency_key: Option<Ident>,
    /// The gate the task shares with others; its own when `None`.
    pub(crate) limit_gate: Option<String>,
}

/// `cron = "..."` or `every = "..."`, with the span of the key that set it: a task
/// with call arguments cannot be periodic, and the expander says so at the key.
#[derive(Debug)]
pub(crate) struct Periodic {
    pub(crate) schedule: Schedule,
    pub(crate) key: Span,
}

/// Compares the schedules only: a span has no equality.
impl PartialEq for Periodic {
    fn eq(&self, other: &Self) -> bool {
        self.schedule == other.schedule
    }
}

/// dmq-core's `PeriodicSpec` variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Schedule {
    /// The expression as written, its fields unchecked.
    Cron(String),
    /// At least 1 ms, in whole milliseconds.
    Every(Duration),
}

impl Schedule {
    /// The key that sets it.
    pub(crate) fn key(&self) -> &'static str {
        match self {
            Schedule::Cron(_) => "cron",
            Schedule::Every(_) => "every",
        }
    }
}

/// A backoff as `backoff = "..."` wrote it, in the milliseconds dmq-core's `Backoff`
/// keeps; the jitter is a key of its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Backoff {
    Fixed { delay_ms: u64 },
    Linear { base_ms: u64, step_ms: u64, max_ms: u64 },
    Exponential { base_ms: u64, factor: f64, max_ms: u64 },
}

/// `jitter = "..."`: dmq-core's `Jitter` variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Jitter {
    None,
    Full,
    Equal,
}

/// `guarantee = "..."`: dmq-core's `Guarantee` variants.
// The names are dmq-core's, which the expansion spells out.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guarantee {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

/// `retry = path`: the path of the user's `fn() -> RetryPolicy`, with its spans, so
/// the compiler's verdict on its signature points at it.
pub(crate) struct PolicyFn(pub(crate) Path);

impl fmt::Debug for PolicyFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyFn({})", self.0.to_token_stream())
    }
}

impl PartialEq for PolicyFn {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_token_stream().to_string() == other.0.to_token_stream().to_string()
    }
}

/// Which key a `key = value` pair set.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    Name,
    Queue,
    MaxRetries,
    Timeout,
    Backoff,
    Jitter,
    Retry,
    Guarantee,
    IgnoreResult,
    Cron,
    Every,
    Partitions,
    RateLimit,
    Burst,
    Concurrency,
    KeyedBy,
    LimitGate,
}

impl Key {
    /// Parses the key, or explains that there is no such key.
    fn parse(input: ParseStream<'_>) -> syn::Result<(Key, Span)> {
        let lookahead = input.lookahead1();
        if lookahead.peek(kw::name) {
            Ok((Key::Name, input.parse::<kw::name>()?.span))
        } else if lookahead.peek(kw::queue) {
            Ok((Key::Queue, input.parse::<kw::queue>()?.span))
        } else if lookahead.peek(kw::max_retries) {
            Ok((Key::MaxRetries, input.parse::<kw::max_retries>()?.span))
        } else if lookahead.peek(kw::timeout) {
            Ok((Key::Timeout, input.parse::<kw::timeout>()?.span))
        } else if lookahead.peek(kw::backoff) {
            Ok((Key::Backoff, input.parse::<kw::backoff>()?.span))
        } else if lookahead.peek(kw::jitter) {
            Ok((Key::Jitter, input.parse::<kw::jitter>()?.span))
        } else if lookahead.peek(kw::retry) {
            Ok((Key::Retry, input.parse::<kw::retry>()?.span))
        } else if lookahead.peek(kw::guarantee) {
            Ok((Key::Guarantee, input.parse::<kw::guarantee>()?.span))
        } else if lookahead.peek(kw::ignore_result) {
            Ok((Key::IgnoreResult, input.parse::<kw::ignore_result>()?.span))
        } else if lookahead.peek(kw::cron) {
            Ok((Key::Cron, input.parse::<kw::cron>()?.span))
        } else if lookahead.peek(kw::every) {
            Ok((Key::Every, input.parse::<kw::every>()?.span))
        } else if lookahead.peek(kw::partitions) {
            Ok((Key::Partitions, input.parse::<kw::partitions>()?.span))
        } else if lookahead.peek(kw::rate_limit) {
            Ok((Key::RateLimit, input.parse::<kw::rate_limit>()?.span))
        } else if lookahead.peek(kw::burst) {
            Ok((Key::Burst, input.parse::<kw::burst>()?.span))
        } else if lookahead.peek(kw::limit_gate) {
            Ok((Key::LimitGate, input.parse::<kw::limit_gate>()?.span))
        } else if lookahead.peek(kw::concurrency_key) {
            Ok((Key::KeyedBy, input.parse::<kw::concurrency_key>()?.span))
        } else if lookahead.peek(kw::concurrency) {
            Ok((Key::Concurrency, input.parse::<kw::concurrency>()?.span))
        } else if input.peek(Ident::peek_any) {
            let unknown = input.call(Ident::parse_any)?;
            Err(syn::Error::new(
                unknown.span(),
                format!("unknown #[task] key `{unknown}`; expected one of: {KEYS}"),
            ))
        } else {
            Err(syn::Error::new(input.span(), format!("expected a #[task] key, one of: {KEYS}")))
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Key::Name => "name",
            Key::Queue => "queue",
            Key::MaxRetries => "max_retries",
            Key::Timeout => "timeout",
            Key::Backoff => "backoff",
            Key::Jitter => "jitter",
            Key::Retry => "retry",
            Key::Guarantee => "guarantee",
            Key::IgnoreResult => "ignore_result",
            Key::Cron => "cron",
            Key::Every => "every",
            Key::Partitions => "partitions",
            Key::RateLimit => "rate_limit",
            Key::Burst => "burst",
            Key::Concurrency => "concurrency",
            Key::KeyedBy => "concurrency_key",
            Key::LimitGate => "limit_gate",
        }
    }
}

impl Parse for TaskArgs {
    /// Parses `key = value, ...`, reporting every bad key or value rather than the
    /// first one only, then the keys that do not go together. A token that breaks the
    /// `key = value` shape itself stops the parse.
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        match TaskArgs::parse_all(input)? {
            (args, None) => Ok(args),
            (_, Some(errors)) => Err(errors),
        }
    }
}

impl TaskArgs {
    /// Parses as [`TaskArgs::parse`] does, but keeps the keys whose values were good
    /// beside the errors, so that the expander can still report its own mistakes
    /// (a periodic task with call arguments) with them. `Err` only for a broken
    /// `key = value` shape.
    pub(crate) fn parse_all(input: ParseStream<'_>) -> syn::Result<(Self, Option<syn::Error>)> {
        let mut args = TaskArgs::default();
        let mut seen: Vec<(Key, Span)> = Vec::new();
        let mut errors: Option<syn::Error> = None;
        let mut report = |error: syn::Error| match &mut errors {
            Some(all) => all.combine(error),
            None => errors = Some(error),
        };

        while !input.is_empty() {
            let key = Key::parse(input);
            // `ignore_result` alone is a flag: `ignore_result = true` spelled short.
            let value: Option<Expr> = if input.peek(Token![=]) {
                input.parse::<Token![=]>()?;
                Some(input.parse()?)
            } else {
                None
            };
            match key {
                Err(unknown) => report(unknown),
                Ok((key, span)) if seen.iter().any(|(k, _)| *k == key) => report(syn::Error::new(
                    span,
                    format!("duplicate #[task] key `{}`", key.as_str()),
                )),
                Ok((key, span)) => {
                    seen.push((key, span));
                    if let Err(error) = args.set(key, value.as_ref(), span) {
                        report(error);
                    }
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        for error in mismatched(&seen) {
            report(error);
        }
        Ok((args, errors))
    }
}

/// The keys that do not go together, each reported at the key that has to go:
/// `max_retries`, `backoff` or `jitter` beside `retry` (whose policy already says
/// them), `jitter` without a `backoff` to spread, and the second of `cron` and
/// `every`. A key whose value was refused still counts as given, so that its one
/// mistake is not reported twice.
fn mismatched(seen: &[(Key, Span)]) -> Vec<syn::Error> {
    let has = |key: Key| seen.iter().any(|(k, _)| *k == key);
    let mut errors = Vec::new();
    for (index, &(key, span)) in seen.iter().enumerate() {
        let before = |other: Key| seen[..index].iter().any(|(k, _)| *k == other);
        let message = match key {
            // `seen` holds no key twice, so this is the second of the two.
            Key::Cron | Key::Every if before(Key::Cron) || before(Key::Every) => {
                "a task fires on one schedule: keep `cron` or `every`"
            }
            Key::MaxRetries if has(Key::Retry) => {
                "`retry` sets the whole retry policy, so `max_retries` cannot go beside it: \
                 set the limit in the policy that function returns, as in \
                 `RetryPolicy::new(5, backoff)`"
            }
            Key::Backoff if has(Key::Retry) => {
                "`retry` sets the whole retry policy, so `backoff` cannot go beside it: \
                 set the backoff in the policy that function returns, as in \
                 `RetryPolicy::new(5, backoff)`"
            }
            Key::Jitter if has(Key::Retry) => {
                "`retry` sets the whole retry policy, so `jitter` cannot go beside it: \
                 give the policy's backoff its jitter, as in \
                 `backoff.with_jitter(Jitter::Full)`"
            }
            Key::Burst if !has(Key::RateLimit) => {
                "`burst` is how many jobs may start at once under the task's `rate_limit`, \
                 and this task sets none: add one, as in `rate_limit = \"10/s\", burst = 5`"
            }
            Key::KeyedBy if !has(Key::Concurrency) && !has(Key::RateLimit) => {
                "`concurrency_key` applies the task's limits per key, and this task sets \
                 none: add one, as in `concurrency = 3, concurrency_key = tenant`"
            }
            Key::LimitGate if !has(Key::Concurrency) && !has(Key::RateLimit) => {
                "`limit_gate` makes tasks share their limits, and this task sets none: add \
                 them, as in `concurrency = 3, limit_gate = \"mail\"` (the same on every \
                 task that names the gate)"
            }
            Key::Jitter if !has(Key::Backoff) => {
                "`jitter` spreads the delays of the task's `backoff`, and this task sets \
                 none: add one, as in `backoff = \"exponential\", jitter = \"full\"`"
            }
            _ => continue,
        };
        errors.push(syn::Error::new(span, message));
    }
    errors
}

impl TaskArgs {
    /// Sets `key` from `value`, or says why the value does not fit the key.
    fn set(&mut self, key: Key, value: Option<&Expr>, span: Span) -> syn::Result<()> {
        let Some(value) = value else {
            if key == Key::IgnoreResult {
                self.ignore_result = true;
                return Ok(());
            }
            let key = key.as_str();
            return Err(syn::Error::new(span, format!("`{key}` needs a value: `{key} = ...`")));
        };
        match key {
            Key::Name => self.name = Some(non_empty_string(key, value)?),
            Key::Queue => self.queue = Some(non_empty_string(key, value)?),
            Key::MaxRetries => self.max_retries = Some(retries(value)?),
            Key::Timeout => self.timeout = Some(timeout(value)?),
            Key::Backoff => self.backoff = Some(backoff(value)?),
            Key::Jitter => self.jitter = Some(jitter(value)?),
            Key::Retry => self.retry = Some(policy_fn(value)?),
            Key::Guarantee => self.guarantee = Some(guarantee(value)?),
            Key::Cron => self.periodic = Some(Periodic { schedule: cron(value)?, key: span }),
            Key::Every => self.periodic = Some(Periodic { schedule: every(value)?, key: span }),
            Key::Partitions => self.partitions = Some(partitions(value)?),
            Key::RateLimit => self.rate_limit = Some(rate_limit(value)?),
            Key::Burst => self.burst = Some(at_least_one(key, value)?),
            Key::Concurrency => self.concurrency = Some(at_least_one(key, value)?),
            Key::KeyedBy => self.concurrency_key = Some(argument_name(value)?),
            Key::LimitGate => self.limit_gate = Some(non_empty_string(key, value)?),
            Key::IgnoreResult => match literal(value) {
                Some(Lit::Bool(flag)) => self.ignore_result = flag.value,
                _ => {
                    return Err(syn::Error::new_spanned(
                        value,
                        "`ignore_result` takes `true` or `false`, or stands alone: `#[task(ignore_result)]`",
                    ));
                }
            },
        }
        Ok(())
    }
}

fn literal(value: &Expr) -> Option<&Lit> {
    match value {
        Expr::Lit(ExprLit { lit, attrs }) if attrs.is_empty() => Some(lit),
        _ => None,
    }
}

fn non_empty_string(key: Key, value: &Expr) -> syn::Result<String> {
    let key = key.as_str();
    let Some(Lit::Str(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            format!("`{key}` takes a string literal, as in `{key} = \"emails\"`"),
        ));
    };
    let text = lit.value();
    if text.trim().is_empty() {
        return Err(syn::Error::new(lit.span(), format!("a task's `{key}` cannot be empty")));
    }
    Ok(text)
}

fn retries(value: &Expr) -> syn::Result<u32> {
    let Some(Lit::Int(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            "`max_retries` takes an integer literal, as in `max_retries = 5`",
        ));
    };
    lit.base10_parse::<u32>().map_err(|e| {
        syn::Error::new(
            lit.span(),
            format!("`max_retries` must fit in a u32 (0 to {}): {e}", u32::MAX),
        )
    })
}

/// `rate_limit = "100/s"`: checked with the rules dmq-core reads it by.
fn rate_limit(value: &Expr) -> syn::Result<String> {
    let Some(Lit::Str(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            "`rate_limit` takes a string literal, as in `rate_limit = \"100/s\"`",
        ));
    };
    let text = lit.value();
    dmq_rules::parse_rate(&text).map_err(|e| syn::Error::new(lit.span(), e))?;
    Ok(text)
}

/// `burst = 5`, `concurrency = 3`: a whole number from 1.
fn at_least_one(key: Key, value: &Expr) -> syn::Result<u32> {
    let key = key.as_str();
    let Some(Lit::Int(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            format!("`{key}` takes an integer literal, as in `{key} = 3`"),
        ));
    };
    match lit.base10_parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(syn::Error::new(
            lit.span(),
            format!("`{key}` must be 1 to {}, as in `{key} = 3`", u32::MAX),
        )),
    }
}

/// `concurrency_key = tenant`: the name of one of the task's arguments.
fn argument_name(value: &Expr) -> syn::Result<Ident> {
    match value {
        Expr::Path(ExprPath { path, qself: None, attrs }) if attrs.is_empty() => {
            path.get_ident().cloned().ok_or_else(|| {
                syn::Error::new_spanned(
                    value,
                    "`concurrency_key` takes the name of one of the task's arguments, as in \
                     `concurrency_key = tenant`",
                )
            })
        }
        _ => Err(syn::Error::new_spanned(
            value,
            "`concurrency_key` takes the name of one of the task's arguments, as in \
             `concurrency_key = tenant` (its value, as text, is the key)",
        )),
    }
}

/// dmq-core's `MAX_PARTITIONS`.
const MAX_PARTITIONS: u16 = 1024;

fn partitions(value: &Expr) -> syn::Result<u16> {
    let Some(Lit::Int(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            "`partitions` takes an integer literal, as in `partitions = 8`",
        ));
    };
    match lit.base10_parse::<u16>() {
        Ok(n) if (1..=MAX_PARTITIONS).contains(&n) => Ok(n),
        _ => Err(syn::Error::new(
            lit.span(),
            format!("`partitions` must be 1 to {MAX_PARTITIONS}, as in `partitions = 8`"),
        )),
    }
}

/// Reads a duration as `timeout`, `backoff` and `every` write them (humantime: `"250ms"`,
/// `"30s"`, `"1h 30m"`); `what` names it in the error.
fn duration(what: &str, text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| {
        format!(
            "{what} {text:?} is not a duration: {e}; write one such as \"30s\", \"5m\", \"1h 30m\" or \"250ms\""
        )
    })
}

fn timeout(value: &Expr) -> syn::Result<Duration> {
    let Some(Lit::Str(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            "`timeout` takes a duration string, as in `timeout = \"30s\"`",
        ));
    };
    let duration = duration("timeout", &lit.value()).map_err(|e| syn::Error::new(lit.span(), e))?;
    if duration.is_zero() {
        return Err(syn::Error::new(
            lit.span(),
            "a zero timeout would fail every run; leave `timeout` out for no limit",
        ));
    }
    Ok(duration)
}

/// `cron = "..."`, checked for its shape: the fields themselves are read by
/// `Schedule::cron` when the manager is built.
fn cron(value: &Expr) -> syn::Result<Schedule> {
    let Some(Lit::Str(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            format!("`cron` takes a string, as in `cron = \"0 */4 * * *\"`: {CRON_FORMS}"),
        ));
    };
    let text = lit.value();
    cron_shape(&text).map_err(|e| syn::Error::new(lit.span(), e))?;
    Ok(Schedule::Cron(text))
}

/// Checks the shape of a cron expression with the rules `Schedule::cron` applies
/// ([`dmq_rules::cron_shape`]).
fn cron_shape(text: &str) -> Result<(), String> {
    use dmq_rules::CronShapeError;
    match dmq_rules::cron_shape(text) {
        Ok(_) => Ok(()),
        Err(CronShapeError::FieldCount(0)) => {
            Err(format!("a task's `cron` cannot be empty; write {CRON_FORMS}"))
        }
        Err(CronShapeError::UnknownShorthand(word)) => {
            Err(format!("unknown cron macro {word:?}; write {CRON_FORMS}"))
        }
        Err(CronShapeError::FieldCount(1)) => {
            Err(format!("cron {text:?} has 1 field; write {CRON_FORMS}"))
        }
        Err(CronShapeError::FieldCount(n)) => {
            Err(format!("cron {text:?} has {n} fields; write {CRON_FORMS}"))
        }
    }
}

/// `every = "..."`: a duration as `timeout` writes it, of at least 1 ms and whole
/// milliseconds, as `Schedule::every` takes it.
fn every(value: &Expr) -> syn::Result<Schedule> {
    let Some(Lit::Str(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            "`every` takes a duration string, as in `every = \"5m\"`",
        ));
    };
    let text = lit.value();
    let interval = duration("the interval", &text).map_err(|e| syn::Error::new(lit.span(), e))?;
    if interval < Duration::from_millis(1) {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "a task cannot fire every {text:?}: the interval must be at least 1ms, as in \
                 `every = \"5m\"`"
            ),
        ));
    }
    if interval.subsec_nanos() % 1_000_000 != 0 {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "the interval {text:?} is not a whole number of milliseconds, which is what \
                 a schedule counts in"
            ),
        ));
    }
    Ok(Schedule::Every(interval))
}

fn backoff(value: &Expr) -> syn::Result<Backoff> {
    let Some(Lit::Str(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(
            value,
            format!("`backoff` takes a string, one of: {BACKOFF_FORMS}"),
        ));
    };
    Backoff::parse(&lit.value()).map_err(|e| syn::Error::new(lit.span(), e))
}

impl Backoff {
    /// dmq-core's `Backoff::default()`, which `"exponential"` alone stands for.
    pub(crate) const DEFAULT: Backoff = Backoff::Exponential {
        base_ms: dmq_rules::DEFAULT_BACKOFF_BASE_MS,
        factor: dmq_rules::DEFAULT_BACKOFF_FACTOR,
        max_ms: dmq_rules::DEFAULT_BACKOFF_MAX_MS,
    };

    /// Reads `"fixed(30s)"`, `"linear(1s, 5s, 1m)"`, `"exponential(1s, 2, 10m)"` or
    /// `"exponential"`, refusing what dmq-core's constructors refuse: a factor below 1
    /// or not a number, a longest delay below the first or over a week.
    fn parse(text: &str) -> Result<Backoff, String> {
        let not_a_form = || format!("backoff {text:?} is not one of the forms: {BACKOFF_FORMS}");
        let trimmed = text.trim();
        let Some((kind, rest)) = trimmed.split_once('(') else {
            return match trimmed {
                "exponential" => Ok(Backoff::DEFAULT),
                "fixed" => Err("a fixed backoff needs its delay: write \"fixed(30s)\"".to_owned()),
                "linear" => Err("a linear backoff needs its first delay, step and longest delay: \
                     write \"linear(1s, 5s, 1m)\" (base, step, max)"
                    .to_owned()),
                _ => Err(not_a_form()),
            };
        };
        let Some(inside) = rest.trim_end().strip_suffix(')') else {
            return Err(not_a_form());
        };
        let args: Vec<&str> = if inside.trim().is_empty() {
            Vec::new()
        } else {
            inside.split(',').map(str::trim).collect()
        };
        match kind.trim_end() {
            "fixed" => {
                let [delay] = args[..] else {
                    return Err(arity(
                        "fixed",
                        "one argument, the delay",
                        "fixed(30s)",
                        args.len(),
                    ));
                };
                let delay = whole_millis("delay", delay)?;
                if delay > MAX_BACKOFF {
                    return Err(over_a_week("delay", args[0]));
                }
                Ok(Backoff::Fixed { delay_ms: millis(delay) })
            }
            "linear" => {
                let [base_text, step, max_text] = args[..] else {
                    return Err(arity(
                        "linear",
                        "three arguments, base, step and max",
                        "linear(1s, 5s, 1m)",
                        args.len(),
                    ));
                };
                let base = whole_millis("first delay (base)", base_text)?;
                let step = whole_millis("step", step)?;
                let max = whole_millis("longest delay (max)", max_text)?;
                check_range(base, base_text, max, max_text)?;
                Ok(Backoff::Linear {
                    base_ms: millis(base),
                    step_ms: millis(step),
                    max_ms: millis(max),
                })
            }
            "exponential" => {
                let [base_text, factor, max_text] = args[..] else {
                    return Err(arity(
                        "exponential",
                        "three arguments, base, factor and max",
                        "exponential(1s, 2, 10m)",
                        args.len(),
                    ));
                };
                let base = whole_millis("first delay (base)", base_text)?;
                if base.is_zero() {
                    return Err(format!(
                        "an exponential backoff's first delay (base) must be above zero, not \
                         {base_text:?}: every delay is a multiple of it (for no wait at all, use \
                         \"fixed(0s)\")"
                    ));
                }
                let factor = match factor.parse::<f64>() {
                    Ok(f) if f.is_finite() && f >= 1.0 => f,
                    _ => {
                        return Err(format!(
                            "an exponential backoff's factor must be a number of at least 1 \
                             (2 doubles the delay with each retry), not {factor:?}"
                        ));
                    }
                };
                let max = whole_millis("longest delay (max)", max_text)?;
                check_range(base, base_text, max, max_text)?;
                Ok(Backoff::Exponential { base_ms: millis(base), factor, max_ms: millis(max) })
            }
            _ => Err(not_a_form()),
        }
    }
}

fn arity(kind: &str, takes: &str, example: &str, found: usize) -> String {
    format!("\"{kind}(..)\" takes {takes}, as in {example:?}; this one has {found}")
}

/// A backoff's duration argument, which must be whole milliseconds: that is what a
/// `Backoff` keeps.
fn whole_millis(what: &str, text: &str) -> Result<Duration, String> {
    let d = duration(&format!("the backoff's {what}"), text)?;
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "the backoff's {what} {text:?} is not a whole number of milliseconds, which is \
             what a backoff counts in"
        ));
    }
    Ok(d)
}

fn check_range(
    base: Duration,
    base_text: &str,
    max: Duration,
    max_text: &str,
) -> Result<(), String> {
    if max < base {
        return Err(format!(
            "the backoff's longest delay (max) {max_text:?} is shorter than its first \
             delay (base) {base_text:?}; max must be at least base"
        ));
    }
    if max > MAX_BACKOFF {
        return Err(over_a_week("longest delay (max)", max_text));
    }
    Ok(())
}

fn over_a_week(what: &str, text: &str) -> String {
    format!("the backoff's {what} {text:?} is over a week, the longest dmq waits before a retry")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn jitter(value: &Expr) -> syn::Result<Jitter> {
    const FORMS: &str = "\"none\" (exactly the backoff's delay), \"full\" (anywhere from zero \
                         to it) or \"equal\" (from half of it to all of it)";
    let Some(Lit::Str(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(value, format!("`jitter` takes a string: {FORMS}")));
    };
    let text = lit.value();
    match text.trim().to_ascii_lowercase().as_str() {
        "none" => Ok(Jitter::None),
        "full" => Ok(Jitter::Full),
        "equal" => Ok(Jitter::Equal),
        _ => Err(syn::Error::new(lit.span(), format!("unknown jitter {text:?}; use {FORMS}"))),
    }
}

fn guarantee(value: &Expr) -> syn::Result<Guarantee> {
    const FORMS: &str = "\"at-most-once\", \"at-least-once\" or \"exactly-once\"";
    let Some(Lit::Str(lit)) = literal(value) else {
        return Err(syn::Error::new_spanned(value, format!("`guarantee` takes a string: {FORMS}")));
    };
    let text = lit.value();
    match text.trim().replace('_', "-").to_ascii_lowercase().as_str() {
        "at-most-once" => Ok(Guarantee::AtMostOnce),
        "at-least-once" => Ok(Guarantee::AtLeastOnce),
        "exactly-once" => Ok(Guarantee::ExactlyOnce),
        _ => Err(syn::Error::new(
            lit.span(),
            format!("unknown delivery guarantee {text:?}; use {FORMS}"),
        )),
    }
}

fn policy_fn(value: &Expr) -> syn::Result<PolicyFn> {
    match value {
        Expr::Path(ExprPath { attrs, qself: None, path }) if attrs.is_empty() => {
            Ok(PolicyFn(path.clone()))
        }
        Expr::Call(ExprCall { func, args, .. }) if args.is_empty() => match &**func {
            Expr::Path(ExprPath { qself: None, path, .. }) => Err(syn::Error::new_spanned(
                value,
                format!(
                    "`retry` names the policy function without calling it: write `retry = {}`; \
                     the worker calls it when a run fails",
                    path_text(path)
                ),
            )),
            _ => Err(not_a_path(value)),
        },
        _ => Err(not_a_path(value)),
    }
}

fn not_a_path(value: &Expr) -> syn::Error {
    syn::Error::new_spanned(
        value,
        "`retry` takes the path of a `fn() -> RetryPolicy`, as in `retry = policies::emails`",
    )
}

/// `a::b::c` as written, without the spaces of a token stream's `Display`.
fn path_text(path: &Path) -> String {
    let segments = path.segments.iter().map(|s| s.to_token_stream().to_string().replace(' ', ""));
    let joined = segments.collect::<Vec<_>>().join("::");
    if path.leading_colon.is_some() { format!("::{joined}") } else { joined }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> syn::Result<TaskArgs> {
        syn::parse_str(text)
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(args) => panic!("{text:?} parsed as {args:?}"),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join(" | "),
        }
    }

    fn backoff_of(text: &str) -> Backoff {
        match parse(&format!("backoff = {text:?}")) {
            Ok(args) => args.backoff.unwrap(),
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    fn backoff_error(text: &str) -> String {
        error(&format!("backoff = {text:?}"))
    }

    #[test]
    fn no_arguments_leave_every_key_unset() {
        assert_eq!(parse("").unwrap(), TaskArgs::default());
    }

    #[test]
    fn every_key_is_read() {
        let args = parse(
            r#"name = "emails.send", queue = "emails", max_retries = 5, timeout = "30s",
               backoff = "fixed(2s)", jitter = "full", guarantee = "exactly-once",
               rate_limit = "100/s", burst = 10, concurrency = 3, concurrency_key = tenant,
               limit_gate = "mail","#,
        )
        .unwrap();
        assert_eq!(
            args,
            TaskArgs {
                name: Some("emails.send".to_owned()),
                queue: Some("emails".to_owned()),
                max_retries: Some(5),
                timeout: Some(Duration::from_secs(30)),
                backoff: Some(Backoff::Fixed { delay_ms: 2_000 }),
                jitter: Some(Jitter::Full),
                retry: None,
                guarantee: Some(Guarantee::ExactlyOnce),
                ignore_result: false,
                periodic: None,
                partitions: None,
                rate_limit: Some("100/s".to_owned()),
                burst: Some(10),
                concurrency: Some(3),
                concurrency_key: Some(syn::parse_str("tenant").unwrap()),
                limit_gate: Some("mail".to_owned()),
            }
        );
        let args = parse("retry = crate::policies::emails, ignore_result").unwrap();
        assert_eq!(args.retry, Some(PolicyFn(syn::parse_str("crate::policies::emails").unwrap())));
        assert!(args.ignore_result);
    }

    #[test]
    fn durations_are_read_as_humantime() {
        let read = |text: &str| parse(&format!("timeout = {text:?}")).unwrap().timeout;
        assert_eq!(read("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(read("5m"), Some(Duration::from_secs(300)));
        assert_eq!(read("1h 30m"), Some(Duration::from_secs(5400)));
        assert_eq!(read("2days"), Some(Duration::from_secs(2 * 86_400)));
    }

    #[test]
    fn a_bad_or_zero_duration_is_refused() {
        assert!(error(r#"timeout = "30 parsecs""#).contains("is not a duration"));
        assert!(error(r#"timeout = "soon""#).contains("\"30s\""));
        assert!(error(r#"timeout = "0s""#).contains("zero timeout"));
        assert!(error("timeout = 30").contains("duration string"));
    }

    #[test]
    fn the_three_backoff_forms_are_read_in_milliseconds() {
        assert_eq!(backoff_of("fixed(30s)"), Backoff::Fixed { delay_ms: 30_000 });
        assert_eq!(
            backoff_of("linear(1s, 5s, 1m)"),
            Backoff::Linear { base_ms: 1_000, step_ms: 5_000, max_ms: 60_000 }
        );
        assert_eq!(
            backoff_of("exponential(500ms, 1.5, 1h 30m)"),
            Backoff::Exponential { base_ms: 500, factor: 1.5, max_ms: 5_400_000 }
        );
        // Spaces are free, a factor may be an integer, and a zero delay is allowed
        // (as `Backoff::fixed(Duration::ZERO)` is).
        assert_eq!(
            backoff_of(" exponential ( 1s ,2,10m ) "),
            Backoff::Exponential { base_ms: 1_000, factor: 2.0, max_ms: 600_000 }
        );
        assert_eq!(backoff_of("fixed(0s)"), Backoff::Fixed { delay_ms: 0 });
        assert!(backoff_error("exponential(0s, 2, 1m)").contains("must be above zero"));
        // Exactly a week is the longest allowed.
        assert_eq!(backoff_of("fixed(1week)"), Backoff::Fixed { delay_ms: 604_800_000 });
        assert_eq!(
            backoff_of("linear(1week, 0s, 7days)"),
            Backoff::Linear { base_ms: 604_800_000, step_ms: 0, max_ms: 604_800_000 }
        );
    }

    #[test]
    fn exponential_alone_is_the_default_backoff() {
        assert_eq!(backoff_of("exponential"), Backoff::DEFAULT);
        assert_eq!(
            Backoff::DEFAULT,
            Backoff::Exponential { base_ms: 1_000, factor: 2.0, max_ms: 600_000 }
        );
    }

    #[test]
    fn fixed_or_linear_alone_asks_for_the_delays() {
        assert_eq!(backoff_error("fixed"), "a fixed backoff needs its delay: write \"fixed(30s)\"");
        assert_eq!(
            backoff_error("linear"),
            "a linear backoff needs its first delay, step and longest delay: write \
             \"linear(1s, 5s, 1m)\" (base, step, max)"
        );
    }

    #[test]
    fn an_unknown_backoff_form_lists_the_forms() {
        let expected = "backoff \"quadratic(1s)\" is not one of the forms: \"fixed(30s)\", \
                        \"linear(1s, 5s, 1m)\" (base, step, max), \"exponential(1s, 2, 10m)\" \
                        (base, factor, max), or \"exponential\" alone (1s, doubling up to 10m)";
        assert_eq!(backoff_error("quadratic(1s)"), expected);
        for text in ["", "30s", "exponential(1s, 2, 10m", "fixed(1s) + 1", "Fixed(1s)"] {
            assert!(backoff_error(text).contains("is not one of the forms"), "{text}");
        }
        assert_eq!(
            error("backoff = 30"),
            format!("`backoff` takes a string, one of: {BACKOFF_FORMS}")
        );
    }

    #[test]
    fn a_backoff_with_the_wrong_number_of_arguments_says_what_it_takes() {
        assert_eq!(
            backoff_error("fixed(1s, 2s)"),
            "\"fixed(..)\" takes one argument, the delay, as in \"fixed(30s)\"; this one has 2"
        );
        assert_eq!(
            backoff_error("linear(1s, 1m)"),
            "\"linear(..)\" takes three arguments, base, step and max, as in \
             \"linear(1s, 5s, 1m)\"; this one has 2"
        );
        assert!(
            backoff_error("exponential()").ends_with("\"exponential(1s, 2, 10m)\"; this one has 0")
        );
    }

    #[test]
    fn a_backoff_duration_that_does_not_parse_is_named_by_its_role() {
        let e = backoff_error("fixed(30 parsecs)");
        assert!(e.starts_with("the backoff's delay \"30 parsecs\" is not a duration: "), "{e}");
        assert!(e.ends_with("write one such as \"30s\", \"5m\", \"1h 30m\" or \"250ms\""), "{e}");
        assert!(backoff_error("linear(1s, soon, 1m)").starts_with("the backoff's step \"soon\""));
        assert!(
            backoff_error("exponential(x, 2, 1m)")
                .starts_with("the backoff's first delay (base) \"x\"")
        );
        assert!(
            backoff_error("exponential(1s, 2, )")
                .starts_with("the backoff's longest delay (max) \"\"")
        );
        assert_eq!(
            backoff_error("fixed(1500us)"),
            "the backoff's delay \"1500us\" is not a whole number of milliseconds, which is \
             what a backoff counts in"
        );
    }

    #[test]
    fn a_factor_below_one_or_not_a_number_is_refused() {
        for factor in ["0.5", "0", "-2", "NaN", "inf", "1e400", "two"] {
            assert_eq!(
                backoff_error(&format!("exponential(1s, {factor}, 1m)")),
                format!(
                    "an exponential backoff's factor must be a number of at least 1 (2 doubles \
                     the delay with each retry), not {factor:?}"
                )
            );
        }
        assert_eq!(
            backoff_of("exponential(1s, 1, 1m)"),
            Backoff::Exponential { base_ms: 1_000, factor: 1.0, max_ms: 60_000 }
        );
    }

    #[test]
    fn a_longest_delay_below_the_first_or_over_a_week_is_refused() {
        assert_eq!(
            backoff_error("exponential(10s, 2, 1s)"),
            "the backoff's longest delay (max) \"1s\" is shorter than its first delay (base) \
             \"10s\"; max must be at least base"
        );
        assert!(backoff_error("linear(1m, 1s, 30s)").contains("shorter than its first"));
        assert_eq!(
            backoff_error("exponential(1s, 2, 8days)"),
            "the backoff's longest delay (max) \"8days\" is over a week, the longest dmq waits \
             before a retry"
        );
        assert_eq!(
            backoff_error("fixed(7days 1ms)"),
            "the backoff's delay \"7days 1ms\" is over a week, the longest dmq waits before a retry"
        );
    }

    #[test]
    fn jitter_is_read_and_needs_a_backoff() {
        let read = |text: &str| parse(&format!("backoff = \"exponential\", jitter = {text:?}"));
        assert_eq!(read("none").unwrap().jitter, Some(Jitter::None));
        assert_eq!(read("full").unwrap().jitter, Some(Jitter::Full));
        assert_eq!(read("Equal").unwrap().jitter, Some(Jitter::Equal));
        assert_eq!(
            error(r#"backoff = "exponential", jitter = "half""#),
            "unknown jitter \"half\"; use \"none\" (exactly the backoff's delay), \"full\" \
             (anywhere from zero to it) or \"equal\" (from half of it to all of it)"
        );
        assert!(
            error(r#"backoff = "exponential", jitter = full"#)
                .starts_with("`jitter` takes a string")
        );
        assert_eq!(
            error(r#"max_retries = 3, jitter = "full""#),
            "`jitter` spreads the delays of the task's `backoff`, and this task sets none: add \
             one, as in `backoff = \"exponential\", jitter = \"full\"`"
        );
        // A backoff that was refused still counts: its one mistake is reported once.
        assert!(!error(r#"backoff = "fixed", jitter = "full""#).contains("`jitter`"));
    }

    #[test]
    fn guarantee_takes_the_three_names_with_dashes_or_underscores() {
        let read = |text: &str| parse(&format!("guarantee = {text:?}")).unwrap().guarantee;
        assert_eq!(read("at-most-once"), Some(Guarantee::AtMostOnce));
        assert_eq!(read("at_least_once"), Some(Guarantee::AtLeastOnce));
        assert_eq!(read("Exactly_Once"), Some(Guarantee::ExactlyOnce));
        assert_eq!(
            error(r#"guarantee = "twice""#),
            "unknown delivery guarantee \"twice\"; use \"at-most-once\", \"at-least-once\" or \
             \"exactly-once\""
        );
        assert!(error("guarantee = exactly_once").starts_with("`guarantee` takes a string"));
    }

    #[test]
    fn retry_takes_a_path_not_a_call_or_a_string() {
        let path = |text: &str| parse(&format!("retry = {text}")).unwrap().retry.unwrap();
        assert_eq!(path("policy"), PolicyFn(syn::parse_str("policy").unwrap()));
        assert_eq!(path("super::p::emails"), PolicyFn(syn::parse_str("super::p::emails").unwrap()));
        assert_eq!(
            error("retry = policies::emails()"),
            "`retry` names the policy function without calling it: write \
             `retry = policies::emails`; the worker calls it when a run fails"
        );
        for text in [r#""policies::emails""#, "|| policy()", "make(3)"] {
            assert_eq!(
                error(&format!("retry = {text}")),
                "`retry` takes the path of a `fn() -> RetryPolicy`, as in \
                 `retry = policies::emails`",
                "{text}"
            );
        }
    }

    #[test]
    fn retry_beside_the_keys_it_sets_is_refused_at_each_of_them() {
        assert_eq!(
            error("retry = policy, max_retries = 3"),
            "`retry` sets the whole retry policy, so `max_retries` cannot go beside it: set the \
             limit in the policy that function returns, as in `RetryPolicy::new(5, backoff)`"
        );
        assert_eq!(
            error(r#"backoff = "fixed(1s)", retry = policy"#),
            "`retry` sets the whole retry policy, so `backoff` cannot go beside it: set the \
             backoff in the policy that function returns, as in `RetryPolicy::new(5, backoff)`"
        );
        // Jitter beside `retry` is one mistake, not also "jitter without a backoff".
        assert_eq!(
            error(r#"retry = policy, jitter = "full""#),
            "`retry` sets the whole retry policy, so `jitter` cannot go beside it: give the \
             policy's backoff its jitter, as in `backoff.with_jitter(Jitter::Full)`"
        );
        assert_eq!(
            error(r#"retry = policy, max_retries = 1, backoff = "exponential", jitter = "full""#)
                .matches(" | ")
                .count(),
            2
        );
        // `guarantee`, `timeout` and the rest are not part of the policy.
        assert!(parse(r#"retry = policy, guarantee = "at-most-once", timeout = "1s""#).is_ok());
    }

    #[test]
    fn an_unknown_key_lists_the_known_ones() {
        assert_eq!(
            error(r#"queue = "q", retries = 3"#),
            "unknown #[task] key `retries`; expected one of: name, queue, max_retries, timeout, \
             backoff, jitter, retry, guarantee, ignore_result, cron, every, partitions, \
             rate_limit, burst, concurrency, concurrency_key, limit_gate"
        );
        // A Rust keyword is reported as an unknown key too, not as a syntax error.
        assert!(error(r#"type = "x""#).starts_with("unknown #[task] key `type`"));
    }

    fn schedule(text: &str) -> Schedule {
        match parse(text) {
            Ok(args) => args.periodic.expect("a schedule").schedule,
            Err(e) => panic!("{text:?}: {e}"),
        }
    }

    fn cron_of(text: &str) -> Schedule {
        schedule(&format!("cron = {text:?}"))
    }

    const FORMS: &str = "write five fields (minute hour day-of-month month day-of-week, as in \
                         \"0 */4 * * *\"), six or seven (a second first, an optional year \
                         last, as in \"0 0 */4 * * *\"), or one of @yearly, @annually, \
                         @monthly, @weekly, @daily, @midnight, @hourly";

    #[test]
    fn cron_takes_five_six_or_seven_fields_as_written() {
        for text in ["0 */4 * * *", "0 0 */4 * * *", "0 0 12 1 JAN-JUN ? 2030", "  0\t9 * * 1-5 "] {
            assert_eq!(cron_of(text), Schedule::Cron(text.to_owned()), "{text}");
        }
        // Only the shape is checked: the fields are read when the manager is built.
        assert_eq!(cron_of("a b c d e"), Schedule::Cron("a b c d e".to_owned()));
    }

    #[test]
    fn cron_takes_the_macros() {
        for text in [
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
            " @daily ",
            // In any case, as `Schedule::cron` reads them (the two used to disagree).
            "@Hourly",
        ] {
            assert_eq!(cron_of(text), Schedule::Cron(text.to_owned()), "{text}");
        }
    }

    /// The forms the error messages list name every shorthand `Schedule::cron` takes.
    #[test]
    fn the_listed_forms_name_every_shorthand() {
        for (name, _) in dmq_rules::CRON_SHORTHANDS {
            assert!(CRON_FORMS.contains(name), "{name} missing from {CRON_FORMS}");
        }
    }

    #[test]
    fn a_cron_of_another_shape_lists_the_forms() {
        assert_eq!(error(r#"cron = "0 */4 *""#), format!("cron \"0 */4 *\" has 3 fields; {FORMS}"));
        assert_eq!(
            error(r#"cron = "0 0 0 1 1 ? 2030 x""#),
            format!("cron \"0 0 0 1 1 ? 2030 x\" has 8 fields; {FORMS}")
        );
        assert_eq!(error(r#"cron = "hourly""#), format!("cron \"hourly\" has 1 field; {FORMS}"));
        assert_eq!(
            error(r#"cron = "@minutely""#),
            format!("unknown cron macro \"@minutely\"; {FORMS}")
        );
        assert!(error(r#"cron = "@hourly 5""#).contains("has 2 fields"));
        for text in ["", "   "] {
            assert_eq!(
                error(&format!("cron = {text:?}")),
                format!("a task's `cron` cannot be empty; {FORMS}")
            );
        }
        assert!(
            error("cron = 5")
                .starts_with("`cron` takes a string, as in `cron = \"0 */4 * * *\"`: five fields")
        );
        assert!(error("cron = hourly").starts_with("`cron` takes a string"));
    }

    #[test]
    fn every_is_a_duration_in_whole_milliseconds() {
        let every = |text: &str| schedule(&format!("every = {text:?}"));
        assert_eq!(every("5m"), Schedule::Every(Duration::from_secs(300)));
        assert_eq!(every("1h 30m"), Schedule::Every(Duration::from_secs(5400)));
        assert_eq!(every("1ms"), Schedule::Every(Duration::from_millis(1)));
        assert_eq!(every("1500ms"), Schedule::Every(Duration::from_millis(1500)));
    }

    #[test]
    fn every_refuses_what_a_schedule_cannot_keep() {
        let e = error(r#"every = "soon""#);
        assert!(e.starts_with("the interval \"soon\" is not a duration: "), "{e}");
        assert!(e.ends_with("write one such as \"30s\", \"5m\", \"1h 30m\" or \"250ms\""), "{e}");
        for text in ["0s", "999us", "0ms"] {
            assert_eq!(
                error(&format!("every = {text:?}")),
                format!(
                    "a task cannot fire every {text:?}: the interval must be at least 1ms, as \
                     in `every = \"5m\"`"
                )
            );
        }
        assert_eq!(
            error(r#"every = "1500us""#),
            "the interval \"1500us\" is not a whole number of milliseconds, which is what a \
             schedule counts in"
        );
        assert_eq!(error("every = 300"), "`every` takes a duration string, as in `every = \"5m\"`");
    }

    #[test]
    fn a_task_fires_on_one_schedule() {
        let one = "a task fires on one schedule: keep `cron` or `every`";
        assert_eq!(error(r#"cron = "@daily", every = "1d""#), one);
        assert_eq!(error(r#"every = "1d", cron = "@daily""#), one);
        // Reported once, however the two are spelled, and a refused value still counts.
        assert_eq!(error(r#"every = "0s", cron = "@daily""#).matches(one).count(), 1);
        assert_eq!(error(r#"cron = "x", every = "1d""#).matches(" | ").count(), 1);
        // A key's span is kept for the expander, which knows the arguments.
        let args = parse(r#"queue = "q", every = "5m""#).unwrap();
        assert_eq!(args.periodic.map(|p| p.schedule.key()), Some("every"));
        assert_eq!(parse(r#"cron = "@daily""#).unwrap().periodic.unwrap().schedule.key(), "cron");
    }

    #[test]
    fn parse_all_keeps_the_good_keys_beside_the_errors() {
        let (args, errors) =
            syn::parse::Parser::parse_str(TaskArgs::parse_all, r#"cron = "@daily", colour = 1"#)
                .unwrap();
        assert_eq!(args.periodic.unwrap().schedule, Schedule::Cron("@daily".to_owned()));
        assert!(errors.unwrap().to_string().starts_with("unknown #[task] key `colour`"));
    }

    #[test]
    fn a_duplicate_key_is_refused() {
        assert_eq!(error(r#"queue = "a", queue = "b""#), "duplicate #[task] key `queue`");
        assert_eq!(
            error(r#"backoff = "exponential", backoff = "fixed(1s)""#),
            "duplicate #[task] key `backoff`"
        );
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        assert_eq!(
            error(r#"nme = "x", max_retries = -1, timeout = "1 fortnight", nme = "y""#)
                .matches(" | ")
                .count(),
            3
        );
    }

    #[test]
    fn values_must_be_literals_of_the_right_kind() {
        assert!(error("name = emails").contains("`name` takes a string literal"));
        assert!(error(r#"queue = """#).contains("cannot be empty"));
        assert!(error(r#"max_retries = "5""#).contains("integer literal"));
        assert!(error("max_retries = 5_000_000_000").contains("fit in a u32"));
        assert_eq!(parse("max_retries = 0").unwrap().max_retries, Some(0));
    }

    #[test]
    fn flow_limits_are_checked_and_go_together() {
        assert!(error(r#"rate_limit = "100""#).contains("has no '/'"));
        assert!(error(r#"rate_limit = "0/s""#).contains("at least 1"));
        assert!(error(r#"rate_limit = "5/d""#).contains("unknown period unit"));
        assert!(error("rate_limit = 100").contains("string literal"));
        assert!(error("concurrency = 0").contains("must be 1 to"));
        assert!(error("burst = 5").contains("and this task sets none"));
        assert!(error("concurrency_key = tenant").contains("and this task sets none"));
        assert!(error(r#"limit_gate = "mail""#).contains("and this task sets none"));
        assert!(error(r#"concurrency = 1, limit_gate = """#).contains("cannot be empty"));
        assert!(error("concurrency = 1, limit_gate = mail").contains("string literal"));
        assert!(error(r#"concurrency = 2, concurrency_key = "tenant""#).contains("argument"));
        let args = parse(r#"rate_limit = "7/10s", concurrency = 2"#).unwrap();
        assert_eq!((args.rate_limit.as_deref(), args.concurrency), (Some("7/10s"), Some(2)));
    }

    #[test]
    fn partitions_is_a_count_from_1_to_1024() {
        assert_eq!(parse("queue = \"q\", partitions = 8").unwrap().partitions, Some(8));
        assert_eq!(parse("").unwrap().partitions, None);
        for bad in ["partitions = 0", "partitions = 1025", "partitions = \"8\"", "partitions = -1"]
        {
            assert!(error(bad).contains("`partitions`"), "{bad}: {}", error(bad));
        }
    }

    #[test]
    fn ignore_result_is_a_flag_or_a_bool() {
        assert!(parse("ignore_result").unwrap().ignore_result);
        assert!(parse("queue = \"q\", ignore_result").unwrap().ignore_result);
        assert!(!parse("ignore_result = false").unwrap().ignore_result);
        assert!(!parse("").unwrap().ignore_result);
        assert!(error("ignore_result = 1").contains("`true` or `false`"));
        assert!(error("queue").contains("`queue` needs a value"));
        assert!(error("retry").contains("`retry` needs a value"));
    }

    #[test]
    fn a_broken_shape_is_a_syntax_error() {
        assert!(parse("name").is_err());
        assert!(parse(r#"name = "a" queue = "b""#).is_err());
    }
}
