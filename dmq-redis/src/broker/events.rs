//! The namespace's event stream: one Redis stream entry per batch of events, so that
//! a job's three or so events cost a small share of one `XADD`.
//!
//! An entry has two fields: `n`, the number of events, and `events`, the batch as
//! [`Event::encode_batch`] writes it. A cursor names an entry by its stream id, and
//! says how many of its events were read when a page ended inside it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use dmq_core::{Error, Event, EventCursor, EventPage, EventStream, EventsFrom, Result};
use redis::Value;

use super::RedisBroker;

/// What events-per-entry a broker guesses before it has read any: a first read then
/// asks for a modest number of entries whether they are small or large.
pub(super) const FIRST_GUESS_PER_ENTRY: usize = 16;

/// The most entries one command asks for.
const MAX_ENTRIES_PER_READ: usize = 1_000;

/// The id before every entry.
const START: &str = "0-0";

/// One entry of the stream, decoded.
struct Entry {
    id: String,
    events: Vec<Event>,
    /// Events of the entry that did not decode.
    skipped: usize,
}

/// Where a read stands: after the first `taken` events of entry `id` (all of them when
/// `None`) and every entry before it.
#[derive(Debug, Clone)]
struct Position {
    id: String,
    taken: Option<usize>,
}

impl Position {
    fn after(id: impl Into<String>) -> Self {
        Position { id: id.into(), taken: None }
    }

    fn cursor(&self) -> EventCursor {
        match self.taken {
            Some(taken) => EventCursor::within(self.id.clone(), taken),
            None => EventCursor::after(self.id.clone()),
        }
    }
}

/// A page being filled.
struct Page {
    events: Vec<Event>,
    skipped: usize,
    max: usize,
}

impl Page {
    fn is_full(&self) -> bool {
        self.events.len() >= self.max
    }

    /// Takes events from `entries` (oldest first, starting at `at`'s entry or after
    /// it) until the page is full, moving `at` past what it took.
    fn take(&mut self, at: &mut Position, entries: Vec<Entry>) {
        for entry in entries {
            if self.is_full() {
                break;
            }
            let skip = match at.taken {
                Some(taken) if at.id == entry.id => taken,
                _ => {
                    self.skipped += entry.skipped;
                    0
                }
            };
            let total = entry.events.len();
            let room = self.max - self.events.len();
            let taken = total.saturating_sub(skip).min(room);
            self.events.extend(entry.events.into_iter().skip(skip).take(taken));
            let read = skip + taken;
            *at = if read < total {
                Position { id: entry.id, taken: Some(read) }
            } else {
                Position::after(entry.id)
            };
        }
    }
}

impl RedisBroker {
    /// Appends `events` as one entry, trimming the stream to about the cap.
    pub(super) async fn append_events(&self, events: &[Arc<Event>]) -> Result<()> {
        if events.is_empty() || self.event_stream_cap == 0 {
            return Ok(());
        }
        let bytes = Event::encode_batch(events)?;
        let entries = self.event_stream_cap.div_ceil(events.len()).max(1);
        let mut conn = self.conn().await?;
        redis::cmd("XADD")
            .arg(self.keys.events())
            .arg("MAXLEN")
            .arg("~")
            .arg(entries)
            .arg("*")
            .arg("n")
            .arg(events.len())
            .arg("events")
            .arg(bytes)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.err("appending to the event stream", e))
    }

    pub(super) async fn read_event_stream(
        &self,
        from: &EventsFrom,
        max: usize,
        wait: Duration,
    ) -> Result<EventPage> {
        let mut page = Page { events: Vec::new(), skipped: 0, max };
        let (mut at, fetched) = match from {
            EventsFrom::Now => (Position::after(self.last_entry().await?), Vec::new()),
            EventsFrom::Oldest => (Position::after(START), Vec::new()),
            EventsFrom::Last(n) => self.last_events(*n).await?,
            EventsFrom::After(cursor) => (position_of(cursor)?, Vec::new()),
            other => {
                return Err(Error::Unsupported(format!(
                    "this version of dmq-redis cannot read the event stream from {other:?}"
                )));
            }
        };
        if max == 0 {
            return Ok(EventPage::new(Vec::new(), at.cursor(), 0));
        }
        if !fetched.is_empty() {
            // The last n events, read already: the page, as far as it has room.
            page.take(&mut at, fetched);
            return Ok(EventPage::new(page.events, at.cursor(), page.skipped));
        }
        if at.taken.is_some() {
            // The rest of an entry a page ended in.
            let rest = self.range("XRANGE", &at.id, &at.id, 1).await?;
            let found = !rest.is_empty();
            page.take(&mut at, rest);
            if !found {
                // Trimmed away meanwhile: read on after it.
                at.taken = None;
            }
        }
        if !page.is_full() {
            let block = page.events.is_empty() && !wait.is_zero();
            let entries =
                self.read_after(&at.id, page.max - page.events.len(), block, wait).await?;
            page.take(&mut at, entries);
        }
        Ok(EventPage::new(page.events, at.cursor(), page.skipped))
    }

    /// The id of the newest entry, or the id before every entry when there is none.
    async fn last_entry(&self) -> Result<String> {
        let newest = self.range("XREVRANGE", "+", "-", 1).await?;
        Ok(newest.into_iter().next().map_or_else(|| START.to_owned(), |entry| entry.id))
    }

    /// Where the last `n` events start, and the entries holding them, oldest first.
    async fn last_events(&self, n: usize) -> Result<(Position, Vec<Entry>)> {
        if n == 0 {
            return Ok((Position::after(self.last_entry().await?), Vec::new()));
        }
        let mut newest_first: Vec<Entry> = Vec::new();
        let mut wanted = n;
        let mut end = "+".to_owned();
        while wanted > 0 {
            let count = self.entries_for(wanted);
            let entries = self.range("XREVRANGE", &end, "-", count).await?;
            let exhausted = entries.len() < count;
            for entry in entries {
                wanted -= wanted.min(entry.events.len());
                end = format!("({}", entry.id);
                newest_first.push(entry);
                if wanted == 0 {
                    break;
                }
            }
            if exhausted {
                break;
            }
        }
        newest_first.reverse();
        let held: usize = newest_first.iter().map(|entry| entry.events.len()).sum();
        let at = match newest_first.first() {
            // The oldest entry may hold more events than the n wanted.
            Some(oldest) => Position { id: oldest.id.clone(), taken: Some(held.saturating_sub(n)) },
            None => Position::after(START),
        };
        Ok((at, newest_first))
    }

    /// Entries after `id`, enough for about `wanted` events; with `block`, waits up to
    /// `wait` for the first one, on a connection of its own.
    async fn read_after(
        &self,
        id: &str,
        wanted: usize,
        block: bool,
        wait: Duration,
    ) -> Result<Vec<Entry>> {
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(self.entries_for(wanted));
        if block {
            // The server's own timeout is a backstop a little after ours.
            let backstop = wait.saturating_add(Duration::from_millis(500));
            cmd.arg("BLOCK").arg(u64::try_from(backstop.as_millis()).unwrap_or(u64::MAX));
        }
        cmd.arg("STREAMS").arg(self.keys.events()).arg(id);
        let what = "reading the event stream";
        let reply: Value = if block {
            let slot = self.blocking_slot(&self.keys.events());
            self.run_blocking(&cmd, slot, wait, what).await?.unwrap_or(Value::Nil)
        } else {
            let mut conn = self.conn().await?;
            cmd.query_async(&mut conn).await.map_err(|e| self.err(what, e))?
        };
        let entries = parse_read(reply).ok_or_else(|| unexpected("XREAD"))?;
        self.learn(&entries);
        Ok(entries)
    }

    /// `XRANGE` or `XREVRANGE` from `start` to `end`, at most `count` entries.
    async fn range(
        &self,
        command: &str,
        start: &str,
        end: &str,
        count: usize,
    ) -> Result<Vec<Entry>> {
        let mut conn = self.conn().await?;
        let reply: Value = redis::cmd(command)
            .arg(self.keys.events())
            .arg(start)
            .arg(end)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err("reading the event stream", e))?;
        let entries = parse_entries(reply).ok_or_else(|| unexpected(command))?;
        self.learn(&entries);
        Ok(entries)
    }

    /// How many entries to ask for, for about `wanted` events.
    fn entries_for(&self, wanted: usize) -> usize {
        let per_entry = self.events_per_entry.load(Ordering::Relaxed).max(1);
        wanted.div_ceil(per_entry).clamp(1, MAX_ENTRIES_PER_READ)
    }

    /// Notes how many events an entry held in what was just read.
    fn learn(&self, entries: &[Entry]) {
        if entries.is_empty() {
            return;
        }
        let events: usize = entries.iter().map(|e| e.events.len() + e.skipped).sum();
        self.events_per_entry.store((events / entries.len()).max(1), Ordering::Relaxed);
    }
}

/// A cursor of this stream as a position.
fn position_of(cursor: &EventCursor) -> Result<Position> {
    let id = cursor.entry();
    let valid = id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.bytes().chain(seq.bytes()).all(|b| b.is_ascii_digit())
    });
    if !valid {
        return Err(Error::InvalidArgument(format!(
            "{id:?} is not a cursor of a Redis event stream (a stream id such as 1700000000000-0)"
        )));
    }
    Ok(Position { id: id.to_owned(), taken: cursor.taken() })
}

fn unexpected(command: &str) -> Error {
    Error::backend(format!("unexpected reply from redis to {command} on the event stream"), false)
}

/// The entries of an `XREAD` reply: nil, or one stream with its entries (an array of
/// `[key, entries]` pairs in RESP2, a map in RESP3).
fn parse_read(reply: Value) -> Option<Vec<Entry>> {
    match reply {
        Value::Nil => Some(Vec::new()),
        Value::Array(streams) => {
            let mut entries = Vec::new();
            for stream in streams {
                let Value::Array(pair) = stream else { return None };
                let [_key, list]: [Value; 2] = pair.try_into().ok()?;
                entries.extend(parse_entries(list)?);
            }
            Some(entries)
        }
        Value::Map(streams) => {
            let mut entries = Vec::new();
            for (_key, list) in streams {
                entries.extend(parse_entries(list)?);
            }
            Some(entries)
        }
        _ => None,
    }
}

/// The entries of an `XRANGE` reply, or of one stream of an `XREAD` reply.
fn parse_entries(reply: Value) -> Option<Vec<Entry>> {
    let Value::Array(list) = reply else {
        return matches!(reply, Value::Nil).then(Vec::new);
    };
    list.into_iter().map(parse_entry).collect()
}

/// One entry: `[id, [field, value, ...]]` (or its fields as a map, in RESP3).
fn parse_entry(entry: Value) -> Option<Entry> {
    let Value::Array(parts) = entry else { return None };
    let [id, fields]: [Value; 2] = parts.try_into().ok()?;
    let id = text(id)?;
    let pairs: Vec<(Value, Value)> = match fields {
        Value::Array(flat) => {
            let mut pairs = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(field), Some(value)) = (flat.next(), flat.next()) {
                pairs.push((field, value));
            }
            pairs
        }
        Value::Map(pairs) => pairs,
        _ => return None,
    };
    let (mut count, mut batch) = (None, None);
    for (field, value) in pairs {
        match text(field).as_deref() {
            Some("n") => count = text(value).and_then(|n| n.parse::<usize>().ok()),
            Some("events") => batch = bytes(value),
            _ => {}
        }
    }
    // An entry that does not decode is passed over, counted, rather than stopping
    // every reader at it.
    let decoded = batch.and_then(|bytes| Event::decode_batch(&bytes).ok());
    Some(match decoded {
        Some(decoded) => Entry { id, events: decoded.events, skipped: decoded.skipped },
        None => Entry { id, events: Vec::new(), skipped: count.unwrap_or(1).max(1) },
    })
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::SimpleString(s) => Some(s),
        Value::Int(n) => Some(n.to_string()),
        other => String::from_utf8(bytes(other)?).ok(),
    }
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

#[async_trait]
impl EventStream for RedisBroker {
    /// One `XADD ... MAXLEN ~` of the whole batch: see
    /// [`with_event_stream_cap`](RedisBroker::with_event_stream_cap).
    fn shares_events(&self) -> bool {
        true
    }

    async fn publish_events(&self, events: &[Arc<Event>]) -> Result<()> {
        self.append_events(events).await
    }

    /// `XREAD`, blocking on a connection of its own as a claim's wait does; the
    /// cursor's entry is a stream id.
    async fn read_events(
        &self,
        from: &EventsFrom,
        max: usize,
        wait: Duration,
    ) -> Result<EventPage> {
        self.read_event_stream(from, max, wait).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmq_core::{EventKind, TaskId};

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry(id: &str, events: &[Event]) -> Value {
        let bytes = Event::encode_batch(events).unwrap();
        Value::Array(vec![
            bulk(id),
            Value::Array(vec![
                bulk("n"),
                bulk(&events.len().to_string()),
                bulk("events"),
                Value::BulkString(bytes),
            ]),
        ])
    }

    fn started() -> Event {
        Event::new(EventKind::Started, TaskId::new(), "t", "q", 1)
    }

    #[test]
    fn xread_replies_parse_in_resp2_and_resp3() {
        let (a, b) = (started(), started());
        let list = || {
            Value::Array(vec![
                entry("1-0", std::slice::from_ref(&a)),
                entry("2-0", std::slice::from_ref(&b)),
            ])
        };
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("{ns}:events"), list()])]);
        let resp3 = Value::Map(vec![(bulk("{ns}:events"), list())]);
        for reply in [resp2, resp3] {
            let entries = parse_read(reply).unwrap();
            let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(ids, ["1-0", "2-0"]);
            assert_eq!(entries[1].events[0].id, b.id);
        }
        assert!(parse_read(Value::Nil).unwrap().is_empty());
        assert!(parse_read(Value::Int(3)).is_none());
    }

    #[test]
    fn an_entry_that_does_not_decode_is_passed_over_and_counted() {
        let bad = Value::Array(vec![
            bulk("5-0"),
            Value::Array(vec![bulk("n"), bulk("3"), bulk("events"), bulk("garbage")]),
        ]);
        let entries = parse_entries(Value::Array(vec![bad])).unwrap();
        assert_eq!((entries[0].events.len(), entries[0].skipped), (0, 3));
    }

    #[test]
    fn a_page_ends_inside_an_entry_and_resumes_there() {
        let events: Vec<Event> = (0..5).map(|_| started()).collect();
        let entries = || {
            vec![
                Entry { id: "1-0".into(), events: events[..3].to_vec(), skipped: 0 },
                Entry { id: "2-0".into(), events: events[3..].to_vec(), skipped: 0 },
            ]
        };
        let mut at = Position::after(START);
        let mut page = Page { events: Vec::new(), skipped: 0, max: 2 };
        page.take(&mut at, entries());
        assert_eq!(page.events, events[..2]);
        assert_eq!(at.cursor(), EventCursor::within("1-0", 2));
        let mut page = Page { events: Vec::new(), skipped: 0, max: 2 };
        page.take(&mut at, entries());
        assert_eq!(page.events, events[2..4]);
        assert_eq!(at.cursor(), EventCursor::within("2-0", 1));
    }

    #[test]
    fn cursors_of_other_brokers_are_refused() {
        assert!(position_of(&EventCursor::after("17")).is_err());
        assert!(position_of(&EventCursor::after("1-x")).is_err());
        assert!(position_of(&EventCursor::within("1700000000000-3", 2)).is_ok());
    }
}
