//! Turning Redis errors into dmq errors that say what to do.

use dmq_core::Error;

/// A Redis call that failed: what dmq was doing, what to do about it, and the
/// `redis::RedisError` itself, which [`source`](std::error::Error::source) returns.
///
/// dmq's calls return [`dmq_core::Error`]; its [`Backend`](dmq_core::Error::Backend)
/// variant keeps this as its source, so a caller can still reach the Redis error:
///
/// ```
/// fn redis_cause(e: &dmq_core::Error) -> Option<&redis::RedisError> {
///     let failure = e.backend_source()?.downcast_ref::<dmq_redis::RedisFailure>()?;
///     Some(failure.redis_error())
/// }
/// # let _ = redis_cause;
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{context}: {advice}")]
pub struct RedisFailure {
    context: String,
    advice: String,
    transient: bool,
    /// Whether the message dmq shows names the Redis error too (a TLS failure's advice
    /// already does).
    detailed: bool,
    #[source]
    source: redis::RedisError,
}

impl RedisFailure {
    /// `e`, met while doing `context` (which names the operation and the server, as in
    /// "could not read the result of task X from redis at 127.0.0.1:6379"), with advice
    /// on what to do; transient when trying again may help.
    #[must_use]
    pub fn new(context: &str, e: redis::RedisError) -> Self {
        let (advice, transient, detailed) = advice(&e);
        RedisFailure { context: context.to_owned(), advice, transient, detailed, source: e }
    }

    /// What dmq was doing, and on which server.
    #[must_use]
    pub fn context(&self) -> &str {
        &self.context
    }

    /// What to do about it.
    #[must_use]
    pub fn advice(&self) -> &str {
        &self.advice
    }

    /// Whether the same call may succeed later (a lost connection, say).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The Redis error.
    #[must_use]
    pub fn redis_error(&self) -> &redis::RedisError {
        &self.source
    }
}

impl From<RedisFailure> for Error {
    fn from(failure: RedisFailure) -> Self {
        let message = if failure.detailed {
            format!("{failure} ({})", failure.source)
        } else {
            failure.to_string()
        };
        let transient = failure.transient;
        Error::backend_caused_by(message, transient, dmq_core::BackendSource::new(failure))
    }
}

/// `e`, met while doing `context`, as a dmq error that says what to do and keeps the
/// Redis error as its source.
pub(crate) fn redis_error(context: &str, e: redis::RedisError) -> Error {
    RedisFailure::new(context, e).into()
}

/// What to do about `e`, whether trying again may help, and whether the message should
/// name `e` too.
fn advice(e: &redis::RedisError) -> (String, bool, bool) {
    use redis::{ErrorKind, RetryMethod, ServerErrorKind};

    if let Some(tls) = tls_failure(e).map(ToString::to_string).or_else(|| tls_failure_text(e)) {
        let advice = format!(
            "the TLS handshake failed ({tls}); check that the port serves TLS, that tls_ca names \
             the authority that signed the server's certificate, that the host is one the \
             certificate names, and that a server asking for a client certificate gets one \
             (tls_cert, tls_key)"
        );
        return (advice, false, false);
    }
    let (advice, transient) = if e.is_connection_refusal() {
        ("the connection was refused; is redis-server running and listening there?", true)
    } else if e.is_timeout() {
        ("redis did not answer in time; is it overloaded, or the network down?", true)
    } else if e.is_io_error() {
        ("the connection failed; dmq reconnects by itself, so the call may succeed later", true)
    } else {
        match e.kind() {
            ErrorKind::AuthenticationFailed => {
                ("authentication failed; check the user name and password in the URL", false)
            }
            ErrorKind::InvalidClientConfig => (
                "the URL is not valid; write it as redis://[[user]:password@]host[:port][/db]",
                false,
            ),
            ErrorKind::Server(ServerErrorKind::NoPerm) => {
                ("redis refused the command; give the user the ACL permissions dmq needs", false)
            }
            ErrorKind::Server(ServerErrorKind::ReadOnly) => (
                "this redis is a read-only replica (during a failover, until the client \
                     learns the new primary; or the URL names a replica); point dmq at the primary",
                true,
            ),
            ErrorKind::Server(ServerErrorKind::BusyLoading) => {
                ("redis is still loading its data set; try again shortly", true)
            }
            _ => match e.retry_method() {
                RetryMethod::NoRetry => ("redis answered with an error", false),
                _ => ("redis could not serve the call now; try again shortly", true),
            },
        }
    };
    (advice.to_owned(), transient, true)
}

/// The TLS error behind `e`, if a TLS handshake or record failed: rustls's error sits
/// in an `io::Error`, which redis-rs keeps behind an `Arc`.
fn tls_failure(e: &redis::RedisError) -> Option<&rustls::Error> {
    std::error::Error::source(e).and_then(find_tls)
}

/// The TLS failure a Redis Cluster client reports as text: redis-rs's cluster client
/// keeps only the message of the error behind a failed first connection, so the
/// rustls error is found by what its message says.
fn tls_failure_text(e: &redis::RedisError) -> Option<String> {
    // Only a failed connection: a server's or a script's error may quote stored bytes.
    if !(e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()) {
        return None;
    }
    const RUSTLS_SAYS: [&str; 4] = [
        "invalid peer certificate",
        "received fatal alert",
        "peer sent no certificates",
        "peer is incompatible",
    ];
    let text = e.to_string();
    let at = RUSTLS_SAYS.iter().filter_map(|said| text.find(said)).min()?;
    Some(text[at..].trim_end_matches(')').to_owned())
}

fn find_tls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner: Option<&(dyn std::error::Error + 'static)> =
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            io.get_ref().map(|i| i as &(dyn std::error::Error + 'static))
        } else if let Some(shared) = e.downcast_ref::<Shared>() {
            Some(&**shared as &(dyn std::error::Error + 'static))
        } else {
            None
        };
    inner.and_then(find_tls).or_else(|| e.source().and_then(find_tls))
}

/// A copy of `e` for each caller of a batch that failed as a whole.
pub(crate) fn copy_error(e: &Error) -> Error {
    match e {
        Error::Backend { message, transient, source: Some(source), .. } => {
            Error::backend_caused_by(message.clone(), *transient, source.clone())
        }
        other => Error::backend(other.to_string(), other.is_transient()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_keeps_the_redis_error_as_its_source() {
        // Port 1: nothing listens there.
        let client = redis::Client::open("redis://127.0.0.1:1").expect("a valid URL");
        let refused = client.get_multiplexed_async_connection().await.expect_err("refused");
        let e = redis_error("connecting to redis at 127.0.0.1:1", refused);
        assert!(e.is_transient(), "{e}");
        let text = e.to_string();
        assert!(text.starts_with("connecting to redis at 127.0.0.1:1: the connection was refused"));
        let failure = e.backend_source().expect("a source");
        let failure = failure.downcast_ref::<RedisFailure>().expect("the RedisFailure");
        // Walking the chain finds it too, as the first link.
        let first = std::error::Error::source(&e).expect("a source");
        assert!(first.downcast_ref::<RedisFailure>().is_some(), "{first:?}");
        assert!(failure.redis_error().is_connection_refusal(), "{failure:?}");
        assert!(failure.is_transient());
        assert_eq!(failure.context(), "connecting to redis at 127.0.0.1:1");
        // The redis error is a link of the source chain, as anyhow and the like walk it.
        let chain_holds_redis = |e: &Error| {
            let mut at = std::error::Error::source(e);
            while let Some(cause) = at {
                if cause.downcast_ref::<redis::RedisError>().is_some() {
                    return true;
                }
                at = cause.source();
            }
            false
        };
        assert!(chain_holds_redis(&e));
        // A copy for a batch's callers keeps it too.
        assert!(chain_holds_redis(&copy_error(&e)));
    }
}
