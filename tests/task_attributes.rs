//! What `#[task(...)]` says about retries and delivery reaches the registry and the
//! worker: `backoff`, `jitter`, `retry` and `guarantee`, each checked against the
//! value dmq-core's own constructors build.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dmq_core::{
    Backoff, Guarantee, Jitter, MAX_BACKOFF, Manager, Registry, RetryPolicy, TaskError, TaskInfo,
    TaskState, task,
};

mod common;
use common::{WAIT, failure};

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

#[task(name = "attrs.plain")]
async fn plain() -> Result<(), TaskError> {
    Ok(())
}

#[task(name = "attrs.fixed", backoff = "fixed(250ms)", max_retries = 4)]
async fn fixed() -> Result<(), TaskError> {
    Ok(())
}

#[task(name = "attrs.linear", backoff = "linear(1s, 5s, 1m)", jitter = "equal")]
async fn linear() -> Result<(), TaskError> {
    Ok(())
}

#[task(name = "attrs.exponential", backoff = "exponential(500ms, 1.5, 1h)", jitter = "full")]
async fn exponential() -> Result<(), TaskError> {
    Ok(())
}

#[task(name = "attrs.default_backoff", backoff = "exponential", jitter = "none")]
async fn default_backoff() -> Result<(), TaskError> {
    Ok(())
}

#[task(name = "attrs.longest", backoff = "fixed(1week)")]
async fn longest() -> Result<(), TaskError> {
    Ok(())
}

#[task(name = "attrs.at_most_once", guarantee = "at-most-once")]
async fn at_most_once() -> Result<(), TaskError> {
    Ok(())
}

#[task(name = "attrs.at_least_once", guarantee = "at-least-once")]
async fn at_least_once() -> Result<(), TaskError> {
    Ok(())
}

#[task(name = "attrs.exactly_once", guarantee = "exactly_once")]
async fn exactly_once() -> Result<(), TaskError> {
    Ok(())
}

mod policies {
    use super::*;

    /// Three retries 10 ms apart, of I/O errors only.
    pub fn io_only() -> RetryPolicy {
        let backoff = Backoff::fixed(Duration::from_millis(10)).expect("a valid backoff");
        RetryPolicy::new(3, backoff).retry_on::<std::io::Error>()
    }
}

#[task(name = "attrs.policy", retry = policies::io_only, guarantee = "exactly-once")]
async fn with_policy() -> Result<(), TaskError> {
    Ok(())
}

mod nested {
    use super::*;

    // A `super::` path means what it means beside the function.
    #[task(name = "attrs.nested_policy", retry = super::policies::io_only)]
    pub async fn with_policy() -> Result<(), TaskError> {
        Ok(())
    }
}

fn info(name: &str) -> TaskInfo {
    Registry::from_linked().expect("registry").task(name).expect(name)
}

#[test]
fn each_backoff_form_registers_the_backoff_the_constructors_build() {
    assert_eq!(info("attrs.plain").backoff, None);
    assert_eq!(info("attrs.fixed").backoff, Some(Backoff::fixed(250 * MS).unwrap()));
    assert_eq!(info("attrs.fixed").max_retries, Some(4));
    assert_eq!(
        info("attrs.linear").backoff,
        Some(Backoff::linear(S, 5 * S, 60 * S).unwrap().with_jitter(Jitter::Equal))
    );
    assert_eq!(
        info("attrs.exponential").backoff,
        Some(Backoff::exponential(500 * MS, 1.5, 3600 * S).unwrap().with_jitter(Jitter::Full))
    );
    assert_eq!(info("attrs.default_backoff").backoff, Some(Backoff::default()));
    // The macro's limit is dmq-core's: a week is allowed, and is the longest.
    assert_eq!(info("attrs.longest").backoff, Some(Backoff::fixed(MAX_BACKOFF).unwrap()));
}

#[test]
fn guarantees_register_as_written() {
    assert_eq!(info("attrs.plain").guarantee, None);
    assert_eq!(info("attrs.at_most_once").guarantee, Some(Guarantee::AtMostOnce));
    assert_eq!(info("attrs.at_least_once").guarantee, Some(Guarantee::AtLeastOnce));
    assert_eq!(info("attrs.exactly_once").guarantee, Some(Guarantee::ExactlyOnce));
}

#[test]
fn a_retry_path_registers_a_policy_and_nothing_beside_it() {
    for name in ["attrs.policy", "attrs.nested_policy"] {
        let info = info(name);
        assert!(info.has_retry_policy, "{name}");
        assert_eq!((info.max_retries, info.backoff), (None, None), "{name}");
    }
    assert_eq!(info("attrs.policy").guarantee, Some(Guarantee::ExactlyOnce));
    assert!(!info("attrs.plain").has_retry_policy);
    assert!(!info("attrs.fixed").has_retry_policy);
}

#[test]
fn the_managers_registry_reports_the_same() {
    let manager = Manager::builder().build().expect("manager");
    let tasks = manager.registry().tasks();
    let by_name = |name: &str| tasks.iter().find(|t| t.name == name).cloned().expect(name);
    let linear = by_name("attrs.linear");
    assert_eq!(linear, info("attrs.linear"));
    // 1 s + 2 × 5 s, of which equal jitter keeps at least half.
    assert_eq!(linear.backoff.map(|b| b.delay(3, 0.0)), Some(5500 * MS));
    assert_eq!(by_name("attrs.exactly_once").guarantee, Some(Guarantee::ExactlyOnce));
    assert!(by_name("attrs.policy").has_retry_policy);
    // The typed handles are still generated beside the registrations.
    let _ = (plain::call(), fixed::call(), linear::call(), exponential::call());
    let _ = (default_backoff::call(), longest::call(), at_most_once::call());
    let _ = (at_least_once::call(), exactly_once::call(), with_policy::call());
    let _ = nested::with_policy::call();
}

static SLOW_RETRY_RUNS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());

// The manager's default backoff waits 1 s before the first retry; this one 1.5 s.
#[task(queue = "attrs-backoff", max_retries = 1, backoff = "fixed(1500ms)")]
async fn fails_once() -> Result<usize, TaskError> {
    let runs = {
        let mut runs = SLOW_RETRY_RUNS.lock().unwrap_or_else(|p| p.into_inner());
        runs.push(Instant::now());
        runs.len()
    };
    if runs < 2 {
        return Err(std::io::Error::other("the first run fails").into());
    }
    Ok(runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_wait_as_the_attributes_backoff_says() {
    let manager = Manager::builder().build().expect("manager");
    let worker = manager.worker().queues(["attrs-backoff"]).start();
    let handle = fails_once::call().enqueue(&manager).await.expect("enqueue");
    assert_eq!(handle.result(WAIT).await.expect("the retry succeeds"), 2);
    let runs = SLOW_RETRY_RUNS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let gap = runs[1] - runs[0];
    assert!(gap >= 1500 * MS, "the retry came {gap:?} after the failure, before its 1.5 s");
    worker.shutdown().await;
}

static POLICY_RUNS: AtomicU32 = AtomicU32::new(0);

// The manager allows no retries; the policy allows three, of I/O errors only.
#[task(queue = "attrs-policy", retry = policies::io_only)]
async fn io_then_parse(fail_with_io: u32) -> Result<u32, TaskError> {
    let run = POLICY_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    if run <= fail_with_io {
        return Err(std::io::Error::other(format!("run {run}: disk busy")).into());
    }
    Err("not a number".parse::<u32>().unwrap_err().into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_follow_the_attributes_policy_function() {
    let manager = Manager::builder().build().expect("manager");
    let worker = manager.worker().queues(["attrs-policy"]).start();
    // Two I/O errors are retried; the parse error after them is not.
    let handle = io_then_parse::call(2).enqueue(&manager).await.expect("enqueue");
    let (_, message) = failure(handle.result(WAIT).await);
    assert!(message.contains("invalid digit"), "{message}");
    let outcome = manager.result::<u32>(handle.id()).outcome().await.expect("get").expect("stored");
    assert_eq!((outcome.state, outcome.attempts), (TaskState::Failed, 3));
    worker.shutdown().await;
}

static AT_MOST_ONCE_RUNS: AtomicU32 = AtomicU32::new(0);

#[task(queue = "attrs-at-most-once", max_retries = 3, guarantee = "at-most-once")]
async fn fails_at_most_once() -> Result<(), TaskError> {
    AT_MOST_ONCE_RUNS.fetch_add(1, Ordering::SeqCst);
    Err(std::io::Error::other("always fails").into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_keep_the_attributes_guarantee() {
    let manager = Manager::builder().build().expect("manager");
    let worker = manager.worker().queues(["attrs-at-most-once"]).start();
    let handle = fails_at_most_once::call().enqueue(&manager).await.expect("enqueue");
    let _ = failure(handle.result(WAIT).await);
    worker.shutdown().await;
    // At most once: max_retries = 3 notwithstanding, the failure is final.
    assert_eq!(AT_MOST_ONCE_RUNS.load(Ordering::SeqCst), 1);
    let stats =
        manager.admin().expect("admin").queue_stats("attrs-at-most-once").await.expect("stats");
    assert_eq!((stats.ready, stats.delayed, stats.dead), (0, 0, 0));
}

#[task(
    name = "attrs.limited",
    queue = "attrs-limited",
    rate_limit = "30/m",
    burst = 2,
    concurrency = 1
)]
async fn limited(tenant: String) -> Result<(), TaskError> {
    let _ = tenant;
    Ok(())
}

#[task(name = "attrs.per_tenant", queue = "attrs-limited", concurrency = 1, concurrency_key = tenant)]
async fn per_tenant(tenant: String, n: u32) -> Result<(), TaskError> {
    let _ = (tenant, n);
    Ok(())
}

#[task(name = "attrs.mail_a", queue = "attrs-shared", concurrency = 2, limit_gate = "attrs-mail")]
async fn mail_a() -> Result<(), TaskError> {
    Ok(())
}

#[task(name = "attrs.mail_b", queue = "attrs-shared", concurrency = 2, limit_gate = "attrs-mail")]
async fn mail_b() -> Result<(), TaskError> {
    Ok(())
}

/// Tasks that name one gate share its limits: a concurrency of 2 holds for both
/// together (a queue's limit), from the attribute and from a call.
#[tokio::test]
async fn tasks_naming_one_gate_share_its_limits() {
    let limits = info("attrs.mail_a").limits.expect("limits");
    assert_eq!((limits.shared.as_deref(), limits.concurrency), (Some("attrs-mail"), Some(2)));
    let manager = Manager::builder().build().expect("manager");
    for _ in 0..3 {
        mail_a::call().enqueue(&manager).await.expect("enqueue");
        mail_b::call().enqueue(&manager).await.expect("enqueue");
    }
    assert_eq!(claim_all(&manager, "attrs-shared").await.len(), 2, "2 of the 6, both tasks");
    let manager = Manager::builder().build().expect("manager");
    for _ in 0..3 {
        let call = plain::call().queue("attrs-shared").limit_gate("attrs-mail").concurrency(2);
        call.enqueue(&manager).await.expect("enqueue");
        mail_b::call().enqueue(&manager).await.expect("enqueue");
    }
    assert_eq!(claim_all(&manager, "attrs-shared").await.len(), 2, "a call names it too");
    let err = plain::call().limit_gate("attrs-mail").enqueue(&manager).await.unwrap_err();
    assert!(err.to_string().contains("a limit gate"), "{err}");
}

#[test]
fn flow_limits_register_as_written() {
    let limits = info("attrs.limited").limits.expect("limits");
    assert_eq!(limits.rate.map(|r| r.to_string()).as_deref(), Some("30/m"));
    assert_eq!((limits.burst, limits.concurrency, limits.key), (Some(2), Some(1), None));
    assert_eq!(info("attrs.plain").limits, None);
}

/// Claims every job of `queue` there is now, with the broker behind `manager`.
async fn claim_all(manager: &Manager, queue: &str) -> Vec<dmq_core::Delivery> {
    let q = [queue.to_owned()];
    manager
        .broker()
        .claim("t", &q, 100, Duration::from_secs(60), Duration::ZERO)
        .await
        .expect("claim")
}

/// The attribute's limits reach the broker: from a typed call, per key from the named
/// argument, from an envelope that says nothing of limits (another producer's), and
/// `unlimited` lifts them.
#[tokio::test]
async fn a_tasks_limits_hold_for_every_way_of_enqueueing_it() {
    let manager = Manager::builder().build().expect("manager");
    for tenant in ["a", "a", "b"] {
        limited::call(tenant.to_owned()).enqueue(&manager).await.expect("enqueue");
    }
    assert_eq!(
        claim_all(&manager, "attrs-limited").await.len(),
        1,
        "concurrency 1, whatever the tenant"
    );

    let manager = Manager::builder().build().expect("manager");
    for (tenant, n) in [("a", 1), ("a", 2), ("b", 3)] {
        per_tenant::call(tenant.to_owned(), n).enqueue(&manager).await.expect("enqueue");
    }
    assert_eq!(claim_all(&manager, "attrs-limited").await.len(), 2, "one per tenant");

    let manager = Manager::builder().build().expect("manager");
    for _ in 0..3 {
        let call = limited::call("a".to_owned());
        let mut envelope = call.into_envelope().expect("envelope");
        envelope.limits = None;
        manager.enqueue_envelope(envelope).await.expect("enqueue");
    }
    assert_eq!(claim_all(&manager, "attrs-limited").await.len(), 1, "the registry's limits");

    let manager = Manager::builder().build().expect("manager");
    for _ in 0..3 {
        limited::call("a".to_owned()).unlimited().enqueue(&manager).await.expect("enqueue");
    }
    assert_eq!(claim_all(&manager, "attrs-limited").await.len(), 3, "lifted");
    let err = limited::call("a".to_owned()).rate_limit("fast").enqueue(&manager).await.unwrap_err();
    assert!(err.to_string().contains("rate limit \"fast\""), "{err}");
}
