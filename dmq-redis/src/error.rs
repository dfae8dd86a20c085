//! Turning Redis errors into dmq errors that say what to do.

use dmq_core::Error;

/// `e`, met while doing `context` (which names the operation and the server, as in
/// "could not read the result of task X from redis at 127.0.0.1:6379"), as a dmq
/// error that says what to do; transient when trying again may help.
pub(crate) fn redis_error(context: &str, e: redis::RedisError) -> Error {
    use redis::{ErrorKind, RetryMethod, ServerErrorKind};

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

/// A copy of `e` for each caller of a batch that failed as a whole.
pub(crate) fn copy_error(e: &Error) -> Error {
    match e {
        Error::Backend { message, transient } => {
            Error::Backend { message: message.clone(), transient: *transient }
        }
        other => Error::Backend { message: other.to_string(), transient: other.is_transient() },
    }
}

/// `url` with any password replaced by `***`, for logs and messages.
pub(crate) fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((auth, host)) => match auth.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => format!("{scheme}://***@{host}"),
            },
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("redis://:secret@db:6379/0"), "redis://:***@db:6379/0");
        assert_eq!(redact("rediss://app:secret@db:6379"), "rediss://app:***@db:6379");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
