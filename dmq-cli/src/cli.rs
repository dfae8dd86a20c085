//! The clap types: every command, option and its help text, and how a usage error
//! reads.

use std::ffi::OsString;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory as _, Parser, Subcommand};

/// dmq: a Celery-style task queue for Rust.
#[derive(Debug, Parser)]
#[command(name = "dmq", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// A usage error clap found in `argv` (the whole command line, the program first), as
/// one line without the `error: ` prefix: clap's message, its tip if any, and the usage
/// of the command it is about. clap's own output is several lines (message, tip, usage,
/// a hint); dmq keeps every error to one line.
pub(crate) fn usage_error(error: &clap::Error, argv: &[OsString]) -> String {
    let program = argv
        .first()
        .and_then(|arg0| std::path::Path::new(arg0).file_name())
        .map_or_else(|| "dmq".to_owned(), |name| name.to_string_lossy().into_owned());
    let mut root = Cli::command().bin_name(program);
    root.build();
    // The subcommand the error is about: the deepest one named in `argv`.
    let mut command = &root;
    for arg in argv.iter().skip(1) {
        if let Some(sub) = command.find_subcommand(arg) {
            command = sub;
        }
    }
    let usage = one_line(command.clone().render_usage().to_string().trim_start_matches("Usage:"));
    let message = if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        // clap would print the whole help here.
        let names: Vec<&str> = command
            .get_subcommands()
            .map(clap::Command::get_name)
            .filter(|n| *n != "help")
            .collect();
        format!("a command is missing, one of: {}", names.join(", "))
    } else {
        // clap's text: "error: <message>", then "tip: ..." paragraphs, the usage and
        // "For more information, try '--help'."
        let rendered = error.render().to_string();
        let mut paragraphs = rendered.split("\n\n").map(str::trim);
        let first = paragraphs.next().unwrap_or_default();
        let mut message = one_line(first.strip_prefix("error:").unwrap_or(first));
        for tip in paragraphs.filter(|p| p.starts_with("tip:")) {
            message.push_str(&format!(" ({})", one_line(tip)));
        }
        message
    };
    format!("{message}; usage: {usage}")
}

/// `text` with every run of whitespace, line breaks included, as one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The `dmq` subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Measure enqueue rates, end-to-end throughput and idle latency of a broker.
    ///
    /// Enqueues --jobs no-op jobs (half one by one from 32 concurrent producers,
    /// half in batches), drains them with one in-process worker while timing until
    /// every result is stored, then measures enqueue-to-start and enqueue-to-result
    /// latency on the idle worker. On Redis it also reports Redis commands and CPU
    /// per job (server-wide counters: other clients of the same Redis inflate them).
    /// Every key lives under a fresh namespace, deleted at the end, also on error;
    /// it never flushes a database. On PostgreSQL every table lives in a fresh schema,
    /// dropped at the end, also on error or Ctrl-C.
    #[command(
        after_help = "Examples:\n  dmq bench --broker memory://\n  dmq bench --broker redis://127.0.0.1:6379 --jobs 200000 --concurrency 256\n  dmq bench --broker postgres://postgres@127.0.0.1:5432/app --jobs 20000\n  dmq bench --json > bench.json"
    )]
    Bench(BenchArgs),

    /// Run workers: one in this process, or --workers processes of --tasks APP.
    ///
    /// With --tasks APP, supervises --workers worker processes of the task binary APP;
    /// without it, one worker runs in this process with this binary's tasks. A task
    /// binary is any binary whose main calls `dmq_cli::main()`: `app worker`
    /// runs its tasks. A worker takes jobs from --queues (by default every queue of
    /// the binary's tasks), runs the periodic scheduler unless --no-scheduler, and on
    /// SIGINT or SIGTERM stops claiming, lets running jobs finish within --grace,
    /// releases the rest to their queues and exits 0. The supervisor restarts a
    /// worker process that crashes (with backoff) and passes SIGINT or SIGTERM on to
    /// every process. With --metrics-addr each worker serves Prometheus metrics at
    /// /metrics and a health check at /health.
    #[command(
        after_help = "Examples:\n  dmq worker --tasks app --workers 4 --broker redis://127.0.0.1:6379\n  app worker --broker redis://127.0.0.1:6379 --concurrency 32\n  app worker --queues emails,default --guarantee exactly-once --no-scheduler\n  app worker --metrics-addr 127.0.0.1:9090\n  dmq worker --tasks app --workers 4 --metrics-addr 0.0.0.0:9100   (ports 9100-9103)\n  app worker --outbox postgres://app@db:5432/shop   (relays enqueue_in's outbox to Redis)"
    )]
    Worker(WorkerArgs),

    /// List the tasks linked into this binary: name, queue and settings.
    #[command(after_help = "Examples:\n  app tasks\n  app tasks --json")]
    Tasks(TasksArgs),

    /// Show each queue's ready, delayed, in-flight and dead jobs, and its suspect jobs
    /// and bad entries.
    ///
    /// SUSPECT counts the ready jobs taken back from a worker that died or stalled while
    /// running them, each waiting to run alone; BAD-ENTRIES counts the entries claims
    /// dropped from the ready lists because they were no dmq job. With no queue named,
    /// lists every queue of the namespace's queue registry: each queue a job was
    /// enqueued to or a worker takes jobs from, emptied ones included. A partitioned
    /// queue (`#[task(partitions = N)]`) shows as one row, `emails (8 partitions)`,
    /// its partitions' figures added up; --partitions shows a row for each.
    #[command(
        after_help = "Examples:\n  dmq queues\n  dmq queues emails reports\n  dmq queues --partitions\n  dmq queues --namespace billing --json"
    )]
    Queues(QueuesArgs),

    /// Show what holds jobs back: each queue's gates (rate and concurrency limits) and
    /// the namespace's enqueue quotas.
    ///
    /// A gate is the task's name, or `task[key]` for limits per key. For each: its
    /// limits, its jobs running and waiting, and why it holds them back now (its
    /// concurrency is full, or its rate's next start is ahead). Then each enqueue quota,
    /// with what its current window used. With no queue named, every queue of the
    /// namespace's queue registry (those with gates).
    #[command(after_help = "Examples:
  dmq limits
  dmq limits reports --json")]
    Limits(LimitsArgs),

    /// List the live workers: id, host, pid, queues, concurrency, heartbeat.
    ///
    /// Each worker's id, host, pid, queues, concurrency, start and the time its
    /// heartbeat lapses.
    #[command(after_help = "Examples:\n  dmq workers\n  dmq workers --json")]
    Workers(WorkersArgs),

    /// Inspect and act on a queue's dead-letter queue: list, requeue, delete, purge.
    #[command(
        after_help = "Examples:\n  dmq dlq list emails --limit 50\n  dmq dlq requeue emails 0b5c6f2e-3f3c-4d7e-9a57-6f1f2f0c9a10\n  dmq dlq requeue emails --all --to emails-retry\n  dmq dlq delete emails 0b5c6f2e-3f3c-4d7e-9a57-6f1f2f0c9a10\n  dmq dlq purge emails --yes"
    )]
    Dlq(DlqArgs),

    /// List the periodic schedules with their last and next fire times.
    #[command(after_help = "Examples:\n  dmq periodic\n  dmq periodic --json")]
    Periodic(PeriodicArgs),

    /// Show the stored result of one task: state, attempts, failure and value.
    ///
    /// The value is shown as JSON, decoded from its MessagePack encoding. Without
    /// --wait, a task with no stored result yet is an error.
    #[command(
        after_help = "Examples:\n  dmq result 0b5c6f2e-3f3c-4d7e-9a57-6f1f2f0c9a10\n  dmq result 0b5c6f2e-3f3c-4d7e-9a57-6f1f2f0c9a10 --wait 30s --json"
    )]
    Result(ResultArgs),

    /// Enqueue a job by task name, with its arguments as a JSON array; prints its id.
    ///
    /// The array is the task's argument tuple, encoded as MessagePack: a task
    /// `send(to: String, retries: u32)` takes `'["ann@example.com", 3]'`, a task without
    /// arguments `'[]'`. `-` reads the array from standard input, `@FILE` from a file.
    /// A task binary (`app enqueue`) checks the arguments against the types of its own
    /// tasks before it enqueues, and sends the job to the task's own queue; `dmq`
    /// knows none of the user's tasks, so it sends them to `default` unless told
    /// --queue, and a worker checks them. A task or queue name is 1 to 255 bytes
    /// without whitespace, control characters, braces or commas.
    #[command(
        after_help = "Examples:\n  dmq enqueue emails.send '[\"ann@example.com\", 3]'\n  dmq enqueue reports.build '[]' --queue reports --delay 10m\n  dmq enqueue cleanup '[7]' --eta 2030-01-01T00:00:00Z --priority 9\n  dmq enqueue thumbnails.make @batch.json --queue images\n  jq -c '[.url, .size]' order.json | dmq enqueue fetch - --queue web"
    )]
    Enqueue(EnqueueArgs),

    /// Show one job by id: its queue, state, task, attempt and times, and its result.
    ///
    /// Looks through every queue of the namespace: ready (or suspect: waiting to run
    /// alone), delayed (with its due time), in flight (with its lease deadline),
    /// stranded (stored but waiting nowhere: `dmq doctor --fix` puts it back) or
    /// dead-lettered (with the reason, among each queue's newest 10,000 letters); then
    /// the stored result, if any.
    #[command(
        after_help = "Examples:\n  dmq job 0b5c6f2e-3f3c-4d7e-9a57-6f1f2f0c9a10\n  dmq job 0b5c6f2e-3f3c-4d7e-9a57-6f1f2f0c9a10 --json"
    )]
    Job(JobArgs),

    /// Follow the event stream: every job's queued, started, completed, failed, retry,
    /// dead-lettered, not-found and expired events, from every process.
    ///
    /// Prints one line per event as it happens (with --json, one JSON object per
    /// line), until Ctrl-C, SIGTERM, --count events or --for a while. Starts with
    /// events that happen from now on, or with the oldest the stream keeps
    /// (--from-start), or the last N (--last N). --kind, --task and --queue select
    /// events; each takes a comma-separated list or repeats, and the ones given must
    /// all match. Says on stderr when it is watching. Workers and producers write the
    /// stream in batches, so an event shows a few milliseconds after it happened; the
    /// stream keeps about the last 10,000 events (RedisBroker::with_event_stream_cap).
    #[command(
        after_help = "Examples:\n  dmq events\n  dmq events --kind failed,dead_lettered --queue emails\n  dmq events --task emails.send --last 20\n  dmq events --from-start --json --for 10s > events.jsonl"
    )]
    Events(EventsArgs),

    /// Cancel a job that has not started: remove it from its queue so it never runs.
    ///
    /// A job waiting in QUEUE (ready, suspect or delayed, a retry waiting its turn
    /// included) is removed with its envelope, and a cancelled result is stored for it,
    /// so whoever waits for its result learns at once that it will not run. A job a
    /// worker is running is left alone, and one QUEUE does not hold (finished,
    /// dead-lettered: see `dmq dlq delete`, or never there) changes nothing; both exit
    /// with status 1 and say which. QUEUE is the queue the job is in: for a partitioned
    /// queue, its partition (emails#3), as `dmq job ID` shows it.
    #[command(
        after_help = "Examples:\n  dmq cancel emails 0b5c6f2e-3f3c-4d7e-9a57-6f1f2f0c9a10\n  dmq cancel 'emails#3' 0b5c6f2e-3f3c-4d7e-9a57-6f1f2f0c9a10 --json"
    )]
    Cancel(CancelArgs),

    /// Delete every job waiting in a queue, ready or delayed; asks for --yes.
    ///
    /// Jobs being run stay with their workers, and dead letters stay too (see
    /// `dmq dlq purge`).
    #[command(after_help = "Examples:\n  dmq purge emails --yes\n  dmq purge emails --yes --json")]
    Purge(PurgeArgs),

    /// Pause a queue: workers everywhere stop claiming from it until `dmq resume`.
    ///
    /// Enqueues still land in a paused queue, and delayed jobs and retries wait in it;
    /// the jobs workers are running already finish. The pause is kept by the broker, so
    /// it holds for every worker of the namespace, those started later included, until
    /// `dmq resume`. A partitioned queue pauses whole (each partition the queue registry
    /// lists), a partition (emails#3) alone. `dmq queues` shows what is paused. Pausing
    /// a paused queue changes nothing and says so.
    #[command(after_help = "Examples:\n  dmq pause emails\n  dmq pause emails --json")]
    Pause(PauseArgs),

    /// Resume a paused queue: workers claim from it again, woken at once.
    #[command(after_help = "Examples:\n  dmq resume emails\n  dmq resume emails --json")]
    Resume(PauseArgs),

    /// Set, remove and list enqueue quotas: how many jobs a namespace (or one key of it,
    /// a tenant) may enqueue per period.
    ///
    /// The broker keeps the quotas and counts every manager's enqueues against them in
    /// fixed windows that open with the first enqueue counted: once a window's quota is
    /// used up, an enqueue fails with an error saying when to retry (QuotaExceeded;
    /// HTTP 429 with Retry-After), and nothing is enqueued. A job counts against its
    /// namespace's quota and, with a quota key (`Call::quota_key`, the HTTP API's
    /// `quota_key`), that key's too. Producers learn of a new quota within a second.
    #[command(after_help = "Examples:
  dmq quota set billing 1000/m
  dmq quota set billing 100/m --key tenant-7
  dmq quota list billing --json
  dmq quota remove billing --key tenant-7")]
    Quota(QuotaArgs),

    /// Act on a queue as a whole: delete it.
    #[command(
        after_help = "Examples:\n  dmq queue delete emails --yes\n  dmq queue delete emails --yes --force --json"
    )]
    Queue(QueueArgs),

    /// Find stranded jobs (stored, but waiting in no list) and, with --fix, put them
    /// back.
    ///
    /// A stranded job has its envelope stored but waits in no ready, suspect, delayed
    /// or in-flight list, so nothing would ever run it: a write cut off halfway leaves
    /// one behind. --fix puts each back at the front of its ready list. Also shows each
    /// queue's suspect jobs (taken back from a lost worker, waiting to run alone) and
    /// the bad entries dropped so far. With no queue named, checks every queue of the
    /// namespace's queue registry. Workers run it with --fix on their queues once a minute
    /// by themselves. Exits 0 when nothing is stranded or everything stranded was put
    /// back, 1 when stranded jobs were found and left where they are.
    #[command(
        after_help = "Examples:\n  dmq doctor\n  dmq doctor emails reports --fix\n  dmq doctor --json"
    )]
    Doctor(DoctorArgs),

    /// Make a PostgreSQL namespace's schema and bring its tables up to date.
    ///
    /// Makes the schema named --namespace (`dmq` by default) at the postgres:// URL of
    /// --broker if it is missing, runs the migrations this dmq embeds that it has not
    /// run yet, and records what the schema serves: a PostgreSQL broker's jobs (by
    /// default), or with --outbox an outbox of jobs enqueued in transactions, relayed
    /// to a Redis broker. A schema serves one of the two: naming the other is refused.
    /// Workers and producers migrate when they connect too; this runs it ahead of
    /// them, as a deploy step with its own credentials. Running it again changes
    /// nothing. Redis needs no migration.
    #[command(
        after_help = "Examples:\n  dmq migrate --broker postgres://postgres@127.0.0.1:5432/app\n  dmq migrate --broker postgres://dmq:secret@db.internal:5432/app --namespace billing\n  dmq migrate --broker postgres://postgres@127.0.0.1:5432/app --namespace relay --outbox\n  DMQ_BROKER_URL=postgres://postgres@127.0.0.1:5432/app dmq migrate --json"
    )]
    Migrate(MigrateArgs),

    /// Serve the broker over HTTP: the /v1 JSON API for producers, consumers and
    /// operators in any language.
    ///
    /// Producers enqueue jobs and wait for results; consumers claim jobs under dmq's
    /// fenced leases and ack, nack or release them; operators read queues, workers,
    /// schedules and dead letters and follow events (Server-Sent Events). The API is
    /// described at /v1/openapi.json; /health answers 200 while the broker does.
    /// Every other request needs Authorization: Bearer TOKEN, a static token from
    /// --tokens or a JWT checked with --jwt-hs256-secret or --jwt-rs256-key, whose
    /// scopes (produce, consume, admin) say what it may do. Stops on SIGINT or SIGTERM,
    /// letting open requests finish within --grace.
    #[command(
        after_help = "Examples:\n  dmq serve --tokens tokens.json --listen 0.0.0.0:8080\n  dmq serve --jwt-hs256-secret secret.key --tls-cert cert.pem --tls-key key.pem\n  dmq serve --insecure-no-auth   (local use only)\n  dmq serve --tokens tokens.json --rate-per-token 1000/s --rate-per-ip 100/s"
    )]
    Serve(ServeArgs),
}

/// Where the admin commands find the broker, and how they print.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// The broker the workers use: redis://host:port[/db], rediss:// for TLS,
    /// redis+cluster://host:port[,host:port...] for a Redis Cluster,
    /// redis+sentinel://host:port[,host:port...]/MASTER[/db] through Sentinel, or
    /// postgres://user:password@host:5432/database for PostgreSQL.
    ///
    /// TLS: rediss://host:port[/db]?tls_ca=CA.pem trusts that CA file instead of the
    /// system's roots; add &tls_cert=CLIENT.pem&tls_key=CLIENT.key for a client
    /// certificate (mutual TLS); rediss://host:port/#insecure skips the server's
    /// certificate check (tests only). rediss+cluster:// and rediss+sentinel:// take the
    /// same options. An ACL user logs in with
    /// redis://user:password@host:port; the password is never printed.
    #[arg(
        long,
        env = "DMQ_BROKER_URL",
        default_value = "redis://127.0.0.1:6379",
        value_name = "URL"
    )]
    pub broker: String,

    /// The namespace the workers use: on Redis, the prefix of its keys; on PostgreSQL,
    /// the schema of its tables (lowercase letters, digits and underscores).
    #[arg(long, env = "DMQ_NAMESPACE", default_value = "dmq", value_name = "NS")]
    pub namespace: String,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The options of `dmq queues`.
#[derive(Debug, Clone, Args)]
pub struct QueuesArgs {
    /// The queues to show [default: every queue of the namespace's queue registry]. A
    /// partitioned queue stands for its partitions.
    #[arg(value_name = "QUEUE")]
    pub queues: Vec<String>,

    /// Show each partition of a partitioned queue on a row of its own, named
    /// `<queue>#<n>`, instead of one row that adds them up.
    #[arg(long)]
    pub partitions: bool,

    #[command(flatten)]
    /// Where the broker is, and how to print.
    pub broker: BrokerArgs,
}

/// The options of `dmq limits`.
#[derive(Debug, Clone, Args)]
pub struct LimitsArgs {
    /// The queues to show [default: every queue of the namespace's queue registry].
    #[arg(value_name = "QUEUE")]
    pub queues: Vec<String>,

    #[command(flatten)]
    /// Where the broker is, and how to print.
    pub broker: BrokerArgs,
}

/// The options of `dmq doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// The queues to check [default: every queue of the namespace's queue registry].
    #[arg(value_name = "QUEUE")]
    pub queues: Vec<String>,

    /// Put the stranded jobs back at the front of their ready lists.
    #[arg(long)]
    pub fix: bool,

    #[command(flatten)]
    /// Where the broker is, and how to print.
    pub broker: BrokerArgs,
}

/// The options of `dmq migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Migrate the schema for an outbox of jobs enqueued in transactions and relayed to
    /// a Redis broker, instead of for a PostgreSQL broker.
    #[arg(long)]
    pub outbox: bool,

    #[command(flatten)]
    /// The PostgreSQL (--broker postgres://...), the namespace (the schema), and how to
    /// print.
    pub broker: BrokerArgs,
}

/// The options of `dmq workers`.
#[derive(Debug, Clone, Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    /// Where the broker is, and how to print.
    pub broker: BrokerArgs,
}

/// The options of `dmq job`.
#[derive(Debug, Clone, Args)]
pub struct JobArgs {
    /// The job's task id.
    pub id: String,
    #[command(flatten)]
    /// Where the broker is, and how to print.
    pub broker: BrokerArgs,
}

/// The options of `dmq events`.
#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// Only events of these kinds: queued, started, completed, failed, retry,
    /// dead_lettered, not_found, expired, held.
    #[arg(long = "kind", value_name = "KINDS", value_delimiter = ',', value_parser = parse_event_type)]
    pub kinds: Vec<dmq_core::EventType>,

    /// Only events of these tasks, by name.
    #[arg(long = "task", value_name = "TASKS", value_delimiter = ',')]
    pub tasks: Vec<String>,

    /// Only events of jobs in these queues.
    #[arg(long = "queue", value_name = "QUEUES", value_delimiter = ',')]
    pub queues: Vec<String>,

    /// Start with the oldest events the stream keeps, not with new ones.
    #[arg(long, conflicts_with = "last")]
    pub from_start: bool,

    /// Start with the last N events the stream keeps that match the filters.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,

    /// Stop after printing N events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Stop after this long, e.g. 30s or 5m.
    #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,

    #[command(flatten)]
    /// Where the broker is; --json prints one JSON object per event and line.
    pub broker: BrokerArgs,
}

/// Parses an event kind, saying which there are.
fn parse_event_type(text: &str) -> Result<dmq_core::EventType, String> {
    text.parse().map_err(|e: dmq_core::Error| e.to_string())
}

/// The options of `dmq cancel`.
#[derive(Debug, Clone, Args)]
pub struct CancelArgs {
    /// The queue the job is in (for a partitioned queue, its partition).
    pub queue: String,
    /// The job's task id.
    pub id: String,
    #[command(flatten)]
    /// Where the broker is, and how to print.
    pub broker: BrokerArgs,
}

/// The options of `dmq purge`.
#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    /// The queue to empty.
    pub queue: String,
    /// Confirms that the waiting jobs are to be deleted for good.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    /// Where the broker is, and how to print.
    pub broker: BrokerArgs,
}

/// The options of `dmq pause` and `dmq resume`.
#[derive(Debug, Clone, Args)]
pub struct PauseArgs {
    /// The queue (for a partitioned queue, all its partitions; `emails#3` one of them).
    pub queue: String,
    #[command(flatten)]
    /// Where the broker is, and how to print.
    pub broker: BrokerArgs,
}

/// The options of `dmq serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The address to listen on.
    #[arg(long, env = "DMQ_LISTEN", default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// A JSON file of static bearer tokens:
    /// {"tokens": [{"name": "billing", "token": "...", "scopes": ["produce"],
    /// "namespaces": ["dmq"], "queues": ["emails"]}]} (namespaces and queues optional).
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<std::path::PathBuf>,
    /// Accept JWTs signed with HS256 by the secret in FILE (at least 32 bytes).
    #[arg(long, value_name = "FILE", conflicts_with = "jwt_rs256_key")]
    pub jwt_hs256_secret: Option<std::path::PathBuf>,
    /// Accept JWTs signed with RS256 by the private key whose PEM public key is in FILE.
    #[arg(long, value_name = "FILE")]
    pub jwt_rs256_key: Option<std::path::PathBuf>,
    /// Require JWTs to carry this audience in their `aud` claim.
    #[arg(long, value_name = "AUD")]
    pub jwt_audience: Option<String>,
    /// Require JWTs to carry this issuer as their `iss` claim.
    #[arg(long, value_name = "ISS")]
    pub jwt_issuer: Option<String>,
    /// Let every request do everything, unauthenticated. For local use only.
    #[arg(long, conflicts_with_all = ["tokens", "jwt_hs256_secret", "jwt_rs256_key"])]
    pub insecure_no_auth: bool,
    /// Speak TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// The largest request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = dmq_server::DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// The most jobs in one batch.
    #[arg(long, value_name = "N", default_value_t = dmq_server::DEFAULT_MAX_BATCH)]
    pub max_batch: usize,
    /// The most requests one token may make (100/s, 6000/m, ...); over it, 429 with
    /// Retry-After. No limit by default.
    #[arg(long, value_name = "RATE")]
    pub rate_per_token: Option<dmq_server::Rate>,
    /// The most requests one client address may make, authenticated or not.
    #[arg(long, value_name = "RATE")]
    pub rate_per_ip: Option<dmq_server::Rate>,
    /// How long a client may take to send a request's head before its connection is
    /// closed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: std::time::Duration,
    /// How many requests may wait on the broker at once (claims with wait_ms, event
    /// streams), each holding a broker connection; more get 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = dmq_server::DEFAULT_MAX_WAITING)]
    pub max_waiting: usize,
    /// How long open requests may take to finish on SIGINT or SIGTERM.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,
    /// The log level when RUST_LOG is not set.
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,
    #[command(flatten)]
    /// Where the broker is.
    pub broker: BrokerArgs,
}

/// `dmq queue` and its subcommand.
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// What to do with the queue.
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// The `dmq queue` subcommands.
#[derive(Debug, Clone, Subcommand)]
#[non_exhaustive]
pub enum QueueCommand {
    /// Delete a queue whole, for good: its waiting and delayed jobs, its dead letters
    /// and its place in the queue registry (needs --yes).
    ///
    /// Refused while workers hold jobs of the queue, saying how many; --force deletes
    /// those too, and their workers' acknowledgements then fail (the lease is lost).
    /// Naming a partitioned queue (`emails`) deletes every partition of it the queue
    /// registry lists (`emails#0`, `emails#1`, ...); naming a partition deletes that
    /// partition alone. Results stored for its jobs stay until their TTL. A worker that
    /// still takes jobs from the queue, or a producer that still enqueues to it, lists it
    /// again.
    #[command(
        after_help = "Examples:\n  dmq queue delete emails --yes\n  dmq queue delete emails --yes --force --json"
    )]
    Delete {
        /// The queue to delete.
        queue: String,
        /// Confirms that the queue and everything in it are to be deleted for good.
        #[arg(long)]
        yes: bool,
        /// Delete the jobs workers hold too, instead of refusing while there are any.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        /// Where the broker is, and how to print.
        broker: BrokerArgs,
    },
}

/// `dmq quota` and its subcommands.
#[derive(Debug, Clone, Args)]
pub struct QuotaArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: QuotaCommand,
}

/// The `dmq quota` subcommands. Each names the namespace whose quotas it reads or sets
/// (instead of --namespace).
#[derive(Debug, Clone, Subcommand)]
#[non_exhaustive]
pub enum QuotaCommand {
    /// Set the enqueue quota of a namespace, or with --key of one key of it: at most
    /// RATE jobs per period ("1000/m", "50/s", "10000/h"). A quota set anew starts
    /// with a fresh window.
    Set {
        /// The namespace.
        #[arg(value_name = "NAMESPACE")]
        target: String,
        /// How many enqueues per period: a count, a slash and a period.
        #[arg(value_parser = parse_rate_limit)]
        rate: String,
        /// The key (a tenant) whose quota to set, instead of the namespace's own.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        /// Where the broker is, and how to print.
        broker: BrokerArgs,
    },
    /// Remove the enqueue quota of a namespace, or with --key of one key of it.
    Remove {
        /// The namespace.
        #[arg(value_name = "NAMESPACE")]
        target: String,
        /// The key whose quota to remove, instead of the namespace's own.
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        /// Where the broker is, and how to print.
        broker: BrokerArgs,
    },
    /// List a namespace's enqueue quotas, with what their current windows used.
    List {
        /// The namespace.
        #[arg(value_name = "NAMESPACE")]
        target: String,
        #[command(flatten)]
        /// Where the broker is, and how to print.
        broker: BrokerArgs,
    },
}

/// The options of `dmq periodic`.
#[derive(Debug, Clone, Args)]
pub struct PeriodicArgs {
    #[command(flatten)]
    /// Where the broker is, and how to print.
    pub broker: BrokerArgs,
}

/// `dmq dlq` and its subcommand.
#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    /// What to do with the dead letters.
    #[command(subcommand)]
    pub command: DlqCommand,
}

/// The `dmq dlq` subcommands.
#[derive(Debug, Clone, Subcommand)]
#[non_exhaustive]
pub enum DlqCommand {
    /// List a queue's dead letters, newest first: id, task, when and why.
    #[command(
        after_help = "Examples:\n  dmq dlq list emails\n  dmq dlq list emails --offset 20 --limit 20 --json"
    )]
    List {
        /// The queue whose dead letters to list.
        queue: String,
        /// How many of the newest letters to skip.
        #[arg(long, default_value_t = 0, value_name = "N")]
        offset: usize,
        /// How many letters to show at most.
        #[arg(long, default_value_t = 20, value_name = "N",
              value_parser = clap::value_parser!(u64).range(1..=100_000))]
        limit: u64,
        #[command(flatten)]
        /// Where the broker is, and how to print.
        broker: BrokerArgs,
    },
    /// Run dead-lettered jobs again from their first attempt, due at once.
    #[command(
        after_help = "Examples:\n  dmq dlq requeue emails 0b5c6f2e-3f3c-4d7e-9a57-6f1f2f0c9a10\n  dmq dlq requeue emails --all --to emails-slow"
    )]
    Requeue {
        /// The queue whose dead letters to requeue.
        queue: String,
        /// The id of the job to requeue.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Requeue every dead letter of the queue.
        #[arg(long)]
        all: bool,
        /// Send the jobs to this queue instead of back to their own.
        #[arg(long, value_name = "QUEUE")]
        to: Option<String>,
        #[command(flatten)]
        /// Where the broker is, and how to print.
        broker: BrokerArgs,
    },
    /// Delete one dead letter for good.
    #[command(
        after_help = "Example:\n  dmq dlq delete emails 0b5c6f2e-3f3c-4d7e-9a57-6f1f2f0c9a10"
    )]
    Delete {
        /// The queue holding the dead letter.
        queue: String,
        /// The id of the dead-lettered job.
        id: String,
        #[command(flatten)]
        /// Where the broker is, and how to print.
        broker: BrokerArgs,
    },
    /// Delete every dead letter of a queue for good (needs --yes).
    #[command(after_help = "Example:\n  dmq dlq purge emails --yes")]
    Purge {
        /// The queue whose dead letters to delete.
        queue: String,
        /// Confirm the deletion; without it nothing is deleted.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        /// Where the broker is, and how to print.
        broker: BrokerArgs,
    },
}

/// The options of `dmq result`.
#[derive(Debug, Clone, Args)]
pub struct ResultArgs {
    /// The task id, as `dmq enqueue` printed it.
    pub id: String,

    /// Wait up to this long for the result to be stored (e.g. 500ms, 10s, 2m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub wait: Option<std::time::Duration>,

    #[command(flatten)]
    /// Where the broker is, and how to print.
    pub broker: BrokerArgs,
}

/// The options of `dmq enqueue`.
#[derive(Debug, Clone, Args)]
pub struct EnqueueArgs {
    /// The task's registered name, e.g. emails.send.
    pub task: String,

    /// The arguments as a JSON array, e.g. `'["ann@example.com", 3]'`, or `'[]'` for none;
    /// `-` reads them from standard input and `@FILE` from a file, for arguments larger
    /// than a command line holds (128 KiB on Linux).
    #[arg(value_name = "JSON_ARGS")]
    pub args: String,

    /// The queue to send the job to [default: the task's queue if registered in this
    /// binary, else `default`].
    #[arg(long, value_name = "QUEUE")]
    pub queue: Option<String>,

    /// On a partitioned queue, send the job to the partition of this key (jobs of one
    /// key keep their order); without it, to a partition picked at random. The queue's
    /// partitions are those the queue registry lists (`dmq queues --partitions`).
    #[arg(long, value_name = "KEY")]
    pub partition_key: Option<String>,

    /// Make the job due this long from now (e.g. 30s, 10m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration,
          conflicts_with = "eta")]
    pub delay: Option<std::time::Duration>,

    /// Make the job due at this time, RFC 3339 (e.g. 2030-01-01T09:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_eta)]
    pub eta: Option<chrono::DateTime<chrono::Utc>>,

    /// The job's priority, 0 (lowest) to 9 (highest) [default: 5].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=9))]
    pub priority: Option<u8>,

    /// Give the job this id (a UUID) instead of a fresh one: running the same command
    /// again, while the id is known (a day by default, also after the job ran),
    /// enqueues nothing and prints the same id, so a script that retries cannot
    /// enqueue the job twice.
    #[arg(long, value_name = "UUID", value_parser = parse_id)]
    pub id: Option<dmq_core::TaskId>,

    #[command(flatten)]
    /// Where the broker is, and how to print.
    pub broker: BrokerArgs,
}

/// Parses a job id.
fn parse_id(text: &str) -> Result<dmq_core::TaskId, String> {
    text.parse().map_err(|_| {
        "a job id is a UUID, such as 67e55044-10b1-426f-9247-bb680e5fe0c8 (uuidgen makes one)"
            .to_owned()
    })
}

/// Parses an RFC 3339 time into UTC.
fn parse_eta(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{e}; use RFC 3339, e.g. 2030-01-01T09:00:00Z"))
}

/// The options of `worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The task binary whose worker processes to supervise: a path, a name on PATH,
    /// or a binary or example of that name in this Cargo workspace's target
    /// directory (release before debug).
    #[arg(long, value_name = "APP")]
    pub tasks: Option<String>,

    /// With --tasks: how many worker processes to run [default: the number of CPUs].
    #[arg(long, value_name = "N", requires = "tasks",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: Option<u32>,

    /// The broker: redis://host:port[/db], rediss://... (TLS),
    /// redis+cluster://host:port[,host:port...] (a Redis Cluster),
    /// redis+sentinel://host:port[,host:port...]/MASTER[/db] (through Sentinel),
    /// postgres://user:password@host:5432/database (PostgreSQL) or memory:// (this
    /// process only, for trying things out).
    ///
    /// TLS: rediss://host:port[/db]?tls_ca=CA.pem trusts that CA file instead of the
    /// system's roots; add &tls_cert=CLIENT.pem&tls_key=CLIENT.key for a client
    /// certificate (mutual TLS); rediss://host:port/#insecure skips the server's
    /// certificate check (tests only). rediss+cluster:// and rediss+sentinel:// take the
    /// same options. An ACL user logs in with
    /// redis://user:password@host:port; the password is never printed.
    #[arg(
        long,
        env = "DMQ_BROKER_URL",
        default_value = "redis://127.0.0.1:6379",
        value_name = "URL"
    )]
    pub broker: String,

    /// The namespace, to keep several applications apart on one broker: on Redis, the
    /// prefix of its keys; on PostgreSQL, the schema of its tables (lowercase letters,
    /// digits and underscores), made and migrated when the worker connects.
    #[arg(long, env = "DMQ_NAMESPACE", default_value = "dmq", value_name = "NAME")]
    pub namespace: String,

    /// The queues to take jobs from, in order of preference, comma separated
    /// [default: every queue of the binary's tasks].
    #[arg(long, value_delimiter = ',', value_name = "QUEUES")]
    pub queues: Vec<String>,

    /// Jobs run at once.
    #[arg(long, default_value_t = 10, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,

    /// The delivery guarantee for tasks that set none: at-most-once, at-least-once or
    /// exactly-once.
    #[arg(long, default_value = "at-least-once", value_name = "GUARANTEE")]
    pub guarantee: dmq_core::Guarantee,

    /// How long running jobs may finish after SIGINT or SIGTERM ("30s", "2m").
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub grace: std::time::Duration,

    /// The lease on each claimed job, renewed while it runs: a job whose worker stops
    /// renewing it (a stalled process) goes to another worker once it runs out.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lease: std::time::Duration,

    /// How often the worker heartbeats; one that misses 4 heartbeats in a row counts
    /// as dead, and the reaper takes its jobs back.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub heartbeat: std::time::Duration,

    /// How many times a job's worker may be lost while the job runs alone (a job taken
    /// back from a lost worker runs with nothing beside it) before the job is
    /// dead-lettered as a poison pill; 0 for no limit.
    #[arg(long, default_value_t = dmq_core::DEFAULT_MAX_DELIVERIES, value_name = "N")]
    pub max_deliveries: u32,

    /// Do not run the periodic scheduler in this worker.
    #[arg(long)]
    pub no_scheduler: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics and a health check at
    /// http://ADDR/health (200 while the worker reaches the broker and its loops are
    /// alive, else 503), e.g. 127.0.0.1:9090. With --tasks, worker process i (from 0)
    /// listens on the port plus i.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Also relay the transactional outbox in this PostgreSQL database to this worker's
    /// broker: the jobs that `enqueue_in` wrote in transactions that committed, each
    /// moved exactly once (postgres://user:password@host:5432/database; the password is
    /// never printed). Every worker given it runs a relay; one relays at a time, and
    /// another takes over when it stops. With --tasks, each worker process runs one.
    #[arg(long, env = "DMQ_OUTBOX_URL", value_name = "URL")]
    pub outbox: Option<String>,

    /// The outbox's namespace: the PostgreSQL schema `enqueue_in_namespace` writes to
    /// (lowercase letters, digits and underscores) [default: --namespace].
    #[arg(long, env = "DMQ_OUTBOX_NAMESPACE", value_name = "NAME", requires = "outbox")]
    pub outbox_namespace: Option<String>,

    /// The log level: error, warn, info, debug or trace (RUST_LOG, when set, wins).
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,
}

/// The options of `tasks`.
#[derive(Debug, Clone, Args)]
pub struct TasksArgs {
    /// Print the tasks as JSON, one object per task in an array.
    #[arg(long)]
    pub json: bool,
}

/// The options of `dmq bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Broker to measure: redis://host:port[/db], rediss://... (TLS),
    /// redis+cluster://host:port[,host:port...] (a Redis Cluster),
    /// redis+sentinel://host:port[,host:port...]/MASTER[/db],
    /// postgres://user:password@host:5432/database, or memory:// for the in-process
    /// broker.
    ///
    /// TLS: rediss://host:port[/db]?tls_ca=CA.pem trusts that CA file instead of the
    /// system's roots; add &tls_cert=CLIENT.pem&tls_key=CLIENT.key for a client
    /// certificate (mutual TLS); rediss://host:port/#insecure skips the server's
    /// certificate check (tests only). rediss+cluster:// and rediss+sentinel:// take the
    /// same options. An ACL user logs in with
    /// redis://user:password@host:port; the password is never printed.
    #[arg(
        long,
        env = "DMQ_BROKER_URL",
        default_value = "redis://127.0.0.1:6379",
        value_name = "URL"
    )]
    pub broker: String,

    /// How many no-op jobs to enqueue and drain (at least 2).
    #[arg(long, default_value_t = 100_000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(2..))]
    pub jobs: u64,

    /// How many jobs the worker runs at once.
    #[arg(long, default_value_t = 256, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub concurrency: u64,

    /// Jobs per enqueue_batch call in the batch enqueue phase.
    #[arg(long, default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch_size: u64,

    /// Namespace to work in [default: dmq-bench- and a random UUID on Redis,
    /// dmq_bench_ and 16 random hex digits on PostgreSQL]. On Redis all of its keys are
    /// deleted at the end, so never name one that holds real data; on PostgreSQL it
    /// names a schema that must not exist yet, dropped at the end.
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,

    /// How many one-at-a-time jobs the latency phase times.
    #[arg(long, default_value_t = 2000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub latency_samples: u64,

    /// Run the throughput phases with a task marked #[task(ignore_result)], so no
    /// result is written per job (the latency phase still reads results).
    #[arg(long)]
    pub ignore_result: bool,

    /// Give the throughput phases' jobs this rate limit ("50000/s", "3000/m"): the
    /// drain then runs at most at that rate, and the broker's figures per job say what
    /// the limit costs. Checked before anything is enqueued.
    #[arg(long, value_name = "RATE", value_parser = parse_rate_limit)]
    pub rate_limit: Option<String>,

    /// With --rate-limit: how many jobs may start at once after a quiet spell
    /// [default: what the rate allows in 10 ms, at least 1].
    #[arg(long, value_name = "N", requires = "rate_limit",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: Option<u32>,

    /// The delivery guarantee the worker runs the jobs with: at-most-once,
    /// at-least-once or exactly-once (which checks for and records each job's
    /// completion, to measure what that costs).
    #[arg(long, default_value = "at-least-once", value_name = "GUARANTEE")]
    pub guarantee: dmq_core::Guarantee,

    /// Make the Redis broker from a deadpool-redis pool (`RedisBroker::from_pool`)
    /// instead of a URL, to compare: either way ordinary commands share one
    /// multiplexed connection and each blocking wait holds one of its own.
    #[arg(long)]
    pub deadpool: bool,

    /// Record Prometheus metrics of every job (`Metrics`, as `worker --metrics-addr`
    /// does), to measure what they cost.
    #[arg(long)]
    pub metrics: bool,

    /// Register a callback that sleeps this long on every event (e.g. 5s), to show
    /// that a slow callback stays off the jobs' path: its events beyond its queue
    /// are dropped and counted (`events_dropped`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub slow_callback: Option<std::time::Duration>,

    /// Do not write the event stream (`ManagerBuilder::event_stream(false)`), to
    /// measure what writing it costs.
    #[arg(long)]
    pub no_event_stream: bool,

    /// Make every enqueue wait until this many replicas hold the job (Redis WAIT, at
    /// most 1 s; `RedisBroker::with_replicated_enqueue`), to measure what that costs.
    #[arg(long, value_name = "N")]
    pub wait_replicas: Option<u32>,

    /// Spread the jobs over this many queues (dmq-bench, dmq-bench-1, ...), round
    /// robin, and have the worker claim from all of them. On a Redis Cluster each
    /// queue lives in a slot of its own, so the work spreads over the masters, and the
    /// report shows each master's share of the Redis CPU. There the bench picks the
    /// names (the first ones whose slots fall on a master that has fewer than its
    /// share) so that each master holds as many queues as can be, and lists them.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub queues: u64,

    /// Print the figures as one JSON object instead of the human-readable report.
    #[arg(long)]
    pub json: bool,
}

/// Checks a `--rate-limit` as a call would, so a bad one fails before the bench runs.
fn parse_rate_limit(text: &str) -> Result<String, String> {
    text.parse::<dmq_core::RateLimit>().map(|_| text.to_owned()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bench_defaults() {
        let cli = Cli::try_parse_from(["dmq", "bench", "--broker", "memory://"]).unwrap();
        let Command::Bench(args) = cli.command else { panic!("not bench") };
        assert_eq!(args.broker, "memory://");
        assert_eq!((args.jobs, args.concurrency, args.batch_size), (100_000, 256, 1000));
        assert_eq!(args.latency_samples, 2000);
        assert!(args.namespace.is_none() && !args.json);
    }

    #[test]
    fn worker_defaults_and_options() {
        let cli = Cli::try_parse_from(["app", "worker"]).unwrap();
        let Command::Worker(args) = cli.command else { panic!("not worker") };
        assert_eq!((args.namespace.as_str(), args.concurrency), ("dmq", 10));
        assert_eq!(args.guarantee, dmq_core::Guarantee::AtLeastOnce);
        assert_eq!(args.grace, std::time::Duration::from_secs(30));
        assert!(args.queues.is_empty() && !args.no_scheduler);
        let cli = Cli::try_parse_from([
            "app",
            "worker",
            "--queues",
            "a,b",
            "--guarantee",
            "exactly-once",
            "--grace",
            "2m",
            "--no-scheduler",
        ])
        .unwrap();
        let Command::Worker(args) = cli.command else { panic!("not worker") };
        assert_eq!(args.queues, ["a", "b"]);
        assert_eq!(args.guarantee, dmq_core::Guarantee::ExactlyOnce);
        assert_eq!(args.grace, std::time::Duration::from_secs(120));
        assert!(args.no_scheduler);
        let err = Cli::try_parse_from(["app", "worker", "--guarantee", "twice"]).unwrap_err();
        assert!(err.to_string().contains("at-most-once, at-least-once or exactly-once"), "{err}");
        assert!(Cli::try_parse_from(["app", "worker", "--concurrency", "0"]).is_err());
        assert!(args.metrics_addr.is_none());
        let cli =
            Cli::try_parse_from(["app", "worker", "--metrics-addr", "127.0.0.1:9090"]).unwrap();
        let Command::Worker(args) = cli.command else { panic!("not worker") };
        assert_eq!(args.metrics_addr, Some("127.0.0.1:9090".parse().unwrap()));
        assert!(Cli::try_parse_from(["app", "worker", "--metrics-addr", "9090"]).is_err());
    }

    #[test]
    fn admin_defaults() {
        let cli = Cli::try_parse_from(["dmq", "queues"]).unwrap();
        let Command::Queues(args) = cli.command else { panic!("not queues") };
        assert!(args.queues.is_empty());
        assert_eq!(args.broker.namespace, "dmq");
        assert!(!args.broker.json);
    }

    #[test]
    fn migrate_serves_a_broker_unless_told_outbox() {
        let cli = Cli::try_parse_from(["dmq", "migrate", "--broker", "postgres://h/db"]).unwrap();
        let Command::Migrate(args) = cli.command else { panic!("not migrate") };
        assert!(!args.outbox);
        assert_eq!(
            (args.broker.broker.as_str(), args.broker.namespace.as_str()),
            ("postgres://h/db", "dmq")
        );
        let cli =
            Cli::try_parse_from(["dmq", "migrate", "--namespace", "relay", "--outbox"]).unwrap();
        let Command::Migrate(args) = cli.command else { panic!("not migrate") };
        assert!(args.outbox);
        assert_eq!(args.broker.namespace, "relay");
    }

    #[test]
    fn requeue_takes_an_id_or_all_but_not_both() {
        assert!(Cli::try_parse_from(["dmq", "dlq", "requeue", "q"]).is_err());
        assert!(Cli::try_parse_from(["dmq", "dlq", "requeue", "q", "--all"]).is_ok());
        assert!(Cli::try_parse_from(["dmq", "dlq", "requeue", "q", "some-id"]).is_ok());
        assert!(Cli::try_parse_from(["dmq", "dlq", "requeue", "q", "some-id", "--all"]).is_err());
    }

    #[test]
    fn enqueue_options() {
        let cli = Cli::try_parse_from([
            "dmq",
            "enqueue",
            "t",
            "[1]",
            "--eta",
            "2030-01-01T09:00:00+02:00",
            "--priority",
            "9",
        ])
        .unwrap();
        let Command::Enqueue(args) = cli.command else { panic!("not enqueue") };
        assert_eq!(args.eta.unwrap().to_rfc3339(), "2030-01-01T07:00:00+00:00");
        assert_eq!(args.priority, Some(9));
        assert!(Cli::try_parse_from(["dmq", "enqueue", "t", "[]", "--priority", "10"]).is_err());
        assert!(Cli::try_parse_from(["dmq", "enqueue", "t", "[]", "--eta", "tomorrow"]).is_err());
        let both = ["dmq", "enqueue", "t", "[]", "--delay", "1s", "--eta", "2030-01-01T00:00:00Z"];
        assert!(Cli::try_parse_from(both).is_err());
    }

    #[test]
    fn events_options() {
        let cli = Cli::try_parse_from([
            "dmq",
            "events",
            "--kind",
            "failed,dead-lettered",
            "--kind",
            "retry",
            "--queue",
            "emails",
            "--last",
            "20",
            "--for",
            "2m",
        ])
        .unwrap();
        let Command::Events(args) = cli.command else { panic!("not events") };
        use dmq_core::EventType;
        assert_eq!(args.kinds, [EventType::Failed, EventType::DeadLettered, EventType::Retry]);
        assert_eq!(args.queues, ["emails"]);
        assert!(args.tasks.is_empty() && !args.from_start && args.count.is_none());
        assert_eq!(
            (args.last, args.duration),
            (Some(20), Some(std::time::Duration::from_secs(120)))
        );
        let err = Cli::try_parse_from(["dmq", "events", "--kind", "finished"]).unwrap_err();
        assert!(err.to_string().contains("expected one of queued, started, completed"), "{err}");
        assert!(Cli::try_parse_from(["dmq", "events", "--from-start", "--last", "3"]).is_err());
        assert!(Cli::try_parse_from(["dmq", "events", "--count", "0"]).is_err());
    }

    /// The one line `usage_error` makes of the error parsing `args` gives.
    fn usage_line(args: &[&str]) -> String {
        let error = Cli::try_parse_from(args).expect_err("a usage error");
        let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        usage_error(&error, &argv)
    }

    #[test]
    fn usage_errors_are_one_line_with_the_commands_usage() {
        assert_eq!(
            usage_line(&["dmq", "enqueue", "t"]),
            "the following required arguments were not provided: <JSON_ARGS>; \
             usage: dmq enqueue [OPTIONS] <TASK> <JSON_ARGS>"
        );
        assert_eq!(
            usage_line(&["/usr/local/bin/app", "dlq", "list", "q", "--limit", "0"]),
            "invalid value '0' for '--limit <N>': 0 is not in 1..=100000; \
             usage: app dlq list [OPTIONS] <QUEUE>"
        );
        let line = usage_line(&["dmq", "queus"]);
        assert!(line.starts_with("unrecognized subcommand 'queus' (tip: "), "{line}");
        assert!(line.contains("'queues'") && line.ends_with("; usage: dmq <COMMAND>"), "{line}");
        let line = usage_line(&["dmq", "enqueue", "t", "[]", "--colour"]);
        assert!(line.starts_with("unexpected argument '--colour' found"), "{line}");
        assert_eq!(
            usage_line(&["dmq", "dlq"]),
            "a command is missing, one of: list, requeue, delete, purge; usage: dmq dlq <COMMAND>"
        );
        let line = usage_line(&["dmq"]);
        assert!(line.starts_with("a command is missing, one of: bench, worker, tasks"), "{line}");
        assert!(!line.contains("help") && !line.contains('\n'), "{line}");
    }

    #[test]
    fn zero_jobs_is_a_usage_error() {
        assert!(Cli::try_parse_from(["dmq", "bench", "--jobs", "1"]).is_err());
        assert!(Cli::try_parse_from(["dmq", "bench", "--concurrency", "0"]).is_err());
    }
}
