//! The MessagePack envelope every job travels in.
//!
//! The envelope is a MessagePack map with named fields (see `docs/wire-format.md`), so
//! that older and newer dmq versions, and producers in other languages, decode each
//! other: unknown fields are ignored and missing optional fields take their defaults.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::task::TaskId;

/// The envelope format this version writes.
pub const FORMAT_VERSION: u32 = 1;

/// The default limit on an encoded envelope: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;

/// The queue of a job whose task and call name none: `default`.
pub const DEFAULT_QUEUE: &str = "default";

/// The default priority: 5 on a scale from 0 (lowest) to 9 (highest).
pub const DEFAULT_PRIORITY: u8 = 5;

/// The highest priority.
pub const MAX_PRIORITY: u8 = 9;

/// One job, as it travels through the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Envelope {
    /// The envelope format version ([`FORMAT_VERSION`]).
    #[serde(default = "format_version")]
    pub version: u32,
    /// The job's unique id.
    pub id: TaskId,
    /// The registered task name.
    pub task: String,
    /// The queue the job was sent to.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// The argument tuple, itself MessagePack (an array with one item per argument).
    #[serde(with = "serde_bytes")]
    pub args: Vec<u8>,
    /// The attempt this delivery runs, starting at 1.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// How many retries the call allows, overriding the task's own setting.
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// The delay before each retry, overriding the manager's default; absent from the
    /// encoding when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<crate::retry::Backoff>,
    /// How long one run may take, in milliseconds, overriding the task's own setting.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// When the job becomes due (Unix milliseconds); absent for "now".
    #[serde(default, with = "chrono::serde::ts_milliseconds_option")]
    pub eta: Option<DateTime<Utc>>,
    /// After this instant (Unix milliseconds) the job must not start.
    #[serde(default, with = "chrono::serde::ts_milliseconds_option")]
    pub expires_at: Option<DateTime<Utc>>,
    /// 0 (lowest) to 9 (highest); 5 by default.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// A key that makes a second enqueue of the same job a no-op.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// How long the key holds (see [`KeyHold`](crate::KeyHold)); absent for a ttl.
    /// A job with a mode and no key gets the key its task and arguments derive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_for: Option<crate::KeyHold>,
    /// How long the key lasts at most, in milliseconds, from the enqueue (from the
    /// job's eta when it has one); absent for the manager's `idempotency_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_ttl_ms: Option<u64>,
    /// When the job was first enqueued (Unix milliseconds).
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub created_at: DateTime<Utc>,
    /// String headers: trace context, tenant, ...
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Flow limits: the job waits in the broker until its gate lets it start; absent
    /// from the encoding when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::limits::JobLimits>,
    /// The key whose enqueue quota the job counts against (a tenant), beside its
    /// namespace's; absent from the encoding when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_key: Option<String>,
    /// The group it is claimed fairly in (a tenant): a queue's grouped jobs are
    /// claimed round robin across groups; absent from the encoding when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// An encoding buffer that reports running out of memory as an error instead of
/// aborting, as `rmp_serde::to_vec_named`'s own does.
struct Buffer(Vec<u8>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.try_reserve(buf.len()).map_err(|_| std::io::ErrorKind::OutOfMemory)?;
        self.0.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn format_version() -> u32 {
    FORMAT_VERSION
}

fn default_queue() -> String {
    DEFAULT_QUEUE.to_owned()
}

fn first_attempt() -> u32 {
    1
}

fn default_priority() -> u8 {
    DEFAULT_PRIORITY
}

impl Envelope {
    /// Gives the job an id of the caller's choosing, so that a producer that enqueues
    /// it again (after a timeout, say) cannot make a second job: unless the envelope
    /// has an idempotency key of its own, it gets the key `id:<id>`, and an enqueue of
    /// a job whose key is known returns the first job's id (for the manager's
    /// idempotency TTL, a day by default, and only through `enqueue`, as for any key).
    pub fn choose_id(&mut self, id: TaskId) {
        self.id = id;
        // A unique job's own key (given, or derived from its task and arguments) is
        // what makes it unique.
        if self.unique_for.is_none() {
            self.idempotency_key.get_or_insert_with(|| format!("id:{id}"));
        }
    }

    /// A new envelope for `task` on `queue` with encoded `args`, due now.
    #[must_use]
    pub fn new(task: impl Into<String>, queue: impl Into<String>, args: Vec<u8>) -> Self {
        Envelope {
            version: FORMAT_VERSION,
            id: TaskId::new(),
            task: task.into(),
            queue: queue.into(),
            args,
            attempt: 1,
            max_retries: None,
            backoff: None,
            timeout_ms: None,
            eta: None,
            expires_at: None,
            priority: DEFAULT_PRIORITY,
            idempotency_key: None,
            unique_for: None,
            unique_ttl_ms: None,
            created_at: Utc::now(),
            headers: BTreeMap::new(),
            limits: None,
            quota_key: None,
            group: None,
        }
    }

    /// Encodes the envelope, refusing one over `limit` bytes.
    ///
    /// # Errors
    ///
    /// [`Error::MessageTooLarge`] over the limit (the arguments alone are checked
    /// before anything is encoded), [`Error::Encode`] if encoding fails.
    pub fn encode(&self, limit: usize) -> Result<Vec<u8>> {
        let too_large = |size| Error::MessageTooLarge { task: self.task.clone(), size, limit };
        if self.args.len() > limit {
            return Err(too_large(self.args.len()));
        }
        let failed = |reason: String| Error::Encode { what: "the job envelope", reason };
        // Sized up front: grown from empty, the buffer would be copied five times over.
        let mut buffer = Buffer(Vec::new());
        buffer.0.try_reserve(self.encoded_size_hint()).map_err(|e| failed(e.to_string()))?;
        rmp_serde::encode::write_named(&mut buffer, self).map_err(|e| failed(e.to_string()))?;
        let bytes = buffer.0;
        if bytes.len() > limit {
            return Err(too_large(bytes.len()));
        }
        Ok(bytes)
    }

    /// Room for the encoded envelope: its variable parts, plus the field names and the
    /// fixed-size values, which take under 256 bytes together.
    fn encoded_size_hint(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
        256 + self.task.len()
            + self.queue.len()
            + self.args.len()
            + self.idempotency_key.as_ref().map_or(0, String::len)
            + headers
    }

    /// Decodes an envelope, refusing input over `limit` bytes before reading it.
    ///
    /// Never panics, whatever the bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] saying what was wrong.
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Self> {
        if bytes.len() > limit {
            return Err(Error::Decode(format!(
                "the envelope is {} bytes, over the {limit}-byte limit",
                bytes.len()
            )));
        }
        let envelope: Envelope = rmp_serde::from_slice(bytes)
            .map_err(|e| Error::Decode(without_values(&e.to_string())))?;
        if envelope.priority > MAX_PRIORITY {
            return Err(Error::Decode(format!("priority {} is outside 0..=9", envelope.priority)));
        }
        Ok(envelope)
    }
}

/// A decoding error's message without the input's values: serde quotes a string it
/// did not expect whole (`invalid type: string "<the value>"`), and a job's arguments
/// may be large or secret, so such a string is replaced by its length; an unknown
/// variant or field name over 64 bytes likewise.
pub(crate) fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(256));
    let mut rest = message;
    loop {
        let string = rest.find("string \"").map(|at| (at, "string \"", '"'));
        let name = ["unknown variant `", "unknown field `"]
            .iter()
            .filter_map(|p| rest.find(p).map(|at| (at, *p, '`')))
            .min();
        let Some((at, prefix, close)) = [string, name].into_iter().flatten().min() else {
            break;
        };
        out.push_str(&rest[..at]);
        let value = &rest[at + prefix.len()..];
        // A string is printed with `{:?}`, so a quote inside it is escaped; a name is
        // printed as it is, so it ends at the last "`, expected" (serde's wording).
        let mut end = if close == '`' { value.rfind("`, expected") } else { None };
        let mut escaped = false;
        for (i, c) in value.char_indices() {
            if end.is_some() {
                break;
            }
            if escaped {
                escaped = false;
            } else if c == '\\' && close == '"' {
                escaped = true;
            } else if c == close {
                end = Some(i);
                break;
            }
        }
        let Some(end) = end else {
            out.push_str(if close == '"' { "a string" } else { prefix });
            return out;
        };
        let len = value[..end].len();
        if close == '"' {
            out.push_str(&format!("a string of {len} bytes"));
        } else if len > 64 {
            out.push_str(&format!("{prefix}<{len} bytes>`"));
        } else {
            out.push_str(&rest[at..at + prefix.len() + end + 1]);
        }
        rest = &value[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decoding_errors_leave_the_values_out() {
        let secret = "hunter2 \"quoted\" and more";
        let bytes = rmp_serde::to_vec(&(secret,)).unwrap();
        let err = rmp_serde::from_slice::<(uuid::Uuid,)>(&bytes).unwrap_err().to_string();
        assert!(err.contains("hunter2"), "serde quotes the value: {err}");
        let cleaned = without_values(&err);
        assert_eq!(cleaned, "invalid type: a string of 27 bytes, expected a 16 byte array");
        // Variant and field names stay when short, and are left out when long.
        let short = "unknown variant `Red`, expected `A` or `B`";
        assert_eq!(without_values(short), short);
        let long = format!("unknown field `{}`, expected `a`", "x".repeat(100));
        assert_eq!(without_values(&long), "unknown field `<100 bytes>`, expected `a`");
        // A backtick inside a long name does not end it early.
        let ticked = format!("unknown variant `ab`{}`, expected `A`", "s".repeat(100));
        assert_eq!(without_values(&ticked), "unknown variant `<103 bytes>`, expected `A`");
        assert_eq!(without_values("no strings here"), "no strings here");
        assert_eq!(without_values("string \"cut"), "a string");
    }

    fn sample() -> Envelope {
        let mut e = Envelope::new("add", "math", rmp_serde::to_vec(&(2i64, 3i64)).unwrap());
        e.eta = Some(DateTime::from_timestamp_millis(1_800_000_000_123).unwrap());
        e.expires_at = Some(DateTime::from_timestamp_millis(1_800_000_100_000).unwrap());
        e.created_at = DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        e.priority = 7;
        e.attempt = 2;
        e.max_retries = Some(4);
        e.headers.insert("traceparent".into(), "00-abc-def-01".into());
        e
    }

    #[test]
    fn round_trips() {
        let e = sample();
        let bytes = e.encode(DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        assert_eq!(Envelope::decode(&bytes, DEFAULT_MAX_MESSAGE_SIZE).unwrap(), e);
    }

    #[derive(Serialize)]
    struct Newer<'a> {
        #[serde(flatten)]
        base: &'a Envelope,
        shiny_new_field: Vec<u32>,
    }

    #[test]
    fn an_unknown_field_from_a_newer_version_is_ignored() {
        let e = sample();
        let bytes =
            rmp_serde::to_vec_named(&Newer { base: &e, shiny_new_field: vec![1, 2] }).unwrap();
        let decoded = Envelope::decode(&bytes, DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        assert_eq!(decoded, e);
    }

    #[derive(Serialize)]
    struct Minimal {
        id: TaskId,
        task: &'static str,
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
        created_at: i64,
    }

    #[test]
    fn a_minimal_envelope_from_another_producer_takes_defaults() {
        let m = Minimal {
            id: TaskId::new(),
            task: "add",
            args: rmp_serde::to_vec(&(1, 2)).unwrap(),
            created_at: 1_700_000_000_000,
        };
        let bytes = rmp_serde::to_vec_named(&m).unwrap();
        let e = Envelope::decode(&bytes, DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        assert_eq!((e.queue.as_str(), e.attempt, e.priority), ("default", 1, 5));
        assert_eq!(e.version, FORMAT_VERSION);
    }

    #[test]
    fn an_envelope_written_as_docs_wire_format_says_decodes() {
        // The Python example of docs/wire-format.md: the id as hyphenated text.
        #[derive(Serialize)]
        struct Documented<'a> {
            version: u32,
            id: &'a str,
            task: &'a str,
            queue: &'a str,
            #[serde(with = "serde_bytes")]
            args: Vec<u8>,
            priority: u8,
            created_at: i64,
        }
        let id = TaskId::new();
        let text = id.to_string();
        let documented = Documented {
            version: 1,
            id: &text,
            task: "add",
            queue: "default",
            args: rmp_serde::to_vec(&(2, 3)).unwrap(),
            priority: 5,
            created_at: 1_700_000_000_000,
        };
        let bytes = rmp_serde::to_vec_named(&documented).unwrap();
        let e = Envelope::decode(&bytes, DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        assert_eq!((e.id, e.task.as_str(), e.args), (id, "add", documented.args));
        // dmq itself writes the 16 bytes, which take 20 fewer than the text.
        let mut ours = Envelope::new("add", "default", rmp_serde::to_vec(&(2, 3)).unwrap());
        ours.id = id;
        ours.created_at = e.created_at;
        let ours = ours.encode(DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let as_bytes = format!("a26964c410{}", hex(id.as_uuid().as_bytes()));
        assert!(hex(&ours).contains(&as_bytes), "{}", hex(&ours));
    }

    #[test]
    fn the_size_hint_covers_the_encoding_so_the_buffer_never_grows() {
        let mut e = sample();
        e.idempotency_key = Some("order-42".into());
        let bytes = e.encode(DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        assert!(
            bytes.len() <= e.encoded_size_hint(),
            "{} > {}",
            bytes.len(),
            e.encoded_size_hint()
        );
        // The same bytes as the plain encoder writes.
        assert_eq!(bytes, rmp_serde::to_vec_named(&e).unwrap());
    }

    #[test]
    fn an_envelope_over_the_limit_is_refused() {
        let e = Envelope::new("big", "default", vec![0u8; 2048]);
        let err = e.encode(1024).unwrap_err();
        assert!(matches!(err, Error::MessageTooLarge { size: 2048, limit: 1024, .. }), "{err}");
        let bytes = e.encode(DEFAULT_MAX_MESSAGE_SIZE).unwrap();
        assert!(Envelope::decode(&bytes, 1024).is_err());
    }

    #[test]
    fn an_out_of_range_priority_is_refused() {
        let mut e = sample();
        e.priority = 12;
        let bytes = rmp_serde::to_vec_named(&e).unwrap();
        assert!(Envelope::decode(&bytes, DEFAULT_MAX_MESSAGE_SIZE).is_err());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::decode(&bytes, DEFAULT_MAX_MESSAGE_SIZE);
        }

        #[test]
        fn truncated_envelopes_never_panic_or_decode(cut in 0usize..1000) {
            let bytes = sample().encode(DEFAULT_MAX_MESSAGE_SIZE).unwrap();
            let cut = cut % bytes.len();
            prop_assert!(Envelope::decode(&bytes[..cut], DEFAULT_MAX_MESSAGE_SIZE).is_err());
        }

        #[test]
        fn corrupted_envelopes_never_panic(pos in 0usize..1000, byte in any::<u8>()) {
            let mut bytes = sample().encode(DEFAULT_MAX_MESSAGE_SIZE).unwrap();
            let pos = pos % bytes.len();
            bytes[pos] = byte;
            let _ = Envelope::decode(&bytes, DEFAULT_MAX_MESSAGE_SIZE);
        }
    }
}
