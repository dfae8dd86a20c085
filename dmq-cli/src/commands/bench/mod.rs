//! `dmq bench`: enqueue rates, end-to-end throughput with results stored, idle
//! latency and, on Redis, the server's commands and CPU per job; on PostgreSQL (in
//! `postgres.rs`), its write transactions, WAL and CPU per job.

mod postgres;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail, ensure};
use dmq_core::{
    InMemoryBackend, InMemoryBroker, Manager, ManagerBuilder, Metrics, ResultBackend, TaskError,
    TaskId, task,
};
use dmq_redis::RedisBroker;
use serde::Serialize;
use tokio::task::JoinSet;

use crate::broker_url::{redact, scheme_of};
use crate::cli::BenchArgs;

/// The queue every bench job goes to.
const QUEUE: &str = "dmq-bench";
/// Concurrent producers in the one-by-one enqueue phase.
const SINGLE_PRODUCERS: u64 = 32;
/// Concurrent producers in the batch enqueue phase.
const BATCH_PRODUCERS: u64 = 4;
/// Latency samples taken and thrown away first (connections and caches warm up).
const WARM_UP_SAMPLES: u64 = 10;
/// How long one latency sample may take before the bench gives up.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The drain gives up when no job finished for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Jobs whose stored result is checked after the drain.
const RESULT_CHECKS: usize = 500;

/// Does nothing and returns its argument.
#[task(name = "dmq.bench.noop_ignored", queue = "dmq-bench", ignore_result)]
async fn noop_ignored(i: u64) -> Result<u64, TaskError> {
    Ok(i)
}

/// What the bench's jobs are: whether they store their result, and the rate limit
/// (with its burst) they pass, if any.
#[derive(Debug, Clone, Default)]
struct Shape {
    ignore_result: bool,
    rate_limit: Option<Arc<str>>,
    burst: Option<u32>,
}

/// A call of the no-op task as `shape` says, on queue `i` modulo the number of
/// `queues`.
fn noop_call(i: u64, shape: &Shape, queues: &[String]) -> dmq_core::Call<u64> {
    let mut call = if shape.ignore_result { noop_ignored::call(i) } else { noop::call(i) };
    if let Some(rate) = &shape.rate_limit {
        call = call.rate_limit(rate);
    }
    if let Some(burst) = shape.burst {
        call = call.burst(burst);
    }
    match queues {
        [] | [_] => call,
        many => call.queue(many[usize::try_from(i).unwrap_or(0) % many.len()].clone()),
    }
}

/// The bench's queue `k`: `dmq-bench`, then `dmq-bench-1`, `dmq-bench-2`, ...
fn queue_name(k: u64) -> String {
    if k == 0 { QUEUE.to_owned() } else { format!("{QUEUE}-{k}") }
}

/// The first `n` of the bench's queues.
fn queue_names(n: u64) -> Vec<String> {
    (0..n.max(1)).map(queue_name).collect()
}

/// `n` of the bench's queues that put as many queues on each master as can be
/// (`masters_of_slot` says which master serves a slot): the first names in order
/// whose slot (the hash of `{<namespace>:<queue>}`) falls on a master that has fewer
/// than its share. Names hashed blindly land unevenly (with 12 queues over three
/// masters, one master got 20% of the work in one run and 52% in another), which
/// would measure the luck of the hashes rather than how the work spreads.
fn spread_queue_names(n: u64, namespace: &str, masters_of_slot: &[usize]) -> Vec<String> {
    let want = usize::try_from(n.max(1)).unwrap_or(usize::MAX);
    let present: std::collections::BTreeSet<usize> = masters_of_slot.iter().copied().collect();
    let share = want.div_ceil(present.len().max(1));
    let keys = dmq_redis::Keys::new(namespace);
    let mut taken = std::collections::HashMap::new();
    let mut names = Vec::new();
    // Each name lands on a given master about once in as many tries as there are
    // masters; far more tries than that means the layout is not what it seemed.
    for k in 0..(want as u64 * 64 + 1024) {
        if names.len() == want {
            return names;
        }
        let name = queue_name(k);
        let slot = dmq_redis::cluster_slot(keys.queue(&name).signal().as_bytes());
        let master = masters_of_slot.get(usize::from(slot)).copied().unwrap_or_default();
        let count = taken.entry(master).or_insert(0);
        if *count < share {
            *count += 1;
            names.push(name);
        }
    }
    // Not placed evenly after all: the first names, as without a cluster.
    queue_names(n)
}

#[task(name = "dmq.bench.noop", queue = "dmq-bench")]
async fn noop(i: u64) -> Result<u64, TaskError> {
    Ok(i)
}

/// Returns the time it started running, in Unix microseconds.
#[task(name = "dmq.bench.stamp", queue = "dmq-bench")]
async fn stamp() -> Result<u64, TaskError> {
    Ok(unix_micros())
}

/// Runs `dmq bench`.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    // The bench measures the server itself (Redis's CPU and commands per job,
    // PostgreSQL's transactions, WAL and CPU), so it knows the schemes it serves by name.
    let scheme = scheme_of(&args.broker)?.names[0];
    let out = Output { json: args.json };
    match scheme {
        "memory" => {
            let manager = with_metrics(Manager::builder(), &args)
                .broker(InMemoryBroker::new())
                .backend(InMemoryBackend::new())
                .build()?;
            let setup = Setup {
                broker: "memory://".to_owned(),
                namespace: None,
                result_backend: "memory",
                connections: "none: the in-memory broker and backend live in this process"
                    .to_owned(),
                server: None,
            };
            out.header(&setup, &args);
            let report = measure(&manager, &args, setup, None, None, out).await?;
            out.finish(&report)
        }
        "redis" | "redis+cluster" | "redis+sentinel" => {
            let url = args.broker.clone();
            ensure!(
                !(args.deadpool && scheme != "redis"),
                "--deadpool takes a redis:// URL: deadpool-redis pools plain connections to one server"
            );
            let namespace = args
                .namespace
                .clone()
                .unwrap_or_else(|| format!("dmq-bench-{}", uuid::Uuid::new_v4()));
            ensure!(!namespace.is_empty(), "--namespace cannot be empty");
            let shown = redact(&url);
            // Its error already names the URL and what to check.
            let (broker, connections) = if args.deadpool {
                // The pool's connections use the URL's TLS options too.
                let info = dmq_redis::RedisUrl::parse(&url)?.client().get_connection_info().clone();
                let manager = deadpool_redis::Manager::new(info).map_err(|e| {
                    anyhow!("could not make a deadpool-redis pool for {shown}: {e}")
                })?;
                let pool = deadpool_redis::Pool::builder(manager)
                    .runtime(deadpool_redis::Runtime::Tokio1)
                    .build()
                    .map_err(|e| {
                        anyhow!("could not make a deadpool-redis pool for {shown}: {e}")
                    })?;
                let broker = RedisBroker::from_pool(pool, &namespace).await?;
                (
                    broker,
                    "RedisBroker::from_pool: commands share one multiplexed connection taken \
                     from the deadpool-redis pool; each blocking wait for work (BLPOP) takes \
                     one of its own from the pool",
                )
            } else {
                let broker = RedisBroker::connect_with_namespace(&url, &namespace).await?;
                (
                    broker,
                    "RedisBroker::connect: commands share one multiplexed ConnectionManager; \
                     each blocking wait for work (BLPOP) gets a dedicated connection",
                )
            };
            let broker = match args.wait_replicas {
                Some(n) => broker.with_replicated_enqueue(n, Duration::from_secs(1)),
                None => broker,
            };
            let keys = broker.keys().clone();
            let pattern = keys.patterns().join(" ");
            let stats = RedisStats::connect(&url).await?;
            let (backend, result_backend) = redis_result_backend(&url, &namespace).await?;
            let manager = with_metrics(Manager::builder(), &args)
                .broker(broker)
                .shared_backend(backend)
                .build()?;
            let setup = Setup {
                broker: shown,
                namespace: Some(namespace),
                result_backend,
                connections: connections.to_owned(),
                server: None,
            };
            out.header(&setup, &args);
            let measured = tokio::select! {
                measured = measure(&manager, &args, setup, Some(&stats), None, out) => measured,
                interrupted = tokio::signal::ctrl_c() => match interrupted {
                    Ok(()) => Err(anyhow!("interrupted")),
                    Err(e) => Err(anyhow!("could not wait for Ctrl-C: {e}")),
                },
            };
            let interrupted = measured.is_err();
            let mut deleted = stats.delete_namespace(&keys).await;
            if interrupted {
                // A worker dropped mid-job may still settle it; sweep once more.
                tokio::time::sleep(Duration::from_millis(500)).await;
                deleted = stats.delete_namespace(&keys).await;
            }
            let mut report = measured?;
            let deleted = deleted.with_context(|| {
                format!(
                    "deleting the bench keys ({pattern}); delete them by hand with SCAN + UNLINK"
                )
            })?;
            report.deleted_keys = Some(deleted);
            out.line(format_args!("cleanup            deleted {deleted} keys matching {pattern}"));
            out.finish(&report)
        }
        "postgres" => postgres::run(&args, out).await,
        other => bail!(
            "dmq bench measures memory://, redis://, redis+cluster://, redis+sentinel:// and postgres:// brokers, not {other}://"
        ),
    }
}

/// The builder, recording metrics when `--metrics` asks for them, without the event
/// stream for `--no-event-stream`, and with a sleeping callback for `--slow-callback`.
fn with_metrics(builder: ManagerBuilder, args: &BenchArgs) -> ManagerBuilder {
    let builder = if args.metrics { builder.metrics(Metrics::new()) } else { builder };
    let builder = if args.no_event_stream { builder.event_stream(false) } else { builder };
    match args.slow_callback {
        Some(sleep) => builder.callback(Sleeper(sleep)),
        None => builder,
    }
}

/// A callback that sleeps on every event: `--slow-callback`.
struct Sleeper(Duration);

#[dmq_core::async_trait]
impl dmq_core::Callback for Sleeper {
    async fn on_event(&self, _event: &dmq_core::Event) {
        tokio::time::sleep(self.0).await;
    }

    fn name(&self) -> String {
        "slow-callback".to_owned()
    }
}

/// The result backend for a Redis run.
async fn redis_result_backend(
    url: &str,
    namespace: &str,
) -> anyhow::Result<(Arc<dyn ResultBackend>, &'static str)> {
    let backend = dmq_redis::RedisBackend::connect_with_namespace(url, namespace).await?;
    Ok((Arc::new(backend), "redis"))
}

/// What was measured against, for the report.
#[derive(Debug, Serialize)]
struct Setup {
    broker: String,
    namespace: Option<String>,
    result_backend: &'static str,
    connections: String,
    /// What the server is, when the bench can ask it (PostgreSQL).
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<String>,
}

/// Every figure of one run; `--json` prints it as is.
#[derive(Debug, Serialize)]
struct Report {
    #[serde(flatten)]
    setup: Setup,
    jobs: u64,
    concurrency: u64,
    batch_size: u64,
    guarantee: &'static str,
    /// Whether Prometheus metrics were recorded (`--metrics`).
    metrics: bool,
    /// How long the callback of `--slow-callback` slept on each event.
    slow_callback_ms: Option<u128>,
    /// Events the callbacks and the event stream had no room for, over the run.
    events_dropped: u64,
    /// Whether the run wrote the event stream (`--no-event-stream` turns it off).
    event_stream: bool,
    /// Replicas each enqueue waited for (`--wait-replicas`).
    wait_replicas: Option<u32>,
    /// Queues the jobs were spread over (`--queues`).
    queues: u64,
    /// The jobs' rate limit (`--rate-limit`), and its burst.
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    burst: Option<u32>,
    enqueue_single: Rate,
    enqueue_batch: Rate,
    drain: Rate,
    latency: Latency,
    redis: Option<RedisCost>,
    deleted_keys: Option<u64>,
    /// What PostgreSQL spent per job.
    #[serde(skip_serializing_if = "Option::is_none")]
    postgres: Option<postgres::PostgresCost>,
    /// The run's schema, dropped at the end, on PostgreSQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped_schema: Option<String>,
}

/// Jobs over time.
#[derive(Debug, Clone, Copy, Serialize)]
struct Rate {
    jobs: u64,
    seconds: f64,
    jobs_per_sec: f64,
    /// Concurrent producers when enqueueing; the worker's concurrency when draining.
    concurrency: u64,
}

impl Rate {
    fn new(jobs: u64, elapsed: Duration, concurrency: u64) -> Self {
        let seconds = elapsed.as_secs_f64();
        #[allow(clippy::cast_precision_loss)] // job counts are far below 2^52
        let jobs_per_sec = if seconds > 0.0 { jobs as f64 / seconds } else { f64::INFINITY };
        Rate { jobs, seconds, jobs_per_sec, concurrency }
    }
}

/// Idle-worker latency, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
struct Latency {
    samples: u64,
    enqueue_to_start_p50_us: u64,
    enqueue_to_start_p99_us: u64,
    enqueue_to_result_p50_us: u64,
    enqueue_to_result_p99_us: u64,
}

/// What Redis spent, per job.
#[derive(Debug, Serialize)]
struct RedisCost {
    enqueue: Cost,
    drain: Cost,
}

/// Server-wide Redis commands and CPU between two snapshots, per job.
#[derive(Debug, Serialize)]
struct Cost {
    commands_per_job: f64,
    cpu_us_per_job: f64,
    /// The commands that made up most of the total, per job, busiest first.
    top_commands: Vec<CommandCount>,
    /// Each master's part, on a Redis Cluster (empty on a single Redis).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    by_master: Vec<MasterCost>,
}

/// One master's part of the Redis CPU, on a cluster.
#[derive(Debug, Serialize)]
struct MasterCost {
    /// Its `host:port`.
    master: String,
    cpu_us_per_job: f64,
    /// Its fraction of the CPU all masters spent.
    share: f64,
}

/// One Redis command's calls per job.
#[derive(Debug, Serialize)]
struct CommandCount {
    command: String,
    per_job: f64,
}

/// Prints the human report as it goes, or nothing until the JSON at the end.
#[derive(Debug, Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
    fn line(self, line: std::fmt::Arguments<'_>) {
        if !self.json {
            println!("{line}");
        }
    }

    fn header(self, setup: &Setup, args: &BenchArgs) {
        self.line(format_args!(
            "dmq bench: {} jobs, worker concurrency {}, batches of {}, broker {}",
            args.jobs, args.concurrency, args.batch_size, setup.broker
        ));
        if let Some(namespace) = &setup.namespace {
            self.line(format_args!("namespace          {namespace} (deleted at the end)"));
        }
        self.line(format_args!("connections        {}", setup.connections));
        if let Some(server) = &setup.server {
            self.line(format_args!("server             {server}"));
        }
        self.line(format_args!("results            {}", setup.result_backend));
        let stream = match (args.no_event_stream, setup.namespace.is_some()) {
            (true, _) => "off (--no-event-stream)",
            (false, true) => "on",
            (false, false) => "off (no other process can read the in-memory broker's)",
        };
        self.line(format_args!("event stream       {stream}"));
        if let Some(n) = args.wait_replicas {
            self.line(format_args!("enqueue            waits for {n} replica(s) (WAIT)"));
        }
    }

    fn rate(self, label: &str, rate: Rate, detail: &str) {
        self.line(format_args!(
            "{label:<18} {:>9} jobs/s  ({} jobs in {:.3} s, {detail})",
            thousands(rate.jobs_per_sec),
            rate.jobs,
            rate.seconds
        ));
    }

    fn cost(self, label: &str, cost: &Cost) {
        let top: Vec<String> =
            cost.top_commands.iter().map(|c| format!("{} {:.2}", c.command, c.per_job)).collect();
        self.line(format_args!(
            "{label:<18} {:.2} Redis commands/job (Lua-internal ones included), {:.1} us Redis CPU/job  [{}]",
            cost.commands_per_job,
            cost.cpu_us_per_job,
            top.join(", ")
        ));
        if !cost.by_master.is_empty() {
            let masters: Vec<String> = cost
                .by_master
                .iter()
                .map(|m| {
                    format!("{} {:.1} us/job ({:.0}%)", m.master, m.cpu_us_per_job, m.share * 100.0)
                })
                .collect();
            self.line(format_args!("{:<18} by master: {}", "", masters.join(", ")));
        }
    }

    fn finish(self, report: &Report) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string(report)?);
        }
        Ok(())
    }
}

/// Runs the four phases on `manager` and returns the figures.
async fn measure(
    manager: &Manager,
    args: &BenchArgs,
    setup: Setup,
    stats: Option<&RedisStats>,
    pg: Option<&postgres::PgStats>,
    out: Output,
) -> anyhow::Result<Report> {
    for name in [noop::NAME, noop_ignored::NAME, stamp::NAME] {
        ensure!(
            manager.registry().task(name).is_some(),
            "the bench task {name} is not registered in this binary"
        );
    }
    let single_jobs = args.jobs / 2;
    let batch_jobs = args.jobs - single_jobs;

    let queues: Arc<[String]> = match stats {
        Some(stats) if stats.nodes.len() > 1 && args.queues > 1 => {
            let namespace = setup.namespace.as_deref().unwrap_or_default();
            spread_queue_names(args.queues, namespace, &stats.masters_of_slot().await?).into()
        }
        _ => queue_names(args.queues).into(),
    };
    if queues.len() > 1 {
        out.line(format_args!("queues             {}", queues.join(", ")));
    }
    let before_enqueue = snapshot(stats).await?;
    let pg_before_enqueue = pg_snapshot(pg).await?;
    let quiet = args.ignore_result;
    let shape = Shape {
        ignore_result: quiet,
        rate_limit: args.rate_limit.as_deref().map(Arc::from),
        burst: args.burst,
    };
    let (single, mut ids) = enqueue_single(manager, single_jobs, &shape, &queues).await?;
    out.rate(
        "enqueue, single",
        single,
        &format!("{} producers, one job per call", single.concurrency),
    );
    let (batch, batch_ids) =
        enqueue_batch(manager, batch_jobs, args.batch_size, &shape, &queues).await?;
    ids.extend(batch_ids);
    out.rate(
        "enqueue, batch",
        batch,
        &format!("{} producers, {} jobs per call", batch.concurrency, args.batch_size),
    );
    let after_enqueue = snapshot(stats).await?;
    let pg_after_enqueue = pg_snapshot(pg).await?;

    let worker = manager
        .worker()
        .concurrency(usize::try_from(args.concurrency).unwrap_or(usize::MAX))
        .queues(queues.iter().cloned())
        .grace(Duration::from_secs(5))
        .guarantee(args.guarantee)
        .start();
    let phases = async {
        // Redis is asked less often: every poll reads each queue's size (a few
        // commands per queue), which Redis's own figures would count against the jobs.
        let poll = match (stats, pg) {
            (Some(_), _) => Duration::from_millis(10 * args.queues.min(20)),
            (None, Some(_)) => postgres::DRAIN_POLL,
            (None, None) => Duration::from_millis(2),
        };
        let drain = drain(manager, args.jobs, args.concurrency, poll, &queues).await?;
        let after_drain = snapshot(stats).await?;
        let pg_after_drain = pg_snapshot(pg).await?;
        out.rate(
            "drain",
            drain,
            &format!(
                "1 worker, concurrency {}, {}, end to end {}{}",
                args.concurrency,
                args.guarantee,
                if quiet { "with ignore_result (no result writes)" } else { "with results stored" },
                match (args.metrics, args.slow_callback) {
                    (false, None) => String::new(),
                    (true, None) => ", metrics recorded".to_owned(),
                    (metrics, Some(sleep)) => format!(
                        "{}, a callback sleeping {sleep:?} per event",
                        if metrics { ", metrics recorded" } else { "" }
                    ),
                } + &match (&args.rate_limit, args.burst) {
                    (Some(rate), burst) => {
                        let default = rate.parse::<dmq_core::RateLimit>().map_or(1, |r| r.default_burst());
                        format!(", rate limit {rate} (burst {})", burst.unwrap_or(default))
                    }
                    (None, _) => String::new(),
                }
            ),
        );
        if !quiet {
            check_results(manager, &ids).await?;
        }
        let redis = match (before_enqueue, after_enqueue, after_drain) {
            (Some(b), Some(e), Some(d)) => {
                let cost = RedisCost { enqueue: e.cost_since(&b, args.jobs), drain: d.cost_since(&e, args.jobs) };
                out.cost("redis, enqueue", &cost.enqueue);
                out.cost("redis, drain", &cost.drain);
                Some(cost)
            }
            _ => None,
        };
        let postgres = match (pg_before_enqueue, pg_after_enqueue, pg_after_drain) {
            (Some(b), Some(e), Some(d)) => {
                let cost = postgres::PostgresCost {
                    enqueue: e.cost_since(&b, args.jobs),
                    drain: d.cost_since(&e, args.jobs),
                };
                out.pg_cost("postgres, enqueue", &cost.enqueue);
                out.pg_cost("postgres, drain", &cost.drain);
                Some(cost)
            }
            _ => None,
        };
        let latency = latency(manager, args.latency_samples).await?;
        out.line(format_args!(
            "latency, idle      enqueue->start p50 {} p99 {}; enqueue->result p50 {} p99 {}  ({} samples)",
            micros(latency.enqueue_to_start_p50_us),
            micros(latency.enqueue_to_start_p99_us),
            micros(latency.enqueue_to_result_p50_us),
            micros(latency.enqueue_to_result_p99_us),
            latency.samples
        ));
        anyhow::Ok((drain, redis, postgres, latency))
    }
    .await;
    worker.shutdown().await;
    let (drain, redis, postgres, latency) = phases?;
    Ok(Report {
        setup,
        jobs: args.jobs,
        concurrency: args.concurrency,
        batch_size: args.batch_size,
        guarantee: args.guarantee.as_str(),
        metrics: args.metrics,
        slow_callback_ms: args.slow_callback.map(|d| d.as_millis()),
        events_dropped: manager.event_listeners().iter().map(|l| l.dropped).sum(),
        event_stream: !args.no_event_stream
            && manager.broker().event_stream().is_some_and(|s| s.shares_events()),
        wait_replicas: args.wait_replicas,
        queues: args.queues,
        rate_limit: args.rate_limit.clone(),
        burst: args.burst,
        enqueue_single: single,
        enqueue_batch: batch,
        drain,
        latency,
        redis,
        deleted_keys: None,
        postgres,
        dropped_schema: None,
    })
}

/// Splits `total` into `parts` near-equal shares.
fn shares(total: u64, parts: u64) -> impl Iterator<Item = (u64, u64)> {
    let parts = parts.clamp(1, total.max(1));
    (0..parts).map(move |p| {
        let start = total * p / parts;
        (start, total * (p + 1) / parts - start)
    })
}

/// Phase 1: `jobs` one-by-one enqueues from concurrent producers.
async fn enqueue_single(
    manager: &Manager,
    jobs: u64,
    shape: &Shape,
    queues: &Arc<[String]>,
) -> anyhow::Result<(Rate, Vec<TaskId>)> {
    let started = Instant::now();
    let mut producers = JoinSet::new();
    for (first, count) in shares(jobs, SINGLE_PRODUCERS) {
        let manager = manager.clone();
        let queues = Arc::clone(queues);
        let shape = shape.clone();
        producers.spawn(async move {
            let mut ids = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
            for i in first..first + count {
                ids.push(noop_call(i, &shape, &queues).enqueue(&manager).await?.id());
            }
            dmq_core::Result::Ok(ids)
        });
    }
    let count = producers.len() as u64;
    let ids = join_ids(producers).await.context("enqueueing jobs one by one")?;
    Ok((Rate::new(jobs, started.elapsed(), count), ids))
}

/// Phase 2: `jobs` enqueued in batches of `batch_size` from concurrent producers.
async fn enqueue_batch(
    manager: &Manager,
    jobs: u64,
    batch_size: u64,
    shape: &Shape,
    queues: &Arc<[String]>,
) -> anyhow::Result<(Rate, Vec<TaskId>)> {
    let started = Instant::now();
    let mut producers = JoinSet::new();
    let batches = jobs.div_ceil(batch_size);
    for (first_batch, count) in shares(batches, BATCH_PRODUCERS) {
        let manager = manager.clone();
        let queues = Arc::clone(queues);
        let shape = shape.clone();
        producers.spawn(async move {
            let mut ids = Vec::new();
            for batch in first_batch..first_batch + count {
                let from = batch * batch_size;
                let to = (from + batch_size).min(jobs);
                let calls = (from..to).map(|i| noop_call(i, &shape, &queues));
                ids.extend(manager.enqueue_batch(calls).await?);
            }
            dmq_core::Result::Ok(ids)
        });
    }
    let count = producers.len() as u64;
    let ids = join_ids(producers).await.context("enqueueing jobs in batches")?;
    Ok((Rate::new(jobs, started.elapsed(), count), ids))
}

async fn join_ids(
    mut producers: JoinSet<dmq_core::Result<Vec<TaskId>>>,
) -> anyhow::Result<Vec<TaskId>> {
    let mut all = Vec::new();
    while let Some(joined) = producers.join_next().await {
        all.extend(joined.map_err(|e| anyhow!("a producer task failed: {e}"))??);
    }
    Ok(all)
}

/// Phase 3: times the worker until no job of the bench queue is left, ready or
/// in flight (a job leaves in-flight only after its result is stored).
async fn drain(
    manager: &Manager,
    jobs: u64,
    concurrency: u64,
    poll: Duration,
    queues: &[String],
) -> anyhow::Result<Rate> {
    let started = Instant::now();
    let mut last_left = u64::MAX;
    let mut last_progress = Instant::now();
    loop {
        let mut left = 0;
        for queue in queues {
            let stats =
                manager.admin()?.queue_stats(queue).await.context("reading the queue's size")?;
            ensure!(
                stats.dead == 0,
                "{} bench jobs were dead-lettered; the worker could not run them",
                stats.dead
            );
            left += stats.ready + stats.in_flight + stats.delayed;
        }
        if left == 0 {
            break;
        }
        if left < last_left {
            last_left = left;
            last_progress = Instant::now();
        } else if last_progress.elapsed() > STALL_TIMEOUT {
            bail!(
                "the drain stalled: {left} jobs left and none finished in {} s",
                STALL_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(poll).await;
    }
    Ok(Rate::new(jobs, started.elapsed(), concurrency))
}

/// Checks that a spread-out sample of the drained jobs, and the last ones enqueued,
/// have their result stored.
async fn check_results(manager: &Manager, ids: &[TaskId]) -> anyhow::Result<()> {
    let step = (ids.len() / RESULT_CHECKS).max(1);
    let sample = ids.iter().step_by(step).chain(ids.iter().rev().take(16));
    let mut checked = 0;
    for &id in sample {
        let stored = manager
            .result::<u64>(id)
            .get()
            .await
            .with_context(|| format!("reading the result of job {id}"))?;
        ensure!(stored.is_some(), "job {id} left the queue but has no stored result");
        checked += 1;
    }
    ensure!(checked > 0 || ids.is_empty(), "no result was checked");
    Ok(())
}

/// Phase 4: one job at a time on the idle worker.
async fn latency(manager: &Manager, samples: u64) -> anyhow::Result<Latency> {
    let mut to_start = Vec::with_capacity(usize::try_from(samples).unwrap_or(0));
    let mut to_result = Vec::with_capacity(to_start.capacity());
    for n in 0..WARM_UP_SAMPLES + samples {
        let enqueued_at = unix_micros();
        let timer = Instant::now();
        let handle = stamp::call().enqueue(manager).await.context("enqueueing a latency job")?;
        let started_at =
            handle.result(SAMPLE_TIMEOUT).await.context("waiting for a latency job")?;
        let round_trip = timer.elapsed();
        if n >= WARM_UP_SAMPLES {
            to_start.push(started_at.saturating_sub(enqueued_at));
            to_result.push(u64::try_from(round_trip.as_micros()).unwrap_or(u64::MAX));
        }
    }
    to_start.sort_unstable();
    to_result.sort_unstable();
    Ok(Latency {
        samples,
        enqueue_to_start_p50_us: percentile(&to_start, 50),
        enqueue_to_start_p99_us: percentile(&to_start, 99),
        enqueue_to_result_p50_us: percentile(&to_result, 50),
        enqueue_to_result_p99_us: percentile(&to_result, 99),
    })
}

/// The nearest-rank `p`th percentile of sorted `values` (0 when empty).
fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// `850 us` or `1.25 ms`.
fn micros(us: u64) -> String {
    if us < 1000 {
        format!("{us} us")
    } else {
        #[allow(clippy::cast_precision_loss)]
        let ms = us as f64 / 1000.0;
        format!("{ms:.2} ms")
    }
}

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "inf".to_owned();
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let digits = (x.max(0.0).round() as u64).to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    grouped
}

async fn pg_snapshot(
    pg: Option<&postgres::PgStats>,
) -> anyhow::Result<Option<postgres::PgSnapshot>> {
    match pg {
        Some(pg) => pg.snapshot().await.map(Some),
        None => Ok(None),
    }
}

async fn snapshot(stats: Option<&RedisStats>) -> anyhow::Result<Option<Snapshot>> {
    match stats {
        Some(stats) => stats.snapshot().await.map(Some),
        None => Ok(None),
    }
}

/// Connections for `INFO` and the clean-up, apart from the broker's: one to each
/// master of a cluster, or one to the single Redis.
struct RedisStats {
    /// Each master with its `host:port` (the URL as shown, for a single Redis).
    nodes: Vec<(String, dmq_redis::RedisConnection)>,
    shown: String,
}

/// Server-wide command counts and CPU time at one moment, summed over the masters,
/// with each master's CPU time.
#[derive(Debug, Clone, Default, PartialEq)]
struct Snapshot {
    calls: BTreeMap<String, u64>,
    cpu_us: f64,
    by_master: BTreeMap<String, f64>,
}

impl RedisStats {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let shown = redact(url);
        let conn = dmq_redis::RedisConnection::open(url).await?;
        let nodes = conn
            .masters()
            .await?
            .into_iter()
            .map(|node| (node.node().unwrap_or_else(|| shown.clone()), node))
            .collect();
        Ok(RedisStats { nodes, shown })
    }

    /// For each slot, which of [`nodes`](RedisStats::nodes) serves it (by its index),
    /// read from `CLUSTER SLOTS`.
    async fn masters_of_slot(&self) -> anyhow::Result<Vec<usize>> {
        let (_, conn) = self.nodes.first().context("a cluster without masters")?;
        let ranges: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn.clone())
            .await
            .with_context(|| format!("reading CLUSTER SLOTS from {}", self.shown))?;
        let mut of_slot = vec![0; 16_384];
        for range in ranges {
            let redis::Value::Array(fields) = range else { continue };
            let number = |v: Option<&redis::Value>| match v {
                Some(redis::Value::Int(n)) => usize::try_from(*n).ok(),
                _ => None,
            };
            let (Some(start), Some(end)) = (number(fields.first()), number(fields.get(1))) else {
                continue;
            };
            let Some(redis::Value::Array(master)) = fields.get(2) else { continue };
            let host = match master.first() {
                Some(redis::Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                _ => String::new(),
            };
            let port = number(master.get(1)).map(|p| p.to_string()).unwrap_or_default();
            // The node of this address; else the only one of this port (a node that
            // does not know its own address answers with an empty host).
            let exact = self.nodes.iter().position(|(name, _)| *name == format!("{host}:{port}"));
            let same_port: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].0.rsplit_once(':').is_some_and(|(_, p)| p == port))
                .collect();
            let index = exact.or(match same_port.as_slice() {
                [only] => Some(*only),
                _ => None,
            });
            let index = index.with_context(|| {
                format!("CLUSTER SLOTS names a master that is not among {:?}", self.names())
            })?;
            for slot in of_slot.iter_mut().take(end + 1).skip(start) {
                *slot = index;
            }
        }
        Ok(of_slot)
    }

    fn names(&self) -> Vec<&str> {
        self.nodes.iter().map(|(name, _)| name.as_str()).collect()
    }

    async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let mut total = Snapshot::default();
        for (name, conn) in &self.nodes {
            let mut conn = conn.clone();
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .arg("cpu")
                .query_async(&mut conn)
                .await
                .with_context(|| format!("reading INFO from Redis at {name} ({})", self.shown))?;
            let one = Snapshot::parse(&info);
            for (command, calls) in one.calls {
                *total.calls.entry(command).or_default() += calls;
            }
            total.cpu_us += one.cpu_us;
            total.by_master.insert(name.clone(), one.cpu_us);
        }
        Ok(total)
    }

    /// Deletes every key of the bench namespace, on every master; returns how many.
    async fn delete_namespace(&self, keys: &dmq_redis::Keys) -> anyhow::Result<u64> {
        let mut deleted = 0;
        for (_, conn) in &self.nodes {
            deleted += dmq_redis::delete_namespace(&mut conn.clone(), keys).await?;
        }
        Ok(deleted)
    }
}

impl Snapshot {
    /// Reads `cmdstat_<name>:calls=N,...` and `used_cpu_{sys,user}:S` lines.
    fn parse(info: &str) -> Self {
        let mut snapshot = Snapshot::default();
        for line in info.lines() {
            if let Some((name, fields)) =
                line.strip_prefix("cmdstat_").and_then(|rest| rest.split_once(':'))
            {
                let calls = fields
                    .split(',')
                    .find_map(|field| field.strip_prefix("calls="))
                    .and_then(|n| n.trim().parse().ok());
                if let Some(calls) = calls {
                    snapshot.calls.insert(name.to_owned(), calls);
                }
            } else if let Some((key, value)) = line.split_once(':')
                && matches!(key, "used_cpu_sys" | "used_cpu_user")
                && let Ok(seconds) = value.trim().parse::<f64>()
            {
                snapshot.cpu_us += seconds * 1e6;
            }
        }
        snapshot
    }

    /// What Redis did between `earlier` and this snapshot, per job; the bench's own
    /// `INFO` calls are left out.
    fn cost_since(&self, earlier: &Snapshot, jobs: u64) -> Cost {
        #[allow(clippy::cast_precision_loss)]
        let jobs = jobs.max(1) as f64;
        let mut deltas: Vec<(String, f64)> = self
            .calls
            .iter()
            .filter(|(name, _)| name.as_str() != "info")
            .filter_map(|(name, &now)| {
                let delta = now.saturating_sub(earlier.calls.get(name).copied().unwrap_or(0));
                #[allow(clippy::cast_precision_loss)]
                (delta > 0).then(|| (name.clone(), delta as f64 / jobs))
            })
            .collect();
        deltas.sort_by(|a, b| b.1.total_cmp(&a.1));
        let commands_per_job = deltas.iter().map(|(_, n)| n).sum();
        deltas.truncate(6);
        let cpu_us = (self.cpu_us - earlier.cpu_us).max(0.0);
        let by_master = if self.by_master.len() > 1 {
            self.by_master
                .iter()
                .map(|(master, &now)| {
                    let spent =
                        (now - earlier.by_master.get(master).copied().unwrap_or(now)).max(0.0);
                    MasterCost {
                        master: master.clone(),
                        cpu_us_per_job: spent / jobs,
                        share: if cpu_us > 0.0 { spent / cpu_us } else { 0.0 },
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        Cost {
            by_master,
            commands_per_job,
            cpu_us_per_job: cpu_us / jobs,
            top_commands: deltas
                .into_iter()
                .map(|(command, per_job)| CommandCount { command, per_job })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_queues_put_as_many_on_each_master_as_can_be() {
        // Three masters with a third of the slots each, as redis-cli --cluster create
        // makes them.
        let layout: Vec<usize> = (0..16_384).map(|slot| slot * 3 / 16_384).collect();
        for (n, most) in [(12, 4), (8, 3), (48, 16), (2, 1)] {
            let names = spread_queue_names(n, "dmq-bench-ns", &layout);
            assert_eq!(names.len() as u64, n);
            let mut per_master = [0; 3];
            for name in &names {
                let slot = dmq_redis::cluster_slot(format!("{{dmq-bench-ns:{name}}}").as_bytes());
                per_master[layout[usize::from(slot)]] += 1;
            }
            assert!(per_master.iter().all(|&k| k <= most), "{n} queues: {per_master:?}");
            let mut unique = names.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), names.len(), "{names:?}");
            assert_eq!(names[0], "dmq-bench", "the first candidate is always taken");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!((percentile(&v, 50), percentile(&v, 99)), (50, 99));
        assert_eq!((percentile(&[7], 50), percentile(&[7], 99)), (7, 7));
        assert_eq!(percentile(&[], 50), 0);
    }

    #[test]
    fn shares_cover_the_total_once() {
        for (total, parts) in [(10, 3), (2, 32), (1000, 4), (1, 1)] {
            let got: Vec<_> = shares(total, parts).collect();
            assert_eq!(got.iter().map(|s| s.1).sum::<u64>(), total);
            assert!(got.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
            assert!(got.iter().all(|s| s.1 > 0));
        }
    }

    #[test]
    fn info_is_parsed_and_differenced() {
        let before = Snapshot::parse(
            "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=5,usec_per_call=0.5,rejected_calls=0,failed_calls=0\r\n\
             cmdstat_info:calls=3,usec=1\r\n# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:0.5\r\nused_cpu_sys_children:9\r\n",
        );
        assert_eq!(before.calls["evalsha"], 10);
        assert!((before.cpu_us - 2e6).abs() < 1.0);
        let after = Snapshot::parse(
            "cmdstat_evalsha:calls=30,usec=9\r\ncmdstat_lpush:calls=10,usec=1\r\ncmdstat_info:calls=9\r\n\
             used_cpu_sys:1.6\r\nused_cpu_user:0.5\r\n",
        );
        let cost = after.cost_since(&before, 10);
        assert!((cost.commands_per_job - 3.0).abs() < 1e-9, "{cost:?}");
        assert_eq!(cost.top_commands[0].command, "evalsha");
        assert!((cost.cpu_us_per_job - 10_000.0).abs() < 1.0, "{cost:?}");
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(micros(850), "850 us");
        assert_eq!(micros(1250), "1.25 ms");
    }
}
