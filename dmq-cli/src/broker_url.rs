//! Broker URLs: the table of URL schemes, each with the backend that serves it, and
//! how to show a URL without its password.
//!
//! A new backend crate adds one row to [`SCHEMES`]: its scheme names, how its URLs
//! look, and a function that connects its broker and result backend.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::bail;
use dmq_core::{Broker, InMemoryBackend, InMemoryBroker, ResultBackend};
use dmq_redis::{RedisBackend, RedisBroker};

/// Hides a password in a URL: `redis://user:***@host`.
pub(crate) use dmq_redis::redact;

/// What a command asks of the broker it connects to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options<'a> {
    /// The URL, as given.
    pub(crate) url: &'a str,
    /// The namespace that keeps the application's jobs apart from others'.
    pub(crate) namespace: &'a str,
    /// How many times a job's worker may be lost while it runs alone before it is
    /// dead-lettered; `None` for the broker's default.
    pub(crate) max_deliveries: Option<u32>,
}

/// A connected broker and result backend.
pub(crate) struct Connected {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) backend: Arc<dyn ResultBackend>,
}

/// Connects a scheme's broker and result backend.
type Connect =
    for<'a> fn(Options<'a>) -> Pin<Box<dyn Future<Output = anyhow::Result<Connected>> + Send + 'a>>;

/// One row of the scheme table.
pub(crate) struct Scheme {
    /// The URL schemes it serves, as before `://`; the first is its name.
    pub(crate) names: &'static [&'static str],
    /// How its URLs look, for the error that lists the schemes.
    usage: &'static str,
    /// Whether its URLs name a server after `://` (`memory://` names none).
    has_address: bool,
    /// Whether other processes see what it holds: the admin commands need that.
    pub(crate) shared: bool,
    /// Connects its broker and result backend.
    pub(crate) connect: Connect,
}

impl std::fmt::Debug for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheme").field("names", &self.names).finish_non_exhaustive()
    }
}

/// Every broker URL scheme dmq knows.
pub(crate) const SCHEMES: &[Scheme] = &[
    Scheme {
        names: &["memory"],
        usage: "memory://",
        has_address: false,
        shared: false,
        connect: |options| Box::pin(memory(options)),
    },
    Scheme {
        names: &["redis", "rediss", "redis+unix", "unix"],
        usage: "redis://host:port[/db], rediss://host:port[/db]",
        has_address: true,
        shared: true,
        connect: |options| Box::pin(redis(options)),
    },
    Scheme {
        names: &["redis+cluster", "valkey+cluster", "rediss+cluster"],
        usage: "redis+cluster://host:port[,host:port...]",
        has_address: true,
        shared: true,
        connect: |options| Box::pin(redis(options)),
    },
    Scheme {
        names: &["redis+sentinel", "valkey+sentinel", "rediss+sentinel"],
        usage: "redis+sentinel://host:port[,host:port...]/MASTER[/db]",
        has_address: true,
        shared: true,
        connect: |options| Box::pin(redis(options)),
    },
];

/// The row of [`SCHEMES`] that serves `url`.
pub(crate) fn scheme_of(url: &str) -> anyhow::Result<&'static Scheme> {
    if let Some((name, rest)) = url.split_once("://") {
        let row = SCHEMES.iter().find(|row| row.names.contains(&name));
        if let Some(row) = row.filter(|row| row.has_address != rest.is_empty()) {
            return Ok(row);
        }
    }
    let usage: Vec<&str> = SCHEMES.iter().map(|row| row.usage).collect();
    bail!("unsupported broker URL {:?}: use {}", redact(url), usage.join(" or "))
}

/// Connects to the broker and result backend `options.url` names.
pub(crate) async fn connect(options: Options<'_>) -> anyhow::Result<Connected> {
    (scheme_of(options.url)?.connect)(options).await
}

async fn memory(options: Options<'_>) -> anyhow::Result<Connected> {
    let mut broker = InMemoryBroker::new();
    if let Some(n) = options.max_deliveries {
        broker = broker.with_max_deliveries(n);
    }
    Ok(Connected { broker: Arc::new(broker), backend: Arc::new(InMemoryBackend::new()) })
}

async fn redis(options: Options<'_>) -> anyhow::Result<Connected> {
    // Their errors name the URL (without its password) and what to check.
    let mut broker = RedisBroker::connect_with_namespace(options.url, options.namespace).await?;
    if let Some(n) = options.max_deliveries {
        broker = broker.with_max_deliveries(n);
    }
    let backend = RedisBackend::connect_with_namespace(options.url, options.namespace).await?;
    Ok(Connected { broker: Arc::new(broker), backend: Arc::new(backend) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(scheme_of("memory://").unwrap().names[0], "memory");
        assert_eq!(scheme_of("redis://127.0.0.1:6379/2").unwrap().names[0], "redis");
        assert_eq!(scheme_of("rediss://host:6380").unwrap().names[0], "redis");
        assert_eq!(scheme_of("unix:///run/redis.sock").unwrap().names[0], "redis");
        let cluster = scheme_of("redis+cluster://10.0.0.1:7000,10.0.0.2:7000").unwrap();
        assert_eq!(cluster.names[0], "redis+cluster");
        assert!(scheme_of("nope://x").unwrap_err().to_string().contains("redis+cluster://"));
        let sentinel = scheme_of("redis+sentinel://10.0.0.1:26379/mymaster").unwrap();
        assert_eq!(sentinel.names[0], "redis+sentinel");
        let error = scheme_of("nope://x").unwrap_err().to_string();
        assert!(error.contains("redis://") && error.contains("memory://"), "{error}");
        assert!(scheme_of("memory://x").is_err());
        assert!(scheme_of("redis://").is_err());
        assert!(scheme_of("127.0.0.1:6379").is_err());
    }

    #[test]
    fn every_scheme_name_is_served_once() {
        let mut names: Vec<&str> =
            SCHEMES.iter().flat_map(|row| row.names.iter().copied()).collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "a scheme name in two rows");
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("redis://:secret@host:1/0"), "redis://:***@host:1/0");
        assert_eq!(redact("redis://me:secret@host"), "redis://me:***@host");
        assert_eq!(redact("redis://host:1"), "redis://host:1");
    }
}
