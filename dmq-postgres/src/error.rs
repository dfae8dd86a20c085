//! Turning PostgreSQL errors into dmq errors that say what to do.

use dmq_core::Error;

/// A PostgreSQL call that failed: what dmq was doing, what to do about it, and the
/// `sqlx::Error` itself, which [`source`](std::error::Error::source) returns.
///
/// dmq's calls return [`dmq_core::Error`]; its [`Backend`](dmq_core::Error::Backend)
/// variant keeps this as its source, so a caller can still reach the database error:
///
/// ```
/// fn sqlstate(e: &dmq_core::Error) -> Option<String> {
///     let failure = e.backend_source()?.downcast_ref::<dmq_postgres::PostgresFailure>()?;
///     Some(failure.sqlx_error().as_database_error()?.code()?.into_owned())
/// }
/// # let _ = sqlstate;
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{context}: {advice}")]
pub struct PostgresFailure {
    context: String,
    advice: String,
    transient: bool,
    #[source]
    source: sqlx::Error,
}

impl PostgresFailure {
    /// `e`, met while doing `context`, with advice on what to do.
    #[must_use]
    pub fn new(context: &str, e: sqlx::Error) -> Self {
        let (advice, transient) = advice(&e);
        PostgresFailure { context: context.to_owned(), advice, transient, source: e }
    }

    /// What dmq was doing.
    #[must_use]
    pub fn context(&self) -> &str {
        &self.context
    }

    /// Whether the same call may succeed later (a lost connection, say).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The database driver's error.
    #[must_use]
    pub fn sqlx_error(&self) -> &sqlx::Error {
        &self.source
    }
}

impl PostgresFailure {
    /// The message every caller sees: the context, the advice and the driver's error.
    fn message(&self) -> String {
        format!("{self} ({})", self.source)
    }

    /// This failure as `n` errors, for the callers whose writes shared the statement
    /// that failed: each says the same; one of them keeps the driver's error as its
    /// source (it cannot be copied).
    pub(crate) fn shared(self, n: usize) -> Vec<Error> {
        let mut errors: Vec<Error> =
            (1..n).map(|_| Error::backend(self.message(), self.transient)).collect();
        if n > 0 {
            errors.push(self.into());
        }
        errors
    }
}

impl From<PostgresFailure> for Error {
    fn from(failure: PostgresFailure) -> Self {
        let message = failure.message();
        let transient = failure.transient;
        Error::backend_caused_by(message, transient, dmq_core::BackendSource::new(failure))
    }
}

/// `e`, met while doing `context`, as a dmq error that says what to do and keeps the
/// database error as its source.
pub(crate) fn pg_error(context: &str, e: sqlx::Error) -> Error {
    PostgresFailure::new(context, e).into()
}

/// The SQLSTATE `enqueue_in` (migrations/0002) raises in a schema whose mode is not
/// set yet.
pub(crate) const MODE_UNSET: &str = "DQ002";

/// The SQLSTATE of a database error, if `e` is one.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned())
}

fn advice(e: &sqlx::Error) -> (String, bool) {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => (
            "the connection to PostgreSQL failed or timed out; is the server running and \
             reachable? dmq retries such calls"
                .to_owned(),
            true,
        ),
        sqlx::Error::Tls(_) => (
            "the TLS handshake with PostgreSQL failed; check sslmode and the server's \
             certificate"
                .to_owned(),
            false,
        ),
        sqlx::Error::PoolClosed => ("the connection pool was closed".to_owned(), false),
        sqlx::Error::Configuration(_) => (
            "the PostgreSQL URL is not usable; write it as \
             postgres://user:password@host:5432/database"
                .to_owned(),
            false,
        ),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("3D000") => (
                "the database does not exist; create it (createdb) or name another one in \
                 the URL"
                    .to_owned(),
                false,
            ),
            Some("28P01" | "28000") => (
                "PostgreSQL refused the credentials; check the URL's user and password".to_owned(),
                false,
            ),
            Some("42P01" | "42883") => (
                "dmq's tables or functions are missing in this schema; run `dmq migrate` \
                 (dmq also migrates when a broker or backend connects)"
                    .to_owned(),
                false,
            ),
            Some("3F000") => (
                "the schema does not exist; run `dmq migrate` for its namespace, or connect \
                 its PostgresBroker or OutboxRelay once (each makes and migrates it)"
                    .to_owned(),
                false,
            ),
            Some(MODE_UNSET) => (
                "the schema has dmq's tables but serves neither a broker nor an outbox yet; \
                 run `dmq migrate` for it saying which, or connect its PostgresBroker or \
                 OutboxRelay once (each records what the schema serves)"
                    .to_owned(),
                false,
            ),
            Some(code) if code.starts_with("08") || code.starts_with("57") => (
                "the server closed the connection or is shutting down; dmq retries such \
                 calls"
                    .to_owned(),
                true,
            ),
            Some("40001" | "40P01") => {
                ("a serialization failure or deadlock; trying again may help".to_owned(), true)
            }
            _ => ("PostgreSQL refused the statement".to_owned(), false),
        },
        _ => ("PostgreSQL answered something dmq did not expect".to_owned(), false),
    }
}
