// Every key of the attribute, read back from the registry. `retry` replaces
// `max_retries`, `backoff` and `jitter`, so it has a task of its own; `cron` and
// `every` are for tasks without call arguments and exclude each other, so they have
// two more.
use std::time::Duration;

use dmq_core::__private::{PeriodicSpec, TaskRegistration, inventory};
use dmq_core::{Backoff, Guarantee, Jitter, Registry, RetryPolicy, TaskContext, TaskError, task};

/// Sends one email.
#[task(
    name = "emails.send",
    queue = "emails",
    max_retries = 5,
    timeout = "1m 30s",
    backoff = "linear(1s, 5s, 1m)",
    jitter = "equal",
    guarantee = "at-most-once",
    ignore_result
)]
pub async fn send_email(to: String, body: String) -> Result<(), TaskError> {
    let _ = (to, body);
    Ok(())
}

mod policies {
    use super::*;

    pub fn charges() -> RetryPolicy {
        RetryPolicy::new(2, Backoff::default()).retry_on::<std::io::Error>()
    }
}

/// Charges a card; its policy says which errors are worth a retry.
#[task(retry = policies::charges, guarantee = "exactly_once")]
pub async fn charge(cents: u64) -> Result<u64, TaskError> {
    Ok(cents)
}

/// Rebuilds the feeds every four hours.
#[task(name = "feeds.refresh", queue = "feeds", cron = "0 */4 * * *")]
pub async fn refresh_feeds() -> Result<(), TaskError> {
    Ok(())
}

/// Sweeps expired sessions; the context is not a call argument.
#[task(every = "1m 30s", timeout = "10s")]
pub async fn sweep(ctx: TaskContext) -> Result<u32, TaskError> {
    let _ = ctx;
    Ok(0)
}

/// The schedule a task registered, which `TaskInfo` does not show.
fn periodic(name: &str) -> Option<PeriodicSpec> {
    inventory::iter::<TaskRegistration>
        .into_iter()
        .find(|r| r.name == name)
        .and_then(|r| r.periodic)
}

fn main() {
    assert_eq!(send_email::NAME, "emails.send");
    assert_eq!(send_email::QUEUE, "emails");
    let call = send_email::call("ada@example.com".to_owned(), "hi".to_owned());
    assert_eq!(call.task_name(), "emails.send");
    let envelope = call.into_envelope().unwrap();
    assert_eq!(envelope.queue, "emails");

    let registry = Registry::from_linked().unwrap();
    let info = registry.task("emails.send").unwrap();
    assert_eq!(info.queue, "emails");
    assert_eq!(info.max_retries, Some(5));
    assert_eq!(info.timeout, Some(Duration::from_secs(90)));
    let linear =
        Backoff::linear(Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(60));
    assert_eq!(info.backoff, Some(linear.unwrap().with_jitter(Jitter::Equal)));
    assert_eq!(info.guarantee, Some(Guarantee::AtMostOnce));
    assert!(!info.has_retry_policy);
    assert!(info.ignore_result);
    assert!(info.path.ends_with("::send_email"), "{}", info.path);

    let info = registry.task("charge").unwrap();
    assert!(info.has_retry_policy);
    assert_eq!((info.max_retries, info.backoff), (None, None));
    assert_eq!(info.guarantee, Some(Guarantee::ExactlyOnce));

    assert_eq!(periodic("emails.send"), None);
    assert_eq!(periodic("feeds.refresh"), Some(PeriodicSpec::Cron("0 */4 * * *")));
    assert_eq!(registry.task("feeds.refresh").unwrap().queue, "feeds");
    assert_eq!(periodic("sweep"), Some(PeriodicSpec::Every(Duration::from_secs(90))));
    assert_eq!(registry.task("sweep").unwrap().timeout, Some(Duration::from_secs(10)));
    // A periodic task can still be enqueued by hand.
    assert_eq!(refresh_feeds::call().task_name(), "feeds.refresh");
    assert_eq!(sweep::call().task_name(), "sweep");
}
