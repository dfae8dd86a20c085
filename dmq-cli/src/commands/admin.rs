//! What the admin commands share: connecting to the broker and result backend of a
//! namespace, and printing tables, times and JSON.

use anyhow::{bail, ensure};
use chrono::{DateTime, SecondsFormat, Utc};
use dmq_core::{BrokerAdmin, Manager, ScheduleStore, WorkerRegistry};
use serde::Serialize;

use crate::broker_url::{Connected, Options, scheme_of};
use crate::cli::BrokerArgs;

/// How long a one-shot command waits for its events (a requeue's or an enqueue's
/// `Queued`) to reach the event stream before it exits.
pub(crate) const FLUSH_EVENTS: std::time::Duration = std::time::Duration::from_secs(5);

/// A manager on a live, shared broker and result backend. The admin commands reach
/// the broker only through its admin capability and the manager, never by its own
/// commands, so they work on any backend the scheme table knows.
pub(crate) struct Admin {
    /// The manager over both.
    pub(crate) manager: Manager,
    /// The namespace.
    namespace: String,
    /// Print JSON rather than tables.
    pub(crate) json: bool,
}

impl Admin {
    /// Connects to the broker and result backend that `args` name.
    pub(crate) async fn connect(args: &BrokerArgs) -> anyhow::Result<Self> {
        if !scheme_of(&args.broker)?.shared {
            bail!(
                "the admin commands need a shared broker, and memory:// lives only inside one \
                 process: pass --broker redis://host:port or \
                 postgres://user:password@host:5432/database (or set DMQ_BROKER_URL)"
            );
        }
        ensure!(!args.namespace.is_empty(), "--namespace cannot be empty");
        let options =
            Options { url: &args.broker, namespace: &args.namespace, max_deliveries: None };
        let Connected { broker, backend } = crate::broker_url::connect(options).await?;
        let manager = Manager::builder().shared_broker(broker).shared_backend(backend).build()?;
        Ok(Admin { manager, namespace: args.namespace.clone(), json: args.json })
    }

    /// The broker's admin capability.
    pub(crate) fn admin(&self) -> anyhow::Result<&dyn BrokerAdmin> {
        Ok(self.manager.admin()?)
    }

    /// The broker's worker registry.
    pub(crate) fn workers(&self) -> anyhow::Result<&dyn WorkerRegistry> {
        self.manager.broker().worker_registry().ok_or_else(|| {
            anyhow::anyhow!("this broker keeps no worker registry, so it cannot list workers")
        })
    }

    /// The broker's schedule store.
    pub(crate) fn schedules(&self) -> anyhow::Result<&dyn ScheduleStore> {
        self.manager.broker().schedule_store().ok_or_else(|| {
            anyhow::anyhow!("this broker keeps no schedule store, so it has no schedules to list")
        })
    }

    /// The namespace.
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }
}

/// Prints `value` as one line of JSON.
pub(crate) fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

/// Prints rows under a header, each column as wide as its widest cell, two spaces
/// apart; the last column is not padded.
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 == widths.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

/// A time as RFC 3339 in UTC, to the second: `2030-01-01T09:00:00Z`.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An optional time, `-` for none.
pub(crate) fn maybe_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".to_owned(), time)
}

/// Parses a task id, saying what one looks like.
pub(crate) fn task_id(text: &str) -> anyhow::Result<dmq_core::TaskId> {
    text.parse().map_err(|_| {
        anyhow::anyhow!(
            "{text:?} is not a task id: use the UUID `dmq enqueue` printed, e.g. \
             0b5c6f2e-3f3c-4d7e-9a57-6f1f2f0c9a10"
        )
    })
}
