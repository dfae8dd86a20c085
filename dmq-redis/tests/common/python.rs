//! The Python the cross-language tests run: shared by the test crates that run Python
//! (included with `#[path]`), each one directory below the repository's root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Python interpreter to run scripts with: `DMQ_PYTHON`, else the one
/// `scripts/ensure-python` sets up (and prints).
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("DMQ_PYTHON") {
        return python.into();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ensure-python");
    let out = Command::new(&script).output().expect("run scripts/ensure-python");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{} failed: {stderr}", script.display());
    let stdout = String::from_utf8(out.stdout).expect("a path in UTF-8");
    stdout.lines().last().expect("ensure-python prints the interpreter's path").into()
}
