//! A `dmq serve` process for the HTTP API's tests, on the test Redis.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A `dmq serve` process and its directory of files; stopped with SIGTERM, and the
/// directory removed, when dropped.
pub struct Served {
    child: Child,
    /// `http://127.0.0.1:PORT` (or `https://`), as the server printed it.
    pub url: String,
    /// Where its files are: what the test wrote for it, and its log (`stderr`).
    pub dir: PathBuf,
}

impl Served {
    /// A fresh directory for a server's files, to write them in before it starts.
    pub fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dmq-http-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    }

    /// Starts `dmq serve` for namespace `ns` on a free port with `args`, its log in
    /// `dir/stderr` at `log` (a `RUST_LOG` filter), and waits until it listens.
    pub fn start(ns: &str, dir: PathBuf, args: &[String], log: &str) -> Served {
        let stderr = std::fs::File::create(dir.join("stderr")).expect("the log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_dmq"))
            .args(["serve", "--listen", "127.0.0.1:0", "--namespace", ns])
            .args(["--broker", &super::redis_url()])
            .args(args)
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("dmq serve starts");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("its stdout");
        BufReader::new(stdout).read_line(&mut line).expect("read its first line");
        let mut served = Served { child, url: String::new(), dir };
        served.url = match line.trim().strip_prefix("listening on ") {
            Some(url) => url.to_owned(),
            None => panic!("dmq serve did not say where it listens: {line:?}\n{}", served.log()),
        };
        served
    }

    /// `path` on the server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        let _ = self.child.wait();
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
