//! The `dmq` binary: a thin main over [`dmq_cli::main`].

fn main() -> std::process::ExitCode {
    dmq_cli::main()
}
