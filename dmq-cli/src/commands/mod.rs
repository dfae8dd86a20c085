//! One module per subcommand.

mod bench;

use crate::cli::{Cli, Command};

/// Runs the parsed command.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(args) => bench::run(args).await,
    }
}
