//! Turning Redis errors into dmq errors that say what to do.

use dmq_core::Error;

/// `e`, met while doing `what` against the Redis at `url`, as a dmq error.
pub(crate) fn redis_error(what: &str, url: &str, e: &redis::RedisError) -> Error {
    let transient = e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_cluster_error();
    let hint = if e.is_connection_refusal() {
        "; is redis-server running there?"
    } else if transient {
        "; dmq retries such calls"
    } else {
        ""
    };
    Error::Backend { message: format!("redis at {url}: {what} failed: {e}{hint}"), transient }
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
