//! `dmq serve`: the broker over HTTP (dmq-server's /v1 API).

use anyhow::Context as _;
use dmq_server::{Auth, JwtKey, Limits, RateLimits, Server, ServerConfig, Tls};
use tokio::signal::unix::{SignalKind, signal};

use super::admin::Admin;
use crate::cli::ServeArgs;

/// Runs `dmq serve` until SIGINT or SIGTERM.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let auth = if args.insecure_no_auth {
        Auth::insecure_no_auth()
    } else {
        let jwt = match (&args.jwt_hs256_secret, &args.jwt_rs256_key) {
            (Some(path), _) => Some(JwtKey::Hs256(read_key(path)?)),
            (None, Some(path)) => Some(JwtKey::Rs256Pem(read_key(path)?)),
            (None, None) => None,
        };
        Auth::new(args.tokens.as_deref(), jwt)?
            .with_jwt_claims(args.jwt_audience.clone(), args.jwt_issuer.clone())
    };
    let admin = Admin::connect(&args.broker).await?;
    let manager = admin.manager.clone();
    let config = ServerConfig {
        namespace: admin.namespace().to_owned(),
        auth,
        limits: Limits { max_body: args.max_body, max_batch: args.max_batch },
        rates: RateLimits::new(args.rate_per_token, args.rate_per_ip),
        tls: args.tls_cert.zip(args.tls_key).map(|(cert, key)| Tls { cert, key }),
        header_timeout: args.header_timeout,
        max_waiting: args.max_waiting,
    };
    let insecure = config.auth.is_insecure();
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    let server = Server::bind(args.listen, manager, config)?;
    let addr = server.addr();
    if insecure {
        tracing::warn!(
            "--insecure-no-auth: ANY client that reaches {addr} can enqueue, consume and \
             delete jobs; use it on a trusted machine only, never on a shared network"
        );
    }
    tracing::info!(
        namespace = admin.namespace(),
        "serving the dmq API at {scheme}://{addr}/v1 (OpenAPI at /v1/openapi.json)"
    );
    // Tests and scripts read the address from here (for --listen with port 0).
    println!("listening on {scheme}://{addr}");
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let stop = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("stopping: letting open requests finish");
    };
    server.serve(stop, args.grace).await?;
    admin.manager.flush_events(super::admin::FLUSH_EVENTS).await;
    Ok(())
}

/// The contents of a key or secret file.
fn read_key(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let key = std::fs::read(path)
        .with_context(|| format!("could not read the JWT key file {}", path.display()))?;
    // A secret written by `echo` ends with a newline that is not part of it (CRLF on
    // a file from Windows).
    let trimmed = key.strip_suffix(b"\n").unwrap_or(&key);
    let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
    Ok(trimmed.to_vec())
}
