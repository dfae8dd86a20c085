//! `worker`: one worker in this process, with the tasks linked into this binary.

use std::sync::Arc;

use anyhow::{Context as _, ensure};
use dmq_core::{Broker, Manager, Metrics};
use dmq_postgres::{OutboxRelay, RelayStats};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::broker_url::{Connected, Options, redact, scheme_of};
use crate::cli::WorkerArgs;

/// Runs the worker until SIGINT or SIGTERM, then stops it gracefully.
pub(crate) async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    ensure!(!args.namespace.is_empty(), "--namespace cannot be empty");
    scheme_of(&args.broker)?;
    let shown = redact(&args.broker);
    // Bound first: a taken address stops the start-up before any job is claimed.
    let endpoint = match args.metrics_addr {
        Some(addr) => Some((crate::metrics_server::bind(addr).await?, Metrics::new())),
        None => None,
    };
    let mut manager_builder = Manager::builder();
    if let Some((_, metrics)) = &endpoint {
        manager_builder = manager_builder.metrics(metrics.clone());
    }
    let options = Options {
        url: &args.broker,
        namespace: &args.namespace,
        max_deliveries: Some(args.max_deliveries),
    };
    let Connected { broker, backend } = crate::broker_url::connect(options).await?;
    let manager = manager_builder.shared_broker(broker).shared_backend(backend).build()?;
    let tasks: Vec<_> =
        manager.registry().tasks().into_iter().filter(|t| !super::is_dmqs_own(t)).collect();
    ensure!(
        !tasks.is_empty(),
        "this binary links no #[task]: run `worker` from a task binary (one whose main calls \
         dmq_cli::main() and that links your tasks; add `use my_tasks as _;` if the crate of \
         tasks is never named)"
    );
    // Connected before the worker starts, so that an unusable outbox stops the start-up.
    let relay = match &args.outbox {
        Some(url) => {
            let namespace = args.outbox_namespace.as_deref().unwrap_or(&args.namespace);
            Some(connect_relay(url, namespace, manager.broker()).await?)
        }
        None => None,
    };
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut builder = manager
        .worker()
        .concurrency(usize::try_from(args.concurrency).unwrap_or(usize::MAX))
        .guarantee(args.guarantee)
        .grace(args.grace)
        .lease(args.lease)
        .heartbeat(args.heartbeat)
        .scheduler(!args.no_scheduler);
    let queues = if args.queues.is_empty() {
        let mut queues: Vec<String> = tasks.iter().map(|t| t.queue.to_owned()).collect();
        queues.sort();
        queues.dedup();
        queues
    } else {
        args.queues.clone()
    };
    builder = builder.queues(queues);
    let worker = builder.start();
    let relay = relay.map(Relaying::start);
    let server = endpoint.map(|(bound, metrics)| {
        let addr = bound.addr();
        tracing::info!(
            "serving metrics at http://{addr}/metrics and health at http://{addr}/health"
        );
        bound.serve(manager.clone(), metrics, worker.monitor())
    });
    let names: Vec<&str> = tasks.iter().map(|t| t.name).collect();
    tracing::info!(
        broker = %shown,
        namespace = %args.namespace,
        queues = ?worker.queues(),
        concurrency = args.concurrency,
        guarantee = %args.guarantee,
        scheduler = !args.no_scheduler,
        tasks = ?names,
        "dmq worker {} ready",
        std::process::id(),
    );
    let signal = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
        () = supervisor_gone() => "the supervisor is gone",
    };
    tracing::info!("{signal}: stopping; running jobs have {:?} to finish", args.grace);
    if let Some(relay) = relay {
        relay.stop().await;
    }
    let report = worker.shutdown().await;
    // Served until the worker has stopped, so that a scrape sees the drain.
    if let Some(server) = server {
        server.stop().await;
    }
    tracing::info!(released = report.released, "dmq worker {} stopped", std::process::id());
    Ok(())
}

/// Connects the relay of `--outbox` (the outbox of `namespace` at `url`), relaying to
/// the worker's broker.
async fn connect_relay(
    url: &str,
    namespace: &str,
    broker: &Arc<dyn Broker>,
) -> anyhow::Result<OutboxRelay> {
    let context = format!(
        "could not start the relay of the outbox at {} in namespace {namespace:?} \
         (--outbox, --outbox-namespace)",
        dmq_postgres::redact(url)
    );
    OutboxRelay::connect_with_namespace(url, namespace, Arc::clone(broker)).await.context(context)
}

/// The outbox relay running beside the worker, until told to stop.
struct Relaying {
    stats: RelayStats,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Relaying {
    fn start(relay: OutboxRelay) -> Self {
        let stats = relay.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(relay.run_until(async move {
            let _ = stopped.await;
        }));
        Relaying { stats, stop, task }
    }

    /// Stops it after the batch in hand.
    async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the outbox relay failed");
        }
        tracing::info!(
            relayed = self.stats.relayed(),
            already_relayed = self.stats.already_relayed(),
            duplicates = self.stats.duplicates(),
            dead_lettered = self.stats.dead_lettered(),
            "the outbox relay stopped"
        );
    }
}

/// For a process started by `worker --tasks`: resolves once its supervisor has died
/// (the process was reparented), so that no worker runs on unsupervised. Never
/// resolves for a process started otherwise.
///
/// The supervisor names itself in [`SUPERVISED_ENV`](super::supervise::SUPERVISED_ENV),
/// so a supervisor that died while this process was still starting (before this was
/// first polled) is noticed too: the parent is no longer it.
async fn supervisor_gone() {
    let Some(named) = std::env::var_os(super::supervise::SUPERVISED_ENV) else {
        return std::future::pending().await;
    };
    let supervisor = named
        .to_str()
        .and_then(|pid| pid.parse::<u32>().ok())
        .unwrap_or_else(std::os::unix::process::parent_id);
    loop {
        if std::os::unix::process::parent_id() != supervisor {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
