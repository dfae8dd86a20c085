use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The unique id of one enqueued job (a random UUID), by which its result is found.
///
/// It serializes as the UUID does: its hyphenated text in human-readable formats
/// (JSON), its 16 bytes in binary ones (the MessagePack envelope). It deserializes
/// from either form in any format, so that a producer in another language may write
/// the text into an envelope (docs/wire-format.md).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TaskId(Uuid);

impl Hash for TaskId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // One 128-bit word: a third less to hash than the UUID's bytes and their
        // length, and every job's id is hashed several times on its way through.
        state.write_u128(self.0.as_u128());
    }
}

impl TaskId {
    /// A fresh random id.
    #[must_use]
    pub fn new() -> Self {
        TaskId(Uuid::new_v4())
    }

    /// The id as a UUID.
    #[must_use]
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for TaskId {
    fn from(uuid: Uuid) -> Self {
        TaskId(uuid)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", self.0)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A self-describing format hands the visitor what is there, text or bytes;
        // the hint only says which of the two the format should expect.
        if deserializer.is_human_readable() {
            deserializer.deserialize_str(IdVisitor)
        } else {
            deserializer.deserialize_bytes(IdVisitor)
        }
    }
}

/// Reads a task id from its text (any form `Uuid::parse_str` takes), its 16 bytes, or
/// a sequence of 16 numbers (how a format without bytes writes them).
struct IdVisitor;

impl<'de> Visitor<'de> for IdVisitor {
    type Value = TaskId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a task id: a UUID as text or as 16 bytes")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<TaskId, E> {
        // The error leaves the text out: it may be anything a producer wrote.
        Uuid::parse_str(text).map(TaskId).map_err(|_| {
            E::custom(format_args!(
                "the task id, a text of {} bytes, is not a UUID (such as \
                 0b5c6f2e-3f3c-4d7e-9a57-6f1f2f0c9a10)",
                text.len()
            ))
        })
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<TaskId, E> {
        match Uuid::from_slice(bytes) {
            Ok(uuid) => Ok(TaskId(uuid)),
            // Text sent as bin, as an old MessagePack library without str8 would.
            Err(_) => match std::str::from_utf8(bytes) {
                Ok(text) => self.visit_str(text),
                Err(_) => Err(E::invalid_length(bytes.len(), &self)),
            },
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TaskId, A::Error> {
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(17, &self));
        }
        Ok(TaskId(Uuid::from_bytes(bytes)))
    }
}

impl FromStr for TaskId {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(TaskId).map_err(|e| {
            crate::Error::InvalidArgument(format!("{s:?} is not a task id (a UUID): {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    const TEXT: &str = "0b5c6f2e-3f3c-4d7e-9a57-6f1f2f0c9a10";

    fn id() -> TaskId {
        TEXT.parse().unwrap()
    }

    /// `value`, MessagePack-encoded.
    fn packed(value: impl Serialize) -> Vec<u8> {
        rmp_serde::to_vec(&value).unwrap()
    }

    fn unpacked(bytes: &[u8]) -> Result<TaskId, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }

    #[test]
    fn it_is_written_as_16_bytes_in_messagepack_and_as_text_where_readable() {
        let bytes = packed(id());
        assert_eq!(bytes[..2], [0xc4, 16], "bin 8 of 16 bytes: {bytes:x?}");
        assert_eq!(bytes[2..], *id().as_uuid().as_bytes());
        let mut readable = Vec::new();
        id().serialize(&mut rmp_serde::Serializer::new(&mut readable).with_human_readable())
            .unwrap();
        assert_eq!(readable, packed(TEXT));
    }

    #[test]
    fn it_is_read_from_its_text_its_16_bytes_or_16_numbers() {
        let bytes = *id().as_uuid().as_bytes();
        assert_eq!(unpacked(&packed(id())).unwrap(), id());
        assert_eq!(unpacked(&packed(TEXT)).unwrap(), id());
        assert_eq!(unpacked(&packed(serde_bytes::Bytes::new(&bytes))).unwrap(), id());
        assert_eq!(unpacked(&packed(bytes)).unwrap(), id(), "an array of 16 numbers");
        // Any form a UUID parser takes, and text sent as bin.
        for text in [
            TEXT.to_uppercase(),
            TEXT.replace('-', ""),
            format!("{{{TEXT}}}"),
            format!("urn:uuid:{TEXT}"),
        ] {
            assert_eq!(unpacked(&packed(&text)).unwrap(), id(), "{text}");
        }
        assert_eq!(unpacked(&packed(serde_bytes::Bytes::new(TEXT.as_bytes()))).unwrap(), id());
        // A human-readable decoder takes both forms too.
        for encoded in [packed(TEXT), packed(id())] {
            let mut de = rmp_serde::Deserializer::new(&encoded[..]).with_human_readable();
            assert_eq!(TaskId::deserialize(&mut de).unwrap(), id());
        }
    }

    #[test]
    fn anything_else_is_refused_without_echoing_it() {
        let secret = "hunter2-is-no-uuid";
        let err = unpacked(&packed(secret)).unwrap_err().to_string();
        assert!(err.contains("text of 18 bytes, is not a UUID"), "{err}");
        assert!(!err.contains("hunter"), "{err}");
        // Bytes that are neither 16 nor text.
        for wrong in [&[0xffu8; 15][..], &[0xff; 17][..], &[0xff; 36][..]] {
            let err = unpacked(&packed(serde_bytes::Bytes::new(wrong))).unwrap_err().to_string();
            assert!(err.contains("a UUID as text or as 16 bytes"), "{err}");
        }
        assert!(unpacked(&packed([1u8; 15])).is_err());
        assert!(unpacked(&packed([1u8; 17])).is_err());
        assert!(unpacked(&packed(42u64)).is_err());
    }
}
