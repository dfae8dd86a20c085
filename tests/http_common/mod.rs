//! Helpers the HTTP tests (`http_python`, `http_walkthrough`) share: a `dmq serve`
//! process and a `dmq-test-worker` process, each killed (and reaped) when its guard
//! drops, a scratch directory removed when its guard drops, and the Python the tests
//! run their scripts with.
//!
//! The guards drop before `common::run` deletes the test's namespace, so no process
//! of the test writes to Redis after its keys are gone; a failing test prints each
//! process's log.

#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a process may take to start listening: generous, never a performance bound.
const START: Duration = Duration::from_secs(60);

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[path = "../../dmq-redis/tests/common/python.rs"]
mod python;
pub use python::python;

/// A directory of its own under the system's temporary directory, removed (with what
/// it holds) when the guard drops.
#[derive(Debug)]
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh, empty directory.
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("dmq-tests-http-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process, killed with SIGKILL and reaped when the guard drops; its stderr
/// goes to a log file, printed when the test fails.
#[derive(Debug)]
pub struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- {} (pid {}) log ---\n{}", self.name, self.child.id(), self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn log_file(dir: &Path, name: &str) -> (PathBuf, File) {
    let path = dir.join(format!("{name}-{}.log", uuid::Uuid::new_v4()));
    let file = File::create(&path).expect("create a log file");
    (path, file)
}

/// `dmq serve ARGS --listen 127.0.0.1:0 --broker REDIS --namespace NAMESPACE`, run in
/// `dir` (`args` name the tokens file and the limits; they must not name the address,
/// the broker or the namespace): the process and its base URL, `http://127.0.0.1:PORT`.
pub fn serve(dir: &Path, redis: &str, namespace: &str, args: &[String]) -> (Process, String) {
    let (log, stderr) = log_file(dir, "serve");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dmq-test-cli"))
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0", "--broker", redis, "--namespace", namespace])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start dmq serve");
    let stdout = child.stdout.take().expect("its stdout");
    let process = Process { name: "dmq serve", child, log };
    // It prints `listening on http://ADDR` once bound; read it on a thread, so that a
    // server that never prints it fails the test instead of hanging it.
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix("listening on ") {
                let _ = sender.send(url.trim().to_owned());
            }
        }
    });
    match receiver.recv_timeout(START) {
        Ok(url) => (process, url),
        Err(_) => panic!("dmq serve did not start within {START:?}:\n{}", process.log()),
    }
}

/// A `dmq-test-worker` process on `queues` (comma separated) of `namespace`.
pub fn worker(dir: &Path, redis: &str, namespace: &str, queues: &str) -> Process {
    let (log, stderr) = log_file(dir, "worker");
    let child = Command::new(env!("CARGO_BIN_EXE_dmq-test-worker"))
        .args(["--redis", redis, "--namespace", namespace, "--queues", queues])
        .args(["--concurrency", "4", "--heartbeat-ms", "500"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start dmq-test-worker");
    Process { name: "dmq-test-worker", child, log }
}
