//! Every Redis key and channel name dmq uses is built here, and only here.
//!
//! A queue's keys share the hash tag `{<namespace>:<queue>}`, so each queue lives in
//! one cluster slot and every script touches a single slot. A partition of a
//! partitioned queue (`emails#3`) has the tag `{<namespace>:emails#3,<k>}` instead,
//! with `k` chosen to steer it to a slot of its own window (see [`partition_tag`]), so
//! that the partitions spread evenly over the masters rather than by the luck of their
//! names' hashes.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use dmq_core::{TaskId, split_partition};

/// The default namespace.
pub const DEFAULT_NAMESPACE: &str = "dmq";

/// Key names for one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    namespace: String,
}

impl Keys {
    /// Keys under `namespace`.
    #[must_use]
    pub fn new(namespace: impl Into<String>) -> Self {
        Keys { namespace: namespace.into() }
    }

    /// The namespace.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The keys of one queue.
    #[must_use]
    pub fn queue(&self, queue: &str) -> QueueKeys {
        match split_partition(queue) {
            (logical, Some(partition)) => {
                let tag = partition_tag(&self.namespace, logical, partition);
                QueueKeys { prefix: format!("{{{tag}}}") }
            }
            (_, None) => QueueKeys { prefix: format!("{{{}:{}}}", self.namespace, queue) },
        }
    }

    /// The sorted set of registered workers, each scored by when its heartbeat lapses
    /// (Unix ms). The registry keys share the hash tag `{<namespace>}`.
    #[must_use]
    pub fn workers(&self) -> String {
        format!("{{{}}}:workers", self.namespace)
    }

    /// The hash of worker id to its encoded description.
    #[must_use]
    pub fn workers_info(&self) -> String {
        format!("{{{}}}:workers:info", self.namespace)
    }

    /// The hash of periodic schedule name to `since:last:next` (Unix ms; 0 for none).
    #[must_use]
    pub fn schedules(&self) -> String {
        format!("{{{}}}:schedules", self.namespace)
    }

    /// The capped stream of events every process appends to, one entry per batch of
    /// events (fields `n`, their number, and `events`, the batch in MessagePack). One
    /// key, with the registry's hash tag `{<namespace>}`.
    #[must_use]
    pub fn events(&self) -> String {
        format!("{{{}}}:events", self.namespace)
    }

    /// The set of the namespace's queues: each queue a job was enqueued to or a worker
    /// took jobs from (`dmq queues` lists them without scanning keys).
    #[must_use]
    pub fn queues(&self) -> String {
        format!("{{{}}}:queues", self.namespace)
    }

    /// Set once the queue registry was completed from the queues' own keys (a `SCAN`,
    /// run once per namespace), so that queues made by a dmq older than the registry
    /// are listed too.
    #[must_use]
    pub fn queues_scanned(&self) -> String {
        format!("{{{}}}:queues:scanned", self.namespace)
    }

    /// The hash of enqueue quotas: field `*` the namespace's, `k:<key>` a key's, each
    /// `<count>:<period ms>`.
    #[must_use]
    pub fn quotas(&self) -> String {
        format!("{{{}}}:quotas", self.namespace)
    }

    /// The counter of quota `field` (`*` or `k:<key>`) in its current window, which
    /// expires when the window ends.
    #[must_use]
    pub fn quota_used(&self, field: &str) -> String {
        format!("{{{}}}:quota:{field}", self.namespace)
    }

    /// The lock one reaper at a time holds.
    #[must_use]
    pub fn reaper_lock(&self) -> String {
        format!("{{{}}}:reaper", self.namespace)
    }

    /// Where the result of task `id` is stored.
    #[must_use]
    pub fn result(&self, id: TaskId) -> String {
        // Made for every result stored: without the formatting machinery.
        let mut key = String::with_capacity(self.namespace.len() + 8 + 36);
        key.push_str(&self.namespace);
        key.push_str(":result:");
        key.push_str(id.as_uuid().hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()));
        key
    }

    /// The channel on which stored results are announced: each message is the task ids
    /// of one batch of stored results, separated by commas.
    #[must_use]
    pub fn results_channel(&self) -> String {
        format!("{}:results", self.namespace)
    }

    /// Globs (for `SCAN MATCH`) that together match every key of this namespace and
    /// no key of another, for clean-up in tests and tools.
    #[must_use]
    pub fn patterns(&self) -> Vec<String> {
        let ns = escape_glob(&self.namespace);
        vec![
            format!("{{{ns}:*"),
            format!("{{{ns}}}:*"),
            format!("{ns}:result:*"),
            format!("{ns}:results"),
        ]
    }
}

/// `text` with Redis glob characters escaped, to match it literally.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The keys of one queue, all in one cluster slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    prefix: String,
}

impl QueueKeys {
    /// What every key of a queue ends with after `{<namespace>:<queue>}:`, one entry
    /// per builder below (`ready:` is followed by the priority, `idem:` by the user's
    /// key); tools read queue names back from keys with it.
    pub const SUFFIXES: &'static [&'static str] = &[
        "ready:", "delayed", "inflight", "jobs", "meta", "dead", "done", "signal", "idem:",
        "suspect", "bad", "gates", "gated",
    ];

    /// The ready list of priority `p` (0 to 9).
    #[must_use]
    pub fn ready(&self, priority: u8) -> String {
        format!("{}:ready:{priority}", self.prefix)
    }

    /// The sorted set of delayed jobs, scored by due time in Unix milliseconds.
    #[must_use]
    pub fn delayed(&self) -> String {
        format!("{}:delayed", self.prefix)
    }

    /// The sorted set of in-flight jobs, scored by lease deadline in Unix milliseconds.
    #[must_use]
    pub fn in_flight(&self) -> String {
        format!("{}:inflight", self.prefix)
    }

    /// The hash of job id to encoded envelope.
    #[must_use]
    pub fn payloads(&self) -> String {
        format!("{}:jobs", self.prefix)
    }

    /// The hash of job id to `priority:deliveries[/strikes[i]]:token` (see
    /// docs/redis-layout.md).
    #[must_use]
    pub fn meta(&self) -> String {
        format!("{}:meta", self.prefix)
    }

    /// The capped dead-letter list, newest first.
    #[must_use]
    pub fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    /// The hash of dead-lettered job id to its encoded envelope.
    #[must_use]
    pub fn dead_payloads(&self) -> String {
        format!("{}:dead:jobs", self.prefix)
    }

    /// How many dead letters the cap dropped.
    #[must_use]
    pub fn dead_dropped(&self) -> String {
        format!("{}:dead:dropped", self.prefix)
    }

    /// Where idempotency key `key` records the job it belongs to, with its ttl.
    #[must_use]
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.prefix)
    }

    /// The sorted set of completed exactly-once jobs, scored by the Unix millisecond
    /// their completion is forgotten.
    #[must_use]
    pub fn completed(&self) -> String {
        format!("{}:done", self.prefix)
    }

    /// The list of suspect jobs, oldest first: taken back after their worker was lost
    /// while running them, each waits to be claimed alone.
    #[must_use]
    pub fn suspect(&self) -> String {
        format!("{}:suspect", self.prefix)
    }

    /// How many bad entries (an id that is not a task id, or has no envelope) claims
    /// found in the queue's lists and dropped.
    #[must_use]
    pub fn bad_entries(&self) -> String {
        format!("{}:bad", self.prefix)
    }

    /// The hash of the queue's gates (flow limits): `c:<gate>` its limits
    /// (`<interval µs>:<burst>:<concurrency>`, 0 for none), `t:<gate>` its rate state
    /// (the GCRA's theoretical arrival time, µs), `j:<id>` the gate of job `id`, and
    /// `~seq`, the order of the jobs held at gates.
    #[must_use]
    pub fn gates(&self) -> String {
        format!("{}:gates", self.prefix)
    }

    /// The sorted set (all scores 0, read by lexical ranges) of the jobs held at gates,
    /// `w<gate>\0<priority, 9 - p><seq>\0<id>`, and of those each gate let run,
    /// `r<gate>\0<id>`.
    #[must_use]
    pub fn gated(&self) -> String {
        format!("{}:gated", self.prefix)
    }

    /// The sorted set of gates with jobs waiting, scored by when (Unix ms) each may let
    /// one through; `inf` while its concurrency is full.
    #[must_use]
    pub fn gates_due(&self) -> String {
        format!("{}:gates:due", self.prefix)
    }

    /// The list idle claimers block on: holds at most one wake-up, pushed when jobs
    /// arrive in an empty ready list, or a delayed job or retry is added.
    #[must_use]
    pub fn signal(&self) -> String {
        format!("{}:signal", self.prefix)
    }
}

/// How many slots each partition's window holds: the spacing of 1,024 evenly spread
/// points (`MAX_PARTITIONS`), so that no two windows of one queue overlap.
const PARTITION_WINDOW: u16 = 16;

/// The slots partition `partition` of queue `queue` (the logical queue, `emails`) in
/// `namespace` is steered into, `start..start + 16`: the partition's number with its
/// 10 bits reversed (0, 512, 256, 768, 128, ...: the van der Corput sequence), plus
/// the queue's own offset (the slot of `<namespace>:<queue>` divided by 16), modulo
/// 1024, times 16. The first N numbers of that sequence are spread over the slots as
/// evenly as N points can be when N is a power of two, and nearly so otherwise; the
/// offset keeps the partitions of different queues from lining up on the same
/// masters; and a partition keeps its window whatever the number of partitions, so a
/// queue that grows from 8 partitions to 16 keeps its first eight where they are.
#[must_use]
pub fn partition_slots(namespace: &str, queue: &str, partition: u16) -> std::ops::Range<u16> {
    let offset = crc16(format!("{namespace}:{queue}").as_bytes()) / PARTITION_WINDOW;
    let point = (partition % 1024).reverse_bits() >> 6;
    let start = (point + offset) % 1024 * PARTITION_WINDOW;
    start..start + PARTITION_WINDOW
}

/// The hash tag (without its braces) of partition `partition` of queue `queue` (the
/// logical queue: `emails` for `emails#3`) in `namespace`:
/// `<namespace>:<queue>#<partition>,<k>` for the smallest `k` from 0 whose slot falls
/// in [`partition_slots`]. A comma cannot be part of a queue name, so no queue's own
/// tag can be mistaken for it. Computed once per process and partition: the search
/// takes 1,024 tries on average.
#[must_use]
pub fn partition_tag(namespace: &str, queue: &str, partition: u16) -> Arc<str> {
    // Namespace, queue, partition: looked up without allocating once known.
    type Cache = RwLock<HashMap<String, HashMap<String, HashMap<u16, Arc<str>>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Cache::default);
    let known = cache.read().unwrap_or_else(|p| p.into_inner());
    let found = known.get(namespace).and_then(|queues| queues.get(queue)?.get(&partition));
    if let Some(tag) = found {
        return Arc::clone(tag);
    }
    drop(known);
    let window = partition_slots(namespace, queue, partition);
    let mut tag = String::with_capacity(namespace.len() + queue.len() + 16);
    let tag: Arc<str> = (0_u32..)
        .find_map(|k| {
            tag.clear();
            tag.push_str(namespace);
            tag.push(':');
            tag.push_str(queue);
            tag.push('#');
            tag.push_str(&partition.to_string());
            tag.push(',');
            tag.push_str(&k.to_string());
            window.contains(&crc16(tag.as_bytes())).then(|| Arc::from(tag.as_str()))
        })
        .unwrap_or_else(|| Arc::from(format!("{namespace}:{queue}#{partition}")));
    let mut cache = cache.write().unwrap_or_else(|p| p.into_inner());
    let queues = cache.entry(namespace.to_owned()).or_default();
    Arc::clone(queues.entry(queue.to_owned()).or_default().entry(partition).or_insert(tag))
}

/// CRC16 (XMODEM) of `bytes`, modulo 16384: the slot of a hash tag.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc & 0x3fff
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the text between
/// the first `{` and the next `}`, when not empty) or else of the whole key, modulo
/// 16384, as the Redis Cluster specification defines it. Keys of one slot may meet in
/// one script, transaction or multi-key command on a cluster.
#[must_use]
pub fn cluster_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &key[open + 1..open + 1 + close])
    });
    crc16(tagged.unwrap_or(key))
}

/// A task id's text as dmq writes it in Redis (lowercase, hyphenated), made on the
/// stack: ids are written for every job, several times.
pub(crate) fn id_text(id: TaskId) -> IdText {
    let mut text = [0; 36];
    id.as_uuid().hyphenated().encode_lower(&mut text);
    IdText(text)
}

/// See [`id_text`].
#[derive(Clone, Copy)]
pub(crate) struct IdText([u8; 36]);

impl redis::ToRedisArgs for IdText {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        out.write_arg(&self.0);
    }
}

impl redis::ToSingleRedisArg for IdText {}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many of `n` partitions of queue `queue` land on each of `masters` masters
    /// with equal ranges of slots, as `redis-cli --cluster create` makes them.
    fn per_master(queue: &str, n: u16, masters: usize) -> Vec<usize> {
        let keys = Keys::new("dmq");
        let mut counts = vec![0; masters];
        for p in 0..n {
            let key = keys.queue(&dmq_core::partition_name(queue, p)).signal();
            counts[usize::from(cluster_slot(key.as_bytes())) * masters / 16_384] += 1;
        }
        counts
    }

    /// The most partitions one master has above another.
    fn gap(counts: &[usize]) -> usize {
        counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0)
    }

    #[test]
    fn partitions_spread_evenly_over_masters_with_equal_slot_ranges() {
        for queue in ["emails", "reports", "q", "a-much-longer-queue-name"] {
            for n in [4_u16, 8, 16, 32, 64, 128] {
                for masters in 2..=6 {
                    let counts = per_master(queue, n, masters);
                    assert!(gap(&counts) <= 1, "{queue}: {n} over {masters} masters: {counts:?}");
                }
            }
            // Any other number up to 96: no master has more than four partitions above
            // another, where names hashed blindly spread worse than 27-40% over three
            // masters half the time even with 48.
            for n in 1..=96 {
                for masters in 2..=6 {
                    let counts = per_master(queue, n, masters);
                    assert!(gap(&counts) <= 4, "{queue}: {n} over {masters} masters: {counts:?}");
                }
            }
        }
    }

    #[test]
    fn the_partitions_of_different_queues_do_not_line_up() {
        // Partition 0 of twelve queues of two partitions each: steered by each queue's
        // own offset, they land on every master (without it, on one).
        let mut counts = vec![0; 3];
        for q in 0..12 {
            for (i, c) in per_master(&format!("queue-{q}"), 2, 3).into_iter().enumerate() {
                counts[i] += c;
            }
        }
        assert!(counts.iter().all(|&c| c >= 4), "{counts:?}");
    }

    #[test]
    fn a_partition_keeps_its_slot_whatever_the_number_of_partitions() {
        let keys = Keys::new("app");
        let tag = partition_tag("app", "emails", 5);
        assert!(tag.starts_with("app:emails#5,"), "{tag}");
        assert!(partition_slots("app", "emails", 5).contains(&cluster_slot(tag.as_bytes())));
        assert_eq!(keys.queue("emails#5").ready(0), format!("{{{tag}}}:ready:0"));
        // Every key of a partition shares its tag; other queues keep theirs.
        assert_eq!(keys.queue("emails").ready(0), "{app:emails}:ready:0");
        // Partition p sits (p's bits reversed) * 16 slots after partition 0, around.
        let start = |p| partition_slots("app", "emails", p).start;
        let after = |p| (start(p) + 16_384 - start(0)) % 16_384;
        assert_eq!([1, 2, 3, 4, 1023].map(after), [8192, 4096, 12288, 2048, 16_368]);
        let own = cluster_slot(b"{app:emails}");
        assert_eq!(start(0), own / 16 * 16, "partition 0 starts near the queue's own slot");
    }

    #[test]
    fn ids_are_written_as_their_lowercase_hyphenated_text() {
        let id: TaskId = "0A1B2C3D-4E5F-4a6b-8c7d-9e0f1a2b3c4d".parse().unwrap();
        let text = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
        assert_eq!(redis::ToRedisArgs::to_redis_args(&id_text(id)), vec![text.as_bytes().to_vec()]);
        assert_eq!(Keys::new("app").result(id), format!("app:result:{text}"));
    }

    #[test]
    fn slots_match_the_cluster_specification_s_examples() {
        // CRC16 of "123456789" is 0x31C3, below 16384.
        assert_eq!(cluster_slot(b"123456789"), 0x31C3);
        assert_eq!(cluster_slot(b"{user1000}.following"), cluster_slot(b"{user1000}.followers"));
        assert_ne!(
            cluster_slot(b"foo{}{bar}"),
            cluster_slot(b"bar"),
            "an empty tag hashes the whole key"
        );
        assert_eq!(
            cluster_slot(b"foo{}{bar}"),
            cluster_slot(b"foo{}{bar}x".split_last().unwrap().1)
        );
        assert_eq!(cluster_slot(b"foo{{bar}}zap"), cluster_slot(b"{bar"));
        // Known slots, as `CLUSTER KEYSLOT` answers them.
        assert_eq!(cluster_slot(b"foo"), 12182);
        assert_eq!(cluster_slot(b"bar"), 5061);
    }

    #[test]
    fn clean_up_patterns_match_only_their_own_namespace() {
        assert_eq!(Keys::new("q").patterns(), ["{q:*", "{q}:*", "q:result:*", "q:results"]);
        // "{dmq:emails}:jobs" must not match namespace "q" (or "mq").
        for pattern in Keys::new("mq").patterns() {
            assert!(!pattern.starts_with('*'), "{pattern}");
        }
        assert_eq!(Keys::new("a*b").patterns()[0], "{a\\*b:*");
    }

    #[test]
    fn the_event_stream_is_found_by_the_clean_up_patterns() {
        let keys = Keys::new("app");
        assert_eq!(keys.events(), "{app}:events");
        assert!(keys.patterns().iter().any(|p| p == "{app}:*"), "delete_namespace removes it");
    }

    #[test]
    fn a_queue_keys_share_one_hash_tag() {
        let q = Keys::new("app").queue("emails");
        for key in [
            q.ready(9),
            q.delayed(),
            q.in_flight(),
            q.payloads(),
            q.meta(),
            q.dead(),
            q.signal(),
            q.suspect(),
            q.bad_entries(),
        ] {
            assert!(key.starts_with("{app:emails}:"), "{key}");
        }
    }
}
