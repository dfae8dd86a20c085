//! What a worker's health check and metrics read: when each of its loops last made
//! progress, how many jobs it runs, and how often the broker failed it.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::Shared;

/// How long a worker's claims may all fail before its claim loop counts as failing, no
/// longer alive: its health check then says so, with the last claim's error, and
/// `/health` answers 503, until a claim succeeds. A blip (a Redis failover, one
/// dropped connection) is retried well within it.
pub const CLAIMS_FAILING_LIMIT: Duration = Duration::from_secs(5);

/// The longest error message a health report repeats.
const ERROR_SHOWN: usize = 500;

/// A loop every worker runs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Loop {
    /// Claims jobs and starts them.
    Claim,
    /// Heartbeats and reaps.
    Heartbeat,
    /// Enqueues periodic jobs (when the worker runs the scheduler).
    Scheduler,
}

impl Loop {
    const ALL: [Loop; 3] = [Loop::Claim, Loop::Heartbeat, Loop::Scheduler];

    fn name(self) -> &'static str {
        match self {
            Loop::Claim => "claim",
            Loop::Heartbeat => "heartbeat",
            Loop::Scheduler => "scheduler",
        }
    }
}

/// A kind of broker operation a worker counts failures of.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    /// Claiming jobs.
    Claim,
    /// Acknowledging, retrying, dead-lettering or releasing a job, or storing or
    /// reading its result.
    Settle,
    /// Renewing a lease.
    Renew,
    /// Heartbeating.
    Heartbeat,
    /// Reaping the jobs of dead workers.
    Reap,
    /// The periodic scheduler's reads and writes.
    Schedule,
}

impl Op {
    const ALL: [Op; 6] = [Op::Claim, Op::Settle, Op::Renew, Op::Heartbeat, Op::Reap, Op::Schedule];

    fn name(self) -> &'static str {
        match self {
            Op::Claim => "claim",
            Op::Settle => "settle",
            Op::Renew => "renew",
            Op::Heartbeat => "heartbeat",
            Op::Reap => "reap",
            Op::Schedule => "schedule",
        }
    }
}

/// A worker's counters, updated as it goes.
pub(crate) struct Vitals {
    origin: Instant,
    /// Per loop: milliseconds from `origin` to its last beat, plus one; 0 before its
    /// first beat.
    beats: [AtomicU64; Loop::ALL.len()],
    /// Per loop: whether it runs in this worker at all.
    runs: [AtomicBool; Loop::ALL.len()],
    /// The claim loop waits for a free slot: it is busy, not stuck.
    waiting_for_slot: AtomicBool,
    /// Milliseconds from `origin` to the first of the failed claims in a row, plus one;
    /// 0 while the last claim succeeded.
    claims_failing_since: AtomicU64,
    /// The last failed claim's error.
    claim_error: Mutex<String>,
    errors: [AtomicU64; Op::ALL.len()],
}

impl Vitals {
    pub(crate) fn new() -> Self {
        Vitals {
            origin: Instant::now(),
            beats: Default::default(),
            runs: Default::default(),
            waiting_for_slot: AtomicBool::new(false),
            claims_failing_since: AtomicU64::new(0),
            claim_error: Mutex::new(String::new()),
            errors: Default::default(),
        }
    }

    /// Records that `which` runs in this worker, and that it is alive now.
    pub(crate) fn starts(&self, which: Loop) {
        self.runs[which as usize].store(true, Ordering::Relaxed);
        self.beat(which);
    }

    /// Records that `which` is making progress now.
    pub(crate) fn beat(&self, which: Loop) {
        self.beats[which as usize].store(self.now(), Ordering::Relaxed);
    }

    /// Milliseconds since `origin`, plus one (so that 0 can mean "never").
    fn now(&self) -> u64 {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        ms.saturating_add(1)
    }

    /// Records that a claim failed with `error`: the first of a run of failures starts
    /// the clock [`CLAIMS_FAILING_LIMIT`] is measured on.
    pub(crate) fn claim_failed(&self, error: &dyn fmt::Display) {
        let mut message = error.to_string().replace(['\n', '\r'], " ");
        if message.len() > ERROR_SHOWN {
            let mut end = ERROR_SHOWN;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str("...");
        }
        *self.claim_error.lock().unwrap_or_else(PoisonError::into_inner) = message;
        let now = self.now();
        let _ = self.claims_failing_since.compare_exchange(
            0,
            now,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Records that a claim succeeded (it may have found no job): the claim loop is no
    /// longer failing. One load on the path every claim takes.
    pub(crate) fn claim_succeeded(&self) {
        if self.claims_failing_since.load(Ordering::Relaxed) != 0 {
            self.claims_failing_since.store(0, Ordering::Relaxed);
        }
    }

    /// How long every claim has failed, and the last one's error; `None` while the last
    /// claim succeeded.
    fn claims_failing(&self) -> Option<LoopFailure> {
        let since = self.claims_failing_since.load(Ordering::Relaxed);
        let at = Duration::from_millis(since.checked_sub(1)?);
        let error = self.claim_error.lock().unwrap_or_else(PoisonError::into_inner).clone();
        Some(LoopFailure { duration: self.origin.elapsed().saturating_sub(at), error })
    }

    /// Records whether the claim loop waits for a job to end before it can claim.
    pub(crate) fn waiting_for_slot(&self, waiting: bool) {
        self.waiting_for_slot.store(waiting, Ordering::Relaxed);
    }

    /// Counts a failed broker operation.
    pub(crate) fn broker_error(&self, op: Op) {
        self.errors[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn since_beat(&self, which: Loop) -> Option<Duration> {
        let stored = self.beats[which as usize].load(Ordering::Relaxed);
        let at = Duration::from_millis(stored.checked_sub(1)?);
        Some(self.origin.elapsed().saturating_sub(at))
    }
}

/// A way to watch a running worker, for health checks and metrics; cheap to clone,
/// and usable while the [`WorkerHandle`](super::WorkerHandle) is kept elsewhere.
#[derive(Clone)]
pub struct WorkerMonitor {
    pub(super) shared: Arc<Shared>,
}

impl fmt::Debug for WorkerMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerMonitor").field("worker", &self.shared.info.id).finish()
    }
}

/// A snapshot of a worker's loops and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerVitals {
    /// The worker's id.
    pub worker: String,
    /// The queues it takes jobs from.
    pub queues: Vec<String>,
    /// How many jobs it may run at once.
    pub concurrency: usize,
    /// How many jobs it runs now.
    pub running: u32,
    /// Whether it is shutting down.
    pub stopping: bool,
    /// Each of its loops.
    pub loops: Vec<LoopVitals>,
    /// Failed broker operations since it started, by kind of operation: `claim`,
    /// `settle` (acknowledge, retry, dead-letter, release, store a result), `renew`,
    /// `heartbeat`, `reap` and `schedule`.
    pub broker_errors: Vec<(&'static str, u64)>,
}

impl WorkerVitals {
    /// Whether every loop is alive.
    #[must_use]
    pub fn loops_alive(&self) -> bool {
        self.loops.iter().all(|l| l.alive)
    }

    /// Failed broker operations since the worker started, of every kind.
    #[must_use]
    pub fn broker_error_count(&self) -> u64 {
        self.broker_errors.iter().map(|(_, n)| n).sum()
    }
}

/// One loop of a worker: `claim`, `heartbeat` or `scheduler`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopVitals {
    /// The loop's name.
    pub name: &'static str,
    /// How long ago it last made progress; `None` before it first did.
    pub since_beat: Option<Duration>,
    /// For the claim loop: since when its claims have all failed, and why; `None`
    /// while the last one succeeded.
    pub failing: Option<LoopFailure>,
    /// Whether it made progress recently enough (or, for the claim loop, waits for a
    /// running job to end) and, for the claim loop, its claims have not all failed
    /// for longer than [`CLAIMS_FAILING_LIMIT`]; or the worker is stopping.
    pub alive: bool,
}

/// A loop whose broker calls have all failed for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopFailure {
    /// How long since the first of the failures in a row.
    pub duration: Duration,
    /// The last failure's error message.
    pub error: String,
}

/// The outcome of [`WorkerMonitor::health`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Whether the broker answered, and its error when it did not.
    pub broker: Result<(), String>,
    /// The worker's loops and counters.
    pub vitals: WorkerVitals,
}

impl Health {
    /// Healthy: the broker answered and every loop is alive.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.broker.is_ok() && self.vitals.loops_alive()
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.broker {
            Ok(()) => writeln!(f, "broker: ok")?,
            Err(e) => writeln!(f, "broker: unreachable: {e}")?,
        }
        for l in &self.vitals.loops {
            if let (false, Some(failing)) = (l.alive, &l.failing) {
                let (duration, error) = (failing.duration, &failing.error);
                writeln!(f, "{} loop: failing for {duration:.1?}: {error}", l.name)?;
                continue;
            }
            let state = if l.alive { "alive" } else { "stalled" };
            match l.since_beat {
                Some(ago) => write!(f, "{} loop: {state} (last progress {ago:.1?} ago", l.name)?,
                None => write!(f, "{} loop: {state} (no progress yet", l.name)?,
            }
            match &l.failing {
                Some(failing) => {
                    let (duration, error) = (failing.duration, &failing.error);
                    writeln!(f, "; failing for {duration:.1?}: {error})")?;
                }
                None => writeln!(f, ")")?,
            }
        }
        writeln!(f, "running: {} of {}", self.vitals.running, self.vitals.concurrency)
    }
}

impl WorkerMonitor {
    /// The worker's loops and counters now.
    #[must_use]
    pub fn vitals(&self) -> WorkerVitals {
        let shared = &self.shared;
        let vitals = &shared.vitals;
        let stopping = shared.stop.is_cancelled();
        let loops = Loop::ALL
            .into_iter()
            .filter(|l| vitals.runs[*l as usize].load(Ordering::Relaxed))
            .map(|l| {
                let since_beat = vitals.since_beat(l);
                let waiting =
                    matches!(l, Loop::Claim) && vitals.waiting_for_slot.load(Ordering::Relaxed);
                let fresh = since_beat.is_some_and(|ago| ago <= self.stall_limit(l));
                let failing = match l {
                    Loop::Claim => vitals.claims_failing(),
                    Loop::Heartbeat | Loop::Scheduler => None,
                };
                let failed = failing.as_ref().is_some_and(|f| f.duration > CLAIMS_FAILING_LIMIT);
                let alive = stopping || (!failed && (waiting || fresh));
                LoopVitals { name: l.name(), since_beat, failing, alive }
            })
            .collect();
        WorkerVitals {
            worker: shared.info.id.clone(),
            queues: shared.queues.clone(),
            concurrency: shared.config.concurrency,
            running: shared.running.load(Ordering::Relaxed),
            stopping,
            loops,
            broker_errors: Op::ALL
                .into_iter()
                .map(|op| (op.name(), vitals.errors[op as usize].load(Ordering::Relaxed)))
                .collect(),
        }
    }

    /// Checks the worker's health: asks the broker to answer within `timeout`, and
    /// reads whether its loops are alive.
    pub async fn health(&self, timeout: Duration) -> Health {
        let broker = self.shared.core.broker();
        let broker = match tokio::time::timeout(timeout, broker.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("the broker did not answer within {timeout:?}")),
        };
        Health { broker, vitals: self.vitals() }
    }

    /// How long a loop may go without progress before it counts as stalled: well
    /// beyond the longest wait its own work holds it in.
    fn stall_limit(&self, which: Loop) -> Duration {
        let config = &self.shared.config;
        let slack = Duration::from_secs(30);
        match which {
            Loop::Claim => config.claim_wait + slack,
            Loop::Heartbeat => config.heartbeat.saturating_mul(super::MISSED_HEARTBEATS) + slack,
            Loop::Scheduler => slack,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::WorkerInfo;
    use std::sync::atomic::AtomicU32;
    use tokio_util::sync::CancellationToken;

    /// How long ago the test worker started.
    const AGE: Duration = Duration::from_secs(120);

    /// Vitals of a worker started [`AGE`] ago, whose `loops` last made progress the
    /// given time ago (`None`: never).
    fn vitals(loops: &[(Loop, Option<Duration>)]) -> Vitals {
        let mut vitals = Vitals::new();
        vitals.origin = Instant::now().checked_sub(AGE).expect("uptime");
        for &(l, ago) in loops {
            vitals.runs[l as usize].store(true, Ordering::Relaxed);
            let beat = ago.map_or(0, |ago| (AGE - ago).as_millis() as u64 + 1);
            vitals.beats[l as usize].store(beat, Ordering::Relaxed);
        }
        vitals
    }

    /// A monitor of a worker with the default settings (a 5 s claim wait and
    /// heartbeat, so stall limits of 35 s for the claim loop, 50 s for the heartbeat
    /// loop and 30 s for the scheduler) and these `vitals`.
    fn monitor(vitals: Vitals, stopping: bool) -> WorkerMonitor {
        let builder = crate::worker::WorkerBuilder::new(crate::core::Core::in_memory());
        let (core, config) = (builder.core, builder.config);
        let queues = vec!["default".to_owned()];
        let info = WorkerInfo::new("w", "host", 1, queues.clone(), 10, chrono::Utc::now());
        let stop = CancellationToken::new();
        if stopping {
            stop.cancel();
        }
        let shared = Shared {
            info,
            core,
            config,
            queues,
            queue_groups: None,
            stop,
            hard_stop: CancellationToken::new(),
            released: AtomicU64::new(0),
            running: AtomicU32::new(0),
            vitals,
            epoch: Instant::now().checked_sub(AGE).expect("uptime"),
            alive_since: AtomicU64::new(0),
            lapsed_before: AtomicU64::new(0),
        };
        WorkerMonitor { shared: Arc::new(shared) }
    }

    /// A worker surely holds a lease while its claim is younger than the lease and its
    /// last heartbeat younger than the heartbeat ttl (each less a fifth); past either
    /// (a stalled worker), it must ask the broker.
    #[test]
    fn a_lease_is_surely_held_only_while_the_claim_and_the_heartbeat_are_fresh() {
        let monitor = monitor(vitals(&[]), false);
        let shared = &monitor.shared;
        // Defaults: a 30 s lease, a 5 s heartbeat, so a 20 s ttl.
        let ago = |d: Duration| Instant::now().checked_sub(d).expect("uptime");
        assert!(shared.surely_holds(Instant::now()), "no heartbeat yet: the lease decides");
        assert!(!shared.surely_holds(ago(Duration::from_secs(25))), "past 4/5 of the lease");
        shared.heartbeat_succeeded(Instant::now());
        assert!(shared.surely_holds(ago(Duration::from_secs(20))));
        // The last heartbeat that succeeded was sent 17 s ago: past 4/5 of the ttl.
        shared.alive_since.store(0, Ordering::Relaxed);
        shared.heartbeat_succeeded(ago(Duration::from_secs(17)));
        assert!(!shared.surely_holds(Instant::now()), "a stalled worker asks the broker");
        // A heartbeat after that gap: the registration may have lapsed in between, so
        // only a claim made since is surely held.
        shared.heartbeat_succeeded(ago(Duration::from_secs(1)));
        assert!(!shared.surely_holds(ago(Duration::from_secs(2))), "claimed before the gap");
        assert!(shared.surely_holds(Instant::now()), "claimed after it");
    }

    fn alive(vitals: &WorkerVitals) -> Vec<(&'static str, bool)> {
        vitals.loops.iter().map(|l| (l.name, l.alive)).collect()
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn a_loop_stalls_once_its_progress_is_older_than_its_limit() {
        let ago = Some(40 * SECOND);
        let monitor = monitor(
            vitals(&[(Loop::Claim, ago), (Loop::Heartbeat, ago), (Loop::Scheduler, ago)]),
            false,
        );
        let vitals = monitor.vitals();
        assert_eq!(
            alive(&vitals),
            [("claim", false), ("heartbeat", true), ("scheduler", false)],
            "{vitals:?}"
        );
        assert!(!vitals.loops_alive());
        let health = monitor.health(SECOND).await;
        assert_eq!(health.broker, Ok(()));
        assert!(!health.is_ok(), "{health}");
        let text = health.to_string();
        assert!(text.contains("claim loop: stalled (last progress 40"), "{text}");
        assert!(text.contains("heartbeat loop: alive"), "{text}");
        assert!(text.contains("scheduler loop: stalled"), "{text}");
    }

    #[tokio::test]
    async fn a_loop_that_never_made_progress_is_stalled() {
        let monitor =
            monitor(vitals(&[(Loop::Claim, Some(SECOND)), (Loop::Heartbeat, None)]), false);
        let vitals = monitor.vitals();
        // The scheduler does not run in this worker: it is not listed.
        assert_eq!(alive(&vitals), [("claim", true), ("heartbeat", false)], "{vitals:?}");
        assert_eq!(vitals.loops[1].since_beat, None);
        let health = monitor.health(SECOND).await;
        assert!(!health.is_ok(), "{health}");
        assert!(
            health.to_string().contains("heartbeat loop: stalled (no progress yet)"),
            "{health}"
        );
    }

    #[tokio::test]
    async fn fresh_progress_is_alive() {
        let vitals = Vitals::new();
        for l in Loop::ALL {
            vitals.starts(l);
        }
        let monitor = monitor(vitals, false);
        let vitals = monitor.vitals();
        assert_eq!(
            alive(&vitals),
            [("claim", true), ("heartbeat", true), ("scheduler", true)],
            "{vitals:?}"
        );
        let health = monitor.health(SECOND).await;
        assert!(health.is_ok(), "{health}");
        assert!(!health.to_string().contains("stalled"), "{health}");
    }

    #[test]
    fn a_claim_loop_waiting_for_a_slot_is_alive_however_long_ago_it_claimed() {
        let ago = Some(100 * SECOND);
        let vitals = vitals(&[(Loop::Claim, ago), (Loop::Heartbeat, ago)]);
        vitals.waiting_for_slot(true);
        let monitor = monitor(vitals, false);
        // Only the claim loop waits for a slot.
        assert_eq!(alive(&monitor.vitals()), [("claim", true), ("heartbeat", false)]);
        monitor.shared.vitals.waiting_for_slot(false);
        assert_eq!(alive(&monitor.vitals()), [("claim", false), ("heartbeat", false)]);
    }

    /// Vitals whose claim and heartbeat loops beat a second ago, and whose claims
    /// have all failed since `ago`, the last with `error`.
    fn failing_claims(ago: Duration, error: &str) -> Vitals {
        let vitals = vitals(&[(Loop::Claim, Some(SECOND)), (Loop::Heartbeat, Some(SECOND))]);
        vitals.claim_failed(&error);
        let since = (AGE - ago).as_millis() as u64 + 1;
        vitals.claims_failing_since.store(since, Ordering::Relaxed);
        vitals
    }

    #[tokio::test]
    async fn a_claim_loop_whose_claims_all_failed_past_the_limit_is_failing() {
        let error =
            "claiming jobs failed: WRONGTYPE Operation against a key\nholding the wrong kind";
        let monitor = monitor(failing_claims(12 * SECOND, error), false);
        let vitals = monitor.vitals();
        // It beats (it tries again and again), but it is not alive.
        assert_eq!(alive(&vitals), [("claim", false), ("heartbeat", true)], "{vitals:?}");
        let failing = vitals.loops[0].failing.clone().expect("failing");
        assert!(failing.duration >= 12 * SECOND && failing.duration < 13 * SECOND, "{failing:?}");
        let health = monitor.health(SECOND).await;
        assert!(!health.is_ok(), "{health}");
        let text = health.to_string();
        // One line, saying for how long (12.0s, or a little more on a slow machine) and
        // what fails.
        let line = text.lines().find(|l| l.starts_with("claim loop: ")).expect("a claim line");
        assert!(line.starts_with("claim loop: failing for 12."), "{text}");
        assert!(
            line.ends_with(
                "s: claiming jobs failed: WRONGTYPE Operation against a key holding the wrong kind"
            ),
            "{text}"
        );
        assert!(text.contains("heartbeat loop: alive"), "{text}");

        // A claim that succeeds (finding a job or not) ends it.
        monitor.shared.vitals.claim_succeeded();
        let vitals = monitor.vitals();
        assert_eq!(alive(&vitals), [("claim", true), ("heartbeat", true)], "{vitals:?}");
        assert_eq!(vitals.loops[0].failing, None);
        let health = monitor.health(SECOND).await;
        assert!(health.is_ok(), "{health}");
        assert!(!health.to_string().contains("failing"), "{health}");
    }

    #[tokio::test]
    async fn claims_failing_within_the_limit_leave_the_loop_alive_and_say_so() {
        let within = monitor(failing_claims(3 * SECOND, "connection reset"), false);
        let vitals = within.vitals();
        assert_eq!(alive(&vitals), [("claim", true), ("heartbeat", true)], "{vitals:?}");
        let health = within.health(SECOND).await;
        assert!(health.is_ok(), "{health}");
        let text = health.to_string();
        let line = text.lines().find(|l| l.starts_with("claim loop: ")).expect("a claim line");
        assert!(line.starts_with("claim loop: alive (last progress 1."), "{text}");
        assert!(line.contains("; failing for 3."), "{text}");
        assert!(line.ends_with("s: connection reset)"), "{text}");
        // Just past the limit, it is failing.
        let past = CLAIMS_FAILING_LIMIT + Duration::from_millis(100);
        let past = monitor(failing_claims(past, "connection reset"), false);
        assert_eq!(alive(&past.vitals())[0], ("claim", false));
    }

    #[test]
    fn the_first_failure_in_a_row_starts_the_clock_and_the_last_one_names_the_error() {
        let vitals = vitals(&[(Loop::Claim, Some(SECOND))]);
        assert_eq!(vitals.claims_failing(), None);
        vitals.claim_failed(&"first");
        let first = vitals.claims_failing_since.load(Ordering::Relaxed);
        assert_ne!(first, 0);
        std::thread::sleep(Duration::from_millis(20));
        vitals.claim_failed(&"x".repeat(2 * ERROR_SHOWN));
        assert_eq!(vitals.claims_failing_since.load(Ordering::Relaxed), first, "not restarted");
        let failing = vitals.claims_failing().expect("failing");
        assert!(failing.duration >= Duration::from_millis(20), "{failing:?}");
        assert_eq!(failing.error, format!("{}...", "x".repeat(ERROR_SHOWN)), "cut short");
        vitals.claim_succeeded();
        assert_eq!(vitals.claims_failing(), None);
        vitals.claim_failed(&"again");
        assert!(vitals.claims_failing_since.load(Ordering::Relaxed) > first, "a new run");
        assert_eq!(vitals.claims_failing().expect("failing").error, "again");
    }

    #[tokio::test]
    async fn every_loop_of_a_stopping_worker_is_alive() {
        let ago = Some(100 * SECOND);
        let vitals = vitals(&[(Loop::Claim, ago), (Loop::Heartbeat, None), (Loop::Scheduler, ago)]);
        vitals.claim_failed(&"redis is gone");
        vitals.claims_failing_since.store(1, Ordering::Relaxed);
        let monitor = monitor(vitals, true);
        let vitals = monitor.vitals();
        assert!(vitals.stopping);
        assert_eq!(
            alive(&vitals),
            [("claim", true), ("heartbeat", true), ("scheduler", true)],
            "{vitals:?}"
        );
        assert!(monitor.health(SECOND).await.is_ok());
    }
}
