//! `dmq-test-cli`: the `dmq` command (a thin main over `dmq_cli::main`), built in this
//! crate so that its end-to-end tests can run `dmq serve` as a process of its own
//! (`CARGO_BIN_EXE_dmq-test-cli`): the HTTP tests `http_python` and `http_walkthrough`.

fn main() -> std::process::ExitCode {
    dmq_cli::main()
}
