//! The PostgreSQL broker's event stream: batches of events in the table `events`,
//! capped, read by any process, and readers woken by `NOTIFY`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dmq_core::{Error, Event, EventCursor, EventPage, EventStream, EventsFrom, Result};
use sqlx::Row;
use tokio::time::Instant;

use super::PostgresBroker;

/// A place in the stream: after the first `taken` events of batch `batch` (all of
/// them when `None`) and every batch before it.
#[derive(Debug, Clone, Copy)]
struct Position {
    batch: i64,
    taken: Option<usize>,
}

impl Position {
    fn cursor(self) -> EventCursor {
        match self.taken {
            Some(taken) => EventCursor::within(self.batch.to_string(), taken),
            None => EventCursor::after(self.batch.to_string()),
        }
    }
}

impl PostgresBroker {
    /// Where `from` starts.
    async fn position(&self, from: &EventsFrom) -> Result<Position> {
        let inner = &self.inner;
        let events = inner.schema.at("events");
        Ok(match from {
            EventsFrom::Oldest => Position { batch: 0, taken: None },
            EventsFrom::Now => {
                let last: Option<i64> = sqlx::query_scalar(crate::schema::sql(&format!(
                    "SELECT max(position) FROM {events}"
                )))
                .fetch_one(&inner.pool)
                .await
                .map_err(|e| inner.fail("read the event stream", e))?;
                Position { batch: last.unwrap_or(0), taken: None }
            }
            EventsFrom::Last(n) => {
                // The newest batches, newest first, until they hold n events.
                let rows = sqlx::query(crate::schema::sql(&format!(
                    "SELECT position, count, sum(count) OVER (ORDER BY position DESC) AS total \
                     FROM {events} ORDER BY position DESC"
                )))
                .fetch_all(&inner.pool)
                .await
                .map_err(|e| inner.fail("read the event stream", e))?;
                let wanted = i64::try_from(*n).unwrap_or(i64::MAX);
                let mut at = Position { batch: 0, taken: None };
                let mut first = true;
                for row in rows {
                    let (position, count, total): (i64, i32, i64) = (
                        row.try_get("position").unwrap_or(0),
                        row.try_get("count").unwrap_or(0),
                        row.try_get("total").unwrap_or(0),
                    );
                    if first {
                        at = Position { batch: position, taken: None };
                        first = false;
                    }
                    if wanted == 0 {
                        break;
                    }
                    let before = total - i64::from(count);
                    let from_this = (wanted - before).min(i64::from(count));
                    let taken = usize::try_from(i64::from(count) - from_this).unwrap_or(0);
                    at = Position { batch: position, taken: Some(taken) };
                    if total >= wanted {
                        break;
                    }
                }
                at
            }
            EventsFrom::After(cursor) => {
                let batch = cursor.entry().parse().map_err(|_| {
                    Error::InvalidArgument(format!(
                        "{:?} is not a cursor of a PostgreSQL event stream",
                        cursor.entry()
                    ))
                })?;
                Position { batch, taken: cursor.taken() }
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "the PostgreSQL event stream cannot start reading {other:?}"
                )));
            }
        })
    }

    /// Up to `max` events from `at` on, moving `at` past them; and how many events
    /// could not be read.
    async fn read_from(&self, at: &mut Position, max: usize) -> Result<(Vec<Event>, usize)> {
        let inner = &self.inner;
        let first = if at.taken.is_some() { at.batch } else { at.batch + 1 };
        let rows = sqlx::query(crate::schema::sql(&format!(
            "SELECT position, batch FROM {} WHERE position >= $1 ORDER BY position LIMIT $2",
            inner.schema.at("events")
        )))
        .bind(first)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&inner.pool)
        .await
        .map_err(|e| inner.fail("read the event stream", e))?;
        let (mut events, mut skipped) = (Vec::new(), 0);
        for row in rows {
            let position: i64 =
                row.try_get("position").map_err(|e| inner.fail("read events", e))?;
            let bytes: Vec<u8> = row.try_get("batch").map_err(|e| inner.fail("read events", e))?;
            let decoded = match Event::decode_batch(&bytes) {
                Ok(decoded) => decoded,
                Err(_) => {
                    // Bytes dmq did not write: passed over, and counted.
                    skipped += 1;
                    *at = Position { batch: position, taken: None };
                    continue;
                }
            };
            skipped += decoded.skipped;
            let skip = if position == at.batch { at.taken.unwrap_or(0) } else { 0 };
            let rest = decoded.events.get(skip..).unwrap_or_default();
            let take = rest.len().min(max - events.len());
            events.extend(rest[..take].iter().cloned());
            *at = if skip + take < decoded.events.len() {
                Position { batch: position, taken: Some(skip + take) }
            } else {
                Position { batch: position, taken: None }
            };
            if events.len() == max {
                break;
            }
        }
        Ok((events, skipped))
    }
}

#[async_trait]
impl EventStream for PostgresBroker {
    fn shares_events(&self) -> bool {
        true
    }

    async fn publish_events(&self, events: &[Arc<Event>]) -> Result<()> {
        let inner = &self.inner;
        if events.is_empty() || inner.event_cap() == 0 {
            return Ok(());
        }
        let batch = Event::encode_batch(events)?;
        sqlx::query(crate::schema::sql(&format!(
            "SELECT {}($1, $2, $3)",
            inner.schema.at("publish_events")
        )))
        .bind(i32::try_from(events.len()).unwrap_or(i32::MAX))
        .bind(batch)
        .bind(i64::try_from(inner.event_cap()).unwrap_or(i64::MAX))
        .execute(&inner.pool)
        .await
        .map_err(|e| inner.fail("publish events", e))?;
        Ok(())
    }

    async fn read_events(
        &self,
        from: &EventsFrom,
        max: usize,
        wait: Duration,
    ) -> Result<EventPage> {
        let mut at = self.position(from).await?;
        if max == 0 {
            return Ok(EventPage::new(Vec::new(), at.cursor(), 0));
        }
        let give_up = Instant::now() + wait.min(Duration::from_secs(365 * 24 * 3600));
        loop {
            let published = self.inner.listener.wakeups.events.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            let (events, skipped) = self.read_from(&mut at, max).await?;
            if !events.is_empty() || skipped > 0 || Instant::now() >= give_up {
                return Ok(EventPage::new(events, at.cursor(), skipped));
            }
            tokio::select! {
                () = &mut published => {}
                () = tokio::time::sleep_until(give_up) => {}
            }
        }
    }
}
