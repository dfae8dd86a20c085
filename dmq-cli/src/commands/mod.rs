//! One module per subcommand.

mod admin;
mod bench;
mod cancel;
mod dlq;
mod doctor;
mod enqueue;
mod events;
mod job;
mod limits;
mod migrate;
mod pause;
mod periodic;
mod purge;
mod queue;
mod queues;
mod quota;
mod result;
mod serve;
mod supervise;
mod tasks;
mod worker;
mod workers;

use crate::cli::{Cli, Command};

/// Whether a task is one of dmq's own (the bench's), linked into every task binary
/// with this crate: `tasks` does not list them and `worker` does not work their
/// queue unless asked to.
fn is_dmqs_own(task: &dmq_core::TaskInfo) -> bool {
    task.path.starts_with("dmq_cli::")
}

/// Runs the parsed command.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(args) => bench::run(args).await,
        Command::Worker(args) => match args.tasks.clone() {
            Some(app) => supervise::run(&app, args).await,
            None => worker::run(args).await,
        },
        Command::Tasks(args) => tasks::run(&args),
        Command::Queues(args) => queues::run(args).await,
        Command::Limits(args) => limits::run(args).await,
        Command::Workers(args) => workers::run(args).await,
        Command::Dlq(args) => dlq::run(args).await,
        Command::Periodic(args) => periodic::run(args).await,
        Command::Result(args) => result::run(args).await,
        Command::Enqueue(args) => enqueue::run(args).await,
        Command::Events(args) => events::run(args).await,
        Command::Purge(args) => purge::run(args).await,
        Command::Pause(args) => pause::run(args, true).await,
        Command::Resume(args) => pause::run(args, false).await,
        Command::Cancel(args) => cancel::run(args).await,
        Command::Queue(args) => queue::run(args).await,
        Command::Quota(args) => quota::run(args).await,
        Command::Job(args) => job::run(args).await,
        Command::Doctor(args) => doctor::run(args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Serve(args) => serve::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    /// The admin commands reach the broker through its capabilities only, so that they
    /// work unchanged on any backend the scheme table knows: none names a Redis type,
    /// a key, or a command of its own.
    #[test]
    fn the_admin_commands_speak_no_redis() {
        let sources = [
            ("admin.rs", include_str!("admin.rs")),
            ("queues.rs", include_str!("queues.rs")),
            ("job.rs", include_str!("job.rs")),
            ("dlq.rs", include_str!("dlq.rs")),
            ("purge.rs", include_str!("purge.rs")),
            ("pause.rs", include_str!("pause.rs")),
            ("limits.rs", include_str!("limits.rs")),
            ("quota.rs", include_str!("quota.rs")),
            ("cancel.rs", include_str!("cancel.rs")),
            ("queue.rs", include_str!("queue.rs")),
            ("doctor.rs", include_str!("doctor.rs")),
            ("workers.rs", include_str!("workers.rs")),
            ("periodic.rs", include_str!("periodic.rs")),
            ("events.rs", include_str!("events.rs")),
            ("result.rs", include_str!("result.rs")),
            ("migrate.rs", include_str!("migrate.rs")),
        ];
        let forbidden = [
            "redis::",
            "dmq_redis",
            "Keys",
            "QueueKeys",
            "SCAN",
            "HGET",
            "ZSCORE",
            "LPOS",
            "LRANGE",
            "SMEMBERS",
            "pipe(",
            "{ns",
            ":ready",
            ":jobs",
            ":inflight",
            ":delayed",
        ];
        for (file, text) in sources {
            for word in forbidden {
                assert!(!text.contains(word), "commands/{file} names {word:?}");
            }
        }
    }
}
