//! Partitioned queues: one logical queue spread over N queues of its own,
//! `<queue>#0` to `<queue>#<N-1>`, which a broker keeps apart (a Redis Cluster puts each
//! in a slot of its own, so one hot queue spreads over the masters).
//!
//! An enqueue picks one partition: by round robin, by a hash of the task id, or, when
//! the call gives a partition key, by a hash of the key, so that the jobs of one key
//! go to one partition and keep their order relative to each other. A worker of the
//! logical queue claims from all its partitions, starting at a different one each
//! claim, so that none is favoured.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::task::TaskId;

/// What separates a queue's name from its partition's number: `emails#3`. Queue names
/// may not hold it otherwise.
pub const PARTITION_SEPARATOR: char = '#';

/// The most partitions a queue may have.
pub const MAX_PARTITIONS: u16 = 1024;

/// How an enqueue without a partition key picks a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PartitionBy {
    /// Each in turn, per process (the default): an even spread.
    #[default]
    RoundRobin,
    /// By a hash of the task id: where a job went can be computed from its id alone.
    TaskId,
}

/// The name of partition `partition` of `queue`: `emails#3`.
#[must_use]
pub fn partition_name(queue: &str, partition: u16) -> String {
    format!("{queue}{PARTITION_SEPARATOR}{partition}")
}

/// The logical queue and the partition a queue name stands for: `("emails", Some(3))`
/// for `emails#3`, `("emails", None)` for `emails`.
#[must_use]
pub fn split_partition(name: &str) -> (&str, Option<u16>) {
    if let Some((queue, number)) = name.rsplit_once(PARTITION_SEPARATOR) {
        let digits = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
        if let (true, Ok(partition)) = (digits && !queue.is_empty(), number.parse::<u16>()) {
            return (queue, Some(partition));
        }
    }
    (name, None)
}

/// Whether queue `name` is a partition of queue `queue`: `emails#3` of `emails`, and
/// neither `emails` itself nor `emails#3` of `emails#3`.
#[must_use]
pub fn is_partition_of(name: &str, queue: &str) -> bool {
    matches!(split_partition(name), (logical, Some(_)) if logical == queue)
}

/// The partition of `partitions` that partition key `key` goes to: FNV-1a (64 bits) of
/// the key's UTF-8 bytes, modulo `partitions`, so that any producer, in any language,
/// can compute it.
#[must_use]
pub fn partition_of_key(key: &str, partitions: u16) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    u16::try_from(hash % u64::from(partitions.max(1))).unwrap_or(0)
}

/// One partitioned queue.
#[derive(Debug)]
struct Partitioned {
    count: u16,
    by: PartitionBy,
    /// The next partition of a round robin.
    next: AtomicU64,
}

/// The partitioned queues a manager knows.
#[derive(Debug, Default)]
pub(crate) struct Partitions {
    queues: HashMap<String, Partitioned>,
}

impl Partitions {
    /// Declares `queue` (a checked queue name) partitioned `count` ways; 1 means not
    /// partitioned.
    pub(crate) fn set(&mut self, queue: &str, count: u16, by: PartitionBy) -> Result<()> {
        if !(1..=MAX_PARTITIONS).contains(&count) {
            return Err(Error::InvalidArgument(format!(
                "queue {queue:?} cannot have {count} partitions: give 1 to {MAX_PARTITIONS}"
            )));
        }
        if let Some(known) = self.queues.get(queue) {
            if known.count != count || known.by != by {
                return Err(Error::InvalidArgument(format!(
                    "queue {queue:?} is declared with {} partitions ({:?}) and with {count} \
                     ({by:?}); declare it one way (#[task(partitions = ..)] on each of its \
                     tasks alike, or ManagerBuilder::partitions once)",
                    known.count, known.by
                )));
            }
            return Ok(());
        }
        if count > 1 {
            let partitioned = Partitioned { count, by, next: AtomicU64::new(0) };
            self.queues.insert(queue.to_owned(), partitioned);
        }
        Ok(())
    }

    /// How many partitions `queue` has, when it is partitioned.
    pub(crate) fn count(&self, queue: &str) -> Option<u16> {
        self.queues.get(queue).map(|p| p.count)
    }

    /// The queue a job of `queue` with id `id` and partition key `key` goes to: one of
    /// its partitions when it is partitioned, else `queue` itself.
    pub(crate) fn place(&self, queue: &str, id: TaskId, key: Option<&str>) -> Option<String> {
        let partitioned = self.queues.get(queue)?;
        let count = partitioned.count;
        let partition = match (key, partitioned.by) {
            (Some(key), _) => partition_of_key(key, count),
            (None, PartitionBy::TaskId) => {
                let hash = id.as_uuid().as_u128() % u128::from(count);
                u16::try_from(hash).unwrap_or(0)
            }
            (None, PartitionBy::RoundRobin) => {
                let n = partitioned.next.fetch_add(1, Ordering::Relaxed);
                u16::try_from(n % u64::from(count)).unwrap_or(0)
            }
        };
        Some(partition_name(queue, partition))
    }

    /// `queues` with each partitioned queue replaced by its partitions, in groups: one
    /// group per queue given, in order.
    pub(crate) fn expand(&self, queues: &[String]) -> Vec<Vec<String>> {
        queues
            .iter()
            .map(|queue| match self.count(queue) {
                Some(count) => (0..count).map(|p| partition_name(queue, p)).collect(),
                None => vec![queue.clone()],
            })
            .collect()
    }
}

/// The queues of `groups`, in order, each group starting at its partition
/// `round % len`: claim after claim, every partition gets its turn at the front.
pub(crate) fn rotated(groups: &[Vec<String>], round: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(groups.iter().map(Vec::len).sum());
    for group in groups {
        let start = round % group.len().max(1);
        out.extend(group[start..].iter().cloned());
        out.extend(group[..start].iter().cloned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_read_back() {
        assert_eq!(partition_name("emails", 3), "emails#3");
        assert_eq!(split_partition("emails#3"), ("emails", Some(3)));
        assert_eq!(split_partition("emails"), ("emails", None));
        assert_eq!(split_partition("a#b#12"), ("a#b", Some(12)));
        for plain in ["#3", "emails#", "emails#x", "emails#99999999", "emails#-1"] {
            assert_eq!(split_partition(plain), (plain, None), "{plain}");
        }
        assert!(is_partition_of("emails#3", "emails"));
        for (name, queue) in
            [("emails", "emails"), ("emails#3", "emails#3"), ("emailsx#3", "emails")]
        {
            assert!(!is_partition_of(name, queue), "{name} of {queue}");
        }
    }

    #[test]
    fn a_key_goes_to_one_partition_and_keys_spread() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(partition_of_key("a", 1000), (0xaf63_dc4c_8601_ec8c_u64 % 1000) as u16);
        assert_eq!(partition_of_key("user-42", 8), partition_of_key("user-42", 8));
        let mut seen = [0u32; 8];
        for n in 0..8000 {
            seen[usize::from(partition_of_key(&format!("user-{n}"), 8))] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }

    #[test]
    fn round_robin_visits_each_partition_in_turn() {
        let mut partitions = Partitions::default();
        partitions.set("emails", 4, PartitionBy::RoundRobin).unwrap();
        let placed: Vec<String> =
            (0..8).map(|_| partitions.place("emails", TaskId::new(), None).unwrap()).collect();
        assert_eq!(placed[..4], ["emails#0", "emails#1", "emails#2", "emails#3"]);
        assert_eq!(placed[4..], placed[..4]);
        assert_eq!(partitions.place("other", TaskId::new(), None), None);
        let id = TaskId::new();
        let mut by_id = Partitions::default();
        by_id.set("q", 5, PartitionBy::TaskId).unwrap();
        assert_eq!(by_id.place("q", id, None), by_id.place("q", id, None));
    }

    #[test]
    fn declarations_must_agree() {
        let mut partitions = Partitions::default();
        partitions.set("emails", 4, PartitionBy::RoundRobin).unwrap();
        partitions.set("emails", 4, PartitionBy::RoundRobin).unwrap();
        let clash = partitions.set("emails", 8, PartitionBy::RoundRobin).unwrap_err();
        assert!(clash.to_string().contains("declare it one way"), "{clash}");
        assert!(partitions.set("q", 0, PartitionBy::RoundRobin).is_err());
        assert!(partitions.set("q", MAX_PARTITIONS + 1, PartitionBy::RoundRobin).is_err());
    }

    #[test]
    fn each_claim_starts_at_another_partition() {
        let groups =
            vec![vec!["a#0".to_owned(), "a#1".to_owned(), "a#2".to_owned()], vec!["b".to_owned()]];
        assert_eq!(rotated(&groups, 0), ["a#0", "a#1", "a#2", "b"]);
        assert_eq!(rotated(&groups, 1), ["a#1", "a#2", "a#0", "b"]);
        assert_eq!(rotated(&groups, 5), ["a#2", "a#0", "a#1", "b"]);
    }
}
