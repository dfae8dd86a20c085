//! Unique jobs: how long a job's key keeps a second enqueue of the same work from
//! adding another job ([`UniqueFor`], what a call asks for) and how a broker reads
//! that ([`KeyHold`], what travels with the job).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long a unique job keeps a second enqueue of the same work from adding a job:
/// while it holds its key, an enqueue with the same key returns the first job's
/// handle and adds nothing.
///
/// The key is the call's [`idempotency_key`](crate::Call::idempotency_key) when it has
/// one, else one derived from the task's name and its arguments (two calls with equal
/// arguments share it), or for a debounce from the task's name alone (every call of
/// the task replaces the waiting one; give a key to debounce per user, say). Keys are
/// per queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueFor {
    /// While the job waits to run: ready, delayed, held back by a limit, or waiting
    /// for a retry. Once a worker takes it, the same work can be enqueued again (it
    /// will run after this run has started).
    Queued,
    /// Until the job is done: acknowledged, dead-lettered, cancelled or purged. While
    /// it runs, the same work cannot be enqueued again.
    UntilDone,
    /// For this long after the enqueue, whatever becomes of the job: the throttle
    /// mode (at most one job per key per window). A call's plain idempotency key is
    /// this mode with the manager's `idempotency_ttl`.
    Ttl(Duration),
    /// Debounce: the job starts this long after the last enqueue of its key (by
    /// default the task: calls with other arguments replace it too). An
    /// enqueue while the job still waits out its delay replaces its arguments (the
    /// whole call: arguments, priority, options) and pushes its start back to this
    /// long from now, keeping its id; once it has started, an enqueue adds a new job.
    Debounce(Duration),
}

impl UniqueFor {
    /// What the broker is told (with the key's ttl kept apart).
    #[must_use]
    pub(crate) fn hold(self) -> KeyHold {
        match self {
            UniqueFor::Queued => KeyHold::Queued,
            UniqueFor::UntilDone => KeyHold::UntilDone,
            UniqueFor::Ttl(_) => KeyHold::Ttl,
            UniqueFor::Debounce(_) => KeyHold::Debounce,
        }
    }
}

/// How a broker decides whether a job's idempotency key still holds (see
/// [`Job::key_hold`](crate::Job::key_hold)). Whatever the mode, a key lapses at the
/// latest when its ttl ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum KeyHold {
    /// Until the key's ttl ends.
    #[default]
    Ttl,
    /// While the job it names is in the queue and not in flight.
    Queued,
    /// While the job it names is in the queue (in flight too).
    UntilDone,
    /// While the job it names waits out its delay (delayed, not in flight). An
    /// enqueue of a job with the key and the same id as the job it names replaces
    /// that job's payload, priority and due time instead of adding one, and fails
    /// with [`Error::IdempotencyKeyTaken`](crate::Error::IdempotencyKeyTaken)
    /// naming its own id when that job no longer waits.
    Debounce,
}

impl KeyHold {
    /// The mode's name as brokers and the wire format spell it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            KeyHold::Ttl => "ttl",
            KeyHold::Queued => "queued",
            KeyHold::UntilDone => "until_done",
            KeyHold::Debounce => "debounce",
        }
    }
}

/// The key a unique job without a key of its own gets: `unique:<task>:` and the
/// SHA-256 of its encoded arguments, in hex. A cryptographic hash, so that no
/// producer can make its arguments collide with another's and have its job stand in
/// for theirs.
#[must_use]
pub(crate) fn derived_key(task: &str, args: &[u8]) -> String {
    let digest = Sha256::digest(args);
    let mut key = String::with_capacity(8 + task.len() + 64);
    key.push_str("unique:");
    key.push_str(task);
    key.push(':');
    for byte in digest.iter() {
        key.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        key.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_follow_the_task_and_the_arguments() {
        let a = derived_key("send", b"\x91\x01");
        assert_eq!(a, derived_key("send", b"\x91\x01"));
        assert_ne!(a, derived_key("send", b"\x91\x02"));
        assert_ne!(a, derived_key("mail", b"\x91\x01"));
        // SHA-256 of the empty input, a known value.
        assert_eq!(
            derived_key("t", b""),
            "unique:t:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn holds_travel_as_snake_case_names() {
        for hold in [KeyHold::Ttl, KeyHold::Queued, KeyHold::UntilDone, KeyHold::Debounce] {
            let bytes = rmp_serde::to_vec_named(&hold).unwrap();
            let name: String = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(name, hold.as_str());
            assert_eq!(rmp_serde::from_slice::<KeyHold>(&bytes).unwrap(), hold);
        }
    }
}
