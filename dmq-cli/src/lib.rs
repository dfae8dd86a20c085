//! The `dmq` command line: `dmq bench` measures a broker's throughput and latency;
//! `dmq queues`, `workers`, `dlq`, `periodic`, `result`, `enqueue`, `events`, `job`,
//! `purge`, `queue delete` and `doctor` read and act on a live broker (Redis or
//! PostgreSQL); `dmq migrate` makes and migrates a PostgreSQL namespace's schema.
//!
//! The binary is a thin `main.rs` over [`main`]; [`Cli`] holds the clap types and
//! each subcommand lives in its own module under `commands/`. [`connect_url`]
//! connects a broker by URL, through the same table of URL schemes.

mod broker_url;
mod cli;
mod commands;
mod metrics_server;

pub use broker_url::connect_url;
pub use cli::{BenchArgs, Cli, Command, TasksArgs, WorkerArgs};
pub use cli::{
    BrokerArgs, DlqArgs, DlqCommand, DoctorArgs, EnqueueArgs, EventsArgs, JobArgs, MigrateArgs,
    PauseArgs, PeriodicArgs, PurgeArgs, QueueArgs, QueueCommand, QueuesArgs, ResultArgs,
    WorkersArgs,
};

use std::process::ExitCode;

use clap::Parser as _;

/// Runs the `dmq` command line with the process's arguments.
///
/// An error, a usage error included, prints one line, `error: ...`, on stderr and
/// exits with status 1. `--help` and `--version` print to stdout and exit 0.
#[must_use]
pub fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // Help or the version, asked for.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {}", cli::usage_error(&e, &argv));
            return ExitCode::FAILURE;
        }
    };
    // A worker runs for long and logs what its Redis client warns of (a slot refresh
    // that failed, a reconnect); a one-shot command reports its one failure itself.
    let (level, quiet_client) = match &cli.command {
        Command::Worker(args) => (args.log_level.as_str(), false),
        Command::Serve(args) => (args.log_level.as_str(), false),
        _ => ("warn", true),
    };
    init_tracing(level, quiet_client);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::anyhow!("could not start the tokio runtime: {e}")),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Prints `error: ...` as one line, the causes joined with `: `; a cause whose text
/// the message already holds (a backend error that names its source) is not repeated.
fn fail(error: &anyhow::Error) -> ExitCode {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    eprintln!("error: {}", message.replace('\n', " "));
    ExitCode::FAILURE
}

/// Logs to stderr, filtered by `RUST_LOG`, else by `level`. With `quiet_client` (a
/// one-shot command), redis-rs's own warnings are left out: it warns of each node it
/// failed to reach, and dmq reports the failure itself, once, saying what to do (a
/// cluster's first connect would otherwise print a warning per node before dmq's
/// one-line error).
fn init_tracing(level: &str, quiet_client: bool) {
    let directives = if quiet_client { format!("{level},redis=error") } else { level.to_owned() };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directives));
    // Fails only when a subscriber is already set, which then keeps logging.
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
