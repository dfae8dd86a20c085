//! What the admin commands share: connecting to the broker and result backend of a
//! namespace, and printing tables, times and JSON.

use std::sync::Arc;

use anyhow::{bail, ensure};
use chrono::{DateTime, SecondsFormat, Utc};
use dmq_core::Manager;
use dmq_redis::{Keys, RedisBackend, RedisBroker, RedisUrl};
use serde::Serialize;

use crate::broker_url::Target;
use crate::cli::BrokerArgs;

/// How long a one-shot command waits for its events (a requeue's or an enqueue's
/// `Queued`) to reach the event stream before it exits.
pub(crate) const FLUSH_EVENTS: std::time::Duration = std::time::Duration::from_secs(5);

/// A manager on a live Redis broker and result backend.
pub(crate) struct Admin {
    /// The manager over both.
    pub(crate) manager: Manager,
    /// The key names of the namespace.
    pub(crate) keys: Keys,
    /// The broker URL, as given.
    pub(crate) url: String,
    /// Print JSON rather than tables.
    pub(crate) json: bool,
}

impl Admin {
    /// Connects to the broker and result backend that `args` name.
    pub(crate) async fn connect(args: &BrokerArgs) -> anyhow::Result<Self> {
        let url = match Target::parse(&args.broker)? {
            Target::Redis(url) => url,
            Target::Memory => bail!(
                "the admin commands need a shared broker, and memory:// lives only inside one \
                 process: pass --broker redis://host:port (or set DMQ_BROKER_URL)"
            ),
        };
        ensure!(!args.namespace.is_empty(), "--namespace cannot be empty");
        // Their errors name the URL (without its password) and what to check.
        let broker = RedisBroker::connect_with_namespace(&url, &args.namespace).await?;
        let keys = broker.keys().clone();
        let backend = RedisBackend::connect_with_namespace(&url, &args.namespace).await?;
        let manager =
            Manager::builder().broker(broker).shared_backend(Arc::new(backend)).build()?;
        Ok(Admin { manager, keys, url, json: args.json })
    }

    /// A plain connection to the same Redis, for reads the broker has no call for.
    pub(crate) async fn redis(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let url = RedisUrl::parse(&self.url)?;
        let shown = url.shown();
        url.client().get_multiplexed_async_connection().await.map_err(|e| {
            anyhow::anyhow!("could not connect to redis at {shown}: {e}; is redis-server running?")
        })
    }

    /// The namespace.
    pub(crate) fn namespace(&self) -> &str {
        self.keys.namespace()
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
