//! The `#[task]` attribute of dmq. Use it through `dmq_core::task`: the code it
//! generates names only `dmq_core`'s hidden support module, so a crate of tasks needs
//! no other dependency.

mod args;
mod expand;

use proc_macro::TokenStream;

/// Makes an `async fn` a task: a worker can run it, and `name::call(..)` builds a
/// typed call of it to enqueue.
///
/// ```text
/// use dmq_core::{task, TaskContext, TaskError};
///
/// #[task(name = "emails.send", queue = "emails", max_retries = 5, timeout = "30s")]
/// pub async fn send_email(to: String, body: String) -> Result<(), TaskError> {
///     mailer::send(&to, &body).await?; // any error converts into a retryable TaskError
///     Ok(())
/// }
///
/// // Elsewhere: enqueue a call, then await its value.
/// let handle = send_email::call("ada@example.com".into(), "hi".into())
///     .enqueue(&manager)
///     .await?;
/// handle.result(Duration::from_secs(60)).await?;
/// ```
///
/// # Keys
///
/// All are optional: `#[task]` alone is fine.
///
/// - `name = "emails.send"`: the name the task is registered and enqueued under. It
///   defaults to the function's name; two tasks with one name make the manager's
///   build fail. Give a stable name when jobs may outlive a rename of the function.
/// - `queue = "emails"`: the queue its calls go to unless a call says otherwise
///   (`Call::queue`); `"default"` when left out.
/// - `max_retries = 5`: how many times a failed run is retried; the manager's default
///   when left out.
/// - `timeout = "30s"`: how long one run may take, read at compile time as a
///   humantime duration (`"250ms"`, `"5m"`, `"1h 30m"`); no limit when left out.
/// - `backoff = "exponential(1s, 2, 10m)"`: how long a worker waits before each retry,
///   checked at compile time. The forms, with durations written as for `timeout`:
///   - `"fixed(30s)"`: the same delay every time;
///   - `"linear(1s, 5s, 1m)"`: base before the first retry, then step more before
///     each following one, up to max;
///   - `"exponential(1s, 2, 10m)"`: base before the first retry, then times factor
///     before each following one, up to max;
///   - `"exponential"` alone: the default, 1 s doubling up to 10 minutes.
///
///   As `Backoff`'s constructors do, it refuses a factor below 1, a max below the
///   base and any delay over a week (`MAX_BACKOFF`); delays are whole milliseconds.
///   The manager's default backoff when left out.
/// - `jitter = "full"`: spreads the backoff's delays at random so that jobs that
///   failed together do not all come back at once: `"none"` (the default),
///   `"full"` (anywhere from zero to the delay) or `"equal"` (from half the delay to
///   all of it). Needs a `backoff`.
/// - `retry = policies::emails`: the path of a `fn() -> RetryPolicy` giving the
///   task's whole retry policy, error filters included (`retry_on`,
///   `dont_retry_if`, ...); a worker calls it when a run fails. It replaces
///   `max_retries`, `backoff` and `jitter`, which cannot go beside it: the policy
///   says them. A function of another signature is a type error at the path.
/// - `guarantee = "exactly-once"`: the task's delivery guarantee, which wins over the
///   worker's: `"at-most-once"`, `"at-least-once"` or `"exactly-once"` (underscores
///   work too). See `Guarantee` for what each promises.
/// - `ignore_result` (or `ignore_result = true`): workers do not store the task's
///   result, saving a write per job; callers cannot await its value.
/// - `cron = "0 */4 * * *"`: the task fires by itself on this cron schedule: five
///   fields (minute hour day-of-month month day-of-week), six or seven (a second
///   first, an optional year last), or one of `@yearly`, `@annually`, `@monthly`,
///   `@weekly`, `@daily`, `@midnight`, `@hourly`. Only that shape is checked at compile time;
///   the fields are read by `Schedule::cron` when the manager is built, which fails
///   on a bad one.
/// - `every = "5m"`: the task fires by itself at this interval, a duration written
///   as for `timeout`, of at least 1 ms and in whole milliseconds.
///
///   `cron` and `every` cannot go together, and only a task without call arguments
///   (a `TaskContext` is fine) can have either: the scheduler enqueues it with none.
///   To repeat a call with arguments, schedule it from the manager:
///   `manager.periodic(task::call(args), Schedule::cron(..)?)`.
///
/// A call can still override the task's retry limit and backoff (`Call::max_retries`,
/// `Call::backoff`, `Call::retry`); a `retry` policy's error filters stay the task's.
///
/// ```text
/// fn charges() -> RetryPolicy {
///     RetryPolicy::new(5, Backoff::default()).retry_on::<std::io::Error>()
/// }
///
/// #[task(queue = "payments", retry = charges, guarantee = "exactly-once")]
/// pub async fn charge(order: u64) -> Result<(), TaskError> { ... }
///
/// #[task(max_retries = 8, backoff = "exponential(500ms, 2, 5m)", jitter = "full")]
/// pub async fn fetch_feed(url: String) -> Result<(), TaskError> { ... }
///
/// #[task(cron = "0 */4 * * *")]
/// pub async fn refresh_feeds(ctx: TaskContext) -> Result<(), TaskError> { ... }
/// ```
///
/// # The function
///
/// A task is an `async fn` at module level (not inside a function body, nor in an
/// `impl`), without `self`, generics or borrowed arguments, that returns
/// `Result<T, E>` where `E` converts into `TaskError`. Its arguments and `T` travel
/// through the broker, so they must be owned types implementing serde's `Serialize`
/// and `Deserialize`, `Send` and `'static`; its future must be `Send`. Each rule is
/// checked at compile time, with the error on the offending part of the signature.
///
/// One parameter may have the type `TaskContext` (matched by the last segment of its
/// path). It is not a call argument: the worker fills it in with the running job's id,
/// attempt and headers.
///
/// # What it generates
///
/// The function stays as written, so it can still be called directly (as in a unit
/// test). Next to it comes a module of the same name and visibility:
///
/// ```text
/// pub mod send_email {
///     /// The task's registered name.
///     pub const NAME: &str = "emails.send";
///     /// The task's default queue.
///     pub const QUEUE: &str = "emails";
///     /// A call of this task with these arguments, ready to enqueue.
///     pub fn call(to: String, body: String) -> Call<()>;
/// }
/// ```
///
/// `call` takes the function's arguments, in order and without the `TaskContext`,
/// and returns a `Call<T>` whose queue, delay, eta and priority can still be set
/// before it is enqueued. A parameter bound by a pattern rather than a plain name
/// becomes `__arg0`, `__arg1`, ... in `call`.
///
/// The module also registers the task (through `inventory`), so a worker built in
/// the same binary finds it by name. The module starts with `use super::*;`, which
/// is how the types in the signature resolve inside it; this is why a task must be
/// a module-level item.
///
/// # Tasks in another crate
///
/// The linker drops a crate that is linked but never named, and its tasks with it:
/// a worker binary whose tasks live in `my_tasks` and that calls none of them
/// directly registers nothing. Name the crate to keep them:
///
/// ```text
/// use my_tasks as _;
/// ```
#[proc_macro_attribute]
pub fn task(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::task(args.into(), item.into()).into()
}
