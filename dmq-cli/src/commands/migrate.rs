//! `dmq migrate`: makes a PostgreSQL namespace's schema and brings its tables up to
//! date, for a broker or for an outbox.

use anyhow::{bail, ensure};
use dmq_postgres::Mode;
use serde_json::json;

use super::admin::print_json;
use crate::broker_url::{namespace_hint, redact, scheme_of};
use crate::cli::MigrateArgs;

/// Runs the migrations of `--namespace` at the `--broker` PostgreSQL, recording what
/// the schema serves; refuses any URL that is not a PostgreSQL one.
pub(crate) async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let url = &args.broker.broker;
    let namespace = &args.broker.namespace;
    let shown = redact(url);
    let scheme = scheme_of(url)?.names[0];
    if scheme != "postgres" {
        bail!(
            "dmq migrate makes and migrates PostgreSQL schemas, and {shown} is a {scheme}:// \
             broker, which needs no migration: pass --broker \
             postgres://user:password@host:5432/database (or set DMQ_BROKER_URL)"
        );
    }
    ensure!(!namespace.is_empty(), "--namespace cannot be empty");
    let mode = if args.outbox { Mode::Outbox } else { Mode::Broker };
    // Its errors name the URL without its password, the schema, and what to do (a
    // namespace that cannot name a schema, one that serves the other mode).
    dmq_postgres::migrate_namespace(url, namespace, Some(mode))
        .await
        .map_err(|e| namespace_hint(e, namespace))?;
    let (serves, tables) = match mode {
        Mode::Outbox => (
            "outbox",
            "jobs enqueued in a transaction wait in its table outbox until the relay moves \
             them to Redis",
        ),
        Mode::Broker => ("broker", "a PostgreSQL broker keeps its jobs in its table jobs"),
    };
    if args.broker.json {
        return print_json(&json!({
            "broker": shown,
            "schema": namespace,
            "serves": serves,
            "migrated": true,
        }));
    }
    println!(
        "schema {namespace:?} at {shown}: made if it was missing, its tables, views and \
         functions up to date; it serves as a {serves} ({tables})"
    );
    Ok(())
}
