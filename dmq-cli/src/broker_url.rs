//! Broker URLs: the table of URL schemes, each with the backend that serves it, and
//! how to show a URL without its password.
//!
//! A new backend crate adds one row to [`SCHEMES`]: its scheme names, how its URLs
//! look, and a function that connects its broker and result backend.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use dmq_core::{Broker, Error, InMemoryBackend, InMemoryBroker, Result, ResultBackend};
use dmq_postgres::{PostgresBackend, PostgresBroker};
use dmq_redis::{RedisBackend, RedisBroker};

/// Hides a password in a URL, by its scheme's rules: `redis://user:***@host`,
/// `postgres://user:***@host/db`, and a `password=` in its query. A PostgreSQL URL's
/// lone user information names a user, and shows; a Redis URL's is a password.
pub(crate) fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some(("postgres" | "postgresql", _)) => dmq_postgres::redact(url),
        _ => dmq_redis::redact(url),
    }
}

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
    for<'a> fn(Options<'a>) -> Pin<Box<dyn Future<Output = Result<Connected>> + Send + 'a>>;

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
    Scheme {
        names: &["postgres", "postgresql"],
        usage: "postgres://user:password@host:5432/database",
        has_address: true,
        shared: true,
        connect: |options| Box::pin(postgres(options)),
    },
];

/// The row of [`SCHEMES`] that serves `url`.
pub(crate) fn scheme_of(url: &str) -> Result<&'static Scheme> {
    if let Some((name, rest)) = url.split_once("://") {
        let row = SCHEMES.iter().find(|row| row.names.contains(&name));
        if let Some(row) = row.filter(|row| row.has_address != rest.is_empty()) {
            return Ok(row);
        }
    }
    let usage: Vec<&str> = SCHEMES.iter().map(|row| row.usage).collect();
    Err(Error::InvalidArgument(format!(
        "unsupported broker URL {:?}: use {}",
        redact(url),
        usage.join(" or ")
    )))
}

/// Connects to the broker and result backend `options.url` names.
pub(crate) async fn connect(options: Options<'_>) -> Result<Connected> {
    (scheme_of(options.url)?.connect)(options).await
}

/// Connects the broker and the result backend that `url` names, in `namespace`, by
/// dmq's table of URL schemes (`memory://`, `redis://` and its TLS, Cluster and
/// Sentinel forms, `postgres://`), as `worker` and the admin commands do: for a
/// binary of one's own that runs a worker on whichever broker it is given. A broker
/// dead-letters a job whose worker was lost `max_deliveries` times while it ran
/// alone (`None` for the broker's default).
///
/// ```no_run
/// # async fn demo() -> dmq_core::Result<()> {
/// let (broker, backend) =
///     dmq_cli::connect_url("postgres://postgres@127.0.0.1:5432/app", "dmq", None).await?;
/// let manager =
///     dmq_core::Manager::builder().shared_broker(broker).shared_backend(backend).build()?;
/// # let _ = manager;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a URL of no known scheme, or a namespace the
/// backend cannot use (on PostgreSQL it names a schema: lowercase letters, digits and
/// underscores); the backend's own error, naming the URL without its password and what
/// to check, when it cannot connect.
pub async fn connect_url(
    url: &str,
    namespace: &str,
    max_deliveries: Option<u32>,
) -> Result<(Arc<dyn Broker>, Arc<dyn ResultBackend>)> {
    let Connected { broker, backend } = connect(Options { url, namespace, max_deliveries }).await?;
    Ok((broker, backend))
}

async fn memory(options: Options<'_>) -> Result<Connected> {
    let mut broker = InMemoryBroker::new();
    if let Some(n) = options.max_deliveries {
        broker = broker.with_max_deliveries(n);
    }
    Ok(Connected { broker: Arc::new(broker), backend: Arc::new(InMemoryBackend::new()) })
}

async fn redis(options: Options<'_>) -> Result<Connected> {
    // Their errors name the URL (without its password) and what to check.
    let mut broker = RedisBroker::connect_with_namespace(options.url, options.namespace).await?;
    if let Some(n) = options.max_deliveries {
        broker = broker.with_max_deliveries(n);
    }
    let backend = RedisBackend::connect_with_namespace(options.url, options.namespace).await?;
    Ok(Connected { broker: Arc::new(broker), backend: Arc::new(backend) })
}

async fn postgres(options: Options<'_>) -> Result<Connected> {
    let namespace = options.namespace;
    // Their errors name the URL (without its password) and what to check; a namespace
    // that cannot name a schema is refused before any connection is made.
    let mut broker = PostgresBroker::connect_with_namespace(options.url, namespace)
        .await
        .map_err(|e| namespace_hint(e, namespace))?;
    if let Some(n) = options.max_deliveries {
        broker = broker.with_max_deliveries(n);
    }
    let backend = PostgresBackend::connect_with_namespace(options.url, namespace).await?;
    Ok(Connected { broker: Arc::new(broker), backend: Arc::new(backend) })
}

/// On PostgreSQL the namespace names a schema: an error about the namespace says
/// where it came from, so that the user knows what to change.
pub(crate) fn namespace_hint(e: Error, namespace: &str) -> Error {
    match e {
        Error::InvalidArgument(message)
            if message.contains(&format!("namespace {namespace:?}")) =>
        {
            Error::InvalidArgument(format!(
                "{message}; pass one with --namespace, e.g. --namespace {}",
                suggested_schema(namespace)
            ))
        }
        other => other,
    }
}

/// `namespace` as a name PostgreSQL takes for a schema: lowercase, with every other
/// character an underscore, starting with a letter, at most 50 characters.
fn suggested_schema(namespace: &str) -> String {
    let mut name: String = namespace
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert_str(0, "dmq_");
    }
    name.truncate(50);
    name
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
    fn postgres_urls() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/test",
            "postgresql://me:secret@db.example:5432/app?sslmode=require",
            "postgres://localhost/app",
        ] {
            let row = scheme_of(url).unwrap();
            assert_eq!(row.names[0], "postgres", "{url}");
            assert!(row.shared, "the admin commands refuse a scheme that is not shared");
        }
        assert!(scheme_of("postgres://").is_err());
        let error = scheme_of("postgress://host/db").unwrap_err().to_string();
        assert!(error.contains("postgres://user:password@host:5432/database"), "{error}");
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("redis://:secret@host:1/0"), "redis://:***@host:1/0");
        assert_eq!(redact("redis://me:secret@host"), "redis://me:***@host");
        assert_eq!(redact("redis://host:1"), "redis://host:1");
        assert_eq!(redact("postgres://me:secret@host:5432/app"), "postgres://me:***@host:5432/app");
        assert_eq!(redact("postgresql://me:se/cr@t@host/app"), "postgresql://me:***@host/app");
        assert_eq!(
            redact("postgres://host/app?password=secret&sslmode=require"),
            "postgres://host/app?password=***&sslmode=require"
        );
        assert_eq!(redact("postgres://host:5432/app"), "postgres://host:5432/app");
        // A PostgreSQL URL names its user there; a Redis URL's lone userinfo is a password.
        assert_eq!(redact("postgres://postgres@host/app"), "postgres://postgres@host/app");
        assert_eq!(redact("redis://secret@host:1"), "redis://***@host:1");
        let error = scheme_of("postgress://me:secret@host/app").unwrap_err().to_string();
        assert!(!error.contains("secret"), "{error}");
    }

    /// Connects to a port where nothing listens: whatever fails there was not refused
    /// up front.
    async fn connect_nowhere(namespace: &str) -> Error {
        let options = Options {
            url: "postgres://postgres@127.0.0.1:1/test",
            namespace,
            max_deliveries: None,
        };
        match connect(options).await {
            Ok(_) => panic!("connected to PostgreSQL at port 1"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn a_namespace_that_cannot_name_a_schema_says_what_to_pass() {
        let error = connect_nowhere("My-App").await;
        assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
        let text = error.to_string();
        assert!(text.contains("lowercase letters, digits and underscores"), "{text}");
        assert!(text.contains("pass one with --namespace, e.g. --namespace my_app"), "{text}");
        // What it suggests is a name PostgreSQL takes: it fails only at the connection.
        for bad in ["My-App", "7up", "dmq-bench-3f1c", &"X".repeat(80)] {
            let suggested = suggested_schema(bad);
            let error = connect_nowhere(&suggested).await;
            assert!(!matches!(error, Error::InvalidArgument(_)), "{suggested}: {error}");
        }
    }

    #[tokio::test]
    async fn the_clis_default_namespace_names_a_schema() {
        use clap::Parser as _;
        let cli = crate::Cli::try_parse_from(["dmq", "queues"]).unwrap();
        let crate::Command::Queues(args) = cli.command else { panic!("not queues") };
        assert_eq!(args.broker.namespace, dmq_postgres::DEFAULT_SCHEMA);
        let error = connect_nowhere(&args.broker.namespace).await;
        assert!(!matches!(error, Error::InvalidArgument(_)), "{error}");
        assert!(error.to_string().contains("127.0.0.1:1"), "{error}");
    }
}
