//! Where dmq's tables live: one PostgreSQL schema per namespace, named for it, made
//! and migrated on connect (or by `dmq migrate`). The only place a table's name is
//! written out with its schema.

use std::time::Duration;

use dmq_core::{Error, Result};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::error::pg_error;

/// The namespace, and so the schema, dmq uses unless told otherwise.
pub const DEFAULT_SCHEMA: &str = "dmq";

/// The migrations, embedded: the same ones `dmq migrate` runs.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// What a schema serves: a broker's jobs, or an outbox relayed to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A [`PostgresBroker`](crate::PostgresBroker) keeps its jobs here, and
    /// `enqueue_in` writes them straight into its `jobs` table.
    Broker,
    /// Jobs enqueued in a transaction wait in the `outbox` table until an
    /// [`OutboxRelay`](crate::OutboxRelay) moves them to the Redis broker.
    Outbox,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Broker => "broker",
            Mode::Outbox => "outbox",
        }
    }
}

/// One namespace's schema: its name and how to reach its tables.
#[derive(Debug, Clone)]
pub(crate) struct Schema {
    name: String,
    quoted: String,
}

impl Schema {
    /// The schema of `namespace`, which must be a plain SQL name.
    pub(crate) fn new(namespace: &str) -> Result<Self> {
        let plain = !namespace.is_empty()
            && namespace.len() <= 50
            && namespace.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && namespace.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain {
            return Err(Error::InvalidArgument(format!(
                "namespace {namespace:?} cannot name a PostgreSQL schema: use lowercase \
                 letters, digits and underscores, starting with a letter (at most 50)"
            )));
        }
        Ok(Schema { name: namespace.to_owned(), quoted: format!("\"{namespace}\"") })
    }

    /// The schema's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// `object` of this schema, quoted for SQL: `"dmq".jobs`.
    pub(crate) fn at(&self, object: &str) -> String {
        format!("{}.{object}", self.quoted)
    }

    /// The notification channel for `topic` (`jobs`, `results`, `events`, `outbox`).
    pub(crate) fn channel(&self, topic: &str) -> String {
        format!("{}.{topic}", self.name)
    }
}

/// A statement dmq wrote. Only schema and table names are formatted into dmq's SQL,
/// and a schema's name is a plain name ([`Schema::new`] refuses any other); every
/// value is bound as a parameter.
pub(crate) fn sql(text: &str) -> sqlx::AssertSqlSafe<&str> {
    sqlx::AssertSqlSafe(text)
}

/// How many connections a pool keeps, unless the URL says otherwise.
const DEFAULT_POOL_SIZE: u32 = 10;

/// The connect options of `url`, which must be a `postgres://` or `postgresql://` URL.
pub(crate) fn options(url: &str) -> Result<PgConnectOptions> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(Error::InvalidArgument(format!(
            "{:?} is not a PostgreSQL URL: write postgres://user:password@host:5432/database",
            redact(url)
        )));
    }
    let options: PgConnectOptions = url
        .parse()
        .map_err(|e| pg_error(&format!("could not read the PostgreSQL URL {}", redact(url)), e))?;
    // Connections say they are dmq's in pg_stat_activity, unless the URL names them.
    let named = options.get_application_name().is_some();
    let options = if named { options } else { options.application_name("dmq") };
    Ok(options.log_statements(tracing::log::LevelFilter::Trace))
}

/// A pool of connections to `url`.
pub(crate) async fn pool(url: &str, size: u32) -> Result<PgPool> {
    let options = options(url)?;
    PgPoolOptions::new()
        .max_connections(size.max(1))
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|e| pg_error(&format!("could not connect to PostgreSQL at {}", redact(url)), e))
}

/// The default pool size.
pub(crate) fn default_pool_size() -> u32 {
    DEFAULT_POOL_SIZE
}

/// Makes the schema of `namespace` (`dmq` by default) at `url` and brings its tables,
/// views and functions up to date, as every broker, backend and relay does when it
/// connects; `dmq migrate` runs this. With `mode`, also records what the schema
/// serves (a broker's jobs, or an outbox for Redis), refusing a schema that serves
/// the other.
///
/// # Errors
///
/// When the URL or the namespace is not usable, the server cannot be reached, a
/// migration fails, or the schema serves the other mode.
pub async fn migrate_namespace(url: &str, namespace: &str, mode: Option<Mode>) -> Result<()> {
    migrate(url, &Schema::new(namespace)?, mode).await
}

/// Makes `schema` and brings its tables up to date, on a connection of its own that
/// holds an advisory lock named after the schema meanwhile (processes that start
/// together would otherwise race to create it, and all but one fail: `CREATE SCHEMA
/// IF NOT EXISTS` is no guard against another's uncommitted one); then records that
/// it serves `mode`, refusing a schema that serves the other one.
pub(crate) async fn migrate(url: &str, schema: &Schema, mode: Option<Mode>) -> Result<()> {
    let context = format!("could not migrate schema {} at {}", schema.name(), redact(url));
    let mut conn = options(url)?.connect().await.map_err(|e| pg_error(&context, e))?;
    let outcome = async {
        // Released with the connection, below.
        sqlx::query(crate::schema::sql("SELECT pg_advisory_lock(hashtextextended($1, 0))"))
            .bind(format!("dmq migrate {}", schema.name()))
            .execute(&mut conn)
            .await
            .map_err(|e| pg_error(&context, e))?;
        sqlx::raw_sql(crate::schema::sql(&format!(
            "CREATE SCHEMA IF NOT EXISTS {q}; SET search_path TO {q}",
            q = schema.quoted
        )))
        .execute(&mut conn)
        .await
        .map_err(|e| pg_error(&context, e))?;
        let mut migrator =
            sqlx::migrate::Migrator::with_migrations(MIGRATOR.iter().cloned().collect());
        migrator.dangerous_set_table_name(schema.at("_sqlx_migrations"));
        migrator
            .run_direct(None, &mut conn, false)
            .await
            .map_err(|e| pg_error(&context, sqlx::Error::Migrate(Box::new(e))))?;
        if let Some(mode) = mode {
            claim_mode(&mut conn, schema, mode).await?;
        }
        Ok(())
    }
    .await;
    let _ = conn.close().await;
    outcome
}

/// Records that `schema` serves `mode`; refuses one that serves the other.
async fn claim_mode(conn: &mut sqlx::PgConnection, schema: &Schema, mode: Mode) -> Result<()> {
    let sql = format!(
        "INSERT INTO {} (name, value) VALUES ('mode', $1) \
         ON CONFLICT (name) DO UPDATE SET value = {}.value RETURNING value",
        schema.at("settings"),
        schema.at("settings"),
    );
    let held: String = sqlx::query_scalar(crate::schema::sql(&sql))
        .bind(mode.as_str())
        .fetch_one(conn)
        .await
        .map_err(|e| pg_error(&format!("could not read schema {}'s mode", schema.name()), e))?;
    if held != mode.as_str() {
        return Err(Error::InvalidArgument(format!(
            "schema {s:?} holds {held:?} tables (its jobs are {what}), so it cannot serve as \
             {want:?} too: give the other a namespace of its own (--namespace, or \
             connect_with_namespace)",
            s = schema.name(),
            what = if held == "broker" {
                "a PostgreSQL broker's"
            } else {
                "an outbox relayed to Redis"
            },
            want = mode.as_str(),
        )));
    }
    Ok(())
}

/// Hides a password in a URL: `postgres://user:***@host/db`, and the value of a
/// `password=` parameter in its query. A user without a password is shown, as
/// libpq's URLs name the user there.
///
/// Works on the text, not on a parsed URL, so that a URL the parser refuses (a
/// password holding an unencoded `/`, `#` or `@`) is hidden too: the user
/// information ends at the last `@`, and when a query value holds an `@` the part
/// before it is hidden as well, which hides more than needed, never less.
#[must_use]
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let mut rest = rest.to_owned();
    let mut from = 0;
    while let Some(at) = rest[from..].find("password=").map(|at| from + at + "password=".len()) {
        let end = rest[at..].find(['&', '#']).map_or(rest.len(), |end| at + end);
        rest.replace_range(at..end, "***");
        from = at + "***".len();
    }
    match rest.rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => format!("{scheme}://{rest}"),
        },
        None => format!("{scheme}://{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_must_be_a_plain_name() {
        assert!(Schema::new("dmq").is_ok());
        assert!(Schema::new("tenant_7").is_ok());
        for bad in ["", "Dmq", "7up", "a-b", "a\"b", "a.b", &"x".repeat(51)] {
            assert!(Schema::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Schema::new("dmq").unwrap().at("jobs"), "\"dmq\".jobs");
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("postgres://me:secret@host/db"), "postgres://me:***@host/db");
        assert_eq!(redact("postgres://host/db"), "postgres://host/db");
        assert_eq!(redact("postgres://postgres@host:5432/db"), "postgres://postgres@host:5432/db");
        // Passwords the URL parser refuses, or that sit in the query, were shown whole.
        for (url, shown) in [
            ("postgres://me:se/cret@host/db", "postgres://me:***@host/db"),
            ("postgres://me:p@ss#wo?rd@host/db", "postgres://me:***@host/db"),
            (
                "postgresql://host/db?sslmode=require&password=secret&user=me",
                "postgresql://host/db?sslmode=require&password=***&user=me",
            ),
            ("postgres://host/db?password=p@ss", "postgres://host/db?password=***"),
            ("postgres://me:a@host/db?password=b", "postgres://me:***@host/db?password=***"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
        // An `@` in another query value hides more than needed, never less.
        let shown = redact("postgres://me:secret@host/db?application_name=a@b");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
