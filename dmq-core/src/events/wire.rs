//! The event stream's wire format: one batch of events as a MessagePack array of maps
//! with named fields (see `docs/wire-format.md`), written by workers and producers and
//! readable by any process, in any language.
//!
//! Times are integer Unix milliseconds, run times integer microseconds, retry delays
//! integer milliseconds, and the kind of an event is its [`EventType`] name. Decoding
//! never panics, ignores fields it does not know, and skips (and counts) an event it
//! cannot represent, such as one of a kind a newer dmq added, instead of failing the
//! batch.

use std::borrow::Borrow;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use super::{Event, EventKind, EventType, HeldBy};
use crate::error::{Error, Result};
use crate::task::{FailureKind, TaskId};

/// What [`Event::decode_batch`] read from one batch.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct DecodedEvents {
    /// The events it could read, in the order they were written.
    pub events: Vec<Event>,
    /// How many events it skipped: of a kind this version of dmq does not know, or
    /// missing a fact it cannot do without (the id, the kind or the time).
    pub skipped: usize,
}

impl Event {
    /// Encodes a batch of events as the event stream stores it: a MessagePack array
    /// with one map of named fields per event.
    ///
    /// ```
    /// use dmq_core::{Event, EventKind, TaskId};
    ///
    /// let event = Event::new(EventKind::Started, TaskId::new(), "add", "math", 1);
    /// let bytes = Event::encode_batch(&[event.clone()])?;
    /// let decoded = Event::decode_batch(&bytes)?;
    /// assert_eq!(decoded.events.len(), 1);
    /// assert_eq!(decoded.events[0].id, event.id);
    /// # Ok::<(), dmq_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if encoding fails (it does not for any event dmq makes).
    pub fn encode_batch<E: Borrow<Event>>(events: &[E]) -> Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(16 + events.len() * 160);
        rmp_serde::encode::write_named(&mut bytes, &Batch(events))
            .map_err(|e| Error::Encode { what: "a batch of events", reason: e.to_string() })?;
        Ok(bytes)
    }

    /// Decodes a batch that [`encode_batch`](Event::encode_batch), or a producer in
    /// another language, wrote. Fields it does not know are ignored; an event it
    /// cannot represent is skipped and counted in [`DecodedEvents::skipped`].
    ///
    /// Never panics, whatever the bytes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when the bytes are not a MessagePack array.
    pub fn decode_batch(bytes: &[u8]) -> Result<DecodedEvents> {
        let raw: RawBatch = rmp_serde::from_slice(bytes).map_err(|e| {
            Error::InvalidArgument(format!(
                "the bytes are not a batch of events: {}",
                crate::envelope::without_values(&e.to_string())
            ))
        })?;
        let mut decoded = DecodedEvents { events: Vec::with_capacity(raw.0.len()), skipped: 0 };
        for event in raw.0 {
            match event.into_event() {
                Some(event) => decoded.events.push(event),
                None => decoded.skipped += 1,
            }
        }
        Ok(decoded)
    }
}

/// A batch, encoded as an array of events.
struct Batch<'a, E>(&'a [E]);

impl<E: Borrow<Event>> Serialize for Batch<'_, E> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for event in self.0 {
            seq.serialize_element(&Wire(event.borrow()))?;
        }
        seq.end()
    }
}

/// One event, encoded as a map of named fields.
struct Wire<'a>(&'a Event);

impl Serialize for Wire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let event = self.0;
        let facts = match &event.kind {
            EventKind::Queued { eta } => usize::from(eta.is_some()),
            EventKind::Started | EventKind::NotFound => 0,
            EventKind::Completed { .. }
            | EventKind::DeadLettered { .. }
            | EventKind::Expired { .. } => 1,
            EventKind::Failed { run_time, .. } => 2 + usize::from(run_time.is_some()),
            EventKind::Held { .. } => 2,
            EventKind::Retry { .. } => 3,
        };
        let len = 6 + usize::from(event.worker.is_some()) + facts;
        let mut map = serializer.serialize_map(Some(len))?;
        map.serialize_entry("kind", event.event_type().as_str())?;
        map.serialize_entry("id", &IdText(event.id))?;
        map.serialize_entry("task", &event.task)?;
        map.serialize_entry("queue", &event.queue)?;
        map.serialize_entry("attempt", &event.attempt)?;
        map.serialize_entry("at", &event.at.timestamp_millis())?;
        if let Some(worker) = &event.worker {
            map.serialize_entry("worker", worker)?;
        }
        match &event.kind {
            EventKind::Queued { eta } => {
                if let Some(eta) = eta {
                    map.serialize_entry("eta", &eta.timestamp_millis())?;
                }
            }
            EventKind::Started | EventKind::NotFound => {}
            EventKind::Completed { run_time } => {
                map.serialize_entry("run_time_us", &micros(*run_time))?;
            }
            EventKind::Failed { failure, error, run_time } => {
                map.serialize_entry("failure", failure.as_str())?;
                map.serialize_entry("error", error)?;
                if let Some(run_time) = run_time {
                    map.serialize_entry("run_time_us", &micros(*run_time))?;
                }
            }
            EventKind::Retry { delay, error, run_time } => {
                map.serialize_entry("delay_ms", &millis(*delay))?;
                map.serialize_entry("error", error)?;
                map.serialize_entry("run_time_us", &micros(*run_time))?;
            }
            EventKind::DeadLettered { reason } => map.serialize_entry("reason", reason)?,
            EventKind::Expired { expired_at } => {
                map.serialize_entry("expired_at", &expired_at.timestamp_millis())?;
            }
            EventKind::Held { gate, limit } => {
                map.serialize_entry("gate", gate)?;
                map.serialize_entry("limit", limit.as_str())?;
            }
        }
        map.end()
    }
}

/// A task id as its hyphenated text, written without allocating.
struct IdText(TaskId);

impl Serialize for IdText {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut buffer = [0u8; uuid::fmt::Hyphenated::LENGTH];
        serializer.serialize_str(self.0.as_uuid().hyphenated().encode_lower(&mut buffer))
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A batch as read: one entry per array item, each an event or not.
struct RawBatch(Vec<RawEvent>);

impl<'de> Deserialize<'de> for RawBatch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct BatchVisitor;

        impl<'de> Visitor<'de> for BatchVisitor {
            type Value = RawBatch;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of events")
            }

            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<RawBatch, A::Error> {
                // The length is the input's claim: trust it only as far as a small
                // allocation goes (each event takes several bytes anyway).
                let mut events = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
                while let Some(event) = seq.next_element::<RawEvent>()? {
                    events.push(event);
                }
                Ok(RawBatch(events))
            }
        }

        deserializer.deserialize_seq(BatchVisitor)
    }
}

/// The fields of one event, as read, before they are checked.
#[derive(Default)]
struct RawEvent {
    /// Whether the item was a map at all.
    map: bool,
    kind: Option<Scalar>,
    id: Option<Scalar>,
    task: Option<Scalar>,
    queue: Option<Scalar>,
    attempt: Option<Scalar>,
    at: Option<Scalar>,
    worker: Option<Scalar>,
    eta: Option<Scalar>,
    run_time_us: Option<Scalar>,
    failure: Option<Scalar>,
    error: Option<Scalar>,
    delay_ms: Option<Scalar>,
    reason: Option<Scalar>,
    expired_at: Option<Scalar>,
    gate: Option<Scalar>,
    limit: Option<Scalar>,
}

impl<'de> Deserialize<'de> for RawEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct EventVisitor;

        impl<'de> Visitor<'de> for EventVisitor {
            type Value = RawEvent;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event")
            }

            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RawEvent, A::Error> {
                let mut raw = RawEvent { map: true, ..RawEvent::default() };
                while let Some(field) = map.next_key::<Field>()? {
                    let slot = match field {
                        Field::Kind => &mut raw.kind,
                        Field::Id => &mut raw.id,
                        Field::Task => &mut raw.task,
                        Field::Queue => &mut raw.queue,
                        Field::Attempt => &mut raw.attempt,
                        Field::At => &mut raw.at,
                        Field::Worker => &mut raw.worker,
                        Field::Eta => &mut raw.eta,
                        Field::RunTimeUs => &mut raw.run_time_us,
                        Field::Failure => &mut raw.failure,
                        Field::Error => &mut raw.error,
                        Field::DelayMs => &mut raw.delay_ms,
                        Field::Reason => &mut raw.reason,
                        Field::ExpiredAt => &mut raw.expired_at,
                        Field::Gate => &mut raw.gate,
                        Field::Limit => &mut raw.limit,
                        Field::Unknown => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value::<Scalar>()?);
                }
                Ok(raw)
            }

            // Anything but a map is read past, and skipped as an event.
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                seq: A,
            ) -> std::result::Result<RawEvent, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| RawEvent::default())
            }

            fn visit_enum<A: de::EnumAccess<'de>>(
                self,
                data: A,
            ) -> std::result::Result<RawEvent, A::Error> {
                IgnoredAny.visit_enum(data).map(|_| RawEvent::default())
            }

            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> std::result::Result<RawEvent, D::Error> {
                IgnoredAny::deserialize(deserializer).map(|_| RawEvent::default())
            }

            fn visit_some<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> std::result::Result<RawEvent, D::Error> {
                IgnoredAny::deserialize(deserializer).map(|_| RawEvent::default())
            }

            fn visit_none<E: de::Error>(self) -> std::result::Result<RawEvent, E> {
                Ok(RawEvent::default())
            }

            fn visit_unit<E: de::Error>(self) -> std::result::Result<RawEvent, E> {
                Ok(RawEvent::default())
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<RawEvent, E> {
                Ok(RawEvent::default())
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> std::result::Result<RawEvent, E> {
                Ok(RawEvent::default())
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> std::result::Result<RawEvent, E> {
                Ok(RawEvent::default())
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> std::result::Result<RawEvent, E> {
                Ok(RawEvent::default())
            }

            fn visit_str<E: de::Error>(self, _: &str) -> std::result::Result<RawEvent, E> {
                Ok(RawEvent::default())
            }

            fn visit_bytes<E: de::Error>(self, _: &[u8]) -> std::result::Result<RawEvent, E> {
                Ok(RawEvent::default())
            }
        }

        deserializer.deserialize_any(EventVisitor)
    }
}

/// The field names an event may have; any other is [`Field::Unknown`].
enum Field {
    Kind,
    Id,
    Task,
    Queue,
    Attempt,
    At,
    Worker,
    Eta,
    RunTimeUs,
    Failure,
    Error,
    DelayMs,
    Reason,
    ExpiredAt,
    Gate,
    Limit,
    Unknown,
}

impl Field {
    fn named(name: &[u8]) -> Field {
        match name {
            b"kind" => Field::Kind,
            b"id" => Field::Id,
            b"task" => Field::Task,
            b"queue" => Field::Queue,
            b"attempt" => Field::Attempt,
            b"at" => Field::At,
            b"worker" => Field::Worker,
            b"eta" => Field::Eta,
            b"run_time_us" => Field::RunTimeUs,
            b"failure" => Field::Failure,
            b"error" => Field::Error,
            b"delay_ms" => Field::DelayMs,
            b"reason" => Field::Reason,
            b"expired_at" => Field::ExpiredAt,
            b"gate" => Field::Gate,
            b"limit" => Field::Limit,
            _ => Field::Unknown,
        }
    }
}

impl<'de> Deserialize<'de> for Field {
    /// Any key is read as a [`Scalar`]: a text names a field (or [`Field::Unknown`]),
    /// and a key of any other type, which a foreign writer might use, is no field of
    /// ours.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Ok(match Scalar::deserialize(deserializer)? {
            Scalar::Text(name) => Field::named(name.as_bytes()),
            _ => Field::Unknown,
        })
    }
}

/// A field's value, as far as decoding an event needs to know it: text, a number, or
/// something else (read past, and treated as absent).
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    Text(String),
    Int(i128),
    Float(f64),
    Other,
}

impl Scalar {
    fn text(self) -> Option<String> {
        match self {
            Scalar::Text(text) => Some(text),
            _ => None,
        }
    }

    /// An integer (a float with no fraction counts), within `T`'s range.
    fn int<T: TryFrom<i128>>(&self) -> Option<T> {
        let n = match *self {
            Scalar::Int(n) => n,
            #[allow(clippy::cast_possible_truncation)]
            Scalar::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e18 => f as i128,
            _ => return None,
        };
        T::try_from(n).ok()
    }

    fn time(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(self.int::<i64>()?)
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct ScalarVisitor;

        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Scalar, E> {
                Ok(Scalar::Text(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Scalar, E> {
                Ok(Scalar::Text(v))
            }

            // Some encoders write text as binary.
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> std::result::Result<Scalar, E> {
                Ok(std::str::from_utf8(v).map_or(Scalar::Other, |s| Scalar::Text(s.to_owned())))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Scalar, E> {
                Ok(Scalar::Int(i128::from(v)))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Scalar, E> {
                Ok(Scalar::Int(i128::from(v)))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> std::result::Result<Scalar, E> {
                Ok(Scalar::Other)
            }

            fn visit_none<E: de::Error>(self) -> std::result::Result<Scalar, E> {
                Ok(Scalar::Other)
            }

            fn visit_unit<E: de::Error>(self) -> std::result::Result<Scalar, E> {
                Ok(Scalar::Other)
            }

            fn visit_some<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> std::result::Result<Scalar, D::Error> {
                Scalar::deserialize(deserializer)
            }

            fn visit_newtype_struct<D: Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> std::result::Result<Scalar, D::Error> {
                IgnoredAny::deserialize(deserializer).map(|_| Scalar::Other)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Scalar, A::Error> {
                IgnoredAny.visit_seq(seq).map(|_| Scalar::Other)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Scalar, A::Error> {
                IgnoredAny.visit_map(map).map(|_| Scalar::Other)
            }

            fn visit_enum<A: de::EnumAccess<'de>>(
                self,
                data: A,
            ) -> std::result::Result<Scalar, A::Error> {
                IgnoredAny.visit_enum(data).map(|_| Scalar::Other)
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}

impl RawEvent {
    /// The event these fields describe; `None` when they do not make one this version
    /// can represent.
    fn into_event(self) -> Option<Event> {
        if !self.map {
            return None;
        }
        let kind_name = self.kind?.text()?;
        let kind = EventType::ALL.into_iter().find(|kind| kind.as_str() == kind_name)?;
        let id = uuid::Uuid::parse_str(&self.id?.text()?).ok().map(TaskId::from)?;
        let at = self.at?.time()?;
        let text = |field: Option<Scalar>| field.and_then(Scalar::text).unwrap_or_default();
        let kind = match kind {
            EventType::Queued => EventKind::Queued { eta: self.eta.and_then(|t| t.time()) },
            EventType::Started => EventKind::Started,
            EventType::Completed => {
                EventKind::Completed { run_time: duration_us(self.run_time_us).unwrap_or_default() }
            }
            EventType::Failed => EventKind::Failed {
                // A kind of failure a newer version added cannot be shown as one of ours.
                failure: failure_kind(&self.failure?.text()?)?,
                error: text(self.error),
                run_time: duration_us(self.run_time_us),
            },
            EventType::Retry => EventKind::Retry {
                delay: self
                    .delay_ms
                    .and_then(|d| d.int::<u64>())
                    .map(Duration::from_millis)
                    .unwrap_or_default(),
                error: text(self.error),
                run_time: duration_us(self.run_time_us).unwrap_or_default(),
            },
            EventType::DeadLettered => EventKind::DeadLettered { reason: text(self.reason) },
            EventType::NotFound => EventKind::NotFound,
            EventType::Expired => EventKind::Expired {
                expired_at: self.expired_at.and_then(|t| t.time()).unwrap_or(at),
            },
            EventType::Held => EventKind::Held {
                gate: text(self.gate),
                // A limit a newer version added cannot be shown as one of ours.
                limit: match self.limit?.text()?.as_str() {
                    "rate" => HeldBy::Rate,
                    "concurrency" => HeldBy::Concurrency,
                    _ => return None,
                },
            },
        };
        Some(Event {
            kind,
            id,
            task: text(self.task),
            queue: text(self.queue),
            attempt: self.attempt.and_then(|a| a.int::<u32>()).unwrap_or(1),
            worker: self.worker.and_then(Scalar::text),
            at,
        })
    }
}

fn duration_us(field: Option<Scalar>) -> Option<Duration> {
    field.and_then(|d| d.int::<u64>()).map(Duration::from_micros)
}

/// The failure kind named `name` (`error`, `fatal`, `panic`, ...).
fn failure_kind(name: &str) -> Option<FailureKind> {
    FailureKind::deserialize(de::value::StrDeserializer::<de::value::Error>::new(name)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    /// One event of every kind, with and without each optional fact; times to the
    /// millisecond and run times to the microsecond, as the format keeps them.
    fn every_kind() -> Vec<Event> {
        let kinds = vec![
            EventKind::Queued { eta: None },
            EventKind::Queued { eta: Some(at(1_800_000_000_123)) },
            EventKind::Started,
            EventKind::Completed { run_time: Duration::from_micros(1_234_567) },
            EventKind::Failed {
                failure: FailureKind::Fatal,
                error: "no such user".into(),
                run_time: Some(Duration::from_micros(42)),
            },
            EventKind::Failed {
                failure: FailureKind::UnknownTask,
                error: "no task \"x\"".into(),
                run_time: None,
            },
            EventKind::Retry {
                delay: Duration::from_millis(2500),
                error: "timeout".into(),
                run_time: Duration::from_micros(1500),
            },
            EventKind::DeadLettered { reason: "fatal: no such user".into() },
            EventKind::NotFound,
            EventKind::Expired { expired_at: at(1_700_000_000_999) },
            EventKind::Held { gate: "emails.send[acme]".into(), limit: HeldBy::Concurrency },
            EventKind::Held { gate: "emails.send".into(), limit: HeldBy::Rate },
        ];
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| {
                let event = Event::new(kind, TaskId::new(), "emails.send", "emails", 3)
                    .with_time(at(1_700_000_000_000 + i as i64));
                if i % 2 == 0 { event.with_worker("host-42-abcd") } else { event }
            })
            .collect()
    }

    #[test]
    fn every_kind_round_trips() {
        let events = every_kind();
        for kind in EventType::ALL {
            assert!(events.iter().any(|e| e.event_type() == kind), "{kind} is covered");
        }
        let bytes = Event::encode_batch(&events).unwrap();
        let decoded = Event::decode_batch(&bytes).unwrap();
        assert_eq!(decoded.skipped, 0);
        assert_eq!(decoded.events, events);
        // Arcs, as the event bus hands them over, encode the same.
        let shared: Vec<Arc<Event>> = events.iter().cloned().map(Arc::new).collect();
        assert_eq!(Event::encode_batch(&shared).unwrap(), bytes);
    }

    #[test]
    fn an_empty_batch_round_trips() {
        let bytes = Event::encode_batch::<Event>(&[]).unwrap();
        assert_eq!(Event::decode_batch(&bytes).unwrap(), DecodedEvents::default());
    }

    #[test]
    fn the_fields_are_named_as_documented() {
        let event = Event::new(
            EventKind::Completed { run_time: Duration::from_micros(1500) },
            TaskId::new(),
            "add",
            "math",
            1,
        )
        .with_time(at(1_700_000_000_000));
        let bytes = Event::encode_batch(std::slice::from_ref(&event)).unwrap();
        // Read back as plain maps, as a consumer in another language would.
        let keys: Vec<std::collections::BTreeMap<String, IgnoredAny>> =
            rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            keys[0].keys().map(String::as_str).collect::<Vec<_>>(),
            ["at", "attempt", "id", "kind", "queue", "run_time_us", "task"]
        );
        #[derive(Deserialize)]
        struct Plain {
            kind: String,
            id: String,
            at: i64,
            run_time_us: u64,
        }
        let plain: Vec<Plain> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(plain[0].kind, "completed");
        assert_eq!(plain[0].id, event.id.to_string());
        assert_eq!((plain[0].at, plain[0].run_time_us), (1_700_000_000_000, 1500));
    }

    /// Every kind writes the fields `docs/wire-format.md` lists for it, by those names.
    #[test]
    fn each_kind_writes_the_fields_documented_for_it() {
        let (ms, error) = (Duration::from_millis(3), "boom".to_owned());
        let cases = [
            (EventKind::Queued { eta: Some(at(1_700_000_000_000)) }, "queued", &["eta"][..]),
            (EventKind::Queued { eta: None }, "queued", &[][..]),
            (EventKind::Started, "started", &[][..]),
            (EventKind::Completed { run_time: ms }, "completed", &["run_time_us"][..]),
            (
                EventKind::Failed {
                    failure: FailureKind::Timeout,
                    error: error.clone(),
                    run_time: Some(ms),
                },
                "failed",
                &["error", "failure", "run_time_us"][..],
            ),
            (
                EventKind::Failed {
                    failure: FailureKind::UnknownTask,
                    error: error.clone(),
                    run_time: None,
                },
                "failed",
                &["error", "failure"][..],
            ),
            (
                EventKind::Retry { delay: ms, error: error.clone(), run_time: ms },
                "retry",
                &["delay_ms", "error", "run_time_us"][..],
            ),
            (EventKind::DeadLettered { reason: error.clone() }, "dead_lettered", &["reason"][..]),
            (EventKind::NotFound, "not_found", &[][..]),
            (
                EventKind::Expired { expired_at: at(1_700_000_000_000) },
                "expired",
                &["expired_at"][..],
            ),
        ];
        let common = ["at", "attempt", "id", "kind", "queue", "task", "worker"];
        for (kind, name, own) in cases {
            let event = Event::new(kind, TaskId::new(), "add", "math", 1).with_worker("w-1");
            let bytes = Event::encode_batch(std::slice::from_ref(&event)).unwrap();
            let maps: Vec<std::collections::BTreeMap<String, IgnoredAny>> =
                rmp_serde::from_slice(&bytes).unwrap();
            let mut want: Vec<&str> = common.iter().chain(own).copied().collect();
            want.sort_unstable();
            assert_eq!(maps[0].keys().map(String::as_str).collect::<Vec<_>>(), want, "{name}");
            #[derive(Deserialize)]
            struct Kind {
                kind: String,
            }
            let kinds: Vec<Kind> = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(kinds[0].kind, name);
        }
    }

    #[derive(Serialize)]
    struct Foreign {
        kind: &'static str,
        id: String,
        at: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        failure: Option<&'static str>,
        shiny_new_field: Vec<u32>,
    }

    fn foreign(kind: &'static str, failure: Option<&'static str>) -> Foreign {
        Foreign {
            kind,
            id: TaskId::new().to_string(),
            at: 1_700_000_000_000,
            failure,
            shiny_new_field: vec![1, 2],
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_facts_take_defaults() {
        let bytes = rmp_serde::to_vec_named(&[foreign("completed", None)]).unwrap();
        let decoded = Event::decode_batch(&bytes).unwrap();
        assert_eq!(decoded.skipped, 0);
        let event = &decoded.events[0];
        assert_eq!(event.kind, EventKind::Completed { run_time: Duration::ZERO });
        assert_eq!((event.task.as_str(), event.queue.as_str(), event.attempt), ("", "", 1));
        assert_eq!(event.worker, None);
    }

    /// A key or value of any type, for maps a foreign writer might produce.
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Any {
        Text(&'static str),
        Int(i64),
        List(Vec<u8>),
        Nil(Option<u8>),
    }

    /// A map written as these pairs, whatever their types.
    struct Pairs(Vec<(Any, Any)>);

    impl Serialize for Pairs {
        fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
        }
    }

    #[test]
    fn keys_that_are_no_text_are_passed_over() {
        let id = TaskId::new().to_string();
        let id: &'static str = Box::leak(id.into_boxed_str());
        let event = Pairs(vec![
            (Any::Int(7), Any::Text("an integer key")),
            (Any::Text("kind"), Any::Text("started")),
            (Any::List(vec![1, 2]), Any::Int(3)),
            (Any::Text("id"), Any::Text(id)),
            (Any::Nil(None), Any::List(vec![9])),
            (Any::Text("at"), Any::Int(1_700_000_000_000)),
            (Any::Text("task"), Any::Text("add")),
        ]);
        let decoded = Event::decode_batch(&rmp_serde::to_vec(&[event]).unwrap()).unwrap();
        assert_eq!(decoded.skipped, 0);
        let event = &decoded.events[0];
        assert_eq!((&event.kind, event.id.to_string().as_str()), (&EventKind::Started, id));
        assert_eq!(event.task, "add");
        assert_eq!(event.at, at(1_700_000_000_000));
    }

    #[test]
    fn an_event_this_version_cannot_represent_is_skipped_not_fatal() {
        let batch = (
            foreign("started", None),
            foreign("teleported", None),
            foreign("failed", Some("cosmic_ray")),
            foreign("failed", Some("panic")),
            "not an event",
            7u8,
            [1, 2, 3],
            foreign("queued", None),
        );
        let bytes = rmp_serde::to_vec_named(&batch).unwrap();
        let decoded = Event::decode_batch(&bytes).unwrap();
        let kinds: Vec<EventType> = decoded.events.iter().map(Event::event_type).collect();
        assert_eq!(kinds, [EventType::Started, EventType::Failed, EventType::Queued]);
        assert_eq!(decoded.skipped, 5);
    }

    #[test]
    fn an_event_without_a_kind_id_or_time_is_skipped() {
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Value {
            Int(i64),
            Float(f64),
            Text(&'static str),
        }
        #[derive(Serialize)]
        struct Partial {
            kind: Option<&'static str>,
            id: Option<String>,
            at: Option<Value>,
        }
        let id = || Some(TaskId::new().to_string());
        let time = || Some(Value::Int(1_700_000_000_000));
        let batch = [
            Partial { kind: None, id: id(), at: time() },
            Partial { kind: Some("started"), id: None, at: time() },
            Partial { kind: Some("started"), id: Some("not-a-uuid".into()), at: time() },
            Partial { kind: Some("started"), id: id(), at: None },
            Partial { kind: Some("started"), id: id(), at: Some(Value::Text("yesterday")) },
            Partial { kind: Some("started"), id: id(), at: Some(Value::Float(1.7e12)) },
            Partial { kind: Some("started"), id: id(), at: time() },
        ];
        let decoded = Event::decode_batch(&rmp_serde::to_vec_named(&batch).unwrap()).unwrap();
        // A whole number written as a float is a time too.
        assert_eq!((decoded.events.len(), decoded.skipped), (2, 5));
        assert_eq!(decoded.events[0].at, at(1_700_000_000_000));
        assert_eq!(decoded.events[1].at, at(1_700_000_000_000));
    }

    #[test]
    fn bytes_that_are_no_array_are_refused() {
        for bytes in [&b""[..], b"\x80", b"\xc1", b"\x92\x01"] {
            assert!(Event::decode_batch(bytes).is_err(), "{bytes:?}");
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Event::decode_batch(&bytes);
        }

        #[test]
        fn corrupted_batches_never_panic(pos in 0usize..4000, byte in any::<u8>()) {
            let mut bytes = Event::encode_batch(&every_kind()).unwrap();
            let pos = pos % bytes.len();
            bytes[pos] = byte;
            let _ = Event::decode_batch(&bytes);
        }

        #[test]
        fn truncated_batches_never_panic(cut in 0usize..4000) {
            let bytes = Event::encode_batch(&every_kind()).unwrap();
            let _ = Event::decode_batch(&bytes[..cut % bytes.len()]);
        }
    }
}
