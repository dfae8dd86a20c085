//! `app`: a task binary. `app worker` runs a worker with the tasks of this crate's
//! library; `app tasks` lists them; every other `dmq` command works too.
//!
//! Run it: `cargo run -p app -- worker --broker redis://127.0.0.1:6379`

// Names the library, so that the linker keeps its tasks.
use app as _;

fn main() -> std::process::ExitCode {
    dmq_cli::main()
}
