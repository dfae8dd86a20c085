//! Turning Redis errors into dmq errors that say what to do.

use dmq_core::Error;

/// `e`, met while doing `context` (which names the operation and the server, as in
/// "could not read the result of task X from redis at 127.0.0.1:6379"), as a dmq
/// error that says what to do; transient when trying again may help.
pub(crate) fn redis_error(context: &str, e: redis::RedisError) -> Error {
    use redis::{ErrorKind, RetryMethod, ServerErrorKind};

    let (advice, transient) = if let Some(tls) = tls_failure(&e) {
        let advice = format!(
            "the TLS handshake failed ({tls}); check that the port serves TLS, that tls_ca names \
             the authority that signed the server's certificate, that the host is one the \
             certificate names, and that a server asking for a client certificate gets one \
             (tls_cert, tls_key)"
        );
        return Error::Backend { message: format!("{context}: {advice}"), transient: false };
    } else if e.is_connection_refusal() {
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
            ErrorKind::Server(ServerErrorKind::ReadOnly) => {
                ("this redis is a read-only replica; point dmq at the primary", true)
            }
            ErrorKind::Server(ServerErrorKind::BusyLoading) => {
                ("redis is still loading its data set; try again shortly", true)
            }
            _ => match e.retry_method() {
                RetryMethod::NoRetry => ("redis answered with an error", false),
                _ => ("redis could not serve the call now; try again shortly", true),
            },
        }
    };
    Error::Backend { message: format!("{context}: {advice} ({e})"), transient }
}

/// The TLS error behind `e`, if a TLS handshake or record failed: rustls's error sits
/// in an `io::Error`, which redis-rs keeps behind an `Arc`.
fn tls_failure(e: &redis::RedisError) -> Option<&rustls::Error> {
    std::error::Error::source(e).and_then(find_tls)
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
        Error::Backend { message, transient } => {
            Error::Backend { message: message.clone(), transient: *transient }
        }
        other => Error::Backend { message: other.to_string(), transient: other.is_transient() },
    }
}
