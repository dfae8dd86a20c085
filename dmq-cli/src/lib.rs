//! The `dmq` command line (work in progress).

/// Runs the `dmq` command line.
pub fn main() {
    println!("dmq {}", env!("CARGO_PKG_VERSION"));
}
