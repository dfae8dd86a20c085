//! Broker URLs: which broker a command talks to, and how to show a URL without its
//! password.

use anyhow::bail;

/// Where a command sends or reads jobs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The in-memory broker of this very process.
    Memory,
    /// A Redis, by URL.
    Redis(String),
}

impl Target {
    /// Parses `memory://`, `redis://...`, `rediss://...` or a Unix-socket URL.
    pub(crate) fn parse(url: &str) -> anyhow::Result<Self> {
        match url.split_once("://") {
            Some(("memory", "")) => Ok(Target::Memory),
            Some(("redis" | "rediss" | "redis+unix" | "unix", rest)) if !rest.is_empty() => {
                Ok(Target::Redis(url.to_owned()))
            }
            _ => bail!(
                "unsupported broker URL {:?}: use redis://host:port[/db], rediss://host:port[/db] or memory://",
                redact(url)
            ),
        }
    }
}

/// Hides a password in a URL: `redis://user:***@host`.
pub(crate) use dmq_redis::redact;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(Target::parse("memory://").unwrap(), Target::Memory);
        assert_eq!(
            Target::parse("redis://127.0.0.1:6379/2").unwrap(),
            Target::Redis("redis://127.0.0.1:6379/2".to_owned())
        );
        let error = Target::parse("nope://x").unwrap_err().to_string();
        assert!(error.contains("redis://") && error.contains("memory://"), "{error}");
        assert!(Target::parse("memory://x").is_err());
        assert!(Target::parse("127.0.0.1:6379").is_err());
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("redis://:secret@host:1/0"), "redis://:***@host:1/0");
        assert_eq!(redact("redis://me:secret@host"), "redis://me:***@host");
        assert_eq!(redact("redis://host:1"), "redis://host:1");
    }
}
