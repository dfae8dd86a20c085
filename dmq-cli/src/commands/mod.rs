//! One module per subcommand.

mod bench;
mod supervise;
mod tasks;
mod worker;

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
    }
}
