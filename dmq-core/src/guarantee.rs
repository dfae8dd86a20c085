//! Delivery guarantees: what a worker promises about how often a job runs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// How often a job may run, chosen per worker
/// ([`WorkerBuilder::guarantee`](crate::WorkerBuilder::guarantee)) or per task
/// (`#[task(guarantee = "exactly-once")]`, which wins over the worker's).
///
/// | | runs after a crash mid-job | retries | result |
/// | --- | --- | --- | --- |
/// | at-most-once | never: the job is lost | none | stored if the run ends |
/// | at-least-once (default) | again, on another worker | yes | the last run's |
/// | exactly-once | again, unless it had completed | yes | the first completion's |
///
/// None of them makes a side effect outside dmq (an e-mail, a payment) happen exactly
/// once: a worker can crash after the side effect and before dmq records the run.
/// Make such a task idempotent, or use at-most-once where losing a job is better than
/// repeating it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Guarantee {
    /// The job is acknowledged when the worker claims it, before it runs: it never
    /// runs twice, but a crash, a lost connection or the end of a shutdown's grace
    /// period while it runs loses it. A failure is stored in the result backend and
    /// never retried or dead-lettered.
    AtMostOnce,
    /// The job is acknowledged after it ran and its result was stored: it is never
    /// lost, but a crash after the run and before the acknowledgement runs it again.
    #[default]
    AtLeastOnce,
    /// As at-least-once, and the acknowledgement also records the job's completion
    /// in the same atomic step. A delivery of a job that already completed (its
    /// completion is recorded, or its success is in the result backend) is
    /// acknowledged without running, so the stored result is the first completion's.
    /// The record is kept for the manager's
    /// [`idempotency_ttl`](crate::ManagerBuilder::idempotency_ttl). A worker cut off
    /// from the broker for longer than its lease can still overlap with the worker
    /// that took the job over.
    ExactlyOnce,
}

impl Guarantee {
    /// The guarantee's name: `at-most-once`, `at-least-once` or `exactly-once`.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Guarantee::AtMostOnce => "at-most-once",
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::ExactlyOnce => "exactly-once",
        }
    }
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Guarantee {
    type Err = Error;

    /// Parses `at-most-once`, `at-least-once` or `exactly-once` (underscores work too).
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().replace('_', "-").to_ascii_lowercase().as_str() {
            "at-most-once" => Ok(Guarantee::AtMostOnce),
            "at-least-once" => Ok(Guarantee::AtLeastOnce),
            "exactly-once" => Ok(Guarantee::ExactlyOnce),
            _ => Err(Error::InvalidArgument(format!(
                "unknown delivery guarantee {s:?}: use at-most-once, at-least-once or exactly-once"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for g in [Guarantee::AtMostOnce, Guarantee::AtLeastOnce, Guarantee::ExactlyOnce] {
            assert_eq!(g.as_str().parse::<Guarantee>().unwrap(), g);
        }
        assert_eq!("Exactly_Once".parse::<Guarantee>().unwrap(), Guarantee::ExactlyOnce);
        let err = "twice".parse::<Guarantee>().unwrap_err().to_string();
        assert!(err.contains("at-most-once, at-least-once or exactly-once"), "{err}");
        assert_eq!(Guarantee::default(), Guarantee::AtLeastOnce);
    }
}
