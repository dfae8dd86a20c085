//! The `dmq` binary: a thin main over [`dmq_cli::main`].

fn main() {
    dmq_cli::main();
}
