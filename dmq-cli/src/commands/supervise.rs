//! `worker --tasks APP`: runs and watches worker processes of a task binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::WorkerArgs;

/// The first pause before restarting a crashed worker process; it doubles with each
/// crash in a row, up to [`MAX_RESTART_PAUSE`].
const FIRST_RESTART_PAUSE: Duration = Duration::from_millis(500);

/// The longest pause before a restart.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(30);

/// A process that ran this long counts as healthy: its next crash restarts at once.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// A process that exits sooner than this after its start exited "at once".
const QUICK_EXIT: Duration = Duration::from_secs(5);

/// After this many quick exits in a row of one process, the supervisor gives up: its
/// options or the binary are wrong, and restarting forever would hide that.
const QUICK_EXITS_TO_GIVE_UP: u32 = 5;

/// The environment variable that tells a worker process it is supervised, and by
/// which process (the supervisor's pid): it stops when its supervisor is gone.
pub(crate) const SUPERVISED_ENV: &str = "DMQ_SUPERVISED";

/// How long after the grace period the supervisor waits before killing a process
/// that has not exited.
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// One supervised worker process.
struct Slot {
    /// The options it is started with.
    args: Vec<String>,
    child: Option<Child>,
    started: Instant,
    pause: Duration,
    restart_at: Option<Instant>,
    /// Exits within [`QUICK_EXIT`] of the start, in a row.
    quick_exits: u32,
    last_status: Option<ExitStatus>,
}

/// Supervises `args.workers` processes of the task binary `app` until SIGINT or
/// SIGTERM, then stops them all gracefully.
pub(crate) async fn run(app: &str, args: WorkerArgs) -> anyhow::Result<()> {
    let binary = resolve(app)?;
    // What every process would refuse, refused once, here.
    crate::broker_url::scheme_of(&args.broker)?;
    anyhow::ensure!(!args.namespace.is_empty(), "--namespace cannot be empty");
    let count = args.workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        |n| usize::try_from(n).unwrap_or(1),
    );
    let metrics_addrs = metrics_addrs(args.metrics_addr, count)?;
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut slots = Vec::with_capacity(count);
    for n in 0..count {
        let child_args = child_args(&args, metrics_addrs.get(n).copied());
        let child = spawn(&binary, &child_args, &args)?;
        slots.push(Slot {
            args: child_args,
            child: Some(child),
            started: Instant::now(),
            pause: FIRST_RESTART_PAUSE,
            restart_at: None,
            quick_exits: 0,
            last_status: None,
        });
    }
    tracing::info!(binary = %binary.display(), workers = count, "supervising worker processes");
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let signal = loop {
        tokio::select! {
            _ = terminate.recv() => break "SIGTERM",
            _ = interrupt.recv() => break "SIGINT",
            _ = tick.tick() => {}
        }
        for (n, slot) in slots.iter_mut().enumerate() {
            watch(n, slot, &binary, &args);
        }
        if let Some(slot) = slots.iter().find(|s| s.quick_exits >= QUICK_EXITS_TO_GIVE_UP) {
            let status = slot.last_status.map_or_else(|| "?".to_owned(), |s| s.to_string());
            stop_all(&mut slots, args.grace + STOP_MARGIN).await;
            anyhow::bail!(
                "a worker process of {} exited at once {QUICK_EXITS_TO_GIVE_UP} times in a row \
                 (last: {status}); run `{} worker` with the same options to see why",
                binary.display(),
                binary.display()
            );
        }
    };
    tracing::info!("{signal}: stopping {count} worker processes");
    stop_all(&mut slots, args.grace + STOP_MARGIN).await;
    Ok(())
}

/// Notices a worker process that exited, and restarts it when its pause is over.
fn watch(n: usize, slot: &mut Slot, binary: &Path, args: &WorkerArgs) {
    if let Some(child) = slot.child.as_mut() {
        match child.try_wait() {
            Ok(None) => return,
            Ok(Some(status)) => {
                if slot.started.elapsed() >= HEALTHY_AFTER {
                    slot.pause = FIRST_RESTART_PAUSE;
                }
                if slot.started.elapsed() < QUICK_EXIT {
                    slot.quick_exits += 1;
                } else {
                    slot.quick_exits = 0;
                }
                slot.last_status = Some(status);
                tracing::warn!(worker = n, %status, restart_in = ?slot.pause, "a worker process exited; restarting it");
                slot.restart_at = Some(Instant::now() + slot.pause);
                slot.pause = (slot.pause * 2).min(MAX_RESTART_PAUSE);
                slot.child = None;
            }
            Err(e) => {
                tracing::error!(worker = n, error = %e, "could not check on a worker process");
                return;
            }
        }
    }
    if slot.restart_at.is_some_and(|at| Instant::now() >= at) {
        match spawn(binary, &slot.args, args) {
            Ok(child) => {
                tracing::info!(worker = n, pid = child.id(), "restarted a worker process");
                slot.child = Some(child);
                slot.started = Instant::now();
                slot.restart_at = None;
            }
            Err(e) => {
                tracing::error!(worker = n, error = %e, "could not restart a worker process; trying again");
                slot.restart_at = Some(Instant::now() + slot.pause);
            }
        }
    }
}

/// Sends SIGTERM to every process, waits up to `wait` for them, then kills the rest.
async fn stop_all(slots: &mut [Slot], wait: Duration) {
    for slot in slots.iter() {
        let Some(pid) = slot.child.as_ref().and_then(Child::id) else { continue };
        let Ok(pid) = i32::try_from(pid) else { continue };
        let pid = nix::unistd::Pid::from_raw(pid);
        if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
            tracing::warn!(%pid, error = %e, "could not send SIGTERM to a worker process");
        }
    }
    let deadline = tokio::time::Instant::now() + wait;
    for slot in slots.iter_mut() {
        let Some(child) = slot.child.as_mut() else { continue };
        let waited: Result<std::io::Result<ExitStatus>, _> =
            tokio::time::timeout_at(deadline, child.wait()).await;
        match waited {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => tracing::warn!(%status, "a worker process exited uncleanly"),
            Ok(Err(e)) => tracing::error!(error = %e, "could not wait for a worker process"),
            Err(_) => {
                tracing::error!(
                    pid = child.id(),
                    "a worker process did not stop in time; killing it"
                );
                let _ = child.kill().await;
            }
        }
    }
}

/// Starts `binary worker <child_args>`, its output going to ours. The broker and
/// outbox URLs of `args` go in the environment, not on the command line, where `ps`
/// would show a password.
fn spawn(binary: &Path, child_args: &[String], args: &WorkerArgs) -> anyhow::Result<Child> {
    let mut command = Command::new(binary);
    command
        .arg("worker")
        .args(child_args)
        .env("DMQ_BROKER_URL", &args.broker)
        .env(SUPERVISED_ENV, std::process::id().to_string());
    if let Some(outbox) = &args.outbox {
        command.env("DMQ_OUTBOX_URL", outbox);
    }
    command
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} worker", binary.display()))
}

/// The options a worker process gets: the supervisor's, but --tasks and --workers,
/// --broker and --outbox, which go in the environment, and --metrics-addr, which is
/// its own.
fn child_args(args: &WorkerArgs, metrics_addr: Option<SocketAddr>) -> Vec<String> {
    let mut out = vec![
        "--namespace".to_owned(),
        args.namespace.clone(),
        "--concurrency".to_owned(),
        args.concurrency.to_string(),
        "--guarantee".to_owned(),
        args.guarantee.to_string(),
        "--grace".to_owned(),
        format!("{}ms", args.grace.as_millis()),
        "--lease".to_owned(),
        format!("{}ms", args.lease.as_millis()),
        "--heartbeat".to_owned(),
        format!("{}ms", args.heartbeat.as_millis()),
        "--max-deliveries".to_owned(),
        args.max_deliveries.to_string(),
        "--log-level".to_owned(),
        args.log_level.clone(),
    ];
    if !args.queues.is_empty() {
        out.push("--queues".to_owned());
        out.push(args.queues.join(","));
    }
    if args.no_scheduler {
        out.push("--no-scheduler".to_owned());
    }
    if let Some(namespace) = &args.outbox_namespace {
        out.push("--outbox-namespace".to_owned());
        out.push(namespace.clone());
    }
    if let Some(addr) = metrics_addr {
        out.push("--metrics-addr".to_owned());
        out.push(addr.to_string());
    }
    out
}

/// The metrics address of each of `count` worker processes: `addr` with its port
/// plus the process's number (from 0); port 0 stays 0 (each picks a free port). Each
/// address is tried here first, so that a taken one stops the supervisor at once
/// instead of making its process exit again and again.
fn metrics_addrs(addr: Option<SocketAddr>, count: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let Some(addr) = addr else { return Ok(Vec::new()) };
    if addr.port() == 0 {
        return Ok(vec![addr; count]);
    }
    let mut out = Vec::with_capacity(count);
    for n in 0..count {
        let port = u16::try_from(n)
            .ok()
            .and_then(|n| addr.port().checked_add(n))
            .with_context(|| {
                format!(
                    "--metrics-addr {addr} with {count} workers needs ports {} to {}, past 65535; pick a lower port",
                    addr.port(),
                    usize::from(addr.port()) + count - 1
                )
            })?;
        let mut each = addr;
        each.set_port(port);
        if let Err(e) = std::net::TcpListener::bind(each) {
            let what = if e.kind() == std::io::ErrorKind::AddrInUse {
                "address in use".to_owned()
            } else {
                e.to_string()
            };
            bail!(
                "could not listen on {each} (the metrics address of worker process {n}, --metrics-addr plus {n}): {what}; pick another --metrics-addr"
            );
        }
        out.push(each);
    }
    Ok(out)
}

/// Finds the task binary `app`: a path; a name on PATH; or a binary or example of
/// that name in this Cargo workspace's target directory, release before debug.
fn resolve(app: &str) -> anyhow::Result<PathBuf> {
    resolve_with(app, std::env::var_os("PATH"), target_dir())
}

/// [`resolve`], given the PATH and the target directory.
fn resolve_with(
    app: &str,
    path: Option<std::ffi::OsString>,
    target: Option<PathBuf>,
) -> anyhow::Result<PathBuf> {
    let mut looked = Vec::new();
    if app.contains('/') {
        let path = PathBuf::from(app);
        if is_executable(&path) {
            return Ok(path);
        }
        bail!("no executable task binary at {app:?}: build it first (cargo build) or fix the path");
    }
    if let Some(paths) = path {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(app);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
        looked.push("every directory on PATH".to_owned());
    }
    if let Some(target) = target {
        for sub in ["release", "debug", "release/examples", "debug/examples"] {
            let candidate = target.join(sub).join(app);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
            looked.push(candidate.display().to_string());
        }
    } else {
        looked.push("no Cargo workspace around the current directory".to_owned());
    }
    bail!(
        "no task binary named {app:?}; looked in {}. Build it (cargo build -p {app}) or pass its path",
        looked.join(", ")
    )
}

/// The target directory of the Cargo workspace around the current directory:
/// `CARGO_TARGET_DIR`, else `target/` beside the outermost `Cargo.toml`.
fn target_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(dir));
    }
    let cwd = std::env::current_dir().ok()?;
    let root = cwd.ancestors().filter(|d| d.join("Cargo.toml").is_file()).last()?;
    Some(root.join("target"))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_says_where_it_looked() {
        let err = resolve("no-such-dmq-app-binary").unwrap_err().to_string();
        assert!(err.contains("no task binary named \"no-such-dmq-app-binary\""), "{err}");
        assert!(err.contains("PATH") && err.contains("release"), "{err}");
        let err = resolve("./no/such/app").unwrap_err().to_string();
        assert!(err.contains("no executable task binary at"), "{err}");
    }

    /// An executable file at `path`, with its directories.
    fn executable(path: &Path) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_workspace_target_directory_is_searched_release_first() {
        let target = std::env::temp_dir().join(format!("dmq-resolve-{}", uuid::Uuid::new_v4()));
        executable(&target.join("debug/app"));
        executable(&target.join("debug/examples/demo"));
        let found = |name: &str| resolve_with(name, None, Some(target.clone()));
        assert_eq!(found("app").unwrap(), target.join("debug/app"));
        assert_eq!(found("demo").unwrap(), target.join("debug/examples/demo"));
        executable(&target.join("release/app"));
        assert_eq!(found("app").unwrap(), target.join("release/app"), "release before debug");
        // A file that is not executable is not a binary.
        std::fs::write(target.join("release/notes"), "text").unwrap();
        let err = found("notes").unwrap_err().to_string();
        assert!(err.contains(&target.join("release/notes").display().to_string()), "{err}");
        std::fs::remove_dir_all(&target).unwrap();
    }

    #[test]
    fn each_process_gets_the_metrics_port_plus_its_number() {
        assert!(metrics_addrs(None, 4).unwrap().is_empty());
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert_eq!(metrics_addrs(Some(any), 3).unwrap(), vec![any; 3]);
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = free.local_addr().unwrap();
        let err = metrics_addrs(Some(taken), 1).unwrap_err().to_string();
        assert!(err.contains(&format!("could not listen on {taken}")), "{err}");
        assert!(err.contains("address in use; pick another --metrics-addr"), "{err}");
        drop(free);
        let port = taken.port();
        if port < u16::MAX - 2 {
            let addrs = metrics_addrs(Some(taken), 3);
            // Skipped when a neighbouring port happens to be taken.
            if let Ok(addrs) = addrs {
                let ports: Vec<u16> = addrs.iter().map(SocketAddr::port).collect();
                assert_eq!(ports, [port, port + 1, port + 2]);
            }
        }
        let high: SocketAddr = "127.0.0.1:65535".parse().unwrap();
        let err = metrics_addrs(Some(high), 2).unwrap_err().to_string();
        assert!(err.contains("needs ports 65535 to 65536, past 65535"), "{err}");
    }

    #[test]
    fn the_lease_heartbeat_and_poison_limit_are_passed_on_to_each_process() {
        use clap::Parser as _;
        let given = ["dmq", "worker", "--tasks", "app", "--lease", "2s", "--heartbeat", "200ms"];
        let cli =
            crate::Cli::try_parse_from(given.iter().chain(&["--max-deliveries", "1"])).unwrap();
        let crate::Command::Worker(args) = cli.command else { panic!("not worker") };
        let passed = child_args(&args, None);
        let child = crate::Cli::try_parse_from(
            ["app", "worker"].into_iter().chain(passed.iter().map(String::as_str)),
        )
        .unwrap();
        let crate::Command::Worker(child) = child.command else { panic!("not worker") };
        assert_eq!(child.lease, Duration::from_secs(2));
        assert_eq!(child.heartbeat, Duration::from_millis(200));
        assert_eq!(child.max_deliveries, 1);
    }

    #[test]
    fn the_outbox_namespace_is_passed_on_and_its_url_is_not() {
        use clap::Parser as _;
        let given = ["dmq", "worker", "--tasks", "app", "--outbox", "postgres://u:secret@db/shop"];
        let cli = crate::Cli::try_parse_from(given.iter().chain(&["--outbox-namespace", "shop"]))
            .unwrap();
        let crate::Command::Worker(args) = cli.command else { panic!("not worker") };
        let passed = child_args(&args, None);
        assert!(!passed.iter().any(|a| a.contains("secret") || a == "--outbox"), "{passed:?}");
        let at = passed.iter().position(|a| a == "--outbox-namespace").unwrap();
        assert_eq!(passed[at + 1], "shop");
        let alone = crate::Cli::try_parse_from(["dmq", "worker", "--outbox-namespace", "shop"]);
        assert!(alone.is_err(), "--outbox-namespace without --outbox");
    }

    #[test]
    fn the_metrics_address_is_passed_on_to_each_process() {
        use clap::Parser as _;
        let cli = crate::Cli::try_parse_from(["dmq", "worker", "--tasks", "app"]).unwrap();
        let crate::Command::Worker(args) = cli.command else { panic!("not worker") };
        let addr: SocketAddr = "0.0.0.0:9101".parse().unwrap();
        let passed = child_args(&args, Some(addr));
        let at = passed.iter().position(|a| a == "--metrics-addr").unwrap();
        assert_eq!(passed[at + 1], "0.0.0.0:9101");
        assert!(!child_args(&args, None).iter().any(|a| a == "--metrics-addr"));
    }

    #[test]
    fn a_name_on_path_is_found() {
        // `sh` is on PATH on every machine these tests run on.
        assert!(resolve("sh").unwrap().ends_with("sh"));
    }
}
